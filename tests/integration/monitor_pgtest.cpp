// Cluster monitor against a real cluster: /topology roles, LSNs and replay lag, /ready, /metrics.
#include <gtest/gtest.h>

#include <algorithm>
#include <boost/json.hpp>
#include <chrono>
#include <cmath>
#include <functional>
#include <iostream>
#include <limits>
#include <map>
#include <optional>
#include <regex>
#include <set>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#include "cluster_fixture.hpp"

namespace pgrelay::test {
namespace {

using namespace std::chrono_literals;
namespace json = boost::json;
using Clock = std::chrono::steady_clock;

const std::string kMonitor =
    "[monitor]\nuser = \"pgrelay\"\npassword = \"pgrelay\"\ninterval_ms = 200\n";
const std::string kCreateTable =
    "CREATE TABLE IF NOT EXISTS monitor_lag (v int, pad text) WITH (autovacuum_enabled = false)";
// About 2000 heap-insert records: a few hundred KiB of WAL per write.
const std::string kInsert =
    "INSERT INTO monitor_lag SELECT g, repeat('x', 40) FROM generate_series(1, 2000) g";

/// Runs `cleanup` when the scope ends, also when an ASSERT returns early.
struct Cleanup {
  std::function<void()> cleanup;
  ~Cleanup() {
    if (cleanup) cleanup();
  }
};

// ------------------------------------------------------------------------------------------
// /topology
// ------------------------------------------------------------------------------------------

struct NodeView {
  std::string name;
  std::string host;
  std::string role;
  std::string lsn;  ///< "" when null
  std::uint64_t port = 0;
  std::uint64_t timeline = 0;
  std::uint64_t lag_bytes = 0;
  std::uint64_t lag_ms = 0;
  std::uint64_t rtt_us = 0;
  std::int64_t clients = 0;
  bool eligible = false;
  bool streaming = false;
  std::string last_error;
};

/// One /topology answer, checked against the INTERFACE.md schema.
struct TopologyView {
  bool ok = false;      ///< fetched, parsed and of the documented shape
  std::string problem;  ///< why not
  std::string raw;
  std::optional<std::string> primary;
  std::uint64_t generation = 0;
  std::vector<NodeView> nodes;

