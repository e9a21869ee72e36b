// icmp: ICMP and ICMPv6 messages in both directions, echo round-trip and
// kernel reply times, and the errors the kernel generates.
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "icmp.h"
#include "icmp.skel.h"
#include "names.hpp"
#include "netwatcher/format.hpp"
#include "netwatcher/kernel.hpp"
#include "netwatcher/plugin.hpp"

namespace {

using namespace netwatcher;

constexpr const char* kFamilyNames[ICMP_FAMILIES] = {"ipv4", "ipv6"};
constexpr const char* kDirectionNames[2] = {"rx", "tx"};
// Echo round trips cross networks: 2^10 ns (1 µs) .. 2^33 ns (~8.6 s). The
// kernel's own reply time: 2^7 ns (128 ns) .. 2^26 ns (~67 ms).
constexpr int kRttFirstLog2 = 10, kRttLastLog2 = 33;
constexpr int kReplyFirstLog2 = 7, kReplyLastLog2 = 26;

enum Event : std::size_t { kMessageEvent, kErrorEvent };

enum MessageField : std::size_t {
  kDirection,
  kFamily,
  kSrcAddr,
  kDstAddr,
  kType,
  kCode,
  kTypeNumber,
  kCodeNumber,
  kId,
  kSeq,
  kRttNs,
  kReplyNs,
  kLength,
  kInnerProtocol,
  kInnerSrcAddr,
  kInnerSrcPort,
  kInnerDstAddr,
  kInnerDstPort,
  kPid,
  kComm,
  kNetns,
  kIfindex,
  kMessageFieldCount
};

enum ErrorField : std::size_t {
  kErrType,
  kErrCode,
  kErrTypeNumber,
  kErrCodeNumber,
  kErrProtocol,
  kErrSrcAddr,
  kErrSrcPort,
  kErrDstAddr,
  kErrDstPort,
  kErrNetns,
  kErrorFieldCount
};

FieldSchema label(const char* name, const char* help, int width, bool optional = false) {
  return {name, FieldType::text, "", help, FieldRole::label, width, optional};
}
FieldSchema number(const char* name, const char* unit, const char* help, FieldRole role, int width,
                   bool optional = false) {
  return {name, FieldType::u64, unit, help, role, width, optional};
}

void put_tuple(std::vector<Value>& v, std::size_t protocol, std::size_t src, std::size_t src_port,
               std::size_t dst, std::size_t dst_port, const nw_packet& p) {
  int family = p.tuple.family == AF_INET6 ? AF_INET6 : AF_INET;
  v[protocol] = ip_protocol_name(p.protocol);
  v[src] = format_address(family, p.tuple.saddr);
  v[dst] = format_address(family, p.tuple.daddr);
  if (p.has_ports) {
    v[src_port] = std::uint64_t{p.tuple.sport};
    v[dst_port] = std::uint64_t{p.tuple.dport};
  }
}

class IcmpPlugin {
 public:
  PluginDescription describe() const {
    PluginDescription d;
    d.config = {
        {"events", ConfigType::boolean, true,
         "emit an icmp_message event per message (rate-limited); metrics are always kept"},
        {"error_events", ConfigType::boolean, true,
         "emit an icmp_error_sent event when the kernel generates an ICMP error"},
        {"max_events_per_second", ConfigType::integer, std::int64_t{1000},
         "events per second across all CPUs; the rest are counted as suppressed (0 = no limit)", 0,
         10000000},
        {"max_pending_echoes", ConfigType::integer, std::int64_t{8192},
         "echo requests awaiting their reply tracked at once (LRU; unanswered ones leave after "
         "a minute)",
         64, 1 << 22},
    };
    d.flags = {
        {'I', "icmp", "enabled", "ICMP/ICMPv6 messages, echo RTT and kernel reply time"},
    };
    d.events = {
        {"icmp_message",
         "an ICMP or ICMPv6 message entered (rx) or left (tx) the host",
         {
             label("direction", "rx or tx", 2),
             label("family", "ipv4 (ICMP) or ipv6 (ICMPv6)", 4),
             label("src_addr", "source address", 15),
             label("dst_addr", "destination address", 15),
             label("type", "message type, e.g. echo_request", 23),
             label("code", "message code, e.g. port_unreachable", 16),
             number("icmp_type", "", "type number", FieldRole::label, 3),
             number("icmp_code", "", "code number", FieldRole::label, 3),
             number("id", "", "echo identifier", FieldRole::label, 5, true),
             number("seq", "", "echo sequence number", FieldRole::label, 5, true),
             number("rtt_ns", "nanoseconds",
                    "echo reply received: time since the matching request was sent",
                    FieldRole::value, 9, true),
             number("reply_ns", "nanoseconds",
                    "echo reply sent: time since the matching request was received",
                    FieldRole::value, 8, true),
             number("length", "bytes", "packet length from the IP header", FieldRole::value, 6),
             label("inner_protocol", "error messages: protocol of the quoted packet", 5, true),
             label("inner_src_addr", "quoted packet's source", 15, true),
             number("inner_src_port", "", "quoted packet's source port", FieldRole::label, 5, true),
             label("inner_dst_addr", "quoted packet's destination", 15, true),
             number("inner_dst_port", "", "quoted packet's destination port", FieldRole::label, 5,
                    true),
             number("pid", "",
                    "sending process (tx), or the sender of the request a reply "
                    "answers",
                    FieldRole::label, 7, true),
             label("comm", "its command name", 15, true),
             number("netns", "", "network namespace inode", FieldRole::label, 10),
             number("ifindex", "", "interface", FieldRole::label, 7),
         }},
        {"icmp_error_sent",
         "the kernel generated an ICMP error for a packet (icmp:icmp_send, IPv4)",
         {
             label("type", "e.g. destination_unreachable", 23),
             label("code", "e.g. port_unreachable", 16),
             number("icmp_type", "", "type number", FieldRole::label, 3),
             number("icmp_code", "", "code number", FieldRole::label, 3),
             label("protocol", "offending packet's protocol", 5),
             label("src_addr", "offending packet's source", 15),
             number("src_port", "", "its source port", FieldRole::label, 5, true),
             label("dst_addr", "offending packet's destination", 15),
             number("dst_port", "", "its destination port", FieldRole::label, 5, true),
             number("netns", "", "network namespace inode", FieldRole::label, 10),
         }},
    };
    d.metrics = {
        {"netwatcher_icmp_messages_total",
         MetricType::counter,
         "ICMP and ICMPv6 messages by family, direction and type.",
         {"family", "direction", "type"}},
        {"netwatcher_icmp_echo_rtt_seconds",
         MetricType::histogram,
         "Echo round trip: from our request leaving to its reply arriving.",
         {"family"},
         log2_ns_bucket_bounds(kRttFirstLog2, kRttLastLog2)},
        {"netwatcher_icmp_echo_reply_seconds",
         MetricType::histogram,
         "Time the kernel took to answer an echo request (request received to reply sent).",
         {"family"},
         log2_ns_bucket_bounds(kReplyFirstLog2, kReplyLastLog2)},
        {"netwatcher_icmp_errors_sent_total",
         MetricType::counter,
         "ICMP errors the kernel generated (icmp:icmp_send, IPv4), by type and code.",
         {"type", "code"}},
    };
    d.hooks = {
        {"receive",
         "messages received (net:netif_receive_skb)",
         {"icmp_receive", "icmp_receive_tp"},
         true},
        {"send",
         "messages sent (net:net_dev_queue)",
         {"icmp_send_queue", "icmp_send_queue_tp"},
         true},
        {"error_sent",
         "errors the kernel generates (icmp:icmp_send)",
         {"icmp_error_sent", "icmp_error_sent_tp"},
         false},
    };
    return d;
  }

