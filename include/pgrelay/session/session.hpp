// One client connection: startup, TLS, login pass-through, relaying, cancel, graceful stop.
#pragma once

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <tuple>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/thread_pool.hpp>

#include "pgrelay/auth/auth_query.hpp"
#include "pgrelay/auth/secrets.hpp"
#include "pgrelay/cluster/monitor.hpp"
#include "pgrelay/config/config.hpp"
#include "pgrelay/net/asio.hpp"
#include "pgrelay/net/send.hpp"
#include "pgrelay/net/tls.hpp"
#include "pgrelay/pool/pool.hpp"
#include "pgrelay/protocol/frame.hpp"
#include "pgrelay/protocol/startup.hpp"
#include "pgrelay/routing/policy.hpp"
#include "pgrelay/session/cancel_registry.hpp"
#include "pgrelay/sql/classify.hpp"
#include "pgrelay/sql/session_effects.hpp"
#include "pgrelay/stats/stats.hpp"

namespace pgrelay::session {

/// The answer to an operator action (PAUSE, RESUME, SWITCHOVER): HTTP-style status, a JSON
/// body, and the error message when the status is not 200.
struct ControlResult {
  int status = 200;
  std::string json;
  std::string error;
};
/// Runs an operator action (`action` "pause", "resume" or "switchover"; `query` as in a URL,
/// e.g. "to=node2&timeout_ms=5000"). May block for seconds.
using ControlFn = std::function<ControlResult(std::string_view action, std::string_view query)>;

/// What every session of the process shares. Set up before the workers start.
struct Shared {
  /// Operator actions for the admin console, and the thread they run on.
  ControlFn control;
  net::asio::thread_pool* control_pool = nullptr;
  std::atomic<std::shared_ptr<const config::Config>> config;
  std::shared_ptr<net::asio::ssl::context> tls;  ///< null without [tls]
  cluster::Monitor* monitor = nullptr;
  stats::Stats* stats = nullptr;
  /// Client secrets from [auth] file; null without a file.
  std::atomic<std::shared_ptr<const auth::SecretStore>> secrets;
  /// [auth] query lookups; null without a query.
  std::unique_ptr<auth::AuthQuery> auth_query;
  /// tls-server-end-point channel-binding data of pgrelay's certificate (SCRAM-SHA-256-PLUS).
  std::optional<std::string> tls_end_point;
  CancelRegistry cancels;
  std::atomic<std::uint64_t> next_id{1};
  /// PAUSE: pooled sessions start no transaction (and no login) until RESUME.
  std::atomic<bool> paused{false};
  /// Transaction-pooled sessions holding a server connection for a transaction now (pinned
  /// sessions excepted): what PAUSE and a switchover wait for.
  std::atomic<std::int64_t> active_transactions{0};
};

class Session;
class StatementRegistry;

/// A distinct prepared statement (protocol-level: query and parameter types; SQL-level: the
/// PREPARE text after the name) under the name pgrelay gives it on every server connection.
struct Statement {
  std::uint64_t id = 0;
  std::string server_name;  ///< "pgrelay_<id>"
  std::string query;        ///< Parse: the query; SQL: "PREPARE pgrelay_<id> ..."
  protocol::ByteVector param_types;
  std::string key;
  bool may_end_tx = false;  ///< sql::may_end_transaction(query)
  /// The routing verdict for the query, kept for each Bind of it: the text does not change, so
  /// only another function catalog or standard_conforming_strings setting asks for a new one.
  std::optional<sql::QueryClass> route_class;
  std::shared_ptr<const sql::FunctionCatalog> route_catalog;
  bool route_scs = true;
  StatementRegistry* registry = nullptr;
  ~Statement();
};

/// The statements of one worker, shared by its clients while any of them holds one.
class StatementRegistry {
 public:
  std::shared_ptr<Statement> protocol_statement(std::string_view query, protocol::Bytes types);
  std::shared_ptr<Statement> sql_statement(std::string_view rest);
  void forget(const std::string& key) { statements_.erase(key); }

