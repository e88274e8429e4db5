// Server connection pools: one per (backend, database, user) and worker. Lend, return, limits,
// a wait queue with a deadline, idle and lifetime expiry, and draining on topology changes.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <list>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <variant>
#include <vector>

#include "pgrelay/auth/scram.hpp"
#include "pgrelay/auth/userlist.hpp"
#include "pgrelay/net/asio.hpp"
#include "pgrelay/pool/params.hpp"
#include "pgrelay/protocol/messages.hpp"
#include "pgrelay/stats/stats.hpp"

namespace pgrelay::pool {

using Clock = std::chrono::steady_clock;

/// How pgrelay logs in to a backend as a user: no password (the backend trusts), a plain
/// password, an md5 hash, or SCRAM keys recovered from the client's proof.
using Credential =
    std::variant<std::monostate, auth::PlainSecret, auth::Md5Secret, auth::ScramClientKeys>;

/// Bounded least-recently-used set of prepared-statement ids on one server connection.
class PreparedCache {
 public:
  [[nodiscard]] bool contains(std::uint64_t id) const { return index_.contains(id); }
  /// Marks `id` used now.
  void touch(std::uint64_t id);
  /// Adds `id`; returns the id evicted to stay within `capacity`, if any.
  std::optional<std::uint64_t> insert(std::uint64_t id, std::size_t capacity);
  void erase(std::uint64_t id);
  void clear();
  [[nodiscard]] std::size_t size() const { return index_.size(); }

 private:
  std::list<std::uint64_t> order_;  // front = most recently used
  std::unordered_map<std::uint64_t, std::list<std::uint64_t>::iterator> index_;
};

class Pool;

/// One logged-in connection to a backend.
struct ServerConn {
  explicit ServerConn(const net::asio::any_io_executor& executor) : socket(executor) {}

  net::tcp::socket socket;
  int backend = -1;
  std::string backend_name;
  std::string host;
  std::uint16_t port = 0;
  protocol::BackendKeyData key{};
  ParamList reported;          ///< GUC_REPORT parameters as the server last reported them
  ParamList initial_reported;  ///< ... and as they were right after its login (the defaults)
  ParamList set_values;        ///< other parameters pgrelay (or a client) changed on it
  PreparedCache prepared;
  Clock::time_point created{};
  Clock::time_point returned{};
  std::uint64_t serial = 0;
  std::uint64_t generation = 0;  ///< the pool's generation when it was opened
  /// The client that used it last and that client's state version then: lets a client that
  /// gets its own connection back skip the parameter comparison.
  std::uint64_t last_client = 0;
  std::uint64_t last_client_version = 0;
  /// The parameter state (Session::state_key) this connection was last brought to: a client
  /// with the same state needs no synchronisation.
  std::string state_key;
};

using ServerPtr = std::unique_ptr<ServerConn>;

/// An idle server connection has nothing to say: readable (it closed, or sent a FATAL before
/// closing) means it is gone. One non-blocking recv with MSG_PEEK.
[[nodiscard]] bool alive(ServerConn& conn);

struct BackendAddress {
  int index = -1;
  std::string name;
  std::string host;
  std::uint16_t port = 0;
};

/// Why a connection could not be lent; becomes the client's ErrorResponse.
struct AcquireError {
  std::string sqlstate;
  std::string message;
  std::string detail;
  bool from_backend = false;  ///< the backend refused the login (its own error)
};

using AcquireResult = std::variant<ServerPtr, AcquireError>;

struct PoolLimits {
  std::uint32_t max_size = 20;  ///< this worker's share
  std::uint32_t min_idle = 0;
  std::chrono::milliseconds idle_timeout{600000};
  std::chrono::milliseconds lifetime{3600000};
  std::chrono::milliseconds connect_timeout{5000};
};

using stats::PoolCounters;

/// Logs in to `address` as `user` on `database`: TCP connect (bounded by `connect_timeout`),
/// startup, authentication with `credential`, parameters, BackendKeyData, ReadyForQuery.
net::asio::awaitable<AcquireResult> open_server(const net::asio::any_io_executor& executor,
                                                const BackendAddress& address,
                                                const std::string& user,
                                                const std::string& database,
                                                const Credential& credential,
                                                std::chrono::milliseconds connect_timeout);

/// The pool of one (backend, database, user) on one worker. Used only on that worker's thread.
class Pool {
 public:
  Pool(net::asio::any_io_executor executor, BackendAddress address, std::string user,
       std::string database, PoolLimits limits, PoolCounters& counters);
  ~Pool();
  Pool(const Pool&) = delete;
  Pool& operator=(const Pool&) = delete;

