// Current metrics for sink threads, computed on the poller thread.
//
// What a scrape reports lives in host state that only the poller thread may
// touch: the running plugins (whose code is not thread-safe), their BPF maps,
// the bus's sinks. So a sink thread asking for metrics never reads that state
// itself: it asks the poller to refresh the metric store, waits a bounded
// time, and then copies the store (which is thread-safe). While the poller is
// not serving (start-up, shutdown) it gets the store as it is, at once.
//
// A refresh younger than `max_age` is reused, so a storm of scrapes costs at
// most one refresh per `max_age`. Header-only: the host's sources are listed
// one by one in its CMakeLists.txt.
#pragma once

#include <sys/eventfd.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>

#include "netwatcher/metrics.hpp"

namespace netwatcher::host {

class MetricsRefresher {
 public:
  using clock = std::chrono::steady_clock;

  // `snapshot` copies the store; it must be thread-safe.
  MetricsRefresher(std::function<MetricsSnapshot()> snapshot, clock::duration max_wait,
                   clock::duration max_age)
      : snapshot_(std::move(snapshot)),
        max_wait_(max_wait),
        max_age_(max_age),
        wake_fd_(eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) {}
  ~MetricsRefresher() {
    if (wake_fd_ >= 0) close(wake_fd_);
  }
  MetricsRefresher(const MetricsRefresher&) = delete;
  MetricsRefresher& operator=(const MetricsRefresher&) = delete;

  // Any thread: the store, refreshed first when the poller serves and the
  // last refresh is older than max_age (waiting at most max_wait for it).
  MetricsSnapshot metrics() {
    std::unique_lock lock(mutex_);
    if (serving_ && (!served_one_ || clock::now() - last_refresh_ >= max_age_)) {
      if (std::this_thread::get_id() == poller_) {
        // Asked on the poller thread itself (a sink doing it from there).
        lock.unlock();
        run_pending(true);
        lock.lock();
      } else {
        if (requested_ == completed_) {
          ++requested_;
          pending_.store(true, std::memory_order_release);
          const std::uint64_t one = 1;
          if (wake_fd_ >= 0) (void)!write(wake_fd_, &one, sizeof one);
        }
        const std::uint64_t wanted = requested_;
        done_.wait_for(lock, max_wait_, [&] { return completed_ >= wanted || !serving_; });
      }
    }
    lock.unlock();
    return snapshot_();
  }

  // Poller: readable when a refresh is wanted; add it to the poller's epoll set.
  int wake_fd() const { return wake_fd_; }

  // Poller: from now on, requests are served by calling `refresh` from
  // run_pending() on this thread. The first request always refreshes: a
  // refresh the poller ran before serving (at start-up) shows the counts of
  // then, not of the first scrape.
  void serve(std::function<void()> refresh) {
    std::lock_guard lock(mutex_);
    refresh_ = std::move(refresh);
    poller_ = std::this_thread::get_id();
    serving_ = true;
    served_one_ = false;
  }

  // Poller: no more refreshes; waiting requests return with the store as it is.
  void stop_serving() {
    {
      std::lock_guard lock(mutex_);
      serving_ = false;
      refresh_ = nullptr;
    }
    done_.notify_all();
  }

  // Poller: whether a request waits (cheap; call after every wakeup).
  bool pending() const { return pending_.load(std::memory_order_acquire); }

  // Poller: runs the refresh if one is wanted (or `force`), then wakes the
  // waiting requests.
  void run_pending(bool force = false) {
    std::uint64_t serving_request;
    {
      std::lock_guard lock(mutex_);
      if (!serving_ || (!force && requested_ == completed_)) return;
      serving_request = requested_;
      pending_.store(false, std::memory_order_relaxed);
      std::uint64_t drained;
      if (wake_fd_ >= 0) (void)!read(wake_fd_, &drained, sizeof drained);
    }
    const auto started = clock::now();
    refresh_();  // only this thread sets or clears refresh_
    {
      std::lock_guard lock(mutex_);
      completed_ = std::max(completed_, serving_request);
      last_refresh_ = started;
      served_one_ = true;
      refreshes_ += 1;
    }
    done_.notify_all();
  }

  // Refreshes run so far (for tests).
  std::uint64_t refreshes() const {
    std::lock_guard lock(mutex_);
    return refreshes_;
  }

 private:
  const std::function<MetricsSnapshot()> snapshot_;
  const clock::duration max_wait_, max_age_;
  const int wake_fd_;
  mutable std::mutex mutex_;
  std::condition_variable done_;
  std::function<void()> refresh_;
  std::thread::id poller_;
  bool serving_ = false;
  bool served_one_ = false;  // a refresh since serve()
  std::uint64_t requested_ = 0, completed_ = 0, refreshes_ = 0;
  clock::time_point last_refresh_{};
  std::atomic<bool> pending_{false};
};

}  // namespace netwatcher::host
