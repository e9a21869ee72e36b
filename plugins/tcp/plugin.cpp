// tcp: every TCP connection, its owner, tuple, state and internals.
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cerrno>
#include <climits>
#include <cstddef>
#include <cstring>
#include <deque>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "netwatcher/format.hpp"
#include "netwatcher/kernel.hpp"
#include "netwatcher/netns.hpp"
#include "netwatcher/plugin.hpp"
#include "netwatcher/skeleton.hpp"
#include "sock_diag.hpp"
#include "tcp.h"
#include "tcp.skel.h"

namespace {

using namespace netwatcher;
using Row = EventDecl::Row;

const char* const kErrorNames[TCP_ERROR_KINDS] = {"bad_checksum", "sequence_before_window",
                                                  "sequence_beyond_window", "invalid_ack", "paws"};
const char* const kLayerNames[TCP_LAYERS] = {"link", "ip", "transport", "application", "total"};
const char* const kPacketDirectionNames[TCP_PACKET_DIRECTIONS] = {"rx", "tx"};
constexpr std::uint8_t kDirections[] = {TCP_DIRECTION_CLIENT, TCP_DIRECTION_SERVER,
                                        TCP_DIRECTION_UNKNOWN};

// In-kernel histograms: srtt from 1 us to 8.6 s, layer times from 256 ns to 1 s.
constexpr int kRttFirstLog2 = 10, kRttLastLog2 = 33;
constexpr int kLayerFirstLog2 = 8, kLayerLastLog2 = 30;
// One step inside the extremes: the kernel refuses a second BPF link at a
// priority already taken at the same hook (EBUSY), and the netfilter plugin
// holds INT_MIN + 1 and INT_MAX - 1 to time whole hooks. Both run together.
constexpr int kFirstPriority = INT_MIN + 2;
constexpr int kLastPriority = INT_MAX - 2;
constexpr int kNfInetLocalIn = 1, kNfInetLocalOut = 3;

// An srtt histogram kept in user space, in the kernel's tcp_rtt_hist slots
// (log2 of nanoseconds), so both kinds publish through one path.
struct SrttHistogram {
  std::array<__u64, sizeof(tcp_rtt_hist::slots) / sizeof(__u64)> slots{};
  __u64 sum_ns = 0;

  void add(std::uint64_t ns) {
    std::size_t slot = ns ? static_cast<std::size_t>(std::bit_width(ns) - 1) : 0;
    slots[std::min(slot, slots.size() - 1)] += 1;
    sum_ns += ns;
  }
};

// The rows of one snapshot when the table is larger than snapshot_rows: the
// `limit` lowest socket addresses above the cursor, then, wrapping around,
// the lowest from the start. A bounded heap: memory stays at `limit` rows
// whatever the table's size, and each connection is shown at least once
// every ceil(connections / limit) snapshots.
class SnapshotWindow {
 public:
  SnapshotWindow(std::size_t limit, std::uint64_t cursor) : limit_(limit), order_{cursor} {}

  void offer(const tcp_conn_record& rec) {
    ++offered_;
    if (heap_.size() < limit_) {
      heap_.push_back(rec);
      std::push_heap(heap_.begin(), heap_.end(), order_);
    } else if (!heap_.empty() && order_(rec, heap_.front())) {
      std::pop_heap(heap_.begin(), heap_.end(), order_);
      heap_.back() = rec;
      std::push_heap(heap_.begin(), heap_.end(), order_);
    }
  }

  // The rows in socket order from the cursor on; moves `cursor` to the last
  // one, or back to the start when every row fitted.
  std::vector<tcp_conn_record> take(std::uint64_t& cursor) {
    std::sort_heap(heap_.begin(), heap_.end(), order_);
    cursor = offered_ <= limit_ || heap_.empty() ? 0 : heap_.back().sock;
    return std::move(heap_);
  }

 private:
  // Above the cursor first, then the sockets the window wraps around to.
  struct FromCursor {
    std::uint64_t cursor;
    bool operator()(const tcp_conn_record& a, const tcp_conn_record& b) const {
      return std::pair(a.sock <= cursor, a.sock) < std::pair(b.sock <= cursor, b.sock);
    }
  };

  std::size_t limit_;
  FromCursor order_;
  std::uint64_t offered_ = 0;
  std::vector<tcp_conn_record> heap_;  // max-heap in FromCursor order
};

using Names = std::map<std::uint32_t, std::string>;

Names kernel_names(const std::string& member, const std::string& prefix) {
  Names names;
  for (auto& [value, name] : kernel_enum(member, prefix))
    names[static_cast<std::uint32_t>(value)] = name;
  return names;
}

const char* direction_name(std::uint8_t direction) {
  switch (direction) {
    case TCP_DIRECTION_CLIENT:
      return "client";
    case TCP_DIRECTION_SERVER:
      return "server";
    default:
      return "unknown";
  }
}

// Where direction_name() says "unknown", the per-direction sums say it too.
std::size_t direction_slot(std::uint8_t direction) {
  return direction <= TCP_DIRECTION_SERVER ? direction : std::size_t{TCP_DIRECTION_UNKNOWN};
}

struct PayloadBytes {
  double received = 0, acked = 0;
  void add(const tcp_conn_stats& s) {
    received += static_cast<double>(s.bytes_received);
    acked += static_cast<double>(s.bytes_acked);
  }
};
using BytesByDirection = std::array<PayloadBytes, 3>;  // by tcp_direction

// A field that may be absent.
FieldOptions optional(std::string unit = "", int width = 0) {
  return {.unit = std::move(unit), .width = width, .optional = true};
}

// The socket a connection record is about, as the per-event records carry it.
tcp_who who_of(const tcp_conn_record& rec) {
  tcp_who who{};
  who.sock = rec.sock;
  who.tuple = rec.info.tuple;
  who.pid = rec.info.pid;
  who.cgroup = rec.info.cgroup;
  std::memcpy(who.comm, rec.info.comm, sizeof who.comm);
  return who;
}

// The leading fields of every tcp event: the socket and its owner.
struct Who {
  // Events that can be about no socket have an optional sock.
  explicit Who(EventDecl& e, bool optional_sock = false,
               AnomalyRole sock_anomaly = AnomalyRole::none)
      : event(e),
        sock_optional(optional_sock),
        sock{e,
             "sock",
             "kernel socket address, stable for the connection's life",
             {.unit = kAddressUnit,
              .width = 18,
              .optional = optional_sock,
              .anomaly = sock_anomaly}} {}

  Row row(EventEmitter& out, const tcp_who& who) const {
    const nw_tuple& t = who.tuple;
    Row row = event.row(out);
    if (who.sock || !sock_optional) row.set(sock, who.sock);
    if (who.cgroup) row.set(cgroup_id, who.cgroup);
    row.set(pid, who.pid)
        .set(comm, bounded_text(who.comm))
        .set(family, family_name(t.family))
        .set(saddr, format_address(t.family, t.saddr))
        .set(sport, t.sport)
        .set(daddr, format_address(t.family, t.daddr))
        .set(dport, t.dport);
    return row;
  }

  EventDecl& event;
  const bool sock_optional;
  Label<std::uint64_t> sock;
  Label<std::uint64_t> pid{
      event, "pid", "owning process (0 until known for accepted connections)", {.width = 7}};
  Label<std::string> comm{event, "comm", "owning process name", {.width = 15}};
  CgroupIdLabel cgroup_id{event};
  Label<std::string> family{event, "family", "ipv4 or ipv6", {.width = 6}};
  Label<std::string> saddr{event, "saddr", "local address", {.width = 15}};
  Label<std::uint64_t> sport{event, "sport", "local port", {.width = 5}};
  Label<std::string> daddr{event, "daddr", "remote address", {.width = 15}};
  Label<std::uint64_t> dport{event, "dport", "remote port", {.width = 5}};
};

// The leading fields of the connection events: Who and how it was opened.
struct Identity : Who {
  explicit Identity(EventDecl& e) : Who(e) {}

