// Real clients through pgrelay against a real primary + 2 hot standbys: psql, COPY, pgbench,
// pg_basebackup, pg_receivewal, replication commands, cancel, TLS and graceful stop.
#include <gtest/gtest.h>
#include <signal.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "cluster_fixture.hpp"

namespace pgrelay::test {
namespace {

using namespace std::chrono_literals;

class RelayTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto [cert, key] = Cluster::get().tls_files();
    proxy_ = new Proxy("[tls]\ncert = \"" + cert + "\"\nkey = \"" + key + "\"\n");
  }
  static void TearDownTestSuite() {
    delete proxy_;
    proxy_ = nullptr;
  }
  static std::string psql(const std::string& args) {
    return run(proxy_->env() + "psql -X -At -v ON_ERROR_STOP=1 " + args).output;
  }
  static Proxy* proxy_;
};

Proxy* RelayTest::proxy_ = nullptr;

TEST_F(RelayTest, SimpleQueryReachesThePrimary) {
  const auto result = run(proxy_->env() + "psql -X -At -c 'SELECT 40 + 2, pg_is_in_recovery()'");
  EXPECT_EQ(result.status, 0) << result.output;
  EXPECT_EQ(result.output, "42|f\n");
}

TEST_F(RelayTest, MultiStatementQueryReturnsEveryResult) {
  const auto out = psql("-c 'SELECT 1; SELECT 2; SELECT 3'");
  EXPECT_EQ(out, "1\n2\n3\n");
}

TEST_F(RelayTest, ErrorInsideTransactionAbortsItAndTheSessionRecovers) {
  const auto result = run(proxy_->env() +
                          "psql -X -At -c 'BEGIN' -c 'SELECT 1/0' -c 'SELECT 1' -c 'ROLLBACK' "
                          "-c \"SELECT 'after'\"");
  EXPECT_NE(result.output.find("division by zero"), std::string::npos) << result.output;
  EXPECT_NE(result.output.find("current transaction is aborted"), std::string::npos)
      << result.output;
  EXPECT_NE(result.output.find("after"), std::string::npos) << result.output;
}

TEST_F(RelayTest, LargeResultArrivesIntact) {
  const std::string query =
      "SELECT i, md5(i::text), repeat('x', 200) FROM generate_series(1, 200000) i";
  const auto through = run(proxy_->env() + "psql -X -At -c \"" + query + "\" | md5sum");
  const auto& primary = Cluster::get().node("node1");
  const auto direct = run("PGPASSWORD=app psql -X -At -h 127.0.0.1 -U app -d app -p " +
                          std::to_string(primary.port) + " -c \"" + query + "\" | md5sum");
  EXPECT_EQ(through.status, 0);
  EXPECT_EQ(through.output, direct.output);
  PgConn conn(proxy_->conninfo());
  ASSERT_TRUE(conn.ok()) << conn.error();
  EXPECT_EQ(conn.value("SELECT count(*) FROM (" + query + ") q"), "200000");
}

TEST_F(RelayTest, CopyInAndOutRoundTrip) {
  const std::string dir = Cluster::get().dir();
  const std::string in = dir + "/copy-in.csv";
  const std::string out = dir + "/copy-out.csv";
  ASSERT_EQ(run("seq 1 50000 | awk '{print $1\",row \"$1}' > " + in).status, 0);
  const auto result = run(proxy_->env() +
                          "psql -X -v ON_ERROR_STOP=1 "
                          "-c 'DROP TABLE IF EXISTS copy_t' "
                          "-c 'CREATE TABLE copy_t (id int, label text)' "
                          "-c \"\\copy copy_t FROM '" +
                          in +
                          "' WITH (FORMAT csv)\" "
                          "-c \"\\copy (SELECT * FROM copy_t ORDER BY id) TO '" +
                          out + "' WITH (FORMAT csv)\"");
  ASSERT_EQ(result.status, 0) << result.output;
  EXPECT_NE(result.output.find("COPY 50000"), std::string::npos) << result.output;
  EXPECT_EQ(run("cmp " + in + " " + out).status, 0);
}

TEST_F(RelayTest, PgbenchSimpleAndExtendedRunWithoutErrors) {
  auto init = run(proxy_->env() + "pgbench -i -s 2 -q app");
  ASSERT_EQ(init.status, 0) << init.output;
  for (const std::string mode : {"simple", "extended"}) {
    const auto bench = run(proxy_->env() + "pgbench -n -c 4 -j 2 -T 5 -M " + mode + " app");
    EXPECT_EQ(bench.status, 0) << bench.output;
    EXPECT_NE(bench.output.find("number of failed transactions: 0 "), std::string::npos)
        << bench.output;
    EXPECT_NE(bench.output.find("tps = "), std::string::npos) << bench.output;
  }
}

