// Server connection pools and the backend login they open connections with.
#include "pgrelay/pool/pool.hpp"

#include <spdlog/spdlog.h>

#include <sys/socket.h>

#include <algorithm>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <cerrno>

#include "pgrelay/auth/md5.hpp"
#include "pgrelay/net/send.hpp"
#include "pgrelay/net/workers.hpp"
#include "pgrelay/protocol/frame.hpp"
#include "pgrelay/protocol/sqlstate.hpp"
#include "pgrelay/protocol/startup.hpp"

namespace pgrelay::pool {

namespace asio = net::asio;
using asio::awaitable;
using net::error_code;
using net::kNoThrow;
using net::tcp;
using namespace asio::experimental::awaitable_operators;
namespace sqlstate = protocol::sqlstate;
using protocol::BackendType;

namespace {

/// Largest message accepted from a backend during login.
constexpr std::uint32_t kMaxLoginMessage = 1024 * 1024;

/// Idle connections older than this are checked before they are lent.

}  // namespace

bool alive(ServerConn& conn) {
  if (!conn.socket.is_open()) return false;
  std::uint8_t byte = 0;
  const auto n = ::recv(conn.socket.native_handle(), &byte, 1, MSG_PEEK | MSG_DONTWAIT);
  return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
}

namespace {

AcquireError login_error(const BackendAddress& address, std::string message) {
  return AcquireError{std::string(sqlstate::kConnectionFailure),
                      "pgrelay could not log in to backend \"" + address.name + "\" (" +
                          address.host + ":" + std::to_string(address.port) + "): " + message,
                      {},
                      false};
}

/// Reads whole messages from a socket during login.
class LoginReader {
 public:
  explicit LoginReader(tcp::socket& socket) : socket_(socket) { buffer_.resize(4096); }

  awaitable<std::optional<protocol::Bytes>> next() {
    while (true) {
      const protocol::Bytes available(buffer_.data() + begin_, end_ - begin_);
      const auto frame = protocol::decode_frame<BackendType>(available, kMaxLoginMessage);
      if (frame.status == protocol::FrameStatus::kMalformed) co_return std::nullopt;
      if (frame.status == protocol::FrameStatus::kComplete) {
        begin_ += frame.header.total_length();
        co_return available.first(frame.header.total_length());
      }
      if (begin_ > 0) {
        std::copy(buffer_.begin() + static_cast<std::ptrdiff_t>(begin_),
                  buffer_.begin() + static_cast<std::ptrdiff_t>(end_), buffer_.begin());
        end_ -= begin_;
        begin_ = 0;
      }
      const std::size_t needed = available.size() >= protocol::kHeaderLength
                                     ? frame.header.total_length()
                                     : protocol::kHeaderLength;
      if (buffer_.size() < needed) buffer_.resize(needed);
      auto [ec, n] = co_await socket_.async_read_some(
          asio::buffer(buffer_.data() + end_, buffer_.size() - end_), kNoThrow);
      if (ec) co_return std::nullopt;
      end_ += n;
    }
  }

  [[nodiscard]] bool drained() const { return begin_ == end_; }