  Row row(EventEmitter& out, const tcp_conn_record& rec) const {
    Row row = Who::row(out, who_of(rec));
    row.set(direction, direction_name(rec.info.direction));
    return row;
  }

  Label<std::string> direction{
      event, "direction", "client (connect), server (accept) or unknown", {.width = 9}};
};

struct Open : EventDecl {
  explicit Open(EventSet& set) : EventDecl(set, "tcp_open", "a connection reached ESTABLISHED") {}
  Identity id{*this};
};

// tcp_close and tcp_conn: one connection with its statistics.
struct Conn : EventDecl {
  Conn(EventSet& set, const char* name, const char* description, const char* state_help)
      : EventDecl(set, name, description), state{*this, "state", state_help, {.width = 11}} {}

  Identity id{*this};
  Label<std::string> state;
  Field<std::uint64_t> duration_us{
      *this, "duration_us", "time since SYN (absent when the connection predates netwatcher)",
      optional("microseconds", 11)};
  Field<std::uint64_t> bytes_received{
      *this, "bytes_received", "payload bytes received", {.unit = "bytes", .width = 10}};
  Field<std::uint64_t> bytes_acked{
      *this, "bytes_acked", "payload bytes sent and acked", {.unit = "bytes", .width = 10}};
  // extra = true
  Field<std::uint64_t> srtt_us{*this, "srtt_us", "smoothed RTT", optional("microseconds")};
  Field<std::uint64_t> rwnd{*this, "rwnd", "receive window (rcv_wnd)", optional("bytes")};
  Field<std::uint64_t> cwnd{*this, "cwnd", "congestion window", optional("segments")};
  Field<std::uint64_t> ssthresh{*this, "ssthresh", "slow-start threshold",
                                optional("segments", 10)};
  Field<std::uint64_t> sndbuf{*this, "sndbuf", "send buffer size (sk_sndbuf)", optional("bytes")};
  Field<std::uint64_t> wmem_queued{*this, "wmem_queued", "bytes queued for sending",
                                   optional("bytes", 11)};
  Field<std::uint64_t> backlog{*this, "backlog", "accept backlog (sk_ack_backlog)", optional()};
  Field<std::uint64_t> max_backlog{*this, "max_backlog", "maximum accept backlog",
                                   optional("", 11)};
  Field<std::uint64_t> total_retrans{*this, "total_retrans", "retransmitted segments",
                                     optional("segments", 13)};
  // retrans = true
  Field<std::uint64_t> fast_retrans{*this, "fast_retrans", "fast retransmits",
                                    optional("segments", 12)};
  Field<std::uint64_t> timeout_retrans{*this, "timeout_retrans", "retransmits after RTO",
                                       optional("segments", 15)};
};

struct StateChange : EventDecl {
  explicit StateChange(EventSet& set)
      : EventDecl(set, "tcp_state", "a state transition (states = true, -S)") {}
  Who who{*this};
  Label<std::string> old_state{*this, "old_state", "state left", {.width = 11}};
  Label<std::string> new_state{*this, "new_state", "state entered", {.width = 11}};
  Field<std::uint64_t> duration_us{*this, "duration_us",
                                   "time spent in old_state (absent when not known)",
                                   optional("microseconds", 11)};
};

struct Reset : EventDecl {
  explicit Reset(EventSet& set) : EventDecl(set, "tcp_reset", "an RST sent or received") {}
  Who who{*this, /*optional_sock=*/true};
  Label<std::string> direction{*this, "direction", "sent or received", {.width = 8}};
  Label<std::string> state{
      *this, "state", "socket state then (absent: no socket, e.g. closed port)", optional("", 11)};
  Label<std::string> reason{*this, "reason", "why the kernel sent it (enum sk_rst_reason)",
                            optional("", 14)};
};

struct Retransmit : EventDecl {
  explicit Retransmit(EventSet& set)
      : EventDecl(set, "tcp_retransmit", "a retransmitted segment (retrans = true, -r)") {}
  Who who{*this};
  Label<std::string> state{*this, "state", "socket state", {.width = 11}};
  Field<std::uint64_t> seq{*this, "seq", "first sequence number of the segment", {.width = 10}};
  Field<std::uint64_t> length{
      *this, "length", "sequence space of the skb", {.unit = "bytes", .width = 6}};
  Label<std::string> type{*this, "type", "fast or timeout (after RTO)", {.width = 7}};
  Field<std::uint64_t> segments{
      *this, "segments", "segments the skb went out as (tcp_skb_pcount)", {.width = 4}};
};

struct Congestion : EventDecl {
  explicit Congestion(EventSet& set)
      : EventDecl(set, "tcp_congestion", "a congestion state change (retrans = true, -r)") {}
  Who who{*this};
  Label<std::string> old_state{
      *this, "old_state", "congestion state left (tcp_ca_state)", {.width = 8}};
  Label<std::string> new_state{*this, "new_state", "congestion state entered", {.width = 8}};
};

struct Error : EventDecl {
  explicit Error(EventSet& set)
      : EventDecl(set, "tcp_error",
                  "a segment dropped for a bad checksum, sequence or ack number (-e)") {}
  Who who{*this, /*optional_sock=*/true};
  Label<std::string> reason{*this, "reason", "what is wrong with the segment", {.width = 22}};
  Label<std::string> kernel_reason{
      *this, "kernel_reason", "the kernel's drop reason", {.width = 22}};
  Field<std::uint64_t> seq{*this, "seq", "sequence number", {.width = 10}};
  Field<std::uint64_t> ack{*this, "ack", "acknowledgement number", {.width = 10}};
  Field<std::uint64_t> payload{*this, "payload", "payload length", {.unit = "bytes", .width = 7}};
  // Only with a socket.
  Field<std::uint64_t> rcv_nxt{*this, "rcv_nxt", "next sequence number the socket expects",
                               optional("", 10)};
  Field<std::uint64_t> rcv_wnd{*this, "rcv_wnd", "receive window then", optional("bytes", 7)};
  Field<std::int64_t> offset{*this, "offset",
                             "seq - rcv_nxt, wraparound-safe (negative: before the window)",
                             optional("bytes", 11)};
};

struct Layer : EventDecl {
  explicit Layer(EventSet& set)
      : EventDecl(set, "tcp_layer", "time one segment spent in each layer (layer_events = true)") {}
  static FieldOptions time() {
    return {.unit = "microseconds", .width = 9, .optional = true, .anomaly = AnomalyRole::sample};
  }
  Who who{*this, false, AnomalyRole::connection};
  Label<std::string> direction{
      *this, "direction", "rx or tx", {.width = 2, .anomaly = AnomalyRole::key}};
  Field<std::uint64_t> seq{*this, "seq", "first sequence number", {.width = 10}};
  Field<std::uint64_t> ack{*this, "ack", "acknowledgement number", {.width = 10}};
  Field<std::uint64_t> length{*this, "length", "payload bytes", {.unit = "bytes", .width = 6}};
  // By enum tcp_layer.
  std::array<Field<double>, TCP_LAYERS> times{{
      {*this, "link_us", "rx: driver hand-off to IP; tx: device queue (qdisc) and driver", time()},
      {*this, "ip_us", "rx: IP entry to LOCAL_IN done; tx: LOCAL_OUT to the device queue", time()},
      {*this, "transport_us",
       "rx: LOCAL_IN to TCP processing; tx: the application's write to LOCAL_OUT", time()},
      {*this, "app_us", "rx: TCP processing to the application's read; tx: absent", time()},
      {*this, "total_us", "rx: driver to the application's read; tx: write to driver", time()},
  }};
};

const std::vector<std::string> kConnLabels = {"saddr", "sport", "daddr", "dport"};

// Most hooks have a tp_btf program and a classic tracepoint to fall back on.
HookSpec btf_or_tp(const char* name, const char* description, const std::string& program,
                   bool required, const char* enabled_by = "") {
  return {name, description, {program + "_btf", program + "_tp"}, required, "", enabled_by};
}

class TcpPlugin {
 public:
  PluginDescription describe() const {
    PluginDescription d;
    d.config = keys_.keys();
    d.flags = {
        {'a', "all-conn", "all_conn", "keep CLOSED connections in the table"},
        {'x', "extra", "extra", "extra connection info (srtt, cwnd, rwnd, buffers, ...)"},
        {'r', "retrans", "retrans",
         "retransmit and congestion-state events, fast / timeout breakdown per connection"},
        {'S', "tcpstate", "states", "every TCP state transition"},
        {'e', "errors", "errors", "error packets: bad checksum, sequence or ack number"},
        {'t', "layer-time", "layer_time", "per-layer time of each segment (histograms)"},
        {0, "layer-events", "layer_events", "a tcp_layer event per segment (with -t)"},
    };
    d.events = events_.set.schemas();
    d.metrics = metrics_.specs();
    d.hooks = {
        btf_or_tp("inet_sock_set_state", "connection state changes (open, close, tuple)",
                  "set_state", true),
        btf_or_tp("tcp_destroy_sock", "forget freed sockets", "destroy_sock", true),
        btf_or_tp("tcp_retransmit_skb", "retransmit counters", "retransmit", true),
        btf_or_tp("sock_recv_length", "owner of accepted connections (receive)", "recv_length",
                  false),
        btf_or_tp("sock_send_length", "owner of accepted connections (send)", "send_length", false),
        {"tcp_adopt", "adopt connections open before start (every netns)", {"adopt_tcp"}, false},
        {"tcp_adopt_owners",
         "owners of adopted connections, from every task's open files",
         {"adopt_owners"},
         false},
        {"conn_table",
         "live statistics of tracked connections in every netns",
         {"dump_conns", "user:sock_diag (no backlog, max_backlog)"},
         false,
         "tcp_conns"},
        btf_or_tp("tcp_send_reset", "RSTs sent", "send_reset", false, "resets"),
        btf_or_tp("tcp_receive_reset", "RSTs received", "receive_reset", false, "resets"),
        btf_or_tp("tcp_cong_state_set", "congestion state changes", "congestion", false),
        btf_or_tp("error_drops", "segments TCP drops as invalid (skb:kfree_skb with a TCP reason)",
                  "error_drop", false, "errors"),
        btf_or_tp("rtt_samples", "srtt histogram at every change of srtt (tcp:tcp_probe)",
                  "rtt_probe", false, "rtt_every_change"),
    };
    // Layer time: every hook optional, so a kernel without one still gets
    // the others (start() says which stages are missing).
    const std::pair<const char*, const char*> layer_hooks[] = {
        {"layer_rx_backlog", "rx driver hand-off (net:netif_rx)"},
        {"layer_rx_gro", "rx driver hand-off (net:napi_gro_receive_entry)"},
        {"layer_rx_direct", "rx driver hand-off (net:netif_receive_skb_entry)"},
        {"layer_rx_list", "rx driver hand-off (net:netif_receive_skb_list_entry)"},
        {"layer_rx_ip", "rx IP entry (net:netif_receive_skb)"},
        {"layer_rx_local_in", "rx IP exit (netfilter LOCAL_IN, last priority)"},
        {"layer_rx_tcp", "rx TCP processing (tcp:tcp_probe)"},
        {"layer_rx_read", "rx application copy (skb:skb_copy_datagram_iovec)"},
        {"layer_tx_send", "tx application write (tcp:tcp_sendmsg_locked)"},
        {"layer_tx_local_out", "tx IP entry (netfilter LOCAL_OUT, first priority)"},
        {"layer_tx_queue", "tx device queue (net:net_dev_queue)"},
        {"layer_tx_xmit", "tx driver done (net:net_dev_xmit)"},
    };
    for (const auto& [program, help] : layer_hooks)
      d.hooks.push_back({program, help, {program}, false, "", "layer_time"});
    return d;
  }

