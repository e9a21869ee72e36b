// Routes events from plugins to sinks through one bounded queue per sink.
//
// The steady state allocates nothing per event: events and their value vectors
// are recycled through an EventPool, the poller hands events to the sinks in
// batches (one lock and at most one wakeup per sink and batch), and each sink
// thread gives the events it is done with back in one go.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
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

// An event plus how many sinks still hold it; the last one recycles it.
struct PooledEvent {
  Event event;
  std::atomic<std::uint32_t> holders{0};
};

// Every PooledEvent ever made, and the free ones. Thread-safe; callers move
// events in and out in batches so the lock is taken once per batch.
class EventPool {
 public:
  // Appends `count` free events to `into`, making new ones when none are free.
  void take(std::vector<PooledEvent*>& into, std::size_t count);
  // Returns every event in `events` (which ends empty) to the free list.
  void give_back(std::vector<PooledEvent*>& events);
  std::size_t created() const;

 private:
  mutable std::mutex mutex_;
  std::deque<PooledEvent> storage_;  // deque: addresses stay valid as it grows
  std::vector<PooledEvent*> free_;
};

class SinkWorker {
 public:
  // `abi_minor`: the sink's, from its descriptor (the loader accepts only
  // this host's major). Every 3.x sink has tallies_writes(), take_tally()
  // and reopen() (they came with 2.3), so nothing is gated on it yet; entries
  // a later minor appends to Sink are called only when it is that minor or
  // more.
  SinkWorker(std::string instance, std::shared_ptr<Sink> sink,
             std::optional<std::set<std::string>> plugins, std::size_t capacity,
             unsigned abi_minor = NETWATCHER_ABI_MINOR);
  ~SinkWorker();

  // How often an idle sink is flushed anyway, so that it notices a removed
  // output file (and lets go of its space) without waiting for an event.
  static constexpr std::chrono::seconds kIdleFlush{1};

  // Opens the sink on the calling thread (start-up errors must stop start-up),
  // then starts the worker thread. `pool` takes back written events.
  Status start(const SinkContext& context, EventPool& pool);
  bool wants(const std::string& plugin) const { return !plugins_ || plugins_->count(plugin); }
  // Queues the events of `batch` (which ends empty) and wakes the thread if it
  // sleeps. Never blocks on the sink: what does not fit in the queue is
  // dropped, counted and released.
  void push(std::vector<PooledEvent*>& batch);
  // Backpressure for the poller: waits until the queue is at most half full
  // (returns at once when it is), for up to `timeout`. Lets a sink sharing the
  // poller's core catch up while the backlog waits in the kernel's ring
  // buffer, which is sized for it, instead of dropping here. A sink that does
  // not drain within the timeout is marked stalled and not waited for again
  // until it takes another batch, so a hung sink cannot slow the others down.
  void wait_for_room(std::chrono::steady_clock::duration timeout);
  // Any thread (the main loop, on SIGHUP): the sink thread calls the sink's
  // reopen() before its next batch, or at once when idle.
  void request_reopen();
  // Writes everything queued, flushes, closes, and joins the thread.
  void stop();

  const std::string& instance() const { return instance_; }
  // Events dropped because the queue was full.
  std::uint64_t dropped() const { return dropped_.load(std::memory_order_relaxed); }
  // Events the sink could not write (see SinkTally); never also in written().
  std::uint64_t write_failures() const { return write_failures_.load(std::memory_order_relaxed); }
  // Events whose bytes reached the sink's output.
  std::uint64_t written() const { return written_.load(std::memory_order_relaxed); }
  std::uint64_t errors() const { return errors_.load(std::memory_order_relaxed); }
  std::size_t depth() const;
  std::size_t capacity() const { return capacity_; }

 private:
  void run();
  void report(const Status& status, const char* what);
  // Adds what the sink says became of its events (sinks that tally).
  void collect_tally();
  // Drops one hold on each event; those no sink holds any more go back to the pool.
  void release(std::vector<PooledEvent*>& events);

