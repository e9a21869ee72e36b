// A PluginHost and EventEmitter for driving a plugin's decoder without the kernel.
#pragma once

#include <functional>
#include <string_view>
#include <vector>

#include "metric_store.hpp"
#include "netwatcher/plugin.hpp"
#include "table_accounts.hpp"

namespace netwatcher::fakes {

struct Emitted {
  std::size_t index;
  std::uint64_t monotonic_ns;
  std::vector<Value> values;
};

class CapturingEmitter : public EventEmitter {
 public:
  void emit(std::size_t index, std::uint64_t ns, std::vector<Value>&& values) noexcept override {
    events.push_back({index, ns, std::move(values)});
  }
  std::vector<Emitted> events;
};

class FakeHost : public PluginHost {
 public:
  explicit FakeHost(const PluginDescription& d) {
    for (const auto& spec : d.metrics) store.declare(spec);
  }
  MetricFamily* metric(std::string_view name) noexcept override { return store.find(name); }
  int link_fd(std::string_view) const noexcept override { return -1; }
  Status attach_netfilter(std::string_view, const NetfilterPoint&) noexcept override {
    return Status::failure("no kernel in unit tests");
  }
  void set_metrics_refresh(std::function<Status()> refresh) noexcept override {
    metrics_refresh = std::move(refresh);
  }
  // User-space tables only: there is no BPF object.
  TableAccount* track_table(const TableSpec& spec) noexcept override { return tables.track(spec); }
  std::size_t release_netfilter(std::uint64_t netns_inode) noexcept override {
    released.push_back(netns_inode);
    return 0;
  }
  // A protocol plugin's L7Protocol, which a test then feeds packets itself.
  Status serve_protocol(L7Protocol& protocol) noexcept override {
    served.push_back(&protocol);
    return Status::success();
  }
  std::size_t served_protocol_count() const noexcept override { return 0; }
  ServedProtocol served_protocol(std::size_t) const noexcept override { return {}; }
  Status attach_uprobe(std::string_view, std::string_view, std::string_view) noexcept override {
    return Status::failure("no uprobes in unit tests");
  }
  std::vector<L7Protocol*> served;
  host::MetricStore store;
  std::function<Status()> metrics_refresh;
  std::vector<std::uint64_t> released;  // release_netfilter() arguments, in order
  host::TableAccounts tables{"fake"};
};

}  // namespace netwatcher::fakes