  Status configure(const ConfigValues& config, const GlobalFilter& filter) {
    if (Status s = keys_.read(config); !s) return s;
    if (*layer_events_ && !*layer_time_)
      return Status::failure(
          "plugins.tcp.layer_events needs layer_time = true (or -t): the per-layer hooks are "
          "only attached with layer_time");
    if (Status s =
            layer_namespaces_.configure(*layer_namespace_names_, "plugins.tcp.layer_namespaces");
        !s)
      return s;
    filter_ = filter;
    // Names from the running kernel's BTF, so they are right whatever the
    // kernel version.
    states_ = kernel_names("TCP_ESTABLISHED", "TCP_");
    diag_states_.emplace(states_);
    ca_states_ = kernel_names("TCP_CA_Open", "TCP_CA_");
    reset_reasons_ = kernel_names("SK_RST_REASON_NOT_SPECIFIED", "SK_RST_REASON_");
    if (*errors_) drop_reasons_ = kernel_names("SKB_DROP_REASON_TCP_CSUM", "SKB_DROP_REASON_");
    return Status::success();
  }

  Status open(bpf_object** object) {
    if (Status s = skeleton_.open(object, filter_); !s) return s;
    auto& rodata = *skeleton_->rodata;
    tunable(rodata.tcp_state_events) = *states_enabled_;
    tunable(rodata.tcp_retransmit_events) = *retrans_;
    tunable(rodata.tcp_rtt_per_connection) = *rtt_per_connection_;
    tunable(rodata.tcp_rtt_every_change) = rtt_every_change();
    tunable(rodata.tcp_layer_events) = *layer_events_;
    tunable(rodata.tcp_max_events_per_second) = *max_events_per_second_;
    bpf_map__set_max_entries(skeleton_->maps.tcp_conns, *max_connections_);
    bpf_map__set_max_entries(skeleton_->maps.tcp_rtt, *max_rtt_series_);
    // Maps of features that are off stay at one entry: no memory for nothing.
    std::uint32_t tracked = *layer_time_ ? *max_tracked_packets_ : 1;
    bpf_map__set_max_entries(skeleton_->maps.tcp_rx_inflight, tracked);
    bpf_map__set_max_entries(skeleton_->maps.tcp_tx_inflight, tracked);
    if (!rtt_every_change()) bpf_map__set_max_entries(skeleton_->maps.tcp_rtt, 1);
    return Status::success();
  }

  Status load() {
    // The host has picked the candidates: only the tp_btf state hook marks
    // accepted sockets for the owner hooks (tcp.bpf.c claim_marked_owner).
    tunable(skeleton_->rodata->tcp_owner_marks) =
        bpf_program__autoload(skeleton_->progs.set_state_btf);
    return skeleton_.load();
  }

  Status start(PluginHost& host) {
    if (Status bound = metrics_.bind(host); !bound) return bound;
    host_ = &host;
    track_tables(host);
    // Counters the kernel keeps, current at every scrape (on the poller thread).
    host.set_metrics_refresh([this] {
      read_counters();
      if (*rtt_histogram_) read_rtt_histograms();
      if (*layer_time_) read_layer_histograms();
      return Status::success();
    });
    for (std::uint8_t direction : kDirections) {
      opened_.add({direction_name(direction)}, 0);
      closed_.add({direction_name(direction)}, 0);
    }
    // Not fatal: the state hooks track everything from now on; the error is
    // reported by the first collect().
    adoption_error_ = adopt_open_connections();
    if (*layer_time_) return link_ip_layer(host);
    return Status::success();
  }