  [[nodiscard]] const NodeView* node(std::string_view name) const {
    for (const auto& n : nodes) {
      if (n.name == name) return &n;
    }
    return nullptr;
  }
};

std::uint64_t parse_lsn(const std::string& text) {
  const auto slash = text.find('/');
  return (std::stoull(text.substr(0, slash), nullptr, 16) << 32) |
         std::stoull(text.substr(slash + 1), nullptr, 16);
}

TopologyView fetch_topology(int http_port) {
  TopologyView view;
  const auto response = http_get(http_port, "/topology");
  view.raw = response.body;
  if (response.status != 200) {
    view.problem = "HTTP status " + std::to_string(response.status);
    return view;
  }
  boost::system::error_code ec;
  const json::value root = json::parse(response.body, ec);
  if (ec || !root.is_object()) {
    view.problem = "not a JSON object: " + ec.message();
    return view;
  }
  std::string problem;
  const auto& object = root.as_object();
  const auto get_uint = [&](const json::object& o, const char* key, auto& out) {
    const auto* v = o.if_contains(key);
    if (v != nullptr && v->is_uint64()) {
      out = static_cast<std::remove_reference_t<decltype(out)>>(v->as_uint64());
    } else if (v != nullptr && v->is_int64() && v->as_int64() >= 0) {
      out = static_cast<std::remove_reference_t<decltype(out)>>(v->as_int64());
    } else {
      problem += std::string("\"") + key + "\" is not a non-negative integer; ";
    }
  };
  const auto get_string = [&](const json::object& o, const char* key, std::string& out) {
    const auto* v = o.if_contains(key);
    if (v != nullptr && v->is_string()) {
      out = std::string(v->as_string());
    } else {
      problem += std::string("\"") + key + "\" is not a string; ";
    }
  };
  const auto get_bool = [&](const json::object& o, const char* key, bool& out) {
    const auto* v = o.if_contains(key);
    if (v != nullptr && v->is_bool()) {
      out = v->as_bool();
    } else {
      problem += std::string("\"") + key + "\" is not a bool; ";
    }
  };

  if (const auto* p = object.if_contains("primary"); p != nullptr && p->is_string()) {
    view.primary = std::string(p->as_string());
  } else if (p == nullptr || !p->is_null()) {
    problem += "\"primary\" is neither a string nor null; ";
  }
  get_uint(object, "generation", view.generation);
  const auto* nodes = object.if_contains("nodes");
  if (nodes == nullptr || !nodes->is_array()) {
    problem += "\"nodes\" is not an array; ";
  } else {
    static const std::regex kLsn("[0-9A-F]{1,8}/[0-9A-F]{1,8}");
    static const std::set<std::string> kRoles = {"primary", "standby", "down", "fenced", "unknown"};
    for (const auto& item : nodes->as_array()) {
      if (!item.is_object()) {
        problem += "a node is not an object; ";
        continue;
      }
      const auto& o = item.as_object();
      NodeView n;
      get_string(o, "name", n.name);
      get_string(o, "host", n.host);
      get_uint(o, "port", n.port);
      get_string(o, "role", n.role);
      get_uint(o, "timeline", n.timeline);
      get_uint(o, "replay_lag_bytes", n.lag_bytes);
      get_uint(o, "replay_lag_ms", n.lag_ms);
      get_bool(o, "eligible", n.eligible);
      get_bool(o, "streaming", n.streaming);
      get_uint(o, "probe_rtt_us", n.rtt_us);
      if (const auto* c = o.if_contains("clients"); c != nullptr && c->is_int64()) {
        n.clients = c->as_int64();
      } else if (c != nullptr && c->is_uint64()) {
        n.clients = static_cast<std::int64_t>(c->as_uint64());
      } else {
        problem += "\"clients\" is not an integer; ";
      }
      if (const auto* lsn = o.if_contains("lsn"); lsn != nullptr && lsn->is_string()) {
        n.lsn = std::string(lsn->as_string());
        if (!std::regex_match(n.lsn, kLsn)) problem += n.name + " lsn \"" + n.lsn + "\" not X/Y; ";
      } else if (lsn == nullptr || !lsn->is_null()) {
        problem += "\"lsn\" is neither a string nor null; ";
      }
      if (const auto* e = o.if_contains("last_error"); e != nullptr) {
        if (e->is_string()) {
          n.last_error = std::string(e->as_string());
        } else {
          problem += "\"last_error\" is not a string; ";
        }
      }
      if (kRoles.count(n.role) == 0) problem += n.name + " has role \"" + n.role + "\"; ";
      view.nodes.push_back(std::move(n));
    }
  }
  view.problem = problem;
  view.ok = problem.empty();
  return view;
}

std::string describe(const NodeView& n) {
  return n.name + ": role " + n.role + ", timeline " + std::to_string(n.timeline) + ", lsn " +
         (n.lsn.empty() ? "null" : n.lsn) + ", lag " + std::to_string(n.lag_bytes) + " B / " +
         std::to_string(n.lag_ms) + " ms, eligible " + (n.eligible ? "yes" : "no") +
         ", streaming " + (n.streaming ? "yes" : "no") +
         (n.last_error.empty() ? "" : ", last_error " + n.last_error);
}

/// Polls /topology every 100 ms until `predicate` holds or `timeout` passes; `last` gets the
/// final answer either way.
bool wait_topology(const Proxy& proxy, std::chrono::milliseconds timeout,
                   const std::function<bool(const TopologyView&)>& predicate, TopologyView* last,
                   std::vector<TopologyView>* all = nullptr) {
  const auto deadline = Clock::now() + timeout;
  while (true) {
    *last = fetch_topology(proxy.http_port());
    if (all != nullptr) all->push_back(*last);
    if (last->ok && predicate(*last)) return true;
    if (Clock::now() >= deadline) return false;
    std::this_thread::sleep_for(100ms);
  }
}

/// A node's lag in ms, or UINT64_MAX when the node is missing.
std::uint64_t lag_ms(const TopologyView& t, std::string_view name) {
  const auto* n = t.node(name);
  return n != nullptr ? n->lag_ms : std::numeric_limits<std::uint64_t>::max();
}

bool has_nodes(const TopologyView& t, std::initializer_list<std::string_view> names) {
  return t.ok && std::all_of(names.begin(), names.end(),
                             [&](std::string_view name) { return t.node(name) != nullptr; });
}

bool caught_up(const TopologyView& t, std::string_view name) {
  const auto* n = t.node(name);
  return n != nullptr && n->role == "standby" && n->streaming && n->eligible && n->lag_bytes == 0 &&
         n->lag_ms == 0;
}

bool settled(const TopologyView& t, std::initializer_list<std::string_view> standbys) {
  if (t.primary != "node1") return false;
  return std::all_of(standbys.begin(), standbys.end(),
                     [&](std::string_view name) { return caught_up(t, name); });
}

/// In every snapshot a standby's lag in bytes is the primary's LSN minus the standby's (the
/// primary reports its current LSN, a standby its replay LSN), never negative.
std::string lag_bytes_mismatch(const TopologyView& t) {
  const NodeView* primary = t.primary ? t.node(*t.primary) : nullptr;
  if (primary == nullptr || primary->lsn.empty()) return {};
  const auto primary_lsn = parse_lsn(primary->lsn);
  std::string out;
  for (const auto& n : t.nodes) {
    if (n.role != "standby" || n.lsn.empty()) continue;
    const auto lsn = parse_lsn(n.lsn);
    const std::uint64_t expected = primary_lsn > lsn ? primary_lsn - lsn : 0;
    if (n.lag_bytes != expected) {
      out += n.name + " replay_lag_bytes " + std::to_string(n.lag_bytes) + " but " + primary->lsn +
             " - " + n.lsn + " = " + std::to_string(expected) + "; ";
    }
  }
  return out;
}

std::string primary_conninfo() {
  return "host=127.0.0.1 port=" + std::to_string(Cluster::get().node("node1").port) +
         " user=app password=app dbname=app sslmode=disable connect_timeout=10";
}

bool is_error(const std::string& result) { return result.rfind("ERROR", 0) == 0; }

/// Prepares a direct connection to the primary for writing: notices are dropped, and commits
/// are flushed at once (the cluster runs with synchronous_commit = off, where a commit record
/// can wait up to wal_writer_delay before pg_current_wal_lsn() passes it).
std::string prepare_writer(PgConn& conn) {
  PQsetNoticeProcessor(
      conn.conn, [](void*, const char*) {}, nullptr);
  return conn.value("SET synchronous_commit = on");
}

/// Writes on the primary every 200 ms for `duration`, fetching /topology every 50 ms (so the
/// samples are not all taken at the same phase of the probe and write cycles).
std::vector<TopologyView> write_and_sample(PgConn& writer, const Proxy& proxy,
                                           std::chrono::milliseconds duration,
                                           std::string* errors) {
  std::vector<TopologyView> samples;
  const auto start = Clock::now();
  for (int i = 0; i * 50ms < duration; ++i) {
    if (i % 4 == 0) {
      const auto result = writer.value(kInsert);
      if (is_error(result)) *errors += result + "\n";
    }
    samples.push_back(fetch_topology(proxy.http_port()));
    std::this_thread::sleep_until(start + (i + 1) * 50ms);
  }
  return samples;
}

// ------------------------------------------------------------------------------------------
// A strict parser for the Prometheus text exposition format 0.0.4
// ------------------------------------------------------------------------------------------

struct MetricSample {
  std::string name;
  std::string family;
  std::map<std::string, std::string> labels;  ///< unescaped values
  double value = 0;
};

struct Exposition {
  std::map<std::string, std::string> types;  ///< family -> counter|gauge|histogram|...
  std::vector<MetricSample> samples;
  std::vector<std::string> errors;

