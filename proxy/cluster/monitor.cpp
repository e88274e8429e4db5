// Prober threads: one blocking libpq connection per backend, results merged into Topology with
// replay lag, eligibility and fencing, published atomically.
#include "pgrelay/cluster/monitor.hpp"

#include <libpq-fe.h>
#include <spdlog/spdlog.h>
#include <ctime>

#include <poll.h>

#include <algorithm>
#include <cerrno>
#include <charconv>

#include "pgrelay/cluster/admin_conn.hpp"

namespace pgrelay::cluster {

namespace {

// One round trip per probe. On a primary the timeline is read from the name of the current WAL
// segment; on a standby from its WAL receiver, or from the last checkpoint when none runs.
constexpr const char* kProbeQuery =
    "SELECT pg_is_in_recovery(),"
    " CASE WHEN pg_is_in_recovery()"
    "  THEN coalesce((SELECT received_tli FROM pg_stat_wal_receiver),"
    "                (SELECT timeline_id FROM pg_control_checkpoint()))"
    "  ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int END,"
    " CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_current_wal_lsn() - '0/0' END,"
    " pg_last_wal_receive_lsn() - '0/0',"
    " pg_last_wal_replay_lsn() - '0/0',"
    " coalesce((SELECT status = 'streaming' FROM pg_stat_wal_receiver), false)";
constexpr const char* kSystemIdQuery = "SELECT system_identifier FROM pg_control_system()";
constexpr const char* kNonVolatileQuery =
    "SELECT proname FROM pg_catalog.pg_proc"
    " WHERE pronamespace = 'pg_catalog'::pg_catalog.regnamespace"
    " GROUP BY proname HAVING bool_and(provolatile <> 'v')";

/// Probes back off up to this after failure_threshold failures in a row.
constexpr std::chrono::milliseconds kMaxBackoff{5000};

std::uint64_t parse_u64(const char* text) {
  std::uint64_t value = 0;
  std::string_view s(text);
  if (auto dot = s.find('.'); dot != std::string_view::npos) s = s.substr(0, dot);
  std::from_chars(s.data(), s.data() + s.size(), value);
  return value;
}

}  // namespace

/// What one probe found.
struct Monitor::Probe {
  bool ok = false;
  std::string error;
  bool in_recovery = false;
  std::uint32_t timeline = 0;
  std::uint64_t system_identifier = 0;
  std::uint64_t current_lsn = 0;
  std::uint64_t receive_lsn = 0;
  std::uint64_t replay_lsn = 0;
  bool streaming = false;
  Clock::time_point when{};
  std::uint32_t rtt_us = 0;
};

struct Monitor::Prober {
  std::size_t index = 0;
  PGconn* conn = nullptr;
  std::uint64_t system_identifier = 0;
  bool wake = false;
  clockid_t cpu_clock{};
  std::atomic<bool> has_cpu_clock{false};
  std::thread thread;
};

Monitor::Monitor(MonitorOptions options) : options_(std::move(options)) {
  for (const auto& b : options_.backends) {
    NodeStatus node;
    node.name = b.name;
    node.host = b.host;
    node.port = b.port;
    nodes_.push_back(std::move(node));
  }
  gates_.resize(nodes_.size());
  attempted_.assign(nodes_.size(), false);
  auto initial = std::make_shared<Topology>();
  initial->nodes = nodes_;
  current_.store(std::move(initial));
}

Monitor::~Monitor() { stop(); }

void Monitor::start() {
  for (std::size_t i = 0; i < options_.backends.size(); ++i) {
    auto prober = std::make_unique<Prober>();
    prober->index = i;
    probers_.push_back(std::move(prober));
  }
  for (auto& prober : probers_) {
    Prober* p = prober.get();
    p->thread = std::thread([this, p] {
      if (pthread_getcpuclockid(pthread_self(), &p->cpu_clock) == 0) p->has_cpu_clock = true;
      run(*p);
    });
  }
}

void Monitor::stop() {
  {
    std::lock_guard lock(mutex_);
    if (stopping_) return;
    stopping_ = true;
  }
  wake_.notify_all();
  for (auto& prober : probers_) {
    if (prober->thread.joinable()) prober->thread.join();
    if (prober->conn != nullptr) PQfinish(prober->conn);
    prober->conn = nullptr;
  }
}

void Monitor::update_thresholds(std::uint32_t interval_ms, std::uint32_t failure_threshold,
                                std::uint64_t max_lag_bytes, std::uint64_t max_lag_ms) {
  std::lock_guard lock(mutex_);
  options_.monitor.interval_ms = interval_ms;
  options_.monitor.failure_threshold = failure_threshold;
  options_.max_lag_bytes = max_lag_bytes;
  options_.max_lag_ms = max_lag_ms;
}

void Monitor::request_probe() {
  {
    std::lock_guard lock(mutex_);
    for (auto& prober : probers_) prober->wake = true;
  }
  wake_.notify_all();
}

void Monitor::request_replay_probe() {
  // At most one such request per kReplayProbeSpacing, whatever the number of sessions asking.
  const auto now = Clock::now().time_since_epoch().count();
  auto last = last_replay_request_.load(std::memory_order_relaxed);
  const auto spacing = std::chrono::duration_cast<Clock::duration>(kReplayProbeSpacing).count();
  if (now - last < spacing) return;
  if (!last_replay_request_.compare_exchange_strong(last, now, std::memory_order_relaxed)) return;
  request_probe();
}

bool Monitor::wait_first_round(std::chrono::milliseconds timeout) {
  std::unique_lock lock(mutex_);
  return first_round_.wait_for(lock, timeout, [this] {
    return std::all_of(attempted_.begin(), attempted_.end(), [](bool b) { return b; });
  });
}

std::chrono::microseconds Monitor::cpu_time() const {
  std::chrono::microseconds total{0};
  for (const auto& prober : probers_) {
    timespec ts{};
    if (prober->has_cpu_clock && clock_gettime(prober->cpu_clock, &ts) == 0) {
      total +=
          std::chrono::seconds(ts.tv_sec) + std::chrono::duration_cast<std::chrono::microseconds>(
                                                std::chrono::nanoseconds(ts.tv_nsec));
    }
  }
  return total;
}

void Monitor::run(Prober& prober) {
  const auto& backend = options_.backends[prober.index];
  // Connection settings never change after construction; thresholds are read under the lock.
  const auto settings = [this] {
    std::lock_guard lock(mutex_);
    return options_.monitor;
  }();
  const std::string port = std::to_string(backend.port);
  // libpq's connect_timeout is in whole seconds (minimum 2); tcp_user_timeout bounds a probe
  // against a host that stopped answering.
  const std::string user_timeout =
      std::to_string(std::max<std::uint32_t>(1000, settings.interval_ms * 2));
  const char* keys[] = {"host",
                        "port",
                        "user",
                        "password",
                        "dbname",
                        "application_name",
                        "connect_timeout",
                        "tcp_user_timeout",
                        "sslmode",
                        nullptr};
  const char* values[] = {backend.host.c_str(),
                          port.c_str(),
                          settings.user.c_str(),
                          settings.password.c_str(),
                          settings.database.c_str(),
                          "pgrelay-monitor",
                          "2",
                          user_timeout.c_str(),
                          "prefer",
                          nullptr};

  // A probe that takes longer than this counts as failed (and the connection is dropped).
  const auto probe_timeout =
      std::chrono::milliseconds(std::max<std::uint32_t>(1000, settings.interval_ms * 2));
  std::uint32_t failures = 0;
  while (true) {
    Probe probe;
    if (prober.conn == nullptr) {
      prober.conn = PQconnectdbParams(keys, values, 0);
      if (PQstatus(prober.conn) == CONNECTION_OK) {
        // Server notices (a shutdown's WARNING) would go to stderr unformatted: drop them.
        PQsetNoticeProcessor(
            prober.conn, [](void*, const char*) {}, nullptr);
        PGresult* res = exec_with_timeout(prober.conn, kSystemIdQuery, probe_timeout);
        if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1) {
          prober.system_identifier = parse_u64(PQgetvalue(res, 0, 0));
        }
        PQclear(res);
      } else {
        probe.error = one_line(PQerrorMessage(prober.conn));
        PQfinish(prober.conn);
        prober.conn = nullptr;
      }
    }
    if (prober.conn != nullptr) {
      const auto started = Clock::now();
      PGresult* res = exec_with_timeout(prober.conn, kProbeQuery, probe_timeout);
      probe.when = Clock::now();
      probe.rtt_us = static_cast<std::uint32_t>(
          std::chrono::duration_cast<std::chrono::microseconds>(probe.when - started).count());
      if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1) {
        probe.ok = true;
        probe.in_recovery = PQgetvalue(res, 0, 0)[0] == 't';
        probe.timeline = static_cast<std::uint32_t>(parse_u64(PQgetvalue(res, 0, 1)));
        probe.current_lsn = parse_u64(PQgetvalue(res, 0, 2));
        probe.receive_lsn = parse_u64(PQgetvalue(res, 0, 3));
        probe.replay_lsn = parse_u64(PQgetvalue(res, 0, 4));
        probe.streaming = PQgetvalue(res, 0, 5)[0] == 't';
        probe.system_identifier = prober.system_identifier;
      } else {
        probe.error =
            res == nullptr && PQstatus(prober.conn) == CONNECTION_OK
                ? "probe not answered within " + std::to_string(probe_timeout.count()) + " ms"
                : one_line(PQerrorMessage(prober.conn));
        PQfinish(prober.conn);
        prober.conn = nullptr;
      }
      PQclear(res);
    }
    if (probe.ok && !probe.in_recovery && prober.conn != nullptr &&
        nonvolatile_functions_.load() == nullptr) {
      PGresult* res = exec_with_timeout(prober.conn, kNonVolatileQuery, probe_timeout);
      if (PQresultStatus(res) == PGRES_TUPLES_OK) {
        auto names = std::make_shared<std::vector<std::string>>();
        names->reserve(static_cast<std::size_t>(PQntuples(res)));
        for (int row = 0; row < PQntuples(res); ++row) names->emplace_back(PQgetvalue(res, row, 0));
        spdlog::info("backend {}: read the volatility of pg_catalog functions ({} never volatile)",
                     backend.name, names->size());
        nonvolatile_functions_.store(std::move(names));
      } else {
        spdlog::warn("backend {}: could not read pg_catalog function volatility: {}", backend.name,
                     one_line(PQerrorMessage(prober.conn)));
      }
      PQclear(res);
    }
    failures = probe.ok ? 0 : failures + 1;
    publish(prober.index, probe);

