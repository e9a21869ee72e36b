// The drop plugin against real drops: nftables DROP rules, closed UDP and
// TCP ports, in namespaces; reasons, tuples, locations, pids and counters.
#include <gtest/gtest.h>

#include <chrono>
#include <fstream>
#include <functional>
#include <set>
#include <thread>

#include "harness.hpp"

using namespace nwtest;

namespace {

constexpr int kPromPort = 41495;

std::set<std::string> kernel_text_symbols() {
  std::set<std::string> names;
  std::ifstream in("/proc/kallsyms");
  std::string address, type, name;
  while (in >> address >> type >> name) {
    if (type == "t" || type == "T") names.insert(name);
    in.ignore(4096, '\n');
  }
  return names;
}

// "tcp_v4_rcv+0x91" -> "tcp_v4_rcv"
std::string function_of(const std::string& location) {
  return location.substr(0, location.find('+'));
}

std::vector<Json> drops_matching(const std::vector<Json>& drops, const std::string& reason,
                                 const std::string& dst, std::uint64_t dst_port) {
  std::vector<Json> out;
  for (const auto& e : drops) {
    const auto& f = e["fields"];
    if (f["reason"].str() == reason && f.has("dst_addr") && f["dst_addr"].str() == dst &&
        f.has("dst_port") && f["dst_port"].u64() == dst_port)
      out.push_back(e);
  }
  return out;
}

class Drop : public ::testing::Test {
 protected:
  void SetUp() override {
    NW_REQUIRE_ROOT();
    hosts_ = std::make_unique<TwoHosts>();
  }
  std::vector<Json> drops() {
    return events_of(parse_json_lines(read_file(dir_.file("events.jsonl"))), "drop");
  }
  std::string config(const std::string& keys = "") {
    return "snapshot_interval = 0.2\n[plugins.drop]\n" + keys +
           sink_config_json(dir_.file("events.jsonl")) +
           "[[sinks]]\ntype = \"prometheus\"\nlisten = \"127.0.0.1:" + std::to_string(kPromPort) +
           "\"\n";
  }
  // Waits until `seen` holds for the drop events written so far.
  bool wait_for_drops(const std::function<bool(const std::vector<Json>&)>& seen) {
    return wait_until(
        [&] { return seen(events_of(read_json_lines(dir_.file("events.jsonl")), "drop")); });
  }
  PromText metrics_when(const std::function<bool(const PromText&)>& ready) {
    return scrape_until(kPromPort, ready);
  }