  [[nodiscard]] bool valid() const { return errors.empty(); }
  [[nodiscard]] std::string error_text() const {
    std::string out;
    for (const auto& e : errors) out += e + "\n";
    return out;
  }
  /// Samples named `name` whose labels include `labels`.
  [[nodiscard]] std::vector<const MetricSample*> find(
      std::string_view name, const std::map<std::string, std::string>& labels = {}) const {
    std::vector<const MetricSample*> out;
    for (const auto& s : samples) {
      if (s.name != name) continue;
      const bool match = std::all_of(labels.begin(), labels.end(), [&](const auto& kv) {
        const auto it = s.labels.find(kv.first);
        return it != s.labels.end() && it->second == kv.second;
      });
      if (match) out.push_back(&s);
    }
    return out;
  }
  /// The value of the one sample that matches, if exactly one does.
  [[nodiscard]] std::optional<double> value(
      std::string_view name, const std::map<std::string, std::string>& labels = {}) const {
    const auto found = find(name, labels);
    if (found.size() != 1) return std::nullopt;
    return found.front()->value;
  }
};

bool is_blank(char c) { return c == ' ' || c == '\t'; }
bool is_alpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
bool is_digit(char c) { return c >= '0' && c <= '9'; }

bool valid_metric_name(std::string_view s) {
  if (s.empty() || !(is_alpha(s[0]) || s[0] == '_' || s[0] == ':')) return false;
  return std::all_of(s.begin(), s.end(),
                     [](char c) { return is_alpha(c) || is_digit(c) || c == '_' || c == ':'; });
}

bool valid_label_name(std::string_view s) {
  if (s.empty() || !(is_alpha(s[0]) || s[0] == '_')) return false;
  return std::all_of(s.begin(), s.end(),
                     [](char c) { return is_alpha(c) || is_digit(c) || c == '_'; });
}

std::optional<double> parse_float(std::string_view s) {
  if (s == "+Inf" || s == "Inf") return std::numeric_limits<double>::infinity();
  if (s == "-Inf") return -std::numeric_limits<double>::infinity();
  if (s == "NaN") return std::numeric_limits<double>::quiet_NaN();
  static const std::regex kFloat(R"([+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?)");
  const std::string text(s);
  if (!std::regex_match(text, kFloat)) return std::nullopt;
  return std::strtod(text.c_str(), nullptr);
}

std::string series_key(const std::string& name, const std::map<std::string, std::string>& labels) {
  std::string key = name + "{";
  for (const auto& [k, v] : labels) key += k + "=\"" + v + "\",";
  return key + "}";
}

/// Parses a whole /metrics body; every deviation from the format is an entry in `errors`.
Exposition parse_exposition(std::string_view text) {
  Exposition out;
  std::size_t line_no = 0;
  const auto error = [&](const std::string& message) {
    out.errors.push_back("line " + std::to_string(line_no) + ": " + message);
  };
  if (text.empty()) error("empty body");
  if (!text.empty() && text.back() != '\n') error("the body does not end with a newline");

  std::set<std::string> helps;
  std::set<std::string> series;
  std::set<std::string> closed;        // families whose group of lines has ended
  std::set<std::string> with_samples;  // families that have had samples
  std::string current;
  // All lines of a family must form one group.
  const auto enter = [&](const std::string& family) {
    if (family == current) return;
    if (closed.count(family) != 0) error("lines of family " + family + " are not grouped");
    if (!current.empty()) closed.insert(current);
    current = family;
  };

  std::size_t pos = 0;
  while (pos < text.size()) {
    auto end = text.find('\n', pos);
    if (end == std::string_view::npos) end = text.size();
    const std::string_view line = text.substr(pos, end - pos);
    pos = end + 1;
    ++line_no;
    if (line.empty()) continue;  // empty lines are ignored by the format

    if (line.front() == '#') {
      std::size_t i = 1;
      while (i < line.size() && is_blank(line[i])) ++i;
      std::size_t j = i;
      while (j < line.size() && !is_blank(line[j])) ++j;
      const auto keyword = line.substr(i, j - i);
      if (keyword != "HELP" && keyword != "TYPE") continue;  // a plain comment
      const std::string prefix = "# " + std::string(keyword) + " ";
      if (line.substr(0, prefix.size()) != prefix) {
        error("malformed " + std::string(keyword) + " line");
        continue;
      }
      const auto rest = line.substr(prefix.size());
      const auto space = rest.find(' ');
      const std::string name(rest.substr(0, space));
      if (!valid_metric_name(name)) {
        error("invalid metric name \"" + name + "\" in " + std::string(keyword));
        continue;
      }
      enter(name);
      if (keyword == "HELP") {
        const auto help = space == std::string_view::npos ? "" : rest.substr(space + 1);
        for (std::size_t k = 0; k < help.size(); ++k) {
          if (help[k] != '\\') continue;
          if (k + 1 >= help.size() || (help[k + 1] != '\\' && help[k + 1] != 'n')) {
            error("invalid escape in HELP of " + name);
            break;
          }
          ++k;
        }
        if (!helps.insert(name).second) error("second HELP for " + name);
        if (with_samples.count(name) != 0) error("HELP for " + name + " after its samples");
      } else {
        if (space == std::string_view::npos) {
          error("TYPE of " + name + " has no type");
          continue;
        }
        const std::string type(rest.substr(space + 1));
        static const std::set<std::string> kTypes = {"counter", "gauge", "histogram", "summary",
                                                     "untyped"};
        if (kTypes.count(type) == 0) {
          error("unknown type \"" + type + "\" for " + name);
          continue;
        }
        if (with_samples.count(name) != 0) error("TYPE for " + name + " after its samples");
        if (!out.types.emplace(name, type).second) error("second TYPE for " + name);
      }
      continue;
    }

    // name{label="value",...} value [timestamp]
    std::size_t i = 0;
    while (i < line.size() && !is_blank(line[i]) && line[i] != '{') ++i;
    const std::string name(line.substr(0, i));
    if (!valid_metric_name(name)) {
      error("invalid metric name \"" + name + "\"");
      continue;
    }
    std::map<std::string, std::string> labels;
    bool ok = true;
    const auto skip_blanks = [&] {
      while (i < line.size() && is_blank(line[i])) ++i;
    };
    if (i < line.size() && line[i] == '{') {
      ++i;
      while (ok) {
        skip_blanks();
        if (i < line.size() && line[i] == '}') {
          ++i;
          break;
        }
        const std::size_t start = i;
        while (i < line.size() && line[i] != '=' && line[i] != '}' && line[i] != ',' &&
               !is_blank(line[i])) {
          ++i;
        }
        const std::string label(line.substr(start, i - start));
        if (!valid_label_name(label) || label.rfind("__", 0) == 0) {
          error("invalid label name \"" + label + "\" in " + name);
          ok = false;
          break;
        }
        skip_blanks();
        if (i >= line.size() || line[i] != '=') {
          error("no '=' after label " + label + " in " + name);
          ok = false;
          break;
        }
        ++i;
        skip_blanks();
        if (i >= line.size() || line[i] != '"') {
          error("value of label " + label + " in " + name + " is not quoted");
          ok = false;
          break;
        }
        ++i;
        std::string value;
        bool terminated = false;
        while (ok && i < line.size()) {
          const char c = line[i++];
          if (c == '"') {
            terminated = true;
            break;
          }
          if (c != '\\') {
            value += c;
            continue;
          }
          const char escaped = i < line.size() ? line[i++] : '\0';
          if (escaped == '\\' || escaped == '"') {
            value += escaped;
          } else if (escaped == 'n') {
            value += '\n';
          } else {
            error("invalid escape in value of label " + label + " in " + name);
            ok = false;
          }
        }
        if (!ok) break;
        if (!terminated) {
          error("unterminated value of label " + label + " in " + name);
          ok = false;
          break;
        }
        if (!labels.emplace(label, value).second) {
          error("label " + label + " twice in " + name);
          ok = false;
          break;
        }
        skip_blanks();
        if (i < line.size() && line[i] == ',') {
          ++i;
          continue;
        }
        if (i < line.size() && line[i] == '}') {
          ++i;
          break;
        }
        error("expected ',' or '}' after label " + label + " in " + name);
        ok = false;
      }
    }
    if (!ok) continue;
    const std::size_t blanks = i;
    skip_blanks();
    if (i == blanks || i >= line.size()) {
      error("no blank and value after " + name);
      continue;
    }
    const std::size_t value_start = i;
    while (i < line.size() && !is_blank(line[i])) ++i;
    const auto value_text = line.substr(value_start, i - value_start);
    const auto value = parse_float(value_text);
    if (!value) {
      error("value \"" + std::string(value_text) + "\" of " + name + " is not a float");
      continue;
    }
    if (i < line.size()) {
      skip_blanks();
      static const std::regex kTimestamp("-?[0-9]+");
      const std::string timestamp(line.substr(i));
      if (!std::regex_match(timestamp, kTimestamp)) {
        error("trailing \"" + std::string(line.substr(value_start + value_text.size())) +
              "\" after the value of " + name);
        continue;
      }
    }

    // The family: the name itself, or a histogram's (summary's) base name for the suffixes.
    std::string family;
    std::string type;
    if (const auto it = out.types.find(name); it != out.types.end()) {
      family = name;
      type = it->second;
    } else {
      for (const std::string suffix : {"_bucket", "_sum", "_count"}) {
        if (name.size() <= suffix.size() ||
            name.compare(name.size() - suffix.size(), suffix.size(), suffix) != 0) {
          continue;
        }
        const std::string base = name.substr(0, name.size() - suffix.size());
        const auto it = out.types.find(base);
        if (it != out.types.end() &&
            (it->second == "histogram" || (it->second == "summary" && suffix != "_bucket"))) {
          family = base;
          type = it->second;
        }
      }
    }
    if (family.empty()) {
      error("sample " + name + " has no TYPE for its family");
      family = name;
    }
    enter(family);
    with_samples.insert(family);
    if (type == "histogram") {
      if (name == family) error("histogram sample " + name + " without a suffix");
      if (name == family + "_bucket") {
        const auto le = labels.find("le");
        if (le == labels.end() || !parse_float(le->second)) {
          error("bucket of " + family + " without a numeric le label");
        }
      } else if (labels.count("le") != 0) {
        error("le label on " + name);
      }
      if (name != family + "_sum" && (std::isnan(*value) || *value < 0)) {
        error("negative or NaN count in " + name);
      }
    }
    if (type == "counter" && (std::isnan(*value) || *value < 0)) {
      error("counter " + name + " is negative or NaN");
    }
    if (type == "summary" && name == family && labels.count("quantile") == 0) {
      error("summary sample " + name + " without a quantile label");
    }
    if (!series.insert(series_key(name, labels)).second) {
      error("duplicate series " + series_key(name, labels));
    }
    out.samples.push_back({name, family, std::move(labels), *value});
  }

  // Histograms: per label set, buckets cumulative, a +Inf bucket equal to _count, and a _sum.
  line_no = 0;
  for (const auto& [family, type] : out.types) {
    if (type != "histogram") continue;
    struct Group {
      std::vector<std::pair<double, double>> buckets;  // (le, count)
      std::optional<double> count;
      std::optional<double> sum;
    };
    std::map<std::string, Group> groups;
    for (const auto& s : out.samples) {
      if (s.family != family) continue;
      auto labels = s.labels;
      labels.erase("le");
      auto& group = groups[series_key(family, labels)];
      if (s.name == family + "_bucket") {
        const auto le = s.labels.find("le");
        const auto bound = le == s.labels.end() ? std::nullopt : parse_float(le->second);
        if (bound) group.buckets.emplace_back(*bound, s.value);
      } else if (s.name == family + "_count") {
        group.count = s.value;
      } else if (s.name == family + "_sum") {
        group.sum = s.value;
      }
    }
    for (auto& [key, group] : groups) {
      std::sort(group.buckets.begin(), group.buckets.end());
      for (std::size_t b = 1; b < group.buckets.size(); ++b) {
        if (group.buckets[b].first == group.buckets[b - 1].first) {
          error(key + ": two buckets with le " + std::to_string(group.buckets[b].first));
        }
        if (group.buckets[b].second < group.buckets[b - 1].second) {
          error(key + ": buckets not cumulative at le " + std::to_string(group.buckets[b].first));
        }
      }
      if (group.buckets.empty() ||
          group.buckets.back().first != std::numeric_limits<double>::infinity()) {
        error(key + ": no le=\"+Inf\" bucket");
      } else if (!group.count) {
        error(key + ": no _count");
      } else if (*group.count != group.buckets.back().second) {
        error(key + ": +Inf bucket " + std::to_string(group.buckets.back().second) +
              " differs from _count " + std::to_string(*group.count));
      }
      if (!group.sum) error(key + ": no _sum");
    }
  }
  return out;
}

Exposition fetch_metrics(int http_port, std::string* body = nullptr) {
  const auto response = http_get(http_port, "/metrics");
  if (body != nullptr) *body = response.body;
  if (response.status != 200) {
    Exposition failed;
    failed.errors.push_back("HTTP status " + std::to_string(response.status));
    return failed;
  }
  return parse_exposition(response.body);
}

// ------------------------------------------------------------------------------------------
// Tests
// ------------------------------------------------------------------------------------------

TEST(MonitorMetricsValidator, AcceptsValidTextAndRejectsBrokenInput) {
  const std::string valid =
      "# HELP foo A \\\\ help\\nline.\n"
      "# TYPE foo gauge\n"
      "foo{a=\"q\\\"uote \\\\ back\\nnl\",b=\"\"} -1.5e3\n"
      "foo{a=\"2\"} NaN\n"
      "foo{a=\"3\",} +Inf 1712345678000\n"
      "\n"
      "# a plain comment\n"
      "# TYPE c counter\n"
      "c 0\n"
      "# TYPE h histogram\n"
      "h_bucket{le=\"0.1\"} 1\n"
      "h_bucket{le=\"1\"} 3\n"
      "h_bucket{le=\"+Inf\"} 4\n"
      "h_sum 2.5\n"
      "h_count 4\n";
  const auto parsed = parse_exposition(valid);
  EXPECT_TRUE(parsed.valid()) << parsed.error_text();
  ASSERT_EQ(parsed.samples.size(), 9U);
  EXPECT_EQ(parsed.samples[0].labels.at("a"), "q\"uote \\ back\nnl");
  EXPECT_EQ(parsed.samples[0].value, -1500.0);
  EXPECT_TRUE(std::isnan(parsed.samples[1].value));
  EXPECT_EQ(parsed.value("h_count"), 4.0);

  const std::vector<std::pair<std::string, std::string>> broken = {
      {"sample without TYPE", "foo 1\n"},
      {"bucket suffix without a histogram TYPE", "# TYPE foo gauge\nfoo 1\nbar_bucket 1\n"},
      {"unquoted label value", "# TYPE foo gauge\nfoo{a=b} 1\n"},
      {"label name starting with a digit", "# TYPE foo gauge\nfoo{1a=\"x\"} 1\n"},
      {"label without '='", "# TYPE foo gauge\nfoo{a\"x\"} 1\n"},
      {"invalid escape", "# TYPE foo gauge\nfoo{a=\"x\\q\"} 1\n"},
      {"unterminated label value", "# TYPE foo gauge\nfoo{a=\"x} 1\n"},
      {"missing comma", "# TYPE foo gauge\nfoo{a=\"x\" b=\"y\"} 1\n"},
      {"label twice", "# TYPE foo gauge\nfoo{a=\"x\",a=\"y\"} 1\n"},
      {"non-numeric value", "# TYPE foo gauge\nfoo abc\n"},
      {"value with junk", "# TYPE foo gauge\nfoo 1.5x\n"},
      {"no value", "# TYPE foo gauge\nfoo\n"},
      {"no blank before value", "# TYPE foo gauge\nfoo{a=\"x\"}1\n"},
      {"trailing junk", "# TYPE foo gauge\nfoo 1 2 3\n"},
      {"bad metric name", "# TYPE 1foo gauge\n1foo 1\n"},
      {"dash in metric name", "# TYPE foo gauge\nfoo-bar 1\n"},
      {"unknown type", "# TYPE foo meter\nfoo 1\n"},
      {"TYPE twice", "# TYPE foo gauge\n# TYPE foo gauge\nfoo 1\n"},
      {"TYPE after the samples", "foo 1\n# TYPE foo gauge\n"},
      {"HELP twice", "# HELP foo a\n# HELP foo b\n# TYPE foo gauge\nfoo 1\n"},
      {"family not grouped", "# TYPE foo gauge\nfoo 1\n# TYPE bar gauge\nbar 1\nfoo{a=\"x\"} 2\n"},
      {"duplicate series", "# TYPE foo gauge\nfoo{a=\"1\"} 1\nfoo{a=\"1\"} 2\n"},
      {"negative counter", "# TYPE foo counter\nfoo -1\n"},
      {"no final newline", "# TYPE foo gauge\nfoo 1"},
      {"histogram sample without suffix", "# TYPE h histogram\nh 1\n"},
      {"non-cumulative buckets",
       "# TYPE h histogram\nh_bucket{le=\"0.1\"} 5\nh_bucket{le=\"1\"} 3\n"
       "h_bucket{le=\"+Inf\"} 5\nh_sum 1\nh_count 5\n"},
      {"+Inf bucket differs from _count",
       "# TYPE h histogram\nh_bucket{le=\"1\"} 3\nh_bucket{le=\"+Inf\"} 4\nh_sum 1\nh_count 5\n"},
      {"no +Inf bucket", "# TYPE h histogram\nh_bucket{le=\"1\"} 3\nh_sum 1\nh_count 3\n"},
      {"bucket without le",
       "# TYPE h histogram\nh_bucket 3\nh_bucket{le=\"+Inf\"} 3\n"
       "h_sum 1\nh_count 3\n"},
  };
  for (const auto& [what, text] : broken) {
    EXPECT_FALSE(parse_exposition(text).valid()) << "accepted: " << what << "\n" << text;
  }
}

TEST(Monitor, TopologyNamesThePrimaryAndStreamingStandbysAndCountsClients) {
  auto& cluster = Cluster::get();
  Proxy proxy(kMonitor);
  TopologyView t;
  ASSERT_TRUE(wait_topology(
      proxy, 15s,
      [](const auto& v) {
        return settled(v, {"node2", "node3"});
      },
      &t))
      << t.problem << t.raw << proxy.log();

  EXPECT_EQ(t.primary, "node1") << t.raw;
  EXPECT_GT(t.generation, 0U);
  ASSERT_EQ(t.nodes.size(), 3U) << t.raw;
  for (const auto& n : t.nodes) {
    SCOPED_TRACE(describe(n));
    EXPECT_EQ(n.host, "127.0.0.1");
    EXPECT_EQ(n.port, static_cast<std::uint64_t>(cluster.node(n.name).port));
    EXPECT_EQ(n.timeline, 1U);
    EXPECT_FALSE(n.lsn.empty()) << "lsn is null";
    EXPECT_GT(n.rtt_us, 0U);
    EXPECT_EQ(n.clients, 0);
    EXPECT_TRUE(n.last_error.empty());
    if (n.name == "node1") {
      EXPECT_EQ(n.role, "primary");
    } else {
      EXPECT_EQ(n.role, "standby");
      EXPECT_TRUE(n.streaming);
      EXPECT_TRUE(n.eligible);
    }
  }
  EXPECT_EQ(lag_bytes_mismatch(t), "") << t.raw;

  // The monitor keeps probing: new snapshots keep coming.
  std::this_thread::sleep_for(600ms);
  const auto later = fetch_topology(proxy.http_port());
  ASSERT_TRUE(later.ok) << later.problem << later.raw;
  EXPECT_GT(later.generation, t.generation);

  const auto ready = http_get(proxy.http_port(), "/ready");
  EXPECT_EQ(ready.status, 200) << ready.body;
  EXPECT_EQ(http_get(proxy.http_port(), "/health").status, 200);
  EXPECT_EQ(http_get(proxy.http_port(), "/no/such/path").status, 404);

  {
    PgConn client(proxy.conninfo());
    ASSERT_TRUE(client.ok()) << client.error();
    ASSERT_EQ(client.value("SELECT 1"), "1");
    ASSERT_TRUE(wait_topology(
        proxy, 5s,
        [](const auto& v) {
          return has_nodes(v, {"node1", "node2", "node3"}) && v.node("node1")->clients == 1 &&
                 v.node("node2")->clients == 0 && v.node("node3")->clients == 0;
        },
        &t))
        << t.raw;
  }
  EXPECT_TRUE(wait_topology(
      proxy, 5s,
      [](const auto& v) { return has_nodes(v, {"node1"}) && v.node("node1")->clients == 0; }, &t))
      << "the closed client still counts: " << t.raw;
}

TEST(Monitor, IdleClusterShowsZeroLagForAMinute) {
  // Nothing writes here: no client connects, and the tables of the other tests have
  // autovacuum off. Runs before the tests that write.
  Proxy proxy(kMonitor);
  TopologyView t;
  ASSERT_TRUE(wait_topology(
      proxy, 20s,
      [](const auto& v) {
        return settled(v, {"node2", "node3"});
      },
      &t))
      << t.problem << t.raw;
  const std::string lsn_before = t.node("node1")->lsn;

  std::vector<std::string> bad;
  std::set<std::string> primary_lsns;
  const auto start = Clock::now();
  for (int i = 1; i <= 60; ++i) {
    std::this_thread::sleep_until(start + i * 1s);
    const auto sample = fetch_topology(proxy.http_port());
    if (!sample.ok) {
      bad.push_back("sample " + std::to_string(i) + ": " + sample.problem + sample.raw);
      continue;
    }
    if (const auto* p = sample.node("node1")) primary_lsns.insert(p->lsn);
    for (const char* name : {"node2", "node3"}) {
      const auto* n = sample.node(name);
      if (n == nullptr || n->lag_ms != 0 || !n->eligible || n->role != "standby") {
        bad.push_back("sample " + std::to_string(i) + ": " + (n ? describe(*n) : name));
      }
    }
  }
  std::cout << "idle minute: primary LSN " << lsn_before << " before, while sampling:";
  for (const auto& lsn : primary_lsns) std::cout << " " << lsn;
  std::cout << "\n";
  std::string report;
  for (std::size_t i = 0; i < bad.size() && i < 10; ++i) report += bad[i] + "\n";
  EXPECT_TRUE(bad.empty()) << bad.size()
                           << " bad samples (primary LSNs seen: " << primary_lsns.size() << "):\n"
                           << report;
}

TEST(Monitor, PausedStandbyLagGrowsAndReturnsToZeroOnResume) {
  auto& cluster = Cluster::get();
  Proxy proxy(kMonitor + "[routing]\nmax_lag_ms = 1000\n");
  PgConn writer(primary_conninfo());
  ASSERT_TRUE(writer.ok()) << writer.error();
  ASSERT_EQ(prepare_writer(writer), "");
  ASSERT_EQ(writer.value(kCreateTable), "");
  TopologyView t;
  ASSERT_TRUE(wait_topology(
      proxy, 15s,
      [](const auto& v) {
        return settled(v, {"node2", "node3"});
      },
      &t))
      << t.problem << t.raw;

  Cleanup resume{[&] { cluster.sql("node2", "SELECT pg_wal_replay_resume()"); }};
  const auto paused = cluster.sql("node2", "SELECT pg_wal_replay_pause()");
  ASSERT_EQ(paused.find("ERROR"), std::string::npos) << paused;

  std::string write_errors;
  auto samples = write_and_sample(writer, proxy, 3s, &write_errors);
  ASSERT_EQ(write_errors, "");
  ASSERT_GE(samples.size(), 50U);
  // Stopped writing; the paused standby keeps falling behind in time.
  TopologyView end;
  const bool over_limit = wait_topology(
      proxy, 5s, [](const auto& v) { return has_nodes(v, {"node2"}) && lag_ms(v, "node2") > 1000; },
      &end);
  samples.push_back(end);
  for (const auto& s : samples) {
    ASSERT_TRUE(has_nodes(s, {"node1", "node2", "node3"})) << s.problem << s.raw;
  }

  // Lag of node2 against the primary: growing in bytes and in time.
  const auto& early = *samples[samples.size() / 3].node("node2");  // about 1 s into the writes
  const auto& late = *end.node("node2");
  EXPECT_GT(early.lag_bytes, 0U) << describe(early);
  EXPECT_GT(late.lag_bytes, early.lag_bytes) << describe(early) << "\n" << describe(late);
  EXPECT_GT(late.lag_ms, early.lag_ms) << describe(early) << "\n" << describe(late);
  EXPECT_TRUE(over_limit) << describe(late);
  EXPECT_GT(late.lag_ms, 1000U) << describe(late);
  EXPECT_FALSE(late.eligible) << describe(late);
  std::uint64_t previous_bytes = 0;
  std::uint64_t previous_ms = 0;
  for (const auto& s : samples) {
    const auto& n2 = *s.node("node2");
    const auto& n3 = *s.node("node3");
    EXPECT_EQ(lag_bytes_mismatch(s), "") << s.raw;
    EXPECT_GE(n2.lag_bytes, previous_bytes) << "lag of a paused standby shrank: " << describe(n2);
    EXPECT_GE(n2.lag_ms, previous_ms) << "lag of a paused standby shrank: " << describe(n2);
    previous_bytes = n2.lag_bytes;
    previous_ms = n2.lag_ms;
    if (n2.lag_ms > 1000) {
      EXPECT_FALSE(n2.eligible) << "over max_lag_ms: " << describe(n2);
    }
    // node3 replays as the primary writes.
    EXPECT_TRUE(n3.eligible) << describe(n3);
    EXPECT_LT(n3.lag_ms, 1000U) << describe(n3);
    EXPECT_LT(n3.lag_bytes, late.lag_bytes / 2) << describe(n3);
  }

  // The metric says the same.
  const auto metrics = fetch_metrics(proxy.http_port());
  EXPECT_TRUE(metrics.valid()) << metrics.error_text();
  const auto seconds =
      metrics.value("pgrelay_backend_replay_lag_seconds", {{"backend", "node2"}}).value_or(-1);
  EXPECT_GT(seconds, 1.0);

  const auto resumed = cluster.sql("node2", "SELECT pg_wal_replay_resume()");
  ASSERT_EQ(resumed.find("ERROR"), std::string::npos) << resumed;
  resume.cleanup = nullptr;
  const auto resumed_at = Clock::now();
  EXPECT_TRUE(wait_topology(
      proxy, 10s,
      [](const auto& v) {
        return settled(v, {"node2", "node3"});
      },
      &t))
      << describe(*t.node("node2"));
  std::cout
      << "node2 back to 0 B / 0 ms and eligible "
      << std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - resumed_at).count()
      << " ms after pg_wal_replay_resume()\n";
}

TEST(Monitor, DelayedStandbyShowsItsApplyDelay) {
  auto& cluster = Cluster::get();
  Proxy proxy(kMonitor);
  PgConn writer(primary_conninfo());
  ASSERT_TRUE(writer.ok()) << writer.error();
  ASSERT_EQ(prepare_writer(writer), "");
  ASSERT_EQ(writer.value(kCreateTable), "");
  TopologyView t;
  ASSERT_TRUE(wait_topology(
      proxy, 15s,
      [](const auto& v) {
        return settled(v, {"node2", "node3"});
      },
      &t))
      << t.problem << t.raw;

  const std::string reset =
      "ALTER SYSTEM RESET recovery_min_apply_delay;\nSELECT pg_reload_conf();\n";
  Cleanup undo{[&] { cluster.sql("node3", reset); }};
  const auto set = cluster.sql(
      "node3", "ALTER SYSTEM SET recovery_min_apply_delay = '2s';\nSELECT pg_reload_conf();\n");
  ASSERT_EQ(set.find("ERROR"), std::string::npos) << set;
  bool applied = false;
  for (int i = 0; i < 50 && !applied; ++i) {
    applied = cluster.sql("node3", "SHOW recovery_min_apply_delay") == "2s";
    if (!applied) std::this_thread::sleep_for(100ms);
  }
  ASSERT_TRUE(applied);

  std::string write_errors;
  auto samples = write_and_sample(writer, proxy, 4s, &write_errors);
  ASSERT_EQ(write_errors, "");
  // The last writes are applied 2 s after their commit.
  TopologyView after;
  wait_topology(
      proxy, 5s, [](const auto& v) { return lag_ms(v, "node3") == 0; }, &after, &samples);

  std::uint64_t max_ms = 0;
  for (const auto& s : samples) {
    ASSERT_TRUE(has_nodes(s, {"node1", "node2", "node3"})) << s.problem << s.raw;
    const auto& n2 = *s.node("node2");
    const auto& n3 = *s.node("node3");
    max_ms = std::max(max_ms, n3.lag_ms);
    EXPECT_EQ(lag_bytes_mismatch(s), "") << s.raw;
    if (n3.lag_ms > 1000) {
      EXPECT_FALSE(n3.eligible) << "over max_lag_ms: " << describe(n3);
    }
    EXPECT_TRUE(n2.eligible) << describe(n2);
    EXPECT_LT(n2.lag_ms, 1000U) << describe(n2);
  }
  std::cout << "node3 with recovery_min_apply_delay 2s: highest replay_lag_ms " << max_ms << "\n";
  EXPECT_GE(max_ms, 1500U);
  EXPECT_LE(max_ms, 4000U);

  const auto undone = cluster.sql("node3", reset);
  ASSERT_EQ(undone.find("ERROR"), std::string::npos) << undone;
  undo.cleanup = nullptr;
  EXPECT_TRUE(wait_topology(
      proxy, 10s,
      [](const auto& v) {
        return settled(v, {"node2", "node3"});
      },
      &t))
      << describe(*t.node("node3"));
}

TEST(Monitor, CascadingStandbyLagIsMeasuredAgainstThePrimary) {
  auto& cluster = Cluster::get();
  const int port = free_port();
  // node4 goes away at the end so the other tests see three nodes; declared before the proxy
  // so the proxy stops first.
  Cleanup remove_node4{[&] {
    cluster.sql("node4", "SELECT pg_wal_replay_resume()");
    cluster.script("stop fast node4");
    for (int i = 0; i < 20; ++i) {
      if (cluster.sql("node2", "SELECT pg_drop_replication_slot('node4')").find("ERROR") ==
          std::string::npos) {
        break;
      }
      std::this_thread::sleep_for(200ms);
    }
    run("rm -rf " + cluster.dir() + "/node4");
  }};
  const auto added = cluster.script("add-standby node4 " + std::to_string(port) + " node2");
  ASSERT_EQ(added.status, 0) << added.output;

  Proxy proxy(kMonitor + cluster.backends_toml() +
                  "[[backend]]\nname = \"node4\"\nhost = \"127.0.0.1\"\nport = " +
                  std::to_string(port) + "\n",
              false);
  PgConn writer(primary_conninfo());
  ASSERT_TRUE(writer.ok()) << writer.error();
  ASSERT_EQ(prepare_writer(writer), "");
  ASSERT_EQ(writer.value(kCreateTable), "");
  TopologyView t;
  ASSERT_TRUE(wait_topology(
      proxy, 30s,
      [](const auto& v) {
        return settled(v, {"node2", "node3", "node4"});
      },
      &t))
      << t.problem << t.raw;
  const auto& node4 = *t.node("node4");
  EXPECT_EQ(node4.role, "standby");
  EXPECT_EQ(node4.timeline, 1U);
  EXPECT_EQ(node4.port, static_cast<std::uint64_t>(port));

  const auto paused = cluster.sql("node4", "SELECT pg_wal_replay_pause()");
  ASSERT_EQ(paused.find("ERROR"), std::string::npos) << paused;
  std::string write_errors;
  auto samples = write_and_sample(writer, proxy, 3s, &write_errors);
  ASSERT_EQ(write_errors, "");
  ASSERT_GE(samples.size(), 50U);
  for (const auto& s : samples) {
    ASSERT_TRUE(has_nodes(s, {"node1", "node2", "node3", "node4"})) << s.problem << s.raw;
  }

  const auto& early = *samples[samples.size() / 3].node("node4");
  const auto& late = *samples.back().node("node4");
  EXPECT_GT(early.lag_bytes, 0U) << describe(early);
  EXPECT_GT(late.lag_bytes, early.lag_bytes) << describe(early) << "\n" << describe(late);
  EXPECT_GT(late.lag_ms, early.lag_ms) << describe(early) << "\n" << describe(late);
  for (const auto& s : samples) {
    // Against the primary (node1), not its upstream node2.
    EXPECT_EQ(lag_bytes_mismatch(s), "") << s.raw;
    const auto& n2 = *s.node("node2");
    const auto& n4 = *s.node("node4");
    EXPECT_EQ(n4.timeline, 1U) << describe(n4);
    if (n4.lag_ms > 1000) {
      EXPECT_FALSE(n4.eligible) << "over max_lag_ms: " << describe(n4);
    }
    EXPECT_TRUE(n2.eligible) << describe(n2);
    EXPECT_LT(n2.lag_ms, 1000U) << describe(n2);
    EXPECT_LT(n2.lag_bytes, late.lag_bytes / 2) << describe(n2);
  }

  const auto resumed = cluster.sql("node4", "SELECT pg_wal_replay_resume()");
  ASSERT_EQ(resumed.find("ERROR"), std::string::npos) << resumed;
  EXPECT_TRUE(wait_topology(
      proxy, 10s,
      [](const auto& v) {
        return settled(v, {"node2", "node3", "node4"});
      },
      &t))
      << describe(*t.node("node4"));

  // Back to three nodes: node4 stopped, its slot on node2 and its directory gone.
  remove_node4.cleanup();
  remove_node4.cleanup = nullptr;
  EXPECT_EQ(cluster.sql("node2", "SELECT count(*) FROM pg_replication_slots"), "0");
  EXPECT_NE(cluster.script("psql node4 -c 'SELECT 1'").status, 0) << "node4 still answers";
}

TEST(Monitor, NotReadyWithoutAPrimary) {
  auto& cluster = Cluster::get();
  std::string backends;
  for (const char* name : {"node2", "node3"}) {
    backends += "[[backend]]\nname = \"" + std::string(name) +
                "\"\nhost = \"127.0.0.1\"\nport = " + std::to_string(cluster.node(name).port) +
                "\n";
  }
  Proxy proxy(kMonitor + "[routing]\nprimary_wait_ms = 300\n" + backends, false);
  TopologyView t;
  ASSERT_TRUE(wait_topology(
      proxy, 15s,
      [](const auto& v) {
        return v.nodes.size() == 2 && v.node("node2") && v.node("node2")->role == "standby" &&
               v.node("node3") && v.node("node3")->role == "standby";
      },
      &t))
      << t.problem << t.raw;
  EXPECT_FALSE(t.primary.has_value()) << t.raw;
  EXPECT_NE(t.raw.find("\"primary\":null"), std::string::npos) << t.raw;

  const auto ready = http_get(proxy.http_port(), "/ready");
  EXPECT_EQ(ready.status, 503) << ready.body;
  EXPECT_EQ(http_get(proxy.http_port(), "/health").status, 200);

  const auto start = Clock::now();
  PgConn client(proxy.conninfo());
  const auto waited =
      std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start).count();
  EXPECT_FALSE(client.ok());
  EXPECT_NE(client.error().find("no primary server is available"), std::string::npos)
      << client.error();
  EXPECT_GE(waited, 250) << "gave up before primary_wait_ms";
  EXPECT_LT(waited, 5000) << "waited far longer than primary_wait_ms";
}

