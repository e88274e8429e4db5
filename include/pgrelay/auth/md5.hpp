// PostgreSQL's md5 password authentication: stored hashes and salted challenge responses.
// Protocol: https://www.postgresql.org/docs/15/auth-password.html
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace pgrelay::auth {

/// The 4 random bytes of AuthenticationMD5Password.
using Md5Salt = std::array<std::uint8_t, 4>;

/// Length of "md5" followed by 32 lowercase hex digits.
inline constexpr std::size_t kMd5HashLength = 35;

/// True for what PostgreSQL stores for an md5 user: "md5" followed by 32 lowercase hex digits.
[[nodiscard]] bool is_md5_hash(std::string_view secret);

/// PostgreSQL's stored form: "md5" + hex(md5(password + user)).
[[nodiscard]] std::string md5_password_hash(std::string_view user, std::string_view password);

/// The PasswordMessage a client sends for `salt`: "md5" + hex(md5(hex_part + salt)), where
/// hex_part comes from `secret` when it is an md5 hash (`is_md5_hash`), or else from
/// `md5_password_hash(user, secret)` with `secret` taken as the plain password.
[[nodiscard]] std::string md5_response(std::string_view secret, std::string_view user,
                                       const Md5Salt& salt);

/// Checks a client's response in constant time against `secret` (an md5 hash or a plain
/// password, as for `md5_response`).
[[nodiscard]] bool md5_check_response(std::string_view secret, std::string_view user,
                                      const Md5Salt& salt, std::string_view response);

/// A random salt for AuthenticationMD5Password; nullopt if the RNG fails.
[[nodiscard]] std::optional<Md5Salt> generate_md5_salt();

}  // namespace pgrelay::auth
