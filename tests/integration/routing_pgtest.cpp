// Read splitting against a real primary and two hot standbys, through pgrelay's transaction
// pooling: where reads and writes land (`SHOW port` names the node that answered), lagging
// standbys, read-your-writes by LSN (also carried to another connection), and pgbench's
// TPC-B and select-only workloads mixed through one port.
#include <gtest/gtest.h>

#include <atomic>
#include <boost/json.hpp>
#include <chrono>
#include <cstdint>
#include <fstream>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "cluster_fixture.hpp"

namespace pgrelay::test {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

std::string routing_toml(const std::string& routing_keys = {}) {
  const std::string userlist = Cluster::get().dir() + "/userlist-routing.txt";
  std::ofstream(userlist) << "\"app\" \"app\"\n";
  return "[auth]\nmethod = \"trust\"\nfile = \"" + userlist +
         "\"\n[pool]\nmode = \"transaction\"\nmax_size = 8\n[monitor]\nuser = \"pgrelay\"\n"
         "password = \"pgrelay\"\ninterval_ms = 100\n"
         "[routing]\n" +
         routing_keys + "\n";
}

std::string port_of(const std::string& node) {
  return std::to_string(Cluster::get().node(node).port);
}

/// Per node name, whether /topology shows it eligible for reads (empty map on failure).
std::map<std::string, bool> eligibility(const Proxy& proxy) {
  std::map<std::string, bool> out;
  const auto response = http_get(proxy.http_port(), "/topology");
  if (response.status != 200) return out;
  boost::system::error_code ec;
  const auto json = boost::json::parse(response.body, ec);
  if (ec || !json.is_object()) return out;
  for (const auto& node : json.at("nodes").as_array()) {
    out[std::string(node.at("name").as_string())] = node.at("eligible").as_bool();
  }
  return out;
}

bool wait_eligible(const Proxy& proxy, const std::map<std::string, bool>& want,
                   std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  while (Clock::now() < deadline) {
    const auto now = eligibility(proxy);
    bool all = true;
    for (const auto& [name, eligible] : want) {
      const auto it = now.find(name);
      all = all && it != now.end() && it->second == eligible;
    }
    if (all) return true;
    std::this_thread::sleep_for(50ms);
  }
  return false;
}

/// How many of `count` runs of `work` answered from each port.
// Lag limits so large that standbys with replay paused stay eligible: then only
// read-your-writes keeps a client from reading behind its own writes.
const std::string kHugeLagLimits = "max_lag_bytes = 1099511627776\nmax_lag_ms = 86400000";

// Once `proxy` sees both standbys eligible, runs `before_pause` (if any) and pauses replay on
// both; `resume` resumes it when it goes. Call with ASSERT_NO_FATAL_FAILURE.
void pause_replay_on_both_standbys(const Proxy& proxy, Cleanup& resume,
                                   const std::function<void()>& before_pause = {}) {
  auto& cluster = Cluster::get();
  ASSERT_TRUE(wait_eligible(proxy, {{"node2", true}, {"node3", true}}, 15s)) << proxy.log();
  resume.cleanup = [&cluster] {
    cluster.sql("node2", "SELECT pg_wal_replay_resume()");
    cluster.sql("node3", "SELECT pg_wal_replay_resume()");
  };
  if (before_pause) before_pause();
  ASSERT_EQ(cluster.sql("node2", "SELECT pg_wal_replay_pause()"), "");
  ASSERT_EQ(cluster.sql("node3", "SELECT pg_wal_replay_pause()"), "");
}

std::map<std::string, int> ports_of(int count, const std::function<std::string()>& work) {
  std::map<std::string, int> seen;
  for (int i = 0; i < count; ++i) ++seen[work()];
  return seen;
}

std::string describe(const std::map<std::string, int>& seen) {
  std::string out;
  for (const auto& [port, n] : seen) out += port + ": " + std::to_string(n) + "  ";
  return out;
}

/// Whether `conn`'s autocommit reads reach a standby within 10 s (read-your-writes lets them
/// once replay has passed the client's watermark).
bool reads_reach_a_standby(PgConn& conn) {
  for (int i = 0; i < 100; ++i) {
    const auto port = conn.value("SHOW port");
    if (port == port_of("node2") || port == port_of("node3")) return true;
    std::this_thread::sleep_for(100ms);
  }
  return false;
}

/// Prometheus sample value of pgrelay_route_decisions_total{reason="..."} (-1 when missing).
long route_decisions(const Proxy& proxy, const std::string& reason) {
  const auto response = http_get(proxy.http_port(), "/metrics");
  const std::string key = "pgrelay_route_decisions_total{reason=\"" + reason + "\"} ";
  const auto at = response.body.find(key);
  if (at == std::string::npos) return -1;
  return std::stol(response.body.substr(at + key.size()));
}

class RoutingTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto& cluster = Cluster::get();
    const auto made =
        cluster.sql("node1",
                    "DROP TABLE IF EXISTS ryw; CREATE TABLE ryw (v bigint);"
                    "DROP TABLE IF EXISTS filler; CREATE TABLE filler (pad text);"
                    "DROP SEQUENCE IF EXISTS routing_seq; CREATE SEQUENCE routing_seq;"
                    "GRANT ALL ON ryw, filler, routing_seq TO app;");
    ASSERT_EQ(made.find("ERROR"), std::string::npos) << made;
  }
};

/// Read-your-writes with each way of reading the commit LSN ([routing] watermark).
class WatermarkTest : public RoutingTest, public ::testing::WithParamInterface<const char*> {
 protected:
  static std::string routing_keys() {
    return std::string(kHugeLagLimits) + "\nwatermark = \"" + GetParam() + "\"";
  }
};

INSTANTIATE_TEST_SUITE_P(Watermark, WatermarkTest, ::testing::Values("auto", "lazy", "eager"));

/// pgrelay_watermark_queries_total (-1 when missing).
long watermark_queries(const Proxy& proxy) {
  const auto response = http_get(proxy.http_port(), "/metrics");
  const std::string key = "\npgrelay_watermark_queries_total ";
  const auto at = response.body.find(key);
  if (at == std::string::npos) return -1;
  return std::stol(response.body.substr(at + key.size()));
}

