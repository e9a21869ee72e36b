// The drop plugin against real drops: nftables DROP rules, closed UDP and
// TCP ports, in namespaces; reasons, tuples, locations, pids and counters.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <functional>
#include <map>
#include <regex>
#include <set>
#include <stdexcept>
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

// packets.py (next to this file) in `netns`: hand-made packets; returns the
// JSON line it prints about what it sent.
Json send_packets(const std::string& netns, const std::string& args) {
  auto result =
      run("ip netns exec " + netns + " /usr/bin/python3 " NW_TEST_DIR "/packets.py " + args);
  if (result.exit_code != 0) throw std::runtime_error("packets.py " + args + ": " + result.output);
  return parse_json_lines(result.output).at(0);
}

std::uint64_t sysfs_counter(const std::string& netns, const std::string& device,
                            const std::string& counter) {
  auto result =
      run("ip netns exec " + netns + " cat /sys/class/net/" + device + "/statistics/" + counter);
  if (result.exit_code != 0)
    throw std::runtime_error(device + " " + counter + ": " + result.output);
  return std::stoull(result.output);
}

std::uint64_t ifindex_of(const std::string& netns, const std::string& device) {
  auto result = run("ip netns exec " + netns + " cat /sys/class/net/" + device + "/ifindex");
  if (result.exit_code != 0) throw std::runtime_error(device + ": " + result.output);
  return std::stoull(result.output);
}

// The packets of an nft rule's `counter` in `netns` (the first counter of `table`).
std::uint64_t nft_counter(const std::string& netns, const std::string& table) {
  auto result = run("ip netns exec " + netns + " nft list table " + table);
  auto at = result.output.find("counter packets ");
  if (result.exit_code != 0 || at == std::string::npos)
    throw std::runtime_error("nft list table " + table + ": " + result.output);
  return std::stoull(result.output.substr(at + 16));
}

std::vector<Json> drops_where(const std::vector<Json>& drops,
                              const std::function<bool(const Json&)>& match) {
  std::vector<Json> out;
  for (const auto& e : drops)
    if (match(e["fields"])) out.push_back(e);
  return out;
}

// Text symbols of /proc/kallsyms by address, to resolve raw locations here.
std::map<std::uint64_t, std::string> kernel_text_by_address() {
  std::map<std::uint64_t, std::string> text;
  std::ifstream in("/proc/kallsyms");
  std::string address, type, name;
  while (in >> address >> type >> name) {
    if (type == "t" || type == "T") text.emplace(std::stoull(address, nullptr, 16), name);
    in.ignore(4096, '\n');
  }
  return text;
}

// "0x<hex>" -> "function+0x<offset>", as the plugin symbolises it.
std::string resolve(const std::map<std::uint64_t, std::string>& text, const std::string& raw) {
  std::uint64_t address = std::stoull(raw, nullptr, 16);
  auto it = text.upper_bound(address);
  if (it == text.begin()) return raw;
  --it;
  char offset[24];
  std::snprintf(offset, sizeof offset, "+0x%llx",
                static_cast<unsigned long long>(address - it->first));
  return it->second + offset;
}

bool is_raw_address(const std::string& text) {
  return std::regex_match(text, std::regex("0x[0-9a-f]+"));
}

