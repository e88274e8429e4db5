// The proxy server: workers, their listeners and sessions, graceful and immediate shutdown.
#pragma once

#include <chrono>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "pgrelay/cluster/monitor.hpp"
#include "pgrelay/config/config.hpp"
#include "pgrelay/net/workers.hpp"
#include "pgrelay/session/session.hpp"

namespace pgrelay::session {

class Server {
 public:
  /// Throws on a startup error (TLS files unusable, address in use).
  Server(std::shared_ptr<const config::Config> config, cluster::Monitor& monitor);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  /// Opens one listener per worker and starts the worker threads.
  void start();

  /// Stops accepting, lets in-flight transactions finish for up to `timeout`, then closes the
  /// rest. Blocks until every session has ended (or a short grace after the deadline).
  void shutdown(std::chrono::milliseconds timeout);

  /// Applies a reloaded configuration to sessions that start from now on.
  void reload(std::shared_ptr<const config::Config> config);

  /// Replaces the client secrets ([auth] file) for logins from now on.
  void set_secrets(std::shared_ptr<const auth::SecretStore> secrets);

  [[nodiscard]] std::int64_t client_count() const { return stats_.client_connections.load(); }
  [[nodiscard]] const stats::Stats& stats() const { return stats_; }

  /// Hands a topology change to every worker (sessions on a node that is no longer the primary
  /// are closed). Safe to call from any thread.
  void topology_changed();
  /// The operator actions the admin console runs (set before start()).
  void set_control(ControlFn control) { shared_.control = std::move(control); }

  /// PAUSE (as in PgBouncer): from now on pooled sessions start no transaction and no login;
  /// transactions already running go on. Returns at once.
  void pause();
  /// RESUME: waiting sessions go on.
  void resume();
  [[nodiscard]] bool paused() const { return shared_.paused.load(); }
  /// Transactions running now on pooled server connections.
  [[nodiscard]] std::int64_t active_transactions() const {
    return shared_.active_transactions.load();
  }

  struct SwitchoverResult {
    int status = 200;  ///< HTTP status: 200, 400, 404, 409, 502, 503, 504
    std::string error;
    std::string old_primary;
    std::string new_primary;
    std::string lsn;  ///< the old primary's last WAL position, replayed by the new one
    long long paused_ms = 0;
    long long promote_ms = 0;  ///< pg_promote() until the monitor saw the new primary
    std::int64_t aborted = 0;  ///< transactions aborted after the drain timeout
  };
  /// Planned switchover to the standby `target` (blocking; one at a time): PAUSE, wait up to
  /// `drain_timeout` for running transactions (then abort them), wait until the target has
  /// replayed the primary's last WAL, pg_promote() it, wait until the monitor sees it as the
  /// primary (the old primary is then fenced: older timeline), RESUME.
  SwitchoverResult switchover(const std::string& target, std::chrono::milliseconds drain_timeout);

 private:
  net::asio::awaitable<void> accept_loop(std::size_t worker);
  net::asio::awaitable<void> maintenance_loop(std::size_t worker);
  /// Parks the worker's idle transaction-pooling clients ([pool] park_after_ms).
  net::asio::awaitable<void> park_loop(std::size_t worker);
  /// Runs `fn` on every worker's thread and waits until all have run it.
  template <typename Fn>
  void on_each_worker(Fn fn);

  Shared shared_;
  net::Workers workers_;
  stats::Stats stats_;
  std::vector<std::unique_ptr<WorkerSessions>> sessions_;
  std::vector<std::unique_ptr<net::tcp::acceptor>> acceptors_;
  std::vector<std::unique_ptr<net::asio::steady_timer>> maintenance_timers_;
  std::vector<std::unique_ptr<net::asio::steady_timer>> park_timers_;
  bool destroyed_ = false;
  std::mutex switchover_mutex_;
  net::asio::thread_pool control_pool_{1};
};

}  // namespace pgrelay::session
