// Session effects of a Query string: a token-level reading of each statement's first words
// (grammar in https://www.postgresql.org/docs/current/sql-commands.html), not a full parser.
#include "pgrelay/sql/session_effects.hpp"

#include <algorithm>
#include <array>
#include <cstddef>
#include <initializer_list>
#include <optional>
#include <string>
#include <unordered_set>
#include <utility>

namespace pgrelay::sql {

namespace {

bool is_name(const Token& token) {
  return token.kind == TokenKind::kWord || token.kind == TokenKind::kQuotedIdentifier;
}

bool is_punctuation(const Token& token, std::string_view sql, char c) {
  return token.kind == TokenKind::kPunctuation && token.end - token.begin == 1 &&
         token.begin < sql.size() && sql[token.begin] == c;
}

char ascii_lower(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; }

// The name a word or simple quoted identifier spells, without allocating: the word's text (to be
// compared case-insensitively) or the quoted text (compared exactly). Nullopt for other tokens
// and for quoted identifiers with escapes, which none of the names looked for has.
struct RawName {
  std::string_view text;
  bool fold_case = false;

  [[nodiscard]] bool starts_with(std::string_view lower_prefix) const {
    if (text.size() < lower_prefix.size()) return false;
    for (std::size_t i = 0; i < lower_prefix.size(); ++i) {
      const char c = fold_case ? ascii_lower(text[i]) : text[i];
      if (c != lower_prefix[i]) return false;
    }
    return true;
  }
  [[nodiscard]] bool equals(std::string_view lower_name) const {
    return text.size() == lower_name.size() && starts_with(lower_name);
  }
};

std::optional<RawName> raw_name(const Token& token, std::string_view sql) {
  const std::string_view text = token.text(sql);
  if (token.kind == TokenKind::kWord) return RawName{text, true};
  if (token.kind != TokenKind::kQuotedIdentifier || text.size() < 2 || text.front() != '"' ||
      text.back() != '"') {
    return std::nullopt;
  }
  const std::string_view body = text.substr(1, text.size() - 2);
  if (body.find('"') != std::string_view::npos) return std::nullopt;
  return RawName{body, false};
}

// pg_advisory_lock and friends that take a lock held past the transaction.
bool is_session_lock_function(const Token& token, std::string_view sql) {
  const auto name = raw_name(token, sql);
  return name &&
         (name->equals("pg_advisory_lock") || name->equals("pg_advisory_lock_shared") ||
          name->equals("pg_try_advisory_lock") || name->equals("pg_try_advisory_lock_shared"));
}

// pg_temp, or pg_temp_N as the server names each session's temporary schema.
bool is_temp_schema(const Token& token, std::string_view sql) {
  const auto name = raw_name(token, sql);
  if (!name) return false;
  if (name->equals("pg_temp")) return true;
  constexpr std::string_view kPrefix = "pg_temp_";
  return name->starts_with(kPrefix) && name->text.size() > kPrefix.size() &&
         std::all_of(name->text.begin() + kPrefix.size(), name->text.end(),
                     [](char c) { return c >= '0' && c <= '9'; });
}

// Hands out the tokens of one statement at a time, with one token of lookahead, while watching
// every token of the text for calls that pin a session (whatever statement they are in).
class StatementReader {
 public:
  StatementReader(std::string_view sql, LexerOptions options, SessionEffects& effects)
      : lexer_(sql, options), effects_(effects) {
    advance();
  }

  [[nodiscard]] std::string_view sql() const { return lexer_.sql(); }

  /// The next token of the current statement without consuming it; kEnd at its end.
  [[nodiscard]] Token peek() const { return ahead_ends_statement_ ? end_token() : ahead_; }

  /// Consumes the next token of the current statement; kEnd (consuming nothing) at its end.
  Token next() {
    if (ahead_ends_statement_) return end_token();
    const Token token = ahead_;
    advance();
    return token;
  }

  /// Skips the rest of the current statement and the ';' after it. False once the text is over.
  bool next_statement() {
    while (!ahead_ends_statement_) advance();
    if (ahead_.kind == TokenKind::kEnd) return false;
    advance();
    return true;
  }

 private:
  [[nodiscard]] Token end_token() const {
    return Token{TokenKind::kEnd, ahead_.begin, ahead_.begin};
  }

