// Counters the data path updates and /metrics reads: per worker (no sharing on the hot path) and
// per backend (touched once per connection), all relaxed atomics.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string_view>
#include <vector>

namespace pgrelay::stats {

/// Upper bounds (seconds) of the round-trip latency histogram buckets; +Inf is implicit.
inline constexpr std::array<double, 16> kLatencyBuckets = {
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
    0.05,   0.1,     0.25,   0.5,   1.0,    2.5,   5.0,  10.0};

/// One worker's server connection pools, summed over (backend, database, user).
struct PoolCounters {
  std::atomic<std::int64_t> server_connections{0};
  std::atomic<std::int64_t> idle{0};
  std::atomic<std::int64_t> waiting{0};
  std::atomic<std::uint64_t> opened_total{0};
  std::atomic<std::uint64_t> acquire_timeouts_total{0};
  std::atomic<std::uint64_t> login_failures_total{0};
};

/// Routing decision reasons, in routing::Reason order (checked where both are known).
inline constexpr std::array<std::string_view, 7> kRouteReasons = {"read:standby",
                                                                  "read:primary:no-eligible",
                                                                  "read:primary:ryw-wait",
                                                                  "read:primary:split-off",
                                                                  "write",
                                                                  "write:hint",
                                                                  "pinned"};

/// One worker's counters. Only that worker writes them.
struct alignas(64) WorkerCounters {
  PoolCounters pool;
  /// Clients pinned to their server connection (LISTEN, temp tables, advisory locks, ...).
  std::atomic<std::uint64_t> pinned_total{0};
  /// Server connections lost under a client (failover, crash) that the client survived.
  std::atomic<std::uint64_t> transactions_lost_total{0};
  std::atomic<std::uint64_t> connections_total{0};
  std::atomic<std::uint64_t> login_failures_total{0};
  std::atomic<std::uint64_t> protocol_errors_total{0};
  /// Read-your-writes watermark queries sent (SELECT pg_current_wal_insert_lsn()).
  std::atomic<std::uint64_t> watermark_queries_total{0};
  /// Transactions routed, by reason (kRouteReasons).
  std::array<std::atomic<std::uint64_t>, kRouteReasons.size()> route_reasons{};
  /// Request → ReadyForQuery round trips as the proxy sees them (client to client).
  std::array<std::atomic<std::uint64_t>, kLatencyBuckets.size() + 1> latency_buckets{};
  std::atomic<std::uint64_t> latency_sum_ns{0};

  void observe_latency(std::chrono::nanoseconds duration) {
    const double seconds = std::chrono::duration<double>(duration).count();
    std::size_t bucket = 0;
    while (bucket < kLatencyBuckets.size() && seconds > kLatencyBuckets[bucket]) ++bucket;
    latency_buckets[bucket].fetch_add(1, std::memory_order_relaxed);
    latency_sum_ns.fetch_add(static_cast<std::uint64_t>(duration.count()),
                             std::memory_order_relaxed);
  }
};

/// Replication connections and current client connections per backend (touched once per
/// connection).
struct BackendCounters {
  std::atomic<std::uint64_t> routed_replication{0};
  std::atomic<std::int64_t> clients{0};
};

/// Transactions (transaction pooling) or connections (session pooling, direct) one worker routed
/// to one backend. Only that worker writes them.
struct alignas(64) RouteCounters {
  std::atomic<std::uint64_t> read{0};
  std::atomic<std::uint64_t> write{0};
};

class Stats {
 public:
  Stats(std::size_t workers, std::size_t backends)
      : workers_(workers),
        backends_(std::make_unique<BackendCounters[]>(backends)),
        routes_(std::make_unique<RouteCounters[]>(workers * backends)),
        backend_count_(backends) {}

  [[nodiscard]] WorkerCounters& worker(std::size_t i) { return workers_[i]; }
  [[nodiscard]] const std::vector<WorkerCounters>& workers() const { return workers_; }
  [[nodiscard]] BackendCounters& backend(std::size_t i) { return backends_[i]; }
  [[nodiscard]] const BackendCounters& backend(std::size_t i) const { return backends_[i]; }
  [[nodiscard]] std::size_t backend_count() const { return backend_count_; }
  /// What worker `worker` routed to backend `backend`.
  [[nodiscard]] RouteCounters& routes(std::size_t worker, std::size_t backend) {
    return routes_[worker * backend_count_ + backend];
  }
  /// Reads and writes routed to `backend`, summed over the workers.
  [[nodiscard]] std::uint64_t routed_read(std::size_t backend) const {
    return sum_routes(backend, &RouteCounters::read);
  }
  [[nodiscard]] std::uint64_t routed_write(std::size_t backend) const {
    return sum_routes(backend, &RouteCounters::write);
  }

  std::atomic<std::int64_t> client_connections{0};
  std::atomic<std::int64_t> clients_parked{0};  ///< of those, parked (idle, transaction mode)
  std::atomic<std::uint64_t> client_parks_total{0};

 private:
  [[nodiscard]] std::uint64_t sum_routes(std::size_t backend,
                                         std::atomic<std::uint64_t> RouteCounters::*kind) const {
    std::uint64_t total = 0;
    for (std::size_t w = 0; w < workers_.size(); ++w) {
      total += (routes_[w * backend_count_ + backend].*kind).load(std::memory_order_relaxed);
    }
    return total;
  }

  std::vector<WorkerCounters> workers_;
  std::unique_ptr<BackendCounters[]> backends_;
  std::unique_ptr<RouteCounters[]> routes_;  ///< workers × backends
  std::size_t backend_count_;
};

}  // namespace pgrelay::stats
