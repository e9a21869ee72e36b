// udp: datagrams and flows with the time each datagram spends in the kernel,
// receive-queue failures, and latency histograms by direction.
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <sys/socket.h>
#include <time.h>

#include <cerrno>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "netwatcher/format.hpp"
#include "netwatcher/kernel.hpp"
#include "netwatcher/plugin.hpp"
#include "udp.h"
#include "udp.skel.h"

namespace {

using namespace netwatcher;

constexpr const char* kDirectionNames[UDP_DIRECTIONS] = {"rx", "tx"};
constexpr const char* kFailureNames[UDP_FAILURES] = {"receive_buffer_full", "memory_limit",
                                                     "other"};
// Kernel time: 2^8 ns (256 ns) .. 2^26 ns (~67 ms).
constexpr int kKernelFirstLog2 = 8, kKernelLastLog2 = 26;

enum Event : std::size_t { kDatagramEvent, kFailureEvent, kFlowEvent };

enum DatagramField : std::size_t {
  kDirection,
  kFamily,
  kLocalAddr,
  kLocalPort,
  kRemoteAddr,
  kRemotePort,
  kLength,
  kKernelNs,
  kPid,
  kComm,
  kSock,
  kNetns,
  kIfindex,
  kDatagramFieldCount
};

enum FailureField : std::size_t {
  kFailReason,
  kFailErrno,
  kFailFamily,
  kFailLocalAddr,
  kFailLocalPort,
  kFailRemoteAddr,
  kFailRemotePort,
  kFailLength,
  kFailSock,
  kFailNetns,
  kFailIfindex,
  kFailureFieldCount
};

enum FlowField : std::size_t {
  kFlowFamily,
  kFlowLocalAddr,
  kFlowLocalPort,
  kFlowRemoteAddr,
  kFlowRemotePort,
  kFlowPid,
  kFlowComm,
  kFlowRxDatagrams,
  kFlowRxBytes,
  kFlowTxDatagrams,
  kFlowTxBytes,
  kFlowRxKernelNs,
  kFlowTxKernelNs,
  kFlowQueueFailures,
  kFlowNetns,
  kFlowFieldCount
};

FieldSchema label(const char* name, const char* help, int width, bool optional = false) {
  return {name, FieldType::text, "", help, FieldRole::label, width, optional};
}
FieldSchema number(const char* name, const char* unit, const char* help, FieldRole role, int width,
                   bool optional = false) {
  return {name, FieldType::u64, unit, help, role, width, optional};
}

std::vector<FieldSchema> endpoint_fields() {
  return {
      label("family", "ipv4 or ipv6", 4),
      label("local_addr", "address on this host", 15),
      number("local_port", "", "port on this host", FieldRole::label, 5),
      label("remote_addr", "peer address", 15),
      number("remote_port", "", "peer port", FieldRole::label, 5),
  };
}

template <class... Lists>
std::vector<FieldSchema> concat(std::vector<FieldSchema> first, Lists... rest) {
  (first.insert(first.end(), rest.begin(), rest.end()), ...);
  return first;
}

class UdpPlugin {
 public:
  PluginDescription describe() const {
    PluginDescription d;
    d.config = {
        {"events", ConfigType::boolean, false,
         "emit a udp_datagram event per datagram (rate-limited); flows and metrics are always "
         "kept"},
        {"failure_events", ConfigType::boolean, true,
         "emit a udp_queue_failure event when a socket refuses a datagram (rate-limited)"},
        {"flows", ConfigType::boolean, true,
         "emit a udp_flow event per flow active in the last snapshot_interval"},
        {"max_events_per_second", ConfigType::integer, std::int64_t{1000},
         "udp_datagram and udp_queue_failure events per second across all CPUs; the rest are "
         "counted as suppressed (0 = no limit)",
         0, 10000000},
        {"flow_idle_seconds", ConfigType::integer, std::int64_t{120},
         "forget a flow after this long without a datagram", 1, 86400},
        {"max_flows", ConfigType::integer, std::int64_t{16384},
         "flows tracked in the kernel at once (least recently used are evicted)", 64, 1 << 22},
        {"max_tracked_datagrams", ConfigType::integer, std::int64_t{16384},
         "datagrams in flight between hooks tracked at once, per direction, and send calls in "
         "progress (LRU)",
         256, 1 << 22},
        {"max_sockets", ConfigType::integer, std::int64_t{16384},
         "sockets whose owning process is remembered at once (LRU)", 256, 1 << 22},
    };
    d.flags = {
        {'u', "udp", "enabled", "UDP datagrams, flows and kernel latency"},
        {0, "udp-events", "events", "one event per UDP datagram (rate-limited)"},
    };
    d.events = {
        {"udp_datagram", "a datagram reached its socket (rx) or the driver accepted it (tx)",
         concat(
             {label("direction", "rx or tx", 2)}, endpoint_fields(),
             std::vector<FieldSchema>{
                 number("length", "bytes", "UDP payload", FieldRole::value, 6),
                 number("kernel_ns", "nanoseconds",
                        "rx: IP layer entry to the socket receive queue; tx: send call to the "
                        "driver",
                        FieldRole::value, 9, true),
                 number("pid", "",
                        "the socket's owner: the process that last sent, read or "
                        "waited on it",
                        FieldRole::label, 7, true),
                 label("comm", "its command name", 15, true),
                 number("sock", kAddressUnit, "socket address (kernel pointer)", FieldRole::label,
                        18),
                 number("netns", "", "network namespace inode", FieldRole::label, 10),
                 number("ifindex", "", "interface it arrived on or left by", FieldRole::label, 7),
             })},
        {"udp_queue_failure", "a socket refused a received datagram (udp:udp_fail_queue_rcv_skb)",
         concat({label("reason", "receive_buffer_full, memory_limit or other", 19),
                 {"errno", FieldType::i64, "", "the kernel's error code", FieldRole::label, 5}},
                endpoint_fields(),
                std::vector<FieldSchema>{
                    number("length", "bytes", "UDP payload", FieldRole::value, 6),
                    number("sock", kAddressUnit, "socket address (kernel pointer)",
                           FieldRole::label, 18),
                    number("netns", "", "network namespace inode", FieldRole::label, 10),
                    number("ifindex", "", "interface it arrived on", FieldRole::label, 7),
                })},
        {"udp_flow",
         "one flow (local and remote address and port), every snapshot_interval while active",
         concat(
             endpoint_fields(),
             std::vector<FieldSchema>{
                 number("pid", "", "last process seen sending or reading", FieldRole::label, 7,
                        true),
                 label("comm", "its command name", 15, true),
                 number("rx_datagrams", "",
                        "datagrams that reached the socket (refused ones included)",
                        FieldRole::value, 8),
                 number("rx_bytes", "bytes", "their payload", FieldRole::value, 10),
                 number("tx_datagrams", "", "datagrams handed to a device", FieldRole::value, 8),
                 number("tx_bytes", "bytes", "their payload", FieldRole::value, 10),
                 number("rx_kernel_ns", "nanoseconds",
                        "mean time from IP layer entry to the socket queue", FieldRole::value, 9,
                        true),
                 number("tx_kernel_ns", "nanoseconds", "mean time from the send call to the driver",
                        FieldRole::value, 9, true),
                 number("queue_failures", "", "datagrams the socket refused", FieldRole::value, 6),
                 number("netns", "", "network namespace inode", FieldRole::label, 10),
             })},
    };
    d.metrics = {
        {"netwatcher_udp_datagrams_total",
         MetricType::counter,
         "UDP datagrams that reached their socket (rx; refused ones included, see "
         "receive_queue_failures) or were handed to a device (tx).",
         {"direction"}},
        {"netwatcher_udp_bytes_total",
         MetricType::counter,
         "UDP payload bytes of those datagrams.",
         {"direction"}},
        {"netwatcher_udp_latency_seconds",
         MetricType::histogram,
         "Time in the kernel per datagram: rx from IP layer entry to the socket receive queue, "
         "tx from the send call to the driver.",
         {"direction"},
         log2_ns_bucket_bounds(kKernelFirstLog2, kKernelLastLog2)},
        {"netwatcher_udp_receive_queue_failures_total",
         MetricType::counter,
         "Datagrams a socket refused to queue; receive_buffer_full is a receive buffer "
         "(SO_RCVBUF) overflow.",
         {"reason"}},
        {"netwatcher_udp_flows", MetricType::gauge, "UDP flows tracked in the kernel.", {}},
    };
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
    datagram_events_ = config.get_bool("events");
    failure_events_ = config.get_bool("failure_events");
    flows_ = config.get_bool("flows");
    max_events_per_second_ = static_cast<std::uint64_t>(config.get_int("max_events_per_second"));
    flow_idle_ns_ = static_cast<std::uint64_t>(config.get_int("flow_idle_seconds")) * 1000000000ULL;
    max_flows_ = static_cast<std::uint32_t>(config.get_int("max_flows"));
    max_tracked_ = static_cast<std::uint32_t>(config.get_int("max_tracked_datagrams"));
    max_sockets_ = static_cast<std::uint32_t>(config.get_int("max_sockets"));
    filter_ = filter;
    return Status::success();
  }

