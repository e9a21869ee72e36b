// nic: per-interface and per-queue throughput (bytes/s, packets/s, average
// packet size) in each direction, like bcc's netqtop, for every network
// namespace.
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <time.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "netwatcher/kernel.hpp"
#include "netwatcher/plugin.hpp"
#include "nic.h"
#include "nic.skel.h"

namespace {

using namespace netwatcher;

constexpr const char* kDirectionNames[2] = {"rx", "tx"};

enum Field : std::size_t {
  kInterface,
  kIfindex,
  kNetns,
  kQueue,
  kDirection,
  kBytesPerSecond,
  kPacketsPerSecond,
  kAveragePacketBytes,
  kBytes,
  kPackets,
  kFieldCount
};

struct KeyOrder {
  bool operator()(const nic_key& a, const nic_key& b) const {
    return std::tie(a.netns, a.ifindex, a.queue, a.direction) <
           std::tie(b.netns, b.ifindex, b.queue, b.direction);
  }
};
using Totals = std::map<nic_key, nic_counters, KeyOrder>;

double monotonic_seconds() {
  return static_cast<double>(monotonic_ns()) / 1e9;
}

class NicPlugin {
 public:
  PluginDescription describe() const {
    PluginDescription d;
    d.config = {
        {"interfaces", ConfigType::string_list, std::vector<std::string>{},
         "interface names to report, e.g. [\"eth0\", \"veth1\"]; empty = all"},
        {"events", ConfigType::boolean, true,
         "emit a nic_throughput event per active interface, queue and direction every "
         "snapshot_interval"},
    };
    d.flags = {
        {0, "nic", "enabled", "per-interface and per-queue throughput"},
    };
    auto label = [](const char* name, const char* help, int width) {
      return FieldSchema{name, FieldType::text, "", help, FieldRole::label, width};
    };
    auto rate = [](const char* name, const char* unit, const char* help, int width) {
      return FieldSchema{name, FieldType::f64, unit, help, FieldRole::value, width};
    };
    d.events = {
        {"nic_throughput",
         "traffic of one interface queue in one direction over the last snapshot_interval",
         {
             label("interface", "interface name", 12),
             {"ifindex", FieldType::u64, "", "interface index", FieldRole::label, 7},
             {"netns", FieldType::u64, "", "network namespace inode", FieldRole::label, 10},
             {"queue", FieldType::u64, "", "rx or tx queue number", FieldRole::label, 5},
             label("direction", "rx or tx", 2),
             rate("bytes_per_second", "bytes", "frame bytes per second", 12),
             rate("packets_per_second", "", "packets per second (GSO/GRO segments counted)", 10),
             rate("average_packet_bytes", "bytes", "bytes / packets", 8),
             {"bytes", FieldType::u64, "bytes", "frame bytes in the interval", FieldRole::value,
              10},
             {"packets", FieldType::u64, "", "packets in the interval", FieldRole::value, 8},
         }}};
    const std::vector<std::string> labels = {"netns", "interface", "queue", "direction"};
    d.metrics = {
        {"netwatcher_nic_bytes_total", MetricType::counter,
         "Frame bytes per interface queue and direction (link-layer header included).", labels},
        {"netwatcher_nic_packets_total", MetricType::counter,
         "Packets per interface queue and direction (GSO/GRO segments counted).", labels},
        {"netwatcher_nic_bytes_per_second", MetricType::gauge,
         "Frame bytes per second over the last snapshot_interval.", labels},
        {"netwatcher_nic_packets_per_second", MetricType::gauge,
         "Packets per second over the last snapshot_interval.", labels},
        {"netwatcher_nic_average_packet_bytes", MetricType::gauge,
         "Average frame size over the last snapshot_interval (0 when idle).", labels},
    };
    d.hooks = {
        {"receive", "driver to stack (net:netif_receive_skb)", {"nic_receive"}, true},
        {"transmit", "stack to driver (net:net_dev_start_xmit)", {"nic_transmit"}, true},
    };
    return d;
  }

  Status configure(const ConfigValues& config, const GlobalFilter&) {
    auto names = config.get_strings("interfaces");
    interfaces_ = std::set<std::string>(names.begin(), names.end());
    for (const auto& name : interfaces_)
      if (name.empty() || name.size() >= NIC_IFNAMSIZ)
        return Status::failure("plugins.nic.interfaces: '" + name +
                               "' is not an interface name (1 to 15 characters)");
    events_ = config.get_bool("events");
    return Status::success();
  }

  Status open(bpf_object** object) {
    skeleton_.reset(nic_bpf__open());
    if (!skeleton_)
      return Status::failure("cannot open BPF object: " + std::string(std::strerror(errno)));
    *object = skeleton_->obj;
    return Status::success();
  }

  Status load() {
    if (int err = nic_bpf__load(skeleton_.get()); err)
      return Status::failure("cannot load BPF object: " + std::string(std::strerror(-err)));
    return Status::success();
  }

