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

// The name of a type in vmlinux BTF, or "" for anonymous/out of range.
std::string type_name(const struct btf* btf, __u32 id) {
  const struct btf_type* t = btf__type_by_id(btf, id);
  const char* name = t ? btf__name_by_offset(btf, t->name_off) : nullptr;
  return name ? name : "";
}

// An iterator target is a function `int bpf_iter_<target>(struct
// bpf_iter_meta* meta, ...)` (DEFINE_BPF_ITER_FUNC). Other bpf_iter_* functions
// (helpers, open-coded iterator kfuncs) return something else or take other
// arguments.
bool is_iter_target_function(const struct btf* btf, int func_id) {
  const struct btf_type* func = btf__type_by_id(btf, func_id);
  if (!func || !btf_is_func(func)) return false;
  const struct btf_type* proto = btf__type_by_id(btf, func->type);
  if (!proto || !btf_is_func_proto(proto) || btf_vlen(proto) < 1) return false;
  const struct btf_type* ret = btf__type_by_id(btf, proto->type);
  if (!ret || !btf_is_int(ret) || type_name(btf, proto->type) != "int") return false;
  const struct btf_type* meta = btf__type_by_id(btf, btf_params(proto)[0].type);
  return meta && btf_is_ptr(meta) && type_name(btf, meta->type) == "bpf_iter_meta";
}

