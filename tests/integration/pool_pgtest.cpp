// Pooled sessions against a real cluster: pgrelay's own client authentication (SCRAM, md5,
// trust, PgBouncer userlists), transaction and session pooling with real clients, session state
// and prepared statements that follow a client across server connections, pinning, pool
// exhaustion and cancel.
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "cluster_fixture.hpp"
#include "prometheus_text.hpp"

namespace pgrelay::test {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

// ------------------------------------------------------------------------------------------
// Helpers
// ------------------------------------------------------------------------------------------

/// The SCRAM verifier PostgreSQL stores for role `app` (password "app").
std::string app_verifier() {
  static const std::string verifier =
      Cluster::get().sql("node1", "SELECT rolpassword FROM pg_authid WHERE rolname = 'app'");
  return verifier;
}

/// Writes a userlist file into the cluster directory and returns its absolute path.
std::string write_userlist(const std::string& name, const std::string& text) {
  const std::string path = Cluster::get().dir() + "/" + name;
  std::ofstream(path) << text;
  return path;
}

/// [auth] and [pool] tables for a Proxy.
std::string pooled_toml(const std::string& method, const std::string& userlist,
                        const std::string& pool_keys) {
  return "[auth]\nmethod = \"" + method + "\"\nfile = \"" + userlist + "\"\n\n[pool]\n" +
         pool_keys + "\n";
}

/// The last `n` characters of a proxy log, for failure messages.
std::string log_tail(const Proxy& proxy, std::size_t n = 4000) {
  const std::string log = proxy.log();
  return log.size() <= n ? log : "..." + log.substr(log.size() - n);
}

/// "ERROR: <sqlstate> <primary message>" of a failed result, or its first value; clears it.
std::string outcome(PGresult* res, PGconn* conn) {
  std::string out;
  const auto status = PQresultStatus(res);
  if (status == PGRES_TUPLES_OK && PQntuples(res) > 0) {
    out = PQgetvalue(res, 0, 0);
  } else if (status == PGRES_FATAL_ERROR || status == PGRES_NONFATAL_ERROR) {
    const char* state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    const char* message = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
    out = std::string("ERROR: ") + (state ? state : "?") + " " +
          (message ? message : PQerrorMessage(conn));
  } else if (status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK) {
    out = std::string("UNEXPECTED: ") + PQresStatus(status) + " " + PQerrorMessage(conn);
  }
  PQclear(res);
  return out;
}

std::string exec_prepared(PGconn* conn, const std::string& name, const std::string& param) {
  const char* values[] = {param.c_str()};
  return outcome(PQexecPrepared(conn, name.c_str(), 1, values, nullptr, nullptr, 0), conn);
}

std::string prepare(PGconn* conn, const std::string& name, const std::string& query) {
  return outcome(PQprepare(conn, name.c_str(), query.c_str(), 1, nullptr), conn);
}

/// A libpq connection opened with PQconnectStart and verbose errors, so a login failure's text
/// carries the SQLSTATE ("FATAL:  28P01: password authentication failed ...").
class VerboseConn {
 public:
  explicit VerboseConn(const std::string& conninfo) : conn_(PQconnectStart(conninfo.c_str())) {
    const auto started = Clock::now();
    PQsetErrorVerbosity(conn_, PQERRORS_VERBOSE);
    auto status = PGRES_POLLING_WRITING;
    while (status != PGRES_POLLING_OK && status != PGRES_POLLING_FAILED &&
           PQstatus(conn_) != CONNECTION_BAD) {
      pollfd p{PQsocket(conn_),
               static_cast<short>(status == PGRES_POLLING_READING ? POLLIN : POLLOUT), 0};
      if (::poll(&p, 1, 20000) <= 0) break;
      status = PQconnectPoll(conn_);
    }
    login_time_ = Clock::now() - started;
  }
  ~VerboseConn() { PQfinish(conn_); }
  VerboseConn(const VerboseConn&) = delete;
  VerboseConn& operator=(const VerboseConn&) = delete;

  [[nodiscard]] bool ok() const { return PQstatus(conn_) == CONNECTION_OK; }
  [[nodiscard]] std::string error() const { return PQerrorMessage(conn_); }
  [[nodiscard]] Clock::duration login_time() const { return login_time_; }
  [[nodiscard]] PGconn* get() const { return conn_; }
  std::string value(const std::string& query) {
    return outcome(PQexec(conn_, query.c_str()), conn_);
  }

