// udp: datagrams and flows with the time each datagram spends in the kernel,
// receive-queue failures, and latency histograms by direction.
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <vector>

#include "netwatcher/format.hpp"
#include "netwatcher/kernel.hpp"
#include "netwatcher/plugin.hpp"
#include "netwatcher/skeleton.hpp"
#include "udp.h"
#include "udp.skel.h"

namespace {

using namespace netwatcher;

constexpr const char* kDirectionNames[UDP_DIRECTIONS] = {"rx", "tx"};
constexpr const char* kFailureNames[UDP_FAILURES] = {"receive_buffer_full", "memory_limit",
                                                     "other"};
// Kernel time: 2^8 ns (256 ns) .. 2^26 ns (~67 ms).
constexpr int kKernelFirstLog2 = 8, kKernelLastLog2 = 26;

// The two ends of a tuple whose saddr/sport are local, daddr/dport remote.
struct Endpoints {
  explicit Endpoints(EventDecl& e) : e(e) {}
  void set(EventDecl::Row& row, const nw_tuple& t) const {
    int f = t.family == AF_INET6 ? AF_INET6 : AF_INET;
    row.set(family, family_name(f))
        .set(local_addr, format_address(f, t.saddr))
        .set(local_port, t.sport)
        .set(remote_addr, format_address(f, t.daddr))
        .set(remote_port, t.dport);
  }
  EventDecl& e;
  Label<std::string> family{e, "family", "ipv4 or ipv6", {.width = 4}};
  Label<std::string> local_addr{e, "local_addr", "address on this host", {.width = 15}};
  Label<std::uint64_t> local_port{e, "local_port", "port on this host", {.width = 5}};
  Label<std::string> remote_addr{e, "remote_addr", "peer address", {.width = 15}};
  Label<std::uint64_t> remote_port{e, "remote_port", "peer port", {.width = 5}};
};

const FieldOptions kSock = {.unit = kAddressUnit, .width = 18};

class UdpPlugin {
 public:
  PluginDescription describe() const {
    PluginDescription d;
    d.config = keys_.keys();
    d.flags = {
        {'u', "udp", "enabled", "UDP datagrams, flows and kernel latency"},
        {0, "udp-events", "events", "one event per UDP datagram (rate-limited)"},
    };
    d.events = events_.schemas();
    d.metrics = metrics_.specs();
    d.hooks = {
        {"ip_receive",
         "IP layer entry (net:netif_receive_skb)",
         {"udp_ip_receive", "udp_ip_receive_tp"},
         true},
        {"socket_queue",
         "right before the socket queues a datagram (cgroup_skb ingress at the cgroup v2 root)",
         {"udp_socket_queue"},
         true},
        {"queue_failure",
         "udp:udp_fail_queue_rcv_skb",
         {"udp_queue_failure", "udp_queue_failure_tp"},
         false},
        {"proto_mem_drop",
         "a datagram freed for protocol memory (udp_mem) without udp_fail_queue_rcv_skb, as "
         "6.18+ does (skb:kfree_skb with rx_sk, reason PROTO_MEM)",
         {"udp_proto_mem_drop"},
         false},
        {"bind_enter", "a process binds a socket", {"udp_bind_enter"}, false},
        {"connect_enter", "a process connects a socket", {"udp_connect_enter"}, false},
        {"recvfrom_enter", "a process waits on a socket", {"udp_recvfrom_enter"}, false},
        {"recvmsg_enter", "a process waits on a socket", {"udp_recvmsg_enter"}, false},
        {"recvmmsg_enter", "a process waits on a socket", {"udp_recvmmsg_enter"}, false},
        {"recv_done",
         "one read done (sock:sock_recv_length)",
         {"udp_recv_done", "udp_recv_done_tp"},
         false},
        {"sendto_enter", "send call starts", {"udp_sendto_enter"}, false},
        {"sendmsg_enter", "send call starts", {"udp_sendmsg_enter"}, false},
        {"sendmmsg_enter", "send call starts", {"udp_sendmmsg_enter"}, false},
        {"sendto_exit", "send call ends", {"udp_sendto_exit"}, false},
        {"sendmsg_exit", "send call ends", {"udp_sendmsg_exit"}, false},
        {"sendmmsg_exit", "send call ends", {"udp_sendmmsg_exit"}, false},
        {"send_done",
         "one message sent (sock:sock_send_length)",
         {"udp_send_done", "udp_send_done_tp"},
         false},
        {"dev_queue",
         "device layer entry (net:net_dev_queue)",
         {"udp_dev_queue", "udp_dev_queue_tp"},
         true},
        {"dev_xmit",
         "driver accepted the packet (net:net_dev_xmit)",
         {"udp_dev_xmit", "udp_dev_xmit_tp"},
         true},
    };
    return d;
  }