TEST_F(RoutingTest, ReadsGoToBothStandbysAndWritesToThePrimary) {
  Proxy proxy(routing_toml());
  ASSERT_TRUE(wait_eligible(proxy, {{"node2", true}, {"node3", true}}, 15s)) << proxy.log();
  PgConn conn(proxy.conninfo());
  ASSERT_TRUE(conn.ok()) << conn.error();

  const auto autocommit = ports_of(200, [&] { return conn.value("SHOW port"); });
  const int on_standbys = autocommit.count(port_of("node2")) ? autocommit.at(port_of("node2")) : 0;
  const int on_node3 = autocommit.count(port_of("node3")) ? autocommit.at(port_of("node3")) : 0;
  EXPECT_GE(on_standbys + on_node3, 180) << describe(autocommit);
  EXPECT_GT(on_standbys, 0) << "node2 got no reads: " << describe(autocommit);
  EXPECT_GT(on_node3, 0) << "node3 got no reads: " << describe(autocommit);

  const auto read_only = ports_of(200, [&] {
    if (conn.value("BEGIN READ ONLY") != "") return std::string("BEGIN failed");
    const auto port = conn.value("SHOW port");
    if (conn.value("COMMIT") != "") return std::string("COMMIT failed");
    return port;
  });
  const int ro2 = read_only.count(port_of("node2")) ? read_only.at(port_of("node2")) : 0;
  const int ro3 = read_only.count(port_of("node3")) ? read_only.at(port_of("node3")) : 0;
  EXPECT_GE(ro2 + ro3, 180) << describe(read_only);
  EXPECT_GT(ro2, 0) << describe(read_only);
  EXPECT_GT(ro3, 0) << describe(read_only);

  // BEGIN alone, then SET TRANSACTION READ ONLY (as psycopg2 and others send them): a read.
  const auto deferred = ports_of(40, [&] {
    if (conn.value("BEGIN") != "") return std::string("BEGIN failed");
    if (conn.value("SET TRANSACTION READ ONLY") != "") return std::string("SET failed");
    const auto port = conn.value("SHOW port");
    const auto read_only = conn.value("SHOW transaction_read_only");
    if (conn.value("COMMIT") != "") return std::string("COMMIT failed");
    return read_only == "on" ? port : "not read only";
  });
  EXPECT_EQ(deferred.count(port_of("node1")), 0U) << describe(deferred);
  EXPECT_EQ((deferred.count(port_of("node2")) ? deferred.at(port_of("node2")) : 0) +
                (deferred.count(port_of("node3")) ? deferred.at(port_of("node3")) : 0),
            40)
      << describe(deferred);
  // A failing statement after a deferred BEGIN fails the transaction as PostgreSQL would.
  EXPECT_EQ(conn.value("BEGIN"), "");
  EXPECT_EQ(conn.value("SELECT 1/0").substr(0, 12), "ERROR: 22012");
  EXPECT_EQ(conn.value("SELECT 1").substr(0, 12), "ERROR: 25P02");
  EXPECT_EQ(conn.value("ROLLBACK"), "");
  EXPECT_EQ(PQtransactionStatus(conn.conn), PQTRANS_IDLE);

  // Read-write transactions, writes and unproven reads stay on the primary.
  const auto primary = port_of("node1");
  const auto read_write = ports_of(50, [&] {
    if (conn.value("BEGIN") != "") return std::string("BEGIN failed");
    const auto port = conn.value("SHOW port");
    conn.value("COMMIT");
    return port;
  });
  EXPECT_EQ(read_write, (std::map<std::string, int>{{primary, 50}})) << describe(read_write);
  EXPECT_EQ(conn.value("SELECT current_setting('port') FROM (SELECT nextval('routing_seq')) s"),
            primary);
  EXPECT_EQ(conn.value("/* pgrelay:primary */ SHOW port"), primary);
  {
    // On a connection with nothing outstanding (the one above may still be attached to the
    // primary for the commit-LSN query behind the nextval, and then nothing is routed).
    PgConn fresh(proxy.conninfo());
    EXPECT_EQ(fresh.value("/* pgrelay:primary */ SHOW port"), primary);
  }
  EXPECT_EQ(conn.value("WITH x AS (INSERT INTO ryw VALUES (0) RETURNING v) "
                       "SELECT current_setting('port') FROM x"),
            primary);
  EXPECT_EQ(conn.value("SELECT current_setting('port') FROM ryw LIMIT 1 FOR UPDATE"), primary);

  EXPECT_GE(route_decisions(proxy, "read:standby"), 360);
  // Not 50: a transaction that starts while the connection is still attached for the previous
  // one's commit-LSN query rides on it (to the same primary) without a routing decision; on a
  // slow machine (sanitizers) nearly all do. The ports above show where they ran.
  EXPECT_GE(route_decisions(proxy, "write"), 1);
  EXPECT_GE(route_decisions(proxy, "write:hint"), 1);
}

TEST_F(RoutingTest, LaggingStandbyGetsNoReadsUntilItCatchesUp) {
  auto& cluster = Cluster::get();
  Proxy proxy(routing_toml("max_lag_bytes = 262144\nmax_lag_ms = 86400000"));
  ASSERT_TRUE(wait_eligible(proxy, {{"node2", true}, {"node3", true}}, 15s)) << proxy.log();
  Cleanup resume{[&] { cluster.sql("node2", "SELECT pg_wal_replay_resume()"); }};
  ASSERT_EQ(cluster.sql("node2", "SELECT pg_wal_replay_pause()"), "");
  // About 1 MB of WAL that node2 does not replay.
  const auto filled = cluster.sql(
      "node1", "INSERT INTO filler SELECT repeat('x', 1000) FROM generate_series(1, 1000)");
  ASSERT_EQ(filled.find("ERROR"), std::string::npos) << filled;
  ASSERT_TRUE(wait_eligible(proxy, {{"node2", false}, {"node3", true}}, 10s))
      << "node2 should be past max_lag_bytes";

  PgConn conn(proxy.conninfo());
  ASSERT_TRUE(conn.ok()) << conn.error();
  const auto paused = ports_of(100, [&] { return conn.value("SHOW port"); });
  EXPECT_EQ(paused.count(port_of("node2")), 0U) << describe(paused);
  EXPECT_GE(paused.count(port_of("node3")) ? paused.at(port_of("node3")) : 0, 90)
      << describe(paused);

  ASSERT_EQ(cluster.sql("node2", "SELECT pg_wal_replay_resume()"), "");
  ASSERT_TRUE(wait_eligible(proxy, {{"node2", true}, {"node3", true}}, 15s))
      << "node2 should be eligible again after resuming replay";
  const auto resumed = ports_of(100, [&] { return conn.value("SHOW port"); });
  EXPECT_GT(resumed.count(port_of("node2")) ? resumed.at(port_of("node2")) : 0, 0)
      << describe(resumed);
}

