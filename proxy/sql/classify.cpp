// Query classification: a lexer pre-pass for the common statements, libpg_query for the rest.
#include "pgrelay/sql/classify.hpp"

#include <pg_query.h>
#include <pg_query/pg_query.pb-c.h>

#include <algorithm>
#include <array>
#include <cstring>

namespace pgrelay::sql {

namespace {

// ---- function catalog -----------------------------------------------------------------------

std::string lower_ascii(std::string_view text) {
  std::string out(text);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c + ('a' - 'A'));
  }
  return out;
}

/// Calls that change something (or take locks, or hand out transaction ids) whatever their
/// catalog volatility says.
bool always_writes(std::string_view bare) {
  static constexpr std::array<std::string_view, 11> kExact = {"nextval",
                                                              "setval",
                                                              "pg_notify",
                                                              "txid_current",
                                                              "lastval",
                                                              "currval",
                                                              "txid_current_if_assigned",
                                                              "pg_current_xact_id",
                                                              "set_config",
                                                              "pg_current_xact_id_if_assigned",
                                                              "pg_switch_wal"};
  if (std::find(kExact.begin(), kExact.end(), bare) != kExact.end()) return true;
  return bare.starts_with("pg_advisory_") || bare.starts_with("pg_try_advisory_");
}

/// Common non-volatile pg_catalog functions, used until the primary's catalog is read.
constexpr std::string_view kBuiltinNonVolatile[] = {
    "abs",
    "age",
    "array_agg",
    "array_length",
    "array_to_string",
    "avg",
    "bool_and",
    "bool_or",
    "btrim",
    "ceil",
    "ceiling",
    "char_length",
    "character_length",
    "concat",
    "concat_ws",
    "count",
    "current_database",
    "current_schema",
    "current_setting",
    "current_user",
    "date_part",
    "date_trunc",
    "every",
    "exp",
    "floor",
    "format",
    "generate_series",
    "greatest",
    "initcap",
    "json_agg",
    "json_build_object",
    "jsonb_agg",
    "jsonb_build_object",
    "left",
    "length",
    "ln",
    "log",
    "lower",
    "lpad",
    "ltrim",
    "max",
    "md5",
    "min",
    "mod",
    "now",
    "octet_length",
    "pg_backend_pid",
    "pg_is_in_recovery",
    "pg_last_wal_replay_lsn",
    "position",
    "power",
    "regexp_replace",
    "repeat",
    "replace",
    "right",
    "round",
    "row_number",
    "rpad",
    "rtrim",
    "sign",
    "split_part",
    "sqrt",
    "statement_timestamp",
    "stddev",
    "string_agg",
    "strpos",
    "substr",
    "substring",
    "sum",
    "to_char",
    "to_date",
    "to_json",
    "to_jsonb",
    "to_number",
    "to_timestamp",
    "transaction_timestamp",
    "trim",
    "trunc",
    "unnest",
    "upper",
    "variance",
    "version",
    "rank",
    "dense_rank",
    "lag",
    "lead",
    "first_value",
    "last_value",
    "coalesce",
    "nullif",
    "least",
    "extract",
    "overlay",
    "array_position",
};

// ---- lexer pre-pass -------------------------------------------------------------------------

/// Words that may stand before '(' without being a function call (or are calls of immutable
/// grammar constructs).
bool grammar_paren_word(std::string_view w) {
  static constexpr std::string_view kWords[] = {
      "in",       "any",       "all",      "some",   "exists",    "from",    "join",      "on",
      "using",    "and",       "or",       "not",    "where",     "when",    "then",      "else",
      "select",   "as",        "over",     "filter", "lateral",   "by",      "distinct",  "having",
      "values",   "cast",      "coalesce", "nullif", "greatest",  "least",   "row",       "array",
      "extract",  "substring", "position", "trim",   "overlay",   "is",      "like",      "ilike",
      "similar",  "between",   "case",     "union",  "intersect", "except",  "limit",     "offset",
      "group",    "order",     "within",   "rollup", "cube",      "sets",    "grouping",  "table",
      "numeric",  "decimal",   "varchar",  "char",   "character", "varying", "timestamp", "time",
      "interval", "bit",       "float",    "return"};
  return std::find(std::begin(kWords), std::end(kWords), w) != std::end(kWords);
}