  Status decode(std::span<const std::byte> bytes, EventEmitter& out) {
    if (bytes.size() < sizeof(nw_record_header))
      return Status::failure("record of " + std::to_string(bytes.size()) +
                             " bytes is shorter than its header");
    nw_record_header header;
    std::memcpy(&header, bytes.data(), sizeof header);
    switch (header.type) {
      case TCP_RECORD_OPEN:
      case TCP_RECORD_CLOSE:
        if (bytes.size() < sizeof(tcp_conn_record))
          return Status::failure("record type " + std::to_string(header.type) + " has " +
                                 std::to_string(bytes.size()) + " bytes, expected " +
                                 std::to_string(sizeof(tcp_conn_record)));
        return decode_as<tcp_conn_record>(bytes, out);
      case TCP_RECORD_STATE:
        return decode_as<tcp_state_record>(bytes, out);
      case TCP_RECORD_RESET:
        return decode_as<tcp_reset_record>(bytes, out);
      case TCP_RECORD_RETRANSMIT:
        return decode_as<tcp_retransmit_record>(bytes, out);
      case TCP_RECORD_CONGESTION:
        return decode_as<tcp_congestion_record>(bytes, out);
      case TCP_RECORD_ERROR:
        return decode_as<tcp_error_record>(bytes, out);
      case TCP_RECORD_LAYER:
        return decode_as<tcp_layer_record>(bytes, out);
      default:
        return Status::failure("unknown record type " + std::to_string(header.type));
    }
  }

  Status collect(EventEmitter& out) {
    read_counters();
    if (*layer_time_) read_layer_histograms();
    // Rebuilt from the live table: sockets destroyed without a CLOSE record
    // do not linger.
    owners_.clear();
    BytesByDirection live_bytes{};
    std::array<double, 3> live_count{};
    std::set<LabelValues> open_rtt_series;
    SnapshotWindow window(*snapshot_ ? *snapshot_rows_ : 0, snapshot_cursor_);
    std::uint64_t live = 0;
    Status s = read_live_connections([&](const tcp_conn_record& rec) {
      ++live;
      if (*rtt_histogram_) {
        sample_srtt(rec, /*closing=*/false);
        if (*rtt_per_connection_ && !rtt_every_change())
          open_rtt_series.insert(srtt_labels(rec.info.tuple));
      }
      remember_owner(rec);
      const std::size_t slot = direction_slot(rec.info.direction);
      live_count[slot] += 1;
      live_bytes[slot].add(rec.stats);
      if (*per_connection_metrics_) update_series(rec);
      if (!*snapshot_) return;
      if (*snapshot_rows_ == 0)
        emit_conn(events_.conn, out, rec, state_name(rec.state), rec.hdr.timestamp_ns);
      else
        window.offer(rec);
    });
    // Connections refused a series at this snapshot, sorted for the next one.
    std::sort(refused_series_now_.begin(), refused_series_now_.end());
    refused_series_.swap(refused_series_now_);
    refused_series_now_.clear();
    if (*snapshot_rows_ > 0) {
      for (const auto& rec : window.take(snapshot_cursor_))
        emit_conn(events_.conn, out, rec, state_name(rec.state), rec.hdr.timestamp_ns);
      const std::uint64_t deferred = live > *snapshot_rows_ ? live - *snapshot_rows_ : 0;
      snapshot_deferred_.set({}, static_cast<double>(deferred));
    }
    if (*rtt_histogram_) {
      if (*rtt_per_connection_ && !rtt_every_change()) forget_closed_srtt_series(open_rtt_series);
      read_rtt_histograms();
    }
    // These rows describe closed connections: the kernel's TCP_CLOSE, named
    // like every other state (prefix stripped).
    if (*snapshot_)
      for (const auto& rec : closed_table_) emit_conn(events_.conn, out, rec, "CLOSE", 0);
    // Closed totals plus live values only ever grow: a connection's final
    // count at close is at least what the last snapshot saw. Connections the
    // table had no room for count at their close.
    for (std::uint8_t direction : kDirections) {
      const LabelValues labels = {direction_name(direction)};
      const PayloadBytes &closed = closed_bytes_[direction], &now = live_bytes[direction],
                         &untracked = untracked_bytes_[direction];
      current_.set(labels, live_count[direction]);
      received_.mirror(labels, closed.received + now.received + untracked.received);
      acked_.mirror(labels, closed.acked + now.acked + untracked.acked);
    }
    if (series_table_) series_table_->set_entries(series_.size());
    if (rtt_table_) rtt_table_->set_entries(sampled_rtt_.size());
    if (closed_rows_table_) closed_rows_table_->set_entries(closed_table_.size());
    // Namespaces that appeared since the last snapshot get their IP layer timed.
    Status layers = *layer_time_ ? layer_namespaces_.update() : Status::success();
    if (!adoption_error_) return std::exchange(adoption_error_, Status::success());
    return s ? layers : s;
  }

  void stop() {
    series_table_ = rtt_table_ = closed_rows_table_ = nullptr;
    skeleton_.reset();
    host_ = nullptr;
  }

 private:
  static std::string named(const Names& names, std::uint32_t value) {
    auto it = names.find(value);
    return it != names.end() ? it->second : "UNKNOWN(" + std::to_string(value) + ")";
  }
  std::string state_name(std::uint32_t state) const { return named(states_, state); }

  // A tcp_close or tcp_conn row.
  void emit_conn(const Conn& e, EventEmitter& out, const tcp_conn_record& rec,
                 const std::string& state, std::uint64_t monotonic_ns) const {
    const tcp_conn_stats& s = rec.stats;
    Row row = e.id.row(out, rec);
    row.set(e.state, state)
        .set(e.bytes_received, s.bytes_received)
        .set(e.bytes_acked, s.bytes_acked);
    if (rec.info.start_ns) row.set(e.duration_us, rec.duration_ns / 1000);
    if (*extra_) {
      row.set(e.srtt_us, s.srtt_us)
          .set(e.cwnd, s.snd_cwnd)
          .set(e.ssthresh, s.snd_ssthresh)
          .set(e.sndbuf, s.sndbuf)
          .set(e.wmem_queued, s.wmem_queued)
          .set(e.total_retrans, s.total_retrans);
      if (!(rec.flags & TCP_CONN_NO_RCV_WND)) row.set(e.rwnd, s.rcv_wnd);
      if (!(rec.flags & TCP_CONN_NO_BACKLOG))
        row.set(e.backlog, s.backlog).set(e.max_backlog, s.max_backlog);
    }
    if (*retrans_)
      row.set(e.fast_retrans, rec.info.fast_retrans)
          .set(e.timeout_retrans, rec.info.timeout_retrans);
    row.emit(monotonic_ns);
  }

  static LabelValues connection_labels(const nw_tuple& t) {
    return {format_address(t.family, t.saddr), std::to_string(t.sport),
            format_address(t.family, t.daddr), std::to_string(t.dport)};
  }

  void update_series(const tcp_conn_record& rec) {
    auto it = series_.find(rec.sock);
    if (it == series_.end()) {
      if (series_.size() >= *max_connection_series_) {
        // Each connection refused counts once, not once per snapshot.
        refused_series_now_.push_back(rec.sock);
        if (series_table_ &&
            !std::binary_search(refused_series_.begin(), refused_series_.end(), rec.sock))
          series_table_->count_refused();
        return;
      }
      it = series_.emplace(rec.sock, connection_labels(rec.info.tuple)).first;
    }
    conn_srtt_.set(it->second, rec.stats.srtt_us / 1e6);
    conn_cwnd_.set(it->second, rec.stats.snd_cwnd);
    conn_received_.mirror(it->second, static_cast<double>(rec.stats.bytes_received));
    conn_acked_.mirror(it->second, static_cast<double>(rec.stats.bytes_acked));
  }

