// A pooled session whose server connection fails mid-transaction: the client gets an error, not a
// closed connection, and pgrelay answers the rest of the lost transaction itself.
//
// Which SQLSTATE: 40001 (serialization_failure) when pgrelay knows nothing was committed: the
// connection was inside a transaction block and none of the messages in flight could commit it
// (no COMMIT, END or PREPARE in their text), or the transaction was routed as read-only. Drivers,
// ORMs and pgbench --max-tries retry a transaction on 40001, and that is safe here. 08006
// (connection_failure) when a commit may have been in flight (a COMMIT, or an autocommit
// statement that may write): the outcome is unknown, as it is for a direct client whose
// connection drops during COMMIT, and a blind retry could apply the work twice.
#include <spdlog/spdlog.h>

#include <algorithm>
#include <string>

#include "pgrelay/protocol/sqlstate.hpp"
#include "pgrelay/session/session.hpp"

namespace pgrelay::session {

namespace asio = net::asio;
using net::asio::awaitable;
using protocol::BackendType;
using protocol::FrontendType;
using protocol::TransactionStatus;
namespace sqlstate = protocol::sqlstate;

namespace {

constexpr std::string_view kTransactionRollback = "40001";
constexpr std::string_view kInFailedTransaction = "25P02";
constexpr std::string_view kAbortedMessage =
    "current transaction is aborted, commands ignored until end of transaction block";

}  // namespace

void Session::abandon_server(std::string why) {
  if (!server_conn_) return;
  if (lost_why_.empty()) lost_why_ = std::move(why);
  net::error_code ignored;
  server_conn_->socket.shutdown(net::tcp::socket::shutdown_both, ignored);
  server_conn_->socket.cancel(ignored);
}

bool Session::server_lost(std::string_view why) {
  s2c_extra_.clear();
  const bool in_copy = last_server_type_ == BackendType::kCopyInResponse ||
                       last_server_type_ == BackendType::kCopyOutResponse ||
                       last_server_type_ == BackendType::kCopyBothResponse ||
                       last_server_type_ == BackendType::kCopyData;
  const bool recoverable = pooled_ && transaction_mode_ && !pinned_ && !closing_ &&
                           s2c_stream_left_ == 0 && c2s_stream_left_ == 0 && !in_copy;
  const std::string backend = backend_name_;
  if (!recoverable) {
    if (!server_fatal_.empty() || last_server_type_ != BackendType::kErrorResponse ||
        s2c_begin_ != s2c_end_) {
      set_final_error(sqlstate::kConnectionFailure,
                      "lost the connection to backend \"" + backend + "\": " + std::string(why));
    }
    lost_why_.clear();
    server_fatal_.clear();
    return false;
  }

  bool pending = false;
  bool may_commit = false;
  for (const auto& slot : slots_) {
    if (slot.purpose == SlotPurpose::kCommitLsn) ryw_unknown_ = true;
    if (slot.internal()) continue;
    pending = true;
    may_commit = may_commit || slot.may_commit;
  }
  const bool in_block = server_status_ != TransactionStatus::kIdle || block_opened_ahead_;
  // Nothing could have committed: see the top of this file.
  const bool certain = in_block ? !may_commit : (routed_read_ || tx_read_intent_);
  // A commit whose LSN pgrelay will not learn: read-your-writes must not trust the standbys.
  if (!certain || may_write_) ryw_unknown_ = true;
  const std::string_view code = certain ? kTransactionRollback : sqlstate::kConnectionFailure;
  const std::string message =
      certain ? "the transaction was aborted: pgrelay lost its connection to backend \"" + backend +
                    "\""
              : "pgrelay lost its connection to backend \"" + backend +
                    "\" while the transaction may have been committing: it may or may not "
                    "have committed";
  const std::string detail =
      std::string(why) + (certain ? ". Nothing of the transaction was committed; retry it." : ".");
  // Inside a block the client's transaction is now failed (status E) until it rolls back.
  const bool failed = in_block && certain;
  const auto status = failed ? TransactionStatus::kFailed : TransactionStatus::kIdle;

  if (!pending) {
    // Nothing asked: an idle-in-transaction client learns it with its next message.
    if (in_block) lost_tx_ = LostTx::kOwed;
  } else {
    bool first = true;
    bool unit_errored = server_skipping_;
    const auto error = [&] {
      if (first || !failed) {
        protocol::append_error_response(s2c_extra_, protocol::Severity::kError, code, message,
                                        detail);
      } else {
        protocol::append_error_response(s2c_extra_, protocol::Severity::kError,
                                        kInFailedTransaction, kAbortedMessage);
      }
      first = false;
    };
    for (const auto& slot : slots_) {
      if (slot.internal()) continue;
      switch (slot.kind) {
        case SlotKind::kQuery:
        case SlotKind::kFunctionCall:
          if (slot.errored) {
            first = false;  // its own error is with the client already
          } else {
            error();
          }
          protocol::append_ready_for_query(s2c_extra_, status);
          unit_errored = false;
          break;
        case SlotKind::kSync:
          if (!unit_errored) error();
          protocol::append_ready_for_query(s2c_extra_, status);
          unit_errored = false;
          break;
        default:
          if (!unit_errored) error();
          unit_errored = true;
          break;
      }
    }
    // An extended-protocol batch without its Sync yet: skip the rest of it up to the Sync.
    lost_skipping_ = unit_errored;
    lost_tx_ = failed ? LostTx::kFailed : LostTx::kNone;
    tx_status_ = status;
  }
  worker_.counters->transactions_lost_total.fetch_add(1, std::memory_order_relaxed);
  spdlog::info("c{}: lost backend {} {}: {}", id_, backend,
               !pending  ? (in_block ? "while idle in a transaction" : "while idle")
               : certain ? "during a transaction (told the client 40001)"
                         : "while a commit may have been in flight (told the client 08006)",
               why);
  lost_why_.clear();
  server_fatal_.clear();
  lost_unnamed_ = sql::TxControl::kOther;
  lost_portal_ = sql::TxControl::kOther;
  server_skipping_ = false;
  detach(false);
  server_status_ = TransactionStatus::kIdle;
  return true;
}

awaitable<void> Session::answer_lost_transaction() {
  // The messages of a transaction whose server is gone, answered as a PostgreSQL server answers
  // them in a failed transaction: ROLLBACK (and COMMIT, which rolls back) end it, anything else
  // gets 25P02. A client that was not told yet (kOwed) gets the 40001 first.
  const auto& why_message =
      "the transaction was aborted: pgrelay lost its connection to its "
      "backend";
  out_.clear();
  const std::uint32_t max_length = config_->limits.max_message_bytes;
  const auto fail = [&](std::string_view code, std::string_view text) {
    protocol::append_error_response(out_, protocol::Severity::kError, code, text,
                                    code == kTransactionRollback
                                        ? "Nothing of the transaction was committed; retry it."
                                        : std::string_view{});
  };
  // Answers one statement of the lost transaction (simple Query, or an Execute).
  const auto answer = [&](sql::TxControl control, bool extended) {
    const bool owed = lost_tx_ == LostTx::kOwed;
    if (control == sql::TxControl::kRollback || (control == sql::TxControl::kCommit && !owed)) {
      // COMMIT of a failed transaction rolls back (PostgreSQL answers "ROLLBACK" too).
      protocol::append_command_complete(out_, "ROLLBACK");
      lost_tx_ = LostTx::kNone;
      return;
    }
    if (control == sql::TxControl::kCommit) {
      // The client asks to commit work that was lost without telling it yet.
      fail(kTransactionRollback, why_message);
      lost_tx_ = LostTx::kNone;
    } else if (owed) {
      fail(kTransactionRollback, why_message);
      lost_tx_ = LostTx::kFailed;
    } else {
      fail(kInFailedTransaction, kAbortedMessage);
    }
    if (extended) lost_skipping_ = true;
  };
  const auto status = [&] {
    return lost_tx_ == LostTx::kNone ? TransactionStatus::kIdle : TransactionStatus::kFailed;
  };
  while (lost_tx_ != LostTx::kNone || lost_skipping_) {
    const std::size_t available = c2s_end_ - c2s_begin_;
    if (available < protocol::kHeaderLength) break;
    const auto* start = c2s_buffer_.data() + c2s_begin_;
    const auto type = static_cast<FrontendType>(start[0]);
    const std::uint32_t length = protocol::read_u32(start + 1);
    if (!protocol::check_header(length, max_length).empty() || !protocol::is_known(type)) {
      set_final_error(sqlstate::kProtocolViolation, "invalid frontend message");
      worker_.counters->protocol_errors_total.fetch_add(1, std::memory_order_relaxed);
      stop_relay("protocol violation by the client");
      co_return;
    }
    const std::size_t total = std::size_t{length} + 1;
    if (available < total) break;  // the loop grows the buffer and reads the rest
    const protocol::Bytes body(start + protocol::kHeaderLength, total - protocol::kHeaderLength);
    c2s_begin_ += total;
    if (type == FrontendType::kTerminate) {
      client_terminated_ = true;
      break;
    }
    if (type == FrontendType::kSync) {
      lost_skipping_ = false;
      lost_portal_ = sql::TxControl::kOther;
      tx_status_ = status();
      protocol::append_ready_for_query(out_, tx_status_);
      continue;
    }
    if (lost_skipping_) continue;
    switch (type) {
      case FrontendType::kQuery: {
        const auto text = protocol::parse_query(body);
        answer(text ? sql::transaction_control(*text) : sql::TxControl::kOther, false);
        tx_status_ = status();
        protocol::append_ready_for_query(out_, tx_status_);
        break;
      }
      case FrontendType::kParse: {
        // PostgreSQL parses ROLLBACK and COMMIT in a failed transaction, nothing else.
        const auto parse = protocol::parse_parse(body);
        const auto control =
            parse ? sql::transaction_control(parse->query) : sql::TxControl::kOther;
        if (parse && parse->statement.empty() && control != sql::TxControl::kOther) {
          lost_unnamed_ = control;
          protocol::append_empty_message(out_, '1');  // ParseComplete
        } else {
          answer(sql::TxControl::kOther, true);
        }
        break;
      }
      case FrontendType::kBind: {
        const auto bind = protocol::parse_bind_prefix(body);
        sql::TxControl control = sql::TxControl::kOther;
        if (bind && bind->portal.empty()) {
          if (bind->statement.empty()) {
            control = lost_unnamed_;
          } else if (const auto it = statements_.find(std::string(bind->statement));
                     it != statements_.end()) {
            control = sql::transaction_control(it->second->query);
          }
        }
        if (control != sql::TxControl::kOther) {
          lost_portal_ = control;
          protocol::append_empty_message(out_, '2');  // BindComplete
        } else {
          answer(sql::TxControl::kOther, true);
        }
        break;
      }
      case FrontendType::kDescribe:
        if (lost_portal_ != sql::TxControl::kOther || lost_unnamed_ != sql::TxControl::kOther) {
          const auto target = protocol::parse_target(body);
          if (target && target->kind == 'S') {
            protocol::ByteVector& out = out_;
            const auto at = protocol::begin_message(out, 't');  // ParameterDescription
            out.push_back(0);
            out.push_back(0);
            protocol::end_message(out, at);
          }
          protocol::append_empty_message(out_, 'n');  // NoData
        } else {
          answer(sql::TxControl::kOther, true);
        }
        break;
      case FrontendType::kExecute:
        answer(lost_portal_, true);
        lost_portal_ = sql::TxControl::kOther;
        break;
      case FrontendType::kClose: {
        const auto target = protocol::parse_target(body);
        if (target && target->kind == 'S' && !target->name.empty()) {
          statements_.erase(std::string(target->name));
        }
        protocol::append_empty_message(out_, '3');  // CloseComplete
        break;
      }
      case FrontendType::kFunctionCall:
        answer(sql::TxControl::kOther, false);
        tx_status_ = status();
        protocol::append_ready_for_query(out_, tx_status_);
        break;
      default:
        break;  // Flush; CopyData, CopyDone and CopyFail outside COPY are ignored
    }
  }
  compact_client_buffer();  // what was not answered stays, at the front
  // The server reader may still be writing the answer to the messages in flight.
  while (s2c_writing_ && !closing_) {
    timer_.expires_after(std::chrono::milliseconds(1));
    co_await timer_.async_wait(net::kNoThrow);
  }
  if (!out_.empty() && !closing_) {
    auto [ec, n] = co_await client_write(asio::buffer(out_));
    if (ec) stop_relay("client disconnected");
  }
  if (client_terminated_ && !closing_) stop_relay("client closed");
}

}  // namespace pgrelay::session

namespace pgrelay::session {

void Session::abort_transaction(const std::string& why) {
  if (!pooled_ || !server_conn_ || closing_ || !counted_active_) return;
  abandon_server(why);
}

}  // namespace pgrelay::session