  void advance() {
    const Token token = lexer_.next();
    bool ends_statement = token.kind == TokenKind::kEnd;
    if (token.kind == TokenKind::kPunctuation) {
      // Punctuation tokens are one byte, except '::' and '..'.
      const std::string_view text = token.text(sql());
      const char c = text.size() == 1 ? text.front() : '\0';
      if (c == '(') {
        // ahead_ still holds the token before this one.
        if (is_session_lock_function(ahead_, sql()) && effects_.pin == PinReason::kNone) {
          effects_.pin = PinReason::kAdvisoryLock;
        }
        ++paren_depth_;
      } else if (c == ')') {
        if (paren_depth_ > 0) --paren_depth_;
      } else if (c == ';' && paren_depth_ == 0 && begin_depth_ == 0) {
        ends_statement = true;
        word_count_ = 0;
        head_ = {};
      }
    } else if (token.kind == TokenKind::kWord) {
      track_routine_body(token);
    }
    ahead_ = token;
    ahead_ends_statement_ = ends_statement;
  }

  // psql's heuristic (psqlscan.l): in CREATE [OR REPLACE] {FUNCTION|PROCEDURE}, BEGIN ... END
  // (with CASE ... END inside) encloses an SQL-standard body whose ';' do not end the statement.
  void track_routine_body(const Token& word) {
    const std::string_view sql = this->sql();
    if (word_count_ < head_.size()) {
      // Only a statement starting with CREATE can be a routine: the rest of its head is looked
      // at only then.
      char mark = '\0';
      if (word_count_ == 0 ? is_word(word, sql, "create") : head_[0] == 'c') {
        for (const std::string_view keyword :
             {"create", "or", "replace", "function", "procedure"}) {
          if (is_word(word, sql, keyword)) mark = keyword.front();
        }
      }
      head_[word_count_++] = mark;
    }
    const bool routine =
        head_[0] == 'c' &&
        (head_[1] == 'f' || head_[1] == 'p' ||
         (head_[1] == 'o' && head_[2] == 'r' && (head_[3] == 'f' || head_[3] == 'p')));
    if (!routine || paren_depth_ != 0) return;
    if (is_word(word, sql, "begin")) {
      ++begin_depth_;
    } else if (is_word(word, sql, "case")) {
      if (begin_depth_ > 0) ++begin_depth_;
    } else if (is_word(word, sql, "end")) {
      if (begin_depth_ > 0) --begin_depth_;
    }
  }

  Lexer lexer_;
  SessionEffects& effects_;
  Token ahead_;
  bool ahead_ends_statement_ = false;
  std::size_t paren_depth_ = 0;
  std::size_t begin_depth_ = 0;
  // First letters of the statement's first words when they are
  // create/or/replace/function/procedure.
  std::array<char, 4> head_{};
  std::size_t word_count_ = 0;
};

// A possibly qualified name (`a.b.c`) read from the text.
struct DottedName {
  static constexpr std::size_t kMaxParts = 8;
  std::array<Token, kMaxParts> parts{};
  std::size_t count = 0;
};

class Analyzer {
 public:
  Analyzer(std::string_view sql, LexerOptions options) : reader_(sql, options, effects_) {}

  SessionEffects run() && {
    do {
      Token first = reader_.next();
      if (first.kind == TokenKind::kEnd) continue;
      ++effects_.statements;
      while (is_punctuation(first, sql(), '(')) first = reader_.next();
      statement(first);
    } while (reader_.next_statement());
    return std::move(effects_);
  }

 private:
  [[nodiscard]] std::string_view sql() const { return reader_.sql(); }
  [[nodiscard]] bool word(const Token& token, std::string_view lower_keyword) const {
    return is_word(token, sql(), lower_keyword);
  }
  [[nodiscard]] bool punctuation(const Token& token, char c) const {
    return is_punctuation(token, sql(), c);
  }
  // TO or '=' after a setting's name.
  [[nodiscard]] bool assignment(const Token& token) const {
    return word(token, "to") || (token.kind == TokenKind::kOperator && token.text(sql()) == "=");
  }