/// Words that, anywhere in a SELECT, mean the lexer cannot settle it (locking clauses, SELECT
/// INTO, nested data-modifying statements).
bool unsettling_word(const char* word, std::size_t length) {
  // Asked for every word of every SELECT: the length rules most words out, the first letter
  // most of the rest.
  const auto is = [word](std::string_view lower) { return same_word(word, lower); };
  switch (length) {
    case 3:
      return is("for");
    case 4:
      return is("into") || is("with") || is("lock") || is("copy") || is("call");
    case 5:
      return is("merge") || is("share");
    case 6:
      return is("insert") || is("update") || is("delete") || is("nowait");
    case 7:
      return is("execute");
    case 9:
      return is("returning");
    default:
      return false;
  }
}

bool plain_write_word(std::string_view w) {
  static constexpr std::string_view kWords[] = {
      "insert",   "update",     "delete", "merge",      "create",   "alter",   "drop",
      "truncate", "grant",      "revoke", "vacuum",     "analyze",  "analyse", "cluster",
      "reindex",  "lock",       "listen", "notify",     "unlisten", "refresh", "comment",
      "security", "import",     "load",   "checkpoint", "reassign", "call",    "do",
      "execute",  "deallocate", "declare"};
  return std::find(std::begin(kWords), std::end(kWords), w) != std::end(kWords);
}

/// Tokens of one query with one token of lookahead; a word's lower-case text is kept in a small
/// buffer (keywords and function names are short; longer words never match a keyword).
class Tokens {
 public:
  Tokens(std::string_view sql, LexerOptions options) : lexer_(sql, options), sql_(sql) {
    ahead_ = lexer_.next();
  }
  [[nodiscard]] const Token& peek() const { return ahead_; }
  Token take() {
    Token t = ahead_;
    ahead_ = lexer_.next();
    return t;
  }
  /// Lower-case text of a word token ("" for other kinds or words over 63 bytes).
  std::string_view word(const Token& t) {
    if (t.kind != TokenKind::kWord) return {};
    const auto text = t.text(sql_);
    if (text.size() >= buffer_.size()) return {};
    for (std::size_t i = 0; i < text.size(); ++i) {
      char c = text[i];
      if (c >= 'A' && c <= 'Z') c = static_cast<char>(c + ('a' - 'A'));
      buffer_[i] = c;
    }
    return {buffer_.data(), text.size()};
  }
  std::string word_copy(const Token& t) { return std::string(word(t)); }
  /// Lexer::skip_to_end_if_last_statement() past the lookahead (unless that ends the statement
  /// already): the usual single statement is not lexed to its end.
  bool skip_to_end_if_last_statement() {
    if (statement_end(ahead_) || !lexer_.skip_to_end_if_last_statement()) return false;
    ahead_ = lexer_.next();
    return true;
  }
  [[nodiscard]] bool punct(const Token& t, char c) const {
    return t.kind == TokenKind::kPunctuation && t.end == t.begin + 1 && sql_[t.begin] == c;
  }
  [[nodiscard]] bool statement_end(const Token& t) const {
    return t.kind == TokenKind::kEnd || punct(t, ';');
  }
  [[nodiscard]] std::string_view sql() const { return sql_; }

 private:
  Lexer lexer_;
  std::string_view sql_;
  Token ahead_;
  std::array<char, 64> buffer_{};
};

enum class Fast : std::uint8_t { kSettled, kUnsure };

/// Reads transaction modes (READ ONLY, READ WRITE, ISOLATION LEVEL ..., [NOT] DEFERRABLE, with
/// commas) up to the statement's end. kUnsure on anything else.
Fast transaction_modes(Tokens& tokens, std::optional<bool>& read_only) {
  while (true) {
    const Token t = tokens.take();
    if (tokens.statement_end(t)) return Fast::kSettled;
    if (tokens.punct(t, ',')) continue;
    const auto w = tokens.word(t);
    if (w == "read") {
      const auto next = tokens.word_copy(tokens.take());
      if (next == "only") {
        read_only = true;
      } else if (next == "write") {
        read_only = false;
      } else {
        return Fast::kUnsure;
      }
    } else if (w == "isolation") {
      if (tokens.word(tokens.take()) != "level") return Fast::kUnsure;
      const auto level = tokens.word_copy(tokens.take());
      if (level == "serializable") continue;
      const auto second = tokens.word_copy(tokens.take());
      if (!((level == "repeatable" && second == "read") ||
            (level == "read" && (second == "committed" || second == "uncommitted")))) {
        return Fast::kUnsure;
      }
    } else if (w == "deferrable" || w == "not") {
      if (w == "not" && tokens.word(tokens.take()) != "deferrable") return Fast::kUnsure;
    } else {
      return Fast::kUnsure;
    }
  }
}

