// Unit tests for the TOML configuration loader: every INTERFACE.md key, defaults, notes, errors.
#include "pgrelay/config/config.hpp"

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <gtest/gtest.h>
#include <unistd.h>

namespace pgrelay::config {
namespace {

namespace fs = std::filesystem;

/// A fresh directory under the system temp dir, removed with everything in it at scope exit.
class TempDir {
 public:
  TempDir() {
    std::string pattern = (fs::temp_directory_path() / "pgrelay_config_test_XXXXXX").string();
    const char* made = ::mkdtemp(pattern.data());
    if (made == nullptr) std::abort();
    path_ = made;
  }
  ~TempDir() {
    std::error_code ignored;
    fs::remove_all(path_, ignored);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  [[nodiscard]] const fs::path& path() const { return path_; }

  /// Writes `content` to `name` inside the directory and returns the file's full path.
  std::string write(const std::string& name, std::string_view content) const {
    const fs::path file = path_ / name;
    std::ofstream out(file, std::ios::binary);
    out << content;
    return file.string();
  }

 private:
  fs::path path_;
};

/// A backend that makes an otherwise minimal config valid; appended to snippets under test.
constexpr std::string_view kBackend = R"(
[[backend]]
name = "node1"
host = "127.0.0.1"
)";

/// The complete example of INTERFACE.md plus [limits], [log] and backend.weight.
constexpr std::string_view kFullConfig = R"([listen]
address = "::"
port = 6432
workers = 4

[http]
address = "0.0.0.0"
port = 9931

[pool]
mode = "transaction"

[auth]
method = "md5"
file = "userlist.txt"
query = "SELECT usename, passwd FROM pg_shadow WHERE usename = $1"

[monitor]
user = "probe"
password = "secret"
database = "monitoring"
interval_ms = 200
failure_threshold = 5

[routing]
read_write_split = true
max_lag_bytes = 16777216
max_lag_ms = 1500
read_your_writes = false
watermark = "eager"
primary_wait_ms = 25000

[tls]
cert = "server.crt"
key = "server.key"

[limits]
max_clients = 500
max_message_bytes = 1048576
startup_timeout_ms = 15000
connect_timeout_ms = 2500
shutdown_timeout_ms = 45000

[log]
level = "debug"

[[backend]]
name = "node1"
host = "127.0.0.1"
port = 5433
weight = 3

[[backend]]
name = "node2"
host = "db2.example.com"
port = 5434
)";

/// Writes the files kFullConfig refers to (relative to the config) into `dir`.
void WriteReferencedFiles(const TempDir& dir) {
  dir.write("userlist.txt", "\"alice\" \"secret\"\n");
  dir.write("server.crt", "-----BEGIN CERTIFICATE-----\n");
  dir.write("server.key", "-----BEGIN PRIVATE KEY-----\n");
}

std::string Formatted(const LoadResult& result) {
  std::string all;
  for (const auto& error : result.errors) all += error.format() + "\n";
  return all;
}

/// Asserts exactly one error, formatted as "FILE:LINE: message", and no config.
void ExpectOneError(const LoadResult& result, const std::string& expected) {
  EXPECT_EQ(result.config.get(), nullptr);
  ASSERT_EQ(result.errors.size(), 1u) << Formatted(result);
  EXPECT_EQ(result.errors[0].format(), expected);
}

void ExpectFullConfigValues(const Config& c, const TempDir& dir) {
  EXPECT_EQ(c.listen.address, "::");
  EXPECT_EQ(c.listen.port, 6432);
  EXPECT_EQ(c.listen.workers, 4u);

  EXPECT_TRUE(c.http.enabled);
  EXPECT_EQ(c.http.address, "0.0.0.0");
  EXPECT_EQ(c.http.port, 9931);

  EXPECT_EQ(c.pool.mode, PoolMode::kTransaction);

  EXPECT_EQ(c.auth.method, AuthMethod::kMd5);
  EXPECT_EQ(fs::path(c.auth.file), dir.path() / "userlist.txt");
  EXPECT_EQ(c.auth.query, "SELECT usename, passwd FROM pg_shadow WHERE usename = $1");

  EXPECT_EQ(c.monitor.user, "probe");
  EXPECT_EQ(c.monitor.password, "secret");
  EXPECT_EQ(c.monitor.database, "monitoring");
  EXPECT_EQ(c.monitor.interval_ms, 200u);
  EXPECT_EQ(c.monitor.failure_threshold, 5u);

  EXPECT_TRUE(c.routing.read_write_split);
  EXPECT_EQ(c.routing.max_lag_bytes, 16777216u);
  EXPECT_EQ(c.routing.max_lag_ms, 1500u);
  EXPECT_FALSE(c.routing.read_your_writes);
  EXPECT_EQ(c.routing.watermark, WatermarkMode::kEager);
  EXPECT_EQ(c.routing.primary_wait_ms, 25000u);

  ASSERT_TRUE(c.tls.has_value());
  EXPECT_EQ(fs::path(c.tls->cert), dir.path() / "server.crt");
  EXPECT_EQ(fs::path(c.tls->key), dir.path() / "server.key");

  EXPECT_EQ(c.limits.max_clients, 500u);
  EXPECT_EQ(c.limits.max_message_bytes, 1048576u);
  EXPECT_EQ(c.limits.startup_timeout_ms, 15000u);
  EXPECT_EQ(c.limits.connect_timeout_ms, 2500u);
  EXPECT_EQ(c.limits.shutdown_timeout_ms, 45000u);

  EXPECT_EQ(c.log.level, "debug");

  ASSERT_EQ(c.backends.size(), 2u);
  EXPECT_EQ(c.backends[0].name, "node1");
  EXPECT_EQ(c.backends[0].host, "127.0.0.1");
  EXPECT_EQ(c.backends[0].port, 5433);
  EXPECT_EQ(c.backends[0].weight, 3u);
  EXPECT_EQ(c.backends[1].name, "node2");
  EXPECT_EQ(c.backends[1].host, "db2.example.com");
  EXPECT_EQ(c.backends[1].port, 5434);
  EXPECT_EQ(c.backends[1].weight, 1u);

  // Read splitting is active: the example pools in transaction mode with [auth].
  EXPECT_TRUE(c.inactive_notes.empty());
}

// ---------------------------------------------------------------------------------------------
// Successful loads

TEST(ConfigLoad, FullExampleParsesEveryKey) {
  TempDir dir;
  WriteReferencedFiles(dir);
  const std::string path = (dir.path() / "pgrelay.toml").string();
  const LoadResult result = parse_config(kFullConfig, path);
  ASSERT_TRUE(result.errors.empty()) << Formatted(result);
  ASSERT_NE(result.config, nullptr);
  EXPECT_EQ(result.config->path, path);
  ExpectFullConfigValues(*result.config, dir);
}

TEST(ConfigLoad, FullExampleLoadsFromFileWithPathsRelativeToIt) {
  TempDir dir;
  WriteReferencedFiles(dir);
  const std::string path = dir.write("pgrelay.toml", kFullConfig);
  // The working directory is not the config's directory: relative paths still resolve.
  ASSERT_NE(fs::current_path(), dir.path());
  const LoadResult result = load_config(path);
  ASSERT_TRUE(result.errors.empty()) << Formatted(result);
  ASSERT_NE(result.config, nullptr);
  EXPECT_EQ(result.config->path, path);
  ExpectFullConfigValues(*result.config, dir);
}

TEST(ConfigLoad, InterfaceExampleVerbatimLoads) {
  // The exact text of INTERFACE.md's example, comments included.
  constexpr std::string_view kText = R"([listen]
address = "127.0.0.1"          # "0.0.0.0" / "::" allowed
port = 5432
workers = 0                     # worker threads; 0 = one per core

[http]                          # health, topology and Prometheus metrics
address = "127.0.0.1"
port = 9930

[pool]
mode = "transaction"            # "session" | "transaction"

[auth]
method = "scram-sha-256"        # "scram-sha-256" | "md5" | "trust"
file = "userlist.txt"           # PgBouncer userlist.txt format: "user" "secret" per line
                                #   secret = SCRAM-SHA-256$... verifier, md5... hash, or plain text
query = ""                      # optional: SQL run via the monitor role to fetch a secret,
                                #   e.g. "SELECT usename, passwd FROM pg_shadow WHERE usename = $1"

[monitor]                       # the role pgrelay uses for health and lag probes (libpq)
user = "pgrelay"
password = "secret"
database = "postgres"
interval_ms = 200
failure_threshold = 3           # consecutive failed probes before a node is marked down

[routing]
read_write_split = true         # false: everything goes to the primary
max_lag_bytes = 16777216        # a standby further behind than this serves no reads
max_lag_ms = 1000               # ... nor one whose replay lag in time exceeds this
read_your_writes = true         # a client never reads from a standby older than its own last commit
primary_wait_ms = 30000         # with no primary (failover in progress) writes wait this long, then fail

[tls]                           # optional; client side
cert = "server.crt"
key = "server.key"

[[backend]]                     # every node of the cluster; roles are discovered, never configured
name = "node1"
host = "127.0.0.1"
port = 5433

[[backend]]
name = "node2"
host = "127.0.0.1"
port = 5434
)";
  TempDir dir;
  WriteReferencedFiles(dir);
  const LoadResult result = load_config(dir.write("pgrelay.toml", kText));
  ASSERT_TRUE(result.errors.empty()) << Formatted(result);
  ASSERT_NE(result.config, nullptr);
  const Config& c = *result.config;
  EXPECT_EQ(c.listen.address, "127.0.0.1");
  EXPECT_EQ(c.listen.port, 5432);
  EXPECT_EQ(c.listen.workers, 0u);
  EXPECT_TRUE(c.http.enabled);
  EXPECT_EQ(c.http.port, 9930);
  EXPECT_EQ(c.pool.mode, PoolMode::kTransaction);
  EXPECT_EQ(c.auth.method, AuthMethod::kScramSha256);
  EXPECT_EQ(fs::path(c.auth.file), dir.path() / "userlist.txt");
  EXPECT_EQ(c.auth.query, "");
  EXPECT_EQ(c.monitor.user, "pgrelay");
  EXPECT_EQ(c.monitor.password, "secret");
  EXPECT_EQ(c.monitor.database, "postgres");
  EXPECT_EQ(c.monitor.interval_ms, 200u);
  EXPECT_EQ(c.monitor.failure_threshold, 3u);
  EXPECT_TRUE(c.routing.read_write_split);
  EXPECT_EQ(c.routing.max_lag_bytes, 16777216u);
  EXPECT_EQ(c.routing.max_lag_ms, 1000u);
  EXPECT_TRUE(c.routing.read_your_writes);
  EXPECT_EQ(c.routing.watermark, WatermarkMode::kAuto);
  EXPECT_EQ(c.routing.primary_wait_ms, 30000u);
  ASSERT_TRUE(c.tls.has_value());
  EXPECT_EQ(fs::path(c.tls->cert), dir.path() / "server.crt");
  EXPECT_EQ(fs::path(c.tls->key), dir.path() / "server.key");
  ASSERT_EQ(c.backends.size(), 2u);
  EXPECT_EQ(c.backends[0].name, "node1");
  EXPECT_EQ(c.backends[0].port, 5433);
  EXPECT_EQ(c.backends[1].name, "node2");
  EXPECT_EQ(c.backends[1].port, 5434);
}

