// Chaos suite plumbing: shell commands, free ports, superuser SQL on a node, a pgrelay child
// process, and the few HTTP calls the suite makes to pgrelay's admin port.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "command.hpp"

namespace pgrelay::chaos {

using Clock = std::chrono::steady_clock;

/// Milliseconds between two instants, as a double.
double ms_between(Clock::time_point from, Clock::time_point to);

using test::CommandResult;
using test::free_port;
using test::run_command;

/// Quotes `text` for /bin/sh.
std::string shell_quote(const std::string& text);

/// PostgreSQL's server binaries: $PGBIN, else the newest /usr/lib/postgresql/*/bin.
std::string pg_bin_dir();

/// A PostgreSQL LSN ("16/B374D848") as a number; nullopt when `text` is not one.
std::optional<std::uint64_t> parse_lsn(const std::string& text);

/// The rows of a query, or the error that stopped it.
struct QueryResult {
  bool ok = false;
  std::string error;  ///< "SQLSTATE message" or the connection error
  std::vector<std::vector<std::string>> rows;
  /// First column of the first row ("" when there is none).
  [[nodiscard]] std::string value() const;
};

/// Runs `sql` on a fresh libpq connection (one statement or several in one string).
QueryResult query(const std::string& conninfo, const std::string& sql);

/// A node of the test cluster.
struct Node {
  std::string name;
  int port = 0;
};

/// The local cluster made and driven by scripts/cluster, in a directory of its own.
class Cluster {
 public:
  Cluster(std::string script, std::string dir, std::vector<Node> nodes);

  [[nodiscard]] const std::string& dir() const { return dir_; }
  [[nodiscard]] const std::vector<Node>& nodes() const { return nodes_; }
  [[nodiscard]] int port(const std::string& name) const;
  /// `scripts/cluster COMMAND DIR ARGS`; throws with the output when it fails.
  void script(const std::string& command, const std::string& args = {}) const;
  /// The same, returning the result instead of throwing.
  [[nodiscard]] CommandResult try_script(const std::string& command,
                                         const std::string& args = {}) const;
  /// libpq connection string: the superuser over the node's Unix socket.
  [[nodiscard]] std::string superuser(const std::string& name,
                                      const std::string& database = "app") const;
  /// Superuser SQL on a node.
  [[nodiscard]] QueryResult sql(const std::string& name, const std::string& text,
                                const std::string& database = "app") const;
  /// "Latest checkpoint location" of a stopped node's control file (pg_controldata).
  [[nodiscard]] std::optional<std::uint64_t> checkpoint_lsn(const std::string& name) const;

 private:
  std::string script_;
  std::string dir_;
  std::vector<Node> nodes_;
};

/// A pgrelay child process writing its log to a file; killed when this process dies.
class Proxy {
 public:
  Proxy(std::string binary, std::string config_path, std::string log_path);
  ~Proxy();
  Proxy(const Proxy&) = delete;
  Proxy& operator=(const Proxy&) = delete;

  /// Forks and execs pgrelay; waits until `port` accepts connections (throws otherwise).
  void start(int port);
  /// True while the process runs; the first call after it exits records its status.
  [[nodiscard]] bool alive();
  /// How the process ended ("" while it runs).
  [[nodiscard]] const std::string& exit_description() const { return exit_description_; }
  /// Sends `signal` and waits up to `timeout`; returns the exit status (128 + signal when
  /// killed) or -1 when it is still running.
  int stop(int signal, std::chrono::milliseconds timeout);
  [[nodiscard]] std::string log() const;

 private:
  void reap(int status);
  std::string binary_;
  std::string config_path_;
  std::string log_path_;
  pid_t pid_ = -1;
  int exit_status_ = -1;
  std::string exit_description_;
};

struct HttpResponse {
  int status = 0;  ///< 0 when there was no answer
  std::string body;
};

/// One HTTP/1.1 request to 127.0.0.1:port (Connection: close, empty body).
HttpResponse http_request(int port, const std::string& method, const std::string& target,
                          std::chrono::milliseconds timeout);

/// A node as pgrelay's GET /topology shows it.
struct NodeView {
  std::string name;
  std::string role;
  bool eligible = false;
  std::int64_t timeline = 0;
};

/// pgrelay's GET /topology; nullopt when it does not answer with JSON.
struct TopologyView {
  std::string primary;  ///< "" when null
  std::vector<NodeView> nodes;
  [[nodiscard]] const NodeView* node(const std::string& name) const;
};
std::optional<TopologyView> topology(int http_port);

}  // namespace pgrelay::chaos
