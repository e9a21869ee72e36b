// The bounded tables of one probe plugin (PluginHost::track_table): what each
// holds, what it refused and what it evicted.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "netwatcher/plugin.hpp"

struct bpf_object;

namespace netwatcher::host {

struct TableUsage {
  std::string table;
  std::string raise_key;
  std::uint64_t entries = 0, capacity = 0, refused = 0, evicted = 0;
};

class TableAccounts {
 public:
  explicit TableAccounts(std::string plugin);
  ~TableAccounts();
  TableAccounts(const TableAccounts&) = delete;
  TableAccounts& operator=(const TableAccounts&) = delete;

  // The loaded object whose maps kernel tables name (nullptr: none).
  void set_object(bpf_object* object);
  // See PluginHost::track_table().
  TableAccount* track(const TableSpec& spec);
  // Brings every table up to date from the kernel's counts. `count_entries`
  // walks the kernel tables' maps (one syscall per entry): the snapshot does,
  // a scrape does not. Warns once per table on its first refusal or eviction.
  // Poller thread.
  void update(bool count_entries);
  std::vector<TableUsage> usage() const;
  // Forgets every table (the plugin stopped).
  void clear();

 private:
  class Table;
  std::string plugin_;
  bpf_object* object_ = nullptr;
  int counts_fd_ = -1;
  std::vector<std::unique_ptr<Table>> tables_;
};

}  // namespace netwatcher::host
