// What a simple-protocol query does to its server session beyond the current transaction: the
// settings it changes, the prepared statements it makes, uses and drops, and why it might pin
// the client to its server connection. Read by the transaction pooler before forwarding.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "pgrelay/sql/lexer.hpp"

namespace pgrelay::sql {

/// Why a session can no longer share its server connection after the query.
enum class PinReason : std::uint8_t {
  kNone,
  kListen,                // LISTEN channel
  kTempObject,            // CREATE TEMP ..., SELECT ... INTO TEMP ..., an object in pg_temp
  kAdvisoryLock,          // pg_advisory_lock() and friends (not the _xact_ variants)
  kWithHoldCursor,        // DECLARE ... CURSOR WITH HOLD
  kSessionAuthorization,  // SET / RESET SESSION AUTHORIZATION
};

/// "none", "listen", "temp_object", "advisory_lock", "with_hold_cursor", "session_authorization".
[[nodiscard]] std::string_view to_string(PinReason reason);

/// A statement name in the query text.
struct NameRef {
  /// The name token's byte range in the text, quotes included, so a caller can rewrite it.
  std::uint32_t begin = 0;
  std::uint32_t end = 0;
  /// The name as the server sees it (identifier_value).
  std::string name;

  friend bool operator==(const NameRef&, const NameRef&) = default;
};

struct SessionEffects {
  /// Lower-case names of settings changed at session level (SET, SET SESSION, RESET name, the
  /// special forms such as SET TIME ZONE -> "timezone"), in order of first appearance.
  std::vector<std::string> params;
  /// RESET ALL or DISCARD ALL.
  bool reset_all = false;
  /// DEALLOCATE [PREPARE] ALL or DISCARD ALL.
  bool deallocate_all = false;
  /// DISCARD ALL.
  bool discard_all = false;
  /// PREPARE name [(types)] AS ...
  std::vector<NameRef> prepares;
  /// EXECUTE name, also in EXPLAIN ... EXECUTE name and CREATE TABLE ... AS EXECUTE name.
  std::vector<NameRef> executes;
  /// DEALLOCATE [PREPARE] name
  std::vector<NameRef> deallocates;
  /// The first reason found, in text order.
  PinReason pin = PinReason::kNone;
  /// Non-empty statements in the text.
  std::uint32_t statements = 0;

  /// Nothing above is set (`statements` aside).
  [[nodiscard]] bool empty() const;
};

/// Analyses a simple-protocol Query string (possibly several statements separated by ';').
/// Never throws on bad input (only std::bad_alloc can escape) and allocates only for what it
/// reports: malformed or unterminated SQL gives a best-effort result. Statements are told apart
/// by their first word (after any '('); words in strings, comments, dollar quotes and quoted
/// identifiers never count. `options` must match the session's standard_conforming_strings.
[[nodiscard]] SessionEffects analyze_session_effects(std::string_view sql,
                                                     LexerOptions options = {});

}  // namespace pgrelay::sql

namespace pgrelay::sql {

/// Whether running `sql` inside a transaction block might commit it: true when the text has the
/// word COMMIT, END or PREPARE anywhere (any case, also in strings or comments: a false positive
/// only makes pgrelay more careful). Inside a block nothing else can commit (procedures and DO
/// blocks refuse to), so false means the block was certainly not committed by this text.
[[nodiscard]] bool may_end_transaction(std::string_view sql);

/// What one pass over the words of a Query string tells (runs of letters, digits, '_' and bytes
/// >= 0x80, in any case, also inside strings, comments and quotes): transaction pooling looks at
/// every statement, and most have neither kind of word.
struct WordScan {
  /// As may_end_transaction().
  bool may_end_transaction = false;
  /// False when analyze_session_effects() certainly reports nothing: the text has none of the
  /// words it starts from (SET, RESET, DISCARD, PREPARE, DEALLOCATE, LISTEN, DECLARE, EXPLAIN,
  /// EXECUTE, CREATE, INTO, the session advisory-lock functions), and no run that starts with a
  /// digit and goes on with a letter (the lexer could read a word out of its tail). In a text
  /// that is one INSERT, UPDATE or DELETE (first word, no ';' before the end) only the lock
  /// functions and such runs count: `UPDATE t SET` and `INSERT INTO` set nothing.
  bool may_have_effects = false;
};
[[nodiscard]] WordScan scan_words(std::string_view sql);

}  // namespace pgrelay::sql

namespace pgrelay::sql {

enum class TxControl : std::uint8_t { kOther, kCommit, kRollback };

/// A lone COMMIT / END (kCommit) or ROLLBACK / ABORT (kRollback), with optional WORK or
/// TRANSACTION, AND NO CHAIN and a final ';'. Anything else (ROLLBACK TO SAVEPOINT, COMMIT
/// PREPARED, AND CHAIN, a second statement) is kOther.
[[nodiscard]] TxControl transaction_control(std::string_view sql);

}  // namespace pgrelay::sql
