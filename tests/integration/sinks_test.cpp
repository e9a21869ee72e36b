// What the sink bus promises operators, end to end with the real agent: each
// sink gets exactly the plugins its `plugins = [...]` names, stdout's JSON is
// the JSON sink's, and the node_exporter textfile is rewritten while the
// agent runs.
#include <gtest/gtest.h>

#include <filesystem>
#include <map>
#include <set>
#include <sstream>

#include "harness.hpp"

using namespace nwtest;

namespace {

constexpr int kPort = 5000;

class Sinks : public ::testing::Test {
 protected:
  void SetUp() override {
    NW_REQUIRE_ROOT();
    hosts_ = std::make_unique<TwoHosts>();
    server_ = std::make_unique<TcpServer>(TwoHosts::kServer, std::vector<int>{kPort}, dir_);
  }
  // Waits until a JSON Lines file holds both closes of each client.
  bool wait_for_closes(const std::string& path, std::size_t clients) {
    return wait_until(
        [&] { return events_of(read_json_lines(path), "tcp_close").size() == 2 * clients; });
  }
  TempDir dir_;
  std::unique_ptr<TwoHosts> hosts_;
  std::unique_ptr<TcpServer> server_;
};

std::set<std::string> plugins_in(const std::vector<Json>& events) {
  std::set<std::string> out;
  for (const auto& e : events) out.insert(e["plugin"].str());
  return out;
}

// The JSON lines an agent printed on stdout, between its log lines.
std::vector<std::string> json_lines_of(const std::string& output) {
  std::vector<std::string> out;
  std::istringstream in(output);
  for (std::string line; std::getline(in, line);)
    if (!line.empty() && line.front() == '{') out.push_back(line);
  return out;
}

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}

}  // namespace

TEST_F(Sinks, EachSinkGetsOnlyThePluginsItNames) {
  const std::string tcp_only = dir_.file("tcp.jsonl"), nic_only = dir_.file("nic.jsonl"),
                    everything = dir_.file("all.jsonl");
  Netwatcher nw(dir_,
                "snapshot_interval = 0.5\n[plugins.tcp]\n[plugins.nic]\n"
                "[[sinks]]\ntype = \"json\"\npath = \"" +
                    tcp_only +
                    "\"\nplugins = [\"tcp\"]\n"
                    "[[sinks]]\ntype = \"json\"\npath = \"" +
                    nic_only +
                    "\"\nplugins = [\"nic\"]\n"
                    "[[sinks]]\ntype = \"json\"\npath = \"" +
                    everything + "\"\n");
  auto clients = run_client(TwoHosts::kClient, "10.77.0.2", kPort, {1000, 2000});
  ASSERT_EQ(clients.size(), 2u);
  EXPECT_TRUE(wait_for_closes(tcp_only, clients.size())) << nw.log();
  EXPECT_TRUE(wait_until([&] { return !read_json_lines(nic_only).empty(); })) << nw.log();
  ASSERT_EQ(nw.stop(), 0) << nw.log();

  const auto tcp = parse_json_lines(read_file(tcp_only));
  const auto nic = parse_json_lines(read_file(nic_only));
  const auto all = parse_json_lines(read_file(everything));
  EXPECT_EQ(plugins_in(tcp), std::set<std::string>{"tcp"});
  EXPECT_EQ(plugins_in(nic), std::set<std::string>{"nic"});
  EXPECT_EQ(plugins_in(all), (std::set<std::string>{"nic", "tcp"}));
  // Routing splits, never loses or repeats: the unrouted sink saw the sum.
  EXPECT_EQ(all.size(), tcp.size() + nic.size());
  EXPECT_EQ(events_of(all, "tcp_close").size(), events_of(tcp, "tcp_close").size());
  EXPECT_EQ(events_of(all, "nic_throughput").size(), nic.size());
  // Sinks of one type are told apart by their position among them.
  const std::string log = nw.log();
  for (const std::string& sink : {"sink 'json': " + std::to_string(tcp.size()) + " written",
                                  "sink 'json#1': " + std::to_string(nic.size()) + " written",
                                  "sink 'json#2': " + std::to_string(all.size()) + " written"})
    EXPECT_NE(log.find(sink), std::string::npos) << sink << "\n" << log;
}

TEST_F(Sinks, StdoutJsonPrintsTheLinesTheJsonSinkWrites) {
  const std::string file = dir_.file("events.jsonl");
  Netwatcher nw(dir_,
                "[plugins.tcp]\nstates = true\n[[sinks]]\ntype = \"stdout\"\nformat = "
                "\"json\"\n" +
                    sink_config_json(file));
  auto clients = run_client(TwoHosts::kClient, "10.77.0.2", kPort, {1000, 2000, 3000});
  ASSERT_EQ(clients.size(), 3u);
  EXPECT_TRUE(wait_for_closes(file, clients.size())) << nw.log();
  ASSERT_EQ(nw.stop(), 0) << nw.log();

  const auto printed = json_lines_of(nw.log());
  const auto written = lines_of(read_file(file));
  ASSERT_GE(written.size(), 3u * 2 * 2) << "opens and closes of both sides at least";
  EXPECT_EQ(printed, written);
  for (const auto& line : printed) {
    Json event = parse_json(line);
    EXPECT_EQ(event["plugin"].str(), "tcp") << line;
    EXPECT_FALSE(event["event"].str().empty()) << line;
  }
}

TEST_F(Sinks, TheTextfileIsRewrittenEveryIntervalWithCurrentCounts) {
  const std::string textfile = dir_.file("netwatcher.prom");
  Netwatcher nw(dir_,
                "[plugins.tcp]\n[[sinks]]\ntype = \"prometheus\"\nlisten = \"\"\n"
                "textfile = \"" +
                    textfile + "\"\ntextfile_interval = 0.3\n");
  const std::map<std::string, std::string> client{{"direction", "client"}};
  auto opened = [&] {
    return parse_prometheus(read_file(textfile))
        .value("netwatcher_tcp_connections_opened_total", client)
        .value_or(0);  // no series before the first connection
  };
  ASSERT_TRUE(wait_until([&] {
    return read_file(textfile).find("# TYPE netwatcher_tcp_connections_opened_total counter") !=
           std::string::npos;
  })) << nw.log();
  const double before = opened();

  auto clients = run_client(TwoHosts::kClient, "10.77.0.2", kPort, {100, 200, 300, 400});
  ASSERT_EQ(clients.size(), 4u);
  EXPECT_TRUE(wait_until([&] { return opened() == before + 4; }))
      << "the running agent's textfile shows the new connections\n"
      << read_file(textfile);

  // Rewritten again and again, never left half-written or beside a temporary.
  const auto first = std::filesystem::last_write_time(textfile);
  EXPECT_TRUE(wait_until([&] { return std::filesystem::last_write_time(textfile) != first; }));
  for (const auto& entry : std::filesystem::directory_iterator(dir_.path()))
    EXPECT_EQ(entry.path().string().find(".prom."), std::string::npos) << entry.path();
  ASSERT_EQ(nw.stop(), 0) << nw.log();
}
