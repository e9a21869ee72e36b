// The icmp plugin against real ping (IPv4 and IPv6) between namespaces and a
// UDP datagram to a closed port.
#include <gtest/gtest.h>

#include <chrono>
#include <regex>
#include <set>
#include <sstream>
#include <thread>
#include <tuple>

#include "harness.hpp"

using namespace nwtest;

namespace {

constexpr int kPromPort = 41492;
constexpr int kPings = 4;

// seq -> RTT in nanoseconds, from ping's own "icmp_seq=N ... time=T ms" lines.
std::map<std::uint64_t, double> ping(const std::string& netns, const std::string& target) {
  auto result = run("ip netns exec " + netns + " ping -n -c " + std::to_string(kPings) +
                    " -i 0.2 -W 2 " + target);
  if (result.exit_code != 0) throw std::runtime_error("ping failed: " + result.output);
  std::map<std::uint64_t, double> rtts;
  std::regex line(R"(icmp_seq=(\d+) .*time=([0-9.]+) ms)");
  for (std::sregex_iterator it(result.output.begin(), result.output.end(), line), end; it != end;
       ++it)
    rtts[std::stoull((*it)[1])] = std::stod((*it)[2]) * 1e6;
  return rtts;
}

class Icmp : public ::testing::Test {
 protected:
  void SetUp() override {
    NW_REQUIRE_ROOT();
    hosts_ = std::make_unique<TwoHosts>();
  }
  std::vector<Json> events(const std::string& name) {
    return events_of(parse_json_lines(read_file(dir_.file("events.jsonl"))), name);
  }
  std::string config() {
    return "snapshot_interval = 0.5\n[plugins.icmp]\nmax_events_per_second = 0\n" +
           sink_config_json(dir_.file("events.jsonl")) +
           "[[sinks]]\ntype = \"prometheus\"\nlisten = \"127.0.0.1:" + std::to_string(kPromPort) +
           "\"\n";
  }

