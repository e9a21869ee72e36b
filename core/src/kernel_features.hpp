// What the running kernel can load and attach, probed once at start-up.
#pragma once

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

class KernelFeatures {
 public:
  // Mounts tracefs and cgroup2 when they are missing (classic tracepoints and
  // cgroup programs need them), then probes.
  static KernelFeatures probe();
  KernelFeatures(KernelFeatures&&) noexcept;
  KernelFeatures& operator=(KernelFeatures&&) noexcept;
  ~KernelFeatures();

  const std::string& kernel_release() const { return kernel_release_; }
  const FeatureResult& btf() const { return btf_; }
  const FeatureResult& ring_buffer() const { return ring_buffer_; }
  const FeatureResult& tracefs() const { return tracefs_; }
  // The root of the cgroup v2 hierarchy, where cgroup_skb programs are
  // attached so that they see every socket; empty when there is none.
  const FeatureResult& cgroup2() const { return cgroup2_; }
  const std::string& cgroup2_path() const { return cgroup2_path_; }
  // Program/attach types by short name: tracepoint, raw_tp, tp_btf, iter,
  // kprobe, fentry, netfilter, tc, xdp, cgroup_skb, sockops, socket_filter.
  const std::map<std::string, FeatureResult>& hook_types() const { return hook_types_; }

  // nullopt if `program` can be attached on this kernel as far as can be told
  // without loading it; otherwise the reason (e.g. "tracepoint sock/foo does
  // not exist", "kprobes are not supported by this kernel").
  std::optional<std::string> program_unavailable(const bpf_program* program) const;

 private:
  KernelFeatures() = default;
  std::optional<std::string> type_unavailable(const std::string& type) const;
  bool btf_has(const std::string& name, int kind) const;

  std::string kernel_release_;
  FeatureResult btf_, ring_buffer_, tracefs_, cgroup2_;
  std::string tracefs_path_, cgroup2_path_;
  std::map<std::string, FeatureResult> hook_types_;
  struct btf* vmlinux_btf_ = nullptr;
};

}  // namespace netwatcher::host
