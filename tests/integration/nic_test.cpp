// The nic plugin against paced UDP traffic over a veth, checked against the
// interface's own counters.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
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

TEST(Nic, ThroughputOfAVethMatchesItsOwnCounters) {
  NW_REQUIRE_ROOT();
  TwoHosts hosts;
  TempDir dir;
  Netwatcher nw(dir, "snapshot_interval = 0.5\n[plugins.nic]\ninterfaces = [\"nwt-c0\"]\n" +
                         sink_config_json(dir.file("events.jsonl")) +
                         "[[sinks]]\ntype = \"prometheus\"\nlisten = \"127.0.0.1:" +
                         std::to_string(kPromPort) + "\"\n");
  // Let the first snapshot pass, so the counters start from netwatcher's view.
  std::this_thread::sleep_for(std::chrono::milliseconds(700));
  const std::uint64_t tx_before = interface_counter(TwoHosts::kClient, "nwt-c0", "tx_bytes");
  const auto start = std::chrono::steady_clock::now();
  // 6 bursts of 500 datagrams of 1000 bytes, 0.4 s apart: about 2.5 s.
  for (int burst = 0; burst < 6; ++burst) {
    send_udp(TwoHosts::kClient, "10.77.0.2", 7500, 500, 1000, 40500 + burst);
    std::this_thread::sleep_for(std::chrono::milliseconds(400));
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const std::uint64_t sent = interface_counter(TwoHosts::kClient, "nwt-c0", "tx_bytes") - tx_before;
  std::this_thread::sleep_for(std::chrono::milliseconds(1200));
  auto metrics = parse_prometheus(http_get(kPromPort, "/metrics"));
  ASSERT_EQ(nw.stop(), 0);
  ASSERT_GT(sent, 3000u * 1000u);

  // Cumulative bytes: everything since attach, so at least what we sent.
  const std::string netns = std::to_string(netns_inode(TwoHosts::kClient));
  auto total = metrics.value(
      "netwatcher_nic_bytes_total",
      {{"netns", netns}, {"interface", "nwt-c0"}, {"queue", "0"}, {"direction", "tx"}});
  ASSERT_TRUE(total.has_value());
  EXPECT_GE(*total, static_cast<double>(sent));
  EXPECT_LE(*total, static_cast<double>(sent) * 1.02 + 20000);

  // Per-snapshot events: the interval bytes add up to the interface's count
  // and the rate matches the traffic.
  std::uint64_t event_bytes = 0;
  double peak_rate = 0;
  for (const auto& e :
       events_of(parse_json_lines(read_file(dir.file("events.jsonl"))), "nic_throughput")) {
    const auto& f = e["fields"];
    EXPECT_EQ(f["interface"].str(), "nwt-c0") << "only the configured interface";
    if (f["direction"].str() != "tx") continue;
    event_bytes += f["bytes"].u64();
    peak_rate = std::max(peak_rate, f["bytes_per_second"].num());
    if (f["packets"].u64() > 100) {
      EXPECT_NEAR(f["average_packet_bytes"].num(), 1042.0, 10.0)
          << "1000 bytes of payload + UDP, IPv4 and Ethernet headers";
    }
  }
  EXPECT_GE(static_cast<double>(event_bytes), static_cast<double>(sent));
  EXPECT_LE(static_cast<double>(event_bytes), static_cast<double>(sent) * 1.02 + 20000);
  const double mean_rate = static_cast<double>(sent) / seconds;
  EXPECT_GT(peak_rate, mean_rate * 0.8);
  EXPECT_LT(peak_rate, mean_rate * 4) << "bursts are 500 datagrams every 0.4 s";
}

}  // namespace
