#include "table_accounts.hpp"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include <spdlog/spdlog.h>

namespace netwatcher::host {

namespace {

// nw_table_counts in common.bpf.h.
struct KernelCounts {
  std::uint64_t inserted = 0, removed = 0, refused = 0;
};

constexpr unsigned kMaxKernelTables = 16;  // NW_MAX_TABLES

bool is_hash_map(bpf_map_type type) {
  return type == BPF_MAP_TYPE_HASH || type == BPF_MAP_TYPE_LRU_HASH ||
         type == BPF_MAP_TYPE_PERCPU_HASH || type == BPF_MAP_TYPE_LRU_PERCPU_HASH;
}

bool is_per_cpu(bpf_map_type type) {
  return type == BPF_MAP_TYPE_PERCPU_HASH || type == BPF_MAP_TYPE_LRU_PERCPU_HASH;
}

// Entries of a hash map now. Batch lookups walk bucket by bucket, so entries
// that come and go meanwhile (per-packet tables) cannot restart the walk the
// way a deleted key restarts bpf_map_get_next_key(); kernels without batch
// operations get the key walk, bounded by the capacity.
std::uint64_t count_entries(int fd, const bpf_map* map) {
  const std::size_t key_size = bpf_map__key_size(map);
  std::size_t value_size = (bpf_map__value_size(map) + 7) / 8 * 8;
  if (is_per_cpu(bpf_map__type(map)))
    value_size *= static_cast<std::size_t>(std::max(1, libbpf_num_possible_cpus()));
  constexpr __u32 kChunk = 1024;
  std::vector<unsigned char> keys(key_size * kChunk), values(value_size * kChunk);
  std::vector<unsigned char> token(std::max<std::size_t>(key_size, 8)), next(token.size());
  std::uint64_t total = 0;
  bool first = true;
  for (;;) {
    __u32 count = kChunk;
    int err = bpf_map_lookup_batch(fd, first ? nullptr : token.data(), next.data(), keys.data(),
                                   values.data(), &count, nullptr);
    if (err && errno != ENOENT) break;
    total += count;
    if (err) return total;  // ENOENT: that was the last batch
    token.swap(next);
    first = false;
  }
  if (!first) return total;  // failed half-way: what was counted
  // No batch operations here.
  std::vector<unsigned char> key(key_size), following(key_size);
  const std::uint64_t bound = bpf_map__max_entries(map);
  total = 0;
  const void* previous = nullptr;
  while (total < bound && bpf_map_get_next_key(fd, previous, following.data()) == 0) {
    ++total;
    key.swap(following);
    previous = key.data();
  }
  return total;
}

}  // namespace

class TableAccounts::Table final : public TableAccount {
 public:
  Table(TableSpec spec, const bpf_map* map) : spec_(std::move(spec)), map_(map) {
    if (map_) {
      fd_ = bpf_map__fd(map_);
      if (!spec_.capacity) spec_.capacity = bpf_map__max_entries(map_);
    }
  }

  void count_refused(std::uint64_t n) noexcept override { user_refused_ += n; }
  void count_evicted(std::uint64_t n) noexcept override { user_evicted_ += n; }
  void set_entries(std::uint64_t entries) noexcept override {
    if (!map_) entries_ = entries;
  }
  void count_removed(std::uint64_t n) noexcept override { user_removed_ += n; }

  const TableSpec& spec() const { return spec_; }
  bool in_kernel() const { return map_ != nullptr; }

  // The kernel's counts are read on either side of the walk: entries added
  // during the walk are not in `inserted` (read before it), entries removed
  // during it are in `removed` (read after it), so the difference never
  // overstates the evictions.
  template <class ReadCounts>
  void update_kernel(ReadCounts read, bool count) {
    const KernelCounts before = read();
    if (!count) {
      kernel_refused_ = before.refused;
      return;
    }
    entries_ = count_entries(fd_, map_);
    const KernelCounts after = read();
    kernel_refused_ = after.refused;
    const std::uint64_t gone = after.removed + user_removed_ + entries_;
    if (before.inserted > gone) kernel_evicted_ = std::max(kernel_evicted_, before.inserted - gone);
  }