  std::string instance_;
  std::shared_ptr<Sink> sink_;
  std::optional<std::set<std::string>> plugins_;
  std::size_t capacity_;
  bool tallies_ = false;     // the sink counts its written events itself
  bool can_reopen_ = false;  // the sink has reopen() (every ABI 3.x sink)
  EventPool* pool_ = nullptr;
  mutable std::mutex mutex_;
  std::condition_variable wake_, drained_;
  std::deque<PooledEvent*> queue_;
  bool sleeping_ = false;
  bool producer_waiting_ = false;
  std::uint64_t batches_taken_ = 0;   // under mutex_: progress for wait_for_room()
  std::uint64_t stalled_at_ = ~0ULL;  // batches_taken_ when last found stalled
  bool stopping_ = false;
  bool reopen_requested_ = false;  // under mutex_
  bool started_ = false;
  std::thread thread_;
  std::atomic<std::uint64_t> dropped_{0}, written_{0}, errors_{0}, write_failures_{0};
  std::chrono::steady_clock::time_point last_error_log_{};
};

// Host-side filter on events that carry pid / sport / dport / saddr / daddr /
// family fields.
class EventFilter {
 public:
  explicit EventFilter(GlobalFilter filter)
      : filter_(std::move(filter)),
        active_(filter_.pid || !filter_.sports.empty() || !filter_.dports.empty() ||
                filter_.family || !filter_.local_nets.empty() || !filter_.remote_nets.empty()) {}
  bool accepts(const Event& event) const;

 private:
  // Where the filtered fields are in one schema (-1: not there).
  struct Positions {
    int pid = -1, sport = -1, dport = -1, family = -1, saddr = -1, daddr = -1;
  };
  const Positions& positions(const EventSchema* schema) const;

  GlobalFilter filter_;
  bool active_;  // false: every event passes without looking at its fields
  mutable std::map<const EventSchema*, Positions> positions_;
};

class Bus {
 public:
  explicit Bus(GlobalFilter filter) : filter_(std::move(filter)) {}
  ~Bus();
  // Opens the sink and starts its thread. On failure the worker is discarded
  // and the Status names the sink.
  Status add(std::unique_ptr<SinkWorker> worker, const SinkContext& context);

  // Producer side: make_values(), publish() and flush() are for one thread
  // only, the poller.
  //
  // `size` absent values in recycled storage.
  std::vector<Value> make_values(std::size_t size);
  // Makes a pooled event of `values` (whose storage is kept for
  // make_values()); false when the host filter refused it. Accepted events
  // wait in a batch per sink until flush().
  bool publish(const EventSchema* schema, std::uint64_t timestamp_ns, std::vector<Value>&& values);
  // Hands the waiting batches to the sinks. Call after every poll round.
  // Before pushing to a queue more than half full it waits (see
  // SinkWorker::wait_for_room) for up to the backpressure timeout.
  void flush();

  // How long flush() may wait for one sink to drain; zero (the default)
  // never waits. The poller sets its poll interval.
  void set_backpressure_timeout(std::chrono::steady_clock::duration timeout) {
    backpressure_timeout_ = timeout;
  }

  void stop();
  // SIGHUP: every sink reopens its files (SinkWorker::request_reopen).
  void reopen_sinks();
  const std::vector<std::unique_ptr<SinkWorker>>& workers() const { return workers_; }
  const EventPool& pool() const { return pool_; }

 private:
  PooledEvent* take();  // a free event, from the producer's cache

  EventFilter filter_;
  EventPool pool_;
  std::vector<std::unique_ptr<SinkWorker>> workers_;
  std::vector<PooledEvent*> free_;  // producer-side cache of free events
  std::vector<std::vector<Value>> spare_storage_;
  std::vector<std::vector<PooledEvent*>> pending_;  // one batch per worker
  std::size_t pending_events_ = 0;
  std::chrono::steady_clock::duration backpressure_timeout_{};
};

}  // namespace netwatcher::host
