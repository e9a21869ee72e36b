// One running probe plugin: its BPF object, links, schemas and counters.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "anomaly.hpp"
#include "attachments.hpp"
#include "kernel_features.hpp"
#include "loader.hpp"
#include "metric_store.hpp"
#include "netwatcher/plugin.hpp"
#include "table_accounts.hpp"
#include "workloads.hpp"

struct bpf_link;
struct ring_buffer;

namespace netwatcher::host {

class Bus;

struct CandidateReport {
  std::string program;
  std::string section;
  std::string status;  // "attached", "available", or why not
};

struct HookReport {
  std::string hook;
  bool required = true;
  // Not wanted: HookSpec::enabled_by names a key that is false. Candidates
  // then say which.
  bool off_by_config = false;
  std::string attached_program;  // empty when not attached
  std::vector<CandidateReport> candidates;
};

// Why the opened, not yet loaded, `object` does not speak this host's BPF
// contract (NW_BPF_CONTRACT_VERSION, netwatcher/bpf/types.h), or nullopt:
// "BPF object built against contract 2, host speaks 1".
std::optional<std::string> check_bpf_contract(bpf_object* object);

class ProbeRuntime;

// The protocols protocol plugins served (PluginHost::serve_protocol) for the
// shared L7 capture, in start-up order. Owned by run(); poller thread only.
struct ProtocolRegistry {
  struct Entry {
    ProbeRuntime* runtime = nullptr;
    L7Protocol* protocol = nullptr;
  };
  std::vector<Entry> entries;
};

// The plugin that owns the shared L7 capture (plugins/l7).
inline constexpr const char* kL7CapturePlugin = "l7";

class ProbeRuntime final : public PluginHost {
 public:
  // `workloads` says how families with a cgroup_id label are exported
  // (metrics.hpp): with container labels only when enabled and
  // container_labels are both set.
  ProbeRuntime(const Component& component, std::shared_ptr<ProbePlugin> plugin,
               MetricStore& metrics, const WorkloadSettings& workloads = {});
  ~ProbeRuntime() override;

  const std::string& name() const { return component_.name; }
  // The constructor's describe() and validation of the description: a
  // failure ("plugin 'x': describe() failed: ...", "plugin 'x': event 'y':
  // declared twice") refuses the plugin; the runtime is then empty (no
  // schemas, no metric families declared) and must not be brought up.
  const Status& described() const { return described_; }
  const PluginDescription& description() const { return description_; }
  // The plugin's families as the store exports them (a cgroup_id label
  // rewritten), in the order of the description.
  const std::vector<MetricFamilySpec>& exported_metrics() const { return exported_metrics_; }
  // Host-owned schemas with `plugin` set; stable addresses.
  const std::vector<std::unique_ptr<EventSchema>>& schemas() const { return schemas_; }

  Status configure(const ConfigValues& config, const GlobalFilter& filter);
  // Feeds this plugin's AnomalyRole::sample fields to `detector` and appends
  // the `anomaly` field to their schemas. Call before any sink sees a schema.
  // Both pointers outlive the runtime.
  void use_anomaly_detector(AnomalyDetector* detector, MetricFamily* anomalies);
  // Names the workloads behind events: appends kWorkloadFields after every
  // u64 label `cgroup_id` and `netns_name` after every u64 label `netns`,
  // filled through `resolver` (which outlives the runtime). Call before
  // use_anomaly_detector() and before any sink sees a schema.
  void use_workload_resolver(WorkloadResolver* resolver);
  // Open, load and attach, trying hook candidates in order. On failure the
  // plugin is left stopped and the Status says why.
  // `wakeup_bytes` goes to the object's nw_wakeup_bytes (common.bpf.h).
  Status bring_up(const KernelFeatures& features, std::uint64_t ring_buffer_bytes,
                  std::uint64_t wakeup_bytes = 0);
  const std::vector<HookReport>& hook_reports() const { return reports_; }
  // [netwatcher] hook_override; call before bring_up().
  void set_hook_overrides(std::map<std::string, std::string> overrides) {
    hook_overrides_ = std::move(overrides);
  }
  // Where serve_protocol() registers and the capture finds protocols; call
  // before bring_up(). Must outlive the runtime's shut_down().
  void set_protocol_registry(ProtocolRegistry* registry) { protocols_ = registry; }
  // The bus events go to; call before bring_up() so that a protocol's events
  // can be emitted by the capture. add_to_poller() sets it too.
  void set_bus(Bus& bus) { bus_ = &bus; }
  // True when a hook of this plugin names an "l7:" candidate: it needs the
  // shared L7 capture.
  bool uses_l7_capture() const;
  // Adds this plugin's ring buffer to the shared poller (created on first use).
  // A plugin without a BPF object (a protocol plugin) has none: nothing to add.
  Status add_to_poller(ring_buffer** poller, Bus& bus);
  void collect(Bus& bus);
  // Seconds the last collect() took, the plugin's and the host's table
  // counting together (the cost of one snapshot).
  double last_collect_seconds() const { return last_collect_s_.load(std::memory_order_relaxed); }
  // Runs the plugin's registered metrics refresh (see
  // PluginHost::set_metrics_refresh), if any. Poller thread only.
  void refresh_metrics();
  // Destroys the links (no new records after this returns).
  void detach();
  // detach() + plugin stop(); idempotent.
  void shut_down();

