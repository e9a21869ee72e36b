// The host's latency anomaly detector ([anomaly] in netwatcher.toml, -L).
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <list>
#include <string>
#include <string_view>
#include <unordered_map>

namespace netwatcher::host {

struct AnomalySettings {
  bool enabled = false;
  double alpha = 0.2;       // weight of the newest sample in the EWMA
  double multiplier = 3.0;  // a sample above multiplier * EWMA is an anomaly
  std::uint64_t warmup = 30;
  bool per_connection = false;
  std::size_t max_series = 65536;
  double max_logs_per_second = 10;
};

// One EWMA per series key. Each sample is judged against the EWMA of the
// samples before it and then folded in, anomalies included: a lasting shift
// raises the baseline instead of being flagged forever, and a single spike is
// still what gets flagged. Not thread-safe: the host calls it from the poller.
class AnomalyDetector {
 public:
  struct Verdict {
    bool anomaly = false;
    double threshold = 0;    // multiplier * EWMA before this sample; 0 in warm-up
    double baseline = 0;     // EWMA before this sample
    std::uint64_t seen = 0;  // samples of the series before this one
  };

  explicit AnomalyDetector(const AnomalySettings& settings);

  Verdict observe(std::string_view series, double value);

  // Whether a warning for an anomaly seen now may be logged, by a token bucket
  // of max_logs_per_second. `suppressed` returns how many were not logged
  // since the last allowed one.
  bool may_log(std::chrono::steady_clock::time_point now, std::uint64_t& suppressed);

  std::size_t series() const { return index_.size(); }
  std::uint64_t evicted() const { return evicted_; }
  const AnomalySettings& settings() const { return settings_; }

 private:
  struct Series {
    std::string key;
    double ewma = 0;
    std::uint64_t samples = 0;
  };
  AnomalySettings settings_;
  // Most recently used first; the back is evicted when max_series is reached.
  std::list<Series> recency_;
  std::unordered_map<std::string_view, std::list<Series>::iterator> index_;
  std::uint64_t evicted_ = 0;
  double log_tokens_ = 0;
  std::uint64_t not_logged_ = 0;
  std::chrono::steady_clock::time_point last_refill_{};
};

}  // namespace netwatcher::host
