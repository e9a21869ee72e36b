#include "startup_plan.hpp"

#include <algorithm>

#include <spdlog/spdlog.h>

namespace netwatcher::host {

namespace {

bool is_known(const std::vector<std::unique_ptr<ProbeRuntime>>& runtimes,
              const std::string& plugin) {
  return std::any_of(runtimes.begin(), runtimes.end(),
                     [&](const auto& runtime) { return runtime->name() == plugin; });
}

std::string names_of(const std::vector<std::unique_ptr<ProbeRuntime>>& runtimes) {
  std::string names;
  for (const auto& runtime : runtimes) names += (names.empty() ? "" : ", ") + runtime->name();
  return names.empty() ? std::string("none") : names;
}

}  // namespace

std::vector<std::unique_ptr<ProbeRuntime>> describe_probes(Discovery& discovery, MetricStore& store,
                                                           const WorkloadSettings& workloads) {
  std::vector<std::unique_ptr<ProbeRuntime>> runtimes;
  for (const auto& component : discovery.probes) {
    auto plugin = create_probe(component);
    if (!plugin) {
      spdlog::error("{}", plugin.status().message());
      discovery.refused.push_back({component.path, component.name, plugin.status().message()});
      continue;
    }
    auto runtime = std::make_unique<ProbeRuntime>(component, plugin.take(), store, workloads);
    if (const Status& described = runtime->described(); !described) {
      spdlog::error("{}", described.message());
      discovery.refused.push_back({component.path, component.name, described.message()});
      continue;
    }
    runtimes.push_back(std::move(runtime));
  }
  return runtimes;
}

void plan_plugins(const Config& config, const Discovery& discovery,
                  const std::vector<std::unique_ptr<ProbeRuntime>>& runtimes,
                  const PluginOverrides& overrides, const std::vector<std::string>& plugin_dirs,
                  StartupPlan& plan) {
  for (const auto& [name, section] : config.plugins) {
    if (is_known(runtimes, name)) continue;
    if (const RefusedFile* refused = discovery.refused_named(name)) {
      if (section.enabled) {
        spdlog::error("plugin '{}' is enabled but was refused: {}: {}", name, refused->path,
                      refused->reason);
        plan.configured_but_refused.push_back(name);
      }
      continue;
    }
    throw ConfigError(config.where(section.table) + ": unknown plugin '" + name +
                      "' (found: " + names_of(runtimes) + " in " + plugin_dirs.front() +
                      (plugin_dirs.size() > 1 ? ", ..." : "") + ")");
  }
  for (const auto& runtime : runtimes) {
    auto it = config.plugins.find(runtime->name());
    bool on = config.from_file ? (it != config.plugins.end() && it->second.enabled) : true;
    const toml::table* table = it != config.plugins.end() ? it->second.table : nullptr;
    ConfigValues values = validate_keys(config, "plugins." + runtime->name(), table,
                                        runtime->description().config, {"enabled"});
    if (auto flagged = overrides.find(runtime->name()); flagged != overrides.end())
      for (const auto& [key, value] : flagged->second) values.set(key, value);
    plan.plugin_values[runtime->name()] = values;
    if (on) plan.enabled.push_back(runtime.get());
  }
  for (const auto& [key, program] : config.settings.hook_overrides) {
    std::string plugin = key.substr(0, key.find('.'));
    if (key != "*" && !is_known(runtimes, plugin))
      throw ConfigError(config.path + ": key 'netwatcher.hook_override.\"" + key +
                        "\"': unknown plugin '" + plugin + "'");
  }
}

void plan_l7_capture(const std::vector<std::unique_ptr<ProbeRuntime>>& runtimes,
                     const std::vector<std::string>& plugin_dirs, StartupPlan& plan) {
  auto capture = std::find_if(runtimes.begin(), runtimes.end(),
                              [](const auto& r) { return r->name() == kL7CapturePlugin; });
  std::erase_if(plan.enabled, [](ProbeRuntime* r) { return r->name() == kL7CapturePlugin; });
  std::string needing;
  for (ProbeRuntime* runtime : plan.enabled)
    if (runtime->uses_l7_capture()) needing += (needing.empty() ? "" : ", ") + runtime->name();
  if (needing.empty()) return;
  if (capture != runtimes.end())
    plan.enabled.push_back(capture->get());
  else
    spdlog::error("{} need(s) the shared L7 capture, plugin '{}', which was not found in {}",
                  needing, kL7CapturePlugin, plugin_dirs.front());
}

SinkTypes describe_sinks(const Discovery& discovery) {
  SinkTypes types;
  for (const auto& component : discovery.sinks) {
    auto sink = create_sink(component);
    if (!sink) {
      spdlog::error("{}", sink.status().message());
      continue;
    }
    SinkDescription description;
    if (Status s = sink.value()->describe(description); !s) {
      spdlog::error("sink '{}': describe() failed: {}", component.name, s.message());
      continue;
    }
    types.emplace_back(&component, std::move(description));
  }
  return types;
}

void plan_sinks(const Config& config, const std::vector<std::unique_ptr<ProbeRuntime>>& runtimes,
                StartupPlan& plan) {
  for (const auto& section : config.sinks) {
    auto type = std::find_if(plan.sink_types.begin(), plan.sink_types.end(),
                             [&](const auto& t) { return t.first->name == section.type; });
    if (type == plan.sink_types.end()) {
      std::string known;
      for (const auto& t : plan.sink_types) known += (known.empty() ? "" : ", ") + t.first->name;
      throw ConfigError(config.where(section.table ? section.table->get("type") : nullptr) +
                        ": unknown sink type '" + section.type +
                        "' (found: " + (known.empty() ? "none" : known) + ")");
    }
    SinkPlan sink{type->first, {}, std::nullopt};
    sink.context.instance = section.instance;
    sink.context.config = validate_keys(config, section.table_path, section.table,
                                        type->second.config, {"type", "name", "plugins"});
    if (section.plugins) {
      sink.routed.emplace();
      for (const auto& name : *section.plugins) {
        if (!is_known(runtimes, name))
          throw ConfigError(config.where(section.table->get("plugins")) + ": key '" +
                            section.table_path + ".plugins' names unknown plugin '" + name + "'");
        sink.routed->insert(name);
      }
    }
    for (ProbeRuntime* runtime : plan.enabled)
      if (!sink.routed || sink.routed->count(runtime->name()))
        for (const auto& schema : runtime->schemas()) sink.context.schemas.push_back(schema.get());
    plan.sinks.push_back(std::move(sink));
  }
}

Status bring_up_planned(ProbeRuntime& runtime, const StartupPlan& plan, const Config& config,
                        const KernelFeatures& features, Bus* bus) {
  Status s = runtime.configure(plan.plugin_values.at(runtime.name()), config.filter);
  runtime.set_hook_overrides(config.settings.hook_overrides);
  if (bus) runtime.set_bus(*bus);
  if (s)
    s = runtime.bring_up(features, config.settings.ring_buffer_bytes, config.settings.wakeup_bytes);
  return s;
}

}  // namespace netwatcher::host