 private:
  std::shared_ptr<Statement> get(std::string key);
  std::unordered_map<std::string, std::weak_ptr<Statement>> statements_;
  std::uint64_t next_id_ = 1;
};

/// What clients that logged in alike share while parked: the configuration they started under,
/// user, database, the credential for server logins and the parameters reported at login.
struct LoginProfile {
  std::shared_ptr<const config::Config> config;
  std::string user;
  std::string database;
  pool::Credential credential;
  pool::ParamList reported;
};

/// Parked state that most clients do not have.
struct ParkedExtras {
  pool::ParamList client_set;
  std::unordered_map<std::string, std::shared_ptr<Statement>> statements;
  std::unordered_map<std::string, std::shared_ptr<Statement>> sql_statements;
};

/// A transaction-pooling client idle past [pool] park_after_ms: its socket and what its next
/// transaction needs, without the session's buffers, timers and coroutine frames. The socket
/// leaves Asio for the worker's own epoll set of parked clients; when it becomes readable a new
/// session takes it (Session::unpark()). See Session::parkable_since() for when a client parks.
struct ParkedClient {
  std::shared_ptr<const LoginProfile> profile;
  std::unique_ptr<ParkedExtras> extras;  ///< null when it would be empty
  std::chrono::steady_clock::time_point started;
  std::uint64_t id = 0;
  std::uint64_t params_version = 0;
  std::uint64_t ryw_lsn = 0;
  std::uint64_t pending_commit_lsn = 0;
  std::optional<protocol::BackendKeyData> client_key;
  int fd = -1;
  bool v6 = false;
  bool ryw_unknown = false;
  bool ryw_reader = false;
  bool unnamed_may_commit = false;
  ParkedClient* prev = nullptr;
  ParkedClient* next = nullptr;
};

/// The sessions of one worker; touched only on that worker's thread.
struct WorkerSessions {
  WorkerSessions() = default;
  WorkerSessions(const WorkerSessions&) = delete;
  WorkerSessions& operator=(const WorkerSessions&) = delete;
  ~WorkerSessions() { drop_parked(); }  // (Server calls it first, while the reactor exists)

  Shared* shared = nullptr;
  std::size_t index = 0;  ///< the worker's number (per-worker counters)
  std::unordered_set<Session*> sessions;
  /// Parked clients (a list through ParkedClient::prev/next, owned here).
  ParkedClient* parked = nullptr;
  std::vector<std::weak_ptr<const LoginProfile>> profiles;
  /// A profile with these values, shared with clients parked with the same, or a new one.
  std::shared_ptr<const LoginProfile> intern(const std::shared_ptr<const config::Config>& config,
                                             const std::string& user, const std::string& database,
                                             const pool::Credential& credential,
                                             const pool::ParamList& reported);
  /// Takes `client` (its fd already out of Asio) and waits for it to send something; false
  /// when it cannot be watched (the caller still owns it then).
  bool park(std::unique_ptr<ParkedClient>& client, const net::asio::any_io_executor& executor);
  /// Graceful stop: every parked client goes on in a session, which tells it (FATAL 57P01).
  void stop_parked();
  /// Closes parked clients without a word (the worker's io_context is about to go).
  void drop_parked();
  /// Parks sessions idle since before now - `after`. Returns when the next look is due: when
  /// the longest-waiting client not parked yet reaches `after`; `after` from now when no client
  /// waits; nullopt when the worker has no session at all.
  std::optional<std::chrono::steady_clock::time_point> park_idle(
      std::chrono::steady_clock::duration after);
  /// A session started: the park sweep, asleep for long on a worker without sessions, looks
  /// again at its usual pace.
  void session_added() {
    if (park_sleeping_long && park_timer != nullptr) {
      park_sleeping_long = false;
      park_timer->cancel();
    }
  }
  net::asio::steady_timer* park_timer = nullptr;  ///< the sweep's timer (Server's)
  bool park_sleeping_long = false;
  /// Unlinks `client` from `parked` and its fd from the epoll set.
  std::unique_ptr<ParkedClient> unlink_parked(ParkedClient* client);
  void watch_parked();
  int park_epoll = -1;  ///< the epoll set of parked clients' sockets
  std::unique_ptr<net::asio::posix::stream_descriptor> park_watch;  ///< Asio's view of park_epoll
  bool park_watching = false;
  bool trim_pending = false;
  std::chrono::steady_clock::time_point last_trim{};
  stats::WorkerCounters* counters = nullptr;
  std::unique_ptr<pool::WorkerPools> pools;
  StatementRegistry statements;
  bool stopping = false;
  /// Relay buffers of ended sessions, kept for the next ones: a connect-per-transaction client
  /// would otherwise allocate and zero tens of kilobytes per connection.
  std::vector<protocol::ByteVector> spare_buffers;
  /// Sessions waiting for RESUME.
  std::unordered_set<Session*> paused_waiters;

  /// The routing classifier of this worker; rebuilt when the monitor has read a new function
  /// catalog or the configured read-only functions changed.
  sql::Classifier& classifier(const cluster::Monitor& monitor,
                              const std::shared_ptr<const config::Config>& config);
  std::unique_ptr<sql::Classifier> classifier_;
  std::shared_ptr<const std::vector<std::string>> classifier_source_;
  /// The monitor generation and config classifier() last looked at: while neither moves, it
  /// touches nothing shared (the function list is an atomic shared_ptr in the monitor).
  std::uint64_t classifier_generation_ = 0;
  std::shared_ptr<const config::Config> classifier_config_;
  std::vector<std::string> classifier_read_only_;
  /// [[backend]] weights, by backend index (from the config the classifier was built for).
  std::vector<std::uint32_t> weights;
  /// Transactions running now on each backend from this worker (least-outstanding choice).
  std::vector<std::uint32_t> outstanding;
  std::uint32_t route_turn = 0;