  std::uint64_t lost_events() const;
  std::uint64_t suppressed_events() const;
  std::uint64_t decode_errors() const { return decode_errors_.load(std::memory_order_relaxed); }
  std::uint64_t events(std::size_t schema) const {
    return event_counts_[schema].load(std::memory_order_relaxed);
  }
  std::uint64_t filtered() const { return filtered_.load(std::memory_order_relaxed); }
  // Ring-buffer records handed to the plugin's decoder.
  std::uint64_t records() const { return records_.load(std::memory_order_relaxed); }

  // Unread share of the ring buffer now (0..1); 0 when not running.
  double ring_fill() const;
  std::uint64_t ring_bytes() const { return ring_bytes_; }
  // Highest ring_fill() seen by note_ring_fill() since start-up.
  double ring_fill_peak() const { return ring_fill_peak_.load(std::memory_order_relaxed); }
  // Samples the fill level into the peak and returns it; the poller calls it
  // before each read.
  double note_ring_fill();

  // Kernel run-time statistics of one loaded program (BPF_STATS_RUN_TIME).
  struct ProgramStats {
    std::string program;
    std::uint32_t id = 0;
    std::uint64_t runs = 0, run_time_ns = 0;
    // Runs the kernel skipped because a BPF program was already running on
    // that CPU (always counted, statistics on or off).
    std::uint64_t missed_runs = 0;
    std::string tag;  // hex of the instruction hash, to find the same code elsewhere
  };
  // One entry per loaded program; counts stay 0 while statistics are off.
  std::vector<ProgramStats> program_stats() const;

  // PluginHost
  MetricFamily* metric(std::string_view name) noexcept override;
  int link_fd(std::string_view program) const noexcept override;
  Status attach_netfilter(std::string_view program, const NetfilterPoint& point) noexcept override;
  void set_metrics_refresh(std::function<Status()> refresh) noexcept override;
  TableAccount* track_table(const TableSpec& spec) noexcept override;

  // The plugin's bounded tables as of the last snapshot or scrape.
  std::vector<TableUsage> table_usage() const { return tables_.usage(); }

  std::size_t release_netfilter(std::uint64_t netns_inode) noexcept override;
  Status serve_protocol(L7Protocol& protocol) noexcept override;
  std::size_t served_protocol_count() const noexcept override;
  ServedProtocol served_protocol(std::size_t index) const noexcept override;
  Status attach_uprobe(std::string_view program, std::string_view binary,
                       std::string_view function) noexcept override;

  // Network namespaces this plugin has netfilter links in now; nullopt when
  // it never made one (no netfilter programs, or a feature left off).
  std::optional<std::size_t> netfilter_namespaces() const;

