// drop: packets the kernel frees with a drop reason, where and why.
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "drop.h"
#include "drop.skel.h"
#include "netwatcher/format.hpp"
#include "netwatcher/kallsyms.hpp"
#include "netwatcher/kernel.hpp"
#include "netwatcher/plugin.hpp"
#include "reasons.hpp"

namespace {

using namespace netwatcher;
using netwatcher::drop::DropReasons;

// Architectures whose softirqs run on their own per-CPU stack, so that the
// stack a drop runs on tells its context (drop.bpf.c on_task_stack()).
#if defined(__x86_64__) || defined(__aarch64__)
constexpr bool kStackContext = true;
#else
constexpr bool kStackContext = false;
#endif

// What the BPF side needs from kallsyms: THREAD_SIZE (16 KiB on x86_64 and
// arm64, twice that with KASAN, whose symbols kallsyms lists when it is built
// in) and the text range of some functions (start up to the next symbol).
struct KernelText {
  std::uint64_t task_stack_bytes = 16384;
  std::map<std::string, std::pair<std::uint64_t, std::uint64_t>> ranges;
};

KernelText scan_kernel_text(const std::set<std::string>& functions) {
  KernelText found;
  std::ifstream kallsyms("/proc/kallsyms");
  std::vector<std::uint64_t> text;
  std::map<std::string, std::uint64_t> starts;
  std::string address, type, name;
  while (kallsyms >> address >> type >> name) {
    kallsyms.ignore(4096, '\n');
    if (name.rfind("kasan_", 0) == 0) found.task_stack_bytes = 32768;
    if (type != "t" && type != "T") continue;
    std::uint64_t value = std::strtoull(address.c_str(), nullptr, 16);
    if (!value) continue;  // kptr_restrict hides addresses
    text.push_back(value);
    if (functions.count(name) && !starts.count(name)) starts[name] = value;
  }
  std::sort(text.begin(), text.end());
  for (const auto& [function, start] : starts) {
    auto next = std::upper_bound(text.begin(), text.end(), start);
    if (next != text.end()) found.ranges[function] = {start, *next};
  }
  return found;
}

// One entry of `housekeeping`: "REASON" or "REASON@function".
struct Housekeeping {
  std::string entry;
  std::uint32_t reason = 0;
  std::string function;  // empty: anywhere
};

enum Field : std::size_t {
  kReason,
  kReasonCode,
  kLocation,
  kProtocol,
  kFamily,
  kSrcAddr,
  kSrcPort,
  kDstAddr,
  kDstPort,
  kIcmpType,
  kIcmpCode,
  kLength,
  kIfindex,
  kNetns,
  kPid,
  kComm,
  kStack,
  kFieldCount
};

constexpr const char* kOther = "other";

// Bounded label values: IP protocols by name (or number, at most 256), other
// ethertypes by a short list.
std::string protocol_name(std::uint16_t ethertype, std::uint8_t ip_protocol, bool ip) {
  if (ip) return ip_protocol_name(ip_protocol);
  switch (ethertype) {
    case 0x0800:
      return "ipv4";
    case 0x86DD:
      return "ipv6";
    case 0x0806:
      return "arp";
    case 0x88CC:
      return "lldp";
    case 0x8100:
    case 0x88A8:
      return "vlan";
    case 0:
      return "none";
    default:
      return kOther;
  }
}

class DropPlugin {
 public:
  PluginDescription describe() const {
    PluginDescription d;
    d.config = {
        {"events", ConfigType::boolean, true,
         "emit a drop event per dropped packet (counters are always kept)"},
        {"max_events_per_second", ConfigType::integer, std::int64_t{1000},
         "drop events per second across all CPUs; the rest are counted as suppressed (0 = no "
         "limit)",
         0, 10000000},
        {"symbolize", ConfigType::boolean, true,
         "name drop locations (and stacks) function+offset from /proc/kallsyms"},
        {"stack", ConfigType::boolean, false, "add the kernel stack to each drop event"},
        {"housekeeping", ConfigType::string_list,
         std::vector<std::string>{"QUEUE_PURGE", "NOT_SPECIFIED@ip6_mc_input"},
         "drop reasons, or REASON@function, that are housekeeping rather than loss: counted in "
         "netwatcher_drop_housekeeping_total, not as drops (QUEUE_PURGE: a closing socket's "
         "queues; NOT_SPECIFIED@ip6_mc_input: IPv6 multicast such as neighbour discovery for "
         "groups nobody joined)"},
        {"softirq_hooks", ConfigType::boolean, false,
         "tell process context from softirq (for pid/comm) with irq:softirq_entry/exit, two "
         "programs on every softirq of the host, instead of checking which kernel stack the "
         "drop runs on (x86_64 and arm64 only)"},
        {"top_locations", ConfigType::integer, std::int64_t{20},
         "drop locations with their own netwatcher_drop_locations_total series; the rest "
         "count as 'other'",
         1, 1000},
    };
    d.flags = {
        {'k', "drop", "enabled", "packet drops with the kernel's reason and location"},
        {'T', "addr-to-func", "symbolize", "drop locations as function+offset (default on)"},
        {'A', "stack", "stack", "kernel stack of each drop"},
    };
    auto opt = [](FieldSchema f) {
      f.optional = true;
      return f;
    };
    d.events = {
        {"drop",
         "a packet the kernel freed with a drop reason (skb:kfree_skb)",
         {
             {"reason", FieldType::text, "", "drop reason (kernel enum skb_drop_reason)",
              FieldRole::label, 22},
             {"reason_code", FieldType::u64, "", "raw reason value", FieldRole::value, 11},
             {"location", FieldType::text, "", "kernel function+offset that dropped it",
              FieldRole::label, 32},
             {"protocol", FieldType::text, "", "tcp, udp, icmp, ... or the ethertype",
              FieldRole::label, 8},
             opt({"family", FieldType::text, "", "ipv4 or ipv6", FieldRole::label, 6}),
             opt({"src_addr", FieldType::text, "", "packet source address", FieldRole::label, 15}),
             opt({"src_port", FieldType::u64, "", "packet source port", FieldRole::label, 8}),
             opt({"dst_addr", FieldType::text, "", "packet destination address", FieldRole::label,
                  15}),
             opt({"dst_port", FieldType::u64, "", "packet destination port", FieldRole::label, 8}),
             opt({"icmp_type", FieldType::u64, "", "ICMP / ICMPv6 type", FieldRole::label, 9}),
             opt({"icmp_code", FieldType::u64, "", "ICMP / ICMPv6 code", FieldRole::label, 9}),
             {"length", FieldType::u64, "bytes", "skb length", FieldRole::value, 6},
             opt({"ifindex", FieldType::u64, "", "device index (in netns)", FieldRole::label, 7}),
             opt({"netns", FieldType::u64, "", "network namespace inode", FieldRole::label, 10}),
             opt({"pid", FieldType::u64, "",
                  "process that dropped it (absent outside process context)", FieldRole::label, 7}),
             opt({"comm", FieldType::text, "", "process name", FieldRole::label, 15}),
             opt({"stack", FieldType::text, "", "kernel stack, innermost first, ';'-separated",
                  FieldRole::label, 0}),
         }}};
    d.metrics = {
        {"netwatcher_drops_total",
         MetricType::counter,
         "Packets freed with a drop reason, by reason and protocol.",
         {"reason", "protocol"}},
        {"netwatcher_drop_housekeeping_total",
         MetricType::counter,
         "skbs freed with a drop reason that is the kernel's housekeeping, not a lost packet "
         "(the drop plugin's housekeeping key), by entry.",
         {"entry"}},
        {"netwatcher_drop_locations_total",
         MetricType::counter,
         "Packets dropped by kernel location (function+offset); the first top_locations "
         "locations seen (largest first) keep their own series, the rest are 'other'.",
         {"location"}},
    };
    d.hooks = {
        {"kfree_skb", "skbs freed with a reason (drops)", {"kfree_skb_btf", "kfree_skb_tp"}, true},
        {"softirq_entry",
         "tells process context from softirq, for pid/comm (softirq_hooks = true)",
         {"softirq_entry_btf", "softirq_entry_tp"},
         false,
         "",
         "softirq_hooks"},
        {"softirq_exit",
         "tells process context from softirq, for pid/comm (softirq_hooks = true)",
         {"softirq_exit_btf", "softirq_exit_tp"},
         false,
         "",
         "softirq_hooks"},
    };
    return d;
  }