TEST(Monitor, MetricsAreStrictPrometheusTextWithTheDocumentedFamilies) {
  Proxy proxy(kMonitor);
  TopologyView t;
  ASSERT_TRUE(wait_topology(
      proxy, 15s,
      [](const auto& v) {
        return settled(v, {"node2", "node3"});
      },
      &t))
      << t.problem << t.raw;
  PgConn client(proxy.conninfo());
  ASSERT_TRUE(client.ok()) << client.error();
  for (int i = 0; i < 5; ++i) ASSERT_EQ(client.value("SELECT 1"), "1");

  std::string body;
  const auto metrics = fetch_metrics(proxy.http_port(), &body);
  EXPECT_TRUE(metrics.valid()) << metrics.error_text() << "\n" << body;

  const std::map<std::string, std::string> documented = {
      {"pgrelay_backend_up", "gauge"},
      {"pgrelay_backend_replay_lag_bytes", "gauge"},
      {"pgrelay_backend_replay_lag_seconds", "gauge"},
      {"pgrelay_routed_total", "counter"},
      {"pgrelay_client_connections", "gauge"},
      {"pgrelay_failovers_total", "counter"},
  };
  for (const auto& [family, type] : documented) {
    const auto it = metrics.types.find(family);
    ASSERT_NE(it, metrics.types.end()) << "no TYPE for " << family << "\n" << body;
    EXPECT_EQ(it->second, type) << family;
  }
  for (const char* name : {"node1", "node2", "node3"}) {
    SCOPED_TRACE(name);
    EXPECT_EQ(metrics.value("pgrelay_backend_up", {{"backend", name}}), 1.0);
    EXPECT_EQ(metrics.value("pgrelay_backend_replay_lag_bytes", {{"backend", name}}), 0.0);
    EXPECT_EQ(metrics.value("pgrelay_backend_replay_lag_seconds", {{"backend", name}}), 0.0);
    for (const char* kind : {"read", "write", "replication"}) {
      EXPECT_TRUE(metrics.value("pgrelay_routed_total", {{"backend", name}, {"kind", kind}}))
          << "no pgrelay_routed_total{backend=\"" << name << "\",kind=\"" << kind << "\"}";
    }
  }
  EXPECT_GE(
      metrics.value("pgrelay_routed_total", {{"backend", "node1"}, {"kind", "write"}}).value_or(0),
      1.0);
  EXPECT_EQ(metrics.value("pgrelay_client_connections"), 1.0);
  EXPECT_EQ(metrics.value("pgrelay_failovers_total"), 0.0);

  std::vector<std::string> histograms;
  for (const auto& [family, type] : metrics.types) {
    if (type == "histogram" && !metrics.find(family + "_count").empty()) {
      histograms.push_back(family);
    }
  }
  EXPECT_FALSE(histograms.empty()) << "no histogram with samples\n" << body;
}

