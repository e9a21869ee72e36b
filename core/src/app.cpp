#include "app.hpp"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <set>
#include <sstream>

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <boost/program_options.hpp>

#include "bus.hpp"
#include "capabilities.hpp"
#include "config.hpp"
#include "kernel_features.hpp"
#include "libbpf_log.hpp"
#include "live_programs.hpp"
#include "loader.hpp"
#include "metric_store.hpp"
#include "metrics_refresh.hpp"
#include "netwatcher/format.hpp"
#include "probe_runtime.hpp"

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

const char* kDefaultConfig = "netwatcher.toml";

std::filesystem::path executable_dir() {
  std::error_code ec;
  auto exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  return ec ? std::filesystem::path{} : exe.parent_path();
}

// Next to the binary in a build tree, lib/netwatcher beside bin/ once installed.
std::vector<std::string> default_plugin_dirs() {
  auto dir = executable_dir();
  if (dir.empty()) return {};
  std::error_code ec;
  std::vector<std::string> dirs;
  for (auto candidate : {dir / "plugins", dir / ".." / "lib" / "netwatcher"})
    if (std::filesystem::is_directory(candidate, ec))
      dirs.push_back(candidate.lexically_normal().string());
  return dirs;
}

// Without --config: ./netwatcher.toml, else the installed one (etc/ of the
// install prefix, then /etc); empty when there is none.
std::string default_config_path() {
  std::error_code ec;
  std::vector<std::filesystem::path> candidates{kDefaultConfig};
  if (auto dir = executable_dir(); !dir.empty())
    candidates.push_back(dir / ".." / "etc" / "netwatcher" / kDefaultConfig);
  candidates.push_back(std::filesystem::path("/etc/netwatcher") / kDefaultConfig);
  for (const auto& candidate : candidates)
    if (std::filesystem::is_regular_file(candidate, ec))
      return candidate.lexically_normal().string();
  return {};
}

struct Options {
  std::string config_path = kDefaultConfig;
  bool config_given = false;
  std::vector<std::string> plugin_dirs;
  bool list_plugins = false;
  bool check = false;
  double duration_s = 0;
  bool verbose = false;
};

po::options_description core_options() {
  po::options_description desc("Options");
  desc.add_options()("help,h", "show this help (plugin flags included)")(
      "version", "print the version")("config,c", po::value<std::string>(),
                                      "configuration file (default ./netwatcher.toml)")(
      "plugin-dir", po::value<std::vector<std::string>>()->composing(),
      "directory with plugin and sink .so files (repeatable)")(
      "list-plugins", "list plugins and sinks: version, ABI, hooks, events, metrics")(
      "check", "report kernel features and whether each enabled plugin can attach")(
      "duration", po::value<double>(), "stop after SECONDS")("verbose,v", "debug logging")(
      "pid,p", po::value<std::uint32_t>(), "only this process ([filter] pid)")(
      "sport,s", po::value<std::string>(), "only these local ports, e.g. 80,443 ([filter] sport)")(
      "dport,d", po::value<std::string>(), "only these remote ports ([filter] dport)")(
      "laddr", po::value<std::string>(),
      "only these local addresses or networks, e.g. 10.0.0.0/8,fd00::/8 ([filter] "
      "local_addresses)")("raddr", po::value<std::string>(),
                          "only these remote addresses or networks ([filter] remote_addresses)")(
      "ipv4,4", "IPv4 only ([filter] family)")("ipv6,6", "IPv6 only ([filter] family)")(
      "timeload,L", "flag latency anomalies in events ([anomaly] enabled)");
  return desc;
}

struct PluginFlag {
  std::string plugin;
  CliFlag flag;
  ConfigKey key;
};

// Plugin-contributed flags, skipping any that collide with core or earlier flags.
std::vector<PluginFlag> plugin_flags(const std::vector<std::unique_ptr<ProbeRuntime>>& runtimes) {
  std::set<std::string> taken = {"h",     "c",        "v",       "p",          "s",
                                 "d",     "4",        "6",       "L",          "timeload",
                                 "help",  "version",  "config",  "plugin-dir", "list-plugins",
                                 "check", "duration", "verbose", "pid",        "sport",
                                 "dport", "ipv4",     "ipv6",    "laddr",      "raddr"};
  std::vector<PluginFlag> flags;
  for (const auto& runtime : runtimes) {
    for (const auto& flag : runtime->description().flags) {
      std::string shorty = flag.short_name ? std::string(1, flag.short_name) : "";
      if (taken.count(flag.long_name) || (!shorty.empty() && taken.count(shorty))) {
        spdlog::warn("plugin '{}': flag --{} collides with another flag; ignored", runtime->name(),
                     flag.long_name);
        continue;
      }
      static const ConfigKey kEnabled{"enabled", ConfigType::boolean, false, "enable the plugin"};
      const ConfigKey* key = flag.key == "enabled" ? &kEnabled : nullptr;
      for (const auto& k : runtime->description().config)
        if (k.name == flag.key) key = &k;
      if (!key) {
        spdlog::warn("plugin '{}': flag --{} names unknown key '{}'; ignored", runtime->name(),
                     flag.long_name, flag.key);
        continue;
      }
      taken.insert(flag.long_name);
      if (!shorty.empty()) taken.insert(shorty);
      flags.push_back({runtime->name(), flag, *key});
    }
  }
  return flags;
}

// --help lists plugins in the order README.md describes them ("What the ...
// plugin reports"), the ones it does not know after them by name.
constexpr const char* kHelpOrder[] = {"tcp",  "http",      "dns", "redis", "mysql",
                                      "drop", "netfilter", "udp", "icmp",  "nic"};