  void pin(PinReason reason) {
    if (effects_.pin == PinReason::kNone) effects_.pin = reason;
  }
  void add_param(std::string name) {
    // A text can hold any number of custom settings: past a few, look them up in a hash set so
    // that a long run of SETs stays linear.
    constexpr std::size_t kLinearSearchLimit = 16;
    auto& params = effects_.params;
    if (params.size() < kLinearSearchLimit) {
      if (std::find(params.begin(), params.end(), name) != params.end()) return;
    } else {
      if (param_index_.empty()) param_index_.insert(params.begin(), params.end());
      if (!param_index_.insert(name).second) return;
    }
    params.push_back(std::move(name));
  }
  [[nodiscard]] NameRef name_ref(const Token& token) const {
    return NameRef{token.begin, token.end, identifier_value(token, sql())};
  }

  void statement(const Token& first) {
    if (word(first, "set")) {
      set_statement();
    } else if (word(first, "reset")) {
      reset_statement();
    } else if (word(first, "discard")) {
      if (word(reader_.next(), "all")) {
        effects_.reset_all = true;
        effects_.deallocate_all = true;
        effects_.discard_all = true;
      }
    } else if (word(first, "prepare")) {
      prepare_statement();
    } else if (word(first, "deallocate")) {
      deallocate_statement();
    } else if (word(first, "listen")) {
      pin(PinReason::kListen);
    } else if (word(first, "declare")) {
      declare_statement();
    } else if (word(first, "explain")) {
      explain_statement();
    } else {
      explainable_statement(first);
    }
  }

  // The statements EXPLAIN can wrap that matter here.
  void explainable_statement(const Token& first) {
    if (word(first, "execute")) {
      const Token name = reader_.next();
      if (is_name(name)) effects_.executes.push_back(name_ref(name));
    } else if (word(first, "create")) {
      create_statement();
    } else if (word(first, "select") || word(first, "with")) {
      select_statement(first);
    }
  }

  // SET [SESSION | LOCAL] ...
  void set_statement() {
    Token token = reader_.next();
    // SESSION and LOCAL are also names (SET session TO ... sets a setting called "session").
    if ((word(token, "local") || word(token, "session")) && !assignment(reader_.peek())) {
      const bool local = word(token, "local");
      const bool session_form =
          word(reader_.peek(), "authorization") || word(reader_.peek(), "characteristics");
      if (!(word(token, "session") && session_form)) {
        if (local) return;  // lasts until the end of the transaction
        token = reader_.next();
      }
    }
    // Before a '.', any keyword starts a custom setting's name (SET role.x = 1).
    const Token after = reader_.peek();
    if (punctuation(after, '.') || !set_keyword_form(token, after)) set_generic(token);
  }

  // The SET forms with a grammar of their own; false for `name {TO | = | FROM CURRENT} ...`.
  bool set_keyword_form(const Token& token, const Token& after) {
    if (word(token, "session") && word(after, "authorization")) {
      pin(PinReason::kSessionAuthorization);
      return true;
    }
    if (word(token, "session") && word(after, "characteristics")) {
      session_characteristics();
      return true;
    }
    std::string_view param;
    if (word(token, "time") && word(after, "zone")) {
      param = "timezone";
    } else if (word(token, "xml") && word(after, "option")) {
      param = "xmloption";
    } else if (word(token, "role")) {
      param = "role";
    } else if (!assignment(after) && word(token, "names")) {
      param = "client_encoding";
    } else if (!assignment(after) && word(token, "schema")) {
      param = "search_path";
    }
    if (!param.empty()) {
      add_param(std::string(param));
      return true;
    }
    // SET TRANSACTION and SET CONSTRAINTS last for the transaction; SET CATALOG is an error.
    return !assignment(after) &&
           (word(token, "transaction") || word(token, "constraints") || word(token, "catalog"));
  }

  // SET name[.name...] {TO | = | FROM CURRENT} ...
  void set_generic(const Token& first) {
    if (const auto name = dotted_name(first)) {
      const Token value = reader_.peek();
      if (assignment(value) || word(value, "from")) add_param(setting_name(*name));
    }
  }

  // SET SESSION CHARACTERISTICS AS TRANSACTION mode [, ...] sets the defaults for later
  // transactions.
  void session_characteristics() {
    for (Token token = reader_.next(); token.kind != TokenKind::kEnd; token = reader_.next()) {
      if (word(token, "isolation")) {
        add_param("default_transaction_isolation");
      } else if (word(token, "read") &&
                 (word(reader_.peek(), "only") || word(reader_.peek(), "write"))) {
        add_param("default_transaction_read_only");
      } else if (word(token, "deferrable")) {
        add_param("default_transaction_deferrable");
      }
    }
  }

