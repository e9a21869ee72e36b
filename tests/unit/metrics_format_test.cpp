#include <gtest/gtest.h>

#include "metric_store.hpp"
#include "netwatcher/format.hpp"

using namespace netwatcher;
using namespace netwatcher::host;

namespace {

const MetricSeries* find(const MetricsSnapshot& snapshot, const std::string& name,
                         const LabelValues& labels) {
  for (const auto& family : snapshot)
    if (family.spec.name == name)
      for (const auto& s : family.series)
        if (s.labels == labels) return &s;
  return nullptr;
}

}  // namespace

TEST(MetricStore, CountersOnlyGrow) {
  MetricStore store;
  MetricFamily* c = store.declare({"x_total", MetricType::counter, "x", {"k"}});
  c->add({"a"}, 2);
  c->add({"a"}, -5);  // ignored
  c->set({"a"}, 1);   // lower than current: ignored
  c->set({"b"}, 7);
  c->add({"a", "extra"}, 1);  // wrong label count: ignored
  auto snapshot = store.snapshot();
  EXPECT_EQ(find(snapshot, "x_total", {"a"})->value, 2);
  EXPECT_EQ(find(snapshot, "x_total", {"b"})->value, 7);
  EXPECT_EQ(snapshot[0].series.size(), 2u);
}

TEST(MetricStore, HistogramBucketsUseLessOrEqual) {
  MetricStore store;
  MetricFamily* h = store.declare({"lat_seconds", MetricType::histogram, "h", {}, {0.01, 0.001}});
  for (double v : {0.0005, 0.001, 0.002, 5.0}) h->observe({}, v);
  auto snapshot = store.snapshot();
  const MetricSeries* s = find(snapshot, "lat_seconds", {});
  ASSERT_NE(s, nullptr);
  EXPECT_EQ(s->bucket_counts, (std::vector<std::uint64_t>{2, 1, 1}));
  EXPECT_EQ(s->count, 4u);
  EXPECT_DOUBLE_EQ(s->sum, 5.0035);
  EXPECT_EQ(store.declare({"lat_seconds", MetricType::counter, "clash", {}}), nullptr);
}

TEST(Format, TimestampsAndAddresses) {
  EXPECT_EQ(format_timestamp(0), "1970-01-01T00:00:00.000000000Z");
  EXPECT_EQ(format_timestamp(1795299213000000123ULL), "2026-11-21T22:13:33.000000123Z");
  // The per-second cache must follow the second, in both directions.
  EXPECT_EQ(format_timestamp(1795299213999999999ULL), "2026-11-21T22:13:33.999999999Z");
  EXPECT_EQ(format_timestamp(1795299214000000000ULL), "2026-11-21T22:13:34.000000000Z");
  EXPECT_EQ(format_timestamp(1795299213000000001ULL), "2026-11-21T22:13:33.000000001Z");
  std::uint8_t v4[4] = {127, 0, 0, 1};
  EXPECT_EQ(format_address(2, v4), "127.0.0.1");
  std::uint8_t v4_wide[4] = {255, 10, 0, 199};
  EXPECT_EQ(format_address(2, v4_wide), "255.10.0.199");
  std::uint8_t v4_longest[4] = {255, 255, 255, 255};
  EXPECT_EQ(format_address(2, v4_longest), "255.255.255.255");
  std::uint8_t v4_digits[4] = {0, 9, 10, 100};
  EXPECT_EQ(format_address(2, v4_digits), "0.9.10.100");
  std::uint8_t v6[16] = {0xfd, 0x77, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
  EXPECT_EQ(format_address(10, v6), "fd77::1");
  EXPECT_EQ(format_address(99, v6), "");
}

TEST(Format, JsonStringsAreAlwaysValid) {
  std::string out;
  append_json_string(out, std::string("\xe2\x82\xac ok \xe2\x82 \xed\xa0\x80 \x7f", 15));
  EXPECT_EQ(out, "\"\xe2\x82\xac ok \\ufffd\\ufffd \\ufffd\\ufffd\\ufffd \\u007f\"");
}
