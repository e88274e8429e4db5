// Real driver clients through a transaction-mode pool: psycopg2 (SQL PREPARE/EXECUTE) and pgjdbc
// (named protocol-level statements, prepareThreshold=1), each committing `SET search_path` once
// and relying on it and on its prepared statements in every later transaction, while several
// copies share two server connections (keeping many or few statements prepared on them) or move to
// a new one every transaction. Then, with read splitting: psycopg 3, asyncpg and node-postgres.
#include <gtest/gtest.h>

#include <cstddef>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <ostream>
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
/// returns the backend pids each client reported, by client.
std::map<std::string, std::set<std::string>> expect_clients_ok(
    const Proxy& proxy, const std::string& program, const std::vector<std::string>& clients,
    const std::vector<CommandResult>& results, int transactions) {
  std::map<std::string, std::set<std::string>> pids_by_client;
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
    pids_by_client[clients[i]].insert(pids.begin(), pids.end());
  }
  EXPECT_TRUE(all_ok) << "proxy log:\n" << log_tail(proxy);
  return pids_by_client;
}

// ------------------------------------------------------------------------------------------
// The tests
// ------------------------------------------------------------------------------------------

/// FAILs (rather than skips) when a client's runtime is missing: scripts/deps installs it.
void require(const std::string& check, const std::string& what) {
  const auto result = run(check);
  ASSERT_EQ(result.status, 0) << what << " is missing (scripts/deps installs it): `" << check
                              << "` said:\n"
                              << result.output;
}

void require_python() {
  ASSERT_NO_FATAL_FAILURE(require(kPython + " -c 'import psycopg2'", "python3-psycopg2"));
}

void require_java() {
  ASSERT_NO_FATAL_FAILURE(
      require("javac -version && java -version", "default-jdk-headless (javac, java)"));
  ASSERT_NO_FATAL_FAILURE(
      require("test -r " + kJdbcJar, "libpostgresql-jdbc-java (" + kJdbcJar + ")"));
}

/// Compiles JdbcClient.java once per test binary; returns the class directory, or the error.
std::string compiled_jdbc_client() {
  static const std::string dir = [] {
    const std::string classes = Cluster::get().dir() + "/jdbc-classes";
    const auto javac = run("mkdir -p " + classes + " && javac -cp " + kJdbcJar + " -d " + classes +
                           " " + kClientsDir + "/JdbcClient.java");
    return javac.status == 0 ? classes : "javac failed: " + javac.output;
  }();
  return dir;
}

/// How the clients' transactions meet server connections.
enum class Movement {
  /// max_size = 2, i.e. one server connection per worker: the clients of a worker take turns on
  /// it, so it carries other clients' search_path and statements between one client's
  /// transactions.
  kShared,
  /// As kShared, with max_prepared_statements = 3: the shared connections keep only the three
  /// statements used last, so the clients' statements are closed and prepared again (under the
  /// client's search_path, which decides what `t` means) over and over.
  kEvicting,
  /// lifetime_ms = 1 as well: every transaction gets a new server connection, on which the
  /// client's search_path and prepared statements must be set up again.
  kMoving,
};

std::string movement_name(Movement movement) {
  switch (movement) {
    case Movement::kShared:
      return "Shared";
    case Movement::kEvicting:
      return "Evicting";
    case Movement::kMoving:
      return "Moving";
  }
  return "?";
}

/// Names the parameter in gtest's messages ("GetParam() = Evicting", not a byte dump).
[[maybe_unused]] void PrintTo(Movement movement, std::ostream* out) {
  *out << movement_name(movement);
}

class ClientsTest : public ::testing::TestWithParam<Movement> {
 protected:
  void SetUp() override {
    const std::string userlist = Cluster::get().dir() + "/userlist-clients.txt";
    std::ofstream(userlist) << "\"app\" \"" << app_verifier() << "\"\n";
    std::string toml = "[auth]\nmethod = \"scram-sha-256\"\nfile = \"" + userlist +
                       "\"\n\n[pool]\nmode = \"transaction\"\nmax_size = 2\n"
                       "acquire_timeout_ms = 10000\n";
    if (GetParam() == Movement::kEvicting) toml += "max_prepared_statements = 3\n";
    if (GetParam() == Movement::kMoving) toml += "lifetime_ms = 1\n";
    // All on the primary's two connections, so the clients must share them.
    toml += "[routing]\nread_write_split = false\n";
    proxy_ = std::make_unique<Proxy>(toml);
  }

