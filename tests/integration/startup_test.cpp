// Start-up and shutdown as a scraper and an attacker see them: /metrics
// answered well-formed while the agent starts and stops, complete and current
// from the first scrape, and the capabilities the agent keeps once attached.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <set>
#include <sstream>
#include <thread>

#include <gtest/gtest.h>

#include "harness.hpp"

using namespace nwtest;

namespace {

constexpr int kPromPort = 41487;
constexpr int kClosedUdpPort = 41486;  // nothing listens: each datagram is a NO_SOCKET drop

class Startup : public ::testing::Test {
 protected:
  void SetUp() override { NW_REQUIRE_ROOT(); }
  TempDir dir_;
};

// Every plugin that runs on loopback alone, so start-up has the most to do.
std::string all_plugins_config(const std::string& netwatcher_keys = "") {
  return netwatcher_keys +
         "[anomaly]\nenabled = true\n"
         "[plugins.tcp]\n[plugins.drop]\n[plugins.udp]\n[plugins.icmp]\n[plugins.nic]\n"
         "[plugins.netfilter]\n[plugins.http]\n"
         "[[sinks]]\ntype = \"prometheus\"\nlisten = \"127.0.0.1:" +
         std::to_string(kPromPort) + "\"\n";
}

struct Scrape {
  bool answered = false;  // a response came, well-formed or not
  std::string error;      // empty when it is a well-formed 200 with valid text
  std::string body;
};

// GET /metrics with timeouts; refused or closed without a byte = not answered.
Scrape scrape(int port) {
  Scrape out;
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  timeval timeout{5, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof timeout);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<std::uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    close(fd);
    return out;
  }
  const std::string request = "GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n";
  send(fd, request.data(), request.size(), MSG_NOSIGNAL);
  std::string response;
  char buf[16384];
  ssize_t n;
  while ((n = recv(fd, buf, sizeof buf, 0)) > 0) response.append(buf, static_cast<std::size_t>(n));
  const int err = n < 0 ? errno : 0;
  close(fd);
  if (err == EAGAIN || err == EWOULDBLOCK) {
    out.answered = true;
    out.error = "no complete answer within 5 s (" + std::to_string(response.size()) + " bytes)";
    return out;
  }
  if (response.empty()) return out;  // closed unanswered: the agent was exiting
  out.answered = true;
  const auto head_end = response.find("\r\n\r\n");
  if (response.rfind("HTTP/1.1 200 OK\r\n", 0) != 0 || head_end == std::string::npos) {
    out.error = "bad response head: " + response.substr(0, 200);
    return out;
  }
  const std::string head = response.substr(0, head_end);
  out.body = response.substr(head_end + 4);
  const auto length_at = head.find("Content-Length: ");
  if (length_at == std::string::npos ||
      std::stoull(head.substr(length_at + 16)) != out.body.size()) {
    out.error = "body of " + std::to_string(out.body.size()) + " bytes does not match: " + head;
    return out;
  }
  try {
    parse_prometheus(out.body);
  } catch (const std::exception& e) {
    out.error = e.what();
  }
  return out;
}

// Scrapes as fast as answers come, from its own thread, until destroyed.
class Scraper {
 public:
  explicit Scraper(int port)
      : thread_([this, port] {
          while (!stop_.load()) {
            auto started = std::chrono::steady_clock::now();
            Scrape s = scrape(port);
            const double seconds =
                std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
            std::lock_guard lock(mutex_);
            if (!s.answered) {
              ++unanswered_;
              // Nothing listens (yet): do not spin on refused connections.
              std::this_thread::sleep_for(std::chrono::milliseconds(1));
              continue;
            }
            ++answered_;
            slowest_ = std::max(slowest_, seconds);
            if (!s.error.empty() && errors_.size() < 5) errors_.push_back(s.error);
          }
        }) {}
  ~Scraper() {
    stop_.store(true);
    thread_.join();
  }
  std::uint64_t answered() const {
    std::lock_guard lock(mutex_);
    return answered_;
  }
  std::vector<std::string> errors() const {
    std::lock_guard lock(mutex_);
    return errors_;
  }
  double slowest() const {
    std::lock_guard lock(mutex_);
    return slowest_;
  }

 private:
  std::atomic<bool> stop_{false};
  mutable std::mutex mutex_;
  std::uint64_t answered_ = 0, unanswered_ = 0;
  double slowest_ = 0;
  std::vector<std::string> errors_;
  std::thread thread_;
};

