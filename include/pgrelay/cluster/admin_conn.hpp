// A libpq connection to one backend as the [monitor] role, for operator actions (switchover):
// one query at a time, each bounded by a timeout.
#pragma once

#include <chrono>
#include <optional>
#include <string>

#include "pgrelay/config/config.hpp"

struct pg_conn;

namespace pgrelay::cluster {

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