  /// This worker's own copy of the monitor's latest topology, copied again when the monitor's
  /// generation moves. Sessions take it per transaction: a reference to the monitor's shared
  /// snapshot would bounce its reference count between the workers' cores every time. The
  /// reference is to this copy: a caller that keeps the topology past another call copies it.
  const std::shared_ptr<const cluster::Topology>& topology();
  std::shared_ptr<const cluster::Topology> topology_copy;

  /// A buffer of at least `size` bytes (contents unspecified).
  protocol::ByteVector take_buffer(std::size_t size);
  /// Keeps `buffer` for reuse unless it grew past `max_size` or enough are kept already.
  void give_back(protocol::ByteVector&& buffer, std::size_t max_size);
};

/// One worker's share of the [pool] limits in `config` (max_size and min_idle split evenly over
/// `workers`, each at least one connection).
[[nodiscard]] pool::PoolLimits pool_limits(const config::Config& config, std::size_t workers);

class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(Shared& shared, WorkerSessions& worker, net::tcp::socket socket);
  /// A session for a parked client that became readable (or must be told the server stops).
  Session(Shared& shared, WorkerSessions& worker, const net::asio::any_io_executor& executor,
          ParkedClient&& parked);
  ~Session();
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  /// Runs the session on the socket's executor until it ends (from login, or for an unparked
  /// client from its next message).
  static void start(const std::shared_ptr<Session>& session,
                    net::asio::awaitable<void> (Session::*entry)() = &Session::run);
  /// Goes on with a parked client in a new session.
  static void unpark(Shared& shared, WorkerSessions& worker,
                     const net::asio::any_io_executor& executor,
                     std::unique_ptr<ParkedClient> parked);
  /// Since when the session has waited for its client with nothing else to do, in a state a
  /// parked client can keep; nullopt when it cannot park now.
  [[nodiscard]] std::optional<std::chrono::steady_clock::time_point> parkable_since() const;
  /// Parks the session (see parkable_since()). It ends soon after; its client continues in
  /// unpark().
  void start_parking();

  /// Graceful stop: an idle client is told the server is shutting down and closed at once; a
  /// client inside a transaction (or with a query running) is closed when it becomes idle.
  void request_stop();
  /// Closes now, whatever the client is doing (shutdown deadline).
  void force_close();
  /// Called after the topology changed: a session whose server is no longer the primary (another
  /// node was promoted, or its node was fenced or demoted) gets FATAL 57P01 and is closed.
  void topology_changed(const cluster::Topology& topology);
  /// RESUME: a session waiting in PAUSE goes on.
  void resume_from_pause();
  /// Ends the transaction running on a server connection now (switchover past its drain
  /// timeout): its client gets 40001 or 08006 and the session goes on; a pinned session ends.
  void abort_transaction(const std::string& why);

 private:
  /// What both public constructors share: the socket, its timers and scanners, and the
  /// worker's session list.
  Session(Shared& shared, WorkerSessions& worker, std::shared_ptr<const config::Config> config,
          std::uint64_t id, std::chrono::steady_clock::time_point started, net::tcp::socket socket);
  struct FinalError {
    std::string sqlstate;
    std::string message;
  };

  net::asio::awaitable<void> run();
  net::asio::awaitable<bool> read_startup(protocol::StartupMessage& startup);
  net::asio::awaitable<void> forward_cancel(protocol::CancelRequest request);
  net::asio::awaitable<bool> connect_primary();
  net::asio::awaitable<net::error_code> connect_to(const std::string& host, std::uint16_t port);
  net::asio::awaitable<bool> login();
  net::asio::awaitable<std::optional<protocol::Bytes>> next_server_message();
  net::asio::awaitable<void> relay();
  net::asio::awaitable<void> client_to_server();
  net::asio::awaitable<void> server_to_client();
  net::asio::awaitable<void> send_fatal(std::string_view sqlstate, std::string message,
                                        std::string_view detail = {});

