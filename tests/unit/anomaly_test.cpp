#include "anomaly.hpp"

#include <gtest/gtest.h>

namespace netwatcher::host {
namespace {

AnomalySettings settings(std::uint64_t warmup, double alpha = 0.2, double multiplier = 3) {
  AnomalySettings s;
  s.enabled = true;
  s.warmup = warmup;
  s.alpha = alpha;
  s.multiplier = multiplier;
  return s;
}

TEST(AnomalyDetector, NothingIsFlaggedDuringWarmup) {
  AnomalyDetector detector(settings(30));
  detector.observe("s", 10);
  // Samples 2..30 are still in warm-up however large they are.
  for (int i = 1; i < 30; ++i) {
    auto verdict = detector.observe("s", i == 15 ? 100000 : 10);
    EXPECT_FALSE(verdict.anomaly) << "sample " << i + 1;
    EXPECT_EQ(verdict.threshold, 0);
  }
  // The 31st sample is judged.
  EXPECT_EQ(detector.observe("s", 1e9).seen, 30u);
}

TEST(AnomalyDetector, ComparesAgainstTheAverageBeforeTheSample) {
  AnomalyDetector detector(settings(3, 0.5, 3));
  for (int i = 0; i < 3; ++i) detector.observe("s", 10);  // EWMA 10
  // Folding 31 in first would give EWMA 20.5 and threshold 61.5: not flagged.
  auto verdict = detector.observe("s", 31);
  EXPECT_TRUE(verdict.anomaly);
  EXPECT_DOUBLE_EQ(verdict.baseline, 10);
  EXPECT_DOUBLE_EQ(verdict.threshold, 30);
  // A sample equal to the threshold is not over it. EWMA is now 20.5.
  EXPECT_FALSE(detector.observe("s", 61.5).anomaly);
}

TEST(AnomalyDetector, LargeOutliersAreFlaggedAndStillFoldedIn) {
  AnomalyDetector detector(settings(30));
  for (int i = 0; i < 100; ++i) ASSERT_FALSE(detector.observe("s", 100 + (i % 7)).anomaly);
  auto spike = detector.observe("s", 5000);
  EXPECT_TRUE(spike.anomaly);
  EXPECT_NEAR(spike.baseline, 103, 4);
  // The spike moved the EWMA by alpha * (5000 - ~103): the next baseline shows it.
  auto after = detector.observe("s", 100);
  EXPECT_NEAR(after.baseline, 0.2 * 5000 + 0.8 * spike.baseline, 1e-6);
  EXPECT_FALSE(after.anomaly);
}

TEST(AnomalyDetector, AStepChangeBecomesTheNewBaseline) {
  AnomalyDetector detector(settings(5));
  for (int i = 0; i < 20; ++i) detector.observe("s", 10);
  int flagged = 0;
  for (int i = 0; i < 50; ++i) flagged += detector.observe("s", 100).anomaly;
  // Flagged while the EWMA catches up (100 > 3 * EWMA), then accepted.
  EXPECT_GE(flagged, 1);
  EXPECT_LT(flagged, 10);
}

TEST(AnomalyDetector, SeriesAreIndependent) {
  AnomalyDetector detector(settings(2));
  for (int i = 0; i < 5; ++i) {
    detector.observe("rx", 10);
    detector.observe("tx", 1000);
  }
  EXPECT_TRUE(detector.observe("rx", 100).anomaly);
  EXPECT_FALSE(detector.observe("tx", 1500).anomaly);
  EXPECT_EQ(detector.series(), 2u);
}

TEST(AnomalyDetector, EvictsTheLeastRecentlyUsedSeriesWhenFull) {
  AnomalySettings s = settings(1);
  s.max_series = 2;
  AnomalyDetector detector(s);
  detector.observe("a", 1);
  detector.observe("b", 1);
  detector.observe("a", 1);  // b is now the oldest
  detector.observe("c", 1);  // evicts b
  EXPECT_EQ(detector.series(), 2u);
  EXPECT_EQ(detector.evicted(), 1u);
  EXPECT_EQ(detector.observe("a", 1).seen, 2u);
  EXPECT_EQ(detector.observe("b", 1).seen, 0u);  // starts over
}

TEST(AnomalyDetector, LogsAreRateLimited) {
  AnomalySettings s = settings(1);
  s.max_logs_per_second = 2;
  AnomalyDetector detector(s);
  auto t0 = std::chrono::steady_clock::now();
  std::uint64_t suppressed = 0;
  EXPECT_TRUE(detector.may_log(t0, suppressed));
  EXPECT_TRUE(detector.may_log(t0, suppressed));
  EXPECT_FALSE(detector.may_log(t0, suppressed));
  EXPECT_FALSE(detector.may_log(t0, suppressed));
  EXPECT_TRUE(detector.may_log(t0 + std::chrono::seconds(1), suppressed));
  EXPECT_EQ(suppressed, 2u);
}

}  // namespace
}  // namespace netwatcher::host
