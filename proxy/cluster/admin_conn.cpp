#include "pgrelay/cluster/admin_conn.hpp"

#include <libpq-fe.h>
#include <poll.h>

#include <algorithm>
#include <cerrno>

namespace pgrelay::cluster {

std::string one_line(const char* message) {
  std::string s(message != nullptr ? message : "");
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  std::replace(s.begin(), s.end(), '\n', ' ');
  return s;
}

PGresult* exec_with_timeout(PGconn* conn, const char* query, std::chrono::milliseconds timeout) {
  if (PQsendQuery(conn, query) == 0) return nullptr;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (PQisBusy(conn) != 0) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                          deadline - std::chrono::steady_clock::now())
                          .count();
    if (left <= 0) return nullptr;
    pollfd descriptor{PQsocket(conn), POLLIN, 0};
    const int ready = ::poll(&descriptor, 1, static_cast<int>(left));
    if (ready < 0 && errno != EINTR) return nullptr;
    if (ready > 0 && PQconsumeInput(conn) == 0) return nullptr;
  }
  PGresult* result = PQgetResult(conn);
  while (PGresult* extra = PQgetResult(conn)) PQclear(extra);
  return result;
}

AdminConnection::AdminConnection(const config::MonitorSettings& monitor,
                                 const config::BackendSettings& backend)
    : monitor_(monitor), backend_(backend) {}

AdminConnection::~AdminConnection() {
  if (conn_ != nullptr) PQfinish(conn_);
}

bool AdminConnection::connect() {
  if (conn_ != nullptr && PQstatus(conn_) == CONNECTION_OK) return true;
  if (conn_ != nullptr) PQfinish(conn_);
  const std::string port = std::to_string(backend_.port);
  const char* keys[] = {
      "host", "port", "user", "password", "dbname", "application_name", "connect_timeout", nullptr};
  const char* values[] = {backend_.host.c_str(),
                          port.c_str(),
                          monitor_.user.c_str(),
                          monitor_.password.c_str(),
                          monitor_.database.c_str(),
                          "pgrelay-admin",
                          "5",
                          nullptr};
  conn_ = PQconnectdbParams(keys, values, 0);
  if (PQstatus(conn_) == CONNECTION_OK) {
    // Server notices (a shutdown's WARNING) are not for pgrelay's log.
    PQsetNoticeProcessor(
        conn_, [](void*, const char*) {}, nullptr);
    return true;
  }
  error_ = "cannot connect to " + backend_.name + ": " + one_line(PQerrorMessage(conn_));
  PQfinish(conn_);
  conn_ = nullptr;
  return false;
}

std::optional<std::string> AdminConnection::value(const char* sql,
                                                  std::chrono::milliseconds timeout) {
  error_.clear();
  if (!connect()) return std::nullopt;
  PGresult* res = exec_with_timeout(conn_, sql, timeout);
  if (res == nullptr) {
    // Not sent, the connection failed, or no answer in time: start afresh next time.
    const std::string message = one_line(PQerrorMessage(conn_));
    error_ =
        backend_.name + ": " +
        (message.empty() ? "no answer within " + std::to_string(timeout.count()) + " ms" : message);
    PQfinish(conn_);
    conn_ = nullptr;
    return std::nullopt;
  }
  std::optional<std::string> result;
  const auto status = PQresultStatus(res);
  if (status == PGRES_TUPLES_OK || status == PGRES_COMMAND_OK) {
    result = PQntuples(res) > 0 && PQnfields(res) > 0 ? std::string(PQgetvalue(res, 0, 0)) : "";
  } else {
    error_ = backend_.name + ": " + one_line(PQresultErrorMessage(res));
  }
  PQclear(res);
  return result;
}

}  // namespace pgrelay::cluster
