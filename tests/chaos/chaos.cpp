// The chaos suite: a three-node cluster behind pgrelay, TPC-B load with a ledger of committed ids,
// and rounds of faults (switchover, fast stop, kill with async and sync replication, paused
// replay, standby restart). After each round the ledger on the primary is checked against what
// the clients saw committed, and the cluster is repaired (pg_rewind) for the next round.
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <boost/json.hpp>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <unordered_set>
#include <vector>

#include "control.hpp"
#include "load.hpp"

namespace pgrelay::chaos {
namespace {

using namespace std::chrono_literals;

enum class Scenario {
  kSwitchover,
  kStopFast,
  kKillAsync,
  kKillSync,
  kPauseReplay,
  kRestartStandby,
};

struct ScenarioInfo {
  Scenario scenario;
  const char* name;
  const char* description;
};

constexpr ScenarioInfo kScenarios[] = {
    {Scenario::kSwitchover, "switchover", "(a) planned switchover (POST /switchover)"},
    {Scenario::kStopFast, "stop-fast", "(b) primary stopped with -m fast, standby promoted"},
    {Scenario::kKillAsync, "kill-async",
     "(c) primary stopped with -m immediate, standby promoted, async replication"},
    {Scenario::kKillSync, "kill-sync",
     "(c) primary stopped with -m immediate, standby promoted, synchronous_standby_names = "
     "'ANY 1 (standbys)'"},
    {Scenario::kPauseReplay, "pause-replay", "(d) replay paused on a standby, then resumed"},
    {Scenario::kRestartStandby, "restart-standby", "(e) a standby restarted (-m fast, start)"},
};

const ScenarioInfo& info(Scenario scenario) {
  for (const auto& s : kScenarios) {
    if (s.scenario == scenario) return s;
  }
  throw std::logic_error("unknown scenario");
}

bool changes_primary(Scenario s) {
  return s == Scenario::kSwitchover || s == Scenario::kStopFast || s == Scenario::kKillAsync ||
         s == Scenario::kKillSync;
}

struct Options {
  int rounds = 6;
  std::vector<Scenario> scenarios;
  int clients = 16;
  int scale = 4;
  int think_ms = 20;
  int warmup_ms = 1500;
  int after_ms = 2000;
  int pause_ms = 3000;
  std::string pgrelay = PGRELAY_BINARY;
  std::string script = std::string(PGRELAY_SOURCE_DIR) + "/scripts/cluster";
  std::string markdown;
  std::string results;
  bool keep = false;
  bool require_switchover = false;
};

/// What a round did and found.
struct RoundResult {
  int round = 0;
  Scenario scenario = Scenario::kSwitchover;
  bool skipped = false;
  std::string old_primary;
  std::string new_primary;
  std::string target;  ///< the standby promoted, paused or restarted
  std::int64_t committed = 0;
  std::int64_t lost = 0;
  std::int64_t unknown = 0;
  std::int64_t unknown_present = 0;
  std::int64_t false_aborts = 0;  ///< a definite error, yet the row is there
  std::int64_t stale_reads = 0;
  std::int64_t stale_after_loss = 0;  ///< older than a lost (async) write: not pgrelay's doing
  std::int64_t reads = 0;
  std::int64_t standby_reads = 0;
  std::int64_t errors = 0;
  std::map<std::string, std::int64_t> error_kinds;
  std::map<std::string, std::string> error_samples;
  double outage_ms = 0;
  double recovery_ms = -1;  ///< promotion/resume/restart done -> first commit
  double fault_ms = 0;      ///< how long the fault action itself took
  double paused_ms = -1;    ///< pgrelay's own figure for a switchover
  double repair_ms = 0;
  double tps = 0;
  bool third_rewound = false;
  std::vector<std::string> failures;
  std::vector<std::string> notes;
};

/// Thrown by a fault whose precondition pgrelay does not meet yet (no /switchover).
struct Unsupported : std::runtime_error {
  using std::runtime_error::runtime_error;
};

double percentile(std::vector<double> values, double p) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  const auto rank =
      static_cast<std::size_t>(std::ceil(p / 100.0 * static_cast<double>(values.size())));
  return values[std::min(values.size() - 1, rank == 0 ? 0 : rank - 1)];
}

std::string fixed(double value, int digits = 0) {
  std::ostringstream out;
  out << std::fixed << std::setprecision(digits) << value;
  return out.str();
}

std::string signed_ms(double ms) { return (ms >= 0 ? "+" : "") + fixed(ms); }

class Suite {
 public:
  explicit Suite(Options options) : options_(std::move(options)) {}
  int run();

 private:
  void say(const std::string& text) const;
  void setup();
  void start_watchdog();
  void write_proxy_config() const;
  void finish();

  RoundResult run_round(int round, Scenario scenario);
  void fault(Scenario scenario, RoundResult& r, Clock::time_point& recovered);
  void switchover(RoundResult& r);
  void stop_primary(Scenario scenario, RoundResult& r);
  void verify(int round, const std::vector<ClientRound>& seen, Clock::time_point fault_at,
              RoundResult& r) const;
  [[nodiscard]] std::string node_of_port(const std::string& port) const;
  void measure(const std::vector<ClientRound>& seen, Clock::time_point fault_at,
               Clock::time_point recovered, Clock::time_point end, RoundResult& r) const;
  void repair(Scenario scenario, RoundResult& r);

