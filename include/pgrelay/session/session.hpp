// One client connection: startup, TLS, login pass-through, relaying, cancel, graceful stop.
#pragma once

#include <atomic>
#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <unordered_set>

#include "pgrelay/cluster/monitor.hpp"
#include "pgrelay/config/config.hpp"
#include "pgrelay/net/asio.hpp"
#include "pgrelay/net/tls.hpp"
#include "pgrelay/protocol/frame.hpp"
#include "pgrelay/protocol/startup.hpp"
#include "pgrelay/session/cancel_registry.hpp"
#include "pgrelay/stats/stats.hpp"

namespace pgrelay::session {

/// What every session of the process shares. Set up before the workers start.
struct Shared {
  std::atomic<std::shared_ptr<const config::Config>> config;
  std::shared_ptr<net::asio::ssl::context> tls;  ///< null without [tls]
  cluster::Monitor* monitor = nullptr;
  stats::Stats* stats = nullptr;
  CancelRegistry cancels;
  std::atomic<std::uint64_t> next_id{1};
};

class Session;

/// The sessions of one worker; touched only on that worker's thread.
struct WorkerSessions {
  std::unordered_set<Session*> sessions;
  stats::WorkerCounters* counters = nullptr;
  bool stopping = false;
};

class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(Shared& shared, WorkerSessions& worker, net::tcp::socket socket);
  ~Session();
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  /// Runs the session on the socket's executor until it ends.
  static void start(const std::shared_ptr<Session>& session);

  /// Graceful stop: an idle client is told the server is shutting down and closed at once; a
  /// client inside a transaction (or with a query running) is closed when it becomes idle.
  void request_stop();
  /// Closes now, whatever the client is doing (shutdown deadline).
  void force_close();
  /// Called after the topology changed: a session whose server is no longer the primary (another
  /// node was promoted, or its node was fenced or demoted) gets FATAL 57P01 and is closed.
  void topology_changed(const cluster::Topology& topology);

 private:
  struct FinalError {
    std::string_view sqlstate;
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

  auto client_read_some(net::asio::mutable_buffer buffer) {
    return tls_ ? tls_->async_read_some(buffer, net::kNoThrow)
                : client_.async_read_some(buffer, net::kNoThrow);
  }
  auto client_read_exact(net::asio::mutable_buffer buffer) {
    return tls_ ? net::asio::async_read(*tls_, buffer, net::kNoThrow)
                : net::asio::async_read(client_, buffer, net::kNoThrow);
  }
  auto client_write(net::asio::const_buffer buffer) {
    return tls_ ? net::asio::async_write(*tls_, buffer, net::kNoThrow)
                : net::asio::async_write(client_, buffer, net::kNoThrow);
  }

  /// No query running, not inside a transaction, no half-sent extended-protocol batch.
  [[nodiscard]] bool idle() const {
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
  net::tcp::socket server_;
  net::asio::steady_timer watchdog_;
  net::asio::steady_timer timer_;

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
  bool extended_open_ = false;
};

}  // namespace pgrelay::session