  Status configure(const ConfigValues& config, const GlobalFilter& filter) {
    events_ = config.get_bool("events");
    max_events_per_second_ = static_cast<std::uint64_t>(config.get_int("max_events_per_second"));
    symbolize_ = config.get_bool("symbolize");
    stack_ = config.get_bool("stack");
    softirq_hooks_ = config.get_bool("softirq_hooks");
    housekeeping_.clear();
    top_locations_ = static_cast<std::size_t>(config.get_int("top_locations"));
    filter_ = filter;
    reasons_ = DropReasons::from_kernel();
    // Absent on kernels without drop reasons: then nothing is excluded.
    skb_consumed_ = reasons_.value_of("SKB_CONSUMED").value_or(~0u);
    not_dropped_yet_ = reasons_.value_of("SKB_NOT_DROPPED_YET").value_or(~0u);
    for (const auto& entry : config.get_strings("housekeeping")) {
      Housekeeping h;
      h.entry = entry;
      auto at = entry.find('@');
      std::string reason = entry.substr(0, at);
      if (at != std::string::npos) h.function = entry.substr(at + 1);
      auto value = reasons_.value_of(reason);
      if (!value)
        return Status::failure("plugins.drop.housekeeping: '" + entry + "': '" + reason +
                               "' is no drop reason of this kernel");
      if (at != std::string::npos && h.function.empty())
        return Status::failure("plugins.drop.housekeeping: '" + entry +
                               "': expected REASON or REASON@function");
      h.reason = *value;
      housekeeping_.push_back(std::move(h));
    }
    if (housekeeping_.size() > DROP_HOUSEKEEPING_MAX)
      return Status::failure("plugins.drop.housekeeping: at most " +
                             std::to_string(DROP_HOUSEKEEPING_MAX) + " entries");
    return Status::success();
  }