  void forget_series(const tcp_conn_record& rec) {
    auto it = series_.find(rec.sock);
    if (it == series_.end()) return;
    for (const MetricHandle* family : std::initializer_list<const MetricHandle*>{
             &conn_srtt_, &conn_cwnd_, &conn_received_, &conn_acked_})
      family->remove(it->second);
    series_.erase(it);
  }

  // emit() returns a failed Status for a record whose discriminators are out
  // of range (a BPF object from another build).
  template <class Record>
  Status decode_as(std::span<const std::byte> bytes, EventEmitter& out) {
    if (bytes.size() < sizeof(Record))
      return Status::failure("record of " + std::to_string(bytes.size()) + " bytes, expected " +
                             std::to_string(sizeof(Record)));
    Record record;
    std::memcpy(&record, bytes.data(), sizeof record);
    return emit(record, out);
  }

  Status emit(const tcp_conn_record& rec, EventEmitter& out) {
    if (rec.hdr.type == TCP_RECORD_OPEN) {
      remember_owner(rec);
      events_.open.id.row(out, rec).emit(rec.hdr.timestamp_ns);
      return Status::success();
    }
    owners_.erase(tuple_key(rec.info.tuple));
    sample_srtt(rec, /*closing=*/true);
    closed_bytes_[direction_slot(rec.info.direction)].add(rec.stats);
    forget_series(rec);
    if (*all_conn_ && *max_closed_ > 0) {
      closed_table_.push_back(rec);
      while (closed_table_.size() > *max_closed_) {
        closed_table_.pop_front();
        if (closed_rows_table_) closed_rows_table_->count_evicted();
      }
    }
    emit_conn(events_.close, out, rec, state_name(rec.state), rec.hdr.timestamp_ns);
    return Status::success();
  }

  Status emit(const tcp_state_record& r, EventEmitter& out) const {
    const StateChange& e = events_.state;
    Row row = e.who.row(out, r.who);
    row.set(e.old_state, state_name(r.old_state)).set(e.new_state, state_name(r.new_state));
    if (r.duration_ns) row.set(e.duration_us, r.duration_ns / 1000);
    row.emit(r.hdr.timestamp_ns);
    return Status::success();
  }

  Status emit(const tcp_reset_record& r, EventEmitter& out) const {
    const Reset& e = events_.reset;
    Row row = e.who.row(out, r.who);
    row.set(e.direction, r.sent ? "sent" : "received");
    if (r.state != TCP_NO_STATE) row.set(e.state, state_name(r.state));
    if (r.sent) row.set(e.reason, named(reset_reasons_, r.reason));
    row.emit(r.hdr.timestamp_ns);
    return Status::success();
  }

  Status emit(const tcp_retransmit_record& r, EventEmitter& out) const {
    const Retransmit& e = events_.retransmit;
    e.who.row(out, r.who)
        .set(e.state, state_name(r.state))
        .set(e.seq, r.seq)
        .set(e.length, r.length)
        .set(e.type, r.timeout ? "timeout" : "fast")
        .set(e.segments, r.segments)
        .emit(r.hdr.timestamp_ns);
    return Status::success();
  }

  Status emit(const tcp_congestion_record& r, EventEmitter& out) const {
    const Congestion& e = events_.congestion;
    e.who.row(out, r.who)
        .set(e.old_state, named(ca_states_, r.old_state))
        .set(e.new_state, named(ca_states_, r.new_state))
        .emit(r.hdr.timestamp_ns);
    return Status::success();
  }

  // Packets dropped before the socket lookup (e.g. a bad checksum) carry no
  // socket: known connections are found by their tuple.
  static std::string tuple_key(const nw_tuple& t) {
    return std::string(reinterpret_cast<const char*>(&t), offsetof(nw_tuple, pad));
  }

  // Only error packets need owners by tuple (the tcp_error record's emit).
  void remember_owner(const tcp_conn_record& rec) {
    if (!*errors_ || !rec.info.tuple_valid || owners_.size() >= *max_connections_) return;
    owners_[tuple_key(rec.info.tuple)] = who_of(rec);
  }

  Status emit(const tcp_error_record& r, EventEmitter& out) const {
    if (r.kind >= TCP_ERROR_KINDS)
      return Status::failure("tcp_error record with unknown kind " + std::to_string(r.kind));
    tcp_who who = r.who;
    if (!who.sock)
      if (auto it = owners_.find(tuple_key(who.tuple)); it != owners_.end()) who = it->second;
    const Error& e = events_.error;
    Row row = e.who.row(out, who);
    row.set(e.reason, kErrorNames[r.kind])
        .set(e.kernel_reason, named(drop_reasons_, r.kernel_reason))
        .set(e.seq, r.seq)
        .set(e.ack, r.ack)
        .set(e.payload, r.payload);
    if (r.has_socket)
      row.set(e.rcv_nxt, r.rcv_nxt).set(e.rcv_wnd, r.rcv_wnd).set(e.offset, r.offset);
    row.emit(r.hdr.timestamp_ns);
    return Status::success();
  }

  Status emit(const tcp_layer_record& r, EventEmitter& out) const {
    if (r.direction >= TCP_PACKET_DIRECTIONS)
      return Status::failure("tcp_layer record with unknown direction " +
                             std::to_string(r.direction));
    const Layer& e = events_.layer;
    Row row = e.who.row(out, r.who);
    row.set(e.direction, kPacketDirectionNames[r.direction])
        .set(e.seq, r.seq)
        .set(e.ack, r.ack)
        .set(e.length, r.length);
    for (std::size_t layer = 0; layer < e.times.size(); ++layer)
      if (r.ns[layer] != TCP_TIME_UNKNOWN)
        row.set(e.times[layer], static_cast<double>(r.ns[layer]) / 1e3);
    row.emit(r.hdr.timestamp_ns);
    return Status::success();
  }

  void read_counters() {
    int fd = bpf_map__fd(skeleton_->maps.tcp_counters);
    auto total = [fd](std::uint32_t index) { return sum_percpu_u64(fd, &index); };
    auto mirror = [&](std::uint32_t index, const Counter& counter, const LabelValues& labels) {
      if (auto n = total(index)) counter.mirror(labels, static_cast<double>(*n));
    };
    mirror(TCP_COUNTER_RETRANS_FAST, retransmits_, {"fast"});
    mirror(TCP_COUNTER_RETRANS_TIMEOUT, retransmits_, {"timeout"});
    mirror(TCP_COUNTER_RETRANS_SKBS, retransmitted_skbs_, {});
    if (*resets_enabled_) {
      mirror(TCP_COUNTER_RESET_SENT, resets_, {"sent"});
      mirror(TCP_COUNTER_RESET_RECEIVED, resets_, {"received"});
    }
    for (std::uint32_t state = 0; state < TCP_CA_STATES; ++state)
      mirror(TCP_COUNTER_CONG_STATE + state, congestion_, {named(ca_states_, state)});
    if (*errors_)
      for (std::uint32_t kind = 0; kind < TCP_ERROR_KINDS; ++kind)
        mirror(TCP_COUNTER_ERROR + kind, errors_total_, {kErrorNames[kind]});
    if (rtt_every_change()) mirror(TCP_COUNTER_RTT_OVERFLOW, srtt_dropped_, {});
    // Opens and closes are counted in the kernel, tracked or not.
    for (std::uint8_t direction : kDirections) {
      mirror(TCP_COUNTER_OPENED + direction, opened_, {direction_name(direction)});
      mirror(TCP_COUNTER_CLOSED + direction, closed_, {direction_name(direction)});
      untracked_bytes_[direction] = {
          static_cast<double>(total(TCP_COUNTER_UNTRACKED_RECEIVED + direction).value_or(0)),
          static_cast<double>(total(TCP_COUNTER_UNTRACKED_ACKED + direction).value_or(0))};
    }
  }

