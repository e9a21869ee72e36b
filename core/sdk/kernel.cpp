#include "netwatcher/kernel.hpp"

#include <bpf/bpf.h>
#include <bpf/btf.h>
#include <bpf/libbpf.h>
#include <sys/socket.h>
#include <time.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <vector>

namespace netwatcher {

namespace {

struct BtfDeleter {
  void operator()(struct btf* btf) const { btf__free(btf); }
};

// Calls `visit(name, value)` for every enumerator of the first enum that has
// `member`; enum64 (kernel 6.0+) as well as enum.
template <class Visit>
void for_each_enumerator(const std::string& member, Visit visit) {
  std::unique_ptr<struct btf, BtfDeleter> btf(btf__load_vmlinux_btf());
  if (!btf) return;
  const std::uint32_t count = btf__type_cnt(btf.get());
  for (std::uint32_t id = 1; id < count; ++id) {
    const struct btf_type* type = btf__type_by_id(btf.get(), id);
    if (!btf_is_any_enum(type)) continue;
    const int n = btf_vlen(type);
    auto name_at = [&](int i) {
      return btf_is_enum(type) ? btf__name_by_offset(btf.get(), btf_enum(type)[i].name_off)
                               : btf__name_by_offset(btf.get(), btf_enum64(type)[i].name_off);
    };
    auto value_at = [&](int i) -> std::uint64_t {
      return btf_is_enum(type) ? static_cast<std::uint32_t>(btf_enum(type)[i].val)
                               : btf_enum64_value(btf_enum64(type) + i);
    };
    bool found = false;
    for (int i = 0; i < n && !found; ++i) found = member == name_at(i);
    if (!found) continue;
    for (int i = 0; i < n; ++i) visit(std::string(name_at(i)), value_at(i));
    return;
  }
}

}  // namespace

void fill_kernel_filter(nw_filter& kernel, const GlobalFilter& filter) {
  kernel = {};
  kernel.pid = filter.pid;
  kernel.family = filter.family == 4 ? AF_INET : filter.family == 6 ? AF_INET6 : 0;
  kernel.nr_sports = std::min<std::size_t>(filter.sports.size(), NW_MAX_FILTER_PORTS);
  kernel.nr_dports = std::min<std::size_t>(filter.dports.size(), NW_MAX_FILTER_PORTS);
  for (std::size_t i = 0; i < kernel.nr_sports; ++i) kernel.sports[i] = filter.sports[i];
  for (std::size_t i = 0; i < kernel.nr_dports; ++i) kernel.dports[i] = filter.dports[i];
  kernel.nr_local_nets = static_cast<std::uint32_t>(filter.local_nets.size());
  kernel.nr_remote_nets = static_cast<std::uint32_t>(filter.remote_nets.size());
}

namespace {

Status insert_nets(int fd, const char* map, const std::vector<AddressNet>& nets) {
  for (const AddressNet& net : nets) {
    std::vector<nw_net_key> keys;
    nw_net_key key{};
    key.family = static_cast<std::uint8_t>(net.family);
    key.prefixlen = 8 + net.prefix;
    std::memcpy(key.addr, net.addr.data(), sizeof(key.addr));
    keys.push_back(key);
    if (net.family == 4) {
      // The IPv4-mapped IPv6 form, ::ffff:a.b.c.d/(96 + prefix).
      nw_net_key mapped{};
      mapped.family = 6;
      mapped.prefixlen = 8 + 96 + net.prefix;
      mapped.addr[10] = mapped.addr[11] = 0xff;
      std::memcpy(mapped.addr + 12, net.addr.data(), 4);
      keys.push_back(mapped);
    }
    const std::uint8_t present = 1;
    for (const nw_net_key& k : keys)
      if (bpf_map_update_elem(fd, &k, &present, BPF_ANY) != 0)
        return Status::failure(std::string("cannot add ") + net.to_string() + " to BPF map " + map +
                               ": " + std::strerror(errno));
  }
  return Status::success();
}

}  // namespace

Status fill_address_filter(int local_nets_fd, int remote_nets_fd, const GlobalFilter& filter) {
  if (Status s = insert_nets(local_nets_fd, "nw_local_nets", filter.local_nets); !s) return s;
  return insert_nets(remote_nets_fd, "nw_remote_nets", filter.remote_nets);
}

std::map<std::uint64_t, std::string> kernel_enum(const std::string& member,
                                                 const std::string& strip_prefix) {
  std::map<std::uint64_t, std::string> names;
  for_each_enumerator(member, [&](std::string name, std::uint64_t value) {
    if (!strip_prefix.empty() && name.rfind(strip_prefix, 0) == 0)
      name = name.substr(strip_prefix.size());
    names.emplace(value, std::move(name));
  });
  return names;
}

std::optional<std::uint64_t> sum_percpu_u64(int map_fd, const void* key) {
  int cpus = libbpf_num_possible_cpus();
  if (cpus <= 0 || map_fd < 0) return std::nullopt;
  std::vector<std::uint64_t> values(static_cast<std::size_t>(cpus));
  if (bpf_map_lookup_elem(map_fd, key, values.data()) != 0) return std::nullopt;
  std::uint64_t total = 0;
  for (std::uint64_t v : values) total += v;
  return total;
}

void for_each_key(int map_fd, std::size_t key_size,
                  const std::function<void(const void* key)>& visit) {
  std::vector<unsigned char> key(key_size), next(key_size);
  const void* previous = nullptr;
  while (bpf_map_get_next_key(map_fd, previous, next.data()) == 0) {
    key.swap(next);
    previous = key.data();
    visit(key.data());
  }
}

void for_each_percpu_u64(int map_fd, std::size_t key_size,
                         const std::function<void(const void* key, std::uint64_t total)>& visit) {
  for_each_key(map_fd, key_size, [&](const void* key) {
    if (auto total = sum_percpu_u64(map_fd, key)) visit(key, *total);
  });
}

bool sum_percpu_words(int map_fd, const void* key, std::span<std::uint64_t> out) {
  int cpus = libbpf_num_possible_cpus();
  if (cpus <= 0 || map_fd < 0) return false;
  const std::size_t words = out.size();
  std::vector<std::uint64_t> values(words * static_cast<std::size_t>(cpus));
  if (bpf_map_lookup_elem(map_fd, key, values.data()) != 0) return false;
  std::fill(out.begin(), out.end(), 0);
  for (std::size_t cpu = 0; cpu < static_cast<std::size_t>(cpus); ++cpu)
    for (std::size_t w = 0; w < words; ++w) out[w] += values[cpu * words + w];
  return true;
}

std::vector<double> log2_ns_bucket_bounds(int first_log2, int last_log2) {
  std::vector<double> bounds;
  for (int i = first_log2; i <= last_log2; ++i) bounds.push_back(std::ldexp(1.0, i) / 1e9);
  return bounds;
}

std::vector<std::uint64_t> log2_slots_to_buckets(std::span<const __u64> slots, int first_log2,
                                                 int last_log2) {
  const int buckets = last_log2 - first_log2 + 1;
  std::vector<std::uint64_t> counts(static_cast<std::size_t>(buckets) + 1, 0);
  // Slot i holds values below 2^(i+1) ns: the bucket with that bound.
  for (std::size_t i = 0; i < slots.size(); ++i) {
    int bucket = std::max(0, static_cast<int>(i) + 1 - first_log2);
    counts[static_cast<std::size_t>(std::min(bucket, buckets))] += slots[i];
  }
  return counts;
}

std::uint64_t monotonic_ns() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::uint64_t>(ts.tv_sec) * 1'000'000'000ULL +
         static_cast<std::uint64_t>(ts.tv_nsec);
}

}  // namespace netwatcher
