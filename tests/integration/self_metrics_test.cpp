// netwatcher's own cost and pipeline, as an operator reads them: kernel
// run-time statistics per program, decoded records, ring-buffer fill, sink
// queues, memory, and a running agent's ns per run in --check / --list-plugins.
#include <gtest/gtest.h>

#include <chrono>
#include <regex>
#include <thread>

#include "harness.hpp"

using namespace nwtest;

namespace {

constexpr int kPromPort = 41488;
constexpr std::uint64_t kRingBytes = 524288;
constexpr std::uint64_t kQueue = 4096;

class SelfMetrics : public ::testing::Test {
 protected:
  void SetUp() override {
    NW_REQUIRE_ROOT();
    hosts_ = std::make_unique<TwoHosts>();
    server_ = std::make_unique<TcpServer>(TwoHosts::kServer, std::vector<int>{5000}, dir_);
  }
  std::string config() const {
    // Every run counted: the default samples 1 s in 30, which the traffic
    // below could miss.
    return "snapshot_interval = 0.5\nbpf_stats = \"always\"\nring_buffer_size = " +
           std::to_string(kRingBytes) + "\nsink_queue_size = " + std::to_string(kQueue) +
           "\n[plugins.tcp]\nstates = true\n" + sink_config_json(dir_.file("events.jsonl")) +
           "[[sinks]]\ntype = \"prometheus\"\nlisten = \"127.0.0.1:" + std::to_string(kPromPort) +
           "\"\n";
  }
  TempDir dir_;
  std::unique_ptr<TwoHosts> hosts_;
  std::unique_ptr<TcpServer> server_;
};

std::vector<PromSample> samples_of(const PromText& text, const std::string& name) {
  std::vector<PromSample> out;
  for (const auto& s : text.samples)
    if (s.name == name) out.push_back(s);
  return out;
}

}  // namespace

TEST_F(SelfMetrics, TheAgentReportsWhatItsProgramsAndPipelineCost) {
  Netwatcher nw(dir_, config());
  auto clients = run_client(TwoHosts::kClient, "10.77.0.2", 5000, {1000, 20000, 300000});
  ASSERT_EQ(clients.size(), 3u);
  std::this_thread::sleep_for(std::chrono::milliseconds(1200));
  PromText m = parse_prometheus(http_get(kPromPort, "/metrics"));

  // Every attached tcp program has both counters; those that ran report a
  // plausible time per run.
  auto runs = samples_of(m, "netwatcher_bpf_program_runs_total");
  int ran = 0;
  for (const auto& r : runs) {
    if (r.labels.at("plugin") != "tcp") continue;
    auto seconds = m.value("netwatcher_bpf_program_run_seconds_total",
                           {{"plugin", "tcp"}, {"program", r.labels.at("program")}});
    ASSERT_TRUE(seconds.has_value()) << r.labels.at("program");
    if (r.value == 0) continue;
    ++ran;
    const double ns_per_run = *seconds * 1e9 / r.value;
    EXPECT_GT(ns_per_run, 1) << r.labels.at("program");
    EXPECT_LT(ns_per_run, 1e6) << r.labels.at("program");
  }
  // inet_sock_set_state ran for every transition of three connections (at
  // least five on the client side alone), tcp_probe for their segments.
  EXPECT_GE(ran, 2);
  EXPECT_GE(m.value("netwatcher_bpf_program_runs_total",
                    {{"plugin", "tcp"}, {"program", "set_state_btf"}})
                .value_or(0),
            3 * 5);

  EXPECT_EQ(m.value("netwatcher_ring_buffer_size_bytes", {{"plugin", "tcp"}}),
            static_cast<double>(kRingBytes));
  for (const char* name :
       {"netwatcher_ring_buffer_fill_ratio", "netwatcher_ring_buffer_peak_fill_ratio"}) {
    auto fill = m.value(name, {{"plugin", "tcp"}});
    ASSERT_TRUE(fill.has_value()) << name;
    EXPECT_GE(*fill, 0);
    EXPECT_LE(*fill, 1);
  }
  EXPECT_EQ(m.value("netwatcher_sink_queue_capacity", {{"sink", "json"}}),
            static_cast<double>(kQueue));
  EXPECT_TRUE(m.value("netwatcher_records_decoded_per_second", {{"plugin", "tcp"}}).has_value());
  const double pool = m.value("netwatcher_event_pool_events").value_or(-1);
  EXPECT_GT(pool, 0);
  EXPECT_LE(pool, 2 * kQueue + 2048);  // bounded by the queues, not by the traffic
  const double rss = m.value("process_resident_memory_bytes").value_or(0);
  EXPECT_GT(rss, 1 << 20);
  EXPECT_LT(rss, 200 << 20);
  EXPECT_GT(m.value("process_cpu_seconds_total").value_or(0), 0);
  const double records =
      m.value("netwatcher_records_decoded_total", {{"plugin", "tcp"}}).value_or(0);

  ASSERT_EQ(nw.stop(), 0) << nw.log();
  auto all = parse_json_lines(read_file(dir_.file("events.jsonl")));
  // Each tcp_state event is one ring-buffer record.
  auto states = events_of(all, "tcp_state");
  EXPECT_GE(states.size(), 3u * 6);
  EXPECT_GE(records, static_cast<double>(states.size()) - 6);  // the scrape raced the last ones
  // The shutdown summary accounts for every line the JSON sink wrote.
  std::smatch written;
  const std::string log = nw.log();
  ASSERT_TRUE(std::regex_search(log, written, std::regex("sink 'json': (\\d+) written, 0 dropped")))
      << log;
  EXPECT_EQ(std::stoull(written[1]), all.size());
  EXPECT_NE(log.find("plugin 'tcp': "), std::string::npos);
}

