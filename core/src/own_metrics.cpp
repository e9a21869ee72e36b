#include "own_metrics.hpp"

#include <unistd.h>

#include <fstream>
#include <iterator>
#include <sstream>

#include "netwatcher/version.hpp"

namespace netwatcher::host {

OwnMetrics::OwnMetrics(MetricStore& store) {
  events_ = store.declare({"netwatcher_events_total",
                           MetricType::counter,
                           "Events produced by plugins, after filtering.",
                           {"plugin", "event"}});
  lost_ = store.declare({"netwatcher_events_lost_total",
                         MetricType::counter,
                         "Records the kernel could not put in a plugin's ring buffer.",
                         {"plugin"}});
  suppressed_ = store.declare({"netwatcher_events_suppressed_total",
                               MetricType::counter,
                               "Records a plugin's per-second event limit held back in the kernel.",
                               {"plugin"}});
  filtered_ = store.declare({"netwatcher_events_filtered_total",
                             MetricType::counter,
                             "Events dropped by the host-side filter.",
                             {"plugin"}});
  decode_errors_ = store.declare({"netwatcher_decode_errors_total",
                                  MetricType::counter,
                                  "Records a plugin could not decode.",
                                  {"plugin"}});
  written_ = store.declare({"netwatcher_sink_events_total",
                            MetricType::counter,
                            "Events written by each sink.",
                            {"sink"}});
  dropped_ = store.declare({"netwatcher_sink_dropped_total",
                            MetricType::counter,
                            "Events a sink did not write: its queue was full (queue_full) or "
                            "writing failed (write_error).",
                            {"sink", "reason"}});
  errors_ = store.declare({"netwatcher_sink_errors_total",
                           MetricType::counter,
                           "Failed sink writes, flushes and closes.",
                           {"sink"}});
  depth_ = store.declare({"netwatcher_sink_queue_depth",
                          MetricType::gauge,
                          "Events waiting in each sink's queue.",
                          {"sink"}});
  up_ = store.declare({"netwatcher_plugin_up",
                       MetricType::gauge,
                       "1 when the plugin is loaded and attached, 0 when it failed.",
                       {"plugin"}});
  attached_ = store.declare({"netwatcher_plugin_hook_attached",
                             MetricType::gauge,
                             "1 when the hook is attached via the given program.",
                             {"plugin", "hook", "program"}});
  netfilter_namespaces_ = store.declare(
      {"netwatcher_netfilter_namespaces",
       MetricType::gauge,
       "Network namespaces in which a plugin has netfilter links now (namespaces come and go "
       "with the plugin's namespace list, e.g. \"*\").",
       {"plugin"}});
  records_ = store.declare({"netwatcher_records_decoded_total",
                            MetricType::counter,
                            "Ring-buffer records handed to each plugin's decoder.",
                            {"plugin"}});
  record_rate_ = store.declare({"netwatcher_records_decoded_per_second",
                                MetricType::gauge,
                                "Records decoded per second over the last snapshot_interval.",
                                {"plugin"}});
  ring_size_ = store.declare({"netwatcher_ring_buffer_size_bytes",
                              MetricType::gauge,
                              "Size of each plugin's ring buffer.",
                              {"plugin"}});
  ring_fill_ = store.declare({"netwatcher_ring_buffer_fill_ratio",
                              MetricType::gauge,
                              "Unread share of each plugin's ring buffer when scraped.",
                              {"plugin"}});
  ring_peak_ = store.declare(
      {"netwatcher_ring_buffer_peak_fill_ratio",
       MetricType::gauge,
       "Highest unread share of each plugin's ring buffer seen before a read, since start-up.",
       {"plugin"}});
  capacity_ = store.declare({"netwatcher_sink_queue_capacity",
                             MetricType::gauge,
                             "Events each sink's queue holds before dropping.",
                             {"sink"}});
  pool_ = store.declare({"netwatcher_event_pool_events",
                         MetricType::gauge,
                         "Events allocated for the pipeline (recycled, never freed); bounded "
                         "by the sink queues.",
                         {}});
  runs_ = store.declare({"netwatcher_bpf_program_runs_total",
                         MetricType::counter,
                         "Runs of each BPF program while kernel run-time statistics were on "
                         "([netwatcher] bpf_stats).",
                         {"plugin", "program"}});
  run_time_ = store.declare({"netwatcher_bpf_program_run_seconds_total",
                             MetricType::counter,
                             "Time spent in each BPF program while kernel run-time statistics "
                             "were on; divided by runs: the cost per run.",
                             {"plugin", "program"}});
  collect_time_ = store.declare({"netwatcher_snapshot_duration_seconds",
                                 MetricType::gauge,
                                 "How long each plugin's last periodic snapshot took (its "
                                 "collect() and the counting of its tables).",
                                 {"plugin"}});
  missed_ = store.declare(
      {"netwatcher_bpf_program_missed_runs_total",
       MetricType::counter,
       "Runs of each BPF program the kernel skipped because it was already running on the "
       "same CPU (an interrupt arrived during a run), or for classic tracepoints and kprobes "
       "because any BPF program was; whatever such a run would have recorded is missing. "
       "Counted whether or not bpf_stats is on.",
       {"plugin", "program"}});
  table_entries_ = store.declare({"netwatcher_table_entries",
                                  MetricType::gauge,
                                  "Entries in use in each bounded table of a plugin.",
                                  {"plugin", "table"}});
  table_capacity_ = store.declare({"netwatcher_table_capacity",
                                   MetricType::gauge,
                                   "Entries that fit in each bounded table of a plugin.",
                                   {"plugin", "table"}});
  table_full_ = store.declare({"netwatcher_table_full_total",
                               MetricType::counter,
                               "Inserts a full table refused (the log names the key to raise).",
                               {"plugin", "table"}});
  table_evictions_ =
      store.declare({"netwatcher_table_evictions_total",
                     MetricType::counter,
                     "Entries that left a table unused: pushed out to make room, or replaced "
                     "under their key.",
                     {"plugin", "table"}});
  cpu_ = store.declare({"process_cpu_seconds_total",
                        MetricType::counter,
                        "User and system CPU time of the netwatcher process.",
                        {}});
  rss_ = store.declare({"process_resident_memory_bytes",
                        MetricType::gauge,
                        "Resident memory of the netwatcher process.",
                        {}});
  build_ = store.declare({"netwatcher_build_info",
                          MetricType::gauge,
                          "Build information; always 1.",
                          {"version", "abi"}});
  build_->set({NETWATCHER_VERSION, std::to_string(kAbiMajor) + "." + std::to_string(kAbiMinor)}, 1);
}

void OwnMetrics::update_tables() {
  if (!detector_ || !anomaly_series_) return;
  anomaly_series_->set_entries(detector_->series());
  anomaly_series_->count_evicted(detector_->evicted() - anomaly_evictions_reported_);
  anomaly_evictions_reported_ = detector_->evicted();
  anomaly_tables_.update(/*count_entries=*/false);
}

void OwnMetrics::refresh(const std::vector<ProbeRuntime*>& running, const Bus& bus) {
  update_tables();
  for (const auto& table : anomaly_tables_.usage()) set_table("anomaly", table);
  for (const ProbeRuntime* runtime : running) {
    const auto& schemas = runtime->schemas();
    for (std::size_t i = 0; i < schemas.size(); ++i)
      events_->set({runtime->name(), schemas[i]->name}, static_cast<double>(runtime->events(i)));
    lost_->set({runtime->name()}, static_cast<double>(runtime->lost_events()));
    suppressed_->set({runtime->name()}, static_cast<double>(runtime->suppressed_events()));
    filtered_->set({runtime->name()}, static_cast<double>(runtime->filtered()));
    decode_errors_->set({runtime->name()}, static_cast<double>(runtime->decode_errors()));
    records_->set({runtime->name()}, static_cast<double>(runtime->records()));
    ring_size_->set({runtime->name()}, static_cast<double>(runtime->ring_bytes()));
    ring_fill_->set({runtime->name()}, runtime->ring_fill());
    ring_peak_->set({runtime->name()}, runtime->ring_fill_peak());
    collect_time_->set({runtime->name()}, runtime->last_collect_seconds());
    for (const auto& table : runtime->table_usage()) set_table(runtime->name(), table);
    if (auto namespaces = runtime->netfilter_namespaces())
      netfilter_namespaces_->set({runtime->name()}, static_cast<double>(*namespaces));
    for (const auto& program : runtime->program_stats()) {
      runs_->set({runtime->name(), program.program}, static_cast<double>(program.runs));
      run_time_->set({runtime->name(), program.program},
                     static_cast<double>(program.run_time_ns) / 1e9);
      missed_->set({runtime->name(), program.program}, static_cast<double>(program.missed_runs));
    }
  }
  pool_->set({}, static_cast<double>(bus.pool().created()));
  refresh_process();
  for (const auto& worker : bus.workers()) {
    written_->set({worker->instance()}, static_cast<double>(worker->written()));
    dropped_->set({worker->instance(), "queue_full"}, static_cast<double>(worker->dropped()));
    dropped_->set({worker->instance(), "write_error"},
                  static_cast<double>(worker->write_failures()));
    errors_->set({worker->instance()}, static_cast<double>(worker->errors()));
    depth_->set({worker->instance()}, static_cast<double>(worker->depth()));
    capacity_->set({worker->instance()}, static_cast<double>(worker->capacity()));
  }
}

void OwnMetrics::update_rates(const std::vector<ProbeRuntime*>& running, double elapsed_s) {
  for (const ProbeRuntime* runtime : running) {
    const std::uint64_t now = runtime->records();
    std::uint64_t& before = last_records_[runtime->name()];
    record_rate_->set({runtime->name()},
                      elapsed_s > 0 ? static_cast<double>(now - before) / elapsed_s : 0);
    before = now;
  }
}

void OwnMetrics::set_table(const std::string& owner, const TableUsage& table) {
  const LabelValues labels{owner, table.table};
  table_entries_->set(labels, static_cast<double>(table.entries));
  table_capacity_->set(labels, static_cast<double>(table.capacity));
  table_full_->set(labels, static_cast<double>(table.refused));
  table_evictions_->set(labels, static_cast<double>(table.evicted));
}

void OwnMetrics::refresh_process() {
  // /proc/self/stat: utime and stime are fields 14 and 15, rss (pages) 24.
  std::ifstream in("/proc/self/stat");
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::size_t end = text.rfind(')');
  if (end == std::string::npos) return;
  std::istringstream fields(text.substr(end + 2));
  std::vector<std::string> f{std::istream_iterator<std::string>(fields), {}};
  if (f.size() < 22) return;  // f[0] is field 3 (state)
  const double ticks = static_cast<double>(sysconf(_SC_CLK_TCK));
  cpu_->set({}, (std::stod(f[11]) + std::stod(f[12])) / ticks);
  rss_->set({}, std::stod(f[21]) * static_cast<double>(sysconf(_SC_PAGESIZE)));
}

void OwnMetrics::set_plugin_state(const std::string& plugin, bool up,
                                  const std::vector<HookReport>& hooks) {
  up_->set({plugin}, up ? 1 : 0);
  for (const auto& hook : hooks)
    attached_->set(
        {plugin, hook.hook, hook.attached_program.empty() ? "none" : hook.attached_program},
        hook.attached_program.empty() ? 0 : 1);
}

void OwnMetrics::watch_anomaly(const AnomalyDetector* detector) {
  detector_ = detector;
  if (detector_)
    anomaly_series_ = anomaly_tables_.track(
        {"series", "", 0, detector_->settings().max_series, "anomaly.max_series"});
}

}  // namespace netwatcher::host
