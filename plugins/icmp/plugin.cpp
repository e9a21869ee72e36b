// icmp: ICMP and ICMPv6 messages in both directions, echo round-trip and
// kernel reply times, and the errors the kernel generates.
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <sys/socket.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <string>
#include <vector>

#include "icmp.h"
#include "icmp.skel.h"
#include "names.hpp"
#include "netwatcher/format.hpp"
#include "netwatcher/kernel.hpp"
#include "netwatcher/plugin.hpp"
#include "netwatcher/skeleton.hpp"

namespace {

using namespace netwatcher;

constexpr const char* kFamilyNames[ICMP_FAMILIES] = {"ipv4", "ipv6"};
constexpr const char* kDirectionNames[2] = {"rx", "tx"};
// Echo round trips cross networks: 2^10 ns (1 µs) .. 2^33 ns (~8.6 s). The
// kernel's own reply time: 2^7 ns (128 ns) .. 2^26 ns (~67 ms).
constexpr int kRttFirstLog2 = 10, kRttLastLog2 = 33;
constexpr int kReplyFirstLog2 = 7, kReplyLastLog2 = 26;

// A message's type and code, by name and by number.
struct Kind {
  Kind(EventDecl& e, const char* type_help, const char* code_help)
      : type{e, "type", type_help, {.width = 23}},
        code{e, "code", code_help, {.width = 16}},
        type_number{e, "icmp_type", "type number", {.width = 3}},
        code_number{e, "icmp_code", "code number", {.width = 3}} {}
  void set(EventDecl::Row& row, bool ipv6, int t, int c) const {
    row.set(type, icmp::type_name(ipv6, t))
        .set(code, icmp::code_name(ipv6, t, c))
        .set(type_number, static_cast<std::uint64_t>(t & 0xff))
        .set(code_number, static_cast<std::uint64_t>(c & 0xff));
  }
  Label<std::string> type, code;
  Label<std::uint64_t> type_number, code_number;
};

// The packet an error is about: the one an error message quotes, or the one
// that made the kernel send an error.
struct Tuple {
  Tuple(EventDecl& e, const std::string& prefix, bool optional, std::array<const char*, 5> help)
      : protocol{e, prefix + "protocol", help[0], {.width = 5, .optional = optional}},
        src_addr{e, prefix + "src_addr", help[1], {.width = 15, .optional = optional}},
        src_port{e, prefix + "src_port", help[2], {.width = 5, .optional = true}},
        dst_addr{e, prefix + "dst_addr", help[3], {.width = 15, .optional = optional}},
        dst_port{e, prefix + "dst_port", help[4], {.width = 5, .optional = true}} {}
  void set(EventDecl::Row& row, const nw_packet& p) const {
    int family = p.tuple.family == AF_INET6 ? AF_INET6 : AF_INET;
    row.set(protocol, ip_protocol_name(p.protocol))
        .set(src_addr, format_address(family, p.tuple.saddr))
        .set(dst_addr, format_address(family, p.tuple.daddr));
    if (p.has_ports) row.set(src_port, p.tuple.sport).set(dst_port, p.tuple.dport);
  }
  Label<std::string> protocol, src_addr;
  Label<std::uint64_t> src_port;
  Label<std::string> dst_addr;
  Label<std::uint64_t> dst_port;
};

class IcmpPlugin {
 public:
  PluginDescription describe() const {
    PluginDescription d;
    d.config = keys_.keys();
    d.flags = {
        {'I', "icmp", "enabled", "ICMP/ICMPv6 messages, echo RTT and kernel reply time"},
    };
    d.events = events_.schemas();
    d.metrics = metrics_.specs();
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
    if (Status s = keys_.read(config); !s) return s;
    cfg_ = {.max_events_per_second = *max_events_per_second_,
            .message_events = *message_events_,
            .error_events = *error_events_};
    filter_ = filter;
    return Status::success();
  }

  Status open(bpf_object** object) {
    if (Status s = skeleton_.open(object, filter_); !s) return s;
    tunable(skeleton_->rodata->icmp_cfg) = cfg_;
    bpf_map__set_max_entries(skeleton_->maps.icmp_echo_pending, *max_pending_);
    return Status::success();
  }
  Status load() { return skeleton_.load(); }

