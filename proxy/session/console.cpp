// The admin console: a client that logs in to the virtual database "pgrelay" as one of
// [auth] admin_users talks to pgrelay itself (PAUSE, RESUME, SWITCHOVER, SHOW), as PgBouncer
// users do with its "pgbouncer" database. Simple queries only.
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cctype>
#include <string>
#include <vector>

#include "pgrelay/protocol/sqlstate.hpp"
#include "pgrelay/session/session.hpp"

namespace pgrelay::session {

namespace asio = net::asio;
using net::asio::awaitable;
using protocol::FrontendType;
using protocol::TransactionStatus;
namespace sqlstate = protocol::sqlstate;

namespace {

constexpr std::string_view kHelp =
    "admin console commands: PAUSE, RESUME, SWITCHOVER node [timeout_ms], SHOW TOPOLOGY, "
    "SHOW STATE";

void append_u16(protocol::ByteVector& out, std::uint16_t v) {
  out.push_back(static_cast<std::uint8_t>(v >> 8));
  out.push_back(static_cast<std::uint8_t>(v));
}

void append_u32(protocol::ByteVector& out, std::uint32_t v) {
  for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<std::uint8_t>(v >> shift));
}

/// RowDescription of text columns.
void append_columns(protocol::ByteVector& out, const std::vector<std::string_view>& names) {
  const auto at = protocol::begin_message(out, 'T');
  append_u16(out, static_cast<std::uint16_t>(names.size()));
  for (const auto name : names) {
    out.insert(out.end(), name.begin(), name.end());
    out.push_back(0);
    append_u32(out, 0);   // table
    append_u16(out, 0);   // column
    append_u32(out, 25);  // text
    append_u16(out, 0xffff);
    append_u32(out, 0xffffffff);
    append_u16(out, 0);  // text format
  }
  protocol::end_message(out, at);
}

void append_row(protocol::ByteVector& out, const std::vector<std::string>& values) {
  const auto at = protocol::begin_message(out, 'D');
  append_u16(out, static_cast<std::uint16_t>(values.size()));
  for (const auto& value : values) {
    append_u32(out, static_cast<std::uint32_t>(value.size()));
    out.insert(out.end(), value.begin(), value.end());
  }
  protocol::end_message(out, at);
}

std::vector<std::string> words_of(std::string_view sql) {
  std::vector<std::string> words;
  std::string word;
  for (const char c : sql) {
    if (std::isspace(static_cast<unsigned char>(c)) != 0 || c == ';') {
      if (!word.empty()) words.push_back(std::move(word));
      word.clear();
    } else {
      word.push_back(c);
    }
  }
  if (!word.empty()) words.push_back(std::move(word));
  return words;
}

std::string lower(std::string text) {
  for (auto& c : text) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return text;
}

/// Runs an operator action on the control thread (arguments by value: the coroutine owns them).
awaitable<ControlResult> run_control(ControlFn control, std::string action, std::string query) {
  co_return control(action, query);
}

}  // namespace

