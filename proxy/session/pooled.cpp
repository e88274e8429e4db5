// Pooled sessions: pgrelay authenticates the client itself, lends it server connections from
// the pools (for the whole session or per transaction), keeps its parameters and prepared
// statements consistent across server connections, and pins it when its state cannot move.
#include <spdlog/spdlog.h>

#include <algorithm>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <charconv>
#include <limits>
#include <span>

#include "pgrelay/auth/md5.hpp"
#include "pgrelay/protocol/sqlstate.hpp"
#include "pgrelay/session/session.hpp"
#include "pgrelay/sql/lexer.hpp"
#include "pgrelay/sql/session_effects.hpp"
#include "pgrelay/util/log.hpp"
#include "relay_limits.hpp"

namespace pgrelay::session {

namespace asio = net::asio;
using asio::awaitable;
using net::error_code;
using net::kNoThrow;
using namespace std::chrono_literals;
using namespace asio::experimental::awaitable_operators;
namespace sqlstate = protocol::sqlstate;
using protocol::BackendType;
using protocol::FrontendType;
using protocol::TransactionStatus;

namespace {

/// The statement text of a Query or Parse body (nullopt when malformed or another type).
std::optional<std::string_view> statement_text(FrontendType type, protocol::Bytes body) {
  if (type == FrontendType::kQuery) return protocol::parse_query(body);
  if (type != FrontendType::kParse) return std::nullopt;
  const auto parse = protocol::parse_parse(body);
  if (!parse) return std::nullopt;
  return parse->query;
}

/// The text of a Query or Parse mentions COPY (any case, anywhere: errs towards true).
bool text_mentions_copy(FrontendType type, protocol::Bytes body) {
  const auto text = statement_text(type, body);
  if (!text) return false;
  const std::string_view sql = *text;
  for (std::size_t i = 0; i + 4 <= sql.size(); ++i) {
    if ((sql[i] | 0x20) == 'c' && (sql[i + 1] | 0x20) == 'o' && (sql[i + 2] | 0x20) == 'p' &&
        (sql[i + 3] | 0x20) == 'y') {
      return true;
    }
  }
  return false;
}

using namespace detail;
/// A name no statement ever has: closing it answers CloseComplete without side effects.
constexpr std::string_view kNoStatement = "pgrelay_closed";

using pool::iequals;
using pool::is_reported;
using pool::kReportedSettable;
using pool::quote_literal;

/// Splits the `options` startup parameter as PostgreSQL does (whitespace, backslash escapes)
/// and returns its `-c name=value` / `--name=value` settings.
std::vector<std::pair<std::string, std::string>> parse_options(std::string_view options) {
  std::vector<std::string> words;
  std::string word;
  bool in_word = false;
  for (std::size_t i = 0; i < options.size(); ++i) {
    const char c = options[i];
    if (c == '\\' && i + 1 < options.size()) {
      word.push_back(options[++i]);
      in_word = true;
    } else if (std::isspace(static_cast<unsigned char>(c)) != 0) {
      if (in_word) words.push_back(std::move(word));
      word.clear();
      in_word = false;
    } else {
      word.push_back(c);
      in_word = true;
    }
  }
  if (in_word) words.push_back(std::move(word));
  std::vector<std::pair<std::string, std::string>> settings;
  for (std::size_t i = 0; i < words.size(); ++i) {
    std::string_view setting;
    if (words[i] == "-c" && i + 1 < words.size()) {
      setting = words[++i];
    } else if (words[i].starts_with("-c")) {
      setting = std::string_view(words[i]).substr(2);
    } else if (words[i].starts_with("--")) {
      setting = std::string_view(words[i]).substr(2);
    } else {
      continue;
    }
    const auto eq = setting.find('=');
    if (eq == std::string_view::npos || eq == 0) continue;
    std::string name(setting.substr(0, eq));
    std::replace(name.begin(), name.end(), '-', '_');
    settings.emplace_back(std::move(name), std::string(setting.substr(eq + 1)));
  }
  return settings;
}

std::string_view text_of(protocol::Bytes bytes) {
  return {reinterpret_cast<const char*>(bytes.data()), bytes.size()};
}

}  // namespace

// ---- statements ------------------------------------------------------------------------------

Statement::~Statement() {
  if (registry != nullptr) registry->forget(key);
}

std::shared_ptr<Statement> StatementRegistry::get(std::string key) {
  const auto it = statements_.find(key);
  if (it != statements_.end()) {
    if (auto existing = it->second.lock()) return existing;
  }
  auto statement = std::make_shared<Statement>();
  statement->id = next_id_++;
  statement->server_name = "pgrelay_" + std::to_string(statement->id);
  statement->key = key;
  statement->registry = this;
  statements_[std::move(key)] = statement;
  return statement;
}

std::shared_ptr<Statement> StatementRegistry::protocol_statement(std::string_view query,
                                                                 protocol::Bytes types) {
  std::string key;
  key.reserve(query.size() + types.size() + 2);
  key.push_back('P');
  key.append(query);
  key.push_back('\0');
  key.append(text_of(types));
  auto statement = get(std::move(key));
  if (statement->query.empty()) {
    statement->query.assign(query);
    statement->param_types.assign(types.begin(), types.end());
    statement->may_end_tx = sql::may_end_transaction(query);
  }
  return statement;
}

std::shared_ptr<Statement> StatementRegistry::sql_statement(std::string_view rest) {
  std::string key = "S";
  key.append(rest);
  auto statement = get(std::move(key));
  if (statement->query.empty()) {
    statement->query = "PREPARE " + statement->server_name + std::string(rest);
  }
  return statement;
}

// ---- login -----------------------------------------------------------------------------------

awaitable<std::optional<protocol::ByteVector>> Session::read_auth_response(std::string_view what) {
  std::array<std::uint8_t, protocol::kHeaderLength> header{};
  auto [ec, n] = co_await client_read_exact(asio::buffer(header));
  if (ec) {
    close_reason_ = timed_out_ ? "login timed out" : "client left during authentication";
    if (timed_out_) {
      co_await send_fatal(sqlstate::kProtocolViolation,
                          "authentication not completed within " +
                              std::to_string(config_->limits.startup_timeout_ms) + " ms");
    }
    co_return std::nullopt;
  }
  const std::uint32_t length = protocol::read_u32(header.data() + 1);
  if (header[0] != static_cast<std::uint8_t>(FrontendType::kPassword)) {
    co_await send_fatal(sqlstate::kProtocolViolation, "expected " + std::string(what) +
                                                          " response, got message type " +
                                                          std::to_string(header[0]));
    co_return std::nullopt;
  }
  if (length < 4 || length > kMaxLoginMessage) {
    co_await send_fatal(sqlstate::kProtocolViolation, "invalid message length");
    co_return std::nullopt;
  }
  protocol::ByteVector body(length - 4);
  std::tie(ec, n) = co_await client_read_exact(asio::buffer(body));
  if (ec) {
    close_reason_ = "client left during authentication";
    co_return std::nullopt;
  }
  co_return body;
}

awaitable<bool> Session::authenticate_client() {
  const auto secrets = shared_.secrets.load();
  const auth::Secret* secret = secrets ? secrets->find(user_) : nullptr;
  if (secret == nullptr && shared_.auth_query) {
    // Not in the file: ask the database (cached), without blocking this worker.
    asio::steady_timer wait(client_.get_executor(), std::chrono::steady_clock::time_point::max());
    auto result = std::make_shared<std::optional<auth::AuthQueryResult>>();
    shared_.auth_query->lookup(
        user_, [result, &wait, executor = client_.get_executor(),
                alive = std::weak_ptr<Session>(shared_from_this())](auth::AuthQueryResult r) {
          asio::post(executor, [result, r = std::move(r), &wait, alive]() mutable {
            if (alive.expired()) return;
            *result = std::move(r);
            wait.cancel();
          });
        });
    co_await wait.async_wait(kNoThrow);
    if (!*result || !(*result)->error.empty()) {
      // (Locals, not temporaries in the co_await: GCC 12 mishandles conditional temporaries.)
      const std::string detail = *result ? (*result)->error : std::string("interrupted");
      const std::string message =
          "pgrelay could not look up the password of user \"" + user_ + "\"";
      co_await send_fatal(sqlstate::kConnectionFailure, message, detail);
      co_return false;
    }
    if ((*result)->secret) {
      looked_up_secret_ = auth::parse_secret(*(*result)->secret);
      if (looked_up_secret_) secret = &*looked_up_secret_;
    }
  }
  switch (config_->auth.method) {
    case config::AuthMethod::kTrust:
      if (secret != nullptr) {
        if (const auto* plain = std::get_if<auth::PlainSecret>(secret)) {
          if (!plain->password.empty()) credential_ = *plain;
        } else if (const auto* md5 = std::get_if<auth::Md5Secret>(secret)) {
          credential_ = *md5;
        }
      }
      co_return true;
    case config::AuthMethod::kMd5:
      // As in PostgreSQL, "md5" uses SCRAM for a user whose secret is a SCRAM verifier.
      if (secret != nullptr && std::holds_alternative<auth::ScramVerifier>(*secret)) {
        co_return co_await authenticate_scram(secret);
      }
      co_return co_await authenticate_md5(secret);
    case config::AuthMethod::kScramSha256:
      co_return co_await authenticate_scram(secret);
  }
  co_return false;
}

awaitable<bool> Session::authenticate_scram(const auth::Secret* secret) {
  const auto secrets = shared_.secrets.load();
  const auth::ScramVerifier* verifier = nullptr;
  std::optional<auth::ScramVerifier> derived;
  if (secret != nullptr) {
    if (const auto* stored = std::get_if<auth::ScramVerifier>(secret)) {
      verifier = stored;
    } else if (const auto* plain = std::get_if<auth::PlainSecret>(secret);
               plain != nullptr && !plain->password.empty()) {
      // From the file: derived once at load. From the auth query: derived now.
      verifier = secrets && !looked_up_secret_ ? secrets->scram_verifier(user_) : nullptr;
      if (verifier == nullptr) {
        if (const auto salt = auth::generate_scram_salt()) {
          derived = auth::make_scram_verifier(plain->password, *salt);
          verifier = &*derived;
        }
      }
    }
  }
  // Unknown users, md5-only users and empty passwords go through the same exchange against a
  // verifier nothing matches, so they cannot be told apart from a wrong password.
  const bool doomed = verifier == nullptr;
  const auth::ScramVerifier mock =
      doomed ? auth::mock_scram_verifier(user_) : auth::ScramVerifier{};
  const auth::ScramVerifier& used = doomed ? mock : *verifier;

  const bool plus = tls_.has_value() && shared_.tls_end_point.has_value();
  out_.clear();
  if (plus) {
    const std::string_view mechanisms[] = {auth::kScramSha256PlusName, auth::kScramSha256Name};
    protocol::append_authentication_sasl(out_, mechanisms);
  } else {
    const std::string_view mechanisms[] = {auth::kScramSha256Name};
    protocol::append_authentication_sasl(out_, mechanisms);
  }
  auto [ec, n] = co_await client_write(asio::buffer(out_));
  if (ec) co_return false;

  auto initial = co_await read_auth_response("SASL");
  if (!initial) co_return false;
  const auto response = protocol::parse_sasl_initial_response(*initial);
  if (!response || !response->has_data) {
    co_await send_fatal(sqlstate::kProtocolViolation, "malformed SASL message");
    co_return false;
  }
  const auto mechanism = auth::parse_scram_mechanism(response->mechanism);
  if (!mechanism || (*mechanism == auth::ScramMechanism::kSha256Plus && !plus)) {
    co_await send_fatal(sqlstate::kProtocolViolation,
                        "client selected an invalid SASL authentication mechanism");
    co_return false;
  }
  auto nonce = auth::generate_scram_nonce();
  if (!nonce) {
    co_await send_fatal(sqlstate::kInternalError, "could not generate random nonce");
    co_return false;
  }
  auth::ChannelBinding binding;
  if (plus) binding.tls_server_end_point = shared_.tls_end_point;
  auth::ScramServer server(used, std::move(*nonce), binding, *mechanism);
  auto first = server.handle_client_first(response->data);
  if (auto* error = std::get_if<auth::ScramError>(&first)) {
    co_await send_fatal(error->sqlstate, error->message);
    co_return false;
  }
  out_.clear();
  protocol::append_authentication(out_, protocol::AuthCode::kSaslContinue,
                                  std::get<std::string>(first));
  std::tie(ec, n) = co_await client_write(asio::buffer(out_));
  if (ec) co_return false;

  auto final_message = co_await read_auth_response("SASL");
  if (!final_message) co_return false;
  auto result = server.handle_client_final(text_of(*final_message));
  if (auto* error = std::get_if<auth::ScramError>(&result)) {
    if (error->kind == auth::ScramErrorKind::kWrongPassword) {
      close_reason_ = "authentication failed";
      co_await send_fatal(sqlstate::kInvalidPassword,
                          "password authentication failed for user \"" + user_ + "\"");
    } else {
      co_await send_fatal(error->sqlstate, error->message);
    }
    co_return false;
  }
  if (doomed) {
    close_reason_ = "authentication failed";
    co_await send_fatal(sqlstate::kInvalidPassword,
                        "password authentication failed for user \"" + user_ + "\"");
    co_return false;
  }
  const auto& success = std::get<auth::ScramSuccess>(result);
  out_.clear();
  protocol::append_authentication(out_, protocol::AuthCode::kSaslFinal, success.server_final);
  std::tie(ec, n) = co_await client_write(asio::buffer(out_));
  if (ec) co_return false;
  if (const auto* plain = secret != nullptr ? std::get_if<auth::PlainSecret>(secret) : nullptr) {
    credential_ = *plain;
  } else {
    credential_ = auth::ScramClientKeys{success.client_key, used.server_key};
  }
  co_return true;
}

awaitable<bool> Session::authenticate_md5(const auth::Secret* secret) {
  const auto salt = auth::generate_md5_salt();
  if (!salt) {
    co_await send_fatal(sqlstate::kInternalError, "could not generate random salt");
    co_return false;
  }
  out_.clear();
  protocol::append_authentication(
      out_, protocol::AuthCode::kMd5Password,
      std::string_view(reinterpret_cast<const char*>(salt->data()), salt->size()));
  auto [ec, n] = co_await client_write(asio::buffer(out_));
  if (ec) co_return false;
  auto response = co_await read_auth_response("password");
  if (!response) co_return false;
  std::size_t pos = 0;
  std::string_view password;
  if (!protocol::read_cstring(*response, pos, password) || pos != response->size()) {
    co_await send_fatal(sqlstate::kProtocolViolation, "invalid password packet size");
    co_return false;
  }
  std::string stored;
  if (secret != nullptr) {
    if (const auto* plain = std::get_if<auth::PlainSecret>(secret)) stored = plain->password;
    if (const auto* md5 = std::get_if<auth::Md5Secret>(secret)) stored = md5->hash;
  }
  // Unknown users are checked against a stand-in secret so the work done is the same.
  const bool known = !stored.empty();
  const bool ok = auth::md5_check_response(known ? stored : std::string("pgrelay-unknown-user"),
                                           user_, *salt, password);
  if (!ok || !known) {
    close_reason_ = "authentication failed";
    co_await send_fatal(sqlstate::kInvalidPassword,
                        "password authentication failed for user \"" + user_ + "\"");
    co_return false;
  }
  if (const auto* plain = std::get_if<auth::PlainSecret>(secret)) {
    credential_ = *plain;
  } else {
    credential_ = std::get<auth::Md5Secret>(*secret);
  }
  co_return true;
}

void Session::attached(pool::ServerPtr conn) {
  server_conn_ = std::move(conn);
  ++attachment_;
  backend_index_ = server_conn_->backend;
  if (transaction_mode_ && !pinned_) count_active(true);
  if (transaction_mode_ && backend_index_ >= 0) {
    const auto index = static_cast<std::size_t>(backend_index_);
    if (worker_.outstanding.size() <= index) worker_.outstanding.resize(index + 1);
    ++worker_.outstanding[index];
    auto& routes = shared_.stats->routes(worker_.index, index);
    (routed_read_ ? routes.read : routes.write).fetch_add(1, std::memory_order_relaxed);
  }
  // Mostly the same backend as the last transaction's: no copy then.
  if (backend_name_ != server_conn_->backend_name) backend_name_ = server_conn_->backend_name;
  if (backend_host_ != server_conn_->host) backend_host_ = server_conn_->host;
  backend_port_ = server_conn_->port;
  server_status_ = TransactionStatus::kIdle;
  server_skipping_ = false;
  PGRELAY_TRACE("c{}: server connection (backend pid {}) attached", id_,
                server_conn_->key.process_id);
  if (cancel_entry_) cancel_entry_->set(server_conn_->host, server_conn_->port, server_conn_->key);
}

bool Session::attach_parked(int backend) {
  for (auto it = parked_.begin(); it != parked_.end(); ++it) {
    if (it->conn->backend != backend) continue;
    if (!pool::alive(*it->conn)) {
      // Closed while parked (failover, restart): the session takes a new one.
      if (it->pool != nullptr) it->pool->release(std::move(it->conn), false);
      parked_.erase(it);
      return false;
    }
    server_pool_ = it->pool;
    server_pool_backend_ = backend;
    auto conn = std::move(it->conn);
    parked_.erase(it);
    attached(std::move(conn));
    return true;
  }
  return false;
}

void Session::release_parked(bool reusable) {
  for (auto& parked : parked_) {
    if (parked.pool != nullptr) parked.pool->release(std::move(parked.conn), reusable);
  }
  parked_.clear();
}

int Session::parked_standby_for_read(const cluster::Topology& topology,
                                     std::uint64_t min_lsn) const {
  for (const auto& parked : parked_) {
    const int b = parked.conn->backend;
    if (b < 0 || b == topology.primary || static_cast<std::size_t>(b) >= topology.nodes.size()) {
      continue;
    }
    const auto& node = topology.nodes[static_cast<std::size_t>(b)];
    if (node.eligible && node.role == cluster::NodeRole::kStandby &&
        (min_lsn == 0 || node.replay_lsn >= min_lsn)) {
      return b;
    }
  }
  return -1;
}

void Session::pin(sql::PinReason reason) {
  pinned_ = true;
  count_active(false);  // a switchover cannot wait for it: it never lets go of its server
  worker_.counters->pinned_total.fetch_add(1, std::memory_order_relaxed);
  spdlog::debug("c{}: pinned to its server connection ({})", id_, sql::to_string(reason));
}

awaitable<bool> Session::wait_while_paused() {
  while (shared_.paused.load(std::memory_order_acquire) && !closing_ && !timed_out_) {
    worker_.paused_waiters.insert(this);
    timer_.expires_at(std::chrono::steady_clock::time_point::max());
    co_await timer_.async_wait(kNoThrow);
    worker_.paused_waiters.erase(this);
  }
  co_return !closing_ && !timed_out_;
}

void Session::resume_from_pause() { timer_.cancel(); }

pool::PoolLimits pool_limits(const config::Config& config, std::size_t workers) {
  workers = std::max<std::size_t>(1, workers);
  pool::PoolLimits limits;
  limits.max_size = std::max<std::uint32_t>(
      1, static_cast<std::uint32_t>((config.pool.max_size + workers - 1) / workers));
  limits.min_idle = static_cast<std::uint32_t>((config.pool.min_idle + workers - 1) / workers);
  limits.idle_timeout = std::chrono::milliseconds(config.pool.idle_timeout_ms);
  limits.lifetime = std::chrono::milliseconds(config.pool.lifetime_ms);
  limits.connect_timeout = std::chrono::milliseconds(config.limits.connect_timeout_ms);
  return limits;
}

void Session::use_pool(int backend, const cluster::NodeStatus& node, bool for_login) {
  if (server_pool_ != nullptr && server_pool_backend_ == backend) {
    if (for_login) server_pool_->set_credential(credential_);
    return;
  }
  pool::BackendAddress address{backend, node.name, node.host, node.port};
  server_pool_ = &worker_.pools->get(address, database_, user_,
                                     pool_limits(*config_, shared_.stats->workers().size()));
  server_pool_backend_ = backend;
  server_pool_->set_credential(credential_);
}

namespace {

// The node a connection is asked for: `backend` when the topology has it, else the primary
// (-1 when there is none).
int target_node(const cluster::Topology& topology, int backend) {
  return backend >= 0 && static_cast<std::size_t>(backend) < topology.nodes.size()
             ? backend
             : topology.primary;
}

}  // namespace

bool Session::take_idle_server(int backend) {
  // acquire_server()'s usual outcome, without its coroutine: not paused, the target known and
  // an idle connection in its pool. Anything else takes the full path.
  if (dedicated_ || shared_.paused.load(std::memory_order_acquire)) return false;
  const auto& topology = worker_.topology();  // not kept past use_pool(): no copy
  const int target = target_node(*topology, backend);
  if (target < 0) return false;
  use_pool(target, topology->nodes[static_cast<std::size_t>(target)], false);
  auto conn = server_pool_->take_idle();
  if (!conn) return false;
  attached(std::move(conn));
  return true;
}

awaitable<std::optional<pool::AcquireError>> Session::acquire_server(bool for_login, int backend) {
  if (shared_.paused.load(std::memory_order_acquire) && !co_await wait_while_paused()) {
    co_return pool::AcquireError{std::string(sqlstate::kAdminShutdown), "closing", {}, false};
  }
  const auto& cfg = *config_;
  const auto start = std::chrono::steady_clock::now();
  const auto primary_deadline = start + std::chrono::milliseconds(cfg.routing.primary_wait_ms);
  while (true) {
    const auto topology = worker_.topology();
    const int target = target_node(*topology, backend);
    const auto* primary =
        target >= 0 ? &topology->nodes[static_cast<std::size_t>(target)] : nullptr;
    if (primary != nullptr && dedicated_ && attach_parked(target)) co_return std::nullopt;
    if (primary != nullptr) {
      use_pool(target, *primary, for_login);
      auto result =
          co_await server_pool_->acquire(std::chrono::steady_clock::now() +
                                         std::chrono::milliseconds(cfg.pool.acquire_timeout_ms));
      if (closing_) {
        if (auto* conn = std::get_if<pool::ServerPtr>(&result)) {
          server_pool_->release(std::move(*conn), true);
        }
        co_return pool::AcquireError{std::string(sqlstate::kAdminShutdown), "closing", {}, false};
      }
      if (auto* conn = std::get_if<pool::ServerPtr>(&result)) {
        attached(std::move(*conn));
        co_return std::nullopt;
      }
      auto error = std::get<pool::AcquireError>(std::move(result));
      if (target != topology->primary) {
        // A standby chosen for a read could not give a connection: read from the primary.
        spdlog::debug("c{}: no connection to standby {} for a read ({}), using the primary", id_,
                      primary->name, error.message);
        if (!error.from_backend) shared_.monitor->request_probe();
        backend = -1;
        routed_read_ = false;
        continue;
      }
      // A primary that does not answer, or answers that it is shutting down or starting up, may
      // be failing over: ask the monitor and wait.
      const bool transient =
          (!error.from_backend && error.sqlstate == sqlstate::kConnectionFailure) ||
          (error.from_backend && (error.sqlstate == sqlstate::kCannotConnectNow ||
                                  error.sqlstate == sqlstate::kAdminShutdown));
      if (!transient) co_return error;
      shared_.monitor->request_probe();
      if (std::chrono::steady_clock::now() >= primary_deadline) co_return error;
    } else if (std::chrono::steady_clock::now() >= primary_deadline) {
      co_return pool::AcquireError{std::string(sqlstate::kCannotConnectNow),
                                   "no primary server is available (waited " +
                                       std::to_string(cfg.routing.primary_wait_ms) + " ms)",
                                   "no backend is known to be the primary", false};
    }
    timer_.expires_after(kPrimaryPoll);
    co_await timer_.async_wait(kNoThrow);
    if (closing_ || timed_out_) {
      co_return pool::AcquireError{std::string(sqlstate::kAdminShutdown), "closing", {}, false};
    }
  }
}

awaitable<std::optional<std::string>> Session::exchange(std::string_view sql) {
  // A synchronous round trip on the attached connection (login, reset): send one Query and
  // read up to ReadyForQuery, recording ParameterStatus. Returns the first error's message.
  protocol::ByteVector query;
  protocol::append_query(query, sql);
  auto& socket = server_conn_->socket;
  auto [ec, n] = co_await asio::async_write(socket, asio::buffer(query), kNoThrow);
  if (ec) co_return "write failed: " + ec.message();
  protocol::ByteVector buffer(4096);
  std::size_t begin = 0;
  std::size_t end = 0;
  std::optional<std::string> error;
  while (true) {
    const protocol::Bytes available(buffer.data() + begin, end - begin);
    const auto frame = protocol::decode_frame<BackendType>(available, 1024 * 1024);
    if (frame.status == protocol::FrameStatus::kMalformed) co_return "malformed reply";
    if (frame.status == protocol::FrameStatus::kNeedMore) {
      if (begin > 0) {
        std::copy(buffer.begin() + static_cast<std::ptrdiff_t>(begin),
                  buffer.begin() + static_cast<std::ptrdiff_t>(end), buffer.begin());
        end -= begin;
        begin = 0;
      }
      if (end >= protocol::kHeaderLength && frame.header.total_length() > buffer.size()) {
        buffer.resize(frame.header.total_length());
      }
      std::tie(ec, n) = co_await socket.async_read_some(
          asio::buffer(buffer.data() + end, buffer.size() - end), kNoThrow);
      if (ec) co_return "connection lost: " + ec.message();
      end += n;
      continue;
    }
    const auto body = available.subspan(protocol::kHeaderLength, frame.header.body_length());
    begin += frame.header.total_length();
    switch (frame.header.type) {
      case BackendType::kParameterStatus:
        if (const auto status = protocol::parse_parameter_status(body)) {
          server_conn_->reported.set(status->name, status->value);
        }
        break;
      case BackendType::kErrorResponse:
        if (!error) {
          const auto fields = protocol::parse_error_fields(body);
          error = fields ? std::string(fields->message) : std::string("error");
        }
        break;
      case BackendType::kReadyForQuery: {
        server_status_ = protocol::parse_ready_for_query(body).value_or(server_status_);
        if (begin != end) co_return "unexpected data after ReadyForQuery";
        co_return error;
      }
      default:
        break;
    }
  }
}

awaitable<bool> Session::pooled_login(const protocol::StartupMessage& startup) {
  // The client's startup parameters become its session state.
  std::vector<std::pair<std::string, std::string>> wanted;
  std::string login_key;
  for (const auto& [name, value] : startup.parameters) {
    if (name == "user" || name == "database" || name == "replication" ||
        name.starts_with("_pq_.")) {
      continue;
    }
    if (name == "options") {
      for (auto& setting : parse_options(value)) wanted.push_back(std::move(setting));
      continue;
    }
    wanted.emplace_back(name, value);
  }
  client_set_.clear();
  for (const auto& [name, value] : wanted) {
    login_key.append(name).push_back('\0');
    login_key.append(value).push_back('\0');
    if (!is_reported(name)) client_set_.set(name, value);
  }
  if (transaction_mode_ && !dedicated_ && co_await login_from_memory(login_key)) co_return true;

  if (auto error = co_await acquire_server(true)) {
    close_reason_ = "no server connection";
    worker_.counters->login_failures_total.fetch_add(1, std::memory_order_relaxed);
    co_await send_fatal(error->sqlstate, error->message, error->detail);
    co_return false;
  }
  auto& server = *server_conn_;
  // Reported parameters: the client's value, else what the connection had right after its own
  // login (another client may have changed it since). Others: the client's startup values.
  pool::ParamList want_reported;
  for (auto name : kReportedSettable) {
    const auto it = std::find_if(wanted.begin(), wanted.end(),
                                 [&](const auto& w) { return iequals(w.first, name); });
    if (it != wanted.end()) {
      want_reported.set(name, it->second);
    } else if (const std::string* initial = server.initial_reported.find(name)) {
      want_reported.set(name, *initial);
    }
  }
  const std::string text =
      pool::param_sync_sql(want_reported, client_set_, server.reported, server.set_values);
  if (!text.empty()) {
    if (auto error = co_await exchange(text)) {
      // A startup parameter the server rejects fails the login, as it would without pgrelay.
      close_reason_ = "startup parameter refused";
      const bool lost = error->starts_with("connection lost") || error->starts_with("write");
      detach(false);
      const std::string_view state = lost ? sqlstate::kConnectionFailure : "42704";
      const std::string message =
          lost ? "lost the connection to backend \"" + backend_name_ + "\"" : *error;
      co_await send_fatal(state, message);
      co_return false;
    }
    server.set_values = client_set_;
  }
  client_reported_ = server.reported;
  server.last_client = id_;
  server.last_client_version = params_version_;
  server.state_key = state_key();
  if (transaction_mode_ && !dedicated_ && server_pool_ != nullptr) {
    server_pool_->remember_login(login_key, client_reported_, std::chrono::steady_clock::now());
  }

  register_cancel(CancelTarget{server.host, server.port, server.key});
  if (!co_await send_login_answer()) {
    detach(true);
    co_return false;
  }
  if (transaction_mode_) detach(true);
  co_return true;
}

awaitable<bool> Session::login_from_memory(const std::string& login_key) {
  // Transaction mode: when an earlier client of this pool logged in with the same startup
  // parameters, the server's answer is known (the parameters were accepted, and what the
  // server reported), so no server connection is needed until the first transaction, which
  // brings its connection to these parameters as every transaction does. While paused, or
  // without a primary, the normal path waits.
  if (shared_.paused.load(std::memory_order_acquire)) co_return false;
  const auto topology = worker_.topology();
  if (topology->primary < 0) co_return false;
  const auto& primary = topology->nodes[static_cast<std::size_t>(topology->primary)];
  use_pool(topology->primary, primary, true);
  const auto* reported =
      server_pool_->remembered_login(login_key, std::chrono::steady_clock::now());
  if (reported == nullptr) co_return false;
  client_reported_ = *reported;
  ++params_version_;
  register_cancel(CancelTarget{});
  co_return co_await send_login_answer();
}

awaitable<bool> Session::send_login_answer() {
  out_.clear();
  // Sized up front: grown one message at a time it was reallocated a dozen times per login.
  std::size_t size = 9 + 17 + 6;  // AuthenticationOk, BackendKeyData, ReadyForQuery
  for (const auto& [name, value] : client_reported_.items()) size += 7 + name.size() + value.size();
  out_.reserve(size);
  protocol::append_authentication(out_, protocol::AuthCode::kOk);
  for (const auto& [name, value] : client_reported_.items()) {
    protocol::append_parameter_status(out_, name, value);
  }
  protocol::append_backend_key_data(out_, *client_key_);
  protocol::append_ready_for_query(out_, TransactionStatus::kIdle);
  auto [ec, n] = co_await client_write(asio::buffer(out_));
  if (ec) co_return false;
  logged_in_ = true;
  co_return true;
}

awaitable<void> Session::run_pooled(const protocol::StartupMessage& startup) {
  pooled_ = true;
  transaction_mode_ = config_->pool.mode == config::PoolMode::kTransaction;
  if (!transaction_mode_ && config_->routing.read_write_split) {
    // Session mode with read splitting: the per-transaction machinery (statement names,
    // parameter sync, routing) over the session's own primary and standby connections.
    dedicated_ = true;
    transaction_mode_ = true;
  }
  if (user_.empty()) {
    co_await send_fatal(sqlstate::kInvalidAuthorizationSpecification,
                        "no PostgreSQL user name specified in startup packet");
    watchdog_.cancel();
    co_return;
  }
  const bool authenticated = co_await authenticate_client();
  if (!authenticated) {
    watchdog_.cancel();
    worker_.counters->login_failures_total.fetch_add(1, std::memory_order_relaxed);
    spdlog::info("c{}: authentication of user={} database={} from {} failed", id_, user_, database_,
                 peer_);
    co_return;
  }
  if (database_ == "pgrelay") {
    watchdog_.cancel();
    co_await run_console();
    error_code ignored;
    client_.close(ignored);
    co_return;
  }
  const bool logged_in = co_await pooled_login(startup);
  watchdog_.cancel();
  if (!logged_in) co_return;
  if (!transaction_mode_) {
    // Session mode: the login decides; transaction mode counts each transaction's route.
    shared_.stats->routes(worker_.index, static_cast<std::size_t>(server_pool_backend_))
        .write.fetch_add(1, std::memory_order_relaxed);
  }
  spdlog::info("c{}: login user={} database={} from {} ({} mode, {}){}", id_, user_, database_,
               peer_, transaction_mode_ && !dedicated_ ? "transaction" : "session",
               config::to_string(config_->auth.method), tls_ ? " tls" : "");
  if (stopping_) request_stop();
  co_await serve_pooled();
}

awaitable<void> Session::end_pooled() {
  // Whatever ended the loop, the server reader must end too.
  stop_relay("");
  if (server_conn_) {
    if (!transaction_mode_ && idle() && !final_error_) {
      // Session mode: clean the connection for the next client.
      const auto& reset = config_->pool.reset_query;
      bool clean = true;
      if (!reset.empty()) {
        const auto error = co_await exchange(reset);
        clean = !error && server_status_ == TransactionStatus::kIdle;
        if (error) spdlog::warn("c{}: reset query failed: {}", id_, *error);
      }
      if (clean) {
        server_conn_->set_values.clear();
        server_conn_->prepared.clear();
      }
      detach(clean);
    } else {
      detach(idle());
    }
  }
  release_parked(!pinned_);
  if (final_error_) co_await send_fatal(final_error_->sqlstate, final_error_->message);
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

// ---- routing -----------------------------------------------------------------------------------

namespace {

static_assert(stats::kRouteReasons.size() == routing::kReasonCount);

/// "16/B374D848" -> LSN; nullopt when malformed.

/// The text names the pgrelay.min_lsn setting (ASCII case-insensitively).
bool mentions_min_lsn(std::string_view text) {
  // Looks at each '.' (memchr: most texts have few or none), not at every byte.
  constexpr std::string_view kName = "pgrelay.min_lsn";
  constexpr std::size_t kDot = kName.find('.');
  for (std::size_t dot = text.find('.', kDot); dot != std::string_view::npos;
       dot = text.find('.', dot + 1)) {
    if (dot - kDot + kName.size() > text.size()) return false;
    if (pool::iequals(text.substr(dot - kDot, kName.size()), kName)) return true;
  }
  return false;
}

}  // namespace

sql::Classifier& WorkerSessions::classifier(const cluster::Monitor& monitor,
                                            const std::shared_ptr<const config::Config>& config) {
  // The monitor stores the function list before it publishes the generation that follows.
  const auto generation = monitor.generation();
  if (classifier_ && generation == classifier_generation_ && config == classifier_config_) {
    return *classifier_;
  }
  classifier_generation_ = generation;
  classifier_config_ = config;
  auto source = monitor.nonvolatile_functions();
  // Compared by content, not by config object: after a reload, sessions holding the old and
  // the new configuration take turns here, and a rebuild empties the verdict cache.
  const auto same_weights = [&] {
    if (weights.size() != config->backends.size()) return false;
    for (std::size_t i = 0; i < weights.size(); ++i) {
      if (weights[i] != config->backends[i].weight) return false;
    }
    return true;
  };
  if (!classifier_ || source != classifier_source_ ||
      config->routing.read_only_functions != classifier_read_only_ || !same_weights()) {
    const auto& read_only = config->routing.read_only_functions;
    auto catalog = source != nullptr
                       ? std::make_shared<const sql::FunctionCatalog>(*source, read_only)
                       : sql::FunctionCatalog::builtin(read_only);
    if (!classifier_) {
      classifier_ = std::make_unique<sql::Classifier>(std::move(catalog));
    } else {
      classifier_->set_catalog(std::move(catalog));
    }
    classifier_source_ = std::move(source);
    classifier_read_only_ = read_only;
    weights.clear();
    for (const auto& backend : config->backends) weights.push_back(backend.weight);
  }
  return *classifier_;
}

const Session::ParamFacts& Session::param_facts() {
  if (param_facts_.version == params_version_) return param_facts_;
  ParamFacts facts;
  facts.version = params_version_;
  if (const auto* scs = client_reported_.find("standard_conforming_strings")) {
    facts.standard_conforming_strings = *scs == "on";
  }
  if (const auto* value = client_reported_.find("default_transaction_read_only")) {
    facts.default_read_only = *value == "on";
  }
  if (const auto* carried = client_set_.find("pgrelay.min_lsn")) {
    facts.min_lsn = cluster::parse_lsn(*carried).value_or(0);
  }
  param_facts_ = facts;
  return param_facts_;
}

Session::BatchClass Session::classify_batch() {
  BatchClass batch;
  auto& classifier = worker_.classifier(*shared_.monitor, config_);
  sql::LexerOptions lexer;
  lexer.standard_conforming_strings = param_facts().standard_conforming_strings;
  bool any = false;
  const auto add = [&](const sql::QueryClass& next) {
    batch.query = any ? sql::combine(batch.query, next) : next;
    any = true;
  };
  // Built once: a QueryClass holds a string, and this runs for every transaction's start.
  static const sql::QueryClass write = [] {
    sql::QueryClass c;
    c.first = sql::StatementKind::kWrite;
    c.read_only = false;
    c.reason = "not classified";
    return c;
  }();
  if (c2s_stream_left_ > 0) {
    batch.query = write;  // the middle of a streamed message: nothing to read here
    return batch;
  }
  // Statements parsed earlier in this batch, by name ("" = the unnamed statement); optional so
  // that an ordinary batch constructs none of them.
  std::array<std::optional<std::pair<std::string_view, sql::QueryClass>>, 4> parsed;
  std::size_t parsed_count = 0;
  for (std::size_t pos = c2s_begin_;;) {
    const auto waiting = waiting_at(pos);
    if (waiting.state == Waiting::kPartial) {
      if (!any && (waiting.type == FrontendType::kQuery || waiting.type == FrontendType::kParse ||
                   waiting.type == FrontendType::kBind)) {
        batch.need_more = true;
      }
      break;
    }
    if (waiting.state != Waiting::kWhole) break;  // a malformed header is refused later
    const protocol::Bytes body = waiting.body;
    switch (waiting.type) {
      case FrontendType::kSync:
      case FrontendType::kQuery:
      case FrontendType::kFunctionCall:
        batch.open_unit = false;
        batch.flush_in_open_unit = false;
        break;
      case FrontendType::kFlush:
        batch.flush_in_open_unit = batch.open_unit;
        break;
      case FrontendType::kParse:
      case FrontendType::kBind:
      case FrontendType::kDescribe:
      case FrontendType::kExecute:
      case FrontendType::kClose:
        batch.open_unit = true;
        break;
      default:
        break;
    }
    switch (waiting.type) {
      case FrontendType::kQuery:
        if (const auto text = protocol::parse_query(body)) {
          auto verdict = classifier.classify(*text, lexer);
          if (verdict.plain_select && pos == c2s_begin_) batch.plain_query_at = pos;
          // SET pgrelay.min_lsn runs on the primary, so reads pipelined behind it (while
          // pgrelay reads the new value back) cannot land on a standby that is behind it.
          if (mentions_min_lsn(*text)) verdict.force_primary = true;
          add(verdict);
        } else {
          add(write);
        }
        break;
      case FrontendType::kParse:
        if (const auto parse = protocol::parse_parse(body)) {
          auto verdict = classifier.classify(parse->query, lexer);
          if (verdict.plain_select && pos == c2s_begin_) batch.plain_query_at = pos;
          if (parsed_count < parsed.size()) {
            parsed[parsed_count++].emplace(parse->statement, std::move(verdict));
          }
        }
        break;
      case FrontendType::kBind: {
        const auto bind = protocol::parse_bind_prefix(body);
        if (!bind) {
          add(write);
          break;
        }
        const sql::QueryClass* found = nullptr;
        for (std::size_t i = parsed_count; i-- > 0;) {
          if (parsed[i]->first == bind->statement) {
            found = &parsed[i]->second;
            break;
          }
        }
        if (found != nullptr) {
          add(*found);
        } else if (const auto it = statements_.find(std::string(bind->statement));
                   !bind->statement.empty() && it != statements_.end()) {
          Statement& statement = *it->second;
          if (!statement.route_class || statement.route_catalog != classifier.catalog() ||
              statement.route_scs != lexer.standard_conforming_strings) {
            statement.route_class = classifier.classify(statement.query, lexer);
            statement.route_catalog = classifier.catalog();
            statement.route_scs = lexer.standard_conforming_strings;
          }
          add(*statement.route_class);
        } else {
          add(write);  // an unnamed statement from an earlier batch: not worth tracking
        }
        break;
      }
      case FrontendType::kFunctionCall:
        add(write);
        break;
      default:
        break;
    }
    pos += waiting.total;
  }
  if (!any && !batch.need_more) batch.query = write;
  return batch;
}

bool Session::batch_may_end_transaction() {
  // Only statement texts end a transaction: a Query's or a Parse's (its Bind may follow in a
  // later batch, hence the statements' own marks). Errs towards true. The word scans are kept
  // for process_client_messages(), which would otherwise make them again.
  if (c2s_stream_left_ > 0) return true;
  for (std::size_t pos = c2s_begin_;;) {
    const auto waiting = waiting_at(pos);
    if (waiting.state == Waiting::kNone) return false;
    if (waiting.state != Waiting::kWhole) return true;  // not worth a closer look
    const FrontendType type = waiting.type;
    const protocol::Bytes body = waiting.body;
    switch (type) {
      case FrontendType::kQuery:
      case FrontendType::kParse: {
        const auto text = statement_text(type, body);
        if (!text) return true;
        const auto words = sql::scan_words(*text);
        remember_scan(pos, words);  // handle_client_message() needs the same scan
        if (words.may_end_transaction) return true;
        break;
      }
      case FrontendType::kBind: {
        const auto bind = protocol::parse_bind_prefix(body);
        if (!bind) return true;
        if (bind->statement.empty()) {
          if (unnamed_may_commit_) return true;
          break;
        }
        const auto it = statements_.find(std::string(bind->statement));
        if (it == statements_.end() || it->second->may_end_tx) return true;
        break;
      }
      default:
        break;
    }
    pos += waiting.total;
  }
}

Session::Waiting Session::waiting_at(std::size_t pos) const {
  Waiting waiting;
  if (c2s_end_ - pos < protocol::kHeaderLength) return waiting;
  const auto* start = c2s_buffer_.data() + pos;
  waiting.type = static_cast<FrontendType>(start[0]);
  const std::uint32_t length = protocol::read_u32(start + 1);
  if (!protocol::check_header(length, config_->limits.max_message_bytes).empty()) {
    waiting.state = Waiting::kMalformed;
    return waiting;
  }
  waiting.total = std::size_t{length} + 1;
  if (c2s_end_ - pos < waiting.total) {
    waiting.state = Waiting::kPartial;
    return waiting;
  }
  waiting.state = Waiting::kWhole;
  waiting.body = protocol::Bytes(start + protocol::kHeaderLength, length - 4);
  return waiting;
}

routing::Decision Session::route_transaction(const sql::QueryClass& query) {
  const auto& cfg = *config_;
  const auto& topology = worker_.topology();  // nothing below asks for it again: no copy
  const auto& facts = param_facts();
  routing::SessionIntent session;
  session.default_read_only = facts.default_read_only;
  const auto intent = routing::intent_of(query, session);
  routing::ReadOptions options;
  options.split = cfg.routing.read_write_split;
  if (cfg.routing.read_your_writes) {
    options.min_lsn = std::max(ryw_lsn_, facts.min_lsn);
    // A server was lost before the LSN of the client's last commit was read: no standby is
    // known to have it until a new watermark is read on the primary (behind this transaction).
    if (ryw_unknown_) options.min_lsn = std::numeric_limits<std::uint64_t>::max();
  }
  if (worker_.outstanding.size() < topology->nodes.size()) {
    worker_.outstanding.resize(topology->nodes.size());
  }
  options.outstanding = worker_.outstanding;
  options.weights = worker_.weights;
  options.tiebreak = worker_.route_turn++;
  auto decision = routing::route(*topology, intent, options);
  may_write_ = intent.intent == routing::Intent::kWrite;
  if (decision.reason == routing::Reason::kReadPrimaryRywWait) {
    // The standbys are probably past the watermark already; find out soon.
    shared_.monitor->request_replay_probe();
  }
  if (dedicated_ && decision.reason == routing::Reason::kReadStandby) {
    // Session mode keeps one standby connection: the one it has, while it may serve the read.
    const int kept = parked_standby_for_read(*topology, options.min_lsn);
    if (kept >= 0) decision.backend = kept;
    for (auto it = parked_.begin(); it != parked_.end();) {
      const int b = it->conn->backend;
      if (b != decision.backend && b != topology->primary) {
        if (it->pool != nullptr) it->pool->release(std::move(it->conn), true);
        it = parked_.erase(it);
      } else {
        ++it;
      }
    }
  }
  worker_.counters->route_reasons[static_cast<std::size_t>(decision.reason)].fetch_add(
      1, std::memory_order_relaxed);
  if (spdlog::should_log(spdlog::level::debug)) {
    std::string detail;
    if (decision.reason == routing::Reason::kReadStandby && decision.backend >= 0) {
      // What read-your-writes relied on: the client's watermark against the monitor's view.
      const auto& node = topology->nodes[static_cast<std::size_t>(decision.backend)];
      const auto* primary = topology->primary_node();
      detail = fmt::format(
          " (watermark {}, replay {} on timeline {}, primary timeline {}, probed {} ms ago)",
          options.min_lsn == std::numeric_limits<std::uint64_t>::max()
              ? std::string("unknown")
              : cluster::format_lsn(options.min_lsn),
          cluster::format_lsn(node.replay_lsn), node.timeline,
          primary != nullptr ? primary->timeline : 0,
          std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() -
                                                                node.probed_at)
              .count());
    }
    spdlog::debug("c{}: route {} -> {}{}{}{}", id_, routing::to_string(decision.reason),
                  decision.backend >= 0
                      ? topology->nodes[static_cast<std::size_t>(decision.backend)].name
                      : std::string("(no primary)"),
                  detail, query.reason.empty() ? "" : ": ", query.reason);
  }
  return decision;
}

awaitable<bool> Session::defer_begin(const sql::QueryClass& query) {
  // Only a lone simple-protocol BEGIN without modes, outside a transaction, in a session whose
  // transactions are not read-only by default.
  if (query.first != sql::StatementKind::kBegin || query.has_body || query.tx_read_only ||
      query.force_primary || tx_status_ != TransactionStatus::kIdle || c2s_stream_left_ > 0) {
    co_return false;
  }
  if (param_facts().default_read_only) co_return false;
  const std::size_t available = c2s_end_ - c2s_begin_;
  if (available < protocol::kHeaderLength) co_return false;
  const auto* start = c2s_buffer_.data() + c2s_begin_;
  if (static_cast<FrontendType>(start[0]) != FrontendType::kQuery) co_return false;
  const std::size_t total = std::size_t{protocol::read_u32(start + 1)} + 1;
  if (total != available) co_return false;  // more behind it: routed as one batch
  const auto text =
      protocol::parse_query(protocol::Bytes(start + protocol::kHeaderLength, total - 5));
  if (!text) co_return false;
  deferred_begin_ = std::string(*text);
  deferred_class_ = query;
  c2s_begin_ = c2s_end_ = 0;
  tx_status_ = TransactionStatus::kInTransaction;
  out_.clear();
  protocol::append_command_complete(out_, "BEGIN");
  protocol::append_ready_for_query(out_, TransactionStatus::kInTransaction);
  auto [ec, n] = co_await client_write(asio::buffer(out_));
  if (ec) stop_relay("client disconnected");
  co_return true;
}

void Session::flush_pending_status() {
  if (pending_commit_lsn_ == 0) return;
  const std::size_t before = s2c_extra_.size();
  protocol::append_parameter_status(s2c_extra_, "pgrelay.commit_lsn",
                                    cluster::format_lsn(pending_commit_lsn_));
  pending_commit_lsn_ = 0;
  s2c_segments_.push_back({true, before, s2c_extra_.size() - before});
}

bool Session::eager_watermark() const {
  switch (config_->routing.watermark) {
    case config::WatermarkMode::kEager:
      return true;
    case config::WatermarkMode::kLazy:
      return false;
    case config::WatermarkMode::kAuto:
      break;
  }
  return ryw_reader_;
}

void Session::send_watermark_query() {
  // Eager: behind the client's last message; when the transaction has ended, this reads an LSN
  // at or after its commit record, and the client waits for nothing (its answer comes first).
  // Lazy: in front of a read transaction on the primary; the client's earlier transactions are
  // over, so the LSN is at or after their commits, and the read's answer brings it along.
  add_extra_start();
  protocol::append_query(c2s_extra_, "SELECT pg_catalog.pg_current_wal_insert_lsn()");
  add_extra_end();
  push_slot(SlotKind::kQuery, SlotPurpose::kCommitLsn, ryw_writes_);
  worker_.counters->watermark_queries_total.fetch_add(1, std::memory_order_relaxed);
}

// ---- relay: client to server -----------------------------------------------------------------

void Session::push_slot(SlotKind kind, SlotPurpose purpose, std::uint64_t id) {
  // The client's extended-protocol messages open a unit (an implicit transaction, a portal) that
  // only its Sync closes: the connection stays with the client until then, also when every
  // message so far is answered (Parse, Describe, Flush and the answers, before the Bind).
  if (purpose == SlotPurpose::kClient && kind != SlotKind::kSync && kind != SlotKind::kQuery &&
      kind != SlotKind::kFunctionCall) {
    extended_open_ = true;
  }
  Slot& slot = slots_.emplace_back();
  slot.kind = kind;
  slot.purpose = purpose;
  slot.id = id;
}

void Session::add_passthrough(std::size_t begin, std::size_t length) {
  if (length == 0) return;
  if (!c2s_segments_.empty() && !c2s_segments_.back().extra &&
      c2s_segments_.back().offset + c2s_segments_.back().length == begin) {
    c2s_segments_.back().length += length;
    return;
  }
  c2s_segments_.push_back({false, begin, length});
}

awaitable<void> Session::pooled_client_loop() {
  // Buffers come from the worker while there is traffic and go back while the session idles
  // (the readiness wait below, and server_reader_loop() while detached), so an idle client
  // holds no buffer.
  c2s_begin_ = c2s_end_ = 0;
  asio::co_spawn(
      client_.get_executor(),
      [self = shared_from_this()]() -> awaitable<void> {
        try {
          co_await self->server_reader_loop();
        } catch (const std::exception& e) {
          spdlog::error("c{}: internal error: {}", self->id_, e.what());
          self->stop_relay("internal error");
        }
      },
      asio::detached);
  if (server_conn_) attach_started();
  while (!closing_) {
    error_code ec;
    std::size_t n = 0;
    std::optional<BatchClass> classified;  // the waiting messages, once classified
    if (c2s_begin_ == c2s_end_ && !server_conn_ && !tls_ && !has_login_leftover()) {
      // Nothing buffered and no server: wait for readability without a buffer, then read.
      c2s_begin_ = c2s_end_ = 0;
      worker_.give_back(std::move(c2s_buffer_), kClientBufferSize);
      c2s_buffer_ = {};
      idle_waiting_ = true;
      idle_since_ = std::chrono::steady_clock::now();
      std::tie(ec) = co_await client_.async_wait(net::tcp::socket::wait_read, kNoThrow);
      idle_waiting_ = false;
      if (parking_) break;  // start_parking(): the client goes on in a parked state (park.cpp)
      if (!ec) {
        c2s_buffer_ = worker_.take_buffer(kClientBufferSize);
        n = net::receive_now(client_, asio::buffer(c2s_buffer_), ec);
        if (!ec && n == 0) continue;  // woken without data
      }
    } else {
      if (c2s_buffer_.empty()) c2s_buffer_ = worker_.take_buffer(kClientBufferSize);
      if (c2s_end_ == c2s_buffer_.size()) {
        // process_client_messages() grows the buffer for a message that needs its whole body.
        c2s_buffer_.resize(c2s_buffer_.size() * 2);
      }
      n = take_login_leftover(c2s_buffer_.data() + c2s_end_, c2s_buffer_.size() - c2s_end_);
      if (n == 0) {
        client_reading_ = true;
        std::tie(ec, n) = co_await client_read_some(
            asio::buffer(c2s_buffer_.data() + c2s_end_, c2s_buffer_.size() - c2s_end_));
        client_reading_ = false;
        if (parking_) {
          if (n == 0) break;  // the read was cancelled by start_parking()
          parking_ = false;   // the client's messages came first: go on with them
          ec = {};
        }
      }
    }
    if (ec) {
      stop_relay(timed_out_ || closing_ ? "" : "client disconnected");
      break;
    }
    c2s_end_ += n;
    if (server_conn_ && routed_read_ && c2s_stream_left_ == 0 && !slots_.empty() &&
        (slots_.back().kind == SlotKind::kSync || slots_.back().kind == SlotKind::kQuery)) {
      // Pipelined behind a read that a standby answers: more reads may follow it there.
      // Anything else waits for the standby's answers (the connection goes back at the end of
      // its transaction) and is then routed by itself, as if the client had waited.
      classified = classify_batch();
      if (classified->need_more) continue;
      if (must_wait_behind_read(*classified)) {
        classified.reset();
        if (!co_await wait_for_answers()) break;
      }
    }
    if (stopping_ && !server_conn_) {
      set_final_error(sqlstate::kAdminShutdown,
                      "terminating connection due to administrator command");
      stop_relay("server shutting down");
      break;
    }
    const bool was_idle = slots_.empty();
    if (!server_conn_ && (lost_tx_ != LostTx::kNone || lost_skipping_)) {
      // The server of the client's transaction was lost: pgrelay answers until it is over.
      co_await answer_lost_transaction();
      if (closing_) break;
      if (lost_tx_ != LostTx::kNone || lost_skipping_ || c2s_begin_ == c2s_end_) continue;
      // What follows the transaction's end starts the next one.
    }
    const bool lazy_watermark = config_->routing.read_your_writes &&
                                config_->routing.read_write_split && !eager_watermark();
    if (server_conn_ && !routed_read_) {
      if (lazy_watermark && tx_read_intent_ && !may_write_) {
        // More of a read transaction on the primary: a COMMIT or more reads leave the client's
        // watermark as it is (counted as writes, they would send its next read here again).
        classified = classify_batch();
        if (classified->need_more) continue;
        if (!classified->query.read_only) {
          tx_read_intent_ = false;
          may_write_ = true;
        }
      } else {
        // More work on the same connection was not classified: it may write. (Eager: the
        // connection may still be attached only for the commit-LSN query behind a read, after a
        // lost server: a transaction starting on it must still get its own commit LSN read, or
        // the client's next read could go to a standby without its commit.)
        tx_read_intent_ = false;
        may_write_ = true;
      }
    }
    bool watermark_first = false;  // lazy: the commit LSN is read in front of this read
    if (!server_conn_) {
      // A lone Terminate needs no server.
      if (c2s_end_ - c2s_begin_ >= protocol::kHeaderLength &&
          c2s_buffer_[c2s_begin_] == static_cast<std::uint8_t>(FrontendType::kTerminate)) {
        client_terminated_ = true;
        stop_relay("client closed");
        break;
      }
      // Only a batch that starts with the Parse of a named statement can be answered here: no
      // coroutine call otherwise (an unnamed one, as in pgbench -M extended, ends the search).
      if (tx_status_ == TransactionStatus::kIdle &&
          c2s_end_ - c2s_begin_ > protocol::kHeaderLength &&
          c2s_buffer_[c2s_begin_] == static_cast<std::uint8_t>(FrontendType::kParse) &&
          c2s_buffer_[c2s_begin_ + protocol::kHeaderLength] != 0 &&
          co_await answer_prepare_locally()) {
        continue;
      }
      int target = -1;
      routed_read_ = false;
      may_write_ = false;
      if (transaction_mode_ && !pinned_ && config_->routing.read_write_split) {
        classified = classify_batch();
        if (classified->need_more) continue;  // the first message decides: read all of it
        // defer_begin() only takes a BEGIN: no coroutine call for anything else.
        if (deferred_begin_.empty() && classified->query.first == sql::StatementKind::kBegin &&
            co_await defer_begin(classified->query)) {
          continue;
        }
        if (closing_) break;
        std::optional<sql::QueryClass> combined;
        if (!deferred_begin_.empty()) combined = sql::combine(deferred_class_, classified->query);
        const auto decision = route_transaction(combined ? *combined : classified->query);
        tx_read_intent_ = !may_write_;
        if (decision.reason == routing::Reason::kReadStandby && classified->open_unit) {
          // An implicit transaction not closed by a Sync yet: a write could still join it, and
          // it could not leave a standby then. Wait for its Sync; a client that asks for
          // answers first (Flush), or sends a long unit, has it run on the primary.
          if (!classified->flush_in_open_unit && c2s_end_ - c2s_begin_ < kOpenUnitHoldBytes) {
            continue;
          }
          may_write_ = true;
          tx_read_intent_ = false;
        } else if (decision.reason == routing::Reason::kReadStandby) {
          target = decision.backend;
          routed_read_ = true;
        } else if (decision.reason == routing::Reason::kReadPrimaryRywWait && ryw_unknown_ &&
                   lazy_watermark) {
          // A standby could serve the client's reads once its watermark is known: read it in
          // front of this read, which runs on the primary meanwhile. A client that reads after
          // its writes gets its watermarks read behind them from now on ("auto"), so that its
          // later reads can go to a standby as soon as one has replayed its commit.
          watermark_first = true;
          ryw_reader_ = true;
        }
      }
      if (!take_idle_server(target)) {
        if (auto error = co_await acquire_server(false, target)) {
          if (!closing_) {
            set_final_error(error->sqlstate, error->message);
            spdlog::info("c{}: {}", id_, error->message);
            stop_relay("no server connection");
          }
          break;
        }
      }
      attach_started();
    }
    c2s_segments_.clear();
    c2s_extra_.clear();
    if (watermark_first && server_conn_) send_watermark_query();
    if (!deferred_begin_.empty() && server_conn_) {
      // The BEGIN the client was told had run, in the same write as its next messages.
      add_extra_start();
      protocol::append_query(c2s_extra_, deferred_begin_);
      add_extra_end();
      deferred_begin_.clear();
      push_slot(SlotKind::kQuery, SlotPurpose::kInternal);
      block_opened_ahead_ = true;
    }
    if (lazy_watermark) {
      // The commit LSN is read when the client next reads: a batch that may write only makes
      // its watermark unknown (no query, nothing held back behind a COPY).
      batch_ends_tx_ = false;
      if (may_write_ && server_conn_) {
        ryw_unknown_ = true;
        ++ryw_writes_;
      }
    } else if ((may_write_ || ryw_unknown_) && config_->routing.read_your_writes &&
               config_->routing.read_write_split && server_conn_) {
      // Without read splitting every read runs on the primary: no watermark is needed. The
      // buffer has not changed since routing classified it (if it did). Inside a transaction a
      // batch without a word that can end one (the statements of pgbench -N) is not classified.
      // The client's last ReadyForQuery tells whether these messages run in a transaction,
      // unless they are pipelined behind answers still to come (a COMMIT among them, say):
      // then they are taken as autocommit work. A watermark read inside a transaction after
      // all is not kept (it is kept at status idle only).
      const bool status_known = !client_answers_pending();
      if (!classified && tx_status_ == TransactionStatus::kInTransaction && status_known &&
          !batch_may_end_transaction()) {
        batch_ends_tx_ = false;
      } else {
        if (!classified) classified = classify_batch();
        const auto& batch = *classified;
        batch_ends_tx_ = batch.query.ends_transaction ||
                         ((tx_status_ == TransactionStatus::kIdle || !status_known) &&
                          batch.query.first != sql::StatementKind::kBegin &&
                          batch.query.first != sql::StatementKind::kEmpty);
      }
    } else {
      batch_ends_tx_ = false;
    }
    if (classified && classified->plain_query_at != std::string::npos) {
      remember_scan(classified->plain_query_at, {});  // a plain SELECT: nothing to find
    }
    batch_may_copy_ = false;
    process_client_messages();
    scanned_count_ = 0;
    if (closing_) break;
    if (batch_may_copy_) copy_in_progress_ = true;
    if (batch_ends_tx_ && server_conn_ && c2s_stream_left_ == 0 && c2s_begin_ == c2s_end_ &&
        !slots_.empty() && !slots_.back().internal() &&
        (slots_.back().kind == SlotKind::kSync || slots_.back().kind == SlotKind::kQuery)) {
      if (!copy_in_progress_) {
        send_watermark_query();
      } else {
        // A query behind a COPY FROM STDIN would reach the server in copy-in mode and fail the
        // COPY. The client's reads go to the primary until the LSN is read after its CopyDone
        // (or behind its next write).
        ryw_unknown_ = true;
      }
    }
    if (was_idle && !slots_.empty()) request_started_ = std::chrono::steady_clock::now();
    // Gather and send.
    c2s_iov_.clear();
    for (const auto& segment : c2s_segments_) {
      const auto* base = segment.extra ? c2s_extra_.data() : c2s_buffer_.data();
      c2s_iov_.emplace_back(base + segment.offset, segment.length);
    }
    if (!c2s_iov_.empty() && server_conn_) {
      c2s_writing_ = true;
      const auto attachment = attachment_;
      // Without a coroutine when the socket takes it all (nearly always).
      n = net::send_now(server_conn_->socket, c2s_iov_, ec);
      if (!ec && n < asio::buffer_size(c2s_iov_)) {
        std::tie(ec, n) = co_await net::write_rest(server_conn_->socket, c2s_iov_, n);
      }
      c2s_writing_ = false;
      if (closing_) break;
      // A failed write: the server reader finds the connection gone and answers the messages
      // (server_lost()); they count as sent.
      if (ec && attachment == attachment_) abandon_server("could not send: " + ec.message());
    }
    compact_client_buffer();  // an incomplete message waits for the next read
    if (client_terminated_) {
      stop_relay("client closed");
      break;
    }
    maybe_release();
  }
}

bool Session::must_wait_behind_read(const BatchClass& next) const {
  // Only closed units of reads may follow a read onto its standby (see the routing of an open
  // unit in pooled_client_loop()).
  return !next.query.read_only || next.query.force_primary ||
         next.query.first == sql::StatementKind::kBegin || next.open_unit;
}

awaitable<bool> Session::wait_for_answers() {
  // The server reader wakes this loop after each batch of answers it relayed, and when the
  // connection goes (wake_answer_waiter()); stop_relay() cancels the timer too.
  while (server_conn_ && !closing_) {
    if (slots_.empty() && !s2c_writing_) {
      // Everything is answered. Outside a transaction the connection goes back now (release
      // does not happen by itself while client messages wait in the buffer).
      if (server_status_ != TransactionStatus::kIdle || pinned_ || extended_open_) break;
      if (readback_.empty()) {
        detach(s2c_begin_ == s2c_end_ && s2c_stream_left_ == 0 && !server_skipping_);
        break;
      }
      send_readback();
      continue;
    }
    awaiting_answers_ = true;
    timer_.expires_at(std::chrono::steady_clock::time_point::max());
    co_await timer_.async_wait(kNoThrow);
    awaiting_answers_ = false;
  }
  co_return !closing_;
}

bool Session::client_answers_pending() const {
  return std::any_of(slots_.begin(), slots_.end(), [](const Slot& s) { return !s.internal(); });
}

void Session::wake_answer_waiter() {
  if (awaiting_answers_ && (!server_conn_ || slots_.empty())) timer_.cancel();
}

awaitable<bool> Session::answer_prepare_locally() {
  // PQprepare() outside a transaction sends named Parse messages and a Sync, and waits. pgrelay
  // answers that itself and prepares the statements where they are first used: no server
  // connection is taken (a synchronous client such as pgbench, with more clients than server
  // connections, would otherwise deadlock against its own open transactions), and it saves a
  // round trip. A statement with an error reports it when it is first bound or described.
  if (!transaction_mode_ || pinned_ || c2s_stream_left_ > 0) co_return false;
  std::size_t pos = c2s_begin_;
  std::size_t parses = 0;
  bool sync = false;
  while (pos < c2s_end_) {
    const auto waiting = waiting_at(pos);
    if (waiting.state != Waiting::kWhole) co_return false;
    if (sync) co_return false;  // anything after the Sync: take the normal path
    if (waiting.type == FrontendType::kSync) {
      sync = true;
    } else if (waiting.type == FrontendType::kParse) {
      const auto parse = protocol::parse_parse(waiting.body);
      if (!parse || parse->statement.empty() ||
          statements_.contains(std::string(parse->statement)) ||
          (sql::scan_words(parse->query).may_have_effects &&
           !sql::analyze_session_effects(parse->query).empty())) {
        co_return false;
      }
      ++parses;
    } else {
      co_return false;
    }
    pos += waiting.total;
  }
  if (!sync || parses == 0) co_return false;
  out_.clear();
  for (pos = c2s_begin_; pos < c2s_end_;) {
    const auto waiting = waiting_at(pos);  // whole: checked above
    if (waiting.type == FrontendType::kParse) {
      const auto parse = protocol::parse_parse(waiting.body);
      statements_[std::string(parse->statement)] =
          worker_.statements.protocol_statement(parse->query, parse->param_types);
      protocol::append_empty_message(out_, '1');
    }
    pos += waiting.total;
  }
  protocol::append_ready_for_query(out_, TransactionStatus::kIdle);
  c2s_begin_ = c2s_end_ = 0;
  auto [ec, n] = co_await client_write(asio::buffer(out_));
  if (ec) stop_relay("client disconnected");
  co_return true;
}

void Session::attach_started() {
  // Wake the server reader for this attachment (one reader for the session's life: no
  // coroutine per transaction).
  reader_signal_.cancel();
  if (!transaction_mode_) return;
  // Bring the connection to the client's parameters (pipelined before the client's messages).
  auto& server = *server_conn_;
  if (server.state_key == state_key()) return;
  c2s_segments_.clear();
  c2s_extra_.clear();
  append_param_sync();
  server.state_key = state_key();
  if (c2s_extra_.empty()) return;
  // Sent now, ahead of the client's messages (nothing else is on the wire yet).
  error_code ec;
  const auto sent = net::send_now(server.socket, asio::buffer(c2s_extra_), ec);
  if (ec || sent != c2s_extra_.size()) abandon_server("could not send: " + ec.message());
  c2s_extra_.clear();
}

const std::string& Session::state_key() {
  if (state_key_version_ != params_version_) {
    state_key_.clear();
    for (auto name : kReportedSettable) {
      state_key_.append(name).push_back('\0');
      if (const std::string* value = client_reported_.find(name)) state_key_.append(*value);
      state_key_.push_back('\0');
    }
    for (const auto& [name, value] : client_set_.items()) {
      state_key_.append(name).push_back('\0');
      state_key_.append(value).push_back('\0');
    }
    state_key_version_ = params_version_;
  }
  return state_key_;
}

void Session::append_param_sync() {
  auto& server = *server_conn_;
  const std::string sql =
      pool::param_sync_sql(client_reported_, client_set_, server.reported, server.set_values);
  if (sql.empty()) return;
  protocol::append_query(c2s_extra_, sql);
  push_slot(SlotKind::kQuery, SlotPurpose::kParamSync);
  server.set_values = client_set_;
}

void Session::process_client_messages() {
  const std::uint32_t max_length = config_->limits.max_message_bytes;
  while (true) {
    const std::size_t available = c2s_end_ - c2s_begin_;
    if (c2s_stream_left_ > 0) {
      const std::size_t n = std::min(c2s_stream_left_, available);
      add_passthrough(c2s_begin_, n);
      c2s_begin_ += n;
      c2s_stream_left_ -= n;
      if (c2s_stream_left_ > 0) return;
      continue;
    }
    if (available < protocol::kHeaderLength) return;
    const auto* start = c2s_buffer_.data() + c2s_begin_;
    const auto type = static_cast<FrontendType>(start[0]);
    const std::uint32_t length = protocol::read_u32(start + 1);
    const std::string_view problem = protocol::check_header(length, max_length);
    if (!problem.empty() || !protocol::is_known(type)) {
      const std::string error = problem.empty()
                                    ? "invalid frontend message type " + std::to_string(start[0])
                                    : "invalid frontend message: " + std::string(problem);
      set_final_error(sqlstate::kProtocolViolation, error);
      worker_.counters->protocol_errors_total.fetch_add(1, std::memory_order_relaxed);
      stop_relay("protocol violation by the client");
      return;
    }
    const std::size_t total = std::size_t{length} + 1;
    PGRELAY_TRACE("c{}: client message '{}' length {}{}", id_, static_cast<char>(type), length,
                  available >= total ? "" : " (partial)");
    if (available >= total) {
      const protocol::Bytes message(start, total);
      if (!handle_client_message(type, message)) add_passthrough(c2s_begin_, total);
      c2s_begin_ += total;
      if (closing_ || client_terminated_) return;
      continue;
    }
    // Incomplete. Messages whose body pgrelay reads wait for the rest; others stream.
    const bool needs_body = type == FrontendType::kDescribe || type == FrontendType::kClose ||
                            (transaction_mode_ && !pinned_ &&
                             (type == FrontendType::kQuery || type == FrontendType::kParse ||
                              type == FrontendType::kBind));
    if (needs_body) {
      // Wait for the rest: the loop moves it to the front of the buffer and grows the buffer
      // while it is full (up to max_message_bytes, checked above).
      return;
    }
    // Stream the header now (slot bookkeeping) and the body as it comes.
    handle_client_message(type, protocol::Bytes(start, protocol::kHeaderLength));
    add_passthrough(c2s_begin_, available);
    c2s_stream_left_ = total - available;
    c2s_begin_ = c2s_end_;
    return;
  }
}

void Session::remember_scan(std::size_t at, sql::WordScan words) {
  if (scanned_count_ < scanned_.size()) scanned_[scanned_count_++] = {at, words};
}

sql::WordScan Session::scan_of(protocol::Bytes message, std::string_view text) const {
  for (std::size_t i = 0; i < scanned_count_; ++i) {
    if (message.data() == c2s_buffer_.data() + scanned_[i].at) return scanned_[i].words;
  }
  return sql::scan_words(text);
}

bool Session::handle_client_message(FrontendType type, protocol::Bytes message) {
  // Returns true when the message was written to the extra buffer (rewritten or dropped);
  // false to pass it through as it is. `message` may be just the header (streamed types).
  const auto body = message.subspan(std::min(message.size(), protocol::kHeaderLength));
  if (batch_ends_tx_ && !batch_may_copy_ &&
      (type == FrontendType::kQuery || type == FrontendType::kParse)) {
    batch_may_copy_ = text_mentions_copy(type, body);
  }
  if (server_skipping_ && type != FrontendType::kSync && type != FrontendType::kQuery &&
      type != FrontendType::kTerminate) {
    return false;  // the server skips it after an error: nothing to track
  }
  switch (type) {
    case FrontendType::kQuery:
      if (transaction_mode_ && !pinned_) {
        const auto sql = protocol::parse_query(body);
        if (sql) {
          const auto words = scan_of(message, *sql);
          if (words.may_end_transaction) unit_may_commit_ = true;
          handle_query(message, *sql, words.may_have_effects);
          end_unit();
          return true;
        }
      }
      push_slot(SlotKind::kQuery);
      unit_may_commit_ = true;
      end_unit();
      return false;
    case FrontendType::kParse:
      if (transaction_mode_ && !pinned_) {
        handle_parse(message);
        return true;
      }
      push_slot(SlotKind::kParse);
      return false;
    case FrontendType::kBind:
      if (transaction_mode_ && !pinned_) {
        const auto bind = protocol::parse_bind_prefix(body);
        if (bind && !bind->statement.empty()) {
          const auto it = statements_.find(std::string(bind->statement));
          if (it != statements_.end()) {
            if (it->second->may_end_tx) unit_may_commit_ = true;
            ensure_prepared(*it->second, false);
            add_extra_start();
            protocol::append_bind(c2s_extra_, bind->portal, it->second->server_name, bind->rest);
            add_extra_end();
            push_slot(SlotKind::kBind);
            return true;
          }
        }
        if (bind && bind->statement.empty() && unnamed_deallocates_all_) {
          // DEALLOCATE ALL (or DISCARD ALL) through the extended protocol, as psycopg 3 sends
          // it: every statement goes, the client's and pgrelay's on this connection.
          statements_.clear();
          sql_statements_.clear();
          server_conn_->prepared.clear();
        }
        if (bind && bind->statement.empty() && unnamed_may_commit_) unit_may_commit_ = true;
        if (!bind || !bind->statement.empty()) unit_may_commit_ = true;  // not known: careful
      }
      push_slot(SlotKind::kBind);
      return false;
    case FrontendType::kDescribe: {
      const auto target = protocol::parse_target(body);
      const bool statement = target && target->kind == 'S';
      if (statement && transaction_mode_ && !pinned_ && !target->name.empty()) {
        const auto it = statements_.find(std::string(target->name));
        if (it != statements_.end()) {
          ensure_prepared(*it->second, false);
          add_extra_start();
          protocol::append_target(c2s_extra_, 'D', 'S', it->second->server_name);
          add_extra_end();
          push_slot(SlotKind::kDescribeStatement);
          return true;
        }
      }
      push_slot(statement ? SlotKind::kDescribeStatement : SlotKind::kDescribePortal);
      return false;
    }
    case FrontendType::kClose: {
      const auto target = protocol::parse_target(body);
      if (target && target->kind == 'S' && transaction_mode_ && !pinned_ && !target->name.empty()) {
        const auto it = statements_.find(std::string(target->name));
        if (it != statements_.end()) {
          // The server copy stays for other clients and later use; the client's name goes.
          statements_.erase(it);
          add_extra_start();
          protocol::append_target(c2s_extra_, 'C', 'S', kNoStatement);
          add_extra_end();
          push_slot(SlotKind::kClose);
          return true;
        }
      }
      push_slot(SlotKind::kClose);
      return false;
    }
    case FrontendType::kExecute:
      push_slot(SlotKind::kExecute);
      return false;
    case FrontendType::kSync:
      server_skipping_ = false;
      push_slot(SlotKind::kSync);
      end_unit();
      return false;
    case FrontendType::kFunctionCall:
      push_slot(SlotKind::kFunctionCall);
      unit_may_commit_ = true;
      end_unit();
      return false;
    case FrontendType::kCopyDone:
    case FrontendType::kCopyFail:
      copy_in_progress_ = false;
      return false;
    case FrontendType::kTerminate:
      client_terminated_ = true;
      return true;  // not forwarded: the server connection goes back to the pool
    default:
      return false;  // Flush, CopyData, CopyDone, CopyFail
  }
}

void Session::handle_query(protocol::Bytes message, std::string_view sql, bool may_have_effects) {
  const auto effects = may_have_effects ? sql::analyze_session_effects(sql) : sql::SessionEffects{};
  if (effects.empty()) {
    push_slot(SlotKind::kQuery);
    add_passthrough(static_cast<std::size_t>(message.data() - c2s_buffer_.data()), message.size());
    return;
  }
  auto& server = *server_conn_;
  if (effects.pin != sql::PinReason::kNone) {
    pin(effects.pin);
  }
  for (const auto& name : effects.params) {
    if (is_reported(name)) continue;
    if (std::find(readback_.begin(), readback_.end(), name) == readback_.end()) {
      readback_.push_back(name);
    }
  }
  if (effects.reset_all) {
    for (const auto& [name, value] : client_set_.items()) {
      if (std::find(readback_.begin(), readback_.end(), name) == readback_.end()) {
        readback_.push_back(name);
      }
    }
  }
  // SQL-level prepared statements: rename to pgrelay's names, prepare where missing.
  struct Rename {
    std::uint32_t begin;
    std::uint32_t end;
    std::string name;
  };
  std::vector<Rename> renames;
  std::vector<std::string> prepared_names;
  if (!pinned_ && effects.statements == 1 && effects.prepares.size() == 1 &&
      sql_statements_.contains(effects.prepares.front().name)) {
    // A second PREPARE of a name the client has: PostgreSQL refuses it (42P05) and keeps the
    // first; the server says so in pgrelay's stead, aborting a transaction as it would.
    std::string escaped;
    for (char c : "prepared statement \"" + effects.prepares.front().name + "\" already exists") {
      if (c == '\'') escaped.push_back('\'');
      escaped.push_back(c);
    }
    add_extra_start();
    protocol::append_query(
        c2s_extra_, "DO $pgrelay$BEGIN RAISE EXCEPTION USING ERRCODE = '42P05', MESSAGE = '" +
                        escaped + "'; END$pgrelay$");
    add_extra_end();
    push_slot(SlotKind::kQuery);
    return;
  }
  if (!pinned_) {
    for (const auto& prepare : effects.prepares) {
      // The statement's text after the name, up to the end of the statement.
      sql::Lexer lexer(sql.substr(prepare.end));
      auto stop = static_cast<std::uint32_t>(sql.size() - prepare.end);
      for (auto token = lexer.next(); token.kind != sql::TokenKind::kEnd; token = lexer.next()) {
        if (token.kind == sql::TokenKind::kPunctuation && token.text(lexer.sql()) == ";") {
          stop = token.begin;
          break;
        }
      }
      auto statement = worker_.statements.sql_statement(sql.substr(prepare.end, stop));
      renames.push_back({prepare.begin, prepare.end, statement->server_name});
      prepared_names.push_back(prepare.name);
      sql_statements_[prepare.name] = statement;
    }
    for (const auto& execute : effects.executes) {
      const auto it = sql_statements_.find(execute.name);
      if (it == sql_statements_.end()) continue;
      renames.push_back({execute.begin, execute.end, it->second->server_name});
    }
    for (const auto& deallocate : effects.deallocates) {
      const auto it = sql_statements_.find(deallocate.name);
      if (it == sql_statements_.end()) continue;
      renames.push_back({deallocate.begin, deallocate.end, it->second->server_name});
    }
    // pgrelay's own messages go before the client's query, each its own segment.
    for (const auto& prepare : effects.prepares) {
      const auto& statement = sql_statements_[prepare.name];
      if (server.prepared.contains(statement->id)) {
        // Another client's identical statement is there under the same name: drop it first.
        add_extra_start();
        protocol::append_query(c2s_extra_, "DEALLOCATE " + statement->server_name);
        add_extra_end();
        push_slot(SlotKind::kQuery, SlotPurpose::kInternal);
        server.prepared.erase(statement->id);
      }
    }
    for (const auto& execute : effects.executes) {
      const auto it = sql_statements_.find(execute.name);
      if (it != sql_statements_.end()) ensure_prepared(*it->second, true);
    }
    for (const auto& deallocate : effects.deallocates) {
      const auto it = sql_statements_.find(deallocate.name);
      if (it == sql_statements_.end()) continue;
      ensure_prepared(*it->second, true);
      server.prepared.erase(it->second->id);
      sql_statements_.erase(it);
    }
    for (const auto& prepare : effects.prepares) {
      if (const auto evicted = server.prepared.insert(sql_statements_[prepare.name]->id,
                                                      config_->pool.max_prepared_statements)) {
        // Over max_prepared_statements: the least recently used one goes from the server too.
        add_extra_start();
        protocol::append_query(c2s_extra_, "DEALLOCATE pgrelay_" + std::to_string(*evicted));
        add_extra_end();
        push_slot(SlotKind::kQuery, SlotPurpose::kInternal);
      }
    }
  }
  if (effects.deallocate_all) {
    statements_.clear();
    sql_statements_.clear();
    server.prepared.clear();
  }
  std::sort(renames.begin(), renames.end(),
            [](const Rename& a, const Rename& b) { return a.begin < b.begin; });
  if (renames.empty()) {
    add_passthrough(static_cast<std::size_t>(message.data() - c2s_buffer_.data()), message.size());
  } else {
    std::string rewritten;
    rewritten.reserve(sql.size() + renames.size() * 16);
    std::size_t pos = 0;
    for (const auto& rename : renames) {
      if (rename.begin < pos) continue;
      rewritten.append(sql.substr(pos, rename.begin - pos));
      rewritten.append(rename.name);
      pos = rename.end;
    }
    rewritten.append(sql.substr(pos));
    add_extra_start();
    protocol::append_query(c2s_extra_, rewritten);
    add_extra_end();
  }
  Slot slot;
  slot.kind = SlotKind::kQuery;
  if (!prepared_names.empty()) {
    slot.purpose = SlotPurpose::kClientPrepares;
    slot.names = std::move(prepared_names);
  }
  slots_.push_back(std::move(slot));
}

void Session::handle_parse(protocol::Bytes message) {
  const auto parse = protocol::parse_parse(message.subspan(protocol::kHeaderLength));
  const auto passthrough = [&] {
    push_slot(SlotKind::kParse);
    add_passthrough(static_cast<std::size_t>(message.data() - c2s_buffer_.data()), message.size());
  };
  if (!parse) {
    passthrough();  // the server reports the malformed message
    return;
  }
  const auto words = scan_of(message, parse->query);
  if (words.may_end_transaction) unit_may_commit_ = true;
  if (parse->statement.empty()) unnamed_may_commit_ = words.may_end_transaction;
  const auto effects =
      words.may_have_effects ? sql::analyze_session_effects(parse->query) : sql::SessionEffects{};
  if (parse->statement.empty()) unnamed_deallocates_all_ = effects.deallocate_all;
  if (effects.pin != sql::PinReason::kNone) {
    pin(effects.pin);
  }
  for (const auto& name : effects.params) {
    if (!is_reported(name) &&
        std::find(readback_.begin(), readback_.end(), name) == readback_.end()) {
      readback_.push_back(name);
    }
  }
  if (parse->statement.empty()) {
    passthrough();
    return;
  }
  auto& server = *server_conn_;
  const std::string name(parse->statement);
  if (statements_.contains(name)) {
    // PostgreSQL refuses a second statement of the same name: let the server say so, with the
    // same SQLSTATE and message, so the transaction fails exactly as it would.
    const std::string message_text = "prepared statement \"" + name + "\" already exists";
    std::string body = message_text;
    std::string escaped;
    for (char c : body) {
      if (c == '\'') escaped.push_back('\'');
      escaped.push_back(c);
    }
    add_extra_start();
    protocol::append_parse(
        c2s_extra_, "",
        "DO $pgrelay$BEGIN RAISE EXCEPTION USING ERRCODE = '42P05', MESSAGE = '" + escaped +
            "'; END$pgrelay$");
    protocol::append_bind(c2s_extra_, "", "");
    protocol::append_execute(c2s_extra_, "");
    add_extra_end();
    push_slot(SlotKind::kParse, SlotPurpose::kInternal);
    push_slot(SlotKind::kBind, SlotPurpose::kInternal);
    push_slot(SlotKind::kExecute);
    return;
  }
  auto statement = worker_.statements.protocol_statement(parse->query, parse->param_types);
  statements_[name] = statement;
  add_extra_start();
  if (server.prepared.contains(statement->id)) {
    // Already there (another client's identical statement): prepare it again so the client
    // gets a real ParseComplete in order.
    protocol::append_target(c2s_extra_, 'C', 'S', statement->server_name);
    push_slot(SlotKind::kClose, SlotPurpose::kInternal);
  }
  protocol::append_parse(c2s_extra_, statement->server_name, parse->query, parse->param_types);
  add_extra_end();
  extended_open_ = true;  // as push_slot() marks the client's other extended messages
  Slot slot;
  slot.kind = SlotKind::kParse;
  slot.purpose = SlotPurpose::kClientParse;
  slot.id = statement->id;
  slot.name = name;
  slots_.push_back(std::move(slot));
  if (const auto evicted =
          server.prepared.insert(statement->id, config_->pool.max_prepared_statements)) {
    add_extra_start();
    protocol::append_target(c2s_extra_, 'C', 'S', "pgrelay_" + std::to_string(*evicted));
    add_extra_end();
    push_slot(SlotKind::kClose, SlotPurpose::kInternal);
  }
}

void Session::ensure_prepared(const Statement& statement, bool sql) {
  auto& server = *server_conn_;
  if (server.prepared.contains(statement.id)) {
    server.prepared.touch(statement.id);
    return;
  }
  add_extra_start();
  if (sql) {
    protocol::append_query(c2s_extra_, statement.query);
    add_extra_end();
    push_slot(SlotKind::kQuery, SlotPurpose::kInternalParse, statement.id);
  } else {
    protocol::append_parse(c2s_extra_, statement.server_name, statement.query,
                           statement.param_types);
    add_extra_end();
    push_slot(SlotKind::kParse, SlotPurpose::kInternalParse, statement.id);
  }
  if (const auto evicted =
          server.prepared.insert(statement.id, config_->pool.max_prepared_statements)) {
    add_extra_start();
    if (sql) {
      // Inside a simple Query exchange: SQL, so no extended-protocol message is left unsynced.
      protocol::append_query(c2s_extra_, "DEALLOCATE pgrelay_" + std::to_string(*evicted));
      add_extra_end();
      push_slot(SlotKind::kQuery, SlotPurpose::kInternal);
    } else {
      protocol::append_target(c2s_extra_, 'C', 'S', "pgrelay_" + std::to_string(*evicted));
      add_extra_end();
      push_slot(SlotKind::kClose, SlotPurpose::kInternal);
    }
  }
}

// ---- relay: server to client -----------------------------------------------------------------

awaitable<void> Session::server_reader_loop() {
  while (!closing_) {
    if (!server_conn_) {
      // No server: its buffer goes back to the worker until the next one is attached.
      s2c_begin_ = s2c_end_ = 0;
      worker_.give_back(std::move(s2c_buffer_), kServerBufferSize);
      s2c_buffer_ = {};
      reader_signal_.expires_at(std::chrono::steady_clock::time_point::max());
      co_await reader_signal_.async_wait(kNoThrow);
      continue;
    }
    co_await server_reader(attachment_);
  }
}

awaitable<void> Session::server_reader(std::uint64_t attachment) {
  s2c_begin_ = s2c_end_ = 0;
  if (s2c_buffer_.empty()) s2c_buffer_ = worker_.take_buffer(kServerBufferSize);
  s2c_stream_left_ = 0;
  while (true) {
    if (attachment != attachment_ || !server_conn_ || closing_) co_return;
    if (s2c_end_ == s2c_buffer_.size()) s2c_buffer_.resize(s2c_buffer_.size() * 2);
    auto [ec, n] = co_await server_conn_->socket.async_read_some(
        asio::buffer(s2c_buffer_.data() + s2c_end_, s2c_buffer_.size() - s2c_end_), kNoThrow);
    if (attachment != attachment_ || closing_) co_return;
    if (ec) {
      const std::string why = !lost_why_.empty()       ? lost_why_
                              : !server_fatal_.empty() ? server_fatal_
                              : ec == asio::error::eof ? std::string("the server closed it")
                                                       : ec.message();
      spdlog::warn("c{}: connection to backend {} ({}:{}) lost: {}", id_, backend_name_,
                   backend_host_, backend_port_, why);
      shared_.monitor->request_probe();
      if (server_lost(why)) {
        if (!s2c_extra_.empty()) {
          s2c_writing_ = true;
          const asio::const_buffer answer(s2c_extra_.data(), s2c_extra_.size());
          const std::span<const asio::const_buffer> buffers(&answer, 1);
          if (tls_) {
            std::tie(ec, n) = co_await net::write_all(*tls_, buffers);
          } else {
            std::tie(ec, n) = co_await net::write_all(client_, buffers);
          }
          s2c_writing_ = false;
          s2c_extra_.clear();
          if (ec) stop_relay(closing_ ? "" : "client disconnected");
        }
        co_return;
      }
      stop_relay("backend connection lost");
      detach(false);
      co_return;
    }
    s2c_end_ += n;
    s2c_segments_.clear();
    s2c_extra_.clear();
    if (!process_server_messages()) {
      stop_relay("protocol violation by the backend");
      co_return;
    }
    s2c_iov_.clear();
    for (const auto& segment : s2c_segments_) {
      const auto* base = segment.extra ? s2c_extra_.data() : s2c_buffer_.data();
      s2c_iov_.emplace_back(base + segment.offset, segment.length);
    }
    if (!s2c_iov_.empty()) {
      s2c_writing_ = true;
      if (tls_) {
        std::tie(ec, n) = co_await net::write_all(*tls_, s2c_iov_);
      } else {
        n = net::send_now(client_, s2c_iov_, ec);
        if (!ec && n < asio::buffer_size(s2c_iov_)) {
          std::tie(ec, n) = co_await net::write_rest(client_, s2c_iov_, n);
        }
      }
      s2c_writing_ = false;
      if (ec) {
        stop_relay(closing_ ? "" : "client disconnected");
        co_return;
      }
    }
    if (s2c_begin_ == s2c_end_) {
      s2c_begin_ = s2c_end_ = 0;
    } else if (s2c_begin_ > 0) {
      std::copy(s2c_buffer_.begin() + static_cast<std::ptrdiff_t>(s2c_begin_),
                s2c_buffer_.begin() + static_cast<std::ptrdiff_t>(s2c_end_), s2c_buffer_.begin());
      s2c_end_ -= s2c_begin_;
      s2c_begin_ = 0;
    }
    if (attachment != attachment_) co_return;
    if (stopping_ && idle()) {
      set_final_error(sqlstate::kAdminShutdown,
                      "terminating connection due to administrator command");
      stop_relay("server shutting down");
      co_return;
    }
    maybe_release();
    wake_answer_waiter();
    if (attachment != attachment_) co_return;
  }
}

bool Session::process_server_messages() {
  while (true) {
    const std::size_t available = s2c_end_ - s2c_begin_;
    if (s2c_stream_left_ > 0) {
      const std::size_t n = std::min(s2c_stream_left_, available);
      if (s2c_stream_forward_ && n > 0) {
        auto& segments = s2c_segments_;
        if (!segments.empty() && !segments.back().extra &&
            segments.back().offset + segments.back().length == s2c_begin_) {
          segments.back().length += n;
        } else {
          segments.push_back({false, s2c_begin_, n});
        }
      }
      s2c_begin_ += n;
      s2c_stream_left_ -= n;
      if (s2c_stream_left_ > 0) return true;
      continue;
    }
    if (available < protocol::kHeaderLength) return true;
    const auto* start = s2c_buffer_.data() + s2c_begin_;
    const auto type = static_cast<BackendType>(start[0]);
    const std::uint32_t length = protocol::read_u32(start + 1);
    if (length < 4) {
      spdlog::warn("c{}: invalid message from backend {}", id_, backend_name_);
      set_final_error(sqlstate::kProtocolViolation,
                      "invalid message from backend \"" + backend_name_ + "\"");
      return false;
    }
    const std::size_t total = std::size_t{length} + 1;
    const bool complete = available >= total;
    // Messages pgrelay must read whole: small ones it inspects, and everything of its own
    // queries (swallowed). Rows, copy data and the like stream.
    const bool internal = !slots_.empty() && slots_.front().internal();
    const bool stream_ok =
        !internal &&
        (type == BackendType::kDataRow || type == BackendType::kCopyData ||
         type == BackendType::kRowDescription || type == BackendType::kNoticeResponse ||
         type == BackendType::kNotificationResponse || type == BackendType::kFunctionCallResponse);
    if (!complete && stream_ok) {
      flush_pending_status();
      last_server_type_ = type;
      s2c_stream_forward_ = true;
      s2c_segments_.push_back({false, s2c_begin_, available});
      s2c_stream_left_ = total - available;
      s2c_begin_ = s2c_end_;
      return true;
    }
    if (!complete) return true;  // the reader compacts and grows the buffer
    const protocol::Bytes body(start + protocol::kHeaderLength, length - 4);
    PGRELAY_TRACE("c{}: server message '{}' length {}, {} slots", id_, static_cast<char>(type),
                  length, slots_.size());
    last_server_type_ = type;
    const std::size_t extra_before = s2c_extra_.size();
    const bool forward = handle_server_message(type, body);
    if (closing_) return false;
    if (s2c_extra_.size() > extra_before) {
      s2c_segments_.push_back({true, extra_before, s2c_extra_.size() - extra_before});
    }
    if (forward) {
      flush_pending_status();
      auto& segments = s2c_segments_;
      if (!segments.empty() && !segments.back().extra &&
          segments.back().offset + segments.back().length == s2c_begin_) {
        segments.back().length += total;
      } else {
        segments.push_back({false, s2c_begin_, total});
      }
    }
    s2c_begin_ += total;
  }
}

void Session::undo_slot(const Slot& slot) {
  // The server did not carry out (or refused) this message.
  if (!server_conn_) return;
  if (slot.purpose == SlotPurpose::kClientParse) {
    server_conn_->prepared.erase(slot.id);
    const auto it = statements_.find(slot.name);
    if (it != statements_.end() && it->second->id == slot.id) statements_.erase(it);
  } else if (slot.purpose == SlotPurpose::kInternalParse) {
    server_conn_->prepared.erase(slot.id);
  }
}

void Session::discard_until_sync() {
  // After an error in the extended protocol the server skips everything up to Sync.
  while (!slots_.empty() && slots_.front().kind != SlotKind::kSync) {
    undo_slot(slots_.front());
    slots_.pop_front();
  }
  if (slots_.empty()) server_skipping_ = true;
}

void Session::pop_slot() {
  if (!slots_.empty()) slots_.pop_front();
}

bool Session::handle_server_message(BackendType type, protocol::Bytes body) {
  // Returns true to relay the message to the client.
  if (type == BackendType::kErrorResponse && transaction_mode_ && !pinned_) {
    // A FATAL ends the server connection, not the client's session: server_lost() answers
    // the client when the connection closes.
    const auto fields = protocol::parse_error_fields(body);
    if (fields && (fields->severity == "FATAL" || fields->severity == "PANIC")) {
      server_fatal_ = std::string(fields->sqlstate) + " " + std::string(fields->message);
      return false;
    }
  }
  if (slots_.empty()) {
    switch (type) {
      case BackendType::kNoticeResponse:
      case BackendType::kNotificationResponse:
      case BackendType::kParameterStatus:
        break;
      case BackendType::kErrorResponse:
        // A FATAL at idle (the server is shutting down, idle_session_timeout): relay it.
        return true;
      default:
        spdlog::warn("c{}: unexpected message '{}' from backend {}", id_, static_cast<char>(type),
                     backend_name_);
        set_final_error(sqlstate::kProtocolViolation,
                        "unexpected message from backend \"" + backend_name_ + "\"");
        stop_relay("protocol violation by the backend");
        return false;
    }
  }
  Slot* head = slots_.empty() ? nullptr : &slots_.front();
  const bool internal = head != nullptr && head->internal();
  switch (type) {
    case BackendType::kParameterStatus: {
      const auto status = protocol::parse_parameter_status(body);
      if (!status) return !internal;
      if (server_conn_) server_conn_->reported.set(status->name, status->value);
      if (internal) return false;
      if (client_reported_.set(status->name, status->value)) ++params_version_;
      if (server_conn_) server_conn_->last_client_version = params_version_;
      return true;
    }
    case BackendType::kNoticeResponse:
      return !internal;
    case BackendType::kNotificationResponse:
      return true;
    case BackendType::kErrorResponse: {
      if (head->kind == SlotKind::kQuery || head->kind == SlotKind::kFunctionCall) {
        head->errored = true;
        if (!internal) return true;
        const auto fields = protocol::parse_error_fields(body);
        if (head->purpose == SlotPurpose::kCommitLsn) {
          // Inside a failed transaction, for one: the watermark stays as it was.
          spdlog::debug("c{}: commit LSN not read on backend {}: {}", id_, backend_name_,
                        fields ? fields->message : "?");
        } else {
          spdlog::warn("c{}: pgrelay's own query on backend {} failed: {}", id_, backend_name_,
                       fields ? fields->message : "?");
        }
        undo_slot(*head);
        if (head->purpose == SlotPurpose::kParamSync) {
          protocol::append_notice(
              s2c_extra_, "WARNING", sqlstate::kInternalError,
              "pgrelay could not restore session parameters on backend \"" + backend_name_ + "\"",
              fields ? fields->message : std::string_view{});
          if (server_conn_) server_conn_->set_values.clear();
          if (server_conn_) server_conn_->state_key.clear();
        }
        return false;
      }
      // Extended protocol: this message failed and the server skips to Sync. An error of
      // pgrelay's own Parse is the client's error too (its Bind cannot run).
      undo_slot(*head);
      pop_slot();
      discard_until_sync();
      return true;
    }
    case BackendType::kReadyForQuery: {
      if (head->kind != SlotKind::kSync && head->kind != SlotKind::kQuery &&
          head->kind != SlotKind::kFunctionCall) {
        spdlog::warn("c{}: ReadyForQuery out of step from backend {}", id_, backend_name_);
        set_final_error(sqlstate::kProtocolViolation,
                        "unexpected message from backend \"" + backend_name_ + "\"");
        stop_relay("protocol violation by the backend");
        return false;
      }
      server_status_ = protocol::parse_ready_for_query(body).value_or(server_status_);
      block_opened_ahead_ = false;
      if (head->purpose == SlotPurpose::kClientPrepares) {
        // PREPAREs the server did not confirm never existed.
        for (std::size_t i = head->completed; i < head->names.size(); ++i) {
          const auto it = sql_statements_.find(head->names[i]);
          if (it != sql_statements_.end()) {
            if (server_conn_) server_conn_->prepared.erase(it->second->id);
            sql_statements_.erase(it);
          }
        }
      }
      if (head->purpose == SlotPurpose::kCommitLsn && head->lsn != 0 &&
          server_status_ == TransactionStatus::kIdle) {
        // The client's transaction had ended: its commit is at or before this LSN.
        ryw_lsn_ = std::max(ryw_lsn_, head->lsn);
        // Lazy: a batch that may write, sent after this query, is not covered.
        if (head->id == ryw_writes_) ryw_unknown_ = false;
        if (spdlog::should_log(spdlog::level::debug)) {  // not formatted per commit otherwise
          spdlog::debug("c{}: commit watermark {} from backend {}", id_,
                        cluster::format_lsn(head->lsn), backend_name_);
        }
        // Told with the client's next answer: no write (and no client wake-up) of its own.
        pending_commit_lsn_ = head->lsn;
      }
      if (!internal) {
        tx_status_ = server_status_;
        pop_slot();
        if (copy_in_progress_ && !client_answers_pending()) copy_in_progress_ = false;
        if (slots_.empty() || std::none_of(slots_.begin(), slots_.end(),
                                           [](const Slot& s) { return !s.internal(); })) {
          worker_.counters->observe_latency(std::chrono::steady_clock::now() - request_started_);
        }
        return true;
      }
      pop_slot();
      return false;
    }
    case BackendType::kParseComplete:
    case BackendType::kBindComplete:
    case BackendType::kCloseComplete:
    case BackendType::kNoData:
    case BackendType::kEmptyQueryResponse:
    case BackendType::kPortalSuspended:
      if (head->kind == SlotKind::kQuery) return !internal;  // inside a simple query
      pop_slot();
      return !internal;
    case BackendType::kRowDescription:
      if (head->kind == SlotKind::kDescribeStatement || head->kind == SlotKind::kDescribePortal) {
        pop_slot();
      }
      return !internal;
    case BackendType::kCommandComplete:
      if (head->kind == SlotKind::kExecute) {
        pop_slot();
      } else if (head->purpose == SlotPurpose::kClientPrepares) {
        const auto tag = protocol::parse_command_tag(body);
        if (tag && *tag == "PREPARE") ++head->completed;
      }
      return !internal;
    case BackendType::kDataRow:
      if (head->purpose == SlotPurpose::kCommitLsn) {
        std::array<std::optional<std::string_view>, 1> values{};
        const auto count = protocol::parse_data_row(body, values);
        if (count && *count == 1 && values[0])
          head->lsn = cluster::parse_lsn(*values[0]).value_or(0);
        return false;
      }
      if (head->purpose == SlotPurpose::kReadback) {
        std::array<std::optional<std::string_view>, 64> values{};
        const auto count = protocol::parse_data_row(body, values);
        if (count && *count == head->names.size()) {
          for (std::size_t i = 0; i < head->names.size() && i < values.size(); ++i) {
            const auto& name = head->names[i];
            if (values[i]) {
              client_set_.set(name, *values[i]);
              if (server_conn_) server_conn_->set_values.set(name, *values[i]);
            } else {
              client_set_.erase(name);
              if (server_conn_) server_conn_->set_values.erase(name);
            }
          }
          ++params_version_;
          if (server_conn_) {
            server_conn_->last_client = id_;
            server_conn_->last_client_version = params_version_;
          }
        }
      }
      return !internal;
    default:
      return !internal;
  }
}

// ---- release ---------------------------------------------------------------------------------

bool Session::releasable() const {
  return transaction_mode_ && server_conn_ && !pinned_ && !closing_ && idle() &&
         !server_skipping_ && !c2s_writing_ && !s2c_writing_ && s2c_stream_left_ == 0 &&
         s2c_begin_ == s2c_end_;
}

void Session::send_readback() {
  // Parameters the client changed with SET/RESET are read back once its transaction is over,
  // so the next server connection gets the same values.
  std::vector<std::string> names;
  names.swap(readback_);
  if (names.size() > 64) names.resize(64);
  std::string sql = "SELECT ";
  for (std::size_t i = 0; i < names.size(); ++i) {
    if (i > 0) sql += ", ";
    sql += "pg_catalog.current_setting(" + quote_literal(names[i]) + ", true)";
  }
  protocol::ByteVector query;
  protocol::append_query(query, sql);
  error_code ec;
  const auto sent = net::send_now(server_conn_->socket, asio::buffer(query), ec);
  if (ec || sent != query.size()) {
    detach(false);
    return;
  }
  Slot slot;
  slot.kind = SlotKind::kQuery;
  slot.purpose = SlotPurpose::kReadback;
  slot.names = std::move(names);
  slots_.push_back(std::move(slot));
}

void Session::maybe_release() {
  if (!releasable()) return;
  if (!readback_.empty()) {
    send_readback();
    return;
  }
  detach(true);
}

void Session::detach(bool reusable) {
  if (!server_conn_) return;
  PGRELAY_TRACE("c{}: server connection (backend pid {}) {}", id_, server_conn_->key.process_id,
                reusable ? "returned" : "closed");
  ++attachment_;
  idle_since_ = std::chrono::steady_clock::now();
  error_code ignored;
  server_conn_->socket.cancel(ignored);
  if (cancel_entry_) cancel_entry_->clear();
  slots_.clear();
  server_skipping_ = false;
  s2c_begin_ = s2c_end_ = 0;
  s2c_stream_left_ = 0;
  server_conn_->last_client = id_;
  server_conn_->last_client_version = params_version_;
  if (transaction_mode_ && server_conn_->state_key != state_key()) {
    server_conn_->state_key = state_key();
  }
  if (transaction_mode_ && backend_index_ >= 0 &&
      static_cast<std::size_t>(backend_index_) < worker_.outstanding.size() &&
      worker_.outstanding[static_cast<std::size_t>(backend_index_)] > 0) {
    --worker_.outstanding[static_cast<std::size_t>(backend_index_)];
  }
  routed_read_ = false;
  may_write_ = false;
  tx_read_intent_ = false;
  block_opened_ahead_ = false;
  extended_open_ = false;  // a lost server's unit is answered without one (lost.cpp)
  copy_in_progress_ = false;
  count_active(false);
  if (dedicated_ && reusable && !closing_ && server_pool_ != nullptr) {
    parked_.push_back({std::move(server_conn_), server_pool_});
  } else if (server_pool_ != nullptr) {
    server_pool_->release(std::move(server_conn_), reusable);
  } else {
    server_conn_.reset();
  }
  backend_index_ = -1;
  wake_answer_waiter();
}

}  // namespace pgrelay::session
