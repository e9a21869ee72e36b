#include "netwatcher/declare.hpp"

#include "netwatcher/plugin.hpp"

namespace netwatcher {

namespace {

// Where handles point before bind(): updates go nowhere.
class UnboundFamily final : public MetricFamily {
 public:
  void add(const LabelValues&, double) noexcept override {}
  void set(const LabelValues&, double) noexcept override {}
  void observe(const LabelValues&, double) noexcept override {}
  void set_histogram(const LabelValues&, std::span<const std::uint64_t>, double) noexcept override {
  }
  void remove(const LabelValues&) noexcept override {}
};

UnboundFamily unbound_family;

}  // namespace

std::vector<EventSchema> EventSet::schemas() const {
  std::vector<EventSchema> out;
  out.reserve(events_.size());
  for (const EventDecl* event : events_) out.push_back(event->schema());
  return out;
}

EventDecl::EventDecl(EventSet& set, std::string name, std::string description)
    : index_(set.size()) {
  schema_.name = std::move(name);
  schema_.description = std::move(description);
  set.events_.push_back(this);
}

std::size_t EventDecl::add_field(FieldSchema field) {
  schema_.fields.push_back(std::move(field));
  return schema_.fields.size() - 1;
}

EventDecl::Row EventDecl::row(EventEmitter& out) const {
  return Row(*this, out);
}

EventDecl::Row::Row(const EventDecl& event, EventEmitter& out)
    : event_(&event), out_(&out), values_(out.make_values(event.schema().fields.size())) {}

void EventDecl::Row::emit(std::uint64_t monotonic_ns) {
  if (emitted_) return;
  emitted_ = true;
  // An empty vector never matches a schema: the host counts a decode error.
  if (foreign_field_) values_.clear();
  out_->emit(event_->index(), monotonic_ns, std::move(values_));
}

MetricHandle::MetricHandle(MetricSet& set, MetricFamilySpec spec)
    : spec_(std::move(spec)), family_(&unbound_family) {
  set.handles_.push_back(this);
}

std::vector<MetricFamilySpec> MetricSet::specs() const {
  std::vector<MetricFamilySpec> out;
  out.reserve(handles_.size());
  for (const MetricHandle* handle : handles_) out.push_back(handle->spec());
  return out;
}

Status MetricSet::bind(PluginHost& host) noexcept {
  for (MetricHandle* handle : handles_) {
    MetricFamily* family = host.metric(handle->spec_.name);
    if (!family) {
      for (MetricHandle* h : handles_) h->family_ = &unbound_family;
      return Status::failure("metric family " + handle->spec_.name +
                             " is declared but the host did not register it");
    }
    handle->family_ = family;
  }
  return Status::success();
}

std::vector<ConfigKey> KeySet::keys() const {
  std::vector<ConfigKey> keys;
  keys.reserve(settings_.size());
  for (const SettingBase* setting : settings_) keys.push_back(setting->key());
  return keys;
}

Status KeySet::read(const ConfigValues& values) noexcept {
  try {
    for (SettingBase* setting : settings_) {
      const std::string& name = setting->key().name;
      if (!values.has(name)) return Status::failure("config key '" + name + "' has no value");
      if (Status s = setting->take(values.at(name)); !s) return s;
    }
    return Status::success();
  } catch (const std::exception& e) {
    return Status::failure(e.what());
  }
}

}  // namespace netwatcher