  Status configure(const ConfigValues& config, const GlobalFilter& filter) {
    if (Status s = keys_.read(config); !s) return s;
    cfg_ = {.max_events_per_second = *max_events_per_second_,
            .datagram_events = *datagram_events_,
            .failure_events = *failure_events_};
    filter_ = filter;
    return Status::success();
  }

  Status open(bpf_object** object) {
    if (Status s = skeleton_.open(object, filter_); !s) return s;
    tunable(skeleton_->rodata->udp_cfg) = cfg_;
    bpf_map__set_max_entries(skeleton_->maps.udp_flows, *max_flows_);
    bpf_map__set_max_entries(skeleton_->maps.udp_rx_inflight, *max_tracked_);
    bpf_map__set_max_entries(skeleton_->maps.udp_tx_inflight, *max_tracked_);
    bpf_map__set_max_entries(skeleton_->maps.udp_send_start, *max_tracked_);
    bpf_map__set_max_entries(skeleton_->maps.udp_owners, *max_sockets_);
    return Status::success();
  }

  Status load() {
    // The host has picked the candidates by now: the classic failure
    // tracepoint needs the queue hook to remember each datagram.
    tunable(skeleton_->rodata->udp_remember_queued) =
        bpf_program__autoload(skeleton_->progs.udp_queue_failure_tp);
    return skeleton_.load();
  }

  Status start(PluginHost& host) {
    if (Status s = metrics_.bind(host); !s) return s;
    last_collect_ns_ = monotonic_ns();
    flows_table_ =
        host.track_table({"flows", "udp_flows", UDP_TABLE_FLOWS, 0, "plugins.udp.max_flows"});
    host.track_table({"rx_datagrams", "udp_rx_inflight", UDP_TABLE_RX_DATAGRAMS, 0,
                      "plugins.udp.max_tracked_datagrams"});
    host.track_table({"tx_datagrams", "udp_tx_inflight", UDP_TABLE_TX_DATAGRAMS, 0,
                      "plugins.udp.max_tracked_datagrams"});
    host.track_table({"send_calls", "udp_send_start", UDP_TABLE_SEND_CALLS, 0,
                      "plugins.udp.max_tracked_datagrams"});
    host.track_table({"sockets", "udp_owners", UDP_TABLE_OWNERS, 0, "plugins.udp.max_sockets"});
    host.set_metrics_refresh([this] { return refresh_metrics(); });
    return Status::success();
  }

  Status decode(std::span<const std::byte> bytes, EventEmitter& out) {
    nw_record_header hdr;
    if (bytes.size() < sizeof hdr)
      return Status::failure("udp record of " + std::to_string(bytes.size()) + " bytes");
    std::memcpy(&hdr, bytes.data(), sizeof hdr);
    if (hdr.type == UDP_RECORD_DATAGRAM) return decode_datagram(bytes, out);
    if (hdr.type == UDP_RECORD_QUEUE_FAILURE) return decode_failure(bytes, out);
    return Status::failure("unknown udp record type " + std::to_string(hdr.type));
  }

  Status collect(EventEmitter& out) {
    if (Status s = refresh_metrics(); !s) return s;
    collect_flows(out);
    return Status::success();
  }

