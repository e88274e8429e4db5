// The chaos suite's load: TPC-B plus a ledger insert per transaction, and a read-your-writes check
// after every commit. Statements run with libpq's asynchronous calls so that none can hang a
// client past its deadline.
#include "load.hpp"

#include <poll.h>

#include <algorithm>
#include <cstring>
#include <utility>

namespace pgrelay::chaos {

namespace {

/// How one statement ended.
struct Outcome {
  enum class Kind { kOk, kError, kLost, kTimeout };
  Kind kind = Kind::kOk;
  std::string sqlstate;  ///< of the first error ("" for errors libpq made up)
  std::string severity;  ///< ERROR, FATAL, ...
  std::string message;
  std::string command_status;
  std::vector<std::string> first_row;
};

/// Waits until the connection's socket is ready for `events` or `deadline` passes.
bool wait_socket(PGconn* conn, short events, Clock::time_point deadline) {
  const auto left =
      std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
  if (left <= 0) return false;
  pollfd p{PQsocket(conn), events, 0};
  return ::poll(&p, 1, static_cast<int>(std::min<long long>(left, 1000000))) > 0;
}

void take_result(PGresult* res, Outcome& out) {
  const auto status = PQresultStatus(res);
  if (status == PGRES_FATAL_ERROR || status == PGRES_NONFATAL_ERROR) {
    if (out.kind != Outcome::Kind::kOk) return;  // the first error says what happened
    out.kind = Outcome::Kind::kError;
    const char* state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    const char* severity = PQresultErrorField(res, PG_DIAG_SEVERITY_NONLOCALIZED);
    const char* message = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
    out.sqlstate = state != nullptr ? state : "";
    out.severity = severity != nullptr ? severity : "";
    out.message = message != nullptr ? message : PQresultErrorMessage(res);
    return;
  }
  if (status == PGRES_TUPLES_OK && PQntuples(res) > 0) {
    out.first_row.clear();
    for (int col = 0; col < PQnfields(res); ++col)
      out.first_row.emplace_back(PQgetvalue(res, 0, col));
  }
  if (status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK)
    out.command_status = PQcmdStatus(res);
}

/// Runs one statement (simple protocol) and collects its results, giving up at `deadline`.
Outcome exec(PGconn* conn, const std::string& sql, Clock::time_point deadline) {
  Outcome out;
  if (PQsendQuery(conn, sql.c_str()) == 0) {
    out.kind = Outcome::Kind::kLost;
    out.message = PQerrorMessage(conn);
    return out;
  }
  while (true) {
    const int flushed = PQflush(conn);
    if (flushed == 0) break;
    if (flushed < 0 || !wait_socket(conn, POLLOUT | POLLIN, deadline)) {
      out.kind = flushed < 0 ? Outcome::Kind::kLost : Outcome::Kind::kTimeout;
      out.message = flushed < 0 ? PQerrorMessage(conn) : "statement timed out while sending";
      return out;
    }
    if (PQconsumeInput(conn) == 0) break;  // the results below carry the error
  }
  while (true) {
    while (PQisBusy(conn) != 0) {
      if (!wait_socket(conn, POLLIN, deadline)) {
        out.kind = Outcome::Kind::kTimeout;
        out.message = "no answer within the statement timeout";
        return out;
      }
      if (PQconsumeInput(conn) == 0) break;
    }
    PGresult* res = PQgetResult(conn);
    if (res == nullptr) break;
    take_result(res, out);
    PQclear(res);
    if (PQstatus(conn) == CONNECTION_BAD) {
      // libpq hands out the error once more and then nothing; drain without blocking.
      for (int i = 0; i < 4 && (res = PQgetResult(conn)) != nullptr; ++i) PQclear(res);
      break;
    }
  }
  if (PQstatus(conn) == CONNECTION_BAD) {
    if (out.kind == Outcome::Kind::kOk) out.message = PQerrorMessage(conn);
    // A server's FATAL before the close keeps its SQLSTATE; the connection is gone either way.
    if (out.kind != Outcome::Kind::kError || out.sqlstate.empty()) out.kind = Outcome::Kind::kLost;
  }
  return out;
}

std::string error_key(const std::string& step, const Outcome& out) {
  switch (out.kind) {
    case Outcome::Kind::kTimeout:
      return step + ":timeout";
    case Outcome::Kind::kLost:
      return step + ":connection-lost";
    default:
      return step + ":" + (out.sqlstate.empty() ? std::string("client") : out.sqlstate);
  }
}

// Servers' notices (a WARNING before an immediate shutdown, relayed by pgrelay) are expected here
// and would only clutter the output.
void ignore_notice(void* /*arg*/, const PGresult* /*res*/) {}

void count_error(ClientRound& seen, const std::string& key, const std::string& message) {
  ++seen.errors[key];
  seen.error_samples.emplace(key, message);
}

}  // namespace

Load::Load(LoadSettings settings) : settings_(std::move(settings)) {
  for (int i = 0; i < settings_.clients; ++i) {
    auto client = std::make_unique<Client>();
    client->number = i;
    client->random.seed(static_cast<std::uint64_t>(i) * 0x9E3779B97F4A7C15ULL + 12345);
    clients_.push_back(std::move(client));
  }
}

Load::~Load() {
  stop();
  for (auto& client : clients_) {
    if (client->conn != nullptr) PQfinish(client->conn);
    client->conn = nullptr;
  }
}

Clock::time_point Load::last_commit() const {
  return Clock::time_point(Clock::duration(last_commit_.load()));
}

void Load::start(int round) {
  stopping_ = false;
  for (auto& client : clients_) {
    client->seen = ClientRound{};
    Client& c = *client;
    client->thread = std::thread([this, &c, round] { run_client(c, round); });
  }
}

std::vector<ClientRound> Load::stop() {
  stopping_ = true;
  std::vector<ClientRound> rounds;
  for (auto& client : clients_) {
    if (client->thread.joinable()) {
      client->thread.join();
      rounds.push_back(std::move(client->seen));
      client->seen = ClientRound{};
    }
  }
  return rounds;
}

void Load::run_client(Client& client, int round) {
  while (!stopping_) {
    if (!ensure_connected(client)) {
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
      continue;
    }
    if (!run_transaction(client, round) || settings_.think.count() == 0) continue;
    // A second read a little later, when a standby has usually caught up with the commit and
    // pgrelay's monitor has seen it: this one tends to go to a standby.
    std::this_thread::sleep_for(settings_.think);
    if (client.conn != nullptr) check_read(client);
  }
}

bool Load::ensure_connected(Client& client) {
  if (client.conn != nullptr && PQstatus(client.conn) == CONNECTION_OK) return true;
  if (client.conn != nullptr) PQfinish(client.conn);
  client.conn = PQconnectdb(settings_.conninfo.c_str());
  if (PQstatus(client.conn) == CONNECTION_OK) {
    PQsetNoticeReceiver(client.conn, ignore_notice, nullptr);
    return true;
  }
  std::string message = PQerrorMessage(client.conn);
  while (!message.empty() && message.back() == '\n') message.pop_back();
  count_error(client.seen, "connect", message);
  PQfinish(client.conn);
  client.conn = nullptr;
  return false;
}

void Load::note_commit(Client& client, std::int64_t id) {
  const auto now = Clock::now();
  client.seen.committed.push_back(id);
  client.seen.commit_times.push_back(now);
  client.last_committed = id;
  client.last_commit_at = now;
  ++commits_;
  auto previous = last_commit_.load();
  while (previous < now.time_since_epoch().count() &&
         !last_commit_.compare_exchange_weak(previous, now.time_since_epoch().count())) {
  }
}

bool Load::run_transaction(Client& client, int round) {
  auto& random = client.random;
  const std::int64_t scale = settings_.scale;
  const auto aid = std::uniform_int_distribution<std::int64_t>(1, 100000 * scale)(random);
  const auto bid = std::uniform_int_distribution<std::int64_t>(1, scale)(random);
  const auto tid = std::uniform_int_distribution<std::int64_t>(1, 10 * scale)(random);
  const auto delta = std::uniform_int_distribution<std::int64_t>(-5000, 5000)(random);
  const std::int64_t id = (client.number + 1) * kIdStride + client.next_sequence++;
  const std::string a = std::to_string(aid);
  const std::string b = std::to_string(bid);
  const std::string t = std::to_string(tid);
  const std::string d = std::to_string(delta);
  // pgbench's built-in tpcb-like script, statement by statement, then the ledger row.
  // Each statement with the step name its errors are counted under.
  const std::vector<std::pair<const char*, std::string>> body = {
      {"begin", "BEGIN"},
      {"update-accounts",
       "UPDATE pgbench_accounts SET abalance = abalance + " + d + " WHERE aid = " + a},
      {"select-account", "SELECT abalance FROM pgbench_accounts WHERE aid = " + a},
      {"update-tellers",
       "UPDATE pgbench_tellers SET tbalance = tbalance + " + d + " WHERE tid = " + t},
      {"update-branches",
       "UPDATE pgbench_branches SET bbalance = bbalance + " + d + " WHERE bid = " + b},
      {"insert-history", "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (" + t +
                             ", " + b + ", " + a + ", " + d + ", CURRENT_TIMESTAMP)"},
      {"insert-ledger", "INSERT INTO ledger (id, client, round) VALUES (" + std::to_string(id) +
                            ", " + std::to_string(client.number) + ", " + std::to_string(round) +
                            ")"},
  };
  auto finish_connection = [&client] {
    PQfinish(client.conn);
    client.conn = nullptr;
  };
  for (const auto& [step, sql] : body) {
    const auto out = exec(client.conn, sql, Clock::now() + settings_.statement_timeout);
    if (out.kind == Outcome::Kind::kOk) continue;
    // Failed before COMMIT was sent: the transaction cannot have committed.
    client.seen.aborted.push_back(id);
    count_error(client.seen, error_key(step, out), out.message);
    if (out.kind != Outcome::Kind::kError || PQstatus(client.conn) != CONNECTION_OK) {
      finish_connection();
      return false;
    }
    if (PQtransactionStatus(client.conn) != PQTRANS_IDLE) {
      const auto rollback =
          exec(client.conn, "ROLLBACK", Clock::now() + settings_.statement_timeout);
      if (rollback.kind != Outcome::Kind::kOk) {
        count_error(client.seen, error_key("rollback", rollback), rollback.message);
        finish_connection();
      }
    }
    return false;
  }

  const auto commit = exec(client.conn, "COMMIT", Clock::now() + settings_.statement_timeout);
  if (commit.kind == Outcome::Kind::kOk && commit.command_status == "COMMIT") {
    note_commit(client, id);
    check_read(client);
    return true;
  }
  if (commit.kind == Outcome::Kind::kOk) {
    // COMMIT of a transaction the server had already failed answers ROLLBACK, without an error.
    client.seen.aborted.push_back(id);
    count_error(client.seen, "commit:rolled-back", "COMMIT answered " + commit.command_status);
    return false;
  }
  count_error(client.seen, error_key("commit", commit), commit.message);
  // Only an ERROR outside class 08 says the transaction did not commit; a FATAL, a broken
  // connection, a timeout or 08xxx leaves the outcome unknown.
  const bool definite = commit.kind == Outcome::Kind::kError && commit.severity == "ERROR" &&
                        commit.sqlstate.rfind("08", 0) != 0;
  (definite ? client.seen.aborted : client.seen.unknown).push_back(id);
  if (commit.kind != Outcome::Kind::kError || PQstatus(client.conn) != CONNECTION_OK) {
    finish_connection();
    return false;
  }
  if (PQtransactionStatus(client.conn) != PQTRANS_IDLE) {
    const auto rollback = exec(client.conn, "ROLLBACK", Clock::now() + settings_.statement_timeout);
    if (rollback.kind != Outcome::Kind::kOk) {
      count_error(client.seen, error_key("rollback", rollback), rollback.message);
      finish_connection();
    }
  }
  return false;
}

void Load::check_read(Client& client) {
  // An autocommit read pgrelay may send to a standby, but only to one that has replayed this
  // client's last commit (read_your_writes). pgrelay reports that watermark as a parameter.
  const char* reported = PQparameterStatus(client.conn, "pgrelay.commit_lsn");
  const std::string watermark = reported != nullptr ? reported : "";
  const auto out =
      exec(client.conn,
           "SELECT coalesce(max(id), 0), inet_server_port() FROM ledger WHERE client = " +
               std::to_string(client.number),
           Clock::now() + settings_.statement_timeout);
  if (out.kind != Outcome::Kind::kOk || out.first_row.size() != 2) {
    count_error(client.seen, error_key("read", out), out.message);
    if (out.kind != Outcome::Kind::kError || PQstatus(client.conn) != CONNECTION_OK) {
      PQfinish(client.conn);
      client.conn = nullptr;
    }
    return;
  }
  ++client.seen.reads;
  ++client.seen.reads_by_port[out.first_row[1]];
  const std::int64_t seen = std::stoll(out.first_row[0]);
  const char* after = PQparameterStatus(client.conn, "pgrelay.commit_lsn");
  const std::string watermarks = watermark + " / " + (after != nullptr ? after : "");
  if (seen < client.last_committed) {
    client.seen.stale.push_back({client.last_committed, seen, out.first_row[1], watermarks,
                                 client.last_commit_at, Clock::now()});
  }
}

}  // namespace pgrelay::chaos