TEST_P(WatermarkTest, ReadYourWritesHoldsWithReplayPausedOnBothStandbys) {
  auto& cluster = Cluster::get();
  Proxy proxy(routing_toml(routing_keys()));
  Cleanup resume;
  ASSERT_NO_FATAL_FAILURE(pause_replay_on_both_standbys(proxy, resume, [&] {
    ASSERT_EQ(cluster.sql("node1", "TRUNCATE ryw"), "TRUNCATE TABLE");
    std::this_thread::sleep_for(500ms);  // the standbys replay the TRUNCATE before they stop
  }));

  PgConn writer(proxy.conninfo());
  ASSERT_TRUE(writer.ok()) << writer.error();
  int stale = 0;
  for (int i = 1; i <= 1000; ++i) {
    ASSERT_EQ(writer.value("INSERT INTO ryw VALUES (" + std::to_string(i) + ")"), "");
    if (writer.value("SELECT max(v) FROM ryw") != std::to_string(i)) ++stale;
  }
  EXPECT_EQ(stale, 0) << "reads older than the client's own writes";

  // Transactions sent a statement at a time (psql, most drivers), by a client with no
  // watermark yet: pgrelay does not classify the statements inside for read-your-writes, but
  // the COMMIT or END alone still gets the commit LSN read behind it.
  PgConn blocks(proxy.conninfo());
  ASSERT_TRUE(blocks.ok()) << blocks.error();
  for (int i = 1; i <= 20; ++i) {
    const std::string v = std::to_string(1000 + i);
    ASSERT_EQ(blocks.value("BEGIN"), "");
    ASSERT_EQ(blocks.value("INSERT INTO ryw VALUES (" + v + ")"), "");
    ASSERT_EQ(blocks.value("UPDATE ryw SET v = v WHERE v = " + v), "");
    ASSERT_EQ(blocks.value(i % 2 == 0 ? "COMMIT" : "end"), "");
    EXPECT_EQ(blocks.value("SELECT max(v) FROM ryw"), v) << "read older than its own transaction";
  }

  // A client that wrote nothing reads from the (paused) standbys: the test can see staleness.
  PgConn other(proxy.conninfo());
  ASSERT_TRUE(other.ok()) << other.error();
  const auto from_standby = other.value("SELECT coalesce(max(v), 0) FROM ryw");
  EXPECT_NE(from_standby, "1020") << "reads did not go to the paused standbys";

  // The watermark travels: the writer's pgrelay.commit_lsn, given to another connection.
  const char* told = PQparameterStatus(writer.conn, "pgrelay.commit_lsn");
  ASSERT_NE(told, nullptr) << "no pgrelay.commit_lsn ParameterStatus after 1000 writes";
  const std::string before_write = told;
  ASSERT_EQ(writer.value("INSERT INTO ryw VALUES (5000)"), "");
  // The new watermark is not sent on its own (no write, no client wake-up of its own): it comes
  // ahead of the client's next answer.
  std::this_thread::sleep_for(300ms);
  ASSERT_EQ(PQconsumeInput(writer.conn), 1);
  EXPECT_EQ(PQparameterStatus(writer.conn, "pgrelay.commit_lsn"), before_write);
  ASSERT_EQ(writer.value("SELECT 1"), "1");
  const char* lsn = PQparameterStatus(writer.conn, "pgrelay.commit_lsn");
  ASSERT_NE(lsn, nullptr) << "no pgrelay.commit_lsn ParameterStatus";
  EXPECT_NE(lsn, before_write) << "the write's watermark did not come with the next answer";
  // The 300 ms idle parked the writer ([pool] park_after_ms): its watermark went with it.
  const auto parks = http_get(proxy.http_port(), "/metrics").body;
  EXPECT_EQ(parks.find("pgrelay_client_parks_total 0\n"), std::string::npos) << "never parked";
  EXPECT_EQ(writer.value("SELECT max(v) FROM ryw"), "5000") << "stale read after parking";
  PgConn carried(proxy.conninfo());
  ASSERT_TRUE(carried.ok()) << carried.error();
  EXPECT_EQ(carried.value(std::string("SET pgrelay.min_lsn = '") + lsn + "'"), "");
  for (int i = 0; i < 50; ++i) {
    ASSERT_EQ(carried.value("SELECT max(v) FROM ryw"), "5000") << "carried watermark " << lsn;
  }
  PgConn from_start(proxy.conninfo(std::string("options='-c pgrelay.min_lsn=") + lsn + "'"));
  ASSERT_TRUE(from_start.ok()) << from_start.error();
  EXPECT_EQ(from_start.value("SELECT max(v) FROM ryw"), "5000");

  // Once replay resumes and passes the watermark, the reads go back to the standbys.
  ASSERT_EQ(cluster.sql("node2", "SELECT pg_wal_replay_resume()"), "");
  ASSERT_EQ(cluster.sql("node3", "SELECT pg_wal_replay_resume()"), "");
  EXPECT_TRUE(reads_reach_a_standby(carried)) << "reads never returned to the standbys";
  // Reads after a write were routed with the watermark, except those that ran on the primary
  // connection still attached while the commit LSN was read (how many depends on timing).
  EXPECT_GT(route_decisions(proxy, "read:primary:ryw-wait"), 0);
}

