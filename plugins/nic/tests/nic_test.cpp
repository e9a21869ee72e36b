// The nic plugin against paced UDP traffic over a veth, checked against the
// interface's own counters.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <thread>

#include "harness.hpp"

using namespace nwtest;

namespace {

constexpr int kPromPort = 41491;

std::uint64_t interface_counter(const std::string& netns, const std::string& device,
                                const std::string& counter) {
  auto result =
      run("ip netns exec " + netns + " cat /sys/class/net/" + device + "/statistics/" + counter);
  return std::stoull(result.output);
}

// Datagrams echoed by the server, so the client's veth carries both
// directions: what netwatcher counts per direction is what the interface
// counted, and each snapshot's rate is its bytes over the snapshot interval.
TEST(Nic, ThroughputOfAVethMatchesItsOwnCounters) {
  NW_REQUIRE_ROOT();
  TwoHosts hosts;
  TempDir dir;
  UdpPeer echo(TwoHosts::kServer, "echo", {"7500"}, dir);
  // Echoes reach the sender's port after it closed: keep the client's port
  // unreachables (590-byte frames) off the link, so every frame is 1042 bytes.
  nft(TwoHosts::kClient,
      "table inet nwnic {\n chain out {\n  type filter hook output priority 0;\n"
      "  icmp type destination-unreachable drop\n }\n}\n");
  Netwatcher nw(dir, "snapshot_interval = 0.5\n[plugins.nic]\ninterfaces = [\"nwt-c0\"]\n" +
                         sink_config_json(dir.file("events.jsonl")) +
                         "[[sinks]]\ntype = \"prometheus\"\nlisten = \"127.0.0.1:" +
                         std::to_string(kPromPort) + "\"\n");
  const std::map<std::string, std::uint64_t> before = {
      {"tx", interface_counter(TwoHosts::kClient, "nwt-c0", "tx_bytes")},
      {"rx", interface_counter(TwoHosts::kClient, "nwt-c0", "rx_bytes")}};
  // 6 bursts of 500 datagrams of 1000 bytes, 0.4 s apart: about 2.5 s.
  for (int burst = 0; burst < 6; ++burst) {
    send_udp(TwoHosts::kClient, "10.77.0.2", 7500, 500, 1000, 40500 + burst);
    std::this_thread::sleep_for(std::chrono::milliseconds(400));
  }
  std::map<std::string, std::uint64_t> counted;
  for (const char* direction : {"tx", "rx"})
    counted[direction] =
        interface_counter(TwoHosts::kClient, "nwt-c0", std::string(direction) + "_bytes") -
        before.at(direction);
  ASSERT_GT(counted["tx"], 3000u * 1000u);
  ASSERT_GT(counted["rx"], 1000u * 1000u) << "the server echoes";

  // Per-snapshot events, until a snapshot after the traffic: their bytes
  // add up to the interface's count (plus what it carried between start-up
  // and the first reading, IPv6 neighbour discovery and the like).
  std::map<std::string, std::uint64_t> event_bytes;
  std::vector<Json> throughput;
  EXPECT_TRUE(wait_until([&] {
    throughput = events_of(read_json_lines(dir.file("events.jsonl")), "nic_throughput");
    event_bytes.clear();
    for (const auto& e : throughput)
      event_bytes[e["fields"]["direction"].str()] += e["fields"]["bytes"].u64();
    return event_bytes["tx"] >= counted["tx"] && event_bytes["rx"] >= counted["rx"];
  })) << "tx "
      << event_bytes["tx"] << " of " << counted["tx"] << ", rx " << event_bytes["rx"] << " of "
      << counted["rx"];
  auto metrics = parse_prometheus(http_get(kPromPort, "/metrics"));
  ASSERT_EQ(nw.stop(), 0);

  const std::string netns = std::to_string(netns_inode(TwoHosts::kClient));
  for (const char* direction : {"tx", "rx"}) {
    SCOPED_TRACE(direction);
    const double sent = static_cast<double>(counted[direction]);
    // Cumulative bytes: everything since attach, so at least the traffic.
    auto total = metrics.value(
        "netwatcher_nic_bytes_total",
        {{"netns", netns}, {"interface", "nwt-c0"}, {"queue", "0"}, {"direction", direction}});
    ASSERT_TRUE(total.has_value());
    EXPECT_GE(*total, sent);
    EXPECT_LE(*total, sent + 20000);
    EXPECT_LE(static_cast<double>(event_bytes[direction]), sent + 20000);
  }
  std::size_t busy = 0;
  for (const auto& e : throughput) {
    const auto& f = e["fields"];
    EXPECT_EQ(f["interface"].str(), "nwt-c0") << "only the configured interface";
    // The rate is the interval's bytes over the interval, which is the
    // snapshot interval give or take the poller's lateness: bits, or bytes
    // per millisecond, would be 8 or 1000 times off.
    ASSERT_GT(f["bytes_per_second"].num(), 0);
    const double interval = static_cast<double>(f["bytes"].u64()) / f["bytes_per_second"].num();
    EXPECT_GT(interval, 0.3) << f["bytes"].u64() << " bytes at " << f["bytes_per_second"].num();
    EXPECT_LT(interval, 0.7) << f["bytes"].u64() << " bytes at " << f["bytes_per_second"].num();
    EXPECT_NEAR(static_cast<double>(f["packets"].u64()) / f["packets_per_second"].num(), interval,
                interval * 1e-3)
        << "one interval for both rates";
    if (const auto packets = f["packets"].u64(); packets > 100) {
      ++busy;
      // 1000 bytes of payload + UDP, IPv4 and Ethernet headers, and a few
      // smaller frames (ARP, 42 bytes; neighbour discovery) at most in an
      // interval that caught only the edge of a burst.
      const double average = f["average_packet_bytes"].num();
      EXPECT_LE(average, 1042.0 + 1e-6) << packets << " packets";
      EXPECT_GE(average, 1042.0 - 4 * (1042.0 - 42.0) / static_cast<double>(packets))
          << packets << " packets: more than 4 frames were not the test's datagrams";
    }
  }
  EXPECT_GE(busy, 4u) << "2.5 s of traffic both ways over 0.5 s snapshots";
}

}  // namespace

