// The strict Prometheus text-format 0.0.4 validator shared by the unit and integration tests.
#include "prometheus_text.hpp"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <regex>
#include <set>
#include <utility>

namespace pgrelay::test {
namespace {

const std::regex kMetricName("[a-zA-Z_:][a-zA-Z0-9_:]*");
const std::regex kLabelName("[a-zA-Z_][a-zA-Z0-9_]*");
const std::regex kDecimal(R"([+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?)");
const std::regex kTimestamp("-?[0-9]+");
const std::set<std::string> kTypes = {"counter", "gauge", "histogram", "summary", "untyped"};

bool is_blank(char c) { return c == ' ' || c == '\t'; }

bool ends_with(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

/// A label value written back in the escaped form of the format.
std::string escape(const std::string& value) {
  std::string out;
  for (const char c : value) {
    if (c == '\\' || c == '"') {
      out += '\\';
      out += c;
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

/// `name{k="v",...}` with the labels sorted and escaped: one string per series.
std::string series_key(const std::string& name, const Labels& labels) {
  std::string key = name + "{";
  for (const auto& [k, v] : labels) key += k + "=\"" + escape(v) + "\",";
  return key + "}";
}

bool is_count(double value) {
  return std::isfinite(value) && value >= 0 && value == std::floor(value);
}

class Parser {
 public:
  explicit Parser(std::string_view text) : text_(text) {}

  Exposition run() {
    if (!text_.empty() && text_.back() != '\n') error("the text does not end with \\n");
    std::size_t pos = 0;
    while (pos < text_.size()) {
      std::size_t end = text_.find('\n', pos);
      if (end == std::string_view::npos) end = text_.size();
      const std::string_view line = text_.substr(pos, end - pos);
      pos = end + 1;
      ++line_;
      if (line.find('\r') != std::string_view::npos) {
        error("carriage return in a line");
        continue;
      }
      if (line.empty()) continue;  // the format ignores empty lines
      if (line.front() == '#') {
        comment(line);
      } else {
        sample(line);
      }
    }
    line_ = 0;
    check_histograms();
    return std::move(out_);
  }

 private:
  void error(const std::string& message) {
    out_.errors.push_back((line_ > 0 ? "line " + std::to_string(line_) + ": " : std::string()) +
                          message);
  }

  /// Starts (or continues) the group of lines of `family`; a family's lines must be contiguous.
  void enter(const std::string& family) {
    if (family == current_) return;
    if (closed_.contains(family)) error("lines of family " + family + " are not grouped together");
    if (!current_.empty()) closed_.insert(current_);
    current_ = family;
  }

  void comment(std::string_view line) {
    std::size_t i = 1;
    while (i < line.size() && is_blank(line[i])) ++i;
    std::size_t j = i;
    while (j < line.size() && !is_blank(line[j])) ++j;
    const std::string keyword(line.substr(i, j - i));
    if (keyword != "HELP" && keyword != "TYPE") return;  // any other comment is ignored
    const std::string prefix = "# " + keyword + " ";
    if (!line.starts_with(prefix)) return error("malformed " + keyword + " line");
    const std::string_view rest = line.substr(prefix.size());
    const std::size_t space = rest.find(' ');
    const std::string name(rest.substr(0, space));
    if (!std::regex_match(name, kMetricName)) {
      return error("bad metric name '" + name + "' in " + keyword);
    }
    if (with_samples_.contains(name)) return error(keyword + " of " + name + " after its samples");
    enter(name);
    if (keyword == "HELP") {
      const std::string doc(space == std::string_view::npos ? "" : rest.substr(space + 1));
      for (std::size_t k = 0; k < doc.size(); ++k) {
        if (doc[k] != '\\') continue;
        if (k + 1 >= doc.size() || (doc[k + 1] != '\\' && doc[k + 1] != 'n')) {
          return error("bad escape in the HELP of " + name);
        }
        ++k;
      }
      if (!out_.help.emplace(name, doc).second) error("second HELP for " + name);
      return;
    }
    if (space == std::string_view::npos) return error("TYPE of " + name + " without a type");
    const std::string type(rest.substr(space + 1));
    if (!kTypes.contains(type)) return error("unknown type '" + type + "' for " + name);
    if (!out_.types.emplace(name, type).second) error("second TYPE for " + name);
  }

  /// The family a sample belongs to, by its TYPE line; empty when it has none.
  std::string family_of(const std::string& name) const {
    if (out_.types.contains(name)) return name;
    for (std::string_view suffix : {"_bucket", "_sum", "_count"}) {
      if (!ends_with(name, suffix)) continue;
      const std::string base = name.substr(0, name.size() - suffix.size());
      const auto it = out_.types.find(base);
      if (it == out_.types.end()) continue;
      if (it->second == "histogram") return base;
      if (it->second == "summary" && suffix != "_bucket") return base;
    }
    return {};
  }

  /// `name{label="value",...} value [timestamp]`
  void sample(std::string_view line) {
    Sample s;
    s.line = line_;
    std::size_t i = 0;
    while (i < line.size() && !is_blank(line[i]) && line[i] != '{') ++i;
    s.name = std::string(line.substr(0, i));
    if (!std::regex_match(s.name, kMetricName)) {
      return error("bad metric name '" + s.name + "'");
    }
    if (i < line.size() && line[i] == '{' && !labels(line, ++i, s)) return;
    // The value, then an optional timestamp, each after blanks; nothing else.
    std::vector<std::string> tokens;
    while (i < line.size()) {
      if (!is_blank(line[i])) return error("expected a blank before the value of " + s.name);
      while (i < line.size() && is_blank(line[i])) ++i;
      if (i == line.size()) return error("trailing blanks after " + s.name);
      const std::size_t start = i;
      while (i < line.size() && !is_blank(line[i])) ++i;
      tokens.emplace_back(line.substr(start, i - start));
    }
    if (tokens.empty()) return error("sample " + s.name + " without a value");
    if (tokens.size() > 2) return error("garbage after the timestamp of " + s.name);
    const auto value = parse_float(tokens[0]);
    if (!value) return error("value '" + tokens[0] + "' of " + s.name + " is not a float");
    if (tokens.size() == 2 && !std::regex_match(tokens[1], kTimestamp)) {
      return error("bad timestamp '" + tokens[1] + "' of " + s.name);
    }
    s.raw_value = tokens[0];
    s.value = *value;

    s.family = family_of(s.name);
    if (s.family.empty()) {
      error("sample " + s.name + " has no TYPE line before it");
      s.family = s.name;
    }
    enter(s.family);
    with_samples_.insert(s.family);
    const auto typed = out_.types.find(s.family);
    const std::string type = typed == out_.types.end() ? "" : typed->second;
    if (type == "counter" && (std::isnan(s.value) || s.value < 0)) {
      error("counter " + s.name + " is negative or NaN");
    }
    if (type == "histogram") {
      const bool bucket = s.name == s.family + "_bucket";
      const auto le = s.labels.find("le");
      if (s.name == s.family) {
        error("histogram sample " + s.name + " without _bucket/_sum/_count");
      } else if (bucket && le == s.labels.end()) {
        error("bucket of " + s.family + " without le");
      } else if (bucket && !parse_float(le->second)) {
        error("le '" + le->second + "' of " + s.family + " is not a float");
      } else if (!bucket && le != s.labels.end()) {
        error("le on the non-bucket sample " + s.name);
      }
      if (s.name != s.family + "_sum" && !is_count(s.value)) {
        error(s.name + " " + s.raw_value + " is not a count");
      }
    }
    if (type == "summary" && s.name == s.family && !s.labels.contains("quantile")) {
      error("summary sample " + s.name + " without quantile");
    }
    if (!series_.insert(series_key(s.name, s.labels)).second) {
      error("duplicate series " + series_key(s.name, s.labels));
    }
    out_.samples.push_back(std::move(s));
  }

  /// Parses `name="value",...}` from just after the `{`; no blanks anywhere.
  bool labels(std::string_view line, std::size_t& i, Sample& s) {
    while (true) {
      if (i >= line.size()) return fail("unterminated label set of " + s.name);
      if (line[i] == '}') {
        ++i;
        return true;
      }
      const std::size_t start = i;
      while (i < line.size() && line[i] != '=') ++i;
      const std::string name(line.substr(start, i - start));
      if (!std::regex_match(name, kLabelName)) {
        return fail("bad label name '" + name + "' in " + s.name);
      }
      if (name.starts_with("__")) return fail("reserved label name " + name + " in " + s.name);
      if (i + 1 >= line.size() || line[i + 1] != '"') {
        return fail("value of label " + name + " in " + s.name + " is not quoted");
      }
      i += 2;
      std::string value;
      while (true) {
        if (i >= line.size()) return fail("unterminated value of label " + name + " in " + s.name);
        const char c = line[i++];
        if (c == '"') break;
        if (c != '\\') {
          value += c;
          continue;
        }
        if (i >= line.size()) return fail("unterminated escape in label " + name + " of " + s.name);
        const char e = line[i++];
        if (e == '\\' || e == '"') {
          value += e;
        } else if (e == 'n') {
          value += '\n';
        } else {
          return fail(std::string("bad escape \\") + e + " in label " + name + " of " + s.name);
        }
      }
      if (!s.labels.emplace(name, value).second) {
        return fail("label " + name + " twice in " + s.name);
      }
      if (i >= line.size()) return fail("unterminated label set of " + s.name);
      if (line[i] == ',') {
        ++i;  // a trailing comma before } is allowed
      } else if (line[i] != '}') {
        return fail("expected , or } after label " + name + " in " + s.name);
      }
    }
  }

  bool fail(const std::string& message) {
    error(message);
    return false;
  }

  /// Per histogram series: buckets in increasing le, cumulative, ending with +Inf == _count,
  /// and a _sum.
  void check_histograms() {
    struct Series {
      struct Bucket {
        double le;
        const Sample* sample;
        [[nodiscard]] double count() const { return sample->value; }
        [[nodiscard]] const std::string& raw_le() const { return sample->labels.at("le"); }
      };
      std::vector<Bucket> buckets;
      const Sample* sum = nullptr;
      const Sample* count = nullptr;
    };
    for (const auto& [family, type] : out_.types) {
      if (type != "histogram") continue;
      std::map<std::string, Series> all;
      for (const auto& s : out_.samples) {
        if (s.family != family || s.name == family) continue;
        Labels rest = s.labels;
        rest.erase("le");
        auto& series = all[series_key(family, rest)];
        if (s.name == family + "_bucket") {
          const auto le = s.labels.find("le");
          const auto bound = le == s.labels.end() ? std::nullopt : parse_float(le->second);
          if (bound) series.buckets.push_back({*bound, &s});
        } else if (s.name == family + "_sum") {
          series.sum = &s;
        } else {
          series.count = &s;
        }
      }
      for (const auto& [key, series] : all) {
        const auto& buckets = series.buckets;
        for (std::size_t b = 1; b < buckets.size(); ++b) {
          if (!(buckets[b].le > buckets[b - 1].le)) {
            error("histogram " + key + ": le \"" + buckets[b].raw_le() + "\" after le \"" +
                  buckets[b - 1].raw_le() + "\"");
          }
          if (buckets[b].count() < buckets[b - 1].count()) {
            error("histogram " + key + ": buckets not cumulative at le \"" + buckets[b].raw_le() +
                  "\"");
          }
        }
        if (buckets.empty()) {
          error("histogram " + key + " has no buckets");
        } else if (buckets.back().le != std::numeric_limits<double>::infinity()) {
          error("histogram " + key + ": no le=\"+Inf\" bucket");
        } else if (series.count != nullptr && series.count->value != buckets.back().count()) {
          error("histogram " + key + ": +Inf bucket " + buckets.back().sample->raw_value +
                " differs from _count " + series.count->raw_value);
        }
        if (series.count == nullptr) error("histogram " + key + ": no _count");
        if (series.sum == nullptr) error("histogram " + key + ": no _sum");
      }
    }
  }

  std::string_view text_;
  Exposition out_;
  std::size_t line_ = 0;
  std::string current_;
  std::set<std::string> closed_;        ///< families whose group of lines has ended
  std::set<std::string> with_samples_;  ///< families that have had samples
  std::set<std::string> series_;
};

}  // namespace

std::string Exposition::error_text() const {
  std::string out;
  for (const auto& e : errors) out += e + "\n";
  return out;
}

const Sample* Exposition::find(std::string_view name, const Labels& labels) const {
  for (const auto& s : samples) {
    if (s.name == name && s.labels == labels) return &s;
  }
  return nullptr;
}

std::vector<const Sample*> Exposition::matching(std::string_view name, const Labels& labels) const {
  std::vector<const Sample*> out;
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

std::optional<double> Exposition::value(std::string_view name, const Labels& labels) const {
  const auto found = matching(name, labels);
  if (found.size() != 1) return std::nullopt;
  return found.front()->value;
}

std::size_t Exposition::count(std::string_view name) const {
  return static_cast<std::size_t>(std::count_if(samples.begin(), samples.end(),
                                                [&](const Sample& s) { return s.name == name; }));
}

Exposition parse_exposition(std::string_view text) { return Parser(text).run(); }

std::optional<double> parse_float(std::string_view text) {
  if (text == "+Inf" || text == "Inf") return std::numeric_limits<double>::infinity();
  if (text == "-Inf") return -std::numeric_limits<double>::infinity();
  if (text == "NaN") return std::numeric_limits<double>::quiet_NaN();
  const std::string s(text);
  if (!std::regex_match(s, kDecimal)) return std::nullopt;
  return std::strtod(s.c_str(), nullptr);
}

}  // namespace pgrelay::test
