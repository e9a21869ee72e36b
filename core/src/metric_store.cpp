#include "metric_store.hpp"

#include <algorithm>

#include <spdlog/spdlog.h>

namespace netwatcher::host {

class MetricStore::Family final : public MetricFamily {
 public:
  explicit Family(MetricFamilySpec spec) : spec_(std::move(spec)) {}

  const MetricFamilySpec& spec() const { return spec_; }

  void add(const LabelValues& labels, double delta) noexcept override {
    if (spec_.type == MetricType::histogram || !valid(labels)) return;
    if (spec_.type == MetricType::counter && delta < 0) return;
    std::lock_guard lock(mutex_);
    series(labels).value += delta;
  }

  void set(const LabelValues& labels, double value) noexcept override {
    if (spec_.type == MetricType::histogram || !valid(labels)) return;
    std::lock_guard lock(mutex_);
    MetricSeries& s = series(labels);
    if (spec_.type == MetricType::counter && value < s.value) return;
    s.value = value;
  }

  void observe(const LabelValues& labels, double value) noexcept override {
    if (spec_.type != MetricType::histogram || !valid(labels)) return;
    std::lock_guard lock(mutex_);
    MetricSeries& s = series(labels);
    auto bucket = std::lower_bound(spec_.buckets.begin(), spec_.buckets.end(), value);
    s.bucket_counts[bucket - spec_.buckets.begin()] += 1;
    s.sum += value;
    s.count += 1;
  }

  void set_histogram(const LabelValues& labels, std::span<const std::uint64_t> counts,
                     double sum) noexcept override {
    if (spec_.type != MetricType::histogram || !valid(labels) ||
        counts.size() != spec_.buckets.size() + 1)
      return;
    std::lock_guard lock(mutex_);
    MetricSeries& s = series(labels);
    s.bucket_counts.assign(counts.begin(), counts.end());
    s.sum = sum;
    s.count = 0;
    for (auto c : counts) s.count += c;
  }

  void remove(const LabelValues& labels) noexcept override {
    std::lock_guard lock(mutex_);
    series_.erase(labels);
  }

  MetricFamilySnapshot snapshot() const {
    std::lock_guard lock(mutex_);
    MetricFamilySnapshot out{spec_, {}};
    out.series.reserve(series_.size());
    for (const auto& [labels, s] : series_) out.series.push_back(s);
    return out;
  }

 private:
  bool valid(const LabelValues& labels) const {
    if (labels.size() == spec_.labels.size()) return true;
    spdlog::debug("metric {}: {} label values given, {} declared", spec_.name, labels.size(),
                  spec_.labels.size());
    return false;
  }

  MetricSeries& series(const LabelValues& labels) {
    auto it = series_.find(labels);
    if (it == series_.end()) {
      MetricSeries s;
      s.labels = labels;
      if (spec_.type == MetricType::histogram) s.bucket_counts.assign(spec_.buckets.size() + 1, 0);
      it = series_.emplace(labels, std::move(s)).first;
    }
    return it->second;
  }

  MetricFamilySpec spec_;
  mutable std::mutex mutex_;
  std::map<LabelValues, MetricSeries> series_;
};

MetricStore::MetricStore() = default;
MetricStore::~MetricStore() = default;

MetricFamily* MetricStore::declare(const MetricFamilySpec& spec) {
  std::lock_guard lock(mutex_);
  auto it = families_.find(spec.name);
  if (it != families_.end()) {
    if (it->second->spec().type != spec.type) {
      spdlog::error("metric family '{}' declared twice with different types", spec.name);
      return nullptr;
    }
    return it->second.get();
  }
  MetricFamilySpec sorted = spec;
  std::sort(sorted.buckets.begin(), sorted.buckets.end());
  auto family = std::make_unique<Family>(std::move(sorted));
  MetricFamily* raw = family.get();
  families_.emplace(spec.name, std::move(family));
  return raw;
}

MetricFamily* MetricStore::find(std::string_view name) {
  std::lock_guard lock(mutex_);
  auto it = families_.find(name);
  return it == families_.end() ? nullptr : it->second.get();
}

MetricsSnapshot MetricStore::snapshot() const {
  std::lock_guard lock(mutex_);
  MetricsSnapshot out;
  out.reserve(families_.size());
  for (const auto& [name, family] : families_) out.push_back(family->snapshot());
  return out;
}

}  // namespace netwatcher::host