TEST(ConfigLoad, AbsoluteFilePathsAreKeptAsGiven) {
  TempDir dir;
  WriteReferencedFiles(dir);
  const std::string cert = (dir.path() / "server.crt").string();
  const std::string key = (dir.path() / "server.key").string();
  const std::string text =
      "[tls]\ncert = \"" + cert + "\"\nkey = \"" + key + "\"\n" + std::string(kBackend);
  // The config file itself lives elsewhere; absolute paths must not be re-anchored.
  const LoadResult result = parse_config(text, "/nonexistent/dir/pgrelay.toml");
  ASSERT_TRUE(result.errors.empty()) << Formatted(result);
  ASSERT_TRUE(result.config->tls.has_value());
  EXPECT_EQ(result.config->tls->cert, cert);
  EXPECT_EQ(result.config->tls->key, key);
}

TEST(ConfigLoad, DefaultsWhenOnlyBackendIsGiven) {
  const LoadResult result = parse_config(kBackend, "pgrelay.toml");
  ASSERT_TRUE(result.errors.empty()) << Formatted(result);
  ASSERT_NE(result.config, nullptr);
  const Config& c = *result.config;
  EXPECT_EQ(c.path, "pgrelay.toml");
  EXPECT_EQ(c.listen.address, "127.0.0.1");
  EXPECT_EQ(c.listen.port, 5432);
  EXPECT_EQ(c.listen.workers, 0u);
  EXPECT_FALSE(c.http.enabled);
  EXPECT_EQ(c.http.address, "127.0.0.1");
  EXPECT_EQ(c.http.port, 9930);
  EXPECT_EQ(c.pool.mode, PoolMode::kSession);
  EXPECT_EQ(c.auth.method, AuthMethod::kScramSha256);
  EXPECT_EQ(c.auth.file, "");
  EXPECT_EQ(c.auth.query, "");
  EXPECT_EQ(c.monitor.user, "pgrelay");
  EXPECT_EQ(c.monitor.password, "");
  EXPECT_EQ(c.monitor.database, "postgres");
  EXPECT_EQ(c.monitor.interval_ms, 1000u);
  EXPECT_EQ(c.monitor.failure_threshold, 3u);
  EXPECT_TRUE(c.routing.read_write_split);
  EXPECT_EQ(c.routing.max_lag_bytes, 16u * 1024 * 1024);
  EXPECT_EQ(c.routing.max_lag_ms, 1000u);
  EXPECT_TRUE(c.routing.read_your_writes);
  EXPECT_EQ(c.routing.watermark, WatermarkMode::kAuto);
  EXPECT_EQ(c.routing.primary_wait_ms, 30000u);
  EXPECT_FALSE(c.tls.has_value());
  EXPECT_EQ(c.limits.max_clients, 10000u);
  EXPECT_EQ(c.limits.max_message_bytes, 0x3fffffffu);
  EXPECT_EQ(c.limits.startup_timeout_ms, 60000u);
  EXPECT_EQ(c.limits.connect_timeout_ms, 5000u);
  EXPECT_EQ(c.limits.shutdown_timeout_ms, 30000u);
  EXPECT_EQ(c.log.level, "info");
  ASSERT_EQ(c.backends.size(), 1u);
  EXPECT_EQ(c.backends[0].name, "node1");
  EXPECT_EQ(c.backends[0].host, "127.0.0.1");
  EXPECT_EQ(c.backends[0].port, 5432);
  EXPECT_EQ(c.backends[0].weight, 1u);
  EXPECT_TRUE(c.inactive_notes.empty());
}