// Frames whose protocol is no IP protocol the parser names: an ARP request
// dropped by an arp-family nft rule (`arp`), a frame with two VLAN tags to a
// veth that has no VLAN device (the receiver strips one tag and has no
// handler for the second: `vlan`), and IPv4 packets of protocol 253, which
// nothing in the namespace handles (`ip_proto_253`). Each count equals the
// kernel's own: the rule's counter, the device's rx_dropped, IpInUnknownProtos.
TEST_F(Drop, ArpVlanAndUnnamedIpProtocolsHaveTheirProtocolLabels) {
  nft(TwoHosts::kServer,
      "table arp nwtest {\n chain input_rules {\n  type filter hook input priority 0;\n"
      "  arp daddr ip 10.77.0.99 counter drop\n }\n}\n");
  const std::uint64_t rx_dropped_before = sysfs_counter(TwoHosts::kServer, "nwt-s0", "rx_dropped");
  const std::uint64_t unknown_before = nstat(TwoHosts::kServer, "IpInUnknownProtos");
  Netwatcher nw(dir_, config());
  Json arp = send_packets(TwoHosts::kClient, "arp nwt-c0 10.77.0.99 2");
  Json vlan = send_packets(TwoHosts::kClient, "vlan nwt-c0 3");
  Json raw = send_packets(TwoHosts::kClient, "ipproto 10.77.0.2 253 4");
  auto protocol_is = [](const std::string& protocol) {
    return [protocol](const Json& f) { return f["protocol"].str() == protocol; };
  };
  EXPECT_TRUE(wait_for_drops([&](const std::vector<Json>& all) {
    return drops_where(all, protocol_is("arp")).size() >= 2 &&
           drops_where(all, protocol_is("vlan")).size() >= 3 &&
           drops_where(all, protocol_is("ip_proto_253")).size() >= 4;
  }));
  auto metrics = metrics_when([](const PromText& m) {
    return m.value("netwatcher_drops_total",
                   {{"reason", "IP_NOPROTO"}, {"protocol", "ip_proto_253"}})
               .value_or(0) >= 4;
  });
  ASSERT_EQ(nw.stop(), 0);
  const auto all = drops();
  const std::uint64_t server_netns = netns_inode(TwoHosts::kServer);
  const std::uint64_t server_ifindex = ifindex_of(TwoHosts::kServer, "nwt-s0");

  auto arps = drops_where(all, protocol_is("arp"));
  EXPECT_EQ(arps.size(), nft_counter(TwoHosts::kServer, "arp nwtest"));
  ASSERT_EQ(arps.size(), 2u);
  for (const auto& e : arps) {
    const auto& f = e["fields"];
    EXPECT_EQ(f["reason"].str(), "NETFILTER_DROP");
    EXPECT_EQ(f["length"].u64(), arp["length"].u64());  // the ARP message
    EXPECT_FALSE(f.has("family"));
    EXPECT_FALSE(f.has("dst_addr"));
    EXPECT_EQ(f["netns"].u64(), server_netns);
  }

  auto vlans = drops_where(all, protocol_is("vlan"));
  ASSERT_EQ(vlans.size(), 3u);
  EXPECT_EQ(sysfs_counter(TwoHosts::kServer, "nwt-s0", "rx_dropped") - rx_dropped_before, 3u);
  for (const auto& e : vlans) {
    const auto& f = e["fields"];
    EXPECT_EQ(f["reason"].str(), "UNHANDLED_PROTO");
    EXPECT_EQ(f["length"].u64(), vlan["length"].u64());
    EXPECT_FALSE(f.has("family"));
    EXPECT_EQ(f["ifindex"].u64(), server_ifindex);
    EXPECT_EQ(f["netns"].u64(), server_netns);
  }

  auto unnamed = drops_where(all, protocol_is("ip_proto_253"));
  ASSERT_EQ(unnamed.size(), 4u);
  EXPECT_EQ(nstat(TwoHosts::kServer, "IpInUnknownProtos") - unknown_before, 4u);
  for (const auto& e : unnamed) {
    const auto& f = e["fields"];
    EXPECT_EQ(f["reason"].str(), "IP_NOPROTO");
    EXPECT_EQ(f["family"].str(), "ipv4");
    EXPECT_EQ(f["src_addr"].str(), "10.77.0.1");
    EXPECT_EQ(f["dst_addr"].str(), "10.77.0.2");
    EXPECT_FALSE(f.has("dst_port")) << "protocol 253 has no ports";
    // skb->len where it was dropped: past the IP header, the payload.
    EXPECT_EQ(f["length"].u64(), raw["length"].u64() - 20);
  }

  EXPECT_EQ(
      metrics.value("netwatcher_drops_total", {{"reason", "NETFILTER_DROP"}, {"protocol", "arp"}}),
      2);
  EXPECT_EQ(metrics.value("netwatcher_drops_total",
                          {{"reason", "UNHANDLED_PROTO"}, {"protocol", "vlan"}}),
            3);
  EXPECT_EQ(metrics.value("netwatcher_drops_total",
                          {{"reason", "IP_NOPROTO"}, {"protocol", "ip_proto_253"}}),
            4);
}

