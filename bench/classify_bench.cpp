// Cost of the routing classifier per statement: the lexer pre-pass, a cache hit, and a full
// libpg_query parse (cold: cache bypassed), for a short SELECT and a longer CTE.
//
//   cmake --build build --target classify_bench && build/bin/classify_bench
#include <benchmark/benchmark.h>

#include <string>

#include "pgrelay/sql/classify.hpp"

namespace {

using pgrelay::sql::Classifier;
using pgrelay::sql::FunctionCatalog;

const std::string kShort = "SELECT abalance FROM pgbench_accounts WHERE aid = 48213;";
const std::string kCte =
    "WITH recent AS (SELECT aid, delta FROM pgbench_history WHERE mtime > now() - interval "
    "'1 hour') SELECT aid, sum(delta) FROM recent GROUP BY aid ORDER BY 2 DESC LIMIT 10";

void FastPathShortSelect(benchmark::State& state) {
  const auto catalog = FunctionCatalog::builtin({});
  for (auto _ : state) {
    benchmark::DoNotOptimize(pgrelay::sql::classify_fast(kShort, *catalog));
  }
}
BENCHMARK(FastPathShortSelect);

void CacheHitCte(benchmark::State& state) {
  Classifier classifier(FunctionCatalog::builtin({}));
  classifier.classify(kCte);
  for (auto _ : state) benchmark::DoNotOptimize(classifier.classify(kCte));
}
BENCHMARK(CacheHitCte);

void ClassifierShortSelect(benchmark::State& state) {
  Classifier classifier(FunctionCatalog::builtin({}));
  for (auto _ : state) benchmark::DoNotOptimize(classifier.classify(kShort));
}
BENCHMARK(ClassifierShortSelect);

void FullParseShortSelect(benchmark::State& state) {
  const auto catalog = FunctionCatalog::builtin({});
  for (auto _ : state) {
    benchmark::DoNotOptimize(pgrelay::sql::classify_parsed(kShort, *catalog));
  }
}
BENCHMARK(FullParseShortSelect);

void FullParseCte(benchmark::State& state) {
  const auto catalog = FunctionCatalog::builtin({});
  for (auto _ : state) benchmark::DoNotOptimize(pgrelay::sql::classify_parsed(kCte, *catalog));
}
BENCHMARK(FullParseCte);

}  // namespace

BENCHMARK_MAIN();
