// The host's metric registry: plugin families and netwatcher's own.
#pragma once

#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>

#include "netwatcher/metrics.hpp"

namespace netwatcher::host {

class MetricStore {
 public:
  MetricStore();
  ~MetricStore();
  // Registers a family; returns the existing one when a family of that name and
  // type exists, nullptr (and logs) when the name is taken by another type.
  MetricFamily* declare(const MetricFamilySpec& spec);
  MetricFamily* find(std::string_view name);
  // Copy of every family, in name order. Thread-safe.
  MetricsSnapshot snapshot() const;

 private:
  class Family;
  mutable std::mutex mutex_;
  std::map<std::string, std::unique_ptr<Family>, std::less<>> families_;
};

}  // namespace netwatcher::host