  Status open(bpf_object** object) {
    skeleton_.reset(udp_bpf__open());
    if (!skeleton_)
      return Status::failure("cannot open BPF object: " + std::string(std::strerror(errno)));
    fill_kernel_filter(const_cast<nw_filter&>(skeleton_->rodata->nw_filter_cfg), filter_);
    auto& cfg = const_cast<udp_config&>(skeleton_->rodata->udp_cfg);
    cfg.datagram_events = datagram_events_;
    cfg.failure_events = failure_events_;
    cfg.max_events_per_second = max_events_per_second_;
    bpf_map__set_max_entries(skeleton_->maps.udp_flows, max_flows_);
    bpf_map__set_max_entries(skeleton_->maps.udp_rx_inflight, max_tracked_);
    bpf_map__set_max_entries(skeleton_->maps.udp_tx_inflight, max_tracked_);
    bpf_map__set_max_entries(skeleton_->maps.udp_send_start, max_tracked_);
    bpf_map__set_max_entries(skeleton_->maps.udp_owners, max_sockets_);
    *object = skeleton_->obj;
    return Status::success();
  }

  Status load() {
    // The host has picked the candidates by now: the classic failure
    // tracepoint needs the queue hook to remember each datagram.
    const_cast<bool&>(skeleton_->rodata->udp_remember_queued) =
        bpf_program__autoload(skeleton_->progs.udp_queue_failure_tp);
    if (int err = udp_bpf__load(skeleton_.get()); err)
      return Status::failure("cannot load BPF object: " + std::string(std::strerror(-err)));
    return Status::success();
  }

