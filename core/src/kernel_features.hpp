// What the running kernel can load and attach, probed at start-up (program
// types) and on demand (BPF iterator targets).
#pragma once

#include <functional>
#include <map>
#include <optional>
#include <string>

struct bpf_program;
struct btf;

namespace netwatcher::host {

struct FeatureResult {
  bool available = false;
  std::string detail;  // where found, or why not
};

// One minimal program (`r0 = ret; exit`) of a type, loaded to see whether the
// kernel takes it. `name` says what it probes, e.g. "tp_btf" or "iter/tcp".
struct ProgramLoad {
  std::string name;
  int prog_type = 0;
  int expected_attach_type = 0;
  int attach_btf_id = 0;  // in vmlinux BTF; 0 for types that attach to none
  int ret = 0;
};
using ProgramLoader = std::function<FeatureResult(const ProgramLoad&)>;

class KernelFeatures {
 public:
  struct Options {
    // Mount tracefs and cgroup2 when they are missing (classic tracepoints
    // and cgroup programs need them); false: use only existing mounts.
    bool mount_missing = true;
    // Loads each probe program; empty: load_program(). Tests replace it to
    // play a kernel that refuses some programs.
    ProgramLoader loader;
  };
  // Probes every program type by loading a minimal program of that type.
  static KernelFeatures probe(Options options);
  static KernelFeatures probe() { return probe(Options{}); }
  KernelFeatures(KernelFeatures&&) noexcept;
  KernelFeatures& operator=(KernelFeatures&&) noexcept;
  ~KernelFeatures();

  // The real loader: bpf_prog_load() of `r0 = ret; exit`, unloaded at once.
  static FeatureResult load_program(const ProgramLoad& load);

  const std::string& kernel_release() const { return kernel_release_; }
  const FeatureResult& btf() const { return btf_; }
  const FeatureResult& ring_buffer() const { return ring_buffer_; }
  const FeatureResult& tracefs() const { return tracefs_; }
  // Where tracefs is mounted; empty when it is not.
  const std::string& tracefs_path() const { return tracefs_path_; }
  // The root of the cgroup v2 hierarchy, where cgroup_skb programs are
  // attached so that they see every socket; empty when there is none.
  const FeatureResult& cgroup2() const { return cgroup2_; }
  const std::string& cgroup2_path() const { return cgroup2_path_; }
  // Program/attach types by short name: tracepoint, raw_tp, tp_btf, kprobe,
  // uprobe, fentry, netfilter, tc, xdp, cgroup_skb, sockops, socket_filter.
  // Iterators are probed per target instead (iter_target()).
  const std::map<std::string, FeatureResult>& hook_types() const { return hook_types_; }

  // Whether an `iter/<target>` program loads: each target is probed on its
  // own the first time it is asked for (kernels refuse some targets and take
  // others), then remembered. Not thread-safe; the host asks from one thread.
  const FeatureResult& iter_target(const std::string& target) const;
  // Probes every iterator target of the kernel's BTF (for --check).
  void probe_all_iter_targets();
  // The targets probed so far, by name ("tcp", "bpf_map_elem", ...).
  const std::map<std::string, FeatureResult>& iter_targets() const { return iter_targets_; }

  // nullopt if `program` can be attached on this kernel as far as can be told
  // without loading it (its program type, and for iterators its target, were
  // probed); otherwise the reason (e.g. "tracepoint sock/foo does not exist",
  // "iter/bpf_map_elem: program load refused: Operation not permitted").
  std::optional<std::string> program_unavailable(const bpf_program* program) const;

 private:
  KernelFeatures() = default;
  std::optional<std::string> type_unavailable(const std::string& type) const;
  bool btf_has(const std::string& name, int kind) const;
  FeatureResult load(const ProgramLoad& load) const;

  std::string kernel_release_;
  FeatureResult btf_, ring_buffer_, tracefs_, cgroup2_;
  std::string tracefs_path_, cgroup2_path_;
  std::map<std::string, FeatureResult> hook_types_;
  mutable std::map<std::string, FeatureResult> iter_targets_;
  ProgramLoader loader_;
  struct btf* vmlinux_btf_ = nullptr;
};

}  // namespace netwatcher::host