  Status start(PluginHost& host) {
    if (Status s = metrics_.bind(host); !s) return s;
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
          messages_.mirror({kFamilyNames[family], kDirectionNames[dir],
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
            .replace({kFamilyNames[family]},
                     log2_slots_to_buckets(h->slots, rtt ? kRttFirstLog2 : kReplyFirstLog2,
                                           rtt ? kRttLastLog2 : kReplyLastLog2),
                     static_cast<double>(h->sum_ns) / 1e9);
      }
    }
    for_each_percpu_u64<icmp_error_key>(
        bpf_map__fd(skeleton_->maps.icmp_errors_sent),
        [&](const icmp_error_key& key, std::uint64_t total) {
          int type = static_cast<int>(key.type), code = static_cast<int>(key.code);
          errors_.mirror({icmp::type_name(false, type), icmp::code_name(false, type, code)},
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

  Status decode_message(std::span<const std::byte> bytes, EventEmitter& out) {
    icmp_record rec;
    if (Status s = read_record(bytes, "icmp_message", rec); !s) return s;
    if (rec.direction > ICMP_TX)
      return Status::failure("icmp_message record with direction " + std::to_string(rec.direction));
    const nw_packet& p = rec.packet;
    const bool ipv6 = p.tuple.family == AF_INET6;
    const int family = ipv6 ? AF_INET6 : AF_INET;
    const Message& e = message_;
    auto row = e.row(out);
    row.set(e.direction, kDirectionNames[rec.direction])
        .set(e.family, kFamilyNames[ipv6 ? 1 : 0])
        .set(e.src_addr, format_address(family, p.tuple.saddr))
        .set(e.dst_addr, format_address(family, p.tuple.daddr))
        .set(e.length, p.length)
        .set(e.netns, rec.netns)
        .set(e.ifindex, rec.ifindex);
    e.kind.set(row, ipv6, p.icmp_type, p.icmp_code);
    if (rec.flags & ICMP_IS_ECHO) row.set(e.id, p.icmp_id).set(e.seq, p.icmp_seq);
    if (rec.flags & ICMP_HAS_RTT) row.set(e.rtt_ns, rec.rtt_ns);
    if (rec.flags & ICMP_HAS_REPLY) row.set(e.reply_ns, rec.reply_ns);
    if (rec.flags & ICMP_HAS_INNER) e.inner.set(row, rec.inner);
    if (rec.flags & ICMP_HAS_PID) row.set(e.pid, rec.pid).set(e.comm, bounded_text(rec.comm));
    if (rec.cgroup) row.set(e.cgroup_id, rec.cgroup);
    row.emit(rec.hdr.timestamp_ns);
    return Status::success();
  }

  Status decode_error(std::span<const std::byte> bytes, EventEmitter& out) {
    icmp_error_record rec;
    if (Status s = read_record(bytes, "icmp_error_sent", rec); !s) return s;
    const ErrorSent& e = error_;
    auto row = e.row(out);
    e.kind.set(row, false, rec.type, rec.code);
    e.offending.set(row, rec.offending);
    row.set(e.netns, rec.netns).emit(rec.hdr.timestamp_ns);
    return Status::success();
  }

  KeySet keys_;
  Setting<bool> message_events_{
      keys_, "events", true,
      "emit an icmp_message event per message (rate-limited); metrics are always kept"};
  Setting<bool> error_events_{
      keys_, "error_events", true,
      "emit an icmp_error_sent event when the kernel generates an ICMP error"};
  Setting<std::uint64_t> max_events_per_second_{
      keys_,
      "max_events_per_second",
      1000,
      "events per second across all CPUs; the rest are counted as suppressed (0 = no limit)",
      {.min = 0, .max = 10000000}};
  Setting<std::uint32_t> max_pending_{
      keys_,
      "max_pending_echoes",
      8192,
      "echo requests awaiting their reply tracked at once (LRU; unanswered ones leave after a "
      "minute)",
      {.min = 64, .max = 1 << 22}};

  EventSet events_;
  struct Message : EventDecl {
    explicit Message(EventSet& set)
        : EventDecl(set, "icmp_message",
                    "an ICMP or ICMPv6 message entered (rx) or left (tx) the host") {}
    Label<std::string> direction{
        *this, "direction", "rx or tx", {.width = 2, .anomaly = AnomalyRole::key}};
    Label<std::string> family{
        *this, "family", "ipv4 (ICMP) or ipv6 (ICMPv6)", {.width = 4, .anomaly = AnomalyRole::key}};
    Label<std::string> src_addr{*this, "src_addr", "source address", {.width = 15}};
    Label<std::string> dst_addr{*this, "dst_addr", "destination address", {.width = 15}};
    Kind kind{*this, "message type, e.g. echo_request", "message code, e.g. port_unreachable"};
    Label<std::uint64_t> id{*this, "id", "echo identifier", {.width = 5, .optional = true}};
    Label<std::uint64_t> seq{*this, "seq", "echo sequence number", {.width = 5, .optional = true}};
    Field<std::uint64_t> rtt_ns{
        *this,
        "rtt_ns",
        "echo reply received: time since the matching request was sent",
        {.unit = "nanoseconds", .width = 9, .optional = true, .anomaly = AnomalyRole::sample}};
    Field<std::uint64_t> reply_ns{
        *this,
        "reply_ns",
        "echo reply sent: time since the matching request was received",
        {.unit = "nanoseconds", .width = 8, .optional = true, .anomaly = AnomalyRole::sample}};
    Field<std::uint64_t> length{
        *this, "length", "packet length from the IP header", {.unit = "bytes", .width = 6}};
    Tuple inner{*this,
                "inner_",
                true,
                {"error messages: protocol of the quoted packet", "quoted packet's source",
                 "quoted packet's source port", "quoted packet's destination",
                 "quoted packet's destination port"}};
    Label<std::uint64_t> pid{*this,
                             "pid",
                             "sending process (tx), or the sender of the request a reply answers",
                             {.width = 7, .optional = true}};
    Label<std::string> comm{*this, "comm", "its command name", {.width = 15, .optional = true}};
    CgroupIdLabel cgroup_id{*this};
    Label<std::uint64_t> netns{*this, "netns", "network namespace inode", {.width = 10}};
    Label<std::uint64_t> ifindex{*this, "ifindex", "interface", {.width = 7}};
  } message_{events_};
  struct ErrorSent : EventDecl {
    explicit ErrorSent(EventSet& set)
        : EventDecl(set, "icmp_error_sent",
                    "the kernel generated an ICMP error for a packet (icmp:icmp_send, IPv4)") {}
    Kind kind{*this, "e.g. destination_unreachable", "e.g. port_unreachable"};
    Tuple offending{*this,
                    "",
                    false,
                    {"offending packet's protocol", "offending packet's source", "its source port",
                     "offending packet's destination", "its destination port"}};
    Label<std::uint64_t> netns{*this, "netns", "network namespace inode", {.width = 10}};
  } error_{events_};

  MetricSet metrics_;
  Counter messages_{metrics_,
                    "netwatcher_icmp_messages_total",
                    "ICMP and ICMPv6 messages by family, direction and type.",
                    {"family", "direction", "type"}};
  Histogram rtt_{metrics_,
                 "netwatcher_icmp_echo_rtt_seconds",
                 "Echo round trip: from our request leaving to its reply arriving.",
                 {"family"},
                 log2_ns_bucket_bounds(kRttFirstLog2, kRttLastLog2)};
  Histogram reply_{
      metrics_,
      "netwatcher_icmp_echo_reply_seconds",
      "Time the kernel took to answer an echo request (request received to reply sent).",
      {"family"},
      log2_ns_bucket_bounds(kReplyFirstLog2, kReplyLastLog2)};
  Counter errors_{metrics_,
                  "netwatcher_icmp_errors_sent_total",
                  "ICMP errors the kernel generated (icmp:icmp_send, IPv4), by type and code.",
                  {"type", "code"}};

  Skeleton<icmp_bpf> skeleton_{icmp_bpf__open, icmp_bpf__load, icmp_bpf__destroy};
  icmp_config cfg_ = {};
  TableAccount* pending_table_ = nullptr;
  GlobalFilter filter_;
};

}  // namespace

NETWATCHER_PROBE_PLUGIN(IcmpPlugin, "icmp", "1.0.0",
                        "ICMP/ICMPv6 messages, echo round trips, kernel reply time, errors sent")
