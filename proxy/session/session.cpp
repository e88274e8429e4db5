// The client session coroutine: startup packet, TLS, login pass-through to the primary, relaying
// with transaction tracking, cancel forwarding, and graceful stop.
#include "pgrelay/session/session.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <cstring>
#include <limits>

#include <boost/asio/experimental/awaitable_operators.hpp>

#include "pgrelay/net/workers.hpp"
#include "pgrelay/protocol/sqlstate.hpp"
#include "pgrelay/util/log.hpp"
#include "relay_limits.hpp"

namespace pgrelay::session {

namespace asio = net::asio;
using asio::awaitable;
using net::error_code;
using net::kNoThrow;
using net::tcp;
using namespace std::chrono_literals;
using namespace asio::experimental::awaitable_operators;
namespace sqlstate = protocol::sqlstate;
using protocol::BackendType;
using protocol::FrontendType;

namespace {

using namespace detail;

/// Largest server message buffered during login (they are a few bytes each: R, S, K, Z, E).
constexpr std::uint32_t kMaxLoginServerMessage = 1024 * 1024;

std::string endpoint_text(const tcp::socket& socket, bool& v6) {
  error_code ec;
  const auto ep = socket.remote_endpoint(ec);
  if (ec) return "?";
  v6 = ep.address().is_v6();
  if (v6) return ep.address().to_string() + ":" + std::to_string(ep.port());
  // IPv4 by hand: Asio goes through inet_ntop, whose sprintf cost more than the rest of
  // accepting a client.
  std::string text;
  text.reserve(21);  // "255.255.255.255:65535"
  std::array<char, 8> digits{};
  const auto append = [&](unsigned value) {
    const auto result = std::to_chars(digits.data(), digits.data() + digits.size(), value);
    text.append(digits.data(), result.ptr);
  };
  const auto bytes = ep.address().to_v4().to_bytes();
  for (std::size_t i = 0; i < bytes.size(); ++i) {
    if (i > 0) text.push_back('.');
    append(bytes[i]);
  }
  text.push_back(':');
  append(ep.port());
  return text;
}

}  // namespace

Session::Session(Shared& shared, WorkerSessions& worker,
                 std::shared_ptr<const config::Config> config, std::uint64_t id,
                 std::chrono::steady_clock::time_point started, tcp::socket socket)
    : shared_(shared),
      worker_(worker),
      config_(std::move(config)),
      id_(id),
      started_(started),
      client_(std::move(socket)),
      server_(client_.get_executor()),
      watchdog_(client_.get_executor()),
      timer_(client_.get_executor()),
      reader_signal_(client_.get_executor()),
      c2s_scanner_(config_->limits.max_message_bytes),
      // The limit protects pgrelay from its clients; results from the server are only streamed.
      s2c_scanner_(std::numeric_limits<std::uint32_t>::max()) {
  worker_.sessions.insert(this);
  worker_.session_added();
}

Session::Session(Shared& shared, WorkerSessions& worker, tcp::socket socket)
    : Session(shared, worker, shared.config.load(),
              shared.next_id.fetch_add(1, std::memory_order_relaxed),
              std::chrono::steady_clock::now(), std::move(socket)) {
  peer_ = endpoint_text(client_, client_v6_);
}

const std::shared_ptr<const cluster::Topology>& WorkerSessions::topology() {
  // The snapshot loaded may be newer than the generation read: then the next call copies again.
  if (!topology_copy || topology_copy->generation != shared->monitor->generation()) {
    topology_copy = std::make_shared<const cluster::Topology>(*shared->monitor->topology());
  }
  return topology_copy;
}

protocol::ByteVector WorkerSessions::take_buffer(std::size_t size) {
  protocol::ByteVector buffer;
  if (!spare_buffers.empty()) {
    buffer = std::move(spare_buffers.back());
    spare_buffers.pop_back();
  }
  if (buffer.size() < size) buffer.resize(size);
  return buffer;
}

void WorkerSessions::give_back(protocol::ByteVector&& buffer, std::size_t max_size) {
  constexpr std::size_t kMaxSpare = 64;
  if (buffer.empty() || buffer.size() > max_size || spare_buffers.size() >= kMaxSpare) return;
  spare_buffers.push_back(std::move(buffer));
}

Session::~Session() {
  worker_.give_back(std::move(c2s_buffer_), kServerBufferSize);
  worker_.give_back(std::move(s2c_buffer_), kServerBufferSize);
  worker_.sessions.erase(this);
  worker_.paused_waiters.erase(this);
  count_active(false);
  if (client_key_) shared_.cancels.remove(*client_key_);
  if (counted_) shared_.stats->client_connections.fetch_sub(1, std::memory_order_relaxed);
  if (backend_counted_) {
    shared_.stats->backend(static_cast<std::size_t>(backend_index_))
        .clients.fetch_sub(1, std::memory_order_relaxed);
  }
}

void Session::start(const std::shared_ptr<Session>& session, awaitable<void> (Session::*entry)()) {
  asio::co_spawn(
      session->client_.get_executor(),
      [self = session, entry]() -> awaitable<void> {
        try {
          co_await ((*self).*entry)();
        } catch (const std::exception& e) {
          // No exception may end the process; one that escapes is a bug worth a loud line.
          spdlog::error("c{}: internal error: {}", self->id_, e.what());
        }
      },
      asio::detached);
}

void Session::set_final_error(std::string_view sqlstate, std::string message) {
  if (!final_error_) final_error_ = FinalError{std::string(sqlstate), std::move(message)};
}

void Session::stop_relay(std::string_view reason) {
  if (close_reason_.empty()) close_reason_ = reason;
  if (closing_) return;
  closing_ = true;
  error_code ignored;
  if (pooled_) {
    // The server connection is given back (or closed) by end_pooled(); stop its reader.
    if (server_conn_) server_conn_->socket.cancel(ignored);
    reader_signal_.cancel();
    client_.cancel(ignored);
    timer_.cancel();
    return;
  }
  if (logged_in_ && server_.is_open() && !replication_) {
    // Best effort: tell the server we are leaving so it does not log an unexpected EOF.
    protocol::ByteVector terminate;
    protocol::append_terminate(terminate);
    net::send_now(server_, asio::buffer(terminate), ignored);
  }
  server_.close(ignored);
  client_.cancel(ignored);
  timer_.cancel();
}

void Session::request_stop() {
  stopping_ = true;
  if (pooled_ && logged_in_) {
    if (idle() && !s2c_writing_ && !c2s_writing_) {
      set_final_error(sqlstate::kAdminShutdown,
                      "terminating connection due to administrator command");
      stop_relay("server shutting down");
    }
    return;
  }
  if (!logged_in_) {
    // Still logging in: the startup watchdog bounds it; let the login finish or fail, and
    // close the session right after (checked in run()).
    return;
  }
  if (replication_) return;  // streams until the shutdown deadline
  if (idle() && !s2c_writing_) {
    set_final_error(sqlstate::kAdminShutdown,
                    "terminating connection due to administrator command");
    stop_relay("server shutting down");
  }
}

void Session::force_close() {
  stopping_ = true;
  set_final_error(sqlstate::kAdminShutdown, "terminating connection due to administrator command");
  stop_relay("shutdown deadline reached");
  error_code ignored;
  watchdog_.cancel();
  client_.cancel(ignored);
}

void Session::topology_changed(const cluster::Topology& topology) {
  if (backend_index_ < 0 || closing_) return;
  const auto& mine = topology.nodes[static_cast<std::size_t>(backend_index_)];
  if (pooled_ && routed_read_ && mine.role != cluster::NodeRole::kFenced) {
    // A read on a standby (or a standby just promoted) may finish where it is.
    return;
  }
  const bool demoted =
      mine.role == cluster::NodeRole::kFenced || mine.role == cluster::NodeRole::kStandby;
  const auto* primary = topology.primary_node();
  if (!demoted && (primary == nullptr || topology.primary == backend_index_)) return;
  if (pooled_ && transaction_mode_ && !pinned_ && logged_in_ && server_conn_) {
    // The transaction on the old primary fails (the client is told, see lost.cpp); the session
    // goes on and its next transaction runs on the new primary.
    abandon_server("\"" + backend_name_ + "\" is no longer the primary");
    return;
  }
  std::string message = "terminating connection because the primary failed over: \"" +
                        backend_name_ + "\" is no longer the primary";
  if (primary != nullptr) message += "; reconnect to reach \"" + primary->name + "\"";
  set_final_error(sqlstate::kAdminShutdown, std::move(message));
  // Also ends a login still in progress with the old primary; the final error is reported.
  stop_relay("primary failed over");
}

awaitable<void> Session::send_fatal(std::string_view sqlstate, std::string message,
                                    std::string_view detail) {
  if (close_reason_.empty()) close_reason_ = "error";
  spdlog::info("c{}: FATAL {} {}{}{}", id_, sqlstate, message, detail.empty() ? "" : ": ", detail);
  out_.clear();
  protocol::append_error_response(out_, protocol::Severity::kFatal, sqlstate, message, detail);
  timer_.expires_after(kFinalWriteTimeout);
  co_await (client_write(asio::buffer(out_)) || timer_.async_wait(kNoThrow));
}

awaitable<void> Session::run() {
  const auto& limits = config_->limits;
  worker_.counters->connections_total.fetch_add(1, std::memory_order_relaxed);
  if (shared_.stats->client_connections.fetch_add(1, std::memory_order_relaxed) >=
      limits.max_clients) {
    counted_ = true;
    co_await send_fatal(sqlstate::kTooManyConnections, "sorry, too many clients already",
                        "pgrelay's [limits] max_clients is " + std::to_string(limits.max_clients));
    co_return;
  }
  counted_ = true;
  spdlog::debug("c{}: accepted from {}", id_, peer_);

  // Startup packet, TLS and login must finish within startup_timeout_ms.
  watchdog_.expires_after(std::chrono::milliseconds(limits.startup_timeout_ms));
  watchdog_.async_wait([self = shared_from_this()](error_code ec) {
    if (ec || self->logged_in_) return;
    self->timed_out_ = true;
    error_code ignored;
    self->client_.cancel(ignored);
    self->server_.cancel(ignored);
    self->timer_.cancel();
  });

  protocol::StartupMessage startup;
  if (!co_await read_startup(startup)) {
    watchdog_.cancel();
    co_return;
  }
  user_ = std::string(startup.get("user").value_or(""));
  database_ = std::string(startup.get("database").value_or(user_));
  replication_ = protocol::is_replication_value(startup.get("replication").value_or(""));
  if (!replication_ && config_->auth.enabled) {
    // pgrelay logs the client in itself and lends it pooled server connections. Replication
    // connections always pass through (the primary authenticates them).
    co_await run_pooled(startup);
    co_return;
  }

  if (!co_await connect_primary()) {
    watchdog_.cancel();
    co_return;
  }
  const bool logged_in = co_await login();
  watchdog_.cancel();
  if (!logged_in || closing_) {
    // A failover right at the end of the login ends it too; login() reported other failures.
    if (logged_in && final_error_) {
      co_await send_fatal(final_error_->sqlstate, final_error_->message);
    }
    worker_.counters->login_failures_total.fetch_add(1, std::memory_order_relaxed);
    co_return;
  }
  auto& backend = shared_.stats->backend(static_cast<std::size_t>(backend_index_));
  backend.clients.fetch_add(1, std::memory_order_relaxed);
  backend_counted_ = true;
  if (replication_) {
    backend.routed_replication.fetch_add(1, std::memory_order_relaxed);
  } else {
    shared_.stats->routes(worker_.index, static_cast<std::size_t>(backend_index_))
        .write.fetch_add(1, std::memory_order_relaxed);
  }
  if (const auto topology = worker_.topology(); topology->primary != backend_index_) {
    // The primary changed while this client logged in.
    topology_changed(*topology);
  }

  spdlog::info("c{}: login user={} database={}{} from {} on {} ({}:{}){}", id_, user_, database_,
               replication_ ? " replication" : "", peer_, backend_name_, backend_host_,
               backend_port_, tls_ ? " tls" : "");
  if (stopping_) request_stop();
  co_await relay();

  if (final_error_) {
    co_await send_fatal(final_error_->sqlstate, final_error_->message);
  }
  error_code ignored;
  if (tls_) {
    timer_.expires_after(kFinalWriteTimeout);
    co_await (tls_->async_shutdown(kNoThrow) || timer_.async_wait(kNoThrow));
  }
  client_.close(ignored);
  const auto seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started_).count();
  spdlog::info("c{}: closed ({}) after {:.3f} s", id_,
               close_reason_.empty() ? "client closed" : close_reason_, seconds);
}

