// Primary discovery through a failover: the primary stops, a standby is promoted, new connections
// land on it; the old primary restarted on its old timeline is fenced and gets no traffic.
#include <gtest/gtest.h>

#include <future>
#include <thread>

#include "cluster_fixture.hpp"

namespace pgrelay::test {
namespace {

using namespace std::chrono_literals;

TEST(Failover, NewConnectionsFollowAPromotedStandbyAndTheOldPrimaryIsFenced) {
  auto& cluster = Cluster::get();
  const std::string node1_port = std::to_string(cluster.node("node1").port);
  const std::string node2_port = std::to_string(cluster.node("node2").port);
  Proxy proxy("[routing]\nread_write_split = false\nprimary_wait_ms = 20000\n");

  PgConn before(proxy.conninfo());
  ASSERT_TRUE(before.ok()) << before.error();
  EXPECT_EQ(before.value("SELECT inet_server_port()"), node1_port);
  ASSERT_EQ(before.value("CREATE TABLE failover_t (id int)"), "");
  // Let the standbys replay the table before the primary goes away.
  for (int i = 0; i < 100; ++i) {
    if (cluster.sql("node2", "SELECT to_regclass('failover_t') IS NOT NULL") == "t") break;
    std::this_thread::sleep_for(50ms);
  }

  ASSERT_EQ(cluster.script("stop immediate node1").status, 0);
  // The session on the lost primary is told, not left hanging.
  EXPECT_NE(before.value("SELECT 1").find("ERROR"), std::string::npos);

  // A client connecting while there is no primary waits for one.
  auto waiting = std::async(std::launch::async, [&] {
    PgConn conn(proxy.conninfo());
    if (!conn.ok()) return "connect failed: " + conn.error();
    return conn.value("INSERT INTO failover_t VALUES (1) RETURNING inet_server_port()");
  });
  std::this_thread::sleep_for(700ms);
  const auto promoted_at = std::chrono::steady_clock::now();
  ASSERT_EQ(cluster.script("promote node2").status, 0);
  ASSERT_EQ(waiting.wait_for(15s), std::future_status::ready);
  EXPECT_EQ(waiting.get(), node2_port);

  PgConn after(proxy.conninfo());
  ASSERT_TRUE(after.ok()) << after.error();
  EXPECT_EQ(after.value("INSERT INTO failover_t VALUES (2) RETURNING inet_server_port()"),
            node2_port);
  const auto promote_to_write = std::chrono::steady_clock::now() - promoted_at;
  std::cout << "promote to first write through pgrelay: "
            << std::chrono::duration_cast<std::chrono::milliseconds>(promote_to_write).count()
            << " ms\n";

  // The old primary comes back without standby.signal: still timeline 1, so it is fenced.
  ASSERT_EQ(cluster.script("start node1").status, 0);
  bool fenced = false;
  for (int i = 0; i < 100 && !fenced; ++i) {
    fenced = proxy.log().find("backend node1 (127.0.0.1:" + node1_port + "): role") !=
                 std::string::npos &&
             proxy.log().find("-> fenced") != std::string::npos;
    if (!fenced) std::this_thread::sleep_for(50ms);
  }
  EXPECT_TRUE(fenced) << proxy.log();
  for (int i = 0; i < 5; ++i) {
    PgConn conn(proxy.conninfo());
    ASSERT_TRUE(conn.ok()) << conn.error();
    EXPECT_EQ(conn.value("SELECT inet_server_port()"), node2_port);
  }
  EXPECT_EQ(cluster.sql("node1", "SELECT count(*) FROM failover_t"), "0");
}

}  // namespace
}  // namespace pgrelay::test
