// Namespaces that appear after start-up are watched, and released when they
// go: the netfilter plugin's `namespaces` and the tcp plugin's
// `layer_namespaces`, both "*" by default, with the default capabilities
// (the links are made after the drop to keep_capabilities).
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <chrono>
#include <thread>

#include "harness.hpp"

using namespace nwtest;

namespace {

constexpr int kPromPort = 41486;
constexpr int kTcpPort = 5000;
constexpr const char* kLate = "nwt-late";      // added after start-up
constexpr const char* kAnchor = "nwt-anchor";  // holds the peer of a veth in kLate

bool eventually(const std::function<bool()>& condition, int timeout_ms) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (std::chrono::steady_clock::now() < deadline) {
    if (condition()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return condition();
}

// Deletes the test's namespaces before and after, whatever happens between.
struct Namespaces {
  Namespaces() {
    hold_machine_lock();
    clear();
  }
  ~Namespaces() { clear(); }
  static void clear() {
    run(std::string("ip netns del ") + kLate + " 2>/dev/null; ip netns del " + kAnchor +
        " 2>/dev/null");
  }
};

void must_run(const std::string& command) {
  auto r = run(command);
  if (r.exit_code != 0) throw std::runtime_error(command + " failed: " + r.output);
}

std::uint64_t inode_of(const std::string& path) {
  struct stat st {};
  if (stat(path.c_str(), &st) != 0) throw std::runtime_error("stat " + path);
  return st.st_ino;
}

std::string linked_line(const std::string& plugin, std::uint64_t inode, const std::string& path) {
  return "plugin '" + plugin + "': netfilter links in network namespace " + std::to_string(inode) +
         " (" + path + ")";
}

std::string released_line(const std::string& plugin, int links, std::uint64_t inode) {
  return "plugin '" + plugin + "': released " + std::to_string(links) +
         " netfilter links in network namespace " + std::to_string(inode) + " (";
}

double namespaces_gauge(const std::string& plugin) {
  auto metrics = parse_prometheus(http_get(kPromPort, "/metrics"));
  return metrics.value("netwatcher_netfilter_namespaces", {{"plugin", plugin}}).value_or(-1);
}

std::string prometheus_sink() {
  return "[[sinks]]\ntype = \"prometheus\"\nlisten = \"127.0.0.1:" + std::to_string(kPromPort) +
         "\"\n";
}

// Only the output hook: each ICMP packet of a loopback ping passes it once.
std::string netfilter_config(const std::string& events_path) {
  return "snapshot_interval = 0.2\n[plugins.netfilter]\nenabled = true\nevents = true\n"
         "max_events_per_second = 0\nhooks = [\"output\"]\n" +
         sink_config_json(events_path) + prometheus_sink();
}

// nf_hook events at the output hook of `netns` for ICMP on 127.0.0.1.
int loopback_icmp_events(const std::string& events_path, std::uint64_t netns) {
  int n = 0;
  for (const auto& e : events_of(parse_json_lines(read_file(events_path)), "nf_hook")) {
    const auto& f = e["fields"];
    if (f["netns"].u64() == netns && f["hook"].str() == "output" && f["protocol"].str() == "icmp" &&
        f["src_addr"].str() == "127.0.0.1" && f["dst_addr"].str() == "127.0.0.1")
      ++n;
  }
  return n;
}

TEST(NamespaceFollow, NetfilterLinksANamespaceAddedAfterStartAndFreesItWhenDeleted) {
  NW_REQUIRE_ROOT();
  Namespaces cleanup;
  must_run(std::string("ip netns add ") + kAnchor);
  TempDir dir;
  const std::string events = dir.file("events.jsonl");
  Netwatcher nw(dir, netfilter_config(events));

  must_run(std::string("ip netns add ") + kLate + " && ip -n " + kLate + " link set lo up");
  // A device in each: the anchor's end lives exactly as long as kLate does.
  must_run(std::string("ip -n ") + kLate + " link add nwt-lv0 type veth peer name nwt-lv1 netns " +
           kAnchor);
  const std::uint64_t late = netns_inode(kLate);
  const std::string linked = linked_line("netfilter", late, std::string("/run/netns/") + kLate);
  ASSERT_TRUE(eventually([&] { return nw.log().find(linked) != std::string::npos; }, 5000))
      << nw.log();
  const double watched = namespaces_gauge("netfilter");
  EXPECT_GE(watched, 3) << "own, " << kAnchor << " and " << kLate;

  must_run(std::string("ip netns exec ") + kLate + " ping -q -c 4 -i 0.05 -W 1 127.0.0.1");
  // Echo requests and replies, both sent locally.
  EXPECT_TRUE(eventually([&] { return loopback_icmp_events(events, late) == 8; }, 3000))
      << loopback_icmp_events(events, late) << " events in netns " << late;

  must_run(std::string("ip netns del ") + kLate);
  // nf_first and nf_last, for IPv4 and IPv6.
  ASSERT_TRUE(eventually(
      [&] { return nw.log().find(released_line("netfilter", 4, late)) != std::string::npos; },
      5000))
      << nw.log();
  // Scrapes within a second of each other may share one refresh.
  EXPECT_TRUE(eventually([&] { return namespaces_gauge("netfilter") == watched - 1; }, 3000))
      << namespaces_gauge("netfilter") << " namespaces, " << watched << " before";
  // Nothing holds the namespace any more, so the kernel dismantles it, veth
  // included; a link left behind would keep it (and nwt-lv1) alive.
  EXPECT_TRUE(eventually(
      [&] {
        return run(std::string("ip -n ") + kAnchor + " link show nwt-lv1 2>&1").exit_code != 0;
      },
      5000))
      << "the deleted namespace is still alive";
  ASSERT_EQ(nw.stop(), 0) << nw.log();
  EXPECT_EQ(loopback_icmp_events(events, late), 8);
}

TEST(NamespaceFollow, NetfilterLinksANamespaceOnlyAProcessIsIn) {
  NW_REQUIRE_ROOT();
  Namespaces cleanup;
  must_run(std::string("ip netns add ") + kAnchor);
  TempDir dir;
  const std::string events = dir.file("events.jsonl");
  Netwatcher nw(dir, netfilter_config(events));

  // As a container runtime does it: a process in a namespace of its own,
  // with no file under /run/netns.
  Process holder({"unshare", "--net", "sh", "-c", "ip link set lo up && exec sleep 60"},
                 dir.file("holder.log"));
  const std::string ns_file = "/proc/" + std::to_string(holder.pid()) + "/ns/net";
  const std::uint64_t own = inode_of("/proc/self/ns/net");
  ASSERT_TRUE(eventually(
      [&] {
        struct stat st {};
        return stat(ns_file.c_str(), &st) == 0 && st.st_ino != own &&
               run("nsenter --net=" + ns_file + " ip link show lo | grep -q LOWER_UP").exit_code ==
                   0;
      },
      5000));
  const std::uint64_t isolated = inode_of(ns_file);
  must_run(std::string("ip -n ") + kAnchor +
           " link add nwt-pv1 type veth peer name nwt-pv0 netns " + std::to_string(holder.pid()));
  ASSERT_TRUE(eventually(
      [&] {
        return nw.log().find(linked_line("netfilter", isolated, ns_file)) != std::string::npos;
      },
      5000))
      << nw.log();

  must_run("nsenter --net=" + ns_file + " ping -q -c 3 -i 0.05 -W 1 127.0.0.1");
  EXPECT_TRUE(eventually([&] { return loopback_icmp_events(events, isolated) == 6; }, 3000))
      << loopback_icmp_events(events, isolated) << " events in netns " << isolated;

  holder.stop();
  ASSERT_TRUE(eventually(
      [&] { return nw.log().find(released_line("netfilter", 4, isolated)) != std::string::npos; },
      5000))
      << nw.log();
  EXPECT_TRUE(eventually(
      [&] {
        return run(std::string("ip -n ") + kAnchor + " link show nwt-pv1 2>&1").exit_code != 0;
      },
      5000))
      << "the namespace of the exited process is still alive";
  ASSERT_EQ(nw.stop(), 0) << nw.log();
}

TEST(NamespaceFollow, TcpLayerTimeCoversANamespaceAddedAfterStart) {
  NW_REQUIRE_ROOT();
  Namespaces cleanup;
  TempDir dir;
  const std::string events = dir.file("events.jsonl");
  Netwatcher nw(dir, "snapshot_interval = 0.2\n" +
                         tcp_config(events, "layer_time = true\nlayer_events = true\n") +
                         prometheus_sink());

  must_run(std::string("ip netns add ") + kLate + " && ip -n " + kLate + " link set lo up");
  const std::uint64_t late = netns_inode(kLate);
  ASSERT_TRUE(eventually(
      [&] {
        return nw.log().find(linked_line("tcp", late, std::string("/run/netns/") + kLate)) !=
               std::string::npos;
      },
      5000))
      << nw.log();
  const double watched = namespaces_gauge("tcp");
  EXPECT_GE(watched, 2) << "own and " << kLate;

  std::vector<ClientConnection> clients;
  {
    TcpServer server(kLate, {kTcpPort}, dir);
    clients = run_client(kLate, "127.0.0.1", kTcpPort, {3000, 20000});
  }
  ASSERT_EQ(clients.size(), 2u);
  // Both ends of each connection are in kLate: every segment either way
  // crossed its LOCAL_OUT and LOCAL_IN links there, so each event has the IP
  // layer's share (a namespace without links has no ip_us at all).
  auto segments = [&] {
    std::vector<Json> out;
    for (const auto& e : events_of(parse_json_lines(read_file(events)), "tcp_layer")) {
      const auto& f = e["fields"];
      for (const auto& c : clients)
        if (f["saddr"].str() == "127.0.0.1" && f["daddr"].str() == "127.0.0.1" &&
            ((f["sport"].u64() == c.sport && f["dport"].u64() == kTcpPort) ||
             (f["dport"].u64() == c.sport && f["sport"].u64() == kTcpPort)))
          out.push_back(e);
    }
    return out;
  };
  ASSERT_TRUE(eventually([&] { return segments().size() >= 4; }, 3000)) << segments().size();
  std::map<std::string, int> per_direction;
  for (const auto& e : segments()) {
    const auto& f = e["fields"];
    per_direction[f["direction"].str()] += 1;
    EXPECT_TRUE(f.has("ip_us")) << f["direction"].str() << " seq " << f["seq"].u64();
    if (f["direction"].str() == "tx") {
      EXPECT_TRUE(f.has("transport_us"));
    }
  }
  EXPECT_GT(per_direction["tx"], 0);
  EXPECT_GT(per_direction["rx"], 0);

  must_run(std::string("ip netns del ") + kLate);
  // LOCAL_IN and LOCAL_OUT, for IPv4 and IPv6.
  ASSERT_TRUE(eventually(
      [&] { return nw.log().find(released_line("tcp", 4, late)) != std::string::npos; }, 5000))
      << nw.log();
  // Scrapes within a second of each other may share one refresh.
  EXPECT_TRUE(eventually([&] { return namespaces_gauge("tcp") == watched - 1; }, 3000))
      << namespaces_gauge("tcp") << " namespaces, " << watched << " before";
  ASSERT_EQ(nw.stop(), 0) << nw.log();
}

}  // namespace
