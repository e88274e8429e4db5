// Tests the SQL lexer: every string and identifier form, comments, operators, numbers,
// unterminated input, identifier values, and random bytes.
#include "pgrelay/sql/lexer.hpp"

#include <gtest/gtest.h>

#include <cstdint>
#include <ostream>
#include <random>
#include <string>
#include <string_view>
#include <vector>

namespace pgrelay::sql {
namespace {

std::string_view kind_name(TokenKind kind) {
  switch (kind) {
    case TokenKind::kWord:
      return "word";
    case TokenKind::kQuotedIdentifier:
      return "quoted";
    case TokenKind::kString:
      return "string";
    case TokenKind::kNumber:
      return "number";
    case TokenKind::kParameter:
      return "param";
    case TokenKind::kOperator:
      return "op";
    case TokenKind::kPunctuation:
      return "punct";
    case TokenKind::kEnd:
      return "end";
  }
  return "?";
}

struct Lexed {
  TokenKind kind;
  std::string text;
  friend bool operator==(const Lexed&, const Lexed&) = default;
  friend std::ostream& operator<<(std::ostream& out, const Lexed& lexed) {
    return out << kind_name(lexed.kind) << ":" << lexed.text;
  }
};

constexpr auto W = TokenKind::kWord;
constexpr auto Q = TokenKind::kQuotedIdentifier;
constexpr auto S = TokenKind::kString;
constexpr auto N = TokenKind::kNumber;
constexpr auto P = TokenKind::kParameter;
constexpr auto O = TokenKind::kOperator;
constexpr auto U = TokenKind::kPunctuation;

// Every token up to kEnd, checking the offsets on the way.
std::vector<Lexed> lex(std::string_view sql, LexerOptions options = {}) {
  Lexer lexer(sql, options);
  std::vector<Lexed> out;
  std::uint32_t last_end = 0;
  for (Token token = lexer.next(); token.kind != TokenKind::kEnd; token = lexer.next()) {
    EXPECT_LT(token.begin, token.end);
    EXPECT_GE(token.begin, last_end);
    EXPECT_LE(token.end, sql.size());
    last_end = token.end;
    out.push_back({token.kind, std::string(token.text(sql))});
    if (out.size() > sql.size()) {
      ADD_FAILURE() << "lexer does not advance";
      break;
    }
  }
  const Token end = lexer.next();
  EXPECT_EQ(end.kind, TokenKind::kEnd);
  EXPECT_EQ(end.begin, sql.size());
  EXPECT_EQ(end.end, sql.size());
  EXPECT_EQ(lexer.next().kind, TokenKind::kEnd);  // and stays there
  return out;
}

struct LexCase {
  std::string_view sql;
  std::vector<Lexed> tokens;
};

void check(const std::vector<LexCase>& cases, LexerOptions options = {}) {
  for (const auto& c : cases) {
    SCOPED_TRACE(std::string(c.sql));
    EXPECT_EQ(lex(c.sql, options), c.tokens);
  }
}

TEST(Lexer, WordsAndPunctuation) {
  check({
      {"SELECT a, b FROM t;",
       {{W, "SELECT"}, {W, "a"}, {U, ","}, {W, "b"}, {W, "FROM"}, {W, "t"}, {U, ";"}}},
      {"_x1 a$b$ x2_$", {{W, "_x1"}, {W, "a$b$"}, {W, "x2_$"}}},
      {"f(a[1])", {{W, "f"}, {U, "("}, {W, "a"}, {U, "["}, {N, "1"}, {U, "]"}, {U, ")"}}},
      {"x:b.c", {{W, "x"}, {U, ":"}, {W, "b"}, {U, "."}, {W, "c"}}},
      {"\t\n\r\f\vx  ", {{W, "x"}}},
      {"", {}},
      {"   ", {}},
  });
}

TEST(Lexer, NonAsciiIdentifiers) {
  check({
      {"SELECT café, 名前 FROM ñandú",
       {{W, "SELECT"}, {W, "café"}, {U, ","}, {W, "名前"}, {W, "FROM"}, {W, "ñandú"}}},
      {"\xff\x80x1", {{W, "\xff\x80x1"}}},
  });
  const std::string sql = "CAFÉ";
  Lexer lexer(sql);
  EXPECT_EQ(identifier_value(lexer.next(), sql), "cafÉ");  // only ASCII folds
}

TEST(Lexer, PlainStrings) {
  check({
      {"'abc'", {{S, "'abc'"}}},
      {"'it''s' x", {{S, "'it''s'"}, {W, "x"}}},
      {"''''", {{S, "''''"}}},
      {"''", {{S, "''"}}},
      {"'a' 'b'", {{S, "'a'"}, {S, "'b'"}}},
      // standard_conforming_strings = on: a backslash is an ordinary character.
      {"'a\\' 'b'", {{S, "'a\\'"}, {S, "'b'"}}},
      {"'-- not a comment /* nor this */ ; \"x\" $$'",
       {{S, "'-- not a comment /* nor this */ ; \"x\" $$'"}}},
      {"x'", {{S, "x'"}}},  // X'...' prefix, unterminated
  });
}

TEST(Lexer, BackslashStringsWhenNotStandardConforming) {
  check({{"'a\\'b' c", {{S, "'a\\'b'"}, {W, "c"}}},
         {"N'a\\'b' c", {{S, "N'a\\'b'"}, {W, "c"}}},
         {"'a\\\\' c", {{S, "'a\\\\'"}, {W, "c"}}},
         {"E'a\\'b' c", {{S, "E'a\\'b'"}, {W, "c"}}},
         {"B'01' c", {{S, "B'01'"}, {W, "c"}}}},
        LexerOptions{.standard_conforming_strings = false});
}

TEST(Lexer, EscapeStrings) {
  check({
      {"E'it\\'s' x", {{S, "E'it\\'s'"}, {W, "x"}}},
      {"e'a\\\\' 'b'", {{S, "e'a\\\\'"}, {S, "'b'"}}},
      {"E'it''s\\n'", {{S, "E'it''s\\n'"}}},
      {"E'\\'", {{S, "E'\\'"}}},           // unterminated: the quote is escaped
      {"E'\\", {{S, "E'\\"}}},             // backslash at the very end
      {"ee'x'", {{W, "ee"}, {S, "'x'"}}},  // a prefix only at the start of a token
  });
}

TEST(Lexer, PrefixedStrings) {
  check({
      {"B'0101' b'1' X'FF' x'0a'", {{S, "B'0101'"}, {S, "b'1'"}, {S, "X'FF'"}, {S, "x'0a'"}}},
      {"N'abc' n'x'", {{S, "N'abc'"}, {S, "n'x'"}}},
      {"U&'d\\0061t\\+000061' u&'x'", {{S, "U&'d\\0061t\\+000061'"}, {S, "u&'x'"}}},
      {"U&'\\' x", {{S, "U&'\\'"}, {W, "x"}}},  // the backslash does not escape the quote
      {"U&'a' UESCAPE '!'", {{S, "U&'a'"}, {W, "UESCAPE"}, {S, "'!'"}}},
      {"U & 'a'", {{W, "U"}, {O, "&"}, {S, "'a'"}}},
      {"b x n e", {{W, "b"}, {W, "x"}, {W, "n"}, {W, "e"}}},
  });
}

TEST(Lexer, DollarQuotes) {
  check({
      {"$$a 'b' \"c\" -- d /* e$$ x", {{S, "$$a 'b' \"c\" -- d /* e$$"}, {W, "x"}}},
      {"$fn$ BEGIN RETURN 1; END $fn$;", {{S, "$fn$ BEGIN RETURN 1; END $fn$"}, {U, ";"}}},
      {"$outer$ $$ $inner$ x $inner$ $$ $outer$ y",
       {{S, "$outer$ $$ $inner$ x $inner$ $$ $outer$"}, {W, "y"}}},
      {"$a$ $A$ $ab$ $a $a$", {{S, "$a$ $A$ $ab$ $a $a$"}}},  // tags are case-sensitive
      {"$a$$ba$a$ z", {{S, "$a$$ba$a$"}, {W, "z"}}},
      {"$_1$x$_1$", {{S, "$_1$x$_1$"}}},
      {"$ü$x$ü$", {{S, "$ü$x$ü$"}}},
      {"$$$$", {{S, "$$$$"}}},
      {"a$$b$$", {{W, "a$$b$$"}}},  // '$' continues an identifier
      {"$1a$", {{P, "$1"}, {W, "a$"}}},
      {"$ x", {{O, "$"}, {W, "x"}}},
      {"$x y", {{O, "$"}, {W, "x"}, {W, "y"}}},  // no closing '$': not a tag
  });
}

TEST(Lexer, Parameters) {
  check({
      {"$1 $23,$4", {{P, "$1"}, {P, "$23"}, {U, ","}, {P, "$4"}}},
      {"a=$1::int", {{W, "a"}, {O, "="}, {P, "$1"}, {O, "::"}, {W, "int"}}},
  });
}

TEST(Lexer, QuotedIdentifiers) {
  check({
      {"\"My \"\"Table\"\"\".\"x\"", {{Q, "\"My \"\"Table\"\"\""}, {U, "."}, {Q, "\"x\""}}},
      {"\"\"\"\"", {{Q, "\"\"\"\""}}},
      {"\"a'b\" 'c\"d'", {{Q, "\"a'b\""}, {S, "'c\"d'"}}},
      {"U&\"d\\0061t\" u&\"x\"", {{Q, "U&\"d\\0061t\""}, {Q, "u&\"x\""}}},
      {"\"select\" \"--\" \"/*\"", {{Q, "\"select\""}, {Q, "\"--\""}, {Q, "\"/*\""}}},
  });
}

TEST(Lexer, Comments) {
  check({
      {"SELECT /* a /* nested */ still comment */ 1", {{W, "SELECT"}, {N, "1"}}},
      {"a -- comment\nb", {{W, "a"}, {W, "b"}}},
      {"a -- comment\r\nb", {{W, "a"}, {W, "b"}}},
      {"a -- comment at the end", {{W, "a"}}},
      {"a --", {{W, "a"}}},
      {"--", {}},
      {"/**/a/***/b/*/ */c", {{W, "a"}, {W, "b"}, {W, "c"}}},
      {"a/*x*/b", {{W, "a"}, {W, "b"}}},
      {"a /* unterminated", {{W, "a"}}},
      {"a /* /* */ unterminated nested", {{W, "a"}}},
      {"/*", {}},
      {"1-- c\n-1", {{N, "1"}, {O, "-"}, {N, "1"}}},
      {"a+/*c*/b", {{W, "a"}, {O, "+"}, {W, "b"}}},
      {"a*/*c*/b", {{W, "a"}, {O, "*"}, {W, "b"}}},
      {"a<--c\nb", {{W, "a"}, {O, "<"}, {W, "b"}}},
  });
}

TEST(Lexer, Operators) {
  check({
      {"a::int", {{W, "a"}, {O, "::"}, {W, "int"}}},
      {"a ::: b", {{W, "a"}, {O, "::"}, {U, ":"}, {W, "b"}}},
      {"a := 1", {{W, "a"}, {O, ":="}, {N, "1"}}},
      {"x<>y x<=y", {{W, "x"}, {O, "<>"}, {W, "y"}, {W, "x"}, {O, "<="}, {W, "y"}}},
      {"x>=y x!=y", {{W, "x"}, {O, ">="}, {W, "y"}, {W, "x"}, {O, "!="}, {W, "y"}}},
      {"j->>'k' || j#>'{a}'",
       {{W, "j"}, {O, "->>"}, {S, "'k'"}, {O, "||"}, {W, "j"}, {O, "#>"}, {S, "'{a}'"}}},
      // '+' and '-' end a multi-character operator only next to a non-SQL operator character.
      {"1+-2", {{N, "1"}, {O, "+"}, {O, "-"}, {N, "2"}}},
      {"a=-1", {{W, "a"}, {O, "="}, {O, "-"}, {N, "1"}}},
      {"a<=-1", {{W, "a"}, {O, "<="}, {O, "-"}, {N, "1"}}},
      {"a@-1", {{W, "a"}, {O, "@-"}, {N, "1"}}},
      {"a ?- b", {{W, "a"}, {O, "?-"}, {W, "b"}}},
      {"a => b", {{W, "a"}, {O, "=>"}, {W, "b"}}},
      {"1..2", {{N, "1"}, {O, ".."}, {N, "2"}}},
      {"a\\b{c}", {{W, "a"}, {O, "\\"}, {W, "b"}, {O, "{"}, {W, "c"}, {O, "}"}}},
  });
}

TEST(Lexer, Numbers) {
  check({
      {"1 1.5 .5 1e10", {{N, "1"}, {N, "1.5"}, {N, ".5"}, {N, "1e10"}}},
      {"1.5E-3 2e+2 1. 10", {{N, "1.5E-3"}, {N, "2e+2"}, {N, "1."}, {N, "10"}}},
      {"1_000_000 0x1F 0XaB_cd 0o17 0b1010",
       {{N, "1_000_000"}, {N, "0x1F"}, {N, "0XaB_cd"}, {N, "0o17"}, {N, "0b1010"}}},
      {"1e", {{N, "1"}, {W, "e"}}},
      {"1e+", {{N, "1"}, {W, "e"}, {O, "+"}}},
      {"0x", {{N, "0"}, {W, "x"}}},
      {"1_", {{N, "1"}, {W, "_"}}},
      {"t.5", {{W, "t"}, {N, ".5"}}},
      {"a.b", {{W, "a"}, {U, "."}, {W, "b"}}},
      {"-1", {{O, "-"}, {N, "1"}}},
  });
}

TEST(Lexer, UnterminatedInputRunsToTheEnd) {
  check({
      {"SELECT 'abc; LISTEN x", {{W, "SELECT"}, {S, "'abc; LISTEN x"}}},
      {"SELECT 'it''", {{W, "SELECT"}, {S, "'it''"}}},
      {"E'abc\\'", {{S, "E'abc\\'"}}},
      {"\"abc; x", {{Q, "\"abc; x"}}},
      {"\"abc\"\"", {{Q, "\"abc\"\""}}},
      {"$$abc; x", {{S, "$$abc; x"}}},
      {"$t$abc$t", {{S, "$t$abc$t"}}},
      {"$t$abc$T$", {{S, "$t$abc$T$"}}},
      {"U&'x", {{S, "U&'x"}}},
      {"U&\"x", {{Q, "U&\"x"}}},
      {"U&", {{W, "U"}, {O, "&"}}},
      {"'", {{S, "'"}}},
      {"\"", {{Q, "\""}}},
      {"$", {{O, "$"}}},
      {"$a", {{O, "$"}, {W, "a"}}},
      {"$a$", {{S, "$a$"}}},
  });
}

TEST(Lexer, TokenOffsets) {
  const std::string_view sql = "  PREPARE \"a b\" AS /* c */ SELECT $1;";
  Lexer lexer(sql);
  EXPECT_EQ(lexer.sql(), sql);
  const Token prepare = lexer.next();
  EXPECT_EQ(prepare.kind, TokenKind::kWord);
  EXPECT_EQ(prepare.begin, 2U);
  EXPECT_EQ(prepare.end, 9U);
  const Token name = lexer.next();
  EXPECT_EQ(name.kind, TokenKind::kQuotedIdentifier);
  EXPECT_EQ(name.begin, 10U);
  EXPECT_EQ(name.end, 15U);
  EXPECT_EQ(name.text(sql), "\"a b\"");
  EXPECT_EQ(lexer.next().text(sql), "AS");
  const Token select = lexer.next();
  EXPECT_EQ(select.begin, 27U);
  EXPECT_EQ(lexer.next().text(sql), "$1");
  EXPECT_EQ(lexer.next().text(sql), ";");
  EXPECT_EQ(lexer.next().kind, TokenKind::kEnd);
  // A range outside the text gives no text rather than a crash.
  EXPECT_EQ((Token{TokenKind::kWord, 100, 200}.text(sql)), "");
  EXPECT_EQ((Token{TokenKind::kWord, 5, 3}.text(sql)), "");
  EXPECT_EQ((Token{TokenKind::kWord, 30, 200}.text(sql)), sql.substr(30));
}

TEST(Lexer, IsWord) {
  const std::string_view sql = "Listen LISTEN listen \"listen\" 'listen' listens";
  Lexer lexer(sql);
  EXPECT_TRUE(is_word(lexer.next(), sql, "listen"));
  EXPECT_TRUE(is_word(lexer.next(), sql, "listen"));
  const Token lower = lexer.next();
  EXPECT_TRUE(is_word(lower, sql, "listen"));
  EXPECT_FALSE(is_word(lower, sql, "liste"));
  EXPECT_FALSE(is_word(lexer.next(), sql, "listen"));  // quoted identifier
  EXPECT_FALSE(is_word(lexer.next(), sql, "listen"));  // string
  EXPECT_FALSE(is_word(lexer.next(), sql, "listen"));  // longer word
  EXPECT_FALSE(is_word(lexer.next(), sql, ""));        // kEnd
}

std::string first_identifier(std::string_view sql) {
  Lexer lexer(sql);
  return identifier_value(lexer.next(), sql);
}

TEST(Lexer, IdentifierValues) {
  EXPECT_EQ(first_identifier("MyStmt"), "mystmt");
  EXPECT_EQ(first_identifier("a$B_1"), "a$b_1");
  EXPECT_EQ(first_identifier("\"MyStmt\""), "MyStmt");
  EXPECT_EQ(first_identifier("\"My \"\"Quoted\"\" Stmt\""), "My \"Quoted\" Stmt");
  EXPECT_EQ(first_identifier("\"\"\"\""), "\"");
  EXPECT_EQ(first_identifier("\"unterminated"), "unterminated");
  EXPECT_EQ(first_identifier("\"unterminated\"\""), "unterminated\"");
  EXPECT_EQ(first_identifier("\"&x\""), "&x");
  EXPECT_EQ(first_identifier("'str'"), "'str'");  // not an identifier: the text
  EXPECT_EQ(first_identifier(""), "");
}

TEST(Lexer, UnicodeIdentifierValues) {
  EXPECT_EQ(first_identifier("U&\"d\\0061t\\+000061\""), "data");
  EXPECT_EQ(first_identifier("u&\"\\00e9\""), "\xc3\xa9");
  EXPECT_EQ(first_identifier("U&\"\\+01F600\""), "\xf0\x9f\x98\x80");
  EXPECT_EQ(first_identifier("U&\"\\D83D\\DE00\""), "\xf0\x9f\x98\x80");  // surrogate pair
  EXPECT_EQ(first_identifier("U&\"a\\\\b\""), "a\\b");
  EXPECT_EQ(first_identifier("U&\"a\"\"b\""), "a\"b");
  EXPECT_EQ(first_identifier("U&\"d!0061t\" UESCAPE '!'"), "dat");
  EXPECT_EQ(first_identifier("U&\"d!!\\0061\" uescape '!'"), "d!\\0061");
  // Malformed escapes are kept as written.
  EXPECT_EQ(first_identifier("U&\"\\00g1\""), "\\00g1");
  EXPECT_EQ(first_identifier("U&\"\\12\""), "\\12");
  EXPECT_EQ(first_identifier("U&\"\\D83D\""), "\\D83D");
  EXPECT_EQ(first_identifier("U&\"\\+110000\""), "\\+110000");
  EXPECT_EQ(first_identifier("U&\"x\\"), "x\\");
}

TEST(Lexer, SkipsToTheEndOnlyWhenNoOtherStatementCanFollow) {
  // No ';', or only a last one with blanks after it: the rest is skipped, next() says kEnd.
  for (const std::string_view sql : {"UPDATE t SET a = 1 WHERE b = 2", "UPDATE t SET a = 1;",
                                     "UPDATE t SET a = 'x;  \n", "UPDATE t -- ;\t\n"}) {
    SCOPED_TRACE(std::string(sql));
    Lexer lexer(sql);
    EXPECT_TRUE(is_word(lexer.next(), sql, "update"));
    EXPECT_TRUE(lexer.skip_to_end_if_last_statement());
    EXPECT_EQ(lexer.next().kind, TokenKind::kEnd);
  }
  // Anything after a ';': nothing moves; the next token is the one after UPDATE.
  for (const std::string_view sql :
       {"UPDATE t SET a = 1; SELECT 1", "UPDATE t SET a = ';' x", "UPDATE t; -- comment"}) {
    SCOPED_TRACE(std::string(sql));
    Lexer lexer(sql);
    EXPECT_TRUE(is_word(lexer.next(), sql, "update"));
    EXPECT_FALSE(lexer.skip_to_end_if_last_statement());
    EXPECT_TRUE(is_word(lexer.next(), sql, "t"));
  }
}

TEST(Lexer, RandomBytesNeverBreakIt) {
  std::mt19937 random(12345);
  constexpr std::string_view kAlphabet = "'\"$\\-/*eEuUbBxXnN&01_ a.;:()=+<>!@#\n\xc3\xa9";
  for (int round = 0; round < 3000; ++round) {
    std::string sql(random() % 40, ' ');
    for (char& c : sql) {
      c = round % 3 == 0 ? static_cast<char>(random() % 256)
                         : kAlphabet[random() % kAlphabet.size()];
    }
    SCOPED_TRACE(sql);
    const auto tokens = lex(sql);  // checks offsets and progress
    Lexer lexer(sql);
    for (Token token = lexer.next(); token.kind != TokenKind::kEnd; token = lexer.next()) {
      (void)identifier_value(token, sql);
    }
  }
}

}  // namespace
}  // namespace pgrelay::sql