    std::unique_lock lock(mutex_);
    // Past the failure threshold, back off (doubling, up to kMaxBackoff) so a dead node costs
    // little; a probe request still wakes the prober at once.
    const auto threshold = options_.monitor.failure_threshold;
    auto wait = std::chrono::milliseconds(options_.monitor.interval_ms);
    if (failures > threshold) {
      const auto shift = std::min<std::uint32_t>(failures - threshold, 6);
      wait = std::min(kMaxBackoff, std::max(wait, wait * (1 << shift)));
    }
    wake_.wait_for(lock, wait, [&] { return stopping_ || prober.wake; });
    if (stopping_) return;
    prober.wake = false;
  }
}

void Monitor::publish(std::size_t index, const Probe& probe) {
  std::shared_ptr<const Topology> previous;
  std::shared_ptr<Topology> next;
  bool notify = false;
  {
    std::lock_guard lock(mutex_);
    NodeStatus& node = nodes_[index];
    ++node.probes_total;
    if (probe.ok) {
      node.probed = true;
      node.consecutive_failures = 0;
      node.last_error.clear();
      node.in_recovery = probe.in_recovery;
      node.timeline = probe.timeline;
      node.system_identifier = probe.system_identifier;
      node.current_lsn = probe.current_lsn;
      node.receive_lsn = probe.receive_lsn;
      node.replay_lsn = probe.replay_lsn;
      node.streaming = probe.streaming;
      node.probed_at = probe.when;
      node.rtt_us = probe.rtt_us;
    } else {
      ++node.consecutive_failures;
      ++node.probe_failures_total;
      node.last_error = probe.error;
    }

    previous = current_.load();
    next = std::make_shared<Topology>();
    next->nodes = nodes_;
    if (probe.ok) highest_timeline_ = std::max(highest_timeline_, probe.timeline);
    assign_roles(*next, options_.monitor.failure_threshold, highest_timeline_);

    // The lag history follows the current primary only.
    if (next->primary != previous->primary && next->primary >= 0) history_.clear();
    if (probe.ok && next->primary == static_cast<int>(index)) {
      history_.add(probe.when, probe.current_lsn);
    }
    const NodeStatus* primary = next->primary_node();
    for (std::size_t i = 0; i < next->nodes.size(); ++i) {
      NodeStatus& n = next->nodes[i];
      const bool was_eligible = previous->nodes[i].eligible;
      n.eligible = false;
      if (n.role != NodeRole::kStandby || primary == nullptr) continue;
      n.replay_lag_bytes =
          primary->current_lsn > n.replay_lsn ? primary->current_lsn - n.replay_lsn : 0;
      n.replay_lag_ms = static_cast<std::uint64_t>(history_.lag(n.replay_lsn, n.probed_at).count());
      const bool lag_ok =
          gates_[i].update(n.replay_lag_bytes, options_.max_lag_bytes, n.replay_lag_ms,
                           options_.max_lag_ms, options_.resume_fraction);
      const bool same_cluster = n.system_identifier == primary->system_identifier;
      n.eligible = lag_ok && n.streaming && n.consecutive_failures == 0 &&
                   n.timeline == primary->timeline && same_cluster;
      if (n.eligible != was_eligible) {
        spdlog::info(
            "backend {}: {} for reads (streaming {}, timeline {} vs primary {}, replay lag "
            "{} bytes / {} ms, limits {} bytes / {} ms{})",
            n.name, n.eligible ? "eligible" : "not eligible", n.streaming, n.timeline,
            primary->timeline, n.replay_lag_bytes, n.replay_lag_ms, options_.max_lag_bytes,
            options_.max_lag_ms, same_cluster ? "" : ", DIFFERENT SYSTEM IDENTIFIER");
      }
    }

    for (std::size_t i = 0; i < next->nodes.size(); ++i) {
      const auto& before = previous->nodes[i];
      const auto& after = next->nodes[i];
      if (before.role == after.role) continue;
      ++role_changes_;
      notify = true;
      if (after.role == NodeRole::kFenced) {
        spdlog::error(
            "backend {} ({}:{}): role {} -> fenced, timeline {} -> {}: it claims to be a "
            "primary but {}; it gets no traffic",
            after.name, after.host, after.port, to_string(before.role), before.timeline,
            after.timeline,
            primary != nullptr ? "\"" + primary->name + "\" is primary on timeline " +
                                     std::to_string(primary->timeline)
                               : std::string("another node claims the same timeline"));
      } else {
        spdlog::log(after.role == NodeRole::kDown ? spdlog::level::warn : spdlog::level::info,
                    "backend {} ({}:{}): role {} -> {}, timeline {} -> {}{}{}", after.name,
                    after.host, after.port, to_string(before.role), to_string(after.role),
                    before.timeline, after.timeline, after.last_error.empty() ? "" : ": ",
                    after.last_error);
      }
    }
    if (previous->primary != next->primary) {
      notify = true;
      if (primary != nullptr) {
        if (last_primary_ >= 0 && last_primary_ != next->primary) {
          ++failovers_;
          spdlog::warn("failover: primary moved from {} to {} (timeline {})",
                       nodes_[static_cast<std::size_t>(last_primary_)].name, primary->name,
                       primary->timeline);
        } else {
          spdlog::info("primary is {} (timeline {})", primary->name, primary->timeline);
        }
        last_primary_ = next->primary;
      } else {
        const auto fenced =
            std::count_if(next->nodes.begin(), next->nodes.end(),
                          [](const NodeStatus& n) { return n.role == NodeRole::kFenced; });
        const bool same_timeline =
            fenced > 1 &&
            std::all_of(next->nodes.begin(), next->nodes.end(), [&](const NodeStatus& n) {
              return n.role != NodeRole::kFenced || n.timeline == highest_timeline_;
            });
        std::string reason = "no node is out of recovery";
        if (same_timeline) {
          reason = "several nodes claim to be primary on timeline " +
                   std::to_string(highest_timeline_) + "; writes are refused until one remains";
        } else if (fenced > 0) {
          reason = "the only nodes out of recovery are fenced (on a timeline older than " +
                   std::to_string(highest_timeline_) +
                   ", the newest seen); writes wait for a primary on the newest timeline";
        }
        spdlog::error("no primary: {}", reason);
      }
    }
    next->failovers = failovers_;
    next->role_changes = role_changes_;
    next->generation = ++generation_;
    current_.store(next);
    published_.store(next->generation, std::memory_order_release);
    if (!attempted_[index]) {
      attempted_[index] = true;
      first_round_.notify_all();
    }
  }
  if (notify && listener_) listener_(*previous, *next);
}

}  // namespace pgrelay::cluster