TEST_F(RelayTest, PgBasebackupThroughTheProxy) {
  const std::string target = Cluster::get().dir() + "/basebackup";
  const auto result = run(proxy_->env() + "pg_basebackup -D " + target + " -X stream -c fast");
  ASSERT_EQ(result.status, 0) << result.output;
  EXPECT_TRUE(std::filesystem::exists(target + "/PG_VERSION"));
  EXPECT_TRUE(std::filesystem::exists(target + "/global/pg_control"));
  std::filesystem::remove_all(target);
}

TEST_F(RelayTest, PgReceivewalStreamsACompleteSegment) {
  const std::string target = Cluster::get().dir() + "/receivewal";
  std::filesystem::create_directories(target);
  std::thread writer([] {
    std::this_thread::sleep_for(1500ms);
    Cluster::get().sql("node1",
                       "CREATE TABLE IF NOT EXISTS wal_t AS SELECT 1 AS x;"
                       "SELECT pg_switch_wal();");
  });
  const auto result = run(proxy_->env() + "timeout 5 pg_receivewal -n -D " + target);
  writer.join();
  // timeout ends pg_receivewal with SIGTERM (status 124); it must not have failed on its own.
  EXPECT_EQ(result.status, 124) << result.output;
  bool complete_segment = false;
  for (const auto& entry : std::filesystem::directory_iterator(target)) {
    const auto name = entry.path().filename().string();
    if (name.size() == 24 && name.find('.') == std::string::npos) complete_segment = true;
  }
  EXPECT_TRUE(complete_segment) << result.output;
  std::filesystem::remove_all(target);
}

TEST_F(RelayTest, IdentifySystemOnPhysicalAndLogicalReplicationConnections) {
  const std::string system_id =
      Cluster::get().sql("node1", "SELECT system_identifier FROM pg_control_system()");
  ASSERT_FALSE(system_id.empty());
  for (const std::string replication : {"true", "database", "on", "1", "yes"}) {
    const auto result = run("psql -X -At \"" + proxy_->conninfo("replication=" + replication) +
                            "\" -c IDENTIFY_SYSTEM");
    EXPECT_EQ(result.status, 0) << result.output;
    EXPECT_EQ(result.output.rfind(system_id + "|", 0), 0U) << replication << ": " << result.output;
  }
}

TEST_F(RelayTest, CancelRequestStopsTheRunningQuery) {
  PgConn conn(proxy_->conninfo());
  ASSERT_TRUE(conn.ok()) << conn.error();
  ASSERT_EQ(PQsendQuery(conn.conn, "SELECT pg_sleep(30)"), 1);
  std::this_thread::sleep_for(300ms);
  const auto started = std::chrono::steady_clock::now();
  PGcancel* cancel = PQgetCancel(conn.conn);
  char err[256];
  ASSERT_EQ(PQcancel(cancel, err, sizeof err), 1) << err;
  PQfreeCancel(cancel);
  PGresult* res = PQgetResult(conn.conn);
  const auto elapsed = std::chrono::steady_clock::now() - started;
  ASSERT_NE(res, nullptr);
  EXPECT_EQ(PQresultStatus(res), PGRES_FATAL_ERROR);
  const char* state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
  EXPECT_STREQ(state ? state : "", "57014");
  PQclear(res);
  while ((res = PQgetResult(conn.conn)) != nullptr) PQclear(res);
  EXPECT_LT(elapsed, 5s);
  EXPECT_EQ(conn.value("SELECT 'still usable'"), "still usable");
}

TEST_F(RelayTest, CancelKeyIsPgrelaysOwnNotTheServers) {
  PgConn conn(proxy_->conninfo());
  ASSERT_TRUE(conn.ok());
  const int client_pid = PQbackendPID(conn.conn);
  const std::string server_pid = conn.value("SELECT pg_backend_pid()");
  EXPECT_NE(std::to_string(client_pid), server_pid);
}

TEST_F(RelayTest, UnknownCancelKeyIsIgnored) {
  PgConn conn(proxy_->conninfo());
  ASSERT_TRUE(conn.ok());
  ASSERT_EQ(PQsendQuery(conn.conn, "SELECT pg_sleep(1), 'finished'"), 1);
  {
    RawSocket raw(proxy_->port());
    const std::uint8_t cancel[16] = {0, 0, 0, 16, 0x04, 0xd2, 0x16, 0x2e, 0, 0, 0, 7, 0, 0, 0, 9};
    ASSERT_TRUE(raw.send(cancel, sizeof cancel));
    EXPECT_TRUE(raw.closed_within(2s));
  }
  PGresult* res = PQgetResult(conn.conn);
  ASSERT_NE(res, nullptr);
  EXPECT_EQ(PQresultStatus(res), PGRES_TUPLES_OK) << PQresultErrorMessage(res);
  PQclear(res);
  while ((res = PQgetResult(conn.conn)) != nullptr) PQclear(res);
}

