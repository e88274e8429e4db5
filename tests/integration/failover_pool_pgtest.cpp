// Failover under transaction pooling: idle clients move to the promoted standby without an error,
// with their parameters and prepared statements; a client whose transaction was on the failed
// primary gets 40001, and its connection goes on.
#include <gtest/gtest.h>

#include <chrono>
#include <fstream>
#include <future>
#include <iostream>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "cluster_fixture.hpp"

namespace pgrelay::test {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

/// Outcome of one statement: "OK <first value>" or "ERROR <sqlstate>".
struct Outcome {
  bool ok = false;
  std::string value;     ///< first column of the first row, or the command tag
  std::string sqlstate;  ///< on error
  std::string message;
};

Outcome outcome_of(PGresult* res) {
  Outcome out;
  const auto status = PQresultStatus(res);
  if (status == PGRES_TUPLES_OK || status == PGRES_COMMAND_OK) {
    out.ok = true;
    out.value = PQntuples(res) > 0 ? PQgetvalue(res, 0, 0) : PQcmdStatus(res);
  } else {
    const char* code = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    out.sqlstate = code != nullptr ? code : "?";
    out.message = PQresultErrorMessage(res);
  }
  PQclear(res);
  return out;
}

Outcome exec(PGconn* conn, const std::string& sql) { return outcome_of(PQexec(conn, sql.c_str())); }

Outcome exec_prepared(PGconn* conn, const char* name, const std::string& arg) {
  const char* values[1] = {arg.c_str()};
  return outcome_of(PQexecPrepared(conn, name, 1, values, nullptr, nullptr, 0));
}

std::string pooled_toml(const std::string& mode = "transaction") {
  const std::string userlist = Cluster::get().dir() + "/userlist-failover.txt";
  std::ofstream(userlist) << "\"app\" \"app\"\n";
  return "[auth]\nmethod = \"scram-sha-256\"\nfile = \"" + userlist + "\"\n[pool]\nmode = \"" +
         mode +
         "\"\nmax_size = 80\n[monitor]\nuser = \"pgrelay\"\n"
         "password = \"pgrelay\"\ninterval_ms = 100\n[routing]\nprimary_wait_ms = 30000\n";
}

TEST(FailoverPool, AStandbyStoppingIsInvisibleToReadersBetweenTransactions) {
  auto& cluster = Cluster::get();
  Proxy proxy(pooled_toml());
  constexpr int kReaders = 20;
  std::vector<std::unique_ptr<PgConn>> readers;
  std::set<std::string> ports;
  for (int i = 0; i < kReaders; ++i) {
    auto conn = std::make_unique<PgConn>(proxy.conninfo());
    ASSERT_TRUE(conn->ok()) << conn->error();
    for (int r = 0; r < 3; ++r) ports.insert(exec(conn->conn, "SELECT inet_server_port()").value);
    readers.push_back(std::move(conn));
  }
  // Reads were spread over the standbys (the test would prove nothing otherwise).
  ASSERT_TRUE(ports.contains(std::to_string(cluster.node("node3").port))) << proxy.log();
  ASSERT_EQ(cluster.script("stop fast node3").status, 0);
  Cleanup restart{[&] { cluster.script("start node3"); }};
  int errors = 0;
  for (int r = 0; r < 5; ++r) {
    for (auto& conn : readers) {
      const auto result = exec(conn->conn, "SELECT inet_server_port()");
      if (!result.ok) {
        ++errors;
        ADD_FAILURE() << result.sqlstate << " " << result.message;
      } else {
        EXPECT_NE(result.value, std::to_string(cluster.node("node3").port));
      }
    }
  }
  EXPECT_EQ(errors, 0);
}

TEST(FailoverPool, IdleClientsMoveAndTransactionsInFlightFailWith40001) {
  auto& cluster = Cluster::get();
  const std::string node1_port = std::to_string(cluster.node("node1").port);
  const std::string node2_port = std::to_string(cluster.node("node2").port);
  Proxy proxy(pooled_toml());
  // Session pooling (with read splitting, the default) tracks parameters and prepared
  // statements too: its idle sessions move as well; a session pinned by a temporary table ends.
  Proxy session_proxy(pooled_toml("session"));

  {
    PgConn setup(proxy.conninfo());
    ASSERT_TRUE(setup.ok()) << setup.error();
    ASSERT_TRUE(exec(setup.conn, "CREATE TABLE fo_ledger (id int PRIMARY KEY, port int)").ok);
  }
  constexpr int kSessions = 5;
  std::vector<std::unique_ptr<PgConn>> sessions;
  for (int i = 0; i < kSessions; ++i) {
    auto conn = std::make_unique<PgConn>(session_proxy.conninfo());
    ASSERT_TRUE(conn->ok()) << conn->error();
    ASSERT_TRUE(exec(conn->conn, "SET application_name = 'session-" + std::to_string(i) + "'").ok);
    auto prepared = outcome_of(PQprepare(
        conn->conn, "bump", "INSERT INTO fo_ledger VALUES ($1, inet_server_port()) RETURNING port",
        1, nullptr));
    ASSERT_TRUE(prepared.ok) << prepared.message;
    ASSERT_TRUE(exec_prepared(conn->conn, "bump", std::to_string(3000 + i)).ok);
    sessions.push_back(std::move(conn));
  }
  PgConn pinned(session_proxy.conninfo());
  ASSERT_TRUE(pinned.ok()) << pinned.error();
  ASSERT_TRUE(exec(pinned.conn, "CREATE TEMP TABLE fo_temp (x int)").ok);

  // 50 idle clients, each with its own parameter and a prepared statement, used once.
  constexpr int kIdle = 50;
  std::vector<std::unique_ptr<PgConn>> idle;
  for (int i = 0; i < kIdle; ++i) {
    auto conn = std::make_unique<PgConn>(proxy.conninfo());
    ASSERT_TRUE(conn->ok()) << conn->error();
    ASSERT_TRUE(exec(conn->conn, "SET application_name = 'idle-" + std::to_string(i) + "'").ok);
    auto prepared = outcome_of(PQprepare(
        conn->conn, "bump", "INSERT INTO fo_ledger VALUES ($1, inet_server_port()) RETURNING port",
        1, nullptr));
    ASSERT_TRUE(prepared.ok) << prepared.message;
    const auto first = exec_prepared(conn->conn, "bump", std::to_string(i));
    ASSERT_TRUE(first.ok) << first.message;
    EXPECT_EQ(first.value, node1_port);
    idle.push_back(std::move(conn));
  }

  // A client idle inside a transaction that wrote, and one with a statement running in one.
  PgConn in_tx(proxy.conninfo());
  ASSERT_TRUE(in_tx.ok()) << in_tx.error();
  ASSERT_TRUE(exec(in_tx.conn, "BEGIN").ok);
  ASSERT_TRUE(exec(in_tx.conn, "INSERT INTO fo_ledger VALUES (1000, 0)").ok);
  PgConn running(proxy.conninfo());
  ASSERT_TRUE(running.ok()) << running.error();
  ASSERT_TRUE(exec(running.conn, "BEGIN").ok);
  ASSERT_TRUE(exec(running.conn, "INSERT INTO fo_ledger VALUES (2000, 0)").ok);
  auto sleeping =
      std::async(std::launch::async, [&] { return exec(running.conn, "SELECT pg_sleep(60)"); });

  // The standby has everything the primary committed before it goes away.
  for (int i = 0; i < 200; ++i) {
    if (cluster.sql("node2", "SELECT count(*) FROM fo_ledger") ==
        std::to_string(kIdle + kSessions)) {
      break;
    }
    std::this_thread::sleep_for(50ms);
  }
  ASSERT_EQ(cluster.sql("node2", "SELECT count(*) FROM fo_ledger"),
            std::to_string(kIdle + kSessions));
  std::this_thread::sleep_for(300ms);  // pg_sleep is running

  ASSERT_EQ(cluster.script("stop fast node1").status, 0);
  ASSERT_EQ(cluster.script("promote node2").status, 0);
  const auto promoted = Clock::now();

  // The running statement fails with 40001; the client rolls back and goes on.
  ASSERT_EQ(sleeping.wait_for(30s), std::future_status::ready);
  const auto slept = sleeping.get();
  EXPECT_FALSE(slept.ok);
  EXPECT_EQ(slept.sqlstate, "40001") << slept.message;
  EXPECT_EQ(PQstatus(running.conn), CONNECTION_OK);
  EXPECT_EQ(PQtransactionStatus(running.conn), PQTRANS_INERROR);
  const auto aborted = exec(running.conn, "SELECT 1");
  EXPECT_EQ(aborted.sqlstate, "25P02") << aborted.message;
  const auto rollback = exec(running.conn, "ROLLBACK");
  EXPECT_TRUE(rollback.ok) << rollback.message;
  EXPECT_EQ(rollback.value, "ROLLBACK");
  EXPECT_EQ(PQtransactionStatus(running.conn), PQTRANS_IDLE);

  // The idle-in-transaction client learns at its next statement; COMMIT then rolls back.
  const auto next = exec(in_tx.conn, "INSERT INTO fo_ledger VALUES (1001, 0)");
  EXPECT_FALSE(next.ok);
  EXPECT_EQ(next.sqlstate, "40001") << next.message;
  const auto commit = exec(in_tx.conn, "COMMIT");
  EXPECT_TRUE(commit.ok) << commit.message;
  EXPECT_EQ(commit.value, "ROLLBACK");
  EXPECT_EQ(PQtransactionStatus(in_tx.conn), PQTRANS_IDLE);

  // Every idle client: its next transaction runs on the new primary, without an error, with its
  // parameter and its prepared statement.
  int errors = 0;
  for (int i = 0; i < kIdle; ++i) {
    const auto result =
        exec_prepared(idle[static_cast<std::size_t>(i)]->conn, "bump", std::to_string(100 + i));
    if (!result.ok) {
      ++errors;
      ADD_FAILURE() << "idle client " << i << ": " << result.sqlstate << " " << result.message;
      continue;
    }
    EXPECT_EQ(result.value, node2_port);
    EXPECT_EQ(exec(idle[static_cast<std::size_t>(i)]->conn, "SHOW application_name").value,
              "idle-" + std::to_string(i));
  }
  EXPECT_EQ(errors, 0);
  for (int i = 0; i < kSessions; ++i) {
    auto* conn = sessions[static_cast<std::size_t>(i)]->conn;
    const auto result = exec_prepared(conn, "bump", std::to_string(4000 + i));
    EXPECT_TRUE(result.ok) << "session " << i << ": " << result.sqlstate << " " << result.message;
    EXPECT_EQ(result.value, node2_port);
    EXPECT_EQ(exec(conn, "SHOW application_name").value, "session-" + std::to_string(i));
  }
  // The pinned session's temporary table cannot move: the session ends (pgrelay relays the
  // server's FATAL 57P01 and closes, as a direct connection would have seen it).
  const auto temp = exec(pinned.conn, "SELECT count(*) FROM fo_temp");
  EXPECT_FALSE(temp.ok);
  EXPECT_EQ(PQstatus(pinned.conn), CONNECTION_BAD);
  std::cout
      << "promote to all " << kIdle << " idle clients served: "
      << std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - promoted).count()
      << " ms, errors " << errors << "\n";