  Status start(PluginHost& host) {
    datagrams_ = host.metric("netwatcher_udp_datagrams_total");
    bytes_ = host.metric("netwatcher_udp_bytes_total");
    latency_ = host.metric("netwatcher_udp_latency_seconds");
    failures_ = host.metric("netwatcher_udp_receive_queue_failures_total");
    flow_count_ = host.metric("netwatcher_udp_flows");
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
    auto s = sum_percpu<udp_stats>(bpf_map__fd(skeleton_->maps.udp_stats), &kZeroKey);
    if (!s) return Status::failure("reading udp_stats: " + std::string(std::strerror(errno)));
    for (int dir = 0; dir < UDP_DIRECTIONS; ++dir) {
      LabelValues labels{kDirectionNames[dir]};
      datagrams_->set(labels, static_cast<double>(s->datagrams[dir]));
      bytes_->set(labels, static_cast<double>(s->bytes[dir]));
    }
    latency_->set_histogram(
        {"rx"},
        log2_slots_to_buckets(s->latency_slots[UDP_LATENCY_RX], kKernelFirstLog2, kKernelLastLog2),
        static_cast<double>(s->latency_ns[UDP_LATENCY_RX]) / 1e9);
    latency_->set_histogram(
        {"tx"},
        log2_slots_to_buckets(s->latency_slots[UDP_LATENCY_TX], kKernelFirstLog2, kKernelLastLog2),
        static_cast<double>(s->latency_ns[UDP_LATENCY_TX]) / 1e9);
    for (int r = 0; r < UDP_FAILURES; ++r)
      failures_->set({kFailureNames[r]}, static_cast<double>(s->failures[r]));
    return Status::success();
  }

  void stop() { skeleton_.reset(); }

 private:
  static constexpr std::uint32_t kZeroKey = 0;

  struct SkeletonDeleter {
    void operator()(udp_bpf* skeleton) const { udp_bpf__destroy(skeleton); }
  };

  static void put_endpoints(std::vector<Value>& v, std::size_t first, const nw_tuple& t) {
    int family = t.family == AF_INET6 ? AF_INET6 : AF_INET;
    v[first] = std::string(family_name(family));
    v[first + 1] = format_address(family, t.saddr);
    v[first + 2] = std::uint64_t{t.sport};
    v[first + 3] = format_address(family, t.daddr);
    v[first + 4] = std::uint64_t{t.dport};
  }

  static std::string comm_of(const char (&comm)[NW_TASK_COMM_LEN]) {
    return std::string(comm, strnlen(comm, NW_TASK_COMM_LEN));
  }

