// TOML → Config: every key typed, range-checked, unknown keys rejected with a did-you-mean hint.
#include "pgrelay/config/config.hpp"

#include <toml++/toml.h>
#include <unistd.h>
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <limits>
#include <set>
#include <sstream>

namespace pgrelay::config {

std::string ConfigError::format() const {
  std::ostringstream out;
  out << file << ':' << line << ": " << message;
  return out.str();
}

std::string_view to_string(PoolMode mode) {
  return mode == PoolMode::kSession ? "session" : "transaction";
}

std::string_view to_string(AuthMethod method) {
  switch (method) {
    case AuthMethod::kScramSha256:
      return "scram-sha-256";
    case AuthMethod::kMd5:
      return "md5";
    case AuthMethod::kTrust:
      return "trust";
  }
  return "?";
}

namespace {

std::size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<std::size_t> row(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    std::size_t diag = row[0];
    row[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      const std::size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diag = up;
    }
  }
  return row[b.size()];
}

/// " (did you mean 'x'?)" for the closest candidate within a small edit distance, else "".
std::string did_you_mean(std::string_view word, const std::vector<std::string_view>& candidates) {
  std::string_view best;
  std::size_t best_distance = std::max<std::size_t>(2, word.size() / 3) + 1;
  for (auto candidate : candidates) {
    const std::size_t d = edit_distance(word, candidate);
    if (d < best_distance) {
      best_distance = d;
      best = candidate;
    }
  }
  if (best.empty()) return {};
  return "; did you mean '" + std::string(best) + "'?";
}

class Reader {
 public:
  Reader(std::string file, std::vector<ConfigError>& errors)
      : file_(std::move(file)), errors_(errors) {}

  void error(const toml::source_region& where, std::string message) {
    errors_.push_back({file_, where.begin.line, std::move(message)});
  }
  void error(std::string message) { errors_.push_back({file_, 0, std::move(message)}); }

  /// An optional array of non-empty strings: "SECTION.KEY must be WHAT" when it is not an
  /// array, "SECTION.KEY must hold ITEMS" for an element that is not a non-empty string.
  void names(const toml::table& table, std::string_view section, std::string_view key,
             std::string_view what, std::string_view items, std::vector<std::string>& out) {
    const toml::node* node = table.get(key);
    if (node == nullptr) return;
    const std::string full = std::string(section) + "." + std::string(key);
    const toml::array* array = node->as_array();
    if (array == nullptr) {
      error(node->source(), full + " must be " + std::string(what));
      return;
    }
    for (const toml::node& element : *array) {
      const auto value = element.value_exact<std::string>();
      if (!value || value->empty()) {
        error(element.source(), full + " must hold " + std::string(items));
      } else {
        out.push_back(*value);
      }
    }
  }

  /// Reports keys of `table` that are not in `known`.
  void check_keys(const toml::table& table, std::string_view where,
                  const std::vector<std::string_view>& known) {
    for (auto&& [key, node] : table) {
      if (std::find(known.begin(), known.end(), key.str()) == known.end()) {
        error(key.source(), "unknown key '" + std::string(key.str()) + "' in " +
                                std::string(where) + did_you_mean(key.str(), known));
      }
    }
  }

  template <typename T>
  void integer(const toml::table& table, std::string_view where, std::string_view key, T& out,
               std::int64_t min, std::int64_t max) {
    const toml::node* node = table.get(key);
    if (node == nullptr) return;
    const auto value = node->value_exact<std::int64_t>();
    if (!value) {
      error(node->source(), key_name(where, key) + " must be an integer");
    } else if (*value < min || *value > max) {
      error(node->source(), key_name(where, key) + " must be between " + std::to_string(min) +
                                " and " + std::to_string(max) + ", got " + std::to_string(*value));
    } else {
      out = static_cast<T>(*value);
    }
  }

  void boolean(const toml::table& table, std::string_view where, std::string_view key, bool& out) {
    const toml::node* node = table.get(key);
    if (node == nullptr) return;
    if (const auto value = node->value_exact<bool>()) {
      out = *value;
    } else {
      error(node->source(), key_name(where, key) + " must be true or false");
    }
  }