  /// Transactions per client: fewer when each one opens a server connection.
  [[nodiscard]] int transactions(int shared) const {
    return GetParam() == Movement::kMoving ? 60 : shared;
  }

  [[nodiscard]] std::string python_command(const std::string& client, int transactions) const {
    return kPython + " " + kClientsDir + "/psycopg_client.py --host 127.0.0.1 --port " +
           std::to_string(proxy_->port()) + " --client " + client + " --transactions " +
           std::to_string(transactions);
  }

  /// JVM start-up dominates on a small machine: a client JIT and a serial GC keep it short.
  [[nodiscard]] std::string java_command(const std::string& classes, const std::string& client,
                                         int transactions) const {
    return "java -XX:TieredStopAtLevel=1 -XX:+UseSerialGC -Xss512k -cp " + classes + ":" +
           kJdbcJar + " JdbcClient 127.0.0.1 " + std::to_string(proxy_->port()) + " " + client +
           " " + std::to_string(transactions);
  }

  /// Shared and evicting: all clients together ran on at most max_size (2) server connections,
  /// fewer than there were clients. Moving: every client saw several server connections.
  /// Skipped after a failure: a client that failed printed no pids, and a server connection a
  /// failed client left inside a transaction is closed and replaced.
  void expect_movement(const std::map<std::string, std::set<std::string>>& pids_by_client) {
    if (HasFailure()) return;
    std::set<std::string> all;
    for (const auto& [client, pids] : pids_by_client) {
      all.insert(pids.begin(), pids.end());
      if (GetParam() == Movement::kMoving) {
        EXPECT_GE(pids.size(), 2U) << client << " never changed server connection";
      }
    }
    RecordProperty("server_connections", static_cast<int>(all.size()));
    if (GetParam() != Movement::kMoving) {
      EXPECT_GE(all.size(), 1U);
      EXPECT_LE(all.size(), 2U) << "more server connections than [pool] max_size = 2";
      EXPECT_LT(all.size(), pids_by_client.size()) << "no server connection was shared";
    }
  }

  std::unique_ptr<Proxy> proxy_;
};

/// Six psycopg2 clients, each with its own `ins`/`total` and search_path.
TEST_P(ClientsTest, Psycopg2PreparedStatementsAndSearchPath) {
  ASSERT_NO_FATAL_FAILURE(require_python());
  Cluster::get().sql("node1", "DROP SCHEMA IF EXISTS clients_py CASCADE");

  const int n = transactions(200);
  std::vector<std::string> clients;
  std::vector<std::string> commands;
  for (int i = 0; i < 6; ++i) {
    clients.push_back("py" + std::to_string(i));
    commands.push_back(python_command(clients.back(), n));
  }
  const auto results = run_concurrently(commands);
  expect_movement(expect_clients_ok(*proxy_, "psycopg_client", clients, results, n));
  EXPECT_EQ(rows_in("clients_py.t"), expected_rows(clients, n));
}

/// Three pgjdbc clients whose S_n statements have the same names but different texts.
TEST_P(ClientsTest, PgjdbcNamedStatementsAndSearchPath) {
  ASSERT_NO_FATAL_FAILURE(require_java());
  const auto classes = compiled_jdbc_client();
  ASSERT_EQ(classes.rfind("javac failed", 0), std::string::npos) << classes;
  Cluster::get().sql("node1", "DROP SCHEMA IF EXISTS clients_jdbc CASCADE");

  const int n = transactions(150);
  std::vector<std::string> clients;
  std::vector<std::string> commands;
  for (int i = 0; i < 3; ++i) {
    clients.push_back("jdbc" + std::to_string(i));
    commands.push_back(java_command(classes, clients.back(), n));
  }
  const auto results = run_concurrently(commands);
  expect_movement(expect_clients_ok(*proxy_, "JdbcClient", clients, results, n));
  EXPECT_EQ(rows_in("clients_jdbc.t"), expected_rows(clients, n));
}