/// Skips to the end of the current statement.
void skip_statement(Tokens& tokens) {
  if (tokens.skip_to_end_if_last_statement()) return;
  while (!tokens.statement_end(tokens.peek())) tokens.take();
  tokens.take();
}

/// One statement whose first token is `first`. Sets `kind`, `tx_read_only` and `reason`.
Fast fast_statement(Tokens& tokens, const Token& first, const FunctionCatalog& catalog,
                    StatementKind& kind, std::optional<bool>& tx_read_only, std::string& reason) {
  // A copy (the tokens' word buffer is reused), compared as a view: each `w == "..."` below
  // then checks the size first instead of calling strlen and memcmp.
  const std::string word_text = tokens.word_copy(first);
  const std::string_view w = word_text;
  if (w.empty()) return Fast::kUnsure;
  if (w == "show") {
    kind = StatementKind::kRead;
    skip_statement(tokens);
    return Fast::kSettled;
  }
  if (w == "select" || w == "values" || w == "table") {
    Token prev = first;
    Token before_prev{};
    std::string qualified;
    while (true) {
      const Token t = tokens.take();
      if (tokens.statement_end(t)) break;
      if (t.kind == TokenKind::kWord) {
        const auto w = tokens.word(t);
        if (unsettling_word(w.data(), w.size())) return Fast::kUnsure;
      }
      if (tokens.punct(t, '(')) {
        if (prev.kind == TokenKind::kQuotedIdentifier) return Fast::kUnsure;
        if (prev.kind == TokenKind::kWord) {
          std::string name = tokens.word_copy(prev);
          if (name.empty()) return Fast::kUnsure;
          if (tokens.punct(before_prev, '.')) {
            // schema.function( : the schema is two tokens back; settle only pg_catalog's.
            return Fast::kUnsure;
          }
          if (!grammar_paren_word(name) && !catalog.non_volatile(name)) return Fast::kUnsure;
        }
      }
      before_prev = prev;
      prev = t;
    }
    kind = StatementKind::kRead;
    return Fast::kSettled;
  }
  if (w == "begin" || w == "start") {
    if (w == "start" && tokens.word(tokens.take()) != "transaction") return Fast::kUnsure;
    const auto next = tokens.word(tokens.peek());
    if (next == "transaction" || next == "work") tokens.take();
    kind = StatementKind::kBegin;
    return transaction_modes(tokens, tx_read_only);
  }
  if (w == "commit" || w == "end" || w == "abort" || w == "rollback") {
    while (true) {
      const Token t = tokens.take();
      if (tokens.statement_end(t)) break;
      const auto word = tokens.word(t);
      if (word == "to") {
        kind = StatementKind::kSession;  // ROLLBACK TO SAVEPOINT
        skip_statement(tokens);
        return Fast::kSettled;
      }
      if (word != "work" && word != "transaction" && word != "and" && word != "no" &&
          word != "chain") {
        return Fast::kUnsure;  // COMMIT PREPARED 'gid' and the like
      }
    }
    kind = StatementKind::kEnd;
    return Fast::kSettled;
  }
  if (w == "reset") {
    std::string next = tokens.word_copy(tokens.peek());
    if (next == "session") {
      tokens.take();
      next = tokens.word(tokens.peek()) == "authorization" ? "session_authorization" : "";
    }
    if (next == "session_authorization") {
      kind = StatementKind::kWrite;
      reason = "set session authorization";
    } else {
      kind = StatementKind::kSession;
    }
    skip_statement(tokens);
    return Fast::kSettled;
  }
  if (w == "savepoint" || w == "release" || w == "fetch" || w == "move" || w == "close" ||
      w == "discard") {
    kind = StatementKind::kSession;
    skip_statement(tokens);
    return Fast::kSettled;
  }
  if (w == "set") {
    const std::string next = tokens.word_copy(tokens.peek());
    if (next == "session_authorization") {
      kind = StatementKind::kWrite;
      reason = "set session authorization";
      skip_statement(tokens);
      return Fast::kSettled;
    }
    if (next == "transaction") {
      tokens.take();
      if (tokens.word(tokens.peek()) == "snapshot") return Fast::kUnsure;
      kind = StatementKind::kSetTransaction;
      return transaction_modes(tokens, tx_read_only);
    }
    if (next == "session") {
      tokens.take();
      const auto after = tokens.word(tokens.peek());
      if (after == "characteristics" || after == "authorization") {
        // Changes the session's default transaction modes / pins the session: the primary.
        kind = StatementKind::kWrite;
        reason = after == "characteristics" ? "set session characteristics"
                                            : "set session authorization";
        skip_statement(tokens);
        return Fast::kSettled;
      }
    }
    kind = StatementKind::kSession;
    skip_statement(tokens);
    return Fast::kSettled;
  }
  if (w == "prepare") {
    if (tokens.word(tokens.peek()) == "transaction") {
      kind = StatementKind::kEnd;
      skip_statement(tokens);
      return Fast::kSettled;
    }
    kind = StatementKind::kWrite;
    reason = "prepare";
    skip_statement(tokens);
    return Fast::kSettled;
  }
  if (plain_write_word(w)) {
    kind = StatementKind::kWrite;
    reason = w;
    skip_statement(tokens);
    return Fast::kSettled;
  }
  return Fast::kUnsure;
}

