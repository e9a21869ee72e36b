// ProbeRuntime, part two: the event pipeline. Records from the ring buffer
// become checked events (workload names, anomalies) for the bus; metrics,
// tables and the L7 capture's protocol registry. Bring-up is in
// probe_bring_up.cpp.
#include "probe_runtime.hpp"

#include <bpf/bpf.h>
#include <bpf/btf.h>
#include <bpf/libbpf.h>
#include <fcntl.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <optional>
#include <set>

#include <spdlog/spdlog.h>

#include "attachments.hpp"
#include "bpf_uapi.hpp"
#include "bus.hpp"
#include "description_check.hpp"
#include "libbpf_log.hpp"
#include "live_programs.hpp"
#include "netwatcher/bpf/types.h"
#include "netwatcher/kernel.hpp"

namespace netwatcher::host {

namespace {

std::int64_t clock_ns(clockid_t clock) {
  timespec ts{};
  clock_gettime(clock, &ts);
  return static_cast<std::int64_t>(ts.tv_sec) * 1000000000LL + ts.tv_nsec;
}

bool value_matches(const FieldSchema& field, const Value& value) {
  switch (value.index()) {
    case 0:
      return field.optional;
    case 1:
      return field.type == FieldType::u64;
    case 2:
      return field.type == FieldType::i64;
    case 3:
      return field.type == FieldType::f64;
    case 4:
      return field.type == FieldType::boolean;
    case 5:
      return field.type == FieldType::text;
  }
  return false;
}

}  // namespace

class ProbeRuntime::Emitter final : public EventEmitter {
 public:
  Emitter(ProbeRuntime& runtime, Bus& bus) : runtime_(runtime), bus_(bus) {}
  void emit(std::size_t index, std::uint64_t monotonic_ns,
            std::vector<Value>&& values) noexcept override {
    try {
      if (index >= runtime_.schemas_.size()) {
        runtime_.decode_errors_.fetch_add(1, std::memory_order_relaxed);
        return;
      }
      const EventSchema* schema = runtime_.schemas_[index].get();
      bool valid = values.size() == schema->plugin_fields;
      for (std::size_t i = 0; valid && i < values.size(); ++i)
        valid = value_matches(schema->fields[i], values[i]);
      if (!valid) {
        runtime_.decode_errors_.fetch_add(1, std::memory_order_relaxed);
        spdlog::debug("plugin '{}': event '{}' does not match its schema", runtime_.name(),
                      schema->name);
        return;
      }
      if (runtime_.workloads_) runtime_.append_workload_values(index, values);
      if (runtime_.detector_ && !runtime_.anomaly_plans_[index].samples.empty()) {
        bool anomaly = runtime_.judge(index, values);
        values.emplace_back(anomaly);
      }
      const std::uint64_t timestamp_ns = monotonic_ns
                                             ? monotonic_ns + runtime_.realtime_offset_ns_
                                             : static_cast<std::uint64_t>(clock_ns(CLOCK_REALTIME));
      if (bus_.publish(schema, timestamp_ns, std::move(values))) {
        runtime_.event_counts_[index].fetch_add(1, std::memory_order_relaxed);
      } else {
        runtime_.filtered_.fetch_add(1, std::memory_order_relaxed);
      }
    } catch (const std::exception& e) {
      runtime_.decode_errors_.fetch_add(1, std::memory_order_relaxed);
      spdlog::debug("plugin '{}': emit failed: {}", runtime_.name(), e.what());
    }
  }

  std::vector<Value> make_values(std::size_t size) noexcept override {
    try {
      return bus_.make_values(size);
    } catch (...) {
      return {};
    }
  }

