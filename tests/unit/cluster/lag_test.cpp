// Replay lag in time from the primary's LSN history, and the hysteresis of the lag limits.
#include "pgrelay/cluster/lag.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>

namespace pgrelay::cluster {
namespace {

using std::chrono::milliseconds;

/// A fixed origin so every time point in a test is exact and independent of the real clock.
const Clock::time_point kT0 = Clock::time_point{} + std::chrono::hours(1);

Clock::time_point at(std::int64_t ms) { return kT0 + milliseconds(ms); }

/// Primary seen at 1000 (t=0), 2000 (t=100), 3000 (t=200), 4000 (t=300).
LsnHistory four_samples() {
  LsnHistory h;
  h.add(at(0), 1000);
  h.add(at(100), 2000);
  h.add(at(200), 3000);
  h.add(at(300), 4000);
  return h;
}

// ---------------------------------------------------------------------------------------------
// LsnHistory

TEST(LsnHistory, EmptyHistoryMeansNoLag) {
  const LsnHistory h;
  EXPECT_EQ(h.size(), 0U);
  EXPECT_EQ(h.lag(0, at(0)), milliseconds(0));
  EXPECT_EQ(h.lag(12345, at(1000)), milliseconds(0));
}

TEST(LsnHistory, IdlePrimaryKeepsOnlyTheFirstSightingAndShowsNoLag) {
  LsnHistory h;
  for (int i = 0; i < 50; ++i) h.add(at(i * 200), 5000);
  EXPECT_EQ(h.size(), 1U);
  // A standby that replayed everything is never behind, however long the cluster idles.
  EXPECT_EQ(h.lag(5000, at(10'000)), milliseconds(0));
  EXPECT_EQ(h.lag(5000, at(1'000'000)), milliseconds(0));
}

TEST(LsnHistory, IdleAfterActivityStillKeepsTheFirstTimeEachLsnWasSeen) {
  LsnHistory h;
  h.add(at(0), 1000);
  h.add(at(100), 2000);
  h.add(at(200), 2000);
  h.add(at(300), 2000);
  EXPECT_EQ(h.size(), 2U);
  // The primary was first seen past 1000 at t=100, not at t=300.
  EXPECT_EQ(h.lag(1000, at(500)), milliseconds(400));
}

TEST(LsnHistory, ReplayEqualToTheLatestIsNoLag) {
  const auto h = four_samples();
  EXPECT_EQ(h.lag(4000, at(300)), milliseconds(0));
  EXPECT_EQ(h.lag(4000, at(5000)), milliseconds(0));
}

TEST(LsnHistory, ReplayAheadOfTheLatestIsNoLag) {
  // The standby can be probed after the primary wrote more than the primary's last probe saw.
  const auto h = four_samples();
  EXPECT_EQ(h.lag(4500, at(350)), milliseconds(0));
}

TEST(LsnHistory, ReplayBetweenSamplesIsMeasuredFromTheFirstSampleBeyondIt) {
  const auto h = four_samples();
  // 2500 lies between 2000 (t=100) and 3000 (t=200): stale since t=200.
  EXPECT_EQ(h.lag(2500, at(350)), milliseconds(150));
  // 3999 lies just below 4000 (t=300).
  EXPECT_EQ(h.lag(3999, at(350)), milliseconds(50));
  // 1001 lies just above 1000 (t=0): stale since 2000 was seen at t=100.
  EXPECT_EQ(h.lag(1001, at(350)), milliseconds(250));
}

TEST(LsnHistory, ReplayEqualToAnOlderSampleIsMeasuredFromTheNextSample) {
  const auto h = four_samples();
  // The standby has exactly what the primary had at t=100; it lacks what was seen at t=200.
  EXPECT_EQ(h.lag(2000, at(350)), milliseconds(150));
  EXPECT_EQ(h.lag(1000, at(350)), milliseconds(250));
  EXPECT_EQ(h.lag(3000, at(350)), milliseconds(50));
}

TEST(LsnHistory, ReplayOlderThanTheWholeHistoryIsTheAgeOfTheOldestSample) {
  const auto h = four_samples();
  EXPECT_EQ(h.lag(999, at(350)), milliseconds(350));
  EXPECT_EQ(h.lag(0, at(1234)), milliseconds(1234));
}

TEST(LsnHistory, StandbyProbedBeforeThePrimaryMovedOnIsNotBehind) {
  const auto h = four_samples();
  // At t=150 the primary had only been seen at 2000; a standby at 2000 then had everything.
  EXPECT_EQ(h.lag(2000, at(150)), milliseconds(0));
  // Probed exactly when the primary was first seen past it: not behind yet either.
  EXPECT_EQ(h.lag(2000, at(200)), milliseconds(0));
  // Probed before even the oldest sample.
  EXPECT_EQ(h.lag(500, at(-10)), milliseconds(0));
  EXPECT_EQ(h.lag(500, at(0)), milliseconds(0));
  // One millisecond later it is.
  EXPECT_EQ(h.lag(2000, at(201)), milliseconds(1));
}

TEST(LsnHistory, SubMillisecondLagTruncatesToWholeMilliseconds) {
  LsnHistory h;
  h.add(kT0, 100);
  h.add(kT0 + std::chrono::microseconds(1500), 200);
  EXPECT_EQ(h.lag(100, kT0 + std::chrono::microseconds(2400)), milliseconds(0));
  EXPECT_EQ(h.lag(100, kT0 + std::chrono::microseconds(3499)), milliseconds(1));
  EXPECT_EQ(h.lag(100, kT0 + std::chrono::microseconds(3500)), milliseconds(2));
}

TEST(LsnHistory, CapacityDropsTheOldestSamples) {
  LsnHistory h(3);
  h.add(at(0), 1000);
  h.add(at(100), 2000);
  h.add(at(200), 3000);
  EXPECT_EQ(h.size(), 3U);
  h.add(at(300), 4000);
  EXPECT_EQ(h.size(), 3U);
  h.add(at(400), 5000);
  EXPECT_EQ(h.size(), 3U);
  // Kept: 3000 (t=200), 4000 (t=300), 5000 (t=400). Anything older is now measured from the
  // oldest kept sample (a lower bound).
  EXPECT_EQ(h.lag(500, at(1000)), milliseconds(800));
  EXPECT_EQ(h.lag(1000, at(1000)), milliseconds(800));
  EXPECT_EQ(h.lag(2999, at(1000)), milliseconds(800));
  EXPECT_EQ(h.lag(3000, at(1000)), milliseconds(700));
  EXPECT_EQ(h.lag(4000, at(1000)), milliseconds(600));
  EXPECT_EQ(h.lag(5000, at(1000)), milliseconds(0));
}

TEST(LsnHistory, RepeatedLsnsDoNotUseCapacity) {
  LsnHistory h(2);
  h.add(at(0), 1000);
  for (int i = 1; i <= 10; ++i) h.add(at(i * 10), 2000);
  EXPECT_EQ(h.size(), 2U);
  EXPECT_EQ(h.lag(1000, at(500)), milliseconds(490));
  EXPECT_EQ(h.lag(999, at(500)), milliseconds(500));
}

TEST(LsnHistory, CapacityOfOneKeepsTheLatest) {
  LsnHistory h(1);
  h.add(at(0), 1000);
  h.add(at(100), 2000);
  EXPECT_EQ(h.size(), 1U);
  EXPECT_EQ(h.lag(1000, at(150)), milliseconds(50));
  EXPECT_EQ(h.lag(2000, at(150)), milliseconds(0));
}

TEST(LsnHistory, LsnGoingBackwardsResetsTheHistory) {
  auto h = four_samples();
  // A new primary on a new timeline starts from its own, lower position.
  h.add(at(1000), 2500);
  EXPECT_EQ(h.size(), 1U);
  EXPECT_EQ(h.lag(2500, at(1200)), milliseconds(0));
  // Older than the new history: the age of its only sample, not of the old primary's samples.
  EXPECT_EQ(h.lag(1000, at(1200)), milliseconds(200));
  h.add(at(1100), 2600);
  EXPECT_EQ(h.size(), 2U);
  EXPECT_EQ(h.lag(2500, at(1200)), milliseconds(100));
}

TEST(LsnHistory, ClearEmptiesTheHistory) {
  auto h = four_samples();
  h.clear();
  EXPECT_EQ(h.size(), 0U);
  EXPECT_EQ(h.lag(0, at(1000)), milliseconds(0));
  h.add(at(2000), 10);
  EXPECT_EQ(h.size(), 1U);
  EXPECT_EQ(h.lag(5, at(2500)), milliseconds(500));
}

// ---------------------------------------------------------------------------------------------
// LagGate (limits: 1000 bytes, 1000 ms; resume at half unless said otherwise)

constexpr std::uint64_t kMaxBytes = 1000;
constexpr std::uint64_t kMaxMs = 1000;

TEST(LagGate, WithinLimitsIsEligible) {
  LagGate g;
  EXPECT_TRUE(g.update(0, kMaxBytes, 0, kMaxMs));
  EXPECT_TRUE(g.update(900, kMaxBytes, 900, kMaxMs));
  // At the limit is still within it.
  EXPECT_TRUE(g.update(kMaxBytes, kMaxBytes, kMaxMs, kMaxMs));
  EXPECT_FALSE(g.excluded);
}

TEST(LagGate, CrossingTheByteLimitExcludes) {
  LagGate g;
  EXPECT_FALSE(g.update(kMaxBytes + 1, kMaxBytes, 0, kMaxMs));
  EXPECT_TRUE(g.excluded);
}

TEST(LagGate, CrossingTheTimeLimitExcludes) {
  LagGate g;
  EXPECT_FALSE(g.update(0, kMaxBytes, kMaxMs + 1, kMaxMs));
  EXPECT_TRUE(g.excluded);
}

TEST(LagGate, StaysExcludedBetweenTheResumeLevelAndTheLimit) {
  LagGate g;
  ASSERT_FALSE(g.update(5000, kMaxBytes, 0, kMaxMs));
  EXPECT_FALSE(g.update(kMaxBytes, kMaxBytes, 0, kMaxMs));
  EXPECT_FALSE(g.update(800, kMaxBytes, 0, kMaxMs));
  EXPECT_FALSE(g.update(501, kMaxBytes, 0, kMaxMs));
  EXPECT_TRUE(g.excluded);
}

TEST(LagGate, EligibleAgainBelowTheResumeLevel) {
  LagGate g;
  ASSERT_FALSE(g.update(0, kMaxBytes, 5000, kMaxMs));
  EXPECT_FALSE(g.update(0, kMaxBytes, 501, kMaxMs));
  EXPECT_TRUE(g.update(0, kMaxBytes, 499, kMaxMs));
  EXPECT_FALSE(g.excluded);
  // Back in: the full limit applies again, not the resume level.
  EXPECT_TRUE(g.update(0, kMaxBytes, 900, kMaxMs));
  EXPECT_FALSE(g.update(0, kMaxBytes, 1001, kMaxMs));
}

TEST(LagGate, AtExactlyTheResumeLevelIsEligible) {
  // lag.hpp: "once exceeded, a value must fall to `resume_fraction` of the limit".
  LagGate g;
  ASSERT_FALSE(g.update(2000, kMaxBytes, 0, kMaxMs));
  EXPECT_TRUE(g.update(500, kMaxBytes, 500, kMaxMs));
}

TEST(LagGate, ResumingNeedsBothBelowTheResumeLevel) {
  LagGate g;
  ASSERT_FALSE(g.update(2000, kMaxBytes, 2000, kMaxMs));
  // Bytes recovered, time not yet.
  EXPECT_FALSE(g.update(10, kMaxBytes, 700, kMaxMs));
  // Time recovered, bytes not yet (both within the limits, but excluded still).
  EXPECT_FALSE(g.update(700, kMaxBytes, 10, kMaxMs));
  EXPECT_TRUE(g.update(10, kMaxBytes, 10, kMaxMs));
}

TEST(LagGate, ExcludedByOneLimitResumesOnlyWhenTheOtherIsLowToo) {
  LagGate g;
  ASSERT_FALSE(g.update(2000, kMaxBytes, 0, kMaxMs));  // out on bytes
  // Bytes drop below half, but the time lag sits between half and the limit.
  EXPECT_FALSE(g.update(100, kMaxBytes, 600, kMaxMs));
  EXPECT_TRUE(g.update(100, kMaxBytes, 400, kMaxMs));
}

TEST(LagGate, CustomResumeFraction) {
  LagGate g;
  ASSERT_FALSE(g.update(1500, kMaxBytes, 0, kMaxMs, 0.8));
  EXPECT_FALSE(g.update(850, kMaxBytes, 0, kMaxMs, 0.8));
  EXPECT_TRUE(g.update(750, kMaxBytes, 0, kMaxMs, 0.8));

  LagGate strict;
  ASSERT_FALSE(strict.update(0, kMaxBytes, 1500, kMaxMs, 0.1));
  EXPECT_FALSE(strict.update(0, kMaxBytes, 499, kMaxMs, 0.1));
  EXPECT_FALSE(strict.update(0, kMaxBytes, 101, kMaxMs, 0.1));
  EXPECT_TRUE(strict.update(0, kMaxBytes, 99, kMaxMs, 0.1));
}

TEST(LagGate, ResumeFractionOfOneIsPlainThreshold) {
  LagGate g;
  ASSERT_FALSE(g.update(1001, kMaxBytes, 0, kMaxMs, 1.0));
  EXPECT_TRUE(g.update(1000, kMaxBytes, 0, kMaxMs, 1.0));
}

TEST(LagGate, ResumeFractionOfZeroNeedsFullCatchUp) {
  LagGate g;
  ASSERT_FALSE(g.update(1001, kMaxBytes, 0, kMaxMs, 0.0));
  EXPECT_FALSE(g.update(1, kMaxBytes, 0, kMaxMs, 0.0));
  EXPECT_FALSE(g.update(0, kMaxBytes, 1, kMaxMs, 0.0));
  EXPECT_TRUE(g.update(0, kMaxBytes, 0, kMaxMs, 0.0));
}

TEST(LagGate, ZeroLimitsAllowOnlyAStandbyWithNoLag) {
  LagGate bytes;
  EXPECT_TRUE(bytes.update(0, 0, 0, 0));
  EXPECT_FALSE(bytes.update(1, 0, 0, 0));
  // Once out, only a fully caught-up standby comes back.
  EXPECT_FALSE(bytes.update(1, 0, 0, 0));
  EXPECT_TRUE(bytes.update(0, 0, 0, 0));

  LagGate time;
  EXPECT_FALSE(time.update(0, 0, 1, 0));
  EXPECT_FALSE(time.update(0, 0, 1, 0));
  EXPECT_TRUE(time.update(0, 0, 0, 0));
}

TEST(LagGate, ZeroByteLimitWithATimeLimit) {
  LagGate g;
  EXPECT_TRUE(g.update(0, 0, 900, kMaxMs));
  EXPECT_FALSE(g.update(1, 0, 0, kMaxMs));
  EXPECT_FALSE(g.update(0, 0, 600, kMaxMs));
  EXPECT_TRUE(g.update(0, 0, 400, kMaxMs));
}

TEST(LagGate, NoFlappingAroundTheLimit) {
  LagGate g;
  int transitions = 0;
  bool eligible = true;
  // Lag oscillating around the limit must flip eligibility once, not on every sample.
  for (int i = 0; i < 20; ++i) {
    const std::uint64_t lag = i % 2 == 0 ? 1050 : 950;
    const bool now = g.update(lag, kMaxBytes, 0, kMaxMs);
    if (now != eligible) ++transitions;
    eligible = now;
  }
  EXPECT_EQ(transitions, 1);
  EXPECT_FALSE(eligible);
}

}  // namespace
}  // namespace pgrelay::cluster