/// A text the token loop would settle as one plain read without finding anything to look at:
/// it starts with the word SELECT (blanks before it at most), has no '(' (so no function
/// call), no ';' but perhaps a last one followed by blanks, and no run of letters, digits and
/// '_' (anywhere, in strings and comments too) that is a word unsettling a SELECT or that
/// starts with a digit and goes on with a letter (the lexer could read a word out of its
/// tail). Most reads are like this; they are then not lexed at all.
bool plain_select(std::string_view sql) {
  std::size_t i = 0;
  while (i < sql.size() && is_blank_byte(sql[i])) ++i;
  constexpr std::string_view kSelect = "select";
  if (sql.size() - i < kSelect.size()) return false;
  for (std::size_t k = 0; k < kSelect.size(); ++k) {
    char c = sql[i + k];
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c + ('a' - 'A'));
    if (c != kSelect[k]) return false;
  }
  // The lexer's word goes on through letters, digits, '_', '$' and bytes >= 0x80.
  const std::size_t after = i + kSelect.size();
  if (after < sql.size() && (is_word_byte(sql[after]) || sql[after] == '$')) return false;
  if (sql.find('(', after) != std::string_view::npos) return false;
  if (const auto semicolon = sql.find(';', after); semicolon != std::string_view::npos) {
    for (std::size_t k = semicolon + 1; k < sql.size(); ++k) {
      if (!is_blank_byte(sql[k])) return false;
    }
  }
  for (std::size_t p = after; p < sql.size();) {
    if (!is_word_byte(sql[p])) {
      ++p;
      continue;
    }
    const std::size_t start = p;
    while (p < sql.size() && is_word_byte(sql[p])) ++p;
    const std::size_t length = p - start;
    if (sql[start] >= '0' && sql[start] <= '9') {
      for (std::size_t k = start; k < p; ++k) {
        if (sql[k] < '0' || sql[k] > '9') return false;
      }
      continue;
    }
    if (unsettling_word(sql.data() + start, length)) return false;
  }
  return true;
}

/// Folds one statement's verdict into the query's.
void fold(QueryClass& result, bool& leading, StatementKind kind,
          const std::optional<bool>& tx_read_only, std::string_view reason) {
  if (kind == StatementKind::kEmpty) return;
  if (result.first == StatementKind::kEmpty) result.first = kind;
  if (leading && (kind == StatementKind::kBegin || kind == StatementKind::kSetTransaction)) {
    if (tx_read_only) result.tx_read_only = tx_read_only;
    return;
  }
  leading = false;
  result.has_body = true;
  switch (kind) {
    case StatementKind::kWrite:
      if (result.read_only) result.reason = reason.empty() ? "write" : std::string(reason);
      result.read_only = false;
      break;
    case StatementKind::kEnd:
      result.ends_transaction = true;
      break;
    default:
      // A second BEGIN (a warning) or a later SET TRANSACTION (an error after the first
      // query), session statements, reads: nothing a standby cannot do.
      break;
  }
}

bool mentions_primary_hint(std::string_view sql) {
  return sql.find("pgrelay:primary") != std::string_view::npos;
}

// ---- full parser ----------------------------------------------------------------------------

constexpr int kMaxDepth = 2000;

/// Reads a field of type T at `at` (protobuf-c lays messages out as plain C structs).
template <typename T>
T field_at(const char* at) {
  T value;
  std::memcpy(&value, at, sizeof(T));  // NOLINT(bugprone-sizeof-expression): a pointer field
  return value;
}