  // The counters and histograms mirror in-kernel ones: also run at scrape
  // time. The flow gauge stays with collect_flows(), which walks the flows.
  Status refresh_metrics() {
    const std::uint32_t zero = 0;
    auto s = sum_percpu<udp_stats>(bpf_map__fd(skeleton_->maps.udp_stats), &zero);
    if (!s) return Status::failure("reading udp_stats: " + std::string(std::strerror(errno)));
    // UDP_LATENCY_RX/TX are UDP_RX/TX.
    for (int dir = 0; dir < UDP_DIRECTIONS; ++dir) {
      LabelValues labels{kDirectionNames[dir]};
      datagrams_.mirror(labels, static_cast<double>(s->datagrams[dir]));
      bytes_.mirror(labels, static_cast<double>(s->bytes[dir]));
      latency_.replace(
          labels, log2_slots_to_buckets(s->latency_slots[dir], kKernelFirstLog2, kKernelLastLog2),
          static_cast<double>(s->latency_ns[dir]) / 1e9);
    }
    for (int r = 0; r < UDP_FAILURES; ++r)
      failures_.mirror({kFailureNames[r]}, static_cast<double>(s->failures[r]));
    return Status::success();
  }

  void stop() { skeleton_.reset(); }

 private:
  Status decode_datagram(std::span<const std::byte> bytes, EventEmitter& out) {
    udp_datagram_record rec;
    if (Status s = read_record(bytes, "udp_datagram", rec); !s) return s;
    if (rec.direction >= UDP_DIRECTIONS)
      return Status::failure("udp_datagram record with direction " + std::to_string(rec.direction));
    const Datagram& e = datagram_;
    auto row = e.row(out);
    row.set(e.direction, kDirectionNames[rec.direction])
        .set(e.length, rec.length)
        .set(e.sock, rec.sock)
        .set(e.netns, rec.netns)
        .set(e.ifindex, rec.ifindex);
    e.ends.set(row, rec.tuple);
    if (rec.flags & UDP_HAS_KERNEL_NS) row.set(e.kernel_ns, rec.kernel_ns);
    if (rec.flags & UDP_HAS_PID) row.set(e.pid, rec.pid).set(e.comm, bounded_text(rec.comm));
    if (rec.cgroup) row.set(e.cgroup_id, rec.cgroup);
    row.emit(rec.hdr.timestamp_ns);
    return Status::success();
  }

  Status decode_failure(std::span<const std::byte> bytes, EventEmitter& out) {
    udp_failure_record rec;
    if (Status s = read_record(bytes, "udp_queue_failure", rec); !s) return s;
    if (rec.reason >= UDP_FAILURES)
      return Status::failure("udp_queue_failure record with reason " + std::to_string(rec.reason));
    const QueueFailure& e = failure_;
    auto row = e.row(out);
    row.set(e.reason, kFailureNames[rec.reason])
        .set(e.error, rec.rc)
        .set(e.length, rec.length)
        .set(e.sock, rec.sock)
        .set(e.netns, rec.netns)
        .set(e.ifindex, rec.ifindex);
    e.ends.set(row, rec.tuple);
    row.emit(rec.hdr.timestamp_ns);
    return Status::success();
  }

  void collect_flows(EventEmitter& out) {
    const std::uint64_t now = monotonic_ns();
    const int fd = bpf_map__fd(skeleton_->maps.udp_flows);
    std::vector<udp_flow_key> idle;
    std::uint64_t tracked = 0;
    for_each_key<udp_flow_key>(fd, [&](const udp_flow_key& key) {
      udp_flow flow;
      if (bpf_map_lookup_elem(fd, &key, &flow) != 0) return;
      ++tracked;
      if (flow.last_ns + *flow_idle_seconds_ * 1000000000ULL < now) {
        idle.push_back(key);
        return;
      }
      if (!*flows_ || flow.last_ns <= last_collect_ns_) return;
      if (filter_.pid && flow.pid != filter_.pid) return;
      const Flow& e = flow_;
      auto row = e.row(out);
      e.ends.set(row, key.tuple);
      row.set(e.rx_datagrams, flow.datagrams[UDP_RX])
          .set(e.rx_bytes, flow.bytes[UDP_RX])
          .set(e.tx_datagrams, flow.datagrams[UDP_TX])
          .set(e.tx_bytes, flow.bytes[UDP_TX])
          .set(e.queue_failures, flow.queue_failures)
          .set(e.netns, key.netns);
      if (flow.pid) row.set(e.pid, flow.pid).set(e.comm, bounded_text(flow.comm));
      if (flow.cgroup) row.set(e.cgroup_id, flow.cgroup);
      if (flow.timed[UDP_RX]) row.set(e.rx_kernel_ns, flow.latency_ns[UDP_RX] / flow.timed[UDP_RX]);
      if (flow.timed[UDP_TX]) row.set(e.tx_kernel_ns, flow.latency_ns[UDP_TX] / flow.timed[UDP_TX]);
      row.emit();
    });
    // Expired, not evicted: the table account must not take them for evictions.
    std::uint64_t expired = 0;
    for (const auto& gone : idle)
      if (bpf_map_delete_elem(fd, &gone) == 0) ++expired;
    if (flows_table_) flows_table_->count_removed(expired);
    flow_count_.set({}, static_cast<double>(tracked - idle.size()));
    last_collect_ns_ = now;
  }

