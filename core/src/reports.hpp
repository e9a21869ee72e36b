// What netwatcher prints instead of running: the --list-plugins listing and
// the parts of the --check report. Everything goes to standard output.
#pragma once

#include <memory>
#include <utility>
#include <vector>

#include "kernel_features.hpp"
#include "live_programs.hpp"
#include "loader.hpp"
#include "metric_store.hpp"
#include "probe_runtime.hpp"

namespace netwatcher::host {

// Every discovered plugin and sink with its hooks, events, metrics, config
// keys and flags, then the refused files. `own`: the host's families, and the
// plugins' (listed with their plugin).
void list_components(const Discovery& discovery,
                     const std::vector<std::unique_ptr<ProbeRuntime>>& runtimes,
                     const std::vector<std::pair<const Component*, SinkDescription>>& sinks,
                     const MetricStore& own);

// The kernel and each feature probe's verdict.
void print_features(const KernelFeatures& features);

// What netwatcher needs from the host to run (as a service, or in a
// container: deploy/kubernetes/ is checked against this list).
void print_requirements(const KernelFeatures& features);

// Each hook of a brought-up plugin: the program attached or why none could
// be, and which running agents hold the same program.
void print_hook_reports(const ProbeRuntime& runtime, const std::vector<LiveProgram>& live);

}  // namespace netwatcher::host