// `-d` selects drops by port, either port of the packet (README): drops to
// the port and from it are reported and counted, drops on other ports are
// neither, although the kernel dropped them all (UdpNoPorts).
TEST_F(Drop, PortFilterSelectsDropsByEitherPortInEventsAndCounters) {
  const std::uint64_t no_ports_before = nstat(TwoHosts::kServer, "UdpNoPorts");
  Netwatcher nw(dir_, config(), {"-d", "7021"});
  send_udp(TwoHosts::kClient, "10.77.0.2", 7022, 2, 30, 41404);  // neither port is 7021
  send_udp(TwoHosts::kClient, "10.77.0.2", 7021, 3, 30, 41403);  // to 7021
  send_udp(TwoHosts::kClient, "10.77.0.2", 7023, 2, 30, 7021);   // from 7021
  ASSERT_TRUE(
      wait_until([&] { return nstat(TwoHosts::kServer, "UdpNoPorts") - no_ports_before >= 7; }));
  EXPECT_EQ(nstat(TwoHosts::kServer, "UdpNoPorts") - no_ports_before, 7u);
  EXPECT_TRUE(wait_for_drops([](const std::vector<Json>& all) {
    return drops_matching(all, "NO_SOCKET", "10.77.0.2", 7021).size() >= 3 &&
           drops_matching(all, "NO_SOCKET", "10.77.0.2", 7023).size() >= 2;
  }));
  auto metrics = metrics_when([](const PromText& m) {
    return m.value("netwatcher_drops_total", {{"reason", "NO_SOCKET"}, {"protocol", "udp"}})
               .value_or(0) >= 5;
  });
  ASSERT_EQ(nw.stop(), 0);
  const auto all = drops();
  EXPECT_EQ(drops_matching(all, "NO_SOCKET", "10.77.0.2", 7021).size(), 3u);
  auto from = drops_matching(all, "NO_SOCKET", "10.77.0.2", 7023);
  ASSERT_EQ(from.size(), 2u);
  EXPECT_EQ(from[0]["fields"]["src_port"].u64(), 7021u);
  EXPECT_TRUE(drops_matching(all, "NO_SOCKET", "10.77.0.2", 7022).empty());
  for (const auto& e : all) {
    const auto& f = e["fields"];
    EXPECT_TRUE(f.has("dst_port") && (f["dst_port"].u64() == 7021 || f["src_port"].u64() == 7021))
        << "a drop not on port 7021 passed the filter: " << f["location"].str();
  }
  EXPECT_EQ(all.size(), 5u);
  // Counted in the kernel after the filter: only the selected drops.
  EXPECT_EQ(metrics.value("netwatcher_drops_total", {{"reason", "NO_SOCKET"}, {"protocol", "udp"}}),
            5);
}

// --raddr selects drops by address, either address of the packet, in the
// kernel: of v4 and v6 datagrams dropped alike, only the v6 ones (to an
// address in fd77::/64) are reported and counted.
TEST_F(Drop, AddressFilterSelectsDropsByEitherAddress) {
  const std::uint64_t v4_before = nstat(TwoHosts::kServer, "UdpNoPorts");
  const std::uint64_t v6_before = nstat(TwoHosts::kServer, "Udp6NoPorts");
  Netwatcher nw(dir_, config(), {"--raddr", "fd77::/64", "-d", "7024"});
  send_udp(TwoHosts::kClient, "10.77.0.2", 7024, 3, 30, 41405);
  send_udp(TwoHosts::kClient, "fd77::2", 7024, 2, 30, 41406);
  ASSERT_TRUE(wait_until([&] {
    return nstat(TwoHosts::kServer, "UdpNoPorts") - v4_before >= 3 &&
           nstat(TwoHosts::kServer, "Udp6NoPorts") - v6_before >= 2;
  }));
  EXPECT_EQ(nstat(TwoHosts::kServer, "UdpNoPorts") - v4_before, 3u);
  EXPECT_EQ(nstat(TwoHosts::kServer, "Udp6NoPorts") - v6_before, 2u);
  EXPECT_TRUE(wait_for_drops([](const std::vector<Json>& all) {
    return drops_matching(all, "NO_SOCKET", "fd77::2", 7024).size() >= 2;
  }));
  auto metrics = metrics_when([](const PromText& m) {
    return m.value("netwatcher_drops_total", {{"reason", "NO_SOCKET"}, {"protocol", "udp"}})
               .value_or(0) >= 2;
  });
  ASSERT_EQ(nw.stop(), 0);
  const auto all = drops();
  EXPECT_EQ(drops_matching(all, "NO_SOCKET", "fd77::2", 7024).size(), 2u);
  EXPECT_TRUE(drops_matching(all, "NO_SOCKET", "10.77.0.2", 7024).empty());
  EXPECT_EQ(all.size(), 2u);
  EXPECT_EQ(metrics.value("netwatcher_drops_total", {{"reason", "NO_SOCKET"}, {"protocol", "udp"}}),
            2);
}