  KeySet keys_;
  Setting<bool> datagram_events_{
      keys_, "events", false,
      "emit a udp_datagram event per datagram (rate-limited); flows and metrics are always kept"};
  Setting<bool> failure_events_{
      keys_, "failure_events", true,
      "emit a udp_queue_failure event when a socket refuses a datagram (rate-limited)"};
  Setting<bool> flows_{keys_, "flows", true,
                       "emit a udp_flow event per flow active in the last snapshot_interval"};
  Setting<std::uint64_t> max_events_per_second_{
      keys_,
      "max_events_per_second",
      1000,
      "udp_datagram and udp_queue_failure events per second across all CPUs; the rest are "
      "counted as suppressed (0 = no limit)",
      {.min = 0, .max = 10000000}};
  Setting<std::uint64_t> flow_idle_seconds_{keys_,
                                            "flow_idle_seconds",
                                            120,
                                            "forget a flow after this long without a datagram",
                                            {.min = 1, .max = 86400}};
  Setting<std::uint32_t> max_flows_{
      keys_,
      "max_flows",
      16384,
      "flows tracked in the kernel at once (least recently used are evicted)",
      {.min = 64, .max = 1 << 22}};
  Setting<std::uint32_t> max_tracked_{
      keys_,
      "max_tracked_datagrams",
      16384,
      "datagrams in flight between hooks tracked at once, per direction, and send calls in "
      "progress (LRU)",
      {.min = 256, .max = 1 << 22}};
  Setting<std::uint32_t> max_sockets_{keys_,
                                      "max_sockets",
                                      16384,
                                      "sockets whose owning process is remembered at once (LRU)",
                                      {.min = 256, .max = 1 << 22}};