awaitable<std::tuple<error_code, std::size_t>> Session::client_write(asio::const_buffer buffer) {
  const std::span<const asio::const_buffer> one(&buffer, 1);
  if (tls_) co_return co_await net::write_all(*tls_, one);
  co_return co_await net::write_all(client_, one);
}

awaitable<std::tuple<error_code, std::size_t>> Session::client_read_exact(
    asio::mutable_buffer buffer) {
  auto* out = static_cast<std::uint8_t*>(buffer.data());
  std::size_t got = 0;
  while (got < buffer.size()) {
    if (login_in_begin_ == login_in_end_) {
      login_in_begin_ = login_in_end_ = 0;
      error_code ec;
      std::size_t n = 0;
      std::tie(ec, n) = co_await client_read_some(asio::buffer(login_in_));
      if (ec) co_return std::tuple{ec, got};
      login_in_end_ = n;
    }
    const std::size_t take = std::min(buffer.size() - got, login_in_end_ - login_in_begin_);
    std::memcpy(out + got, login_in_.data() + login_in_begin_, take);
    login_in_begin_ += take;
    got += take;
  }
  co_return std::tuple{error_code{}, got};
}

std::size_t Session::take_login_leftover(std::uint8_t* out, std::size_t capacity) {
  const std::size_t take = std::min(capacity, login_in_end_ - login_in_begin_);
  if (take > 0) std::memcpy(out, login_in_.data() + login_in_begin_, take);
  login_in_begin_ += take;
  return take;
}

