// Cluster monitor against a real cluster: /topology roles, LSNs and replay lag, /ready, /metrics.
#include <gtest/gtest.h>

#include <algorithm>
#include <boost/json.hpp>
#include <chrono>
#include <cstdlib>
#include <functional>
#include <iostream>
#include <limits>
#include <map>
#include <optional>
#include <regex>
#include <set>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#include "cluster_fixture.hpp"
#include "prometheus_text.hpp"

namespace pgrelay::test {
namespace {

using namespace std::chrono_literals;
namespace json = boost::json;
using Clock = std::chrono::steady_clock;

const std::string kMonitor =
    "[monitor]\nuser = \"pgrelay\"\npassword = \"pgrelay\"\ninterval_ms = 200\n";
const std::string kCreateTable =
    "CREATE TABLE IF NOT EXISTS monitor_lag (v int, pad text) WITH (autovacuum_enabled = false)";
// About 2000 heap-insert records: a few hundred KiB of WAL per write.
const std::string kInsert =
    "INSERT INTO monitor_lag SELECT g, repeat('x', 40) FROM generate_series(1, 2000) g";

// ------------------------------------------------------------------------------------------
// /topology
// ------------------------------------------------------------------------------------------

struct NodeView {
  std::string name;
  std::string host;
  std::string role;
  std::string lsn;  ///< "" when null
  std::uint64_t port = 0;
  std::uint64_t timeline = 0;
  std::uint64_t lag_bytes = 0;
  std::uint64_t lag_ms = 0;
  std::uint64_t rtt_us = 0;
  std::int64_t clients = 0;
  bool eligible = false;
  bool streaming = false;
  std::string last_error;
};

/// One /topology answer, checked against the INTERFACE.md schema.
struct TopologyView {
  bool ok = false;      ///< fetched, parsed and of the documented shape
  std::string problem;  ///< why not
  std::string raw;
  std::optional<std::string> primary;
  std::uint64_t generation = 0;
  std::vector<NodeView> nodes;

