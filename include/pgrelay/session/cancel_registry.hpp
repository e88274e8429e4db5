// Maps the BackendKeyData pgrelay gave each client to the server connection running its queries.
#pragma once

#include <cstdint>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <unordered_map>

#include "pgrelay/protocol/messages.hpp"

namespace pgrelay::session {

/// Where a client's CancelRequest must go, with the server's real key.
struct CancelTarget {
  std::string host;
  std::uint16_t port = 0;
  protocol::BackendKeyData key;
};

/// Shared by all workers (a cancel arrives on a new connection, on any worker). Touched at
/// login, logout and cancel only, never per message, so a mutex is cheap enough.
class CancelRegistry {
 public:
  /// Issues a fresh, unused client key for `target`.
  protocol::BackendKeyData add(CancelTarget target);
  /// Points an existing key at another server connection.
  void update(protocol::BackendKeyData client_key, CancelTarget target);
  void remove(protocol::BackendKeyData client_key);
  /// The target of a client key; nullopt for an unknown key (which PostgreSQL ignores).
  [[nodiscard]] std::optional<CancelTarget> find(protocol::BackendKeyData client_key) const;
  [[nodiscard]] std::size_t size() const;

 private:
  static std::uint64_t pack(protocol::BackendKeyData key) {
    return (std::uint64_t{key.process_id} << 32) | key.secret_key;
  }

  mutable std::mutex mutex_;
  std::unordered_map<std::uint64_t, CancelTarget> targets_;
  std::random_device seed_;
  std::mt19937_64 random_{seed_()};
};

}  // namespace pgrelay::session
