// The cluster monitor: probes every backend with libpq and publishes Topology snapshots.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "pgrelay/cluster/topology.hpp"
#include "pgrelay/config/config.hpp"

namespace pgrelay::cluster {

/// One prober thread per backend, each with a persistent libpq connection as the [monitor]
/// role, probing every interval_ms (and at once on request_probe()). Probes of all nodes run in
/// parallel. Each probe publishes a new snapshot, swapped atomically.
class Monitor {
 public:
  Monitor(config::MonitorSettings settings, std::vector<config::BackendSettings> backends);
  ~Monitor();
  Monitor(const Monitor&) = delete;
  Monitor& operator=(const Monitor&) = delete;

  void start();
  void stop();

  /// The latest snapshot; never null.
  [[nodiscard]] std::shared_ptr<const Topology> topology() const { return current_.load(); }

  /// Asks every prober to probe now instead of at its next interval (e.g. after a connection
  /// to the primary failed).
  void request_probe();

  /// Blocks until every node has been probed once (success or failure) or `timeout` passes.
  bool wait_first_round(std::chrono::milliseconds timeout);

 private:
  struct Prober;
  void run(Prober& prober);
  void publish(std::size_t index, const NodeStatus& status, bool probed);

  config::MonitorSettings settings_;
  std::vector<config::BackendSettings> backends_;
  std::vector<std::unique_ptr<Prober>> probers_;

  std::mutex mutex_;  // guards nodes_, probed_, stopping_ and the probers' wake flags
  std::condition_variable wake_;
  std::condition_variable first_round_;
  std::vector<NodeStatus> nodes_;
  std::vector<bool> probed_;
  bool stopping_ = false;
  std::uint64_t generation_ = 0;
  std::atomic<std::shared_ptr<const Topology>> current_;
};

}  // namespace pgrelay::cluster
