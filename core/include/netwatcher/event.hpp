// netwatcher SDK: events and their schemas.
//
// Every event a plugin produces is described by an EventSchema that the plugin
// declares up front (PluginDescription::events). Sinks never know plugins: the
// table columns, CSV headers, JSON keys and Prometheus names they write all come
// from these schemas.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace netwatcher {

enum class FieldType : std::uint8_t { u64, i64, f64, boolean, text };

// How a field is meant to be used: `label` identifies (addresses, ports, pid,
// names), `value` is a measurement (bytes, durations), `text` is free text.
enum class FieldRole : std::uint8_t { label, value, text };

// How the host's latency anomaly detector ([anomaly] in netwatcher.toml, -L)
// treats a field. Only numeric fields can be samples; only labels can be keys.
enum class AnomalyRole : std::uint8_t {
  none,
  // A latency: every value is compared against an EWMA of the earlier values
  // of the same series, then folded into it.
  sample,
  // A label that always separates series, e.g. `direction`: receive and send
  // latencies are never compared with each other.
  key,
  // A label that separates series only with [anomaly] per_connection = true,
  // e.g. the socket address.
  connection,
};

struct FieldSchema {
  std::string name;  // snake_case; becomes a column / JSON key
  FieldType type = FieldType::u64;
  // Base unit where one applies: "bytes", "microseconds", ...; kAddressUnit
  // for a kernel address, which tables and CSV print in hex.
  std::string unit;
  std::string description;  // one line, shown by --list-plugins
  FieldRole role = FieldRole::value;
  int width = 0;  // column width hint for tables; 0 = derived from type and name
  // An optional field may be absent (std::monostate) in a given event, e.g.
  // extended TCP statistics that are only filled when `extra` is on.
  bool optional = false;
  AnomalyRole anomaly = AnomalyRole::none;
};

inline constexpr const char* kAddressUnit = "address";

// Ids the host names for the operator (since ABI 3.3). A plugin puts the
// kernel's id on an event; the host appends, after the plugin's fields, text
// labels resolved from it, so that sinks print containers and pods rather
// than numbers. Both are u64 labels; the appended labels are optional and
// absent when the id resolves to nothing.
//  - kCgroupIdField: the cgroup2 id of the socket or process the event is
//    about (nw_sock_cgroup_id() of common.bpf.h, or
//    bpf_get_current_cgroup_id() in the owner's context). The host appends
//    `cgroup` (its path), `container_id`, `container_runtime` (docker,
//    containerd, cri-o, podman), `pod_uid`, and from the runtime's state
//    `pod`, `pod_namespace`, `container_name`. Leave it absent, never 0,
//    when unknown (0 is no cgroup).
//  - kNetnsField: the nsfs inode of a network namespace (net->ns.inum). The
//    host appends `netns_name`, its name under /run/netns.
// A host with [containers] enabled = false appends nothing.
inline constexpr const char* kCgroupIdField = "cgroup_id";
inline constexpr const char* kNetnsField = "netns";

struct EventSchema {
  std::string name;  // unique within the plugin, e.g. "tcp_close"
  std::string description;
  std::vector<FieldSchema> fields;
  // Set by the host when the plugin is loaded; plugins leave it empty.
  std::string plugin;
  // Set by the host: how many leading fields the plugin fills. With the anomaly
  // detector on, the host appends a boolean `anomaly` field after them to every
  // schema that has AnomalyRole::sample fields; plugins never fill it.
  std::size_t plugin_fields = 0;

  // Index of the field called `field`, or -1.
  int index_of(std::string_view field) const noexcept {
    for (std::size_t i = 0; i < fields.size(); ++i)
      if (fields[i].name == field) return static_cast<int>(i);
    return -1;
  }
};

// One field value. std::monostate means "absent" and is only allowed for
// optional fields. The alternative must match FieldSchema::type.
using Value = std::variant<std::monostate, std::uint64_t, std::int64_t, double, bool, std::string>;

// An event as sinks see it. `schema` is owned by the host and outlives every
// event that points at it (sinks are drained before plugins are unloaded).
struct Event {
  const EventSchema* schema = nullptr;
  std::uint64_t timestamp_ns = 0;  // CLOCK_REALTIME, nanoseconds since the epoch
  std::vector<Value> values;       // one per schema field, in schema order
};

// Where a plugin hands the events it decodes or collects. Provided by the host;
// valid only for the duration of the decode()/collect() call it was passed to.
class EventEmitter {
 public:
  virtual ~EventEmitter() = default;
  // `event_index` is the position of the schema in PluginDescription::events.
  // `monotonic_ns` is CLOCK_MONOTONIC (what bpf_ktime_get_ns() returns); 0 means
  // now. `values` must have one entry per schema field; a malformed event is
  // counted as a decode error and dropped, never forwarded.
  virtual void emit(std::size_t event_index, std::uint64_t monotonic_ns,
                    std::vector<Value>&& values) noexcept = 0;

  // `size` absent values (std::monostate) to fill and pass to emit(). The
  // storage is recycled from events every sink is done with, so a decoder that
  // builds its events this way allocates nothing per event once the host is
  // warm (strings of up to 15 characters live inside std::string itself).
  // Returns an empty vector if memory runs out; emit() then counts a decode
  // error. Since ABI 2.1; the default only serves hosts of tests and tools.
  virtual std::vector<Value> make_values(std::size_t size) noexcept {
    try {
      return std::vector<Value>(size);
    } catch (...) {
      return {};
    }
  }
};

}  // namespace netwatcher