TEST(ConfigLoad, EveryLogLevelAndAuthMethodIsAccepted) {
  for (const char* level : {"trace", "debug", "info", "warn", "error", "off"}) {
    const std::string text =
        "[log]\nlevel = \"" + std::string(level) + "\"\n" + std::string(kBackend);
    const LoadResult result = parse_config(text, "pgrelay.toml");
    ASSERT_TRUE(result.errors.empty()) << level << ": " << Formatted(result);
    EXPECT_EQ(result.config->log.level, level);
  }
  const std::pair<const char*, AuthMethod> methods[] = {{"scram-sha-256", AuthMethod::kScramSha256},
                                                        {"md5", AuthMethod::kMd5},
                                                        {"trust", AuthMethod::kTrust}};
  for (const auto& [name, method] : methods) {
    const std::string text = "[auth]\nmethod = \"" + std::string(name) +
                             "\"\nquery = \"SELECT 1\"\n" + std::string(kBackend);
    const LoadResult result = parse_config(text, "pgrelay.toml");
    ASSERT_TRUE(result.errors.empty()) << name << ": " << Formatted(result);
    EXPECT_EQ(result.config->auth.method, method);
    EXPECT_EQ(to_string(method), name);
  }
  EXPECT_EQ(to_string(PoolMode::kSession), "session");
  EXPECT_EQ(to_string(PoolMode::kTransaction), "transaction");
}

