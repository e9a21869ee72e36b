// Namespaces, peers and a netwatcher process for the integration tests.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "test_support.hpp"

namespace nwtest {

// Skips (outside CI) or fails (CI=true) when not root.
#define NW_REQUIRE_ROOT()                                                          \
  do {                                                                             \
    if (!::nwtest::is_root()) {                                                    \
      if (::nwtest::in_ci()) FAIL() << "integration tests must run as root in CI"; \
      GTEST_SKIP() << "needs root";                                                \
    }                                                                              \
  } while (0)

// Two namespaces joined by a veth pair:
//   nwt-cli  nwt-c0  10.77.0.1/24  fd77::1/64
//   nwt-srv  nwt-s0  10.77.0.2/24  fd77::2/64
class TwoHosts {
 public:
  TwoHosts();
  ~TwoHosts();
  static constexpr const char* kClient = "nwt-cli";
  static constexpr const char* kServer = "nwt-srv";
};

// A router namespace between two hosts, forwarding IPv4 and IPv6:
//   nwt-a  nwt-a0  10.78.1.1/24  fd78:1::1/64   default via the router
//   nwt-r  nwt-ra  10.78.1.254   fd78:1::fe     nwt-rb  10.78.2.254  fd78:2::fe
//   nwt-b  nwt-b0  10.78.2.1/24  fd78:2::1/64   default via the router
class RoutedHosts {
 public:
  RoutedHosts();
  ~RoutedHosts();
  static constexpr const char* kA = "nwt-a";
  static constexpr const char* kRouter = "nwt-r";
  static constexpr const char* kB = "nwt-b";
};

// Polls `condition` every 20 ms until it holds or `timeout` has passed, and
// returns whether it held: how a test waits for an event, a metric or a file
// instead of sleeping a fixed time.
bool wait_until(const std::function<bool()>& condition,
                std::chrono::milliseconds timeout = std::chrono::seconds(10));

// The complete lines of a JSON Lines file that may still be being written
// (a line without its newline yet is left out); none when there is no file.
std::vector<Json> read_json_lines(const std::string& path);

// The machine-wide lock every integration test takes (see harness.cpp);
// held until the process exits. TwoHosts, RoutedHosts and Netwatcher take it
// themselves; call it first when a test touches shared ports before those.
void hold_machine_lock();

// A counter of the kernel's own MIB (nstat -a: absolute, -s: the history
// file untouched, -z: zeros too) in `netns`; throws when nstat has no such counter.
std::uint64_t nstat(const std::string& netns, const std::string& counter);

// Inode of a named network namespace (what netwatcher reports as `netns`).
std::uint64_t netns_inode(const std::string& name);
// Runs `nft -f` with `ruleset` inside `netns`; throws on failure.
void nft(const std::string& netns, const std::string& ruleset);

// A background process; killed (SIGTERM, then SIGKILL) when destroyed.
class Process {
 public:
  Process(const std::vector<std::string>& argv, const std::string& output_file);
  ~Process();
  pid_t pid() const { return pid_; }
  // SIGTERM and wait; returns the exit status (or -signal).
  int stop(int timeout_ms = 10000);

 private:
  pid_t pid_ = -1;
};

// The TCP peers of tcp_peers.py.
class TcpServer {
 public:
  TcpServer(const std::string& netns, const std::vector<int>& ports, const TempDir& dir);
  pid_t pid() const { return pid_; }

 private:
  std::unique_ptr<Process> process_;
  pid_t pid_ = 0;
};

struct ClientConnection {
  std::uint64_t pid, sport, dport, sent, received;
};
std::vector<ClientConnection> run_client(const std::string& netns, const std::string& host,
                                         int port, const std::vector<int>& sizes);

// Runs tcp_peers.py with `args` (mode first) in `netns` and returns the JSON
// lines it printed; throws when it fails.
std::vector<Json> run_tcp_peer(const std::string& netns, const std::vector<std::string>& args);

// A connection held open in the background (tcp_peers.py hold); returns once
// it is connected.
class HeldConnection {
 public:
  HeldConnection(const std::string& netns, const std::string& host, int port, int size,
                 double seconds, const TempDir& dir);
  const ClientConnection& info() const { return info_; }

