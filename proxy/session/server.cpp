// Listeners, accept loops and shutdown across the worker threads.
#include "pgrelay/session/server.hpp"

#include <spdlog/spdlog.h>

#include <boost/asio/post.hpp>
#include <future>
#include <thread>

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
    sessions_.back()->pools = std::make_unique<pool::WorkerPools>(
        workers_.context(i).get_executor(), stats_.worker(i).pool);
    maintenance_timers_.push_back(std::make_unique<asio::steady_timer>(workers_.context(i)));
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
    for (auto& sessions : sessions_) sessions->pools->close_all();
    maintenance_timers_.clear();
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

void Server::start() {
  for (std::size_t i = 0; i < workers_.size(); ++i) {
    asio::co_spawn(workers_.context(i), accept_loop(i), asio::detached);
    asio::co_spawn(workers_.context(i), maintenance_loop(i), asio::detached);
  }
  workers_.start();
  const auto config = shared_.config.load();
  spdlog::info("listening on {}:{} with {} worker{}{}", config->listen.address, config->listen.port,
               workers_.size(), workers_.size() == 1 ? "" : "s",
               shared_.tls ? ", TLS available" : "");
}

void Server::reload(std::shared_ptr<const config::Config> config) {
  shared_.config.store(std::move(config));
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
    sessions_[i]->stopping = true;
    // Copy: request_stop never destroys a session synchronously, but stay safe.
    const std::vector<Session*> list(sessions_[i]->sessions.begin(), sessions_[i]->sessions.end());
    for (Session* s : list) s->request_stop();
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
  for (auto& sessions : sessions_) sessions->pools->close_all();
  maintenance_timers_.clear();
  acceptors_.clear();
  workers_.destroy();
  destroyed_ = true;
  spdlog::info("stopped");
}

}  // namespace pgrelay::session