  Status configure(const ConfigValues& config, const GlobalFilter& filter) {
    message_events_ = config.get_bool("events");
    error_events_ = config.get_bool("error_events");
    max_events_per_second_ = static_cast<std::uint64_t>(config.get_int("max_events_per_second"));
    max_pending_ = static_cast<std::uint32_t>(config.get_int("max_pending_echoes"));
    filter_ = filter;
    return Status::success();
  }

  Status open(bpf_object** object) {
    skeleton_.reset(icmp_bpf__open());
    if (!skeleton_)
      return Status::failure("cannot open BPF object: " + std::string(std::strerror(errno)));
    fill_kernel_filter(const_cast<nw_filter&>(skeleton_->rodata->nw_filter_cfg), filter_);
    auto& cfg = const_cast<icmp_config&>(skeleton_->rodata->icmp_cfg);
    cfg.message_events = message_events_;
    cfg.error_events = error_events_;
    cfg.max_events_per_second = max_events_per_second_;
    bpf_map__set_max_entries(skeleton_->maps.icmp_echo_pending, max_pending_);
    *object = skeleton_->obj;
    return Status::success();
  }

  Status load() {
    if (int err = icmp_bpf__load(skeleton_.get()); err)
      return Status::failure("cannot load BPF object: " + std::string(std::strerror(-err)));
    return Status::success();
  }

