// drop: packets the kernel frees with a drop reason, where and why.
#include <bpf/libbpf.h>
#include <sys/socket.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "drop.h"
#include "drop.skel.h"
#include "netwatcher/format.hpp"
#include "netwatcher/kallsyms.hpp"
#include "netwatcher/kernel.hpp"
#include "netwatcher/plugin.hpp"
#include "netwatcher/skeleton.hpp"
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

constexpr const char* kOther = "other";

// Bounded label values: IP protocols by name (or number, at most 256), other
// ethertypes by a short list.
std::string protocol_name(std::uint16_t ethertype, std::uint8_t ip_protocol, bool ip) {
  if (ip) return ip_protocol_name(ip_protocol);
  static const std::map<std::uint16_t, const char*> kEthertypes = {
      {0x0800, "ipv4"}, {0x86DD, "ipv6"}, {0x0806, "arp"}, {0x88CC, "lldp"},
      {0x8100, "vlan"}, {0x88A8, "vlan"}, {0, "none"}};
  auto it = kEthertypes.find(ethertype);
  return it != kEthertypes.end() ? it->second : kOther;
}

class DropPlugin {
 public:
  PluginDescription describe() const {
    PluginDescription d;
    d.config = keys_.keys();
    d.flags = {
        {'k', "drop", "enabled", "packet drops with the kernel's reason and location"},
        {'T', "addr-to-func", "symbolize", "drop locations as function+offset (default on)"},
        {'A', "stack", "stack", "kernel stack of each drop"},
    };
    d.events = events_.schemas();
    d.metrics = metrics_.specs();
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
    if (Status s = keys_.read(config); !s) return s;
    reasons_ = DropReasons::from_kernel();
    // Absent on kernels without drop reasons: then nothing is excluded.
    cfg_ = {.skb_consumed = reasons_.value_of("SKB_CONSUMED").value_or(~0u),
            .not_dropped_yet = reasons_.value_of("SKB_NOT_DROPPED_YET").value_or(~0u),
            .max_events_per_second = *max_events_per_second_,
            .events = *events_on_,
            .stack = *stack_};
    filter_ = filter;
    housekeeping_.clear();
    for (const auto& entry : *housekeeping_entries_) {
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
    if (Status s = skeleton_.open(object, filter_); !s) return s;
    auto* rodata = skeleton_->rodata;
    drop_config& cfg = tunable(rodata->drop_cfg) = cfg_;
    tunable(rodata->drop_context) = *softirq_hooks_ ? DROP_CONTEXT_SOFTIRQ_HOOKS
                                    : kStackContext ? DROP_CONTEXT_STACK
                                                    : DROP_CONTEXT_NONE;
    std::set<std::string> functions = {"handle_softirqs", "__do_softirq"};
    for (const auto& h : housekeeping_)
      if (!h.function.empty()) functions.insert(h.function);
    const KernelText text = scan_kernel_text(functions);
    tunable(rodata->drop_task_stack_bytes) = text.task_stack_bytes;
    // handle_softirqs since 6.10, which ksoftirqd runs too; __do_softirq before.
    for (const char* handler : {"__do_softirq", "handle_softirqs"})
      if (auto it = text.ranges.find(handler); it != text.ranges.end()) {
        tunable(rodata->drop_softirq_text_start) = it->second.first;
        tunable(rodata->drop_softirq_text_end) = it->second.second;
      }
    // A function this kernel does not have (e.g. no IPv6) frees nothing there.
    housekeeping_active_.clear();
    for (const auto& h : housekeeping_) {
      drop_housekeeping entry{.reason = h.reason};
      if (!h.function.empty()) {
        auto it = text.ranges.find(h.function);
        if (it == text.ranges.end()) continue;
        entry.start = it->second.first;
        entry.end = it->second.second;
      }
      cfg.housekeeping[cfg.housekeeping_count++] = entry;
      housekeeping_active_.push_back(h.entry);
    }
    return Status::success();
  }
  Status load() { return skeleton_.load(); }

  Status start(PluginHost& host) {
    if (Status s = metrics_.bind(host); !s) return s;
    host.track_table({"reason_counts", "drop_counts", DROP_TABLE_COUNTS, 0,
                      "DROP_MAX_COUNT_KEYS in plugins/drop/drop.h (fixed)"});
    host.track_table({"locations", "drop_locations", DROP_TABLE_LOCATIONS, 0,
                      "DROP_MAX_LOCATIONS in plugins/drop/drop.h (fixed)"});
    // Without symbolize, stacks still need the symbols to leave out their
    // innermost (tracing) frames; only names need them to be visible.
    if (*symbolize_ || cfg_.stack) {
      symbols_ = KernelSymbols::load();
      if (*symbolize_ && symbols_.hidden())
        return Status::failure(
            "/proc/kallsyms shows only zero addresses (kptr_restrict); run as root or set "
            "symbolize = false");
    }
    locations_.add({kOther}, 0);
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
    const nw_packet& p = rec.packet;
    const bool ip = p.tuple.family == AF_INET || p.tuple.family == AF_INET6;
    const Drop& e = drop_;
    auto row = e.row(out);
    row.set(e.reason, reasons_.name(rec.reason))
        .set(e.reason_code, rec.reason)
        .set(e.location, location_name(rec.location))
        .set(e.protocol, protocol_name(rec.ethertype, p.protocol, ip))
        .set(e.length, p.length);
    if (ip) {
      row.set(e.family, family_name(p.tuple.family))
          .set(e.src_addr, format_address(p.tuple.family, p.tuple.saddr))
          .set(e.dst_addr, format_address(p.tuple.family, p.tuple.daddr));
      if (p.has_ports) row.set(e.src_port, p.tuple.sport).set(e.dst_port, p.tuple.dport);
      if (p.protocol == 1 || p.protocol == 58)
        row.set(e.icmp_type, p.icmp_type).set(e.icmp_code, p.icmp_code);
    }
    if (rec.ifindex) row.set(e.ifindex, rec.ifindex);
    if (rec.netns) row.set(e.netns, rec.netns);
    if (rec.pid) row.set(e.pid, rec.pid).set(e.comm, bounded_text(rec.comm));
    if (rec.cgroup) row.set(e.cgroup_id, rec.cgroup);
    if (rec.stack_depth) row.set(e.stack, stack_of(rec));
    row.emit(rec.hdr.timestamp_ns);
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
  void read_housekeeping() {
    int fd = bpf_map__fd(skeleton_->maps.drop_housekeeping_counts);
    for (std::uint32_t i = 0; i < housekeeping_active_.size(); ++i)
      if (auto total = sum_percpu_u64(fd, &i))
        housekeeping_counts_.mirror({housekeeping_active_[i]}, static_cast<double>(*total));
  }

  // Without symbolize: "0x<hex>", what format() gives for an unresolved address.
  std::string location_name(std::uint64_t address) const {
    static const KernelSymbols kNone;
    return (*symbolize_ ? symbols_ : kNone).format(address);
  }

  // netwatcher's own program and the tracepoint glue that called it: the
  // innermost frames of every captured stack, of no interest to the reader.
  bool is_tracing_frame(std::uint64_t address) const {
    auto symbol = symbols_.resolve(address);
    if (!symbol) return false;
    return symbol->module == "bpf" || symbol->name.rfind("__bpf_trace_", 0) == 0 ||
           symbol->name.rfind("bpf_trace_run", 0) == 0 ||
           symbol->name.rfind("__traceiter_", 0) == 0;
  }

  std::string stack_of(const drop_record& rec) const {
    std::string stack;
    unsigned depth = std::min<unsigned>(rec.stack_depth, DROP_MAX_STACK);
    unsigned first = 0;
    while (first + 1 < depth && is_tracing_frame(rec.stack[first])) ++first;
    for (unsigned i = first; i < depth; ++i) {
      if (i > first) stack += ';';
      stack += location_name(rec.stack[i]);
    }
    return stack;
  }

  void read_counts() {
    int fd = bpf_map__fd(skeleton_->maps.drop_counts);
    std::map<std::pair<std::string, std::string>, std::uint64_t> totals;
    for_each_percpu_u64<drop_count_key>(fd, [&](const drop_count_key& key, std::uint64_t n) {
      bool ip = key.ethertype == 0x0800 || key.ethertype == 0x86DD || key.protocol != 0;
      totals[{reasons_.name(key.reason), protocol_name(key.ethertype, key.protocol, ip)}] += n;
    });
    for (const auto& [labels, n] : totals)
      drops_.mirror({labels.first, labels.second}, static_cast<double>(n));
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
    if (shown_.size() < *top_locations_) {
      std::vector<std::pair<std::uint64_t, std::string>> candidates;
      for (const auto& [name, n] : by_location)
        if (!shown_.count(name)) candidates.emplace_back(n, name);
      std::sort(candidates.rbegin(), candidates.rend());
      for (const auto& [n, name] : candidates) {
        if (shown_.size() >= *top_locations_) break;
        shown_.insert(name);
      }
    }
    std::uint64_t shown_total = 0;
    for (const auto& name : shown_) {
      std::uint64_t n = by_location.count(name) ? by_location[name] : 0;
      shown_total += n;
      locations_.mirror({name}, static_cast<double>(n));
    }
    locations_.mirror({kOther}, static_cast<double>(total - std::min(total, shown_total)));
  }

  KeySet keys_;
  Setting<bool> events_on_{keys_, "events", true,
                           "emit a drop event per dropped packet (counters are always kept)"};
  Setting<std::uint64_t> max_events_per_second_{
      keys_,
      "max_events_per_second",
      1000,
      "drop events per second across all CPUs; the rest are counted as suppressed (0 = no "
      "limit)",
      {.min = 0, .max = 10000000}};
  Setting<bool> symbolize_{keys_, "symbolize", true,
                           "name drop locations (and stacks) function+offset from /proc/kallsyms"};
  Setting<bool> stack_{keys_, "stack", false, "add the kernel stack to each drop event"};
  Setting<std::vector<std::string>> housekeeping_entries_{
      keys_,
      "housekeeping",
      {"QUEUE_PURGE", "NOT_SPECIFIED@ip6_mc_input"},
      "drop reasons, or REASON@function, that are housekeeping rather than loss: counted in "
      "netwatcher_drop_housekeeping_total, not as drops (QUEUE_PURGE: a closing socket's "
      "queues; NOT_SPECIFIED@ip6_mc_input: IPv6 multicast such as neighbour discovery for "
      "groups nobody joined)"};
  Setting<bool> softirq_hooks_{
      keys_, "softirq_hooks", false,
      "tell process context from softirq (for pid/comm) with irq:softirq_entry/exit, two "
      "programs on every softirq of the host, instead of checking which kernel stack the "
      "drop runs on (x86_64 and arm64 only)"};
  Setting<std::size_t> top_locations_{
      keys_,
      "top_locations",
      20,
      "drop locations with their own netwatcher_drop_locations_total series; the rest "
      "count as 'other'",
      {.min = 1, .max = 1000}};

  EventSet events_;
  struct Drop : EventDecl {
    explicit Drop(EventSet& set)
        : EventDecl(set, "drop", "a packet the kernel freed with a drop reason (skb:kfree_skb)") {}
    Label<std::string> reason{
        *this, "reason", "drop reason (kernel enum skb_drop_reason)", {.width = 22}};
    Field<std::uint64_t> reason_code{*this, "reason_code", "raw reason value", {.width = 11}};
    Label<std::string> location{
        *this, "location", "kernel function+offset that dropped it", {.width = 32}};
    Label<std::string> protocol{
        *this, "protocol", "tcp, udp, icmp, ... or the ethertype", {.width = 8}};
    Label<std::string> family{*this, "family", "ipv4 or ipv6", {.width = 6, .optional = true}};
    Label<std::string> src_addr{
        *this, "src_addr", "packet source address", {.width = 15, .optional = true}};
    Label<std::uint64_t> src_port{
        *this, "src_port", "packet source port", {.width = 8, .optional = true}};
    Label<std::string> dst_addr{
        *this, "dst_addr", "packet destination address", {.width = 15, .optional = true}};
    Label<std::uint64_t> dst_port{
        *this, "dst_port", "packet destination port", {.width = 8, .optional = true}};
    Label<std::uint64_t> icmp_type{
        *this, "icmp_type", "ICMP / ICMPv6 type", {.width = 9, .optional = true}};
    Label<std::uint64_t> icmp_code{
        *this, "icmp_code", "ICMP / ICMPv6 code", {.width = 9, .optional = true}};
    Field<std::uint64_t> length{*this, "length", "skb length", {.unit = "bytes", .width = 6}};
    Label<std::uint64_t> ifindex{
        *this, "ifindex", "device index (in netns)", {.width = 7, .optional = true}};
    Label<std::uint64_t> netns{
        *this, "netns", "network namespace inode", {.width = 10, .optional = true}};
    Label<std::uint64_t> pid{*this,
                             "pid",
                             "process that dropped it (absent outside process context)",
                             {.width = 7, .optional = true}};
    Label<std::string> comm{*this, "comm", "process name", {.width = 15, .optional = true}};
    CgroupIdLabel cgroup_id{*this};
    Label<std::string> stack{
        *this, "stack", "kernel stack, innermost first, ';'-separated", {.optional = true}};
  } drop_{events_};

  MetricSet metrics_;
  Counter drops_{metrics_,
                 "netwatcher_drops_total",
                 "Packets freed with a drop reason, by reason and protocol.",
                 {"reason", "protocol"}};
  Counter housekeeping_counts_{
      metrics_,
      "netwatcher_drop_housekeeping_total",
      "skbs freed with a drop reason that is the kernel's housekeeping, not a lost packet (the "
      "drop plugin's housekeeping key), by entry.",
      {"entry"}};
  Counter locations_{metrics_,
                     "netwatcher_drop_locations_total",
                     "Packets dropped by kernel location (function+offset); the first "
                     "top_locations locations seen (largest first) keep their own series, the "
                     "rest are 'other'.",
                     {"location"}};

  Skeleton<drop_bpf> skeleton_{drop_bpf__open, drop_bpf__load, drop_bpf__destroy};
  drop_config cfg_ = {.skb_consumed = ~0u, .not_dropped_yet = ~0u};
  GlobalFilter filter_;
  DropReasons reasons_;
  KernelSymbols symbols_;
  std::set<std::string> shown_;
  std::vector<Housekeeping> housekeeping_;
  std::vector<std::string> housekeeping_active_;  // entries in the kernel's table, in order
};

}  // namespace

NETWATCHER_PROBE_PLUGIN(DropPlugin, "drop", "1.0.0",
                        "packet drops: kernel drop reason, location, tuple, process, stack")