/// "X/Y" (hexadecimal halves) as a number; 0 when malformed.
std::uint64_t lsn_value(const std::string& text) {
  const auto slash = text.find('/');
  if (slash == std::string::npos) return 0;
  try {
    return (std::stoull(text.substr(0, slash), nullptr, 16) << 32) |
           std::stoull(text.substr(slash + 1), nullptr, 16);
  } catch (const std::exception&) {
    return 0;
  }
}

/// Reads one pipelined query's results up to its terminating null: the first value, or
/// "ERROR: ..." (the pipeline's Sync results are read by the caller).
std::string pipelined_value(PGconn* conn) {
  std::string out;
  while (PGresult* res = PQgetResult(conn)) {
    const auto status = PQresultStatus(res);
    if (status == PGRES_TUPLES_OK && PQntuples(res) > 0) {
      out = PQgetvalue(res, 0, 0);
    } else if (status == PGRES_FATAL_ERROR) {
      out = std::string("ERROR: ") + PQresultErrorMessage(res);
    }
    PQclear(res);
  }
  return out;
}

/// Queues `sql` (no parameters) on a connection in pipeline mode. Call with
/// ASSERT_NO_FATAL_FAILURE.
void send_pipelined(PGconn* conn, const char* sql) {
  ASSERT_EQ(PQsendQueryParams(conn, sql, 0, nullptr, nullptr, nullptr, nullptr, 0), 1);
}

/// The read-your-writes watermark pgrelay reports with the client's next answer (0: none).
std::uint64_t watermark_with_next_answer(PgConn& conn) {
  EXPECT_EQ(conn.value("SELECT 1"), "1");
  const char* told = PQparameterStatus(conn.conn, "pgrelay.commit_lsn");
  return told == nullptr ? 0 : lsn_value(told);
}

/// The next result must be a pipeline's Sync. Call with ASSERT_NO_FATAL_FAILURE.
void expect_pipeline_sync(PGconn* conn) {
  PGresult* sync = PQgetResult(conn);
  ASSERT_NE(sync, nullptr);
  EXPECT_EQ(PQresultStatus(sync), PGRES_PIPELINE_SYNC);
  PQclear(sync);
}

TEST_P(WatermarkTest, ATransactionPipelinedBehindAReadOnThePrimaryGetsItsCommitLsnRead) {
  Proxy proxy(routing_toml(routing_keys()));
  Cleanup resume;
  ASSERT_NO_FATAL_FAILURE(pause_replay_on_both_standbys(proxy, resume, [] {
    ASSERT_EQ(Cluster::get().sql("node1", "DELETE FROM ryw WHERE v IN (-1, -2)").rfind("DELETE", 0),
              0U);
  }));
  PgConn conn(proxy.conninfo());
  ASSERT_TRUE(conn.ok()) << conn.error();
  // A write the paused standbys do not have: the client's next read goes to the primary
  // (read-your-writes), on a connection routed for a read.
  ASSERT_EQ(conn.value("INSERT INTO ryw VALUES (-1)"), "");
  std::this_thread::sleep_for(100ms);  // the connection goes back (eager: once the LSN is read)
  ASSERT_EQ(PQenterPipelineMode(conn.conn), 1);
  ASSERT_EQ(PQsendQueryParams(conn.conn, "SELECT count(*) FROM generate_series(1, 3000000)", 0,
                              nullptr, nullptr, nullptr, nullptr, 0),
            1);
  ASSERT_EQ(PQpipelineSync(conn.conn), 1);
  // While that read runs, a transaction follows it on the same connection.
  std::this_thread::sleep_for(50ms);
  for (const char* sql : {"BEGIN", "INSERT INTO ryw VALUES (-2)",
                          "SELECT pg_catalog.pg_current_wal_insert_lsn()::text", "COMMIT"}) {
    ASSERT_NO_FATAL_FAILURE(send_pipelined(conn.conn, sql));
  }
  ASSERT_EQ(PQpipelineSync(conn.conn), 1);
  EXPECT_EQ(pipelined_value(conn.conn), "3000000");
  ASSERT_NO_FATAL_FAILURE(expect_pipeline_sync(conn.conn));
  std::string inside;
  for (int i = 0; i < 4; ++i) {
    const auto value = pipelined_value(conn.conn);
    EXPECT_EQ(value.rfind("ERROR", 0), std::string::npos) << value;
    if (i == 2) inside = value;
  }
  ASSERT_NO_FATAL_FAILURE(expect_pipeline_sync(conn.conn));
  ASSERT_EQ(PQexitPipelineMode(conn.conn), 1);
  // The watermark comes with the next answer: it covers the transaction's commit.
  ASSERT_NE(lsn_value(inside), 0U) << inside;
  EXPECT_GE(watermark_with_next_answer(conn), lsn_value(inside))
      << "the watermark is before the transaction's own WAL at " << inside;
  EXPECT_EQ(conn.value("SELECT count(*) FROM ryw WHERE v = -2"), "1");
}

