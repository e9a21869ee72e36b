// The top view's frames from fixed snapshots: rates, order, units, bars, cuts.
#include <gtest/gtest.h>

#include "top_view.hpp"

using namespace netwatcher;

namespace {

MetricFamilySnapshot family(std::string name, MetricType type, std::vector<std::string> labels,
                            std::vector<double> buckets = {}) {
  MetricFamilySnapshot f;
  f.spec = {std::move(name), type, "help", std::move(labels), std::move(buckets)};
  return f;
}

MetricSeries counter(LabelValues labels, double value) {
  return {std::move(labels), value, {}, 0, 0};
}

// Two frames two seconds apart: drops grew by 40 and 4, one connection sent
// 2 MiB, a reset stayed where it was, a histogram got three observations.
struct Frames {
  MetricsSnapshot before, now;
  Frames() {
    auto events = family("netwatcher_events_total", MetricType::counter, {"plugin", "event"});
    auto lost = family("netwatcher_events_lost_total", MetricType::counter, {"plugin"});
    auto resets = family("demo_resets_total", MetricType::counter, {"direction"});
    auto drops = family("demo_drops_total", MetricType::counter, {"reason"});
    auto bytes = family("demo_conn_bytes_total", MetricType::counter, {"conn"});
    auto idle = family("demo_idle_total", MetricType::counter, {});
    auto up = family("demo_up", MetricType::gauge, {});
    auto rtt = family("demo_rtt_seconds", MetricType::histogram, {"family"},
                      {0.000001024, 0.000002048, 0.000004096, 0.000008192});
    auto b_events = events, b_lost = lost, b_resets = resets, b_drops = drops, b_bytes = bytes,
         b_idle = idle, b_up = up, b_rtt = rtt;
    b_events.series = {counter({"demo", "a"}, 100)};
    b_lost.series = {counter({"demo"}, 2)};
    b_resets.series = {counter({"rx"}, 7)};
    b_drops.series = {counter({"NO_SOCKET"}, 10), counter({"TCP_CSUM"}, 1)};
    b_bytes.series = {counter({"a:1>b:2"}, 1024)};
    b_rtt.series = {{{"ipv4"}, 0, {0, 1, 0, 0, 0}, 0.0000015, 1}};
    before = {b_events, b_lost, b_resets, b_drops, b_bytes, b_idle, b_up, b_rtt};
    events.series = {counter({"demo", "a"}, 150)};
    lost.series = {counter({"demo"}, 2)};
    resets.series = {counter({"rx"}, 7)};
    drops.series = {counter({"NO_SOCKET"}, 50), counter({"TCP_CSUM"}, 5),
                    counter({"NEW\x01LINE"}, 0)};
    bytes.series = {counter({"a:1>b:2"}, 1024 + 2 * 1048576.0)};
    up.series = {counter({}, 1)};
    rtt.series = {{{"ipv4"}, 0, {0, 2, 0, 1, 1}, 0.00002, 4}};
    now = {events, lost, resets, drops, bytes, idle, up, rtt};
  }
};

TEST(TopView, RanksCountersByRateAndDrawsHistogramsAsLog2Bars) {
  Frames f;
  EXPECT_EQ(top::render(f.now, f.before, 2.0, "10:41:02 UTC", 2, {}),
            "netwatcher top  10:41:02 UTC  every 2 s  events 150 (25/s), lost 2\n"
            "\n"
            "      RATE/s        TOTAL  COUNTER SERIES\n"
            "demo_drops_total\n"
            "          20           50  reason=NO_SOCKET\n"
            "           2            5  reason=TCP_CSUM\n"
            "demo_conn_bytes_total\n"
            "      1.0MiB       2.0MiB  conn=a:1>b:2\n"
            "demo_resets_total\n"
            "           0            7  direction=rx\n"
            "\n"
            "HISTOGRAMS (counts since start-up; +N: observations since the last frame)\n"
            "demo_rtt_seconds family=ipv4  count 4 (+3)  mean 5us\n"
            "             range : count      distribution\n"
            "  1.02us -> 2.05us : 2          |****************************************|\n"
            "   2.05us -> 4.1us : 0          |                                        |\n"
            "   4.1us -> 8.19us : 1          |********************                    |\n"
            "          > 8.19us : 1          |********************                    |\n");
}

TEST(TopView, TheAgentsOwnFamiliesShowOnlyWhenAsked) {
  Frames f;
  auto runs =
      family("netwatcher_bpf_program_runs_total", MetricType::counter, {"plugin", "program"});
  runs.series = {counter({"demo", "prog"}, 9)};
  auto cpu = family("process_cpu_seconds_total", MetricType::counter, {});
  cpu.series = {counter({}, 0.25)};
  f.now.push_back(runs);
  f.now.push_back(cpu);
  const std::string hidden = top::render(f.now, f.before, 2.0, "t", 2, {});
  EXPECT_EQ(hidden.find("netwatcher_bpf_program_runs_total"), std::string::npos) << hidden;
  EXPECT_EQ(hidden.find("process_cpu_seconds_total"), std::string::npos) << hidden;
  EXPECT_EQ(hidden.find("netwatcher_events_total\n"), std::string::npos) << hidden;
  EXPECT_NE(hidden.find("events 150 (25/s), lost 2"), std::string::npos) << "the title sums them";
  top::Layout layout;
  layout.agent_families = true;
  const std::string shown = top::render(f.now, f.before, 2.0, "t", 2, layout);
  EXPECT_NE(shown.find("netwatcher_bpf_program_runs_total\n"
                       "           -            9  plugin=demo program=prog\n"),
            std::string::npos)
      << shown;
  EXPECT_NE(shown.find("           -        250ms  (no labels)"), std::string::npos) << shown;
}

TEST(TopView, TheFirstFrameHasTotalsButNoRates) {
  Frames f;
  const std::string frame = top::render(f.now, {}, 0, "t", 2, {});
  EXPECT_NE(frame.find("           -           50  reason=NO_SOCKET\n"), std::string::npos)
      << frame;
  EXPECT_NE(frame.find("events 150, lost 2\n"), std::string::npos) << frame;
  EXPECT_NE(frame.find("count 4 (+4)"), std::string::npos) << frame;
}

TEST(TopView, RowsHeightAndWidthAreBounded) {
  Frames f;
  top::Layout layout;
  layout.rows_per_family = 1;
  layout.width = 30;
  layout.height = 8;
  const std::string frame = top::render(f.now, f.before, 2.0, "t", 2, layout);
  std::vector<std::string> lines;
  for (std::size_t at = 0, end; (end = frame.find('\n', at)) != std::string::npos; at = end + 1)
    lines.push_back(frame.substr(at, end - at));
  ASSERT_EQ(lines.size(), 8u) << frame;
  for (const auto& line : lines) EXPECT_LE(line.size(), 30u) << line;
  EXPECT_EQ(lines[3], "demo_drops_total");
  EXPECT_EQ(lines[4], "          20           50  rea") << "one row per family, cut";
  EXPECT_EQ(lines[5], "                           ...");
  EXPECT_EQ(lines[6], "demo_conn_bytes_total");
  EXPECT_EQ(lines[7], "... 11 more lines (a taller te");
}

TEST(TopView, SaysSoWhenNothingCountedYet) {
  const std::string frame = top::render({}, {}, 0, "t", 2, {});
  EXPECT_NE(frame.find("(no counter has counted anything yet)"), std::string::npos);
  EXPECT_NE(frame.find("(no histogram has an observation yet)"), std::string::npos);
}

TEST(TopView, UnitsReadLikeTheToolsOperatorsKnow) {
  EXPECT_EQ(top::format_seconds(0.000000512), "512ns");
  EXPECT_EQ(top::format_seconds(0.000001024), "1.02us");
  EXPECT_EQ(top::format_seconds(0.0655), "65.5ms");
  EXPECT_EQ(top::format_seconds(1.07), "1.07s");
  EXPECT_EQ(top::format_bytes(999), "999B");
  EXPECT_EQ(top::format_bytes(1536), "1.5KiB");
  EXPECT_EQ(top::format_bytes(12.0 * 1048576), "12.0MiB");
}

}  // namespace
