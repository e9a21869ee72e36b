// netfilter: time each packet spends in each netfilter hook (rule chains,
// conntrack), per family, from BPF netfilter programs at both ends of a hook.
#include <bpf/libbpf.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>
#include <string>
#include <vector>

#include "netfilter.h"
#include "netfilter.skel.h"
#include "netwatcher/format.hpp"
#include "netwatcher/kernel.hpp"
#include "netwatcher/netns.hpp"
#include "netwatcher/plugin.hpp"
#include "netwatcher/skeleton.hpp"

namespace {

using namespace netwatcher;

constexpr const char* kHookNames[NF_HOOKS] = {"prerouting", "input", "forward", "output",
                                              "postrouting"};
constexpr const char* kFamilyNames[NF_FAMILIES] = {"ipv4", "ipv6"};
constexpr int kNfprotoOf[NF_FAMILIES] = {2, 10};
constexpr const char* kPathNames[] = {"receive", "local_in", "forward", "local_out"};
// Histogram buckets: 2^7 ns (128 ns) .. 2^26 ns (~67 ms), powers of two, so
// each in-kernel log2 slot falls in exactly one bucket.
constexpr int kFirstBucketLog2 = 7, kLastBucketLog2 = 26;
// BPF netfilter links may not use INT_MIN or INT_MAX themselves.
constexpr int kFirstPriority = INT_MIN + 1, kLastPriority = INT_MAX - 1;

const std::vector<std::string> kHookLabels = {"hook", "family"};

class NetfilterPlugin {
 public:
  PluginDescription describe() const {
    PluginDescription d;
    d.config = keys_.keys();
    d.flags = {
        {'n', "netfilter", "enabled", "time spent in each netfilter hook"},
        {0, "nf-events", "events", "one event per packet and netfilter hook (rate-limited)"},
    };
    d.events = events_.schemas();
    d.metrics = metrics_.specs();
    d.hooks = {
        {"hook_entry", "first priority of each hook", {"nf_first"}, true},
        {"hook_exit", "last priority of each hook", {"nf_last"}, true},
    };
    return d;
  }

  Status configure(const ConfigValues& config, const GlobalFilter& filter) {
    if (Status s = keys_.read(config); !s) return s;
    hooks_.clear();
    for (const auto& name : *hook_names_) {
      auto found = std::find(std::begin(kHookNames), std::end(kHookNames), name);
      if (found == std::end(kHookNames))
        return Status::failure("plugins.netfilter.hooks: unknown hook '" + name +
                               "' (expected prerouting, input, forward, output, postrouting)");
      hooks_.push_back(static_cast<int>(found - std::begin(kHookNames)));
    }
    if (hooks_.empty()) return Status::failure("plugins.netfilter.hooks is empty");
    if (Status s = namespaces_.configure(*namespace_names_, "plugins.netfilter.namespaces"); !s)
      return s;
    cfg_ = {.max_events_per_second = *max_events_per_second_, .events = *events_on_};
    filter_ = filter;
    return Status::success();
  }

  Status open(bpf_object** object) {
    if (Status s = skeleton_.open(object, filter_); !s) return s;
    tunable(skeleton_->rodata->nf_cfg) = cfg_;
    bpf_map__set_max_entries(skeleton_->maps.nf_inflight, *max_tracked_);
    return Status::success();
  }
  Status load() { return skeleton_.load(); }

  Status start(PluginHost& host) {
    if (Status s = metrics_.bind(host); !s) return s;
    auto link = [this, &host](const std::string& netns) { return link_namespace(host, netns); };
    if (Status s = namespaces_.start(host, link); !s) return s;
    host.track_table(
        {"packets", "nf_inflight", NF_TABLE_PACKETS, 0, "plugins.netfilter.max_tracked_packets"});
    host.set_metrics_refresh([this] { return refresh_metrics(); });
    return Status::success();
  }