std::vector<std::string> help_order(std::vector<std::string> plugins) {
  auto rank = [](const std::string& plugin) {
    auto it = std::find(std::begin(kHelpOrder), std::end(kHelpOrder), plugin);
    return std::distance(std::begin(kHelpOrder), it);
  };
  std::sort(plugins.begin(), plugins.end(), [&](const std::string& a, const std::string& b) {
    return rank(a) != rank(b) ? rank(a) < rank(b) : a < b;
  });
  return plugins;
}

// One group per plugin with flags, headed by its name and one-line description.
void add_plugin_flags(po::options_description& all, const std::vector<PluginFlag>& flags,
                      const std::map<std::string, std::string>& descriptions) {
  std::vector<std::string> plugins;
  for (const auto& [plugin, description] : descriptions) plugins.push_back(plugin);
  for (const auto& plugin : help_order(plugins)) {
    const std::string& description = descriptions.at(plugin);
    po::options_description group(plugin + " plugin" +
                                  (description.empty() ? "" : " (" + description + ")"));
    for (const auto& f : flags) {
      if (f.plugin != plugin) continue;
      std::string spec = f.flag.long_name;
      if (f.flag.short_name) spec += std::string(",") + f.flag.short_name;
      std::string help = f.flag.help + " (" + f.plugin + "." + f.flag.key + ")";
      if (f.flag.value_name.empty())
        group.add_options()(spec.c_str(), help.c_str());
      else
        group.add_options()(spec.c_str(), po::value<std::string>()->value_name(f.flag.value_name),
                            help.c_str());
    }
    if (!group.options().empty()) all.add(group);
  }
}

void print_config_keys(const std::vector<ConfigKey>& keys) {
  for (const auto& key : keys)
    std::cout << "      " << key.name << " (" << config_type_name(key.type)
              << "): " << key.description << "\n";
}

void print_metric_family(const MetricFamilySpec& metric) {
  std::cout << "    " << metric.name << " " << metric_type_name(metric.type);
  if (!metric.labels.empty()) {
    std::cout << " {";
    for (std::size_t i = 0; i < metric.labels.size(); ++i)
      std::cout << (i ? "," : "") << metric.labels[i];
    std::cout << "}";
  }
  std::cout << " - " << metric.help << "\n";
}

// `own`: the host's families, and the plugins' (listed with their plugin).
void list_components(const Discovery& discovery,
                     const std::vector<std::unique_ptr<ProbeRuntime>>& runtimes,
                     const std::vector<std::pair<const Component*, SinkDescription>>& sinks,
                     const MetricStore& own) {
  std::set<std::string> plugins_own;
  for (const auto& runtime : runtimes)
    for (const auto& metric : runtime->description().metrics) plugins_own.insert(metric.name);
  std::cout << "netwatcher " << NETWATCHER_VERSION << " (the host itself)\n  metrics:\n";
  for (const auto& family : own.snapshot())
    if (!plugins_own.count(family.spec.name)) print_metric_family(family.spec);
  std::cout << "\n";
  // A running agent's programs, matched by name: listing loads nothing, so
  // there is no tag to compare.
  const std::vector<LiveProgram> live =
      geteuid() == 0 ? live_netwatcher_programs() : std::vector<LiveProgram>{};
  for (const auto& runtime : runtimes) {
    const Component* c = discovery.probe(runtime->name());
    const auto& d = runtime->description();
    std::cout << "plugin " << c->name << " " << c->version << "  (probe, ABI " << c->abi_major
              << "." << c->abi_minor << ", " << c->path << ")\n  " << c->description << "\n";
    std::cout << "  built by " << c->compiler << " for " << c->stdlib << "\n";
    std::cout << "  hooks:\n";
    for (const auto& hook : d.hooks) {
      std::cout << "    " << hook.name << (hook.required ? "" : " (optional)")
                << (hook.enabled_by.empty() ? "" : " (only with " + hook.enabled_by + ")") << ": ";
      for (std::size_t i = 0; i < hook.programs.size(); ++i)
        std::cout << (i ? " | " : "") << hook.programs[i];
      std::cout << "\n";
      for (const auto& program : hook.programs)
        for (const auto& running : live)
          if (running.name == program)
            std::cout << "      " << program << ": " << describe_live(running) << "\n";
    }
    std::cout << "  events:\n";
    for (const auto& event : d.events) {
      std::cout << "    " << event.name << ": " << event.description << "\n";
      for (const auto& field : event.fields)
        std::cout << "      " << field.name << " " << field_type_name(field.type)
                  << (field.unit.empty() ? "" : " [" + field.unit + "]") << " - "
                  << field.description << "\n";
    }
    std::cout << "  metrics:\n";
    for (const auto& metric : runtime->exported_metrics()) print_metric_family(metric);
    std::cout << "  config [plugins." << c->name << "]:\n";
    print_config_keys(d.config);
    if (!d.flags.empty()) {
      std::cout << "  flags:";
      for (const auto& f : d.flags)
        std::cout << " " << (f.short_name ? std::string("-") + f.short_name + "/" : "") << "--"
                  << f.long_name;
      std::cout << "\n";
    }
    std::cout << "\n";
  }
  for (const auto& [c, description] : sinks) {
    std::cout << "sink " << c->name << " " << c->version << "  (sink, ABI " << c->abi_major << "."
              << c->abi_minor << ", " << c->path << ")\n  " << c->description << "\n  built by "
              << c->compiler << " for " << c->stdlib << "\n  config [[sinks]] type = \"" << c->name
              << "\":\n";
    print_config_keys(description.config);
    std::cout << "\n";
  }
  for (const auto& refused : discovery.refused)
    std::cout << "refused " << refused.path << ": " << refused.reason << "\n";
}