  Status start(PluginHost& host) {
    messages_ = host.metric("netwatcher_icmp_messages_total");
    rtt_ = host.metric("netwatcher_icmp_echo_rtt_seconds");
    reply_ = host.metric("netwatcher_icmp_echo_reply_seconds");
    errors_ = host.metric("netwatcher_icmp_errors_sent_total");
    pending_table_ =
        host.track_table({"pending_echoes", "icmp_echo_pending", ICMP_TABLE_PENDING_ECHOES, 0,
                          "plugins.icmp.max_pending_echoes"});
    // Fixed in code: every ICMPv4 error kind the kernel sends fits many times over.
    host.track_table({"error_kinds", "icmp_errors_sent", ICMP_TABLE_ERROR_KINDS, 0,
                      "ICMP_ERROR_KINDS in plugins/icmp/icmp.h (fixed)"});
    host.set_metrics_refresh([this] { return refresh_metrics(); });
    return Status::success();
  }

  Status decode(std::span<const std::byte> bytes, EventEmitter& out) {
    nw_record_header hdr;
    if (bytes.size() < sizeof hdr)
      return Status::failure("icmp record of " + std::to_string(bytes.size()) + " bytes");
    std::memcpy(&hdr, bytes.data(), sizeof hdr);
    if (hdr.type == ICMP_RECORD_MESSAGE) return decode_message(bytes, out);
    if (hdr.type == ICMP_RECORD_ERROR_SENT) return decode_error(bytes, out);
    return Status::failure("unknown icmp record type " + std::to_string(hdr.type));
  }

  Status collect(EventEmitter&) {
    expire_echoes();
    return refresh_metrics();
  }

  // Every family mirrors in-kernel counters; also run at scrape time.
  Status refresh_metrics() {
    const std::uint32_t zero = 0;
    auto counters = sum_percpu<icmp_counters>(bpf_map__fd(skeleton_->maps.icmp_messages), &zero);
    if (!counters)
      return Status::failure("reading icmp_messages: " + std::string(std::strerror(errno)));
    for (std::uint32_t family = 0; family < ICMP_FAMILIES; ++family) {
      for (std::uint32_t dir = 0; dir < 2; ++dir) {
        for (std::uint32_t type = 0; type < 256; ++type) {
          const std::uint64_t total = counters->messages[ICMP_COUNTER(family, dir, type)];
          if (total == 0) continue;
          messages_->set({kFamilyNames[family], kDirectionNames[dir],
                          icmp::type_name(family == 1, static_cast<int>(type))},
                         static_cast<double>(total));
        }
      }
    }
    const int latency = bpf_map__fd(skeleton_->maps.icmp_latency);
    for (std::uint32_t family = 0; family < ICMP_FAMILIES; ++family) {
      for (std::uint32_t kind : {ICMP_ECHO_RTT, ICMP_ECHO_REPLY}) {
        std::uint32_t index = ICMP_HISTOGRAM(family, kind);
        auto h = sum_percpu<icmp_latency>(latency, &index);
        if (!h)
          return Status::failure("reading icmp_latency: " + std::string(std::strerror(errno)));
        if (h->count == 0) continue;
        bool rtt = kind == ICMP_ECHO_RTT;
        (rtt ? rtt_ : reply_)
            ->set_histogram({kFamilyNames[family]},
                            log2_slots_to_buckets(h->slots, rtt ? kRttFirstLog2 : kReplyFirstLog2,
                                                  rtt ? kRttLastLog2 : kReplyLastLog2),
                            static_cast<double>(h->sum_ns) / 1e9);
      }
    }
    for_each_percpu_u64<icmp_error_key>(
        bpf_map__fd(skeleton_->maps.icmp_errors_sent),
        [&](const icmp_error_key& key, std::uint64_t total) {
          int type = static_cast<int>(key.type), code = static_cast<int>(key.code);
          errors_->set({icmp::type_name(false, type), icmp::code_name(false, type, code)},
                       static_cast<double>(total));
        });
    return Status::success();
  }

  void stop() { skeleton_.reset(); }

 private:
  // An echo unanswered for this long is lost. Forgetting it here keeps the
  // table to echoes that may still be answered, so that its evictions mean
  // it is too small rather than that a peer stopped answering.
  static constexpr std::uint64_t kEchoLostNs = 60'000'000'000;

  void expire_echoes() {
    const int fd = bpf_map__fd(skeleton_->maps.icmp_echo_pending);
    const std::uint64_t now = monotonic_ns();
    std::vector<echo_key> lost;
    for_each_key<echo_key>(fd, [&](const echo_key& key) {
      echo_pending pending;
      if (bpf_map_lookup_elem(fd, &key, &pending) == 0 && pending.ns + kEchoLostNs < now)
        lost.push_back(key);
    });
    std::uint64_t removed = 0;
    for (const auto& key : lost)
      if (bpf_map_delete_elem(fd, &key) == 0) ++removed;
    if (pending_table_) pending_table_->count_removed(removed);
  }

