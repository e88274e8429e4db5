// The cluster monitor: probes every backend with libpq and publishes Topology snapshots.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "pgrelay/cluster/lag.hpp"
#include "pgrelay/cluster/topology.hpp"
#include "pgrelay/config/config.hpp"

namespace pgrelay::cluster {

struct MonitorOptions {
  config::MonitorSettings monitor;
  std::vector<config::BackendSettings> backends;
  std::uint64_t max_lag_bytes = std::uint64_t{16} * 1024 * 1024;
  std::uint64_t max_lag_ms = 1000;
  /// A standby over a lag limit is eligible again only below this fraction of it.
  double resume_fraction = 0.5;
};

/// Called (on a prober thread, outside the monitor's lock) after a snapshot in which the primary
/// or any node's role changed.
using TopologyListener = std::function<void(const Topology& previous, const Topology& next)>;

/// One prober thread per backend, each with a persistent libpq connection as the [monitor]
/// role, probing every interval_ms (and at once on request_probe()). Probes of all nodes run in
/// parallel; a slow or dead node delays only its own prober. Each probe publishes a new
/// snapshot, swapped atomically.
class Monitor {
 public:
  explicit Monitor(MonitorOptions options);
  ~Monitor();
  Monitor(const Monitor&) = delete;
  Monitor& operator=(const Monitor&) = delete;

  /// Set before start().
  void set_listener(TopologyListener listener) { listener_ = std::move(listener); }
  void start();
  void stop();

  /// The latest snapshot; never null.
  [[nodiscard]] std::shared_ptr<const Topology> topology() const { return current_.load(); }
  /// The latest snapshot's Topology::generation: a reader that keeps a copy of its own looks at
  /// this (one shared load) instead of taking a reference to the snapshot every time.
  [[nodiscard]] std::uint64_t generation() const {
    return published_.load(std::memory_order_acquire);
  }

  /// Applies reloaded thresholds (probe interval, failure threshold, lag limits) from the next
  /// probe on. Connection settings and the backend list are fixed at construction.
  void update_thresholds(std::uint32_t interval_ms, std::uint32_t failure_threshold,
                         std::uint64_t max_lag_bytes, std::uint64_t max_lag_ms);

  /// Asks every prober to probe now instead of at its next interval (e.g. after a connection
  /// to the primary failed).
  void request_probe();

  /// Read-your-writes: a session waits for standbys to replay its last commit. Probes now,
  /// unless a probe was requested this way within the last kReplayProbeSpacing: replay on a
  /// healthy standby takes about a millisecond, the regular interval hundreds.
  void request_replay_probe();
  static constexpr std::chrono::milliseconds kReplayProbeSpacing{10};

  /// Blocks until every node has been probed once (success or failure) or `timeout` passes.
  bool wait_first_round(std::chrono::milliseconds timeout);

  /// Names of pg_catalog functions none of whose overloads is volatile, read once from the
  /// primary (the classifier's proof that a call cannot write); null until read.
  [[nodiscard]] std::shared_ptr<const std::vector<std::string>> nonvolatile_functions() const {
    return nonvolatile_functions_.load();
  }

  /// CPU time used by the prober threads so far (for the probe cost metric).
  [[nodiscard]] std::chrono::microseconds cpu_time() const;

  struct Probe;

 private:
  struct Prober;
  void run(Prober& prober);
  void publish(std::size_t index, const Probe& probe);

  MonitorOptions options_;
  TopologyListener listener_;
  std::vector<std::unique_ptr<Prober>> probers_;

  std::mutex mutex_;  // guards everything below except current_
  std::condition_variable wake_;
  std::condition_variable first_round_;
  std::vector<NodeStatus> nodes_;
  std::vector<LagGate> gates_;
  std::vector<bool> attempted_;
  LsnHistory history_;
  int last_primary_ = -1;               ///< the last node that was primary, kept through outages
  std::uint32_t highest_timeline_ = 0;  ///< the highest timeline any node ever reported
  std::uint64_t failovers_ = 0;
  std::uint64_t role_changes_ = 0;
  bool stopping_ = false;
  std::uint64_t generation_ = 0;
  std::atomic<std::shared_ptr<const Topology>> current_;
  std::atomic<std::uint64_t> published_{0};  ///< current_'s generation, stored after it
  std::atomic<std::int64_t> last_replay_request_{0};
  std::atomic<std::shared_ptr<const std::vector<std::string>>> nonvolatile_functions_;
};

}  // namespace pgrelay::cluster