  Status decode_datagram(std::span<const std::byte> bytes, EventEmitter& out) {
    if (bytes.size() < sizeof(udp_datagram_record))
      return Status::failure("udp_datagram record of " + std::to_string(bytes.size()) +
                             " bytes, expected " + std::to_string(sizeof(udp_datagram_record)));
    udp_datagram_record rec;
    std::memcpy(&rec, bytes.data(), sizeof rec);
    if (rec.direction >= UDP_DIRECTIONS)
      return Status::failure("udp_datagram record with direction " + std::to_string(rec.direction));
    std::vector<Value> v = out.make_values(kDatagramFieldCount);
    v[kDirection] = std::string(kDirectionNames[rec.direction]);
    put_endpoints(v, kFamily, rec.tuple);
    v[kLength] = std::uint64_t{rec.length};
    if (rec.flags & UDP_HAS_KERNEL_NS) v[kKernelNs] = std::uint64_t{rec.kernel_ns};
    if (rec.flags & UDP_HAS_PID) {
      v[kPid] = std::uint64_t{rec.pid};
      v[kComm] = comm_of(rec.comm);
    }
    v[kSock] = std::uint64_t{rec.sock};
    v[kNetns] = std::uint64_t{rec.netns};
    v[kIfindex] = std::uint64_t{rec.ifindex};
    out.emit(kDatagramEvent, rec.hdr.timestamp_ns, std::move(v));
    return Status::success();
  }

  Status decode_failure(std::span<const std::byte> bytes, EventEmitter& out) {
    if (bytes.size() < sizeof(udp_failure_record))
      return Status::failure("udp_queue_failure record of " + std::to_string(bytes.size()) +
                             " bytes, expected " + std::to_string(sizeof(udp_failure_record)));
    udp_failure_record rec;
    std::memcpy(&rec, bytes.data(), sizeof rec);
    if (rec.reason >= UDP_FAILURES)
      return Status::failure("udp_queue_failure record with reason " + std::to_string(rec.reason));
    std::vector<Value> v = out.make_values(kFailureFieldCount);
    v[kFailReason] = std::string(kFailureNames[rec.reason]);
    v[kFailErrno] = std::int64_t{rec.rc};
    put_endpoints(v, kFailFamily, rec.tuple);
    v[kFailLength] = std::uint64_t{rec.length};
    v[kFailSock] = std::uint64_t{rec.sock};
    v[kFailNetns] = std::uint64_t{rec.netns};
    v[kFailIfindex] = std::uint64_t{rec.ifindex};
    out.emit(kFailureEvent, rec.hdr.timestamp_ns, std::move(v));
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
      if (flow.last_ns + flow_idle_ns_ < now) {
        idle.push_back(key);
        return;
      }
      if (!flows_ || flow.last_ns <= last_collect_ns_) return;
      if (filter_.pid && flow.pid != filter_.pid) return;
      std::vector<Value> v = out.make_values(kFlowFieldCount);
      put_endpoints(v, kFlowFamily, key.tuple);
      if (flow.pid) {
        v[kFlowPid] = std::uint64_t{flow.pid};
        v[kFlowComm] = comm_of(flow.comm);
      }
      v[kFlowRxDatagrams] = std::uint64_t{flow.datagrams[UDP_RX]};
      v[kFlowRxBytes] = std::uint64_t{flow.bytes[UDP_RX]};
      v[kFlowTxDatagrams] = std::uint64_t{flow.datagrams[UDP_TX]};
      v[kFlowTxBytes] = std::uint64_t{flow.bytes[UDP_TX]};
      if (flow.timed[UDP_RX]) v[kFlowRxKernelNs] = flow.latency_ns[UDP_RX] / flow.timed[UDP_RX];
      if (flow.timed[UDP_TX]) v[kFlowTxKernelNs] = flow.latency_ns[UDP_TX] / flow.timed[UDP_TX];
      v[kFlowQueueFailures] = std::uint64_t{flow.queue_failures};
      v[kFlowNetns] = std::uint64_t{key.netns};
      out.emit(kFlowEvent, 0, std::move(v));
    });
    // Expired, not evicted: the table account must not take them for evictions.
    std::uint64_t expired = 0;
    for (const auto& gone : idle)
      if (bpf_map_delete_elem(fd, &gone) == 0) ++expired;
    if (flows_table_) flows_table_->count_removed(expired);
    flow_count_->set({}, static_cast<double>(tracked - idle.size()));
    last_collect_ns_ = now;
  }

  std::unique_ptr<udp_bpf, SkeletonDeleter> skeleton_;
  bool datagram_events_ = false, failure_events_ = true, flows_ = true;
  std::uint64_t max_events_per_second_ = 1000;
  std::uint64_t flow_idle_ns_ = 120ULL * 1000000000ULL;
  std::uint32_t max_flows_ = 16384, max_tracked_ = 16384, max_sockets_ = 16384;
  TableAccount* flows_table_ = nullptr;
  GlobalFilter filter_;
  std::uint64_t last_collect_ns_ = 0;
  MetricFamily *datagrams_ = nullptr, *bytes_ = nullptr, *latency_ = nullptr, *failures_ = nullptr,
               *flow_count_ = nullptr;
};

}  // namespace

NETWATCHER_PROBE_PLUGIN(UdpPlugin, "udp", "1.0.0",
                        "UDP datagrams and flows, kernel latency per direction, receive-queue "
                        "failures")