// top_locations = 1: the first location seen keeps its series, drops at any
// other location count under `other`, and the series add up to every drop
// counted. (A port filter keeps the host's other drops out of the counts.)
TEST_F(Drop, LocationsBeyondTopLocationsCountAsOther) {
  const std::uint64_t no_ports4_before = nstat(TwoHosts::kServer, "UdpNoPorts");
  const std::uint64_t no_ports6_before = nstat(TwoHosts::kServer, "Udp6NoPorts");
  Netwatcher nw(dir_, config("top_locations = 1\n"), {"-d", "7031"});
  send_udp(TwoHosts::kClient, "10.77.0.2", 7031, 5, 20, 41405);
  EXPECT_TRUE(wait_for_drops([](const std::vector<Json>& all) {
    return drops_matching(all, "NO_SOCKET", "10.77.0.2", 7031).size() >= 5;
  }));
  const std::string v4_location =
      drops_matching(drops(), "NO_SOCKET", "10.77.0.2", 7031).at(0)["fields"]["location"].str();
  // The IPv4 location takes the only slot at the next snapshot.
  metrics_when([&](const PromText& m) {
    return m.value("netwatcher_drop_locations_total", {{"location", v4_location}}).value_or(0) >= 5;
  });
  send_udp(TwoHosts::kClient, "fd77::2", 7031, 3, 20, 41406);
  EXPECT_TRUE(wait_for_drops([](const std::vector<Json>& all) {
    return drops_matching(all, "NO_SOCKET", "fd77::2", 7031).size() >= 3;
  }));
  auto metrics = metrics_when([](const PromText& m) {
    return m.value("netwatcher_drop_locations_total", {{"location", "other"}}).value_or(0) >= 3;
  });
  ASSERT_EQ(nw.stop(), 0);
  EXPECT_EQ(nstat(TwoHosts::kServer, "UdpNoPorts") - no_ports4_before, 5u);
  EXPECT_EQ(nstat(TwoHosts::kServer, "Udp6NoPorts") - no_ports6_before, 3u);
  auto v6 = drops_matching(drops(), "NO_SOCKET", "fd77::2", 7031);
  ASSERT_EQ(v6.size(), 3u);
  const std::string v6_location = v6[0]["fields"]["location"].str();
  ASSERT_NE(v6_location, v4_location);
  EXPECT_EQ(metrics.value("netwatcher_drop_locations_total", {{"location", v4_location}}), 5);
  EXPECT_EQ(metrics.value("netwatcher_drop_locations_total", {{"location", "other"}}), 3);
  EXPECT_FALSE(metrics.value("netwatcher_drop_locations_total", {{"location", v6_location}}))
      << "only top_locations = 1 location has a series";
  int series = 0;
  for (const auto& s : metrics.samples) series += s.name == "netwatcher_drop_locations_total";
  EXPECT_EQ(series, 2);
}

