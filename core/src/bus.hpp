// Routes events from plugins to sinks through one bounded queue per sink.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "netwatcher/config.hpp"
#include "netwatcher/event.hpp"
#include "netwatcher/sink.hpp"

namespace netwatcher::host {

using EventPtr = std::shared_ptr<const Event>;

class SinkWorker {
 public:
  SinkWorker(std::string instance, std::shared_ptr<Sink> sink,
             std::optional<std::set<std::string>> plugins, std::size_t capacity);
  ~SinkWorker();

  // Opens the sink on the calling thread (start-up errors must stop start-up),
  // then starts the worker thread.
  Status start(const SinkContext& context);
  bool wants(const std::string& plugin) const { return !plugins_ || plugins_->count(plugin); }
  // Never blocks: when the queue is full the event is dropped and counted.
  void push(const EventPtr& event);
  // Writes everything queued, flushes, closes, and joins the thread.
  void stop();

  const std::string& instance() const { return instance_; }
  std::uint64_t dropped() const { return dropped_.load(std::memory_order_relaxed); }
  std::uint64_t written() const { return written_.load(std::memory_order_relaxed); }
  std::uint64_t errors() const { return errors_.load(std::memory_order_relaxed); }
  std::size_t depth() const;

 private:
  void run();
  void report(const Status& status, const char* what);

  std::string instance_;
  std::shared_ptr<Sink> sink_;
  std::optional<std::set<std::string>> plugins_;
  std::size_t capacity_;
  mutable std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<EventPtr> queue_;
  bool stopping_ = false;
  bool started_ = false;
  std::thread thread_;
  std::atomic<std::uint64_t> dropped_{0}, written_{0}, errors_{0};
  std::chrono::steady_clock::time_point last_error_log_{};
};

// Host-side filter on events that carry pid / sport / dport / family fields.
class EventFilter {
 public:
  explicit EventFilter(GlobalFilter filter)
      : filter_(std::move(filter)),
        active_(filter_.pid || !filter_.sports.empty() || !filter_.dports.empty() ||
                filter_.family) {}
  bool accepts(const Event& event) const;

 private:
  GlobalFilter filter_;
  bool active_;  // false: every event passes without looking at its fields
};

class Bus {
 public:
  explicit Bus(GlobalFilter filter) : filter_(std::move(filter)) {}
  void add(std::unique_ptr<SinkWorker> worker) { workers_.push_back(std::move(worker)); }
  // False when the event was filtered out.
  bool publish(EventPtr event);
  void stop();
  const std::vector<std::unique_ptr<SinkWorker>>& workers() const { return workers_; }

 private:
  EventFilter filter_;
  std::vector<std::unique_ptr<SinkWorker>> workers_;
};

}  // namespace netwatcher::host