  // ---- pooled sessions (pgrelay authenticates the client; proxy/session/pooled.cpp) ----
  enum class SlotKind : std::uint8_t {
    kParse,
    kBind,
    kDescribeStatement,
    kDescribePortal,
    kExecute,
    kClose,
    kSync,
    kQuery,
    kFunctionCall,
  };
  enum class SlotPurpose : std::uint8_t {
    kClient,          ///< the client's own message: responses are relayed
    kClientParse,     ///< the client's Parse of a named statement (undone on error)
    kClientPrepares,  ///< a client Query with SQL PREPAREs (confirmed by CommandComplete)
    kInternal,        ///< pgrelay's own message: responses are swallowed
    kInternalParse,   ///< pgrelay re-preparing a statement on this connection
    kParamSync,       ///< pgrelay applying the client's parameters
    kReadback,        ///< pgrelay reading back parameters the client changed
    kCommitLsn,       ///< pgrelay reading an LSN at or after the client's commit
  };
  /// One expected response (or response sequence) from the server, in wire order.
  struct Slot {
    SlotKind kind = SlotKind::kSync;
    SlotPurpose purpose = SlotPurpose::kClient;
    bool errored = false;
    bool may_commit = false;         ///< the unit this slot ends (Query, Sync) may commit
    std::uint32_t completed = 0;     ///< kClientPrepares: PREPAREs confirmed so far
    std::uint64_t id = 0;            ///< statement id (parse bookkeeping)
    std::string name;                ///< client statement name (kClientParse)
    std::vector<std::string> names;  ///< kReadback: parameters; kClientPrepares: client names
    std::uint64_t lsn = 0;           ///< kCommitLsn: the LSN read
    [[nodiscard]] bool internal() const { return purpose >= SlotPurpose::kInternal; }
  };
  /// A client's named statement: the shared statement and whether it came from SQL PREPARE.
  using StatementMap = std::unordered_map<std::string, std::shared_ptr<Statement>>;

