// A libpq connection to one backend as the [monitor] role, for operator actions (switchover):
// one query at a time, each bounded by a timeout.
#pragma once

#include <chrono>
#include <optional>
#include <string>

#include "pgrelay/config/config.hpp"

struct pg_conn;
struct pg_result;

namespace pgrelay::cluster {

/// A libpq message on one line (newlines become spaces, no trailing newline).
[[nodiscard]] std::string one_line(const char* message);

/// PQsendQuery, then waits up to `timeout` for the result (later results are discarded);
/// nullptr when the query could not be sent, the connection failed or the time ran out (a hung
/// or stopped server keeps TCP up: only a deadline helps). On nullptr drop the connection.
[[nodiscard]] pg_result* exec_with_timeout(pg_conn* conn, const char* query,
                                           std::chrono::milliseconds timeout);

class AdminConnection {
 public:
  AdminConnection(const config::MonitorSettings& monitor, const config::BackendSettings& backend);
  ~AdminConnection();
  AdminConnection(const AdminConnection&) = delete;
  AdminConnection& operator=(const AdminConnection&) = delete;

  /// Runs `sql` (connecting first if needed) and returns the first column of the first row
  /// ("" for a command without rows); nullopt with `error()` set when it failed or timed out.
  std::optional<std::string> value(const char* sql, std::chrono::milliseconds timeout);
  [[nodiscard]] const std::string& error() const { return error_; }

 private:
  bool connect();
  config::MonitorSettings monitor_;
  config::BackendSettings backend_;
  pg_conn* conn_ = nullptr;
  std::string error_;
};

}  // namespace pgrelay::cluster