TEST(ConfigLoad, BoundaryValuesAreAccepted) {
  const std::string text = R"([listen]
port = 65535
workers = 256
[monitor]
interval_ms = 10
[routing]
max_lag_bytes = 0
max_lag_ms = 86400000
[limits]
max_message_bytes = 1073741823
shutdown_timeout_ms = 0
)" + std::string(kBackend) +
                           "port = 1\nweight = 0\n";
  const LoadResult result = parse_config(text, "pgrelay.toml");
  ASSERT_TRUE(result.errors.empty()) << Formatted(result);
  const Config& c = *result.config;
  EXPECT_EQ(c.listen.port, 65535);
  EXPECT_EQ(c.listen.workers, 256u);
  EXPECT_EQ(c.monitor.interval_ms, 10u);
  EXPECT_EQ(c.routing.max_lag_bytes, 0u);
  EXPECT_EQ(c.routing.max_lag_ms, 86400000u);
  EXPECT_EQ(c.limits.max_message_bytes, 0x3fffffffu);
  EXPECT_EQ(c.limits.shutdown_timeout_ms, 0u);
  EXPECT_EQ(c.backends[0].port, 1);
  EXPECT_EQ(c.backends[0].weight, 0u);
}

// ---------------------------------------------------------------------------------------------
// Inactive-feature notes

std::vector<std::string> NotesFor(const std::string& snippet) {
  const LoadResult result = parse_config(snippet + std::string(kBackend), "pgrelay.toml");
  EXPECT_TRUE(result.errors.empty()) << Formatted(result);
  if (result.config == nullptr) return {"<no config>"};
  return result.config->inactive_notes;
}

TEST(ConfigNotes, TransactionPoolModeProducesNone) {
  EXPECT_TRUE(NotesFor("[pool]\nmode = \"transaction\"\n[auth]\nmethod = \"trust\"\n").empty());
}

TEST(ConfigNotes, SessionPoolModeProducesNone) {
  EXPECT_TRUE(NotesFor("[pool]\nmode = \"session\"\n").empty());
}

TEST(ConfigNotes, AuthSectionProducesNone) {
  EXPECT_TRUE(NotesFor("[auth]\nmethod = \"trust\"\n").empty());
}

TEST(ConfigPool, PoolKeysAreRead) {
  const LoadResult result = parse_config(
      "[pool]\nmode = \"transaction\"\nmax_size = 7\nmin_idle = 2\nidle_timeout_ms = 1000\n"
      "lifetime_ms = 2000\nacquire_timeout_ms = 300\nreset_query = \"\"\n"
      "max_prepared_statements = 50\npark_after_ms = 250\n[auth]\nmethod = \"trust\"\n" +
          std::string(kBackend),
      "pgrelay.toml");
  ASSERT_TRUE(result.errors.empty()) << Formatted(result);
  const auto& pool = result.config->pool;
  EXPECT_EQ(pool.mode, PoolMode::kTransaction);
  EXPECT_EQ(pool.max_size, 7u);
  EXPECT_EQ(pool.min_idle, 2u);
  EXPECT_EQ(pool.idle_timeout_ms, 1000u);
  EXPECT_EQ(pool.lifetime_ms, 2000u);
  EXPECT_EQ(pool.acquire_timeout_ms, 300u);
  EXPECT_EQ(pool.reset_query, "");
  EXPECT_EQ(pool.max_prepared_statements, 50u);
  EXPECT_EQ(pool.park_after_ms, 250u);
  EXPECT_TRUE(result.config->auth.enabled);
}

TEST(ConfigPool, TransactionModeNeedsAuth) {
  const LoadResult result =
      parse_config("[pool]\nmode = \"transaction\"\n" + std::string(kBackend), "pgrelay.toml");
  ASSERT_EQ(result.errors.size(), 1u);
  EXPECT_EQ(result.errors[0].format(),
            "pgrelay.toml:2: pool.mode = \"transaction\" needs an [auth] table: pgrelay must log "
            "clients in itself to lend them pooled server connections");
}

TEST(ConfigPool, MinIdleAboveMaxSizeIsAnError) {
  const LoadResult result =
      parse_config("[pool]\nmax_size = 2\nmin_idle = 3\n" + std::string(kBackend), "pgrelay.toml");
  ASSERT_EQ(result.errors.size(), 1u);
  EXPECT_EQ(result.errors[0].format(),
            "pgrelay.toml:3: pool.min_idle must not exceed pool.max_size (2)");
}

TEST(ConfigAuth, PasswordMethodsNeedASecretSource) {
  const LoadResult result =
      parse_config("[auth]\nmethod = \"md5\"\n" + std::string(kBackend), "pgrelay.toml");
  ASSERT_EQ(result.errors.size(), 1u);
  EXPECT_EQ(
      result.errors[0].format(),
      "pgrelay.toml:1: [auth] method \"md5\" needs auth.file or auth.query to find passwords");
}

TEST(ConfigNotes, ReadWriteSplitTrueProducesANote) {
  const auto notes = NotesFor("[routing]\nread_write_split = true\n");
  ASSERT_EQ(notes.size(), 1u);
  EXPECT_NE(notes[0].find("read_write_split"), std::string::npos) << notes[0];
}

TEST(ConfigNotes, RoutingSectionWithDefaultSplitProducesANote) {
  // read_write_split defaults to true, so a [routing] table that tunes lag still gets the note.
  EXPECT_EQ(NotesFor("[routing]\nmax_lag_ms = 500\n").size(), 1u);
}

TEST(ConfigNotes, ReadWriteSplitInTransactionPoolingProducesNone) {
  EXPECT_TRUE(NotesFor("[routing]\nread_write_split = true\n[pool]\nmode = \"transaction\"\n"
                       "[auth]\nmethod = \"trust\"\n")
                  .empty());
}

TEST(ConfigRouting, ReadOnlyFunctionsAreRead) {
  const LoadResult result = parse_config(
      "[routing]\nread_only_functions = [\"app.lookup\", \"price_of\"]\n" + std::string(kBackend),
      "pgrelay.toml");
  ASSERT_TRUE(result.errors.empty()) << Formatted(result);
  EXPECT_EQ(result.config->routing.read_only_functions,
            (std::vector<std::string>{"app.lookup", "price_of"}));
  const LoadResult bad = parse_config(
      "[routing]\nread_only_functions = [\"ok\", 3]\n" + std::string(kBackend), "pgrelay.toml");
  ASSERT_EQ(bad.errors.size(), 1u);
  EXPECT_EQ(bad.errors[0].format(),
            "pgrelay.toml:2: routing.read_only_functions must hold function names");
}