  [[nodiscard]] const NodeView* node(std::string_view name) const {
    for (const auto& n : nodes) {
      if (n.name == name) return &n;
    }
    return nullptr;
  }
};

std::uint64_t parse_lsn(const std::string& text) {
  const auto slash = text.find('/');
  return (std::stoull(text.substr(0, slash), nullptr, 16) << 32) |
         std::stoull(text.substr(slash + 1), nullptr, 16);
}

TopologyView fetch_topology(int http_port) {
  TopologyView view;
  const auto response = http_get(http_port, "/topology");
  view.raw = response.body;
  if (response.status != 200) {
    view.problem = "HTTP status " + std::to_string(response.status);
    return view;
  }
  boost::system::error_code ec;
  const json::value root = json::parse(response.body, ec);
  if (ec || !root.is_object()) {
    view.problem = "not a JSON object: " + ec.message();
    return view;
  }
  std::string problem;
  const auto& object = root.as_object();
  const auto get_uint = [&](const json::object& o, const char* key, auto& out) {
    const auto* v = o.if_contains(key);
    if (v != nullptr && v->is_uint64()) {
      out = static_cast<std::remove_reference_t<decltype(out)>>(v->as_uint64());
    } else if (v != nullptr && v->is_int64() && v->as_int64() >= 0) {
      out = static_cast<std::remove_reference_t<decltype(out)>>(v->as_int64());
    } else {
      problem += std::string("\"") + key + "\" is not a non-negative integer; ";
    }
  };
  const auto get_string = [&](const json::object& o, const char* key, std::string& out) {
    const auto* v = o.if_contains(key);
    if (v != nullptr && v->is_string()) {
      out = std::string(v->as_string());
    } else {
      problem += std::string("\"") + key + "\" is not a string; ";
    }
  };
  const auto get_bool = [&](const json::object& o, const char* key, bool& out) {
    const auto* v = o.if_contains(key);
    if (v != nullptr && v->is_bool()) {
      out = v->as_bool();
    } else {
      problem += std::string("\"") + key + "\" is not a bool; ";
    }
  };

  if (const auto* p = object.if_contains("primary"); p != nullptr && p->is_string()) {
    view.primary = std::string(p->as_string());
  } else if (p == nullptr || !p->is_null()) {
    problem += "\"primary\" is neither a string nor null; ";
  }
  get_uint(object, "generation", view.generation);
  const auto* nodes = object.if_contains("nodes");
  if (nodes == nullptr || !nodes->is_array()) {
    problem += "\"nodes\" is not an array; ";
  } else {
    static const std::regex kLsn("[0-9A-F]{1,8}/[0-9A-F]{1,8}");
    static const std::set<std::string> kRoles = {"primary", "standby", "down", "fenced", "unknown"};
    for (const auto& item : nodes->as_array()) {
      if (!item.is_object()) {
        problem += "a node is not an object; ";
        continue;
      }
      const auto& o = item.as_object();
      NodeView n;
      get_string(o, "name", n.name);
      get_string(o, "host", n.host);
      get_uint(o, "port", n.port);
      get_string(o, "role", n.role);
      get_uint(o, "timeline", n.timeline);
      get_uint(o, "replay_lag_bytes", n.lag_bytes);
      get_uint(o, "replay_lag_ms", n.lag_ms);
      get_bool(o, "eligible", n.eligible);
      get_bool(o, "streaming", n.streaming);
      get_uint(o, "probe_rtt_us", n.rtt_us);
      if (const auto* c = o.if_contains("clients"); c != nullptr && c->is_int64()) {
        n.clients = c->as_int64();
      } else if (c != nullptr && c->is_uint64()) {
        n.clients = static_cast<std::int64_t>(c->as_uint64());
      } else {
        problem += "\"clients\" is not an integer; ";
      }
      if (const auto* lsn = o.if_contains("lsn"); lsn != nullptr && lsn->is_string()) {
        n.lsn = std::string(lsn->as_string());
        if (!std::regex_match(n.lsn, kLsn)) problem += n.name + " lsn \"" + n.lsn + "\" not X/Y; ";
      } else if (lsn == nullptr || !lsn->is_null()) {
        problem += "\"lsn\" is neither a string nor null; ";
      }
      if (const auto* e = o.if_contains("last_error"); e != nullptr) {
        if (e->is_string()) {
          n.last_error = std::string(e->as_string());
        } else {
          problem += "\"last_error\" is not a string; ";
        }
      }
      if (kRoles.count(n.role) == 0) problem += n.name + " has role \"" + n.role + "\"; ";
      view.nodes.push_back(std::move(n));
    }
  }
  view.problem = problem;
  view.ok = problem.empty();
  return view;
}

std::string describe(const NodeView& n) {
  return n.name + ": role " + n.role + ", timeline " + std::to_string(n.timeline) + ", lsn " +
         (n.lsn.empty() ? "null" : n.lsn) + ", lag " + std::to_string(n.lag_bytes) + " B / " +
         std::to_string(n.lag_ms) + " ms, eligible " + (n.eligible ? "yes" : "no") +
         ", streaming " + (n.streaming ? "yes" : "no") +
         (n.last_error.empty() ? "" : ", last_error " + n.last_error);
}

/// Polls /topology every 100 ms until `predicate` holds or `timeout` passes; `last` gets the
/// final answer either way.
bool wait_topology(const Proxy& proxy, std::chrono::milliseconds timeout,
                   const std::function<bool(const TopologyView&)>& predicate, TopologyView* last,
                   std::vector<TopologyView>* all = nullptr) {
  const auto deadline = Clock::now() + timeout;
  while (true) {
    *last = fetch_topology(proxy.http_port());
    if (all != nullptr) all->push_back(*last);
    if (last->ok && predicate(*last)) return true;
    if (Clock::now() >= deadline) return false;
    std::this_thread::sleep_for(100ms);
  }
}

/// A node's lag in ms, or UINT64_MAX when the node is missing.
std::uint64_t lag_ms(const TopologyView& t, std::string_view name) {
  const auto* n = t.node(name);
  return n != nullptr ? n->lag_ms : std::numeric_limits<std::uint64_t>::max();
}

bool has_nodes(const TopologyView& t, std::initializer_list<std::string_view> names) {
  return t.ok && std::all_of(names.begin(), names.end(),
                             [&](std::string_view name) { return t.node(name) != nullptr; });
}

bool caught_up(const TopologyView& t, std::string_view name) {
  const auto* n = t.node(name);
  return n != nullptr && n->role == "standby" && n->streaming && n->eligible && n->lag_bytes == 0 &&
         n->lag_ms == 0;
}

bool settled(const TopologyView& t, std::initializer_list<std::string_view> standbys) {
  if (t.primary != "node1") return false;
  return std::all_of(standbys.begin(), standbys.end(),
                     [&](std::string_view name) { return caught_up(t, name); });
}

/// Waits until node1 is primary and every one of `standbys` is caught up (0 lag, eligible);
/// `last` gets the final answer either way.
bool wait_settled(const Proxy& proxy, std::initializer_list<std::string_view> standbys,
                  TopologyView* last, std::chrono::milliseconds timeout = 15s) {
  return wait_topology(
      proxy, timeout, [&](const TopologyView& v) { return settled(v, standbys); }, last);
}

/// In every snapshot a standby's lag in bytes is the primary's LSN minus the standby's (the
/// primary reports its current LSN, a standby its replay LSN), never negative.
std::string lag_bytes_mismatch(const TopologyView& t) {
  const NodeView* primary = t.primary ? t.node(*t.primary) : nullptr;
  if (primary == nullptr || primary->lsn.empty()) return {};
  const auto primary_lsn = parse_lsn(primary->lsn);
  std::string out;
  for (const auto& n : t.nodes) {
    if (n.role != "standby" || n.lsn.empty()) continue;
    const auto lsn = parse_lsn(n.lsn);
    const std::uint64_t expected = primary_lsn > lsn ? primary_lsn - lsn : 0;
    if (n.lag_bytes != expected) {
      out += n.name + " replay_lag_bytes " + std::to_string(n.lag_bytes) + " but " + primary->lsn +
             " - " + n.lsn + " = " + std::to_string(expected) + "; ";
    }
  }
  return out;
}

std::string primary_conninfo() {
  return "host=127.0.0.1 port=" + std::to_string(Cluster::get().node("node1").port) +
         " user=app password=app dbname=app sslmode=disable connect_timeout=10";
}

bool is_error(const std::string& result) { return result.rfind("ERROR", 0) == 0; }

/// Prepares a direct connection to the primary for writing: notices are dropped, and commits
/// are flushed at once (the cluster runs with synchronous_commit = off, where a commit record
/// can wait up to wal_writer_delay before pg_current_wal_lsn() passes it).
std::string prepare_writer(PgConn& conn) {
  PQsetNoticeProcessor(
      conn.conn, [](void*, const char*) {}, nullptr);
  return conn.value("SET synchronous_commit = on");
}

/// Writes on the primary every 200 ms for `duration`, fetching /topology every 50 ms (so the
/// samples are not all taken at the same phase of the probe and write cycles).
std::vector<TopologyView> write_and_sample(PgConn& writer, const Proxy& proxy,
                                           std::chrono::milliseconds duration,
                                           std::string* errors) {
  std::vector<TopologyView> samples;
  const auto start = Clock::now();
  for (int i = 0; i * 50ms < duration; ++i) {
    if (i % 4 == 0) {
      const auto result = writer.value(kInsert);
      if (is_error(result)) *errors += result + "\n";
    }
    samples.push_back(fetch_topology(proxy.http_port()));
    std::this_thread::sleep_until(start + (i + 1) * 50ms);
  }
  return samples;
}

// ------------------------------------------------------------------------------------------
// /metrics, through the strict Prometheus text-format validator of prometheus_text.hpp
// ------------------------------------------------------------------------------------------

Exposition fetch_metrics(int http_port, std::string* body = nullptr) {
  const auto response = http_get(http_port, "/metrics");
  if (body != nullptr) *body = response.body;
  if (response.status != 200) {
    Exposition failed;
    failed.errors.push_back("HTTP status " + std::to_string(response.status));
    return failed;
  }
  if (response.body.empty()) {
    Exposition failed;
    failed.errors.push_back("empty body");
    return failed;
  }
  return parse_exposition(response.body);
}

// ------------------------------------------------------------------------------------------
// Tests
// ------------------------------------------------------------------------------------------

TEST(Monitor, TopologyNamesThePrimaryAndStreamingStandbysAndCountsClients) {
  auto& cluster = Cluster::get();
  Proxy proxy(kMonitor);
  TopologyView t;
  ASSERT_TRUE(wait_settled(proxy, {"node2", "node3"}, &t, 15s))
      << t.problem << t.raw << proxy.log();

  EXPECT_EQ(t.primary, "node1") << t.raw;
  EXPECT_GT(t.generation, 0U);
  // The classifier's function volatility comes from the primary's pg_catalog, read once.
  {
    const std::string marker = "backend node1: read the volatility of pg_catalog functions (";
    std::string log = proxy.log();
    for (int i = 0; i < 50 && log.find(marker) == std::string::npos; ++i) {
      std::this_thread::sleep_for(100ms);
      log = proxy.log();
    }
    const auto at = log.find(marker);
    ASSERT_NE(at, std::string::npos) << log;
    const long count = std::strtol(log.c_str() + at + marker.size(), nullptr, 10);
    EXPECT_GT(count, 1000) << "pg_catalog has thousands of non-volatile functions";
  }
  ASSERT_EQ(t.nodes.size(), 3U) << t.raw;
  for (const auto& n : t.nodes) {
    SCOPED_TRACE(describe(n));
    EXPECT_EQ(n.host, "127.0.0.1");
    EXPECT_EQ(n.port, static_cast<std::uint64_t>(cluster.node(n.name).port));
    EXPECT_EQ(n.timeline, 1U);
    EXPECT_FALSE(n.lsn.empty()) << "lsn is null";
    EXPECT_GT(n.rtt_us, 0U);
    EXPECT_EQ(n.clients, 0);
    EXPECT_TRUE(n.last_error.empty());
    if (n.name == "node1") {
      EXPECT_EQ(n.role, "primary");
    } else {
      EXPECT_EQ(n.role, "standby");
      EXPECT_TRUE(n.streaming);
      EXPECT_TRUE(n.eligible);
    }
  }
  EXPECT_EQ(lag_bytes_mismatch(t), "") << t.raw;

  // The monitor keeps probing: new snapshots keep coming.
  std::this_thread::sleep_for(600ms);
  const auto later = fetch_topology(proxy.http_port());
  ASSERT_TRUE(later.ok) << later.problem << later.raw;
  EXPECT_GT(later.generation, t.generation);

  const auto ready = http_get(proxy.http_port(), "/ready");
  EXPECT_EQ(ready.status, 200) << ready.body;
  EXPECT_EQ(http_get(proxy.http_port(), "/health").status, 200);
  EXPECT_EQ(http_get(proxy.http_port(), "/no/such/path").status, 404);

  {
    PgConn client(proxy.conninfo());
    ASSERT_TRUE(client.ok()) << client.error();
    ASSERT_EQ(client.value("SELECT 1"), "1");
    ASSERT_TRUE(wait_topology(
        proxy, 5s,
        [](const auto& v) {
          return has_nodes(v, {"node1", "node2", "node3"}) && v.node("node1")->clients == 1 &&
                 v.node("node2")->clients == 0 && v.node("node3")->clients == 0;
        },
        &t))
        << t.raw;
  }
  EXPECT_TRUE(wait_topology(
      proxy, 5s,
      [](const auto& v) { return has_nodes(v, {"node1"}) && v.node("node1")->clients == 0; }, &t))
      << "the closed client still counts: " << t.raw;
}

TEST(Monitor, IdleClusterShowsZeroLagForAMinute) {
  // Nothing writes here: no client connects, and the tables of the other tests have
  // autovacuum off. Runs before the tests that write.
  Proxy proxy(kMonitor);
  TopologyView t;
  ASSERT_TRUE(wait_settled(proxy, {"node2", "node3"}, &t, 20s)) << t.problem << t.raw;
  const std::string lsn_before = t.node("node1")->lsn;

  std::vector<std::string> bad;
  std::set<std::string> primary_lsns;
  const auto start = Clock::now();
  for (int i = 1; i <= 60; ++i) {
    std::this_thread::sleep_until(start + i * 1s);
    const auto sample = fetch_topology(proxy.http_port());
    if (!sample.ok) {
      bad.push_back("sample " + std::to_string(i) + ": " + sample.problem + sample.raw);
      continue;
    }
    if (const auto* p = sample.node("node1")) primary_lsns.insert(p->lsn);
    for (const char* name : {"node2", "node3"}) {
      const auto* n = sample.node(name);
      if (n == nullptr || n->lag_ms != 0 || !n->eligible || n->role != "standby") {
        bad.push_back("sample " + std::to_string(i) + ": " + (n ? describe(*n) : name));
      }
    }
  }
  std::cout << "idle minute: primary LSN " << lsn_before << " before, while sampling:";
  for (const auto& lsn : primary_lsns) std::cout << " " << lsn;
  std::cout << "\n";
  std::string report;
  for (std::size_t i = 0; i < bad.size() && i < 10; ++i) report += bad[i] + "\n";
  EXPECT_TRUE(bad.empty()) << bad.size()
                           << " bad samples (primary LSNs seen: " << primary_lsns.size() << "):\n"
                           << report;
}

TEST(Monitor, PausedStandbyLagGrowsAndReturnsToZeroOnResume) {
  auto& cluster = Cluster::get();
  Proxy proxy(kMonitor + "[routing]\nmax_lag_ms = 1000\n");
  PgConn writer(primary_conninfo());
  ASSERT_TRUE(writer.ok()) << writer.error();
  ASSERT_EQ(prepare_writer(writer), "");
  ASSERT_EQ(writer.value(kCreateTable), "");
  TopologyView t;
  ASSERT_TRUE(wait_settled(proxy, {"node2", "node3"}, &t, 15s)) << t.problem << t.raw;

  Cleanup resume{[&] { cluster.sql("node2", "SELECT pg_wal_replay_resume()"); }};
  const auto paused = cluster.sql("node2", "SELECT pg_wal_replay_pause()");
  ASSERT_EQ(paused.find("ERROR"), std::string::npos) << paused;
  // A pause request takes effect at the next record the standby would apply; until then replay
  // may still move. Feed it a record and wait until it is really paused.
  ASSERT_FALSE(is_error(writer.value(kInsert)));
  std::string state;
  for (int i = 0; i < 100 && state != "paused"; ++i) {
    state = cluster.sql("node2", "SELECT pg_get_wal_replay_pause_state()");
    if (state != "paused") std::this_thread::sleep_for(50ms);
  }
  ASSERT_EQ(state, "paused");

  std::string write_errors;
  auto samples = write_and_sample(writer, proxy, 3s, &write_errors);
  ASSERT_EQ(write_errors, "");
  ASSERT_GE(samples.size(), 50U);
  // Stopped writing; the paused standby keeps falling behind in time.
  TopologyView end;
  const bool over_limit = wait_topology(
      proxy, 5s, [](const auto& v) { return has_nodes(v, {"node2"}) && lag_ms(v, "node2") > 1000; },
      &end);
  samples.push_back(end);
  for (const auto& s : samples) {
    ASSERT_TRUE(has_nodes(s, {"node1", "node2", "node3"})) << s.problem << s.raw;
  }

  // Lag of node2 against the primary: growing in bytes and in time.
  const auto& early = *samples[samples.size() / 3].node("node2");  // about 1 s into the writes
  const auto& late = *end.node("node2");
  EXPECT_GT(early.lag_bytes, 0U) << describe(early);
  EXPECT_GT(late.lag_bytes, early.lag_bytes) << describe(early) << "\n" << describe(late);
  EXPECT_GT(late.lag_ms, early.lag_ms) << describe(early) << "\n" << describe(late);
  EXPECT_TRUE(over_limit) << describe(late);
  EXPECT_GT(late.lag_ms, 1000U) << describe(late);
  EXPECT_FALSE(late.eligible) << describe(late);
  std::uint64_t previous_bytes = 0;
  std::uint64_t previous_ms = 0;
  for (const auto& s : samples) {
    const auto& n2 = *s.node("node2");
    const auto& n3 = *s.node("node3");
    EXPECT_EQ(lag_bytes_mismatch(s), "") << s.raw;
    EXPECT_GE(n2.lag_bytes, previous_bytes) << "lag of a paused standby shrank: " << describe(n2);
    EXPECT_GE(n2.lag_ms, previous_ms) << "lag of a paused standby shrank: " << describe(n2);
    previous_bytes = n2.lag_bytes;
    previous_ms = n2.lag_ms;
    if (n2.lag_ms > 1000) {
      EXPECT_FALSE(n2.eligible) << "over max_lag_ms: " << describe(n2);
    }
    // node3 replays as the primary writes.
    EXPECT_TRUE(n3.eligible) << describe(n3);
    EXPECT_LT(n3.lag_ms, 1000U) << describe(n3);
    EXPECT_LT(n3.lag_bytes, late.lag_bytes / 2) << describe(n3);
  }

  // The metric says the same.
  const auto metrics = fetch_metrics(proxy.http_port());
  EXPECT_TRUE(metrics.ok()) << metrics.error_text();
  const auto seconds =
      metrics.value("pgrelay_backend_replay_lag_seconds", {{"backend", "node2"}}).value_or(-1);
  EXPECT_GT(seconds, 1.0);

  const auto resumed = cluster.sql("node2", "SELECT pg_wal_replay_resume()");
  ASSERT_EQ(resumed.find("ERROR"), std::string::npos) << resumed;
  resume.cleanup = nullptr;
  const auto resumed_at = Clock::now();
  EXPECT_TRUE(wait_settled(proxy, {"node2", "node3"}, &t, 10s)) << describe(*t.node("node2"));
  std::cout
      << "node2 back to 0 B / 0 ms and eligible "
      << std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - resumed_at).count()
      << " ms after pg_wal_replay_resume()\n";
}

TEST(Monitor, DelayedStandbyShowsItsApplyDelay) {
  auto& cluster = Cluster::get();
  Proxy proxy(kMonitor);
  PgConn writer(primary_conninfo());
  ASSERT_TRUE(writer.ok()) << writer.error();
  ASSERT_EQ(prepare_writer(writer), "");
  ASSERT_EQ(writer.value(kCreateTable), "");
  TopologyView t;
  ASSERT_TRUE(wait_settled(proxy, {"node2", "node3"}, &t, 15s)) << t.problem << t.raw;

  const std::string reset =
      "ALTER SYSTEM RESET recovery_min_apply_delay;\nSELECT pg_reload_conf();\n";
  Cleanup undo{[&] { cluster.sql("node3", reset); }};
  const auto set = cluster.sql(
      "node3", "ALTER SYSTEM SET recovery_min_apply_delay = '2s';\nSELECT pg_reload_conf();\n");
  ASSERT_EQ(set.find("ERROR"), std::string::npos) << set;
  bool applied = false;
  for (int i = 0; i < 50 && !applied; ++i) {
    applied = cluster.sql("node3", "SHOW recovery_min_apply_delay") == "2s";
    if (!applied) std::this_thread::sleep_for(100ms);
  }
  ASSERT_TRUE(applied);

  std::string write_errors;
  auto samples = write_and_sample(writer, proxy, 4s, &write_errors);
  ASSERT_EQ(write_errors, "");
  // The last writes are applied 2 s after their commit.
  TopologyView after;
  wait_topology(
      proxy, 5s, [](const auto& v) { return lag_ms(v, "node3") == 0; }, &after, &samples);

  std::uint64_t max_ms = 0;
  for (const auto& s : samples) {
    ASSERT_TRUE(has_nodes(s, {"node1", "node2", "node3"})) << s.problem << s.raw;
    const auto& n2 = *s.node("node2");
    const auto& n3 = *s.node("node3");
    max_ms = std::max(max_ms, n3.lag_ms);
    EXPECT_EQ(lag_bytes_mismatch(s), "") << s.raw;
    if (n3.lag_ms > 1000) {
      EXPECT_FALSE(n3.eligible) << "over max_lag_ms: " << describe(n3);
    }
    EXPECT_TRUE(n2.eligible) << describe(n2);
    EXPECT_LT(n2.lag_ms, 1000U) << describe(n2);
  }
  std::cout << "node3 with recovery_min_apply_delay 2s: highest replay_lag_ms " << max_ms << "\n";
  EXPECT_GE(max_ms, 1500U);
  EXPECT_LE(max_ms, 4000U);

  const auto undone = cluster.sql("node3", reset);
  ASSERT_EQ(undone.find("ERROR"), std::string::npos) << undone;
  undo.cleanup = nullptr;
  EXPECT_TRUE(wait_settled(proxy, {"node2", "node3"}, &t, 10s)) << describe(*t.node("node3"));
}

TEST(Monitor, CascadingStandbyLagIsMeasuredAgainstThePrimary) {
  auto& cluster = Cluster::get();
  const int port = free_port();
  // node4 goes away at the end so the other tests see three nodes; declared before the proxy
  // so the proxy stops first.
  Cleanup remove_node4{[&] {
    cluster.sql("node4", "SELECT pg_wal_replay_resume()");
    cluster.script("stop fast node4");
    for (int i = 0; i < 20; ++i) {
      if (cluster.sql("node2", "SELECT pg_drop_replication_slot('node4')").find("ERROR") ==
          std::string::npos) {
        break;
      }
      std::this_thread::sleep_for(200ms);
    }
    run("rm -rf " + cluster.dir() + "/node4");
  }};
  const auto added = cluster.script("add-standby node4 " + std::to_string(port) + " node2");
  ASSERT_EQ(added.status, 0) << added.output;

  Proxy proxy(kMonitor + cluster.backends_toml() +
                  "[[backend]]\nname = \"node4\"\nhost = \"127.0.0.1\"\nport = " +
                  std::to_string(port) + "\n",
              false);
  PgConn writer(primary_conninfo());
  ASSERT_TRUE(writer.ok()) << writer.error();
  ASSERT_EQ(prepare_writer(writer), "");
  ASSERT_EQ(writer.value(kCreateTable), "");
  TopologyView t;
  ASSERT_TRUE(wait_settled(proxy, {"node2", "node3", "node4"}, &t, 30s)) << t.problem << t.raw;
  const auto& node4 = *t.node("node4");
  EXPECT_EQ(node4.role, "standby");
  EXPECT_EQ(node4.timeline, 1U);
  EXPECT_EQ(node4.port, static_cast<std::uint64_t>(port));

  const auto paused = cluster.sql("node4", "SELECT pg_wal_replay_pause()");
  ASSERT_EQ(paused.find("ERROR"), std::string::npos) << paused;
  std::string write_errors;
  auto samples = write_and_sample(writer, proxy, 3s, &write_errors);
  ASSERT_EQ(write_errors, "");
  ASSERT_GE(samples.size(), 50U);
  for (const auto& s : samples) {
    ASSERT_TRUE(has_nodes(s, {"node1", "node2", "node3", "node4"})) << s.problem << s.raw;
  }

  const auto& early = *samples[samples.size() / 3].node("node4");
  const auto& late = *samples.back().node("node4");
  EXPECT_GT(early.lag_bytes, 0U) << describe(early);
  EXPECT_GT(late.lag_bytes, early.lag_bytes) << describe(early) << "\n" << describe(late);
  EXPECT_GT(late.lag_ms, early.lag_ms) << describe(early) << "\n" << describe(late);
  for (const auto& s : samples) {
    // Against the primary (node1), not its upstream node2.
    EXPECT_EQ(lag_bytes_mismatch(s), "") << s.raw;
    const auto& n2 = *s.node("node2");
    const auto& n4 = *s.node("node4");
    EXPECT_EQ(n4.timeline, 1U) << describe(n4);
    if (n4.lag_ms > 1000) {
      EXPECT_FALSE(n4.eligible) << "over max_lag_ms: " << describe(n4);
    }
    EXPECT_TRUE(n2.eligible) << describe(n2);
    EXPECT_LT(n2.lag_ms, 1000U) << describe(n2);
    EXPECT_LT(n2.lag_bytes, late.lag_bytes / 2) << describe(n2);
  }

  const auto resumed = cluster.sql("node4", "SELECT pg_wal_replay_resume()");
  ASSERT_EQ(resumed.find("ERROR"), std::string::npos) << resumed;
  EXPECT_TRUE(wait_settled(proxy, {"node2", "node3", "node4"}, &t, 10s))
      << describe(*t.node("node4"));

  // Back to three nodes: node4 stopped, its slot on node2 and its directory gone.
  remove_node4.cleanup();
  remove_node4.cleanup = nullptr;
  EXPECT_EQ(cluster.sql("node2", "SELECT count(*) FROM pg_replication_slots"), "0");
  EXPECT_NE(cluster.script("psql node4 -c 'SELECT 1'").status, 0) << "node4 still answers";
}

TEST(Monitor, NotReadyWithoutAPrimary) {
  auto& cluster = Cluster::get();
  std::string backends;
  for (const char* name : {"node2", "node3"}) {
    backends += "[[backend]]\nname = \"" + std::string(name) +
                "\"\nhost = \"127.0.0.1\"\nport = " + std::to_string(cluster.node(name).port) +
                "\n";
  }
  Proxy proxy(kMonitor + "[routing]\nprimary_wait_ms = 300\n" + backends, false);
  TopologyView t;
  ASSERT_TRUE(wait_topology(
      proxy, 15s,
      [](const auto& v) {
        return v.nodes.size() == 2 && v.node("node2") && v.node("node2")->role == "standby" &&
               v.node("node3") && v.node("node3")->role == "standby";
      },
      &t))
      << t.problem << t.raw;
  EXPECT_FALSE(t.primary.has_value()) << t.raw;
  EXPECT_NE(t.raw.find("\"primary\":null"), std::string::npos) << t.raw;

  const auto ready = http_get(proxy.http_port(), "/ready");
  EXPECT_EQ(ready.status, 503) << ready.body;
  EXPECT_EQ(http_get(proxy.http_port(), "/health").status, 200);

  const auto start = Clock::now();
  PgConn client(proxy.conninfo());
  const auto waited =
      std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start).count();
  EXPECT_FALSE(client.ok());
  EXPECT_NE(client.error().find("no primary server is available"), std::string::npos)
      << client.error();
  EXPECT_GE(waited, 250) << "gave up before primary_wait_ms";
  EXPECT_LT(waited, 5000) << "waited far longer than primary_wait_ms";
}

