// The udp plugin against real datagrams between namespaces: connected and
// unconnected sockets, both directions, IPv4 and IPv6, flows, and receive
// buffer overflows checked against the kernel's own counter.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <sstream>
#include <thread>
#include <tuple>

#include "harness.hpp"

using namespace nwtest;

namespace {

constexpr int kPromPort = 41493;
constexpr int kEchoPort = 7300;
const std::vector<int> kSizes = {10, 200, 1000, 1400, 33};

struct Key {
  std::uint64_t netns;
  std::string direction;
  std::uint64_t local_port, remote_port;
};

std::vector<Json> datagrams_of(const std::vector<Json>& events, const Key& key) {
  std::vector<Json> out;
  for (const auto& e : events) {
    const auto& f = e["fields"];
    if (f["netns"].u64() == key.netns && f["direction"].str() == key.direction &&
        f["local_port"].u64() == key.local_port && f["remote_port"].u64() == key.remote_port)
      out.push_back(e);
  }
  return out;
}

// Reads UDP RcvbufErrors from /proc/net/snmp inside `netns`.
std::uint64_t rcvbuf_errors(const std::string& netns) {
  auto result = run("ip netns exec " + netns + " cat /proc/net/snmp");
  std::istringstream in(result.output);
  std::string header, values;
  while (std::getline(in, header)) {
    if (header.rfind("Udp:", 0) != 0) continue;
    std::getline(in, values);
    std::istringstream names(header), numbers(values);
    std::string name, number;
    while (names >> name && numbers >> number)
      if (name == "RcvbufErrors") return std::stoull(number);
  }
  throw std::runtime_error("no Udp RcvbufErrors in /proc/net/snmp");
}

class Udp : public ::testing::Test {
 protected:
  void SetUp() override {
    NW_REQUIRE_ROOT();
    hosts_ = std::make_unique<TwoHosts>();
  }
  std::string config(const std::string& keys) {
    return "snapshot_interval = 0.5\n[plugins.udp]\n" + keys +
           sink_config_json(dir_.file("events.jsonl")) +
           "[[sinks]]\ntype = \"prometheus\"\nlisten = \"127.0.0.1:" + std::to_string(kPromPort) +
           "\"\n";
  }
  std::vector<Json> events(const std::string& name) {
    return events_of(parse_json_lines(read_file(dir_.file("events.jsonl"))), name);
  }
  static void settle() { std::this_thread::sleep_for(std::chrono::milliseconds(1200)); }