  Status start(PluginHost& host) {
    bytes_total_ = host.metric("netwatcher_nic_bytes_total");
    packets_total_ = host.metric("netwatcher_nic_packets_total");
    bytes_rate_ = host.metric("netwatcher_nic_bytes_per_second");
    packets_rate_ = host.metric("netwatcher_nic_packets_per_second");
    average_ = host.metric("netwatcher_nic_average_packet_bytes");
    last_seconds_ = monotonic_seconds();
    host.track_table({"queues", "nic_traffic", NIC_TABLE_QUEUES, 0,
                      "NIC_MAX_QUEUES in plugins/nic/nic.h (fixed)"});
    host.track_table({"devices", "nic_names", NIC_TABLE_DEVICES, 0,
                      "NIC_MAX_DEVICES in plugins/nic/nic.h (fixed)"});
    host.set_metrics_refresh([this] { return refresh_metrics(); });
    return Status::success();
  }

  Status decode(std::span<const std::byte>, EventEmitter&) {
    return Status::failure("the nic plugin emits no ring-buffer records");
  }

  Status collect(EventEmitter& out) {
    const double now = monotonic_seconds();
    const double elapsed = std::max(now - last_seconds_, 1e-3);
    last_seconds_ = now;
    Totals current = read_totals();
    for (const auto& [k, totals] : current) {
      std::string name = interface_name(k);
      if (!interfaces_.empty() && !interfaces_.count(name)) continue;
      auto seen = previous_.find(k);
      const nic_counters before = seen == previous_.end() ? nic_counters{} : seen->second;
      const std::uint64_t bytes = totals.bytes - before.bytes;
      const std::uint64_t packets = totals.packets - before.packets;
      const double bytes_per_second = static_cast<double>(bytes) / elapsed;
      const double packets_per_second = static_cast<double>(packets) / elapsed;
      const double average =
          packets ? static_cast<double>(bytes) / static_cast<double>(packets) : 0;
      LabelValues labels = labels_of(k, name);
      bytes_rate_->set(labels, bytes_per_second);
      packets_rate_->set(labels, packets_per_second);
      average_->set(labels, average);
      if (!events_ || packets == 0) continue;
      std::vector<Value> v = out.make_values(kFieldCount);
      v[kInterface] = name;
      v[kIfindex] = std::uint64_t{k.ifindex};
      v[kNetns] = std::uint64_t{k.netns};
      v[kQueue] = std::uint64_t{k.queue};
      v[kDirection] = std::string(kDirectionNames[k.direction & 1]);
      v[kBytesPerSecond] = bytes_per_second;
      v[kPacketsPerSecond] = packets_per_second;
      v[kAveragePacketBytes] = average;
      v[kBytes] = bytes;
      v[kPackets] = packets;
      out.emit(0, 0, std::move(v));
    }
    previous_ = std::move(current);
    return Status::success();
  }

  // The totals mirror in-kernel counters: also run at scrape time. The
  // per-second gauges stay with collect(), which owns the interval.
  Status refresh_metrics() {
    read_totals();
    return Status::success();
  }

  void stop() { skeleton_.reset(); }

 private:
  struct SkeletonDeleter {
    void operator()(nic_bpf* skeleton) const { nic_bpf__destroy(skeleton); }
  };

  static LabelValues labels_of(const nic_key& k, const std::string& name) {
    return {std::to_string(k.netns), name, std::to_string(k.queue),
            kDirectionNames[k.direction & 1]};
  }

  // Every key's counters, summed over CPUs; sets the two totals families.
  Totals read_totals() {
    const int traffic = bpf_map__fd(skeleton_->maps.nic_traffic);
    Totals current;
    for_each_key<nic_key>(traffic, [&](const nic_key& key) {
      if (auto totals = sum_percpu<nic_counters>(traffic, &key)) current[key] = *totals;
    });
    for (const auto& [k, totals] : current) {
      std::string name = interface_name(k);
      if (!interfaces_.empty() && !interfaces_.count(name)) continue;
      LabelValues labels = labels_of(k, name);
      bytes_total_->set(labels, static_cast<double>(totals.bytes));
      packets_total_->set(labels, static_cast<double>(totals.packets));
    }
    return current;
  }

  std::string interface_name(const nic_key& k) const {
    nic_device device{k.netns, k.ifindex};
    char name[NIC_IFNAMSIZ] = {};
    if (bpf_map_lookup_elem(bpf_map__fd(skeleton_->maps.nic_names), &device, name) != 0)
      return "if" + std::to_string(k.ifindex);
    return std::string(name, strnlen(name, sizeof name));
  }

  std::unique_ptr<nic_bpf, SkeletonDeleter> skeleton_;
  std::set<std::string> interfaces_;
  bool events_ = true;
  double last_seconds_ = 0;
  Totals previous_;
  MetricFamily *bytes_total_ = nullptr, *packets_total_ = nullptr, *bytes_rate_ = nullptr,
               *packets_rate_ = nullptr, *average_ = nullptr;
};

}  // namespace

NETWATCHER_PROBE_PLUGIN(NicPlugin, "nic", "1.0.0",
                        "per-interface and per-queue throughput, both directions")
