// Prober threads: one blocking libpq connection per backend, results merged into Topology.
#include "pgrelay/cluster/monitor.hpp"

#include <libpq-fe.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <charconv>

namespace pgrelay::cluster {

namespace {

// One round trip: role, timeline and position. On a primary the timeline is read from the
// name of the current WAL segment; on a standby from the WAL receiver, or from the last
// checkpoint when no receiver runs.
constexpr const char* kProbeQuery =
    "SELECT pg_is_in_recovery(),"
    " CASE WHEN pg_is_in_recovery()"
    "  THEN coalesce((SELECT received_tli FROM pg_stat_wal_receiver),"
    "                (SELECT timeline_id FROM pg_control_checkpoint()))"
    "  ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int END,"
    " (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn()"
    "  ELSE pg_current_wal_lsn() END - '0/0')::text";

std::uint64_t parse_u64(const char* text) {
  std::uint64_t value = 0;
  std::string_view s(text);
  if (auto dot = s.find('.'); dot != std::string_view::npos) s = s.substr(0, dot);
  std::from_chars(s.data(), s.data() + s.size(), value);
  return value;
}

std::string one_line(const char* message) {
  std::string s(message != nullptr ? message : "");
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  std::replace(s.begin(), s.end(), '\n', ' ');
  return s;
}

}  // namespace

struct Monitor::Prober {
  std::size_t index = 0;
  PGconn* conn = nullptr;
  bool wake = false;
  std::thread thread;
};

Monitor::Monitor(config::MonitorSettings settings, std::vector<config::BackendSettings> backends)
    : settings_(std::move(settings)), backends_(std::move(backends)) {
  nodes_.reserve(backends_.size());
  for (const auto& b : backends_) {
    NodeStatus node;
    node.name = b.name;
    node.host = b.host;
    node.port = b.port;
    nodes_.push_back(std::move(node));
  }
  probed_.assign(nodes_.size(), false);
  auto initial = std::make_shared<Topology>();
  initial->nodes = nodes_;
  current_.store(std::move(initial));
}

Monitor::~Monitor() { stop(); }

void Monitor::start() {
  for (std::size_t i = 0; i < backends_.size(); ++i) {
    auto prober = std::make_unique<Prober>();
    prober->index = i;
    probers_.push_back(std::move(prober));
  }
  for (auto& prober : probers_) {
    Prober* p = prober.get();
    p->thread = std::thread([this, p] { run(*p); });
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

void Monitor::request_probe() {
  {
    std::lock_guard lock(mutex_);
    for (auto& prober : probers_) prober->wake = true;
  }
  wake_.notify_all();
}

bool Monitor::wait_first_round(std::chrono::milliseconds timeout) {
  std::unique_lock lock(mutex_);
  return first_round_.wait_for(lock, timeout, [this] {
    return std::all_of(probed_.begin(), probed_.end(), [](bool b) { return b; });
  });
}

void Monitor::run(Prober& prober) {
  const auto& backend = backends_[prober.index];
  const std::string port = std::to_string(backend.port);
  // libpq's connect_timeout is in whole seconds (minimum 2); tcp_user_timeout bounds a probe
  // against a host that stopped answering.
  const std::string user_timeout =
      std::to_string(std::max<std::uint32_t>(1000, settings_.interval_ms * 2));
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
                          settings_.user.c_str(),
                          settings_.password.c_str(),
                          settings_.database.c_str(),
                          "pgrelay-monitor",
                          "2",
                          user_timeout.c_str(),
                          "disable",
                          nullptr};

  NodeStatus status;
  status.name = backend.name;
  status.host = backend.host;
  status.port = backend.port;
  while (true) {
    bool ok = false;
    if (prober.conn == nullptr || PQstatus(prober.conn) != CONNECTION_OK) {
      if (prober.conn != nullptr) PQfinish(prober.conn);
      prober.conn = PQconnectdbParams(keys, values, 0);
      if (PQstatus(prober.conn) != CONNECTION_OK) {
        status.last_error = one_line(PQerrorMessage(prober.conn));
        PQfinish(prober.conn);
        prober.conn = nullptr;
      }
    }
    if (prober.conn != nullptr) {
      PGresult* res = PQexec(prober.conn, kProbeQuery);
      if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1) {
        status.in_recovery = PQgetvalue(res, 0, 0)[0] == 't';
        status.timeline = static_cast<std::uint32_t>(parse_u64(PQgetvalue(res, 0, 1)));
        status.lsn = parse_u64(PQgetvalue(res, 0, 2));
        status.last_error.clear();
        ok = true;
      } else {
        status.last_error = one_line(PQerrorMessage(prober.conn));
        PQfinish(prober.conn);
        prober.conn = nullptr;
      }
      PQclear(res);
    }
    if (ok) {
      status.consecutive_failures = 0;
    } else {
      ++status.consecutive_failures;
    }
    publish(prober.index, status, true);

    std::unique_lock lock(mutex_);
    wake_.wait_for(lock, std::chrono::milliseconds(settings_.interval_ms),
                   [&] { return stopping_ || prober.wake; });
    if (stopping_) return;
    prober.wake = false;
  }
}

void Monitor::publish(std::size_t index, const NodeStatus& status, bool probed) {
  std::shared_ptr<Topology> next;
  {
    std::lock_guard lock(mutex_);
    NodeStatus& node = nodes_[index];
    const std::uint32_t last_timeline = node.timeline;
    node.in_recovery = status.in_recovery;
    node.consecutive_failures = status.consecutive_failures;
    node.last_error = status.last_error;
    if (status.consecutive_failures == 0) {
      node.timeline = status.timeline;
      node.lsn = status.lsn;
    } else {
      node.timeline = last_timeline;
    }
    auto previous = current_.load();
    next = std::make_shared<Topology>();
    next->nodes = nodes_;
    assign_roles(*next, settings_.failure_threshold);
    for (std::size_t i = 0; i < next->nodes.size(); ++i) {
      const auto& before = previous->nodes[i];
      const auto& after = next->nodes[i];
      if (before.role != after.role) {
        const auto level = after.role == NodeRole::kFenced || after.role == NodeRole::kDown
                               ? spdlog::level::warn
                               : spdlog::level::info;
        spdlog::log(level, "backend {} ({}:{}): role {} -> {}, timeline {} -> {}{}{}", after.name,
                    after.host, after.port, to_string(before.role), to_string(after.role),
                    before.timeline, after.timeline, after.last_error.empty() ? "" : ": ",
                    after.last_error);
      }
    }
    if (previous->primary != next->primary) {
      if (next->primary >= 0) {
        spdlog::info("primary is now {}", next->primary_node()->name);
      } else {
        spdlog::warn(
            "no primary: {}",
            std::count_if(next->nodes.begin(), next->nodes.end(),
                          [](const NodeStatus& n) { return n.role == NodeRole::kFenced; }) > 1
                ? "several nodes claim to be primary on the same timeline; none serves"
                : "no node is out of recovery");
      }
    }
    next->generation = ++generation_;
    current_.store(next);
    if (probed && !probed_[index]) {
      probed_[index] = true;
      first_round_.notify_all();
    }
  }
}

}  // namespace pgrelay::cluster