TEST(Monitor, LatencyHistogramCountsRequests) {
  // INTERFACE.md promises a latency histogram; pgrelay_request_duration_seconds is
  // "Client request to ReadyForQuery round trips". Every simple query below is one.
  Proxy proxy(kMonitor);
  PgConn client(proxy.conninfo());
  ASSERT_TRUE(client.ok()) << client.error();
  const double before =
      fetch_metrics(proxy.http_port()).value("pgrelay_request_duration_seconds_count").value_or(-1);
  for (int i = 0; i < 20; ++i) ASSERT_EQ(client.value("SELECT 1"), "1");
  std::string body;
  const auto metrics = fetch_metrics(proxy.http_port(), &body);
  ASSERT_TRUE(metrics.valid()) << metrics.error_text();
  const double after = metrics.value("pgrelay_request_duration_seconds_count").value_or(-1);
  ASSERT_GE(before, 0);
  EXPECT_GE(after - before, 20.0) << "20 queries, histogram count " << before << " -> " << after;
  EXPECT_GT(metrics.value("pgrelay_request_duration_seconds_sum").value_or(0), 0.0);
}

TEST(Monitor, ProbeCost) {
  Proxy proxy(kMonitor);
  TopologyView t;
  ASSERT_TRUE(wait_topology(
      proxy, 15s,
      [](const auto& v) {
        return settled(v, {"node2", "node3"});
      },
      &t))
      << t.problem << t.raw;
  const auto first = fetch_metrics(proxy.http_port());
  std::this_thread::sleep_for(10s);
  const auto second = fetch_metrics(proxy.http_port());
  ASSERT_TRUE(first.valid()) << first.error_text();
  ASSERT_TRUE(second.valid()) << second.error_text();

  const auto delta = [&](const std::string& name,
                         const std::map<std::string, std::string>& labels = {}) {
    const auto a = first.value(name, labels);
    const auto b = second.value(name, labels);
    EXPECT_TRUE(a && b) << "no " << name;
    return a && b ? *b - *a : 0.0;
  };
  const double window = delta("pgrelay_uptime_seconds");
  ASSERT_GT(window, 9.0);
  const double cpu = delta("pgrelay_monitor_cpu_seconds_total") / window;
  std::cout << "probe cost over " << window << " s with interval_ms = 200: monitor CPU "
            << cpu * 100 << " % of one core\n";
  EXPECT_GT(cpu, 0.0);
  EXPECT_LT(cpu, 0.05);
  for (const char* name : {"node1", "node2", "node3"}) {
    const double rate = delta("pgrelay_backend_probes_total", {{"backend", name}}) / window;
    const double failures =
        delta("pgrelay_backend_probe_failures_total", {{"backend", name}}) / window;
    std::cout << "  " << name << ": " << rate << " probes/s, " << failures << " failures/s\n";
    EXPECT_GE(rate, 4.0) << name;
    EXPECT_LE(rate, 5.5) << name;
    EXPECT_EQ(failures, 0.0) << name;
  }
}

}  // namespace
}  // namespace pgrelay::test