TEST_F(RelayTest, TlsWithSslmodeRequire) {
  PgConn conn("host=127.0.0.1 port=" + std::to_string(proxy_->port()) +
              " user=app password=app dbname=app sslmode=require");
  ASSERT_TRUE(conn.ok()) << conn.error();
  EXPECT_EQ(PQsslInUse(conn.conn), 1);
  EXPECT_EQ(conn.value("SELECT count(*) FROM generate_series(1, 100000)"), "100000");
  const auto result = run(
      proxy_->env() + "PGSSLMODE=require psql -X -At -c \"SELECT repeat('y', 100000)\" | wc -c");
  EXPECT_EQ(result.output, "100001\n");
}

TEST_F(RelayTest, SigtermLetsTheOpenTransactionCommitAndClosesIdleClients) {
  Proxy proxy;
  PgConn busy(proxy.conninfo());
  PgConn idle(proxy.conninfo());
  ASSERT_TRUE(busy.ok() && idle.ok());
  ASSERT_EQ(busy.value("CREATE TABLE IF NOT EXISTS graceful_t (v text)"), "");
  ASSERT_EQ(busy.value("BEGIN"), "");
  ASSERT_EQ(busy.value("INSERT INTO graceful_t VALUES ('in flight')"), "");

  std::thread stopper([&] { proxy.stop(SIGTERM); });
  std::this_thread::sleep_for(500ms);
  // The idle client was told and closed.
  EXPECT_NE(idle.value("SELECT 1").find("ERROR"), std::string::npos);
  // The client inside a transaction finishes it.
  EXPECT_EQ(busy.value("INSERT INTO graceful_t VALUES ('second')"), "");
  EXPECT_EQ(busy.value("COMMIT"), "");
  stopper.join();
  EXPECT_EQ(Cluster::get().sql("node1", "SELECT count(*) FROM graceful_t"), "2");
  EXPECT_NE(busy.value("SELECT 1").find("ERROR"), std::string::npos);
  const auto log = proxy.log();
  EXPECT_NE(log.find("stopped"), std::string::npos) << log;
}

TEST_F(RelayTest, SighupReloadsLimitsAndKeepsClientsAndABrokenFileIsRejected) {
  Proxy proxy("[limits]\nmax_clients = 1\n");
  // The fixture's own readiness probe is a client too until pgrelay sees it close.
  std::unique_ptr<PgConn> connected;
  for (int i = 0; i < 100 && !(connected && connected->ok()); ++i) {
    if (connected) std::this_thread::sleep_for(20ms);
    connected = std::make_unique<PgConn>(proxy.conninfo());
  }
  PgConn& first = *connected;
  ASSERT_TRUE(first.ok()) << first.error();
  {
    PgConn refused(proxy.conninfo());
    EXPECT_FALSE(refused.ok());
    EXPECT_NE(refused.error().find("too many clients"), std::string::npos) << refused.error();
  }
  // Raise the limit and reload: the open session stays, a second client gets in.
  const std::string original = [&] {
    std::ifstream in(proxy.config_path());
    std::ostringstream text;
    text << in.rdbuf();
    return text.str();
  }();
  std::string raised = original;
  raised.replace(raised.find("max_clients = 1"), 15, "max_clients = 5");
  std::ofstream(proxy.config_path()) << raised;
  ASSERT_EQ(::kill(proxy.pid(), SIGHUP), 0);
  bool reloaded = false;
  for (int i = 0; i < 100 && !reloaded; ++i) {
    reloaded = proxy.log().find("configuration reloaded") != std::string::npos;
    if (!reloaded) std::this_thread::sleep_for(20ms);
  }
  ASSERT_TRUE(reloaded) << proxy.log();
  PgConn second(proxy.conninfo());
  EXPECT_TRUE(second.ok()) << second.error();
  EXPECT_EQ(first.value("SELECT 'kept'"), "kept");

  // A file with an error is rejected; the running configuration stays.
  std::ofstream(proxy.config_path()) << raised << "\n[listen]\nbogus = 1\n";
  ASSERT_EQ(::kill(proxy.pid(), SIGHUP), 0);
  bool rejected = false;
  for (int i = 0; i < 100 && !rejected; ++i) {
    rejected = proxy.log().find("reload failed") != std::string::npos;
    if (!rejected) std::this_thread::sleep_for(20ms);
  }
  EXPECT_TRUE(rejected) << proxy.log();
  PgConn third(proxy.conninfo());
  EXPECT_TRUE(third.ok()) << third.error();
  EXPECT_EQ(second.value("SELECT 'still here'"), "still here");
}

}  // namespace
}  // namespace pgrelay::test