  net::asio::awaitable<void> run_pooled(const protocol::StartupMessage& startup);
  /// The admin console (database "pgrelay"; proxy/session/console.cpp).
  net::asio::awaitable<void> run_console();
  net::asio::awaitable<void> console_command(std::string_view sql);
  net::asio::awaitable<std::optional<protocol::ByteVector>> read_auth_response(
      std::string_view what);
  net::asio::awaitable<bool> authenticate_client();
  net::asio::awaitable<bool> authenticate_scram(const auth::Secret* secret);
  net::asio::awaitable<bool> authenticate_md5(const auth::Secret* secret);
  /// Connects a server connection from the pool of `backend` (-1: the primary). A read routed
  /// to a standby whose pool cannot deliver falls back to the primary.
  net::asio::awaitable<std::optional<pool::AcquireError>> acquire_server(bool for_login,
                                                                         int backend = -1);
  /// Attaches an idle connection of `backend`'s pool (-1: the primary's) without waiting;
  /// false when acquire_server() must run (paused, no such node, nothing idle, dedicated).
  bool take_idle_server(int backend);
  /// Classification of the complete messages waiting in the client buffer (a transaction's
  /// start); `need_more` when the first message that decides is not complete yet.
  struct BatchClass {
    bool need_more = false;
    sql::QueryClass query;
    /// Offset in the client buffer of the batch's first message when it is a Query or Parse
    /// whose text the classifier found to be a plain SELECT (sql::QueryClass::plain_select);
    /// npos otherwise.
    std::size_t plain_query_at = std::string::npos;
    /// Extended-protocol messages after the last Sync (or Query): an implicit transaction the
    /// client has not closed yet, so a write may still join it.
    bool open_unit = false;
    /// A Flush inside that open unit: the client wants answers before it closes the unit.
    bool flush_in_open_unit = false;
  };
  /// An extended-protocol read waits for the Sync that closes its implicit transaction before it
  /// goes to a standby, up to this many waiting bytes (then it goes to the primary).
  static constexpr std::size_t kOpenUnitHoldBytes = 16 * 1024;
  /// A message waiting in the client buffer, as classify_batch(), batch_may_end_transaction()
  /// and answer_prepare_locally() walk them without consuming them.
  struct Waiting {
    enum State : std::uint8_t { kNone, kMalformed, kPartial, kWhole };
    State state = kNone;  ///< kNone: not even a whole header from here
    protocol::FrontendType type{};
    std::size_t total = 0;  ///< the whole message's bytes (kPartial, kWhole)
    protocol::Bytes body;   ///< kWhole only
  };
  [[nodiscard]] Waiting waiting_at(std::size_t pos) const;
  BatchClass classify_batch();
  /// Some message waiting in the client buffer may end the transaction (a word scan of its
  /// text, sql::may_end_transaction): false spares the classifier inside a transaction.
  [[nodiscard]] bool batch_may_end_transaction();
  /// Keeps the word scan of the Query or Parse at offset `at` of c2s_buffer_ for scan_of().
  void remember_scan(std::size_t at, sql::WordScan words);
  /// sql::scan_words(text) of `message` (in c2s_buffer_): the one remembered for it, if any.
  [[nodiscard]] sql::WordScan scan_of(protocol::Bytes message, std::string_view text) const;
  /// Picks the backend for the transaction that starts with the waiting messages.
  routing::Decision route_transaction(const sql::QueryClass& query);
  /// Queues pgrelay's read of the primary's WAL insert LSN (a kCommitLsn slot): behind the
  /// client's messages (watermark = "eager") or in front of them (lazy).
  void send_watermark_query();
  /// Puts the ParameterStatus pgrelay.commit_lsn still owed to the client ahead of the message
  /// about to be forwarded to it.
  void flush_pending_status();
  net::asio::awaitable<std::optional<std::string>> exchange(std::string_view sql);
  net::asio::awaitable<bool> pooled_login(const protocol::StartupMessage& startup);
  /// Transaction mode: logs the client in without a server connection when its pool remembers
  /// a login with the same startup parameters (`login_key`); false: take the normal path.
  net::asio::awaitable<bool> login_from_memory(const std::string& login_key);
  /// AuthenticationOk, the client's ParameterStatus, BackendKeyData, ReadyForQuery.
  net::asio::awaitable<bool> send_login_answer();
  /// Makes the pool of (`backend`, database, user) the session's current one.
  void use_pool(int backend, const cluster::NodeStatus& node, bool for_login);
  net::asio::awaitable<void> pooled_client_loop();
  net::asio::awaitable<void> server_reader_loop();
  net::asio::awaitable<void> server_reader(std::uint64_t attachment);
  net::asio::awaitable<void> end_pooled();
  /// The pooled client loop, then the end of the session or its parking.
  net::asio::awaitable<void> serve_pooled();
  void park();
  net::asio::awaitable<bool> answer_prepare_locally();
  void attach_started();
  void process_client_messages();
  bool handle_client_message(protocol::FrontendType type, protocol::Bytes message);
  /// `may_have_effects`: sql::scan_words() found words that can change session state.
  void handle_query(protocol::Bytes message, std::string_view sql, bool may_have_effects);
  void handle_parse(protocol::Bytes message);
  void ensure_prepared(const Statement& statement, bool sql);
  void append_param_sync();
  const std::string& state_key();
  void send_readback();
  bool process_server_messages();
  bool handle_server_message(protocol::BackendType type, protocol::Bytes body);
  void pop_slot();
  void discard_until_sync();
  void undo_slot(const Slot& slot);
  [[nodiscard]] bool releasable() const;
  void maybe_release();
  void detach(bool reusable);
  void add_passthrough(std::size_t begin, std::size_t length);
  /// The attached server connection failed (closed, reset, FATAL). When the session can go on
  /// (transaction pooling, not pinned, not inside a message or COPY), answers the client's
  /// pending messages in `s2c_extra_` as PostgreSQL would after an error, detaches, and returns
  /// true; otherwise sets the final error and returns false (the session ends).
  bool server_lost(std::string_view why);
  /// Gives up the attached server connection (a send failed, its node failed over): shuts it
  /// down so the server reader ends with server_lost(why).
  void abandon_server(std::string why);
  /// After server_lost(): answers the client's messages of the transaction that was lost
  /// (ROLLBACK, COMMIT, anything else) without a server, until the transaction is over.
  net::asio::awaitable<void> answer_lost_transaction();
  /// Moves what is left of the client buffer (an incomplete message) to its front.
  void compact_client_buffer() {
    if (c2s_begin_ == c2s_end_) {
      c2s_begin_ = c2s_end_ = 0;
    } else if (c2s_begin_ > 0) {
      std::copy(c2s_buffer_.begin() + static_cast<std::ptrdiff_t>(c2s_begin_),
                c2s_buffer_.begin() + static_cast<std::ptrdiff_t>(c2s_end_), c2s_buffer_.begin());
      c2s_end_ -= c2s_begin_;
      c2s_begin_ = 0;
    }
  }
  /// Ends the pending unit of the client's messages (marks the slot that ends it).
  void end_unit() {
    if (!slots_.empty()) slots_.back().may_commit = unit_may_commit_;
    unit_may_commit_ = false;
    extended_open_ = false;
  }
  void add_extra_start() { c2s_segments_.push_back({true, c2s_extra_.size(), 0}); }
  void add_extra_end() {
    c2s_segments_.back().length = c2s_extra_.size() - c2s_segments_.back().offset;
  }
  void push_slot(SlotKind kind, SlotPurpose purpose = SlotPurpose::kClient, std::uint64_t id = 0);