/// psycopg2's PREPAREd `ins`/`total` and pgjdbc's S_n statements, with search_paths that resolve
/// `t` into different schemas, interleaved on the same server connections.
TEST_P(ClientsTest, MixedDriversShareServerConnections) {
  ASSERT_NO_FATAL_FAILURE(require_python());
  ASSERT_NO_FATAL_FAILURE(require_java());
  const auto classes = compiled_jdbc_client();
  ASSERT_EQ(classes.rfind("javac failed", 0), std::string::npos) << classes;
  Cluster::get().sql("node1", "DROP SCHEMA IF EXISTS clients_py CASCADE");
  Cluster::get().sql("node1", "DROP SCHEMA IF EXISTS clients_jdbc CASCADE");

  const int n = transactions(150);
  const std::vector<std::string> jdbc = {"mixjdbc0", "mixjdbc1"};
  const std::vector<std::string> py = {"mixpy0", "mixpy1"};
  std::vector<std::string> commands;
  for (const auto& client : jdbc) commands.push_back(java_command(classes, client, n));
  // Started a little later, so that they run while the JVMs (slow to start) do.
  for (const auto& client : py) commands.push_back("sleep 1; " + python_command(client, n));
  const auto results = run_concurrently(commands);

  auto pids = expect_clients_ok(*proxy_, "JdbcClient", jdbc, {results[0], results[1]}, n);
  pids.merge(expect_clients_ok(*proxy_, "psycopg_client", py, {results[2], results[3]}, n));
  expect_movement(pids);
  EXPECT_EQ(rows_in("clients_jdbc.t"), expected_rows(jdbc, n));
  EXPECT_EQ(rows_in("clients_py.t"), expected_rows(py, n));
}

// ------------------------------------------------------------------------------------------
// Drivers with read splitting (the default): psycopg 3 (pipeline mode, its own prepared
// statements), asyncpg (its statement cache) and node-postgres (named statements, a result read
// in pages)
// ------------------------------------------------------------------------------------------

const std::string kNodeClient = kClientsDir + "/node/node_client.js";
/// Transactions per driver client (every tenth rolled back).
constexpr int kSplitTransactions = 60;

/// The key=value pairs after "<program> <client>: ok " in `output` (empty when not there).
std::map<std::string, long> summary_of(const std::string& output, const std::string& program,
                                       const std::string& client) {
  std::map<std::string, long> values;
  const std::string head = program + " " + client + ": ok ";
  const auto at = output.find(head);
  if (at == std::string::npos) return values;
  const auto start = at + head.size();
  std::istringstream line(output.substr(start, output.find('\n', start) - start));
  for (std::string pair; line >> pair;) {
    const auto eq = pair.find('=');
    if (eq != std::string::npos) values[pair.substr(0, eq)] = std::stol(pair.substr(eq + 1));
  }
  return values;
}

class SplitClientsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string userlist = Cluster::get().dir() + "/userlist-split-clients.txt";
    std::ofstream(userlist) << "\"app\" \"" << app_verifier() << "\"\n";
    proxy_ = std::make_unique<Proxy>(
        "[auth]\nmethod = \"scram-sha-256\"\nfile = \"" + userlist +
        "\"\n\n[pool]\nmode = \"transaction\"\nmax_size = 4\nacquire_timeout_ms = 10000\n"
        "[monitor]\nuser = \"pgrelay\"\npassword = \"pgrelay\"\ninterval_ms = 100\n");
  }

  /// Drops `schema`, then runs four copies of a client at once (`command(name)` for the names
  /// prefix0..prefix3): each must succeed, and the rows it left in `schema`.t must be the ones
  /// it says it committed. Some read must have gone to a standby.
  void expect_clients(const std::string& program, const std::string& schema,
                      const std::string& prefix,
                      const std::function<std::string(const std::string&)>& command) {
    Cluster::get().sql("node1", "DROP SCHEMA IF EXISTS " + schema + " CASCADE");
    const std::string table = schema + ".t";
    std::vector<std::string> clients;
    std::vector<std::string> commands;
    for (int i = 0; i < 4; ++i) {
      clients.push_back(prefix + std::to_string(i));
      commands.push_back(command(clients.back()));
    }
    const auto results = run_concurrently(commands);
    long standby_reads = 0;
    for (std::size_t i = 0; i < clients.size(); ++i) {
      const auto summary = summary_of(results[i].output, program, clients[i]);
      EXPECT_EQ(results[i].status, 0)
          << program << " " << clients[i] << (results[i].status == 124 ? " timed out" : "")
          << "; its output:\n"
          << results[i].output << "\nproxy log:\n"
          << log_tail(*proxy_);
      if (summary.empty()) {
        ADD_FAILURE() << program << " " << clients[i] << " printed no summary";
        continue;
      }
      EXPECT_EQ(summary.at("transactions"), kSplitTransactions);
      EXPECT_EQ(Cluster::get().sql("node1", "SELECT count(*) FROM " + table + " WHERE client = '" +
                                                clients[i] + "'"),
                std::to_string(summary.at("committed")))
          << program << " " << clients[i] << ": rows in " << table;
      standby_reads += summary.at("standby_reads");
    }
    EXPECT_GT(standby_reads, 0) << "no read went to a standby";
  }

  /// The command line of one of the Python test clients, per client name.
  std::function<std::string(const std::string&)> python_client(const std::string& script) {
    return [this, script](const std::string& client) {
      return kPython + " " + kClientsDir + "/" + script + " --port " +
             std::to_string(proxy_->port()) + " --client " + client + " --transactions " +
             std::to_string(kSplitTransactions);
    };
  }

  std::unique_ptr<Proxy> proxy_;
};

/// Four psycopg 3 clients: pipelines with reads and writes, and psycopg's own `_pg3_N`
/// statements (the same names with different texts in every client).
TEST_F(SplitClientsTest, Psycopg3PipelinesAndPreparedStatements) {
  ASSERT_NO_FATAL_FAILURE(require(kPython + " -c 'import psycopg'", "python3-psycopg"));
  expect_clients("psycopg3_client", "clients_pg3", "pg3c", python_client("psycopg3_client.py"));
}

/// Four asyncpg clients with its default statement cache: every statement prepared under
/// asyncpg's own names (Parse, Describe, Flush, then Bind), a cursor read in pages.
TEST_F(SplitClientsTest, AsyncpgWithItsStatementCache) {
  ASSERT_NO_FATAL_FAILURE(require(kPython + " -c 'import asyncpg'", "python3-asyncpg"));
  expect_clients("asyncpg_client", "clients_apg", "apgc", python_client("asyncpg_client.py"));
}

/// Four node-postgres clients: named statements `ins` (different texts) and `count`, and a
/// result read four rows at a time.
TEST_F(SplitClientsTest, NodePostgresNamedStatementsAndPagedReads) {
  ASSERT_NO_FATAL_FAILURE(require("node --version", "node"));
  ASSERT_NO_FATAL_FAILURE(
      require("cd " + kClientsDir + "/node && node -e \"require('pg')\"",
              "node-postgres (scripts/deps: npm ci in " + kClientsDir + "/node)"));
  expect_clients("node_client", "clients_node", "nodec", [&](const std::string& client) {
    return "node " + kNodeClient + " 127.0.0.1 " + std::to_string(proxy_->port()) + " " + client +
           " " + std::to_string(kSplitTransactions);
  });
}

INSTANTIATE_TEST_SUITE_P(
    Pool, ClientsTest, ::testing::Values(Movement::kShared, Movement::kEvicting, Movement::kMoving),
    [](const ::testing::TestParamInfo<Movement>& info) { return movement_name(info.param); });

}  // namespace
}  // namespace pgrelay::test