TEST_F(SelfMetrics, CheckAndListShowEveryRunningAgentsNanosecondsPerRun) {
  Netwatcher nw(dir_, config());
  // A second agent on the host holds the same code; it must not hide the first.
  TempDir other_dir;
  Netwatcher other(other_dir, "bpf_stats = \"always\"\n" +
                                  tcp_config(other_dir.file("events.jsonl"), "states = true\n"));
  run_client(TwoHosts::kClient, "10.77.0.2", 5000, {5000, 5000});
  const std::string pid = std::to_string(nw.pid());
  const std::string other_pid = std::to_string(other.pid());
  const auto running_in = [](const std::string& p) {
    return "running in pid " + p + ": [1-9][0-9]* runs, [0-9]+ ns/run";
  };

  auto check = run(std::string(NW_BINARY) + " --check --config " + nw.config_path() + " 2>&1");
  EXPECT_EQ(check.exit_code, 0) << check.output;
  // Under the program that handled the state changes, matched by its code:
  // one line per agent.
  for (const auto& p : {pid, other_pid})
    EXPECT_TRUE(std::regex_search(
        check.output, std::regex("set_state_btf \\[tp_btf/inet_sock_set_state\\]: attached\\n"
                                 "( +running in pid [0-9]+: .*\\n)* +" +
                                 running_in(p))))
        << p << "\n"
        << check.output;

  auto list =
      run(std::string(NW_BINARY) + " --list-plugins --config " + nw.config_path() + " 2>&1");
  EXPECT_EQ(list.exit_code, 0) << list.output;
  for (const auto& p : {pid, other_pid}) {
    EXPECT_TRUE(std::regex_search(list.output, std::regex(running_in(p)))) << list.output;
    EXPECT_NE(list.output.find("set_state_btf: running in pid " + p), std::string::npos)
        << list.output;
  }
  ASSERT_EQ(other.stop(), 0) << other.log();
  ASSERT_EQ(nw.stop(), 0) << nw.log();
}