awaitable<bool> Session::read_startup(protocol::StartupMessage& startup) {
  // A client may ask for TLS and for GSS encryption before its startup message; a few rounds
  // suffice for any real client.
  for (int round = 0; round < 4; ++round) {
    std::array<std::uint8_t, 4> length_bytes{};
    auto [ec, n] = co_await client_read_exact(asio::buffer(length_bytes));
    if (ec) {
      if (timed_out_) {
        co_await send_fatal(sqlstate::kProtocolViolation,
                            "incomplete startup packet: not received within " +
                                std::to_string(config_->limits.startup_timeout_ms) + " ms");
      } else {
        close_reason_ =
            n == 0 && round == 0 ? "closed before startup" : "incomplete startup packet";
        spdlog::debug("c{}: {}", id_, close_reason_);
      }
      co_return false;
    }
    const std::uint32_t length = protocol::read_u32(length_bytes.data());
    if (auto error = protocol::check_startup_length(length)) {
      co_await send_fatal(error->sqlstate, error->message);
      co_return false;
    }
    startup_packet_.resize(length);
    std::copy(length_bytes.begin(), length_bytes.end(), startup_packet_.begin());
    std::tie(ec, n) =
        co_await client_read_exact(asio::buffer(startup_packet_.data() + 4, length - 4));
    if (ec) {
      if (timed_out_) {
        co_await send_fatal(sqlstate::kProtocolViolation,
                            "incomplete startup packet: not received within " +
                                std::to_string(config_->limits.startup_timeout_ms) + " ms");
      } else {
        close_reason_ = "incomplete startup packet";
      }
      co_return false;
    }

    auto packet = protocol::parse_startup_packet(startup_packet_);
    if (std::holds_alternative<protocol::SslRequest>(packet)) {
      if (tls_) {
        co_await send_fatal(sqlstate::kProtocolViolation,
                            "SSLRequest received on a TLS connection");
        co_return false;
      }
      if (has_login_leftover()) {
        // Bytes after the SSLRequest, before our answer: someone trying to get plaintext read as
        // if it had come over TLS (CVE-2021-23214). PostgreSQL refuses the same way.
        co_await send_fatal(sqlstate::kProtocolViolation,
                            "received unencrypted data after SSL request");
        co_return false;
      }
      const char answer = shared_.tls ? 'S' : 'N';
      std::tie(ec, n) = co_await client_write(asio::buffer(&answer, 1));
      if (ec) co_return false;
      if (shared_.tls) {
        tls_.emplace(client_, *shared_.tls);
        auto [hec] = co_await tls_->async_handshake(asio::ssl::stream_base::server, kNoThrow);
        if (hec) {
          close_reason_ = "TLS handshake failed";
          spdlog::info("c{}: TLS handshake with {} failed: {}", id_, peer_, hec.message());
          co_return false;
        }
      }
      continue;
    }
    if (std::holds_alternative<protocol::GssEncRequest>(packet)) {
      if (has_login_leftover()) {
        co_await send_fatal(sqlstate::kProtocolViolation,
                            "received unencrypted data after GSSAPI encryption request");
        co_return false;
      }
      const char answer = 'N';
      std::tie(ec, n) = co_await client_write(asio::buffer(&answer, 1));
      if (ec) co_return false;
      continue;
    }
    if (auto* cancel = std::get_if<protocol::CancelRequest>(&packet)) {
      co_await forward_cancel(*cancel);
      co_return false;
    }
    if (auto* error = std::get_if<protocol::StartupError>(&packet)) {
      co_await send_fatal(error->sqlstate, error->message);
      co_return false;
    }
    startup = std::move(std::get<protocol::StartupMessage>(packet));
    co_return true;
  }
  co_await send_fatal(sqlstate::kProtocolViolation, "too many encryption requests before startup");
  co_return false;
}