  TableUsage usage() const {
    return {spec_.name,
            spec_.raise_key,
            entries_,
            spec_.capacity,
            kernel_refused_ + user_refused_,
            kernel_evicted_ + user_evicted_};
  }

  // One warning per table, the first time it turns anything away.
  void warn_once(const std::string& plugin) {
    if (warned_) return;
    TableUsage u = usage();
    if (!u.refused && !u.evicted) return;
    warned_ = true;
    spdlog::warn(
        "plugin '{}': table '{}' is full ({} entries): {} refused, {} evicted so far, and "
        "counted in netwatcher_table_full_total / netwatcher_table_evictions_total; raise {}",
        plugin, u.table, u.capacity, u.refused, u.evicted, spec_.raise_key);
  }

 private:
  TableSpec spec_;
  const bpf_map* map_ = nullptr;
  int fd_ = -1;
  std::uint64_t entries_ = 0, user_refused_ = 0, user_evicted_ = 0, user_removed_ = 0;
  std::uint64_t kernel_refused_ = 0, kernel_evicted_ = 0;
  bool warned_ = false;
};

TableAccounts::TableAccounts(std::string plugin) : plugin_(std::move(plugin)) {}
TableAccounts::~TableAccounts() = default;

void TableAccounts::set_object(bpf_object* object) {
  object_ = object;
  counts_fd_ = -1;
  if (!object) return;
  if (bpf_map* counts = bpf_object__find_map_by_name(object, "nw_tables"))
    counts_fd_ = bpf_map__fd(counts);
}

TableAccount* TableAccounts::track(const TableSpec& spec) {
  auto refuse = [&](const std::string& why) -> TableAccount* {
    spdlog::warn("plugin '{}': table '{}' is not tracked: {}", plugin_, spec.name, why);
    return nullptr;
  };
  if (spec.name.empty()) return refuse("it has no name");
  for (const auto& table : tables_)
    if (table->spec().name == spec.name) return refuse("a table of that name exists");
  if (spec.map.empty()) {
    if (!spec.capacity) return refuse("a user-space table needs a capacity");
    tables_.push_back(std::make_unique<Table>(spec, nullptr));
    return tables_.back().get();
  }
  if (spec.kernel_index >= kMaxKernelTables)
    return refuse("kernel_index " + std::to_string(spec.kernel_index) + " is not below " +
                  std::to_string(kMaxKernelTables));
  if (counts_fd_ < 0) return refuse("the BPF object has no nw_tables map (common.bpf.h)");
  const bpf_map* map = object_ ? bpf_object__find_map_by_name(object_, spec.map.c_str()) : nullptr;
  if (!map) return refuse("the BPF object has no map '" + spec.map + "'");
  if (!is_hash_map(bpf_map__type(map))) return refuse("map '" + spec.map + "' is not a hash map");
  for (const auto& table : tables_)
    if (table->in_kernel() && table->spec().kernel_index == spec.kernel_index)
      return refuse("kernel_index " + std::to_string(spec.kernel_index) + " is taken by '" +
                    table->spec().name + "'");
  tables_.push_back(std::make_unique<Table>(spec, map));
  return tables_.back().get();
}

void TableAccounts::update(bool count_entries) {
  const int cpus = std::max(1, libbpf_num_possible_cpus());
  auto read = [&](unsigned index) {
    KernelCounts total;
    std::vector<KernelCounts> per_cpu(static_cast<std::size_t>(cpus));
    __u32 key = index;
    if (counts_fd_ < 0 || bpf_map_lookup_elem(counts_fd_, &key, per_cpu.data()) != 0) return total;
    for (const auto& c : per_cpu) {
      total.inserted += c.inserted;
      total.removed += c.removed;
      total.refused += c.refused;
    }
    return total;
  };
  for (auto& table : tables_) {
    if (table->in_kernel())
      table->update_kernel([&] { return read(table->spec().kernel_index); }, count_entries);
    table->warn_once(plugin_);
  }
}

std::vector<TableUsage> TableAccounts::usage() const {
  std::vector<TableUsage> out;
  out.reserve(tables_.size());
  for (const auto& table : tables_) out.push_back(table->usage());
  return out;
}

void TableAccounts::clear() {
  tables_.clear();
  object_ = nullptr;
  counts_fd_ = -1;
}

}  // namespace netwatcher::host
