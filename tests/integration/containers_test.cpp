// Events name containers and pods, not inodes: an HTTP server in a cgroup
// shaped like Docker's and a curl client in one shaped like a containerd pod
// under kubelet's systemd driver, with the pod's names in a real-format OCI
// config.json. Both make real traffic between namespaces; the tcp and http
// events of each socket must carry its own cgroup, container and pod, and
// icmp events the /run/netns name of their namespace.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "harness.hpp"

using namespace nwtest;

namespace {

constexpr int kPort = 41473;         // and kPort + 1 for UDP
constexpr int kDroppedPort = 41475;  // a rule in the client drops what is sent to it
const std::string kDockerId(64, 'd');
const std::string kPodContainerId =
    "c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00";
const std::string kPodUid = "5e1d0c2b-aaaa-4bbb-8ccc-0123456789ab";

std::string cgroup2_root() {
  std::ifstream mounts("/proc/self/mountinfo");
  std::string found;
  for (std::string line; std::getline(mounts, line);) {
    std::size_t dash = line.find(" - cgroup2 ");
    if (dash == std::string::npos) continue;
    std::istringstream fields(line);
    std::string id, parent, device, root, point;
    fields >> id >> parent >> device >> root >> point;
    if (point == "/sys/fs/cgroup" || found.empty()) found = point;
  }
  return found;
}

std::uint64_t inode_of(const std::string& path) {
  struct stat st {};
  if (stat(path.c_str(), &st) != 0) throw std::runtime_error("cannot stat " + path);
  return st.st_ino;
}

// Cgroups made for one test under the cgroup2 root, removed deepest first.
class Cgroups {
 public:
  explicit Cgroups(std::string root) : root_(std::move(root)) {}
  ~Cgroups() {
    for (auto it = made_.rbegin(); it != made_.rend(); ++it) rmdir(it->c_str());
  }
  // `relative` below the root; returns the full path.
  std::string make(const std::string& relative) {
    std::string path = root_;
    std::istringstream parts(relative);
    for (std::string part; std::getline(parts, part, '/');) {
      if (part.empty()) continue;
      path += "/" + part;
      if (std::filesystem::exists(path)) continue;
      std::filesystem::create_directory(path);
      made_.push_back(path);
    }
    return path;
  }