  struct SkeletonDeleter {
    void operator()(icmp_bpf* skeleton) const { icmp_bpf__destroy(skeleton); }
  };

  Status decode_message(std::span<const std::byte> bytes, EventEmitter& out) {
    if (bytes.size() < sizeof(icmp_record))
      return Status::failure("icmp_message record of " + std::to_string(bytes.size()) +
                             " bytes, expected " + std::to_string(sizeof(icmp_record)));
    icmp_record rec;
    std::memcpy(&rec, bytes.data(), sizeof rec);
    if (rec.direction > ICMP_TX)
      return Status::failure("icmp_message record with direction " + std::to_string(rec.direction));
    const nw_packet& p = rec.packet;
    bool ipv6 = p.tuple.family == AF_INET6;
    int family = ipv6 ? AF_INET6 : AF_INET;
    std::vector<Value> v = out.make_values(kMessageFieldCount);
    v[kDirection] = std::string(kDirectionNames[rec.direction]);
    v[kFamily] = std::string(kFamilyNames[ipv6 ? 1 : 0]);
    v[kSrcAddr] = format_address(family, p.tuple.saddr);
    v[kDstAddr] = format_address(family, p.tuple.daddr);
    v[kType] = icmp::type_name(ipv6, p.icmp_type);
    v[kCode] = icmp::code_name(ipv6, p.icmp_type, p.icmp_code);
    v[kTypeNumber] = std::uint64_t{p.icmp_type};
    v[kCodeNumber] = std::uint64_t{p.icmp_code};
    if (rec.flags & ICMP_IS_ECHO) {
      v[kId] = std::uint64_t{p.icmp_id};
      v[kSeq] = std::uint64_t{p.icmp_seq};
    }
    if (rec.flags & ICMP_HAS_RTT) v[kRttNs] = std::uint64_t{rec.rtt_ns};
    if (rec.flags & ICMP_HAS_REPLY) v[kReplyNs] = std::uint64_t{rec.reply_ns};
    v[kLength] = std::uint64_t{p.length};
    if (rec.flags & ICMP_HAS_INNER)
      put_tuple(v, kInnerProtocol, kInnerSrcAddr, kInnerSrcPort, kInnerDstAddr, kInnerDstPort,
                rec.inner);
    if (rec.flags & ICMP_HAS_PID) {
      v[kPid] = std::uint64_t{rec.pid};
      v[kComm] = std::string(rec.comm, strnlen(rec.comm, sizeof rec.comm));
    }
    v[kNetns] = std::uint64_t{rec.netns};
    v[kIfindex] = std::uint64_t{rec.ifindex};
    out.emit(kMessageEvent, rec.hdr.timestamp_ns, std::move(v));
    return Status::success();
  }

  Status decode_error(std::span<const std::byte> bytes, EventEmitter& out) {
    if (bytes.size() < sizeof(icmp_error_record))
      return Status::failure("icmp_error_sent record of " + std::to_string(bytes.size()) +
                             " bytes, expected " + std::to_string(sizeof(icmp_error_record)));
    icmp_error_record rec;
    std::memcpy(&rec, bytes.data(), sizeof rec);
    std::vector<Value> v = out.make_values(kErrorFieldCount);
    v[kErrType] = icmp::type_name(false, rec.type);
    v[kErrCode] = icmp::code_name(false, rec.type, rec.code);
    v[kErrTypeNumber] = static_cast<std::uint64_t>(rec.type & 0xff);
    v[kErrCodeNumber] = static_cast<std::uint64_t>(rec.code & 0xff);
    put_tuple(v, kErrProtocol, kErrSrcAddr, kErrSrcPort, kErrDstAddr, kErrDstPort, rec.offending);
    v[kErrNetns] = std::uint64_t{rec.netns};
    out.emit(kErrorEvent, rec.hdr.timestamp_ns, std::move(v));
    return Status::success();
  }

  std::unique_ptr<icmp_bpf, SkeletonDeleter> skeleton_;
  bool message_events_ = true, error_events_ = true;
  std::uint64_t max_events_per_second_ = 1000;
  std::uint32_t max_pending_ = 8192;
  TableAccount* pending_table_ = nullptr;
  GlobalFilter filter_;
  MetricFamily *messages_ = nullptr, *rtt_ = nullptr, *reply_ = nullptr, *errors_ = nullptr;
};

}  // namespace

NETWATCHER_PROBE_PLUGIN(IcmpPlugin, "icmp", "1.0.0",
                        "ICMP/ICMPv6 messages, echo round trips, kernel reply time, errors sent")