TEST(Monitor, MetricsAreStrictPrometheusTextWithTheDocumentedFamilies) {
  Proxy proxy(kMonitor);
  TopologyView t;
  ASSERT_TRUE(wait_settled(proxy, {"node2", "node3"}, &t, 15s)) << t.problem << t.raw;
  PgConn client(proxy.conninfo());
  ASSERT_TRUE(client.ok()) << client.error();
  for (int i = 0; i < 5; ++i) ASSERT_EQ(client.value("SELECT 1"), "1");

  std::string body;
  const auto metrics = fetch_metrics(proxy.http_port(), &body);
  EXPECT_TRUE(metrics.ok()) << metrics.error_text() << "\n" << body;

  const std::map<std::string, std::string> documented = {
      {"pgrelay_backend_up", "gauge"},
      {"pgrelay_backend_replay_lag_bytes", "gauge"},
      {"pgrelay_backend_replay_lag_seconds", "gauge"},
      {"pgrelay_routed_total", "counter"},
      {"pgrelay_client_connections", "gauge"},
      {"pgrelay_failovers_total", "counter"},
  };
  for (const auto& [family, type] : documented) {
    const auto it = metrics.types.find(family);
    ASSERT_NE(it, metrics.types.end()) << "no TYPE for " << family << "\n" << body;
    EXPECT_EQ(it->second, type) << family;
  }
  for (const char* name : {"node1", "node2", "node3"}) {
    SCOPED_TRACE(name);
    EXPECT_EQ(metrics.value("pgrelay_backend_up", {{"backend", name}}), 1.0);
    EXPECT_EQ(metrics.value("pgrelay_backend_replay_lag_bytes", {{"backend", name}}), 0.0);
    EXPECT_EQ(metrics.value("pgrelay_backend_replay_lag_seconds", {{"backend", name}}), 0.0);
    for (const char* kind : {"read", "write", "replication"}) {
      EXPECT_TRUE(metrics.value("pgrelay_routed_total", {{"backend", name}, {"kind", kind}}))
          << "no pgrelay_routed_total{backend=\"" << name << "\",kind=\"" << kind << "\"}";
    }
  }
  EXPECT_GE(
      metrics.value("pgrelay_routed_total", {{"backend", "node1"}, {"kind", "write"}}).value_or(0),
      1.0);
  EXPECT_EQ(metrics.value("pgrelay_client_connections"), 1.0);
  EXPECT_EQ(metrics.value("pgrelay_failovers_total"), 0.0);

  std::vector<std::string> histograms;
  for (const auto& [family, type] : metrics.types) {
    if (type == "histogram" && !metrics.matching(family + "_count").empty()) {
      histograms.push_back(family);
    }
  }
  EXPECT_FALSE(histograms.empty()) << "no histogram with samples\n" << body;
}

