// The chaos suite's load: client threads running pgbench's TPC-B transaction plus a ledger insert
// through pgrelay, recording which ledger ids committed, every error, and stale reads.
#pragma once

#include <libpq-fe.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "control.hpp"

namespace pgrelay::chaos {

struct LoadSettings {
  std::string conninfo;  ///< pgrelay, as user app on database app
  int clients = 16;
  int scale = 1;                       ///< pgbench scale of the tables
  std::chrono::milliseconds think{0};  ///< pause after each commit, then a second read check
  std::chrono::milliseconds statement_timeout{60000};
};

/// A read that returned less than the client's last committed ledger id.
struct StaleRead {
  std::int64_t expected = 0;       ///< the client's last committed id before the read
  std::int64_t seen = 0;           ///< max(id) the read returned
  std::string server_port;         ///< inet_server_port() of the server that answered
  std::string watermark;           ///< pgrelay.commit_lsn reported before / after the read
  Clock::time_point committed_at;  ///< when the COMMIT of `expected` was answered
  Clock::time_point read_at;       ///< when the read was answered
};

/// What one client saw during one round.
struct ClientRound {
  std::vector<std::int64_t> committed;          ///< COMMIT answered COMMIT
  std::vector<Clock::time_point> commit_times;  ///< when each of those answers arrived
  std::vector<std::int64_t> unknown;  ///< COMMIT sent, outcome unknown (08xxx, FATAL, lost)
  std::vector<std::int64_t> aborted;  ///< the transaction got a definite error: not committed
  std::vector<StaleRead> stale;       ///< reads older than the client's own last commit
  std::int64_t reads = 0;
  std::map<std::string, std::int64_t> reads_by_port;  ///< server port -> reads it answered
  std::map<std::string, std::int64_t> errors;         ///< "step:SQLSTATE" -> count
  std::map<std::string, std::string> error_samples;   ///< "step:SQLSTATE" -> first message
};

/// Transaction ids are unique over the whole run: (client + 1) * kIdStride + sequence.
inline constexpr std::int64_t kIdStride = 10'000'000'000;

/// Client threads that run while a round runs; connections and id sequences persist between
/// rounds.
class Load {
 public:
  explicit Load(LoadSettings settings);
  ~Load();
  Load(const Load&) = delete;
  Load& operator=(const Load&) = delete;

  /// Starts every client's thread; their ledger rows carry `round`.
  void start(int round);
  /// Stops the threads (each finishes its current statement) and returns what each client saw.
  std::vector<ClientRound> stop();
  /// Commits since the process started, and when the latest one was answered.
  [[nodiscard]] std::int64_t commits() const { return commits_.load(); }
  [[nodiscard]] Clock::time_point last_commit() const;

 private:
  struct Client {
    int number = 0;
    PGconn* conn = nullptr;
    std::int64_t next_sequence = 1;
    std::int64_t last_committed = 0;
    Clock::time_point last_commit_at;
    std::mt19937_64 random;
    ClientRound seen;
    std::thread thread;
  };

  void run_client(Client& client, int round);
  bool ensure_connected(Client& client);
  /// One TPC-B transaction with its ledger row, then a read check; true when it committed.
  bool run_transaction(Client& client, int round);
  void check_read(Client& client);
  void note_commit(Client& client, std::int64_t id);

  LoadSettings settings_;
  std::vector<std::unique_ptr<Client>> clients_;
  std::atomic<bool> stopping_{false};
  std::atomic<std::int64_t> commits_{0};
  std::atomic<Clock::rep> last_commit_{0};
};

}  // namespace pgrelay::chaos
