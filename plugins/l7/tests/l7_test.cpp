// The shared L7 capture: one pair of programs serves http and dns at once,
// each socket goes to the protocol it speaks, and a bulk transfer of no
// protocol is offered to the detectors only for its first packets.
#include <gtest/gtest.h>

#include <csignal>
#include <filesystem>
#include <memory>
#include <set>
#include <stdexcept>
#include <thread>

#include "harness.hpp"

using namespace nwtest;

namespace {

constexpr int kPromPort = 41480;
constexpr int kHttpPort = 8080;
constexpr int kBulkPort = 41481;
constexpr int kSlowPort = 41482;

std::string two_protocols(const TempDir& dir) {
  return "snapshot_interval = 0.2\n[plugins.http]\n[plugins.dns]\n[plugins.l7]\noffer_packets = "
         "4\n" +
         sink_config_json(dir.file("events.jsonl")) +
         "[[sinks]]\ntype = \"prometheus\"\nlisten = \"127.0.0.1:" + std::to_string(kPromPort) +
         "\"\n";
}

TEST(L7Capture, OneCaptureServesHttpAndDnsAndLetsOtherTrafficGo) {
  NW_REQUIRE_ROOT();
  TempDir dir;
  TwoHosts hosts;
  const std::string peers = std::string(NW_SOURCE_DIR) + "/plugins/http/tests/http_peers.py";
  Process http_server({"ip", "netns", "exec", TwoHosts::kServer, "python3", peers, "server",
                       std::to_string(kHttpPort), "--pidfile", dir.file("http.pid"), "--ready",
                       dir.file("http.ready")},
                      dir.file("http.log"));
  write_file(dir.file("hosts"), "10.77.0.10 web.test\n");
  Process resolver(
      {"ip", "netns", "exec", TwoHosts::kServer, "dnsmasq", "--no-daemon", "--no-resolv",
       "--no-hosts", "--user=root", "--local=/test/", "--addn-hosts=" + dir.file("hosts"),
       "--listen-address=10.77.0.2", "--bind-interfaces", "--log-facility=-"},
      dir.file("dnsmasq.log"));
  Process bulk_server({"ip", "netns", "exec", TwoHosts::kServer, "iperf3", "-s", "-1", "-p",
                       std::to_string(kBulkPort)},
                      dir.file("iperf3.log"));
  auto dig = [](const std::string& name) {
    return run("ip netns exec " + std::string(TwoHosts::kClient) +
               " dig +short +tries=1 +time=1 @10.77.0.2 " + name + " 2>&1");
  };
  ASSERT_TRUE(wait_until([&] { return std::filesystem::exists(dir.file("http.ready")); }));
  ASSERT_TRUE(wait_until([&] { return dig("web.test").output == "10.77.0.10\n"; }));
  ASSERT_TRUE(wait_until([&] {
    return run("ip netns exec " + std::string(TwoHosts::kServer) +
               " ss -Htln sport = :" + std::to_string(kBulkPort))
               .output.find("LISTEN") != std::string::npos;
  }));

  // --check: the protocol plugins' hooks are served by the capture, which
  // runs as plugin l7.
  write_file(dir.file("check.toml"), "[netwatcher]\n" + two_protocols(dir));
  auto check = run(std::string(NW_BINARY) + " --config " + dir.file("check.toml") +
                   " --plugin-dir " + NW_PLUGIN_DIR + " --check 2>&1");
  ASSERT_EQ(check.exit_code, 0) << check.output;
  EXPECT_NE(check.output.find("plugin http: ok"), std::string::npos) << check.output;
  EXPECT_NE(check.output.find("plugin dns: ok"), std::string::npos) << check.output;
  EXPECT_NE(check.output.find("plugin l7: ok"), std::string::npos) << check.output;
  EXPECT_NE(check.output.find("served by the shared L7 capture"), std::string::npos)
      << check.output;
  EXPECT_LT(check.output.find("plugin dns: ok"), check.output.find("plugin l7: ok"))
      << "the capture starts after the protocols";

  Netwatcher nw(dir, two_protocols(dir));
  ASSERT_TRUE(wait_until([&] { return std::filesystem::exists(dir.file("events.jsonl")); }));
  const std::uint64_t segments_before = nstat(TwoHosts::kClient, "TcpOutSegs");
  auto bulk = run("ip netns exec " + std::string(TwoHosts::kClient) + " iperf3 -c 10.77.0.2 -p " +
                  std::to_string(kBulkPort) + " -n 20M -l 1000 2>&1");
  ASSERT_EQ(bulk.exit_code, 0) << bulk.output;
  const std::uint64_t bulk_segments = nstat(TwoHosts::kClient, "TcpOutSegs") - segments_before;
  auto curl =
      run("ip netns exec " + std::string(TwoHosts::kClient) +
          " curl -sS -o /dev/null -o /dev/null -o /dev/null -w '%{http_code}\\n'"
          " http://10.77.0.2:" +
          std::to_string(kHttpPort) + "/hello http://10.77.0.2:" + std::to_string(kHttpPort) +
          "/missing http://10.77.0.2:" + std::to_string(kHttpPort) + "/hello");
  ASSERT_EQ(curl.output, "200\n404\n200\n");
  ASSERT_EQ(dig("web.test").output, "10.77.0.10\n");
  ASSERT_EQ(dig("nope.test").output, "");

  // The test's own scrapes of the agent's endpoint are HTTP too: only the
  // server on kHttpPort counts here.
  auto of_server = [&](const std::string& event, int port) {
    std::vector<Json> out;
    for (const auto& e : events_of(read_json_lines(dir.file("events.jsonl")), event)) {
      const auto& f = e["fields"];
      const std::uint64_t server_port =
          f["side"].str() == "client" ? f["dport"].u64() : f["sport"].u64();
      if (server_port == static_cast<std::uint64_t>(port)) out.push_back(f);
    }
    return out;
  };
  ASSERT_TRUE(wait_until([&] {
    return of_server("http_exchange", kHttpPort).size() >= 6 &&
           of_server("dns_query", 53).size() >= 4;
  })) << nw.log();
  auto prom = scrape_until(kPromPort, [](const PromText& m) {
    return m.value("netwatcher_l7_sockets_total", {{"protocol", "dns"}}).value_or(0) >= 3;
  });
  ASSERT_EQ(nw.stop(), 0) << nw.log();

  // Every exchange and query once per socket, nothing else.
  const auto exchanges = of_server("http_exchange", kHttpPort);
  EXPECT_EQ(exchanges.size(), 6u);
  std::set<std::uint64_t> http_sockets;
  for (const auto& f : exchanges) http_sockets.insert(f["sock"].u64());
  EXPECT_EQ(http_sockets.size(), 2u) << "curl's socket and the server's";
  EXPECT_EQ(of_server("dns_query", 53).size(), 4u);
  EXPECT_EQ(events_of(read_json_lines(dir.file("events.jsonl")), "dns_query").size(), 4u);
  // Sockets: two dig sockets and dnsmasq's one; curl's, the server's, and
  // two per scrape of the endpoint.
  EXPECT_EQ(prom.value("netwatcher_l7_sockets_total", {{"protocol", "dns"}}), 3.0);
  const double http_decided =
      prom.value("netwatcher_l7_sockets_total", {{"protocol", "http"}}).value_or(0);
  // (The scrape that read this may see one end of its own connection decided
  // and not yet the other.)
  EXPECT_GE(http_decided, 2.0);
  // iperf3's control and data connections, both ends, at least.
  EXPECT_GE(prom.value("netwatcher_l7_sockets_total", {{"protocol", "none"}}).value_or(0), 4.0);
  // The bulk transfer (thousands of segments) was offered only its first
  // packets: at most offer_packets (32) per direction and socket of every
  // socket the capture saw.
  ASSERT_GT(bulk_segments, 10000u);
  double sockets = 0;
  for (const char* protocol : {"http", "dns", "none"})
    sockets += prom.value("netwatcher_l7_sockets_total", {{"protocol", protocol}}).value_or(0);
  const double offered = prom.value("netwatcher_l7_offered_packets_total", {}).value_or(-1);
  EXPECT_GT(offered, 0);
  EXPECT_LE(offered, sockets * 2 * 32);
  // What http and dns were handed: their own sockets' packets only.
  EXPECT_LT(prom.value("netwatcher_l7_packets_total", {{"protocol", "http"}}).value_or(1e9),
            100 * http_decided);
  EXPECT_EQ(prom.value("netwatcher_l7_packets_total", {{"protocol", "dns"}}), 8.0)
      << "4 queries and 4 answers, each seen by the dig socket and by dnsmasq's";
}

// A server on 10.77.0.2:kSlowPort that accepts one connection and reads it
// to the end, discarding the bytes; listening when this returns.
std::unique_ptr<Process> start_discard_server(const TempDir& dir) {
  auto sink = std::make_unique<Process>(
      std::vector<std::string>{
          "ip", "netns", "exec", TwoHosts::kServer, "python3", "-c",
          "import socket\n"
          "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
          "s.bind(('10.77.0.2', " +
              std::to_string(kSlowPort) +
              ")); s.listen()\n"
              "c, _ = s.accept()\n"
              "while c.recv(4096): pass\n"},
      dir.file("sink.log"));
  const bool listening = wait_until([&] {
    return run("ip netns exec " + std::string(TwoHosts::kServer) +
               " ss -Htln sport = :" + std::to_string(kSlowPort))
               .output.find("LISTEN") != std::string::npos;
  });
  if (!listening)
    throw std::runtime_error("discard server did not listen: " + read_file(dir.file("sink.log")));
  return sink;
}

// A flow of no protocol is offered to user space only until the verdict is
// back in the kernel: 100 small writes, 5 ms apart, reach user space a few
// times, not offer_packets (32) per direction. Read from the textfile at
// exit: scrapes would be HTTP sockets of their own.
TEST(L7Capture, ASocketOfNoProtocolIsOfferedOnlyUntilItsVerdictIsBack) {
  NW_REQUIRE_ROOT();
  TempDir dir;
  TwoHosts hosts;
  auto sink = start_discard_server(dir);
  const std::string textfile = dir.file("l7.prom");
  Netwatcher nw(dir,
                "[plugins.http]\n[plugins.dns]\n[plugins.l7]\noffer_packets = 32\n"
                "[[sinks]]\ntype = \"prometheus\"\nlisten = \"\"\ntextfile = \"" +
                    textfile + "\"\n");
  ASSERT_TRUE(wait_until([&] { return std::filesystem::exists(textfile); })) << nw.log();
  auto slow = run("ip netns exec " + std::string(TwoHosts::kClient) + " python3 -c \"" +
                  "import socket, time\n"
                  "s = socket.create_connection(('10.77.0.2', " +
                  std::to_string(kSlowPort) +
                  "))\n"
                  "s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)\n"
                  "for i in range(100):\n"
                  "    s.send(b'x' * 100); time.sleep(0.005)\n"
                  "s.close(); print('ok')\n\" 2>&1");
  ASSERT_EQ(slow.output, "ok\n");
  ASSERT_EQ(nw.stop(), 0) << nw.log();
  const PromText final_values = parse_prometheus(read_file(textfile));
  EXPECT_GE(final_values.value("netwatcher_l7_sockets_total", {{"protocol", "none"}}).value_or(0),
            2.0);
  const double offered = final_values.value("netwatcher_l7_offered_packets_total", {}).value_or(-1);
  EXPECT_GE(offered, 2.0) << "each end's first packet";
  EXPECT_LE(offered, 16.0) << "a decided socket is still offered";
  EXPECT_EQ(final_values.value("netwatcher_l7_unoffered_packets_total", {}), 0.0)
      << "5 ms apart, every packet came after the verdict or within the offer";
}

// A new socket that sends faster than the agent decides: with one packet on
// offer, the packets after it and before the verdict reach no protocol, and
// are counted rather than lost in silence. The agent is stopped during the
// burst, so no verdict can come: every data segment after the first, leaving
// the client and reaching the server, is counted.
TEST(L7Capture, PacketsPastTheOfferBeforeTheVerdictAreCounted) {
  NW_REQUIRE_ROOT();
  TempDir dir;
  TwoHosts hosts;
  constexpr int kWrites = 50;
  auto sink = start_discard_server(dir);
  const std::string textfile = dir.file("l7.prom");
  Netwatcher nw(dir,
                "[plugins.http]\n[plugins.l7]\noffer_packets = 1\n"
                "[[sinks]]\ntype = \"prometheus\"\nlisten = \"\"\ntextfile = \"" +
                    textfile + "\"\n");
  ASSERT_TRUE(wait_until([&] { return std::filesystem::exists(textfile); })) << nw.log();
  ASSERT_EQ(kill(nw.pid(), SIGSTOP), 0);
  // The script counts its data segments itself (TCPOrigDataSent in its
  // netns, read after connect and before close: no SYN, no FIN).
  auto burst = run("ip netns exec " + std::string(TwoHosts::kClient) + " python3 -c \"" +
                   "import socket, time\n"
                   "def sent():\n"
                   "    rows = [l.split() for l in open('/proc/net/netstat') if "
                   "l.startswith('TcpExt:')]\n"
                   "    return int(rows[1][rows[0].index('TCPOrigDataSent')])\n"
                   "s = socket.create_connection(('10.77.0.2', " +
                   std::to_string(kSlowPort) +
                   "))\n"
                   "s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)\n"
                   "before = sent()\n"
                   "for i in range(" +
                   std::to_string(kWrites) +
                   "):\n"
                   "    s.send(b'x' * 100); time.sleep(0.001)\n"
                   "print(sent() - before); s.close()\n\" 2>&1");
  ASSERT_EQ(kill(nw.pid(), SIGCONT), 0);
  ASSERT_EQ(burst.exit_code, 0) << burst.output;
  const std::uint64_t data_segments = std::stoull(burst.output);
  ASSERT_GE(data_segments, 2u) << burst.output;
  ASSERT_EQ(nw.stop(), 0) << nw.log();
  const PromText final_values = parse_prometheus(read_file(textfile));
  EXPECT_EQ(final_values.value("netwatcher_l7_unoffered_packets_total", {}),
            2.0 * static_cast<double>(data_segments - 1))
      << data_segments << " data segments, each leaving the client and reaching the server";
  EXPECT_EQ(final_values.value("netwatcher_l7_offered_packets_total", {}), 2.0)
      << "the first packet of each socket";
}

// No protocol plugin on: the capture does not run at all.
TEST(L7Capture, DoesNotRunWithoutAProtocolPlugin) {
  NW_REQUIRE_ROOT();
  TempDir dir;
  write_file(dir.file("c.toml"),
             "[plugins.nic]\n[plugins.l7]\n" + sink_config_json(dir.file("events.jsonl")));
  auto check = run(std::string(NW_BINARY) + " --config " + dir.file("c.toml") + " --plugin-dir " +
                   NW_PLUGIN_DIR + " --check 2>&1");
  ASSERT_EQ(check.exit_code, 0) << check.output;
  EXPECT_NE(check.output.find("plugin nic: ok"), std::string::npos) << check.output;
  EXPECT_EQ(check.output.find("plugin l7"), std::string::npos) << check.output;
}

// The capture cannot start (here: its required egress hook forced off): the
// protocol plugins are disabled with the reason, not left running blind.
TEST(L7Capture, ProtocolPluginsStopWhenTheCaptureCannotStart) {
  NW_REQUIRE_ROOT();
  TempDir dir;
  write_file(dir.file("c.toml"),
             "[netwatcher]\nhook_override = { \"l7.egress\" = \"none\" }\n"
             "[plugins.http]\n[plugins.nic]\n" +
                 sink_config_json(dir.file("events.jsonl")));
  auto out = run(std::string(NW_BINARY) + " --config " + dir.file("c.toml") + " --plugin-dir " +
                 NW_PLUGIN_DIR + " --duration 0.3 2>&1");
  EXPECT_EQ(out.exit_code, 0) << out.output;
  EXPECT_NE(out.output.find("plugin 'l7' disabled"), std::string::npos) << out.output;
  EXPECT_NE(out.output.find("plugin 'http' disabled: the shared L7 capture (plugin 'l7') is not "
                            "running"),
            std::string::npos)
      << out.output;
  EXPECT_NE(out.output.find("running: 1 plugin(s)"), std::string::npos) << out.output;
}

}  // namespace
