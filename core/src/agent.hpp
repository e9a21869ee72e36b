// The running agent: the sinks started, the plan's plugins attached, the
// capabilities dropped, then the poll loop until a signal or --duration, and
// an orderly stop that reports what was produced and lost. One thread, the
// poller, owns all of it; sink threads reach the metrics only through the
// MetricsRefresher.
#pragma once

#include <atomic>
#include <vector>

#include "config.hpp"
#include "kernel_features.hpp"
#include "metric_store.hpp"
#include "own_metrics.hpp"
#include "startup_plan.hpp"

namespace netwatcher::host {

// Set from signal handlers: SIGINT/SIGTERM stop the loop, SIGHUP reopens the
// sinks' files.
struct StopSignals {
  const std::atomic<bool>& stop;
  std::atomic<bool>& reopen;
};

// Runs `plan` until `signals.stop` or `duration_s` (0: no limit). Returns the
// process exit code: 0 after an orderly stop, 1 when no plugin could start or
// capabilities could not be dropped, 2 when a sink refused its config.
int run_agent(const Config& config, double duration_s, const StartupPlan& plan,
              const KernelFeatures& features, MetricStore& store, OwnMetrics& own,
              StopSignals signals);

}  // namespace netwatcher::host