  auto client_read_some(net::asio::mutable_buffer buffer) {
    return tls_ ? tls_->async_read_some(buffer, net::kNoThrow)
                : client_.async_read_some(buffer, net::kNoThrow);
  }
  /// Login-phase reads: fills `buffer` from what an earlier read brought in beyond the message
  /// it was for, then from the socket with reads of up to kLoginReadSize bytes (a startup
  /// packet and an authentication answer usually arrive in one read each).
  net::asio::awaitable<std::tuple<net::error_code, std::size_t>> client_read_exact(
      net::asio::mutable_buffer buffer);
  /// Moves what login-phase reads brought in beyond the login into `out` (up to `capacity`
  /// bytes); the relay loops start with it.
  std::size_t take_login_leftover(std::uint8_t* out, std::size_t capacity);
  [[nodiscard]] bool has_login_leftover() const { return login_in_begin_ != login_in_end_; }
  net::asio::awaitable<std::tuple<net::error_code, std::size_t>> client_write(
      net::asio::const_buffer buffer);

  /// No query running, not inside a transaction, no half-sent extended-protocol batch.
  [[nodiscard]] bool idle() const {
    if (pooled_) {
      return slots_.empty() && server_status_ == protocol::TransactionStatus::kIdle &&
             c2s_begin_ == c2s_end_ && c2s_stream_left_ == 0 && !extended_open_;
    }
    return pending_syncs_ == 0 && !extended_open_ &&
           tx_status_ == protocol::TransactionStatus::kIdle && c2s_scanner_.at_boundary();
  }
  /// Ends both relay directions; run() then sends final_error_ (if any) and closes.
  void stop_relay(std::string_view reason);
  void set_final_error(std::string_view sqlstate, std::string message);

  Shared& shared_;
  WorkerSessions& worker_;
  std::shared_ptr<const config::Config> config_;
  const std::uint64_t id_;
  const std::chrono::steady_clock::time_point started_;

  net::tcp::socket client_;
  std::optional<net::TlsStream> tls_;
  static constexpr std::size_t kLoginReadSize = 512;
  std::array<std::uint8_t, kLoginReadSize> login_in_{};
  std::size_t login_in_begin_ = 0;
  std::size_t login_in_end_ = 0;
  net::tcp::socket server_;
  net::asio::steady_timer watchdog_;
  net::asio::steady_timer timer_;
  net::asio::steady_timer reader_signal_;  ///< wakes the pooled server reader on attach

  std::string peer_;
  std::string user_;
  std::string database_;
  std::string backend_name_;
  std::string backend_host_;
  std::uint16_t backend_port_ = 0;
  int backend_index_ = -1;  ///< index in the topology's nodes (the config's backend order)
  bool backend_counted_ = false;
  bool replication_ = false;

  bool counted_ = false;
  bool logged_in_ = false;
  bool timed_out_ = false;
  bool stopping_ = false;
  bool closing_ = false;
  bool s2c_writing_ = false;
  std::string_view close_reason_;
  std::optional<FinalError> final_error_;
  std::optional<protocol::BackendKeyData> client_key_;
  std::shared_ptr<CancelEntry> cancel_entry_;  ///< client_key_'s entry, set without the registry

  // Login phase.
  protocol::ByteVector startup_packet_;
  protocol::ByteVector out_;
  protocol::ByteVector login_buffer_;
  std::size_t login_begin_ = 0;
  std::size_t login_end_ = 0;

  // Relay phase.
  protocol::ByteVector c2s_buffer_;
  protocol::ByteVector s2c_buffer_;
  protocol::FrontendScanner c2s_scanner_;
  protocol::BackendScanner s2c_scanner_;
  protocol::TransactionStatus tx_status_ = protocol::TransactionStatus::kIdle;
  protocol::BackendType last_server_type_ = protocol::BackendType::kReadyForQuery;
  std::uint32_t pending_syncs_ = 0;
  std::chrono::steady_clock::time_point request_started_{};
  /// Extended-protocol messages since the last Sync (pass-through and pooled sessions): the
  /// server connection is not idle until the Sync.
  bool extended_open_ = false;

