// Maps the BackendKeyData pgrelay gave each client to the server connection running its queries.
#pragma once

#include <cstdint>
#include <memory>
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

/// One client's target. Its session points it at each server connection it attaches (twice per
/// transaction in transaction mode) under the entry's own lock, which only a cancel for this
/// client contends for: nothing shared by the workers is written per transaction.
class CancelEntry {
 public:
  explicit CancelEntry(CancelTarget target) : target_(std::move(target)) {}
  void set(const std::string& host, std::uint16_t port, protocol::BackendKeyData key);
  /// No server: a cancel now has nothing to interrupt.
  void clear();
  [[nodiscard]] CancelTarget get() const;

 private:
  mutable std::mutex mutex_;
  CancelTarget target_;
};

/// Shared by all workers (a cancel arrives on a new connection, on any worker). Its lock is
/// taken at login, logout, unparking and cancel only.
class CancelRegistry {
 public:
  struct Added {
    protocol::BackendKeyData key;
    std::shared_ptr<CancelEntry> entry;
  };
  /// Issues a fresh, unused client key for `target`.
  Added add(CancelTarget target);
  /// The entry of a key issued earlier (a parked client going on); null for an unknown key.
  [[nodiscard]] std::shared_ptr<CancelEntry> entry(protocol::BackendKeyData client_key) const;
  void remove(protocol::BackendKeyData client_key);
  /// The target of a client key; nullopt for an unknown key (which PostgreSQL ignores).
  [[nodiscard]] std::optional<CancelTarget> find(protocol::BackendKeyData client_key) const;
  [[nodiscard]] std::size_t size() const;

 private:
  static std::uint64_t pack(protocol::BackendKeyData key) {
    return (std::uint64_t{key.process_id} << 32) | key.secret_key;
  }

  mutable std::mutex mutex_;
  std::unordered_map<std::uint64_t, std::shared_ptr<CancelEntry>> targets_;
  std::random_device seed_;
  std::mt19937_64 random_{seed_()};
};

}  // namespace pgrelay::session