  void reset_statement() {
    const Token token = reader_.next();
    const Token after = reader_.peek();
    if (punctuation(after, '.') || !reset_keyword_form(token, after)) reset_generic(token);
  }

  // The RESET forms with a grammar of their own; false for `RESET name`.
  bool reset_keyword_form(const Token& token, const Token& after) {
    if (word(token, "all")) {
      effects_.reset_all = true;
      return true;
    }
    if (word(token, "session") && word(after, "authorization")) {
      pin(PinReason::kSessionAuthorization);
      return true;
    }
    if (word(token, "time") && word(after, "zone")) {
      add_param("timezone");
      return true;
    }
    // RESET TRANSACTION ISOLATION LEVEL: the current transaction only.
    return word(token, "transaction") && word(after, "isolation");
  }

  void reset_generic(const Token& first) {
    if (const auto name = dotted_name(first)) add_param(setting_name(*name));
  }

  // `first` [. name ...]: the parts, or nullopt when it is not a name.
  std::optional<DottedName> dotted_name(const Token& first) {
    if (!is_name(first)) return std::nullopt;
    DottedName name;
    name.parts[name.count++] = first;
    while (punctuation(reader_.peek(), '.')) {
      reader_.next();
      const Token part = reader_.next();
      if (!is_name(part) || name.count == DottedName::kMaxParts) return std::nullopt;
      name.parts[name.count++] = part;
    }
    return name;
  }

  // Setting names are case-insensitive, quoted or not.
  [[nodiscard]] std::string setting_name(const DottedName& name) const {
    std::string out;
    for (std::size_t i = 0; i < name.count; ++i) {
      if (i > 0) out += '.';
      out += identifier_value(name.parts[i], sql());
    }
    std::transform(out.begin(), out.end(), out.begin(), ascii_lower);
    return out;
  }

  // PREPARE name [(types)] AS statement, but not PREPARE TRANSACTION 'gid'.
  void prepare_statement() {
    const Token name = reader_.next();
    const Token after = reader_.peek();
    if (word(name, "transaction") && after.kind == TokenKind::kString) return;
    if (is_name(name) && (punctuation(after, '(') || word(after, "as"))) {
      effects_.prepares.push_back(name_ref(name));
    }
  }

  // DEALLOCATE [PREPARE] {name | ALL}; "prepare" alone is a statement name.
  void deallocate_statement() {
    Token name = reader_.next();
    if (word(name, "prepare") && is_name(reader_.peek())) name = reader_.next();
    if (word(name, "all")) {
      effects_.deallocate_all = true;
    } else if (is_name(name)) {
      effects_.deallocates.push_back(name_ref(name));
    }
  }

  // DECLARE name [options] CURSOR [WITH HOLD | WITHOUT HOLD] FOR query
  void declare_statement() {
    reader_.next();  // the cursor's name
    for (Token token = reader_.next(); token.kind != TokenKind::kEnd && !word(token, "for");
         token = reader_.next()) {
      if (word(token, "with") && word(reader_.peek(), "hold")) {
        pin(PinReason::kWithHoldCursor);
        return;
      }
    }
  }

  // EXPLAIN [ANALYZE] [VERBOSE] [(options)] statement. Without ANALYZE a CREATE TABLE AS makes
  // no table, but pinning such a rare statement costs less than telling the two apart.
  void explain_statement() {
    Token token = reader_.next();
    if (punctuation(token, '(')) {
      skip_parenthesized();
      token = reader_.next();
    }
    while (word(token, "analyze") || word(token, "analyse") || word(token, "verbose")) {
      token = reader_.next();
    }
    while (punctuation(token, '(')) token = reader_.next();
    explainable_statement(token);
  }

  // After a '(' was read: up to and including its ')'.
  void skip_parenthesized() {
    std::size_t depth = 1;
    while (depth > 0) {
      const Token token = reader_.next();
      if (token.kind == TokenKind::kEnd) return;
      if (punctuation(token, '(')) ++depth;
      if (punctuation(token, ')')) --depth;
    }
  }