// The families of netwatcher itself (docs/metrics.md), with -L's.
const std::set<std::string> kOwnFamilies = {
    "netwatcher_events_total",
    "netwatcher_events_lost_total",
    "netwatcher_events_suppressed_total",
    "netwatcher_events_filtered_total",
    "netwatcher_decode_errors_total",
    "netwatcher_sink_events_total",
    "netwatcher_sink_dropped_total",
    "netwatcher_sink_errors_total",
    "netwatcher_sink_queue_depth",
    "netwatcher_sink_queue_capacity",
    "netwatcher_records_decoded_total",
    "netwatcher_records_decoded_per_second",
    "netwatcher_ring_buffer_size_bytes",
    "netwatcher_ring_buffer_fill_ratio",
    "netwatcher_ring_buffer_peak_fill_ratio",
    "netwatcher_event_pool_events",
    "netwatcher_bpf_program_runs_total",
    "netwatcher_bpf_program_run_seconds_total",
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
    "netwatcher_plugin_up",
    "netwatcher_plugin_hook_attached",
    "netwatcher_build_info",
    "netwatcher_latency_anomalies_total",
    "netwatcher_prometheus_series_refused_total",
};

// Every family the plugins declare, as --list-plugins prints them.
std::set<std::string> plugin_families(const std::string& config_path) {
  auto list = run(std::string(NW_BINARY) + " --list-plugins --config " + config_path + " 2>&1");
  EXPECT_EQ(list.exit_code, 0) << list.output;
  std::set<std::string> names;
  std::stringstream lines(list.output);
  std::string line;
  bool in_metrics = false;
  while (std::getline(lines, line)) {
    if (line == "  metrics:") {
      in_metrics = true;
    } else if (in_metrics && line.rfind("    ", 0) == 0) {
      names.insert(line.substr(4, line.find(' ', 4) - 4));
    } else {
      in_metrics = false;
    }
  }
  return names;
}