  TempDir dir_;
  std::unique_ptr<TwoHosts> hosts_;
};

TEST_F(Udp, EveryDatagramBothWaysWithSizesOwnersAndKernelTime) {
  Netwatcher nw(dir_, config("events = true\nmax_events_per_second = 0\n"));
  UdpPeer server(TwoHosts::kServer, "echo", {std::to_string(kEchoPort)}, dir_);
  UdpExchange v4 = udp_exchange(TwoHosts::kClient, "10.77.0.2", kEchoPort, kSizes);
  UdpExchange v6 = udp_exchange(TwoHosts::kClient, "fd77::2", kEchoPort, kSizes);
  settle();
  auto metrics = parse_prometheus(http_get(kPromPort, "/metrics"));
  ASSERT_EQ(nw.stop(), 0);

  const auto all = events("udp_datagram");
  const std::uint64_t client = netns_inode(TwoHosts::kClient);
  const std::uint64_t server_ns = netns_inode(TwoHosts::kServer);
  std::uint64_t total_bytes = 0;
  for (int size : kSizes) total_bytes += static_cast<std::uint64_t>(size);

  // Kernel time by (netns, direction, local port): the flows' means below
  // are of the same samples.
  std::map<std::tuple<std::uint64_t, std::string, std::uint64_t>, std::vector<std::uint64_t>>
      kernel_times;
  for (const auto& [family, exchange] : {std::pair{"ipv4", v4}, std::pair{"ipv6", v6}}) {
    for (std::uint64_t sport : {exchange.unconnected_sport, exchange.connected_sport}) {
      SCOPED_TRACE(std::string(family) + " client port " + std::to_string(sport));
      const std::vector<std::pair<Key, std::uint64_t>> sides = {
          {{client, "tx", sport, kEchoPort}, exchange.pid},
          {{client, "rx", sport, kEchoPort}, exchange.pid},
          {{server_ns, "rx", kEchoPort, sport}, static_cast<std::uint64_t>(server.pid())},
          {{server_ns, "tx", kEchoPort, sport}, static_cast<std::uint64_t>(server.pid())},
      };
      for (const auto& [key, owner] : sides) {
        SCOPED_TRACE(key.direction + " in netns " + std::to_string(key.netns));
        auto datagrams = datagrams_of(all, key);
        ASSERT_EQ(datagrams.size(), kSizes.size());
        for (std::size_t i = 0; i < kSizes.size(); ++i) {
          const auto& f = datagrams[i]["fields"];
          EXPECT_EQ(f["family"].str(), family);
          EXPECT_EQ(f["length"].u64(), static_cast<std::uint64_t>(kSizes[i]));
          ASSERT_TRUE(f.has("pid"));
          EXPECT_EQ(f["pid"].u64(), owner);
          EXPECT_EQ(f["comm"].str(), "python3");
          ASSERT_TRUE(f.has("kernel_ns"));
          EXPECT_GT(f["kernel_ns"].u64(), 0u);
          EXPECT_LT(f["kernel_ns"].u64(), 100000000u) << "100 ms in the kernel on a veth";
          kernel_times[{key.netns, key.direction, key.local_port}].push_back(f["kernel_ns"].u64());
        }
        // A veth datagram spends one to a few microseconds between the IP
        // layer and the socket queue, or the send call and the driver (the
        // first may wait for neighbour resolution): microseconds taken for
        // nanoseconds would be a thousandth, and the reverse 1000 times more.
        std::vector<std::uint64_t> times = kernel_times[{key.netns, key.direction, key.local_port}];
        std::sort(times.begin(), times.end());
        EXPECT_GE(times[times.size() / 2], 200u) << "median kernel_ns";
        EXPECT_LE(times[times.size() / 2], 200000u) << "median kernel_ns";
      }
    }
  }

  // One flow per client socket and per direction of view, with both
  // directions' counts.
  int client_flows = 0;
  for (const auto& e : events("udp_flow")) {
    const auto& f = e["fields"];
    if (f["netns"].u64() != client || f["local_port"].u64() != v4.unconnected_sport) continue;
    if (f["tx_datagrams"].u64() != kSizes.size()) continue;  // an earlier snapshot
    ++client_flows;
    EXPECT_EQ(f["remote_addr"].str(), "10.77.0.2");
    EXPECT_EQ(f["remote_port"].u64(), static_cast<std::uint64_t>(kEchoPort));
    EXPECT_EQ(f["tx_bytes"].u64(), total_bytes);
    EXPECT_EQ(f["rx_datagrams"].u64(), kSizes.size());
    EXPECT_EQ(f["rx_bytes"].u64(), total_bytes);
    EXPECT_EQ(f["pid"].u64(), v4.pid);
    // The flow's means are of its datagrams' kernel times (rounded down).
    for (const char* direction : {"rx", "tx"}) {
      const auto& times = kernel_times[{client, direction, v4.unconnected_sport}];
      ASSERT_EQ(times.size(), kSizes.size());
      std::uint64_t sum = 0;
      for (auto t : times) sum += t;
      const std::string field = std::string(direction) + "_kernel_ns";
      ASSERT_TRUE(f.has(field));
      EXPECT_EQ(f[field].u64(), sum / times.size()) << field;
    }
  }
  EXPECT_GE(client_flows, 1);

  // Four client sockets, each datagram sent and received once by each side;
  // other traffic on the host may add to it.
  const double per_direction = 4.0 * static_cast<double>(kSizes.size()) * 2;
  EXPECT_GE(metrics.value("netwatcher_udp_datagrams_total", {{"direction", "tx"}}).value_or(0),
            per_direction);
  EXPECT_GE(metrics.value("netwatcher_udp_datagrams_total", {{"direction", "rx"}}).value_or(0),
            per_direction);
  EXPECT_GE(
      metrics.value("netwatcher_udp_latency_seconds_count", {{"direction", "rx"}}).value_or(0),
      per_direction);
  EXPECT_GE(
      metrics.value("netwatcher_udp_latency_seconds_count", {{"direction", "tx"}}).value_or(0),
      per_direction);
}

TEST_F(Udp, ReceiveBufferOverflowsMatchTheKernelsCounter) {
  Netwatcher nw(dir_, config(""));
  UdpPeer holder(TwoHosts::kServer, "hold", {"--rcvbuf", "4096", "7301"}, dir_);
  const std::uint64_t before = rcvbuf_errors(TwoHosts::kServer);
  UdpSent sent = send_udp(TwoHosts::kClient, "10.77.0.2", 7301, 200, 1000, 40301);
  settle();
  const std::uint64_t overflows = rcvbuf_errors(TwoHosts::kServer) - before;
  auto metrics = parse_prometheus(http_get(kPromPort, "/metrics"));
  ASSERT_EQ(nw.stop(), 0);
  ASSERT_GT(overflows, 100u) << "a 4 KiB buffer cannot hold 200 KB";

  std::uint64_t failures = 0;
  for (const auto& e : events("udp_queue_failure")) {
    const auto& f = e["fields"];
    if (f["local_port"].u64() != 7301) continue;
    ++failures;
    EXPECT_EQ(f["reason"].str(), "receive_buffer_full");
    EXPECT_EQ(f["errno"].num(), -12);
    EXPECT_EQ(f["local_addr"].str(), "10.77.0.2");
    EXPECT_EQ(f["remote_addr"].str(), "10.77.0.1");
    EXPECT_EQ(f["remote_port"].u64(), sent.sport);
    EXPECT_EQ(f["length"].u64(), 1000u);
    EXPECT_EQ(f["netns"].u64(), netns_inode(TwoHosts::kServer));
  }
  EXPECT_EQ(failures, overflows);
  EXPECT_GE(
      metrics
          .value("netwatcher_udp_receive_queue_failures_total", {{"reason", "receive_buffer_full"}})
          .value_or(0),
      static_cast<double>(overflows));

  std::uint64_t flow_failures = 0;
  for (const auto& e : events("udp_flow")) {
    const auto& f = e["fields"];
    if (f["local_port"].u64() == 7301 && f["remote_port"].u64() == sent.sport)
      flow_failures = std::max(flow_failures, f["queue_failures"].u64());
  }
  EXPECT_EQ(flow_failures, overflows);
}

}  // namespace