awaitable<void> Session::forward_cancel(protocol::CancelRequest request) {
  close_reason_ = "cancel request";
  const auto target = shared_.cancels.find({request.process_id, request.secret_key});
  if (target && target->port == 0) {
    // A pooled client between transactions: nothing runs, nothing to cancel.
    spdlog::debug("c{}: cancel request for an idle pooled client ignored", id_);
    co_return;
  }
  if (!target) {
    // PostgreSQL ignores unknown keys without a word; so do we.
    spdlog::debug("c{}: cancel request with an unknown key ignored", id_);
    co_return;
  }
  if (auto ec = co_await connect_to(target->host, target->port)) {
    spdlog::info("c{}: cannot forward cancel request to {}:{}: {}", id_, target->host, target->port,
                 ec.message());
    co_return;
  }
  const auto packet =
      protocol::build_cancel_request({target->key.process_id, target->key.secret_key});
  auto [ec, n] = co_await asio::async_write(server_, asio::buffer(packet), kNoThrow);
  spdlog::info("c{}: cancel request forwarded to {}:{}{}", id_, target->host, target->port,
               ec ? ": " + ec.message() : std::string());
  // Wait for the server to close, as PostgreSQL's own clients do, so the cancel is processed.
  std::uint8_t byte = 0;
  timer_.expires_after(std::chrono::milliseconds(config_->limits.connect_timeout_ms));
  co_await (server_.async_read_some(asio::buffer(&byte, 1), kNoThrow) ||
            timer_.async_wait(kNoThrow));
  error_code ignored;
  server_.close(ignored);
}