void send_udp_to_closed_port(int count) {
  int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(kClosedUdpPort);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  const char payload[32] = "netwatcher start-up test";
  for (int i = 0; i < count; ++i)
    sendto(fd, payload, sizeof payload, 0, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  close(fd);
}

std::string thread_sanitizer_reports(const std::string& log);

// An established TCP connection on loopback for as long as it lives: one row
// in the tcp plugin's connection table.
class LoopbackConnection {
 public:
  LoopbackConnection() {
    listener_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t length = sizeof addr;
    bind(listener_, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
    listen(listener_, 1);
    getsockname(listener_, reinterpret_cast<sockaddr*>(&addr), &length);
    client_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    connect(client_, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
    server_ = accept(listener_, nullptr, nullptr);
  }
  ~LoopbackConnection() {
    for (int fd : {client_, server_, listener_})
      if (fd >= 0) close(fd);
  }

 private:
  int listener_ = -1, client_ = -1, server_ = -1;
};

// What /proc/<pid>/task/<tid>/status says about one thread's privileges.
struct ThreadPrivileges {
  std::string tid, name;
  std::uint64_t effective = 0, permitted = 0, bounding = 0, inheritable = 0, ambient = 0,
                blocked = 0;
  int no_new_privs = -1;
};

ThreadPrivileges read_privileges(const std::string& status_path) {
  ThreadPrivileges t;
  std::stringstream lines(read_file(status_path));
  std::string line;
  while (std::getline(lines, line)) {
    const auto colon = line.find(':');
    if (colon == std::string::npos) continue;
    const std::string key = line.substr(0, colon);
    std::string value = line.substr(colon + 1);
    value.erase(0, value.find_first_not_of(" \t"));
    if (key == "Name") t.name = value;
    if (key == "CapEff") t.effective = std::stoull(value, nullptr, 16);
    if (key == "CapPrm") t.permitted = std::stoull(value, nullptr, 16);
    if (key == "CapBnd") t.bounding = std::stoull(value, nullptr, 16);
    if (key == "CapInh") t.inheritable = std::stoull(value, nullptr, 16);
    if (key == "CapAmb") t.ambient = std::stoull(value, nullptr, 16);
    if (key == "SigBlk") t.blocked = std::stoull(value, nullptr, 16);
    if (key == "NoNewPrivs") t.no_new_privs = std::stoi(value);
  }
  return t;
}

constexpr std::uint64_t bit(int capability) {
  return std::uint64_t{1} << capability;
}
constexpr int kCapNetAdmin = 12, kCapSysPtrace = 19, kCapSysAdmin = 21, kCapBpf = 39;

#if defined(__SANITIZE_THREAD__)
constexpr bool kThreadSanitizer = true;
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
constexpr bool kThreadSanitizer = true;
#else
constexpr bool kThreadSanitizer = false;
#endif
#else
constexpr bool kThreadSanitizer = false;
#endif

// Starts the agent with `netwatcher_keys`, and checks that its main thread
// (what /proc/<pid>/status shows) and every other thread keep exactly
// `expected` of what this (root) process may pass on.
void expect_capabilities(const TempDir& dir, const std::string& netwatcher_keys,
                         std::uint64_t expected) {
  const std::uint64_t ours = read_privileges("/proc/self/status").bounding;
  expected &= ours;
  Netwatcher nw(dir, "snapshot_interval = 0.5\n" + netwatcher_keys +
                         "[plugins.tcp]\n[plugins.netfilter]\n[[sinks]]\ntype = \"prometheus\"\n"
                         "listen = \"127.0.0.1:" +
                         std::to_string(kPromPort) + "\"\n" +
                         sink_config_json(dir.file("events.jsonl")));
  const std::string proc = "/proc/" + std::to_string(nw.pid());
  const ThreadPrivileges main = read_privileges(proc + "/status");
  EXPECT_EQ(main.effective, expected) << std::hex << main.effective;
  EXPECT_EQ(main.permitted, expected) << std::hex << main.permitted;
  EXPECT_EQ(main.bounding, expected) << std::hex << main.bounding;
  EXPECT_EQ(main.inheritable, 0u);
  EXPECT_EQ(main.ambient, 0u);
  EXPECT_EQ(main.no_new_privs, 1);
  int threads = 0;
  for (const auto& task : std::filesystem::directory_iterator(proc + "/task")) {
    const ThreadPrivileges t = read_privileges(task.path() / "status");
    // ThreadSanitizer's own thread blocks every signal, so the agent cannot
    // reach it (and says so in its log).
    constexpr std::uint64_t kSigterm = std::uint64_t{1} << (15 - 1);
    if (kThreadSanitizer && (t.blocked & kSigterm)) continue;
    ++threads;
    EXPECT_EQ(t.effective, expected) << "thread " << task.path().filename() << " " << t.name;
    EXPECT_EQ(t.permitted, expected) << "thread " << task.path().filename();
    EXPECT_EQ(t.bounding, expected) << "thread " << task.path().filename();
    EXPECT_EQ(t.inheritable, 0u) << "thread " << task.path().filename();
    EXPECT_EQ(t.no_new_privs, 1) << "thread " << task.path().filename();
  }
  // The poller, the Prometheus endpoint and one worker per sink at least.
  EXPECT_GE(threads, 4);
  // It still works: snapshots (BPF iterators) and scrapes after the drop.
  LoopbackConnection open_connection;
  std::this_thread::sleep_for(std::chrono::milliseconds(1200));
  Scrape s = scrape(kPromPort);
  EXPECT_EQ(s.error, "");
  EXPECT_TRUE(s.answered);
  ASSERT_EQ(nw.stop(), 0) << nw.log();
  EXPECT_EQ(thread_sanitizer_reports(nw.log()), "");
  auto events = parse_json_lines(read_file(dir.file("events.jsonl")));
  EXPECT_FALSE(events_of(events, "tcp_conn").empty()) << nw.log();
}

std::string thread_sanitizer_reports(const std::string& log) {
  const auto at = log.find("WARNING: ThreadSanitizer");
  return at == std::string::npos ? "" : log.substr(at, 4000);
}

}  // namespace

TEST_F(Startup, EveryScrapeDuringStartAndStopIsWellFormedAndTheFirstIsComplete) {
  hold_machine_lock();  // before the scraper: the port may be another suite's otherwise
  const std::string config = all_plugins_config("snapshot_interval = 3600\n");
  std::set<std::string> declared = kOwnFamilies;
  {
    write_file(dir_.file("list.toml"),
               "[netwatcher]\nplugin_dirs = [\"" + std::string(NW_PLUGIN_DIR) + "\"]\n" + config);
    for (const auto& name : plugin_families(dir_.file("list.toml"))) declared.insert(name);
  }
  ASSERT_GT(declared.size(), kOwnFamilies.size() + 30) << "--list-plugins showed few families";

  Scraper scraper(kPromPort);
  std::uint64_t answered_while_running = 0;
  constexpr int kCycles = 4;
  for (int cycle = 0; cycle < kCycles; ++cycle) {
    // A directory each: the harness waits for "running" in a fresh log.
    TempDir cycle_dir;
    Netwatcher nw(cycle_dir, config);
    // The first scrape after start-up: every declared family, and the series
    // that exist from the start, although no snapshot_interval has passed.
    Scrape first = scrape(kPromPort);
    ASSERT_TRUE(first.answered) << "cycle " << cycle;
    ASSERT_EQ(first.error, "") << "cycle " << cycle;
    PromText m = parse_prometheus(first.body);
    for (const auto& family : declared) {
      ASSERT_TRUE(m.families.count(family)) << family << " missing, cycle " << cycle;
      EXPECT_FALSE(m.families.at(family).help.empty()) << family;
      EXPECT_FALSE(m.families.at(family).type.empty()) << family;
    }
    for (const char* plugin : {"tcp", "drop", "udp", "icmp", "nic", "netfilter", "http"})
      EXPECT_EQ(m.value("netwatcher_plugin_up", {{"plugin", plugin}}), 1.0) << plugin;
    EXPECT_EQ(m.value("netwatcher_sink_queue_capacity", {{"sink", "prometheus"}}), 16384.0);
    // Mirrored from BPF maps, which only collect() read before.
    EXPECT_TRUE(m.value("netwatcher_udp_datagrams_total", {{"direction", "tx"}}).has_value());
    EXPECT_TRUE(
        m.value("netwatcher_netfilter_packets_total", {{"hook", "input"}, {"family", "ipv4"}})
            .has_value());
    const std::uint64_t before = scraper.answered();
    std::this_thread::sleep_for(std::chrono::milliseconds(300 + 200 * cycle));
    answered_while_running += scraper.answered() - before;
    ASSERT_EQ(nw.stop(), 0) << nw.log();
    EXPECT_EQ(thread_sanitizer_reports(nw.log()), "");
    // A little time with nothing listening, so the next start begins cold.
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_EQ(scraper.errors(), std::vector<std::string>{});
  EXPECT_GT(answered_while_running, 10u) << "the scraper hardly got through";
  // A scrape waits at most 0.5 s for the poller; this is far beyond.
  EXPECT_LT(scraper.slowest(), 3.0);
}

TEST_F(Startup, AScrapeShowsTheKernelsCountersWithoutWaitingForASnapshot) {
  // No collect() for an hour: only a refresh at scrape time can show them.
  Netwatcher nw(dir_, all_plugins_config("snapshot_interval = 3600\n"));
  auto value = [](const std::string& name, const std::map<std::string, std::string>& labels) {
    Scrape s = scrape(kPromPort);
    if (!s.error.empty()) throw std::runtime_error(s.error);
    return parse_prometheus(s.body).value(name, labels).value_or(0);
  };
  const std::map<std::string, std::string> tx{{"direction", "tx"}};
  const std::map<std::string, std::string> no_socket{{"reason", "NO_SOCKET"}, {"protocol", "udp"}};
  const double sent_before = value("netwatcher_udp_datagrams_total", tx);
  const double dropped_before = value("netwatcher_drops_total", no_socket);
  constexpr int kDatagrams = 25;
  send_udp_to_closed_port(kDatagrams);
  // Within the refresher's 1 s cache, then some.
  const auto started = std::chrono::steady_clock::now();
  double sent = 0, dropped = 0;
  while (std::chrono::steady_clock::now() - started < std::chrono::seconds(3)) {
    sent = value("netwatcher_udp_datagrams_total", tx) - sent_before;
    dropped = value("netwatcher_drops_total", no_socket) - dropped_before;
    if (sent >= kDatagrams && dropped >= kDatagrams) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_GE(sent, kDatagrams);
  EXPECT_GE(dropped, kDatagrams);
  EXPECT_LT(std::chrono::steady_clock::now() - started, std::chrono::milliseconds(2500));
  ASSERT_EQ(nw.stop(), 0) << nw.log();
  EXPECT_EQ(thread_sanitizer_reports(nw.log()), "");
}

TEST_F(Startup, OnceAttachedTheAgentKeepsOnlySysAdminAndSysPtrace) {
  expect_capabilities(dir_, "", bit(kCapSysAdmin) | bit(kCapSysPtrace));
}

TEST_F(Startup, KeepCapabilitiesOverridesTheKeptSet) {
  {
    TempDir dir;
    expect_capabilities(dir, "keep_capabilities = [\"CAP_BPF\", \"CAP_NET_ADMIN\"]\n",
                        bit(kCapBpf) | bit(kCapNetAdmin));
  }
  {
    TempDir dir;
    expect_capabilities(dir, "keep_capabilities = []\n", 0);
  }
}

TEST_F(Startup, AnUnknownCapabilityStopsStartUpNamingTheKey) {
  write_file(dir_.file("c.toml"), "[netwatcher]\nplugin_dirs = [\"" + std::string(NW_PLUGIN_DIR) +
                                      "\"]\nkeep_capabilities = [\"CAP_SYS_ADMIN\", \"CAP_BFP\"]\n"
                                      "[plugins.tcp]\n");
  auto result = run(std::string(NW_BINARY) + " --config " + dir_.file("c.toml") + " 2>&1");
  EXPECT_EQ(result.exit_code, 2) << result.output;
  EXPECT_NE(result.output.find(
                ":3:39: key 'netwatcher.keep_capabilities' names unknown capability \"CAP_BFP\""),
            std::string::npos)
      << result.output;
}
