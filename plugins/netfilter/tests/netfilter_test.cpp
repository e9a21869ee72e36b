// The netfilter plugin in real namespaces: rules in one hook show up in that
// hook's time only, forwarded traffic is timed at FORWARD, and verdicts are
// never changed.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <memory>
#include <thread>
#include <tuple>

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

// Two namespaces joined by a veth, shared by the tests below, each running
// its own netwatcher. Every count is of datagrams the test sent itself, on
// ports nothing else uses, and set against the kernel's UDP MIB.
class NetfilterNamespaces : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (is_root()) hosts_ = std::make_unique<TwoHosts>();
  }
  static void TearDownTestSuite() { hosts_.reset(); }
  void SetUp() override { NW_REQUIRE_ROOT(); }

  // nf_hook events of UDP/IPv4 between the two hosts, by
  // (netns, hook, path, dst_port).
  using Key = std::tuple<std::uint64_t, std::string, std::string, std::uint64_t>;
  static std::map<Key, int> udp_events(const std::vector<Json>& events) {
    std::map<Key, int> out;
    for (const auto& e : events) {
      const auto& f = e["fields"];
      if (f["protocol"].str() != "udp" || f["family"].str() != "ipv4" || !f.has("dst_port"))
        continue;
      const bool ours =
          (f["src_addr"].str() == "10.77.0.1" && f["dst_addr"].str() == "10.77.0.2") ||
          (f["src_addr"].str() == "10.77.0.2" && f["dst_addr"].str() == "10.77.0.1");
      if (!ours) continue;
      ++out[{f["netns"].u64(), f["hook"].str(), f["path"].str(), f["dst_port"].u64()}];
    }
    return out;
  }
  std::vector<Json> events() const {
    return events_of(read_json_lines(dir_.file("events.jsonl")), "nf_hook");
  }
  static std::uint64_t ifindex(const std::string& netns, const std::string& device) {
    return std::stoull(
        run("ip netns exec " + netns + " cat /sys/class/net/" + device + "/ifindex").output);
  }

  static std::unique_ptr<TwoHosts> hosts_;
  TempDir dir_;
};

std::unique_ptr<TwoHosts> NetfilterNamespaces::hosts_;

