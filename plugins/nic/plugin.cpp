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
#include "netwatcher/skeleton.hpp"
#include "nic.h"
#include "nic.skel.h"

namespace {

using namespace netwatcher;

constexpr const char* kDirectionNames[2] = {"rx", "tx"};

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

const std::vector<std::string> kQueueLabels = {"netns", "interface", "queue", "direction"};

class NicPlugin {
 public:
  PluginDescription describe() const {
    PluginDescription d;
    d.config = keys_.keys();
    d.flags = {{0, "nic", "enabled", "per-interface and per-queue throughput"}};
    d.events = events_.schemas();
    d.metrics = metrics_.specs();
    d.hooks = {
        {"receive", "driver to stack (net:netif_receive_skb)", {"nic_receive"}, true},
        {"transmit", "stack to driver (net:net_dev_start_xmit)", {"nic_transmit"}, true},
    };
    return d;
  }

  Status configure(const ConfigValues& config, const GlobalFilter&) {
    if (Status s = keys_.read(config); !s) return s;
    interfaces_ = std::set<std::string>(interface_names_->begin(), interface_names_->end());
    for (const auto& name : interfaces_)
      if (name.empty() || name.size() >= NIC_IFNAMSIZ)
        return Status::failure("plugins.nic.interfaces: '" + name +
                               "' is not an interface name (1 to 15 characters)");
    return Status::success();
  }

  Status open(bpf_object** object) { return skeleton_.open(object); }
  Status load() { return skeleton_.load(); }

  Status start(PluginHost& host) {
    if (auto bound = metrics_.bind(host); !bound) return bound;
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
      bytes_rate_.set(labels, bytes_per_second);
      packets_rate_.set(labels, packets_per_second);
      average_.set(labels, average);
      if (!*events_on_ || packets == 0) continue;
      const Throughput& e = throughput_;
      e.row(out)
          .set(e.interface, name)
          .set(e.ifindex, k.ifindex)
          .set(e.netns, k.netns)
          .set(e.queue, k.queue)
          .set(e.direction, kDirectionNames[k.direction & 1])
          .set(e.bytes_per_second, bytes_per_second)
          .set(e.packets_per_second, packets_per_second)
          .set(e.average_packet_bytes, average)
          .set(e.bytes, bytes)
          .set(e.packets, packets)
          .emit();
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
      bytes_total_.mirror(labels, static_cast<double>(totals.bytes));
      packets_total_.mirror(labels, static_cast<double>(totals.packets));
    }
    return current;
  }

  std::string interface_name(const nic_key& k) const {
    nic_device device{k.netns, k.ifindex};
    char name[NIC_IFNAMSIZ] = {};
    if (bpf_map_lookup_elem(bpf_map__fd(skeleton_->maps.nic_names), &device, name) != 0)
      return "if" + std::to_string(k.ifindex);
    return bounded_text(name);
  }

  KeySet keys_;
  Setting<std::vector<std::string>> interface_names_{
      keys_,
      "interfaces",
      {},
      "interface names to report, e.g. [\"eth0\", \"veth1\"]; empty = all"};
  Setting<bool> events_on_{keys_, "events", true,
                           "emit a nic_throughput event per active interface, queue and direction "
                           "every snapshot_interval"};

  EventSet events_;
  struct Throughput : EventDecl {
    explicit Throughput(EventSet& set)
        : EventDecl(set, "nic_throughput",
                    "traffic of one interface queue in one direction over the last "
                    "snapshot_interval") {}
    Label<std::string> interface {
      *this, "interface", "interface name", { .width = 12 }
    };
    Label<std::uint64_t> ifindex{*this, "ifindex", "interface index", {.width = 7}};
    Label<std::uint64_t> netns{*this, "netns", "network namespace inode", {.width = 10}};
    Label<std::uint64_t> queue{*this, "queue", "rx or tx queue number", {.width = 5}};
    Label<std::string> direction{*this, "direction", "rx or tx", {.width = 2}};
    Field<double> bytes_per_second{
        *this, "bytes_per_second", "frame bytes per second", {.unit = "bytes", .width = 12}};
    Field<double> packets_per_second{*this,
                                     "packets_per_second",
                                     "packets per second (GSO/GRO segments counted)",
                                     {.width = 10}};
    Field<double> average_packet_bytes{
        *this, "average_packet_bytes", "bytes / packets", {.unit = "bytes", .width = 8}};
    Field<std::uint64_t> bytes{
        *this, "bytes", "frame bytes in the interval", {.unit = "bytes", .width = 10}};
    Field<std::uint64_t> packets{*this, "packets", "packets in the interval", {.width = 8}};
  } throughput_{events_};

  MetricSet metrics_;
  Counter bytes_total_{metrics_, "netwatcher_nic_bytes_total",
                       "Frame bytes per interface queue and direction (link-layer header "
                       "included).",
                       kQueueLabels};
  Counter packets_total_{metrics_, "netwatcher_nic_packets_total",
                         "Packets per interface queue and direction (GSO/GRO segments counted).",
                         kQueueLabels};
  Gauge bytes_rate_{metrics_, "netwatcher_nic_bytes_per_second",
                    "Frame bytes per second over the last snapshot_interval.", kQueueLabels};
  Gauge packets_rate_{metrics_, "netwatcher_nic_packets_per_second",
                      "Packets per second over the last snapshot_interval.", kQueueLabels};
  Gauge average_{metrics_, "netwatcher_nic_average_packet_bytes",
                 "Average frame size over the last snapshot_interval (0 when idle).", kQueueLabels};

  Skeleton<nic_bpf> skeleton_{nic_bpf__open, nic_bpf__load, nic_bpf__destroy};
  std::set<std::string> interfaces_;  // of interface_names_
  double last_seconds_ = 0;
  Totals previous_;
};

}  // namespace

NETWATCHER_PROBE_PLUGIN(NicPlugin, "nic", "1.0.0",
                        "per-interface and per-queue throughput, both directions")
