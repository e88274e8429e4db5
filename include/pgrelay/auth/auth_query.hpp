// [auth] query: looks up a client's secret with SQL run through the monitor role (libpq, on its
// own thread so no worker ever blocks), cached for cache_ttl_ms, unknown users included.
#pragma once

#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>

namespace pgrelay::auth {

struct AuthQueryOptions {
  std::string query;  ///< one parameter ($1 = user name); the last column is the secret
  std::string user;   ///< the monitor role
  std::string password;
  std::string database;
  std::chrono::milliseconds cache_ttl{60000};
  std::chrono::milliseconds timeout{5000};
};

/// Where the query runs: the current primary's host and port, or nullopt when none is known.
using AuthQueryTarget = std::function<std::optional<std::pair<std::string, std::uint16_t>>()>;

/// What a lookup found: the secret text (empty optional: the user has none or does not exist),
/// or an error that makes the login fail (the query could not run).
struct AuthQueryResult {
  std::optional<std::string> secret;
  std::string error;
};

class AuthQuery {
 public:
  AuthQuery(AuthQueryOptions options, AuthQueryTarget target);
  ~AuthQuery();
  AuthQuery(const AuthQuery&) = delete;
  AuthQuery& operator=(const AuthQuery&) = delete;

  /// Calls `done` with the result, from the cache at once or later from the lookup thread (the
  /// caller posts it to its own executor).
  void lookup(const std::string& user, std::function<void(AuthQueryResult)> done);

 private:
  struct Entry {
    AuthQueryResult result;
    std::chrono::steady_clock::time_point expires;
  };
  struct Request {
    std::string user;
    std::function<void(AuthQueryResult)> done;
  };
  void run();
  AuthQueryResult query(const std::string& user);

  AuthQueryOptions options_;
  AuthQueryTarget target_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<Request> requests_;
  std::unordered_map<std::string, Entry> cache_;
  bool stopping_ = false;
  void* connection_ = nullptr;  ///< PGconn, used only on the lookup thread
  std::string connected_to_;
  std::thread thread_;
};

}  // namespace pgrelay::auth
