// PgBouncer-style userlist.txt: one `"user" "secret"` per line, secrets plain, md5 or SCRAM.
// Format: https://www.pgbouncer.org/config.html#authentication-file-format
#pragma once

#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "pgrelay/auth/scram.hpp"

namespace pgrelay::auth {

/// A password kept in clear text.
struct PlainSecret {
  std::string password;
  friend bool operator==(const PlainSecret&, const PlainSecret&) = default;
};

/// "md5" + hex(md5(password + user)), as `md5_password_hash` makes.
struct Md5Secret {
  std::string hash;
  friend bool operator==(const Md5Secret&, const Md5Secret&) = default;
};

/// What a userlist holds for a user.
using Secret = std::variant<PlainSecret, Md5Secret, ScramVerifier>;

/// Classifies a secret the way PostgreSQL and PgBouncer do: text starting with
/// "SCRAM-SHA-256$" is a verifier (nullopt if it does not parse), "md5" with 32 lowercase hex
/// digits an md5 hash, anything else a plain password.
[[nodiscard]] std::optional<Secret> parse_secret(std::string_view text);

struct UserlistEntry {
  std::string user;
  Secret secret;
};

/// A line that could not be read; `line` counts from 1.
struct UserlistError {
  int line = 0;
  std::string message;
};

struct Userlist {
  /// In file order; when a user appears twice the later line wins (as in PgBouncer) and the
  /// earlier entry is dropped.
  std::vector<UserlistEntry> entries;
  /// Every bad line; the caller should refuse the file when this is not empty.
  std::vector<UserlistError> errors;

  /// The entry for `user`, or nullptr.
  [[nodiscard]] const UserlistEntry* find(std::string_view user) const;
};

/// Parses the text of a userlist file. Lines are `"user" "secret"` separated by whitespace,
/// a `"` inside a field doubled; anything after the secret is ignored; blank lines and lines
/// starting with ';' or '#' are skipped. Empty user names and secrets are errors.
[[nodiscard]] Userlist parse_userlist(std::string_view text);

}  // namespace pgrelay::auth