TEST_P(WatermarkTest, AnAutocommitWritePipelinedBehindACommitGetsItsCommitLsnRead) {
  Proxy proxy(routing_toml(routing_keys()));
  PgConn conn(proxy.conninfo());
  ASSERT_TRUE(conn.ok()) << conn.error();
  ASSERT_EQ(conn.value("BEGIN"), "");
  ASSERT_EQ(conn.value("INSERT INTO ryw VALUES (-6)"), "");  // in a transaction on the primary
  ASSERT_EQ(PQenterPipelineMode(conn.conn), 1);
  // The transaction's end, slow enough that the next write arrives before its answer, while
  // the client's last ReadyForQuery still says "in a transaction".
  for (const char* sql : {"SELECT pg_catalog.pg_sleep(0.3)", "COMMIT"}) {
    ASSERT_NO_FATAL_FAILURE(send_pipelined(conn.conn, sql));
    ASSERT_EQ(PQpipelineSync(conn.conn), 1);
  }
  ASSERT_EQ(PQflush(conn.conn), 0);
  std::this_thread::sleep_for(100ms);
  ASSERT_EQ(PQsendQueryParams(conn.conn,
                              "INSERT INTO ryw VALUES (-5) "
                              "RETURNING pg_catalog.pg_current_wal_insert_lsn()::text",
                              0, nullptr, nullptr, nullptr, nullptr, 0),
            1);
  ASSERT_EQ(PQpipelineSync(conn.conn), 1);
  std::string inserted;
  for (int i = 0; i < 3; ++i) {
    const auto value = pipelined_value(conn.conn);
    EXPECT_EQ(value.rfind("ERROR", 0), std::string::npos) << value;
    if (i == 2) inserted = value;
    ASSERT_NO_FATAL_FAILURE(expect_pipeline_sync(conn.conn));
  }
  ASSERT_EQ(PQexitPipelineMode(conn.conn), 1);
  // The watermark comes with the next answer: it covers the autocommit write's commit.
  ASSERT_NE(lsn_value(inserted), 0U) << inserted;
  EXPECT_GT(watermark_with_next_answer(conn), lsn_value(inserted))
      << "the watermark is before the write's own WAL at " << inserted;
}

TEST_F(RoutingTest, AnExtendedUnitAnsweredBeforeItsSyncKeepsItsConnection) {
  // One worker and one server connection: a second client can only run on the connection the
  // first one uses, and must wait until the first one's unit is closed by its Sync.
  std::string toml = routing_toml(kHugeLagLimits);
  toml.replace(toml.find("max_size = 8"), 12, "max_size = 1");
  Proxy proxy("workers = 1\n" + toml);
  PgConn first(proxy.conninfo());
  ASSERT_TRUE(first.ok()) << first.error();
  PgConn second(proxy.conninfo());
  ASSERT_TRUE(second.ok()) << second.error();
  ASSERT_EQ(PQenterPipelineMode(first.conn), 1);
  // As asyncpg prepares: Parse, Describe and Flush, answered before the Bind is sent.
  ASSERT_EQ(PQsendPrepare(first.conn, "", "SELECT $1::int + 1", 1, nullptr), 1);
  ASSERT_EQ(PQsendFlushRequest(first.conn), 1);
  ASSERT_EQ(PQflush(first.conn), 0);
  PGresult* prepared = PQgetResult(first.conn);
  ASSERT_NE(prepared, nullptr);
  EXPECT_EQ(PQresultStatus(prepared), PGRES_COMMAND_OK) << PQresultErrorMessage(prepared);
  PQclear(prepared);
  ASSERT_EQ(PQgetResult(first.conn), nullptr);
  // Another client's simple query (it replaces the unnamed statement where it runs).
  ASSERT_EQ(PQsendQuery(second.conn, "SELECT pg_catalog.random() >= 0"), 1);
  std::this_thread::sleep_for(100ms);
  const char* value = "41";
  ASSERT_EQ(PQsendQueryPrepared(first.conn, "", 1, &value, nullptr, nullptr, 0), 1);
  ASSERT_EQ(PQpipelineSync(first.conn), 1);
  EXPECT_EQ(pipelined_value(first.conn), "42");
  ASSERT_NO_FATAL_FAILURE(expect_pipeline_sync(first.conn));
  ASSERT_EQ(PQexitPipelineMode(first.conn), 1);
  EXPECT_EQ(pipelined_value(second.conn), "t");
}

TEST_F(RoutingTest, AReadAndAWriteInOneImplicitTransactionRunTogether) {
  Proxy proxy(routing_toml(kHugeLagLimits));
  ASSERT_TRUE(wait_eligible(proxy, {{"node2", true}, {"node3", true}}, 15s)) << proxy.log();
  PgConn conn(proxy.conninfo());
  ASSERT_TRUE(conn.ok()) << conn.error();
  const auto send = [&](const char* sql) {
    ASSERT_NO_FATAL_FAILURE(send_pipelined(conn.conn, sql));
  };
  const auto expect_sync = [&] { ASSERT_NO_FATAL_FAILURE(expect_pipeline_sync(conn.conn)); };
  const char* read = "SELECT pg_catalog.current_setting('port')";
  ASSERT_EQ(PQenterPipelineMode(conn.conn), 1);

  // A read sent on its own, then a write before the Sync: one implicit transaction.
  ASSERT_NO_FATAL_FAILURE(send(read));
  ASSERT_EQ(PQflush(conn.conn), 0);
  std::this_thread::sleep_for(50ms);
  ASSERT_NO_FATAL_FAILURE(send("INSERT INTO ryw VALUES (-7)"));
  ASSERT_EQ(PQpipelineSync(conn.conn), 1);
  EXPECT_EQ(pipelined_value(conn.conn), port_of("node1"));
  const auto first_insert = pipelined_value(conn.conn);
  EXPECT_EQ(first_insert.rfind("ERROR", 0), std::string::npos) << first_insert;
  ASSERT_NO_FATAL_FAILURE(expect_sync());

  // The same with the read's answer asked for (Flush) and read before the write is sent.
  ASSERT_NO_FATAL_FAILURE(send(read));
  ASSERT_EQ(PQsendFlushRequest(conn.conn), 1);
  ASSERT_EQ(PQflush(conn.conn), 0);
  EXPECT_EQ(pipelined_value(conn.conn), port_of("node1"));
  ASSERT_NO_FATAL_FAILURE(send("INSERT INTO ryw VALUES (-8)"));
  ASSERT_EQ(PQpipelineSync(conn.conn), 1);
  const auto second_insert = pipelined_value(conn.conn);
  EXPECT_EQ(second_insert.rfind("ERROR", 0), std::string::npos) << second_insert;
  ASSERT_NO_FATAL_FAILURE(expect_sync());

  // A read closed by its Sync still goes to a standby, once one has replayed the inserts.
  std::string port;
  for (int i = 0; i < 50 && port != port_of("node2") && port != port_of("node3"); ++i) {
    std::this_thread::sleep_for(100ms);
    ASSERT_NO_FATAL_FAILURE(send(read));
    ASSERT_EQ(PQpipelineSync(conn.conn), 1);
    port = pipelined_value(conn.conn);
    ASSERT_NO_FATAL_FAILURE(expect_sync());
  }
  EXPECT_TRUE(port == port_of("node2") || port == port_of("node3")) << "the read ran on " << port;
  ASSERT_EQ(PQexitPipelineMode(conn.conn), 1);
  EXPECT_EQ(conn.value("SELECT count(*) FROM ryw WHERE v IN (-7, -8)"), "2");
}