  // Pooled sessions.
  struct Segment {
    bool extra = false;  ///< from the extra buffer, else from the read buffer
    std::size_t offset = 0;
    std::size_t length = 0;
  };
  bool pooled_ = false;
  bool transaction_mode_ = false;
  bool pinned_ = false;
  bool server_skipping_ = false;  ///< the server skips extended messages until the next Sync
  bool c2s_writing_ = false;
  bool release_blocked_ = false;
  pool::Credential credential_;
  std::optional<auth::Secret> looked_up_secret_;  ///< from [auth] query
  pool::ServerPtr server_conn_;
  /// Session mode with read splitting: the session's own connections (one primary, one
  /// standby at most) wait here between transactions instead of going back to their pools.
  bool dedicated_ = false;
  struct Parked {
    pool::ServerPtr conn;
    pool::Pool* pool = nullptr;
  };
  std::vector<Parked> parked_;
  /// A parked connection to `backend`, attached as the current one; false when there is none.
  bool attach_parked(int backend);
  /// Makes `conn` the attached server connection (bookkeeping, cancel target).
  void attached(pool::ServerPtr conn);
  void release_parked(bool reusable);
  /// In session mode, the standby the session already holds, if it may serve this read.
  int parked_standby_for_read(const cluster::Topology& topology, std::uint64_t min_lsn) const;
  /// A lone plain BEGIN answered by pgrelay: sent ahead of the next messages once they tell
  /// where the transaction goes (SET TRANSACTION READ ONLY next makes it a read).
  std::string deferred_begin_;
  sql::QueryClass deferred_class_;
  /// Answers a lone plain BEGIN without a server; false when the batch is something else.
  net::asio::awaitable<bool> defer_begin(const sql::QueryClass& query);
  bool routed_read_ = false;  ///< the attached connection was chosen for a read
  /// The client loop waits (on timer_) for the server's answers to everything sent: messages
  /// pipelined behind a standby's read that are not reads themselves (wait_for_answers()).
  bool awaiting_answers_ = false;
  /// Whether the waiting messages, pipelined behind a read that a standby is answering, must
  /// wait for its answers (and the connection's release) before they are routed.
  bool must_wait_behind_read(const BatchClass& next) const;
  net::asio::awaitable<bool> wait_for_answers();
  void wake_answer_waiter();
  /// Some message of the client's still waits for its answer (pgrelay's own are left out).
  [[nodiscard]] bool client_answers_pending() const;
  bool may_write_ = false;      ///< attached to the primary for work that may write
  bool batch_ends_tx_ = false;  ///< the waiting messages may end the transaction
  std::uint64_t ryw_lsn_ = 0;   ///< read-your-writes watermark (0: none)
  /// The LSN of the client's last commit is not known: it may have written since the last
  /// watermark was read (watermark = "lazy"), or committed on a server that was lost before its
  /// commit LSN was read. Its reads go to the primary until a new watermark is read there.
  bool ryw_unknown_ = false;
  /// Batches sent that may write (watermark = "lazy"): a watermark read before the latest of
  /// them does not cover it.
  std::uint64_t ryw_writes_ = 0;
  /// [routing] watermark = "auto": the client read after a write (a read a standby could have
  /// served, had its watermark been known); its commit LSNs are read eagerly from then on.
  bool ryw_reader_ = false;
  /// Whether this client's commit LSNs are read behind its writes (else in front of its reads).
  [[nodiscard]] bool eager_watermark() const;
  pool::Pool* server_pool_ = nullptr;
  int server_pool_backend_ = -1;
  std::uint64_t attachment_ = 0;  ///< increments on every attach and detach
  protocol::TransactionStatus server_status_ = protocol::TransactionStatus::kIdle;
  /// FIFO of the slots: a vector read from `head`, reset when it drains, so steady traffic
  /// reuses its storage instead of allocating as std::deque does when it crosses a block.
  class SlotQueue {
   public:
    void push_back(Slot&& slot) { items_.push_back(std::move(slot)); }
    /// A default slot at the back, built in place (no temporary to move from and destroy).
    Slot& emplace_back() { return items_.emplace_back(); }
    void pop_front() {
      ++head_;
      if (head_ == items_.size()) {
        clear();
      } else if (head_ >= 64 && head_ * 2 >= items_.size()) {
        // A client that never lets the queue drain (pipelining): drop the consumed front.
        items_.erase(items_.begin(), items_.begin() + static_cast<std::ptrdiff_t>(head_));
        head_ = 0;
      }
    }
    [[nodiscard]] Slot& front() { return items_[head_]; }
    [[nodiscard]] Slot& back() { return items_.back(); }
    [[nodiscard]] const Slot& back() const { return items_.back(); }
    [[nodiscard]] bool empty() const { return head_ == items_.size(); }
    [[nodiscard]] std::size_t size() const { return items_.size() - head_; }
    void clear() {
      items_.clear();
      head_ = 0;
    }
    [[nodiscard]] auto begin() { return items_.begin() + static_cast<std::ptrdiff_t>(head_); }
    [[nodiscard]] auto end() { return items_.end(); }
    [[nodiscard]] auto begin() const { return items_.begin() + static_cast<std::ptrdiff_t>(head_); }
    [[nodiscard]] auto end() const { return items_.end(); }

