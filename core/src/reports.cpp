#include "reports.hpp"

#include <unistd.h>

#include <algorithm>
#include <iostream>
#include <set>

#include "config.hpp"
#include "netwatcher/format.hpp"

namespace netwatcher::host {

namespace {

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

}  // namespace

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

}  // namespace netwatcher::host