// symbolize = false: every location and stack frame is the raw kernel text
// address, "0x<hex>", and names no symbol; resolved against /proc/kallsyms it
// is the function+offset that the default (symbolised) run reports for the
// same drop.
TEST_F(Drop, WithoutSymbolizeLocationsAndStacksAreRawAddresses) {
  std::string raw_location, raw_stack;
  {
    Netwatcher nw(dir_, config("symbolize = false\nstack = true\n"), {"-d", "7051"});
    send_udp(TwoHosts::kClient, "10.77.0.2", 7051, 2, 20, 41407);
    EXPECT_TRUE(wait_for_drops([](const std::vector<Json>& all) {
      return drops_matching(all, "NO_SOCKET", "10.77.0.2", 7051).size() >= 2;
    }));
    auto metrics = metrics_when([](const PromText& m) {
      return m.value("netwatcher_drops_total", {{"reason", "NO_SOCKET"}, {"protocol", "udp"}})
                 .value_or(0) >= 2;
    });
    ASSERT_EQ(nw.stop(), 0);
    auto events = drops_matching(drops(), "NO_SOCKET", "10.77.0.2", 7051);
    ASSERT_EQ(events.size(), 2u);
    raw_location = events[0]["fields"]["location"].str();
    raw_stack = events[0]["fields"]["stack"].str();
    EXPECT_EQ(events[1]["fields"]["location"].str(), raw_location);
    EXPECT_TRUE(is_raw_address(raw_location)) << raw_location;
    EXPECT_EQ(metrics.value("netwatcher_drop_locations_total", {{"location", raw_location}}), 2);
    for (const auto& s : metrics.samples) {
      if (s.name == "netwatcher_drop_locations_total" && s.labels.at("location") != "other") {
        EXPECT_TRUE(is_raw_address(s.labels.at("location"))) << s.labels.at("location");
      }
    }
  }
  std::vector<std::string> frames;
  for (std::size_t start = 0; start <= raw_stack.size();) {
    std::size_t end = raw_stack.find(';', start);
    if (end == std::string::npos) end = raw_stack.size();
    frames.push_back(raw_stack.substr(start, end - start));
    start = end + 1;
  }
  ASSERT_GE(frames.size(), 3u) << raw_stack;
  for (const auto& frame : frames) EXPECT_TRUE(is_raw_address(frame)) << frame;
  TempDir dir;
  Netwatcher nw(dir, "[plugins.drop]\nstack = true\n" + sink_config_json(dir.file("events.jsonl")),
                {"-d", "7051"});
  send_udp(TwoHosts::kClient, "10.77.0.2", 7051, 1, 20, 41408);
  auto named = [&] {
    return drops_matching(events_of(read_json_lines(dir.file("events.jsonl")), "drop"), "NO_SOCKET",
                          "10.77.0.2", 7051);
  };
  EXPECT_TRUE(wait_until([&] { return !named().empty(); }));
  ASSERT_EQ(nw.stop(), 0);
  const auto named_events = named();
  ASSERT_EQ(named_events.size(), 1u);
  const Json& symbolised = named_events[0]["fields"];
  const auto text = kernel_text_by_address();
  EXPECT_EQ(resolve(text, raw_location), symbolised["location"].str());
  // The same frames, innermost first, up to the dropping function: the
  // tracing frames (netwatcher's program, tracepoint glue) are left out of
  // raw stacks too. (Further out the two sends may differ: the first one
  // resolved the neighbour.)
  const std::string location = symbolised["location"].str();
  std::string named_prefix, raw_prefix;
  const std::string named_stack = symbolised["stack"].str();
  auto at = named_stack.find(function_of(location) + "+");
  ASSERT_NE(at, std::string::npos) << named_stack;
  named_prefix = named_stack.substr(0, named_stack.find(';', at));
  for (const auto& frame : frames) {
    if (!raw_prefix.empty()) raw_prefix += ';';
    raw_prefix += resolve(text, frame);
    if (raw_prefix.size() >= named_prefix.size()) break;
  }
  EXPECT_EQ(raw_prefix, named_prefix);
}