  TempDir dir_;
  std::unique_ptr<TwoHosts> hosts_;
};

TEST_F(Drop, ReasonsTuplesAndLocationsOfRealDrops) {
  // A DROP rule on the server's input, one on the client's output.
  nft(TwoHosts::kServer,
      "table inet nwtest {\n chain input_rules {\n  type filter hook input priority 0;\n"
      "  udp dport 7001 drop\n }\n}\n");
  nft(TwoHosts::kClient,
      "table inet nwtest {\n chain output_rules {\n  type filter hook output priority 0;\n"
      "  udp dport 7004 drop\n }\n}\n");
  Netwatcher nw(dir_, config());
  send_udp(TwoHosts::kClient, "10.77.0.2", 7001, 5, 100, 40001);
  send_udp(TwoHosts::kClient, "10.77.0.2", 7002, 3, 50, 40002);  // closed port
  send_udp(TwoHosts::kClient, "fd77::2", 7002, 2, 60, 40003);    // closed port, IPv6
  UdpSent local = send_udp(TwoHosts::kClient, "10.77.0.2", 7004, 4, 10, 40004);
  // A SYN to a closed TCP port.
  auto refused =
      run("ip netns exec nwt-cli /usr/bin/python3 -c \"import socket\n"
          "s = socket.socket()\ns.bind(('10.77.0.1', 40005))\n"
          "try:\n    s.connect(('10.77.0.2', 7003))\nexcept OSError:\n    pass\"");
  ASSERT_EQ(refused.exit_code, 0) << refused.output;
  EXPECT_TRUE(wait_for_drops([](const std::vector<Json>& all) {
    return drops_matching(all, "NETFILTER_DROP", "10.77.0.2", 7001).size() >= 5 &&
           drops_matching(all, "NO_SOCKET", "10.77.0.2", 7002).size() >= 3 &&
           drops_matching(all, "NO_SOCKET", "fd77::2", 7002).size() >= 2 &&
           !drops_matching(all, "NO_SOCKET", "10.77.0.2", 7003).empty() &&
           drops_matching(all, "NETFILTER_DROP", "10.77.0.2", 7004).size() >= 4;
  }));
  auto metrics = metrics_when([](const PromText& m) {
    return m.value("netwatcher_drops_total", {{"reason", "NETFILTER_DROP"}, {"protocol", "udp"}})
                   .value_or(0) >= 9 &&
           m.value("netwatcher_drops_total", {{"reason", "NO_SOCKET"}, {"protocol", "udp"}})
                   .value_or(0) >= 5 &&
           m.value("netwatcher_drops_total", {{"reason", "NO_SOCKET"}, {"protocol", "tcp"}})
                   .value_or(0) >= 1;
  });
  ASSERT_EQ(nw.stop(), 0);
  const auto all = drops();
  const auto symbols = kernel_text_symbols();
  const std::uint64_t server_netns = netns_inode(TwoHosts::kServer);
  const std::uint64_t client_netns = netns_inode(TwoHosts::kClient);

  auto filtered = drops_matching(all, "NETFILTER_DROP", "10.77.0.2", 7001);
  ASSERT_EQ(filtered.size(), 5u) << read_file(dir_.file("events.jsonl"));
  for (const auto& e : filtered) {
    const auto& f = e["fields"];
    EXPECT_EQ(f["protocol"].str(), "udp");
    EXPECT_EQ(f["family"].str(), "ipv4");
    EXPECT_EQ(f["src_addr"].str(), "10.77.0.1");
    EXPECT_EQ(f["src_port"].u64(), 40001u);
    EXPECT_EQ(f["length"].u64(), 100u + 8 + 20);  // the IP packet, at the IP layer
    EXPECT_EQ(f["netns"].u64(), server_netns);
    EXPECT_TRUE(symbols.count(function_of(f["location"].str()))) << f["location"].str();
    EXPECT_FALSE(f.has("pid")) << "dropped in the receiver's softirq, not by a process";
  }

  auto closed = drops_matching(all, "NO_SOCKET", "10.77.0.2", 7002);
  ASSERT_EQ(closed.size(), 3u);
  for (const auto& e : closed) {
    EXPECT_EQ(e["fields"]["src_port"].u64(), 40002u);
    EXPECT_EQ(e["fields"]["protocol"].str(), "udp");
    EXPECT_TRUE(symbols.count(function_of(e["fields"]["location"].str())));
  }
  auto closed6 = drops_matching(all, "NO_SOCKET", "fd77::2", 7002);
  ASSERT_EQ(closed6.size(), 2u);
  EXPECT_EQ(closed6[0]["fields"]["family"].str(), "ipv6");
  EXPECT_EQ(closed6[0]["fields"]["src_addr"].str(), "fd77::1");

  auto syn = drops_matching(all, "NO_SOCKET", "10.77.0.2", 7003);
  ASSERT_GE(syn.size(), 1u);
  EXPECT_EQ(syn[0]["fields"]["protocol"].str(), "tcp");
  EXPECT_EQ(syn[0]["fields"]["src_port"].u64(), 40005u);
  EXPECT_TRUE(symbols.count(function_of(syn[0]["fields"]["location"].str())));

  // The output rule drops inside sendto(): process context, the sender's pid.
  auto own = drops_matching(all, "NETFILTER_DROP", "10.77.0.2", 7004);
  ASSERT_EQ(own.size(), 4u);
  for (const auto& e : own) {
    const auto& f = e["fields"];
    ASSERT_TRUE(f.has("pid"));
    EXPECT_EQ(f["pid"].u64(), local.pid);
    EXPECT_EQ(f["comm"].str(), "python3");
    EXPECT_EQ(f["netns"].u64(), client_netns);
  }

  EXPECT_GE(
      metrics.value("netwatcher_drops_total", {{"reason", "NETFILTER_DROP"}, {"protocol", "udp"}})
          .value_or(0),
      9);
  EXPECT_GE(metrics.value("netwatcher_drops_total", {{"reason", "NO_SOCKET"}, {"protocol", "udp"}})
                .value_or(0),
            5);
  EXPECT_GE(metrics.value("netwatcher_drops_total", {{"reason", "NO_SOCKET"}, {"protocol", "tcp"}})
                .value_or(0),
            1);
  const std::string nf_location = filtered[0]["fields"]["location"].str();
  EXPECT_GE(
      metrics.value("netwatcher_drop_locations_total", {{"location", nf_location}}).value_or(0), 9)
      << nf_location;
  // (The plugin also filters SKB_CONSUMED and SKB_NOT_DROPPED_YET in the
  // kernel, but this kernel never gives skb:kfree_skb either: consumed skbs
  // go to skb:consume_skb. No test here can see that filter fail.)
}

// Both ways of telling a drop's context agree: the kernel stack it runs on
// (default) and the softirq_entry/exit hooks. A drop in sendto() has the
// sender's pid; one in the receiver's softirq, and a loopback one handled in
// softirq on the sender's CPU, has none.
TEST_F(Drop, ProcessContextIsToldTheSameWayByStackAndBySoftirqHooks) {
  for (bool hooks : {false, true}) {
    SCOPED_TRACE(hooks ? "softirq_hooks = true" : "stack");
    TempDir dir;
    run("ip netns exec nwt-srv nft delete table inet nwctx 2>/dev/null; ip netns exec nwt-cli nft "
        "delete table inet nwctx 2>/dev/null");
    nft(TwoHosts::kServer,
        "table inet nwctx {\n chain input_rules {\n  type filter hook input priority 0;\n"
        "  udp dport 7011 drop\n }\n}\n");
    nft(TwoHosts::kClient,
        "table inet nwctx {\n chain output_rules {\n  type filter hook output priority 0;\n"
        "  udp dport 7014 drop\n }\n}\n");
    Netwatcher nw(dir, "[plugins.drop]\nsoftirq_hooks = " + std::string(hooks ? "true" : "false") +
                           "\n" + sink_config_json(dir.file("events.jsonl")));
    send_udp(TwoHosts::kClient, "10.77.0.2", 7011, 3, 100, 40011);
    UdpSent own = send_udp(TwoHosts::kClient, "10.77.0.2", 7014, 3, 10, 40014);
    std::string log = nw.log();
    ASSERT_EQ(nw.stop(), 0);
    EXPECT_EQ(log.find("hook 'softirq_entry' attached") != std::string::npos, hooks) << log;
    const auto all = events_of(parse_json_lines(read_file(dir.file("events.jsonl"))), "drop");
    auto received = drops_matching(all, "NETFILTER_DROP", "10.77.0.2", 7011);
    ASSERT_EQ(received.size(), 3u);
    for (const auto& e : received) EXPECT_FALSE(e["fields"].has("pid"));
    auto sent = drops_matching(all, "NETFILTER_DROP", "10.77.0.2", 7014);
    ASSERT_EQ(sent.size(), 3u);
    for (const auto& e : sent) {
      ASSERT_TRUE(e["fields"].has("pid"));
      EXPECT_EQ(e["fields"]["pid"].u64(), own.pid);
      EXPECT_EQ(e["fields"]["comm"].str(), "python3");
    }
  }
}

// The kernel frees some skbs with a drop reason as housekeeping: IPv6
// multicast (neighbour discovery, MLD) to groups nobody joined, as soon as a
// veth comes up. By default they are counted apart and are no drop events;
// with an empty housekeeping list they are.
TEST_F(Drop, HousekeepingFreesAreCountedApartFromDrops) {
  auto veth_up = [] {
    run("ip -n nwt-cli link del nwt-hk0 2>/dev/null");
    run("ip -n nwt-cli link add nwt-hk0 type veth peer name nwt-hk1 && ip -n nwt-cli link set "
        "nwt-hk0 up && ip -n nwt-cli link set nwt-hk1 up");
  };
  auto multicast_at_mc_input = [](const std::vector<Json>& all) {
    int n = 0;
    for (const auto& e : all)
      n += e["fields"]["reason"].str() == "NOT_SPECIFIED" &&
           function_of(e["fields"]["location"].str()) == "ip6_mc_input";
    return n;
  };
  {
    Netwatcher nw(dir_, config());
    veth_up();
    double counted = 0;
    for (int i = 0; i < 40 && counted == 0; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      counted = parse_prometheus(http_get(kPromPort, "/metrics"))
                    .value("netwatcher_drop_housekeeping_total",
                           {{"entry", "NOT_SPECIFIED@ip6_mc_input"}})
                    .value_or(0);
    }
    ASSERT_EQ(nw.stop(), 0);
    EXPECT_GT(counted, 0) << "a veth coming up sends IPv6 multicast";
    EXPECT_EQ(multicast_at_mc_input(drops()), 0);
  }
  TempDir dir;
  Netwatcher nw(dir,
                "[plugins.drop]\nhousekeeping = []\n" + sink_config_json(dir.file("events.jsonl")));
  veth_up();
  int reported = 0;
  for (int i = 0; i < 40 && reported == 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    reported = multicast_at_mc_input(
        events_of(parse_json_lines(read_file(dir.file("events.jsonl"))), "drop"));
  }
  ASSERT_EQ(nw.stop(), 0);
  EXPECT_GT(reported, 0);

  write_file(dir.file("bad.toml"), "[plugins.drop]\nhousekeeping = [\"NOPE\"]\n");
  auto bad = run(std::string(NW_BINARY) + " --plugin-dir " + NW_PLUGIN_DIR + " --config " +
                 dir.file("bad.toml") + " --check");
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_NE(bad.output.find("plugins.drop.housekeeping: 'NOPE': 'NOPE' is no drop reason of this "
                            "kernel"),
            std::string::npos)
      << bad.output;
}

TEST_F(Drop, RateLimitBoundsEventsButEveryDropIsCounted) {
  Netwatcher nw(dir_, config("max_events_per_second = 5\n"));
  send_udp(TwoHosts::kClient, "10.77.0.2", 7002, 300, 20, 40010);
  // Counted in the kernel, suppressed or not: mirrored at the next snapshot.
  auto metrics = metrics_when([](const PromText& m) {
    return m.value("netwatcher_drops_total", {{"reason", "NO_SOCKET"}, {"protocol", "udp"}})
               .value_or(0) >= 300;
  });
  EXPECT_TRUE(wait_for_drops([](const std::vector<Json>& all) {
    return !drops_matching(all, "NO_SOCKET", "10.77.0.2", 7002).empty();
  }));
  ASSERT_EQ(nw.stop(), 0);
  // The budget is global (any drop on the host spends it): at most 5 events
  // per second over the ~2 s run, at least one of them ours.
  const auto all = drops();
  EXPECT_LE(all.size(), 15u);
  auto events = drops_matching(all, "NO_SOCKET", "10.77.0.2", 7002);
  EXPECT_GE(events.size(), 1u);
  double suppressed =
      metrics.value("netwatcher_events_suppressed_total", {{"plugin", "drop"}}).value_or(0);
  EXPECT_GE(suppressed, 300.0 - static_cast<double>(events.size()));
  EXPECT_GE(metrics.value("netwatcher_drops_total", {{"reason", "NO_SOCKET"}, {"protocol", "udp"}})
                .value_or(0),
            300);
  EXPECT_EQ(metrics.value("netwatcher_events_lost_total", {{"plugin", "drop"}}), 0);
}

TEST_F(Drop, SeedFlagsEnableThePluginAndAddSymbolisedStacks) {
  Netwatcher nw(dir_, sink_config_json(dir_.file("events.jsonl")), {"-k", "-T", "-A"});
  send_udp(TwoHosts::kClient, "10.77.0.2", 7002, 1, 20, 40020);
  EXPECT_TRUE(wait_for_drops([](const std::vector<Json>& all) {
    return !drops_matching(all, "NO_SOCKET", "10.77.0.2", 7002).empty();
  }));
  ASSERT_EQ(nw.stop(), 0);
  auto events = drops_matching(drops(), "NO_SOCKET", "10.77.0.2", 7002);
  ASSERT_EQ(events.size(), 1u);
  const std::string stack = events[0]["fields"]["stack"].str();
  const auto symbols = kernel_text_symbols();
  std::size_t frames = 0;
  for (std::size_t start = 0; start <= stack.size();) {
    std::size_t end = stack.find(';', start);
    if (end == std::string::npos) end = stack.size();
    EXPECT_TRUE(symbols.count(function_of(stack.substr(start, end - start))))
        << stack.substr(start, end - start);
    ++frames;
    start = end + 1;
  }
  EXPECT_GE(frames, 3u) << stack;
  // The function that dropped the packet is on the stack.
  const std::string location = function_of(events[0]["fields"]["location"].str());
  EXPECT_NE(stack.find(location + "+"), std::string::npos) << location << " not in " << stack;
}

}  // namespace