TEST(Monitor, LatencyHistogramCountsRequests) {
  // INTERFACE.md promises a latency histogram; pgrelay_request_duration_seconds is
  // "Client request to ReadyForQuery round trips". Every simple query below is one.
  Proxy proxy(kMonitor);
  PgConn client(proxy.conninfo());
  ASSERT_TRUE(client.ok()) << client.error();
  const double before =
      fetch_metrics(proxy.http_port()).value("pgrelay_request_duration_seconds_count").value_or(-1);
  for (int i = 0; i < 20; ++i) ASSERT_EQ(client.value("SELECT 1"), "1");
  std::string body;
  const auto metrics = fetch_metrics(proxy.http_port(), &body);
  ASSERT_TRUE(metrics.ok()) << metrics.error_text();
  const double after = metrics.value("pgrelay_request_duration_seconds_count").value_or(-1);
  ASSERT_GE(before, 0);
  EXPECT_GE(after - before, 20.0) << "20 queries, histogram count " << before << " -> " << after;
  EXPECT_GT(metrics.value("pgrelay_request_duration_seconds_sum").value_or(0), 0.0);
}

TEST(Monitor, ProbeCost) {
  Proxy proxy(kMonitor);
  TopologyView t;
  ASSERT_TRUE(wait_settled(proxy, {"node2", "node3"}, &t, 15s)) << t.problem << t.raw;
  const auto first = fetch_metrics(proxy.http_port());
  std::this_thread::sleep_for(10s);
  const auto second = fetch_metrics(proxy.http_port());
  ASSERT_TRUE(first.ok()) << first.error_text();
  ASSERT_TRUE(second.ok()) << second.error_text();

  const auto delta = [&](const std::string& name,
                         const std::map<std::string, std::string>& labels = {}) {
    const auto a = first.value(name, labels);
    const auto b = second.value(name, labels);
    EXPECT_TRUE(a && b) << "no " << name;
    return a && b ? *b - *a : 0.0;
  };
  const double window = delta("pgrelay_uptime_seconds");
  ASSERT_GT(window, 9.0);
  const double cpu = delta("pgrelay_monitor_cpu_seconds_total") / window;
  std::cout << "probe cost over " << window << " s with interval_ms = 200: monitor CPU "
            << cpu * 100 << " % of one core\n";
  EXPECT_GT(cpu, 0.0);
  EXPECT_LT(cpu, 0.05);
  for (const char* name : {"node1", "node2", "node3"}) {
    const double rate = delta("pgrelay_backend_probes_total", {{"backend", name}}) / window;
    const double failures =
        delta("pgrelay_backend_probe_failures_total", {{"backend", name}}) / window;
    std::cout << "  " << name << ": " << rate << " probes/s, " << failures << " failures/s\n";
    EXPECT_GE(rate, 4.0) << name;
    EXPECT_LE(rate, 5.5) << name;
    EXPECT_EQ(failures, 0.0) << name;
  }
}

}  // namespace
}  // namespace pgrelay::test