 private:
  ProbeRuntime& runtime_;
  Bus& bus_;
};

ProbeRuntime::ProbeRuntime(const Component& component, std::shared_ptr<ProbePlugin> plugin,
                           MetricStore& metrics, const WorkloadSettings& workloads)
    : component_(component),
      plugin_(std::move(plugin)),
      metrics_(metrics),
      tables_(component_.name) {
  // Nothing else of the plugin runs before describe(); a failure or an
  // invalid description leaves the runtime empty and described() says why.
  if (Status s = plugin_->describe(description_); !s) {
    described_ = Status::failure("plugin '" + name() + "': describe() failed: " + s.message());
    description_ = {};
    return;
  }
  if (std::vector<std::string> problems = description_problems(description_); !problems.empty()) {
    std::string message = "plugin '" + name() + "': ";
    for (std::size_t i = 0; i < problems.size(); ++i) message += (i ? "; " : "") + problems[i];
    described_ = Status::failure(message);
    description_ = {};
    return;
  }
  for (const auto& schema : description_.events) {
    auto copy = std::make_unique<EventSchema>(schema);
    copy->plugin = component_.name;
    copy->plugin_fields = copy->fields.size();
    schemas_.push_back(std::move(copy));
  }
  event_counts_ = std::make_unique<std::atomic<std::uint64_t>[]>(schemas_.size());
  const bool container_labels = workloads.enabled && workloads.container_labels;
  for (const auto& spec : description_.metrics) {
    const bool by_cgroup = cgroup_label_index(spec) != std::string::npos;
    exported_metrics_.push_back(exported_workload_spec(spec, container_labels));
    MetricFamily* family = metrics_.declare(exported_metrics_.back());
    if (!family) continue;
    if (by_cgroup) {
      workload_families_.push_back(std::make_unique<WorkloadLabelledFamily>(
          *family, spec, container_labels, workloads.max_container_labels, name()));
      family = workload_families_.back().get();
    }
    families_[spec.name] = family;
  }
  realtime_offset_ns_ = clock_ns(CLOCK_REALTIME) - clock_ns(CLOCK_MONOTONIC);
}

ProbeRuntime::~ProbeRuntime() {
  shut_down();
}

Status ProbeRuntime::configure(const ConfigValues& config, const GlobalFilter& filter) {
  config_ = config;
  // Before 3.2 a plugin's BPF object has no address tries: only the host's
  // second look (events with saddr/daddr fields) applies the lists to it.
  if (component_.abi_minor < 2 && (!filter.local_nets.empty() || !filter.remote_nets.empty()))
    spdlog::warn(
        "plugin '{}' (ABI {}.{}) predates address filters: local_addresses/remote_addresses "
        "apply only to its events with saddr/daddr fields, not in the kernel or to its counters",
        name(), component_.abi_major, component_.abi_minor);
  return plugin_->configure(config, filter);
}

namespace {

std::string value_text(const Value& value) {
  switch (value.index()) {
    case 1:
      return std::to_string(std::get<std::uint64_t>(value));
    case 2:
      return std::to_string(std::get<std::int64_t>(value));
    case 3:
      return std::to_string(std::get<double>(value));
    case 4:
      return std::get<bool>(value) ? "true" : "false";
    case 5:
      return std::get<std::string>(value);
  }
  return "";
}

std::optional<double> numeric(const Value& value) {
  switch (value.index()) {
    case 1:
      return static_cast<double>(std::get<std::uint64_t>(value));
    case 2:
      return static_cast<double>(std::get<std::int64_t>(value));
    case 3:
      return std::get<double>(value);
  }
  return std::nullopt;
}

}  // namespace

void ProbeRuntime::use_workload_resolver(WorkloadResolver* resolver) {
  workloads_ = resolver;
  for (auto& family : workload_families_) family->use_resolver(resolver);
  workload_plans_.assign(schemas_.size(), {});
  if (!workloads_) return;
  auto is_u64_label = [](const FieldSchema& f, std::string_view name) {
    return f.name == name && f.type == FieldType::u64 && f.role == FieldRole::label;
  };
  for (std::size_t s = 0; s < schemas_.size(); ++s) {
    EventSchema& schema = *schemas_[s];
    WorkloadPlan& plan = workload_plans_[s];
    for (std::size_t f = 0; f < schema.plugin_fields; ++f) {
      if (is_u64_label(schema.fields[f], "cgroup_id")) plan.cgroup_id = static_cast<int>(f);
      if (is_u64_label(schema.fields[f], "netns")) plan.netns = static_cast<int>(f);
    }
    auto add = [&](const char* name, const char* description, int width) {
      if (schema.index_of(name) >= 0) return;  // the plugin fills it itself
      schema.fields.push_back(
          {name, FieldType::text, "", description, FieldRole::label, width, /*optional=*/true});
    };
    if (plan.cgroup_id >= 0)
      for (const WorkloadField& field : kWorkloadFields)
        add(field.name, field.description, field.width);
    if (plan.netns >= 0) add("netns_name", "the network namespace's name in /run/netns", 10);
  }
}

void ProbeRuntime::append_workload_values(std::size_t index, std::vector<Value>& values) {
  const WorkloadPlan& plan = workload_plans_[index];
  const EventSchema& schema = *schemas_[index];
  auto text_or_absent = [](const std::string& text) {
    return text.empty() ? Value{} : Value{text};
  };
  if (plan.cgroup_id >= 0) {
    std::shared_ptr<const Workload> w;
    if (const auto* id = std::get_if<std::uint64_t>(&values[plan.cgroup_id]))
      w = workloads_->cgroup(*id);
    for (const WorkloadField& field : kWorkloadFields)
      if (schema.fields.size() > values.size() && schema.fields[values.size()].name == field.name)
        values.push_back(w ? text_or_absent(w.get()->*field.member) : Value{});
  }
  if (plan.netns >= 0 && schema.fields.size() > values.size() &&
      schema.fields[values.size()].name == std::string_view("netns_name")) {
    std::shared_ptr<const std::string> name;
    if (const auto* inode = std::get_if<std::uint64_t>(&values[plan.netns]))
      name = workloads_->netns_name(*inode);
    values.push_back(name ? Value{*name} : Value{});
  }
}

void ProbeRuntime::use_anomaly_detector(AnomalyDetector* detector, MetricFamily* anomalies) {
  detector_ = detector;
  anomalies_ = anomalies;
  anomaly_plans_.assign(schemas_.size(), {});
  if (!detector_) return;
  for (std::size_t s = 0; s < schemas_.size(); ++s) {
    EventSchema& schema = *schemas_[s];
    AnomalyPlan& plan = anomaly_plans_[s];
    for (std::size_t f = 0; f < schema.fields.size(); ++f) {
      const FieldSchema& field = schema.fields[f];
      bool numeric_field = field.type == FieldType::u64 || field.type == FieldType::i64 ||
                           field.type == FieldType::f64;
      if (field.anomaly == AnomalyRole::sample && numeric_field) {
        plan.samples.push_back(f);
        plan.series_prefix.push_back(name() + "/" + schema.name + "/" + field.name);
        if (anomalies_) anomalies_->add({name(), field.name}, 0);
      } else if (field.anomaly == AnomalyRole::key) {
        plan.keys.push_back(f);
      } else if (field.anomaly == AnomalyRole::connection) {
        plan.connection.push_back(f);
      }
    }
    if (!plan.samples.empty())
      schema.fields.push_back({"anomaly", FieldType::boolean, "",
                               "a latency in this event exceeded the anomaly threshold",
                               FieldRole::label, 7});
  }
}

bool ProbeRuntime::judge(std::size_t index, const std::vector<Value>& values) {
  const EventSchema& schema = *schemas_[index];
  const AnomalyPlan& plan = anomaly_plans_[index];
  std::string labels;
  auto add_labels = [&](const std::vector<std::size_t>& fields) {
    for (std::size_t f : fields)
      labels += " " + schema.fields[f].name + "=" + value_text(values[f]);
  };
  add_labels(plan.keys);
  if (detector_->settings().per_connection) add_labels(plan.connection);
  bool any = false;
  for (std::size_t i = 0; i < plan.samples.size(); ++i) {
    const std::size_t f = plan.samples[i];
    std::optional<double> sample = numeric(values[f]);
    if (!sample) continue;  // absent optional field
    const FieldSchema& field = schema.fields[f];
    const std::string series = plan.series_prefix[i] + labels;
    AnomalyDetector::Verdict verdict = detector_->observe(series, *sample);
    if (!verdict.anomaly) continue;
    any = true;
    if (anomalies_) anomalies_->add({name(), field.name}, 1);
    std::uint64_t not_logged = 0;
    if (detector_->may_log(std::chrono::steady_clock::now(), not_logged))
      spdlog::warn(
          "latency anomaly: {}.{} {} = {} {} over threshold {:.1f} ({} x EWMA {:.1f} of {} "
          "samples),{}{}",
          name(), schema.name, field.name, value_text(values[f]), field.unit, verdict.threshold,
          detector_->settings().multiplier, verdict.baseline, verdict.seen,
          labels.empty() ? " all" : labels,
          not_logged ? " (" + std::to_string(not_logged) + " earlier anomalies not logged)" : "");
  }
  return any;
}

Status ProbeRuntime::add_to_poller(ring_buffer** poller, Bus& bus) {
  bus_ = &bus;
  if (!object_) return Status::success();
  bpf_map* events = bpf_object__find_map_by_name(object_, "nw_events");
  int fd = bpf_map__fd(events);
  // The consumer page and the producer page, read-only: the fill level is
  // their difference. Not fatal: only the fill metrics need it.
  const long page = sysconf(_SC_PAGESIZE);
  void* positions = mmap(nullptr, static_cast<std::size_t>(2 * page), PROT_READ, MAP_SHARED, fd, 0);
  if (positions != MAP_FAILED) {
    ring_positions_ = positions;
    ring_bytes_ = bpf_map__max_entries(events);
  } else {
    spdlog::debug("plugin '{}': cannot map ring buffer positions: {}", name(),
                  std::strerror(errno));
  }
  if (!*poller) {
    *poller = ring_buffer__new(fd, &ProbeRuntime::on_record, this, nullptr);
    if (!*poller) return Status::failure("ring_buffer__new: " + std::string(std::strerror(errno)));
  } else if (int err = ring_buffer__add(*poller, fd, &ProbeRuntime::on_record, this); err) {
    return Status::failure("ring_buffer__add: " + std::string(std::strerror(-err)));
  }
  return Status::success();
}

double ProbeRuntime::ring_fill() const {
  if (!ring_positions_ || !ring_bytes_) return 0;
  static const long page = sysconf(_SC_PAGESIZE);
  const auto* consumer = static_cast<const volatile std::uint64_t*>(ring_positions_);
  const auto* producer = reinterpret_cast<const volatile std::uint64_t*>(
      static_cast<const char*>(ring_positions_) + page);
  const std::uint64_t unread = *producer - *consumer;
  return std::min(1.0, static_cast<double>(unread) / static_cast<double>(ring_bytes_));
}

double ProbeRuntime::note_ring_fill() {
  const double fill = ring_fill();
  if (fill > ring_fill_peak_.load(std::memory_order_relaxed))
    ring_fill_peak_.store(fill, std::memory_order_relaxed);
  return fill;
}

std::vector<ProbeRuntime::ProgramStats> ProbeRuntime::program_stats() const {
  std::vector<ProgramStats> stats;
  if (!object_) return stats;
  for (const auto& report : reports_) {
    if (report.attached_program.empty()) continue;
    bpf_program* program =
        bpf_object__find_program_by_name(object_, report.attached_program.c_str());
    int fd = program ? bpf_program__fd(program) : -1;
    if (fd < 0) continue;
    bpf_prog_info info{};
    __u32 length = sizeof info;
    if (bpf_obj_get_info_by_fd(fd, &info, &length) != 0) continue;
    stats.push_back({report.attached_program, info.id, info.run_cnt, info.run_time_ns,
                     info.recursion_misses, program_tag(info.tag)});
  }
  return stats;
}

int ProbeRuntime::on_record(void* ctx, void* data, std::size_t size) {
  auto* self = static_cast<ProbeRuntime*>(ctx);
  self->records_.fetch_add(1, std::memory_order_relaxed);
  Emitter emitter(*self, *self->bus_);
  Status s = self->plugin_->decode({static_cast<const std::byte*>(data), size}, emitter);
  if (!s) {
    std::uint64_t n = self->decode_errors_.fetch_add(1, std::memory_order_relaxed) + 1;
    if ((n & (n - 1)) == 0)  // 1, 2, 4, 8, ...: visible without flooding the log
      spdlog::warn("plugin '{}': decode error #{}: {}", self->name(), n, s.message());
  }
  return 0;
}

void ProbeRuntime::collect(Bus& bus) {
  if (!started_) return;
  const auto began = std::chrono::steady_clock::now();
  Emitter emitter(*this, bus);
  if (Status s = plugin_->collect(emitter); !s)
    spdlog::warn("plugin '{}': collect failed: {}", name(), s.message());
  tables_.update(/*count_entries=*/true);
  last_collect_s_.store(
      std::chrono::duration<double>(std::chrono::steady_clock::now() - began).count(),
      std::memory_order_relaxed);
}

void ProbeRuntime::refresh_metrics() {
  if (!started_) return;
  tables_.update(/*count_entries=*/false);
  if (!refresh_) return;
  Status s;
  try {
    s = refresh_();
  } catch (const std::exception& e) {
    s = Status::failure(e.what());
  } catch (...) {
    s = Status::failure("unknown exception");
  }
  if (s) return;
  const std::uint64_t n = ++refresh_failures_;
  if ((n & (n - 1)) == 0)  // 1, 2, 4, 8, ...: a scrape storm does not flood the log
    spdlog::warn("plugin '{}': metrics refresh failed (#{}): {}", name(), n, s.message());
}

void ProbeRuntime::set_metrics_refresh(std::function<Status()> refresh) noexcept {
  refresh_ = std::move(refresh);
}

TableAccount* ProbeRuntime::track_table(const TableSpec& spec) noexcept {
  try {
    return tables_.track(spec);
  } catch (const std::exception& e) {
    spdlog::warn("plugin '{}': table '{}' is not tracked: {}", name(), spec.name, e.what());
    return nullptr;
  }
}

std::uint64_t ProbeRuntime::lost_events() const {
  std::uint32_t key = 0;
  return sum_percpu_u64(lost_map_fd_, &key).value_or(0);
}

std::uint64_t ProbeRuntime::suppressed_events() const {
  std::uint32_t key = 0;
  return sum_percpu_u64(suppressed_map_fd_, &key).value_or(0);
}

MetricFamily* ProbeRuntime::metric(std::string_view name) noexcept {
  auto it = families_.find(name);
  return it == families_.end() ? nullptr : it->second;
}

void ProbeRuntime::shut_down() {
  destroy_links();
  if (protocols_)
    std::erase_if(protocols_->entries, [this](const auto& e) { return e.runtime == this; });
  if (ring_positions_) {
    munmap(ring_positions_, static_cast<std::size_t>(2 * sysconf(_SC_PAGESIZE)));
    ring_positions_ = nullptr;
  }
  refresh_ = nullptr;  // plugin code: gone before the plugin stops
  if (started_) {
    plugin_->stop();
    started_ = false;
  }
  tables_.clear();
  object_ = nullptr;
  lost_map_fd_ = -1;
  suppressed_map_fd_ = -1;
}

bool ProbeRuntime::uses_l7_capture() const {
  for (const auto& hook : description_.hooks)
    for (const auto& program : hook.programs)
      if (is_l7_candidate(program)) return true;
  return false;
}

Status ProbeRuntime::serve_protocol(L7Protocol& protocol) noexcept {
  try {
    if (!uses_l7_capture())
      return Status::failure("plugin '" + name() +
                             "' serves a protocol but declares no \"l7:tcp\" or \"l7:udp\" hook");
    if (!protocols_) return Status::failure("this host runs no L7 capture");
    for (const auto& entry : protocols_->entries)
      if (entry.runtime == this)
        return Status::failure("plugin '" + name() + "' served a protocol already");
    protocols_->entries.push_back({this, &protocol});
    return Status::success();
  } catch (const std::exception& e) {
    return Status::failure(e.what());
  }
}

std::size_t ProbeRuntime::served_protocol_count() const noexcept {
  return protocols_ ? protocols_->entries.size() : 0;
}

ServedProtocol ProbeRuntime::served_protocol(std::size_t index) const noexcept {
  if (!protocols_ || index >= protocols_->entries.size()) return {};
  const ProtocolRegistry::Entry& entry = protocols_->entries[index];
  ProbeRuntime& server = *entry.runtime;
  try {
    if (!server.protocol_emitter_ && server.bus_)
      server.protocol_emitter_ = std::make_unique<Emitter>(server, *server.bus_);
  } catch (...) {
    return {};
  }
  return {entry.protocol, server.protocol_emitter_.get(), server.name().c_str()};
}

}  // namespace netwatcher::host
