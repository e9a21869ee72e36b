#include "kernel_features.hpp"

#include <bpf/bpf.h>
#include <bpf/btf.h>
#include <bpf/libbpf.h>
#include <linux/bpf.h>
#include <sys/mount.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>

#include <spdlog/spdlog.h>

#include "bpf_uapi.hpp"

namespace netwatcher::host {

namespace {

bool starts_with(const std::string& s, const char* prefix) {
  return s.rfind(prefix, 0) == 0;
}

std::string errno_text(int err) {
  return std::string(std::strerror(err));
}

// Loads a two-instruction program (r0 = ret; exit) and reports the verdict.
FeatureResult try_load(int prog_type, int attach_type, int attach_btf_id, int ret = 0) {
  struct bpf_insn insns[2] = {};
  insns[0].code = BPF_ALU64 | BPF_MOV | BPF_K;
  insns[0].dst_reg = BPF_REG_0;
  insns[0].imm = ret;
  insns[1].code = BPF_JMP | BPF_EXIT;
  LIBBPF_OPTS(bpf_prog_load_opts, opts);
  opts.expected_attach_type = static_cast<bpf_attach_type>(attach_type);
  opts.attach_btf_id = attach_btf_id;
  int fd = bpf_prog_load(static_cast<bpf_prog_type>(prog_type), nullptr, "GPL", insns, 2, &opts);
  if (fd < 0) return {false, "program load refused: " + errno_text(errno)};
  close(fd);
  return {true, "loads"};
}

FeatureResult probe_prog_type(bpf_prog_type type) {
  int ret = libbpf_probe_bpf_prog_type(type, nullptr);
  if (ret == 1) return {true, "loads"};
  return {false, ret == 0 ? "not supported by this kernel" : "probe failed: " + errno_text(-ret)};
}

std::string find_tracefs(FeatureResult& result) {
  for (const char* path : {"/sys/kernel/tracing", "/sys/kernel/debug/tracing"}) {
    if (std::filesystem::exists(std::string(path) + "/events")) {
      result = {true, path};
      return path;
    }
  }
  // Classic tracepoints need tracefs; mount it the way the kernel docs do.
  const char* target = "/sys/kernel/tracing";
  if (mount("nodev", target, "tracefs", 0, nullptr) == 0) {
    spdlog::info("mounted tracefs at {}", target);
    result = {true, std::string(target) + " (mounted by netwatcher)"};
    return target;
  }
  result = {false, std::string("not mounted and mounting it at ") + target +
                       " failed: " + errno_text(errno)};
  return {};
}

// The cgroup v2 root: the first cgroup2 mount (on hybrid v1/v2 systems it is
// /sys/fs/cgroup/unified), else one netwatcher mounts itself.
std::string find_cgroup2(FeatureResult& result) {
  std::ifstream mounts("/proc/self/mounts");
  std::string device, path, type, rest;
  while (mounts >> device >> path >> type && std::getline(mounts, rest)) {
    if (type == "cgroup2") {
      result = {true, path};
      return path;
    }
  }
  const char* target = "/run/netwatcher/cgroup2";
  std::error_code ec;
  std::filesystem::create_directories(target, ec);
  if (!ec && mount("none", target, "cgroup2", 0, nullptr) == 0) {
    spdlog::info("mounted the cgroup v2 hierarchy at {}", target);
    result = {true, std::string(target) + " (mounted by netwatcher)"};
    return target;
  }
  result = {false, std::string("no cgroup2 mount and mounting one at ") + target +
                       " failed: " + errno_text(ec ? ec.value() : errno)};
  return {};
}

}  // namespace

KernelFeatures::KernelFeatures(KernelFeatures&& other) noexcept {
  *this = std::move(other);
}

KernelFeatures& KernelFeatures::operator=(KernelFeatures&& other) noexcept {
  if (this != &other) {
    kernel_release_ = std::move(other.kernel_release_);
    btf_ = std::move(other.btf_);
    ring_buffer_ = std::move(other.ring_buffer_);
    tracefs_ = std::move(other.tracefs_);
    tracefs_path_ = std::move(other.tracefs_path_);
    cgroup2_ = std::move(other.cgroup2_);
    cgroup2_path_ = std::move(other.cgroup2_path_);
    hook_types_ = std::move(other.hook_types_);
    std::swap(vmlinux_btf_, other.vmlinux_btf_);
  }
  return *this;
}

KernelFeatures::~KernelFeatures() {
  btf__free(vmlinux_btf_);
}

bool KernelFeatures::btf_has(const std::string& name, int kind) const {
  return vmlinux_btf_ && btf__find_by_name_kind(vmlinux_btf_, name.c_str(), kind) > 0;
}

KernelFeatures KernelFeatures::probe() {
  KernelFeatures f;
  struct utsname uts {};
  if (uname(&uts) == 0) f.kernel_release_ = std::string(uts.release) + " " + uts.machine;

  f.vmlinux_btf_ = btf__load_vmlinux_btf();
  if (f.vmlinux_btf_) {
    f.btf_ = {true, "/sys/kernel/btf/vmlinux"};
  } else {
    f.btf_ = {false, "no kernel BTF (CONFIG_DEBUG_INFO_BTF): " + errno_text(errno)};
  }
  int rb = libbpf_probe_bpf_map_type(BPF_MAP_TYPE_RINGBUF, nullptr);
  f.ring_buffer_ = rb == 1 ? FeatureResult{true, "BPF_MAP_TYPE_RINGBUF"}
                           : FeatureResult{false, "BPF ring buffer not supported (kernel < 5.8?)"};
  f.tracefs_path_ = find_tracefs(f.tracefs_);

  auto& types = f.hook_types_;
  types["tracepoint"] = probe_prog_type(BPF_PROG_TYPE_TRACEPOINT);
  if (types["tracepoint"].available && !f.tracefs_.available)
    types["tracepoint"] = {false, "tracefs unavailable: " + f.tracefs_.detail};
  types["raw_tp"] = probe_prog_type(BPF_PROG_TYPE_RAW_TRACEPOINT);

  int tp_btf_id = f.vmlinux_btf_ ? btf__find_by_name_kind(f.vmlinux_btf_, "btf_trace_sched_switch",
                                                          BTF_KIND_TYPEDEF)
                                 : -1;
  types["tp_btf"] = tp_btf_id > 0 ? try_load(BPF_PROG_TYPE_TRACING, BPF_TRACE_RAW_TP, tp_btf_id)
                                  : FeatureResult{false, "needs kernel BTF"};
  int fentry_id =
      f.vmlinux_btf_ ? btf__find_by_name_kind(f.vmlinux_btf_, "tcp_v4_connect", BTF_KIND_FUNC) : -1;
  types["fentry"] = fentry_id > 0 ? try_load(BPF_PROG_TYPE_TRACING, BPF_TRACE_FENTRY, fentry_id)
                                  : FeatureResult{false, "needs kernel BTF"};
  int iter_id =
      f.vmlinux_btf_ ? btf__find_by_name_kind(f.vmlinux_btf_, "bpf_iter_tcp", BTF_KIND_FUNC) : -1;
  types["iter"] = iter_id > 0 ? FeatureResult{true, "bpf_iter targets present in BTF"}
                              : FeatureResult{false, "no bpf_iter targets in kernel BTF"};
  bool kprobes =
      std::filesystem::exists("/sys/bus/event_source/devices/kprobe/type") ||
      (!f.tracefs_path_.empty() && std::filesystem::exists(f.tracefs_path_ + "/kprobe_events"));
  types["kprobe"] = kprobes ? FeatureResult{true, "kprobe PMU present"}
                            : FeatureResult{false,
                                            "kprobes are not supported by this kernel "
                                            "(no CONFIG_KPROBES)"};
  types["netfilter"] = try_load(kProgTypeNetfilter, kAttachNetfilter, 0, 1);
  types["tc"] = probe_prog_type(BPF_PROG_TYPE_SCHED_CLS);
  types["xdp"] = probe_prog_type(BPF_PROG_TYPE_XDP);
  types["cgroup_skb"] = probe_prog_type(BPF_PROG_TYPE_CGROUP_SKB);
  if (types["cgroup_skb"].available) {
    f.cgroup2_path_ = find_cgroup2(f.cgroup2_);
    if (!f.cgroup2_.available)
      types["cgroup_skb"] = {false, "cgroup v2 unavailable: " + f.cgroup2_.detail};
  } else {
    f.cgroup2_ = {false, "cgroup_skb programs not supported"};
  }
  types["sockops"] = probe_prog_type(BPF_PROG_TYPE_SOCK_OPS);
  types["socket_filter"] = probe_prog_type(BPF_PROG_TYPE_SOCKET_FILTER);
  return f;
}

std::optional<std::string> KernelFeatures::type_unavailable(const std::string& type) const {
  auto it = hook_types_.find(type);
  if (it == hook_types_.end()) return "unknown program type '" + type + "'";
  if (!it->second.available) return type + ": " + it->second.detail;
  return std::nullopt;
}

std::optional<std::string> KernelFeatures::program_unavailable(const bpf_program* program) const {
  const std::string section = bpf_program__section_name(program);
  auto after = [&](const char* prefix) { return section.substr(std::strlen(prefix)); };
  if (starts_with(section, "tp_btf/")) {
    if (auto why = type_unavailable("tp_btf")) return why;
    if (!btf_has("btf_trace_" + after("tp_btf/"), BTF_KIND_TYPEDEF))
      return "tracepoint '" + after("tp_btf/") + "' does not exist in this kernel's BTF";
    return std::nullopt;
  }
  if (starts_with(section, "raw_tp/") || starts_with(section, "raw_tracepoint/")) {
    if (auto why = type_unavailable("raw_tp")) return why;
    std::string name = section.substr(section.find('/') + 1);
    if (vmlinux_btf_ && !btf_has("btf_trace_" + name, BTF_KIND_TYPEDEF))
      return "raw tracepoint '" + name + "' does not exist in this kernel";
    return std::nullopt;
  }
  if (starts_with(section, "tracepoint/") || starts_with(section, "tp/")) {
    if (auto why = type_unavailable("tracepoint")) return why;
    std::string name = section.substr(section.find('/') + 1);
    if (!std::filesystem::exists(tracefs_path_ + "/events/" + name + "/id"))
      return "tracepoint '" + name + "' does not exist (" + tracefs_path_ + "/events)";
    return std::nullopt;
  }
  if (starts_with(section, "iter/")) {
    if (auto why = type_unavailable("iter")) return why;
    if (!btf_has("bpf_iter_" + after("iter/"), BTF_KIND_FUNC))
      return "BPF iterator '" + after("iter/") + "' does not exist in this kernel";
    return std::nullopt;
  }
  if (starts_with(section, "kprobe/") || starts_with(section, "kretprobe/"))
    return type_unavailable("kprobe");
  if (starts_with(section, "fentry/") || starts_with(section, "fexit/"))
    return type_unavailable("fentry");
  if (starts_with(section, "netfilter")) return type_unavailable("netfilter");
  if (starts_with(section, "tc") || starts_with(section, "classifier"))
    return type_unavailable("tc");
  if (starts_with(section, "xdp")) return type_unavailable("xdp");
  if (starts_with(section, "cgroup_skb/")) return type_unavailable("cgroup_skb");
  if (starts_with(section, "sockops")) return type_unavailable("sockops");
  if (starts_with(section, "socket")) return type_unavailable("socket_filter");
  return std::nullopt;
}

}  // namespace netwatcher::host