awaitable<error_code> Session::connect_to(const std::string& host, std::uint16_t port) {
  error_code ec;
  tcp::endpoint endpoint;
  const auto address = asio::ip::make_address(host, ec);
  if (!ec) {
    endpoint = tcp::endpoint(address, port);
  } else {
    tcp::resolver resolver(server_.get_executor());
    auto [rec, results] = co_await resolver.async_resolve(host, std::to_string(port), kNoThrow);
    if (rec) co_return rec;
    if (results.empty()) co_return asio::error::host_not_found;
    endpoint = *results.begin();
  }
  if (server_.is_open()) server_.close(ec);
  timer_.expires_after(std::chrono::milliseconds(config_->limits.connect_timeout_ms));
  auto result = co_await (server_.async_connect(endpoint, kNoThrow) || timer_.async_wait(kNoThrow));
  if (result.index() == 1) {
    server_.close(ec);
    co_return timed_out_ ? asio::error::operation_aborted : asio::error::timed_out;
  }
  ec = std::get<0>(std::get<0>(result));
  if (!ec) net::set_no_delay(server_);
  co_return ec;
}

awaitable<bool> Session::connect_primary() {
  const auto wait = std::chrono::milliseconds(config_->routing.primary_wait_ms);
  const auto deadline = std::chrono::steady_clock::now() + wait;
  std::string last_problem;
  bool waited = false;
  while (true) {
    const auto topology = shared_.monitor->topology();
    if (const auto* primary = topology->primary_node()) {
      backend_name_ = primary->name;
      backend_host_ = primary->host;
      backend_port_ = primary->port;
      const auto ec = co_await connect_to(backend_host_, backend_port_);
      if (!ec) {
        // From here on a topology change can end this session (see topology_changed()).
        backend_index_ = topology->primary;
        if (waited) {
          spdlog::info("c{}: primary {} reached after waiting {} ms", id_, backend_name_,
                       std::chrono::duration_cast<std::chrono::milliseconds>(
                           std::chrono::steady_clock::now() - started_)
                           .count());
        }
        co_return true;
      }
      last_problem = "could not connect to primary \"" + backend_name_ + "\" (" + backend_host_ +
                     ":" + std::to_string(backend_port_) + "): " + ec.message();
      spdlog::info("c{}: {}", id_, last_problem);
      shared_.monitor->request_probe();
    } else {
      last_problem = "no backend is known to be the primary";
    }
    if (timed_out_ || std::chrono::steady_clock::now() >= deadline) break;
    waited = true;
    timer_.expires_after(std::min<std::chrono::steady_clock::duration>(
        kPrimaryPoll, deadline - std::chrono::steady_clock::now()));
    co_await timer_.async_wait(kNoThrow);
  }
  close_reason_ = "no primary";
  co_await send_fatal(sqlstate::kCannotConnectNow,
                      "no primary server is available (waited " +
                          std::to_string(config_->routing.primary_wait_ms) + " ms)",
                      last_problem);
  co_return false;
}

