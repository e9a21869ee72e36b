#include "bus.hpp"

#include <arpa/inet.h>

#include <algorithm>
#include <utility>

#include <spdlog/spdlog.h>

namespace netwatcher::host {

namespace {

// Events handed to a sink at once; also how many the producer caches.
constexpr std::size_t kBatch = 512;
// Events a sink thread takes from its queue at once.
constexpr std::size_t kSinkChunk = 1024;
// Value vectors kept for make_values(); more than one batch is never in use.
constexpr std::size_t kMaxSpareStorage = 64;

}  // namespace

void EventPool::take(std::vector<PooledEvent*>& into, std::size_t count) {
  std::lock_guard lock(mutex_);
  while (count && !free_.empty()) {
    into.push_back(free_.back());
    free_.pop_back();
    --count;
  }
  for (; count; --count) into.push_back(&storage_.emplace_back());
}

void EventPool::give_back(std::vector<PooledEvent*>& events) {
  if (events.empty()) return;
  std::lock_guard lock(mutex_);
  free_.insert(free_.end(), events.begin(), events.end());
  events.clear();
}

std::size_t EventPool::created() const {
  std::lock_guard lock(mutex_);
  return storage_.size();
}

SinkWorker::SinkWorker(std::string instance, std::shared_ptr<Sink> sink,
                       std::optional<std::set<std::string>> plugins, std::size_t capacity,
                       [[maybe_unused]] unsigned abi_minor)
    : instance_(std::move(instance)),
      sink_(std::move(sink)),
      plugins_(std::move(plugins)),
      capacity_(capacity),
      // Every sink of ABI 3.x has these entries in its vtable (see bus.hpp).
      tallies_(sink_->tallies_writes()),
      can_reopen_(true) {}

SinkWorker::~SinkWorker() {
  stop();
}

Status SinkWorker::start(const SinkContext& context, EventPool& pool) {
  pool_ = &pool;
  if (Status s = sink_->open(context); !s)
    return Status::failure("sink '" + instance_ + "': " + s.message());
  started_ = true;
  thread_ = std::thread([this] { run(); });
  return Status::success();
}

void SinkWorker::release(std::vector<PooledEvent*>& events) {
  // Per thread (the sink's own, or the poller's for overflow), reused.
  thread_local std::vector<PooledEvent*> unused;
  for (PooledEvent* event : events)
    if (event->holders.fetch_sub(1, std::memory_order_acq_rel) == 1) unused.push_back(event);
  events.clear();
  if (pool_) pool_->give_back(unused);
}

void SinkWorker::push(std::vector<PooledEvent*>& batch) {
  if (batch.empty()) return;
  std::vector<PooledEvent*> overflow;
  bool wake = false;
  {
    std::lock_guard lock(mutex_);
    std::size_t room = capacity_ > queue_.size() ? capacity_ - queue_.size() : 0;
    std::size_t accepted = std::min(room, batch.size());
    queue_.insert(queue_.end(), batch.begin(), batch.begin() + static_cast<long>(accepted));
    overflow.assign(batch.begin() + static_cast<long>(accepted), batch.end());
    wake = accepted && sleeping_;
  }
  batch.clear();
  if (wake) wake_.notify_one();
  if (!overflow.empty()) {
    dropped_.fetch_add(overflow.size(), std::memory_order_relaxed);
    release(overflow);
  }
}

void SinkWorker::wait_for_room(std::chrono::steady_clock::duration timeout) {
  std::unique_lock lock(mutex_);
  if (batches_taken_ == stalled_at_) return;  // still stuck since last time
  producer_waiting_ = true;
  bool drained =
      drained_.wait_for(lock, timeout, [&] { return queue_.size() <= capacity_ / 2 || stopping_; });
  producer_waiting_ = false;
  if (!drained) stalled_at_ = batches_taken_;
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

void SinkWorker::collect_tally() {
  if (!tallies_) return;
  const SinkTally tally = sink_->take_tally();
  written_.fetch_add(tally.written, std::memory_order_relaxed);
  write_failures_.fetch_add(tally.failed, std::memory_order_relaxed);
}

void SinkWorker::request_reopen() {
  {
    std::lock_guard lock(mutex_);
    reopen_requested_ = true;
  }
  wake_.notify_one();
}

void SinkWorker::run() {
  std::vector<PooledEvent*> batch;
  for (;;) {
    bool reopen = false;
    {
      std::unique_lock lock(mutex_);
      sleeping_ = true;
      const bool woken = wake_.wait_for(
          lock, kIdleFlush, [&] { return stopping_ || reopen_requested_ || !queue_.empty(); });
      sleeping_ = false;
      if (queue_.empty() && stopping_) break;
      reopen = std::exchange(reopen_requested_, false);
      if (!woken || queue_.empty()) {
        lock.unlock();
        if (reopen && can_reopen_) report(sink_->reopen(), "reopen");
        if (!woken) report(sink_->flush(), "flush");
        collect_tally();
        continue;
      }
      // A bounded share at a time: the poller, which may wait for room, hears
      // of progress every few hundred microseconds instead of once per
      // full queue.
      const std::size_t take = std::min(queue_.size(), kSinkChunk);
      batch.assign(queue_.begin(), queue_.begin() + static_cast<long>(take));
      queue_.erase(queue_.begin(), queue_.begin() + static_cast<long>(take));
      ++batches_taken_;
      if (producer_waiting_) drained_.notify_one();
    }
    // Before the batch: its events belong in the new file.
    if (reopen && can_reopen_) report(sink_->reopen(), "reopen");
    std::uint64_t written = 0, failed = 0;
    for (PooledEvent* event : batch) {
      Status s = sink_->write(event->event);
      if (s) {
        ++written;
      } else {
        ++failed;
        report(s, "write");
      }
    }
    if (!tallies_) {
      written_.fetch_add(written, std::memory_order_relaxed);
      write_failures_.fetch_add(failed, std::memory_order_relaxed);
    }
    release(batch);
    bool idle;
    {
      std::lock_guard lock(mutex_);
      idle = queue_.empty();
    }
    if (idle) report(sink_->flush(), "flush");
    collect_tally();
  }
  report(sink_->flush(), "flush");
  report(sink_->close(), "close");
  collect_tally();
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

const EventFilter::Positions& EventFilter::positions(const EventSchema* schema) const {
  auto it = positions_.find(schema);
  if (it != positions_.end()) return it->second;
  Positions p;
  p.pid = schema->index_of("pid");
  p.sport = schema->index_of("sport");
  p.dport = schema->index_of("dport");
  p.family = schema->index_of("family");
  p.saddr = schema->index_of("saddr");
  p.daddr = schema->index_of("daddr");
  return positions_.emplace(schema, p).first->second;
}

bool EventFilter::accepts(const Event& event) const {
  if (!active_) return true;
  const Positions& p = positions(event.schema);
  const auto value = [&](int index) -> const Value* {
    return index >= 0 && static_cast<std::size_t>(index) < event.values.size()
               ? &event.values[static_cast<std::size_t>(index)]
               : nullptr;
  };
  if (filter_.pid && p.pid >= 0) {
    const Value* v = value(p.pid);
    const auto* pid = v ? std::get_if<std::uint64_t>(v) : nullptr;
    if (!pid || *pid != filter_.pid) return false;
  }
  const auto port_ok = [&](int index, const std::vector<std::uint16_t>& ports) {
    if (ports.empty() || index < 0) return true;
    const Value* v = value(index);
    const auto* port = v ? std::get_if<std::uint64_t>(v) : nullptr;
    return !port || std::find(ports.begin(), ports.end(), *port) != ports.end();
  };
  if (!port_ok(p.sport, filter_.sports) || !port_ok(p.dport, filter_.dports)) return false;
  // Events show addresses as text; an event without one (or with text that is
  // no address, e.g. "*") passes, as one without a port does.
  const auto address_ok = [&](int index, const std::vector<AddressNet>& nets) {
    if (nets.empty() || index < 0) return true;
    const Value* v = value(index);
    const auto* text = v ? std::get_if<std::string>(v) : nullptr;
    if (!text) return true;
    std::uint8_t address[16] = {};
    int family = 0;
    if (inet_pton(AF_INET, text->c_str(), address) == 1)
      family = 4;
    else if (inet_pton(AF_INET6, text->c_str(), address) == 1)
      family = 6;
    else
      return true;
    return std::any_of(nets.begin(), nets.end(),
                       [&](const AddressNet& net) { return net.contains(family, address); });
  };
  if (!address_ok(p.saddr, filter_.local_nets) || !address_ok(p.daddr, filter_.remote_nets))
    return false;
  if (filter_.family && p.family >= 0) {
    const Value* v = value(p.family);
    const auto* family = v ? std::get_if<std::string>(v) : nullptr;
    if (family && *family != (filter_.family == 4 ? "ipv4" : "ipv6")) return false;
  }
  return true;
}

Bus::~Bus() {
  stop();
}

Status Bus::add(std::unique_ptr<SinkWorker> worker, const SinkContext& context) {
  if (Status s = worker->start(context, pool_); !s) return s;
  workers_.push_back(std::move(worker));
  pending_.resize(workers_.size());
  return Status::success();
}

PooledEvent* Bus::take() {
  if (free_.empty()) pool_.take(free_, kBatch);
  PooledEvent* event = free_.back();
  free_.pop_back();
  return event;
}

std::vector<Value> Bus::make_values(std::size_t size) {
  std::vector<Value> values;
  if (!spare_storage_.empty()) {
    values = std::move(spare_storage_.back());
    spare_storage_.pop_back();
    values.clear();
  }
  values.resize(size);
  return values;
}

bool Bus::publish(const EventSchema* schema, std::uint64_t timestamp_ns,
                  std::vector<Value>&& values) {
  PooledEvent* pooled = take();
  Event& event = pooled->event;
  event.schema = schema;
  event.timestamp_ns = timestamp_ns;
  // The event's old storage goes back to make_values() for the next one.
  event.values.swap(values);
  if (values.capacity() && spare_storage_.size() < kMaxSpareStorage)
    spare_storage_.push_back(std::move(values));
  if (!filter_.accepts(event)) {
    free_.push_back(pooled);
    return false;
  }
  std::uint32_t holders = 0;
  for (std::size_t i = 0; i < workers_.size(); ++i) {
    if (!workers_[i]->wants(schema->plugin)) continue;
    pending_[i].push_back(pooled);
    ++holders;
  }
  if (!holders) {
    free_.push_back(pooled);
    return true;
  }
  // Set before flush() hands the event to any sink thread.
  pooled->holders.store(holders, std::memory_order_relaxed);
  if (++pending_events_ >= kBatch) flush();
  return true;
}

void Bus::flush() {
  const bool may_wait = backpressure_timeout_ > std::chrono::steady_clock::duration::zero();
  // Waiting before the push: a batch pushed into a full queue would be dropped.
  // push() publishes the holder counts to the sink threads under their lock.
  for (std::size_t i = 0; i < workers_.size(); ++i) {
    if (pending_[i].empty()) continue;
    if (may_wait) workers_[i]->wait_for_room(backpressure_timeout_);
    workers_[i]->push(pending_[i]);
  }
  pending_events_ = 0;
}

void Bus::reopen_sinks() {
  for (auto& worker : workers_) worker->request_reopen();
}

void Bus::stop() {
  flush();
  for (auto& worker : workers_) worker->stop();
}

}  // namespace netwatcher::host
