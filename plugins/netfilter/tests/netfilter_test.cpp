// The netfilter plugin in real namespaces: rules in one hook show up in that
// hook's time only, forwarded traffic is timed at FORWARD, and verdicts are
// never changed.
#include <gtest/gtest.h>

#include <chrono>
#include <thread>

#include "harness.hpp"

using namespace nwtest;

namespace {

constexpr int kPromPort = 41494;

struct HookTotals {
  double sum = 0, count = 0;
};

HookTotals totals(const PromText& metrics, const std::string& hook, const std::string& family) {
  std::map<std::string, std::string> labels = {{"hook", hook}, {"family", family}};
  return {metrics.value("netwatcher_netfilter_hook_latency_seconds_sum", labels).value_or(0),
          metrics.value("netwatcher_netfilter_hook_latency_seconds_count", labels).value_or(0)};
}

// Mean seconds per packet between two scrapes.
double mean_between(const HookTotals& before, const HookTotals& after) {
  double packets = after.count - before.count;
  return packets > 0 ? (after.sum - before.sum) / packets : -1;
}

void settle() {
  std::this_thread::sleep_for(std::chrono::milliseconds(700));
}

std::string plugin_config(const std::string& keys, const std::string& events_path) {
  return "snapshot_interval = 0.2\n[plugins.netfilter]\n" + keys + sink_config_json(events_path) +
         "[[sinks]]\ntype = \"prometheus\"\nlisten = \"127.0.0.1:" + std::to_string(kPromPort) +
         "\"\n";
}

TEST(Netfilter, RulesInOneHookRaiseOnlyThatHooksTime) {
  NW_REQUIRE_ROOT();
  TwoHosts hosts;
  TempDir dir;
  Netwatcher nw(dir, plugin_config("namespaces = [\"nwt-srv\"]\n", dir.file("events.jsonl")));
  UdpReceiver receiver(TwoHosts::kServer, {7100}, dir);
  auto scrape = [] { return parse_prometheus(http_get(kPromPort, "/metrics")); };

  send_udp(TwoHosts::kClient, "10.77.0.2", 7100, 400, 64, 40100);
  settle();
  auto first = scrape();
  // 3000 rules that never match, all walked by every packet in the input hook.
  std::string rules =
      "table ip nwtest {\n chain input_rules {\n  type filter hook input priority 0;\n";
  for (int i = 0; i < 3000; ++i)
    rules += "  ip saddr 192.0.2." + std::to_string(i % 250 + 1) + " udp dport " +
             std::to_string(20000 + i) + " drop\n";
  rules += " }\n}\n";
  nft(TwoHosts::kServer, rules);
  send_udp(TwoHosts::kClient, "10.77.0.2", 7100, 400, 64, 40100);
  settle();
  auto second = scrape();
  auto third_totals = [&](const char* hook) { return totals(second, hook, "ipv4"); };
  ASSERT_EQ(nw.stop(), 0);
  // Verdicts unchanged: every datagram arrived.
  EXPECT_EQ(receiver.counts()[7100], 800u);

  HookTotals input0{}, pre0{};
  const HookTotals input1 = totals(first, "input", "ipv4"),
                   pre1 = totals(first, "prerouting", "ipv4");
  const double input_before = mean_between(input0, input1);
  const double input_after = mean_between(input1, third_totals("input"));
  const double pre_before = mean_between(pre0, pre1);
  const double pre_after = mean_between(pre1, third_totals("prerouting"));
  ASSERT_GE(input1.count, 400);
  ASSERT_GT(input_before, 0);
  ASSERT_GT(pre_before, 0);
  // Walking 3000 rules costs microseconds; an empty hook well under one.
  EXPECT_GT(input_after, 5 * input_before + 1e-6)
      << "input: " << input_before << " s -> " << input_after << " s";
  EXPECT_LT(pre_after, 3 * pre_before + 1e-6)
      << "prerouting: " << pre_before << " s -> " << pre_after << " s";
}

TEST(Netfilter, ForwardedTrafficIsTimedAtForwardAndDropRulesStillDrop) {
  NW_REQUIRE_ROOT();
  RoutedHosts hosts;
  TempDir dir;
  nft(RoutedHosts::kRouter,
      "table inet nwtest {\n chain forward_rules {\n  type filter hook forward priority 0;\n"
      "  udp dport 7201 drop\n }\n}\n");
  Netwatcher nw(dir, plugin_config("namespaces = [\"nwt-r\"]\nevents = true\n"
                                   "max_events_per_second = 0\n",
                                   dir.file("events.jsonl")));
  UdpReceiver receiver(RoutedHosts::kB, {7200, 7201}, dir);
  send_udp(RoutedHosts::kA, "10.78.2.1", 7200, 50, 100, 40200);
  send_udp(RoutedHosts::kA, "fd78:2::1", 7200, 30, 100, 40201);
  send_udp(RoutedHosts::kA, "10.78.2.1", 7201, 20, 100, 40202);
  settle();
  auto metrics = parse_prometheus(http_get(kPromPort, "/metrics"));
  ASSERT_EQ(nw.stop(), 0);
  auto received = receiver.counts();
  EXPECT_EQ(received[7200], 80u);
  EXPECT_EQ(received[7201], 0u) << "the forward DROP rule must still drop";

  const std::uint64_t router_netns = netns_inode(RoutedHosts::kRouter);
  std::map<std::string, int> forward_events;  // family -> count
  int postrouting_forwarded = 0, dropped_port_after_forward = 0;
  for (const auto& e :
       events_of(parse_json_lines(read_file(dir.file("events.jsonl"))), "nf_hook")) {
    const auto& f = e["fields"];
    if (!f.has("dst_port")) continue;
    if (f["dst_port"].u64() == 7201 &&
        (f["hook"].str() == "forward" || f["hook"].str() == "postrouting"))
      ++dropped_port_after_forward;
    if (f["dst_port"].u64() != 7200) continue;
    EXPECT_EQ(f["netns"].u64(), router_netns);
    if (f["hook"].str() == "forward") {
      EXPECT_EQ(f["path"].str(), "forward");
      EXPECT_EQ(f["protocol"].str(), "udp");
      const bool v6 = f["family"].str() == "ipv6";
      EXPECT_EQ(f["src_addr"].str(), v6 ? "fd78:1::1" : "10.78.1.1");
      EXPECT_EQ(f["dst_addr"].str(), v6 ? "fd78:2::1" : "10.78.2.1");
      EXPECT_EQ(f["src_port"].u64(), v6 ? 40201u : 40200u);
      EXPECT_TRUE(f.has("in_ifindex") && f.has("out_ifindex"));
      ++forward_events[f["family"].str()];
    }
    if (f["hook"].str() == "postrouting" && f["path"].str() == "forward") ++postrouting_forwarded;
  }
  EXPECT_EQ(forward_events["ipv4"], 50);
  EXPECT_EQ(forward_events["ipv6"], 30);
  EXPECT_EQ(postrouting_forwarded, 80);
  EXPECT_EQ(dropped_port_after_forward, 0) << "a dropped packet never leaves the forward hook";

  std::map<std::string, std::string> fwd4 = {{"hook", "forward"}, {"family", "ipv4"}};
  EXPECT_GE(metrics.value("netwatcher_netfilter_packets_total", fwd4).value_or(0), 70);
  EXPECT_GE(metrics.value("netwatcher_netfilter_hook_latency_seconds_count", fwd4).value_or(0), 50);
  EXPECT_EQ(metrics.value("netwatcher_netfilter_packets_stopped_total", fwd4).value_or(-1), 20);
  EXPECT_GE(metrics
                .value("netwatcher_netfilter_hook_latency_seconds_count",
                       {{"hook", "forward"}, {"family", "ipv6"}})
                .value_or(0),
            30);
}

TEST(Netfilter, UnknownNamespaceDisablesThePluginWithTheReason) {
  NW_REQUIRE_ROOT();
  TempDir dir;
  write_file(dir.file("nw.toml"), "[netwatcher]\nplugin_dirs = [\"" + std::string(NW_PLUGIN_DIR) +
                                      "\"]\n[plugins.netfilter]\nnamespaces = [\"nwt-missing\"]\n");
  auto result =
      run(std::string(NW_BINARY) + " --config " + dir.file("nw.toml") + " --duration 1 2>&1");
  EXPECT_NE(result.exit_code, 0);
  EXPECT_NE(result.output.find("/run/netns/nwt-missing"), std::string::npos) << result.output;
}

}  // namespace
