// The SQL lexer: PostgreSQL's scan.l rules for token boundaries, without its error states.
#include "pgrelay/sql/lexer.hpp"

#include <algorithm>
#include <cstdint>
#include <limits>
#include <optional>
#include <utility>

namespace pgrelay::sql {

namespace {

constexpr std::size_t kMaxText = std::numeric_limits<std::uint32_t>::max() - 1;

bool is_space(char c) { return is_blank_byte(c); }
bool is_digit(char c) { return c >= '0' && c <= '9'; }
bool is_hex_digit(char c) {
  return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}
bool is_ident_start(char c) {
  const auto u = static_cast<unsigned char>(c);
  return (u >= 'a' && u <= 'z') || (u >= 'A' && u <= 'Z') || u == '_' || u >= 0x80;
}
bool is_ident_cont(char c) { return is_ident_start(c) || is_digit(c) || c == '$'; }
bool is_dollar_tag_cont(char c) { return is_ident_start(c) || is_digit(c); }

bool is_op_char(char c) {
  return std::string_view("~!@#^&|`?+-*/%<>=").find(c) != std::string_view::npos;
}

// Characters that let a multi-character operator end in '+' or '-' (see scan.l's {operator}).
bool is_non_sql_op_char(char c) {
  return std::string_view("~!@#^&|`?%").find(c) != std::string_view::npos;
}

char ascii_lower(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; }

// The byte at `pos`, or '\0' past the end (never a character any rule looks for after a '\0').
char at(std::string_view s, std::size_t pos) { return pos < s.size() ? s[pos] : '\0'; }

bool starts_with_at(std::string_view s, std::size_t pos, std::string_view prefix) {
  return pos <= s.size() && s.substr(pos, prefix.size()) == prefix;
}

// Just past a nested /* */ comment starting at `pos`, or the end of the text.
std::size_t skip_block_comment(std::string_view s, std::size_t pos) {
  std::size_t depth = 0;
  while (pos < s.size()) {
    if (starts_with_at(s, pos, "/*")) {
      ++depth;
      pos += 2;
    } else if (starts_with_at(s, pos, "*/")) {
      pos += 2;
      if (--depth == 0) return pos;
    } else {
      ++pos;
    }
  }
  return s.size();
}

// Past whitespace and comments from `pos`.
std::size_t skip_blank(std::string_view s, std::size_t pos) {
  while (pos < s.size()) {
    if (is_space(s[pos])) {
      ++pos;
    } else if (starts_with_at(s, pos, "--")) {
      pos = s.find_first_of("\r\n", pos);
      if (pos == std::string_view::npos) return s.size();
    } else if (starts_with_at(s, pos, "/*")) {
      pos = skip_block_comment(s, pos);
    } else {
      break;
    }
  }
  return pos;
}

// Just past the closing `quote` of a body starting at `pos`; a doubled quote is an escape, and
// with `backslash` so is a backslash and the byte after it. The end of the text if unterminated.
std::size_t skip_quoted(std::string_view s, std::size_t pos, char quote, bool backslash) {
  while (pos < s.size()) {
    const char c = s[pos];
    if (backslash && c == '\\') {
      pos += 2;
    } else if (c == quote) {
      if (at(s, pos + 1) != quote) return pos + 1;
      pos += 2;
    } else {
      ++pos;
    }
  }
  return s.size();
}

// Past `[0-9](_?[0-9])*` style digits from `pos` (which may hold no digit at all).
template <typename IsDigit>
std::size_t skip_digits(std::string_view s, std::size_t pos, IsDigit is_digit_char) {
  const std::size_t start = pos;
  while (pos < s.size()) {
    if (is_digit_char(s[pos])) {
      ++pos;
    } else if (s[pos] == '_' && pos > start && is_digit_char(at(s, pos + 1))) {
      pos += 2;
    } else {
      break;
    }
  }
  return pos;
}

// A number starting at `pos` (a digit, or '.' before a digit).
std::size_t scan_number(std::string_view s, std::size_t pos) {
  if (s[pos] == '0') {
    const char base = ascii_lower(at(s, pos + 1));
    const auto radix_digits = [&](auto is_radix_digit) -> std::optional<std::size_t> {
      std::size_t p = pos + 2;
      if (at(s, p) == '_') ++p;
      if (!is_radix_digit(at(s, p))) return std::nullopt;
      return skip_digits(s, p, is_radix_digit);
    };
    std::optional<std::size_t> end;
    if (base == 'x') end = radix_digits(is_hex_digit);
    if (base == 'o') end = radix_digits([](char c) { return c >= '0' && c <= '7'; });
    if (base == 'b') end = radix_digits([](char c) { return c == '0' || c == '1'; });
    if (end) return *end;
  }
  std::size_t end = skip_digits(s, pos, is_digit);
  // "1..2" is 1 followed by '..', not 1. and .2.
  if (at(s, end) == '.' && at(s, end + 1) != '.') end = skip_digits(s, end + 1, is_digit);
  if (ascii_lower(at(s, end)) == 'e') {
    std::size_t exponent = end + 1;
    if (at(s, exponent) == '+' || at(s, exponent) == '-') ++exponent;
    if (is_digit(at(s, exponent))) end = skip_digits(s, exponent, is_digit);
  }
  return end;
}

// An operator starting at `pos` (an op char that does not start a comment).
std::size_t scan_operator(std::string_view s, std::size_t pos) {
  std::size_t end = pos + 1;
  while (end < s.size() && is_op_char(s[end]) && !starts_with_at(s, end, "--") &&
         !starts_with_at(s, end, "/*")) {
    ++end;
  }
  // For SQL compatibility "=-" is '=' then '-': a multi-character operator ends in '+' or '-'
  // only when it also holds a character that SQL operators never use.
  if (end - pos > 1 && (s[end - 1] == '+' || s[end - 1] == '-') &&
      std::none_of(s.begin() + static_cast<std::ptrdiff_t>(pos),
                   s.begin() + static_cast<std::ptrdiff_t>(end - 1), is_non_sql_op_char)) {
    do {
      --end;
    } while (end - pos > 1 && (s[end - 1] == '+' || s[end - 1] == '-'));
  }
  return end;
}

struct Scanned {
  TokenKind kind;
  std::size_t end;
};

// '$' at `pos`: a parameter, a dollar quote, or a lone '$'.
Scanned scan_dollar(std::string_view s, std::size_t pos) {
  if (is_digit(at(s, pos + 1))) {
    std::size_t end = pos + 1;
    while (is_digit(at(s, end))) ++end;
    return {TokenKind::kParameter, end};
  }
  std::size_t tag_end = pos + 1;
  if (is_ident_start(at(s, tag_end))) {
    while (is_dollar_tag_cont(at(s, tag_end))) ++tag_end;
  }
  if (at(s, tag_end) != '$') return {TokenKind::kOperator, pos + 1};
  const std::string_view delimiter = s.substr(pos, tag_end + 1 - pos);
  const std::size_t close = s.find(delimiter, tag_end + 1);
  return {TokenKind::kString,
          close == std::string_view::npos ? s.size() : close + delimiter.size()};
}

Scanned scan_token(std::string_view s, std::size_t pos, const LexerOptions& options) {
  const char c = s[pos];
  const char next = at(s, pos + 1);
  const bool plain_backslash = !options.standard_conforming_strings;
  switch (ascii_lower(c)) {
    case 'e':
      if (next == '\'') return {TokenKind::kString, skip_quoted(s, pos + 2, '\'', true)};
      break;
    case 'b':
    case 'x':
      if (next == '\'') return {TokenKind::kString, skip_quoted(s, pos + 2, '\'', false)};
      break;
    case 'n':
      if (next == '\'') {
        return {TokenKind::kString, skip_quoted(s, pos + 2, '\'', plain_backslash)};
      }
      break;
    case 'u':
      if (next == '&' && at(s, pos + 2) == '\'') {
        return {TokenKind::kString, skip_quoted(s, pos + 3, '\'', false)};
      }
      if (next == '&' && at(s, pos + 2) == '"') {
        return {TokenKind::kQuotedIdentifier, skip_quoted(s, pos + 3, '"', false)};
      }
      break;
    default:
      break;
  }
  if (is_ident_start(c)) {
    std::size_t end = pos + 1;
    while (end < s.size() && is_ident_cont(s[end])) ++end;
    return {TokenKind::kWord, end};
  }
  if (is_digit(c) || (c == '.' && is_digit(next))) return {TokenKind::kNumber, scan_number(s, pos)};
  switch (c) {
    case '\'':
      return {TokenKind::kString, skip_quoted(s, pos + 1, '\'', plain_backslash)};
    case '"':
      return {TokenKind::kQuotedIdentifier, skip_quoted(s, pos + 1, '"', false)};
    case '$':
      return scan_dollar(s, pos);
    case '(':
    case ')':
    case '[':
    case ']':
    case ',':
    case ';':
      return {TokenKind::kPunctuation, pos + 1};
    case ':':
      if (next == ':' || next == '=') return {TokenKind::kOperator, pos + 2};
      return {TokenKind::kPunctuation, pos + 1};
    case '.':
      if (next == '.') return {TokenKind::kOperator, pos + 2};
      return {TokenKind::kPunctuation, pos + 1};
    default:
      break;
  }
  if (is_op_char(c)) return {TokenKind::kOperator, scan_operator(s, pos)};
  return {TokenKind::kOperator, pos + 1};
}

// ---- identifier values ----

// The body of a quoted identifier or string after its opening quote, with doubled quotes
// undoubled, up to the closing quote or the end of the text.
std::string undouble_quotes(std::string_view body, char quote) {
  std::string out;
  out.reserve(body.size());
  for (std::size_t i = 0; i < body.size(); ++i) {
    if (body[i] == quote) {
      if (at(body, i + 1) != quote) break;
      ++i;
    }
    out += body[i];
  }
  return out;
}

std::optional<std::uint32_t> parse_hex(std::string_view digits) {
  std::uint32_t value = 0;
  for (const char c : digits) {
    if (!is_hex_digit(c)) return std::nullopt;
    const char lower = ascii_lower(c);
    value = value * 16 + static_cast<std::uint32_t>(is_digit(c) ? c - '0' : lower - 'a' + 10);
  }
  return value;
}

void append_utf8(std::string& out, std::uint32_t code) {
  const auto byte = [&](std::uint32_t b) {
    out += static_cast<char>(static_cast<unsigned char>(b));
  };
  if (code < 0x80) {
    byte(code);
  } else if (code < 0x800) {
    byte(0xC0 | (code >> 6));
    byte(0x80 | (code & 0x3F));
  } else if (code < 0x10000) {
    byte(0xE0 | (code >> 12));
    byte(0x80 | ((code >> 6) & 0x3F));
    byte(0x80 | (code & 0x3F));
  } else {
    byte(0xF0 | (code >> 18));
    byte(0x80 | ((code >> 12) & 0x3F));
    byte(0x80 | ((code >> 6) & 0x3F));
    byte(0x80 | (code & 0x3F));
  }
}

bool is_high_surrogate(std::uint32_t code) { return code >= 0xD800 && code <= 0xDBFF; }
bool is_low_surrogate(std::uint32_t code) { return code >= 0xDC00 && code <= 0xDFFF; }

// One escape at the start of `text` (just after the escape character): XXXX or +XXXXXX.
// Returns the code point and the characters read.
std::optional<std::pair<std::uint32_t, std::size_t>> read_unicode_escape(std::string_view text) {
  if (!text.empty() && text.front() == '+') {
    if (text.size() < 7) return std::nullopt;
    const auto code = parse_hex(text.substr(1, 6));
    if (!code) return std::nullopt;
    return std::pair{*code, std::size_t{7}};
  }
  if (text.size() < 4) return std::nullopt;
  const auto code = parse_hex(text.substr(0, 4));
  if (!code) return std::nullopt;
  return std::pair{*code, std::size_t{4}};
}

// Decodes U&"..." escapes: `escape` + 4 or +6 hex digits, a doubled `escape` for itself, UTF-16
// surrogate pairs combined. Anything malformed (the server would refuse it) is kept verbatim.
std::string decode_unicode_escapes(std::string_view text, char escape) {
  std::string out;
  out.reserve(text.size());
  std::size_t i = 0;
  while (i < text.size()) {
    if (text[i] != escape) {
      out += text[i++];
      continue;
    }
    if (at(text, i + 1) == escape) {
      out += escape;
      i += 2;
      continue;
    }
    auto first = read_unicode_escape(text.substr(i + 1));
    if (!first) {
      out += text[i++];
      continue;
    }
    auto [code, length] = *first;
    std::size_t consumed = 1 + length;
    if (is_high_surrogate(code) && at(text, i + consumed) == escape) {
      const auto second = read_unicode_escape(text.substr(i + consumed + 1));
      if (second && is_low_surrogate(second->first)) {
        code = 0x10000 + ((code - 0xD800) << 10) + (second->first - 0xDC00);
        consumed += 1 + second->second;
      }
    }
    if (code == 0 || code > 0x10FFFF || is_high_surrogate(code) || is_low_surrogate(code)) {
      out += text[i++];
      continue;
    }
    append_utf8(out, code);
    i += consumed;
  }
  return out;
}

// The escape character of a U& token: '\' unless UESCAPE 'c' follows it.
char unicode_escape_char(const Token& token, std::string_view sql) {
  Lexer after(sql.substr(std::min<std::size_t>(token.end, sql.size())));
  const Token keyword = after.next();
  if (!is_word(keyword, after.sql(), "uescape")) return '\\';
  const std::string_view quoted = after.next().text(after.sql());
  if (quoted.size() == 3 && quoted.front() == '\'' && quoted.back() == '\'') return quoted[1];
  return '\\';
}

}  // namespace

Lexer::Lexer(std::string_view sql, LexerOptions options)
    : sql_(sql.substr(0, kMaxText)), options_(options) {}

bool Lexer::skip_to_end_if_last_statement() {
  const std::size_t semicolon = sql_.find(';', pos_);
  if (semicolon != std::string_view::npos) {
    for (std::size_t i = semicolon + 1; i < sql_.size(); ++i) {
      if (!is_space(sql_[i])) return false;
    }
  }
  pos_ = sql_.size();
  return true;
}

Token Lexer::next() {
  pos_ = skip_blank(sql_, pos_);
  if (pos_ >= sql_.size()) {
    const auto size = static_cast<std::uint32_t>(sql_.size());
    return Token{TokenKind::kEnd, size, size};
  }
  const auto begin = pos_;
  const Scanned scanned = scan_token(sql_, begin, options_);
  pos_ = std::min(scanned.end, sql_.size());
  return Token{scanned.kind, static_cast<std::uint32_t>(begin), static_cast<std::uint32_t>(pos_)};
}

std::string identifier_value(const Token& token, std::string_view sql) {
  const std::string_view text = token.text(sql);
  switch (token.kind) {
    case TokenKind::kWord: {
      std::string out(text);
      std::transform(out.begin(), out.end(), out.begin(), ascii_lower);
      return out;
    }
    case TokenKind::kQuotedIdentifier:
      if (text.size() >= 3 && ascii_lower(text[0]) == 'u') {
        return decode_unicode_escapes(undouble_quotes(text.substr(3), '"'),
                                      unicode_escape_char(token, sql));
      }
      return undouble_quotes(text.substr(std::min<std::size_t>(1, text.size())), '"');
    default:
      return std::string(text);
  }
}

}  // namespace pgrelay::sql
