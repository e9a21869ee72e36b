// netfilter: time each packet spends in each netfilter hook (rule chains,
// conntrack), per family, from BPF netfilter programs at both ends of a hook.
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <sys/socket.h>

#include <cerrno>
#include <climits>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "netfilter.h"
#include "netfilter.skel.h"
#include "netwatcher/format.hpp"
#include "netwatcher/kernel.hpp"
#include "netwatcher/netns.hpp"
#include "netwatcher/plugin.hpp"

namespace {

using namespace netwatcher;

constexpr const char* kHookNames[NF_HOOKS] = {"prerouting", "input", "forward", "output",
                                              "postrouting"};
constexpr const char* kFamilyNames[NF_FAMILIES] = {"ipv4", "ipv6"};
constexpr int kNfprotoOf[NF_FAMILIES] = {2, 10};
constexpr const char* kPathNames[] = {"receive", "local_in", "forward", "local_out"};
// Histogram buckets: 2^7 ns (128 ns) .. 2^26 ns (~67 ms), powers of two, so
// each in-kernel log2 slot falls in exactly one bucket.
constexpr int kFirstBucketLog2 = 7;
constexpr int kLastBucketLog2 = 26;
// BPF netfilter links may not use INT_MIN or INT_MAX themselves.
constexpr int kFirstPriority = INT_MIN + 1;
constexpr int kLastPriority = INT_MAX - 1;

enum Field : std::size_t {
  kHook,
  kFamily,
  kPath,
  kProtocol,
  kSrcAddr,
  kSrcPort,
  kDstAddr,
  kDstPort,
  kLength,
  kHookNs,
  kInIfindex,
  kOutIfindex,
  kNetns,
  kFieldCount
};

class NetfilterPlugin {
 public:
  PluginDescription describe() const {
    PluginDescription d;
    d.config = {
        {"hooks", ConfigType::string_list,
         std::vector<std::string>(std::begin(kHookNames), std::end(kHookNames)),
         "hooks to time: prerouting, input, forward, output, postrouting"},
        {"namespaces", ConfigType::string_list, std::vector<std::string>{"*"},
         "network namespaces to watch: 'self' (netwatcher's own), '*' (every namespace: own, "
         "/run/netns/* and those of processes, followed as they come and go), a name in "
         "/run/netns, or a path such as /proc/PID/ns/net"},
        {"events", ConfigType::boolean, false,
         "emit an nf_hook event per packet and hook (histograms are always kept)"},
        {"max_events_per_second", ConfigType::integer, std::int64_t{1000},
         "nf_hook events per second across all CPUs; the rest are counted as suppressed "
         "(0 = no limit)",
         0, 10000000},
        {"max_tracked_packets", ConfigType::integer, std::int64_t{16384},
         "packets in flight inside hooks tracked at once (LRU)", 256, 1 << 22},
    };
    d.flags = {
        {'n', "netfilter", "enabled", "time spent in each netfilter hook"},
        {0, "nf-events", "events", "one event per packet and netfilter hook (rate-limited)"},
    };
    auto label = [](const char* name, const char* help, int width) {
      return FieldSchema{name, FieldType::text, "", help, FieldRole::label, width};
    };
    d.events = {
        {"nf_hook",
         "a packet left a netfilter hook; time from the first to the last priority",
         {
             label("hook", "prerouting, input, forward, output, postrouting", 11),
             label("family", "ipv4 or ipv6", 6),
             label("path", "receive (not routed yet), local_in, forward, local_out", 9),
             label("protocol", "tcp, udp, icmp, ...", 8),
             label("src_addr", "packet source address", 15),
             {"src_port", FieldType::u64, "", "packet source port", FieldRole::label, 8, true},
             label("dst_addr", "packet destination address", 15),
             {"dst_port", FieldType::u64, "", "packet destination port", FieldRole::label, 8, true},
             {"length", FieldType::u64, "bytes", "skb length", FieldRole::value, 6},
             {"hook_ns", FieldType::u64, "nanoseconds",
              "time spent in the hook's chains (all priorities between ours)", FieldRole::value, 8},
             {"in_ifindex", FieldType::u64, "", "input device", FieldRole::label, 10, true},
             {"out_ifindex", FieldType::u64, "", "output device", FieldRole::label, 11, true},
             {"netns", FieldType::u64, "", "network namespace inode", FieldRole::label, 10},
         }}};
    d.metrics = {
        {"netwatcher_netfilter_hook_latency_seconds",
         MetricType::histogram,
         "Time packets spent in a netfilter hook (between the first and last priority).",
         {"hook", "family"},
         log2_ns_bucket_bounds(kFirstBucketLog2, kLastBucketLog2)},
        {"netwatcher_netfilter_packets_total",
         MetricType::counter,
         "Packets that entered a netfilter hook.",
         {"hook", "family"}},
        {"netwatcher_netfilter_packets_stopped_total",
         MetricType::counter,
         "Packets that entered a hook but did not leave it (dropped, stolen or queued by a "
         "rule).",
         {"hook", "family"}},
    };
    d.hooks = {
        {"hook_entry", "first priority of each hook", {"nf_first"}, true},
        {"hook_exit", "last priority of each hook", {"nf_last"}, true},
    };
    return d;
  }