awaitable<std::optional<protocol::Bytes>> Session::next_server_message() {
  while (true) {
    const protocol::Bytes available(login_buffer_.data() + login_begin_, login_end_ - login_begin_);
    const auto frame = protocol::decode_frame<BackendType>(available, kMaxLoginServerMessage);
    if (frame.status == protocol::FrameStatus::kMalformed) co_return std::nullopt;
    if (frame.status == protocol::FrameStatus::kComplete) {
      login_begin_ += frame.header.total_length();
      co_return available.first(frame.header.total_length());
    }
    const std::size_t needed = available.size() >= protocol::kHeaderLength
                                   ? frame.header.total_length()
                                   : protocol::kHeaderLength;
    if (login_begin_ > 0) {
      std::copy(login_buffer_.begin() + static_cast<std::ptrdiff_t>(login_begin_),
                login_buffer_.begin() + static_cast<std::ptrdiff_t>(login_end_),
                login_buffer_.begin());
      login_end_ -= login_begin_;
      login_begin_ = 0;
    }
    if (login_buffer_.size() < std::max<std::size_t>(needed, 4096)) {
      login_buffer_.resize(std::max<std::size_t>(needed, 4096));
    }
    auto [ec, n] = co_await server_.async_read_some(
        asio::buffer(login_buffer_.data() + login_end_, login_buffer_.size() - login_end_),
        kNoThrow);
    if (ec) co_return std::nullopt;
    login_end_ += n;
  }
}