  void string(const toml::table& table, std::string_view where, std::string_view key,
              std::string& out, bool allow_empty = false) {
    const toml::node* node = table.get(key);
    if (node == nullptr) return;
    const auto value = node->value_exact<std::string>();
    if (!value) {
      error(node->source(), key_name(where, key) + " must be a string");
    } else if (!allow_empty && value->empty()) {
      error(node->source(), key_name(where, key) + " must not be empty");
    } else {
      out = *value;
    }
  }

  /// A string that must be one of `choices`; returns its index, or -1 when absent or invalid.
  int choice(const toml::table& table, std::string_view where, std::string_view key,
             const std::vector<std::string_view>& choices) {
    const toml::node* node = table.get(key);
    if (node == nullptr) return -1;
    const auto value = node->value_exact<std::string>();
    if (value) {
      for (std::size_t i = 0; i < choices.size(); ++i) {
        if (choices[i] == *value) return static_cast<int>(i);
      }
    }
    std::string list;
    for (auto c : choices) list += (list.empty() ? "\"" : ", \"") + std::string(c) + "\"";
    error(node->source(), key_name(where, key) + " must be one of " + list +
                              (value ? did_you_mean(*value, choices) : std::string()));
    return -1;
  }

  /// A readable file; relative paths are taken from the config file's directory.
  void file_path(const toml::table& table, std::string_view where, std::string_view key,
                 std::string& out) {
    std::string raw;
    string(table, where, key, raw);
    if (raw.empty()) return;
    std::filesystem::path path(raw);
    if (path.is_relative()) path = std::filesystem::path(file_).parent_path() / path;
    std::error_code ec;
    if (!std::filesystem::is_regular_file(path, ec) || ::access(path.c_str(), R_OK) != 0) {
      error(table.get(key)->source(),
            key_name(where, key) + ": cannot read file \"" + path.string() + "\"");
      return;
    }
    out = path.string();
  }

  /// The table under `key`, or null. Reports a non-table value.
  const toml::table* section(const toml::table& root, std::string_view key) {
    const toml::node* node = root.get(key);
    if (node == nullptr) return nullptr;
    if (!node->is_table()) {
      error(node->source(),
            "'" + std::string(key) + "' must be a table ([" + std::string(key) + "])");
      return nullptr;
    }
    return node->as_table();
  }

 private:
  static std::string key_name(std::string_view where, std::string_view key) {
    return std::string(where) + "." + std::string(key);
  }