  TempDir dir_;
  std::unique_ptr<TwoHosts> hosts_;
};

TEST_F(Icmp, PingRequestsRepliesRoundTripsAndReplyTimes) {
  Netwatcher nw(dir_, config());
  auto ping4 = ping(TwoHosts::kClient, "10.77.0.2");
  auto ping6 = ping(TwoHosts::kClient, "fd77::2");
  std::this_thread::sleep_for(std::chrono::milliseconds(1200));
  auto metrics = parse_prometheus(http_get(kPromPort, "/metrics"));
  ASSERT_EQ(nw.stop(), 0);
  ASSERT_EQ(ping4.size(), static_cast<std::size_t>(kPings));
  ASSERT_EQ(ping6.size(), static_cast<std::size_t>(kPings));

  const std::uint64_t client = netns_inode(TwoHosts::kClient);
  const std::uint64_t server = netns_inode(TwoHosts::kServer);
  const auto all = events("icmp_message");
  struct Case {
    std::string family, client_addr, server_addr, request, reply;
    const std::map<std::uint64_t, double>* rtts;
  };
  for (const Case& c :
       {Case{"ipv4", "10.77.0.1", "10.77.0.2", "echo_request", "echo_reply", &ping4},
        Case{"ipv6", "fd77::1", "fd77::2", "echo_request", "echo_reply", &ping6}}) {
    SCOPED_TRACE(c.family);
    // direction/type/netns -> seq -> event
    std::map<std::string, std::map<std::uint64_t, Json>> seen;
    std::set<std::uint64_t> ids;
    for (const auto& e : all) {
      const auto& f = e["fields"];
      if (f["family"].str() != c.family || !f.has("seq")) continue;
      const bool from_client = f["src_addr"].str() == c.client_addr;
      if (!from_client && f["src_addr"].str() != c.server_addr) continue;
      const std::uint64_t netns = f["netns"].u64();
      std::string where = f["direction"].str() + " " + f["type"].str() + " " +
                          (netns == client   ? "client"
                           : netns == server ? "server"
                                             : "other");
      seen[where][f["seq"].u64()] = e;
      ids.insert(f["id"].u64());
    }
    EXPECT_EQ(ids.size(), 1u) << "one ping, one echo identifier";
    for (const char* where : {"tx echo_request client", "rx echo_request server",
                              "tx echo_reply server", "rx echo_reply client"})
      EXPECT_EQ(seen[where].size(), static_cast<std::size_t>(kPings)) << where;
    for (std::uint64_t seq = 1; seq <= kPings; ++seq) {
      SCOPED_TRACE("seq " + std::to_string(seq));
      const auto& request = seen["tx echo_request client"][seq]["fields"];
      EXPECT_EQ(request["comm"].str(), "ping");
      EXPECT_EQ(request["dst_addr"].str(), c.server_addr);
      const auto& answer = seen["tx echo_reply server"][seq]["fields"];
      ASSERT_TRUE(answer.has("reply_ns"));
      EXPECT_FALSE(answer.has("pid")) << "the kernel answers, not a process";
      const auto& reply = seen["rx echo_reply client"][seq]["fields"];
      ASSERT_TRUE(reply.has("rtt_ns"));
      EXPECT_EQ(reply["comm"].str(), "ping") << "a reply names the pinger";
      const double rtt = static_cast<double>(reply["rtt_ns"].u64());
      EXPECT_GT(rtt, static_cast<double>(answer["reply_ns"].u64()))
          << "the round trip contains the kernel's reply time";
      // ping measures from user space, around our device-level round trip;
      // allow for its 1 µs print resolution.
      EXPECT_LE(rtt, c.rtts->at(seq) + 1000.0);
    }
    EXPECT_GE(
        metrics.value("netwatcher_icmp_echo_rtt_seconds_count", {{"family", c.family}}).value_or(0),
        kPings);
    EXPECT_GE(metrics.value("netwatcher_icmp_echo_reply_seconds_count", {{"family", c.family}})
                  .value_or(0),
              kPings);
    EXPECT_GE(metrics
                  .value("netwatcher_icmp_messages_total",
                         {{"family", c.family}, {"direction", "tx"}, {"type", c.request}})
                  .value_or(0),
              kPings);
  }
}

// --laddr selects messages by either address, in the kernel: pings of both
// families, and only the IPv6 ones (in fd77::/64) are reported, each echo
// once per direction and namespace.
TEST_F(Icmp, AddressFilterKeepsOnlyMessagesOfThoseNetworks) {
  Netwatcher nw(dir_, config(), {"--laddr", "fd77::/64"});
  ping(TwoHosts::kClient, "10.77.0.2");
  ping(TwoHosts::kClient, "fd77::2");
  const std::uint64_t client = netns_inode(TwoHosts::kClient);
  auto echoes = [&](const std::vector<Json>& all) {
    std::map<std::string, std::size_t> seen;
    for (const auto& e : all) {
      const auto& f = e["fields"];
      if (!f.has("seq")) continue;
      seen[f["direction"].str() + " " + f["type"].str() + " " +
           (f["netns"].u64() == client ? "client" : "server")] += 1;
    }
    return seen;
  };
  EXPECT_TRUE(wait_until([&] {
    auto seen = echoes(events("icmp_message"));
    return seen["rx echo_reply client"] >= static_cast<std::size_t>(kPings);
  }));
  ASSERT_EQ(nw.stop(), 0);
  const auto all = events("icmp_message");
  for (const auto& e : all) EXPECT_EQ(e["fields"]["family"].str(), "ipv6");
  auto seen = echoes(all);
  for (const char* where : {"tx echo_request client", "rx echo_request server",
                            "tx echo_reply server", "rx echo_reply client"})
    EXPECT_EQ(seen[where], static_cast<std::size_t>(kPings)) << where;
}

TEST_F(Icmp, ClosedUdpPortGivesPortUnreachableWithTheOffendingTuple) {
  Netwatcher nw(dir_, config());
  UdpSent v4 = send_udp(TwoHosts::kClient, "10.77.0.2", 7399, 1, 20, 40399);
  UdpSent v6 = send_udp(TwoHosts::kClient, "fd77::2", 7399, 1, 20, 40398);
  std::this_thread::sleep_for(std::chrono::milliseconds(1200));
  auto metrics = parse_prometheus(http_get(kPromPort, "/metrics"));
  ASSERT_EQ(nw.stop(), 0);
  const std::uint64_t server = netns_inode(TwoHosts::kServer);

  int errors_sent = 0;
  for (const auto& e : events("icmp_error_sent")) {
    const auto& f = e["fields"];
    if (!f.has("dst_port") || f["dst_port"].u64() != 7399) continue;
    ++errors_sent;
    EXPECT_EQ(f["type"].str(), "destination_unreachable");
    EXPECT_EQ(f["code"].str(), "port_unreachable");
    EXPECT_EQ(f["protocol"].str(), "udp");
    EXPECT_EQ(f["src_addr"].str(), "10.77.0.1");
    EXPECT_EQ(f["src_port"].u64(), v4.sport);
    EXPECT_EQ(f["dst_addr"].str(), "10.77.0.2");
    EXPECT_EQ(f["netns"].u64(), server);
  }
  EXPECT_EQ(errors_sent, 1);
  EXPECT_GE(metrics
                .value("netwatcher_icmp_errors_sent_total",
                       {{"type", "destination_unreachable"}, {"code", "port_unreachable"}})
                .value_or(0),
            1);

  // Both errors as sent messages, quoting the datagram that caused them.
  for (const auto& [family, sent] : {std::pair{"ipv4", v4}, std::pair{"ipv6", v6}}) {
    SCOPED_TRACE(family);
    int quoted = 0;
    for (const auto& e : events("icmp_message")) {
      const auto& f = e["fields"];
      if (f["family"].str() != family || f["direction"].str() != "tx" || !f.has("inner_dst_port") ||
          f["inner_dst_port"].u64() != 7399)
        continue;
      ++quoted;
      EXPECT_EQ(f["type"].str(), "destination_unreachable");
      EXPECT_EQ(f["code"].str(), "port_unreachable");
      EXPECT_EQ(f["inner_protocol"].str(), "udp");
      EXPECT_EQ(f["inner_src_port"].u64(), sent.sport);
      EXPECT_EQ(f["inner_src_addr"].str(), std::string(family) == "ipv4" ? "10.77.0.1" : "fd77::1");
      EXPECT_EQ(f["netns"].u64(), server);
    }
    EXPECT_EQ(quoted, 1);
  }
}

// Per namespace, the messages netwatcher saw of each type equal the
// kernel's Icmp/Icmp6 In/Out counters there, and the port unreachables the
// server sent equal its UdpNoPorts.
TEST_F(Icmp, MessagesPerTypeEqualTheKernelsCountersInEachNamespace) {
  struct Twin {
    const char* netns;
    const char* counter;
    const char* family;
    const char* direction;
    const char* type;
  };
  const std::vector<Twin> twins = {
      {TwoHosts::kClient, "IcmpOutEchos", "ipv4", "tx", "echo_request"},
      {TwoHosts::kServer, "IcmpInEchos", "ipv4", "rx", "echo_request"},
      {TwoHosts::kServer, "IcmpOutEchoReps", "ipv4", "tx", "echo_reply"},
      {TwoHosts::kClient, "IcmpInEchoReps", "ipv4", "rx", "echo_reply"},
      {TwoHosts::kServer, "IcmpOutDestUnreachs", "ipv4", "tx", "destination_unreachable"},
      {TwoHosts::kClient, "IcmpInDestUnreachs", "ipv4", "rx", "destination_unreachable"},
      {TwoHosts::kClient, "Icmp6OutEchos", "ipv6", "tx", "echo_request"},
      {TwoHosts::kServer, "Icmp6InEchos", "ipv6", "rx", "echo_request"},
      {TwoHosts::kServer, "Icmp6OutEchoReplies", "ipv6", "tx", "echo_reply"},
      {TwoHosts::kClient, "Icmp6InEchoReplies", "ipv6", "rx", "echo_reply"},
  };
  std::vector<std::uint64_t> before;
  for (const auto& twin : twins) before.push_back(nstat(twin.netns, twin.counter));
  const std::uint64_t no_ports_before = nstat(TwoHosts::kServer, "UdpNoPorts");
  Netwatcher nw(dir_, config());
  ping(TwoHosts::kClient, "10.77.0.2");
  ping(TwoHosts::kClient, "fd77::2");
  for (int i = 0; i < 3; ++i) {
    send_udp(TwoHosts::kClient, "10.77.0.2", 7398, 1, 20);
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  ASSERT_EQ(nw.stop(), 0);
  const auto messages = events("icmp_message");
  for (std::size_t i = 0; i < twins.size(); ++i) {
    const Twin& twin = twins[i];
    SCOPED_TRACE(std::string(twin.netns) + " " + twin.counter);
    const std::uint64_t kernel = nstat(twin.netns, twin.counter) - before[i];
    const std::uint64_t inode = netns_inode(twin.netns);
    std::uint64_t seen = 0;
    for (const auto& e : messages) {
      const auto& f = e["fields"];
      seen += f["netns"].u64() == inode && f["family"].str() == twin.family &&
              f["direction"].str() == twin.direction && f["type"].str() == twin.type;
    }
    EXPECT_GT(kernel, 0u);
    EXPECT_EQ(seen, kernel);
  }
  const std::uint64_t no_ports = nstat(TwoHosts::kServer, "UdpNoPorts") - no_ports_before;
  EXPECT_EQ(no_ports, 3u);
  const std::uint64_t server = netns_inode(TwoHosts::kServer);
  std::uint64_t unreachable_sent = 0;
  for (const auto& e : events("icmp_error_sent")) {
    const auto& f = e["fields"];
    unreachable_sent += f["netns"].u64() == server && f["code"].str() == "port_unreachable";
  }
  EXPECT_EQ(unreachable_sent, no_ports);
}

// A port filter selects an error by the packet it quotes (README: port
// filters match the quoted packet of an error; echo messages have no ports):
// of two port unreachables per family, the one quoting a datagram to the
// filtered port is reported, as sent by the server and received by the
// client, and as icmp_error_sent; the other is not, nor is any echo. The
// counters still count every message.
TEST_F(Icmp, PortFilterMatchesTheTupleAnErrorQuotes) {
  const std::uint64_t unreach_before = nstat(TwoHosts::kServer, "IcmpOutDestUnreachs");
  const std::uint64_t unreach6_before = nstat(TwoHosts::kServer, "Icmp6OutDestUnreachs");
  Netwatcher nw(dir_, config(), {"-d", "7411"});
  ping(TwoHosts::kClient, "10.77.0.2");
  send_udp(TwoHosts::kClient, "10.77.0.2", 7412, 1, 20, 41412);
  send_udp(TwoHosts::kClient, "fd77::2", 7412, 1, 20, 41413);
  UdpSent v4 = send_udp(TwoHosts::kClient, "10.77.0.2", 7411, 1, 20, 41414);
  UdpSent v6 = send_udp(TwoHosts::kClient, "fd77::2", 7411, 1, 20, 41415);
  auto quoting = [](const std::vector<Json>& all, const std::string& family, std::uint64_t port) {
    std::vector<Json> out;
    for (const auto& e : events_of(all, "icmp_message")) {
      const auto& f = e["fields"];
      if (f["family"].str() == family && f.has("inner_dst_port") &&
          f["inner_dst_port"].u64() == port)
        out.push_back(e);
    }
    return out;
  };
  auto errors_sent = [](const std::vector<Json>& all, std::uint64_t port) {
    std::size_t n = 0;
    for (const auto& e : events_of(all, "icmp_error_sent"))
      n += e["fields"].has("dst_port") && e["fields"]["dst_port"].u64() == port;
    return n;
  };
  EXPECT_TRUE(wait_until([&] {
    auto all = read_json_lines(dir_.file("events.jsonl"));
    return quoting(all, "ipv4", 7411).size() >= 2 && quoting(all, "ipv6", 7411).size() >= 2 &&
           errors_sent(all, 7411) >= 1;
  })) << read_file(dir_.file("events.jsonl"));
  auto metrics = scrape_until(kPromPort, [](const PromText& m) {
    return m.value("netwatcher_icmp_messages_total",
                   {{"family", "ipv6"}, {"direction", "tx"}, {"type", "destination_unreachable"}})
               .value_or(0) >= 2;
  });
  ASSERT_EQ(nw.stop(), 0);
  EXPECT_EQ(nstat(TwoHosts::kServer, "IcmpOutDestUnreachs") - unreach_before, 2u);
  EXPECT_EQ(nstat(TwoHosts::kServer, "Icmp6OutDestUnreachs") - unreach6_before, 2u);
  const auto all = parse_json_lines(read_file(dir_.file("events.jsonl")));
  const std::uint64_t client = netns_inode(TwoHosts::kClient);
  const std::uint64_t server = netns_inode(TwoHosts::kServer);
  for (const auto& [family, sent] : {std::pair{"ipv4", v4}, std::pair{"ipv6", v6}}) {
    SCOPED_TRACE(family);
    auto matched = quoting(all, family, 7411);
    ASSERT_EQ(matched.size(), 2u) << "sent by the server, received by the client";
    std::set<std::string> seen;
    for (const auto& e : matched) {
      const auto& f = e["fields"];
      EXPECT_EQ(f["code"].str(), "port_unreachable");
      EXPECT_EQ(f["inner_src_port"].u64(), sent.sport);
      seen.insert(f["direction"].str() + (f["netns"].u64() == server   ? " server"
                                          : f["netns"].u64() == client ? " client"
                                                                       : " other"));
    }
    EXPECT_EQ(seen, (std::set<std::string>{"tx server", "rx client"}));
    EXPECT_TRUE(quoting(all, family, 7412).empty()) << "quotes port 7412, not the filter's";
  }
  EXPECT_EQ(errors_sent(all, 7411), 1u);
  EXPECT_EQ(errors_sent(all, 7412), 0u);
  // Nothing else passed: every message quotes a datagram on port 7411.
  for (const auto& e : events_of(all, "icmp_message")) {
    const auto& f = e["fields"];
    EXPECT_TRUE(f.has("inner_dst_port") && f["inner_dst_port"].u64() == 7411)
        << f["family"].str() << " " << f["direction"].str() << " " << f["type"].str();
  }
  // Counted in the kernel before the filter: the echo and both errors.
  EXPECT_GE(metrics
                .value("netwatcher_icmp_messages_total",
                       {{"family", "ipv4"}, {"direction", "tx"}, {"type", "echo_request"}})
                .value_or(0),
            1);
  EXPECT_GE(
      metrics
          .value("netwatcher_icmp_messages_total",
                 {{"family", "ipv4"}, {"direction", "tx"}, {"type", "destination_unreachable"}})
          .value_or(0),
      2);
}

}  // namespace

// A router's errors: time exceeded for a TTL of 1, host unreachable from an
// `unreachable` route. Each is reported once, in the router's namespace,
// quoting the ping that caused it, and the counter equals the router's own
// Icmp OutTimeExcds / OutDestUnreachs.
TEST(IcmpRouter, TimeExceededAndHostUnreachableFromARouter) {
  NW_REQUIRE_ROOT();
  RoutedHosts hosts;
  TempDir dir;
  ASSERT_EQ(
      run("ip -n " + std::string(RoutedHosts::kRouter) + " route add unreachable 10.79.0.0/24")
          .exit_code,
      0);
  Netwatcher nw(dir, "snapshot_interval = 0.5\n[plugins.icmp]\nmax_events_per_second = 0\n" +
                         sink_config_json(dir.file("events.jsonl")));
  const std::uint64_t excds_before = nstat(RoutedHosts::kRouter, "IcmpOutTimeExcds");
  const std::uint64_t unreach_before = nstat(RoutedHosts::kRouter, "IcmpOutDestUnreachs");
  // Pings that fail exit non-zero; the router's answers are what counts.
  run("ip netns exec " + std::string(RoutedHosts::kA) + " ping -n -c 2 -i 0.2 -W 1 -t 1 10.78.2.1");
  run("ip netns exec " + std::string(RoutedHosts::kA) + " ping -n -c 2 -i 0.2 -W 1 10.79.0.9");
  const std::uint64_t excds = nstat(RoutedHosts::kRouter, "IcmpOutTimeExcds") - excds_before;
  const std::uint64_t unreach = nstat(RoutedHosts::kRouter, "IcmpOutDestUnreachs") - unreach_before;
  ASSERT_GE(excds, 1u);
  ASSERT_GE(unreach, 1u);
  auto errors_of = [&](const std::vector<Json>& all, const std::string& code) {
    std::vector<Json> out;
    for (const auto& e : events_of(all, "icmp_error_sent"))
      if (e["fields"]["code"].str() == code) out.push_back(e);
    return out;
  };
  EXPECT_TRUE(wait_until([&] {
    auto all = read_json_lines(dir.file("events.jsonl"));
    return errors_of(all, "ttl_exceeded").size() == excds &&
           errors_of(all, "host_unreachable").size() == unreach;
  })) << read_file(dir.file("events.jsonl"));
  ASSERT_EQ(nw.stop(), 0) << nw.log();
  const auto all = parse_json_lines(read_file(dir.file("events.jsonl")));
  const std::uint64_t router = netns_inode(RoutedHosts::kRouter);
  for (const auto& [code, type, target] :
       {std::tuple{"ttl_exceeded", "time_exceeded", "10.78.2.1"},
        std::tuple{"host_unreachable", "destination_unreachable", "10.79.0.9"}}) {
    SCOPED_TRACE(code);
    for (const auto& e : errors_of(all, code)) {
      const auto& f = e["fields"];
      EXPECT_EQ(f["type"].str(), type);
      EXPECT_EQ(f["protocol"].str(), "icmp");
      EXPECT_EQ(f["src_addr"].str(), "10.78.1.1");
      EXPECT_EQ(f["dst_addr"].str(), target);
      EXPECT_EQ(f["netns"].u64(), router);
    }
  }
}
