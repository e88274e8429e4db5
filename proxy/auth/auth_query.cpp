// The [auth] query lookup thread and its cache.
#include "pgrelay/auth/auth_query.hpp"

#include <libpq-fe.h>
#include <spdlog/spdlog.h>

namespace pgrelay::auth {

namespace {

std::string conninfo_value(const std::string& value) {
  std::string out = "'";
  for (char c : value) {
    if (c == '\'' || c == '\\') out.push_back('\\');
    out.push_back(c);
  }
  out.push_back('\'');
  return out;
}

}  // namespace

AuthQuery::AuthQuery(AuthQueryOptions options, AuthQueryTarget target)
    : options_(std::move(options)), target_(std::move(target)) {
  thread_ = std::thread([this] { run(); });
}

AuthQuery::~AuthQuery() {
  {
    const std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  thread_.join();
  if (connection_ != nullptr) PQfinish(static_cast<PGconn*>(connection_));
}

void AuthQuery::lookup(const std::string& user, std::function<void(AuthQueryResult)> done) {
  {
    const std::lock_guard lock(mutex_);
    const auto it = cache_.find(user);
    if (it != cache_.end() && it->second.expires > std::chrono::steady_clock::now()) {
      auto result = it->second.result;
      done(std::move(result));
      return;
    }
    requests_.push_back(Request{user, std::move(done)});
  }
  wake_.notify_one();
}

void AuthQuery::run() {
  while (true) {
    Request request;
    {
      std::unique_lock lock(mutex_);
      wake_.wait(lock, [this] { return stopping_ || !requests_.empty(); });
      if (stopping_) break;
      request = std::move(requests_.front());
      requests_.pop_front();
      // A request queued behind another lookup of the same user is answered from the cache.
      const auto it = cache_.find(request.user);
      if (it != cache_.end() && it->second.expires > std::chrono::steady_clock::now()) {
        auto result = it->second.result;
        lock.unlock();
        request.done(std::move(result));
        continue;
      }
    }
    auto result = query(request.user);
    if (result.error.empty()) {
      const std::lock_guard lock(mutex_);
      cache_[request.user] = Entry{result, std::chrono::steady_clock::now() + options_.cache_ttl};
    }
    request.done(std::move(result));
  }
  // Whoever still waits gets an answer.
  std::deque<Request> left;
  {
    const std::lock_guard lock(mutex_);
    left.swap(requests_);
  }
  for (auto& request : left) request.done(AuthQueryResult{std::nullopt, "shutting down"});
}

AuthQueryResult AuthQuery::query(const std::string& user) {
  const auto target = target_();
  if (!target) return {std::nullopt, "no primary is known to run the auth query on"};
  const std::string where = target->first + ":" + std::to_string(target->second);
  auto* conn = static_cast<PGconn*>(connection_);
  if (conn != nullptr && (connected_to_ != where || PQstatus(conn) != CONNECTION_OK)) {
    PQfinish(conn);
    conn = nullptr;
    connection_ = nullptr;
  }
  if (conn == nullptr) {
    const std::string conninfo =
        "host=" + conninfo_value(target->first) + " port=" + std::to_string(target->second) +
        " user=" + conninfo_value(options_.user) +
        " password=" + conninfo_value(options_.password) +
        " dbname=" + conninfo_value(options_.database) + " connect_timeout=" +
        std::to_string(std::max<long long>(1, options_.timeout.count() / 1000)) +
        " application_name=pgrelay-auth sslmode=disable";
    conn = PQconnectdb(conninfo.c_str());
    if (PQstatus(conn) != CONNECTION_OK) {
      std::string error = PQerrorMessage(conn);
      PQfinish(conn);
      while (!error.empty() && error.back() == '\n') error.pop_back();
      spdlog::warn("auth query: cannot connect to {}: {}", where, error);
      return {std::nullopt, "auth query: cannot connect to " + where};
    }
    connection_ = conn;
    connected_to_ = where;
  }
  const char* values[] = {user.c_str()};
  PGresult* result =
      PQexecParams(conn, options_.query.c_str(), 1, nullptr, values, nullptr, nullptr, 0);
  AuthQueryResult out;
  if (PQresultStatus(result) != PGRES_TUPLES_OK) {
    std::string error = PQresultErrorMessage(result);
    while (!error.empty() && error.back() == '\n') error.pop_back();
    spdlog::warn("auth query failed: {}", error);
    out.error = "auth query failed";
  } else if (PQntuples(result) > 0 && PQnfields(result) > 0) {
    const int column = PQnfields(result) - 1;
    if (PQgetisnull(result, 0, column) == 0) out.secret = PQgetvalue(result, 0, column);
  }
  PQclear(result);
  return out;
}

}  // namespace pgrelay::auth