 private:
  class Emitter;
  // Which fields of one schema the anomaly detector reads.
  struct AnomalyPlan {
    std::vector<std::size_t> samples, keys, connection;
    std::vector<std::string> series_prefix;  // "plugin/event/field", one per sample
  };
  // Where one schema's ids are, and so which appended fields to fill.
  struct WorkloadPlan {
    int cgroup_id = -1, netns = -1;
  };
  void append_workload_values(std::size_t schema, std::vector<Value>& values);
  // Runs the detector over one valid event; true when a sample is anomalous.
  bool judge(std::size_t schema, const std::vector<Value>& values);
  // Why `hook` is switched off by the plugin's config, or empty.
  std::string disabled_by_config(const HookSpec& hook) const;
  // The most specific hook_override entry for `hook`, or nullptr.
  const std::string* override_for(const std::string& hook) const;
  // Marks the candidates that hook_override rules out; fails on unknown names.
  Status apply_hook_overrides();
  static int on_record(void* ctx, void* data, std::size_t size);
  Status try_bring_up(const KernelFeatures& features, std::uint64_t ring_buffer_bytes,
                      std::uint64_t wakeup_bytes, std::vector<std::size_t>& choice,
                      std::string& failed_hook);
  // Autoloads the chosen programs, sizes the ring buffer and loads the
  // object; `failed_hook` names the hook whose program the kernel refused.
  Status load_object(std::uint64_t ring_buffer_bytes, std::uint64_t wakeup_bytes,
                     const std::vector<std::size_t>& choice, std::string& failed_hook);
  void destroy_links();
  // "attached (N netfilter links in M network namespaces)" on each netfilter
  // candidate, for --check and the logs.
  void describe_netfilter_links();
  // "attached (N uprobes in M files)" on each uprobe candidate.
  void describe_uprobe_links();

  Component component_;
  std::shared_ptr<ProbePlugin> plugin_;
  MetricStore& metrics_;
  Status described_;
  PluginDescription description_;
  std::vector<std::unique_ptr<EventSchema>> schemas_;
  std::unique_ptr<std::atomic<std::uint64_t>[]> event_counts_;
  std::map<std::string, MetricFamily*, std::less<>> families_;
  bpf_object* object_ = nullptr;
  std::map<std::string, ProgramLink, std::less<>> links_;
  std::vector<HookReport> reports_;
  struct NetfilterLink {
    std::string program;
    OwnedFd fd;
    std::uint64_t netns = 0;  // nsfs inode of the namespace it hooks
  };
  std::vector<NetfilterLink> netfilter_links_;
  // Namespaces with links, inode -> the file first entered ("" = own).
  std::map<std::uint64_t, std::string> netfilter_netns_;
  bool made_netfilter_links_ = false;
  struct UprobeLink {
    std::string program, binary;
    ProgramLink link;
  };
  std::vector<UprobeLink> uprobe_links_;
  int lost_map_fd_ = -1, suppressed_map_fd_ = -1;
  bool started_ = false;
  Bus* bus_ = nullptr;
  ProtocolRegistry* protocols_ = nullptr;
  // Emits as this plugin for the capture (created on first served_protocol()).
  mutable std::unique_ptr<EventEmitter> protocol_emitter_;
  ConfigValues config_;
  std::map<std::string, std::string> hook_overrides_;
  AnomalyDetector* detector_ = nullptr;
  MetricFamily* anomalies_ = nullptr;
  std::vector<AnomalyPlan> anomaly_plans_;
  WorkloadResolver* workloads_ = nullptr;
  std::vector<WorkloadPlan> workload_plans_;
  std::vector<MetricFamilySpec> exported_metrics_;
  // What families_ points to for families with a cgroup_id label.
  std::vector<std::unique_ptr<WorkloadLabelledFamily>> workload_families_;
  std::atomic<std::uint64_t> decode_errors_{0}, filtered_{0}, records_{0};
  std::function<Status()> refresh_;  // the plugin's; destroyed before stop()
  std::uint64_t refresh_failures_ = 0;
  TableAccounts tables_;
  // Read-only mapping of the ring buffer's consumer and producer positions.
  void* ring_positions_ = nullptr;
  std::uint64_t ring_bytes_ = 0;
  std::atomic<double> ring_fill_peak_{0};  // written by the poller, read by scrapes
  std::atomic<double> last_collect_s_{0};
  // CLOCK_REALTIME - CLOCK_MONOTONIC, to convert kernel timestamps.
  std::int64_t realtime_offset_ns_ = 0;
};

}  // namespace netwatcher::host