 private:
  std::string root_;
  std::vector<std::string> made_;
};

// A shell script that moves itself into `cgroup`, then runs `command` in `netns`.
std::string cgroup_script(const std::string& cgroup, const std::string& netns,
                          const std::string& command) {
  return "echo $$ > " + cgroup + "/cgroup.procs && exec ip netns exec " + netns + " " + command;
}

std::string in_cgroup(const std::string& cgroup, const std::string& netns,
                      const std::string& command) {
  return "sh -c '" + cgroup_script(cgroup, netns, command) + "'";
}

class Containers : public ::testing::Test {
 protected:
  void SetUp() override {
    NW_REQUIRE_ROOT();
    root_ = cgroup2_root();
    ASSERT_FALSE(root_.empty()) << "no cgroup2 mount in /proc/self/mountinfo";
    cgroups_ = std::make_unique<Cgroups>(root_);
    hosts_ = std::make_unique<TwoHosts>();
    docker_path_ = "/nwtest.slice/docker-" + kDockerId + ".scope";
    std::string uid = kPodUid;
    for (char& c : uid)
      if (c == '-') c = '_';
    pod_path_ = "/nwtest.slice/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" +
                uid + ".slice/cri-containerd-" + kPodContainerId + ".scope";
    docker_ = cgroups_->make(docker_path_);
    pod_ = cgroups_->make(pod_path_);
    std::filesystem::create_directories(dir_.file("state/" + kPodContainerId));
    write_file(dir_.file("state/" + kPodContainerId + "/config.json"),
               R"({"ociVersion":"1.1.0","process":{"args":["/usr/bin/curl"]},"annotations":{)"
               R"("io.kubernetes.cri.container-type":"container",)"
               R"("io.kubernetes.cri.sandbox-id":"0000",)"
               R"("io.kubernetes.cri.sandbox-name":"shop-frontend-7d9f",)"
               R"("io.kubernetes.cri.sandbox-namespace":"shop",)"
               R"("io.kubernetes.cri.container-name":"curl"}})");
  }
  void start_server() {
    server_ = std::make_unique<Process>(
        std::vector<std::string>{"sh", "-c",
                                 cgroup_script(docker_, TwoHosts::kServer,
                                               "/usr/bin/python3 -m http.server " +
                                                   std::to_string(kPort) + " --bind 10.77.0.2")},
        dir_.file("server.log"));
  }
  std::string config(bool enabled, const std::string& containers_keys = "") {
    return "snapshot_interval = 0.5\n[containers]\nenabled = " +
           std::string(enabled ? "true" : "false") + "\nstate_directories = [\"" +
           dir_.file("state") + "\"]\n" + containers_keys +
           "[plugins.tcp]\n[plugins.http]\n[plugins.drop]\n[plugins.icmp]\n" +
           "max_events_per_second = 0\n[plugins.udp]\nevents = true\nmax_events_per_second = 0\n" +
           sink_config_json(dir_.file("events.jsonl"));
  }
  // curl from the pod's cgroup (or, with `from_pod` false, from this
  // process's own, which is no container's); returns its local port.
  std::uint64_t fetch(bool from_pod = true) {
    std::uint64_t port = 0;
    EXPECT_TRUE(wait_until([&] {
      const std::string curl =
          "curl -s -o /dev/null -w %{local_port} http://10.77.0.2:" + std::to_string(kPort) + "/";
      auto r = run(from_pod ? in_cgroup(pod_, TwoHosts::kClient, curl)
                            : "ip netns exec " + std::string(TwoHosts::kClient) + " " + curl);
      if (r.exit_code != 0) return false;
      port = std::stoull(r.output);
      return true;
    })) << read_file(dir_.file("server.log"));
    return port;
  }
  // `count` datagrams to `port` from one socket in the pod's cgroup;
  // returns its port.
  std::uint64_t send_udp_from_pod(int port = kPort + 1, int count = 3) {
    write_file(dir_.file("send.py"),
               "import socket\n"
               "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
               "for _ in range(" +
                   std::to_string(count) +
                   "):\n"
                   "    try:\n"
                   "        s.sendto(b'x' * 10, ('10.77.0.2', " +
                   std::to_string(port) +
                   "))\n"
                   "    except PermissionError:\n"  // a rule dropped it on the way out
                   "        pass\n"
                   "print(s.getsockname()[1])\n");
    auto r = run(in_cgroup(pod_, TwoHosts::kClient, "/usr/bin/python3 " + dir_.file("send.py")));
    if (r.exit_code != 0) throw std::runtime_error("udp sender failed: " + r.output);
    return std::stoull(r.output);
  }
  std::vector<Json> events(const std::string& name) {
    return events_of(read_json_lines(dir_.file("events.jsonl")), name);
  }