// 100 client sockets, one datagram each, against a flow table of 64. The
// filter keeps to the client's side of each flow (remote port 7400), so
// exactly 100 flows are inserted. The LRU map makes room by evicting, never
// refuses; each CPU keeps a few free slots of its own, so it may evict before
// all 64 are used: entries and evictions add up to 100 rather than being
// 64 and 36. Flows then expire (flow_idle_seconds), which user space deletes
// and reports: that must not show as evictions.
TEST_F(Udp, AFullFlowTableCountsItsEvictionsAndNotItsExpiredFlows) {
  constexpr int kSockets = 100, kPort = 7400;
  Netwatcher nw(dir_, config("max_flows = 64\nflow_idle_seconds = 2\nflows = false\n"
                             "[filter]\ndport = [7400]\n"));
  UdpReceiver receiver(TwoHosts::kServer, {kPort}, dir_);
  spray_udp(TwoHosts::kClient, "10.77.0.2", kPort, kSockets);
  settle();  // under flow_idle_seconds: nothing expired yet
  auto full = parse_prometheus(http_get(kPromPort, "/metrics"));
  std::this_thread::sleep_for(std::chrono::milliseconds(3000));
  auto expired = parse_prometheus(http_get(kPromPort, "/metrics"));
  ASSERT_EQ(nw.stop(), 0) << nw.log();
  EXPECT_EQ(receiver.counts()[kPort], static_cast<std::uint64_t>(kSockets));

  const std::map<std::string, std::string> flows{{"plugin", "udp"}, {"table", "flows"}};
  EXPECT_EQ(full.value("netwatcher_table_capacity", flows), 64);
  const double entries = full.value("netwatcher_table_entries", flows).value_or(-1);
  const double evicted = full.value("netwatcher_table_evictions_total", flows).value_or(-1);
  EXPECT_LE(entries, 64);
  EXPECT_EQ(entries + evicted, kSockets);
  EXPECT_GE(evicted, kSockets - 64);
  EXPECT_EQ(full.value("netwatcher_table_full_total", flows), 0) << "an LRU map never refuses";
  EXPECT_EQ(expired.value("netwatcher_table_entries", flows), 0) << "every flow expired";
  EXPECT_EQ(expired.value("netwatcher_table_evictions_total", flows), evicted)
      << "expired flows are not evictions";

  const std::map<std::string, std::string> sockets{{"plugin", "udp"}, {"table", "sockets"}};
  EXPECT_EQ(expired.value("netwatcher_table_capacity", sockets), 16384);
  EXPECT_GE(expired.value("netwatcher_table_entries", sockets).value_or(0), kSockets)
      << "every sprayer socket had its owner remembered";
  for (const char* table : {"rx_datagrams", "tx_datagrams", "send_calls"})
    EXPECT_TRUE(expired.value("netwatcher_table_capacity", {{"plugin", "udp"}, {"table", table}}))
        << table;

  const std::string log = nw.log();
  const std::string warning = "table 'flows' is full (64 entries)";
  ASSERT_NE(log.find(warning), std::string::npos) << log;
  EXPECT_EQ(log.find(warning, log.find(warning) + 1), std::string::npos) << "warned once";
  EXPECT_NE(log.find("raise plugins.udp.max_flows"), std::string::npos);
}