 private:
  PGconn* conn_;
  Clock::duration login_time_{};
};

/// The first authentication request pgrelay sends for a startup packet of `user`: the
/// message type ('R', 'E', or 0 when nothing came), the Authentication code, and the rest.
struct AuthRequest {
  char type = 0;
  int code = -1;
  std::string rest;
};

AuthRequest first_auth_request(int port, const std::string& user) {
  std::vector<std::uint8_t> packet(8, 0);
  const std::uint32_t version = 196608;  // 3.0
  for (int i = 0; i < 4; ++i) packet[4 + i] = static_cast<std::uint8_t>(version >> (24 - 8 * i));
  for (const std::string& part :
       {std::string("user"), user, std::string("database"), std::string("app")}) {
    packet.insert(packet.end(), part.begin(), part.end());
    packet.push_back(0);
  }
  packet.push_back(0);
  const auto size = static_cast<std::uint32_t>(packet.size());
  for (int i = 0; i < 4; ++i) packet[i] = static_cast<std::uint8_t>(size >> (24 - 8 * i));

  AuthRequest request;
  RawSocket raw(port);
  if (!raw.connected() || !raw.send(packet)) return request;
  const auto head = raw.read_n(5, 5s);
  if (head.size() < 5) return request;
  request.type = static_cast<char>(head[0]);
  const std::uint32_t length = (std::uint32_t{head[1]} << 24) | (std::uint32_t{head[2]} << 16) |
                               (std::uint32_t{head[3]} << 8) | head[4];
  if (length < 4) return request;
  const auto body = raw.read_n(length - 4, 5s);
  if (request.type == 'R' && body.size() >= 4) {
    request.code =
        static_cast<int>((std::uint32_t{body[0]} << 24) | (std::uint32_t{body[1]} << 16) |
                         (std::uint32_t{body[2]} << 8) | body[3]);
    request.rest.assign(body.begin() + 4, body.end());
  } else {
    request.rest.assign(body.begin(), body.end());
  }
  return request;
}

constexpr int kAuthOk = 0;
constexpr int kAuthMd5 = 5;
constexpr int kAuthSasl = 10;

std::string failed_login(const std::string& user) {
  // The exact line libpq prints for the ErrorResponse with verbose errors.
  return "FATAL:  28P01: password authentication failed for user \"" + user + "\"\n";
}

/// Login and a query through a proxy whose userlist knows `app`: by libpq and by psql.
void expect_login_works(const Proxy& proxy) {
  PgConn conn(proxy.conninfo());
  ASSERT_TRUE(conn.ok()) << conn.error() << log_tail(proxy);
  EXPECT_EQ(conn.value("SELECT 1"), "1");
  EXPECT_EQ(conn.value("SELECT current_user"), "app");
  const auto psql = run(proxy.env() + "psql -X -At -c 'SELECT 1'");
  EXPECT_EQ(psql.status, 0) << psql.output;
  EXPECT_EQ(psql.output, "1\n");
}

/// A login with the wrong password or an unknown user: FATAL 28P01 with PostgreSQL's message.
void expect_login_refused(const Proxy& proxy, const std::string& user,
                          const std::string& password) {
  VerboseConn conn(proxy.conninfo("user=" + user + " password=" + password));
  EXPECT_FALSE(conn.ok());
  EXPECT_NE(conn.error().find(failed_login(user)), std::string::npos)
      << "user " << user << ": " << conn.error();
  // Plain PQconnectdb (default verbosity) reports the same message.
  PgConn plain(proxy.conninfo("user=" + user + " password=" + password));
  EXPECT_FALSE(plain.ok());
  EXPECT_NE(plain.error().find("FATAL:  password authentication failed for user \"" + user + "\""),
            std::string::npos)
      << plain.error();
}

/// pg_backend_pid() of the server connection that runs the client's next statement.
std::string backend_pid(PGconn* conn) {
  return outcome(PQexec(conn, "SELECT pg_backend_pid()"), conn);
}

/// A direct connection to node1 (not through pgrelay), for watching pg_stat_activity.
std::string node1_conninfo() {
  return "host=127.0.0.1 port=" + std::to_string(Cluster::get().node("node1").port) +
         " user=app password=app dbname=app sslmode=disable application_name=pool_pgtest_watch";
}

const std::string kCountAppBackends =
    "SELECT count(*) FROM pg_stat_activity WHERE usename = 'app' AND backend_type = 'client "
    "backend' AND pid <> pg_backend_pid()";

// ------------------------------------------------------------------------------------------
// 1-4. Client authentication
// ------------------------------------------------------------------------------------------

TEST(PoolAuthTest, ScramVerifierInUserlist) {
  ASSERT_EQ(app_verifier().rfind("SCRAM-SHA-256$", 0), 0U) << app_verifier();
  const auto userlist =
      write_userlist("userlist-scram.txt", "\"app\" \"" + app_verifier() + "\"\n");
  Proxy proxy(pooled_toml("scram-sha-256", userlist, "mode = \"transaction\"\nmax_size = 4"));

  // pgrelay itself asks for SCRAM, for a known user and for an unknown one alike.
  for (const std::string user : {"app", "nobody"}) {
    const auto request = first_auth_request(proxy.port(), user);
    EXPECT_EQ(request.type, 'R') << user << ": " << request.rest;
    EXPECT_EQ(request.code, kAuthSasl) << user;
    EXPECT_NE(request.rest.find("SCRAM-SHA-256"), std::string::npos) << user;
  }

  expect_login_works(proxy);
  expect_login_refused(proxy, "app", "wrong");
  expect_login_refused(proxy, "nobody", "app");

  // The unknown user's error comes after a password exchange: without a password libpq
  // cannot even answer.
  PgConn nopassword(proxy.conninfo("user=nobody password='' passfile=/nonexistent"));
  EXPECT_FALSE(nopassword.ok());
  EXPECT_NE(nopassword.error().find("no password supplied"), std::string::npos)
      << nopassword.error();
}

TEST(PoolAuthTest, AuthQueryFetchesSecretsThroughTheMonitorRole) {
  // The documented set-up: a SECURITY DEFINER function the monitor role may call.
  Cluster::get().sql(
      "node1",
      "CREATE OR REPLACE FUNCTION public.pool_pgtest_lookup(u text, OUT usename name, OUT passwd "
      "text) RETURNS record LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog AS "
      "$$ SELECT usename, passwd FROM pg_shadow WHERE usename = u $$; "
      "REVOKE ALL ON FUNCTION public.pool_pgtest_lookup(text) FROM public; "
      "GRANT EXECUTE ON FUNCTION public.pool_pgtest_lookup(text) TO pgrelay");
  Proxy proxy(
      "[auth]\nmethod = \"scram-sha-256\"\nquery = \"SELECT usename, passwd FROM "
      "public.pool_pgtest_lookup($1)\"\ncache_ttl_ms = 60000\n\n[pool]\nmode = \"transaction\"\n\n"
      "[monitor]\nuser = \"pgrelay\"\npassword = \"pgrelay\"\ninterval_ms = 200\n"
      "database = \"app\"\n");
  expect_login_works(proxy);
  expect_login_refused(proxy, "app", "wrong");
  expect_login_refused(proxy, "nobody", "app");
  // Cached: the lookup function is gone, logins keep working until the TTL.
  Cluster::get().sql("node1",
                     "REVOKE EXECUTE ON FUNCTION public.pool_pgtest_lookup(text) FROM pgrelay");
  PgConn again(proxy.conninfo());
  EXPECT_TRUE(again.ok()) << again.error() << log_tail(proxy);
  Cluster::get().sql("node1", "DROP FUNCTION public.pool_pgtest_lookup(text)");
}

TEST(PoolAuthTest, ScramPlusOverTls) {
  const auto [cert, key] = Cluster::get().tls_files();
  const auto userlist = write_userlist("userlist-plus.txt", "\"app\" \"" + app_verifier() + "\"\n");
  Proxy proxy(pooled_toml("scram-sha-256", userlist, "mode = \"transaction\"") +
              "\n[tls]\ncert = \"" + cert + "\"\nkey = \"" + key + "\"\n");
  // channel_binding=require makes libpq insist on SCRAM-SHA-256-PLUS.
  PgConn plus(proxy.conninfo("sslmode=require channel_binding=require"));
  ASSERT_TRUE(plus.ok()) << plus.error() << log_tail(proxy);
  EXPECT_EQ(plus.value("SELECT 1"), "1");
  PgConn wrong(proxy.conninfo("sslmode=require channel_binding=require password=wrong"));
  EXPECT_FALSE(wrong.ok());
  EXPECT_NE(wrong.error().find("password authentication failed for user \"app\""),
            std::string::npos)
      << wrong.error();
  // Without TLS there is no channel binding to offer.
  PgConn plain(proxy.conninfo("sslmode=disable channel_binding=require"));
  EXPECT_FALSE(plain.ok());
}

TEST(PoolAuthTest, BackendThatRefusesTheLoginIsNamed) {
  // pgrelay accepts the client (its userlist says so) but the backend does not: the client gets
  // the backend's own error, with a detail naming the backend.
  const auto userlist = write_userlist("userlist-stale.txt", "\"app\" \"stale-password\"\n");
  Proxy proxy(pooled_toml("scram-sha-256", userlist, "mode = \"transaction\""));
  VerboseConn conn(proxy.conninfo("password=stale-password"));
  EXPECT_FALSE(conn.ok());
  EXPECT_NE(conn.error().find("FATAL:  28P01: password authentication failed for user \"app\""),
            std::string::npos)
      << conn.error();
  EXPECT_NE(conn.error().find("DETAIL:  pgrelay could not log in to backend \"node1\""),
            std::string::npos)
      << conn.error();
}

TEST(PoolAuthTest, PlainTextPasswordWithScram) {
  const auto userlist = write_userlist("userlist-plain.txt", "\"app\" \"app\"\n");
  Proxy proxy(pooled_toml("scram-sha-256", userlist, "mode = \"transaction\"\nmax_size = 4"));
  const auto request = first_auth_request(proxy.port(), "app");
  EXPECT_EQ(request.type, 'R');
  EXPECT_EQ(request.code, kAuthSasl);
  expect_login_works(proxy);
  expect_login_refused(proxy, "app", "wrong");
  expect_login_refused(proxy, "nobody", "app");
}

TEST(PoolAuthTest, PlainTextPasswordWithMd5) {
  const auto userlist = write_userlist("userlist-plain-md5.txt", "\"app\" \"app\"\n");
  Proxy proxy(pooled_toml("md5", userlist, "mode = \"transaction\"\nmax_size = 4"));
  // libpq answers what it is asked: an MD5 challenge.
  const auto request = first_auth_request(proxy.port(), "app");
  EXPECT_EQ(request.type, 'R');
  EXPECT_EQ(request.code, kAuthMd5);
  EXPECT_EQ(request.rest.size(), 4U);  // the salt
  expect_login_works(proxy);
  expect_login_refused(proxy, "app", "wrong");
  expect_login_refused(proxy, "nobody", "app");
}

TEST(PoolAuthTest, TrustNeedsNoPassword) {
  const auto userlist = write_userlist("userlist-trust.txt", "\"app\" \"app\"\n");
  Proxy proxy(pooled_toml("trust", userlist, "mode = \"transaction\"\nmax_size = 4"));
  const auto request = first_auth_request(proxy.port(), "app");
  EXPECT_EQ(request.type, 'R');
  EXPECT_EQ(request.code, kAuthOk);
  PgConn conn(proxy.conninfo("password='' passfile=/nonexistent"));
  ASSERT_TRUE(conn.ok()) << conn.error() << log_tail(proxy);
  EXPECT_EQ(conn.value("SELECT current_user"), "app");
  const auto psql = run("PGHOST=127.0.0.1 PGPORT=" + std::to_string(proxy.port()) +
                        " PGUSER=app PGDATABASE=app PGSSLMODE=disable PGPASSFILE=/nonexistent "
                        "psql -X -At -w -c 'SELECT 2'");
  EXPECT_EQ(psql.status, 0) << psql.output;
  EXPECT_EQ(psql.output, "2\n");

  // A client that sends its first query with the startup packet, before the
  // login finished, gets it answered: bytes read along with the startup packet are relayed.
  std::vector<std::uint8_t> packet(8, 0);
  const std::uint32_t version = 196608;
  for (int i = 0; i < 4; ++i) packet[4 + i] = static_cast<std::uint8_t>(version >> (24 - 8 * i));
  for (const std::string part : {"user", "app", "database", "app"}) {
    packet.insert(packet.end(), part.begin(), part.end());
    packet.push_back(0);
  }
  packet.push_back(0);
  for (int i = 0; i < 4; ++i) {
    packet[i] = static_cast<std::uint8_t>(packet.size() >> (24 - 8 * i));
  }
  const std::string sql = "SELECT 40 + 2 AS pipelined";
  packet.push_back('Q');
  const auto query_length = static_cast<std::uint32_t>(4 + sql.size() + 1);
  for (int i = 0; i < 4; ++i)
    packet.push_back(static_cast<std::uint8_t>(query_length >> (24 - 8 * i)));
  packet.insert(packet.end(), sql.begin(), sql.end());
  packet.push_back(0);
  RawSocket raw(proxy.port());
  ASSERT_TRUE(raw.send(packet));
  const auto reply = raw.read_all(2s);
  const std::string text(reply.begin(), reply.end());
  EXPECT_EQ(first_error(reply), "");
  EXPECT_NE(text.find("pipelined"), std::string::npos);
  EXPECT_NE(text.find(std::string("\0\0\0\x02"
                                  "42",
                                  6)),
            std::string::npos);
  EXPECT_NE(text.find("SELECT 1"), std::string::npos);
}

TEST(PoolAuthTest, PgBouncerUserlistWithCommentsAndBlankLinesWorksUnchanged) {
  const std::string text =
      ";; PgBouncer userlist.txt, as written by its admin scripts\n"
      "; user \"app\" is the application\n"
      "\n"
      "   \n"
      "\"app\" \"" +
      app_verifier() +
      "\"\n"
      ";\"app\" \"commented-out\"\n"
      "\"nopass\" \"\"\n"
      "\t\"md5user\"\t\"md5ab60ff6a1bfb52b0f3b1f31d6bd4d4f7\"   \n"
      "\n";
  const auto userlist = write_userlist("userlist-pgbouncer.txt", text);
  Proxy proxy(pooled_toml("scram-sha-256", userlist, "mode = \"transaction\"\nmax_size = 4"));
  expect_login_works(proxy);
  expect_login_refused(proxy, "app", "commented-out");
  // An empty password never logs in with a password method (as in PostgreSQL and PgBouncer).
  expect_login_refused(proxy, "nopass", "x");
  // Three users: the commented-out line is no entry.
  EXPECT_NE(proxy.log().find("3 users loaded from " + userlist), std::string::npos)
      << log_tail(proxy);
}

// ------------------------------------------------------------------------------------------
// 5. Transaction pooling under pgbench
// ------------------------------------------------------------------------------------------

/// The number a counting query returns; 0 when it returns nothing (the connection failed).
int count_of(PgConn& conn, const std::string& query) {
  const std::string value = conn.value(query);
  return value.empty() ? 0 : std::stoi(value);
}

TEST(PoolBenchTest, PgbenchWithMoreClientsThanServerConnections) {
  const auto& node1 = Cluster::get().node("node1");
  const auto init = run("PGPASSWORD=app pgbench -i -s 1 -q -h 127.0.0.1 -U app -p " +
                        std::to_string(node1.port) + " app");
  ASSERT_EQ(init.status, 0) << init.output;

  PgConn watch(node1_conninfo());
  ASSERT_TRUE(watch.ok()) << watch.error();
  // Earlier tests' proxies are gone; wait until their server connections are too.
  for (int i = 0; i < 100 && watch.value(kCountAppBackends) != "0"; ++i) {
    std::this_thread::sleep_for(100ms);
  }
  ASSERT_EQ(watch.value(kCountAppBackends), "0");

  const auto userlist =
      write_userlist("userlist-bench.txt", "\"app\" \"" + app_verifier() + "\"\n");
  // 4 server connections for the process: 2 per worker.
  Proxy proxy(pooled_toml("scram-sha-256", userlist, "mode = \"transaction\"\nmax_size = 4"));

  for (const std::string script : {"-S", "-b tpcb-like"}) {
    for (const std::string mode : {"simple", "extended", "prepared"}) {
      std::atomic<bool> done{false};
      int most = 0;
      std::thread sampler([&] {
        while (!done) {
          most = std::max(most, count_of(watch, kCountAppBackends));
          std::this_thread::sleep_for(50ms);
        }
      });
      const auto bench =
          run(proxy.env() + "pgbench -n -c 12 -j 2 -T 3 -M " + mode + " " + script + " app");
      done = true;
      sampler.join();
      const std::string what = mode + " " + script;
      EXPECT_EQ(bench.status, 0) << what << "\n" << bench.output << log_tail(proxy);
      EXPECT_NE(bench.output.find("number of failed transactions: 0 "), std::string::npos)
          << what << "\n"
          << bench.output;
      EXPECT_NE(bench.output.find("number of clients: 12"), std::string::npos) << bench.output;
      EXPECT_GE(most, 1) << what << ": the sampler saw no server connection at all";
      EXPECT_LE(most, 4) << what << ": more server connections than [pool] max_size";
    }
  }
  // Afterwards the pool keeps at most max_size connections, all idle (given a moment: the last
  // clients' connections go back as their last answers are relayed).
  int after = count_of(watch, kCountAppBackends);
  for (int i = 0; i < 20 && after == 0; ++i) {
    std::this_thread::sleep_for(100ms);
    after = count_of(watch, kCountAppBackends);
  }
  EXPECT_GE(after, 1);
  EXPECT_LE(after, 4);
  EXPECT_EQ(watch.value(kCountAppBackends + " AND state <> 'idle'"), "0");
}

// ------------------------------------------------------------------------------------------
// 6-7. Session state and prepared statements across server connections
// ------------------------------------------------------------------------------------------

/// How a client's transactions meet server connections.
enum class Movement {
  /// max_size = 2, i.e. one connection per worker: four clients share at most two connections,
  /// so connections carry other clients' state between one client's transactions.
  kShared,
  /// lifetime_ms = 1: every transaction gets a fresh server connection.
  kMoving,
};

class PoolStateTest : public ::testing::TestWithParam<Movement> {
 protected:
  void SetUp() override {
    const auto userlist =
        write_userlist("userlist-state.txt", "\"app\" \"" + app_verifier() + "\"\n");
    std::string pool = "mode = \"transaction\"\nmax_size = 2\nacquire_timeout_ms = 5000\n";
    if (GetParam() == Movement::kMoving) pool += "lifetime_ms = 1\n";
    // Everything on the primary's pool of two connections, so clients must share them (read
    // splitting would spread the reads over the standbys' pools).
    proxy_ = std::make_unique<Proxy>(pooled_toml("scram-sha-256", userlist, pool) +
                                     "[routing]\nread_write_split = false\n");
  }