  Status open(bpf_object** object) {
    skeleton_.reset(drop_bpf__open());
    if (!skeleton_)
      return Status::failure("cannot open BPF object: " + std::string(std::strerror(errno)));
    fill_kernel_filter(const_cast<nw_filter&>(skeleton_->rodata->nw_filter_cfg), filter_);
    auto& cfg = const_cast<drop_config&>(skeleton_->rodata->drop_cfg);
    cfg.skb_consumed = skb_consumed_;
    cfg.not_dropped_yet = not_dropped_yet_;
    cfg.max_events_per_second = max_events_per_second_;
    cfg.events = events_;
    cfg.stack = stack_;
    auto* rodata = skeleton_->rodata;
    if (softirq_hooks_)
      const_cast<__u8&>(rodata->drop_context) = DROP_CONTEXT_SOFTIRQ_HOOKS;
    else if (kStackContext)
      const_cast<__u8&>(rodata->drop_context) = DROP_CONTEXT_STACK;
    std::set<std::string> functions = {"handle_softirqs", "__do_softirq"};
    for (const auto& h : housekeeping_)
      if (!h.function.empty()) functions.insert(h.function);
    const KernelText text = scan_kernel_text(functions);
    const_cast<__u64&>(rodata->drop_task_stack_bytes) = text.task_stack_bytes;
    // handle_softirqs since 6.10, which ksoftirqd runs too; __do_softirq before.
    for (const char* handler : {"__do_softirq", "handle_softirqs"})
      if (auto it = text.ranges.find(handler); it != text.ranges.end()) {
        const_cast<__u64&>(rodata->drop_softirq_text_start) = it->second.first;
        const_cast<__u64&>(rodata->drop_softirq_text_end) = it->second.second;
      }
    // A function this kernel does not have (e.g. no IPv6) frees nothing there.
    housekeeping_active_.clear();
    for (const auto& h : housekeeping_) {
      drop_housekeeping entry{};
      entry.reason = h.reason;
      if (!h.function.empty()) {
        auto it = text.ranges.find(h.function);
        if (it == text.ranges.end()) continue;
        entry.start = it->second.first;
        entry.end = it->second.second;
      }
      cfg.housekeeping[cfg.housekeeping_count++] = entry;
      housekeeping_active_.push_back(h.entry);
    }
    *object = skeleton_->obj;
    return Status::success();
  }

  Status load() {
    if (int err = drop_bpf__load(skeleton_.get()); err)
      return Status::failure("cannot load BPF object: " + std::string(std::strerror(-err)));
    return Status::success();
  }