void print_features(const KernelFeatures& features) {
  std::size_t width = 16;
  auto line = [&width](const std::string& what, const FeatureResult& r) {
    std::cout << "  " << what << std::string(what.size() + 2 < width ? width - what.size() : 2, ' ')
              << (r.available ? "yes  " : "no   ") << r.detail << "\n";
  };
  std::cout << "kernel " << features.kernel_release() << "\n";
  line("BTF", features.btf());
  line("ring buffer", features.ring_buffer());
  line("tracefs", features.tracefs());
  line("cgroup2", features.cgroup2());
  for (const auto& [name, result] : features.hook_types()) line(name, result);
  // Kernels refuse some iterator targets and take others: one line each, in
  // a column of their own (target names are long).
  for (const auto& [target, result] : features.iter_targets())
    width = std::max(width, std::string("iter/").size() + target.size() + 2);
  if (features.iter_targets().empty())
    line("iter", {false, features.btf().available ? "no BPF iterator targets in kernel BTF"
                                                  : "needs kernel BTF"});
  for (const auto& [target, result] : features.iter_targets()) line("iter/" + target, result);
}

// What netwatcher needs from the host to run (as a service, or in a
// container: deploy/kubernetes/ is checked against this list). Capabilities
// are those needed while attaching; keep_capabilities says which stay after.
void print_requirements(const KernelFeatures& features) {
  struct Requirement {
    std::string kind, what, why;
  };
  auto found_or = [](const std::string& path, const std::string& fallback) {
    return path.empty() ? fallback : path;
  };
  const std::vector<Requirement> requirements = {
      {"capability", "CAP_BPF", "load BPF programs and maps"},
      {"capability", "CAP_PERFMON", "attach tracing programs, read kernel addresses"},
      {"capability", "CAP_NET_ADMIN", "attach cgroup_skb, netfilter and tc programs"},
      {"capability", "CAP_SYS_ADMIN", "iterators, other network namespaces, BPF link info"},
      {"capability", "CAP_SYS_RESOURCE", "lift RLIMIT_MEMLOCK (kernels before 5.11)"},
      {"capability", "CAP_SYS_PTRACE", "other processes' namespaces and open files (owners)"},
      {"path", "/sys/kernel/btf/vmlinux", "kernel BTF (CO-RE, feature probes)"},
      {"path", found_or(features.tracefs_path(), "/sys/kernel/tracing"),
       "tracefs (tracepoint ids)"},
      {"path", found_or(features.cgroup2_path(), "/sys/fs/cgroup"),
       "cgroup v2 root (cgroup_skb programs)"},
      {"path", "/run/netns", "named network namespaces"},
      {"path", "/run/containerd", "containerd's task state: pod and container names"},
      {"path", "/run/containers", "cri-o's and podman's container state: the same"},
      {"namespace", "pid (the host's)", "/proc of the host: owners, their namespaces"},
      {"namespace", "net (the host's)", "the host's sockets first (sock_diag), its interfaces"},
  };
  std::cout << "requires (to run on this host, or in a container on it)\n";
  for (const auto& r : requirements)
    std::cout << "  " << r.kind << std::string(r.kind.size() < 14 ? 14 - r.kind.size() : 1, ' ')
              << r.what << std::string(r.what.size() < 26 ? 26 - r.what.size() : 1, ' ') << r.why
              << "\n";
}

void print_hook_reports(const ProbeRuntime& runtime, const std::vector<LiveProgram>& live) {
  const auto stats = runtime.program_stats();
  for (const auto& hook : runtime.hook_reports()) {
    bool off = hook.off_by_config && !hook.candidates.empty();
    std::cout << "    hook " << hook.hook << (hook.required ? "" : " (optional)") << ": "
              << (off                             ? "off, " + hook.candidates.front().status
                  : hook.attached_program.empty() ? "NOT ATTACHED"
                                                  : "ok via " + hook.attached_program)
              << "\n";
    if (off) continue;
    for (const auto& candidate : hook.candidates) {
      std::cout << "      " << candidate.program
                << (candidate.section.empty() ? "" : " [" + candidate.section + "]") << ": "
                << candidate.status << "\n";
      // The same code (same tag) in every running netwatcher: with two agents
      // on a host (one per container, or one stopping), each gets its line.
      for (const auto& mine : stats)
        if (mine.program == candidate.program)
          for (const auto& running : live)
            if (running.name == mine.program && running.tag == mine.tag)
              std::cout << "        " << describe_live(running) << "\n";
    }
  }
}