// The packet parser: a UDP datagram behind IPv6 hop-by-hop and destination
// options headers still has its ports; of an IPv4 datagram in two fragments
// dropped before reassembly only the first fragment carries the UDP header,
// so the second has addresses and protocol but no ports; a fragmented
// datagram reassembled and then dropped is one drop with its ports.
TEST_F(Drop, ParserFindsPortsBehindIpv6ExtensionHeadersAndInFirstFragmentsOnly) {
  nft(TwoHosts::kServer,
      "table ip nwfrag {\n chain prerouting_rules {\n  type filter hook prerouting priority 0;\n"
      "  ip id 4242 counter drop\n }\n}\n");
  const std::uint64_t reassembled_before = nstat(TwoHosts::kServer, "IpReasmOKs");
  const std::uint64_t no_ports6_before = nstat(TwoHosts::kServer, "Udp6NoPorts");
  Netwatcher nw(dir_, config());
  Json ext = send_packets(TwoHosts::kClient, "v6ext fd77::2 7061 41409 2 20");
  Json dropped = send_packets(TwoHosts::kClient, "fragments 10.77.0.2 7062 41410 4242 40");
  Json whole = send_packets(TwoHosts::kClient, "fragments 10.77.0.2 7063 41411 4243 40");
  auto fragment_drops = [](const std::vector<Json>& all) {
    return drops_where(all, [](const Json& f) {
      return f["reason"].str() == "NETFILTER_DROP" && f.has("dst_addr") &&
             f["dst_addr"].str() == "10.77.0.2" && f["protocol"].str() == "udp";
    });
  };
  EXPECT_TRUE(wait_for_drops([&](const std::vector<Json>& all) {
    return drops_matching(all, "NO_SOCKET", "fd77::2", 7061).size() >= 2 &&
           fragment_drops(all).size() >= 2 &&
           !drops_matching(all, "NO_SOCKET", "10.77.0.2", 7063).empty();
  }));
  ASSERT_EQ(nw.stop(), 0);
  const auto all = drops();

  auto behind = drops_matching(all, "NO_SOCKET", "fd77::2", 7061);
  ASSERT_EQ(behind.size(), 2u);
  EXPECT_EQ(nstat(TwoHosts::kServer, "Udp6NoPorts") - no_ports6_before, 2u);
  for (const auto& e : behind) {
    const auto& f = e["fields"];
    EXPECT_EQ(f["protocol"].str(), "udp");
    EXPECT_EQ(f["family"].str(), "ipv6");
    EXPECT_EQ(f["src_addr"].str(), "fd77::1");
    EXPECT_EQ(f["src_port"].u64(), 41409u);
    // skb->len at the UDP layer: the IPv6 and both options headers pulled.
    EXPECT_EQ(f["length"].u64(), ext["datagram"].u64());
  }

  auto fragments = fragment_drops(all);
  ASSERT_EQ(fragments.size(), 2u);
  EXPECT_EQ(nft_counter(TwoHosts::kServer, "ip nwfrag"), 2u);
  const Json* first = nullptr;
  const Json* second = nullptr;
  for (const auto& e : fragments)
    (e["fields"]["length"].u64() == dropped["first"].u64() ? first : second) = &e["fields"];
  ASSERT_TRUE(first && second) << read_file(dir_.file("events.jsonl"));
  EXPECT_EQ((*second)["length"].u64(), dropped["second"].u64());
  EXPECT_EQ((*first)["src_port"].u64(), 41410u);
  EXPECT_EQ((*first)["dst_port"].u64(), 7062u);
  EXPECT_EQ((*second)["src_addr"].str(), "10.77.0.1");
  EXPECT_FALSE(second->has("src_port")) << "a non-first fragment has no UDP header";
  EXPECT_FALSE(second->has("dst_port"));

  auto reassembled = drops_matching(all, "NO_SOCKET", "10.77.0.2", 7063);
  ASSERT_EQ(reassembled.size(), 1u);
  EXPECT_EQ(nstat(TwoHosts::kServer, "IpReasmOKs") - reassembled_before, 1u);
  EXPECT_EQ(reassembled[0]["fields"]["src_port"].u64(), 41411u);
  // The whole datagram, at the UDP layer: past the IP header.
  EXPECT_EQ(reassembled[0]["fields"]["length"].u64(), whole["whole"].u64() - 20);
}

}  // namespace