awaitable<bool> Session::login() {
  auto [ec, n] = co_await asio::async_write(server_, asio::buffer(startup_packet_), kNoThrow);
  out_.clear();
  const std::string backend = "\"" + backend_name_ + "\"";
  while (!ec) {
    const auto message = co_await next_server_message();
    if (!message) break;
    const auto type = static_cast<BackendType>((*message)[0]);
    const auto body = message->subspan(protocol::kHeaderLength);
    switch (type) {
      case BackendType::kAuthentication: {
        out_.insert(out_.end(), message->begin(), message->end());
        const auto code = protocol::parse_authentication_code(body);
        if (!code || !protocol::auth_expects_response(*code)) break;
        std::tie(ec, n) = co_await client_write(asio::buffer(out_));
        out_.clear();
        if (ec) co_return false;
        // The client's answer: one 'p' message, forwarded as it is.
        std::array<std::uint8_t, protocol::kHeaderLength> header{};
        std::tie(ec, n) = co_await client_read_exact(asio::buffer(header));
        if (ec) {
          close_reason_ = timed_out_ ? "login timed out" : "client left during authentication";
          if (timed_out_) {
            co_await send_fatal(sqlstate::kProtocolViolation,
                                "authentication not completed within " +
                                    std::to_string(config_->limits.startup_timeout_ms) + " ms");
          }
          co_return false;
        }
        const std::uint32_t length = protocol::read_u32(header.data() + 1);
        if (header[0] != static_cast<std::uint8_t>(FrontendType::kPassword) || length < 4 ||
            length > kMaxLoginMessage) {
          co_await send_fatal(sqlstate::kProtocolViolation,
                              "expected an authentication response from the client");
          co_return false;
        }
        out_.assign(header.begin(), header.end());
        out_.resize(std::size_t{length} + 1);
        std::tie(ec, n) = co_await client_read_exact(
            asio::buffer(out_.data() + protocol::kHeaderLength, length - 4));
        if (ec) {
          close_reason_ = "client left during authentication";
          co_return false;
        }
        std::tie(ec, n) = co_await asio::async_write(server_, asio::buffer(out_), kNoThrow);
        out_.clear();
        break;
      }
      case BackendType::kBackendKeyData: {
        const auto key = protocol::parse_backend_key_data(body);
        if (!key) {
          co_await send_fatal(sqlstate::kProtocolViolation,
                              "invalid BackendKeyData from backend " + backend);
          co_return false;
        }
        if (cancel_entry_) {
          cancel_entry_->set(backend_host_, backend_port_, *key);
        } else {
          register_cancel(CancelTarget{backend_host_, backend_port_, *key});
        }
        protocol::append_backend_key_data(out_, *client_key_);
        break;
      }
      case BackendType::kReadyForQuery: {
        out_.insert(out_.end(), message->begin(), message->end());
        tx_status_ = protocol::parse_ready_for_query(body).value_or(tx_status_);
        std::tie(ec, n) = co_await client_write(asio::buffer(out_));
        out_.clear();
        if (ec) co_return false;
        logged_in_ = true;
        co_return true;
      }
      case BackendType::kErrorResponse: {
        out_.insert(out_.end(), message->begin(), message->end());
        co_await client_write(asio::buffer(out_));
        out_.clear();
        const auto fields = protocol::parse_error_fields(body);
        close_reason_ = "login refused by the backend";
        spdlog::info("c{}: login user={} database={} refused by {}: {} {}", id_, user_, database_,
                     backend_name_, fields ? fields->sqlstate : "?",
                     fields ? fields->message : "?");
        co_return false;
      }
      default:
        out_.insert(out_.end(), message->begin(), message->end());
        break;
    }
  }
  if (final_error_) {
    co_await send_fatal(final_error_->sqlstate, final_error_->message);
  } else if (timed_out_) {
    co_await send_fatal(
        sqlstate::kProtocolViolation,
        "login not completed within " + std::to_string(config_->limits.startup_timeout_ms) + " ms");
  } else {
    co_await send_fatal(sqlstate::kConnectionFailure,
                        "backend " + backend + " closed the connection during login");
    shared_.monitor->request_probe();
  }
  co_return false;
}

awaitable<void> Session::relay() {
  c2s_buffer_ = worker_.take_buffer(kClientBufferSize);
  s2c_buffer_ = worker_.take_buffer(kServerBufferSize);
  // Bytes the server sent right after ReadyForQuery during login are relayed first.
  if (login_end_ > login_begin_) {
    const protocol::Bytes rest(login_buffer_.data() + login_begin_, login_end_ - login_begin_);
    s2c_scanner_.feed(rest, [](const auto&) {});
    co_await client_write(asio::buffer(rest.data(), rest.size()));
  }
  login_buffer_ = {};
  co_await (client_to_server() && server_to_client());
}