  [[nodiscard]] std::vector<std::string> standbys() const;
  std::string pick(const std::vector<std::string>& names);
  void set_synchronous(const std::vector<std::string>& nodes, const std::string& value);
  void follow_new_primary(const RoundResult& r);
  [[nodiscard]] std::string detect_primary(const std::string& old) const;
  bool wait_streaming(const std::vector<std::string>& names, std::chrono::milliseconds timeout);
  bool wait_topology(std::chrono::milliseconds timeout, std::string& last_seen);
  bool replayed_past(const std::string& node, std::uint64_t lsn) const;

  void report(const std::vector<RoundResult>& results) const;
  void write_markdown(const std::vector<RoundResult>& results) const;
  void write_results(const std::vector<RoundResult>& results) const;

  Options options_;
  Clock::time_point started_ = Clock::now();
  std::string dir_;
  std::unique_ptr<Cluster> cluster_;
  std::unique_ptr<Proxy> proxy_;
  std::unique_ptr<Load> load_;
  int proxy_port_ = 0;
  int http_port_ = 0;
  std::string primary_ = "node1";
  unsigned rotation_ = 0;
  std::vector<std::string> run_failures_;
};

void Suite::say(const std::string& text) const {
  std::cout << "[" << std::setw(7) << fixed(ms_between(started_, Clock::now()) / 1000.0, 1)
            << " s] " << text << std::endl;
}

void Suite::start_watchdog() {
  // A process in its own session waits for our end of a pipe to close (we exited, crashed or were
  // killed), then stops the servers and, unless --keep, removes the directory.
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) throw std::runtime_error("pipe2 failed");
  const pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error("fork failed");
  if (pid == 0) {
    ::setsid();
    ::dup2(fds[0], STDIN_FILENO);
    std::string cleanup = "read _; " + shell_quote(options_.script) + " stop " + shell_quote(dir_) +
                          " immediate >/dev/null 2>&1";
    if (!options_.keep) cleanup += "; rm -rf " + shell_quote(dir_);
    ::execl("/bin/sh", "sh", "-c", cleanup.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  ::close(fds[0]);  // fds[1] stays open, close-on-exec, for the life of the process
}

void Suite::write_proxy_config() const {
  std::ofstream(dir_ + "/userlist.txt") << "\"app\" \"app\"\n";
  std::ostringstream toml;
  toml << "[listen]\naddress = \"127.0.0.1\"\nport = " << proxy_port_ << "\nworkers = 2\n\n"
       << "[http]\naddress = \"127.0.0.1\"\nport = " << http_port_ << "\n\n"
       << "[pool]\nmode = \"transaction\"\nmax_size = 40\n\n"
       << "[auth]\nmethod = \"scram-sha-256\"\nfile = \"" << dir_ << "/userlist.txt\"\n\n"
       << "[monitor]\nuser = \"pgrelay\"\npassword = \"pgrelay\"\ninterval_ms = 200\n\n"
       << "[routing]\nread_your_writes = true\nprimary_wait_ms = 30000\n\n";
  // PGRELAY_CHAOS_LOG_LEVEL=debug: every routing decision in pgrelay's log (with --keep).
  if (const char* level = std::getenv("PGRELAY_CHAOS_LOG_LEVEL")) {
    toml << "[log]\nlevel = \"" << level << "\"\n\n";
  }
  for (const auto& node : cluster_->nodes()) {
    toml << "[[backend]]\nname = \"" << node.name
         << "\"\nhost = \"127.0.0.1\"\nport = " << node.port << "\n\n";
  }
  std::ofstream(dir_ + "/pgrelay.toml") << toml.str();
}

void Suite::setup() {
  char tmpl[] = "/tmp/pgrelay-chaos-XXXXXX";
  if (::mkdtemp(tmpl) == nullptr) throw std::runtime_error("mkdtemp failed");
  dir_ = tmpl;
  ::chmod(dir_.c_str(), 0755);
  start_watchdog();

  std::vector<Node> nodes = {
      {"node1", free_port()}, {"node2", free_port()}, {"node3", free_port()}};
  cluster_ = std::make_unique<Cluster>(options_.script, dir_, nodes);
  proxy_port_ = free_port();
  http_port_ = free_port();
  say("cluster in " + dir_ + ": node1 :" + std::to_string(nodes[0].port) + " (primary), node2 :" +
      std::to_string(nodes[1].port) + ", node3 :" + std::to_string(nodes[2].port) +
      "; pgrelay :" + std::to_string(proxy_port_) + " (http :" + std::to_string(http_port_) + ")");
  // Commits wait for the local flush (so a fast stop loses nothing), and standbys rejoined without
  // slots find the WAL they miss in wal_keep_size.
  ::setenv("PGRELAY_CLUSTER_CONF",
           "synchronous_commit = on\nwal_keep_size = '1GB'\nmax_wal_size = '1GB'\n"
           "checkpoint_timeout = '5min'\n",
           1);
  cluster_->script("init", std::to_string(nodes[0].port) + " " + std::to_string(nodes[1].port) +
                               " " + std::to_string(nodes[2].port));
  // Standbys stream without slots from here on, as after every repair.
  cluster_->script("follow", "node2 node1");
  cluster_->script("follow", "node3 node1");
  for (int i = 0;; ++i) {
    const auto left = cluster_->sql("node1",
                                    "SELECT count(pg_drop_replication_slot(slot_name)) FILTER "
                                    "(WHERE NOT active) - count(*) FROM pg_replication_slots",
                                    "postgres");
    if (left.ok && left.value() == "0") break;
    if (i == 100) throw std::runtime_error("could not drop the replication slots: " + left.error);
    std::this_thread::sleep_for(100ms);
  }

  const std::string pgbench = pg_bin_dir() + "/pgbench";
  const auto init =
      run_command("PGPASSWORD=app PGSSLMODE=disable " + shell_quote(pgbench) + " -i -q -s " +
                  std::to_string(options_.scale) + " -h 127.0.0.1 -p " +
                  std::to_string(nodes[0].port) + " -U app app");
  if (init.status != 0) throw std::runtime_error("pgbench -i failed: " + init.output);
  const auto ledger = cluster_->sql(
      "node1",
      "SET ROLE app; CREATE TABLE ledger (id bigint PRIMARY KEY, client int NOT NULL, "
      "round int NOT NULL); CREATE INDEX ledger_client ON ledger (client, id); "
      "CREATE INDEX ledger_round ON ledger (round)");
  if (!ledger.ok) throw std::runtime_error("creating the ledger failed: " + ledger.error);
  // pgrelay's switchover promotes the target as its monitor role.
  const auto grant = cluster_->sql(
      "node1", "GRANT EXECUTE ON FUNCTION pg_catalog.pg_promote(boolean, integer) TO pgrelay",
      "postgres");
  if (!grant.ok) throw std::runtime_error("granting pg_promote failed: " + grant.error);
  if (!wait_streaming({"node2", "node3"}, 30s)) {
    throw std::runtime_error("the standbys do not stream from node1");
  }

  write_proxy_config();
  proxy_ = std::make_unique<Proxy>(options_.pgrelay, dir_ + "/pgrelay.toml", dir_ + "/pgrelay.log");
  proxy_->start(proxy_port_);
  std::string seen;
  if (!wait_topology(30s, seen)) throw std::runtime_error("pgrelay's topology: " + seen);

  LoadSettings load;
  load.conninfo = "host=127.0.0.1 port=" + std::to_string(proxy_port_) +
                  " user=app password=app dbname=app sslmode=disable connect_timeout=40"
                  " application_name=chaos";
  load.clients = options_.clients;
  load.scale = options_.scale;
  load.think = std::chrono::milliseconds(options_.think_ms);
  load_ = std::make_unique<Load>(load);
  say("ready: pgbench scale " + std::to_string(options_.scale) + ", " +
      std::to_string(options_.clients) + " clients");
}

std::vector<std::string> Suite::standbys() const {
  std::vector<std::string> names;
  for (const auto& node : cluster_->nodes()) {
    if (node.name != primary_) names.push_back(node.name);
  }
  return names;
}

std::string Suite::pick(const std::vector<std::string>& names) {
  return names.at(rotation_++ % names.size());
}

bool Suite::wait_streaming(const std::vector<std::string>& names,
                           std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  while (true) {
    const auto rows = cluster_->sql(primary_,
                                    "SELECT application_name FROM pg_stat_replication "
                                    "WHERE state = 'streaming'",
                                    "postgres");
    if (rows.ok) {
      std::set<std::string> streaming;
      for (const auto& row : rows.rows) streaming.insert(row.at(0));
      if (std::all_of(names.begin(), names.end(),
                      [&](const std::string& n) { return streaming.contains(n); })) {
        return true;
      }
    }
    if (Clock::now() > deadline) return false;
    std::this_thread::sleep_for(100ms);
  }
}

bool Suite::wait_topology(std::chrono::milliseconds timeout, std::string& last_seen) {
  const auto deadline = Clock::now() + timeout;
  while (true) {
    const auto response = http_request(http_port_, "GET", "/topology", 5s);
    last_seen = response.status == 0 ? "no answer" : response.body;
    if (const auto view = topology(http_port_)) {
      bool converged = view->primary == primary_;
      for (const auto& name : standbys()) {
        const auto* node = view->node(name);
        converged = converged && node != nullptr && node->role == "standby" && node->eligible;
      }
      if (converged) return true;
    }
    if (Clock::now() > deadline) return false;
    std::this_thread::sleep_for(100ms);
  }
}

bool Suite::replayed_past(const std::string& node, std::uint64_t lsn) const {
  const auto replay = cluster_->sql(node, "SELECT pg_last_wal_replay_lsn()", "postgres");
  const auto value = parse_lsn(replay.value());
  return replay.ok && value && *value > lsn;
}

void Suite::set_synchronous(const std::vector<std::string>& nodes, const std::string& value) {
  for (const auto& name : nodes) {
    const auto set = cluster_->sql(
        name,
        value.empty() ? "ALTER SYSTEM RESET synchronous_standby_names"
                      : "ALTER SYSTEM SET synchronous_standby_names = '" + value + "'",
        "postgres");
    const auto reload = cluster_->sql(name, "SELECT pg_reload_conf()", "postgres");
    if (!set.ok || !reload.ok) {
      throw std::runtime_error("setting synchronous_standby_names on " + name + ": " + set.error +
                               reload.error);
    }
  }
}

void Suite::switchover(RoundResult& r) {
  r.target = pick(standbys());
  const auto response =
      http_request(http_port_, "POST", "/switchover?to=" + r.target + "&timeout_ms=30000", 90s);
  if (response.status == 404 || response.status == 405) {
    throw Unsupported("POST /switchover answered " + std::to_string(response.status));
  }
  if (response.status != 200) {
    throw std::runtime_error("POST /switchover?to=" + r.target + " answered " +
                             std::to_string(response.status) + ": " + response.body);
  }
  boost::system::error_code ec;
  const auto json = boost::json::parse(response.body, ec);
  if (!ec && json.is_object()) {
    const auto& object = json.as_object();
    if (const auto* paused = object.if_contains("paused_ms");
        paused != nullptr && paused->is_number()) {
      r.paused_ms = paused->to_number<double>();
    }
    if (const auto* promoted = object.if_contains("new_primary");
        promoted != nullptr && promoted->is_string() && promoted->as_string() != r.target) {
      r.failures.push_back("switchover promoted " + std::string(promoted->as_string()) + ", not " +
                           r.target);
    }
  }
  primary_ = r.target;
}

void Suite::stop_primary(Scenario scenario, RoundResult& r) {
  const std::string old = primary_;
  if (scenario == Scenario::kStopFast) {
    cluster_->script("stop", "fast " + old);
    // A fast stop sends everything up to the shutdown checkpoint to the standbys: wait until the
    // chosen one has replayed past it, so that nothing is lost.
    r.target = pick(standbys());
    const auto checkpoint = cluster_->checkpoint_lsn(old);
    if (!checkpoint) throw std::runtime_error("pg_controldata of " + old + " failed");
    const auto deadline = Clock::now() + 30s;
    while (!replayed_past(r.target, *checkpoint)) {
      if (Clock::now() > deadline) {
        r.failures.push_back(r.target + " did not replay " + old +
                             "'s shutdown checkpoint within 30 s");
        break;
      }
      std::this_thread::sleep_for(20ms);
    }
  } else {
    cluster_->script("stop", "immediate " + old);
    // Promote the standby that received the most WAL (the other then follows it without a
    // rewind); on a tie, take turns.
    std::this_thread::sleep_for(300ms);
    std::vector<std::pair<std::uint64_t, std::string>> received;
    for (const auto& name : standbys()) {
      const auto lsn = cluster_->sql(name, "SELECT pg_last_wal_receive_lsn()", "postgres");
      received.emplace_back(parse_lsn(lsn.value()).value_or(0), name);
    }
    const auto best = std::max_element(received.begin(), received.end())->first;
    std::vector<std::string> candidates;
    for (const auto& [lsn, name] : received) {
      if (lsn == best) candidates.push_back(name);
    }
    r.target = pick(candidates);
  }
  cluster_->script("promote", r.target);
  primary_ = r.target;
}

void Suite::fault(Scenario scenario, RoundResult& r, Clock::time_point& recovered) {
  switch (scenario) {
    case Scenario::kSwitchover:
      switchover(r);
      break;
    case Scenario::kStopFast:
    case Scenario::kKillAsync:
    case Scenario::kKillSync:
      stop_primary(scenario, r);
      break;
    case Scenario::kPauseReplay: {
      r.target = pick(standbys());
      const auto paused = cluster_->sql(r.target, "SELECT pg_wal_replay_pause()", "postgres");
      if (!paused.ok) throw std::runtime_error("pg_wal_replay_pause: " + paused.error);
      std::this_thread::sleep_for(std::chrono::milliseconds(options_.pause_ms));
      const auto resumed = cluster_->sql(r.target, "SELECT pg_wal_replay_resume()", "postgres");
      if (!resumed.ok) throw std::runtime_error("pg_wal_replay_resume: " + resumed.error);
      break;
    }
    case Scenario::kRestartStandby:
      r.target = pick(standbys());
      cluster_->script("stop", "fast " + r.target);
      std::this_thread::sleep_for(1s);
      cluster_->script("start", r.target);
      break;
  }
  recovered = Clock::now();
  if (changes_primary(scenario)) follow_new_primary(r);
}

void Suite::follow_new_primary(const RoundResult& r) {
  // Repoint the remaining standby at once, before the old primary (a switchover leaves it
  // running, fenced) can send it WAL from past the fork.
  for (const auto& name : standbys()) {
    if (name != r.old_primary) cluster_->script("follow", name + " " + primary_);
  }
}

std::string Suite::detect_primary(const std::string& old) const {
  std::string found;
  for (const auto& node : cluster_->nodes()) {
    const auto recovery = cluster_->sql(node.name, "SELECT pg_is_in_recovery()", "postgres");
    if (recovery.ok && recovery.value() == "f" && (found.empty() || found == old)) {
      found = node.name;
    }
  }
  return found;
}

void Suite::measure(const std::vector<ClientRound>& seen, Clock::time_point fault_at,
                    Clock::time_point recovered, Clock::time_point end, RoundResult& r) const {
  std::vector<Clock::time_point> times;
  for (const auto& client : seen) {
    for (const auto t : client.commit_times) {
      if (t >= fault_at) times.push_back(t);
    }
  }
  std::sort(times.begin(), times.end());
  // The write outage: the longest stretch after the fault began in which no client committed.
  auto previous = fault_at;
  for (const auto t : times) {
    r.outage_ms = std::max(r.outage_ms, ms_between(previous, t));
    previous = t;
  }
  r.outage_ms = std::max(r.outage_ms, ms_between(previous, end));
  const auto first = std::lower_bound(times.begin(), times.end(), recovered);
  if (first != times.end()) r.recovery_ms = ms_between(recovered, *first);
}

std::string Suite::node_of_port(const std::string& port) const {
  for (const auto& node : cluster_->nodes()) {
    if (std::to_string(node.port) == port) return node.name;
  }
  return "port " + port;
}

void Suite::verify(int round, const std::vector<ClientRound>& seen, Clock::time_point fault_at,
                   RoundResult& r) const {
  const auto rows =
      cluster_->sql(primary_, "SELECT id FROM ledger WHERE round = " + std::to_string(round));
  if (!rows.ok) throw std::runtime_error("reading the ledger on " + primary_ + ": " + rows.error);
  std::unordered_set<std::int64_t> present;
  present.reserve(rows.rows.size() * 2);
  for (const auto& row : rows.rows) present.insert(std::stoll(row.at(0)));

  std::vector<std::int64_t> lost_samples;
  std::vector<std::int64_t> false_abort_samples;
  for (const auto& client : seen) {
    r.committed += static_cast<std::int64_t>(client.committed.size());
    for (const auto id : client.committed) {
      if (!present.contains(id)) {
        ++r.lost;
        if (lost_samples.size() < 5) lost_samples.push_back(id);
      }
    }
    for (const auto id : client.unknown) {
      ++r.unknown;
      if (present.contains(id)) ++r.unknown_present;
    }
    for (const auto id : client.aborted) {
      if (present.contains(id)) {
        ++r.false_aborts;
        if (false_abort_samples.size() < 5) false_abort_samples.push_back(id);
      }
    }
    for (const auto& stale : client.stale) {
      // A read older than a commit that survived is stale; one that is only older than commits the
      // new primary never got (async replication lost them) shows the loss, not a routing error.
      const bool behind_survivor =
          std::any_of(client.committed.begin(), client.committed.end(), [&](std::int64_t id) {
            return id > stale.seen && id <= stale.expected && present.contains(id);
          });
      if (behind_survivor) {
        ++r.stale_reads;
        if (r.stale_reads <= 5) {
          r.notes.push_back("stale read: expected >= " + std::to_string(stale.expected) + ", got " +
                            std::to_string(stale.seen) + " from " +
                            node_of_port(stale.server_port) + " at fault " +
                            signed_ms(ms_between(fault_at, stale.read_at)) +
                            " ms; the missed commit was answered at fault " +
                            signed_ms(ms_between(fault_at, stale.committed_at)) +
                            " ms; pgrelay.commit_lsn before / after the read " +
                            (stale.watermark.empty() ? "-" : stale.watermark));
        }
      } else {
        ++r.stale_after_loss;
      }
    }
    r.reads += client.reads;
    for (const auto& [port, count] : client.reads_by_port) {
      if (port != std::to_string(cluster_->port(primary_)) &&
          port != std::to_string(cluster_->port(r.old_primary))) {
        r.standby_reads += count;
      }
    }
    for (const auto& [kind, count] : client.errors) {
      r.errors += count;
      r.error_kinds[kind] += count;
    }
    for (const auto& [kind, message] : client.error_samples) r.error_samples.emplace(kind, message);
  }
  auto list = [](const std::vector<std::int64_t>& ids) {
    std::string text;
    for (const auto id : ids) text += (text.empty() ? "" : ", ") + std::to_string(id);
    return text;
  };
  if (!lost_samples.empty()) r.notes.push_back("lost ids (first): " + list(lost_samples));
  if (!false_abort_samples.empty()) {
    r.notes.push_back("ids present despite a definite error (first): " + list(false_abort_samples));
  }
  const Scenario s = r.scenario;
  if (r.lost > 0 && s != Scenario::kKillAsync) {
    r.failures.push_back(std::to_string(r.lost) + " committed ids missing on " + primary_);
  }
  if (r.stale_reads > 0) r.failures.push_back(std::to_string(r.stale_reads) + " stale reads");
  if (r.false_aborts > 0) {
    r.failures.push_back(std::to_string(r.false_aborts) +
                         " transactions reported as failed are committed");
  }
  if (s == Scenario::kSwitchover && !r.skipped && r.errors > 0) {
    r.failures.push_back(std::to_string(r.errors) + " client errors in a planned switchover");
  }
}

void Suite::repair(Scenario scenario, RoundResult& r) {
  const auto started = Clock::now();
  if (changes_primary(scenario) && r.old_primary != primary_) {
    cluster_->script("rejoin", r.old_primary + " " + primary_);
  }
  if (scenario == Scenario::kKillSync) {
    std::vector<std::string> all;
    for (const auto& node : cluster_->nodes()) all.push_back(node.name);
    set_synchronous(all, "");
  }
  // The standby that only followed may have received WAL from past the fork (the fenced old
  // primary kept writing, e.g. autovacuum): then it cannot follow, and is rewound too.
  std::vector<std::string> others;
  for (const auto& name : standbys()) {
    if (name != r.old_primary) others.push_back(name);
  }
  // A standby that can follow streams within a second or two; one that cannot retries every 5 s
  // (wal_retrieve_retry_interval) for ever.
  if (!wait_streaming(others, 10s)) {
    for (const auto& name : others) {
      say("  " + name + " does not stream from " + primary_ + ": rewinding it");
      cluster_->script("rejoin", name + " " + primary_);
    }
    r.third_rewound = true;
    r.notes.push_back("the remaining standby had to be rewound");
  }
  if (!wait_streaming(standbys(), 60s)) {
    throw std::runtime_error("the standbys do not stream from " + primary_ + " after repair");
  }
  const auto streaming = Clock::now();
  std::string seen;
  if (!wait_topology(60s, seen)) {
    r.failures.push_back("pgrelay's topology did not show " + primary_ +
                         " as primary with two eligible standbys within 60 s: " + seen);
  }
  r.repair_ms = ms_between(started, Clock::now());
  r.notes.push_back("repair: standbys streaming after " + fixed(ms_between(started, streaming)) +
                    " ms, pgrelay's topology converged " +
                    fixed(ms_between(streaming, Clock::now())) + " ms later");
}

RoundResult Suite::run_round(int round, Scenario scenario) {
  RoundResult r;
  r.round = round;
  r.scenario = scenario;
  r.old_primary = primary_;
  r.new_primary = primary_;
  say("round " + std::to_string(round) + ": " + info(scenario).name + " (primary " + primary_ +
      ")");
  if (scenario == Scenario::kKillSync) {
    const auto names = standbys();
    set_synchronous({primary_}, "ANY 1 (" + names.at(0) + ", " + names.at(1) + ")");
    const auto deadline = Clock::now() + 10s;
    while (cluster_
               ->sql(primary_,
                     "SELECT count(*) FROM pg_stat_replication WHERE sync_state = 'quorum'",
                     "postgres")
               .value() != "2") {
      if (Clock::now() > deadline) throw std::runtime_error("the standbys did not become quorum");
      std::this_thread::sleep_for(50ms);
    }
  }

  const auto load_started = Clock::now();
  load_->start(round);
  std::this_thread::sleep_for(std::chrono::milliseconds(options_.warmup_ms));
  const auto fault_at = Clock::now();
  auto recovered = fault_at;
  bool fault_done = false;
  try {
    fault(scenario, r, recovered);
    fault_done = true;
  } catch (const Unsupported& e) {
    r.skipped = true;
    r.notes.push_back(std::string("not run: ") + e.what());
  } catch (const std::exception& e) {
    r.failures.push_back(std::string("fault: ") + e.what());
    recovered = Clock::now();
  }
  r.fault_ms = ms_between(fault_at, recovered);
  r.new_primary = primary_;
  // Writes must come back; then the load runs on for a while.
  const auto deadline = recovered + 60s;
  while (load_->last_commit() <= recovered && Clock::now() < deadline) {
    std::this_thread::sleep_for(5ms);
  }
  if (load_->last_commit() <= recovered) {
    r.failures.push_back("no transaction committed within 60 s after the fault");
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(options_.after_ms));
  const auto end = Clock::now();
  const auto seen = load_->stop();
  const double seconds = ms_between(load_started, end) / 1000.0;

  if (!proxy_->alive()) {
    // Count what the clients saw; the run ends after this round.
    r.failures.push_back("pgrelay is gone: " + proxy_->exit_description());
    try {
      verify(round, seen, fault_at, r);
    } catch (const std::exception& e) {
      r.notes.push_back(std::string("ledger not checked: ") + e.what());
    }
    return r;
  }
  if (!fault_done && !r.skipped) {
    // Carry on from wherever the fault stopped, if the cluster still has a primary.
    const auto actual = detect_primary(r.old_primary);
    if (actual.empty()) {
      throw std::runtime_error("no primary left after a failed fault: " + r.failures.back());
    }
    primary_ = actual;
    r.new_primary = actual;
    if (actual != r.old_primary) follow_new_primary(r);
  }
  verify(round, seen, fault_at, r);
  r.tps = static_cast<double>(r.committed) / seconds;
  if (!r.skipped) measure(seen, fault_at, recovered, end, r);
  repair(scenario, r);
  return r;
}

void Suite::report(const std::vector<RoundResult>& results) const {
  for (const auto& r : results) {
    std::ostringstream line;
    line << "round " << r.round << " " << info(r.scenario).name;
    if (r.skipped) {
      line << ": SKIPPED";
    } else {
      line << ": " << r.old_primary << " -> " << r.new_primary << " (target " << r.target << ")"
           << ", committed " << r.committed << " (" << fixed(r.tps) << "/s)"
           << ", lost " << r.lost << ", unknown " << r.unknown << " (" << r.unknown_present
           << " committed)"
           << ", errors " << r.errors << ", outage " << fixed(r.outage_ms) << " ms"
           << ", fault " << fixed(r.fault_ms) << " ms, first commit after " << fixed(r.recovery_ms)
           << " ms";
      if (r.paused_ms >= 0) line << ", pgrelay paused " << fixed(r.paused_ms) << " ms";
      line << ", reads " << r.reads << " (" << r.standby_reads << " on standbys), stale "
           << r.stale_reads << ", repair " << fixed(r.repair_ms) << " ms";
    }
    say(line.str());
    for (const auto& [kind, count] : r.error_kinds) {
      say("    error " + kind + " x" + std::to_string(count) + ": " + r.error_samples.at(kind));
    }
    for (const auto& note : r.notes) say("    note: " + note);
    for (const auto& failure : r.failures) say("    FAILED: " + failure);
  }
}

void Suite::write_results(const std::vector<RoundResult>& results) const {
  if (options_.results.empty()) return;
  std::ofstream out(options_.results);
  out << "round\tscenario\tskipped\told_primary\tnew_primary\tcommitted\tlost\tunknown\t"
         "unknown_committed\terrors\toutage_ms\tfirst_commit_ms\tfault_ms\tpaused_ms\t"
         "stale_reads\treads\tstandby_reads\trepair_ms\tfailures\n";
  for (const auto& r : results) {
    std::string failures;
    for (const auto& f : r.failures) failures += (failures.empty() ? "" : "; ") + f;
    out << r.round << '\t' << info(r.scenario).name << '\t' << (r.skipped ? 1 : 0) << '\t'
        << r.old_primary << '\t' << r.new_primary << '\t' << r.committed << '\t' << r.lost << '\t'
        << r.unknown << '\t' << r.unknown_present << '\t' << r.errors << '\t' << fixed(r.outage_ms)
        << '\t' << fixed(r.recovery_ms) << '\t' << fixed(r.fault_ms) << '\t' << fixed(r.paused_ms)
        << '\t' << r.stale_reads << '\t' << r.reads << '\t' << r.standby_reads << '\t'
        << fixed(r.repair_ms) << '\t' << failures << '\n';
  }
}

void Suite::write_markdown(const std::vector<RoundResult>& results) const {
  if (options_.markdown.empty()) return;
  std::ofstream out(options_.markdown);
  out << "| scenario | rounds | errors / round (mean, max) | write outage ms p50 | p99 | "
         "promotion to first commit ms p50 | lost writes | unknown outcome (committed) | "
         "stale reads | other standby rewound | failed rounds |\n"
         "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n";
  std::map<std::string, std::int64_t> error_kinds;
  for (const auto& s : kScenarios) {
    std::vector<double> errors;
    std::vector<double> outage;
    std::vector<double> recovery;
    std::int64_t lost = 0;
    std::int64_t unknown = 0;
    std::int64_t unknown_present = 0;
    std::int64_t stale = 0;
    int failed = 0;
    int skipped = 0;
    int rewound = 0;
    for (const auto& r : results) {
      if (r.scenario != s.scenario) continue;
      if (r.skipped) {
        ++skipped;
        continue;
      }
      errors.push_back(static_cast<double>(r.errors));
      outage.push_back(r.outage_ms);
      if (r.recovery_ms >= 0) recovery.push_back(r.recovery_ms);
      lost += r.lost;
      unknown += r.unknown;
      unknown_present += r.unknown_present;
      stale += r.stale_reads;
      failed += r.failures.empty() ? 0 : 1;
      rewound += r.third_rewound ? 1 : 0;
      for (const auto& [kind, count] : r.error_kinds) error_kinds[kind] += count;
    }
    out << "| " << s.description << " | ";
    if (errors.empty()) {
      out << "0" << (skipped > 0 ? " (" + std::to_string(skipped) + " not run)" : "")
          << " | | | | | | | | | |\n";
      continue;
    }
    double sum = 0;
    for (const auto e : errors) sum += e;
    out << errors.size() << " | " << fixed(sum / static_cast<double>(errors.size()), 1) << ", "
        << fixed(*std::max_element(errors.begin(), errors.end())) << " | "
        << fixed(percentile(outage, 50)) << " | " << fixed(percentile(outage, 99)) << " | "
        << (recovery.empty() ? "-" : fixed(percentile(recovery, 50))) << " | " << lost << " | "
        << unknown << " (" << unknown_present << ") | " << stale << " | "
        << (changes_primary(s.scenario) ? std::to_string(rewound) : std::string("-")) << " | "
        << failed << " |\n";
  }
  out << "\nClient-visible errors by kind (step:SQLSTATE), all rounds:\n\n";
  for (const auto& [kind, count] : error_kinds) out << "- `" << kind << "`: " << count << "\n";
  out << "\n<details><summary>Every round</summary>\n\n"
         "| round | scenario | primary | committed | errors | outage ms | first commit ms | lost | "
         "unknown | stale | failures |\n"
         "| ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |\n";
  for (const auto& r : results) {
    std::string failures;
    for (const auto& f : r.failures) failures += (failures.empty() ? "" : "; ") + f;
    out << "| " << r.round << " | " << info(r.scenario).name << " | " << r.old_primary << " → "
        << r.new_primary << " | " << r.committed << " | " << r.errors << " | " << fixed(r.outage_ms)
        << " | " << fixed(r.recovery_ms) << " | " << r.lost << " | " << r.unknown << " | "
        << r.stale_reads << " | " << (r.skipped ? "not run" : failures) << " |\n";
  }
  out << "\n</details>\n";
}

void Suite::finish() {
  if (!proxy_) return;
  const int status = proxy_->stop(SIGTERM, 40s);
  if (status != 0) {
    run_failures_.push_back(
        "pgrelay did not exit cleanly on SIGTERM: " +
        (status < 0 ? std::string("still running after 40 s") : proxy_->exit_description()));
    proxy_->stop(SIGKILL, 5s);
  }
  const std::string log = proxy_->log();
  for (const char* marker : {"AddressSanitizer", "LeakSanitizer", "runtime error:"}) {
    if (log.find(marker) != std::string::npos) {
      run_failures_.push_back(std::string("pgrelay's log has a ") + marker + " report");
    }
  }
}

int Suite::run() {
  std::vector<RoundResult> results;
  try {
    setup();
    for (int round = 1; round <= options_.rounds; ++round) {
      const Scenario scenario =
          options_.scenarios[static_cast<std::size_t>(round - 1) % options_.scenarios.size()];
      results.push_back(run_round(round, scenario));
      report({results.back()});
      if (!proxy_->alive()) {
        run_failures_.push_back("pgrelay is gone: " + proxy_->exit_description());
        break;
      }
    }
  } catch (const std::exception& e) {
    run_failures_.push_back(std::string("aborted: ") + e.what());
  }
  if (load_) load_->stop();
  load_.reset();
  finish();

  say("summary");
  write_results(results);
  write_markdown(results);
  int failed_rounds = 0;
  int skipped = 0;
  for (const auto& r : results) {
    failed_rounds += r.failures.empty() ? 0 : 1;
    skipped += r.skipped ? 1 : 0;
  }
  for (const auto& s : kScenarios) {
    std::int64_t errors = 0;
    std::int64_t lost = 0;
    int rounds = 0;
    std::vector<double> outage;
    for (const auto& r : results) {
      if (r.scenario != s.scenario || r.skipped) continue;
      ++rounds;
      errors += r.errors;
      lost += r.lost;
      outage.push_back(r.outage_ms);
    }
    if (rounds == 0) continue;
    say("  " + std::string(s.name) + ": " + std::to_string(rounds) + " rounds, errors " +
        std::to_string(errors) + ", lost " + std::to_string(lost) + ", outage p50 " +
        fixed(percentile(outage, 50)) + " ms, max " + fixed(percentile(outage, 100)) + " ms");
  }
  if (skipped > 0) {
    say("WARNING: " + std::to_string(skipped) +
        " round(s) not run (pgrelay has no /switchover yet)");
    if (options_.require_switchover) run_failures_.push_back("switchover rounds not run");
  }
  for (const auto& failure : run_failures_) say("FAILED: " + failure);
  if (failed_rounds > 0) say("FAILED: " + std::to_string(failed_rounds) + " round(s) failed");
  const bool ok = failed_rounds == 0 && run_failures_.empty();
  if (!ok && !options_.keep) {
    // The run directory goes when we exit; pgrelay's log is what explains a failure.
    const std::string saved = dir_ + "-pgrelay.log";
    std::error_code ec;
    std::filesystem::copy_file(dir_ + "/pgrelay.log", saved,
                               std::filesystem::copy_options::overwrite_existing, ec);
    say("chaos: FAILED (pgrelay log saved as " +
        (ec ? std::string("- (") + ec.message() + ")" : saved) + ")");
  } else {
    say(ok ? "chaos: passed" : "chaos: FAILED (pgrelay log: " + dir_ + "/pgrelay.log)");
  }
  return ok ? 0 : 1;
}

[[noreturn]] void usage(const std::string& problem) {
  if (!problem.empty()) std::cerr << "pgrelay_chaos: " << problem << "\n";
  std::cerr << "usage: pgrelay_chaos [--rounds N] [--scenarios a,b,...] [--clients N] [--scale N]\n"
               "  [--think-ms N] [--warmup-ms N] [--after-ms N] [--pause-ms N] [--pgrelay PATH]\n"
               "  [--script PATH] [--markdown FILE] [--results FILE] [--keep]\n"
               "  [--require-switchover]\n"
               "scenarios (run in turn, one per round):";
  for (const auto& s : kScenarios) std::cerr << " " << s.name;
  std::cerr << "\n";
  std::exit(2);
}

Options parse(int argc, char** argv) {
  Options options;
  const std::vector<std::string> args(argv + 1, argv + argc);
  auto number = [&](std::size_t& i) {
    if (i + 1 >= args.size()) usage(args[i] + " needs a value");
    try {
      return std::stoi(args[++i]);
    } catch (const std::exception&) {
      usage(args[i - 1] + " needs a number");
    }
  };
  auto text = [&](std::size_t& i) {
    if (i + 1 >= args.size()) usage(args[i] + " needs a value");
    return args[++i];
  };
  for (std::size_t i = 0; i < args.size(); ++i) {
    const auto& a = args[i];
    if (a == "--rounds") {
      options.rounds = number(i);
    } else if (a == "--clients") {
      options.clients = number(i);
    } else if (a == "--scale") {
      options.scale = number(i);
    } else if (a == "--think-ms") {
      options.think_ms = number(i);
    } else if (a == "--warmup-ms") {
      options.warmup_ms = number(i);
    } else if (a == "--after-ms") {
      options.after_ms = number(i);
    } else if (a == "--pause-ms") {
      options.pause_ms = number(i);
    } else if (a == "--pgrelay") {
      options.pgrelay = text(i);
    } else if (a == "--script") {
      options.script = text(i);
    } else if (a == "--markdown") {
      options.markdown = text(i);
    } else if (a == "--results") {
      options.results = text(i);
    } else if (a == "--keep") {
      options.keep = true;
    } else if (a == "--require-switchover") {
      options.require_switchover = true;
    } else if (a == "--scenarios") {
      std::istringstream list(text(i));
      std::string name;
      while (std::getline(list, name, ',')) {
        const auto* found = std::find_if(std::begin(kScenarios), std::end(kScenarios),
                                         [&](const ScenarioInfo& s) { return name == s.name; });
        if (found == std::end(kScenarios)) usage("unknown scenario " + name);
        options.scenarios.push_back(found->scenario);
      }
    } else {
      usage(a == "--help" || a == "-h" ? "" : "unknown argument " + a);
    }
  }
  if (options.scenarios.empty()) {
    for (const auto& s : kScenarios) options.scenarios.push_back(s.scenario);
  }
  if (options.rounds < 1 || options.clients < 1 || options.scale < 1) usage("values must be >= 1");
  return options;
}

}  // namespace
}  // namespace pgrelay::chaos

int main(int argc, char** argv) {
  ::signal(SIGPIPE, SIG_IGN);
  pgrelay::chaos::Suite suite(pgrelay::chaos::parse(argc, argv));
  return suite.run();
}