/// Walks every message below `message` (protobuf-c reflection), calling visit(message) first;
/// visit returns false to skip the children. False when the tree was too deep.
template <typename Visit>
bool walk(const ProtobufCMessage* message, Visit& visit, int depth = 0) {
  if (message == nullptr) return true;
  if (depth > kMaxDepth) return false;
  if (!visit(message)) return true;
  const auto* descriptor = message->descriptor;
  const auto* base = reinterpret_cast<const char*>(message);
  for (unsigned i = 0; i < descriptor->n_fields; ++i) {
    const auto& field = descriptor->fields[i];
    if (field.type != PROTOBUF_C_TYPE_MESSAGE) continue;
    if ((field.flags & PROTOBUF_C_FIELD_FLAG_ONEOF) != 0 &&
        field_at<std::uint32_t>(base + field.quantifier_offset) != field.id) {
      continue;
    }
    if (field.label == PROTOBUF_C_LABEL_REPEATED) {
      const auto count = field_at<std::size_t>(base + field.quantifier_offset);
      const auto items = field_at<const ProtobufCMessage* const*>(base + field.offset);
      for (std::size_t k = 0; k < count; ++k) {
        if (!walk(items[k], visit, depth + 1)) return false;
      }
    } else {
      const auto child = field_at<const ProtobufCMessage*>(base + field.offset);
      if (!walk(child, visit, depth + 1)) return false;
    }
  }
  return true;
}

std::string function_name(const PgQuery__FuncCall* call) {
  std::string name;
  for (std::size_t i = 0; i < call->n_funcname; ++i) {
    const auto* node = call->funcname[i];
    if (node == nullptr || node->node_case != PG_QUERY__NODE__NODE_STRING) return {};
    if (!name.empty()) name.push_back('.');
    name += node->string->sval;
  }
  return name;
}

/// Why a SELECT-like tree is not read-only ("" when it is).
std::string read_only_violation(const ProtobufCMessage* tree, const FunctionCatalog& catalog) {
  std::string violation;
  auto visit = [&](const ProtobufCMessage* m) {
    if (!violation.empty()) return false;
    const auto* d = m->descriptor;
    if (d == &pg_query__insert_stmt__descriptor || d == &pg_query__update_stmt__descriptor ||
        d == &pg_query__delete_stmt__descriptor || d == &pg_query__merge_stmt__descriptor) {
      violation = "data-modifying statement in WITH";
    } else if (d == &pg_query__locking_clause__descriptor) {
      violation = "locking clause (FOR UPDATE/SHARE)";
    } else if (d == &pg_query__into_clause__descriptor) {
      violation = "SELECT INTO";
    } else if (d == &pg_query__func_call__descriptor) {
      const auto* call = reinterpret_cast<const PgQuery__FuncCall*>(m);
      // SQL-syntax forms the grammar turns into pg_catalog calls (EXTRACT, SUBSTRING ... FROM,
      // POSITION, TRIM, OVERLAY, AT TIME ZONE, ...) are all immutable or stable.
      if (call->funcformat == PG_QUERY__COERCION_FORM__COERCE_SQL_SYNTAX) return true;
      const auto name = function_name(call);
      if (name.empty() || !catalog.non_volatile(lower_ascii(name))) {
        violation = "function " + (name.empty() ? std::string("?") : name) +
                    " is not known to be non-volatile";
      }
    }
    return violation.empty();
  };
  if (!walk(tree, visit)) return "statement nested too deeply";
  return violation;
}

std::optional<bool> read_only_option(PgQuery__Node* const* options, std::size_t count) {
  std::optional<bool> result;
  for (std::size_t i = 0; i < count; ++i) {
    const auto* node = options[i];
    if (node == nullptr || node->node_case != PG_QUERY__NODE__NODE_DEF_ELEM) continue;
    const auto* def = node->def_elem;
    if (def->defname == nullptr || std::strcmp(def->defname, "transaction_read_only") != 0)
      continue;
    if (def->arg != nullptr && def->arg->node_case == PG_QUERY__NODE__NODE_A_CONST &&
        def->arg->a_const->val_case == PG_QUERY__A__CONST__VAL_IVAL) {
      result = def->arg->a_const->ival->ival != 0;
    }
  }
  return result;
}