 private:
  tcp::socket& socket_;
  protocol::ByteVector buffer_;
  std::size_t begin_ = 0;
  std::size_t end_ = 0;
};

std::string_view as_text(protocol::Bytes bytes) {
  return {reinterpret_cast<const char*>(bytes.data()), bytes.size()};
}

}  // namespace

// ---- PreparedCache -----------------------------------------------------------------------

void PreparedCache::touch(std::uint64_t id) {
  const auto it = index_.find(id);
  if (it != index_.end() && it->second != order_.begin()) {
    order_.splice(order_.begin(), order_, it->second);
  }
}

std::optional<std::uint64_t> PreparedCache::insert(std::uint64_t id, std::size_t capacity) {
  if (index_.contains(id)) {
    touch(id);
    return std::nullopt;
  }
  order_.push_front(id);
  index_.emplace(id, order_.begin());
  if (index_.size() <= capacity || capacity == 0) return std::nullopt;
  const std::uint64_t evicted = order_.back();
  order_.pop_back();
  index_.erase(evicted);
  return evicted;
}

void PreparedCache::erase(std::uint64_t id) {
  const auto it = index_.find(id);
  if (it == index_.end()) return;
  order_.erase(it->second);
  index_.erase(it);
}

void PreparedCache::clear() {
  order_.clear();
  index_.clear();
}

// ---- backend login -----------------------------------------------------------------------

awaitable<AcquireResult> open_server(const asio::any_io_executor& executor,
                                     const BackendAddress& address, const std::string& user,
                                     const std::string& database, const Credential& credential,
                                     std::chrono::milliseconds connect_timeout) {
  auto conn = std::make_unique<ServerConn>(executor);
  conn->backend = address.index;
  conn->backend_name = address.name;
  conn->host = address.host;
  conn->port = address.port;
  conn->created = Clock::now();

  // The whole login (connect included) is bounded by the connect timeout.
  asio::steady_timer timer(executor);
  timer.expires_after(connect_timeout);
  bool timed_out = false;
  timer.async_wait([&timed_out, socket = &conn->socket](error_code ec) {
    if (ec) return;
    timed_out = true;
    error_code ignored;
    socket->close(ignored);
  });
  struct CancelTimer {
    asio::steady_timer& timer;
    ~CancelTimer() { timer.cancel(); }
  } cancel_timer{timer};

  error_code ec;
  tcp::endpoint endpoint;
  const auto ip = asio::ip::make_address(address.host, ec);
  if (!ec) {
    endpoint = tcp::endpoint(ip, address.port);
  } else {
    tcp::resolver resolver(executor);
    auto [rec, results] =
        co_await resolver.async_resolve(address.host, std::to_string(address.port), kNoThrow);
    if (rec || results.empty()) {
      co_return login_error(
          address, "cannot resolve host: " + (rec ? rec.message() : std::string("no address")));
    }
    endpoint = *results.begin();
  }
  std::tie(ec) = co_await conn->socket.async_connect(endpoint, kNoThrow);
  if (ec) {
    co_return login_error(address, timed_out ? "connection timed out" : ec.message());
  }
  net::set_no_delay(conn->socket);

  protocol::StartupMessage startup;
  startup.parameters = {{"user", user}, {"database", database}};
  const auto packet = protocol::build_startup_message(startup);
  std::size_t n = 0;
  std::tie(ec, n) = co_await asio::async_write(conn->socket, asio::buffer(packet), kNoThrow);
  if (ec) co_return login_error(address, ec.message());

  LoginReader reader(conn->socket);
  std::optional<auth::ScramClient> scram;
  protocol::ByteVector out;
  while (true) {
    const auto message = co_await reader.next();
    if (!message) {
      co_return login_error(address, timed_out ? "login timed out"
                                               : "the backend closed the connection during login");
    }
    const auto type = static_cast<BackendType>((*message)[0]);
    const auto body = message->subspan(protocol::kHeaderLength);
    out.clear();
    switch (type) {
      case BackendType::kAuthentication: {
        const auto code = protocol::parse_authentication_code(body);
        if (!code) co_return login_error(address, "invalid authentication request");
        const auto data = as_text(body.subspan(4));
        switch (*code) {
          case protocol::AuthCode::kOk:
            break;
          case protocol::AuthCode::kCleartextPassword: {
            const auto* plain = std::get_if<auth::PlainSecret>(&credential);
            if (plain == nullptr) {
              co_return login_error(address,
                                    "the backend asks for a cleartext password and pgrelay has "
                                    "none for user \"" +
                                        user + "\"");
            }
            protocol::append_password(out, plain->password);
            break;
          }
          case protocol::AuthCode::kMd5Password: {
            std::string secret;
            if (const auto* plain = std::get_if<auth::PlainSecret>(&credential)) {
              secret = plain->password;
            } else if (const auto* md5 = std::get_if<auth::Md5Secret>(&credential)) {
              secret = md5->hash;
            } else {
              co_return login_error(address,
                                    "the backend asks for md5 and pgrelay has neither a password "
                                    "nor an md5 hash for user \"" +
                                        user + "\"");
            }
            if (data.size() != 4) co_return login_error(address, "invalid md5 salt");
            auth::Md5Salt salt{};
            std::copy(data.begin(), data.end(), salt.begin());
            protocol::append_password(out, auth::md5_response(secret, user, salt));
            break;
          }
          case protocol::AuthCode::kSasl: {
            bool offered = false;
            std::size_t pos = 0;
            std::string_view mechanism;
            while (protocol::read_cstring(body.subspan(4), pos, mechanism) && !mechanism.empty()) {
              if (mechanism == auth::kScramSha256Name) offered = true;
            }
            if (!offered) co_return login_error(address, "the backend offers no SCRAM-SHA-256");
            auth::ScramCredential scram_credential;
            if (const auto* plain = std::get_if<auth::PlainSecret>(&credential)) {
              scram_credential = plain->password;
            } else if (const auto* keys = std::get_if<auth::ScramClientKeys>(&credential)) {
              scram_credential = *keys;
            } else {
              co_return login_error(address,
                                    "the backend asks for SCRAM and pgrelay has neither a "
                                    "password nor the client's SCRAM keys for user \"" +
                                        user + "\"");
            }
            auto nonce = auth::generate_scram_nonce();
            if (!nonce) co_return login_error(address, "no random bytes for a SCRAM nonce");
            scram.emplace(std::move(scram_credential), std::move(*nonce));
            protocol::append_sasl_initial_response(out, scram->mechanism(), scram->client_first());
            break;
          }
          case protocol::AuthCode::kSaslContinue: {
            if (!scram) co_return login_error(address, "unexpected SASL continuation");
            const auto final_message = scram->handle_server_first(data);
            if (!final_message) co_return login_error(address, "SCRAM: " + scram->error());
            protocol::append_sasl_response(out, *final_message);
            break;
          }
          case protocol::AuthCode::kSaslFinal: {
            if (!scram || scram->verify_server_final(data) == auth::ScramServerCheck::kFailed) {
              co_return login_error(address, "the backend's SCRAM signature is wrong");
            }
            break;
          }
          default:
            co_return login_error(address, "unsupported authentication request " +
                                               std::to_string(static_cast<unsigned>(*code)));
        }
        if (!out.empty()) {
          std::tie(ec, n) = co_await asio::async_write(conn->socket, asio::buffer(out), kNoThrow);
          if (ec) co_return login_error(address, ec.message());
        }
        break;
      }
      case BackendType::kParameterStatus:
        if (const auto status = protocol::parse_parameter_status(body)) {
          conn->reported.set(status->name, status->value);
        }
        break;
      case BackendType::kBackendKeyData:
        if (const auto key = protocol::parse_backend_key_data(body)) conn->key = *key;
        break;
      case BackendType::kReadyForQuery:
        if (!reader.drained()) co_return login_error(address, "unexpected data after login");
        conn->initial_reported = conn->reported;
        co_return std::move(conn);
      case BackendType::kErrorResponse: {
        const auto fields = protocol::parse_error_fields(body);
        AcquireError error;
        error.sqlstate =
            fields ? std::string(fields->sqlstate) : std::string(sqlstate::kConnectionFailure);
        error.message = fields ? std::string(fields->message) : "login refused";
        error.detail = "pgrelay could not log in to backend \"" + address.name + "\" (" +
                       address.host + ":" + std::to_string(address.port) + ")";
        error.from_backend = true;
        co_return error;
      }
      default:
        break;  // NoticeResponse, NegotiateProtocolVersion: nothing to do
    }
  }
}

// ---- Pool ----------------------------------------------------------------------------------

Pool::Pool(asio::any_io_executor executor, BackendAddress address, std::string user,
           std::string database, PoolLimits limits, PoolCounters& counters)
    : executor_(std::move(executor)),
      address_(std::move(address)),
      user_(std::move(user)),
      database_(std::move(database)),
      limits_(limits),
      counters_(counters) {}

Pool::~Pool() {
  *alive_ = false;
  for (auto& conn : idle_) close(std::move(conn));
  idle_.clear();
  for (auto* waiter : waiters_) waiter->timer->cancel();
}

void Pool::set_credential(Credential credential) {
  credential_ = std::move(credential);
  has_credential_ = true;
}

void Pool::close(ServerPtr conn) {
  if (!conn) return;
  error_code ignored;
  if (conn->socket.is_open()) {
    protocol::ByteVector terminate;
    protocol::append_terminate(terminate);
    net::send_now(conn->socket, asio::buffer(terminate), ignored);
    conn->socket.close(ignored);
  }
  counters_.server_connections.fetch_sub(1, std::memory_order_relaxed);
}

void Pool::wake_one_for_slot() {
  if (waiters_.empty()) return;
  Waiter* waiter = waiters_.front();
  waiters_.pop_front();
  waiter->slot = true;
  waiter->timer->cancel();
}

ServerPtr Pool::take_idle() {
  while (!idle_.empty()) {
    ServerPtr conn = std::move(idle_.back());
    idle_.pop_back();
    counters_.idle.fetch_sub(1, std::memory_order_relaxed);
    // The server may have closed it meanwhile (failover, restart, pg_terminate_backend,
    // idle_session_timeout): look before lending it, so a client's next transaction does not
    // start on a dead connection. One non-blocking recv.
    const bool stale = !alive(*conn);
    if (stale || conn->generation != generation_ || !conn->socket.is_open()) {
      --total_;
      close(std::move(conn));
      continue;
    }
    return conn;
  }
  return nullptr;
}

awaitable<AcquireResult> Pool::acquire(Clock::time_point deadline) {
  while (true) {
    if (ServerPtr conn = take_idle()) co_return std::move(conn);
    if (total_ < limits_.max_size) {
      ++total_;
      auto alive = alive_;
      auto result = co_await open_server(executor_, address_, user_, database_, credential_,
                                         limits_.connect_timeout);
      if (!*alive)
        co_return AcquireError{std::string(sqlstate::kAdminShutdown), "pool closed", {}, false};
      if (auto* conn = std::get_if<ServerPtr>(&result)) {
        (*conn)->generation = generation_;
        (*conn)->serial = next_serial_++;
        counters_.server_connections.fetch_add(1, std::memory_order_relaxed);
        counters_.opened_total.fetch_add(1, std::memory_order_relaxed);
        spdlog::debug("pool {}@{}/{}: opened server connection (backend pid {}), {} in pool", user_,
                      address_.name, database_, (*conn)->key.process_id, total_);
      } else {
        --total_;
        counters_.login_failures_total.fetch_add(1, std::memory_order_relaxed);
        wake_one_for_slot();
      }
      co_return result;
    }
    // Full: wait for a connection to come back (or for a slot to free up).
    asio::steady_timer timer(executor_, deadline);
    Waiter waiter{&timer, nullptr, false};
    waiters_.push_back(&waiter);
    counters_.waiting.fetch_add(1, std::memory_order_relaxed);
    auto alive = alive_;
    struct Leave {
      Pool* pool;
      Waiter* waiter;
      std::shared_ptr<bool> alive;
      ~Leave() {
        if (!*alive) return;
        pool->counters_.waiting.fetch_sub(1, std::memory_order_relaxed);
        std::erase(pool->waiters_, waiter);
      }
    } leave{this, &waiter, alive};
    co_await timer.async_wait(kNoThrow);
    if (!*alive)
      co_return AcquireError{std::string(sqlstate::kAdminShutdown), "pool closed", {}, false};
    if (waiter.conn) co_return std::move(waiter.conn);
    if (waiter.slot) continue;
    if (Clock::now() >= deadline) {
      counters_.acquire_timeouts_total.fetch_add(1, std::memory_order_relaxed);
      co_return AcquireError{std::string(sqlstate::kTooManyConnections),
                             "no server connection available for user \"" + user_ +
                                 "\" on database \"" + database_ + "\"",
                             "all " + std::to_string(limits_.max_size) +
                                 " connections of this worker's pool to "
                                 "backend \"" +
                                 address_.name +
                                 "\" stayed busy for the whole [pool] "
                                 "acquire_timeout_ms",
                             false};
    }
  }
}

void Pool::set_limits(const PoolLimits& limits) {
  limits_ = limits;
  // Lowered: the oldest idle connections go first (idle_ is ordered by return time).
  while (total_ > limits_.max_size && !idle_.empty()) {
    ServerPtr victim = std::move(idle_.front());
    idle_.erase(idle_.begin());
    counters_.idle.fetch_sub(1, std::memory_order_relaxed);
    --total_;
    close(std::move(victim));
  }
  // Raised: as many waiting clients as there are new slots may open a connection.
  for (std::uint32_t free = limits_.max_size > total_ ? limits_.max_size - total_ : 0;
       free > 0 && !waiters_.empty(); --free) {
    wake_one_for_slot();
  }
}

void Pool::release(ServerPtr conn, bool reusable) {
  if (!conn) return;
  const auto now = Clock::now();
  if (!reusable || conn->generation != generation_ || !conn->socket.is_open() ||
      total_ > limits_.max_size ||
      (limits_.lifetime.count() > 0 && now - conn->created >= limits_.lifetime)) {
    --total_;
    close(std::move(conn));
    wake_one_for_slot();
    return;
  }
  if (!waiters_.empty()) {
    Waiter* waiter = waiters_.front();
    waiters_.pop_front();
    waiter->conn = std::move(conn);
    waiter->timer->cancel();
    return;
  }
  conn->returned = now;
  idle_.push_back(std::move(conn));
  counters_.idle.fetch_add(1, std::memory_order_relaxed);
}

const ParamList* Pool::remembered_login(std::string_view key, Clock::time_point now) const {
  for (const auto& login : logins_) {
    if (login.key == key) return now - login.at < kLoginMemory ? &login.reported : nullptr;
  }
  return nullptr;
}

void Pool::remember_login(std::string_view key, const ParamList& reported, Clock::time_point now) {
  auto it = std::find_if(logins_.begin(), logins_.end(),
                         [&](const RememberedLogin& login) { return login.key == key; });
  if (it == logins_.end()) {
    if (logins_.size() < kLoginMemorySize) {
      it = logins_.emplace(logins_.end());
    } else {
      it = std::min_element(
          logins_.begin(), logins_.end(),
          [](const RememberedLogin& a, const RememberedLogin& b) { return a.at < b.at; });
    }
    it->key = key;
  }
  it->reported = reported;
  it->at = now;
}

void Pool::drain() {
  ++generation_;
  logins_.clear();
  const auto count = idle_.size();
  for (auto& conn : idle_) {
    --total_;
    counters_.idle.fetch_sub(1, std::memory_order_relaxed);
    close(std::move(conn));
  }
  idle_.clear();
  if (count > 0) {
    spdlog::info("pool {}@{}/{}: drained {} idle server connections", user_, address_.name,
                 database_, count);
  }
  while (!waiters_.empty() && total_ < limits_.max_size) wake_one_for_slot();
}

void Pool::maintain(Clock::time_point now) {
  // Oldest-returned first: idle_ is ordered by return time.
  for (auto it = idle_.begin(); it != idle_.end();) {
    ServerConn& conn = **it;
    const bool too_old = limits_.lifetime.count() > 0 && now - conn.created >= limits_.lifetime;
    const bool idle_too_long = limits_.idle_timeout.count() > 0 &&
                               now - conn.returned >= limits_.idle_timeout &&
                               total_ > limits_.min_idle;
    const bool dead = !too_old && !idle_too_long && !alive(conn);
    if (dead) {
      spdlog::info("pool {}@{}/{}: idle server connection closed by the backend", user_,
                   address_.name, database_);
    }
    if (too_old || idle_too_long || dead) {
      ServerPtr victim = std::move(*it);
      it = idle_.erase(it);
      counters_.idle.fetch_sub(1, std::memory_order_relaxed);
      --total_;
      close(std::move(victim));
      wake_one_for_slot();
    } else {
      ++it;
    }
  }
  if (has_credential_) {
    for (auto missing = limits_.min_idle > total_ ? limits_.min_idle - total_ : 0; missing > 0;
         --missing) {
      ++total_;
      asio::co_spawn(executor_, open_spare(), asio::detached);
    }
  }
}

awaitable<void> Pool::open_spare() {
  auto alive = alive_;
  auto result = co_await open_server(executor_, address_, user_, database_, credential_,
                                     limits_.connect_timeout);
  if (!*alive) co_return;
  if (auto* conn = std::get_if<ServerPtr>(&result)) {
    (*conn)->generation = generation_;
    (*conn)->serial = next_serial_++;
    counters_.server_connections.fetch_add(1, std::memory_order_relaxed);
    counters_.opened_total.fetch_add(1, std::memory_order_relaxed);
    release(std::move(*conn), true);
  } else {
    --total_;
    counters_.login_failures_total.fetch_add(1, std::memory_order_relaxed);
    spdlog::warn("pool {}@{}/{}: could not open a spare connection: {}", user_, address_.name,
                 database_, std::get<AcquireError>(result).message);
    wake_one_for_slot();
  }
}

// ---- WorkerPools -----------------------------------------------------------------------------

Pool& WorkerPools::get(const BackendAddress& address, const std::string& database,
                       const std::string& user, const PoolLimits& limits) {
  std::string key;
  key.reserve(database.size() + user.size() + 16);
  key.append(std::to_string(address.index)).push_back('\0');
  key.append(database).push_back('\0');
  key.append(user);
  auto it = pools_.find(key);
  if (it == pools_.end()) {
    it = pools_
             .emplace(std::move(key), std::make_unique<Pool>(executor_, address, user, database,
                                                             limits_.value_or(limits), counters_))
             .first;
  }
  return *it->second;
}

void WorkerPools::drain_backend(int backend) {
  for (auto& [key, pool] : pools_) {
    if (pool->address().index == backend) pool->drain();
  }
}

void WorkerPools::close_all() {
  for (auto& [key, pool] : pools_) pool->drain();
}

void WorkerPools::maintain(Clock::time_point now) {
  for (auto& [key, pool] : pools_) pool->maintain(now);
}

void WorkerPools::set_limits(const PoolLimits& limits) {
  limits_ = limits;
  for (auto& [key, pool] : pools_) pool->set_limits(limits);
}

}  // namespace pgrelay::pool