   private:
    std::vector<Slot> items_;
    std::size_t head_ = 0;
  };
  SlotQueue slots_;
  pool::ParamList client_reported_;  ///< GUC_REPORT parameters as the client was told them
  pool::ParamList client_set_;       ///< other parameters in effect for the client
  std::uint64_t params_version_ = 1;
  std::uint64_t state_key_version_ = 0;
  /// What routing looks up in the client's parameters for every transaction, read again from
  /// the lists only when params_version_ moves (it does on every change to them after login).
  struct ParamFacts {
    std::uint64_t version = 0;  ///< params_version_ these were read at (0: never)
    bool standard_conforming_strings = sql::LexerOptions{}.standard_conforming_strings;
    bool default_read_only = false;  ///< default_transaction_read_only = on
    std::uint64_t min_lsn = 0;       ///< SET pgrelay.min_lsn, 0 when unset or not an LSN
  };
  const ParamFacts& param_facts();
  ParamFacts param_facts_;
  std::string state_key_;  ///< the client's parameters as one comparable string
  std::vector<std::string> readback_;
  StatementMap statements_;      ///< protocol-level named statements
  StatementMap sql_statements_;  ///< SQL PREPARE names
  std::size_t c2s_begin_ = 0;
  std::size_t c2s_end_ = 0;
  std::size_t c2s_stream_left_ = 0;
  /// While process_client_messages() runs: the word scans (sql::scan_words) of Query and Parse
  /// texts in c2s_buffer_ made before it, by offset, so that it does not scan them again. A
  /// plain SELECT found by routing (BatchClass::plain_query_at) counts as scanned, with nothing
  /// found.
  struct ScannedText {
    std::size_t at = 0;
    sql::WordScan words;
  };
  std::array<ScannedText, 4> scanned_{};
  std::size_t scanned_count_ = 0;
  protocol::ByteVector c2s_extra_;
  std::vector<Segment> c2s_segments_;
  std::vector<net::asio::const_buffer> c2s_iov_;
  std::size_t s2c_begin_ = 0;
  std::size_t s2c_end_ = 0;
  std::size_t s2c_stream_left_ = 0;
  bool s2c_stream_forward_ = true;
  protocol::ByteVector s2c_extra_;
  std::vector<Segment> s2c_segments_;
  std::vector<net::asio::const_buffer> s2c_iov_;
  bool client_terminated_ = false;

  // Server loss (proxy/session/lost.cpp).
  enum class LostTx : std::uint8_t {
    kNone,
    kOwed,    ///< the transaction's server is gone and the client has not been told yet
    kFailed,  ///< the client was told (status E): pgrelay answers until ROLLBACK or COMMIT
  };
  LostTx lost_tx_ = LostTx::kNone;
  bool lost_skipping_ = false;  ///< extended protocol: skip the client's messages to Sync
  sql::TxControl lost_unnamed_ = sql::TxControl::kOther;  ///< unnamed statement, while lost
  sql::TxControl lost_portal_ = sql::TxControl::kOther;   ///< unnamed portal, while lost
  std::string lost_why_;             ///< why the server was lost (for the client's error)
  std::string server_fatal_;         ///< a FATAL the server sent before closing
  bool unit_may_commit_ = false;     ///< the client's unit being read may commit
  bool unnamed_may_commit_ = false;  ///< the unnamed statement's text may commit
  /// The unnamed statement's text is DEALLOCATE ALL or DISCARD ALL.
  bool unnamed_deallocates_all_ = false;
  /// A text in the batch being sent mentions COPY: it may put the server in copy-in mode, where
  /// a query of pgrelay's behind it would break the COPY.
  bool batch_may_copy_ = false;
  /// A COPY may be running: no commit-LSN query until the client's CopyDone or CopyFail (or the
  /// COPY statement's ReadyForQuery).
  bool copy_in_progress_ = false;
  bool tx_read_intent_ = false;  ///< this attachment was routed for read-only work
  bool counted_active_ = false;  ///< counted in Shared::active_transactions
  /// The deferred BEGIN went ahead on this connection and its ReadyForQuery has not come yet:
  /// the server is inside a block although server_status_ still says idle.
  bool block_opened_ahead_ = false;
  /// A commit watermark read since the client's last answer, not told to it yet.
  std::uint64_t pending_commit_lsn_ = 0;
  /// Waiting for the client to send: for readability with nothing buffered (idle_waiting_) or
  /// in a read (client_reading_), idle since idle_since_ (the wait's start or the server
  /// connection's release, whichever is later). parkable_since() looks at these.
  bool idle_waiting_ = false;
  bool client_reading_ = false;
  bool parking_ = false;
  bool client_v6_ = false;  ///< the client's address family (a parked socket needs it back)
  std::chrono::steady_clock::time_point idle_since_{};
  void count_active(bool active) {
    if (active == counted_active_) return;
    counted_active_ = active;
    shared_.active_transactions.fetch_add(active ? 1 : -1, std::memory_order_acq_rel);
  }
  /// Marks the session pinned to its server connection.
  void pin(sql::PinReason reason);
  /// Issues the client's cancel key, pointed at `target`.
  void register_cancel(CancelTarget target) {
    auto added = shared_.cancels.add(std::move(target));
    client_key_ = added.key;
    cancel_entry_ = std::move(added.entry);
  }
  /// Waits while the server is paused; false when the session is closing meanwhile.
  net::asio::awaitable<bool> wait_while_paused();
};

}  // namespace pgrelay::session