  EventSet events_;
  struct Datagram : EventDecl {
    explicit Datagram(EventSet& set)
        : EventDecl(set, "udp_datagram",
                    "a datagram reached its socket (rx) or the driver accepted it (tx)") {}
    Label<std::string> direction{
        *this, "direction", "rx or tx", {.width = 2, .anomaly = AnomalyRole::key}};
    Endpoints ends{*this};
    Field<std::uint64_t> length{*this, "length", "UDP payload", {.unit = "bytes", .width = 6}};
    Field<std::uint64_t> kernel_ns{
        *this,
        "kernel_ns",
        "rx: IP layer entry to the socket receive queue; tx: send call to the driver",
        {.unit = "nanoseconds", .width = 9, .optional = true, .anomaly = AnomalyRole::sample}};
    Label<std::uint64_t> pid{*this,
                             "pid",
                             "the socket's owner: the process that last sent, read or waited on it",
                             {.width = 7, .optional = true}};
    Label<std::string> comm{*this, "comm", "its command name", {.width = 15, .optional = true}};
    CgroupIdLabel cgroup_id{*this};
    Label<std::uint64_t> sock{*this, "sock", "socket address (kernel pointer)", kSock};
    Label<std::uint64_t> netns{*this, "netns", "network namespace inode", {.width = 10}};
    Label<std::uint64_t> ifindex{
        *this, "ifindex", "interface it arrived on or left by", {.width = 7}};
  } datagram_{events_};
  struct QueueFailure : EventDecl {
    explicit QueueFailure(EventSet& set)
        : EventDecl(set, "udp_queue_failure",
                    "a socket refused a received datagram (udp:udp_fail_queue_rcv_skb, or a "
                    "PROTO_MEM drop)") {}
    Label<std::string> reason{
        *this, "reason", "receive_buffer_full, memory_limit or other", {.width = 19}};
    Label<std::int64_t> error{*this, "errno", "the kernel's error code", {.width = 5}};
    Endpoints ends{*this};
    Field<std::uint64_t> length{*this, "length", "UDP payload", {.unit = "bytes", .width = 6}};
    Label<std::uint64_t> sock{*this, "sock", "socket address (kernel pointer)", kSock};
    Label<std::uint64_t> netns{*this, "netns", "network namespace inode", {.width = 10}};
    Label<std::uint64_t> ifindex{*this, "ifindex", "interface it arrived on", {.width = 7}};
  } failure_{events_};
  struct Flow : EventDecl {
    explicit Flow(EventSet& set)
        : EventDecl(set, "udp_flow",
                    "one flow (local and remote address and port), every snapshot_interval while "
                    "active") {}
    Endpoints ends{*this};
    Label<std::uint64_t> pid{
        *this, "pid", "last process seen sending or reading", {.width = 7, .optional = true}};
    Label<std::string> comm{*this, "comm", "its command name", {.width = 15, .optional = true}};
    CgroupIdLabel cgroup_id{*this};
    Field<std::uint64_t> rx_datagrams{*this,
                                      "rx_datagrams",
                                      "datagrams that reached the socket (refused ones included)",
                                      {.width = 8}};
    Field<std::uint64_t> rx_bytes{
        *this, "rx_bytes", "their payload", {.unit = "bytes", .width = 10}};
    Field<std::uint64_t> tx_datagrams{
        *this, "tx_datagrams", "datagrams handed to a device", {.width = 8}};
    Field<std::uint64_t> tx_bytes{
        *this, "tx_bytes", "their payload", {.unit = "bytes", .width = 10}};
    Field<std::uint64_t> rx_kernel_ns{*this,
                                      "rx_kernel_ns",
                                      "mean time from IP layer entry to the socket queue",
                                      {.unit = "nanoseconds", .width = 9, .optional = true}};
    Field<std::uint64_t> tx_kernel_ns{*this,
                                      "tx_kernel_ns",
                                      "mean time from the send call to the driver",
                                      {.unit = "nanoseconds", .width = 9, .optional = true}};
    Field<std::uint64_t> queue_failures{
        *this, "queue_failures", "datagrams the socket refused", {.width = 6}};
    Label<std::uint64_t> netns{*this, "netns", "network namespace inode", {.width = 10}};
  } flow_{events_};

  MetricSet metrics_;
  Counter datagrams_{metrics_,
                     "netwatcher_udp_datagrams_total",
                     "UDP datagrams that reached their socket (rx; refused ones included, see "
                     "receive_queue_failures) or were handed to a device (tx).",
                     {"direction"}};
  Counter bytes_{metrics_,
                 "netwatcher_udp_bytes_total",
                 "UDP payload bytes of those datagrams.",
                 {"direction"}};
  Histogram latency_{
      metrics_,
      "netwatcher_udp_latency_seconds",
      "Time in the kernel per datagram: rx from IP layer entry to the socket receive "
      "queue, tx from the send call to the driver.",
      {"direction"},
      log2_ns_bucket_bounds(kKernelFirstLog2, kKernelLastLog2)};
  Counter failures_{metrics_,
                    "netwatcher_udp_receive_queue_failures_total",
                    "Datagrams a socket refused to queue; receive_buffer_full is a receive buffer "
                    "(SO_RCVBUF) overflow.",
                    {"reason"}};
  Gauge flow_count_{metrics_, "netwatcher_udp_flows", "UDP flows tracked in the kernel."};

  Skeleton<udp_bpf> skeleton_{udp_bpf__open, udp_bpf__load, udp_bpf__destroy};
  udp_config cfg_ = {};
  TableAccount* flows_table_ = nullptr;
  GlobalFilter filter_;
  std::uint64_t last_collect_ns_ = 0;
};

}  // namespace

NETWATCHER_PROBE_PLUGIN(UdpPlugin, "udp", "1.0.0",
                        "UDP datagrams and flows, kernel latency per direction, receive-queue "
                        "failures")