TEST_F(RoutingTest, AWritePipelinedBehindAStandbyReadGoesToThePrimary) {
  Proxy proxy(routing_toml(kHugeLagLimits));
  ASSERT_TRUE(wait_eligible(proxy, {{"node2", true}, {"node3", true}}, 15s)) << proxy.log();
  PgConn conn(proxy.conninfo());
  ASSERT_TRUE(conn.ok()) << conn.error();
  ASSERT_EQ(PQenterPipelineMode(conn.conn), 1);
  // A read long enough that what follows arrives while a standby still runs it.
  ASSERT_EQ(PQsendQueryParams(conn.conn,
                              "SELECT pg_catalog.current_setting('port') "
                              "FROM generate_series(1, 3000000) OFFSET 2999999",
                              0, nullptr, nullptr, nullptr, nullptr, 0),
            1);
  ASSERT_EQ(PQpipelineSync(conn.conn), 1);
  ASSERT_EQ(PQflush(conn.conn), 0);
  std::this_thread::sleep_for(50ms);
  // An autocommit write, then a transaction, pipelined behind it: neither may run there.
  ASSERT_NO_FATAL_FAILURE(send_pipelined(conn.conn, "INSERT INTO ryw VALUES (-3)"));
  ASSERT_EQ(PQpipelineSync(conn.conn), 1);
  for (const char* sql : {"BEGIN", "INSERT INTO ryw VALUES (-4)", "COMMIT"}) {
    ASSERT_NO_FATAL_FAILURE(send_pipelined(conn.conn, sql));
  }
  ASSERT_EQ(PQpipelineSync(conn.conn), 1);
  const auto port = pipelined_value(conn.conn);
  EXPECT_TRUE(port == port_of("node2") || port == port_of("node3")) << "the read ran on " << port;
  const auto expect_sync = [&] { ASSERT_NO_FATAL_FAILURE(expect_pipeline_sync(conn.conn)); };
  ASSERT_NO_FATAL_FAILURE(expect_sync());
  const auto insert = pipelined_value(conn.conn);
  EXPECT_EQ(insert.rfind("ERROR", 0), std::string::npos) << insert;
  ASSERT_NO_FATAL_FAILURE(expect_sync());
  for (int i = 0; i < 3; ++i) {
    const auto value = pipelined_value(conn.conn);
    EXPECT_EQ(value.rfind("ERROR", 0), std::string::npos) << value;
  }
  ASSERT_NO_FATAL_FAILURE(expect_sync());
  ASSERT_EQ(PQexitPipelineMode(conn.conn), 1);
  EXPECT_EQ(conn.value("SELECT count(*) FROM ryw WHERE v IN (-3, -4)"), "2");
}

TEST_P(WatermarkTest, CopyFromStdinRunsAndTheClientReadsItsRowsBack) {
  Proxy proxy(routing_toml(routing_keys()));
  Cleanup resume;
  ASSERT_NO_FATAL_FAILURE(pause_replay_on_both_standbys(proxy, resume, [] {
    Cluster::get().sql(
        "node1",
        "DROP TABLE IF EXISTS copied; CREATE TABLE copied (n int); GRANT ALL ON copied TO app");
  }));
  PgConn conn(proxy.conninfo());
  ASSERT_TRUE(conn.ok()) << conn.error();
  for (int round = 0; round < 2; ++round) {
    // As psql's \copy: the COPY statement, then the rows in several writes, then CopyDone.
    PGresult* started = PQexec(conn.conn, "COPY copied FROM STDIN");
    ASSERT_EQ(PQresultStatus(started), PGRES_COPY_IN) << PQresultErrorMessage(started);
    PQclear(started);
    for (int chunk = 0; chunk < 10; ++chunk) {
      std::string rows;
      for (int i = 0; i < 100; ++i) rows += std::to_string(chunk * 100 + i) + "\n";
      ASSERT_EQ(PQputCopyData(conn.conn, rows.data(), static_cast<int>(rows.size())), 1);
      ASSERT_EQ(PQflush(conn.conn), 0);
      std::this_thread::sleep_for(5ms);
    }
    ASSERT_EQ(PQputCopyEnd(conn.conn, nullptr), 1);
    PGresult* done = PQgetResult(conn.conn);
    EXPECT_EQ(PQresultStatus(done), PGRES_COMMAND_OK) << PQresultErrorMessage(done);
    EXPECT_STREQ(PQcmdStatus(done), "COPY 1000");
    PQclear(done);
    PQclear(PQgetResult(conn.conn));
    // Replay is paused on both standbys: only the primary has the rows, and the client's read
    // must go there.
    EXPECT_EQ(conn.value("SELECT count(*) FROM copied"), std::to_string(1000 * (round + 1)));
  }
}