  std::string file_;
  std::vector<ConfigError>& errors_;
};

constexpr std::int64_t kMaxPort = 65535;
constexpr std::int64_t kMaxMillis = 24LL * 3600 * 1000;

void read_backends(Reader& r, const toml::table& root, Config& config) {
  const toml::node* node = root.get("backend");
  if (node == nullptr) {
    r.error("at least one [[backend]] is required");
    return;
  }
  const toml::array* array = node->as_array();
  if (array == nullptr) {
    r.error(node->source(), "'backend' must be an array of tables: write [[backend]]");
    return;
  }
  std::set<std::string> names;
  for (const toml::node& element : *array) {
    const toml::table* table = element.as_table();
    if (table == nullptr) {
      r.error(element.source(), "each backend must be a table");
      continue;
    }
    BackendSettings backend;
    const std::string where = "[[backend]]";
    r.check_keys(*table, where, {"name", "host", "port", "weight"});
    r.string(*table, where, "name", backend.name);
    r.string(*table, where, "host", backend.host);
    std::uint16_t port = 0;
    r.integer(*table, where, "port", port, 1, kMaxPort);
    if (port != 0) backend.port = port;
    r.integer(*table, where, "weight", backend.weight, 0, 1000);
    if (!table->contains("name")) r.error(table->source(), "backend.name is required");
    if (!table->contains("host")) r.error(table->source(), "backend.host is required");
    if (!backend.name.empty() && !names.insert(backend.name).second) {
      r.error(table->get("name")->source(),
              "backend name \"" + backend.name + "\" is used more than once");
    }
    config.backends.push_back(std::move(backend));
  }
  if (array->empty()) r.error(node->source(), "at least one [[backend]] is required");
}

void read_config(Reader& r, const toml::table& root, Config& config) {
  r.check_keys(
      root, "the top level",
      {"listen", "http", "pool", "auth", "monitor", "routing", "tls", "limits", "log", "backend"});

  if (const auto* t = r.section(root, "listen")) {
    r.check_keys(*t, "[listen]", {"address", "port", "workers"});
    r.string(*t, "listen", "address", config.listen.address);
    r.integer(*t, "listen", "port", config.listen.port, 1, kMaxPort);
    r.integer(*t, "listen", "workers", config.listen.workers, 0, 256);
  }
  if (const auto* t = r.section(root, "http")) {
    config.http.enabled = true;
    r.check_keys(*t, "[http]", {"address", "port"});
    r.string(*t, "http", "address", config.http.address);
    r.integer(*t, "http", "port", config.http.port, 1, kMaxPort);
  }
  if (const auto* t = r.section(root, "pool")) {
    r.check_keys(*t, "[pool]",
                 {"mode", "max_size", "min_idle", "idle_timeout_ms", "lifetime_ms",
                  "acquire_timeout_ms", "reset_query", "max_prepared_statements", "park_after_ms"});
    const int mode = r.choice(*t, "pool", "mode", {"session", "transaction"});
    if (mode == 1) config.pool.mode = PoolMode::kTransaction;
    r.integer(*t, "pool", "max_size", config.pool.max_size, 1, 100000);
    r.integer(*t, "pool", "min_idle", config.pool.min_idle, 0, 100000);
    r.integer(*t, "pool", "idle_timeout_ms", config.pool.idle_timeout_ms, 0, kMaxMillis);
    r.integer(*t, "pool", "lifetime_ms", config.pool.lifetime_ms, 0, kMaxMillis);
    r.integer(*t, "pool", "acquire_timeout_ms", config.pool.acquire_timeout_ms, 0, kMaxMillis);
    r.string(*t, "pool", "reset_query", config.pool.reset_query, true);
    r.integer(*t, "pool", "max_prepared_statements", config.pool.max_prepared_statements, 1,
              1000000);
    r.integer(*t, "pool", "park_after_ms", config.pool.park_after_ms, 0, kMaxMillis);
    if (config.pool.min_idle > config.pool.max_size) {
      r.error(t->get("min_idle")->source(), "pool.min_idle must not exceed pool.max_size (" +
                                                std::to_string(config.pool.max_size) + ")");
    }
  }
  if (const auto* t = r.section(root, "auth")) {
    config.auth.enabled = true;
    r.check_keys(*t, "[auth]", {"method", "file", "query", "cache_ttl_ms", "admin_users"});
    r.names(*t, "auth", "admin_users", "an array of user names", "user names",
            config.auth.admin_users);
    const int method = r.choice(*t, "auth", "method", {"scram-sha-256", "md5", "trust"});
    if (method >= 0) config.auth.method = static_cast<AuthMethod>(method);
    r.file_path(*t, "auth", "file", config.auth.file);
    r.string(*t, "auth", "query", config.auth.query, true);
    r.integer(*t, "auth", "cache_ttl_ms", config.auth.cache_ttl_ms, 0, kMaxMillis);

    const bool method_valid = method >= 0 || !t->contains("method");
    if (method_valid && config.auth.method != AuthMethod::kTrust && !t->contains("file") &&
        config.auth.query.empty()) {
      r.error(t->source(), "[auth] method \"" + std::string(to_string(config.auth.method)) +
                               "\" needs auth.file or auth.query to find passwords");
    }
  }
  if (const auto* t = r.section(root, "monitor")) {
    r.check_keys(*t, "[monitor]",
                 {"user", "password", "database", "interval_ms", "failure_threshold"});
    r.string(*t, "monitor", "user", config.monitor.user);
    r.string(*t, "monitor", "password", config.monitor.password, true);
    r.string(*t, "monitor", "database", config.monitor.database);
    r.integer(*t, "monitor", "interval_ms", config.monitor.interval_ms, 10, 600000);
    r.integer(*t, "monitor", "failure_threshold", config.monitor.failure_threshold, 1, 1000);
  }
  if (const auto* t = r.section(root, "routing")) {
    r.check_keys(*t, "[routing]",
                 {"read_write_split", "max_lag_bytes", "max_lag_ms", "read_your_writes",
                  "watermark", "primary_wait_ms", "read_only_functions"});
    r.names(*t, "routing", "read_only_functions", "an array of strings", "function names",
            config.routing.read_only_functions);
    r.boolean(*t, "routing", "read_write_split", config.routing.read_write_split);
    r.integer(*t, "routing", "max_lag_bytes", config.routing.max_lag_bytes, 0,
              std::numeric_limits<std::int64_t>::max());
    r.integer(*t, "routing", "max_lag_ms", config.routing.max_lag_ms, 0, kMaxMillis);
    r.boolean(*t, "routing", "read_your_writes", config.routing.read_your_writes);
    const int watermark = r.choice(*t, "routing", "watermark", {"auto", "lazy", "eager"});
    if (watermark >= 0) config.routing.watermark = static_cast<WatermarkMode>(watermark);
    r.integer(*t, "routing", "primary_wait_ms", config.routing.primary_wait_ms, 0, kMaxMillis);
  }
  if (const auto* t = r.section(root, "tls")) {
    r.check_keys(*t, "[tls]", {"cert", "key"});
    TlsSettings tls;
    r.file_path(*t, "tls", "cert", tls.cert);
    r.file_path(*t, "tls", "key", tls.key);
    if (!t->contains("cert")) r.error(t->source(), "tls.cert is required when [tls] is set");
    if (!t->contains("key")) r.error(t->source(), "tls.key is required when [tls] is set");
    config.tls = std::move(tls);
  }
  if (const auto* t = r.section(root, "limits")) {
    r.check_keys(*t, "[limits]",
                 {"max_clients", "max_message_bytes", "startup_timeout_ms", "connect_timeout_ms",
                  "shutdown_timeout_ms"});
    r.integer(*t, "limits", "max_clients", config.limits.max_clients, 1, 1000000);
    r.integer(*t, "limits", "max_message_bytes", config.limits.max_message_bytes, 1024, 0x3fffffff);
    r.integer(*t, "limits", "startup_timeout_ms", config.limits.startup_timeout_ms, 10, kMaxMillis);
    r.integer(*t, "limits", "connect_timeout_ms", config.limits.connect_timeout_ms, 10, kMaxMillis);
    r.integer(*t, "limits", "shutdown_timeout_ms", config.limits.shutdown_timeout_ms, 0,
              kMaxMillis);
  }
  if (const auto* t = r.section(root, "log")) {
    r.check_keys(*t, "[log]", {"level"});
    const int level =
        r.choice(*t, "log", "level", {"trace", "debug", "info", "warn", "error", "off"});
    static constexpr std::string_view kLevels[] = {"trace", "debug", "info",
                                                   "warn",  "error", "off"};
    if (level >= 0) config.log.level = kLevels[level];
  }
  if (config.pool.mode == PoolMode::kTransaction && !config.auth.enabled) {
    const toml::node* mode = root.at_path("pool.mode").node();
    r.error(mode != nullptr ? mode->source() : toml::source_region{},
            "pool.mode = \"transaction\" needs an [auth] table: pgrelay must log clients in "
            "itself to lend them pooled server connections");
  }
  if (root.get("routing") != nullptr && config.routing.read_write_split && !config.auth.enabled) {
    config.inactive_notes.emplace_back(
        "read splitting ([routing] read_write_split) applies to clients pgrelay logs in itself "
        "([auth]); without it every session passes through to the primary");
  }
  read_backends(r, root, config);
}

}  // namespace

LoadResult parse_config(std::string_view text, const std::string& path) {
  LoadResult result;
  auto config = std::make_shared<Config>();
  config->path = path;
  Reader reader(path, result.errors);
  try {
    const toml::table root = toml::parse(text, path);
    read_config(reader, root, *config);
  } catch (const toml::parse_error& e) {
    result.errors.push_back({path, e.source().begin.line, std::string(e.description())});
  }
  std::stable_sort(result.errors.begin(), result.errors.end(),
                   [](const ConfigError& a, const ConfigError& b) { return a.line < b.line; });
  if (result.errors.empty()) result.config = std::move(config);
  return result;
}

LoadResult load_config(const std::string& path) {
  std::error_code ec;
  std::ifstream in(path, std::ios::binary);
  if (!in || !std::filesystem::is_regular_file(path, ec)) {
    LoadResult result;
    result.errors.push_back({path, 0, "cannot read configuration file"});
    return result;
  }
  std::ostringstream text;
  text << in.rdbuf();
  return parse_config(text.str(), path);
}

}  // namespace pgrelay::config
