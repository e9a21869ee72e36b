// When the kernel's BPF run-time statistics are on. They are system-wide: while
// on, every BPF program on the host (not only netwatcher's) pays two clock
// reads per run, ~85 ns on the 2-vCPU VM of bench/RESULTS.md. "sampled" keeps
// them on for one window per period, so ns per run stays exact while the cost
// shrinks by the duty cycle.
#pragma once

#include <chrono>

namespace netwatcher::host {

enum class BpfStatsMode { off, sampled, always };

class StatsSampler {
 public:
  using clock = std::chrono::steady_clock;
  static constexpr std::chrono::seconds kWindow{1}, kPeriod{30};

  StatsSampler(BpfStatsMode mode, clock::time_point start) : mode_(mode), start_(start) {}
  // Whether statistics should be on at `now`: always, never, or during the
  // first kWindow of every kPeriod since start (so the first window covers
  // start-up and --check right after it has numbers).
  bool wanted(clock::time_point now) const {
    if (mode_ != BpfStatsMode::sampled) return mode_ == BpfStatsMode::always;
    return (now - start_) % kPeriod < kWindow;
  }

 private:
  BpfStatsMode mode_;
  clock::time_point start_;
};

}  // namespace netwatcher::host