  Status decode(std::span<const std::byte> bytes, EventEmitter& out) {
    if (bytes.size() < sizeof(nf_record))
      return Status::failure("nf_hook record of " + std::to_string(bytes.size()) +
                             " bytes, expected " + std::to_string(sizeof(nf_record)));
    nf_record rec;
    std::memcpy(&rec, bytes.data(), sizeof rec);
    if (rec.hdr.type != NF_RECORD_HOOK)
      return Status::failure("unknown record type " + std::to_string(rec.hdr.type));
    if (rec.hook >= NF_HOOKS || rec.path > NF_PATH_LOCAL_OUT)
      return Status::failure("nf_hook record with hook " + std::to_string(rec.hook) + " and path " +
                             std::to_string(rec.path));
    const nw_packet& p = rec.packet;
    const int family = rec.family == 10 ? AF_INET6 : AF_INET;
    const Hook& e = hook_;
    auto row = e.row(out);
    row.set(e.hook, kHookNames[rec.hook])
        .set(e.family, family_name(rec.family))
        .set(e.path, kPathNames[rec.path])
        .set(e.protocol, ip_protocol_name(p.protocol))
        .set(e.src_addr, format_address(family, p.tuple.saddr))
        .set(e.dst_addr, format_address(family, p.tuple.daddr))
        .set(e.length, p.length)
        .set(e.hook_ns, rec.hook_ns)
        .set(e.netns, rec.netns);
    if (p.has_ports) row.set(e.src_port, p.tuple.sport).set(e.dst_port, p.tuple.dport);
    if (rec.in_ifindex) row.set(e.in_ifindex, rec.in_ifindex);
    if (rec.out_ifindex) row.set(e.out_ifindex, rec.out_ifindex);
    row.emit(rec.hdr.timestamp_ns);
    return Status::success();
  }

  // New namespaces are linked here, so they are watched within one
  // snapshot_interval of appearing; gone ones are released.
  Status collect(EventEmitter&) {
    Status linked = namespaces_.update();
    Status refreshed = refresh_metrics();
    return linked ? refreshed : linked;
  }

  // Every family mirrors in-kernel counters; also run at scrape time.
  Status refresh_metrics() {
    int fd = bpf_map__fd(skeleton_->maps.nf_stats);
    for (int fam = 0; fam < NF_FAMILIES; ++fam) {
      if (!family_wanted(fam)) continue;
      for (int hook : hooks_) {
        std::uint32_t index = NF_INDEX(fam, hook);
        auto total = sum_percpu<nf_hook_stats>(fd, &index);
        if (!total)
          return Status::failure("reading nf_stats: " + std::string(std::strerror(errno)));
        LabelValues labels{kHookNames[hook], kFamilyNames[fam]};
        latency_.replace(labels,
                         log2_slots_to_buckets(total->slots, kFirstBucketLog2, kLastBucketLog2),
                         static_cast<double>(total->time_ns) / 1e9);
        packets_.mirror(labels, static_cast<double>(total->entered));
        stopped_.mirror(
            labels, static_cast<double>(total->entered - std::min(total->entered, total->passed)));
      }
    }
    return Status::success();
  }

  void stop() { skeleton_.reset(); }

 private:
  bool family_wanted(int fam) const {
    return !filter_.family || filter_.family == (fam == 0 ? 4 : 6);
  }

  // Last-priority programs first, so no packet is counted as entered and
  // then stopped just because its exit was not linked yet.
  Status link_namespace(PluginHost& host, const std::string& netns) {
    for (int fam = 0; fam < NF_FAMILIES; ++fam) {
      if (!family_wanted(fam)) continue;
      for (int hook : hooks_) {
        for (const auto& [program, priority] :
             {std::pair{"nf_last", kLastPriority}, std::pair{"nf_first", kFirstPriority}}) {
          Status s = host.attach_netfilter(program, {kNfprotoOf[fam], hook, priority, netns});
          if (!s)
            return Status::failure(std::string(kHookNames[hook]) + "/" + kFamilyNames[fam] + ": " +
                                   s.message());
        }
      }
    }
    return Status::success();
  }