  std::string root_, docker_path_, pod_path_, docker_, pod_;
  TempDir dir_;
  std::unique_ptr<Cgroups> cgroups_;
  std::unique_ptr<TwoHosts> hosts_;
  std::unique_ptr<Process> server_;  // destroyed first: its cgroup can then go
};

void expect_pod(const Json& fields, const std::string& path, std::uint64_t id) {
  EXPECT_EQ(fields["cgroup_id"].u64(), id);
  EXPECT_EQ(fields["cgroup"].str(), path);
  EXPECT_EQ(fields["container_id"].str(), kPodContainerId);
  EXPECT_EQ(fields["container_runtime"].str(), "containerd");
  EXPECT_EQ(fields["pod_uid"].str(), kPodUid);
  EXPECT_EQ(fields["pod"].str(), "shop-frontend-7d9f");
  EXPECT_EQ(fields["pod_namespace"].str(), "shop");
  EXPECT_EQ(fields["container_name"].str(), "curl");
}

void expect_docker(const Json& fields, const std::string& path, std::uint64_t id) {
  EXPECT_EQ(fields["cgroup_id"].u64(), id);
  EXPECT_EQ(fields["cgroup"].str(), path);
  EXPECT_EQ(fields["container_id"].str(), kDockerId);
  EXPECT_EQ(fields["container_runtime"].str(), "docker");
  for (const char* absent : {"pod_uid", "pod", "pod_namespace", "container_name"})
    EXPECT_FALSE(fields.has(absent)) << absent;
}

TEST_F(Containers, EachSocketsEventsNameItsContainerAndPod) {
  Netwatcher nw(dir_, config(true));
  start_server();
  const std::uint64_t client_port = fetch();
  ASSERT_NE(client_port, 0u);
  ASSERT_EQ(run(in_cgroup(pod_, TwoHosts::kClient, "ping -n -c 2 -i 0.2 10.77.0.2")).exit_code, 0);
  const std::uint64_t udp_port = send_udp_from_pod();
  // Dropped by a rule on the way out, in the sender's own system call.
  nft(TwoHosts::kClient,
      "table inet nwtest {\n chain out {\n  type filter hook output priority 0;\n  udp dport " +
          std::to_string(kDroppedPort) + " drop\n }\n}\n");
  const std::uint64_t dropped_port = send_udp_from_pod(kDroppedPort, 2);
  ASSERT_TRUE(wait_until([&] {
    std::size_t exchanges = 0, closes = 0;
    for (const auto& e : events("http_exchange"))
      exchanges +=
          e["fields"]["sport"].u64() == client_port || e["fields"]["dport"].u64() == client_port;
    for (const auto& e : events("tcp_close"))
      closes +=
          e["fields"]["sport"].u64() == client_port || e["fields"]["dport"].u64() == client_port;
    std::size_t flows = 0;
    for (const auto& e : events("udp_flow")) flows += e["fields"]["local_port"].u64() == udp_port;
    std::size_t drops = 0;
    for (const auto& e : events("drop"))
      drops += e["fields"].has("src_port") && e["fields"]["src_port"].u64() == dropped_port;
    return exchanges == 2 && closes == 2 && flows >= 1 && drops == 2;
  })) << nw.log();
  ASSERT_EQ(nw.stop(), 0);

  const std::uint64_t pod_id = inode_of(pod_), docker_id = inode_of(docker_);
  for (const char* name : {"tcp_open", "tcp_close", "http_exchange"}) {
    std::size_t client = 0, server = 0;
    for (const auto& e : events(name)) {
      const Json& f = e["fields"];
      SCOPED_TRACE(std::string(name) + " " + f["saddr"].str() + ":" +
                   std::to_string(f["sport"].u64()));
      if (f["sport"].u64() == client_port && f["saddr"].str() == "10.77.0.1") {
        ++client;
        expect_pod(f, pod_path_, pod_id);
      } else if (f["dport"].u64() == client_port && f["saddr"].str() == "10.77.0.2") {
        ++server;
        expect_docker(f, docker_path_, docker_id);
      }
    }
    EXPECT_EQ(client, 1u) << name;
    EXPECT_EQ(server, 1u) << name;
  }

  // UDP: every datagram the pod's socket sent, and its flow.
  std::size_t datagrams = 0, flows = 0;
  for (const auto& e : events("udp_datagram")) {
    const Json& f = e["fields"];
    if (f["local_port"].u64() != udp_port || f["direction"].str() != "tx") continue;
    ++datagrams;
    expect_pod(f, pod_path_, pod_id);
    EXPECT_EQ(f["netns_name"].str(), TwoHosts::kClient);
  }
  for (const auto& e : events("udp_flow")) {
    const Json& f = e["fields"];
    if (f["local_port"].u64() != udp_port) continue;
    ++flows;
    expect_pod(f, pod_path_, pod_id);
  }
  EXPECT_EQ(datagrams, 3u);
  EXPECT_GE(flows, 1u);

  // Drops: the rule's, each naming the pod whose socket sent it.
  std::size_t drops = 0;
  for (const auto& e : events("drop")) {
    const Json& f = e["fields"];
    if (!f.has("src_port") || f["src_port"].u64() != dropped_port) continue;
    ++drops;
    EXPECT_EQ(f["reason"].str(), "NETFILTER_DROP");
    expect_pod(f, pod_path_, pod_id);
    EXPECT_EQ(f["netns_name"].str(), TwoHosts::kClient);
  }
  EXPECT_EQ(drops, 2u);

  // ICMP: ping's requests name its pod, and so do the replies to them; the
  // server's kernel answers in no process, so its messages name only their
  // namespace.
  const std::uint64_t cli = netns_inode(TwoHosts::kClient), srv = netns_inode(TwoHosts::kServer);
  std::size_t named = 0, in_pod = 0;
  for (const auto& e : events("icmp_message")) {
    const Json& f = e["fields"];
    if (f["family"].str() != "ipv4" || !f.has("seq")) continue;  // echo only
    if (f["netns"].u64() == cli) {
      EXPECT_EQ(f["netns_name"].str(), TwoHosts::kClient);
      expect_pod(f, pod_path_, pod_id);
      ++in_pod;
      ++named;
    } else if (f["netns"].u64() == srv) {
      EXPECT_EQ(f["netns_name"].str(), TwoHosts::kServer);
      EXPECT_FALSE(f.has("cgroup_id"));
      ++named;
    }
  }
  // Two requests and two replies, each seen leaving one namespace and
  // entering the other.
  EXPECT_EQ(named, 8u);
  EXPECT_EQ(in_pod, 4u);
}

// container_labels: the request metrics of a protocol plugin split by the
// container, pod and namespace of each socket, and host processes count
// under empty ones.
TEST_F(Containers, ContainerLabelsSplitRequestMetricsByContainerAndPod) {
  const std::string textfile = dir_.file("netwatcher.prom");
  Netwatcher nw(dir_, config(true, "container_labels = true\n") +
                          "[[sinks]]\ntype = \"prometheus\"\nlisten = \"\"\ntextfile = \"" +
                          textfile + "\"\n");
  start_server();
  for (int i = 0; i < 3; ++i) ASSERT_NE(fetch(), 0u);
  ASSERT_NE(fetch(/*from_pod=*/false), 0u);
  ASSERT_TRUE(wait_until([&] {
    std::size_t served = 0;
    for (const auto& e : events("http_exchange")) served += e["fields"]["side"].str() == "server";
    return served == 4;
  })) << nw.log();
  ASSERT_EQ(nw.stop(), 0);  // the textfile is written at close
  const PromText m = parse_prometheus(read_file(textfile));
  auto requests = [&](const std::string& side, const std::string& container, const std::string& pod,
                      const std::string& ns) {
    return m.value("netwatcher_http_requests_total", {{"method", "GET"},
                                                      {"status_class", "2xx"},
                                                      {"side", side},
                                                      {"container", container},
                                                      {"pod", pod},
                                                      {"namespace", ns}});
  };
  EXPECT_EQ(requests("client", "curl", "shop-frontend-7d9f", "shop"), 3);
  EXPECT_EQ(requests("client", "", "", ""), 1);
  EXPECT_EQ(requests("server", kDockerId.substr(0, 12), "", ""), 4);
  EXPECT_EQ(
      m.value("netwatcher_http_request_duration_seconds_count", {{"method", "GET"},
                                                                 {"side", "client"},
                                                                 {"container", "curl"},
                                                                 {"pod", "shop-frontend-7d9f"},
                                                                 {"namespace", "shop"}}),
      3);
  // Never the number itself.
  EXPECT_EQ(read_file(textfile).find("cgroup_id"), std::string::npos);
}

TEST_F(Containers, SwitchedOffTheIdsStayAndNothingIsAppended) {
  Netwatcher nw(dir_, config(false));
  start_server();
  const std::uint64_t client_port = fetch();
  ASSERT_TRUE(wait_until([&] {
    for (const auto& e : events("tcp_close"))
      if (e["fields"]["sport"].u64() == client_port) return true;
    return false;
  })) << nw.log();
  ASSERT_EQ(nw.stop(), 0);
  std::size_t seen = 0;
  for (const auto& e : events("tcp_close")) {
    const Json& f = e["fields"];
    if (f["sport"].u64() != client_port) continue;
    ++seen;
    EXPECT_EQ(f["cgroup_id"].u64(), inode_of(pod_));
    for (const char* absent : {"cgroup", "container_id", "pod"})
      EXPECT_FALSE(f.has(absent)) << absent;
  }
  EXPECT_EQ(seen, 1u);
}

}  // namespace