  /// Records the backend pid a client's statement ran on.
  void note_pid(std::size_t client, PGconn* conn) {
    const auto pid = backend_pid(conn);
    ASSERT_EQ(pid.find("ERROR"), std::string::npos) << pid;
    pids_[client].push_back(pid);
  }

  /// The server connections were really moved between clients / transactions.
  void expect_movement() {
    if (GetParam() == Movement::kMoving) {
      for (const auto& [client, pids] : pids_) {
        const std::set<std::string> distinct(pids.begin(), pids.end());
        EXPECT_GE(distinct.size(), 2U) << "client " << client << " never changed connection";
      }
    } else {
      std::map<std::string, std::set<std::size_t>> users;
      std::set<std::string> all;
      for (const auto& [client, pids] : pids_) {
        for (const auto& pid : pids) {
          users[pid].insert(client);
          all.insert(pid);
        }
      }
      EXPECT_LE(all.size(), 2U) << "more server connections than max_size";
      const bool shared = std::any_of(users.begin(), users.end(),
                                      [](const auto& entry) { return entry.second.size() >= 2; });
      EXPECT_TRUE(shared) << "no server connection served two clients";
    }
  }

  std::unique_ptr<Proxy> proxy_;
  std::map<std::size_t, std::vector<std::string>> pids_;
};

TEST_P(PoolStateTest, SessionParametersFollowTheClient) {
  // Clients 1-3 change their sessions; client 0 (startup parameters) comes later.
  std::vector<std::unique_ptr<PgConn>> clients;
  for (int i = 0; i < 4; ++i) {
    clients.push_back(std::make_unique<PgConn>(proxy_->conninfo()));
    ASSERT_TRUE(clients.back()->ok()) << clients.back()->error() << log_tail(*proxy_);
  }
  // Client 3 keeps every default: it sees nothing of the others.
  std::map<std::size_t, std::string> search_path = {
      {1, "myschema, public"}, {2, "other, public"}, {3, "\"$user\", public"}};
  const std::map<std::size_t, std::string> timeout = {{1, "1234ms"}, {2, "2345ms"}, {3, "0"}};
  const std::map<std::size_t, std::string> app_name = {{1, "x"}, {2, "y"}, {3, ""}};
  for (std::size_t i = 1; i <= 2; ++i) {
    auto& c = *clients[i];
    EXPECT_EQ(c.value("SET search_path TO " + search_path.at(i)), "");
    EXPECT_EQ(c.value("SET application_name = '" + app_name.at(i) + "'"), "");
    EXPECT_STREQ(PQparameterStatus(c.conn, "application_name"), app_name.at(i).c_str());
    EXPECT_EQ(c.value("SET statement_timeout = '" + timeout.at(i) + "'"), "");
  }
  auto check = [&](std::size_t i, const std::string& when) {
    auto& c = *clients[i];
    EXPECT_EQ(c.value("SHOW search_path"), search_path.at(i)) << "client " << i << " " << when;
    EXPECT_EQ(c.value("SHOW statement_timeout"), timeout.at(i)) << "client " << i << " " << when;
    EXPECT_EQ(c.value("SELECT current_setting('application_name')"), app_name.at(i))
        << "client " << i << " " << when;
    EXPECT_STREQ(PQparameterStatus(c.conn, "application_name"), app_name.at(i).c_str())
        << "client " << i << " " << when;
    note_pid(i, c.conn);
  };
  for (int round = 0; round < 3; ++round) {
    for (std::size_t i = 1; i <= 3; ++i) check(i, "round " + std::to_string(round));
  }

  // A SET in a transaction that rolls back does not last.
  {
    auto& c = *clients[1];
    EXPECT_EQ(c.value("BEGIN"), "");
    EXPECT_EQ(c.value("SET search_path TO rolled_back"), "");
    EXPECT_EQ(c.value("SET statement_timeout = '9s'"), "");
    EXPECT_EQ(c.value("SHOW search_path"), "rolled_back");
    EXPECT_EQ(c.value("ROLLBACK"), "");
    for (std::size_t i = 1; i <= 3; ++i) check(i, "after a rolled back SET");
  }
  // RESET goes back to the default.
  {
    auto& c = *clients[2];
    EXPECT_EQ(c.value("RESET search_path"), "");
    search_path.at(2) = "\"$user\", public";
    for (std::size_t i = 1; i <= 3; ++i) check(i, "after RESET");
  }

  // Startup parameters count from the first query, on a connection other clients changed.
  clients[0] = std::make_unique<PgConn>(
      proxy_->conninfo("options='-c search_path=foo' application_name=abc"));
  auto& c0 = *clients[0];
  ASSERT_TRUE(c0.ok()) << c0.error() << log_tail(*proxy_);
  EXPECT_EQ(c0.value("SHOW search_path"), "foo");
  EXPECT_EQ(c0.value("SELECT current_setting('application_name')"), "abc");
  EXPECT_STREQ(PQparameterStatus(c0.conn, "application_name"), "abc");
  for (int round = 0; round < 2; ++round) {
    for (std::size_t i = 1; i <= 3; ++i) check(i, "with client 0");
    EXPECT_EQ(c0.value("SHOW search_path"), "foo");
    EXPECT_EQ(c0.value("SELECT current_setting('application_name')"), "abc");
    EXPECT_EQ(c0.value("SHOW statement_timeout"), "0");
    note_pid(0, c0.conn);
  }
  expect_movement();
}

TEST_P(PoolStateTest, ProtocolPreparedStatementsFollowTheClient) {
  std::vector<std::unique_ptr<PgConn>> clients;
  for (int i = 0; i < 4; ++i) {
    clients.push_back(std::make_unique<PgConn>(proxy_->conninfo()));
    ASSERT_TRUE(clients.back()->ok()) << clients.back()->error() << log_tail(*proxy_);
  }
  // The same name, a different statement in each client.
  for (std::size_t i = 0; i < clients.size(); ++i) {
    EXPECT_EQ(prepare(clients[i]->conn, "s1", "SELECT $1::int + " + std::to_string(100 * i)), "")
        << "client " << i;
  }
  for (int round = 0; round < 3; ++round) {
    for (std::size_t i = 0; i < clients.size(); ++i) {
      auto* conn = clients[i]->conn;
      ASSERT_EQ(exec_prepared(conn, "s1", "5"), std::to_string(100 * i + 5))
          << "client " << i << " round " << round << "\n"
          << log_tail(*proxy_);
      note_pid(i, conn);
      // Inside a transaction too.
      EXPECT_EQ(outcome(PQexec(conn, "BEGIN"), conn), "");
      EXPECT_EQ(exec_prepared(conn, "s1", "7"), std::to_string(100 * i + 7));
      PGresult* described = PQdescribePrepared(conn, "s1");
      EXPECT_EQ(PQresultStatus(described), PGRES_COMMAND_OK) << PQerrorMessage(conn);
      EXPECT_EQ(PQnparams(described), 1);
      EXPECT_EQ(PQnfields(described), 1);
      PQclear(described);
      EXPECT_EQ(outcome(PQexec(conn, "COMMIT"), conn), "");
    }
  }
  // PostgreSQL's own errors for a duplicate and an unknown name.
  auto* conn = clients[1]->conn;
  EXPECT_EQ(prepare(conn, "s1", "SELECT 'other'"),
            "ERROR: 42P05 prepared statement \"s1\" already exists");
  EXPECT_EQ(exec_prepared(conn, "s1", "1"), "101") << "the duplicate replaced the statement";
  EXPECT_EQ(exec_prepared(conn, "nope", "1"),
            "ERROR: 26000 prepared statement \"nope\" does not exist");
  // And after the errors every client's statement still works.
  for (std::size_t i = 0; i < clients.size(); ++i) {
    EXPECT_EQ(exec_prepared(clients[i]->conn, "s1", "1"), std::to_string(100 * i + 1));
  }
  expect_movement();
}

// psycopg 3 sends DEALLOCATE ALL through the extended protocol after a rollback, then prepares
// its statements again.
TEST_P(PoolStateTest, DeallocateAllInTheExtendedProtocolDropsEveryStatement) {
  std::vector<std::unique_ptr<PgConn>> clients;
  for (int i = 0; i < 4; ++i) {
    clients.push_back(std::make_unique<PgConn>(proxy_->conninfo()));
    ASSERT_TRUE(clients.back()->ok()) << clients.back()->error() << log_tail(*proxy_);
  }
  auto* conn = clients[0]->conn;
  EXPECT_EQ(prepare(conn, "s1", "SELECT $1::int + 1"), "");
  for (std::size_t i = 1; i < clients.size(); ++i) {
    EXPECT_EQ(prepare(clients[i]->conn, "s2", "SELECT $1::int + " + std::to_string(100 * i)), "");
  }
  for (int round = 0; round < 3; ++round) {
    ASSERT_EQ(exec_prepared(conn, "s1", "40"), "41") << log_tail(*proxy_);
    note_pid(0, conn);
    PGresult* dropped =
        PQexecParams(conn, "DEALLOCATE ALL", 0, nullptr, nullptr, nullptr, nullptr, 0);
    EXPECT_EQ(outcome(dropped, conn), "");
    EXPECT_EQ(exec_prepared(conn, "s1", "40"),
              "ERROR: 26000 prepared statement \"s1\" does not exist");
    // Prepared again under the same name: it runs, wherever the transaction goes.
    EXPECT_EQ(prepare(conn, "s1", "SELECT $1::int + 1"), "");
    EXPECT_EQ(exec_prepared(conn, "s1", "40"), "41") << log_tail(*proxy_);
    // The others' statements, dropped from a connection they may share, come back.
    for (std::size_t i = 1; i < clients.size(); ++i) {
      EXPECT_EQ(exec_prepared(clients[i]->conn, "s2", "40"), std::to_string(100 * i + 40))
          << "client " << i << "\n"
          << log_tail(*proxy_);
      note_pid(i, clients[i]->conn);
    }
  }
  expect_movement();
}

TEST_P(PoolStateTest, SqlPreparedStatementsFollowTheClient) {
  std::vector<std::unique_ptr<PgConn>> clients;
  for (int i = 0; i < 4; ++i) {
    clients.push_back(std::make_unique<PgConn>(proxy_->conninfo()));
    ASSERT_TRUE(clients.back()->ok()) << clients.back()->error() << log_tail(*proxy_);
  }
  for (std::size_t i = 0; i < clients.size(); ++i) {
    EXPECT_EQ(clients[i]->value("PREPARE q(int) AS SELECT $1 * " + std::to_string(i + 2)), "")
        << "client " << i;
  }
  for (int round = 0; round < 3; ++round) {
    for (std::size_t i = 0; i < clients.size(); ++i) {
      ASSERT_EQ(clients[i]->value("EXECUTE q(10)"), std::to_string(10 * (i + 2)))
          << "client " << i << " round " << round << "\n"
          << log_tail(*proxy_);
      note_pid(i, clients[i]->conn);
    }
  }
  auto& c1 = *clients[1];
  EXPECT_EQ(c1.value("PREPARE q(int) AS SELECT 0"),
            "ERROR: 42P05 prepared statement \"q\" already exists");
  EXPECT_EQ(c1.value("EXECUTE q(1)"), "3");
  EXPECT_EQ(c1.value("DEALLOCATE q"), "");
  for (std::size_t i = 0; i < clients.size(); ++i) {
    // Another client's transaction in between, so client 1 may be on another connection.
    if (i != 1) {
      EXPECT_EQ(clients[i]->value("EXECUTE q(1)"), std::to_string(i + 2)) << "client " << i;
    }
  }
  EXPECT_EQ(c1.value("EXECUTE q(1)"), "ERROR: 26000 prepared statement \"q\" does not exist");
  // The name can be used again.
  EXPECT_EQ(c1.value("PREPARE q(int) AS SELECT $1 - 1"), "");
  EXPECT_EQ(clients[0]->value("EXECUTE q(1)"), "2");
  EXPECT_EQ(c1.value("EXECUTE q(1)"), "0");
  expect_movement();
}

INSTANTIATE_TEST_SUITE_P(Pool, PoolStateTest,
                         ::testing::Values(Movement::kShared, Movement::kMoving),
                         [](const ::testing::TestParamInfo<Movement>& info) {
                           return info.param == Movement::kShared ? std::string("Shared")
                                                                  : std::string("Moving");
                         });

// ------------------------------------------------------------------------------------------
// 8. Pinning
// ------------------------------------------------------------------------------------------

TEST(PoolPinTest, ListenAndTempTablesPinTheServerConnection) {
  const auto userlist = write_userlist("userlist-pin.txt", "\"app\" \"" + app_verifier() + "\"\n");
  // Three connections per worker; every unpinned transaction gets a fresh one.
  Proxy proxy(pooled_toml("scram-sha-256", userlist,
                          "mode = \"transaction\"\nmax_size = 6\nlifetime_ms = 1\n"
                          "acquire_timeout_ms = 5000"));
  PgConn listener(proxy.conninfo());
  PgConn temp(proxy.conninfo());
  PgConn other(proxy.conninfo());
  ASSERT_TRUE(listener.ok() && temp.ok() && other.ok()) << log_tail(proxy);

  EXPECT_EQ(listener.value("LISTEN pool_channel"), "");
  const auto listener_pid = backend_pid(listener.conn);
  EXPECT_EQ(temp.value("CREATE TEMP TABLE t (x int)"), "");
  EXPECT_EQ(temp.value("INSERT INTO t VALUES (1), (2)"), "");
  const auto temp_pid = backend_pid(temp.conn);

  std::set<std::string> other_pids;
  for (int i = 0; i < 3; ++i) {
    other_pids.insert(backend_pid(other.conn));
    EXPECT_EQ(other.value("NOTIFY pool_channel, 'hello " + std::to_string(i) + "'"), "");
    EXPECT_EQ(backend_pid(listener.conn), listener_pid) << "the listening client moved";
    EXPECT_EQ(temp.value("INSERT INTO t VALUES (" + std::to_string(i) + ")"), "");
    EXPECT_EQ(backend_pid(temp.conn), temp_pid) << "the client with a temp table moved";
  }
  EXPECT_GE(other_pids.size(), 2U) << "the unpinned client never moved";
  EXPECT_EQ(other_pids.count(listener_pid), 0U);
  EXPECT_EQ(other_pids.count(temp_pid), 0U);

  // The notifications arrived at the listener.
  EXPECT_EQ(listener.value("SELECT 1"), "1");
  PQconsumeInput(listener.conn);
  std::vector<std::string> payloads;
  while (PGnotify* notify = PQnotifies(listener.conn)) {
    EXPECT_STREQ(notify->relname, "pool_channel");
    payloads.emplace_back(notify->extra);
    PQfreemem(notify);
  }
  EXPECT_EQ(payloads, (std::vector<std::string>{"hello 0", "hello 1", "hello 2"}));

  EXPECT_EQ(temp.value("SELECT count(*) FROM t"), "5");
  EXPECT_EQ(temp.value("BEGIN"), "");
  EXPECT_EQ(temp.value("SELECT sum(x) FROM t"), "6");
  EXPECT_EQ(temp.value("COMMIT"), "");
  EXPECT_EQ(backend_pid(temp.conn), temp_pid);
}

// ------------------------------------------------------------------------------------------
// 9. Pool exhaustion
// ------------------------------------------------------------------------------------------

TEST(PoolLimitTest, ClientWaitsAcquireTimeoutThenGets53300) {
  const auto userlist =
      write_userlist("userlist-limit.txt", "\"app\" \"" + app_verifier() + "\"\n");
  // One server connection per worker.
  Proxy proxy(pooled_toml("scram-sha-256", userlist,
                          "mode = \"transaction\"\nmax_size = 2\nacquire_timeout_ms = 500"));
  const std::string expected =
      "53300: no server connection available for user \"app\" on database \"app\"";
  std::vector<std::unique_ptr<VerboseConn>> holders;
  std::unique_ptr<VerboseConn> waiter;
  std::string failure;
  Clock::duration waited{};
  for (int attempt = 0; attempt < 12 && failure.empty(); ++attempt) {
    auto client = std::make_unique<VerboseConn>(proxy.conninfo());
    // Each worker's first login took its pool's connection and remembered the answer: later
    // logins with the same parameters need no server connection, even with none free.
    ASSERT_TRUE(client->ok()) << "login " << attempt << ": " << client->error() << log_tail(proxy);
    EXPECT_LT(client->login_time(), 500ms) << "login " << attempt << " waited for a server";
    for (const std::string query : {"BEGIN", "SELECT 1"}) {
      const auto started = Clock::now();
      const auto result = client->value(query);
      if (result.rfind("ERROR", 0) == 0) {
        failure = result + "\n" + client->error();
        waited = Clock::now() - started;
        break;
      }
    }
    if (failure.empty()) {
      holders.push_back(std::move(client));
    } else {
      waiter = std::move(client);
    }
  }
  ASSERT_FALSE(failure.empty()) << holders.size() << " clients held transactions open, none waited"
                                << log_tail(proxy);
  EXPECT_LE(holders.size(), 2U) << "more clients in transactions than server connections";
  // The transaction that cannot get a connection ends the session (as the login would have).
  EXPECT_NE(failure.find("FATAL:  " + expected), std::string::npos) << failure;
  EXPECT_GE(waited, 500ms) << failure;
  EXPECT_LT(waited, 3s) << failure;

  // The remembered login gave the same ParameterStatus values as the server's own.
  if (!holders.empty() && waiter) {
    for (const char* name :
         {"server_version", "server_encoding", "client_encoding", "DateStyle", "TimeZone",
          "integer_datetimes", "standard_conforming_strings", "application_name"}) {
      const char* first = PQparameterStatus(holders.front()->get(), name);
      const char* later = PQparameterStatus(waiter->get(), name);
      ASSERT_NE(first, nullptr) << name;
      ASSERT_NE(later, nullptr) << name;
      EXPECT_STREQ(first, later) << name;
    }
  }

  // Startup parameters no earlier login had go to a server (which may refuse them), so with
  // every connection taken that login waits and fails.
  if (holders.size() == 2) {
    VerboseConn other(proxy.conninfo() + " options='-c DateStyle=German'");
    EXPECT_FALSE(other.ok());
    EXPECT_NE(other.error().find("FATAL:  " + expected), std::string::npos) << other.error();
    EXPECT_GE(other.login_time(), 500ms);
  }

  // Once the transactions end, clients get in again.
  for (auto& holder : holders) EXPECT_EQ(holder->value("COMMIT"), "");
  holders.clear();
  for (int i = 0; i < 4; ++i) {
    PgConn conn(proxy.conninfo());
    ASSERT_TRUE(conn.ok()) << conn.error();
    EXPECT_EQ(conn.value("SELECT 'again'"), "again");
  }
  // ... also with the new parameters, which the server now applies.
  PgConn german(proxy.conninfo() + " options='-c DateStyle=German'");
  ASSERT_TRUE(german.ok()) << german.error();
  EXPECT_EQ(german.value("SHOW DateStyle"), "German, DMY");
  EXPECT_STREQ(PQparameterStatus(german.conn, "DateStyle"), "German, DMY");
}

// ------------------------------------------------------------------------------------------
// 10. Session mode
// ------------------------------------------------------------------------------------------

TEST(PoolSessionTest, ConnectionIsExclusiveAndCleanedForTheNextClient) {
  const auto userlist =
      write_userlist("userlist-session.txt", "\"app\" \"" + app_verifier() + "\"\n");
  // Classic session pooling: one server connection per client (read splitting, which gives a
  // session a standby connection too, is tested in routing_pgtest).
  Proxy proxy(pooled_toml("scram-sha-256", userlist,
                          "mode = \"session\"\nmax_size = 2\nacquire_timeout_ms = 1000") +
              "[routing]\nread_write_split = false\n");
  std::string first_pid;
  {
    PgConn first(proxy.conninfo());
    ASSERT_TRUE(first.ok()) << first.error() << log_tail(proxy);
    first_pid = backend_pid(first.conn);
    ASSERT_EQ(first_pid.find("ERROR"), std::string::npos) << first_pid;
    EXPECT_EQ(first.value("SET search_path TO leftover"), "");
    EXPECT_EQ(first.value("SET statement_timeout = '4321ms'"), "");
    EXPECT_EQ(first.value("SET application_name = 'leftover'"), "");
    EXPECT_EQ(first.value("CREATE TEMP TABLE leftover_t (x int)"), "");
    EXPECT_EQ(first.value("PREPARE leftover_p AS SELECT 1"), "");
    EXPECT_EQ(first.value("LISTEN leftover_channel"), "");
    // Others come and go meanwhile: none of them gets this server connection.
    for (int i = 0; i < 4; ++i) {
      VerboseConn other(proxy.conninfo());
      if (other.ok()) {
        EXPECT_NE(backend_pid(other.get()), first_pid) << "two sessions on one server connection";
      } else {
        EXPECT_NE(other.error().find("53300"), std::string::npos) << other.error();
      }
      EXPECT_EQ(first.value("BEGIN"), "");
      EXPECT_EQ(backend_pid(first.conn), first_pid);
      EXPECT_EQ(first.value("COMMIT"), "");
      EXPECT_EQ(backend_pid(first.conn), first_pid);
    }
    EXPECT_EQ(first.value("SHOW search_path"), "leftover");
  }
  // The next client on the same worker gets the same server connection, cleaned.
  bool reused = false;
  for (int attempt = 0; attempt < 16 && !reused; ++attempt) {
    PgConn next(proxy.conninfo());
    ASSERT_TRUE(next.ok()) << next.error() << log_tail(proxy);
    reused = backend_pid(next.conn) == first_pid;
    EXPECT_EQ(next.value("SHOW search_path"), "\"$user\", public");
    EXPECT_EQ(next.value("SHOW statement_timeout"), "0");
    EXPECT_EQ(next.value("SHOW application_name"), "");
    EXPECT_STREQ(PQparameterStatus(next.conn, "application_name"), "");
    EXPECT_EQ(next.value("SELECT count(*) FROM pg_prepared_statements"), "0");
    EXPECT_EQ(next.value("SELECT count(*) FROM pg_listening_channels()"), "0");
    EXPECT_EQ(next.value("SELECT count(*) FROM pg_class WHERE relname = 'leftover_t'"), "0");
  }
  EXPECT_TRUE(reused) << "no later client got backend pid " << first_pid << log_tail(proxy);
}

// ------------------------------------------------------------------------------------------
// 11. Cancel
// ------------------------------------------------------------------------------------------

// ------------------------------------------------------------------------------------------
// Parked clients ([pool] park_after_ms)
// ------------------------------------------------------------------------------------------

/// A value from the proxy's /metrics (nullopt when missing or the page is not valid).
std::optional<double> metric(const Proxy& proxy, const std::string& name) {
  const auto response = http_get(proxy.http_port(), "/metrics");
  if (response.status != 200) return std::nullopt;
  const auto exposition = parse_exposition(response.body);
  if (!exposition.ok()) return std::nullopt;
  return exposition.value(name);
}

/// Polls until the metric equals `value` (up to 5 s); returns whether it did.
bool wait_metric(const Proxy& proxy, const std::string& name, double value) {
  for (int i = 0; i < 250; ++i) {
    if (metric(proxy, name) == value) return true;
    std::this_thread::sleep_for(20ms);
  }
  return false;
}

TEST(PoolParkTest, ParkedClientKeepsParametersStatementsAndCancelKey) {
  const auto userlist = write_userlist("userlist-park.txt", "\"app\" \"" + app_verifier() + "\"\n");
  Proxy proxy(pooled_toml("scram-sha-256", userlist,
                          "mode = \"transaction\"\nmax_size = 4\npark_after_ms = 20"));
  PgConn conn(proxy.conninfo("application_name=before_park"));
  ASSERT_TRUE(conn.ok()) << conn.error();
  ASSERT_EQ(conn.value("SET application_name = 'parked_app'"), "");
  ASSERT_EQ(conn.value("SET work_mem = '7MB'"), "");
  ASSERT_EQ(conn.value("PREPARE park_sql(int) AS SELECT $1 + 1"), "");
  ASSERT_EQ(prepare(conn.conn, "park_proto", "SELECT $1::text || 'x'"), "");

  // Idle past park_after_ms: parked, and no server connection is held for it.
  ASSERT_TRUE(wait_metric(proxy, "pgrelay_clients_parked", 1)) << log_tail(proxy);
  EXPECT_GE(metric(proxy, "pgrelay_client_parks_total").value_or(0), 1.0);
  EXPECT_EQ(metric(proxy, "pgrelay_client_connections"), 1.0);

  // Its next statements run with everything it set up before.
  EXPECT_EQ(conn.value("SHOW work_mem"), "7MB");
  EXPECT_EQ(conn.value("SHOW application_name"), "parked_app");
  EXPECT_STREQ(PQparameterStatus(conn.conn, "application_name"), "parked_app");
  EXPECT_EQ(conn.value("EXECUTE park_sql(41)"), "42");
  EXPECT_EQ(exec_prepared(conn.conn, "park_proto", "a"), "ax");
  EXPECT_EQ(metric(proxy, "pgrelay_clients_parked"), 0.0);

  // Parked again, the cancel key it got at login still reaches its query.
  ASSERT_TRUE(wait_metric(proxy, "pgrelay_clients_parked", 1)) << log_tail(proxy);
  ASSERT_EQ(PQsendQuery(conn.conn, "SELECT pg_sleep(10)"), 1);
  std::this_thread::sleep_for(300ms);
  PGcancel* cancel = PQgetCancel(conn.conn);
  char err[256];
  EXPECT_EQ(PQcancel(cancel, err, sizeof err), 1) << err;
  PQfreeCancel(cancel);
  PGresult* res = PQgetResult(conn.conn);
  ASSERT_NE(res, nullptr);
  const char* state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
  EXPECT_STREQ(state ? state : "", "57014") << PQresultErrorMessage(res);
  PQclear(res);
  while ((res = PQgetResult(conn.conn)) != nullptr) PQclear(res);
  EXPECT_EQ(conn.value("SELECT 'after cancel'"), "after cancel");

  // A parked client that goes away is counted out.
  ASSERT_TRUE(wait_metric(proxy, "pgrelay_clients_parked", 1)) << log_tail(proxy);
  PQfinish(conn.conn);
  conn.conn = nullptr;
  EXPECT_TRUE(wait_metric(proxy, "pgrelay_client_connections", 0)) << log_tail(proxy);
  EXPECT_EQ(metric(proxy, "pgrelay_clients_parked"), 0.0);
}

TEST(PoolParkTest, ManyParkedClientsWakeAndAParkedClientIsToldAtShutdown) {
  const auto userlist = write_userlist("userlist-park2.txt", "\"app\" \"app\"\n");
  Proxy proxy(
      pooled_toml("trust", userlist, "mode = \"transaction\"\nmax_size = 2\npark_after_ms = 20"));
  std::vector<std::unique_ptr<PgConn>> clients;
  for (int i = 0; i < 40; ++i) {
    clients.push_back(std::make_unique<PgConn>(proxy.conninfo()));
    ASSERT_TRUE(clients.back()->ok()) << clients.back()->error();
    ASSERT_EQ(clients.back()->value("SET statement_timeout = " + std::to_string(1001 + i)), "");
  }
  ASSERT_TRUE(wait_metric(proxy, "pgrelay_clients_parked", 40)) << log_tail(proxy);
  // Each wakes with its own setting, however the pool's two connections are shared.
  for (int round = 0; round < 2; ++round) {
    for (int i = 0; i < 40; ++i) {
      EXPECT_EQ(clients[static_cast<std::size_t>(i)]->value("SHOW statement_timeout"),
                std::to_string(1001 + i) + "ms");
    }
    std::this_thread::sleep_for(100ms);
  }
  ASSERT_TRUE(wait_metric(proxy, "pgrelay_clients_parked", 40)) << log_tail(proxy);

  // SIGTERM: parked clients are idle clients: told (57P01) and closed at once.
  const auto started = Clock::now();
  EXPECT_EQ(proxy.stop(SIGTERM), 0);
  EXPECT_LT(Clock::now() - started, 5s);
  PGresult* res = PQexec(clients[0]->conn, "SELECT 1");
  EXPECT_NE(PQresultStatus(res), PGRES_TUPLES_OK);
  const std::string message = PQerrorMessage(clients[0]->conn);
  PQclear(res);
  EXPECT_NE(message.find("terminating connection due to administrator command"), std::string::npos)
      << message;
}

/// Voluntary context switches of all of a process's threads so far (each is a sleep that ended).
long voluntary_switches(pid_t pid) {
  long total = 0;
  const std::string tasks = "/proc/" + std::to_string(pid) + "/task";
  for (const auto& task : std::filesystem::directory_iterator(tasks)) {
    std::ifstream status(task.path() / "status");
    std::string line;
    while (std::getline(status, line)) {
      constexpr std::string_view kKey = "voluntary_ctxt_switches:";
      if (line.starts_with(kKey)) total += std::stol(line.substr(kKey.size()));
    }
  }
  return total;
}

TEST(PoolParkTest, AnIdleProxySleepsAndParksAgainPromptly) {
  const auto userlist = write_userlist("userlist-park3.txt", "\"app\" \"app\"\n");
  Proxy proxy(
      pooled_toml("trust", userlist, "mode = \"transaction\"\nmax_size = 2\npark_after_ms = 20"));
  PgConn conn(proxy.conninfo());
  ASSERT_TRUE(conn.ok()) << conn.error();
  ASSERT_EQ(conn.value("SELECT 1"), "1");
  ASSERT_TRUE(wait_metric(proxy, "pgrelay_clients_parked", 1)) << log_tail(proxy);

  // Nothing to do but monitor probes: the workers do not look for clients to park every few
  // milliseconds (a 10 ms sweep on each worker was over 400 wake-ups in 2 s).
  const long before = voluntary_switches(proxy.pid());
  std::this_thread::sleep_for(2s);
  const long wakeups = voluntary_switches(proxy.pid()) - before;
  EXPECT_LT(wakeups, 150) << "wake-ups in 2 s of idling";

  // A client that comes back is parked again soon after its statement: the worker's sweep,
  // asleep while it had no session, looks again when a session starts.
  for (int round = 0; round < 3; ++round) {
    EXPECT_EQ(conn.value(std::string("SELECT ") + std::to_string(round)), std::to_string(round));
    const auto answered = Clock::now();
    ASSERT_TRUE(wait_metric(proxy, "pgrelay_clients_parked", 1)) << log_tail(proxy);
    EXPECT_LT(Clock::now() - answered, 400ms) << "round " << round;
    std::this_thread::sleep_for(std::chrono::milliseconds(150 + 200 * round));
  }
}

/// Replaces `from` with `to` in the proxy's configuration file, sends SIGHUP and waits until the
/// proxy has logged its `reloads`-th "configuration reloaded".
void reload_with(const Proxy& proxy, const std::string& from, const std::string& to,
                 std::size_t reloads) {
  std::ostringstream text;
  text << std::ifstream(proxy.config_path()).rdbuf();
  std::string config = text.str();
  const auto at = config.find(from);
  ASSERT_NE(at, std::string::npos) << config;
  config.replace(at, from.size(), to);
  std::ofstream(proxy.config_path()) << config;
  ASSERT_EQ(::kill(proxy.pid(), SIGHUP), 0);
  const std::string line = "configuration reloaded";
  for (int i = 0; i < 250; ++i) {
    const std::string log = proxy.log();
    std::size_t seen = 0;
    for (auto pos = log.find(line); pos != std::string::npos; pos = log.find(line, pos + 1)) {
      ++seen;
    }
    if (seen >= reloads) return;
    std::this_thread::sleep_for(20ms);
  }
  FAIL() << "no reload logged\n" << log_tail(proxy);
}

TEST(PoolLimitTest, ReloadAppliesPoolSizeToExistingPools) {
  const auto userlist = write_userlist("userlist-reload.txt", "\"app\" \"app\"\n");
  // One worker and no read splitting: every client shares one pool, the primary's.
  Proxy proxy("workers = 1\n" +
              pooled_toml("trust", userlist,
                          "mode = \"transaction\"\nmax_size = 1\nacquire_timeout_ms = 500") +
              "[routing]\nread_write_split = false\n");
  const std::string exhausted = "no server connection available";
  PgConn holder(proxy.conninfo());
  ASSERT_TRUE(holder.ok()) << holder.error();
  ASSERT_EQ(holder.value("BEGIN"), "");
  ASSERT_EQ(holder.value("SELECT 1"), "1");
  {
    PgConn refused(proxy.conninfo());
    ASSERT_TRUE(refused.ok()) << refused.error();
    const std::string answer = refused.value("SELECT 2");
    EXPECT_NE(answer.find(exhausted), std::string::npos) << answer;
  }

  // Raised: the pool that exists opens more while its first connection is still held.
  reload_with(proxy, "max_size = 1", "max_size = 3", 1);
  PgConn second(proxy.conninfo());
  PgConn third(proxy.conninfo());
  ASSERT_TRUE(second.ok()) << second.error();
  ASSERT_TRUE(third.ok()) << third.error();
  for (auto* conn : {&second, &third}) {
    ASSERT_EQ(conn->value("BEGIN"), "");
    EXPECT_EQ(conn->value("SELECT 2"), "2");
  }
  EXPECT_EQ(second.value("COMMIT"), "");
  EXPECT_EQ(metric(proxy, "pgrelay_pool_server_connections"), 3.0);

  // Lowered: the idle connection closes at once, the lent ones when they come back.
  reload_with(proxy, "max_size = 3", "max_size = 1", 2);
  EXPECT_TRUE(wait_metric(proxy, "pgrelay_pool_server_connections", 2)) << log_tail(proxy);
  EXPECT_EQ(holder.value("COMMIT"), "");
  EXPECT_EQ(third.value("COMMIT"), "");
  EXPECT_TRUE(wait_metric(proxy, "pgrelay_pool_server_connections", 1)) << log_tail(proxy);
  ASSERT_EQ(holder.value("BEGIN"), "");
  ASSERT_EQ(holder.value("SELECT 1"), "1");
  const std::string answer = second.value("SELECT 4");
  EXPECT_NE(answer.find(exhausted), std::string::npos) << answer;
}

TEST(PoolCancelTest, CancelStopsTheQueryInTransactionMode) {
  const auto userlist =
      write_userlist("userlist-cancel.txt", "\"app\" \"" + app_verifier() + "\"\n");
  Proxy proxy(pooled_toml("scram-sha-256", userlist, "mode = \"transaction\"\nmax_size = 4"));
  PgConn conn(proxy.conninfo());
  ASSERT_TRUE(conn.ok()) << conn.error();
  ASSERT_EQ(PQsendQuery(conn.conn, "SELECT pg_sleep(10)"), 1);
  std::this_thread::sleep_for(300ms);
  const auto started = Clock::now();
  PGcancel* cancel = PQgetCancel(conn.conn);
  char err[256];
  EXPECT_EQ(PQcancel(cancel, err, sizeof err), 1) << err;
  PQfreeCancel(cancel);
  PGresult* res = PQgetResult(conn.conn);
  const auto elapsed = Clock::now() - started;
  ASSERT_NE(res, nullptr);
  EXPECT_EQ(PQresultStatus(res), PGRES_FATAL_ERROR);
  const char* state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
  EXPECT_STREQ(state ? state : "", "57014") << PQresultErrorMessage(res);
  PQclear(res);
  while ((res = PQgetResult(conn.conn)) != nullptr) PQclear(res);
  EXPECT_LT(elapsed, 2s);
  EXPECT_EQ(conn.value("SELECT 'still usable'"), "still usable");
}

}  // namespace
}  // namespace pgrelay::test