// namespaces = ["*"]: both hosts are linked, and each one's traffic is
// labelled with its own namespace and the hook and path it took there:
// locally generated datagrams at output and postrouting (local_out),
// locally delivered ones at prerouting (receive, not routed yet) and input
// (local_in), none at forward. A namespace that appears after start-up is
// NamespaceFollow's (tests/integration/netns_follow_test.cpp).
TEST_F(NetfilterNamespaces, EveryNamespaceLabelsItsOwnTrafficWithItsHookAndPath) {
  constexpr int kToServer = 7120, kToClient = 7121, kUp = 30, kDown = 20;
  const std::uint64_t client = netns_inode(TwoHosts::kClient);
  const std::uint64_t server = netns_inode(TwoHosts::kServer);
  Netwatcher nw(dir_, plugin_config("namespaces = [\"*\"]\nevents = true\n"
                                    "max_events_per_second = 0\n",
                                    dir_.file("events.jsonl")));
  TempDir server_dir, client_dir;
  UdpReceiver at_server(TwoHosts::kServer, {kToServer}, server_dir);
  UdpReceiver at_client(TwoHosts::kClient, {kToClient}, client_dir);
  const std::uint64_t client_out = nstat(TwoHosts::kClient, "UdpOutDatagrams");
  const std::uint64_t client_in = nstat(TwoHosts::kClient, "UdpInDatagrams");
  const std::uint64_t server_out = nstat(TwoHosts::kServer, "UdpOutDatagrams");
  const std::uint64_t server_in = nstat(TwoHosts::kServer, "UdpInDatagrams");
  send_udp(TwoHosts::kClient, "10.77.0.2", kToServer, kUp, 100, 40120);
  send_udp(TwoHosts::kServer, "10.77.0.1", kToClient, kDown, 100, 40121);
  EXPECT_EQ(at_server.counts()[kToServer], static_cast<std::uint64_t>(kUp));
  EXPECT_EQ(at_client.counts()[kToClient], static_cast<std::uint64_t>(kDown));
  // The kernel's own count of what each side sent and delivered.
  const std::uint64_t up = nstat(TwoHosts::kClient, "UdpOutDatagrams") - client_out;
  const std::uint64_t down = nstat(TwoHosts::kServer, "UdpOutDatagrams") - server_out;
  EXPECT_EQ(up, static_cast<std::uint64_t>(kUp));
  EXPECT_EQ(down, static_cast<std::uint64_t>(kDown));
  EXPECT_EQ(nstat(TwoHosts::kServer, "UdpInDatagrams") - server_in, up);
  EXPECT_EQ(nstat(TwoHosts::kClient, "UdpInDatagrams") - client_in, down);

  const int up_n = static_cast<int>(up), down_n = static_cast<int>(down);
  const std::map<Key, int> expected = {
      {{client, "output", "local_out", kToServer}, up_n},
      {{client, "postrouting", "local_out", kToServer}, up_n},
      {{server, "prerouting", "receive", kToServer}, up_n},
      {{server, "input", "local_in", kToServer}, up_n},
      {{server, "output", "local_out", kToClient}, down_n},
      {{server, "postrouting", "local_out", kToClient}, down_n},
      {{client, "prerouting", "receive", kToClient}, down_n},
      {{client, "input", "local_in", kToClient}, down_n},
  };
  wait_until([&] { return udp_events(events()) == expected; });
  ASSERT_EQ(nw.stop(), 0) << nw.log();
  const auto all = events_of(parse_json_lines(read_file(dir_.file("events.jsonl"))), "nf_hook");
  const auto seen = udp_events(all);
  for (const auto& [key, n] : expected) {
    const auto& [netns, hook, path, port] = key;
    auto found = seen.find(key);
    EXPECT_EQ(found == seen.end() ? 0 : found->second, n)
        << hook << "/" << path << " to port " << port << " in netns " << netns;
  }
  for (const auto& [key, n] : seen)
    EXPECT_TRUE(expected.count(key))
        << n << " events at " << std::get<1>(key) << "/" << std::get<2>(key) << " to port "
        << std::get<3>(key) << " in netns " << std::get<0>(key);

  // The devices each hook reports: in at prerouting and input, out at
  // output and postrouting, both ends of the one veth.
  const std::uint64_t c0 = ifindex(TwoHosts::kClient, "nwt-c0");
  const std::uint64_t s0 = ifindex(TwoHosts::kServer, "nwt-s0");
  for (const auto& e : all) {
    const auto& f = e["fields"];
    if (!f.has("dst_port") ||
        (f["dst_port"].u64() != kToServer && f["dst_port"].u64() != kToClient))
      continue;
    const std::string hook = f["hook"].str();
    const std::uint64_t device = f["netns"].u64() == client ? c0 : s0;
    const bool inbound = hook == "prerouting" || hook == "input";
    SCOPED_TRACE(hook + " in netns " + std::to_string(f["netns"].u64()));
    EXPECT_EQ(f.has("in_ifindex"), inbound);
    EXPECT_EQ(f.has("out_ifindex"), !inbound);
    EXPECT_EQ(f[inbound ? "in_ifindex" : "out_ifindex"].u64(), device);
    EXPECT_EQ(f["length"].u64(), 128u) << "IPv4 and UDP headers and 100 bytes";
  }
}