bool explain_analyzes(const PgQuery__ExplainStmt* explain) {
  for (std::size_t i = 0; i < explain->n_options; ++i) {
    const auto* node = explain->options[i];
    if (node == nullptr || node->node_case != PG_QUERY__NODE__NODE_DEF_ELEM) continue;
    const auto* def = node->def_elem;
    if (def->defname == nullptr || std::strcmp(def->defname, "analyze") != 0) continue;
    if (def->arg == nullptr) return true;
    // EXPLAIN (ANALYZE false): a boolean or the words off/false/0.
    if (def->arg->node_case == PG_QUERY__NODE__NODE_BOOLEAN) return def->arg->boolean->boolval;
    if (def->arg->node_case == PG_QUERY__NODE__NODE_STRING) {
      const std::string value = lower_ascii(def->arg->string->sval);
      return !(value == "off" || value == "false" || value == "0" || value == "no");
    }
    if (def->arg->node_case == PG_QUERY__NODE__NODE_A_CONST) {
      const auto* c = def->arg->a_const;
      if (c->val_case == PG_QUERY__A__CONST__VAL_BOOLVAL) return c->boolval->boolval;
      if (c->val_case == PG_QUERY__A__CONST__VAL_IVAL) return c->ival->ival != 0;
      if (c->val_case == PG_QUERY__A__CONST__VAL_SVAL) {
        const std::string value = lower_ascii(c->sval->sval);
        return !(value == "off" || value == "false" || value == "0" || value == "no");
      }
    }
    return true;
  }
  return false;
}

/// Verdict for one parsed statement.
StatementKind parsed_statement(const PgQuery__Node* node, const FunctionCatalog& catalog,
                               std::optional<bool>& tx_read_only, std::string& reason) {
  if (node == nullptr) return StatementKind::kEmpty;
  switch (node->node_case) {
    case PG_QUERY__NODE__NODE_SELECT_STMT:
      reason = read_only_violation(&node->select_stmt->base, catalog);
      return reason.empty() ? StatementKind::kRead : StatementKind::kWrite;
    case PG_QUERY__NODE__NODE_VARIABLE_SHOW_STMT:
      return StatementKind::kRead;
    case PG_QUERY__NODE__NODE_EXPLAIN_STMT: {
      const auto* explain = node->explain_stmt;
      if (explain->query != nullptr &&
          explain->query->node_case == PG_QUERY__NODE__NODE_EXECUTE_STMT) {
        reason = "EXPLAIN EXECUTE";
        return StatementKind::kWrite;
      }
      if (!explain_analyzes(explain)) return StatementKind::kRead;
      std::optional<bool> ignored;
      const auto inner = parsed_statement(explain->query, catalog, ignored, reason);
      if (inner == StatementKind::kRead) return StatementKind::kRead;
      if (reason.empty()) reason = "EXPLAIN ANALYZE of a write";
      return StatementKind::kWrite;
    }
    case PG_QUERY__NODE__NODE_COPY_STMT: {
      const auto* copy = node->copy_stmt;
      if (copy->is_from) {
        reason = "COPY FROM";
        return StatementKind::kWrite;
      }
      if (copy->filename != nullptr && copy->filename[0] != '\0') {
        reason = "COPY TO a server file or program";
        return StatementKind::kWrite;
      }
      if (copy->query != nullptr) {
        std::optional<bool> ignored;
        const auto inner = parsed_statement(copy->query, catalog, ignored, reason);
        return inner == StatementKind::kRead ? StatementKind::kRead : StatementKind::kWrite;
      }
      return StatementKind::kRead;
    }
    case PG_QUERY__NODE__NODE_TRANSACTION_STMT: {
      const auto* tx = node->transaction_stmt;
      switch (tx->kind) {
        case PG_QUERY__TRANSACTION_STMT_KIND__TRANS_STMT_BEGIN:
        case PG_QUERY__TRANSACTION_STMT_KIND__TRANS_STMT_START:
          tx_read_only = read_only_option(tx->options, tx->n_options);
          return StatementKind::kBegin;
        case PG_QUERY__TRANSACTION_STMT_KIND__TRANS_STMT_COMMIT:
        case PG_QUERY__TRANSACTION_STMT_KIND__TRANS_STMT_ROLLBACK:
        case PG_QUERY__TRANSACTION_STMT_KIND__TRANS_STMT_PREPARE:
          return StatementKind::kEnd;
        case PG_QUERY__TRANSACTION_STMT_KIND__TRANS_STMT_SAVEPOINT:
        case PG_QUERY__TRANSACTION_STMT_KIND__TRANS_STMT_RELEASE:
        case PG_QUERY__TRANSACTION_STMT_KIND__TRANS_STMT_ROLLBACK_TO:
          return StatementKind::kSession;
        default:
          reason = "two-phase commit";
          return StatementKind::kWrite;
      }
    }
    case PG_QUERY__NODE__NODE_VARIABLE_SET_STMT: {
      const auto* set = node->variable_set_stmt;
      if (set->kind == PG_QUERY__VARIABLE_SET_KIND__VAR_SET_MULTI && set->name != nullptr) {
        if (std::strcmp(set->name, "TRANSACTION") == 0) {
          tx_read_only = read_only_option(set->args, set->n_args);
          return StatementKind::kSetTransaction;
        }
        if (std::strcmp(set->name, "SESSION CHARACTERISTICS") == 0) {
          reason = "set session characteristics";
          return StatementKind::kWrite;
        }
        if (std::strcmp(set->name, "TRANSACTION SNAPSHOT") == 0) {
          reason = "set transaction snapshot";
          return StatementKind::kWrite;
        }
      }
      if (set->name != nullptr && std::strcmp(set->name, "session_authorization") == 0) {
        reason = "set session authorization";  // pins the session: keep it on the primary
        return StatementKind::kWrite;
      }
      return StatementKind::kSession;
    }
    case PG_QUERY__NODE__NODE_FETCH_STMT:
    case PG_QUERY__NODE__NODE_CLOSE_PORTAL_STMT:
    case PG_QUERY__NODE__NODE_DISCARD_STMT:
    case PG_QUERY__NODE__NODE_CONSTRAINTS_SET_STMT:
      return StatementKind::kSession;
    default:
      reason = "not a read-only statement";
      return StatementKind::kWrite;
  }
}

}  // namespace

