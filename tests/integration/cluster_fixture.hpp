// Integration fixture: a real primary and two hot standbys, pgrelay processes, and helpers to run
// real clients (psql, pgbench, pg_basebackup, libpq) against them.
#pragma once

#include <libpq-fe.h>
#include <sys/types.h>

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "command.hpp"

namespace pgrelay::test {

struct Node {
  std::string name;
  int port = 0;
};

/// Runs `command` with /bin/sh; stdout and stderr are captured together.
inline CommandResult run(const std::string& command) { return run_command(command); }

/// The shared cluster of the test binary: node1 primary, node2 and node3 hot standbys, started on
/// first use and destroyed when the process exits, however it exits (a watchdog process removes
/// it when the test binary's end of a pipe closes).
class Cluster {
 public:
  static Cluster& get();

  [[nodiscard]] const std::string& dir() const { return dir_; }
  [[nodiscard]] const std::vector<Node>& nodes() const { return nodes_; }
  [[nodiscard]] const Node& node(const std::string& name) const;
  /// `scripts/cluster ARGS` against this cluster's directory.
  CommandResult script(const std::string& args) const;
  /// psql as the superuser over the node's Unix socket; returns unaligned tuples-only output.
  std::string sql(const std::string& node, const std::string& query) const;
  /// [[backend]] tables for every node, for a pgrelay config.
  [[nodiscard]] std::string backends_toml() const;
  /// A self-signed certificate and key for TLS tests (created once).
  [[nodiscard]] std::pair<std::string, std::string> tls_files();

 private:
  Cluster();
  std::string dir_;
  std::vector<Node> nodes_;
};

/// A pgrelay process with a generated config, stopped (SIGTERM, then SIGKILL) on destruction.
class Proxy {
 public:
  /// `extra_toml` is appended after [listen] (which the fixture writes, with 2 workers unless
  /// extra_toml starts with `workers = N`); backends are added unless `with_backends` is false
  /// (then extra_toml must have its own).
  explicit Proxy(const std::string& extra_toml = {}, bool with_backends = true);
  ~Proxy();
  Proxy(const Proxy&) = delete;
  Proxy& operator=(const Proxy&) = delete;

  [[nodiscard]] int port() const { return port_; }
  /// The [http] port (the fixture adds [http] on a free port unless extra_toml has one).
  [[nodiscard]] int http_port() const { return http_port_; }
  [[nodiscard]] pid_t pid() const { return pid_; }
  /// libpq connection string for this proxy (user app, database app, sslmode=disable).
  [[nodiscard]] std::string conninfo(const std::string& extra = {}) const;
  /// Shell prefix exporting PGHOST/PGPORT/PGUSER/PGPASSWORD/PGDATABASE for this proxy.
  [[nodiscard]] std::string env() const;
  /// The generated configuration file (rewrite it and send SIGHUP to test reloads).
  [[nodiscard]] std::string config_path() const { return dir_ + "/pgrelay.toml"; }
  /// The process's log so far.
  [[nodiscard]] std::string log() const;
  /// Sends `signal` and waits up to `timeout` for exit; returns the exit status or -1.
  int stop(int signal, std::chrono::milliseconds timeout = std::chrono::seconds(20));

 private:
  int port_ = 0;
  int http_port_ = 0;
  pid_t pid_ = -1;
  std::string dir_;
};

/// A libpq connection that finishes itself.
struct PgConn {
  explicit PgConn(const std::string& conninfo) : conn(PQconnectdb(conninfo.c_str())) {}
  ~PgConn() { PQfinish(conn); }
  PgConn(const PgConn&) = delete;
  PgConn& operator=(const PgConn&) = delete;
  [[nodiscard]] bool ok() const { return PQstatus(conn) == CONNECTION_OK; }
  [[nodiscard]] std::string error() const { return PQerrorMessage(conn); }
  /// Runs a query; returns the first column of the first row, or "ERROR: <sqlstate> <message>".
  std::string value(const std::string& query);
  PGconn* conn;
};

/// Runs `cleanup` when the scope ends, also when an ASSERT returns early.
struct Cleanup {
  std::function<void()> cleanup;
  ~Cleanup() {
    if (cleanup) cleanup();
  }
};

/// A raw TCP connection to 127.0.0.1:port for feeding bytes by hand.
class RawSocket {
 public:
  explicit RawSocket(int port);
  ~RawSocket();
  RawSocket(const RawSocket&) = delete;
  RawSocket& operator=(const RawSocket&) = delete;
  [[nodiscard]] bool connected() const { return fd_ >= 0; }
  bool send(const void* data, std::size_t size);
  bool send(const std::vector<std::uint8_t>& bytes) { return send(bytes.data(), bytes.size()); }
  /// Reads until the peer closes or `timeout` passes; returns what arrived.
  std::vector<std::uint8_t> read_all(std::chrono::milliseconds timeout);
  /// Reads exactly n bytes or fewer on close/timeout.
  std::vector<std::uint8_t> read_n(std::size_t n, std::chrono::milliseconds timeout);
  /// True when the peer has closed the connection within `timeout`.
  bool closed_within(std::chrono::milliseconds timeout);

 private:
  int fd_ = -1;
};

struct HttpResponse {
  int status = 0;  ///< 0 when the request failed
  std::string body;
};

/// A plain HTTP/1.1 GET to 127.0.0.1:port (Connection: close).
HttpResponse http_get(int port, const std::string& path);

/// The fields of the first ErrorResponse in `bytes` ("" when there is none): severity,
/// SQLSTATE and message as "FATAL 08P01 message".
std::string first_error(const std::vector<std::uint8_t>& bytes);

}  // namespace pgrelay::test