TEST_F(RoutingTest, ALazyWatermarkIsReadInFrontOfTheNextReadOnly) {
  auto& cluster = Cluster::get();
  Proxy proxy(routing_toml(kHugeLagLimits + "\nwatermark = \"lazy\""));
  Cleanup resume;
  ASSERT_NO_FATAL_FAILURE(pause_replay_on_both_standbys(proxy, resume));
  PgConn conn(proxy.conninfo());
  ASSERT_TRUE(conn.ok()) << conn.error();
  const long before = watermark_queries(proxy);
  ASSERT_GE(before, 0) << "no pgrelay_watermark_queries_total";

  // Writes alone, autocommit or in blocks, cost no watermark query.
  for (int i = 0; i < 20; ++i) ASSERT_EQ(conn.value("INSERT INTO ryw VALUES (-20)"), "");
  for (int i = 0; i < 5; ++i) {
    ASSERT_EQ(conn.value("BEGIN"), "");
    ASSERT_EQ(conn.value("INSERT INTO ryw VALUES (-20)"), "");
    ASSERT_EQ(conn.value("COMMIT"), "");
  }
  EXPECT_EQ(watermark_queries(proxy), before) << "a watermark was read behind a write";
  const auto written =
      lsn_value(cluster.sql("node1", "SELECT pg_catalog.pg_current_wal_insert_lsn()"));
  ASSERT_NE(written, 0U);

  // The next read runs on the primary (the paused standbys lack the writes) with the watermark
  // read in front of it: its own answer brings pgrelay.commit_lsn, at or past the writes.
  EXPECT_EQ(conn.value("SELECT count(*) FROM ryw WHERE v = -20"), "25");
  EXPECT_EQ(watermark_queries(proxy), before + 1);
  const char* told = PQparameterStatus(conn.conn, "pgrelay.commit_lsn");
  ASSERT_NE(told, nullptr) << "no pgrelay.commit_lsn with the read's answer";
  EXPECT_GE(lsn_value(told), written);
  // Known now: more reads need no query (they wait for the standbys on the primary).
  for (int i = 0; i < 5; ++i) EXPECT_EQ(conn.value("SELECT count(*) FROM ryw WHERE v = -20"), "25");
  EXPECT_EQ(watermark_queries(proxy), before + 1);

  // A read-only transaction after a write gets the watermark read in front of it too, and its
  // COMMIT is no write: the reads after it need no query of their own.
  ASSERT_EQ(conn.value("INSERT INTO ryw VALUES (-21)"), "");
  ASSERT_EQ(conn.value("BEGIN READ ONLY"), "");
  EXPECT_EQ(conn.value("SELECT count(*) FROM ryw WHERE v = -21"), "1");
  ASSERT_EQ(conn.value("COMMIT"), "");
  EXPECT_EQ(watermark_queries(proxy), before + 2);
  for (int i = 0; i < 5; ++i) EXPECT_EQ(conn.value("SELECT count(*) FROM ryw WHERE v = -21"), "1");
  EXPECT_EQ(watermark_queries(proxy), before + 2) << "the read-only COMMIT counted as a write";

  // Once replay passes the watermark, the client's reads go back to the standbys.
  resume.cleanup();
  resume.cleanup = nullptr;
  EXPECT_TRUE(reads_reach_a_standby(conn)) << "reads never returned to the standbys";
}

TEST_F(RoutingTest, AnAutoWatermarkTurnsEagerOnceTheClientReadsAfterAWrite) {
  Proxy proxy(routing_toml());  // watermark = "auto", the default
  PgConn writer(proxy.conninfo());
  ASSERT_TRUE(writer.ok()) << writer.error();
  const long before = watermark_queries(proxy);
  ASSERT_GE(before, 0) << "no pgrelay_watermark_queries_total";
  // A client that only writes (pgbench -N) costs no watermark query.
  for (int i = 0; i < 10; ++i) {
    ASSERT_EQ(writer.value("BEGIN"), "");
    ASSERT_EQ(writer.value("INSERT INTO ryw VALUES (-23)"), "");
    EXPECT_EQ(writer.value("SELECT count(*) > 0 FROM ryw WHERE v = -23"), "t");
    ASSERT_EQ(writer.value("END"), "");
  }
  EXPECT_EQ(watermark_queries(proxy), before);
  // Its first read after a write gets the watermark read in front of it; from then on every
  // write gets it read behind (so its reads can soon go to a standby again).
  EXPECT_EQ(writer.value("SELECT count(*) FROM ryw WHERE v = -23"), "10");
  EXPECT_EQ(watermark_queries(proxy), before + 1);
  for (int i = 0; i < 5; ++i) ASSERT_EQ(writer.value("INSERT INTO ryw VALUES (-23)"), "");
  EXPECT_EQ(watermark_queries(proxy), before + 6);
  // Another client is lazy until it reads after a write itself.
  PgConn other(proxy.conninfo());
  ASSERT_TRUE(other.ok()) << other.error();
  for (int i = 0; i < 5; ++i) ASSERT_EQ(other.value("INSERT INTO ryw VALUES (-24)"), "");
  EXPECT_EQ(watermark_queries(proxy), before + 6);
}

TEST_F(RoutingTest, AnEagerWatermarkIsReadBehindEveryWrite) {
  Proxy proxy(routing_toml("watermark = \"eager\""));
  PgConn conn(proxy.conninfo());
  ASSERT_TRUE(conn.ok()) << conn.error();
  const long before = watermark_queries(proxy);
  ASSERT_GE(before, 0) << "no pgrelay_watermark_queries_total";
  for (int i = 0; i < 9; ++i) ASSERT_EQ(conn.value("INSERT INTO ryw VALUES (-22)"), "");
  const auto inside = lsn_value(conn.value(
      "INSERT INTO ryw VALUES (-22) RETURNING pg_catalog.pg_current_wal_insert_lsn()::text"));
  ASSERT_NE(inside, 0U);
  EXPECT_EQ(watermark_queries(proxy), before + 10);
  // Told with the next answer, whatever it is (a write's too), and past the last write's WAL.
  ASSERT_EQ(conn.value("INSERT INTO ryw VALUES (-22)"), "");
  const char* told = PQparameterStatus(conn.conn, "pgrelay.commit_lsn");
  ASSERT_NE(told, nullptr) << "no pgrelay.commit_lsn after writes";
  EXPECT_GT(lsn_value(told), inside);
}