std::string find_tracefs(FeatureResult& result, bool may_mount) {
  for (const char* path : {"/sys/kernel/tracing", "/sys/kernel/debug/tracing"}) {
    if (std::filesystem::exists(std::string(path) + "/events")) {
      result = {true, path};
      return path;
    }
  }
  // Classic tracepoints need tracefs; mount it the way the kernel docs do.
  const char* target = "/sys/kernel/tracing";
  if (!may_mount) {
    result = {false, "not mounted"};
    return {};
  }
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
std::string find_cgroup2(FeatureResult& result, bool may_mount) {
  std::ifstream mounts("/proc/self/mounts");
  std::string device, path, type, rest;
  while (mounts >> device >> path >> type && std::getline(mounts, rest)) {
    if (type == "cgroup2") {
      result = {true, path};
      return path;
    }
  }
  const char* target = "/run/netwatcher/cgroup2";
  if (!may_mount) {
    result = {false, "no cgroup2 mount"};
    return {};
  }
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
    iter_targets_ = std::move(other.iter_targets_);
    loader_ = std::move(other.loader_);
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

FeatureResult KernelFeatures::load_program(const ProgramLoad& load) {
  struct bpf_insn insns[2] = {};
  insns[0].code = BPF_ALU64 | BPF_MOV | BPF_K;
  insns[0].dst_reg = BPF_REG_0;
  insns[0].imm = load.ret;
  insns[1].code = BPF_JMP | BPF_EXIT;
  LIBBPF_OPTS(bpf_prog_load_opts, opts);
  opts.expected_attach_type = static_cast<bpf_attach_type>(load.expected_attach_type);
  opts.attach_btf_id = static_cast<__u32>(load.attach_btf_id);
  int fd =
      bpf_prog_load(static_cast<bpf_prog_type>(load.prog_type), nullptr, "GPL", insns, 2, &opts);
  if (fd < 0) return {false, "program load refused: " + errno_text(errno)};
  close(fd);
  return {true, "loads"};
}

FeatureResult KernelFeatures::load(const ProgramLoad& load) const {
  FeatureResult result = loader_ ? loader_(load) : load_program(load);
  spdlog::debug("probe {}: {}", load.name, result.detail);
  return result;
}

KernelFeatures KernelFeatures::probe(Options options) {
  KernelFeatures f;
  f.loader_ = std::move(options.loader);
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
  f.tracefs_path_ = find_tracefs(f.tracefs_, options.mount_missing);

  // Every type is probed the way its programs are loaded: same program type,
  // expected attach type and (for BTF-attached types) a real attach target.
  auto& types = f.hook_types_;
  auto type = [&](const char* name, int prog_type, int attach_type = 0, int attach_btf_id = 0,
                  int ret = 0) -> const FeatureResult& {
    return types[name] = f.load({name, prog_type, attach_type, attach_btf_id, ret});
  };
  auto btf_id = [&](const char* name, int kind) {
    return f.vmlinux_btf_ ? btf__find_by_name_kind(f.vmlinux_btf_, name, kind) : -1;
  };
  if (type("tracepoint", BPF_PROG_TYPE_TRACEPOINT).available && !f.tracefs_.available)
    types["tracepoint"] = {false, "tracefs unavailable: " + f.tracefs_.detail};
  type("raw_tp", BPF_PROG_TYPE_RAW_TRACEPOINT);
  if (int id = btf_id("btf_trace_sched_switch", BTF_KIND_TYPEDEF); id > 0)
    type("tp_btf", BPF_PROG_TYPE_TRACING, BPF_TRACE_RAW_TP, id);
  else
    types["tp_btf"] = {false, "needs kernel BTF"};
  if (int id = btf_id("tcp_v4_connect", BTF_KIND_FUNC); id > 0)
    type("fentry", BPF_PROG_TYPE_TRACING, BPF_TRACE_FENTRY, id);
  else
    types["fentry"] = {false, "needs kernel BTF"};
  // kprobe programs also serve uprobes: the program type loads wherever
  // either exists, so whether a probe can be made is the PMU's to say.
  const bool kprobe_pmu =
      std::filesystem::exists("/sys/bus/event_source/devices/kprobe/type") ||
      (!f.tracefs_path_.empty() && std::filesystem::exists(f.tracefs_path_ + "/kprobe_events"));
  const bool uprobe_pmu = std::filesystem::exists("/sys/bus/event_source/devices/uprobe/type");
  if (type("kprobe", BPF_PROG_TYPE_KPROBE).available) {
    types["uprobe"] = types["kprobe"];
    if (!kprobe_pmu)
      types["kprobe"] = {false,
                         "program loads, but kprobes are not supported by this kernel "
                         "(no CONFIG_KPROBES)"};
    if (!uprobe_pmu)
      types["uprobe"] = {false,
                         "program loads, but uprobes are not supported by this kernel "
                         "(no CONFIG_UPROBES)"};
  } else {
    types["uprobe"] = types["kprobe"];
  }
  type("netfilter", kProgTypeNetfilter, kAttachNetfilter, 0, 1);  // NF_ACCEPT
  type("tc", BPF_PROG_TYPE_SCHED_CLS);
  type("xdp", BPF_PROG_TYPE_XDP, BPF_XDP);
  if (type("cgroup_skb", BPF_PROG_TYPE_CGROUP_SKB, BPF_CGROUP_INET_EGRESS, 0, 1).available) {
    f.cgroup2_path_ = find_cgroup2(f.cgroup2_, options.mount_missing);
    if (!f.cgroup2_.available)
      types["cgroup_skb"] = {false, "cgroup v2 unavailable: " + f.cgroup2_.detail};
  } else {
    f.cgroup2_ = {false, "cgroup_skb programs not supported"};
  }
  type("sockops", BPF_PROG_TYPE_SOCK_OPS, BPF_CGROUP_SOCK_OPS);
  type("socket_filter", BPF_PROG_TYPE_SOCKET_FILTER);
  return f;
}

const FeatureResult& KernelFeatures::iter_target(const std::string& target) const {
  auto it = iter_targets_.find(target);
  if (it != iter_targets_.end()) return it->second;
  FeatureResult result;
  const std::string function = "bpf_iter_" + target;
  int id =
      vmlinux_btf_ ? btf__find_by_name_kind(vmlinux_btf_, function.c_str(), BTF_KIND_FUNC) : -1;
  if (!vmlinux_btf_) {
    result = {false, "needs kernel BTF"};
  } else if (id <= 0 || !is_iter_target_function(vmlinux_btf_, id)) {
    result = {false,
              "no BPF iterator '" + target + "' in this kernel (no " + function + " in its BTF)"};
  } else {
    result = load({"iter/" + target, BPF_PROG_TYPE_TRACING, BPF_TRACE_ITER, id});
  }
  return iter_targets_.emplace(target, std::move(result)).first->second;
}

void KernelFeatures::probe_all_iter_targets() {
  if (!vmlinux_btf_) return;
  const __u32 count = btf__type_cnt(vmlinux_btf_);
  for (__u32 id = 1; id < count; ++id) {
    const struct btf_type* t = btf__type_by_id(vmlinux_btf_, id);
    if (!btf_is_func(t)) continue;
    const std::string name = type_name(vmlinux_btf_, id);
    if (starts_with(name, "bpf_iter_") && is_iter_target_function(vmlinux_btf_, id))
      iter_target(name.substr(std::strlen("bpf_iter_")));
  }
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
    const FeatureResult& target = iter_target(after("iter/"));
    if (!target.available) return section + ": " + target.detail;
    return std::nullopt;
  }
  if (starts_with(section, "kprobe") || starts_with(section, "kretprobe"))
    return type_unavailable("kprobe");
  if (starts_with(section, "uprobe") || starts_with(section, "uretprobe"))
    return type_unavailable("uprobe");
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