// ---- FunctionCatalog ------------------------------------------------------------------------

FunctionCatalog::FunctionCatalog(const std::vector<std::string>& pg_catalog_nonvolatile,
                                 const std::vector<std::string>& read_only) {
  catalog_.reserve(pg_catalog_nonvolatile.size());
  for (const auto& name : pg_catalog_nonvolatile) catalog_.insert(lower_ascii(name));
  for (const auto& name : read_only) read_only_.insert(lower_ascii(name));
}

std::shared_ptr<const FunctionCatalog> FunctionCatalog::builtin(
    const std::vector<std::string>& read_only) {
  std::vector<std::string> names(std::begin(kBuiltinNonVolatile), std::end(kBuiltinNonVolatile));
  return std::make_shared<const FunctionCatalog>(names, read_only);
}

bool FunctionCatalog::non_volatile(std::string_view name) const {
  std::string_view bare = name;
  std::string_view schema;
  if (const auto dot = name.rfind('.'); dot != std::string_view::npos) {
    schema = name.substr(0, dot);
    bare = name.substr(dot + 1);
  }
  if (always_writes(bare)) return false;
  if (read_only_.contains(std::string(name))) return true;
  if (!schema.empty() && schema != "pg_catalog") return false;
  return catalog_.contains(std::string(bare));
}

std::string_view to_string(StatementKind kind) {
  switch (kind) {
    case StatementKind::kEmpty:
      return "empty";
    case StatementKind::kRead:
      return "read";
    case StatementKind::kWrite:
      return "write";
    case StatementKind::kBegin:
      return "begin";
    case StatementKind::kSetTransaction:
      return "set-transaction";
    case StatementKind::kEnd:
      return "end";
    case StatementKind::kSession:
      return "session";
  }
  return "?";
}

// ---- the two passes -------------------------------------------------------------------------

std::optional<QueryClass> classify_fast(std::string_view sql, const FunctionCatalog& catalog,
                                        LexerOptions options) {
  QueryClass result;
  result.force_primary = mentions_primary_hint(sql);
  bool leading = true;
  if (plain_select(sql)) {
    fold(result, leading, StatementKind::kRead, std::nullopt, {});
    result.plain_select = true;
    return result;
  }
  Tokens tokens(sql, options);
  while (tokens.peek().kind != TokenKind::kEnd) {
    const Token first = tokens.take();
    if (tokens.punct(first, ';')) continue;
    StatementKind kind = StatementKind::kEmpty;
    std::optional<bool> tx_read_only;
    std::string reason;
    if (fast_statement(tokens, first, catalog, kind, tx_read_only, reason) != Fast::kSettled) {
      return std::nullopt;
    }
    fold(result, leading, kind, tx_read_only, reason);
  }
  return result;
}