awaitable<void> Session::client_to_server() {
  while (!closing_) {
    error_code ec;
    std::size_t n = take_login_leftover(c2s_buffer_.data(), c2s_buffer_.size());
    if (n == 0) std::tie(ec, n) = co_await client_read_some(asio::buffer(c2s_buffer_));
    if (ec) {
      stop_relay(timed_out_ || closing_ ? "" : "client disconnected");
      break;
    }
    const protocol::Bytes chunk(c2s_buffer_.data(), n);
    if (!replication_) {
      if (stopping_ && idle()) {
        // Shutting down and the client starts a new transaction: refuse it, as PostgreSQL does.
        set_final_error(sqlstate::kAdminShutdown,
                        "terminating connection due to administrator command");
        stop_relay("server shutting down");
        break;
      }
      const bool was_waiting = pending_syncs_ > 0;
      bool terminate = false;
      FrontendType bad_type{};
      bool bad = false;
      const auto error =
          c2s_scanner_.feed(chunk, [&](const protocol::MessageStart<FrontendType>& m) {
            switch (m.header.type) {
              case FrontendType::kQuery:
              case FrontendType::kFunctionCall:
                ++pending_syncs_;
                break;
              case FrontendType::kSync:
                ++pending_syncs_;
                extended_open_ = false;
                break;
              case FrontendType::kTerminate:
                terminate = true;
                break;
              case FrontendType::kCopyData:
              case FrontendType::kCopyDone:
              case FrontendType::kCopyFail:
                break;
              default:
                if (!protocol::is_known(m.header.type)) {
                  bad = true;
                  bad_type = m.header.type;
                }
                extended_open_ = true;
                break;
            }
            PGRELAY_TRACE("c{}: client message '{}' length {}", id_,
                          static_cast<char>(m.header.type), m.header.length);
          });
      if (!error.empty() || bad) {
        set_final_error(sqlstate::kProtocolViolation,
                        !error.empty() ? "invalid frontend message: " + std::string(error)
                                       : "invalid frontend message type " +
                                             std::to_string(static_cast<unsigned char>(bad_type)));
        worker_.counters->protocol_errors_total.fetch_add(1, std::memory_order_relaxed);
        stop_relay("protocol violation by the client");
        break;
      }
      if (!was_waiting && pending_syncs_ > 0) request_started_ = std::chrono::steady_clock::now();
      if (terminate) {
        co_await asio::async_write(server_, asio::buffer(chunk.data(), chunk.size()), kNoThrow);
        closing_ = true;
        stop_relay("client closed");
        break;
      }
    }
    std::tie(ec, n) =
        co_await asio::async_write(server_, asio::buffer(chunk.data(), chunk.size()), kNoThrow);
    if (ec) break;  // the server side reports the loss
  }
}

awaitable<void> Session::server_to_client() {
  while (true) {
    auto [ec, n] = co_await server_.async_read_some(asio::buffer(s2c_buffer_), kNoThrow);
    if (ec) {
      if (!closing_) {
        // When the server said why (a FATAL ErrorResponse), the client has its answer already.
        if (s2c_scanner_.at_boundary() && last_server_type_ != BackendType::kErrorResponse) {
          set_final_error(sqlstate::kConnectionFailure,
                          "lost the connection to backend \"" + backend_name_ + "\"");
        }
        spdlog::warn("c{}: connection to backend {} ({}:{}) lost: {}", id_, backend_name_,
                     backend_host_, backend_port_, ec.message());
        shared_.monitor->request_probe();
        stop_relay("backend connection lost");
      }
      break;
    }
    const protocol::Bytes chunk(s2c_buffer_.data(), n);
    if (!replication_) {
      const auto error =
          s2c_scanner_.feed(chunk, [&](const protocol::MessageStart<BackendType>& m) {
            last_server_type_ = m.header.type;
            if (m.header.type == BackendType::kReadyForQuery) {
              tx_status_ = protocol::parse_ready_for_query(m.peek).value_or(tx_status_);
              if (pending_syncs_ > 0 && --pending_syncs_ == 0) {
                worker_.counters->observe_latency(std::chrono::steady_clock::now() -
                                                  request_started_);
              }
            }
            PGRELAY_TRACE("c{}: server message '{}' length {}", id_,
                          static_cast<char>(m.header.type), m.header.length);
          });
      if (!error.empty()) {
        spdlog::warn("c{}: invalid message from backend {}: {}", id_, backend_name_, error);
        set_final_error(sqlstate::kProtocolViolation,
                        "invalid message from backend \"" + backend_name_ + "\"");
        stop_relay("protocol violation by the backend");
        break;
      }
    }
    s2c_writing_ = true;
    std::tie(ec, n) = co_await client_write(asio::buffer(chunk.data(), chunk.size()));
    s2c_writing_ = false;
    if (ec) {
      stop_relay(closing_ ? "" : "client disconnected");
      break;
    }
    if (stopping_ && !replication_ && idle()) {
      set_final_error(sqlstate::kAdminShutdown,
                      "terminating connection due to administrator command");
      stop_relay("server shutting down");
      break;
    }
  }
}

}  // namespace pgrelay::session