namespace pgrelay::test {
namespace {

TEST(Monitor, FrozenStandbyIsMarkedDownAndReturnsWhenItThaws) {
  auto& cluster = Cluster::get();
  Proxy proxy(kMonitor);
  TopologyView t;
  ASSERT_TRUE(wait_settled(proxy, {"node2", "node3"}, &t)) << t.problem << t.raw;

  // Freeze node3 whole (postmaster and every backend): TCP stays up, nothing answers, so only
  // the monitor's own deadlines can notice.
  const std::string postmaster = run("head -n 1 " + cluster.dir() + "/node3/postmaster.pid").output;
  const std::string pids =
      postmaster.substr(0, postmaster.find('\n')) + " " +
      run("pgrep -P " + postmaster.substr(0, postmaster.find('\n')) + " | tr '\\n' ' '").output;
  Cleanup thaw{[&] { run("kill -CONT " + pids); }};
  ASSERT_EQ(run("kill -STOP " + pids).status, 0) << pids;
  const auto frozen_at = Clock::now();
  EXPECT_TRUE(wait_topology(
      proxy, 15s,
      [](const TopologyView& v) {
        const auto* n = v.node("node3");
        return n != nullptr && n->role == "down" && !n->eligible;
      },
      &t))
      << t.raw << proxy.log();
  std::cout
      << "frozen standby marked down after "
      << std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - frozen_at).count()
      << " ms\n";
  // The other standby is unaffected.
  const auto* n2 = t.node("node2");
  ASSERT_NE(n2, nullptr);
  EXPECT_TRUE(n2->eligible) << t.raw;

  run("kill -CONT " + pids);
  EXPECT_TRUE(wait_settled(proxy, {"node2", "node3"}, &t, 20s)) << t.problem << t.raw;
}

}  // namespace
}  // namespace pgrelay::test
