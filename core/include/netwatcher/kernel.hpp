// netwatcher SDK: helpers for the user-space half of a probe plugin.
//
// Linked into every probe plugin (netwatcher_add_probe_plugin does it). All
// functions are thread-safe and allocate; none of them throws.
#pragma once

#include <cstdint>
#include <cstring>
#include <functional>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "netwatcher/bpf/types.h"
#include "netwatcher/config.hpp"
#include "netwatcher/status.hpp"

namespace netwatcher {

// Copies the global filter into the rodata struct the BPF helpers
// nw_tuple_selected / nw_packet_selected / nw_pid_selected read. Call from
// open(), before load. Ports beyond NW_MAX_FILTER_PORTS are ignored here; the
// host already refused such a config.
void fill_kernel_filter(nw_filter& kernel, const GlobalFilter& filter);

// Writes the filter's address lists into the LPM tries nw_local_nets and
// nw_remote_nets (common.bpf.h) of a loaded object, by map fd. Call after
// load, before attaching; Skeleton::load() does it. Fails, naming the map and
// the network, when the kernel refuses an entry: a filter the kernel cannot
// apply must not pass as one.
Status fill_address_filter(int local_nets_fd, int remote_nets_fd, const GlobalFilter& filter);

// The enumerators of a kernel enum, read from the running kernel's BTF
// (/sys/kernel/btf/vmlinux), value -> name with `strip_prefix` removed.
// The enum is the first one that has an enumerator named `member` (kernel
// enums are often anonymous, so they are found by content, not by name).
// Empty when there is no BTF or no such enum.
std::map<std::uint64_t, std::string> kernel_enum(const std::string& member,
                                                 const std::string& strip_prefix = "");

// Copies a ring-buffer record into `rec` after checking its size, as every
// decode() must: a short record (or one from another build of the BPF
// object) fails, naming `event` and both sizes.
template <class Record>
Status read_record(std::span<const std::byte> bytes, const char* event, Record& rec) {
  static_assert(std::is_trivially_copyable_v<Record>);
  if (bytes.size() < sizeof rec)
    return Status::failure(std::string(event) + " record of " + std::to_string(bytes.size()) +
                           " bytes, expected " + std::to_string(sizeof rec));
  std::memcpy(&rec, bytes.data(), sizeof rec);
  return Status::success();
}

// A fixed-size char array from a BPF record (a task's comm, an interface
// name) as a string: up to the first NUL, or all of it when there is none.
template <std::size_t N>
std::string bounded_text(const char (&chars)[N]) {
  return std::string(chars, strnlen(chars, N));
}

// Now on CLOCK_MONOTONIC in nanoseconds: the clock of bpf_ktime_get_ns() and
// of every record's timestamp_ns.
std::uint64_t monotonic_ns();

// Sum over CPUs of a per-CPU map's u64 value at `key`; nullopt if the lookup
// fails. `map_fd` must be a BPF_MAP_TYPE_PERCPU_ARRAY or _PERCPU_HASH of u64.
std::optional<std::uint64_t> sum_percpu_u64(int map_fd, const void* key);

// Calls `visit(key)` for every key of a BPF hash map, `key_size` bytes each.
// `visit` may delete the key it is given; entries that vanish during the walk
// are skipped, entries added during it may or may not be seen.
void for_each_key(int map_fd, std::size_t key_size,
                  const std::function<void(const void* key)>& visit);

// The same with a typed key.
template <class Key, class Visit>
void for_each_key(int map_fd, Visit visit) {
  for_each_key(map_fd, sizeof(Key), [&](const void* key) { visit(*static_cast<const Key*>(key)); });
}

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

// Sum over CPUs of a per-CPU map's value at `key`, word by word, for values
// made only of 64-bit counters: `out.size()` words (the map's value size / 8).
// False if the lookup fails.
bool sum_percpu_words(int map_fd, const void* key, std::span<std::uint64_t> out);

// The same with a typed value, e.g. a struct of __u64 counters and histogram
// slots.
template <class Value>
std::optional<Value> sum_percpu(int map_fd, const void* key) {
  static_assert(std::is_trivially_copyable_v<Value> && sizeof(Value) % 8 == 0,
                "per-CPU values summed word by word must consist of 64-bit counters");
  std::vector<std::uint64_t> words(sizeof(Value) / 8);
  if (!sum_percpu_words(map_fd, key, words)) return std::nullopt;
  Value value;
  std::memcpy(&value, words.data(), sizeof value);
  return value;
}

// In-kernel latency histograms (nw_log2_slot_add in common.bpf.h) count value
// v in slot floor(log2(v)), i.e. slot i holds [2^i, 2^(i+1)) nanoseconds.
// These two turn such slots into a Prometheus histogram whose bucket bounds
// are the powers of two 2^first_log2 .. 2^last_log2 ns, so every slot falls in
// exactly one bucket.

// The bucket bounds in seconds, for MetricFamilySpec::buckets.
std::vector<double> log2_ns_bucket_bounds(int first_log2, int last_log2);

// Non-cumulative counts per bucket plus +Inf, as MetricFamily::set_histogram
// wants them, from `slots` (slot i = [2^i, 2^(i+1)) ns).
std::vector<std::uint64_t> log2_slots_to_buckets(std::span<const __u64> slots, int first_log2,
                                                 int last_log2);

}  // namespace netwatcher
