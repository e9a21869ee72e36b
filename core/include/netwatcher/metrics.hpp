// netwatcher SDK: metric families.
//
// Plugins declare their families as data (PluginDescription::metrics) and update
// them through the MetricFamily handles the host gives out. Names follow the
// Prometheus conventions: `netwatcher_<plugin>_<what>_<base unit>`, counters end
// in `_total`, durations are in seconds and sizes in bytes.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace netwatcher {

enum class MetricType : std::uint8_t { counter, gauge, histogram };

struct MetricFamilySpec {
  std::string name;
  MetricType type = MetricType::counter;
  std::string help;
  std::vector<std::string> labels;  // label names, in the order values are given
  std::vector<double> buckets;      // histogram upper bounds (ascending), +Inf implied
};

using LabelValues = std::vector<std::string>;

// A label the host rewrites (since ABI 3.3). A family that lists it among its
// labels is given, for each update, the decimal cgroup2 id of the socket or
// process the update is about ("0" when unknown), like any label value. The
// host never exports that number:
//  - with [containers] container_labels = true, the label is replaced, in
//    place, by `container` (the Kubernetes container name, else the first 12
//    hex digits of the container id), `pod` and `namespace`, all empty for a
//    process outside containers; at most max_container_labels distinct
//    workloads per family keep their own values, later ones are "other";
//  - otherwise (the default) the family is exported without it, and the
//    updates of every cgroup add up in the series of the other labels.
// Counters and histograms only (a level cannot be summed over cgroups): add()
// and observe() work as usual; set() on a counter and set_histogram() mirror
// counts kept elsewhere as usual, the host adding what grew since the last
// call for those labels to the exported series; remove() forgets those
// labels' last mirrored value (free it for a cgroup no longer seen; a later
// set() then counts from zero again) and leaves the exported series as they
// are.
// --list-plugins and the sinks show the exported labels.
inline constexpr const char* kCgroupIdLabel = "cgroup_id";

// A family owned by the host. Thread-safe. Every call takes label values in the
// order of MetricFamilySpec::labels; a call with the wrong number of labels is
// ignored and counted by the host. Calls of the wrong kind for the family type
// (observe on a counter, ...) are ignored as well.
class MetricFamily {
 public:
  virtual ~MetricFamily() = default;
  // Counter or gauge: add `delta` (>= 0 for counters).
  virtual void add(const LabelValues& labels, double delta) noexcept = 0;
  // Gauge: set. Counter: mirror an absolute, monotonic count kept elsewhere
  // (e.g. in a BPF map); a lower value than before is ignored.
  virtual void set(const LabelValues& labels, double value) noexcept = 0;
  // Histogram: record one observation.
  virtual void observe(const LabelValues& labels, double value) noexcept = 0;
  // Histogram: replace the whole series with counts aggregated elsewhere (e.g. an
  // in-kernel log2 histogram). `bucket_counts` has one non-cumulative count per
  // declared bucket plus one for +Inf.
  virtual void set_histogram(const LabelValues& labels,
                             std::span<const std::uint64_t> bucket_counts, double sum) noexcept = 0;
  // Drop a series, e.g. when the connection it described is gone.
  virtual void remove(const LabelValues& labels) noexcept = 0;
};

// Read-only copies handed to sinks.
struct MetricSeries {
  LabelValues labels;
  double value = 0;                          // counter / gauge
  std::vector<std::uint64_t> bucket_counts;  // histogram: non-cumulative, +Inf last
  double sum = 0;                            // histogram
  std::uint64_t count = 0;                   // histogram
};

struct MetricFamilySnapshot {
  MetricFamilySpec spec;
  std::vector<MetricSeries> series;
};

using MetricsSnapshot = std::vector<MetricFamilySnapshot>;

}  // namespace netwatcher