TEST(ConfigNotes, ReadWriteSplitInSessionPoolingWithAuthProducesNone) {
  EXPECT_TRUE(NotesFor("[routing]\nread_write_split = true\n[pool]\nmode = \"session\"\n"
                       "[auth]\nmethod = \"trust\"\n")
                  .empty());
}

TEST(ConfigNotes, ReadWriteSplitFalseProducesNone) {
  EXPECT_TRUE(NotesFor("[routing]\nread_write_split = false\nmax_lag_ms = 500\n").empty());
}

TEST(ConfigNotes, HttpSectionIsActiveAndProducesNone) {
  EXPECT_TRUE(NotesFor("[http]\nport = 9931\n").empty());
}

TEST(ConfigNotes, ActiveSectionsProduceNone) {
  EXPECT_TRUE(NotesFor("[listen]\nport = 6432\n[monitor]\ninterval_ms = 200\n[limits]\n"
                       "max_clients = 10\n[log]\nlevel = \"warn\"\n")
                  .empty());
}

// ---------------------------------------------------------------------------------------------
// Errors: unknown keys

TEST(ConfigErrors, UnknownKeySuggestsTheClosestKnownKey) {
  const std::string text = "[listen]\nprot = 6432\n" + std::string(kBackend);
  ExpectOneError(parse_config(text, "pgrelay.toml"),
                 "pgrelay.toml:2: unknown key 'prot' in [listen]; did you mean 'port'?");
}

TEST(ConfigErrors, UnknownSectionSuggestsTheClosestSection) {
  const std::string text = "# comment\n[listn]\nport = 6432\n" + std::string(kBackend);
  ExpectOneError(parse_config(text, "pgrelay.toml"),
                 "pgrelay.toml:2: unknown key 'listn' in the top level; did you mean 'listen'?");
}

TEST(ConfigErrors, UnknownKeyFarFromEveryKnownKeyHasNoHint) {
  const std::string text =
      "[monitor]\nuser = \"x\"\ncompletely_unrelated = 1\n" + std::string(kBackend);
  ExpectOneError(parse_config(text, "pgrelay.toml"),
                 "pgrelay.toml:3: unknown key 'completely_unrelated' in [monitor]");
}

TEST(ConfigErrors, UnknownBackendKey) {
  const std::string text = std::string(kBackend) + "hots = \"x\"\n";
  ExpectOneError(parse_config(text, "pgrelay.toml"),
                 "pgrelay.toml:5: unknown key 'hots' in [[backend]]; did you mean 'host'?");
}

// ---------------------------------------------------------------------------------------------
// Errors: types and ranges

TEST(ConfigErrors, StringWhereIntegerExpected) {
  const std::string text = "[listen]\naddress = \"::\"\nport = \"x\"\n" + std::string(kBackend);
  ExpectOneError(parse_config(text, "pgrelay.toml"),
                 "pgrelay.toml:3: listen.port must be an integer");
}

TEST(ConfigErrors, FloatWhereIntegerExpected) {
  const std::string text = "[listen]\nport = 5432.0\n" + std::string(kBackend);
  ExpectOneError(parse_config(text, "pgrelay.toml"),
                 "pgrelay.toml:2: listen.port must be an integer");
}

TEST(ConfigErrors, IntegerWhereBooleanExpected) {
  const std::string text = "[routing]\nread_write_split = 1\n" + std::string(kBackend);
  ExpectOneError(parse_config(text, "pgrelay.toml"),
                 "pgrelay.toml:2: routing.read_write_split must be true or false");
}

TEST(ConfigErrors, IntegerWhereStringExpected) {
  const std::string text = "[monitor]\n\nuser = 5\n" + std::string(kBackend);
  ExpectOneError(parse_config(text, "pgrelay.toml"),
                 "pgrelay.toml:3: monitor.user must be a string");
}

TEST(ConfigErrors, EmptyRequiredString) {
  const std::string text = "[listen]\naddress = \"\"\n" + std::string(kBackend);
  ExpectOneError(parse_config(text, "pgrelay.toml"),
                 "pgrelay.toml:2: listen.address must not be empty");
}

TEST(ConfigErrors, SectionThatIsNotATable) {
  const std::string text = "listen = 5432\n" + std::string(kBackend);
  ExpectOneError(parse_config(text, "pgrelay.toml"),
                 "pgrelay.toml:1: 'listen' must be a table ([listen])");
}

TEST(ConfigErrors, PortOutOfRange) {
  const std::string text = "[listen]\nport = 70000\n" + std::string(kBackend);
  ExpectOneError(parse_config(text, "pgrelay.toml"),
                 "pgrelay.toml:2: listen.port must be between 1 and 65535, got 70000");
}

TEST(ConfigErrors, PortZeroOutOfRange) {
  const std::string text = "[http]\nport = 0\n" + std::string(kBackend);
  ExpectOneError(parse_config(text, "pgrelay.toml"),
                 "pgrelay.toml:2: http.port must be between 1 and 65535, got 0");
}

TEST(ConfigErrors, NegativeValueOutOfRange) {
  const std::string text = "[routing]\nmax_lag_bytes = -1\n" + std::string(kBackend);
  ExpectOneError(parse_config(text, "pgrelay.toml"),
                 "pgrelay.toml:2: routing.max_lag_bytes must be between 0 and "
                 "9223372036854775807, got -1");
}

