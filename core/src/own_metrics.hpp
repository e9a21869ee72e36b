// The host's own metrics: what each plugin produced, lost and filtered, its
// ring buffer and tables, its programs' run time, each sink's queue, and the
// process itself. Poller thread only, like the plugins whose counts it reads.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "anomaly.hpp"
#include "bus.hpp"
#include "metric_store.hpp"
#include "probe_runtime.hpp"
#include "table_accounts.hpp"

namespace netwatcher::host {

class OwnMetrics {
 public:
  explicit OwnMetrics(MetricStore& store);

  void set_plugin_state(const std::string& plugin, bool up, const std::vector<HookReport>& hooks);

  // The anomaly detector's series are a bounded table of the host's own,
  // reported like a plugin's under plugin="anomaly".
  void watch_anomaly(const AnomalyDetector* detector);

  // Brings the host's own tables up to date and warns once on the first
  // eviction. Poller thread (the detector is not thread-safe).
  void update_tables();

  std::vector<TableUsage> anomaly_usage() const { return anomaly_tables_.usage(); }

  void refresh(const std::vector<ProbeRuntime*>& running, const Bus& bus);

  // Decode rates over the time since the last call (the main loop calls it
  // every snapshot_interval).
  void update_rates(const std::vector<ProbeRuntime*>& running, double elapsed_s);

 private:
  void set_table(const std::string& owner, const TableUsage& table);

  void refresh_process();

  MetricFamily *events_, *lost_, *suppressed_, *filtered_, *decode_errors_, *written_, *dropped_,
      *errors_, *depth_, *up_, *attached_, *build_, *records_, *record_rate_, *ring_size_,
      *ring_fill_, *ring_peak_, *capacity_, *pool_, *runs_, *run_time_, *cpu_, *rss_,
      *table_entries_, *table_capacity_, *table_full_, *table_evictions_, *missed_, *collect_time_,
      *netfilter_namespaces_;
  std::map<std::string, std::uint64_t> last_records_;  // main loop only
  const AnomalyDetector* detector_ = nullptr;
  TableAccounts anomaly_tables_{"anomaly"};
  TableAccount* anomaly_series_ = nullptr;
  std::uint64_t anomaly_evictions_reported_ = 0;
};

}  // namespace netwatcher::host