  // Every bounded table, so that none fills up silently.
  void track_tables(PluginHost& host) {
    host.track_table(
        {"connections", "tcp_conns", TCP_TABLE_CONNECTIONS, 0, "plugins.tcp.max_connections"});
    if (*layer_time_) {
      host.track_table({"rx_segments", "tcp_rx_inflight", TCP_TABLE_RX_PACKETS, 0,
                        "plugins.tcp.max_tracked_packets"});
      host.track_table({"tx_segments", "tcp_tx_inflight", TCP_TABLE_TX_PACKETS, 0,
                        "plugins.tcp.max_tracked_packets"});
    }
    if (rtt_every_change())
      host.track_table(
          {"rtt_series", "tcp_rtt", TCP_TABLE_RTT_SERIES, 0, "plugins.tcp.max_rtt_series"});
    else if (*rtt_histogram_)
      rtt_table_ =
          host.track_table({"rtt_series", "", 0, *max_rtt_series_, "plugins.tcp.max_rtt_series"});
    if (*per_connection_metrics_)
      series_table_ = host.track_table({"connection_series", "", 0, *max_connection_series_,
                                        "plugins.tcp.max_connection_series"});
    if (*all_conn_ && *max_closed_ > 0)
      closed_rows_table_ =
          host.track_table({"closed_connections", "", 0, *max_closed_, "plugins.tcp.max_closed"});
  }

  LabelValues srtt_labels(__u16 family, const __u8* daddr, const __u8* saddr, __u16 sport,
                          __u16 dport) const {
    if (!*rtt_per_connection_) return {format_address(family, daddr), "", "", ""};
    return {format_address(family, daddr), format_address(family, saddr), std::to_string(sport),
            std::to_string(dport)};
  }

  LabelValues srtt_labels(const nw_tuple& t) const {
    return srtt_labels(t.family, t.daddr, t.saddr, t.sport, t.dport);
  }

  // One sample per tracked connection and snapshot, and one at its close:
  // the histogram weighs connections by how long they live, not by how many
  // segments they move, and no program runs per segment. A per-connection
  // series ends at close instead.
  void sample_srtt(const tcp_conn_record& rec, bool closing) {
    if (!*rtt_histogram_ || rtt_every_change()) return;
    LabelValues labels = srtt_labels(rec.info.tuple);
    if (closing && *rtt_per_connection_) {
      if (sampled_rtt_.erase(labels)) srtt_.remove(labels);
      return;
    }
    if (!rec.stats.srtt_us) return;  // no RTT measured yet
    auto it = sampled_rtt_.find(labels);
    if (it == sampled_rtt_.end()) {
      if (sampled_rtt_.size() >= *max_rtt_series_) {
        srtt_dropped_.add({}, 1);
        if (rtt_table_) rtt_table_->count_refused();
        return;
      }
      it = sampled_rtt_.emplace(std::move(labels), SrttHistogram{}).first;
    }
    it->second.add(std::uint64_t{rec.stats.srtt_us} * 1000);
  }

  // Per-connection series of connections that left the table without a
  // close record (destroyed while not yet established, a lost record).
  void forget_closed_srtt_series(const std::set<LabelValues>& open) {
    for (auto it = sampled_rtt_.begin(); it != sampled_rtt_.end();) {
      if (open.count(it->first)) {
        ++it;
        continue;
      }
      srtt_.remove(it->first);
      it = sampled_rtt_.erase(it);
    }
  }

  void publish_srtt(const LabelValues& labels, std::span<const __u64> slots, __u64 sum_ns) {
    srtt_.replace(labels, log2_slots_to_buckets(slots, kRttFirstLog2, kRttLastLog2),
                  static_cast<double>(sum_ns) / 1e9);
  }

  void read_rtt_histograms() {
    if (!rtt_every_change()) {
      for (const auto& [labels, hist] : sampled_rtt_) publish_srtt(labels, hist.slots, hist.sum_ns);
      return;
    }
    int fd = bpf_map__fd(skeleton_->maps.tcp_rtt);
    std::set<LabelValues> seen;
    for_each_key<tcp_rtt_key>(fd, [&](const tcp_rtt_key& key) {
      auto summed = sum_percpu<tcp_rtt_hist>(fd, &key);
      if (!summed) return;
      LabelValues labels = srtt_labels(key.family, key.daddr, key.saddr, key.sport, key.dport);
      publish_srtt(labels, summed->slots, summed->sum_ns);
      seen.insert(labels);
    });
    // Per-connection series leave with their connection.
    for (const auto& labels : rtt_series_)
      if (!seen.count(labels)) srtt_.remove(labels);
    rtt_series_ = std::move(seen);
  }

  void read_layer_histograms() {
    static const __u32 kZero = 0;
    auto hist = sum_percpu<tcp_layer_hist>(bpf_map__fd(skeleton_->maps.tcp_layer_stats), &kZero);
    if (!hist) return;
    for (int dir = 0; dir < TCP_PACKET_DIRECTIONS; ++dir) {
      for (int layer = 0; layer < TCP_LAYERS; ++layer) {
        if (dir == TCP_TX && layer == TCP_LAYER_APP) continue;
        layer_latency_.replace(
            {kLayerNames[layer], kPacketDirectionNames[dir]},
            log2_slots_to_buckets(hist->slots[dir][layer], kLayerFirstLog2, kLayerLastLog2),
            static_cast<double>(hist->sum_ns[dir][layer]) / 1e9);
      }
      layer_unmatched_.mirror({kPacketDirectionNames[dir]},
                              static_cast<double>(hist->unmatched[dir]));
    }
  }

  // The IP-layer boundaries are netfilter hooks, which exist per netns.
  // Events from a netns without them lack ip_us (tx: transport_us too).
  Status link_ip_layer(PluginHost& host) {
    if (host.link_fd("layer_rx_read") < 0 || host.link_fd("layer_tx_xmit") < 0)
      return Status::failure(
          "layer_time needs skb:skb_copy_datagram_iovec and net:net_dev_xmit, which did not "
          "attach (see --check)");
    return layer_namespaces_.start(host, [host = &host](const std::string& netns) {
      for (int family : {2, 10}) {
        for (const auto& [program, point] :
             {std::pair{"layer_rx_local_in",
                        NetfilterPoint{family, kNfInetLocalIn, kLastPriority, netns}},
              std::pair{"layer_tx_local_out",
                        NetfilterPoint{family, kNfInetLocalOut, kFirstPriority, netns}}})
          if (Status s = host->attach_netfilter(program, point); !s) return s;
      }
      return Status::success();
    });
  }

  // Runs an iterator and hands its output to `consume` chunk by chunk, so a
  // table of 100k connections never sits in memory whole.
  template <class Consume>
  static Status run_iterator(int link, Consume&& consume) {
    int fd = bpf_iter_create(link);
    if (fd < 0) return Status::failure("bpf_iter_create: " + std::string(std::strerror(errno)));
    char chunk[16384];
    ssize_t n;
    while ((n = read(fd, chunk, sizeof chunk)) > 0) consume(chunk, static_cast<std::size_t>(n));
    int err = n < 0 ? errno : 0;
    close(fd);
    if (err) return Status::failure("reading BPF iterator: " + std::string(std::strerror(err)));
    return Status::success();
  }

