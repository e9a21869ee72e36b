#include "anomaly.hpp"

#include <algorithm>

namespace netwatcher::host {

AnomalyDetector::AnomalyDetector(const AnomalySettings& settings)
    : settings_(settings), log_tokens_(settings.max_logs_per_second) {}

AnomalyDetector::Verdict AnomalyDetector::observe(std::string_view series, double value) {
  auto found = index_.find(series);
  std::list<Series>::iterator it;
  if (found == index_.end()) {
    if (settings_.max_series > 0 && index_.size() >= settings_.max_series) {
      index_.erase(recency_.back().key);
      recency_.pop_back();
      ++evicted_;
    }
    recency_.push_front(Series{std::string(series), 0, 0});
    it = recency_.begin();
    index_.emplace(it->key, it);
  } else {
    it = found->second;
    recency_.splice(recency_.begin(), recency_, it);
  }

  Verdict verdict;
  verdict.seen = it->samples;
  verdict.baseline = it->ewma;
  if (it->samples >= settings_.warmup) {
    verdict.threshold = settings_.multiplier * it->ewma;
    verdict.anomaly = value > verdict.threshold;
  }
  it->ewma = it->samples == 0 ? value : settings_.alpha * value + (1 - settings_.alpha) * it->ewma;
  ++it->samples;
  return verdict;
}

bool AnomalyDetector::may_log(std::chrono::steady_clock::time_point now,
                              std::uint64_t& suppressed) {
  double elapsed = std::chrono::duration<double>(now - last_refill_).count();
  last_refill_ = now;
  log_tokens_ = std::min(settings_.max_logs_per_second,
                         log_tokens_ + elapsed * settings_.max_logs_per_second);
  if (log_tokens_ < 1) {
    ++not_logged_;
    return false;
  }
  log_tokens_ -= 1;
  suppressed = not_logged_;
  not_logged_ = 0;
  return true;
}

}  // namespace netwatcher::host
