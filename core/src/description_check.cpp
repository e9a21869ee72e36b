#include "description_check.hpp"

#include <set>

#include "netwatcher/format.hpp"

namespace netwatcher::host {

namespace {

bool metric_name_ok(const std::string& name) {
  if (name.empty()) return false;
  for (std::size_t i = 0; i < name.size(); ++i) {
    const char c = name[i];
    const bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':';
    if (!alpha && !(i > 0 && c >= '0' && c <= '9')) return false;
  }
  return true;
}

bool label_name_ok(const std::string& name) {
  return metric_name_ok(name) && name.find(':') == std::string::npos;
}

const char* role_name(FieldRole role) {
  switch (role) {
    case FieldRole::label:
      return "label";
    case FieldRole::value:
      return "value";
    case FieldRole::text:
      return "text";
  }
  return "?";
}

std::string named(const char* what, const std::string& name, std::size_t index) {
  return name.empty() ? std::string(what) + " #" + std::to_string(index + 1) + ": empty name"
                      : std::string(what) + " '" + name + "'";
}

}  // namespace

std::vector<std::string> description_problems(const PluginDescription& d) {
  std::vector<std::string> problems;
  auto problem = [&](std::string text) { problems.push_back(std::move(text)); };

  std::set<std::string> keys;
  for (std::size_t i = 0; i < d.config.size(); ++i) {
    const ConfigKey& key = d.config[i];
    if (key.name.empty())
      problem(named("config key", key.name, i));
    else if (key.name == "enabled")
      problem("config key 'enabled': implicit, declared by the host");
    else if (!keys.insert(key.name).second)
      problem("config key '" + key.name + "': declared twice");
  }

  std::set<std::string> events;
  for (std::size_t e = 0; e < d.events.size(); ++e) {
    const EventSchema& event = d.events[e];
    if (event.name.empty()) {
      problem(named("event", event.name, e));
      continue;
    }
    if (!events.insert(event.name).second) {
      problem("event '" + event.name + "': declared twice");
      continue;
    }
    const std::string where = "event '" + event.name + "'";
    std::set<std::string> fields;
    bool samples = false;
    for (std::size_t f = 0; f < event.fields.size(); ++f) {
      const FieldSchema& field = event.fields[f];
      if (field.name.empty()) {
        problem(where + ": " + named("field", field.name, f));
        continue;
      }
      const std::string at = where + ": field '" + field.name + "'";
      if (!fields.insert(field.name).second) problem(at + ": declared twice");
      const bool numeric = field.type == FieldType::u64 || field.type == FieldType::i64 ||
                           field.type == FieldType::f64;
      switch (field.anomaly) {
        case AnomalyRole::none:
          break;
        case AnomalyRole::sample:
          samples = true;
          if (!numeric)
            problem(at + ": anomaly role 'sample' needs a u64, i64 or f64 field, not " +
                    field_type_name(field.type));
          break;
        case AnomalyRole::key:
        case AnomalyRole::connection:
          if (field.role != FieldRole::label)
            problem(at + ": anomaly role '" +
                    (field.anomaly == AnomalyRole::key ? "key" : "connection") +
                    "' needs a label field, not a " + role_name(field.role));
          break;
      }
    }
    if (samples && fields.count("anomaly"))
      problem(where + ": field 'anomaly': reserved, the host appends it to events with samples");
  }

  std::set<std::string> metrics;
  for (std::size_t m = 0; m < d.metrics.size(); ++m) {
    const MetricFamilySpec& metric = d.metrics[m];
    if (!metric_name_ok(metric.name)) {
      problem((metric.name.empty() ? named("metric", "", m) : "metric '" + metric.name + "'") +
              (metric.name.empty() ? "" : ": name must match [a-zA-Z_:][a-zA-Z0-9_:]*"));
      continue;
    }
    const std::string at = "metric '" + metric.name + "'";
    if (!metrics.insert(metric.name).second) {
      problem(at + ": declared twice");
      continue;
    }
    std::set<std::string> labels;
    for (const auto& label : metric.labels) {
      if (!label_name_ok(label) || label.rfind("__", 0) == 0)
        problem(at + ": label '" + label + "': name must match [a-zA-Z_][a-zA-Z0-9_]* " +
                "and not start with __");
      else if (!labels.insert(label).second)
        problem(at + ": label '" + label + "': declared twice");
    }
    // Replaced by these when container labels are on (metrics.hpp).
    if (labels.count(kCgroupIdLabel)) {
      if (metric.type == MetricType::gauge)
        problem(at + ": a " + std::string(kCgroupIdLabel) +
                " label needs a counter or a histogram (a gauge cannot be summed over cgroups)");
      for (const char* taken : {"container", "pod", "namespace"})
        if (labels.count(taken))
          problem(at + ": label '" + taken + "' is the host's beside a " +
                  std::string(kCgroupIdLabel) + " label");
    }
    if (metric.type != MetricType::histogram) continue;
    if (metric.buckets.empty()) problem(at + ": histogram without buckets");
    for (std::size_t b = 1; b < metric.buckets.size(); ++b) {
      if (metric.buckets[b] > metric.buckets[b - 1]) continue;
      problem(at + ": histogram buckets must ascend strictly (bucket " + std::to_string(b + 1) +
              " = " + std::to_string(metric.buckets[b]) + " after " +
              std::to_string(metric.buckets[b - 1]) + ")");
      break;
    }
  }

  std::set<std::string> hooks;
  for (std::size_t h = 0; h < d.hooks.size(); ++h) {
    const HookSpec& hook = d.hooks[h];
    if (hook.name.empty()) {
      problem(named("hook", hook.name, h));
      continue;
    }
    const std::string at = "hook '" + hook.name + "'";
    if (!hooks.insert(hook.name).second) problem(at + ": declared twice");
    if (hook.programs.empty()) problem(at + ": no candidate programs");
    for (std::size_t p = 0; p < hook.programs.size(); ++p)
      if (hook.programs[p].empty())
        problem(at + ": candidate #" + std::to_string(p + 1) + ": empty program name");
    if (hook.enabled_by.empty()) continue;
    bool boolean_key = false;
    for (const auto& key : d.config)
      boolean_key = boolean_key || (key.name == hook.enabled_by && key.type == ConfigType::boolean);
    if (!boolean_key)
      problem(at + ": enabled_by names '" + hook.enabled_by +
              "', which is not a declared boolean config key");
  }
  return problems;
}

}  // namespace netwatcher::host
