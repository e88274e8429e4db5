// The strict Prometheus text-format validator of tests/common: what it accepts, what it rejects.
#include "prometheus_text.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace pgrelay::test {
namespace {

TEST(ExpositionValidator, AcceptsValidText) {
  const std::string text =
      "# A free comment.\n"
      "# HELP up_things Things that are up, with a \\\\ and a \\n.\n"
      "# TYPE up_things gauge\n"
      "up_things{a=\"x\",b=\"y\\\"z\\\\w\\n\"} 1\n"
      "up_things{a=\"x\",b=\"other\",} -2.5e-3 1700000000000\n"
      "up_things{a=\"inf\"} +Inf\n"
      "up_things{a=\"minf\"} -Inf\n"
      "up_things{a=\"nan\"} NaN\n"
      "\n"
      "# TYPE requests_total counter\n"
      "requests_total 12\n"
      "# TYPE latency_seconds histogram\n"
      "# HELP latency_seconds Round trips.\n"
      "latency_seconds_bucket{path=\"/\",le=\"0.1\"} 1\n"
      "latency_seconds_bucket{path=\"/\",le=\"1\"} 3\n"
      "latency_seconds_bucket{path=\"/\",le=\"+Inf\"} 4\n"
      "latency_seconds_sum{path=\"/\"} 7.25\n"
      "latency_seconds_count{path=\"/\"} 4\n"
      "latency_seconds_bucket{path=\"/x\",le=\"+Inf\"} 0\n"
      "latency_seconds_sum{path=\"/x\"} 0\n"
      "latency_seconds_count{path=\"/x\"} 0\n"
      "# TYPE rpc summary\n"
      "rpc{quantile=\"0.5\"} 0.01\n"
      "rpc_sum 1\n"
      "rpc_count 3\n";
  const auto e = parse_exposition(text);
  ASSERT_TRUE(e.ok()) << e.error_text();
  EXPECT_EQ(e.samples.size(), 17U);
  const auto* s = e.find("up_things", {{"a", "x"}, {"b", "y\"z\\w\n"}});
  ASSERT_NE(s, nullptr);
  EXPECT_EQ(s->value, 1);
  EXPECT_EQ(e.types.at("latency_seconds"), "histogram");
  EXPECT_TRUE(std::isinf(e.find("up_things", {{"a", "inf"}})->value));
  EXPECT_TRUE(parse_exposition("").ok());
}

TEST(ExpositionValidator, AcceptsEscapesCommentsAndTimestamps) {
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
  EXPECT_TRUE(parsed.ok()) << parsed.error_text();
  ASSERT_EQ(parsed.samples.size(), 9U);
  EXPECT_EQ(parsed.samples[0].labels.at("a"), "q\"uote \\ back\nnl");
  EXPECT_EQ(parsed.samples[0].value, -1500.0);
  EXPECT_TRUE(std::isnan(parsed.samples[1].value));
  EXPECT_EQ(parsed.value("h_count"), 4.0);
}

TEST(ExpositionValidator, SeriesAreToldApartByTheirLabelValues) {
  // Unescaped, the value of x on the first line reads like the two labels of the second line:
  // still two series, not a duplicate.
  const auto e = parse_exposition(
      "# TYPE a gauge\n"
      "a{x=\"1\\\",y=\\\"2\"} 1\n"
      "a{x=\"1\",y=\"2\"} 2\n");
  ASSERT_TRUE(e.ok()) << e.error_text();
  ASSERT_EQ(e.samples.size(), 2U);
  ASSERT_NE(e.find("a", {{"x", "1\",y=\"2"}}), nullptr);
  EXPECT_EQ(e.find("a", {{"x", "1\",y=\"2"}})->value, 1);
  ASSERT_NE(e.find("a", {{"x", "1"}, {"y", "2"}}), nullptr);
  EXPECT_EQ(e.find("a", {{"x", "1"}, {"y", "2"}})->value, 2);
}

TEST(ExpositionValidator, LookupHelpers) {
  const auto e = parse_exposition(
      "# HELP g A gauge.\n"
      "# TYPE g gauge\n"
      "g{a=\"1\",b=\"x\"} 1\n"
      "g{a=\"1\",b=\"y\"} 2\n"
      "g{a=\"2\",b=\"x\"} 3\n"
      "# TYPE u untyped\n"
      "u 4\n");
  ASSERT_TRUE(e.ok()) << e.error_text();
  EXPECT_EQ(e.types, (std::map<std::string, std::string>{{"g", "gauge"}, {"u", "untyped"}}));
  EXPECT_EQ(e.help.at("g"), "A gauge.");
  EXPECT_EQ(e.count("g"), 3U);
  EXPECT_EQ(e.count("nope"), 0U);
  // find: the exact label set.
  ASSERT_NE(e.find("g", {{"a", "1"}, {"b", "y"}}), nullptr);
  EXPECT_EQ(e.find("g", {{"a", "1"}, {"b", "y"}})->value, 2);
  EXPECT_EQ(e.find("g", {{"a", "1"}, {"b", "y"}})->family, "g");
  EXPECT_EQ(e.find("g", {{"a", "1"}}), nullptr);
  EXPECT_EQ(e.find("u")->value, 4);
  // matching and value: the labels given, whatever the others; value only when unique.
  EXPECT_EQ(e.matching("g").size(), 3U);
  EXPECT_EQ(e.matching("g", {{"a", "1"}}).size(), 2U);
  EXPECT_EQ(e.matching("g", {{"c", "1"}}).size(), 0U);
  EXPECT_EQ(e.value("g", {{"a", "2"}}), 3.0);
  EXPECT_EQ(e.value("g", {{"a", "1"}}), std::nullopt);
  EXPECT_EQ(e.value("g"), std::nullopt);
  EXPECT_EQ(e.value("u"), 4.0);
  EXPECT_EQ(e.value("nope"), std::nullopt);
}

TEST(ExpositionValidator, ReportsEveryErrorWithItsLine) {
  const auto e = parse_exposition(
      "# TYPE a gauge\n"
      "a{x=1} 1\n"
      "a 1,5\n"
      "# TYPE c counter\n"
      "c -1\n");
  EXPECT_FALSE(e.ok());
  ASSERT_EQ(e.errors.size(), 3U) << e.error_text();
  EXPECT_EQ(e.errors[0].rfind("line 2: ", 0), 0U) << e.errors[0];
  EXPECT_EQ(e.errors[1].rfind("line 3: ", 0), 0U) << e.errors[1];
  EXPECT_EQ(e.errors[2].rfind("line 5: ", 0), 0U) << e.errors[2];
  EXPECT_EQ(e.error_text(), e.errors[0] + "\n" + e.errors[1] + "\n" + e.errors[2] + "\n");
}

TEST(ExpositionValidator, ParseFloat) {
  EXPECT_EQ(parse_float("1"), 1.0);
  EXPECT_EQ(parse_float("-2.5e-3"), -0.0025);
  EXPECT_EQ(parse_float(".5"), 0.5);
  EXPECT_EQ(parse_float("+Inf"), INFINITY);
  EXPECT_EQ(parse_float("Inf"), INFINITY);
  EXPECT_EQ(parse_float("-Inf"), -INFINITY);
  ASSERT_TRUE(parse_float("NaN"));
  EXPECT_TRUE(std::isnan(*parse_float("NaN")));
  for (const char* bad : {"", "1,5", "one", "0x10", "inf", "nan", "+NaN", "1e", "1 "}) {
    EXPECT_EQ(parse_float(bad), std::nullopt) << bad;
  }
}

struct Broken {
  const char* why;
  const char* text;
};

TEST(ExpositionValidator, RejectsBrokenText) {
  const std::vector<Broken> cases = {
      {"no trailing newline", "# TYPE a gauge\na 1"},
      {"CRLF line ending", "# TYPE a gauge\r\na 1\r\n"},
      {"sample without TYPE", "a 1\n"},
      {"TYPE after the sample", "a 1\n# TYPE a gauge\n"},
      {"HELP after the sample", "# TYPE a gauge\na 1\n# HELP a late\n"},
      {"TYPE twice", "# TYPE a gauge\n# TYPE a gauge\na 1\n"},
      {"HELP twice", "# HELP a x\n# HELP a y\n# TYPE a gauge\na 1\n"},
      {"unknown type", "# TYPE a countr\na 1\n"},
      {"TYPE without type", "# TYPE a\na 1\n"},
      {"TYPE with extra token", "# TYPE a gauge extra\na 1\n"},
      {"bad name in TYPE", "# TYPE 1a gauge\n"},
      {"bad escape in HELP", "# HELP a bad \\t escape\n# TYPE a gauge\na 1\n"},
      {"bad metric name", "# TYPE a gauge\na-b 1\n"},
      {"metric name starting with a digit", "# TYPE 9a gauge\n9a 1\n"},
      {"bad label name", "# TYPE a gauge\na{0x=\"1\"} 1\n"},
      {"reserved label name", "# TYPE a gauge\na{__x=\"1\"} 1\n"},
      {"unquoted label value", "# TYPE a gauge\na{x=1} 1\n"},
      {"bad label escape", "# TYPE a gauge\na{x=\"\\t\"} 1\n"},
      {"unterminated label value", "# TYPE a gauge\na{x=\"1} 1\n"},
      {"unterminated label set", "# TYPE a gauge\na{x=\"1\" 1\n"},
      {"label twice", "# TYPE a gauge\na{x=\"1\",x=\"2\"} 1\n"},
      {"missing value", "# TYPE a gauge\na\n"},
      {"missing value after labels", "# TYPE a gauge\na{x=\"1\"}\n"},
      {"bad value", "# TYPE a gauge\na 1,5\n"},
      {"word as value", "# TYPE a gauge\na one\n"},
      {"bad timestamp", "# TYPE a gauge\na 1 1.5\n"},
      {"garbage after timestamp", "# TYPE a gauge\na 1 2 3\n"},
      {"trailing blank", "# TYPE a gauge\na 1 \n"},
      {"duplicate series", "# TYPE a gauge\na{x=\"1\",y=\"2\"} 1\na{y=\"2\",x=\"1\"} 2\n"},
      {"duplicate unlabelled series", "# TYPE a gauge\na 1\na 2\n"},
      {"family not grouped", "# TYPE a gauge\na 1\n# TYPE b gauge\nb 1\na{x=\"1\"} 2\n"},
      {"negative counter", "# TYPE c counter\nc -1\n"},
      {"histogram sample without suffix", "# TYPE h histogram\nh 1\n"},
      {"bucket without le", "# TYPE h histogram\nh_bucket 1\nh_sum 0\nh_count 1\n"},
      {"le on _count",
       "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 1\nh_sum 0\nh_count{le=\"+Inf\"} 1\n"},
      {"le not a float", "# TYPE h histogram\nh_bucket{le=\"big\"} 1\nh_sum 0\nh_count 1\n"},
      {"no +Inf bucket", "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_sum 0\nh_count 1\n"},
      {"not cumulative",
       "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_sum 0\nh_count 1\n"},
      {"le out of order",
       "# TYPE h histogram\nh_bucket{le=\"2\"} 1\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} "
       "1\nh_sum 0\nh_count 1\n"},
      {"+Inf differs from _count",
       "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_sum 0\nh_count 3\n"},
      {"no _count", "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_sum 0\n"},
      {"no _sum", "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_count 2\n"},
      {"fractional bucket count", "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 1.5\nh_sum 0\n"},
      {"summary sample without quantile", "# TYPE s summary\ns 1\n"},
      {"HELP without a blank after #", "#HELP a x\n# TYPE a gauge\na 1\n"},
      {"TYPE with two blanks after #", "#  TYPE a gauge\na 1\n"},
      {"blank inside a label set", "# TYPE a gauge\na{x=\"1\", y=\"2\"} 1\n"},
      {"blank before a label set", "# TYPE a gauge\na {x=\"1\"} 1\n"},
      {"two buckets with the same le",
       "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"1.0\"} 1\nh_bucket{le=\"+Inf\"} "
       "1\nh_sum 0\nh_count 1\n"},
      {"infinite bucket count",
       "# TYPE h histogram\nh_bucket{le=\"+Inf\"} +Inf\nh_sum 0\nh_count +Inf\n"},
      {"_count without buckets", "# TYPE h histogram\nh_sum 0\nh_count 0\n"},
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
  for (const auto& c : cases) {
    const auto e = parse_exposition(c.text);
    EXPECT_FALSE(e.ok()) << "accepted: " << c.why << "\n" << c.text;
  }
}

}  // namespace
}  // namespace pgrelay::test
