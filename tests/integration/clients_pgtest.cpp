// Real driver clients through a transaction-mode pool: psycopg2 (SQL PREPARE/EXECUTE) and pgjdbc
// (named protocol-level statements, prepareThreshold=1), each committing `SET search_path` once
// and relying on it and on its prepared statements in every later transaction while several
// copies share two server connections.
#include <gtest/gtest.h>

#include <cstddef>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "cluster_fixture.hpp"

namespace pgrelay::test {
namespace {

const std::string kClientsDir = std::string(PGRELAY_SOURCE_DIR) + "/tests/integration/clients";
const std::string kPython = "/usr/bin/python3";
const std::string kJdbcJar = "/usr/share/java/postgresql.jar";

/// Both clients roll back every tenth transaction (i % 10 == 9) and commit the rest.
constexpr int kRollbackEvery = 10;
/// A client that has not finished by then has hung; `timeout` kills it so the test reports it.
constexpr int kClientTimeoutSeconds = 90;

/// The SCRAM verifier PostgreSQL stores for role `app` (password "app").
std::string app_verifier() {
  static const std::string verifier =
      Cluster::get().sql("node1", "SELECT rolpassword FROM pg_authid WHERE rolname = 'app'");
  return verifier;
}

/// A transaction-mode proxy that authenticates `app` itself and keeps at most two server
/// connections, so concurrent clients' transactions share and move between them.
std::string shared_pool_toml() {
  const std::string userlist = Cluster::get().dir() + "/userlist-clients.txt";
  std::ofstream(userlist) << "\"app\" \"" << app_verifier() << "\"\n";
  return "[auth]\nmethod = \"scram-sha-256\"\nfile = \"" + userlist +
         "\"\n\n[pool]\nmode = \"transaction\"\nmax_size = 2\nacquire_timeout_ms = 10000\n";
}

/// The last `n` characters of a proxy log, for failure messages.
std::string log_tail(const Proxy& proxy, std::size_t n = 4000) {
  const std::string log = proxy.log();
  return log.size() <= n ? log : "..." + log.substr(log.size() - n);
}

/// Runs every command at once (one thread each) and returns their results in order.
std::vector<CommandResult> run_concurrently(const std::vector<std::string>& commands) {
  std::vector<CommandResult> results(commands.size());
  std::vector<std::thread> threads;
  threads.reserve(commands.size());
  for (std::size_t i = 0; i < commands.size(); ++i) {
    threads.emplace_back([&, i] {
      results[i] = run("timeout -k 5 " + std::to_string(kClientTimeoutSeconds) + " " + commands[i]);
    });
  }
  for (auto& thread : threads) thread.join();
  return results;
}

/// The summary line a client prints on success, up to its list of backend pids.
std::string expected_summary(const std::string& program, const std::string& client,
                             int transactions) {
  const int committed = transactions - transactions / kRollbackEvery;
  return program + " " + client + ": ok transactions=" + std::to_string(transactions) +
         " committed=" + std::to_string(committed) + " rows=" + std::to_string(committed) +
         " pids=";
}

/// The comma-separated pids that follow `summary` in `output` (empty when it is not there).
std::vector<std::string> pids_after(const std::string& output, const std::string& summary) {
  std::vector<std::string> pids;
  const auto at = output.find(summary);
  if (at == std::string::npos) return pids;
  const auto start = at + summary.size();
  std::istringstream list(output.substr(start, output.find('\n', start) - start));
  for (std::string pid; std::getline(list, pid, ',');) pids.push_back(pid);
  return pids;
}

/// "<client> <rows> <sum of n>" per client, as both clients leave clients_<kind>.t.
std::string expected_rows(const std::vector<std::string>& clients, int transactions) {
  long sum = 0;
  int rows = 0;
  for (int i = 0; i < transactions; ++i) {
    if (i % kRollbackEvery != kRollbackEvery - 1) {
      sum += i;
      ++rows;
    }
  }
  std::string text;
  for (const auto& client : clients) {
    if (!text.empty()) text += "\n";
    text += client + " " + std::to_string(rows) + " " + std::to_string(sum);
  }
  return text;
}

/// What the superuser sees in `table`, directly on the primary, in expected_rows()'s shape.
std::string rows_in(const std::string& table) {
  return Cluster::get().sql("node1", "SELECT client || ' ' || count(*) || ' ' || sum(n) FROM " +
                                         table + " GROUP BY client ORDER BY client");
}

/// Checks each client's exit status and summary line (with the proxy's log once, on failure);
/// returns the backend pids the clients reported.
std::set<std::string> expect_clients_ok(const Proxy& proxy, const std::string& program,
                                        const std::vector<std::string>& clients,
                                        const std::vector<CommandResult>& results,
                                        int transactions) {
  std::set<std::string> all_pids;
  int movers = 0;
  bool all_ok = true;
  for (std::size_t i = 0; i < clients.size(); ++i) {
    const auto summary = expected_summary(program, clients[i], transactions);
    const bool ok = results[i].status == 0 && results[i].output.find(summary) != std::string::npos;
    EXPECT_TRUE(ok) << program << " " << clients[i] << " exited with " << results[i].status
                    << (results[i].status == 124 ? " (timed out)" : "") << ", want 0 and \""
                    << summary << "...\"; its output:\n"
                    << results[i].output;
    all_ok = all_ok && ok;
    const auto pids = pids_after(results[i].output, summary);
    all_pids.insert(pids.begin(), pids.end());
    if (pids.size() >= 2) ++movers;
  }
  EXPECT_TRUE(all_ok) << "proxy log:\n" << log_tail(proxy);
  ::testing::Test::RecordProperty(program + "_clients_that_changed_connection", movers);
  return all_pids;
}

/// All clients together ran on at most max_size (2) server connections: with more clients than
/// that, the connections were shared, so each client's state had to follow it.
void expect_shared(const std::set<std::string>& pids) {
  EXPECT_GE(pids.size(), 1U);
  EXPECT_LE(pids.size(), 2U) << "more server connections than [pool] max_size = 2";
  ::testing::Test::RecordProperty("server_connections", static_cast<int>(pids.size()));
}

/// FAILs (rather than skips) when a client's runtime is missing: scripts/deps installs it.
void require(const std::string& check, const std::string& what) {
  const auto result = run(check);
  ASSERT_EQ(result.status, 0) << what << " is missing (scripts/deps installs it): `" << check
                              << "` said:\n"
                              << result.output;
}

// ------------------------------------------------------------------------------------------
// psycopg2
// ------------------------------------------------------------------------------------------

TEST(ClientsTest, Psycopg2PreparedStatementsAndSearchPath) {
  ASSERT_NO_FATAL_FAILURE(require(kPython + " -c 'import psycopg2'", "python3-psycopg2"));
  Cluster::get().sql("node1", "DROP SCHEMA IF EXISTS clients_py CASCADE");
  Proxy proxy(shared_pool_toml());

  constexpr int kTransactions = 200;
  std::vector<std::string> clients;
  std::vector<std::string> commands;
  for (int i = 0; i < 6; ++i) {
    clients.push_back("py" + std::to_string(i));
    commands.push_back(kPython + " " + kClientsDir + "/psycopg_client.py --host 127.0.0.1 --port " +
                       std::to_string(proxy.port()) + " --client " + clients.back() +
                       " --transactions " + std::to_string(kTransactions));
  }
  const auto results = run_concurrently(commands);
  expect_shared(expect_clients_ok(proxy, "psycopg_client", clients, results, kTransactions));
  EXPECT_EQ(rows_in("clients_py.t"), expected_rows(clients, kTransactions));
}

// ------------------------------------------------------------------------------------------
// pgjdbc
// ------------------------------------------------------------------------------------------

/// Compiles JdbcClient.java once per test binary; returns the class directory.
std::string compiled_jdbc_client() {
  static const std::string dir = [] {
    const std::string classes = Cluster::get().dir() + "/jdbc-classes";
    const auto javac = run("mkdir -p " + classes + " && javac -cp " + kJdbcJar + " -d " + classes +
                           " " + kClientsDir + "/JdbcClient.java");
    return javac.status == 0 ? classes : "javac failed: " + javac.output;
  }();
  return dir;
}

TEST(ClientsTest, PgjdbcNamedStatementsAndSearchPath) {
  ASSERT_NO_FATAL_FAILURE(
      require("javac -version && java -version", "default-jdk-headless (javac, java)"));
  ASSERT_NO_FATAL_FAILURE(
      require("test -r " + kJdbcJar, "libpostgresql-jdbc-java (" + kJdbcJar + ")"));
  const auto classes = compiled_jdbc_client();
  ASSERT_EQ(classes.rfind("javac failed", 0), std::string::npos) << classes;
  Cluster::get().sql("node1", "DROP SCHEMA IF EXISTS clients_jdbc CASCADE");
  Proxy proxy(shared_pool_toml());

  // JVM start-up dominates on a small machine: a client JIT and a serial GC keep it short.
  constexpr int kTransactions = 150;
  std::vector<std::string> clients;
  std::vector<std::string> commands;
  for (int i = 0; i < 3; ++i) {
    clients.push_back("jdbc" + std::to_string(i));
    commands.push_back("java -XX:TieredStopAtLevel=1 -XX:+UseSerialGC -Xss512k -cp " + classes +
                       ":" + kJdbcJar + " JdbcClient 127.0.0.1 " + std::to_string(proxy.port()) +
                       " " + clients.back() + " " + std::to_string(kTransactions));
  }
  const auto results = run_concurrently(commands);
  expect_shared(expect_clients_ok(proxy, "JdbcClient", clients, results, kTransactions));
  EXPECT_EQ(rows_in("clients_jdbc.t"), expected_rows(clients, kTransactions));
}

// ------------------------------------------------------------------------------------------
// Both at once
// ------------------------------------------------------------------------------------------

/// psycopg2's PREPAREd `ins`/`total` and pgjdbc's S_n statements, with two different committed
/// search_paths, interleaved on the same two server connections.
TEST(ClientsTest, MixedDriversShareServerConnections) {
  ASSERT_NO_FATAL_FAILURE(require(kPython + " -c 'import psycopg2'", "python3-psycopg2"));
  ASSERT_NO_FATAL_FAILURE(
      require("javac -version && java -version", "default-jdk-headless (javac, java)"));
  ASSERT_NO_FATAL_FAILURE(
      require("test -r " + kJdbcJar, "libpostgresql-jdbc-java (" + kJdbcJar + ")"));
  const auto classes = compiled_jdbc_client();
  ASSERT_EQ(classes.rfind("javac failed", 0), std::string::npos) << classes;
  Cluster::get().sql("node1", "DROP SCHEMA IF EXISTS clients_py CASCADE");
  Cluster::get().sql("node1", "DROP SCHEMA IF EXISTS clients_jdbc CASCADE");
  Proxy proxy(shared_pool_toml());

  constexpr int kTransactions = 150;
  const std::vector<std::string> py = {"mixpy0", "mixpy1"};
  const std::vector<std::string> jdbc = {"mixjdbc0", "mixjdbc1"};
  std::vector<std::string> commands;
  for (const auto& client : jdbc) {
    commands.push_back("java -XX:TieredStopAtLevel=1 -XX:+UseSerialGC -Xss512k -cp " + classes +
                       ":" + kJdbcJar + " JdbcClient 127.0.0.1 " + std::to_string(proxy.port()) +
                       " " + client + " " + std::to_string(kTransactions));
  }
  for (const auto& client : py) {
    // Started a little later, so they run while the JVMs (slow to start) do.
    commands.push_back("sleep 1; " + kPython + " " + kClientsDir +
                       "/psycopg_client.py --host 127.0.0.1 --port " +
                       std::to_string(proxy.port()) + " --client " + client + " --transactions " +
                       std::to_string(kTransactions));
  }
  const auto results = run_concurrently(commands);
  const std::vector<CommandResult> jdbc_results(results.begin(), results.begin() + 2);
  const std::vector<CommandResult> py_results(results.begin() + 2, results.end());
  auto pids = expect_clients_ok(proxy, "JdbcClient", jdbc, jdbc_results, kTransactions);
  const auto py_pids = expect_clients_ok(proxy, "psycopg_client", py, py_results, kTransactions);
  pids.insert(py_pids.begin(), py_pids.end());
  expect_shared(pids);
  EXPECT_EQ(rows_in("clients_jdbc.t"), expected_rows(jdbc, kTransactions));
  EXPECT_EQ(rows_in("clients_py.t"), expected_rows(py, kTransactions));
}

}  // namespace
}  // namespace pgrelay::test
