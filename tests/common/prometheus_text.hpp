// A strict validator and parser of the Prometheus text exposition format 0.0.4, for the tests.
#pragma once

#include <cstddef>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace pgrelay::test {

// https://prometheus.io/docs/instrumenting/exposition_formats/#text-based-format
//
// Beyond the grammar (HELP and TYPE lines, metric and label names, label escapes, float values
// including +Inf, -Inf and NaN, an optional integer timestamp, a final newline, no carriage
// returns, no blanks inside a label set), parse_exposition() checks that:
//  - every sample belongs to a family with one TYPE line before its samples, and a family has
//    at most one HELP line, also before its samples; the lines of a family form one group;
//  - no series (name and label set) appears twice; label names are not reserved (__*);
//  - counters are neither negative nor NaN; summary samples of the base name have a quantile;
//  - histogram samples are _bucket (with a float le), _sum or _count (without le); bucket and
//    _count values are non-negative integers; per label set the buckets come in increasing le,
//    are cumulative, end with le="+Inf" equal to _count, and there is a _sum.
// An empty text is valid (no metrics).

/// Label name -> unescaped value. Sorted, so that two label sets naming the same series compare
/// equal in any order.
using Labels = std::map<std::string, std::string>;

struct Sample {
  std::string name;
  std::string family;  ///< the name of its TYPE line: `name` without _bucket/_sum/_count
  Labels labels;
  std::string raw_value;  ///< the value as written
  double value = 0;
  std::size_t line = 0;  ///< 1-based
};

struct Exposition {
  std::vector<std::string> errors;           ///< every deviation from the format; empty when valid
  std::vector<Sample> samples;               ///< in the order of the text
  std::map<std::string, std::string> types;  ///< family -> counter|gauge|histogram|summary|untyped
  std::map<std::string, std::string> help;   ///< family -> docstring, still escaped

  [[nodiscard]] bool ok() const { return errors.empty(); }
  /// The errors, one per line.
  [[nodiscard]] std::string error_text() const;
  /// The sample with exactly this name and label set, or nullptr.
  [[nodiscard]] const Sample* find(std::string_view name, const Labels& labels = {}) const;
  /// The samples named `name` whose labels include all of `labels`.
  [[nodiscard]] std::vector<const Sample*> matching(std::string_view name,
                                                    const Labels& labels = {}) const;
  /// The value of the one sample that `matching` finds, if exactly one.
  [[nodiscard]] std::optional<double> value(std::string_view name, const Labels& labels = {}) const;
  /// How many samples are named `name`.
  [[nodiscard]] std::size_t count(std::string_view name) const;
};

/// Parses and validates a whole exposition; `errors` says what is wrong, if anything.
Exposition parse_exposition(std::string_view text);

/// A sample value or le bound of the format: a decimal float, +Inf, Inf, -Inf or NaN.
std::optional<double> parse_float(std::string_view text);

}  // namespace pgrelay::test