  Status configure(const ConfigValues& config, const GlobalFilter& filter) {
    hooks_.clear();
    for (const auto& name : config.get_strings("hooks")) {
      int found = -1;
      for (int h = 0; h < NF_HOOKS; ++h)
        if (name == kHookNames[h]) found = h;
      if (found < 0)
        return Status::failure("plugins.netfilter.hooks: unknown hook '" + name +
                               "' (expected prerouting, input, forward, output, postrouting)");
      hooks_.push_back(found);
    }
    if (hooks_.empty()) return Status::failure("plugins.netfilter.hooks is empty");
    if (Status s =
            namespaces_.configure(config.get_strings("namespaces"), "plugins.netfilter.namespaces");
        !s)
      return s;
    events_ = config.get_bool("events");
    max_events_per_second_ = static_cast<std::uint64_t>(config.get_int("max_events_per_second"));
    max_tracked_ = static_cast<std::uint32_t>(config.get_int("max_tracked_packets"));
    filter_ = filter;
    return Status::success();
  }

  Status open(bpf_object** object) {
    skeleton_.reset(netfilter_bpf__open());
    if (!skeleton_)
      return Status::failure("cannot open BPF object: " + std::string(std::strerror(errno)));
    fill_kernel_filter(const_cast<nw_filter&>(skeleton_->rodata->nw_filter_cfg), filter_);
    auto& cfg = const_cast<nf_config&>(skeleton_->rodata->nf_cfg);
    cfg.events = events_;
    cfg.max_events_per_second = max_events_per_second_;
    bpf_map__set_max_entries(skeleton_->maps.nf_inflight, max_tracked_);
    *object = skeleton_->obj;
    return Status::success();
  }

  Status load() {
    if (int err = netfilter_bpf__load(skeleton_.get()); err)
      return Status::failure("cannot load BPF object: " + std::string(std::strerror(-err)));
    return Status::success();
  }

  Status start(PluginHost& host) {
    latency_ = host.metric("netwatcher_netfilter_hook_latency_seconds");
    packets_ = host.metric("netwatcher_netfilter_packets_total");
    stopped_ = host.metric("netwatcher_netfilter_packets_stopped_total");
    for (int fam = 0; fam < NF_FAMILIES; ++fam)
      for (int hook : hooks_) wanted_[fam][hook] = family_wanted(fam);
    if (Status s = namespaces_.start(host,
                                     [this, host = &host](const std::string& netns) {
                                       return link_namespace(*host, netns);
                                     });
        !s)
      return s;
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
    std::vector<Value> v = out.make_values(kFieldCount);
    v[kHook] = std::string(kHookNames[rec.hook]);
    v[kFamily] = std::string(family_name(rec.family));
    v[kPath] = std::string(kPathNames[rec.path]);
    v[kProtocol] = ip_protocol_name(p.protocol);
    int family = rec.family == 10 ? AF_INET6 : AF_INET;
    v[kSrcAddr] = format_address(family, p.tuple.saddr);
    v[kDstAddr] = format_address(family, p.tuple.daddr);
    if (p.has_ports) {
      v[kSrcPort] = std::uint64_t{p.tuple.sport};
      v[kDstPort] = std::uint64_t{p.tuple.dport};
    }
    v[kLength] = std::uint64_t{p.length};
    v[kHookNs] = std::uint64_t{rec.hook_ns};
    if (rec.in_ifindex) v[kInIfindex] = std::uint64_t{rec.in_ifindex};
    if (rec.out_ifindex) v[kOutIfindex] = std::uint64_t{rec.out_ifindex};
    v[kNetns] = std::uint64_t{rec.netns};
    out.emit(0, rec.hdr.timestamp_ns, std::move(v));
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
      for (int hook = 0; hook < NF_HOOKS; ++hook) {
        if (!wanted_[fam][hook]) continue;
        std::uint32_t index = NF_INDEX(fam, hook);
        auto total = sum_percpu<nf_hook_stats>(fd, &index);
        if (!total)
          return Status::failure("reading nf_stats: " + std::string(std::strerror(errno)));
        LabelValues labels{kHookNames[hook], kFamilyNames[fam]};
        latency_->set_histogram(
            labels, log2_slots_to_buckets(total->slots, kFirstBucketLog2, kLastBucketLog2),
            static_cast<double>(total->time_ns) / 1e9);
        packets_->set(labels, static_cast<double>(total->entered));
        stopped_->set(
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

  struct SkeletonDeleter {
    void operator()(netfilter_bpf* skeleton) const { netfilter_bpf__destroy(skeleton); }
  };

  std::unique_ptr<netfilter_bpf, SkeletonDeleter> skeleton_;
  std::vector<int> hooks_;
  NetfilterNamespaces namespaces_;
  bool events_ = false;
  std::uint64_t max_events_per_second_ = 1000;
  std::uint32_t max_tracked_ = 16384;
  GlobalFilter filter_;
  bool wanted_[NF_FAMILIES][NF_HOOKS] = {};
  MetricFamily *latency_ = nullptr, *packets_ = nullptr, *stopped_ = nullptr;
};

}  // namespace

NETWATCHER_PROBE_PLUGIN(NetfilterPlugin, "netfilter", "1.0.0",
                        "time spent in each netfilter hook, per family, with per-packet events")