  KeySet keys_;
  Setting<std::vector<std::string>> hook_names_{
      keys_, "hooks", std::vector<std::string>(std::begin(kHookNames), std::end(kHookNames)),
      "hooks to time: prerouting, input, forward, output, postrouting"};
  Setting<std::vector<std::string>> namespace_names_{
      keys_,
      "namespaces",
      {"*"},
      "network namespaces to watch: 'self' (netwatcher's own), '*' (every namespace: own, "
      "/run/netns/* and those of processes, followed as they come and go), a name in "
      "/run/netns, or a path such as /proc/PID/ns/net"};
  Setting<bool> events_on_{
      keys_, "events", false,
      "emit an nf_hook event per packet and hook (histograms are always kept)"};
  Setting<std::uint64_t> max_events_per_second_{
      keys_,
      "max_events_per_second",
      1000,
      "nf_hook events per second across all CPUs; the rest are counted as suppressed "
      "(0 = no limit)",
      {.min = 0, .max = 10000000}};
  Setting<std::uint32_t> max_tracked_{keys_,
                                      "max_tracked_packets",
                                      16384,
                                      "packets in flight inside hooks tracked at once (LRU)",
                                      {.min = 256, .max = 1 << 22}};

  EventSet events_;
  struct Hook : EventDecl {
    explicit Hook(EventSet& set)
        : EventDecl(set, "nf_hook",
                    "a packet left a netfilter hook; time from the first to the last priority") {}
    Label<std::string> hook{*this,
                            "hook",
                            "prerouting, input, forward, output, postrouting",
                            {.width = 11, .anomaly = AnomalyRole::key}};
    Label<std::string> family{
        *this, "family", "ipv4 or ipv6", {.width = 6, .anomaly = AnomalyRole::key}};
    Label<std::string> path{
        *this, "path", "receive (not routed yet), local_in, forward, local_out", {.width = 9}};
    Label<std::string> protocol{*this, "protocol", "tcp, udp, icmp, ...", {.width = 8}};
    Label<std::string> src_addr{*this, "src_addr", "packet source address", {.width = 15}};
    Label<std::uint64_t> src_port{
        *this, "src_port", "packet source port", {.width = 8, .optional = true}};
    Label<std::string> dst_addr{*this, "dst_addr", "packet destination address", {.width = 15}};
    Label<std::uint64_t> dst_port{
        *this, "dst_port", "packet destination port", {.width = 8, .optional = true}};
    Field<std::uint64_t> length{*this, "length", "skb length", {.unit = "bytes", .width = 6}};
    Field<std::uint64_t> hook_ns{
        *this,
        "hook_ns",
        "time spent in the hook's chains (all priorities between ours)",
        {.unit = "nanoseconds", .width = 8, .anomaly = AnomalyRole::sample}};
    Label<std::uint64_t> in_ifindex{
        *this, "in_ifindex", "input device", {.width = 10, .optional = true}};
    Label<std::uint64_t> out_ifindex{
        *this, "out_ifindex", "output device", {.width = 11, .optional = true}};
    Label<std::uint64_t> netns{*this, "netns", "network namespace inode", {.width = 10}};
  } hook_{events_};

  MetricSet metrics_;
  Histogram latency_{
      metrics_, "netwatcher_netfilter_hook_latency_seconds",
      "Time packets spent in a netfilter hook (between the first and last priority).", kHookLabels,
      log2_ns_bucket_bounds(kFirstBucketLog2, kLastBucketLog2)};
  Counter packets_{metrics_, "netwatcher_netfilter_packets_total",
                   "Packets that entered a netfilter hook.", kHookLabels};
  Counter stopped_{metrics_, "netwatcher_netfilter_packets_stopped_total",
                   "Packets that entered a hook but did not leave it (dropped, stolen or queued "
                   "by a rule).",
                   kHookLabels};

  Skeleton<netfilter_bpf> skeleton_{netfilter_bpf__open, netfilter_bpf__load,
                                    netfilter_bpf__destroy};
  std::vector<int> hooks_;
  NetfilterNamespaces namespaces_;
  nf_config cfg_ = {};
  GlobalFilter filter_;
};

}  // namespace

NETWATCHER_PROBE_PLUGIN(NetfilterPlugin, "netfilter", "1.0.0",
                        "time spent in each netfilter hook, per family, with per-packet events")
