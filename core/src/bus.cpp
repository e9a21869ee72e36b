#include "bus.hpp"

#include <algorithm>

#include <spdlog/spdlog.h>

namespace netwatcher::host {

SinkWorker::SinkWorker(std::string instance, std::shared_ptr<Sink> sink,
                       std::optional<std::set<std::string>> plugins, std::size_t capacity)
    : instance_(std::move(instance)),
      sink_(std::move(sink)),
      plugins_(std::move(plugins)),
      capacity_(capacity) {}

SinkWorker::~SinkWorker() {
  stop();
}

Status SinkWorker::start(const SinkContext& context) {
  if (Status s = sink_->open(context); !s)
    return Status::failure("sink '" + instance_ + "': " + s.message());
  started_ = true;
  thread_ = std::thread([this] { run(); });
  return Status::success();
}

void SinkWorker::push(const EventPtr& event) {
  {
    std::lock_guard lock(mutex_);
    if (queue_.size() >= capacity_) {
      dropped_.fetch_add(1, std::memory_order_relaxed);
      return;
    }
    queue_.push_back(event);
  }
  wake_.notify_one();
}

std::size_t SinkWorker::depth() const {
  std::lock_guard lock(mutex_);
  return queue_.size();
}

void SinkWorker::report(const Status& status, const char* what) {
  if (status) return;
  errors_.fetch_add(1, std::memory_order_relaxed);
  // One line every few seconds is enough to tell an operator the disk is full.
  auto now = std::chrono::steady_clock::now();
  if (now - last_error_log_ > std::chrono::seconds(5)) {
    last_error_log_ = now;
    spdlog::error("sink '{}': {} failed: {} ({} errors so far)", instance_, what, status.message(),
                  errors());
  }
}

void SinkWorker::run() {
  std::deque<EventPtr> batch;
  for (;;) {
    {
      std::unique_lock lock(mutex_);
      wake_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
      if (queue_.empty() && stopping_) break;
      batch.swap(queue_);
    }
    for (const auto& event : batch) {
      Status s = sink_->write(*event);
      if (s) {
        written_.fetch_add(1, std::memory_order_relaxed);
      } else {
        report(s, "write");
      }
    }
    batch.clear();
    bool idle;
    {
      std::lock_guard lock(mutex_);
      idle = queue_.empty();
    }
    if (idle) report(sink_->flush(), "flush");
  }
  report(sink_->flush(), "flush");
  report(sink_->close(), "close");
}

void SinkWorker::stop() {
  if (!started_) return;
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_one();
  if (thread_.joinable()) thread_.join();
  started_ = false;
}

bool EventFilter::accepts(const Event& event) const {
  if (!active_) return true;
  const auto& fields = event.schema->fields;
  for (std::size_t i = 0; i < fields.size() && i < event.values.size(); ++i) {
    const std::string& name = fields[i].name;
    const Value& value = event.values[i];
    if (name == "pid" && filter_.pid) {
      const auto* pid = std::get_if<std::uint64_t>(&value);
      if (!pid || *pid != filter_.pid) return false;
    } else if ((name == "sport" && !filter_.sports.empty()) ||
               (name == "dport" && !filter_.dports.empty())) {
      const auto& ports = name == "sport" ? filter_.sports : filter_.dports;
      const auto* port = std::get_if<std::uint64_t>(&value);
      if (port && std::find(ports.begin(), ports.end(), *port) == ports.end()) return false;
    } else if (name == "family" && filter_.family) {
      const auto* family = std::get_if<std::string>(&value);
      if (family && *family != (filter_.family == 4 ? "ipv4" : "ipv6")) return false;
    }
  }
  return true;
}

bool Bus::publish(EventPtr event) {
  if (!filter_.accepts(*event)) return false;
  for (auto& worker : workers_)
    if (worker->wants(event->schema->plugin)) worker->push(event);
  return true;
}

void Bus::stop() {
  for (auto& worker : workers_) worker->stop();
}

}  // namespace netwatcher::host