  // Connections open before start-up, adopted once: every one opened since
  // the links went up passes the state hooks (tracked, or refused and
  // counted), so a later walk could only count refusals again. The kernel's
  // TCP iterator walks the namespace it is created in: one per namespace,
  // so that containers' connections are adopted too. A namespace gone
  // between the scan and setns() is skipped.
  Status adopt_open_connections() {
    const int adopt = host_->link_fd("adopt_tcp");
    if (adopt < 0) return Status::success();
    for (const auto& [inode, netns] : scan_namespaces({"*"}).found) {
      bool entered = false;
      Status s = run_in_network_namespace(netns.path, [&] {
        entered = true;
        return run_iterator(adopt, [](const char*, std::size_t) {});
      });
      if (!s && entered) return Status::failure("adopting open connections: " + s.message());
    }
    if (const int owners = host_->link_fd("adopt_owners"); owners >= 0)
      if (Status s = run_iterator(owners, [](const char*, std::size_t) {}); !s)
        return Status::failure("finding adopted connections' owners: " + s.message());
    return Status::success();
  }

  // Live connections with statistics, one `visit(const tcp_conn_record&)`
  // each: from the map iterator, or where the kernel refuses it, from
  // sock_diag in each connection's namespace.
  template <class Visit>
  Status read_live_connections(Visit&& visit) {
    if (int table = host_ ? host_->link_fd("dump_conns") : -1; table >= 0) {
      // Records are written whole, but a read() may end inside one.
      std::vector<char> partial;
      return run_iterator(table, [&](const char* data, std::size_t size) {
        partial.insert(partial.end(), data, data + size);
        std::size_t off = 0;
        for (; off + sizeof(tcp_conn_record) <= partial.size(); off += sizeof(tcp_conn_record)) {
          tcp_conn_record rec;
          std::memcpy(&rec, partial.data() + off, sizeof rec);
          visit(rec);
        }
        partial.erase(partial.begin(), partial.begin() + static_cast<std::ptrdiff_t>(off));
      });
    }
    std::vector<tcp_conn_record> diag;
    Status s = read_with_sock_diag(diag);
    for (const auto& rec : diag) visit(rec);
    return s;
  }

  Status read_with_sock_diag(std::vector<tcp_conn_record>& out) {
    int map = bpf_map__fd(skeleton_->maps.tcp_conns);
    std::vector<std::pair<std::uint64_t, tcp_conn_info>> tracked;
    std::set<std::uint32_t> namespaces;
    for_each_key<std::uint64_t>(map, [&](std::uint64_t sock) {
      tcp_conn_info info{};
      if (bpf_map_lookup_elem(map, &sock, &info) == 0 && info.tuple_valid) {
        tracked.emplace_back(sock, info);
        namespaces.insert(info.netns);
      }
    });
    if (tracked.empty()) return Status::success();
    std::map<std::uint32_t, std::vector<tcp::DiagSocket>> sockets;
    std::vector<std::uint32_t> missing;
    if (Status s = namespace_dumper_.dump(*diag_states_, {namespaces.begin(), namespaces.end()},
                                          sockets, missing);
        !s)
      return s;
    // Said once per namespace (through collect()'s Status, which the host logs).
    std::string unreachable;
    for (std::uint32_t inode : missing)
      if (unreachable_namespaces_.insert(inode).second)
        unreachable += (unreachable.empty() ? "" : ", ") + std::to_string(inode);
    // By tuple: unique among the live sockets of one namespace.
    std::map<std::pair<std::uint32_t, std::string>, const tcp::DiagSocket*> by_tuple;
    for (const auto& [inode, list] : sockets)
      for (const auto& socket : list) by_tuple[{inode, tuple_key(socket.tuple)}] = &socket;
    const std::uint64_t now = monotonic_ns();
    for (const auto& [sock, info] : tracked) {
      auto it = by_tuple.find({info.netns, tuple_key(info.tuple)});
      if (it == by_tuple.end()) continue;  // gone since (TIME_WAIT, closed) or unreachable
      const tcp::DiagSocket& socket = *it->second;
      tcp_conn_record rec{};
      rec.hdr.type = TCP_RECORD_SNAPSHOT;
      rec.hdr.size = sizeof rec;
      rec.hdr.timestamp_ns = now;
      rec.sock = sock;
      rec.info = info;
      rec.stats = tcp::stats_from_diag(socket, info, *diag_states_);
      rec.duration_ns = info.start_ns && now > info.start_ns ? now - info.start_ns : 0;
      rec.state = socket.state;
      rec.flags = TCP_CONN_NO_BACKLOG | (socket.has_rcv_wnd ? 0 : TCP_CONN_NO_RCV_WND);
      out.push_back(rec);
    }
    if (!unreachable.empty())
      return Status::failure("network namespace " + unreachable +
                             " has tracked connections but no process or /run/netns file to "
                             "enter it by: its connections are left out of snapshots");
    return Status::success();
  }

  // rtt_every_change counts only with rtt_histogram.
  bool rtt_every_change() const { return *rtt_histogram_ && *rtt_every_change_; }

  KeySet keys_;
  Setting<bool> extra_{
      keys_, "extra", false,
      "add srtt, windows, buffers, backlog and retransmit totals to connection events"};
  Setting<bool> retrans_{keys_, "retrans", false, "add the fast / timeout retransmit breakdown"};
  Setting<bool> all_conn_{keys_, "all_conn", false,
                          "keep CLOSED connections in the connection table (snapshots)"};
  Setting<bool> snapshot_{keys_, "snapshot", true,
                          "emit the connection table (tcp_conn events) every snapshot_interval"};
  Setting<std::uint64_t> snapshot_rows_{
      keys_,
      "snapshot_rows",
      2048,
      "tcp_conn rows per snapshot at most; a larger table is shown in turns, each snapshot "
      "continuing after the socket the last one ended with (0 = every row, every time)",
      {.min = 0, .max = 1 << 22}};
  Setting<std::uint32_t> max_connections_{
      keys_,
      "max_connections",
      131072,
      "connections tracked in the kernel at once (~190 bytes each while in use)",
      {.min = 64, .max = 1 << 22}};
  Setting<std::size_t> max_closed_{keys_,
                                   "max_closed",
                                   1024,
                                   "closed connections kept in the table with all_conn",
                                   {.min = 0, .max = 1 << 20}};
  Setting<bool> per_connection_metrics_{keys_, "per_connection_metrics", false,
                                        "export per-connection srtt/cwnd/bytes series (capped)"};
  Setting<std::size_t> max_connection_series_{keys_,
                                              "max_connection_series",
                                              1000,
                                              "cap on connections with per-connection series",
                                              {.min = 1, .max = 1 << 20}};
  Setting<bool> states_enabled_{
      keys_, "states", false,
      "a tcp_state event for every state transition, with the time spent in the old state"};
  Setting<bool> resets_enabled_{keys_, "resets", true,
                                "tcp_reset events and counters for RSTs sent and received"};
  Setting<bool> errors_{
      keys_, "errors", false,
      "tcp_error events and counters for segments with a bad checksum, sequence or ack number"};
  Setting<bool> rtt_histogram_{keys_, "rtt_histogram", true,
                               "srtt histogram per destination: each tracked connection's srtt "
                               "once per snapshot_interval and at its close"};
  // Read through rtt_every_change().
  Setting<bool> rtt_every_change_{
      keys_, "rtt_every_change", false,
      "sample srtt whenever it changes instead (tcp:tcp_probe: one program per segment)"};
  Setting<bool> rtt_per_connection_{keys_, "rtt_per_connection", false,
                                    "srtt histogram per connection instead of per destination"};
  Setting<std::uint32_t> max_rtt_series_{
      keys_,
      "max_rtt_series",
      256,
      "srtt histogram series kept (destinations or connections; with rtt_every_change, "
      "272 bytes per series and CPU in the kernel)",
      {.min = 1, .max = 1 << 20}};
  Setting<bool> layer_time_{
      keys_, "layer_time", false,
      "per-layer time of every segment (link, IP, transport, application), as histograms"};
  Setting<bool> layer_events_{
      keys_, "layer_events", false,
      "with layer_time: a tcp_layer event per segment, not only the histograms"};
  Setting<std::vector<std::string>> layer_namespace_names_{
      keys_,
      "layer_namespaces",
      {"*"},
      "network namespaces whose IP layer is timed (netfilter links): 'self', '*' (every "
      "namespace: own, /run/netns/* and those of processes, followed as they come and go), "
      "a /run/netns name or a path; elsewhere ip_us and transport_us are absent"};
  Setting<std::uint32_t> max_tracked_packets_{
      keys_,
      "max_tracked_packets",
      8192,
      "segments in flight between layer hooks tracked at once, per direction (LRU)",
      {.min = 256, .max = 1 << 22}};
  Setting<std::uint64_t> max_events_per_second_{
      keys_,
      "max_events_per_second",
      0,
      "cap on per-segment and per-packet events (layer, retransmit, reset, error); 0 = none",
      {.min = 0, .max = std::int64_t{1} << 32}};