TEST_F(RoutingTest, DelayedStandbyServesNoReads) {
  auto& cluster = Cluster::get();
  Proxy proxy(routing_toml("max_lag_ms = 1000"));
  ASSERT_TRUE(wait_eligible(proxy, {{"node2", true}, {"node3", true}}, 15s)) << proxy.log();
  const std::string reset =
      "ALTER SYSTEM RESET recovery_min_apply_delay;\nSELECT pg_reload_conf();\n";
  Cleanup undo{[&] { cluster.sql("node3", reset); }};
  const auto set = cluster.sql(
      "node3", "ALTER SYSTEM SET recovery_min_apply_delay = '3s';\nSELECT pg_reload_conf();\n");
  ASSERT_EQ(set.find("ERROR"), std::string::npos) << set;

  // Commits keep coming, so node3 stays about 3 s behind in time.
  std::atomic<bool> stop{false};
  std::string write_error;
  std::thread writer([&] {
    PgConn primary("host=127.0.0.1 port=" + port_of("node1") +
                   " user=app password=app dbname=app sslmode=disable");
    while (!stop) {
      const auto result = primary.value("INSERT INTO filler VALUES ('delayed')");
      if (!result.empty() && write_error.empty()) write_error = result;
      std::this_thread::sleep_for(50ms);
    }
  });
  Cleanup join{[&] {
    stop = true;
    writer.join();
  }};
  ASSERT_TRUE(wait_eligible(proxy, {{"node2", true}, {"node3", false}}, 15s))
      << "node3 should be over max_lag_ms";
  PgConn conn(proxy.conninfo());
  ASSERT_TRUE(conn.ok()) << conn.error();
  const auto seen = ports_of(100, [&] { return conn.value("SHOW port"); });
  EXPECT_EQ(seen.count(port_of("node3")), 0U) << describe(seen);
  EXPECT_EQ(seen.count(port_of("node2")) ? seen.at(port_of("node2")) : 0, 100) << describe(seen);
  EXPECT_EQ(write_error, "");
}

TEST_F(RoutingTest, SessionModeKeepsOnePrimaryAndOneStandbyConnection) {
  const std::string userlist = Cluster::get().dir() + "/userlist-routing.txt";
  std::ofstream(userlist) << "\"app\" \"app\"\n";
  Proxy proxy("[auth]\nmethod = \"trust\"\nfile = \"" + userlist +
              "\"\n[pool]\nmode = \"session\"\nmax_size = 8\n[monitor]\nuser = \"pgrelay\"\n"
              "password = \"pgrelay\"\ninterval_ms = 100\n");
  ASSERT_TRUE(wait_eligible(proxy, {{"node2", true}, {"node3", true}}, 15s)) << proxy.log();
  PgConn conn(proxy.conninfo());
  ASSERT_TRUE(conn.ok()) << conn.error();
  // Session state and a prepared statement follow the client to both of its connections.
  ASSERT_EQ(conn.value("SET search_path = pg_catalog, public"), "");
  PGresult* prepared =
      PQprepare(conn.conn, "where_am_i", "SELECT current_setting('port')", 0, nullptr);
  ASSERT_EQ(PQresultStatus(prepared), PGRES_COMMAND_OK) << PQerrorMessage(conn.conn);
  PQclear(prepared);
  std::map<std::string, int> reads;
  std::set<std::string> standby_pids;
  for (int i = 0; i < 40; ++i) {
    ++reads[conn.value("SHOW port")];
    standby_pids.insert(conn.value("SELECT pg_backend_pid()"));
    EXPECT_EQ(conn.value("SHOW search_path"), "pg_catalog, public");
    PGresult* res = PQexecPrepared(conn.conn, "where_am_i", 0, nullptr, nullptr, nullptr, 0);
    ASSERT_EQ(PQresultStatus(res), PGRES_TUPLES_OK) << PQerrorMessage(conn.conn);
    EXPECT_NE(std::string(PQgetvalue(res, 0, 0)), port_of("node1"));
    PQclear(res);
  }
  EXPECT_EQ(reads.count(port_of("node1")), 0U) << describe(reads);
  EXPECT_EQ(reads.size(), 1U) << "one standby connection per session: " << describe(reads);
  EXPECT_EQ(standby_pids.size(), 1U) << "the session's standby connection changed";
  // Writes go to the session's primary connection, always the same one.
  std::set<std::string> primary_pids;
  for (int i = 0; i < 10; ++i) {
    primary_pids.insert(
        conn.value("SELECT pg_backend_pid() FROM (SELECT nextval('routing_seq')) s"));
  }
  EXPECT_EQ(primary_pids.size(), 1U);
  EXPECT_EQ(conn.value("SELECT current_setting('port') FROM (SELECT nextval('routing_seq')) s"),
            port_of("node1"));
}

TEST_F(RoutingTest, PgbenchTpcbAndSelectOnlyMixedThroughOnePort) {
  const auto& node1 = Cluster::get().node("node1");
  const auto init = run("PGPASSWORD=app pgbench -i -s 1 -q -h 127.0.0.1 -U app -p " +
                        std::to_string(node1.port) + " app");
  ASSERT_EQ(init.status, 0) << init.output;
  Proxy proxy(routing_toml());
  ASSERT_TRUE(wait_eligible(proxy, {{"node2", true}, {"node3", true}}, 15s)) << proxy.log();
  CommandResult tpcb;
  std::thread writer([&] { tpcb = run(proxy.env() + "pgbench -n -c 4 -j 2 -T 4 app"); });
  const auto reads = run(proxy.env() + "pgbench -n -S -c 4 -j 2 -T 4 app");
  writer.join();
  EXPECT_EQ(tpcb.status, 0) << tpcb.output;
  EXPECT_EQ(reads.status, 0) << reads.output;
  EXPECT_NE(tpcb.output.find("number of failed transactions: 0 "), std::string::npos)
      << tpcb.output;
  // TPC-B keeps the balances equal to the history's deltas.
  PgConn check(proxy.conninfo());
  ASSERT_TRUE(check.ok()) << check.error();
  const auto consistent = check.value(
      "/* pgrelay:primary */ SELECT (SELECT sum(abalance) FROM pgbench_accounts) = "
      "(SELECT coalesce(sum(delta), 0) FROM pgbench_history) AND "
      "(SELECT sum(bbalance) FROM pgbench_branches) = "
      "(SELECT coalesce(sum(delta), 0) FROM pgbench_history)");
  EXPECT_EQ(consistent, "t");
  EXPECT_GT(route_decisions(proxy, "read:standby"), 100);
  EXPECT_GT(route_decisions(proxy, "write"), 100);
}

}  // namespace
}  // namespace pgrelay::test
