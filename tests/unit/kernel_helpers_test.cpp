// SDK helpers that turn in-kernel log2 histograms into Prometheus buckets.
#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

#include "netwatcher/kernel.hpp"

namespace {

TEST(Log2Histogram, BoundsArePowersOfTwoInSeconds) {
  auto bounds = netwatcher::log2_ns_bucket_bounds(10, 12);
  ASSERT_EQ(bounds.size(), 3u);
  EXPECT_DOUBLE_EQ(bounds[0], 1024e-9);
  EXPECT_DOUBLE_EQ(bounds[1], 2048e-9);
  EXPECT_DOUBLE_EQ(bounds[2], 4096e-9);
}

TEST(Log2Histogram, EachSlotLandsInTheBucketOfItsUpperBound) {
  std::vector<__u64> slots(32, 0);
  slots[0] = 1;   // [1, 2) ns: below the first bound
  slots[9] = 2;   // [512, 1024): le 1024
  slots[10] = 3;  // [1024, 2048): le 2048
  slots[11] = 4;  // [2048, 4096): le 4096
  slots[12] = 5;  // [4096, 8192): above the last bound
  slots[31] = 6;
  auto counts = netwatcher::log2_slots_to_buckets(slots, 10, 12);
  ASSERT_EQ(counts.size(), 4u);  // three bounds and +Inf
  EXPECT_EQ(counts[0], 3u);
  EXPECT_EQ(counts[1], 3u);
  EXPECT_EQ(counts[2], 4u);
  EXPECT_EQ(counts[3], 11u);
}

TEST(Log2Histogram, NothingIsLost) {
  std::vector<__u64> slots(32);
  std::uint64_t total = 0;
  for (std::size_t i = 0; i < slots.size(); ++i) total += slots[i] = i * 7 + 1;
  std::uint64_t folded = 0;
  for (auto c : netwatcher::log2_slots_to_buckets(slots, 7, 26)) folded += c;
  EXPECT_EQ(folded, total);
}

}  // namespace