  // CREATE [OR REPLACE] [GLOBAL | LOCAL] {TEMP | TEMPORARY} ...; any object named or looked up
  // in pg_temp; CREATE TABLE ... AS EXECUTE name.
  void create_statement() {
    Token token = reader_.next();
    if (word(token, "or") && word(reader_.peek(), "replace")) {
      reader_.next();
      token = reader_.next();
    }
    if (word(token, "global") || word(token, "local")) token = reader_.next();
    if (word(token, "temp") || word(token, "temporary")) {
      pin(PinReason::kTempObject);
      token = reader_.next();
    } else if (word(token, "unlogged")) {
      token = reader_.next();
    }
    const bool table = word(token, "table");
    Token previous = token;
    for (; token.kind != TokenKind::kEnd; previous = token, token = reader_.next()) {
      // A view over a temporary table becomes temporary too, so any pg_temp reference pins.
      if (is_temp_schema(token, sql()) && punctuation(reader_.peek(), '.')) {
        pin(PinReason::kTempObject);
      }
      if (table && word(previous, "as") && word(token, "execute") && is_name(reader_.peek())) {
        effects_.executes.push_back(name_ref(reader_.next()));
      }
    }
  }

  // SELECT ... INTO [GLOBAL | LOCAL] {TEMP | TEMPORARY} [TABLE] name, or INTO pg_temp.name.
  void select_statement(const Token& first) {
    Token previous = first;
    for (Token token = reader_.next(); token.kind != TokenKind::kEnd;
         previous = token, token = reader_.next()) {
      // INSERT INTO temp and MERGE INTO temp (in a WITH) name a table called "temp".
      if (!word(token, "into") || word(previous, "insert") || word(previous, "merge")) continue;
      if (into_temp_table()) {
        pin(PinReason::kTempObject);
        return;
      }
    }
  }

  bool into_temp_table() {
    Token token = reader_.next();
    if (is_temp_schema(token, sql()) && punctuation(reader_.peek(), '.')) return true;
    if (word(token, "global") || word(token, "local")) token = reader_.next();
    if (!word(token, "temp") && !word(token, "temporary")) return false;
    // SELECT * INTO temp FROM t makes a table called "temp".
    const Token after = reader_.peek();
    if (!is_name(after)) return false;
    for (const std::string_view keyword :
         {"from", "where", "group", "having", "window", "order", "limit", "offset", "fetch", "for",
          "union", "intersect", "except"}) {
      if (word(after, keyword)) return false;
    }
    return true;
  }

  SessionEffects effects_;
  StatementReader reader_;
  std::unordered_set<std::string> param_index_;
};

}  // namespace

std::string_view to_string(PinReason reason) {
  switch (reason) {
    case PinReason::kNone:
      return "none";
    case PinReason::kListen:
      return "listen";
    case PinReason::kTempObject:
      return "temp_object";
    case PinReason::kAdvisoryLock:
      return "advisory_lock";
    case PinReason::kWithHoldCursor:
      return "with_hold_cursor";
    case PinReason::kSessionAuthorization:
      return "session_authorization";
  }
  return "unknown";
}

bool SessionEffects::empty() const {
  return params.empty() && !reset_all && !deallocate_all && !discard_all && prepares.empty() &&
         executes.empty() && deallocates.empty() && pin == PinReason::kNone;
}

SessionEffects analyze_session_effects(std::string_view sql, LexerOptions options) {
  return Analyzer(sql, options).run();
}

}  // namespace pgrelay::sql

