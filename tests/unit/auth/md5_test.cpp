// Tests PostgreSQL md5 password hashes and salted responses against values computed with Python.
#include "pgrelay/auth/md5.hpp"

#include <gtest/gtest.h>

namespace pgrelay::auth {
namespace {

constexpr Md5Salt kSalt = {1, 2, 3, 4};

TEST(Md5, PasswordHash) {
  EXPECT_EQ(md5_password_hash("postgres", "postgres"), "md53175bce1d3201d16594cebf9d7eb3f9d");
  EXPECT_EQ(md5_password_hash("user", "pencil"), "md520c46e3762c864548e296b33c3406aa9");
  EXPECT_NE(md5_password_hash("pencil", "user"), md5_password_hash("user", "pencil"));
}

TEST(Md5, IsMd5Hash) {
  EXPECT_TRUE(is_md5_hash("md53175bce1d3201d16594cebf9d7eb3f9d"));
  EXPECT_FALSE(is_md5_hash("md53175BCE1d3201d16594cebf9d7eb3f9d"));  // PostgreSQL: lowercase
  EXPECT_FALSE(is_md5_hash("md53175bce1d3201d16594cebf9d7eb3f9"));
  EXPECT_FALSE(is_md5_hash("md53175bce1d3201d16594cebf9d7eb3f9dd"));
  EXPECT_FALSE(is_md5_hash("md53175bce1d3201d16594cebf9d7eb3f9g"));
  EXPECT_FALSE(is_md5_hash("xyz3175bce1d3201d16594cebf9d7eb3f9d"));
  EXPECT_FALSE(is_md5_hash(""));
}

TEST(Md5, ResponseFromHashOrPassword) {
  // md5("3175bce1d3201d16594cebf9d7eb3f9d" + "\x01\x02\x03\x04")
  const std::string expected = "md568be9ed08db75f318087ab337aaea044";
  EXPECT_EQ(md5_response("md53175bce1d3201d16594cebf9d7eb3f9d", "postgres", kSalt), expected);
  EXPECT_EQ(md5_response("postgres", "postgres", kSalt), expected);
  EXPECT_NE(md5_response("postgres", "postgres", Md5Salt{1, 2, 3, 5}), expected);
}

TEST(Md5, CheckResponse) {
  const std::string hash = md5_password_hash("alice", "s3cret");
  const std::string response = md5_response("s3cret", "alice", kSalt);
  EXPECT_TRUE(md5_check_response(hash, "alice", kSalt, response));
  EXPECT_TRUE(md5_check_response("s3cret", "alice", kSalt, response));
  // The user name is salted into the stored hash, so another user's hash does not match.
  EXPECT_FALSE(md5_check_response(md5_password_hash("bob", "s3cret"), "bob", kSalt, response));
  EXPECT_FALSE(md5_check_response("s3cret", "bob", kSalt, response));
  EXPECT_FALSE(md5_check_response(hash, "alice", Md5Salt{4, 3, 2, 1}, response));
  EXPECT_FALSE(md5_check_response(hash, "alice", kSalt, md5_response("s3creT", "alice", kSalt)));
  EXPECT_FALSE(md5_check_response(hash, "alice", kSalt, response.substr(0, 34)));
  EXPECT_FALSE(md5_check_response(hash, "alice", kSalt, response + "0"));
  EXPECT_FALSE(md5_check_response(hash, "alice", kSalt, ""));
}

TEST(Md5, RandomSalt) {
  const auto a = generate_md5_salt();
  const auto b = generate_md5_salt();
  ASSERT_TRUE(a && b);
  EXPECT_NE(*a, *b);  // 1 in 2^32 to fail by chance
}

}  // namespace
}  // namespace pgrelay::auth