  Status start(PluginHost& host) {
    drops_ = host.metric("netwatcher_drops_total");
    housekeeping_counts_ = host.metric("netwatcher_drop_housekeeping_total");
    locations_ = host.metric("netwatcher_drop_locations_total");
    host.track_table({"reason_counts", "drop_counts", DROP_TABLE_COUNTS, 0,
                      "DROP_MAX_COUNT_KEYS in plugins/drop/drop.h (fixed)"});
    host.track_table({"locations", "drop_locations", DROP_TABLE_LOCATIONS, 0,
                      "DROP_MAX_LOCATIONS in plugins/drop/drop.h (fixed)"});
    if (symbolize_) {
      symbols_ = KernelSymbols::load();
      if (symbols_.hidden())
        return Status::failure(
            "/proc/kallsyms shows only zero addresses (kptr_restrict); run as root or set "
            "symbolize = false");
    }
    locations_->add({kOther}, 0);
    bool entry = host.link_fd("softirq_entry_btf") >= 0 || host.link_fd("softirq_entry_tp") >= 0;
    bool exit = host.link_fd("softirq_exit_btf") >= 0 || host.link_fd("softirq_exit_tp") >= 0;
    skeleton_->bss->context_known = entry && exit;
    host.set_metrics_refresh([this] { return refresh_metrics(); });
    return Status::success();
  }

  Status decode(std::span<const std::byte> bytes, EventEmitter& out) {
    if (bytes.size() < sizeof(drop_record))
      return Status::failure("drop record of " + std::to_string(bytes.size()) +
                             " bytes, expected " + std::to_string(sizeof(drop_record)));
    drop_record rec;
    std::memcpy(&rec, bytes.data(), sizeof rec);
    if (rec.hdr.type != DROP_RECORD)
      return Status::failure("unknown record type " + std::to_string(rec.hdr.type));
    out.emit(0, rec.hdr.timestamp_ns, values(out, rec));
    return Status::success();
  }

  Status collect(EventEmitter&) { return refresh_metrics(); }

  // Both families mirror in-kernel counters; also run at scrape time.
  Status refresh_metrics() {
    read_counts();
    read_locations();
    read_housekeeping();
    return Status::success();
  }

  void stop() { skeleton_.reset(); }

 private:
  struct SkeletonDeleter {
    void operator()(drop_bpf* skeleton) const { drop_bpf__destroy(skeleton); }
  };

  void read_housekeeping() {
    int fd = bpf_map__fd(skeleton_->maps.drop_housekeeping_counts);
    for (std::uint32_t i = 0; i < housekeeping_active_.size(); ++i)
      if (auto total = sum_percpu_u64(fd, &i))
        housekeeping_counts_->set({housekeeping_active_[i]}, static_cast<double>(*total));
  }

  // Without symbolize the table stays empty and format() gives "0x<hex>".
  std::string location_name(std::uint64_t address) const { return symbols_.format(address); }

  // netwatcher's own program and the tracepoint glue that called it: the
  // innermost frames of every captured stack, of no interest to the reader.
  bool is_tracing_frame(std::uint64_t address) const {
    auto symbol = symbols_.resolve(address);
    if (!symbol) return false;
    return symbol->module == "bpf" || symbol->name.rfind("__bpf_trace_", 0) == 0 ||
           symbol->name.rfind("bpf_trace_run", 0) == 0 ||
           symbol->name.rfind("__traceiter_", 0) == 0;
  }