 private:
  std::unique_ptr<Process> process_;
  ClientConnection info_{};
};

// udp_peers.py recv: counts datagrams per port until stopped.
class UdpReceiver {
 public:
  UdpReceiver(const std::string& netns, const std::vector<int>& ports, const TempDir& dir);
  // Stops the receiver; datagrams received per port.
  std::map<int, std::uint64_t> counts();

 private:
  std::unique_ptr<Process> process_;
  std::string log_;
};

// A background udp_peers.py mode that signals readiness (echo, hold):
// `args` follow the mode, e.g. {"--rcvbuf", "4096", "7200"}.
class UdpPeer {
 public:
  UdpPeer(const std::string& netns, const std::string& mode, const std::vector<std::string>& args,
          const TempDir& dir);
  pid_t pid() const { return process_->pid(); }

 private:
  std::unique_ptr<Process> process_;
};

struct UdpExchange {
  std::uint64_t pid, unconnected_sport, connected_sport;
};
// udp_peers.py exchange: each size from an unconnected, then a connected socket.
UdpExchange udp_exchange(const std::string& netns, const std::string& host, int port,
                         const std::vector<int>& sizes);

struct UdpSent {
  std::uint64_t pid, sport;
};
// udp_peers.py send: `count` datagrams of `size` bytes from one socket.
UdpSent send_udp(const std::string& netns, const std::string& host, int port, int count, int size,
                 int sport = 0);

struct UdpBatch {
  std::uint64_t pid, sendmmsg_sport, sendmmsg_sent, write_sport;
};
// udp_peers.py batch: `count` datagrams in one sendmmsg(2) from one connected
// socket, then `count` with write(2) from another.
UdpBatch send_udp_batch(const std::string& netns, const std::string& host, int port, int count,
                        int size);

// udp_peers.py spray: one datagram from each of `sockets` sockets (one flow
// each), then closes them all.
void spray_udp(const std::string& netns, const std::string& host, int port, int sockets);

// NW_TEST_HOOKS=fallback (the "fallback." tests): every netwatcher a test
// starts runs with [netwatcher] hook_override = { "*" = "fallback" }, so each
// hook with more than one candidate program runs on its second.
bool fallback_hooks();
// The hook_override line for the current mode ("" normally).
std::string hook_override_line();
// Whether this kernel loads an `iter/<target>` program, as netwatcher --check
// finds (machines of one kind refuse bpf_map_elem or take it); asked once.
bool kernel_loads_iterator(const std::string& target);

// netwatcher with a config file; waits until it reports running.
class Netwatcher {
 public:
  Netwatcher(const TempDir& dir, const std::string& config_toml,
             const std::vector<std::string>& extra_args = {});
  ~Netwatcher();
  int stop();
  pid_t pid() const { return process_->pid(); }
  // The config file it runs with, for --check / --list-plugins next to it.
  const std::string& config_path() const { return config_; }
  const std::string& log_path() const { return log_; }
  std::string log() const { return read_file(log_); }

 private:
  std::unique_ptr<Process> process_;
  std::string config_, log_;
};

std::string sink_config_json(const std::string& path);
// [plugins.tcp] with `keys`, then a JSON sink writing to `path`.
std::string tcp_config(const std::string& path, const std::string& keys = "");
// Events of one type from a JSON Lines file.
std::vector<Json> events_of(const std::vector<Json>& all, const std::string& event);
// HTTP GET on 127.0.0.1:port, body only; throws on failure.
std::string http_get(int port, const std::string& path);
// A connected TCP socket to 127.0.0.1:`port` (the caller closes it); throws
// with the reason when the connection is refused.
int connect_loopback(int port);
// Scrapes /metrics on `port` until `ready` holds for it (or 10 s passed);
// returns the last scrape. Each scrape is a loopback connection and an HTTP
// exchange: tests counting those must not poll.
PromText scrape_until(int port, const std::function<bool(const PromText&)>& ready);

}  // namespace nwtest
