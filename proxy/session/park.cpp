// Parked clients: a transaction-pooling client idle between transactions for [pool]
// park_after_ms gives up its session (buffers, timers, coroutine frames, a copy of the reported
// parameters) and keeps only its socket and the state its next transaction needs. When the
// socket becomes readable, a new session takes over where the old one stopped.
#include <spdlog/spdlog.h>

#include <malloc.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <array>
#include <limits>

#include "pgrelay/protocol/sqlstate.hpp"
#include "pgrelay/session/session.hpp"
#include "pgrelay/util/log.hpp"
#include "relay_limits.hpp"

namespace pgrelay::session {

namespace asio = net::asio;
using asio::awaitable;
using net::error_code;
namespace sqlstate = protocol::sqlstate;

namespace {

/// Distinct login profiles a worker keeps for sharing; past this, parked clients get their own.
constexpr std::size_t kMaxProfiles = 256;

/// Spare buffers a worker keeps once many of its clients have parked.
constexpr std::size_t kSparesAfterParking = 8;

}  // namespace

// ---- the session side --------------------------------------------------------------------

Session::Session(Shared& shared, WorkerSessions& worker, const net::asio::any_io_executor& executor,
                 ParkedClient&& parked)
    : Session(shared, worker, parked.profile->config, parked.id, parked.started,
              net::tcp::socket(executor, parked.v6 ? net::tcp::v6() : net::tcp::v4(), parked.fd)) {
  const LoginProfile& profile = *parked.profile;
  user_ = profile.user;
  database_ = profile.database;
  credential_ = profile.credential;
  client_reported_ = profile.reported;
  if (parked.extras) {
    client_set_ = std::move(parked.extras->client_set);
    statements_ = std::move(parked.extras->statements);
    sql_statements_ = std::move(parked.extras->sql_statements);
  }
  params_version_ = parked.params_version;
  ryw_lsn_ = parked.ryw_lsn;
  ryw_unknown_ = parked.ryw_unknown;
  ryw_reader_ = parked.ryw_reader;
  pending_commit_lsn_ = parked.pending_commit_lsn;
  unnamed_may_commit_ = parked.unnamed_may_commit;
  client_key_ = parked.client_key;
  if (client_key_) cancel_entry_ = shared.cancels.entry(*client_key_);
  client_v6_ = parked.v6;
  parked.fd = -1;
  counted_ = true;
  logged_in_ = true;
  pooled_ = true;
  transaction_mode_ = true;
}

void Session::unpark(Shared& shared, WorkerSessions& worker,
                     const net::asio::any_io_executor& executor,
                     std::unique_ptr<ParkedClient> parked) {
  shared.stats->clients_parked.fetch_sub(1, std::memory_order_relaxed);
  // The socket goes back to Asio (registered again with the worker's reactor).
  std::shared_ptr<Session> session;
  try {
    session = std::make_shared<Session>(shared, worker, executor, std::move(*parked));
  } catch (const std::exception& e) {
    // The socket could not be registered (the constructor throws before taking anything).
    spdlog::warn("c{}: closed: a parked client could not go on: {}", parked->id, e.what());
    if (parked->client_key) shared.cancels.remove(*parked->client_key);
    shared.stats->client_connections.fetch_sub(1, std::memory_order_relaxed);
    ::close(parked->fd);
    return;
  }
  parked.reset();
  PGRELAY_TRACE("c{}: unparked", session->id_);
  if (worker.stopping) session->request_stop();
  start(session, &Session::serve_pooled);
}

std::optional<std::chrono::steady_clock::time_point> Session::parkable_since() const {
  if (!(idle_waiting_ || client_reading_) || parking_ || closing_ || stopping_) {
    return std::nullopt;
  }
  // Only a client whose next transaction starts from nothing but the state kept in
  // ParkedClient: transaction pooling, no TLS stream, no server connection (held, parked or
  // pinned), outside any transaction, nothing half-read, owed or still being written to it
  // (the last answer can still be on its way after the server connection went back).
  if (s2c_writing_ || c2s_writing_ || !transaction_mode_ || dedicated_ || pinned_ || tls_ ||
      server_conn_ || !parked_.empty() || tx_status_ != protocol::TransactionStatus::kIdle ||
      lost_tx_ != LostTx::kNone || lost_skipping_ || !deferred_begin_.empty() ||
      !readback_.empty() || !slots_.empty() || has_login_leftover() || c2s_begin_ != c2s_end_ ||
      c2s_stream_left_ != 0 || final_error_) {
    return std::nullopt;
  }
  return idle_since_;
}

void Session::start_parking() {
  parking_ = true;  // pooled_client_loop() returns from its wait or read (see there)
  error_code ignored;
  client_.cancel(ignored);
}

awaitable<void> Session::serve_pooled() {
  co_await pooled_client_loop();
  if (parking_ && !stopping_ && !final_error_) {
    park();
    co_return;
  }
  if (parking_) {
    // Stopped while parking: what request_stop() does for any idle client.
    set_final_error(sqlstate::kAdminShutdown,
                    "terminating connection due to administrator command");
  }
  co_await end_pooled();
}

void Session::park() {
  closing_ = true;  // ends the server reader, which waits for a server connection
  reader_signal_.cancel();
  timer_.cancel();
  c2s_begin_ = c2s_end_ = 0;
  worker_.give_back(std::move(c2s_buffer_), detail::kClientBufferSize);
  c2s_buffer_ = {};
  auto parked = std::make_unique<ParkedClient>();
  parked->profile = worker_.intern(config_, user_, database_, credential_, client_reported_);
  if (!client_set_.empty() || !statements_.empty() || !sql_statements_.empty()) {
    parked->extras = std::make_unique<ParkedExtras>();
    parked->extras->client_set = std::move(client_set_);
    parked->extras->statements = std::move(statements_);
    parked->extras->sql_statements = std::move(sql_statements_);
  }
  parked->started = started_;
  parked->id = id_;
  parked->params_version = params_version_;
  parked->ryw_lsn = ryw_lsn_;
  parked->ryw_unknown = ryw_unknown_;
  parked->ryw_reader = ryw_reader_;
  parked->pending_commit_lsn = pending_commit_lsn_;
  parked->unnamed_may_commit = unnamed_may_commit_;
  parked->client_key = client_key_;
  parked->v6 = client_v6_;
  const auto executor = client_.get_executor();
  error_code ec;
  parked->fd = client_.release(ec);
  if (ec || !worker_.park(parked, executor)) {
    // Cannot be watched (out of memory for the epoll set, say): the client goes on in a new
    // session at once, as if it had sent something.
    spdlog::warn("c{}: could not park ({}), going on", id_, ec ? ec.message() : "epoll");
    if (ec) {
      client_key_.reset();
      cancel_entry_.reset();
      counted_ = false;
      shared_.stats->client_connections.fetch_sub(1, std::memory_order_relaxed);
      if (parked->client_key) shared_.cancels.remove(*parked->client_key);
      return;  // the socket is gone: nothing to go on with
    }
    client_key_.reset();
    cancel_entry_.reset();
    counted_ = false;
    shared_.stats->clients_parked.fetch_add(1, std::memory_order_relaxed);
    Session::unpark(shared_, worker_, executor, std::move(parked));
    return;
  }
  // The cancel key and the connection count go with the client.
  client_key_.reset();
  cancel_entry_.reset();
  counted_ = false;
  PGRELAY_TRACE("c{}: parked", id_);
}

// ---- the worker side ---------------------------------------------------------------------

std::shared_ptr<const LoginProfile> WorkerSessions::intern(
    const std::shared_ptr<const config::Config>& config, const std::string& user,
    const std::string& database, const pool::Credential& credential,
    const pool::ParamList& reported) {
  for (std::size_t i = 0; i < profiles.size();) {
    auto profile = profiles[i].lock();
    if (!profile) {
      profiles[i] = std::move(profiles.back());
      profiles.pop_back();
      continue;
    }
    if (profile->config == config && profile->user == user && profile->database == database &&
        profile->credential == credential && profile->reported == reported) {
      return profile;
    }
    ++i;
  }
  auto profile = std::make_shared<const LoginProfile>(
      LoginProfile{config, user, database, credential, reported});
  if (profiles.size() < kMaxProfiles) profiles.push_back(profile);
  return profile;
}

bool WorkerSessions::park(std::unique_ptr<ParkedClient>& client,
                          const net::asio::any_io_executor& executor) {
  if (park_epoll < 0) {
    park_epoll = ::epoll_create1(EPOLL_CLOEXEC);
    if (park_epoll < 0) return false;
    park_watch = std::make_unique<asio::posix::stream_descriptor>(executor, park_epoll);
  }
  epoll_event event{};
  event.events = EPOLLIN | EPOLLRDHUP;
  event.data.ptr = client.get();
  if (::epoll_ctl(park_epoll, EPOLL_CTL_ADD, client->fd, &event) != 0) return false;
  ParkedClient* p = client.release();
  p->next = parked;
  if (parked != nullptr) parked->prev = p;
  parked = p;
  shared->stats->clients_parked.fetch_add(1, std::memory_order_relaxed);
  shared->stats->client_parks_total.fetch_add(1, std::memory_order_relaxed);
  watch_parked();
  return true;
}

std::unique_ptr<ParkedClient> WorkerSessions::unlink_parked(ParkedClient* p) {
  if (p->prev != nullptr) {
    p->prev->next = p->next;
  } else {
    parked = p->next;
  }
  if (p->next != nullptr) p->next->prev = p->prev;
  p->prev = p->next = nullptr;
  ::epoll_ctl(park_epoll, EPOLL_CTL_DEL, p->fd, nullptr);
  return std::unique_ptr<ParkedClient>(p);
}

void WorkerSessions::watch_parked() {
  if (park_watching || parked == nullptr) return;
  park_watching = true;
  park_watch->async_wait(asio::posix::stream_descriptor::wait_read, [this](const error_code& ec) {
    park_watching = false;
    if (ec) return;  // cancelled: drop_parked()
    // Readable (the client sent something, or closed): each goes on in a session.
    std::array<epoll_event, 64> events{};
    while (true) {
      const int n = ::epoll_wait(park_epoll, events.data(), static_cast<int>(events.size()), 0);
      for (int i = 0; i < n; ++i) {
        auto client =
            unlink_parked(static_cast<ParkedClient*>(events[static_cast<std::size_t>(i)].data.ptr));
        Session::unpark(*shared, *this, park_watch->get_executor(), std::move(client));
      }
      if (n < static_cast<int>(events.size())) break;
    }
    watch_parked();
  });
}

void WorkerSessions::stop_parked() {
  while (parked != nullptr) {
    Session::unpark(*shared, *this, park_watch->get_executor(), unlink_parked(parked));
  }
}

void WorkerSessions::drop_parked() {
  while (parked != nullptr) {
    auto p = unlink_parked(parked);
    if (shared != nullptr) {
      if (p->client_key) shared->cancels.remove(*p->client_key);
      shared->stats->client_connections.fetch_sub(1, std::memory_order_relaxed);
      shared->stats->clients_parked.fetch_sub(1, std::memory_order_relaxed);
    }
    ::close(p->fd);
  }
  park_watch.reset();  // closes park_epoll
  park_epoll = -1;
}

std::optional<std::chrono::steady_clock::time_point> WorkerSessions::park_idle(
    std::chrono::steady_clock::duration after) {
  const auto now = std::chrono::steady_clock::now();
  const auto since = now - after;
  // start_parking() only cancels waits: no session ends (or leaves `sessions`) while this runs.
  std::size_t parking = 0;
  auto next = now + after;
  for (Session* s : sessions) {
    const auto idle = s->parkable_since();
    if (!idle) continue;
    if (*idle <= since) {
      s->start_parking();
      ++parking;
    } else {
      next = std::min(next, *idle + after);
    }
  }
  if (parking >= 64) trim_pending = true;
  if (trim_pending && parking == 0 && now - last_trim > std::chrono::seconds(1)) {
    // Many sessions just ended for parking: keep a few of the buffers they gave back and return
    // the pages they freed to the system.
    trim_pending = false;
    last_trim = now;
    if (spare_buffers.size() > kSparesAfterParking) spare_buffers.resize(kSparesAfterParking);
    ::malloc_trim(0);
  }
  if (sessions.empty() && !trim_pending) return std::nullopt;
  return next;
}

}  // namespace pgrelay::session
