#include "harness.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <functional>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <thread>

namespace nwtest {

namespace {

void must(const std::string& command) {
  auto r = run(command);
  if (r.exit_code != 0) throw std::runtime_error(command + " failed: " + r.output);
}

bool wait_for(const std::function<bool()>& condition, int timeout_ms) {
  return wait_until(condition, std::chrono::milliseconds(timeout_ms));
}

const std::string kPeers = std::string(NW_SOURCE_DIR) + "/tests/integration/tcp_peers.py";
const std::string kUdpPeers = std::string(NW_SOURCE_DIR) + "/tests/integration/udp_peers.py";

// Without duplicate address detection every IPv6 address, link-local ones
// included, is usable at once: otherwise neighbour discovery can fail for
// about a second and the first IPv6 datagrams of a test vanish.
void no_dad(const std::vector<std::string>& namespaces) {
  for (const auto& ns : namespaces)
    must("ip netns exec " + ns +
         " sysctl -qw net.ipv6.conf.default.accept_dad=0 net.ipv6.conf.all.accept_dad=0");
}

struct LinkEnd {
  const char* netns;
  const char* device;
  const char* ipv4;  // with prefix length
  const char* ipv6;
};

// Addresses and brings up each end, then waits until every one is
// operational: links come up asynchronously (linkwatch), and until then the
// device drops what is sent, which would lose the first datagrams of a test.
void bring_up(const std::vector<LinkEnd>& ends) {
  for (const auto& end : ends) {
    std::string in = std::string("ip -n ") + end.netns + " ";
    must(in + "link set lo up");
    must(in + "addr add " + end.ipv4 + " dev " + end.device);
    must(in + "addr add " + end.ipv6 + " dev " + end.device + " nodad");
    must(in + "link set " + end.device + " up");
  }
  for (const auto& end : ends) {
    std::string command = std::string("ip netns exec ") + end.netns + " cat /sys/class/net/" +
                          end.device + "/operstate 2>/dev/null";
    if (!wait_for([&] { return run(command).output.rfind("up", 0) == 0; }, 10000))
      throw std::runtime_error(std::string(end.device) + " in " + end.netns + " did not come up");
  }
}

}  // namespace

bool wait_until(const std::function<bool()>& condition, std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (condition()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return condition();
}

std::vector<Json> read_json_lines(const std::string& path) {
  std::string text = read_file(path);
  auto end = text.rfind('\n');
  if (end == std::string::npos) return {};
  text.resize(end + 1);
  return parse_json_lines(text);
}

// Integration tests share namespace names, ports and the kernel's netfilter
// priorities, also with the suites of other checkouts on the same machine:
// the first test object a process makes waits for this machine-wide lock and
// holds it until the process exits.
// The tests' fixed ports (Prometheus endpoints 41420-41499) sit inside the
// ephemeral range: a test that opens thousands of connections leaves client
// sockets in TIME_WAIT on some of them, and a listener cannot bind over a
// TIME_WAIT socket that was not SO_REUSEADDR. Reserving the range keeps the
// kernel from handing those ports to clients.
void reserve_test_ports() {
  const char* path = "/proc/sys/net/ipv4/ip_local_reserved_ports";
  std::string reserved = read_file(path);
  while (!reserved.empty() && (reserved.back() == '\n' || reserved.back() == ' '))
    reserved.pop_back();
  if (reserved.find("41400-41499") != std::string::npos) return;
  write_file(path, reserved.empty() ? "41400-41499" : reserved + ",41400-41499");
}

void hold_machine_lock() {
  static const int fd = [] {
    int lock = ::open("/run/netwatcher-integration.lock", O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (lock >= 0) ::flock(lock, LOCK_EX);
    reserve_test_ports();
    return lock;
  }();
  (void)fd;
}

TwoHosts::TwoHosts() {
  hold_machine_lock();
  run("ip netns del nwt-cli 2>/dev/null; ip netns del nwt-srv 2>/dev/null");
  must("ip netns add nwt-cli && ip netns add nwt-srv");
  no_dad({"nwt-cli", "nwt-srv"});
  must("ip link add nwt-c0 netns nwt-cli type veth peer name nwt-s0 netns nwt-srv");
  bring_up({{"nwt-cli", "nwt-c0", "10.77.0.1/24", "fd77::1/64"},
            {"nwt-srv", "nwt-s0", "10.77.0.2/24", "fd77::2/64"}});
}

TwoHosts::~TwoHosts() {
  run("ip netns del nwt-cli; ip netns del nwt-srv");
}

RoutedHosts::RoutedHosts() {
  hold_machine_lock();
  run("ip netns del nwt-a 2>/dev/null; ip netns del nwt-r 2>/dev/null; ip netns del nwt-b "
      "2>/dev/null");
  must("ip netns add nwt-a && ip netns add nwt-r && ip netns add nwt-b");
  no_dad({"nwt-a", "nwt-r", "nwt-b"});
  must("ip link add nwt-a0 netns nwt-a type veth peer name nwt-ra netns nwt-r");
  must("ip link add nwt-b0 netns nwt-b type veth peer name nwt-rb netns nwt-r");
  bring_up({{"nwt-a", "nwt-a0", "10.78.1.1/24", "fd78:1::1/64"},
            {"nwt-r", "nwt-ra", "10.78.1.254/24", "fd78:1::fe/64"},
            {"nwt-r", "nwt-rb", "10.78.2.254/24", "fd78:2::fe/64"},
            {"nwt-b", "nwt-b0", "10.78.2.1/24", "fd78:2::1/64"}});
  must("ip netns exec nwt-r sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1");
  must("ip -n nwt-a route add default via 10.78.1.254");
  must("ip -n nwt-a -6 route add default via fd78:1::fe");
  must("ip -n nwt-b route add default via 10.78.2.254");
  must("ip -n nwt-b -6 route add default via fd78:2::fe");
}

RoutedHosts::~RoutedHosts() {
  run("ip netns del nwt-a; ip netns del nwt-r; ip netns del nwt-b");
}

std::uint64_t netns_inode(const std::string& name) {
  struct stat st {};
  if (stat(("/run/netns/" + name).c_str(), &st) != 0)
    throw std::runtime_error("no network namespace " + name);
  return st.st_ino;
}

std::uint64_t nstat(const std::string& netns, const std::string& counter) {
  auto r = run("ip netns exec " + netns + " nstat -asz " + counter);
  std::istringstream lines(r.output);
  std::string line;
  while (std::getline(lines, line)) {
    std::istringstream words(line);
    std::string name;
    std::uint64_t value = 0;
    if (words >> name >> value && name == counter) return value;
  }
  throw std::runtime_error("nstat printed no " + counter + ": " + r.output);
}

void nft(const std::string& netns, const std::string& ruleset) {
  TempDir dir;
  write_file(dir.file("rules.nft"), ruleset);
  must("ip netns exec " + netns + " nft -f " + dir.file("rules.nft"));
}

Process::Process(const std::vector<std::string>& argv, const std::string& output_file) {
  pid_ = fork();
  if (pid_ < 0) throw std::runtime_error("fork failed");
  if (pid_ == 0) {
    int fd = open(output_file.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    dup2(fd, 1);
    dup2(fd, 2);
    setpgid(0, 0);
    // A test binary that crashes or is killed by ctest's timeout must not
    // leave an agent attached: the next tests would see its programs too.
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    execvp(args[0], args.data());
    _exit(127);
  }
}

Process::~Process() {
  if (pid_ > 0) stop(3000);
}

int Process::stop(int timeout_ms) {
  if (pid_ <= 0) return -1;
  kill(pid_, SIGTERM);
  int status = 0;
  bool done = wait_for([&] { return waitpid(pid_, &status, WNOHANG) == pid_; }, timeout_ms);
  if (!done) {
    kill(-pid_, SIGKILL);
    kill(pid_, SIGKILL);
    waitpid(pid_, &status, 0);
  }
  pid_ = -1;
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  return -WTERMSIG(status);
}

TcpServer::TcpServer(const std::string& netns, const std::vector<int>& ports, const TempDir& dir) {
  std::string pidfile = dir.file("server.pid"), ready = dir.file("server.ready");
  std::vector<std::string> argv = {"ip",   "netns",  "exec",      netns,   "/usr/bin/python3",
                                   kPeers, "server", "--pidfile", pidfile, "--ready",
                                   ready};
  for (int port : ports) argv.push_back(std::to_string(port));
  process_ = std::make_unique<Process>(argv, dir.file("server.log"));
  if (!wait_for([&] { return std::filesystem::exists(ready); }, 10000))
    throw std::runtime_error("test server did not start: " + read_file(dir.file("server.log")));
  pid_ = std::stoi(read_file(pidfile));
}

std::vector<ClientConnection> run_client(const std::string& netns, const std::string& host,
                                         int port, const std::vector<int>& sizes) {
  std::string command = "ip netns exec " + netns + " /usr/bin/python3 " + kPeers + " client " +
                        host + " " + std::to_string(port);
  for (int size : sizes) command.append(" ").append(std::to_string(size));
  auto result = run(command);
  if (result.exit_code != 0) throw std::runtime_error("client failed: " + result.output);
  std::vector<ClientConnection> out;
  for (const auto& line : parse_json_lines(result.output))
    out.push_back({line["pid"].u64(), line["sport"].u64(), line["dport"].u64(), line["sent"].u64(),
                   line["received"].u64()});
  return out;
}

std::vector<Json> run_tcp_peer(const std::string& netns, const std::vector<std::string>& args) {
  std::string command = "ip netns exec " + netns + " /usr/bin/python3 " + kPeers;
  for (const auto& arg : args) command += " " + arg;
  auto result = run(command);
  if (result.exit_code != 0) throw std::runtime_error(command + " failed: " + result.output);
  return parse_json_lines(result.output);
}

HeldConnection::HeldConnection(const std::string& netns, const std::string& host, int port,
                               int size, double seconds, const TempDir& dir) {
  std::string out = dir.file("hold.log");
  process_ = std::make_unique<Process>(
      std::vector<std::string>{"ip", "netns", "exec", netns, "/usr/bin/python3", kPeers, "hold",
                               host, std::to_string(port), std::to_string(size),
                               std::to_string(seconds)},
      out);
  if (!wait_for([&] { return read_file(out).find('\n') != std::string::npos; }, 10000))
    throw std::runtime_error("held connection did not start: " + read_file(out));
  Json line = parse_json_lines(read_file(out)).at(0);
  info_ = {line["pid"].u64(), line["sport"].u64(), line["dport"].u64(), line["sent"].u64(), 0};
}

UdpReceiver::UdpReceiver(const std::string& netns, const std::vector<int>& ports,
                         const TempDir& dir)
    : log_(dir.file("udp-recv.log")) {
  std::string ready = dir.file("udp-recv.ready");
  std::vector<std::string> argv = {"ip",      "netns", "exec",    netns, "/usr/bin/python3",
                                   kUdpPeers, "recv",  "--ready", ready};
  for (int port : ports) argv.push_back(std::to_string(port));
  process_ = std::make_unique<Process>(argv, log_);
  if (!wait_for([&] { return std::filesystem::exists(ready); }, 10000))
    throw std::runtime_error("UDP receiver did not start: " + read_file(log_));
}

std::map<int, std::uint64_t> UdpReceiver::counts() {
  process_->stop();
  std::map<int, std::uint64_t> out;
  Json counts = parse_json(read_file(log_));
  for (const auto& [port, n] : counts.obj()) out[std::stoi(port)] = n.u64();
  return out;
}

UdpPeer::UdpPeer(const std::string& netns, const std::string& mode,
                 const std::vector<std::string>& args, const TempDir& dir) {
  std::string ready = dir.file("udp-" + mode + ".ready");
  std::vector<std::string> argv = {"ip",      "netns", "exec",    netns, "/usr/bin/python3",
                                   kUdpPeers, mode,    "--ready", ready};
  argv.insert(argv.end(), args.begin(), args.end());
  std::string log = dir.file("udp-" + mode + ".log");
  process_ = std::make_unique<Process>(argv, log);
  if (!wait_for([&] { return std::filesystem::exists(ready); }, 10000))
    throw std::runtime_error("udp_peers.py " + mode + " did not start: " + read_file(log));
}

UdpExchange udp_exchange(const std::string& netns, const std::string& host, int port,
                         const std::vector<int>& sizes) {
  std::string command = "ip netns exec " + netns + " /usr/bin/python3 " + kUdpPeers + " exchange " +
                        host + " " + std::to_string(port);
  for (int size : sizes) command.append(" ").append(std::to_string(size));
  auto result = run(command);
  if (result.exit_code != 0) throw std::runtime_error("UDP exchange failed: " + result.output);
  Json line = parse_json(result.output);
  return {line["pid"].u64(), line["unconnected_sport"].u64(), line["connected_sport"].u64()};
}

UdpSent send_udp(const std::string& netns, const std::string& host, int port, int count, int size,
                 int sport) {
  std::string command = "ip netns exec " + netns + " /usr/bin/python3 " + kUdpPeers + " send " +
                        host + " " + std::to_string(port) + " " + std::to_string(count) + " " +
                        std::to_string(size);
  if (sport) command += " --sport " + std::to_string(sport);
  auto result = run(command);
  if (result.exit_code != 0) throw std::runtime_error("UDP sender failed: " + result.output);
  Json line = parse_json(result.output);
  return {line["pid"].u64(), line["sport"].u64()};
}

UdpBatch send_udp_batch(const std::string& netns, const std::string& host, int port, int count,
                        int size) {
  const std::string command = "ip netns exec " + netns + " /usr/bin/python3 " + kUdpPeers +
                              " batch " + host + " " + std::to_string(port) + " " +
                              std::to_string(count) + " " + std::to_string(size);
  auto result = run(command);
  if (result.exit_code != 0) throw std::runtime_error("UDP batch sender failed: " + result.output);
  Json line = parse_json(result.output);
  return {line["pid"].u64(), line["sendmmsg_sport"].u64(), line["sendmmsg_sent"].u64(),
          line["write_sport"].u64()};
}

void spray_udp(const std::string& netns, const std::string& host, int port, int sockets) {
  auto result = run("ip netns exec " + netns + " /usr/bin/python3 " + kUdpPeers + " spray " + host +
                    " " + std::to_string(port) + " " + std::to_string(sockets));
  if (result.exit_code != 0) throw std::runtime_error("UDP sprayer failed: " + result.output);
  if (parse_json(result.output)["sockets"].u64() != static_cast<std::uint64_t>(sockets))
    throw std::runtime_error("UDP sprayer: " + result.output);
}

bool fallback_hooks() {
  const char* mode = std::getenv("NW_TEST_HOOKS");
  return mode && std::string(mode) == "fallback";
}

std::string hook_override_line() {
  return fallback_hooks() ? "hook_override = { \"*\" = \"fallback\" }\n" : "";
}

bool kernel_loads_iterator(const std::string& target) {
  static const std::string check = [] {
    auto result = run(std::string(NW_BINARY) + " --plugin-dir " + NW_PLUGIN_DIR + " --config " +
                      NW_SOURCE_DIR + "/netwatcher.toml --check 2>/dev/null");
    return result.output;
  }();
  const std::string line = "\n  iter/" + target + " ";
  const std::size_t at = check.find(line);
  if (at == std::string::npos) throw std::runtime_error("--check does not list iter/" + target);
  const std::string verdict = check.substr(at, check.find('\n', at + 1) - at);
  return verdict.find(" yes ") != std::string::npos;
}

Netwatcher::Netwatcher(const TempDir& dir, const std::string& config_toml,
                       const std::vector<std::string>& extra_args) {
  hold_machine_lock();
  config_ = dir.file("netwatcher.toml");
  write_file(config_, "[netwatcher]\nplugin_dirs = [\"" + std::string(NW_PLUGIN_DIR) + "\"]\n" +
                          hook_override_line() + config_toml);
  log_ = dir.file("netwatcher.log");
  std::vector<std::string> argv = {NW_BINARY, "--config", config_};
  argv.insert(argv.end(), extra_args.begin(), extra_args.end());
  process_ = std::make_unique<Process>(argv, log_);
  if (!wait_for([&] { return read_file(log_).find(" running: ") != std::string::npos; }, 15000))
    throw std::runtime_error("netwatcher did not start: " + read_file(log_));
}

Netwatcher::~Netwatcher() = default;

int Netwatcher::stop() {
  return process_->stop();
}

std::string sink_config_json(const std::string& path) {
  return "[[sinks]]\ntype = \"json\"\npath = \"" + path + "\"\n";
}

std::string tcp_config(const std::string& path, const std::string& keys) {
  return "[plugins.tcp]\n" + keys + sink_config_json(path);
}

std::vector<Json> events_of(const std::vector<Json>& all, const std::string& event) {
  std::vector<Json> out;
  for (const auto& e : all)
    if (e["event"].str() == event) out.push_back(e);
  return out;
}

int connect_loopback(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<std::uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    int err = errno;
    ::close(fd);
    throw std::runtime_error("cannot connect to 127.0.0.1:" + std::to_string(port) + ": " +
                             std::strerror(err));
  }
  return fd;
}

PromText scrape_until(int port, const std::function<bool(const PromText&)>& ready) {
  PromText m;
  wait_until([&] {
    m = parse_prometheus(http_get(port, "/metrics"));
    return ready(m);
  });
  return m;
}

std::string http_get(int port, const std::string& path) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    close(fd);
    throw std::runtime_error("cannot connect to 127.0.0.1:" + std::to_string(port));
  }
  std::string request = "GET " + path + " HTTP/1.1\r\nHost: localhost\r\n\r\n";
  send(fd, request.data(), request.size(), 0);
  std::string response;
  char buf[8192];
  ssize_t n;
  while ((n = recv(fd, buf, sizeof buf, 0)) > 0) response.append(buf, n);
  close(fd);
  auto body = response.find("\r\n\r\n");
  if (response.rfind("HTTP/1.1 200", 0) != 0 || body == std::string::npos)
    throw std::runtime_error("bad HTTP response: " + response.substr(0, 200));
  return response.substr(body + 4);
}

}  // namespace nwtest