// With the default (every interface), both ends of the veth pair, each in
// its namespace, and packets as segments: a GSO or GRO skb counts as the
// segments it carries. The veth delivers what one end sends to the other,
// so each end's tx and the other's rx equal the sender's TcpOutSegs and
// TcpRetransSegs (which count segments; TcpInSegs counts a GRO skb once). Neighbour discovery
// and the like add a few.
TEST(Nic, EveryInterfaceByDefaultWithSegmentsCountedAsTcpSendsThem) {
  NW_REQUIRE_ROOT();
  TwoHosts hosts;
  TempDir dir;
  TcpServer server(TwoHosts::kServer, {5000}, dir);
  Netwatcher nw(
      dir, "snapshot_interval = 0.5\n[plugins.nic]\n" + sink_config_json(dir.file("events.jsonl")));
  // OutSegs leaves retransmitted segments out; they cross the veth too.
  auto sent = [](const std::string& netns) {
    return nstat(netns, "TcpOutSegs") + nstat(netns, "TcpRetransSegs");
  };
  const std::uint64_t client_before = sent(TwoHosts::kClient);
  const std::uint64_t server_before = sent(TwoHosts::kServer);
  auto clients = run_client(TwoHosts::kClient, "10.77.0.2", 5000, {4000000});
  ASSERT_EQ(clients.size(), 1u);
  // The last ACKs and FINs: until no socket of the connection is left but a
  // TIME-WAIT one, on either side.
  for (const char* netns : {TwoHosts::kClient, TwoHosts::kServer})
    ASSERT_TRUE(wait_until([&] {
      return run("ip netns exec " + std::string(netns) +
                 " ss -Htn state all exclude time-wait exclude listening '( sport = :5000 or "
                 "dport = :5000 )' | wc -l")
                 .output == "0\n";
    }));
  const std::uint64_t client_sent = sent(TwoHosts::kClient) - client_before;
  const std::uint64_t server_sent = sent(TwoHosts::kServer) - server_before;
  ASSERT_GT(client_sent, 4000000u / 1500u) << "one segment per MSS at least";

  const std::uint64_t client_ns = netns_inode(TwoHosts::kClient);
  const std::uint64_t server_ns = netns_inode(TwoHosts::kServer);
  struct End {
    std::uint64_t netns;
    const char* device;
    const char* direction;
    std::uint64_t expected;
    std::uint64_t seen = 0;
  };
  std::vector<End> ends = {{client_ns, "nwt-c0", "tx", client_sent},
                           {server_ns, "nwt-s0", "rx", client_sent},
                           {server_ns, "nwt-s0", "tx", server_sent},
                           {client_ns, "nwt-c0", "rx", server_sent}};
  auto count = [&](const std::vector<Json>& all) {
    bool complete = true;
    for (auto& end : ends) {
      end.seen = 0;
      for (const auto& e : events_of(all, "nic_throughput")) {
        const auto& f = e["fields"];
        if (f["netns"].u64() == end.netns && f["interface"].str() == end.device &&
            f["direction"].str() == end.direction)
          end.seen += f["packets"].u64();
      }
      complete = complete && end.seen >= end.expected;
    }
    return complete;
  };
  EXPECT_TRUE(wait_until([&] { return count(read_json_lines(dir.file("events.jsonl"))); }));
  ASSERT_EQ(nw.stop(), 0) << nw.log();
  count(parse_json_lines(read_file(dir.file("events.jsonl"))));
  for (const auto& end : ends) {
    SCOPED_TRACE(std::string(end.device) + " " + end.direction);
    EXPECT_GE(end.seen, end.expected);
    EXPECT_LE(end.seen, end.expected + 20) << "segments, not bytes";
  }
  // The veth counts skbs: no more than the segments.
  EXPECT_LE(interface_counter(TwoHosts::kClient, "nwt-c0", "tx_packets"), ends[0].seen + 20);
}