QueryClass classify_parsed(std::string_view sql, const FunctionCatalog& catalog) {
  QueryClass result;
  result.parsed = true;
  result.force_primary = mentions_primary_hint(sql);
  const std::string text(sql);  // the parser wants a NUL-terminated string
  PgQueryProtobufParseResult parsed = pg_query_parse_protobuf(text.c_str());
  if (parsed.error != nullptr) {
    result.first = StatementKind::kWrite;
    result.read_only = false;
    result.reason = std::string("parse error: ") +
                    (parsed.error->message != nullptr ? parsed.error->message : "?");
    pg_query_free_protobuf_parse_result(parsed);
    return result;
  }
  PgQuery__ParseResult* tree =
      pg_query__parse_result__unpack(nullptr, parsed.parse_tree.len,
                                     reinterpret_cast<const std::uint8_t*>(parsed.parse_tree.data));
  pg_query_free_protobuf_parse_result(parsed);
  if (tree == nullptr) {
    result.first = StatementKind::kWrite;
    result.read_only = false;
    result.reason = "unreadable parse tree";
    return result;
  }
  bool leading = true;
  for (std::size_t i = 0; i < tree->n_stmts; ++i) {
    const auto* raw = tree->stmts[i];
    std::optional<bool> tx_read_only;
    std::string reason;
    const auto kind =
        parsed_statement(raw != nullptr ? raw->stmt : nullptr, catalog, tx_read_only, reason);
    fold(result, leading, kind, tx_read_only, reason);
  }
  pg_query__parse_result__free_unpacked(tree, nullptr);
  return result;
}

QueryClass combine(const QueryClass& first, const QueryClass& next) {
  if (next.first == StatementKind::kEmpty && !next.force_primary) return first;
  if (first.first == StatementKind::kEmpty && !first.force_primary) return next;
  QueryClass result = first;
  result.plain_select = false;
  result.force_primary = first.force_primary || next.force_primary;
  result.ends_transaction = first.ends_transaction || next.ends_transaction;
  result.parsed = first.parsed || next.parsed;
  const bool next_leading =
      next.first == StatementKind::kBegin || next.first == StatementKind::kSetTransaction;
  if (!first.has_body && next_leading && next.tx_read_only) {
    // BEGIN, then SET TRANSACTION READ ONLY in the next message: still the leading part.
    result.tx_read_only = next.tx_read_only;
  }
  if (!first.has_body && !next_leading) {
    // `next` is the first statement of the body.
    result.has_body = true;
  }
  result.has_body = result.has_body || next.has_body;
  if (!next.read_only && result.read_only) {
    result.read_only = false;
    result.reason = next.reason;
  }
  if (!first.has_body && !next_leading && next.first == StatementKind::kWrite && result.read_only) {
    result.read_only = false;
    result.reason = next.reason.empty() ? "write" : next.reason;
  }
  return result;
}

// ---- Classifier -----------------------------------------------------------------------------

Classifier::Classifier(std::shared_ptr<const FunctionCatalog> catalog, std::size_t cache_size)
    : catalog_(std::move(catalog)), cache_size_(std::max<std::size_t>(1, cache_size)) {}

void Classifier::set_catalog(std::shared_ptr<const FunctionCatalog> catalog) {
  catalog_ = std::move(catalog);
  index_.clear();
  lru_.clear();
}

QueryClass Classifier::classify(std::string_view sql, LexerOptions options) {
  constexpr std::size_t kMaxCachedText = 8192;
  if (!options.standard_conforming_strings && sql.find('\\') != std::string_view::npos) {
    // The parser reads strings as standard_conforming_strings = on: a backslash could hide a
    // quote from it. Not worth proving: the primary.
    QueryClass result;
    result.first = StatementKind::kWrite;
    result.read_only = false;
    result.reason = "backslash with standard_conforming_strings off";
    return result;
  }
  // Only texts the parser had to read are cached: with none (the usual case) the text is not
  // hashed at all.
  if (const auto it = index_.empty() ? index_.end() : index_.find(sql); it != index_.end()) {
    ++counters_.cache_hits;
    lru_.splice(lru_.begin(), lru_, it->second);
    return it->second->second;
  }
  if (auto fast = classify_fast(sql, *catalog_, options)) {
    ++counters_.fast;
    return *fast;
  }
  ++counters_.parses;
  QueryClass result = classify_parsed(sql, *catalog_);
  if (sql.size() <= kMaxCachedText) {
    if (lru_.size() >= cache_size_) {
      index_.erase(std::string_view(lru_.back().first));
      lru_.pop_back();
    }
    lru_.emplace_front(std::string(sql), result);
    index_.emplace(std::string_view(lru_.front().first), lru_.begin());
  }
  return result;
}

}  // namespace pgrelay::sql