// A namespace named by a /proc/PID/ns/net path, and nothing else: only its
// hooks are linked. hook_ns is the time the hook's chains took: 3000 rules
// in its input hook make every input packet slower, not its prerouting ones,
// and a hook that saw no packet (forward) has neither count nor time.
TEST_F(NetfilterNamespaces, AProcPathLinksThatNamespaceAloneAndItsRulesShowInHookNs) {
  constexpr int kPort = 7130, kCount = 40;
  const std::uint64_t server = netns_inode(TwoHosts::kServer);
  // A process in the server's namespace, as a container's would be.
  Process holder({"ip", "netns", "exec", TwoHosts::kServer, "sleep", "600"}, dir_.file("hold.log"));
  const std::string ns_file = "/proc/" + std::to_string(holder.pid()) + "/ns/net";
  ASSERT_TRUE(wait_until([&] {
    struct stat st {};
    return ::stat(ns_file.c_str(), &st) == 0 && st.st_ino == server;
  }));
  Netwatcher nw(dir_, plugin_config("namespaces = [\"" + ns_file +
                                        "\"]\nevents = true\nmax_events_per_second = 0\n",
                                    dir_.file("events.jsonl")));
  EXPECT_NE(nw.log().find("netfilter links in network namespace " + std::to_string(server) + " (" +
                          ns_file + ")"),
            std::string::npos)
      << nw.log();
  UdpReceiver receiver(TwoHosts::kServer, {kPort}, dir_);
  struct Rules {  // the cost, removed whatever happens: the namespaces are shared
    ~Rules() {
      run("ip netns exec " + std::string(TwoHosts::kServer) + " nft delete table ip nwcost");
    }
  } rules_guard;

  auto input_events = [&](std::uint64_t sport) {
    std::map<std::string, std::vector<std::uint64_t>> hook_ns;  // by hook
    for (const auto& e : events()) {
      const auto& f = e["fields"];
      if (f.has("src_port") && f["src_port"].u64() == sport && f["dst_port"].u64() == kPort)
        hook_ns[f["hook"].str()].push_back(f["hook_ns"].u64());
    }
    return hook_ns;
  };
  auto delivered = [&](std::uint64_t sport) {
    auto seen = input_events(sport);
    return seen["input"].size() == kCount && seen["prerouting"].size() == kCount;
  };
  send_udp(TwoHosts::kClient, "10.77.0.2", kPort, kCount, 64, 40130);
  ASSERT_TRUE(wait_until([&] { return delivered(40130); }));
  std::string ruleset =
      "table ip nwcost {\n chain input_rules {\n  type filter hook input priority 0;\n";
  for (int i = 0; i < 3000; ++i)
    ruleset += "  ip saddr 192.0.2." + std::to_string(i % 250 + 1) + " udp dport " +
               std::to_string(20000 + i) + " drop\n";
  ruleset += " }\n}\n";
  nft(TwoHosts::kServer, ruleset);
  send_udp(TwoHosts::kClient, "10.77.0.2", kPort, kCount, 64, 40131);
  ASSERT_TRUE(wait_until([&] { return delivered(40131); }));
  const std::map<std::string, std::string> input4 = {{"hook", "input"}, {"family", "ipv4"}};
  const PromText metrics = scrape_until(kPromPort, [&](const PromText& m) {
    return m.value("netwatcher_netfilter_packets_total", input4) == 2 * kCount;
  });
  ASSERT_EQ(nw.stop(), 0) << nw.log();
  EXPECT_EQ(receiver.counts()[kPort], 2u * kCount) << "the rules match nothing of ours";

  const auto all = events_of(parse_json_lines(read_file(dir_.file("events.jsonl"))), "nf_hook");
  ASSERT_FALSE(all.empty());
  int elsewhere = 0;
  for (const auto& e : all)
    if (e["fields"]["netns"].u64() != server) ++elsewhere;
  EXPECT_EQ(elsewhere, 0) << "only the namespace of " << ns_file << " is linked";

  auto median = [](std::vector<std::uint64_t> v) {
    std::sort(v.begin(), v.end());
    return v.empty() ? 0 : v[v.size() / 2];
  };
  auto before = input_events(40130), after = input_events(40131);
  for (const auto* seen : {&before, &after}) {
    EXPECT_EQ(seen->size(), 2u) << "prerouting and input only, to a local socket";
    for (const auto& [hook, times] : *seen) {
      EXPECT_EQ(times.size(), static_cast<std::size_t>(kCount)) << hook;
      for (auto ns : times) {
        EXPECT_GT(ns, 0u) << hook;
        EXPECT_LT(ns, 10000000u) << hook << ": 10 ms in one hook of a veth";
      }
    }
  }
  const std::uint64_t input_before = median(before["input"]), input_after = median(after["input"]);
  const std::uint64_t pre_before = median(before["prerouting"]),
                      pre_after = median(after["prerouting"]);
  // Walking 3000 rules takes microseconds; two programs and no rule well
  // under one.
  EXPECT_GT(input_after, 5 * input_before + 1000)
      << "input: " << input_before << " ns -> " << input_after << " ns";
  EXPECT_LT(pre_after, 3 * pre_before + 1000)
      << "prerouting: " << pre_before << " ns -> " << pre_after << " ns";

  // The histograms agree with the events; forward saw nothing.
  EXPECT_EQ(metrics.value("netwatcher_netfilter_hook_latency_seconds_count", input4), 2 * kCount);
  EXPECT_EQ(metrics.value("netwatcher_netfilter_packets_stopped_total", input4), 0);
  std::uint64_t input_sum = 0;
  for (const auto* seen : {&before, &after})
    for (auto ns : seen->at("input")) input_sum += ns;
  EXPECT_NEAR(metrics.value("netwatcher_netfilter_hook_latency_seconds_sum", input4).value_or(0),
              static_cast<double>(input_sum) / 1e9, 1e-9 * 2 * kCount);
  for (const char* family : {"ipv4", "ipv6"}) {
    const std::map<std::string, std::string> forward = {{"hook", "forward"}, {"family", family}};
    EXPECT_EQ(metrics.value("netwatcher_netfilter_packets_total", forward), 0) << family;
    EXPECT_EQ(metrics.value("netwatcher_netfilter_hook_latency_seconds_count", forward), 0);
    EXPECT_EQ(metrics.value("netwatcher_netfilter_hook_latency_seconds_sum", forward), 0);
  }
}

}  // namespace
