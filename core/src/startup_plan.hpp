// What start-up will run, decided before anything touches the kernel: every
// discovered plugin described, the config checked against them, the plugins
// to enable with their keys, and the sinks with what each receives. Errors in
// the config are ConfigError, naming the file, line and key.
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "bus.hpp"
#include "command_line.hpp"
#include "config.hpp"
#include "kernel_features.hpp"
#include "loader.hpp"
#include "metric_store.hpp"
#include "netwatcher/sink.hpp"
#include "probe_runtime.hpp"

namespace netwatcher::host {

// A [[sinks]] section, resolved: its component, its validated keys and the
// schemas of the events routed to it (`routed`: its `plugins` list, if any).
struct SinkPlan {
  const Component* component;
  SinkContext context;
  std::optional<std::set<std::string>> routed;
};

using SinkTypes = std::vector<std::pair<const Component*, SinkDescription>>;

struct StartupPlan {
  std::vector<ProbeRuntime*> enabled;               // owned by the runtimes the plan was made from
  std::vector<std::string> configured_but_refused;  // enabled, but the loader refused them
  std::map<std::string, ConfigValues> plugin_values;
  SinkTypes sink_types;
  std::vector<SinkPlan> sinks;
};

// A runtime for every probe the loader accepted whose description is valid;
// the others are logged and added to `discovery.refused`.
std::vector<std::unique_ptr<ProbeRuntime>> describe_probes(Discovery& discovery, MetricStore& store,
                                                           const WorkloadSettings& workloads);

// Fills `plan.enabled`, `plan.configured_but_refused` and `plan.plugin_values`
// from the config's [plugins.*] sections and the flags' `overrides`. Throws
// ConfigError for an unknown plugin or key, or a hook override naming one.
void plan_plugins(const Config& config, const Discovery& discovery,
                  const std::vector<std::unique_ptr<ProbeRuntime>>& runtimes,
                  const PluginOverrides& overrides, const std::vector<std::string>& plugin_dirs,
                  StartupPlan& plan);

// The shared L7 capture runs when, and only when, an enabled protocol plugin
// needs it, and is enabled after all of them (it reads what they serve).
void plan_l7_capture(const std::vector<std::unique_ptr<ProbeRuntime>>& runtimes,
                     const std::vector<std::string>& plugin_dirs, StartupPlan& plan);

// Every sink type the loader found that describes itself.
SinkTypes describe_sinks(const Discovery& discovery);

// One SinkPlan per [[sinks]] section, with the schemas of the enabled
// plugins routed to it. Throws ConfigError for an unknown type, key or
// routed plugin.
void plan_sinks(const Config& config, const std::vector<std::unique_ptr<ProbeRuntime>>& runtimes,
                StartupPlan& plan);

// Configures one enabled plugin with its planned keys, the filter and the
// hook overrides, and brings it up (opened, loaded, attached, started), the
// same way for --check and for the agent. `bus`: where its events go; none
// for --check. The failure is the plugin's reason, for "CANNOT RUN: ..." or
// "plugin 'x' disabled: ...".
Status bring_up_planned(ProbeRuntime& runtime, const StartupPlan& plan, const Config& config,
                        const KernelFeatures& features, Bus* bus);

}  // namespace netwatcher::host