  std::vector<Value> values(EventEmitter& out, const drop_record& rec) {
    std::vector<Value> v = out.make_values(kFieldCount);
    const nw_packet& p = rec.packet;
    bool ip = p.tuple.family == AF_INET || p.tuple.family == AF_INET6;
    v[kReason] = reasons_.name(rec.reason);
    v[kReasonCode] = std::uint64_t{rec.reason};
    v[kLocation] = location_name(rec.location);
    v[kProtocol] = protocol_name(rec.ethertype, p.protocol, ip);
    if (ip) {
      v[kFamily] = std::string(family_name(p.tuple.family));
      v[kSrcAddr] = format_address(p.tuple.family, p.tuple.saddr);
      v[kDstAddr] = format_address(p.tuple.family, p.tuple.daddr);
      if (p.has_ports) {
        v[kSrcPort] = std::uint64_t{p.tuple.sport};
        v[kDstPort] = std::uint64_t{p.tuple.dport};
      }
      if (p.protocol == 1 || p.protocol == 58) {
        v[kIcmpType] = std::uint64_t{p.icmp_type};
        v[kIcmpCode] = std::uint64_t{p.icmp_code};
      }
    }
    v[kLength] = std::uint64_t{p.length};
    if (rec.ifindex) v[kIfindex] = std::uint64_t{rec.ifindex};
    if (rec.netns) v[kNetns] = std::uint64_t{rec.netns};
    if (rec.pid) {
      v[kPid] = std::uint64_t{rec.pid};
      v[kComm] = std::string(rec.comm, strnlen(rec.comm, sizeof rec.comm));
    }
    if (rec.stack_depth) {
      std::string stack;
      unsigned depth = std::min<unsigned>(rec.stack_depth, DROP_MAX_STACK);
      unsigned first = 0;
      while (first + 1 < depth && is_tracing_frame(rec.stack[first])) ++first;
      for (unsigned i = first; i < depth; ++i) {
        if (i > first) stack += ';';
        stack += location_name(rec.stack[i]);
      }
      v[kStack] = std::move(stack);
    }
    return v;
  }

  void read_counts() {
    int fd = bpf_map__fd(skeleton_->maps.drop_counts);
    std::map<std::pair<std::string, std::string>, std::uint64_t> totals;
    for_each_percpu_u64<drop_count_key>(fd, [&](const drop_count_key& key, std::uint64_t n) {
      bool ip = key.ethertype == 0x0800 || key.ethertype == 0x86DD || key.protocol != 0;
      totals[{reasons_.name(key.reason), protocol_name(key.ethertype, key.protocol, ip)}] += n;
    });
    for (const auto& [labels, n] : totals)
      drops_->set({labels.first, labels.second}, static_cast<double>(n));
  }

  void read_locations() {
    int fd = bpf_map__fd(skeleton_->maps.drop_locations);
    std::map<std::string, std::uint64_t> by_location;
    std::uint64_t total = 0;
    for_each_percpu_u64<std::uint64_t>(fd, [&](std::uint64_t address, std::uint64_t n) {
      by_location[location_name(address)] += n;
      total += n;
    });
    std::uint32_t zero = 0;
    total += sum_percpu_u64(bpf_map__fd(skeleton_->maps.drop_location_overflow), &zero).value_or(0);
    // Free slots go to the largest locations not shown yet; a shown location
    // keeps its series, so every series (and 'other', once the slots are
    // full) only grows.
    if (shown_.size() < top_locations_) {
      std::vector<std::pair<std::uint64_t, std::string>> candidates;
      for (const auto& [name, n] : by_location)
        if (!shown_.count(name)) candidates.emplace_back(n, name);
      std::sort(candidates.rbegin(), candidates.rend());
      for (const auto& [n, name] : candidates) {
        if (shown_.size() >= top_locations_) break;
        shown_.insert(name);
      }
    }
    std::uint64_t shown_total = 0;
    for (const auto& name : shown_) {
      std::uint64_t n = by_location.count(name) ? by_location[name] : 0;
      shown_total += n;
      locations_->set({name}, static_cast<double>(n));
    }
    locations_->set({kOther}, static_cast<double>(total - std::min(total, shown_total)));
  }

  std::unique_ptr<drop_bpf, SkeletonDeleter> skeleton_;
  bool events_ = true, symbolize_ = true, stack_ = false, softirq_hooks_ = false;
  std::uint64_t max_events_per_second_ = 1000;
  std::size_t top_locations_ = 20;
  GlobalFilter filter_;
  DropReasons reasons_;
  std::uint32_t skb_consumed_ = ~0u, not_dropped_yet_ = ~0u;
  KernelSymbols symbols_;
  std::set<std::string> shown_;
  MetricFamily *drops_ = nullptr, *locations_ = nullptr, *housekeeping_counts_ = nullptr;
  std::vector<Housekeeping> housekeeping_;
  std::vector<std::string> housekeeping_active_;  // entries in the kernel's table, in order
};

}  // namespace

NETWATCHER_PROBE_PLUGIN(DropPlugin, "drop", "1.0.0",
                        "packet drops: kernel drop reason, location, tuple, process, stack")
