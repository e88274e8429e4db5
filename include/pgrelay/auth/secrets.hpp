// The secrets pgrelay authenticates clients with: a loaded userlist file, SCRAM verifiers derived
// once for its plain-text passwords, and stand-in verifiers for users it does not know (so an
// unknown user goes through the same exchange, with the same timing, as a wrong password).
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>

#include "pgrelay/auth/scram.hpp"
#include "pgrelay/auth/userlist.hpp"

namespace pgrelay::auth {

/// An immutable snapshot; reloads build a new one.
class SecretStore {
 public:
  SecretStore() = default;
  /// Takes a parsed userlist (without errors) and derives SCRAM verifiers for plain passwords.
  explicit SecretStore(Userlist userlist);

  /// The user's secret, or nullptr.
  [[nodiscard]] const Secret* find(std::string_view user) const;
  /// The SCRAM verifier to check a client with: the stored one, or one derived from a plain
  /// password; nullptr for md5-only users and unknown users.
  [[nodiscard]] const ScramVerifier* scram_verifier(std::string_view user) const;
  [[nodiscard]] std::size_t size() const { return userlist_.entries.size(); }

 private:
  Userlist userlist_;
  std::unordered_map<std::string, ScramVerifier> derived_;
};

/// Loads a userlist file. On failure returns null and sets `error` ("FILE:LINE: message").
[[nodiscard]] std::shared_ptr<const SecretStore> load_secret_store(const std::string& path,
                                                                   std::string& error);

/// A verifier no password matches, with a salt that depends only on `user` and a key chosen
/// at process start: asking twice for an unknown user shows the same salt, like a real one.
[[nodiscard]] ScramVerifier mock_scram_verifier(std::string_view user);

/// A random 4-byte md5 salt is used for every user; for unknown users pgrelay still sends the
/// challenge and fails after the response, as PostgreSQL does.

}  // namespace pgrelay::auth
