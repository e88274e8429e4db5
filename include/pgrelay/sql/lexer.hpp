// PostgreSQL SQL lexer: splits query text into tokens the way the server's scanner (scan.l) does,
// without allocating, throwing or ever rejecting input.
// Lexical rules: https://www.postgresql.org/docs/current/sql-syntax-lexical.html
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace pgrelay::sql {

/// Blank between tokens, as the lexer skips it (comments aside).
[[nodiscard]] constexpr bool is_blank_byte(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

/// ASCII letters and digits, '_' and bytes >= 0x80: one word for the quick scans that spare
/// most statements the lexer (sql::scan_words, the classifier's plain-SELECT check). The
/// lexer's words also run on through '$'. A table: these scans look at every byte.
inline constexpr std::array<bool, 256> kWordBytes = [] {
  std::array<bool, 256> table{};
  for (unsigned c = 0; c < table.size(); ++c) {
    table[c] = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
               c == '_' || c >= 0x80;
  }
  return table;
}();
[[nodiscard]] inline bool is_word_byte(char c) { return kWordBytes[static_cast<unsigned char>(c)]; }

/// The `lower.size()` bytes at `word` spell `lower` (given in lower case) in any case.
[[nodiscard]] inline bool same_word(const char* word, std::string_view lower) {
  for (std::size_t i = 0; i < lower.size(); ++i) {
    const char c = word[i];
    if ((c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c) != lower[i]) return false;
  }
  return true;
}

enum class TokenKind : std::uint8_t {
  /// Unquoted identifier or keyword: letters, digits, '_' and '$' after the first character;
  /// bytes >= 0x80 count as letters.
  kWord,
  /// "..." with "" escapes, also U&"...".
  kQuotedIdentifier,
  /// '...' ('' escapes), E'...' (backslash escapes), B'...', X'...', N'...', U&'...' and
  /// $tag$...$tag$ dollar-quoted text.
  kString,
  /// 1, 1.5, .5, 1e10, 1_000, 0x1F, 0o17, 0b101.
  kNumber,
  /// $1
  kParameter,
  /// Runs of + - * / < > = ~ ! @ # % ^ & | ` ? (as the server splits them), '::', ':=', '..',
  /// and any other single byte ('$' not starting a parameter or dollar quote, '\', '{', ...).
  kOperator,
  /// ( ) [ ] , ; : .
  kPunctuation,
  /// No more tokens; begin == end == the text's length.
  kEnd,
};

/// One token: a byte range of the text it was read from.
struct Token {
  TokenKind kind = TokenKind::kEnd;
  std::uint32_t begin = 0;
  std::uint32_t end = 0;

  /// The token's bytes in `sql` (the text the lexer read).
  [[nodiscard]] std::string_view text(std::string_view sql) const {
    if (begin >= sql.size() || end <= begin) return {};
    return sql.substr(begin, end - begin);
  }
};

struct LexerOptions {
  /// The session's standard_conforming_strings (reported by the server in ParameterStatus).
  /// When false, a backslash escapes the next byte in plain '...' and N'...' strings as well.
  bool standard_conforming_strings = true;
};

/// Reads tokens one at a time. Whitespace, `--` comments and nested `/* */` comments are
/// skipped. Unterminated strings, quoted identifiers and dollar quotes run to the end of the
/// text, as does an unterminated comment. Texts longer than 4 GiB are read up to 4 GiB - 1
/// (PostgreSQL refuses messages over 1 GiB anyway).
class Lexer {
 public:
  explicit Lexer(std::string_view sql, LexerOptions options = {});

  /// The next token, or kEnd (again and again) once the text is over.
  Token next();

  /// The text being read; token offsets point into it.
  [[nodiscard]] std::string_view sql() const { return sql_; }

  /// Skipping the rest of a statement without lexing it: when the rest of the text has no ';'
  /// byte but perhaps a last one followed only by blanks, no other statement can follow (in a
  /// string, a comment or not, that ';' ends the text either way). Then moves to the end of
  /// the text and returns true; otherwise changes nothing and returns false.
  bool skip_to_end_if_last_statement();

 private:
  std::string_view sql_;
  std::size_t pos_ = 0;
  LexerOptions options_;
};

/// Case-insensitive: token is a kWord equal to `lower_keyword` (given in lower case). Inline:
/// the session-effects analyzer asks it for most words of every query.
[[nodiscard]] inline bool is_word(const Token& token, std::string_view sql,
                                  std::string_view lower_keyword) {
  if (token.kind != TokenKind::kWord || token.end - token.begin != lower_keyword.size()) {
    return false;
  }
  const std::string_view text = token.text(sql);
  return text.size() == lower_keyword.size() && same_word(text.data(), lower_keyword);
}

/// Identifier value as PostgreSQL folds it: unquoted words lower-cased (ASCII only, as the server
/// does for UTF-8), quoted identifiers without quotes and with "" unescaped; U&"..." also has its
/// Unicode escapes decoded (honouring a following UESCAPE 'c'; a malformed escape is kept as
/// written). Names are not truncated to NAMEDATALEN. Other tokens give their text unchanged.
[[nodiscard]] std::string identifier_value(const Token& token, std::string_view sql);

}  // namespace pgrelay::sql