namespace pgrelay::sql {

namespace {

constexpr bool is_digit(unsigned char c) { return c >= '0' && c <= '9'; }

// What one word can mean to the analysis.
struct WordMarks {
  bool may_end_transaction = false;
  bool statement_word = false;  // matters in some statements (SET, INTO, CREATE ...)
  bool lock_function = false;   // matters in any statement
};

// Marks what the word at `word` (`length` bytes, not starting with a digit) may do.
void classify_word(const char* word, std::size_t length, WordMarks& marks) {
  const auto any = [&](std::initializer_list<std::string_view> candidates) {
    for (const auto candidate : candidates) {
      if (same_word(word, candidate)) return true;
    }
    return false;
  };
  switch (length) {
    case 3:
      if (same_word(word, "end")) marks.may_end_transaction = true;
      if (same_word(word, "set")) marks.statement_word = true;
      break;
    case 4:
      if (same_word(word, "into")) marks.statement_word = true;
      break;
    case 5:
      if (same_word(word, "reset")) marks.statement_word = true;
      break;
    case 6:
      if (same_word(word, "commit")) marks.may_end_transaction = true;
      if (any({"listen", "create"})) marks.statement_word = true;
      break;
    case 7:
      if (same_word(word, "prepare")) {
        marks.may_end_transaction = true;  // PREPARE TRANSACTION
        marks.statement_word = true;       // PREPARE name AS
      } else if (any({"discard", "declare", "explain", "execute"})) {
        marks.statement_word = true;
      }
      break;
    case 10:
      if (same_word(word, "deallocate")) marks.statement_word = true;
      break;
    case 16:
      if (same_word(word, "pg_advisory_lock")) marks.lock_function = true;
      break;
    case 20:
      if (same_word(word, "pg_try_advisory_lock")) marks.lock_function = true;
      break;
    case 23:
      if (same_word(word, "pg_advisory_lock_shared")) marks.lock_function = true;
      break;
    case 27:
      if (same_word(word, "pg_try_advisory_lock_shared")) marks.lock_function = true;
      break;
    default:
      break;
  }
}

// The text is one INSERT, UPDATE or DELETE: it starts with that word (blanks before it at
// most) and has no ';' but perhaps a last one followed by blanks. The analysis reads nothing in
// such a statement but calls of the lock functions: SET, INTO and the rest are its own words.
bool single_plain_dml(std::string_view sql, const char* first_word, std::size_t length) {
  if (!std::all_of(sql.data(), first_word, is_blank_byte)) return false;
  if (!(length == 6 && (same_word(first_word, "insert") || same_word(first_word, "update") ||
                        same_word(first_word, "delete")))) {
    return false;
  }
  const std::size_t semicolon = sql.find(';');
  return semicolon == std::string_view::npos ||
         std::all_of(sql.begin() + static_cast<std::ptrdiff_t>(semicolon) + 1, sql.end(),
                     is_blank_byte);
}

}  // namespace

WordScan scan_words(std::string_view sql) {
  WordMarks marks;
  const char* first_word = nullptr;
  std::size_t first_length = 0;
  const char* p = sql.data();
  const char* const end = p + sql.size();
  while (p < end) {
    if (!is_word_byte(*p)) {
      ++p;
      continue;
    }
    const char* const word = p;
    do {
      ++p;
    } while (p < end && is_word_byte(*p));
    const auto length = static_cast<std::size_t>(p - word);
    if (first_word == nullptr) {
      first_word = word;
      first_length = length;
    }
    if (is_digit(static_cast<unsigned char>(*word))) {
      // The lexer ends a number where its digits do and may start a word right after (`1into`,
      // `1pg_advisory_lock(`): a word could hide in the tail. Plain numbers say nothing.
      if (!std::all_of(word, p, [](char c) { return is_digit(static_cast<unsigned char>(c)); })) {
        marks.statement_word = true;
        marks.lock_function = true;
      }
    } else {
      classify_word(word, length, marks);
    }
    if (marks.may_end_transaction && marks.lock_function) break;  // nothing more to learn
  }
  WordScan scan;
  scan.may_end_transaction = marks.may_end_transaction;
  scan.may_have_effects =
      marks.lock_function ||
      (marks.statement_word &&
       (first_word == nullptr || !single_plain_dml(sql, first_word, first_length)));
  return scan;
}

bool may_end_transaction(std::string_view sql) { return scan_words(sql).may_end_transaction; }

}  // namespace pgrelay::sql

namespace pgrelay::sql {

TxControl transaction_control(std::string_view sql) {
  Lexer lexer(sql);
  auto token = lexer.next();
  while (token.kind == TokenKind::kPunctuation && token.text(sql) == ";") token = lexer.next();
  TxControl result = TxControl::kOther;
  if (is_word(token, sql, "commit") || is_word(token, sql, "end")) {
    result = TxControl::kCommit;
  } else if (is_word(token, sql, "rollback") || is_word(token, sql, "abort")) {
    result = TxControl::kRollback;
  } else {
    return TxControl::kOther;
  }
  token = lexer.next();
  if (is_word(token, sql, "work") || is_word(token, sql, "transaction")) token = lexer.next();
  if (is_word(token, sql, "and")) {
    token = lexer.next();
    if (!is_word(token, sql, "no")) return TxControl::kOther;
    token = lexer.next();
    if (!is_word(token, sql, "chain")) return TxControl::kOther;
    token = lexer.next();
  }
  while (token.kind == TokenKind::kPunctuation && token.text(sql) == ";") token = lexer.next();
  return token.kind == TokenKind::kEnd ? result : TxControl::kOther;
}

}  // namespace pgrelay::sql
