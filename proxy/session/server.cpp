// Listeners, accept loops and shutdown across the worker threads.
#include "pgrelay/session/server.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <boost/asio/post.hpp>
#include <future>
#include <optional>

#include <thread>
#include "pgrelay/cluster/admin_conn.hpp"

namespace pgrelay::session {

namespace asio = net::asio;
using namespace std::chrono_literals;

Server::Server(std::shared_ptr<const config::Config> config, cluster::Monitor& monitor)
    : workers_(config->listen.workers), stats_(workers_.size(), config->backends.size()) {
  if (config->tls) {
    shared_.tls = net::make_server_tls_context(config->tls->cert, config->tls->key);
    shared_.tls_end_point = net::tls_server_end_point(config->tls->cert);
  }
  shared_.monitor = &monitor;
  shared_.control_pool = &control_pool_;
  if (!config->auth.query.empty()) {
    auth::AuthQueryOptions options;
    options.query = config->auth.query;
    options.user = config->monitor.user;
    options.password = config->monitor.password;
    options.database = config->monitor.database;
    options.cache_ttl = std::chrono::milliseconds(config->auth.cache_ttl_ms);
    options.timeout = std::chrono::milliseconds(config->limits.connect_timeout_ms);
    shared_.auth_query = std::make_unique<auth::AuthQuery>(
        std::move(options),
        [m = &monitor]() -> std::optional<std::pair<std::string, std::uint16_t>> {
          const auto topology = m->topology();
          const auto* primary = topology->primary_node();
          if (primary == nullptr) return std::nullopt;
          return std::make_pair(primary->host, primary->port);
        });
  }
  shared_.stats = &stats_;
  for (std::size_t i = 0; i < workers_.size(); ++i) {
    sessions_.push_back(std::make_unique<WorkerSessions>());
    sessions_.back()->counters = &stats_.worker(i);
    sessions_.back()->shared = &shared_;
    sessions_.back()->index = i;
    sessions_.back()->pools = std::make_unique<pool::WorkerPools>(
        workers_.context(i).get_executor(), stats_.worker(i).pool);
    maintenance_timers_.push_back(std::make_unique<asio::steady_timer>(workers_.context(i)));
    park_timers_.push_back(std::make_unique<asio::steady_timer>(workers_.context(i)));
    acceptors_.push_back(std::make_unique<net::tcp::acceptor>(
        net::make_listener(workers_.context(i), config->listen.address, config->listen.port)));
  }
  shared_.config.store(std::move(config));
}

Server::~Server() {
  workers_.stop();
  workers_.join();
  if (!destroyed_) {
    // Idle server connections close while their io_context exists; then the contexts go (with
    // any coroutine still queued) while the pools and sessions they reference still exist.
    for (auto& sessions : sessions_) {
      sessions->pools->close_all();
      sessions->drop_parked();
      sessions->park_timer = nullptr;
    }
    maintenance_timers_.clear();
    park_timers_.clear();
    acceptors_.clear();
    workers_.destroy();
    destroyed_ = true;
  }
}

void Server::set_secrets(std::shared_ptr<const auth::SecretStore> secrets) {
  shared_.secrets.store(std::move(secrets));
}

asio::awaitable<void> Server::maintenance_loop(std::size_t worker) {
  auto& timer = *maintenance_timers_[worker];
  while (true) {
    timer.expires_after(1s);
    auto [ec] = co_await timer.async_wait(net::kNoThrow);
    if (ec || sessions_[worker]->stopping) co_return;
    sessions_[worker]->pools->maintain(std::chrono::steady_clock::now());
  }
}

asio::awaitable<void> Server::park_loop(std::size_t worker) {
  auto& timer = *park_timers_[worker];
  auto& sessions = *sessions_[worker];
  sessions.park_timer = &timer;
  while (true) {
    const std::chrono::milliseconds after(shared_.config.load()->pool.park_after_ms);
    const auto now = std::chrono::steady_clock::now();
    std::optional<std::chrono::steady_clock::time_point> next;
    if (after.count() > 0) next = sessions.park_idle(after);
    // A worker without sessions (or with parking off) looks once a second, or when a session
    // starts (WorkerSessions::session_added()); otherwise when the next client is due, at most
    // 100 times a second.
    sessions.park_sleeping_long = !next;
    timer.expires_at(next ? std::max(*next, now + 10ms) : now + 1s);
    auto [ec] = co_await timer.async_wait(net::kNoThrow);
    if (sessions.stopping || (ec && ec != asio::error::operation_aborted)) break;
  }
  sessions.park_timer = nullptr;
}

void Server::start() {
  for (std::size_t i = 0; i < workers_.size(); ++i) {
    asio::co_spawn(workers_.context(i), accept_loop(i), asio::detached);
    asio::co_spawn(workers_.context(i), maintenance_loop(i), asio::detached);
    asio::co_spawn(workers_.context(i), park_loop(i), asio::detached);
  }
  workers_.start();
  const auto config = shared_.config.load();
  spdlog::info("listening on {}:{} with {} worker{}{}", config->listen.address, config->listen.port,
               workers_.size(), workers_.size() == 1 ? "" : "s",
               shared_.tls ? ", TLS available" : "");
}

void Server::reload(std::shared_ptr<const config::Config> config) {
  // [pool] limits apply to the existing pools too (as PgBouncer's RELOAD applies pool sizes).
  const auto limits = pool_limits(*config, workers_.size());
  shared_.config.store(std::move(config));
  for (std::size_t i = 0; i < workers_.size(); ++i) {
    asio::post(workers_.context(i), [this, i, limits] { sessions_[i]->pools->set_limits(limits); });
  }
}

asio::awaitable<void> Server::accept_loop(std::size_t worker) {
  auto& acceptor = *acceptors_[worker];
  auto& sessions = *sessions_[worker];
  asio::steady_timer backoff(acceptor.get_executor());
  while (acceptor.is_open()) {
    auto [ec, socket] = co_await acceptor.async_accept(net::kNoThrow);
    if (ec) {
      if (ec == asio::error::operation_aborted || !acceptor.is_open()) break;
      // Out of file descriptors and the like: wait a little instead of spinning.
      spdlog::warn("accept failed: {}", ec.message());
      backoff.expires_after(100ms);
      co_await backoff.async_wait(net::kNoThrow);
      continue;
    }
    net::set_no_delay(socket);
    auto session = std::make_shared<Session>(shared_, sessions, std::move(socket));
    Session::start(session);
    if (sessions.stopping) session->request_stop();
  }
}

void Server::topology_changed() {
  for (std::size_t i = 0; i < workers_.size(); ++i) {
    asio::post(workers_.context(i), [this, i] {
      const auto topology = shared_.monitor->topology();
      // Pools serve the primary (writes) and standbys (reads): drain those of any other node
      // (down, fenced, not probed yet) and of a former primary.
      for (std::size_t b = 0; b < topology->nodes.size(); ++b) {
        const auto role = topology->nodes[b].role;
        const bool serving =
            static_cast<int>(b) == topology->primary || role == cluster::NodeRole::kStandby;
        if (!serving) sessions_[i]->pools->drain_backend(static_cast<int>(b));
      }
      const std::vector<Session*> list(sessions_[i]->sessions.begin(),
                                       sessions_[i]->sessions.end());
      for (Session* s : list) s->topology_changed(*topology);
    });
  }
}

template <typename Fn>
void Server::on_each_worker(Fn fn) {
  std::vector<std::future<void>> done;
  for (std::size_t i = 0; i < workers_.size(); ++i) {
    auto task = std::make_shared<std::packaged_task<void()>>([this, i, fn] { fn(i); });
    done.push_back(task->get_future());
    asio::post(workers_.context(i), [task] { (*task)(); });
  }
  for (auto& f : done) f.wait();
}

void Server::shutdown(std::chrono::milliseconds timeout) {
  spdlog::info("shutting down: {} client{} connected, waiting up to {} ms for transactions",
               client_count(), client_count() == 1 ? "" : "s", timeout.count());
  on_each_worker([this](std::size_t i) {
    net::error_code ignored;
    acceptors_[i]->close(ignored);
    maintenance_timers_[i]->cancel();
    park_timers_[i]->cancel();
    sessions_[i]->stopping = true;
    // Copy: request_stop never destroys a session synchronously, but stay safe.
    const std::vector<Session*> list(sessions_[i]->sessions.begin(), sessions_[i]->sessions.end());
    for (Session* s : list) s->request_stop();
    sessions_[i]->stop_parked();  // each goes on in a session that tells its client
  });
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (client_count() > 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(10ms);
  }
  if (client_count() > 0) {
    spdlog::warn("shutdown deadline reached: closing {} remaining client{}", client_count(),
                 client_count() == 1 ? "" : "s");
    on_each_worker([this](std::size_t i) {
      const std::vector<Session*> list(sessions_[i]->sessions.begin(),
                                       sessions_[i]->sessions.end());
      for (Session* s : list) s->force_close();
    });
    const auto grace = std::chrono::steady_clock::now() + 2s;
    while (client_count() > 0 && std::chrono::steady_clock::now() < grace) {
      std::this_thread::sleep_for(10ms);
    }
  }
  workers_.stop();
  workers_.join();
  for (auto& sessions : sessions_) {
    sessions->pools->close_all();
    sessions->drop_parked();
    sessions->park_timer = nullptr;
  }
  maintenance_timers_.clear();
  park_timers_.clear();
  acceptors_.clear();
  workers_.destroy();
  destroyed_ = true;
  spdlog::info("stopped");
}

void Server::pause() {
  if (shared_.paused.exchange(true)) return;
  spdlog::info("paused: new transactions and logins wait ({} running)", active_transactions());
}

void Server::resume() {
  if (!shared_.paused.exchange(false)) return;
  std::size_t waiting = 0;
  for (std::size_t i = 0; i < workers_.size(); ++i) {
    waiting += sessions_[i]->paused_waiters.size();  // approximate, for the log line only
    asio::post(workers_.context(i), [this, i] {
      const std::vector<Session*> list(sessions_[i]->paused_waiters.begin(),
                                       sessions_[i]->paused_waiters.end());
      for (Session* s : list) s->resume_from_pause();
    });
  }
  spdlog::info("resumed");
}

Server::SwitchoverResult Server::switchover(const std::string& target,
                                            std::chrono::milliseconds drain_timeout) {
  using Clock = std::chrono::steady_clock;
  SwitchoverResult result;
  const auto fail = [&](int status, std::string error) {
    result.status = status;
    result.error = std::move(error);
    spdlog::error("switchover to {}: {}", target, result.error);
    return result;
  };
  std::unique_lock one(switchover_mutex_, std::try_to_lock);
  if (!one.owns_lock()) return fail(409, "another switchover is running");
  const auto config = shared_.config.load();
  auto topology = shared_.monitor->topology();
  if (topology->primary < 0) return fail(503, "no primary is known");
  int to = -1;
  for (std::size_t i = 0; i < topology->nodes.size(); ++i) {
    if (topology->nodes[i].name == target) to = static_cast<int>(i);
  }
  if (to < 0) return fail(404, "no backend is named \"" + target + "\"");
  const int from = topology->primary;
  const auto& old_node = topology->nodes[static_cast<std::size_t>(from)];
  const auto& new_node = topology->nodes[static_cast<std::size_t>(to)];
  result.old_primary = old_node.name;
  result.new_primary = new_node.name;
  if (to == from) return fail(409, "\"" + target + "\" is the primary already");
  if (new_node.role != cluster::NodeRole::kStandby || !new_node.streaming ||
      new_node.timeline != old_node.timeline) {
    return fail(409, "\"" + target + "\" is not a standby streaming from the primary (role " +
                         std::string(cluster::to_string(new_node.role)) + ")");
  }
  cluster::AdminConnection primary_conn(config->monitor,
                                        config->backends[static_cast<std::size_t>(from)]);
  cluster::AdminConnection target_conn(config->monitor,
                                       config->backends[static_cast<std::size_t>(to)]);
  // Connect before pausing: a refused login should not cost the clients a pause.
  if (!primary_conn.value("SELECT 1", 5s)) return fail(502, primary_conn.error());
  if (!target_conn.value("SELECT 1", 5s)) return fail(502, target_conn.error());

  spdlog::warn("switchover: {} -> {} starting (drain timeout {} ms)", old_node.name, new_node.name,
               drain_timeout.count());
  // 0. Before pausing anyone, let the target catch up with what is written now: the pause then
  // only covers the last milliseconds of WAL.
  const auto replayed_up_to = [&](std::uint64_t lsn, Clock::time_point deadline) {
    while (true) {
      const auto replayed = target_conn.value("SELECT pg_catalog.pg_last_wal_replay_lsn()", 5s);
      const auto replay = replayed ? cluster::parse_lsn(*replayed) : std::nullopt;
      if (replay && *replay >= lsn) return true;
      if (Clock::now() >= deadline) return false;
      std::this_thread::sleep_for(2ms);
    }
  };
  const auto flush_lsn = [&]() -> std::optional<std::string> {
    // Asynchronous commits may still be in the WAL writer's buffers: a commit of pgrelay's own
    // with synchronous_commit = local flushes them at once instead of after wal_writer_delay.
    // It comes first, so the position read after it covers its commit record too (else the
    // other standbys, which receive that record from the old primary, would be ahead of the
    // new timeline's fork point and need a rewind).
    primary_conn.value(
        "BEGIN; SET LOCAL synchronous_commit = local; SELECT pg_catalog.txid_current(); COMMIT",
        5s);
    return primary_conn.value("SELECT pg_catalog.pg_current_wal_insert_lsn()", 5s);
  };
  if (const auto early = flush_lsn(); early && cluster::parse_lsn(*early)) {
    replayed_up_to(*cluster::parse_lsn(*early), Clock::now() + drain_timeout);
  }
  const auto paused_at = Clock::now();
  pause();
  const auto finish = [&](int status, std::string error) {
    resume();
    result.paused_ms =
        std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - paused_at).count();
    if (status != 200) return fail(status, std::move(error));
    return result;
  };
  // 1. Transactions already running finish (or are aborted past the drain timeout).
  const auto drain_deadline = paused_at + drain_timeout;
  while (active_transactions() > 0 && Clock::now() < drain_deadline)
    std::this_thread::sleep_for(1ms);
  if (active_transactions() > 0) {
    result.aborted = active_transactions();
    spdlog::warn("switchover: aborting {} transaction(s) still running after {} ms", result.aborted,
                 drain_timeout.count());
    on_each_worker([this, name = old_node.name](std::size_t i) {
      const std::vector<Session*> list(sessions_[i]->sessions.begin(),
                                       sessions_[i]->sessions.end());
      for (Session* s : list) s->abort_transaction("switchover away from \"" + name + "\"");
    });
    const auto abort_deadline = Clock::now() + 5s;
    while (active_transactions() > 0 && Clock::now() < abort_deadline) {
      std::this_thread::sleep_for(1ms);
    }
  }
  const auto drained_at = Clock::now();
  // 2. The target replays everything the primary has written.
  const auto lsn_text = flush_lsn();
  const auto lsn = lsn_text ? cluster::parse_lsn(*lsn_text) : std::nullopt;
  if (!lsn) return finish(502, "cannot read the primary's WAL position: " + primary_conn.error());
  result.lsn = *lsn_text;
  if (!replayed_up_to(*lsn,
                      Clock::now() + std::max(drain_timeout, std::chrono::milliseconds(5000)))) {
    return finish(504, "\"" + target + "\" did not replay up to " + *lsn_text + " in time");
  }
  // 3. Promote; the old primary stays up on the older timeline, which fences it.
  const auto promoting = Clock::now();
  spdlog::info(
      "switchover: drained in {} ms, {} replayed {} in {} ms",
      std::chrono::duration_cast<std::chrono::milliseconds>(drained_at - paused_at).count(), target,
      *lsn_text,
      std::chrono::duration_cast<std::chrono::milliseconds>(promoting - drained_at).count());
  // pg_promote(wait => true) looks every 100 ms; asking every 2 ms ends the pause sooner.
  const auto promoted = target_conn.value("SELECT pg_catalog.pg_promote(false)", 5s);
  if (!promoted || *promoted != "t") {
    return finish(502, "pg_promote() on \"" + target + "\" failed: " +
                           (promoted ? "it returned " + *promoted : target_conn.error()));
  }
  const auto promote_deadline = Clock::now() + 60s;
  while (true) {
    const auto recovering = target_conn.value("SELECT pg_catalog.pg_is_in_recovery()", 5s);
    if (recovering && *recovering == "f") break;
    if (Clock::now() >= promote_deadline) {
      return finish(504, "\"" + target + "\" did not leave recovery within 60 s");
    }
    std::this_thread::sleep_for(2ms);
  }
  // 4. Clients resume once the monitor routes to the new primary.
  const auto seen_deadline = Clock::now() + 10s;
  while (shared_.monitor->topology()->primary != to && Clock::now() < seen_deadline) {
    shared_.monitor->request_probe();
    std::this_thread::sleep_for(2ms);
  }
  result.promote_ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - promoting).count();
  if (shared_.monitor->topology()->primary != to) {
    return finish(504, "\"" + target +
                           "\" was promoted but the monitor does not see it as "
                           "the primary yet");
  }
  finish(200, "");
  spdlog::warn(
      "switchover: {} -> {} done at {}: clients paused {} ms, {} aborted; {} is fenced "
      "(rewind it and start it as a standby of {})",
      old_node.name, new_node.name, result.lsn, result.paused_ms, result.aborted, old_node.name,
      new_node.name);
  return result;
}

}  // namespace pgrelay::session
