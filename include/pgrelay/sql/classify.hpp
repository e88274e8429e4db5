// Query classification for read/write routing: can this query run on a hot standby?
//
// A query is read-only when the classifier can prove it: SELECT / SHOW / TABLE / VALUES /
// EXPLAIN (without ANALYZE of a write) with no locking clause, no SELECT INTO, no
// data-modifying CTE and no call of a function that is not known to be non-volatile. Anything
// else, including what cannot be parsed, is a write and goes to the primary.
//
// Cost: a lexer pre-pass settles the common statements (~1 µs); the rest go through
// libpg_query (the PostgreSQL 15 parser), whose verdicts are cached by query text.
#pragma once

#include <cstddef>
#include <cstdint>
#include <list>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "pgrelay/sql/lexer.hpp"

namespace pgrelay::sql {

/// Functions a read-only query may call: pg_catalog's non-volatile functions (learned from the
/// primary, or a built-in list of common ones until then) and the names an operator declared
/// read-only. Some functions always count as writes, whatever their volatility:
/// nextval, setval, pg_advisory_* and pg_try_advisory_*, pg_notify, txid_current and friends.
class FunctionCatalog {
 public:
  /// `pg_catalog_nonvolatile`: bare lower-case names of pg_catalog functions none of whose
  /// overloads is volatile. `read_only`: extra names, bare or schema-qualified ("app.f"),
  /// matched case-insensitively.
  FunctionCatalog(const std::vector<std::string>& pg_catalog_nonvolatile,
                  const std::vector<std::string>& read_only);

  /// A built-in list of common non-volatile pg_catalog functions plus `read_only`.
  static std::shared_ptr<const FunctionCatalog> builtin(const std::vector<std::string>& read_only);

  /// `name` as written in the query, lower-cased, optionally schema-qualified.
  [[nodiscard]] bool non_volatile(std::string_view name) const;
  [[nodiscard]] std::size_t size() const { return catalog_.size(); }
  /// True when the list came from a live catalog (not the built-in one).
  bool learned = false;

 private:
  std::unordered_set<std::string> catalog_;
  std::unordered_set<std::string> read_only_;
};

/// What the first statement of a query is, for routing.
enum class StatementKind : std::uint8_t {
  kEmpty,           ///< no statement (comments, semicolons)
  kRead,            ///< proven read-only
  kWrite,           ///< writes, or cannot be proven read-only
  kBegin,           ///< BEGIN / START TRANSACTION
  kSetTransaction,  ///< SET TRANSACTION ...
  kEnd,             ///< COMMIT / END / ROLLBACK / ABORT / PREPARE TRANSACTION ...
  kSession,         ///< SET / RESET / SAVEPOINT / RELEASE / FETCH / CLOSE ...: runs anywhere
};

[[nodiscard]] std::string_view to_string(StatementKind kind);

struct QueryClass {
  StatementKind first = StatementKind::kEmpty;
  /// READ ONLY (true) or READ WRITE (false) on a leading BEGIN / START TRANSACTION, or on a SET
  /// TRANSACTION that is the first statement or follows the leading BEGIN.
  std::optional<bool> tx_read_only;
  /// Every statement (after a leading BEGIN and SET TRANSACTION) is read-only or session-only.
  bool read_only = true;
  /// Some statement ends a transaction (COMMIT, ROLLBACK, END, ABORT, PREPARE TRANSACTION).
  bool ends_transaction = false;
  /// The text asks for the primary: a comment containing "pgrelay:primary".
  bool force_primary = false;
  /// Some statement follows the leading BEGIN / SET TRANSACTION (or there is no leading one).
  bool has_body = false;
  /// The full parser was needed (and its verdict cached).
  bool parsed = false;
  /// The text is one SELECT with no '(' and no word that could make it more than a read (see
  /// classify.cpp): it calls no function, so it has no session effects and ends no
  /// transaction. combine() clears it when both parts have statements.
  bool plain_select = false;
  /// Why the query is not read-only, for debug logs and tests ("" when it is).
  std::string reason;
};

/// The verdict for `first` followed by `next` in one transaction start (an extended-protocol
/// batch runs its statements one after the other, as a multi-statement Query does).
[[nodiscard]] QueryClass combine(const QueryClass& first, const QueryClass& next);

/// Classifies query texts; one per worker thread (not thread-safe), with an LRU cache of the
/// parser's verdicts keyed by query text.
class Classifier {
 public:
  explicit Classifier(std::shared_ptr<const FunctionCatalog> catalog,
                      std::size_t cache_size = 4096);

  /// Replaces the function catalog (and empties the cache, whose verdicts depended on it).
  void set_catalog(std::shared_ptr<const FunctionCatalog> catalog);
  [[nodiscard]] const std::shared_ptr<const FunctionCatalog>& catalog() const { return catalog_; }

  /// Classifies a simple Query string or the text of a Parse message.
  QueryClass classify(std::string_view sql, LexerOptions options = {});

  struct Counters {
    std::uint64_t fast = 0;  ///< settled by the lexer pre-pass
    std::uint64_t cache_hits = 0;
    std::uint64_t parses = 0;  ///< full parser runs
  };
  [[nodiscard]] const Counters& counters() const { return counters_; }

 private:
  std::shared_ptr<const FunctionCatalog> catalog_;
  std::size_t cache_size_;
  using Lru = std::list<std::pair<std::string, QueryClass>>;
  Lru lru_;
  /// Keys point into the list's strings, which never move.
  std::unordered_map<std::string_view, Lru::iterator> index_;
  Counters counters_;
};

/// The lexer pre-pass alone: a verdict when the tokens settle it, nullopt when the full parser
/// must decide. Exposed for tests and benchmarks.
[[nodiscard]] std::optional<QueryClass> classify_fast(std::string_view sql,
                                                      const FunctionCatalog& catalog,
                                                      LexerOptions options = {});

/// The full parser alone (libpg_query). Exposed for tests and benchmarks.
[[nodiscard]] QueryClass classify_parsed(std::string_view sql, const FunctionCatalog& catalog);

}  // namespace pgrelay::sql
