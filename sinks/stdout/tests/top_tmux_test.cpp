// format = "top" on a real terminal: netwatcher runs in a tmux pane while
// known traffic crosses two namespaces, and the pane (tmux capture-pane) must
// show the kernel's own count of dropped datagrams, the bytes a connection
// sent, and the echo round trips ping made, drawn as bars.
#include <gtest/gtest.h>

#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "harness.hpp"

using namespace nwtest;

namespace {

constexpr const char* kSession = "nwtest-top";
constexpr int kClosedPort = 41478;  // nothing listens: each datagram is a NO_SOCKET drop
constexpr int kDatagrams = 30;
constexpr int kPings = 5;
constexpr int kTcpPort = 41483;
constexpr int kTcpBytes = 900;  // shown as "900B": exact

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

std::string pane() {
  return run(std::string("tmux capture-pane -p -t ") + kSession + " 2>&1").output;
}

// The RATE/s and TOTAL cells of the row that ends in `labels` under `family`.
struct Row {
  std::string rate, total;
};
std::optional<Row> counter_row(const std::string& screen, const std::string& family,
                               const std::string& labels) {
  const auto lines = lines_of(screen);
  for (std::size_t i = 0; i < lines.size(); ++i) {
    if (lines[i] != family) continue;
    for (std::size_t j = i + 1; j < lines.size() && !lines[j].empty() && lines[j][0] == ' '; ++j) {
      std::istringstream cells(lines[j]);
      Row row;
      std::string rest;
      cells >> row.rate >> row.total;
      std::getline(cells, rest);
      if (rest == "  " + labels) return row;
    }
  }
  return std::nullopt;
}

// The bucket counts drawn under the histogram whose head starts with `head`.
std::vector<std::uint64_t> bars(const std::string& screen, const std::string& head) {
  std::vector<std::uint64_t> counts;
  const auto lines = lines_of(screen);
  static const std::regex bar(R"(^ +\S.* : (\d+) +\|\**\s*\|$)");
  for (std::size_t i = 0; i < lines.size(); ++i) {
    if (lines[i].rfind(head, 0) != 0) continue;
    std::smatch m;
    for (std::size_t j = i + 2; j < lines.size() && std::regex_match(lines[j], m, bar); ++j)
      counts.push_back(std::stoull(m[1]));
  }
  return counts;
}

class TopPane : public ::testing::Test {
 protected:
  void SetUp() override {
    NW_REQUIRE_ROOT();
    run(std::string("tmux kill-session -t ") + kSession + " 2>/dev/null");
  }
  // Closing the pane would only hang up its terminal, which netwatcher takes
  // for SIGHUP (reopen the sinks): it is stopped first, found by its config.
  void TearDown() override {
    const std::string config = dir_.file("netwatcher.toml");
    run("pkill -TERM -f -- '--confi[g] " + config + "'");  // [g]: not this shell
    EXPECT_TRUE(
        wait_until([&] { return run("pgrep -f -- '--confi[g] " + config + "'").exit_code != 0; },
                   std::chrono::seconds(10)))
        << "netwatcher did not stop";
    run(std::string("tmux kill-session -t ") + kSession + " 2>/dev/null");
  }
  TempDir dir_;
};

TEST_F(TopPane, APaneShowsTheKernelsDropCountAConnectionsBytesAndPingsAsBars) {
  TwoHosts hosts;
  write_file(dir_.file("netwatcher.toml"),
             "[netwatcher]\nplugin_dirs = [\"" + std::string(NW_PLUGIN_DIR) + "\"]\n" +
                 hook_override_line() +
                 "snapshot_interval = 0.5\n"
                 "[filter]\nremote_addresses = [\"10.77.0.0/24\"]\n"
                 "[plugins.tcp]\nper_connection_metrics = true\n"
                 "[plugins.drop]\n[plugins.icmp]\n"
                 "[[sinks]]\ntype = \"stdout\"\nformat = \"top\"\ntop_interval = 1.5\n"
                 "top_rows = 20\n");
  const std::string log = dir_.file("netwatcher.log"), status = dir_.file("status");
  // Wide and tall enough that no line of the frame is cut.
  auto started = run(std::string("tmux new-session -d -s ") + kSession + " -x 200 -y 120 \"" +
                     NW_BINARY + " --duration 60 --config " + dir_.file("netwatcher.toml") + " 2>" +
                     log + "; echo exit=\\$? >" + status + "\" 2>&1");
  ASSERT_EQ(started.exit_code, 0) << started.output;
  ASSERT_TRUE(wait_until([&] { return read_file(log).find(" running: ") != std::string::npos; },
                         std::chrono::seconds(15)))
      << read_file(log);

  TcpServer server(TwoHosts::kServer, {kTcpPort}, dir_);
  HeldConnection held(TwoHosts::kClient, "10.77.0.2", kTcpPort, kTcpBytes, 15, dir_);
  const std::string connection = "saddr=10.77.0.1 sport=" + std::to_string(held.info().sport) +
                                 " daddr=10.77.0.2 dport=" + std::to_string(kTcpPort);
  const std::uint64_t no_ports_before = nstat(TwoHosts::kServer, "UdpNoPorts");
  send_udp(TwoHosts::kClient, "10.77.0.2", kClosedPort, kDatagrams, 40);
  auto ping = run("ip netns exec " + std::string(TwoHosts::kClient) + " ping -n -q -c " +
                  std::to_string(kPings) + " -i 0.2 10.77.0.2 2>&1");
  ASSERT_EQ(ping.exit_code, 0) << ping.output;
  ASSERT_NE(ping.output.find(std::to_string(kPings) + " received"), std::string::npos)
      << ping.output;
  const std::uint64_t dropped = nstat(TwoHosts::kServer, "UdpNoPorts") - no_ports_before;
  ASSERT_EQ(dropped, static_cast<std::uint64_t>(kDatagrams));

  // Once the traffic is over, a frame shows the totals and a rate of 0.
  std::string screen;
  const bool settled = wait_until(
      [&] {
        screen = pane();
        auto row = counter_row(screen, "netwatcher_drops_total", "reason=NO_SOCKET protocol=udp");
        auto sent = counter_row(screen, "netwatcher_tcp_connection_acked_bytes_total", connection);
        return row && row->total == std::to_string(dropped) && row->rate == "0" && sent &&
               sent->total == std::to_string(kTcpBytes) + "B" && sent->rate == "0B" &&
               screen.find("netwatcher_icmp_echo_rtt_seconds family=ipv4  count " +
                           std::to_string(kPings) + " (+0)") != std::string::npos;
      },
      std::chrono::seconds(15));
  ASSERT_TRUE(settled) << screen << read_file(log);
  EXPECT_NE(screen.find("netwatcher top  "), std::string::npos) << screen;
  // Every ICMP message of the pings, by type, with what the kernel sent.
  auto requests = counter_row(screen, "netwatcher_icmp_messages_total",
                              "family=ipv4 direction=tx type=echo_request");
  ASSERT_TRUE(requests) << screen;
  EXPECT_EQ(requests->total, std::to_string(kPings));
  // The bars count each round trip once.
  const auto counts = bars(screen, "netwatcher_icmp_echo_rtt_seconds family=ipv4  count ");
  ASSERT_FALSE(counts.empty()) << screen;
  std::uint64_t drawn = 0;
  for (auto c : counts) drawn += c;
  EXPECT_EQ(drawn, static_cast<std::uint64_t>(kPings)) << screen;
  EXPECT_NE(screen.find("range : count      distribution"), std::string::npos) << screen;

  // Ctrl-C in the pane stops it like any other run.
  run(std::string("tmux send-keys -t ") + kSession + " C-c");
  ASSERT_TRUE(wait_until([&] { return read_file(status).find("exit=") != std::string::npos; },
                         std::chrono::seconds(15)))
      << read_file(log);
  EXPECT_EQ(read_file(status), "exit=0\n") << read_file(log);
}

// A pane too small for the frame shows what fits and says what it left out.
TEST_F(TopPane, ASmallPaneIsCutAndSaysSo) {
  write_file(dir_.file("netwatcher.toml"),
             "[netwatcher]\nplugin_dirs = [\"" + std::string(NW_PLUGIN_DIR) + "\"]\n" +
                 hook_override_line() +
                 "[plugins.drop]\n[plugins.icmp]\n[[sinks]]\ntype = \"stdout\"\nformat = "
                 "\"top\"\ntop_interval = 1.5\n");
  const std::string log = dir_.file("netwatcher.log");
  auto started =
      run(std::string("tmux new-session -d -s ") + kSession + " -x 40 -y 6 \"" + NW_BINARY +
          " --duration 60 --config " + dir_.file("netwatcher.toml") + " 2>" + log + "\" 2>&1");
  ASSERT_EQ(started.exit_code, 0) << started.output;
  std::string screen;
  ASSERT_TRUE(wait_until(
      [&] {
        screen = pane();
        return screen.find(" more lines (a") != std::string::npos;
      },
      std::chrono::seconds(15)))
      << screen << read_file(log);
  for (const auto& line : lines_of(screen)) EXPECT_LE(line.size(), 40u) << line;
  EXPECT_EQ(screen.rfind("netwatcher top  ", 0), 0u) << screen;
}

}  // namespace
