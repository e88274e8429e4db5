// The cancel key registry.
#include "pgrelay/session/cancel_registry.hpp"

namespace pgrelay::session {

void CancelEntry::set(const std::string& host, std::uint16_t port, protocol::BackendKeyData key) {
  std::lock_guard lock(mutex_);
  if (target_.host != host) target_.host = host;  // kept by clear(): mostly the same backend
  target_.port = port;
  target_.key = key;
}

void CancelEntry::clear() {
  std::lock_guard lock(mutex_);
  target_.port = 0;
  target_.key = {};
}

CancelTarget CancelEntry::get() const {
  std::lock_guard lock(mutex_);
  return target_;
}

CancelRegistry::Added CancelRegistry::add(CancelTarget target) {
  auto entry = std::make_shared<CancelEntry>(std::move(target));
  std::lock_guard lock(mutex_);
  while (true) {
    const std::uint64_t bits = random_();
    // Keep the process id positive as an int32: some clients store it signed.
    protocol::BackendKeyData key{static_cast<std::uint32_t>(bits >> 33) | 1U,
                                 static_cast<std::uint32_t>(bits)};
    if (targets_.try_emplace(pack(key), entry).second) return Added{key, std::move(entry)};
  }
}

std::shared_ptr<CancelEntry> CancelRegistry::entry(protocol::BackendKeyData client_key) const {
  std::lock_guard lock(mutex_);
  auto it = targets_.find(pack(client_key));
  return it == targets_.end() ? nullptr : it->second;
}

void CancelRegistry::remove(protocol::BackendKeyData client_key) {
  std::lock_guard lock(mutex_);
  targets_.erase(pack(client_key));
}

std::optional<CancelTarget> CancelRegistry::find(protocol::BackendKeyData client_key) const {
  std::shared_ptr<CancelEntry> entry;
  {
    std::lock_guard lock(mutex_);
    auto it = targets_.find(pack(client_key));
    if (it == targets_.end()) return std::nullopt;
    entry = it->second;
  }
  return entry->get();
}

std::size_t CancelRegistry::size() const {
  std::lock_guard lock(mutex_);
  return targets_.size();
}

}  // namespace pgrelay::session