  // The clients that failed go on too.
  for (PGconn* conn : {running.conn, in_tx.conn}) {
    const auto again = exec(conn, "INSERT INTO fo_ledger VALUES (" +
                                      std::string(conn == running.conn ? "2001" : "1002") +
                                      ", inet_server_port()) RETURNING port");
    EXPECT_TRUE(again.ok) << again.message;
    EXPECT_EQ(again.value, node2_port);
  }
  // Nothing of the lost transactions was committed.
  EXPECT_EQ(cluster.sql("node2", "SELECT count(*) FROM fo_ledger WHERE id IN (1000, 1001, 2000)"),
            "0");
  EXPECT_EQ(cluster.sql("node2", "SELECT count(*) FROM fo_ledger"),
            std::to_string(2 * kIdle + 2 + 2 * kSessions));
  const auto metrics = http_get(proxy.http_port(), "/metrics");
  EXPECT_NE(metrics.body.find("pgrelay_server_losses_total"), std::string::npos);
  EXPECT_EQ(metrics.body.find("pgrelay_server_losses_total 0\n"), std::string::npos);
}

/// The node that is the primary now (asked through the proxy, with the routing hint).
std::string primary_name(Proxy& proxy) {
  PgConn conn(proxy.conninfo());
  const std::string port = conn.value("/* pgrelay:primary */ SELECT inet_server_port()");
  for (const auto& node : Cluster::get().nodes()) {
    if (std::to_string(node.port) == port) return node.name;
  }
  return "";
}

