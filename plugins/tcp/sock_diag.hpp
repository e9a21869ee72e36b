// Live TCP statistics over NETLINK_SOCK_DIAG (INET_DIAG, what `ss` uses): the
// conn_table path for kernels that refuse the iter/bpf_map_elem program. It
// needs no BPF at all, so every kernel netwatcher runs on allows it.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "netwatcher/status.hpp"
#include "tcp.h"

namespace netwatcher::tcp {

// One socket as INET_DIAG reports it. `stats` holds what the iterator would
// read, except that its byte counts are the kernel's raw RFC 4898 counters
// (SYN and FIN included, as in struct tcp_sock) and backlog is not known.
struct DiagSocket {
  nw_tuple tuple{};  // local / remote, ports in host order, like nw_read_sock_tuple()
  std::uint32_t state = 0;
  std::uint32_t write_queue = 0;  // write_seq - snd_una
  tcp_conn_stats stats{};
  bool has_rcv_wnd = false;  // tcp_info.tcpi_rcv_wnd exists from Linux 6.? on
};

// The TCP state numbers this path needs, by name from the running kernel's
// BTF (the plugin's state table: value -> name without "TCP_").
struct DiagStates {
  explicit DiagStates(const std::map<std::uint32_t, std::string>& names);
  std::uint32_t dump_mask = 0;                   // every state but LISTEN, TIME_WAIT, NEW_SYN_RECV
  std::uint32_t fin_received = 0, fin_sent = 0;  // masks (1 << state)
};

// Every IPv4 and IPv6 TCP socket in `states` of the network namespace the
// calling thread is in.
Status dump_tcp_sockets(const DiagStates& states, std::vector<DiagSocket>& out);

// Statistics of a tracked connection from its socket's INET_DIAG entry, with
// the same SYN/FIN corrections as the BPF side's read_stats().
tcp_conn_stats stats_from_diag(const DiagSocket& socket, const tcp_conn_info& info,
                               const DiagStates& states);

// Finds a file for each network namespace inode (own netns, /run/netns/*,
// /proc/<pid>/ns/net) and runs dump_tcp_sockets() inside it. Namespaces are
// entered with setns() on the calling thread, which returns to its own before
// this returns.
class NamespaceDumper {
 public:
  // Sockets per netns inode; inodes whose namespace was not found (no process
  // or bind mount holds it any more) are absent and listed in `missing`.
  Status dump(const DiagStates& states, const std::vector<std::uint32_t>& inodes,
              std::map<std::uint32_t, std::vector<DiagSocket>>& out,
              std::vector<std::uint32_t>& missing);

 private:
  std::string find(std::uint32_t inode);
  std::map<std::uint32_t, std::string> paths_;  // last known file per inode
};

}  // namespace netwatcher::tcp