TEST(ConfigErrors, IntervalZeroOutOfRange) {
  const std::string text = "[monitor]\ninterval_ms = 0\n" + std::string(kBackend);
  ExpectOneError(parse_config(text, "pgrelay.toml"),
                 "pgrelay.toml:2: monitor.interval_ms must be between 10 and 600000, got 0");
}

TEST(ConfigErrors, TooManyWorkers) {
  const std::string text = "[listen]\nworkers = 1000\n" + std::string(kBackend);
  ExpectOneError(parse_config(text, "pgrelay.toml"),
                 "pgrelay.toml:2: listen.workers must be between 0 and 256, got 1000");
}

TEST(ConfigErrors, LimitOutOfRange) {
  const std::string text = "[limits]\nmax_message_bytes = 1073741824\n" + std::string(kBackend);
  ExpectOneError(parse_config(text, "pgrelay.toml"),
                 "pgrelay.toml:2: limits.max_message_bytes must be between 1024 and 1073741823, "
                 "got 1073741824");
}

TEST(ConfigErrors, BackendWeightOutOfRange) {
  const std::string text = std::string(kBackend) + "weight = 1001\n";
  ExpectOneError(parse_config(text, "pgrelay.toml"),
                 "pgrelay.toml:5: [[backend]].weight must be between 0 and 1000, got 1001");
}

// ---------------------------------------------------------------------------------------------
// Errors: enumerations

TEST(ConfigErrors, MisspelledPoolModeSuggestsTheRightOne) {
  const std::string text = "[pool]\nmode = \"transction\"\n" + std::string(kBackend);
  ExpectOneError(parse_config(text, "pgrelay.toml"),
                 "pgrelay.toml:2: pool.mode must be one of \"session\", \"transaction\"; "
                 "did you mean 'transaction'?");
}

TEST(ConfigErrors, MisspelledWatermarkSuggestsTheRightOne) {
  const std::string text = "[routing]\nwatermark = \"eagre\"\n" + std::string(kBackend);
  ExpectOneError(parse_config(text, "pgrelay.toml"),
                 "pgrelay.toml:2: routing.watermark must be one of \"auto\", \"lazy\", "
                 "\"eager\"; did you mean 'eager'?");
}

TEST(ConfigErrors, UnrelatedAuthMethodHasNoHint) {
  const std::string text = "[auth]\nmethod = \"kerberos\"\n" + std::string(kBackend);
  ExpectOneError(parse_config(text, "pgrelay.toml"),
                 "pgrelay.toml:2: auth.method must be one of \"scram-sha-256\", \"md5\", "
                 "\"trust\"");
}

TEST(ConfigErrors, NonStringEnumHasNoHint) {
  const std::string text = "[log]\nlevel = 3\n" + std::string(kBackend);
  ExpectOneError(parse_config(text, "pgrelay.toml"),
                 "pgrelay.toml:2: log.level must be one of \"trace\", \"debug\", \"info\", "
                 "\"warn\", \"error\", \"off\"");
}

// ---------------------------------------------------------------------------------------------
// Errors: backends

TEST(ConfigErrors, NoBackendIsReportedWithoutALine) {
  const LoadResult result = parse_config("[listen]\nport = 6432\n", "pgrelay.toml");
  ExpectOneError(result, "pgrelay.toml:0: at least one [[backend]] is required");
  ASSERT_EQ(result.errors.size(), 1u);
  EXPECT_EQ(result.errors[0].line, 0u);
  EXPECT_EQ(result.errors[0].file, "pgrelay.toml");
  EXPECT_EQ(result.errors[0].message, "at least one [[backend]] is required");
}

TEST(ConfigErrors, EmptyFileNeedsABackend) {
  ExpectOneError(parse_config("", "pgrelay.toml"),
                 "pgrelay.toml:0: at least one [[backend]] is required");
}

TEST(ConfigErrors, BackendWrittenAsASingleTable) {
  const std::string text = "[listen]\nport = 6432\n\n[backend]\nname = \"n\"\nhost = \"h\"\n";
  ExpectOneError(parse_config(text, "pgrelay.toml"),
                 "pgrelay.toml:4: 'backend' must be an array of tables: write [[backend]]");
}

TEST(ConfigErrors, DuplicateBackendNames) {
  const std::string text =
      std::string(kBackend) + "\n[[backend]]\nname = \"node1\"\nhost = \"h\"\n";
  // Line 1 is empty (kBackend starts with a newline); the second name is on line 7.
  ExpectOneError(parse_config(text, "pgrelay.toml"),
                 "pgrelay.toml:7: backend name \"node1\" is used more than once");
}

TEST(ConfigErrors, BackendWithoutHost) {
  const std::string text = "[listen]\nport = 6432\n[[backend]]\nname = \"node1\"\nport = 5433\n";
  ExpectOneError(parse_config(text, "pgrelay.toml"), "pgrelay.toml:3: backend.host is required");
}

TEST(ConfigErrors, BackendWithoutName) {
  const std::string text = "[[backend]]\nhost = \"h\"\n";
  ExpectOneError(parse_config(text, "pgrelay.toml"), "pgrelay.toml:1: backend.name is required");
}

TEST(ConfigErrors, MisspelledBackendArrayIsUnknownAndLeavesNoBackend) {
  const std::string text = "[[backends]]\nname = \"a\"\nhost = \"h\"\n";
  const LoadResult result = parse_config(text, "pgrelay.toml");
  EXPECT_EQ(result.config.get(), nullptr);
  ASSERT_EQ(result.errors.size(), 2u) << Formatted(result);
  EXPECT_EQ(result.errors[0].format(), "pgrelay.toml:0: at least one [[backend]] is required");
  EXPECT_EQ(result.errors[1].format(),
            "pgrelay.toml:1: unknown key 'backends' in the top level; did you mean 'backend'?");
}

