// tcp: every TCP connection, its owner, tuple, state and internals.
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <deque>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "netwatcher/format.hpp"
#include "netwatcher/kernel.hpp"
#include "netwatcher/plugin.hpp"
#include "tcp.h"
#include "tcp.skel.h"

namespace {

using namespace netwatcher;

enum EventIndex : std::size_t { kOpenEvent = 0, kCloseEvent = 1, kConnEvent = 2 };

// Field order of tcp_close and tcp_conn (they share it).
enum ConnField : std::size_t {
  kSock,
  kPid,
  kComm,
  kFamily,
  kSaddr,
  kSport,
  kDaddr,
  kDport,
  kDirection,
  kState,
  kDurationUs,
  kBytesReceived,
  kBytesAcked,
  // extra = true
  kSrttUs,
  kRwnd,
  kCwnd,
  kSsthresh,
  kSndbuf,
  kWmemQueued,
  kBacklog,
  kMaxBacklog,
  kTotalRetrans,
  // retrans = true
  kFastRetrans,
  kTimeoutRetrans,
  kConnFieldCount
};

std::vector<FieldSchema> identity_fields() {
  return {
      {"sock", FieldType::u64, "", "kernel socket address, stable for the connection's life",
       FieldRole::label, 18},
      {"pid", FieldType::u64, "", "owning process (0 until known for accepted connections)",
       FieldRole::label, 7},
      {"comm", FieldType::text, "", "owning process name", FieldRole::label, 15},
      {"family", FieldType::text, "", "ipv4 or ipv6", FieldRole::label, 6},
      {"saddr", FieldType::text, "", "local address", FieldRole::label, 15},
      {"sport", FieldType::u64, "", "local port", FieldRole::label, 5},
      {"daddr", FieldType::text, "", "remote address", FieldRole::label, 15},
      {"dport", FieldType::u64, "", "remote port", FieldRole::label, 5},
      {"direction", FieldType::text, "", "client (connect), server (accept) or unknown",
       FieldRole::label, 9},
  };
}

std::vector<FieldSchema> conn_fields(const std::string& state_help) {
  auto fields = identity_fields();
  auto optional = [](FieldSchema f) {
    f.optional = true;
    return f;
  };
  fields.push_back({"state", FieldType::text, "", state_help, FieldRole::label, 11});
  fields.push_back({"duration_us", FieldType::u64, "microseconds",
                    "time since SYN (absent when the connection predates netwatcher)",
                    FieldRole::value, 11, true});
  fields.push_back(
      {"bytes_received", FieldType::u64, "bytes", "payload bytes received", FieldRole::value, 10});
  fields.push_back({"bytes_acked", FieldType::u64, "bytes", "payload bytes sent and acked",
                    FieldRole::value, 10});
  fields.push_back(optional({"srtt_us", FieldType::u64, "microseconds", "smoothed RTT"}));
  fields.push_back(optional({"rwnd", FieldType::u64, "bytes", "receive window (rcv_wnd)"}));
  fields.push_back(optional({"cwnd", FieldType::u64, "segments", "congestion window"}));
  fields.push_back(optional(
      {"ssthresh", FieldType::u64, "segments", "slow-start threshold", FieldRole::value, 10}));
  fields.push_back(optional({"sndbuf", FieldType::u64, "bytes", "send buffer size (sk_sndbuf)"}));
  fields.push_back(optional(
      {"wmem_queued", FieldType::u64, "bytes", "bytes queued for sending", FieldRole::value, 11}));
  fields.push_back(optional({"backlog", FieldType::u64, "", "accept backlog (sk_ack_backlog)"}));
  fields.push_back(optional(
      {"max_backlog", FieldType::u64, "", "maximum accept backlog", FieldRole::value, 11}));
  fields.push_back(optional({"total_retrans", FieldType::u64, "segments", "retransmitted segments",
                             FieldRole::value, 13}));
  fields.push_back(optional(
      {"fast_retrans", FieldType::u64, "segments", "fast retransmits", FieldRole::value, 12}));
  fields.push_back(optional({"timeout_retrans", FieldType::u64, "segments", "retransmits after RTO",
                             FieldRole::value, 15}));
  return fields;
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

struct ConnectionKey {
  std::string saddr, sport, daddr, dport;
  LabelValues labels() const { return {saddr, sport, daddr, dport}; }
};

class TcpPlugin {
 public:
  PluginDescription describe() const {
    PluginDescription d;
    d.config = {
        {"extra", ConfigType::boolean, false,
         "add srtt, windows, buffers, backlog and retransmit totals to connection events"},
        {"retrans", ConfigType::boolean, false, "add the fast / timeout retransmit breakdown"},
        {"all_conn", ConfigType::boolean, false,
         "keep CLOSED connections in the connection table (snapshots)"},
        {"snapshot", ConfigType::boolean, true,
         "emit the connection table (tcp_conn events) every snapshot_interval"},
        {"max_connections", ConfigType::integer, std::int64_t{16384},
         "connections tracked in the kernel at once", 64, 1 << 22},
        {"max_closed", ConfigType::integer, std::int64_t{1024},
         "closed connections kept in the table with all_conn", 0, 1 << 20},
        {"per_connection_metrics", ConfigType::boolean, false,
         "export per-connection srtt/cwnd/bytes series (capped)"},
        {"max_connection_series", ConfigType::integer, std::int64_t{1000},
         "cap on connections with per-connection series", 1, 1 << 20},
    };
    d.flags = {
        {'a', "all-conn", "all_conn", "keep CLOSED connections in the table"},
        {'x', "extra", "extra", "extra connection info (srtt, cwnd, rwnd, buffers, ...)"},
        {'r', "retrans", "retrans", "fast / timeout retransmit breakdown"},
    };
    auto open_fields = identity_fields();
    d.events = {
        {"tcp_open", "a connection reached ESTABLISHED", open_fields},
        {"tcp_close", "a connection reached CLOSE, with its final statistics",
         conn_fields("state the connection left for CLOSE")},
        {"tcp_conn", "one row of the connection table, every snapshot_interval",
         conn_fields("current state")},
    };
    const std::vector<std::string> conn_labels = {"saddr", "sport", "daddr", "dport"};
    d.metrics = {
        {"netwatcher_tcp_connections_opened_total",
         MetricType::counter,
         "TCP connections that reached ESTABLISHED.",
         {"direction"}},
        {"netwatcher_tcp_connections_closed_total",
         MetricType::counter,
         "Tracked TCP connections that reached CLOSE.",
         {"direction"}},
        {"netwatcher_tcp_connections",
         MetricType::gauge,
         "Tracked TCP connections at the last snapshot.",
         {"direction"}},
        {"netwatcher_tcp_retransmits_total",
         MetricType::counter,
         "Retransmitted TCP segments, by cause (fast or timeout).",
         {"type"}},
        {"netwatcher_tcp_received_bytes_total",
         MetricType::counter,
         "Payload bytes received on tracked TCP connections.",
         {"direction"}},
        {"netwatcher_tcp_acked_bytes_total",
         MetricType::counter,
         "Payload bytes sent and acknowledged on tracked TCP connections.",
         {"direction"}},
        {"netwatcher_tcp_connection_srtt_seconds", MetricType::gauge,
         "Smoothed RTT per connection (per_connection_metrics).", conn_labels},
        {"netwatcher_tcp_connection_cwnd_segments", MetricType::gauge,
         "Congestion window per connection (per_connection_metrics).", conn_labels},
        {"netwatcher_tcp_connection_received_bytes", MetricType::gauge,
         "Payload bytes received per connection (per_connection_metrics).", conn_labels},
        {"netwatcher_tcp_connection_acked_bytes", MetricType::gauge,
         "Payload bytes acked per connection (per_connection_metrics).", conn_labels},
    };
    d.hooks = {
        {"inet_sock_set_state",
         "connection state changes (open, close, tuple)",
         {"set_state_btf", "set_state_tp"},
         true},
        {"tcp_destroy_sock", "forget freed sockets", {"destroy_sock_btf", "destroy_sock_tp"}, true},
        {"tcp_retransmit_skb", "retransmit counters", {"retransmit_btf", "retransmit_tp"}, true},
        {"sock_recv_length",
         "owner of accepted connections (receive)",
         {"recv_length_btf", "recv_length_tp"},
         false},
        {"sock_send_length",
         "owner of accepted connections (send)",
         {"send_length_btf", "send_length_tp"},
         false},
        {"tcp_adopt",
         "adopt connections open before start (netwatcher's netns)",
         {"adopt_tcp"},
         false},
        {"conn_table",
         "live statistics of tracked connections in every netns",
         {"dump_conns"},
         false,
         "tcp_conns"},
    };
    return d;
  }

  Status configure(const ConfigValues& config, const GlobalFilter& filter) {
    extra_ = config.get_bool("extra");
    retrans_ = config.get_bool("retrans");
    all_conn_ = config.get_bool("all_conn");
    snapshot_ = config.get_bool("snapshot");
    max_connections_ = static_cast<std::uint32_t>(config.get_int("max_connections"));
    max_closed_ = static_cast<std::size_t>(config.get_int("max_closed"));
    per_connection_metrics_ = config.get_bool("per_connection_metrics");
    max_connection_series_ = static_cast<std::size_t>(config.get_int("max_connection_series"));
    filter_ = filter;
    // State names from the running kernel's BTF, so they are right whatever
    // the kernel version.
    for (auto& [value, name] : kernel_enum("TCP_ESTABLISHED", "TCP_"))
      states_[static_cast<std::uint32_t>(value)] = name;
    return Status::success();
  }

  Status open(bpf_object** object) {
    skeleton_.reset(tcp_bpf__open());
    if (!skeleton_)
      return Status::failure("cannot open BPF object: " + std::string(std::strerror(errno)));
    fill_kernel_filter(const_cast<nw_filter&>(skeleton_->rodata->nw_filter_cfg), filter_);
    bpf_map__set_max_entries(skeleton_->maps.tcp_conns, max_connections_);
    *object = skeleton_->obj;
    return Status::success();
  }

  Status load() {
    if (int err = tcp_bpf__load(skeleton_.get()); err)
      return Status::failure("cannot load BPF object: " + std::string(std::strerror(-err)));
    return Status::success();
  }

  Status start(PluginHost& host) {
    host_ = &host;
    opened_ = host.metric("netwatcher_tcp_connections_opened_total");
    closed_ = host.metric("netwatcher_tcp_connections_closed_total");
    current_ = host.metric("netwatcher_tcp_connections");
    retransmits_ = host.metric("netwatcher_tcp_retransmits_total");
    received_ = host.metric("netwatcher_tcp_received_bytes_total");
    acked_ = host.metric("netwatcher_tcp_acked_bytes_total");
    conn_srtt_ = host.metric("netwatcher_tcp_connection_srtt_seconds");
    conn_cwnd_ = host.metric("netwatcher_tcp_connection_cwnd_segments");
    conn_received_ = host.metric("netwatcher_tcp_connection_received_bytes");
    conn_acked_ = host.metric("netwatcher_tcp_connection_acked_bytes");
    for (const char* direction : {"client", "server", "unknown"}) {
      opened_->add({direction}, 0);
      closed_->add({direction}, 0);
    }
    return Status::success();
  }

  Status decode(std::span<const std::byte> bytes, EventEmitter& out) {
    if (bytes.size() < sizeof(nw_record_header))
      return Status::failure("record of " + std::to_string(bytes.size()) +
                             " bytes is shorter than its header");
    nw_record_header header;
    std::memcpy(&header, bytes.data(), sizeof header);
    if (header.type != TCP_RECORD_OPEN && header.type != TCP_RECORD_CLOSE)
      return Status::failure("unknown record type " + std::to_string(header.type));
    if (bytes.size() < sizeof(tcp_conn_record))
      return Status::failure("record type " + std::to_string(header.type) + " has " +
                             std::to_string(bytes.size()) + " bytes, expected " +
                             std::to_string(sizeof(tcp_conn_record)));
    tcp_conn_record rec;
    std::memcpy(&rec, bytes.data(), sizeof rec);
    const char* direction = direction_name(rec.info.direction);
    if (header.type == TCP_RECORD_OPEN) {
      std::vector<Value> values = identity_values(rec);
      out.emit(kOpenEvent, header.timestamp_ns, std::move(values));
      opened_->add({direction}, 1);
      return Status::success();
    }
    closed_->add({direction}, 1);
    closed_received_[direction] += rec.stats.bytes_received;
    closed_acked_[direction] += rec.stats.bytes_acked;
    forget_series(rec);
    std::vector<Value> values = conn_values(rec);
    if (all_conn_ && max_closed_ > 0) {
      closed_table_.push_back(values);
      // The row now describes a closed connection: the kernel's TCP_CLOSE,
      // named like every other state (prefix stripped).
      closed_table_.back()[kState] = std::string("CLOSE");
      while (closed_table_.size() > max_closed_) closed_table_.pop_front();
    }
    out.emit(kCloseEvent, header.timestamp_ns, std::move(values));
    return Status::success();
  }

  Status collect(EventEmitter& out) {
    read_retransmit_counters();
    std::vector<tcp_conn_record> live;
    Status s = read_live_connections(live);
    std::map<std::string, double> live_received, live_acked, current;
    for (const char* direction : {"client", "server", "unknown"}) current[direction] = 0;
    for (const auto& rec : live) {
      const char* direction = direction_name(rec.info.direction);
      current[direction] += 1;
      live_received[direction] += rec.stats.bytes_received;
      live_acked[direction] += rec.stats.bytes_acked;
      if (snapshot_) out.emit(kConnEvent, rec.hdr.timestamp_ns, conn_values(rec));
      if (per_connection_metrics_) update_series(rec);
    }
    if (snapshot_)
      for (const auto& values : closed_table_) out.emit(kConnEvent, 0, std::vector<Value>(values));
    for (const auto& [direction, n] : current) current_->set({direction}, n);
    // Closed totals plus live values only ever grow: a connection's final
    // count at close is at least what the last snapshot saw.
    for (const char* direction : {"client", "server", "unknown"}) {
      received_->set({direction}, closed_received_[direction] + live_received[direction]);
      acked_->set({direction}, closed_acked_[direction] + live_acked[direction]);
    }
    return s;
  }

  void stop() {
    skeleton_.reset();
    host_ = nullptr;
  }

 private:
  struct SkeletonDeleter {
    void operator()(tcp_bpf* skeleton) const { tcp_bpf__destroy(skeleton); }
  };

  std::string state_name(std::uint32_t state) const {
    auto it = states_.find(state);
    return it != states_.end() ? it->second : "UNKNOWN(" + std::to_string(state) + ")";
  }

  std::vector<Value> identity_values(const tcp_conn_record& rec) const {
    const nw_tuple& t = rec.info.tuple;
    return {
        Value(std::uint64_t{rec.sock}),
        Value(std::uint64_t{rec.info.pid}),
        Value(std::string(rec.info.comm, strnlen(rec.info.comm, sizeof rec.info.comm))),
        Value(std::string(t.family == AF_INET6 ? "ipv6" : "ipv4")),
        Value(format_address(t.family, t.saddr)),
        Value(std::uint64_t{t.sport}),
        Value(format_address(t.family, t.daddr)),
        Value(std::uint64_t{t.dport}),
        Value(std::string(direction_name(rec.info.direction))),
    };
  }

  std::vector<Value> conn_values(const tcp_conn_record& rec) const {
    std::vector<Value> values = identity_values(rec);
    values.resize(kConnFieldCount);
    const tcp_conn_stats& s = rec.stats;
    values[kState] = state_name(rec.state);
    if (rec.info.start_ns) values[kDurationUs] = std::uint64_t{rec.duration_ns / 1000};
    values[kBytesReceived] = std::uint64_t{s.bytes_received};
    values[kBytesAcked] = std::uint64_t{s.bytes_acked};
    if (extra_) {
      values[kSrttUs] = std::uint64_t{s.srtt_us};
      values[kRwnd] = std::uint64_t{s.rcv_wnd};
      values[kCwnd] = std::uint64_t{s.snd_cwnd};
      values[kSsthresh] = std::uint64_t{s.snd_ssthresh};
      values[kSndbuf] = std::uint64_t{s.sndbuf};
      values[kWmemQueued] = std::uint64_t{s.wmem_queued};
      values[kBacklog] = std::uint64_t{s.backlog};
      values[kMaxBacklog] = std::uint64_t{s.max_backlog};
      values[kTotalRetrans] = std::uint64_t{s.total_retrans};
    }
    if (retrans_) {
      values[kFastRetrans] = std::uint64_t{rec.info.fast_retrans};
      values[kTimeoutRetrans] = std::uint64_t{rec.info.timeout_retrans};
    }
    return values;
  }

  ConnectionKey connection_key(const tcp_conn_record& rec) const {
    const nw_tuple& t = rec.info.tuple;
    return {format_address(t.family, t.saddr), std::to_string(t.sport),
            format_address(t.family, t.daddr), std::to_string(t.dport)};
  }

  void update_series(const tcp_conn_record& rec) {
    auto it = series_.find(rec.sock);
    if (it == series_.end()) {
      if (series_.size() >= max_connection_series_) return;
      it = series_.emplace(rec.sock, connection_key(rec).labels()).first;
    }
    conn_srtt_->set(it->second, rec.stats.srtt_us / 1e6);
    conn_cwnd_->set(it->second, rec.stats.snd_cwnd);
    conn_received_->set(it->second, static_cast<double>(rec.stats.bytes_received));
    conn_acked_->set(it->second, static_cast<double>(rec.stats.bytes_acked));
  }

  void forget_series(const tcp_conn_record& rec) {
    auto it = series_.find(rec.sock);
    if (it == series_.end()) return;
    for (MetricFamily* family : {conn_srtt_, conn_cwnd_, conn_received_, conn_acked_})
      family->remove(it->second);
    series_.erase(it);
  }

  void read_retransmit_counters() {
    const std::pair<std::uint32_t, const char*> counters[] = {
        {TCP_COUNTER_RETRANS_FAST, "fast"}, {TCP_COUNTER_RETRANS_TIMEOUT, "timeout"}};
    int fd = bpf_map__fd(skeleton_->maps.tcp_counters);
    for (const auto& [index, label] : counters)
      if (auto total = sum_percpu_u64(fd, &index))
        retransmits_->set({label}, static_cast<double>(*total));
  }

  // Runs the iterator behind an attached iter program and returns its output.
  static Status run_iterator(int link, std::vector<char>& out) {
    int fd = bpf_iter_create(link);
    if (fd < 0) return Status::failure("bpf_iter_create: " + std::string(std::strerror(errno)));
    char chunk[16384];
    ssize_t n;
    while ((n = read(fd, chunk, sizeof chunk)) > 0) out.insert(out.end(), chunk, chunk + n);
    int err = n < 0 ? errno : 0;
    close(fd);
    if (err) return Status::failure("reading BPF iterator: " + std::string(std::strerror(err)));
    return Status::success();
  }

  // Live connections with statistics from the map iterator; without it (older
  // kernels), what the tracking map knows, with zero statistics.
  Status read_live_connections(std::vector<tcp_conn_record>& out) {
    std::vector<char> buffer;
    if (int adopt = host_ ? host_->link_fd("adopt_tcp") : -1; adopt >= 0) {
      if (Status s = run_iterator(adopt, buffer); !s) return s;
    }
    if (int table = host_ ? host_->link_fd("dump_conns") : -1; table >= 0) {
      buffer.clear();
      if (Status s = run_iterator(table, buffer); !s) return s;
      for (std::size_t off = 0; off + sizeof(tcp_conn_record) <= buffer.size();
           off += sizeof(tcp_conn_record)) {
        tcp_conn_record rec;
        std::memcpy(&rec, buffer.data() + off, sizeof rec);
        out.push_back(rec);
      }
      return Status::success();
    }
    int map = bpf_map__fd(skeleton_->maps.tcp_conns);
    for_each_key<std::uint64_t>(map, [&](std::uint64_t sock) {
      tcp_conn_record rec{};
      if (bpf_map_lookup_elem(map, &sock, &rec.info) == 0 && rec.info.tuple_valid) {
        rec.sock = sock;
        rec.state = 1;  // tracked and past SYN: ESTABLISHED or closing
        out.push_back(rec);
      }
    });
    return Status::success();
  }

  std::unique_ptr<tcp_bpf, SkeletonDeleter> skeleton_;
  PluginHost* host_ = nullptr;
  bool extra_ = false, retrans_ = false, all_conn_ = false, snapshot_ = true;
  bool per_connection_metrics_ = false;
  std::uint32_t max_connections_ = 16384;
  std::size_t max_closed_ = 1024, max_connection_series_ = 1000;
  GlobalFilter filter_;
  std::map<std::uint32_t, std::string> states_;
  std::deque<std::vector<Value>> closed_table_;
  std::map<std::string, double> closed_received_, closed_acked_;
  std::map<std::uint64_t, LabelValues> series_;
  MetricFamily *opened_ = nullptr, *closed_ = nullptr, *current_ = nullptr, *retransmits_ = nullptr,
               *received_ = nullptr, *acked_ = nullptr, *conn_srtt_ = nullptr,
               *conn_cwnd_ = nullptr, *conn_received_ = nullptr, *conn_acked_ = nullptr;
};

}  // namespace

NETWATCHER_PROBE_PLUGIN(TcpPlugin, "tcp", "1.0.0",
                        "TCP connections: owner, tuple, state, windows, RTT, bytes, retransmits")
