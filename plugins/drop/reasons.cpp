#include "reasons.hpp"

#include <bpf/btf.h>
#include <bpf/libbpf.h>

#include <cstdio>
#include <filesystem>

#include "netwatcher/kernel.hpp"

namespace netwatcher::drop {

namespace {

std::string hex(std::uint64_t value) {
  char text[24];
  std::snprintf(text, sizeof text, "0x%llx", static_cast<unsigned long long>(value));
  return text;
}

}  // namespace

DropReasons DropReasons::from_kernel() {
  DropReasons reasons(kernel_enum("SKB_DROP_REASON_NOT_SPECIFIED", "SKB_DROP_REASON_"),
                      kernel_enum("SKB_DROP_REASON_SUBSYS_CORE", "SKB_DROP_REASON_SUBSYS_"));
  reasons.from_kernel_ = true;
  return reasons;
}

std::optional<std::uint32_t> DropReasons::value_of(const std::string& name) const {
  for (const auto& [value, known] : core_)
    if (known == name) return static_cast<std::uint32_t>(value);
  return std::nullopt;
}

void DropReasons::add_subsystem_names(const std::map<std::uint64_t, std::string>& names) {
  for (const auto& [value, name] : names) subsystem_reasons_.emplace(value, name);
}

// Module BTF is split BTF on top of vmlinux: every enum whose values carry a
// known non-core subsystem in their high bits names reasons of that subsystem.
void DropReasons::scan_module_btf() {
  scanned_modules_ = true;
  struct btf* base = btf__load_vmlinux_btf();
  if (!base) return;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator("/sys/kernel/btf", ec)) {
    if (entry.path().filename() == "vmlinux") continue;
    struct btf* module = btf__parse_split(entry.path().c_str(), base);
    if (!module || libbpf_get_error(module)) continue;
    for (std::uint32_t id = btf__type_cnt(base); id < btf__type_cnt(module); ++id) {
      const struct btf_type* type = btf__type_by_id(module, id);
      if (!btf_is_enum(type)) continue;
      const struct btf_enum* values = btf_enum(type);
      for (int i = 0; i < btf_vlen(type); ++i) {
        auto value = static_cast<std::uint32_t>(values[i].val);
        std::uint32_t subsystem = value >> kSubsystemShift;
        if (subsystem == 0 || !subsystems_.count(subsystem)) continue;
        subsystem_reasons_.emplace(value, btf__name_by_offset(module, values[i].name_off));
      }
    }
    btf__free(module);
  }
  btf__free(base);
}

std::string DropReasons::name(std::uint32_t reason) {
  std::uint32_t subsystem = reason >> kSubsystemShift;
  if (subsystem == 0) {
    auto it = core_.find(reason);
    return it != core_.end() ? it->second : "UNKNOWN(" + hex(reason) + ")";
  }
  if (auto it = subsystem_reasons_.find(reason); it != subsystem_reasons_.end()) return it->second;
  if (from_kernel_ && !scanned_modules_) {
    scan_module_btf();
    if (auto it = subsystem_reasons_.find(reason); it != subsystem_reasons_.end())
      return it->second;
  }
  std::uint32_t code = reason & ((1u << kSubsystemShift) - 1);
  auto it = subsystems_.find(subsystem);
  if (it == subsystems_.end()) return "UNKNOWN(" + hex(reason) + ")";
  return it->second + "(" + hex(code) + ")";
}

}  // namespace netwatcher::drop
