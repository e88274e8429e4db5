// pgrelay's configuration: TOML parsed by toml++ into an immutable, validated Config.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace pgrelay::config {

struct ListenSettings {
  std::string address = "127.0.0.1";
  std::uint16_t port = 5432;
  unsigned workers = 0;  ///< 0 = one per core
};

struct HttpSettings {
  bool enabled = false;  ///< true when an [http] table is present
  std::string address = "127.0.0.1";
  std::uint16_t port = 9930;
};

enum class PoolMode { kSession, kTransaction };

/// When read-your-writes reads a client's commit LSN ([routing] watermark). kLazy: a write only
/// makes it unknown; it is read in front of the client's next read that a standby could serve
/// (which runs on the primary). kEager: behind every transaction that may have written. kAuto:
/// lazy until the client's first such read, eager from then on (clients that only write pay
/// nothing; clients that read get standby reads soon after their writes).
enum class WatermarkMode { kAuto, kLazy, kEager };

struct PoolSettings {
  PoolMode mode = PoolMode::kSession;
  /// Server connections per (backend, database, user) for the whole process, split evenly
  /// over the workers (each worker gets at least one).
  std::uint32_t max_size = 20;
  std::uint32_t min_idle = 0;                    ///< kept open per pool once a client logged in
  std::uint32_t idle_timeout_ms = 600000;        ///< an idle server connection is closed after this
  std::uint32_t lifetime_ms = 3600000;           ///< ... and any is closed when returned after this
  std::uint32_t acquire_timeout_ms = 30000;      ///< a client waits this long for a connection
  std::string reset_query = "DISCARD ALL";       ///< session mode: run when a client gives one back
  std::uint32_t max_prepared_statements = 1000;  ///< per server connection (transaction mode)
  /// Transaction mode: a client idle this long without a server connection is parked (its
  /// session shrinks to what its next transaction needs); 0 never parks.
  std::uint32_t park_after_ms = 20;
};

enum class AuthMethod { kScramSha256, kMd5, kTrust };

struct AuthSettings {
  /// True when an [auth] table is present: pgrelay authenticates clients itself and pools
  /// server connections. Without it logins pass through to the primary (one server connection
  /// per client, no pooling).
  bool enabled = false;
  AuthMethod method = AuthMethod::kScramSha256;
  std::string file;  ///< resolved against the config file's directory
  std::string query;
  std::uint32_t cache_ttl_ms = 60000;  ///< how long a secret fetched by `query` is reused
  /// Users who may open the admin console (database "pgrelay"): PAUSE, RESUME, SWITCHOVER, SHOW.
  std::vector<std::string> admin_users;
};

struct MonitorSettings {
  std::string user = "pgrelay";
  std::string password;
  std::string database = "postgres";
  std::uint32_t interval_ms = 1000;
  std::uint32_t failure_threshold = 3;
};

struct RoutingSettings {
  bool read_write_split = true;
  std::uint64_t max_lag_bytes = std::uint64_t{16} * 1024 * 1024;
  std::uint32_t max_lag_ms = 1000;
  bool read_your_writes = true;
  /// When a client's commit LSN is read (read_your_writes).
  WatermarkMode watermark = WatermarkMode::kAuto;
  std::uint32_t primary_wait_ms = 30000;
  /// Functions (bare or schema-qualified names) a read-only query may call besides pg_catalog's
  /// non-volatile ones.
  std::vector<std::string> read_only_functions;
};

struct TlsSettings {
  std::string cert;  ///< PEM certificate chain, resolved against the config file's directory
  std::string key;   ///< PEM private key
};

struct LimitSettings {
  std::uint32_t max_clients = 10000;
  std::uint32_t max_message_bytes = 0x3fffffff;  ///< PostgreSQL's own 1 GiB message limit
  std::uint32_t startup_timeout_ms = 60000;      ///< startup packet and login must finish in this
  std::uint32_t connect_timeout_ms = 5000;       ///< TCP connect to a backend
  std::uint32_t shutdown_timeout_ms = 30000;     ///< SIGTERM: how long in-flight work may finish
};

struct LogSettings {
  std::string level = "info";  ///< trace | debug | info | warn | error | off
};

struct BackendSettings {
  std::string name;
  std::string host;
  std::uint16_t port = 5432;
  std::uint32_t weight = 1;
};

/// A whole, validated configuration. Immutable once loaded; a reload builds a new one.
struct Config {
  std::string path;  ///< the file it came from
  ListenSettings listen;
  HttpSettings http;
  PoolSettings pool;
  AuthSettings auth;
  MonitorSettings monitor;
  RoutingSettings routing;
  std::optional<TlsSettings> tls;
  LimitSettings limits;
  LogSettings log;
  std::vector<BackendSettings> backends;
  /// Keys that parse and validate but whose feature is not built yet: one warning each at start.
  std::vector<std::string> inactive_notes;
};

struct ConfigError {
  std::string file;
  std::uint32_t line = 0;  ///< 0 when the error is not tied to a line
  std::string message;
  /// "FILE:LINE: message"
  [[nodiscard]] std::string format() const;
};

struct LoadResult {
  std::shared_ptr<const Config> config;  ///< null when `errors` is not empty
  std::vector<ConfigError> errors;
};

/// Parses and validates TOML text. `path` names the source in errors and anchors relative paths.
[[nodiscard]] LoadResult parse_config(std::string_view text, const std::string& path);

/// Reads and parses a file.
[[nodiscard]] LoadResult load_config(const std::string& path);

[[nodiscard]] std::string_view to_string(PoolMode mode);
[[nodiscard]] std::string_view to_string(AuthMethod method);

}  // namespace pgrelay::config