TEST(ConfigErrors, EmptyBackendArray) {
  ExpectOneError(parse_config("\nbackend = []\n", "pgrelay.toml"),
                 "pgrelay.toml:2: at least one [[backend]] is required");
}

TEST(ConfigErrors, BackendArrayOfNonTables) {
  ExpectOneError(parse_config("backend = [1]\n", "pgrelay.toml"),
                 "pgrelay.toml:1: each backend must be a table");
}

TEST(ConfigErrors, InlineBackendWithoutHost) {
  ExpectOneError(parse_config("\nbackend = [{name = \"a\"}]\n", "pgrelay.toml"),
                 "pgrelay.toml:2: backend.host is required");
}

TEST(ConfigErrors, BackendWithEmptyHost) {
  ExpectOneError(parse_config("[[backend]]\nname = \"a\"\nhost = \"\"\n", "pgrelay.toml"),
                 "pgrelay.toml:3: [[backend]].host must not be empty");
}

TEST(ConfigErrors, BackendPortOfWrongType) {
  ExpectOneError(
      parse_config("[[backend]]\nname = \"a\"\nhost = \"h\"\nport = true\n", "pgrelay.toml"),
      "pgrelay.toml:4: [[backend]].port must be an integer");
}

// ---------------------------------------------------------------------------------------------
// Errors: TLS and referenced files

TEST(ConfigErrors, EmptyTlsTableNeedsBothFiles) {
  const std::string text = "[tls]\n" + std::string(kBackend);
  const LoadResult result = parse_config(text, "pgrelay.toml");
  EXPECT_EQ(result.config.get(), nullptr);
  ASSERT_EQ(result.errors.size(), 2u) << Formatted(result);
  EXPECT_EQ(result.errors[0].format(), "pgrelay.toml:1: tls.cert is required when [tls] is set");
  EXPECT_EQ(result.errors[1].format(), "pgrelay.toml:1: tls.key is required when [tls] is set");
}

// KNOWN BUG (left failing on purpose): Reader::file_path only checks access(R_OK), which a
// directory passes, so tls.cert = "<a directory>" validates and fails only later at start-up.
// Expected: "FILE:2: tls.cert: cannot read file \"DIR/certs\"" (or a "not a regular file"
// error); actual: no error and a Config whose tls.cert is a directory.
TEST(ConfigErrors, TlsCertPointingAtADirectoryIsRejected) {
  TempDir dir;
  WriteReferencedFiles(dir);
  fs::create_directory(dir.path() / "certs");
  const std::string path = dir.write(
      "pgrelay.toml", "[tls]\ncert = \"certs\"\nkey = \"server.key\"\n" + std::string(kBackend));
  const LoadResult result = load_config(path);
  EXPECT_EQ(result.config.get(), nullptr);
  ASSERT_EQ(result.errors.size(), 1u) << Formatted(result);
  EXPECT_EQ(result.errors[0].line, 2u);
  EXPECT_EQ(result.errors[0].format().rfind(path + ":2: tls.cert", 0), 0u)
      << result.errors[0].format();
}

TEST(ConfigErrors, TlsWithoutKey) {
  TempDir dir;
  WriteReferencedFiles(dir);
  const std::string text =
      "[listen]\nport = 6432\n\n[tls]\ncert = \"server.crt\"\n" + std::string(kBackend);
  ExpectOneError(
      parse_config(text, (dir.path() / "pgrelay.toml").string()),
      (dir.path() / "pgrelay.toml").string() + ":4: tls.key is required when [tls] is set");
}

TEST(ConfigErrors, TlsCertMissingFile) {
  TempDir dir;
  WriteReferencedFiles(dir);
  const std::string path = dir.write("pgrelay.toml",
                                     "[tls]\ncert = \"missing.crt\"\n"
                                     "key = \"server.key\"\n" +
                                         std::string(kBackend));
  ExpectOneError(load_config(path), path + ":2: tls.cert: cannot read file \"" +
                                        (dir.path() / "missing.crt").string() + "\"");
}

TEST(ConfigErrors, AuthFileMissing) {
  TempDir dir;
  const std::string path = (dir.path() / "pgrelay.toml").string();
  ExpectOneError(
      parse_config("[auth]\nfile = \"userlist.txt\"\n" + std::string(kBackend), path),
      path + ":2: auth.file: cannot read file \"" + (dir.path() / "userlist.txt").string() + "\"");
}

// ---------------------------------------------------------------------------------------------
// Errors: TOML syntax, several errors, missing file

TEST(ConfigErrors, TomlSyntaxErrorReportsItsLine) {
  const std::string text =
      "[listen]\nport = 6432\naddress = \"unterminated\n" + std::string(kBackend);
  const LoadResult result = parse_config(text, "pgrelay.toml");
  EXPECT_EQ(result.config.get(), nullptr);
  ASSERT_EQ(result.errors.size(), 1u) << Formatted(result);
  EXPECT_EQ(result.errors[0].file, "pgrelay.toml");
  EXPECT_EQ(result.errors[0].line, 3u);
  EXPECT_FALSE(result.errors[0].message.empty());
  EXPECT_EQ(result.errors[0].format(), "pgrelay.toml:3: " + result.errors[0].message);
}

TEST(ConfigErrors, TomlDuplicateKeyIsASyntaxError) {
  const std::string text = "[listen]\nport = 1\nport = 2\n" + std::string(kBackend);
  const LoadResult result = parse_config(text, "pgrelay.toml");
  EXPECT_EQ(result.config.get(), nullptr);
  ASSERT_EQ(result.errors.size(), 1u) << Formatted(result);
  EXPECT_EQ(result.errors[0].line, 3u);
}

