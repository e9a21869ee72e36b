#include "app.hpp"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <optional>

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <boost/program_options.hpp>

#include "agent.hpp"
#include "anomaly.hpp"
#include "bus.hpp"
#include "capabilities.hpp"
#include "command_line.hpp"
#include "config.hpp"
#include "kernel_features.hpp"
#include "libbpf_log.hpp"
#include "live_programs.hpp"
#include "loader.hpp"
#include "metric_store.hpp"
#include "metrics_refresh.hpp"
#include "own_metrics.hpp"
#include "probe_runtime.hpp"
#include "reports.hpp"
#include "startup_plan.hpp"
#include "workloads.hpp"

namespace po = boost::program_options;

namespace netwatcher::host {

namespace {

std::atomic<bool> stop_requested{false};
std::atomic<bool> reopen_requested{false};

void on_signal(int) {
  stop_requested.store(true);
}

// SIGHUP reopens the sinks' files (logrotate); it re-reads nothing else.
void on_hangup(int) {
  reopen_requested.store(true);
}

void install_signal_handlers() {
  struct sigaction action {};
  action.sa_handler = on_signal;
  sigemptyset(&action.sa_mask);
  sigaction(SIGINT, &action, nullptr);
  sigaction(SIGTERM, &action, nullptr);
  struct sigaction hangup {};
  hangup.sa_handler = on_hangup;
  sigemptyset(&hangup.sa_mask);
  hangup.sa_flags = SA_RESTART;
  sigaction(SIGHUP, &hangup, nullptr);
}

// Exit codes: 0 done, 1 could not run, 2 bad command line or config.
constexpr int kExitFailed = 1;
constexpr int kExitUsage = 2;

// The options that decide where plugins and config come from; the rest of the
// command line waits for the plugins' flags. An exit code when there is
// nothing more to do (--version, or a malformed line).
std::optional<int> parse_core_options(int argc, char** argv, po::variables_map& early,
                                      Options& options) {
  try {
    po::store(
        po::command_line_parser(argc, argv).options(core_options()).allow_unregistered().run(),
        early);
  } catch (const po::error& e) {
    std::cerr << "netwatcher: " << e.what() << "\n";
    return kExitUsage;
  }
  options.verbose = early.count("verbose");
  if (early.count("version")) {
    std::cout << "netwatcher " << NETWATCHER_VERSION << " (plugin ABI " << kAbiMajor << "."
              << kAbiMinor << ", " << kCompilerId << ")\n";
    return 0;
  }
  if (early.count("config")) {
    options.config_path = early["config"].as<std::string>();
    options.config_given = true;
  } else {
    options.config_path = default_config_path();
  }
  if (early.count("plugin-dir"))
    options.plugin_dirs = early["plugin-dir"].as<std::vector<std::string>>();
  return std::nullopt;
}

void start_logging() {
  spdlog::set_default_logger(spdlog::stderr_color_mt("netwatcher"));
  spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ %v");
  route_libbpf_log();
}

// The config file (or the built-in default without one), and the log level it
// asks for. Nothing when it is broken: the error is logged.
std::optional<Config> load_startup_config(Options& options) {
  Config config;
  try {
    if (options.config_path.empty()) {
      config = default_config();
    } else {
      if (!std::filesystem::exists(options.config_path))
        throw ConfigError(options.config_path + ": no such file");
      config = load_config(options.config_path);
    }
  } catch (const ConfigError& e) {
    spdlog::critical("config error: {}", e.what());
    return std::nullopt;
  }
  spdlog::set_level(options.verbose ? spdlog::level::debug
                                    : spdlog::level::from_str(config.settings.log_level));
  if (!config.from_file)
    spdlog::warn(
        "no {} here or installed (etc/netwatcher/ beside bin/, /etc/netwatcher/) and no --config "
        "given: running every plugin with a stdout sink",
        kDefaultConfig);
  else if (!options.config_given)
    spdlog::info("config: {}", options.config_path);
  for (const auto& dir : config.settings.plugin_dirs) options.plugin_dirs.push_back(dir);
  if (options.plugin_dirs.empty()) options.plugin_dirs = default_plugin_dirs();
  return config;
}

// The whole command line, the plugins' flags included. An exit code when
// there is nothing more to do (--help, or a malformed line).
std::optional<int> parse_command_line(int argc, char** argv, const Discovery& discovery,
                                      const std::vector<std::unique_ptr<ProbeRuntime>>& runtimes,
                                      const std::vector<PluginFlag>& flags, po::variables_map& vm,
                                      Options& options) {
  po::options_description all = core_options();
  std::map<std::string, std::string> plugin_descriptions;
  for (const auto& runtime : runtimes)
    if (const Component* component = discovery.probe(runtime->name()))
      plugin_descriptions[runtime->name()] = component->description;
  add_plugin_flags(all, flags, plugin_descriptions);
  try {
    po::store(po::parse_command_line(argc, argv, all), vm);
    po::notify(vm);
  } catch (const po::error& e) {
    std::cerr << "netwatcher: " << e.what() << "\n" << all << "\n";
    return kExitUsage;
  }
  if (vm.count("help")) {
    std::cout << "Usage: netwatcher [options]\n\n" << all << "\n";
    return 0;
  }
  options.list_plugins = vm.count("list-plugins");
  options.check = vm.count("check");
  if (vm.count("duration")) options.duration_s = vm["duration"].as<double>();
  return std::nullopt;
}

// What the host adds to every event before a sink sees its schema: the
// resolver the cgroup, container and pod fields, then the detector the
// `anomaly` field. They live as long as the plugins that call them.
struct Enrichment {
  std::unique_ptr<WorkloadResolver> workloads;
  std::unique_ptr<AnomalyDetector> detector;
};

Enrichment enrich_events(const Config& config, const std::vector<ProbeRuntime*>& enabled,
                         MetricStore& store, OwnMetrics& own) {
  Enrichment enrichment;
  if (config.settings.workloads.enabled) {
    enrichment.workloads = std::make_unique<WorkloadResolver>(config.settings.workloads);
    if (enrichment.workloads->cgroup_root().empty())
      spdlog::warn(
          "no cgroup2 mount in /proc/self/mountinfo: events carry cgroup_id but no "
          "cgroup path, container or pod (set [containers] cgroup_root)");
    for (ProbeRuntime* runtime : enabled)
      runtime->use_workload_resolver(enrichment.workloads.get());
  }
  if (config.settings.anomaly.enabled) {
    enrichment.detector = std::make_unique<AnomalyDetector>(config.settings.anomaly);
    MetricFamily* anomalies =
        store.declare({"netwatcher_latency_anomalies_total",
                       MetricType::counter,
                       "Latency samples over the anomaly threshold ([anomaly], -L).",
                       {"plugin", "field"}});
    for (ProbeRuntime* runtime : enabled)
      runtime->use_anomaly_detector(enrichment.detector.get(), anomalies);
    own.watch_anomaly(enrichment.detector.get());
  }
  return enrichment;
}

// --check: the kernel's features, then each enabled plugin brought up and
// shut down again with the reason it cannot run. 0 when all can.
int run_check(KernelFeatures& features, const Config& config, const StartupPlan& plan) {
  features.probe_all_iter_targets();
  print_features(features);
  const std::vector<LiveProgram> live = live_netwatcher_programs();
  bool all_ok = plan.configured_but_refused.empty();
  for (const auto& name : plan.configured_but_refused)
    std::cout << "plugin " << name << ": CANNOT RUN (refused by the loader)\n";
  // All stay up until the end: the L7 capture, checked last, needs the
  // protocol plugins running.
  for (ProbeRuntime* runtime : plan.enabled) {
    Status s = bring_up_planned(*runtime, plan, config, features, nullptr);
    std::cout << "plugin " << runtime->name() << ": " << (s ? "ok" : "CANNOT RUN: " + s.message())
              << "\n";
    print_hook_reports(*runtime, live);
    all_ok = all_ok && s.ok();
  }
  for (auto it = plan.enabled.rbegin(); it != plan.enabled.rend(); ++it) (*it)->shut_down();
  print_requirements(features);
  return all_ok ? 0 : kExitFailed;
}

std::string plugin_names(const std::vector<std::unique_ptr<ProbeRuntime>>& runtimes) {
  std::string names;
  for (const auto& r : runtimes) names += (names.empty() ? "" : ", ") + r->name();
  return names.empty() ? std::string("none") : names;
}

int run(int argc, char** argv) {
  Options options;
  po::variables_map early;
  if (auto exit = parse_core_options(argc, argv, early, options)) return *exit;
  start_logging();
  std::optional<Config> loaded = load_startup_config(options);
  if (!loaded) return kExitUsage;
  Config& config = *loaded;
  if (options.plugin_dirs.empty()) {
    spdlog::critical("no plugin directory: pass --plugin-dir or set [netwatcher] plugin_dirs");
    return kExitUsage;
  }

  Discovery discovery = discover(options.plugin_dirs);
  MetricStore store;
  OwnMetrics own(store);
  // Every discovered probe is described (for flags, --list-plugins, validation).
  std::vector<std::unique_ptr<ProbeRuntime>> runtimes =
      describe_probes(discovery, store, config.settings.workloads);
  const std::vector<PluginFlag> flags = plugin_flags(runtimes);
  po::variables_map vm;
  if (auto exit = parse_command_line(argc, argv, discovery, runtimes, flags, vm, options))
    return *exit;

  StartupPlan plan;
  PluginOverrides overrides;
  try {
    apply_command_line(vm, flags, config, overrides);
  } catch (const ConfigError& e) {
    spdlog::critical("{}", e.what());
    return kExitUsage;
  }
  try {
    plan_plugins(config, discovery, runtimes, overrides, options.plugin_dirs, plan);
  } catch (const ConfigError& e) {
    spdlog::critical("config error: {}", e.what());
    return kExitUsage;
  }
  ProtocolRegistry protocols;
  for (const auto& runtime : runtimes) runtime->set_protocol_registry(&protocols);
  plan_l7_capture(runtimes, options.plugin_dirs, plan);
  if (plan.enabled.empty() && !options.list_plugins) {
    spdlog::critical("no plugin is enabled in {}: add a [plugins.<name>] section (found: {})",
                     config.path, plugin_names(runtimes));
    return kExitUsage;
  }
  const Enrichment enrichment = enrich_events(config, plan.enabled, store, own);
  plan.sink_types = describe_sinks(discovery);
  try {
    plan_sinks(config, runtimes, plan);
  } catch (const ConfigError& e) {
    spdlog::critical("config error: {}", e.what());
    return kExitUsage;
  }
  if (options.list_plugins) {
    list_components(discovery, runtimes, plan.sink_types, store);
    return 0;
  }

  struct rlimit unlimited = {RLIM_INFINITY, RLIM_INFINITY};
  setrlimit(RLIMIT_MEMLOCK, &unlimited);  // kernels before 5.11 charge BPF maps to memlock
  KernelFeatures features = KernelFeatures::probe();
  if (options.check) return run_check(features, config, plan);
  install_signal_handlers();
  return run_agent(config, options.duration_s, plan, features, store, own,
                   {stop_requested, reopen_requested});
}

}  // namespace

int run_netwatcher(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    spdlog::critical("fatal: {}", e.what());
    return 1;
  }
}

}  // namespace netwatcher::host
