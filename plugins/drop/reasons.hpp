// Names of skb drop reasons, as the running kernel defines them.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>

namespace netwatcher::drop {

// A reason is `subsystem << 16 | code`. Subsystem 0 (core) codes are in
// vmlinux's `enum skb_drop_reason`; other subsystems (mac80211, openvswitch)
// define theirs in their module's BTF, found by value on first use.
class DropReasons {
 public:
  static constexpr unsigned kSubsystemShift = 16;

  DropReasons() = default;
  DropReasons(std::map<std::uint64_t, std::string> core,
              std::map<std::uint64_t, std::string> subsystems)
      : core_(std::move(core)), subsystems_(std::move(subsystems)) {}
  // From /sys/kernel/btf/vmlinux.
  static DropReasons from_kernel();

  // "NO_SOCKET", "OVS_DROP_LAST_ACTION", "OPENVSWITCH(0x2a)" for a subsystem
  // reason no BTF names, "UNKNOWN(0x1234)" otherwise. Never empty.
  std::string name(std::uint32_t reason);
  // The value of a core reason by its (prefix-stripped) name, e.g.
  // "SKB_CONSUMED" (that enumerator keeps its prefix: it is not a drop reason).
  std::optional<std::uint32_t> value_of(const std::string& name) const;
  // Adds names of subsystem-coded reasons (value -> name); used by from_kernel
  // with module BTF and by tests.
  void add_subsystem_names(const std::map<std::uint64_t, std::string>& names);

 private:
  void scan_module_btf();

  std::map<std::uint64_t, std::string> core_, subsystems_, subsystem_reasons_;
  bool scanned_modules_ = false;
  bool from_kernel_ = false;
};

}  // namespace netwatcher::drop