TEST(ConfigErrors, SeveralErrorsAreReportedTogetherSortedByLine) {
  // The loader reads [listen] before [pool] but must report in file order; the missing
  // backend (line 0) comes first.
  const std::string text =
      "[pool]\n"                 // 1
      "mode = \"transction\"\n"  // 2
      "\n"                       // 3
      "[listen]\n"               // 4
      "port = \"x\"\n"           // 5
      "workers = 1000\n"         // 6
      "prot = 1\n";              // 7
  const LoadResult result = parse_config(text, "pgrelay.toml");
  EXPECT_EQ(result.config.get(), nullptr);
  ASSERT_EQ(result.errors.size(), 5u) << Formatted(result);
  EXPECT_EQ(result.errors[0].format(), "pgrelay.toml:0: at least one [[backend]] is required");
  EXPECT_EQ(result.errors[1].format(),
            "pgrelay.toml:2: pool.mode must be one of \"session\", \"transaction\"; "
            "did you mean 'transaction'?");
  EXPECT_EQ(result.errors[2].format(), "pgrelay.toml:5: listen.port must be an integer");
  EXPECT_EQ(result.errors[3].format(),
            "pgrelay.toml:6: listen.workers must be between 0 and 256, got 1000");
  EXPECT_EQ(result.errors[4].format(),
            "pgrelay.toml:7: unknown key 'prot' in [listen]; did you mean 'port'?");
}

TEST(ConfigErrors, ErrorsInOneSectionDoNotHideOthers) {
  const std::string text = "[monitor]\ninterval_ms = 0\n[routing]\nread_write_split = 1\n" +
                           std::string(kBackend) + "weight = -1\n";
  const LoadResult result = parse_config(text, "pgrelay.toml");
  EXPECT_EQ(result.config.get(), nullptr);
  ASSERT_EQ(result.errors.size(), 3u) << Formatted(result);
  EXPECT_EQ(result.errors[0].line, 2u);
  EXPECT_EQ(result.errors[1].line, 4u);
  EXPECT_EQ(result.errors[2].line, 9u);
}

TEST(ConfigErrors, LoadConfigOnMissingFileGivesOneError) {
  TempDir dir;
  const std::string path = (dir.path() / "does-not-exist.toml").string();
  const LoadResult result = load_config(path);
  EXPECT_EQ(result.config.get(), nullptr);
  ASSERT_EQ(result.errors.size(), 1u) << Formatted(result);
  EXPECT_EQ(result.errors[0].file, path);
  EXPECT_EQ(result.errors[0].line, 0u);
  EXPECT_FALSE(result.errors[0].message.empty());
  EXPECT_EQ(result.errors[0].format(), path + ":0: " + result.errors[0].message);
}

// KNOWN BUG (left failing on purpose): load_config opens a directory without complaint
// (std::ifstream succeeds on Linux, the read then yields nothing), so `pgrelay --check -c DIR`
// says "DIR:0: at least one [[backend]] is required" instead of a cannot-read error.
// Expected: one error "DIR:0: cannot read configuration file"; actual: the backend error above.
TEST(ConfigErrors, LoadConfigOnADirectoryGivesTheCannotReadError) {
  TempDir dir;
  const std::string path = dir.path().string();
  const LoadResult result = load_config(path);
  EXPECT_EQ(result.config.get(), nullptr);
  ASSERT_EQ(result.errors.size(), 1u) << Formatted(result);
  EXPECT_EQ(result.errors[0].format(), path + ":0: cannot read configuration file");
}

TEST(ConfigErrors, CrlfLineEndingsKeepLineNumbers) {
  ExpectOneError(parse_config("[listen]\r\nport = 70000\r\n\r\n[[backend]]\r\nname = \"a\"\r\n"
                              "host = \"h\"\r\n",
                              "pgrelay.toml"),
                 "pgrelay.toml:2: listen.port must be between 1 and 65535, got 70000");
}

TEST(ConfigErrors, DottedKeyTypoIsFoundToo) {
  ExpectOneError(parse_config("listen.prot = 1\n" + std::string(kBackend), "pgrelay.toml"),
                 "pgrelay.toml:1: unknown key 'prot' in [listen]; did you mean 'port'?");
}

TEST(ConfigErrors, FormatIsFileColonLineColonMessage) {
  const ConfigError error{"conf/demo.toml", 12, "something is wrong"};
  EXPECT_EQ(error.format(), "conf/demo.toml:12: something is wrong");
  const ConfigError no_line{"x.toml", 0, "m"};
  EXPECT_EQ(no_line.format(), "x.toml:0: m");
}

}  // namespace
}  // namespace pgrelay::config

namespace pgrelay::config {
namespace {

TEST(ConfigAuth, AdminUsersAreRead) {
  const LoadResult result = parse_config(
      "[auth]\nmethod = \"trust\"\nadmin_users = [\"ops\", \"app\"]\n" + std::string(kBackend),
      "pgrelay.toml");
  ASSERT_TRUE(result.errors.empty()) << Formatted(result);
  EXPECT_EQ(result.config->auth.admin_users, (std::vector<std::string>{"ops", "app"}));
  const LoadResult bad =
      parse_config("[auth]\nmethod = \"trust\"\nadmin_users = \"ops\"\n" + std::string(kBackend),
                   "pgrelay.toml");
  ASSERT_EQ(bad.errors.size(), 1u);
  EXPECT_EQ(bad.errors[0].format(),
            "pgrelay.toml:3: auth.admin_users must be an array of user names");
}

}  // namespace
}  // namespace pgrelay::config
