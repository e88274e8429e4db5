// Tests parsing of PgBouncer-style userlist.txt files: quoting, comments, secret kinds, errors.
#include "pgrelay/auth/userlist.hpp"

#include <gtest/gtest.h>

#include <string>

namespace pgrelay::auth {
namespace {

std::string verifier_text() { return format_scram_verifier(make_scram_verifier("pw", "salt", 16)); }

TEST(Userlist, ParsesEntriesAndSecretKinds) {
  const std::string text =
      "; PgBouncer comment\n"
      "# hash comment\n"
      "\n"
      "   \t\n"
      "\"alice\" \"plain secret\"\n"
      "  \"bob\"\t\"md53175bce1d3201d16594cebf9d7eb3f9d\" extra \"fields\" ignored\r\n"
      "\"carol\" \"" +
      verifier_text() +
      "\"\n"
      "\"d\"\"q\"\"\" \"pa\"\"ss\"\n"
      "\"upper\" \"md53175BCE1D3201D16594CEBF9D7EB3F9D\"";  // no final newline
  const Userlist list = parse_userlist(text);
  EXPECT_TRUE(list.errors.empty());
  ASSERT_EQ(list.entries.size(), 5U);
  EXPECT_EQ(list.entries[0].user, "alice");
  EXPECT_EQ(list.entries[0].secret, Secret{PlainSecret{"plain secret"}});
  EXPECT_EQ(list.entries[1].user, "bob");
  EXPECT_EQ(list.entries[1].secret, Secret{Md5Secret{"md53175bce1d3201d16594cebf9d7eb3f9d"}});
  EXPECT_EQ(list.entries[2].user, "carol");
  EXPECT_EQ(list.entries[2].secret, Secret{make_scram_verifier("pw", "salt", 16)});
  EXPECT_EQ(list.entries[3].user, "d\"q\"");
  EXPECT_EQ(list.entries[3].secret, Secret{PlainSecret{"pa\"ss"}});
  // Not lowercase hex, so PostgreSQL would take it as a plain password too.
  EXPECT_TRUE(std::holds_alternative<PlainSecret>(list.entries[4].secret));

  ASSERT_NE(list.find("carol"), nullptr);
  EXPECT_EQ(list.find("carol")->user, "carol");
  EXPECT_EQ(list.find("nobody"), nullptr);
}

TEST(Userlist, LaterDuplicateWins) {
  const Userlist list = parse_userlist("\"a\" \"one\"\n\"b\" \"two\"\n\"a\" \"three\"\n");
  EXPECT_TRUE(list.errors.empty());
  ASSERT_EQ(list.entries.size(), 2U);
  EXPECT_EQ(list.find("a")->secret, Secret{PlainSecret{"three"}});
}

TEST(Userlist, ReportsBadLinesWithNumbers) {
  const std::string text =
      "\"good\" \"pw\"\n"                         // 1
      "bare words\n"                              // 2
      "\"unterminated\n"                          // 3
      "\"nosecret\"\n"                            // 4
      "\"x\" \"unterminated secret\n"             // 5
      "\"\" \"pw\"\n"                             // 6
      "\"y\" \"\"\n"                              // 7: fine, empty secret (trust only)
      "\"z\"\"pw\"\n"                             // 8: "z""pw" is one field
      "\"w\"\"\" \"pw\"\n"                        // 9: fine, user w"
      "\"v\"\"pw\" \"x\"\n"                       // 10: fine, user v"pw
      "\"s\" \"SCRAM-SHA-256$0:c2FsdA==$a:b\"\n"  // 11
      "\"t\" unquoted\n"                          // 12
      "\"u\"\"\"\"\"pw\"\n"                       // 13: u"" then "pw" with no space
      "; \"fine\" comment\n"                      // 14
      "\"last\" \"pw\"\n";                        // 15
  const Userlist list = parse_userlist(text);
  std::vector<int> lines;
  for (const auto& error : list.errors) {
    lines.push_back(error.line);
    EXPECT_FALSE(error.message.empty());
  }
  EXPECT_EQ(lines, (std::vector<int>{2, 3, 4, 5, 6, 8, 11, 12, 13}));
  ASSERT_EQ(list.entries.size(), 5U);
  EXPECT_EQ(list.entries[0].user, "good");
  EXPECT_EQ(list.entries[1].user, "y");
  EXPECT_EQ(list.entries[1].secret, Secret{PlainSecret{""}});
  EXPECT_EQ(list.entries[2].user, "w\"");
  EXPECT_EQ(list.entries[3].user, "v\"pw");
  EXPECT_EQ(list.entries[4].user, "last");
}

TEST(Userlist, Empty) {
  EXPECT_TRUE(parse_userlist("").entries.empty());
  EXPECT_TRUE(parse_userlist("").errors.empty());
  EXPECT_TRUE(parse_userlist("\n\n;x\n").errors.empty());
}

TEST(Secret, Classifies) {
  EXPECT_TRUE(std::holds_alternative<ScramVerifier>(*parse_secret(verifier_text())));
  EXPECT_FALSE(parse_secret("SCRAM-SHA-256$broken"));
  EXPECT_TRUE(std::holds_alternative<PlainSecret>(*parse_secret("SCRAM-SHA-256")));
  EXPECT_TRUE(std::holds_alternative<Md5Secret>(*parse_secret("md5" + std::string(32, 'a'))));
  EXPECT_TRUE(std::holds_alternative<PlainSecret>(*parse_secret("md5" + std::string(31, 'a'))));
}

}  // namespace
}  // namespace pgrelay::auth