// sendmmsg(2) sends many datagrams in one call, write(2) one without an
// address: each datagram is still one event on both ends, and the client's
// count is the kernel's OutDatagrams.
TEST_F(Udp, SendmmsgAndWriteAreCountedDatagramByDatagram) {
  constexpr int kCount = 20, kSize = 300, kPort = 7310;
  Netwatcher nw(dir_, config("events = true\nmax_events_per_second = 0\n"));
  UdpReceiver receiver(TwoHosts::kServer, {kPort}, dir_);
  const std::uint64_t out_before = nstat(TwoHosts::kClient, "UdpOutDatagrams");
  UdpBatch sent = send_udp_batch(TwoHosts::kClient, "10.77.0.2", kPort, kCount, kSize);
  ASSERT_EQ(sent.sendmmsg_sent, static_cast<std::uint64_t>(kCount)) << "one call sent them all";
  const std::uint64_t out_after = nstat(TwoHosts::kClient, "UdpOutDatagrams");
  EXPECT_EQ(receiver.counts()[kPort], 2u * kCount);
  const std::uint64_t client = netns_inode(TwoHosts::kClient);
  const std::uint64_t server = netns_inode(TwoHosts::kServer);
  EXPECT_TRUE(wait_until([&] {
    auto all = events_of(read_json_lines(dir_.file("events.jsonl")), "udp_datagram");
    return datagrams_of(all, {server, "rx", kPort, sent.write_sport}).size() == kCount;
  }));
  ASSERT_EQ(nw.stop(), 0) << nw.log();
  const auto all = events("udp_datagram");
  std::uint64_t client_tx = 0;
  for (std::uint64_t sport : {sent.sendmmsg_sport, sent.write_sport}) {
    SCOPED_TRACE("client port " + std::to_string(sport));
    for (const auto& key : {Key{client, "tx", sport, kPort}, Key{server, "rx", kPort, sport}}) {
      auto datagrams = datagrams_of(all, key);
      EXPECT_EQ(datagrams.size(), static_cast<std::size_t>(kCount)) << key.direction;
      for (const auto& d : datagrams) {
        EXPECT_EQ(d["fields"]["length"].u64(), static_cast<std::uint64_t>(kSize));
        if (key.direction == "tx") {
          EXPECT_EQ(d["fields"]["pid"].u64(), sent.pid);
        }
      }
      if (key.direction == "tx") client_tx += datagrams.size();
    }
  }
  EXPECT_EQ(client_tx, out_after - out_before);
}
