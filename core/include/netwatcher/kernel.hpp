// netwatcher SDK: helpers for the user-space half of a probe plugin.
//
// Linked into every probe plugin (netwatcher_add_probe_plugin does it). All
// functions are thread-safe and allocate; none of them throws.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>

#include "netwatcher/bpf/types.h"
#include "netwatcher/config.hpp"

namespace netwatcher {

// Copies the global filter into the rodata struct the BPF helpers
// nw_tuple_selected / nw_packet_selected / nw_pid_selected read. Call from
// open(), before load. Ports beyond NW_MAX_FILTER_PORTS are ignored here; the
// host already refused such a config.
void fill_kernel_filter(nw_filter& kernel, const GlobalFilter& filter);

// The enumerators of a kernel enum, read from the running kernel's BTF
// (/sys/kernel/btf/vmlinux), value -> name with `strip_prefix` removed.
// The enum is the first one that has an enumerator named `member` (kernel
// enums are often anonymous, so they are found by content, not by name).
// Empty when there is no BTF or no such enum.
std::map<std::uint64_t, std::string> kernel_enum(const std::string& member,
                                                 const std::string& strip_prefix = "");

// Sum over CPUs of a per-CPU map's u64 value at `key`; nullopt if the lookup
// fails. `map_fd` must be a BPF_MAP_TYPE_PERCPU_ARRAY or _PERCPU_HASH of u64.
std::optional<std::uint64_t> sum_percpu_u64(int map_fd, const void* key);

// Calls `visit(key, total)` for every entry of a per-CPU hash map of u64
// values, with the value summed over CPUs. `key_size` is the map's key size.
// Entries that vanish during the walk are skipped.
void for_each_percpu_u64(int map_fd, std::size_t key_size,
                         const std::function<void(const void* key, std::uint64_t total)>& visit);

// The same with a typed key.
template <class Key, class Visit>
void for_each_percpu_u64(int map_fd, Visit visit) {
  for_each_percpu_u64(map_fd, sizeof(Key), [&](const void* key, std::uint64_t total) {
    visit(*static_cast<const Key*>(key), total);
  });
}

}  // namespace netwatcher