TEST(FailoverPool, ACommitInFlightGets08006AndExtendedProtocolTransactionsGet40001) {
  auto& cluster = Cluster::get();
  Proxy proxy(pooled_toml());
  const std::string primary = primary_name(proxy);
  ASSERT_FALSE(primary.empty()) << proxy.log();
  {
    PgConn setup(proxy.conninfo());
    ASSERT_TRUE(exec(setup.conn, "CREATE TABLE fo_commit (id int)").ok);
  }

  // A COMMIT that waits for a synchronous standby that does not exist: the outcome is unknown
  // to pgrelay when the server connection is terminated under it.
  ASSERT_EQ(cluster.sql(primary, "ALTER SYSTEM SET synchronous_standby_names = 'nobody'"),
            "ALTER SYSTEM");
  ASSERT_EQ(cluster.sql(primary, "SELECT pg_reload_conf()"), "t");
  Cleanup reset{[&] {
    cluster.sql(primary, "ALTER SYSTEM RESET synchronous_standby_names");
    cluster.sql(primary, "SELECT pg_reload_conf()");
  }};
  PgConn committing(proxy.conninfo());
  ASSERT_TRUE(committing.ok()) << committing.error();
  ASSERT_TRUE(exec(committing.conn, "BEGIN").ok);
  ASSERT_TRUE(exec(committing.conn, "SET LOCAL synchronous_commit = on").ok);
  const auto pid =
      exec(committing.conn, "INSERT INTO fo_commit VALUES (1) RETURNING pg_backend_pid()");
  ASSERT_TRUE(pid.ok) << pid.message;
  auto commit = std::async(std::launch::async, [&] { return exec(committing.conn, "COMMIT"); });
  std::this_thread::sleep_for(500ms);
  ASSERT_EQ(commit.wait_for(0s), std::future_status::timeout) << "COMMIT did not wait";
  ASSERT_EQ(cluster.sql(primary, "SELECT pg_terminate_backend(" + pid.value + ")"), "t");
  ASSERT_EQ(commit.wait_for(20s), std::future_status::ready);
  const auto committed = commit.get();
  EXPECT_FALSE(committed.ok);
  EXPECT_EQ(committed.sqlstate, "08006") << committed.message;
  EXPECT_EQ(PQstatus(committing.conn), CONNECTION_OK);
  EXPECT_EQ(PQtransactionStatus(committing.conn), PQTRANS_IDLE);
  // It had committed locally: "may or may not" was the honest answer.
  EXPECT_EQ(cluster.sql(primary, "SELECT count(*) FROM fo_commit WHERE id = 1"), "1");
  cluster.sql(primary, "ALTER SYSTEM RESET synchronous_standby_names");
  cluster.sql(primary, "SELECT pg_reload_conf()");
  const auto after = exec(committing.conn, "INSERT INTO fo_commit VALUES (2) RETURNING id");
  EXPECT_TRUE(after.ok) << after.message;

  // Extended protocol inside a block: the statement in flight fails with 40001, the rest of the
  // transaction with 25P02, and an extended-protocol ROLLBACK is answered by pgrelay.
  PgConn extended(proxy.conninfo());
  ASSERT_TRUE(extended.ok()) << extended.error();
  ASSERT_TRUE(exec(extended.conn, "BEGIN").ok);
  const char* params[1] = {"3"};
  const auto backend = outcome_of(PQexecParams(
      extended.conn, "INSERT INTO fo_commit VALUES ($1::int) RETURNING pg_backend_pid()", 1,
      nullptr, params, nullptr, nullptr, 0));
  ASSERT_TRUE(backend.ok) << backend.message;
  auto sleeping = std::async(std::launch::async, [&] {
    const char* seconds[1] = {"60"};
    return outcome_of(PQexecParams(extended.conn, "SELECT pg_sleep($1::float8)", 1, nullptr,
                                   seconds, nullptr, nullptr, 0));
  });
  std::this_thread::sleep_for(300ms);
  ASSERT_EQ(cluster.sql(primary, "SELECT pg_terminate_backend(" + backend.value + ")"), "t");
  ASSERT_EQ(sleeping.wait_for(20s), std::future_status::ready);
  const auto slept = sleeping.get();
  EXPECT_EQ(slept.sqlstate, "40001") << slept.message;
  EXPECT_EQ(PQtransactionStatus(extended.conn), PQTRANS_INERROR);
  const auto aborted = outcome_of(
      PQexecParams(extended.conn, "SELECT $1::int", 1, nullptr, params, nullptr, nullptr, 0));
  EXPECT_EQ(aborted.sqlstate, "25P02") << aborted.message;
  const auto rollback =
      outcome_of(PQexecParams(extended.conn, "ROLLBACK", 0, nullptr, nullptr, nullptr, nullptr, 0));
  EXPECT_TRUE(rollback.ok) << rollback.message;
  EXPECT_EQ(rollback.value, "ROLLBACK");
  EXPECT_EQ(PQtransactionStatus(extended.conn), PQTRANS_IDLE);
  const auto fine = outcome_of(
      PQexecParams(extended.conn, "SELECT $1::int + 1", 1, nullptr, params, nullptr, nullptr, 0));
  EXPECT_TRUE(fine.ok) << fine.message;
  EXPECT_EQ(fine.value, "4");
  EXPECT_EQ(cluster.sql(primary, "SELECT count(*) FROM fo_commit WHERE id = 3"), "0");
}

}  // namespace
}  // namespace pgrelay::test