  /// Lends an idle connection, opens a new one below max_size, or waits until `deadline` for
  /// one to come back (then 53300).
  net::asio::awaitable<AcquireResult> acquire(Clock::time_point deadline);

  /// The first half of acquire(), without waiting: an idle connection that is still alive, or
  /// null. Sessions try it before acquire() so that the usual lend costs no coroutine.
  ServerPtr take_idle();

  /// Takes a connection back. `reusable` = at a clean boundary (ReadyForQuery idle, nothing
  /// pending); anything else is closed.
  void release(ServerPtr conn, bool reusable);

  /// Closes idle connections and marks lent ones to be closed on return (backend down or no
  /// longer in the role the pool serves).
  void drain();

  /// The credential pgrelay logs in with from now on (the latest client's).
  void set_credential(Credential credential);

  /// Transaction mode logs a client in without a server connection when an earlier client
  /// of this pool logged in with the same startup parameters (`key`): the ParameterStatus
  /// values that client was given. Forgotten after `kLoginMemory` and when the pool drains.
  [[nodiscard]] const ParamList* remembered_login(std::string_view key,
                                                  Clock::time_point now) const;
  void remember_login(std::string_view key, const ParamList& reported, Clock::time_point now);
  static constexpr std::chrono::seconds kLoginMemory{60};
  static constexpr std::size_t kLoginMemorySize = 16;
  /// Applies reloaded limits: idle connections over a lowered max_size close now (lent ones
  /// when they come back), and a raised max_size lets waiting clients open connections.
  void set_limits(const PoolLimits& limits);

  /// Expires idle and old connections and opens connections up to min_idle.
  void maintain(Clock::time_point now);

  [[nodiscard]] std::size_t idle_count() const { return idle_.size(); }
  [[nodiscard]] std::uint32_t total() const { return total_; }
  [[nodiscard]] std::size_t waiting() const { return waiters_.size(); }
  [[nodiscard]] const BackendAddress& address() const { return address_; }

 private:
  struct Waiter {
    net::asio::steady_timer* timer = nullptr;
    ServerPtr conn;
    bool slot = false;  ///< a connection was closed: the waiter may open a new one
  };

  void close(ServerPtr conn);
  void wake_one_for_slot();
  net::asio::awaitable<void> open_spare();

  net::asio::any_io_executor executor_;
  BackendAddress address_;
  std::string user_;
  std::string database_;
  PoolLimits limits_;
  PoolCounters& counters_;
  Credential credential_;
  bool has_credential_ = false;
  std::vector<ServerPtr> idle_;  ///< back = most recently returned
  std::deque<Waiter*> waiters_;
  std::uint32_t total_ = 0;  ///< idle + lent + being opened
  std::uint64_t generation_ = 0;
  std::uint64_t next_serial_ = 1;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
  struct RememberedLogin {
    std::string key;
    ParamList reported;
    Clock::time_point at;
  };
  std::vector<RememberedLogin> logins_;
};

/// Every pool of one worker, keyed by backend, database and user.
class WorkerPools {
 public:
  WorkerPools(net::asio::any_io_executor executor, PoolCounters& counters)
      : executor_(std::move(executor)), counters_(counters) {}

  /// The pool for the key, created on first use.
  Pool& get(const BackendAddress& address, const std::string& database, const std::string& user,
            const PoolLimits& limits);

  /// Drains every pool of `backend` (see Pool::drain).
  void drain_backend(int backend);
  /// Closes every idle connection (shutdown, before the io_context goes away).
  void close_all();
  void maintain(Clock::time_point now);
  /// Reloaded limits for every pool, and for pools created from now on (instead of the limits
  /// the session asking for one computed from its own, older, config snapshot).
  void set_limits(const PoolLimits& limits);

 private:
  net::asio::any_io_executor executor_;
  PoolCounters& counters_;
  std::optional<PoolLimits> limits_;
  std::unordered_map<std::string, std::unique_ptr<Pool>> pools_;
};

}  // namespace pgrelay::pool