class OwnMetrics {
 public:
  explicit OwnMetrics(MetricStore& store) {
    events_ = store.declare({"netwatcher_events_total",
                             MetricType::counter,
                             "Events produced by plugins, after filtering.",
                             {"plugin", "event"}});
    lost_ = store.declare({"netwatcher_events_lost_total",
                           MetricType::counter,
                           "Records the kernel could not put in a plugin's ring buffer.",
                           {"plugin"}});
    suppressed_ =
        store.declare({"netwatcher_events_suppressed_total",
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
    build_->set({NETWATCHER_VERSION, std::to_string(kAbiMajor) + "." + std::to_string(kAbiMinor)},
                1);
  }

  void set_plugin_state(const std::string& plugin, bool up, const std::vector<HookReport>& hooks) {
    up_->set({plugin}, up ? 1 : 0);
    for (const auto& hook : hooks)
      attached_->set(
          {plugin, hook.hook, hook.attached_program.empty() ? "none" : hook.attached_program},
          hook.attached_program.empty() ? 0 : 1);
  }

  // The anomaly detector's series are a bounded table of the host's own,
  // reported like a plugin's under plugin="anomaly".
  void watch_anomaly(const AnomalyDetector* detector) {
    detector_ = detector;
    if (detector_)
      anomaly_series_ = anomaly_tables_.track(
          {"series", "", 0, detector_->settings().max_series, "anomaly.max_series"});
  }

  // Brings the host's own tables up to date and warns once on the first
  // eviction. Poller thread (the detector is not thread-safe).
  void update_tables() {
    if (!detector_ || !anomaly_series_) return;
    anomaly_series_->set_entries(detector_->series());
    anomaly_series_->count_evicted(detector_->evicted() - anomaly_evictions_reported_);
    anomaly_evictions_reported_ = detector_->evicted();
    anomaly_tables_.update(/*count_entries=*/false);
  }

  std::vector<TableUsage> anomaly_usage() const { return anomaly_tables_.usage(); }

  void refresh(const std::vector<ProbeRuntime*>& running, const Bus& bus) {
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

  // Decode rates over the time since the last call (the main loop calls it
  // every snapshot_interval).
  void update_rates(const std::vector<ProbeRuntime*>& running, double elapsed_s) {
    for (const ProbeRuntime* runtime : running) {
      const std::uint64_t now = runtime->records();
      std::uint64_t& before = last_records_[runtime->name()];
      record_rate_->set({runtime->name()},
                        elapsed_s > 0 ? static_cast<double>(now - before) / elapsed_s : 0);
      before = now;
    }
  }

 private:
  void set_table(const std::string& owner, const TableUsage& table) {
    const LabelValues labels{owner, table.table};
    table_entries_->set(labels, static_cast<double>(table.entries));
    table_capacity_->set(labels, static_cast<double>(table.capacity));
    table_full_->set(labels, static_cast<double>(table.refused));
    table_evictions_->set(labels, static_cast<double>(table.evicted));
  }

  void refresh_process() {
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

int run(int argc, char** argv) {
  // Phase 1: the options that decide where plugins and config come from.
  po::options_description core = core_options();
  po::variables_map early;
  try {
    po::store(po::command_line_parser(argc, argv).options(core).allow_unregistered().run(), early);
  } catch (const po::error& e) {
    std::cerr << "netwatcher: " << e.what() << "\n";
    return 2;
  }
  Options options;
  options.verbose = early.count("verbose");
  if (early.count("version")) {
    std::cout << "netwatcher " << NETWATCHER_VERSION << " (plugin ABI " << kAbiMajor << "."
              << kAbiMinor << ", " << kCompilerId << ")\n";
    return 0;
  }
  spdlog::set_default_logger(spdlog::stderr_color_mt("netwatcher"));
  spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ %v");
  route_libbpf_log();

  Config config;
  try {
    if (early.count("config")) {
      options.config_path = early["config"].as<std::string>();
      options.config_given = true;
    }
    if (!options.config_given) options.config_path = default_config_path();
    if (options.config_path.empty()) {
      config = default_config();
    } else {
      if (!std::filesystem::exists(options.config_path))
        throw ConfigError(options.config_path + ": no such file");
      config = load_config(options.config_path);
    }
  } catch (const ConfigError& e) {
    spdlog::critical("config error: {}", e.what());
    return 2;
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

  if (early.count("plugin-dir"))
    options.plugin_dirs = early["plugin-dir"].as<std::vector<std::string>>();
  for (const auto& dir : config.settings.plugin_dirs) options.plugin_dirs.push_back(dir);
  if (options.plugin_dirs.empty()) options.plugin_dirs = default_plugin_dirs();
  if (options.plugin_dirs.empty()) {
    spdlog::critical("no plugin directory: pass --plugin-dir or set [netwatcher] plugin_dirs");
    return 2;
  }
  Discovery discovery = discover(options.plugin_dirs);

  MetricStore store;
  OwnMetrics own(store);
  // Every discovered probe is described (for flags, --list-plugins, validation).
  std::vector<std::unique_ptr<ProbeRuntime>> runtimes;
  for (const auto& component : discovery.probes) {
    std::string error;
    auto plugin = create_probe(component, error);
    if (!plugin) {
      spdlog::error("{}", error);
      discovery.refused.push_back({component.path, component.name, error});
      continue;
    }
    auto runtime = std::make_unique<ProbeRuntime>(component, std::move(plugin), store,
                                                  config.settings.workloads);
    if (const Status& described = runtime->described(); !described) {
      spdlog::error("{}", described.message());
      discovery.refused.push_back({component.path, component.name, described.message()});
      continue;
    }
    runtimes.push_back(std::move(runtime));
  }

  // Phase 2: the full command line, now that plugins contributed their flags.
  std::vector<PluginFlag> flags = plugin_flags(runtimes);
  po::options_description all = core_options();
  std::map<std::string, std::string> plugin_descriptions;
  for (const auto& runtime : runtimes)
    if (const Component* component = discovery.probe(runtime->name()))
      plugin_descriptions[runtime->name()] = component->description;
  add_plugin_flags(all, flags, plugin_descriptions);
  po::variables_map vm;
  try {
    po::store(po::parse_command_line(argc, argv, all), vm);
    po::notify(vm);
  } catch (const po::error& e) {
    std::cerr << "netwatcher: " << e.what() << "\n" << all << "\n";
    return 2;
  }
  if (vm.count("help")) {
    std::cout << "Usage: netwatcher [options]\n\n" << all << "\n";
    return 0;
  }
  options.list_plugins = vm.count("list-plugins");
  options.check = vm.count("check");
  if (vm.count("duration")) options.duration_s = vm["duration"].as<double>();

  std::map<std::string, std::map<std::string, ConfigValue>> overrides;
  try {
    if (vm.count("pid")) config.filter.pid = vm["pid"].as<std::uint32_t>();
    if (vm.count("sport"))
      config.filter.sports = parse_port_list(vm["sport"].as<std::string>(), "-s/--sport");
    if (vm.count("dport"))
      config.filter.dports = parse_port_list(vm["dport"].as<std::string>(), "-d/--dport");
    if (vm.count("laddr"))
      config.filter.local_nets = parse_net_list(vm["laddr"].as<std::string>(), "--laddr");
    if (vm.count("raddr"))
      config.filter.remote_nets = parse_net_list(vm["raddr"].as<std::string>(), "--raddr");
    if (vm.count("ipv4") && vm.count("ipv6")) throw ConfigError("-4 and -6 exclude each other");
    if (vm.count("ipv4")) config.filter.family = 4;
    if (vm.count("ipv6")) config.filter.family = 6;
    if (vm.count("timeload")) config.settings.anomaly.enabled = true;
    for (const auto& f : flags) {
      if (!vm.count(f.flag.long_name)) continue;
      ConfigValue value = f.flag.value_name.empty()
                              ? ConfigValue(true)
                              : parse_cli_value(f.key, vm[f.flag.long_name].as<std::string>(),
                                                "--" + f.flag.long_name);
      if (f.flag.value_name.empty() && f.key.type != ConfigType::boolean)
        throw ConfigError("--" + f.flag.long_name +
                          ": plugin declared a switch for a non-boolean key");
      if (f.flag.key != "enabled") overrides[f.plugin][f.flag.key] = value;
      config.plugins[f.plugin].enabled = true;
    }
  } catch (const ConfigError& e) {
    spdlog::critical("{}", e.what());
    return 2;
  }

  // Validate the config against what was discovered.
  std::vector<ProbeRuntime*> enabled;
  std::vector<std::string> configured_but_refused;
  std::map<std::string, ConfigValues> plugin_values;
  try {
    for (const auto& [name, section] : config.plugins) {
      // A structured binding is not captured by clang 14 (C++20 allows it).
      bool known = std::any_of(runtimes.begin(), runtimes.end(),
                               [&plugin = name](const auto& r) { return r->name() == plugin; });
      if (known) continue;
      if (const RefusedFile* refused = discovery.refused_named(name)) {
        if (section.enabled) {
          spdlog::error("plugin '{}' is enabled but was refused: {}: {}", name, refused->path,
                        refused->reason);
          configured_but_refused.push_back(name);
        }
        continue;
      }
      const toml::node* where = section.table;
      std::string known_names;
      for (const auto& r : runtimes) known_names += (known_names.empty() ? "" : ", ") + r->name();
      throw ConfigError(config.where(where) + ": unknown plugin '" + name +
                        "' (found: " + (known_names.empty() ? "none" : known_names) + " in " +
                        options.plugin_dirs.front() +
                        (options.plugin_dirs.size() > 1 ? ", ..." : "") + ")");
    }
    for (const auto& runtime : runtimes) {
      auto it = config.plugins.find(runtime->name());
      bool on = config.from_file ? (it != config.plugins.end() && it->second.enabled) : true;
      const toml::table* table = it != config.plugins.end() ? it->second.table : nullptr;
      ConfigValues values = validate_keys(config, "plugins." + runtime->name(), table,
                                          runtime->description().config, {"enabled"});
      for (const auto& [key, value] : overrides[runtime->name()]) values.set(key, value);
      plugin_values[runtime->name()] = values;
      if (on) enabled.push_back(runtime.get());
    }
    for (const auto& [key, program] : config.settings.hook_overrides) {
      std::string plugin = key.substr(0, key.find('.'));
      if (key != "*" && std::none_of(runtimes.begin(), runtimes.end(),
                                     [&](const auto& r) { return r->name() == plugin; }))
        throw ConfigError(config.path + ": key 'netwatcher.hook_override.\"" + key +
                          "\"': unknown plugin '" + plugin + "'");
    }
  } catch (const ConfigError& e) {
    spdlog::critical("config error: {}", e.what());
    return 2;
  }

  // The shared L7 capture runs when, and only when, a protocol plugin needs
  // it, and starts after all of them (it reads what they serve).
  ProtocolRegistry protocols;
  for (const auto& runtime : runtimes) runtime->set_protocol_registry(&protocols);
  {
    auto capture = std::find_if(runtimes.begin(), runtimes.end(),
                                [](const auto& r) { return r->name() == kL7CapturePlugin; });
    std::erase_if(enabled, [](ProbeRuntime* r) { return r->name() == kL7CapturePlugin; });
    std::string needing;
    for (ProbeRuntime* runtime : enabled)
      if (runtime->uses_l7_capture()) needing += (needing.empty() ? "" : ", ") + runtime->name();
    if (!needing.empty()) {
      if (capture != runtimes.end())
        enabled.push_back(capture->get());
      else
        spdlog::error("{} need(s) the shared L7 capture, plugin '{}', which was not found in {}",
                      needing, kL7CapturePlugin, options.plugin_dirs.front());
    }
  }

  if (enabled.empty() && !options.list_plugins) {
    spdlog::critical("no plugin is enabled in {}: add a [plugins.<name>] section (found: {})",
                     config.path, [&] {
                       std::string names;
                       for (const auto& r : runtimes)
                         names += (names.empty() ? "" : ", ") + r->name();
                       return names.empty() ? std::string("none") : names;
                     }());
    return 2;
  }

  // Before any sink sees a schema: the resolver adds the cgroup, container
  // and pod fields, then the detector adds the `anomaly` field.
  std::unique_ptr<WorkloadResolver> workloads;
  if (config.settings.workloads.enabled) {
    workloads = std::make_unique<WorkloadResolver>(config.settings.workloads);
    if (workloads->cgroup_root().empty())
      spdlog::warn(
          "no cgroup2 mount in /proc/self/mountinfo: events carry cgroup_id but no "
          "cgroup path, container or pod (set [containers] cgroup_root)");
    for (ProbeRuntime* runtime : enabled) runtime->use_workload_resolver(workloads.get());
  }
  std::unique_ptr<AnomalyDetector> detector;
  if (config.settings.anomaly.enabled) {
    detector = std::make_unique<AnomalyDetector>(config.settings.anomaly);
    MetricFamily* anomalies =
        store.declare({"netwatcher_latency_anomalies_total",
                       MetricType::counter,
                       "Latency samples over the anomaly threshold ([anomaly], -L).",
                       {"plugin", "field"}});
    for (ProbeRuntime* runtime : enabled) runtime->use_anomaly_detector(detector.get(), anomalies);
    own.watch_anomaly(detector.get());
  }

  std::vector<std::pair<const Component*, SinkDescription>> sink_types;
  for (const auto& component : discovery.sinks) {
    std::string error;
    auto sink = create_sink(component, error);
    if (!sink) {
      spdlog::error("{}", error);
      continue;
    }
    SinkDescription description;
    if (Status s = sink->describe(description); !s) {
      spdlog::error("sink '{}': describe() failed: {}", component.name, s.message());
      continue;
    }
    sink_types.emplace_back(&component, std::move(description));
  }

  struct SinkPlan {
    const Component* component;
    SinkContext context;
    std::optional<std::set<std::string>> routed;
  };
  std::vector<SinkPlan> sink_plans;
  try {
    for (const auto& section : config.sinks) {
      auto type = std::find_if(sink_types.begin(), sink_types.end(),
                               [&](const auto& t) { return t.first->name == section.type; });
      if (type == sink_types.end()) {
        std::string known;
        for (const auto& t : sink_types) known += (known.empty() ? "" : ", ") + t.first->name;
        throw ConfigError(config.where(section.table ? section.table->get("type") : nullptr) +
                          ": unknown sink type '" + section.type +
                          "' (found: " + (known.empty() ? "none" : known) + ")");
      }
      SinkPlan plan{type->first, {}, std::nullopt};
      plan.context.instance = section.instance;
      plan.context.config = validate_keys(config, section.table_path, section.table,
                                          type->second.config, {"type", "name", "plugins"});
      if (section.plugins) {
        plan.routed.emplace();
        for (const auto& name : *section.plugins) {
          bool known = std::any_of(runtimes.begin(), runtimes.end(),
                                   [&](const auto& r) { return r->name() == name; });
          if (!known)
            throw ConfigError(config.where(section.table->get("plugins")) + ": key '" +
                              section.table_path + ".plugins' names unknown plugin '" + name + "'");
          plan.routed->insert(name);
        }
      }
      for (ProbeRuntime* runtime : enabled)
        if (!plan.routed || plan.routed->count(runtime->name()))
          for (const auto& schema : runtime->schemas())
            plan.context.schemas.push_back(schema.get());
      sink_plans.push_back(std::move(plan));
    }
  } catch (const ConfigError& e) {
    spdlog::critical("config error: {}", e.what());
    return 2;
  }

  if (options.list_plugins) {
    list_components(discovery, runtimes, sink_types, store);
    return 0;
  }

  struct rlimit unlimited = {RLIM_INFINITY, RLIM_INFINITY};
  setrlimit(RLIMIT_MEMLOCK, &unlimited);  // kernels before 5.11 charge BPF maps to memlock
  KernelFeatures features = KernelFeatures::probe();

  if (options.check) {
    features.probe_all_iter_targets();
    print_features(features);
    const std::vector<LiveProgram> live = live_netwatcher_programs();
    bool all_ok = configured_but_refused.empty();
    for (const auto& name : configured_but_refused)
      std::cout << "plugin " << name << ": CANNOT RUN (refused by the loader)\n";
    // All stay up until the end: the L7 capture, checked last, needs the
    // protocol plugins running.
    for (ProbeRuntime* runtime : enabled) {
      Status s = runtime->configure(plugin_values[runtime->name()], config.filter);
      runtime->set_hook_overrides(config.settings.hook_overrides);
      if (s)
        s = runtime->bring_up(features, config.settings.ring_buffer_bytes,
                              config.settings.wakeup_bytes);
      std::cout << "plugin " << runtime->name() << ": " << (s ? "ok" : "CANNOT RUN: " + s.message())
                << "\n";
      print_hook_reports(*runtime, live);
      all_ok = all_ok && s.ok();
    }
    for (auto it = enabled.rbegin(); it != enabled.rend(); ++it) (*it)->shut_down();
    print_requirements(features);
    return all_ok ? 0 : 1;
  }

  if (geteuid() != 0)
    spdlog::warn(
        "not running as root: loading BPF programs needs CAP_BPF, CAP_PERFMON and "
        "CAP_NET_ADMIN");

  // Sink threads read metrics only through the refresher: the running
  // plugins, their maps and the bus belong to this (the poller) thread, which
  // refreshes the store when asked. Declared before the bus so that it
  // outlives every sink.
  MetricsRefresher refresher([&store] { return store.snapshot(); }, std::chrono::milliseconds(500),
                             std::chrono::seconds(1));
  // Every plugin that should run reads 0 until it is attached: a readiness
  // probe (the prometheus sink's /readyz) answers from these before and after.
  for (ProbeRuntime* runtime : enabled) own.set_plugin_state(runtime->name(), false, {});
  // Sinks first, so a broken sink stops start-up before anything is attached.
  Bus bus(config.filter);
  std::vector<ProbeRuntime*> running;
  auto metrics_source = [&refresher]() { return refresher.metrics(); };
  try {
    for (auto& plan : sink_plans) {
      plan.context.metrics = metrics_source;
      std::string error;
      auto sink = create_sink(*plan.component, error);
      if (!sink) throw ConfigError(error);
      auto worker = std::make_unique<SinkWorker>(plan.context.instance, std::move(sink),
                                                 plan.routed, config.settings.sink_queue_capacity,
                                                 plan.component->abi_minor);
      if (Status s = bus.add(std::move(worker), plan.context); !s) throw ConfigError(s.message());
    }
  } catch (const ConfigError& e) {
    spdlog::critical("{}", e.what());
    bus.stop();
    return 2;
  }

  install_signal_handlers();
  // The kernel keeps run-time statistics while any BPF_ENABLE_STATS fd is
  // open (or the kernel.bpf_stats_enabled sysctl is 1); the main loop opens
  // and closes ours as the sampler says.
  struct StatsHandle {
    int fd = -1;
    bool warned = false;
    void set(bool on) {
      if (on && fd < 0) {
        fd = bpf_enable_stats(BPF_STATS_RUN_TIME);
        if (fd < 0 && !warned) {
          warned = true;
          spdlog::warn(
              "cannot enable BPF run-time statistics ([netwatcher] bpf_stats): {}; "
              "netwatcher_bpf_program_* stay at 0",
              std::strerror(errno));
        }
      } else if (!on && fd >= 0) {
        close(fd);
        fd = -1;
      }
    }
    ~StatsHandle() { set(false); }
  } bpf_stats;
  const StatsSampler stats_sampler(config.settings.bpf_stats, std::chrono::steady_clock::now());
  bpf_stats.set(stats_sampler.wanted(std::chrono::steady_clock::now()));
  auto started_at = std::chrono::steady_clock::now();
  ring_buffer* poller = nullptr;
  for (ProbeRuntime* runtime : enabled) {
    Status s = runtime->configure(plugin_values[runtime->name()], config.filter);
    runtime->set_hook_overrides(config.settings.hook_overrides);
    runtime->set_bus(bus);
    if (s)
      s = runtime->bring_up(features, config.settings.ring_buffer_bytes,
                            config.settings.wakeup_bytes);
    if (s) s = runtime->add_to_poller(&poller, bus);
    own.set_plugin_state(runtime->name(), s.ok(), runtime->hook_reports());
    if (!s) {
      spdlog::error("plugin '{}' disabled: {}", runtime->name(), s.message());
      runtime->shut_down();
      continue;
    }
    running.push_back(runtime);
  }
  // Protocol plugins see nothing without the shared capture: say so, and
  // do not report them as running.
  const bool capture_running = std::any_of(running.begin(), running.end(), [](ProbeRuntime* r) {
    return r->name() == kL7CapturePlugin;
  });
  if (!capture_running)
    std::erase_if(running, [&](ProbeRuntime* runtime) {
      if (!runtime->uses_l7_capture()) return false;
      spdlog::error("plugin '{}' disabled: the shared L7 capture (plugin '{}') is not running",
                    runtime->name(), kL7CapturePlugin);
      own.set_plugin_state(runtime->name(), false, runtime->hook_reports());
      runtime->shut_down();
      return true;
    });
  for (const auto& name : configured_but_refused) own.set_plugin_state(name, false, {});
  if (running.empty() && !enabled.empty()) {
    spdlog::critical("no plugin could start; see the errors above and `netwatcher --check`");
    bus.stop();
    return 1;
  }
  // Everything is attached and every netfilter link made (plugins' start()):
  // from here on only what keep_capabilities names is needed.
  CapabilityDrop dropped;
  if (Status s = drop_capabilities(config.settings.keep_capabilities, dropped); !s) {
    spdlog::critical("{}; stopping ([netwatcher] keep_capabilities)", s.message());
    bus.stop();
    for (ProbeRuntime* runtime : running) runtime->shut_down();
    return 1;
  }
  for (const auto& warning : dropped.warnings)
    spdlog::warn("capabilities ([netwatcher] keep_capabilities): {}", warning);
  spdlog::info("capabilities kept: {} (every other one dropped in every thread); no_new_privs set",
               capability_names(dropped.kept));

  // Poller thread only (see MetricsRefresher).
  auto refresh_metrics = [&running, &own, &bus] {
    for (ProbeRuntime* runtime : running) runtime->refresh_metrics();
    own.refresh(running, bus);
  };
  // The first scrape after start-up sees every family with its current series.
  refresh_metrics();
  refresher.serve(refresh_metrics);
  spdlog::info("netwatcher {} running: {} plugin(s), {} sink(s), attached in {} ms",
               NETWATCHER_VERSION, running.size(), bus.workers().size(),
               std::chrono::duration_cast<std::chrono::milliseconds>(
                   std::chrono::steady_clock::now() - started_at)
                   .count());

  using clock = std::chrono::steady_clock;
  const auto interval = std::chrono::duration_cast<clock::duration>(
      std::chrono::duration<double>(config.settings.snapshot_interval_s));
  const auto deadline = options.duration_s > 0
                            ? clock::now() + std::chrono::duration_cast<clock::duration>(
                                                 std::chrono::duration<double>(options.duration_s))
                            : clock::time_point::max();
  // Records wake the poller only once wakeup_bytes wait (common.bpf.h); the
  // rest are read on the poll_interval tick, so a burst costs a few wakeups
  // and a few reads, not one of each per record.
  const int poll_ms = std::max(1, static_cast<int>(config.settings.poll_interval_s * 1000));
  // The ring buffers' epoll set, and the refresher's wakeup: a scrape does
  // not wait for the next tick.
  struct EpollSet {
    int fd = epoll_create1(EPOLL_CLOEXEC);
    ~EpollSet() {
      if (fd >= 0) close(fd);
    }
    void add(int watched) const {
      epoll_event event{};
      event.events = EPOLLIN;
      event.data.fd = watched;
      if (fd >= 0 && watched >= 0 && epoll_ctl(fd, EPOLL_CTL_ADD, watched, &event) != 0)
        spdlog::warn("epoll_ctl: {}", std::strerror(errno));
    }
  } epoll_set;
  if (epoll_set.fd < 0) {
    spdlog::critical("epoll_create1: {}", std::strerror(errno));
    refresher.stop_serving();
    bus.stop();
    for (ProbeRuntime* runtime : running) runtime->shut_down();
    return 1;
  }
  if (poller) epoll_set.add(ring_buffer__epoll_fd(poller));
  epoll_set.add(refresher.wake_fd());
  // A sink more than half full holds the poller back for up to a poll
  // interval at a time; meanwhile records wait in the ring buffers.
  const auto backpressure =
      std::chrono::duration_cast<clock::duration>(std::chrono::milliseconds(poll_ms));
  auto next_collect = clock::now() + interval;
  auto last_rates = clock::now();
  while (!stop_requested.load() && clock::now() < deadline) {
    if (reopen_requested.exchange(false)) {
      spdlog::info("SIGHUP: reopening the sinks' files");
      bus.reopen_sinks();
    }
    epoll_event ready[4];
    int n = epoll_wait(epoll_set.fd, ready, 4, poller ? poll_ms : 100);
    if (n < 0 && errno != EINTR) {
      spdlog::error("ring buffer poll failed: {}", std::strerror(errno));
      break;
    }
    // Before reading: the fill gauges show what waited when scraped.
    if (refresher.pending()) refresher.run_pending();
    if (poller) {
      // Backpressure moves a burst from a sink queue into the ring buffers;
      // once a ring is a quarter full, there is no room left to move it to.
      double fullest = 0;
      for (ProbeRuntime* runtime : running) fullest = std::max(fullest, runtime->note_ring_fill());
      bus.set_backpressure_timeout(fullest < 0.25 ? backpressure : clock::duration::zero());
      int consumed = ring_buffer__consume(poller);
      if (consumed < 0) {
        spdlog::error("ring buffer read failed: {}", std::strerror(-consumed));
        break;
      }
      bus.flush();
    }
    bpf_stats.set(stats_sampler.wanted(clock::now()));
    if (clock::now() >= next_collect) {
      for (ProbeRuntime* runtime : running) runtime->collect(bus);
      own.update_tables();
      bus.flush();
      const auto now = clock::now();
      own.update_rates(running, std::chrono::duration<double>(now - last_rates).count());
      last_rates = now;
      next_collect += interval;
      if (next_collect < clock::now()) next_collect = clock::now() + interval;
    }
  }

  spdlog::info("shutting down");
  // Scrapes from now on get the store as it is, without waiting.
  refresher.stop_serving();
  for (ProbeRuntime* runtime : running) runtime->detach();
  if (poller) {
    ring_buffer__consume(poller);  // records produced before detach still count
    bus.flush();
    ring_buffer__free(poller);
  }
  // Final values for the sinks' last output (e.g. the textfile at close).
  refresh_metrics();
  bus.stop();
  // What an operator (and bench/) needs to know whether anything was lost.
  for (ProbeRuntime* runtime : running) {
    std::uint64_t events = 0;
    for (std::size_t i = 0; i < runtime->schemas().size(); ++i) events += runtime->events(i);
    spdlog::info(
        "plugin '{}': {} events, {} lost in the kernel, {} suppressed, {} decode errors, {} "
        "filtered, ring buffer at most {:.0f}% full",
        runtime->name(), events, runtime->lost_events(), runtime->suppressed_events(),
        runtime->decode_errors(), runtime->filtered(), runtime->ring_fill_peak() * 100);
    for (const auto& program : runtime->program_stats())
      if (program.missed_runs)
        spdlog::warn(
            "plugin '{}': the kernel skipped {} runs of {} (it was already running on that CPU, "
            "interrupted, or for a classic tracepoint another BPF program was): what they would "
            "have recorded is missing",
            runtime->name(), program.missed_runs, program.program);
    for (const auto& table : runtime->table_usage())
      if (table.refused || table.evicted)
        spdlog::warn("plugin '{}': table '{}' ({} entries) refused {} and evicted {}; raise {}",
                     runtime->name(), table.table, table.capacity, table.refused, table.evicted,
                     table.raise_key);
  }
  for (const auto& table : own.anomaly_usage())
    if (table.evicted)
      spdlog::warn("anomaly detector: {} series ({} entries) evicted {}; raise {}", table.table,
                   table.capacity, table.evicted, table.raise_key);
  for (const auto& worker : bus.workers())
    spdlog::info(
        "sink '{}': {} written, {} dropped on a full queue, {} lost to write errors, {} "
        "errors",
        worker->instance(), worker->written(), worker->dropped(), worker->write_failures(),
        worker->errors());
  // The L7 capture (started last) stops before the protocol plugins it calls.
  for (auto it = running.rbegin(); it != running.rend(); ++it) (*it)->shut_down();
  return 0;
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
