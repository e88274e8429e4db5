// Lag in time from the primary's LSN history; hysteresis on the lag limits.
#include "pgrelay/cluster/lag.hpp"

#include <algorithm>

namespace pgrelay::cluster {

void LsnHistory::add(Clock::time_point when, std::uint64_t lsn) {
  if (!samples_.empty()) {
    if (lsn == samples_.back().lsn) return;  // keep the first time this LSN was seen
    if (lsn < samples_.back().lsn) samples_.clear();
  }
  samples_.push_back({when, lsn});
  while (samples_.size() > capacity_) samples_.pop_front();
}

std::chrono::milliseconds LsnHistory::lag(std::uint64_t replay_lsn, Clock::time_point as_of) const {
  if (samples_.empty() || replay_lsn >= samples_.back().lsn) return std::chrono::milliseconds(0);
  // The standby lacks what the primary wrote after replay_lsn; the primary was first seen past
  // it at the first sample beyond it, so the standby has been stale since then at least. (A
  // lower bound, off by at most one probe interval; older than the whole history, the age of
  // the oldest sample.)
  const auto since =
      std::upper_bound(samples_.begin(), samples_.end(), replay_lsn,
                       [](std::uint64_t lsn, const Sample& s) { return lsn < s.lsn; });
  // A standby probed before the primary moved on was not behind at that moment.
  if (since->when >= as_of) return std::chrono::milliseconds(0);
  return std::chrono::duration_cast<std::chrono::milliseconds>(as_of - since->when);
}

bool LagGate::update(std::uint64_t lag_bytes, std::uint64_t max_bytes, std::uint64_t lag_ms,
                     std::uint64_t max_ms, double resume_fraction) {
  if (!excluded) {
    excluded = lag_bytes > max_bytes || lag_ms > max_ms;
  } else {
    excluded = static_cast<double>(lag_bytes) > static_cast<double>(max_bytes) * resume_fraction ||
               static_cast<double>(lag_ms) > static_cast<double>(max_ms) * resume_fraction;
  }
  return !excluded;
}

}  // namespace pgrelay::cluster
