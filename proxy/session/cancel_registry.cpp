// The cancel key registry.
#include "pgrelay/session/cancel_registry.hpp"

namespace pgrelay::session {

protocol::BackendKeyData CancelRegistry::add(CancelTarget target) {
  std::lock_guard lock(mutex_);
  while (true) {
    const std::uint64_t bits = random_();
    // Keep the process id positive as an int32: some clients store it signed.
    protocol::BackendKeyData key{static_cast<std::uint32_t>(bits >> 33) | 1U,
                                 static_cast<std::uint32_t>(bits)};
    if (targets_.try_emplace(pack(key), std::move(target)).second) return key;
  }
}

void CancelRegistry::update(protocol::BackendKeyData client_key, CancelTarget target) {
  std::lock_guard lock(mutex_);
  targets_[pack(client_key)] = std::move(target);
}

void CancelRegistry::remove(protocol::BackendKeyData client_key) {
  std::lock_guard lock(mutex_);
  targets_.erase(pack(client_key));
}

std::optional<CancelTarget> CancelRegistry::find(protocol::BackendKeyData client_key) const {
  std::lock_guard lock(mutex_);
  auto it = targets_.find(pack(client_key));
  if (it == targets_.end()) return std::nullopt;
  return it->second;
}

std::size_t CancelRegistry::size() const {
  std::lock_guard lock(mutex_);
  return targets_.size();
}

}  // namespace pgrelay::session