awaitable<void> Session::run_console() {
  const auto& admins = config_->auth.admin_users;
  if (std::find(admins.begin(), admins.end(), user_) == admins.end() || !shared_.control) {
    co_await send_fatal(sqlstate::kInvalidAuthorizationSpecification,
                        "user \"" + user_ + "\" may not use the admin console",
                        "Only [auth] admin_users may connect to database \"pgrelay\".");
    co_return;
  }
  logged_in_ = true;
  spdlog::info("c{}: admin console login user={} from {}", id_, user_, peer_);
  out_.clear();
  protocol::append_authentication(out_, protocol::AuthCode::kOk);
  protocol::append_parameter_status(out_, "server_version", "15.0 (pgrelay admin console)");
  protocol::append_parameter_status(out_, "server_encoding", "UTF8");
  protocol::append_parameter_status(out_, "client_encoding", "UTF8");
  protocol::append_parameter_status(out_, "DateStyle", "ISO, MDY");
  protocol::append_parameter_status(out_, "integer_datetimes", "on");
  protocol::append_parameter_status(out_, "standard_conforming_strings", "on");
  protocol::append_ready_for_query(out_, TransactionStatus::kIdle);
  if (auto [ec, n] = co_await client_write(asio::buffer(out_)); ec) co_return;

  protocol::ByteVector in(8192);
  std::size_t begin = 0;
  std::size_t end = take_login_leftover(in.data(), in.size());
  bool skipping = false;  // after an extended-protocol message, until Sync
  while (!closing_) {
    out_.clear();
    while (end - begin >= protocol::kHeaderLength) {
      const auto type = static_cast<FrontendType>(in[begin]);
      const std::uint32_t length = protocol::read_u32(in.data() + begin + 1);
      if (!protocol::check_header(length, 1U << 20).empty() || !protocol::is_known(type)) {
        co_await send_fatal(sqlstate::kProtocolViolation, "invalid frontend message");
        co_return;
      }
      const std::size_t total = std::size_t{length} + 1;
      if (end - begin < total) {
        if (total > in.size()) in.resize(total);
        break;
      }
      const protocol::Bytes body(in.data() + begin + protocol::kHeaderLength,
                                 total - protocol::kHeaderLength);
      begin += total;
      if (type == FrontendType::kTerminate) {
        close_reason_ = "client closed";
        co_return;
      }
      if (type == FrontendType::kSync) {
        skipping = false;
        protocol::append_ready_for_query(out_, TransactionStatus::kIdle);
        continue;
      }
      if (type != FrontendType::kQuery) {
        if (!skipping && type != FrontendType::kFlush) {
          protocol::append_error_response(out_, protocol::Severity::kError,
                                          sqlstate::kFeatureNotSupported,
                                          "the admin console takes simple queries only");
          skipping = true;
        }
        continue;
      }
      const auto sql = protocol::parse_query(body);
      co_await console_command(sql ? *sql : std::string_view{});
      protocol::append_ready_for_query(out_, TransactionStatus::kIdle);
    }
    if (!out_.empty()) {
      if (auto [ec, n] = co_await client_write(asio::buffer(out_)); ec) co_return;
    }
    if (begin > 0) {
      std::copy(in.begin() + static_cast<std::ptrdiff_t>(begin),
                in.begin() + static_cast<std::ptrdiff_t>(end), in.begin());
      end -= begin;
      begin = 0;
    }
    auto [ec, n] = co_await client_read_some(asio::buffer(in.data() + end, in.size() - end));
    if (ec) co_return;
    end += n;
  }
}

awaitable<void> Session::console_command(std::string_view sql) {
  const auto words = words_of(sql);
  const std::string verb = words.empty() ? "" : lower(words[0]);
  const auto error = [&](std::string_view code, std::string_view message) {
    protocol::append_error_response(out_, protocol::Severity::kError, code, message);
  };
  const auto control = [&](std::string action, std::string query) -> awaitable<ControlResult> {
    co_return co_await asio::co_spawn(
        *shared_.control_pool, run_control(shared_.control, std::move(action), std::move(query)),
        asio::use_awaitable);
  };
  if (words.empty()) {
    protocol::append_empty_message(out_, 'I');  // EmptyQueryResponse
  } else if (words.size() == 1 && (verb == "pause" || verb == "resume")) {
    spdlog::warn("c{}: admin console: {} by {}", id_, verb, user_);
    co_await control(verb, "");
    protocol::append_command_complete(out_, verb == "pause" ? "PAUSE" : "RESUME");
  } else if (verb == "switchover" && (words.size() == 2 || words.size() == 3)) {
    spdlog::warn("c{}: admin console: switchover to {} by {}", id_, words[1], user_);
    std::string query = "to=" + words[1];
    if (words.size() == 3) query += "&timeout_ms=" + words[2];
    const auto result = co_await control("switchover", query);
    if (result.status == 200) {
      append_columns(out_, {"result"});
      append_row(out_, {result.json});
      protocol::append_command_complete(out_, "SWITCHOVER");
    } else {
      error(result.status == 503 ? sqlstate::kCannotConnectNow : std::string_view("55000"),
            "switchover failed: " + result.error);
    }
  } else if (words.size() == 2 && verb == "show" && lower(words[1]) == "topology") {
    const auto topology = shared_.monitor->topology();
    append_columns(
        out_, {"name", "host", "port", "role", "timeline", "lsn", "replay_lag_bytes", "eligible"});
    for (const auto& node : topology->nodes) {
      append_row(out_, {node.name, node.host, std::to_string(node.port),
                        std::string(cluster::to_string(node.role)), std::to_string(node.timeline),
                        cluster::format_lsn(node.in_recovery ? node.replay_lsn : node.current_lsn),
                        std::to_string(node.replay_lag_bytes), node.eligible ? "t" : "f"});
    }
    protocol::append_command_complete(out_, "SHOW " + std::to_string(topology->nodes.size()));
  } else if (words.size() == 2 && verb == "show" && lower(words[1]) == "state") {
    append_columns(out_, {"paused", "running_transactions", "clients"});
    append_row(out_, {shared_.paused.load() ? "t" : "f",
                      std::to_string(shared_.active_transactions.load()),
                      std::to_string(shared_.stats->client_connections.load())});
    protocol::append_command_complete(out_, "SHOW 1");
  } else {
    error("42601", "unknown admin console command: " + std::string(kHelp));
  }
}

}  // namespace pgrelay::session