  // In PluginDescription::events order.
  struct Events {
    EventSet set;
    Open open{set};
    Conn close{set, "tcp_close", "a connection reached CLOSE, with its final statistics",
               "state the connection left for CLOSE"};
    Conn conn{set, "tcp_conn", "one row of the connection table, every snapshot_interval",
              "current state"};
    StateChange state{set};
    Reset reset{set};
    Retransmit retransmit{set};
    Congestion congestion{set};
    Error error{set};
    Layer layer{set};
  } events_;

  MetricSet metrics_;
  Counter opened_{metrics_,
                  "netwatcher_tcp_connections_opened_total",
                  "TCP connections that reached ESTABLISHED.",
                  {"direction"}};
  Counter closed_{metrics_,
                  "netwatcher_tcp_connections_closed_total",
                  "Tracked TCP connections that reached CLOSE.",
                  {"direction"}};
  Gauge current_{metrics_,
                 "netwatcher_tcp_connections",
                 "Tracked TCP connections at the last snapshot.",
                 {"direction"}};
  Gauge snapshot_deferred_{metrics_, "netwatcher_tcp_snapshot_deferred_rows",
                           "Connections left out of the last snapshot's tcp_conn rows by "
                           "snapshot_rows (shown in a later one)."};
  Counter retransmits_{
      metrics_,
      "netwatcher_tcp_retransmits_total",
      "Retransmitted TCP segments (the kernel's RetransSegs), by cause (fast or timeout).",
      {"type"}};
  Counter retransmitted_skbs_{metrics_, "netwatcher_tcp_retransmitted_skbs_total",
                              "Retransmissions as skbs: a GSO skb of many segments counts once."};
  Counter received_{metrics_,
                    "netwatcher_tcp_received_bytes_total",
                    "Payload bytes received on tracked TCP connections.",
                    {"direction"}};
  Counter acked_{metrics_,
                 "netwatcher_tcp_acked_bytes_total",
                 "Payload bytes sent and acknowledged on tracked TCP connections.",
                 {"direction"}};
  Gauge conn_srtt_{metrics_, "netwatcher_tcp_connection_srtt_seconds",
                   "Smoothed RTT per connection (per_connection_metrics).", kConnLabels};
  Gauge conn_cwnd_{metrics_, "netwatcher_tcp_connection_cwnd_segments",
                   "Congestion window per connection (per_connection_metrics).", kConnLabels};
  // Counters, so that rate() (and the stdout top view) ranks connections by
  // bytes per second.
  Counter conn_received_{metrics_, "netwatcher_tcp_connection_received_bytes_total",
                         "Payload bytes received per connection (per_connection_metrics).",
                         kConnLabels};
  Counter conn_acked_{metrics_, "netwatcher_tcp_connection_acked_bytes_total",
                      "Payload bytes acked per connection (per_connection_metrics).", kConnLabels};
  Counter resets_{
      metrics_, "netwatcher_tcp_resets_total", "RST segments sent and received.", {"direction"}};
  Counter congestion_{metrics_,
                      "netwatcher_tcp_congestion_state_changes_total",
                      "Congestion (CA) state changes, by the state entered.",
                      {"state"}};
  Counter errors_total_{
      metrics_,
      "netwatcher_tcp_error_packets_total",
      "Segments dropped for a bad checksum, sequence or ack number (errors = true).",
      {"reason"}};
  Histogram srtt_{metrics_,
                  "netwatcher_tcp_srtt_seconds",
                  "Smoothed RTT of tracked connections, once per snapshot_interval and at close "
                  "(or at every change with rtt_every_change), per destination (saddr, sport and "
                  "dport empty) or per connection (rtt_per_connection).",
                  {"daddr", "saddr", "sport", "dport"},
                  log2_ns_bucket_bounds(kRttFirstLog2, kRttLastLog2)};
  Counter srtt_dropped_{metrics_, "netwatcher_tcp_srtt_samples_dropped_total",
                        "srtt samples of series that did not fit in max_rtt_series."};
  Histogram layer_latency_{
      metrics_,
      "netwatcher_tcp_layer_latency_seconds",
      "Time segments spend in each layer (layer_time = true); see the tcp plugin README.",
      {"layer", "direction"},
      log2_ns_bucket_bounds(kLayerFirstLog2, kLayerLastLog2)};
  Counter layer_unmatched_{metrics_,
                           "netwatcher_tcp_layer_unmatched_total",
                           "Segments whose layer times could not be measured (tx: written before "
                           "the send log; rx: processed outside ESTABLISHED).",
                           {"direction"}};

  Skeleton<tcp_bpf> skeleton_{tcp_bpf__open, tcp_bpf__load, tcp_bpf__destroy};
  PluginHost* host_ = nullptr;
  std::optional<tcp::DiagStates> diag_states_;
  tcp::NamespaceDumper namespace_dumper_;
  std::set<std::uint32_t> unreachable_namespaces_;
  Status adoption_error_;  // from start(), reported once by collect()
  std::uint64_t snapshot_cursor_ = 0;
  GlobalFilter filter_;
  Names states_;
  std::deque<tcp_conn_record> closed_table_;
  BytesByDirection closed_bytes_{}, untracked_bytes_{};
  std::map<std::uint64_t, LabelValues> series_;
  std::vector<std::uint64_t> refused_series_, refused_series_now_;  // sockets, 8 bytes each
  NetfilterNamespaces layer_namespaces_;
  Names ca_states_, reset_reasons_, drop_reasons_;
  std::set<LabelValues> rtt_series_;
  // Without rtt_every_change the histograms live here, fed by snapshots and
  // close records; at most max_rtt_series_ of them.
  std::map<LabelValues, SrttHistogram> sampled_rtt_;
  // User-space tables (the kernel ones the host follows itself); null when off.
  TableAccount *series_table_ = nullptr, *rtt_table_ = nullptr, *closed_rows_table_ = nullptr;
  // Established connections by tuple (see the tcp_error record's emit).
  std::unordered_map<std::string, tcp_who> owners_;
};

}  // namespace

NETWATCHER_PROBE_PLUGIN(TcpPlugin, "tcp", "1.0.0",
                        "TCP connections: owner, tuple, state, windows, RTT, bytes, retransmits")
