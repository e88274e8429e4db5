// Replay lag in time, from a short history of the primary's WAL positions, and the hysteresis
// that keeps a lagging standby from flapping in and out of eligibility.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>

namespace pgrelay::cluster {

using Clock = std::chrono::steady_clock;

/// (time, primary LSN) samples, one per distinct LSN: the first time each was seen. A standby's
/// lag in time is how long ago the primary first reached the LSN the standby has replayed, so
/// an idle cluster shows zero lag instead of a growing clock gap.
class LsnHistory {
 public:
  explicit LsnHistory(std::size_t capacity = 4096) : capacity_(capacity) {}

  /// Records the primary's LSN as probed at `when`. LSNs going backwards (a new primary on a
  /// new timeline starts from its own position) reset the history.
  void add(Clock::time_point when, std::uint64_t lsn);
  void clear() { samples_.clear(); }

  /// Lag of a standby that had replayed `replay_lsn` when probed at `as_of`: how long before
  /// `as_of` the primary was first seen past that LSN. Zero when the standby had everything the
  /// primary had by then. Older than the whole history: the age of the oldest sample.
  [[nodiscard]] std::chrono::milliseconds lag(std::uint64_t replay_lsn,
                                              Clock::time_point as_of) const;

  [[nodiscard]] std::size_t size() const { return samples_.size(); }

 private:
  struct Sample {
    Clock::time_point when;
    std::uint64_t lsn;
  };
  std::size_t capacity_;
  std::deque<Sample> samples_;
};

/// A limit with hysteresis: once exceeded, a value must fall to `resume_fraction` of the limit
/// before it counts as within the limit again.
struct LagGate {
  bool excluded = false;
  /// Updates and returns whether the standby may serve reads as far as lag is concerned.
  bool update(std::uint64_t lag_bytes, std::uint64_t max_bytes, std::uint64_t lag_ms,
              std::uint64_t max_ms, double resume_fraction = 0.5);
};

}  // namespace pgrelay::cluster
