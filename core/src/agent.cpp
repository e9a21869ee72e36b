#include "agent.hpp"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <functional>

#include <spdlog/spdlog.h>

#include "bus.hpp"
#include "capabilities.hpp"
#include "metrics_refresh.hpp"
#include "stats_sampler.hpp"

namespace netwatcher::host {

namespace {

using clock = std::chrono::steady_clock;

// The kernel keeps run-time statistics while any BPF_ENABLE_STATS fd is open
// (or the kernel.bpf_stats_enabled sysctl is 1); the loop opens and closes
// ours as the sampler says.
class BpfStatsSwitch {
 public:
  BpfStatsSwitch(const BpfStatsSwitch&) = delete;
  BpfStatsSwitch& operator=(const BpfStatsSwitch&) = delete;
  BpfStatsSwitch() = default;
  ~BpfStatsSwitch() { set(false); }

  void set(bool on) {
    if (on && fd_ < 0) {
      fd_ = bpf_enable_stats(BPF_STATS_RUN_TIME);
      if (fd_ < 0 && !warned_) {
        warned_ = true;
        spdlog::warn(
            "cannot enable BPF run-time statistics ([netwatcher] bpf_stats): {}; "
            "netwatcher_bpf_program_* stay at 0",
            std::strerror(errno));
      }
    } else if (!on && fd_ >= 0) {
      close(fd_);
      fd_ = -1;
    }
  }

 private:
  int fd_ = -1;
  bool warned_ = false;
};

// The ring buffers' epoll set, and the refresher's wakeup: a scrape does not
// wait for the next tick.
class EpollSet {
 public:
  EpollSet(const EpollSet&) = delete;
  EpollSet& operator=(const EpollSet&) = delete;
  EpollSet() : fd_(epoll_create1(EPOLL_CLOEXEC)) {}
  ~EpollSet() {
    if (fd_ >= 0) close(fd_);
  }
  bool ok() const { return fd_ >= 0; }
  int fd() const { return fd_; }
  void add(int watched) const {
    epoll_event event{};
    event.events = EPOLLIN;
    event.data.fd = watched;
    if (fd_ >= 0 && watched >= 0 && epoll_ctl(fd_, EPOLL_CTL_ADD, watched, &event) != 0)
      spdlog::warn("epoll_ctl: {}", std::strerror(errno));
  }

 private:
  int fd_;
};

class Agent {
 public:
  Agent(const Config& config, const StartupPlan& plan, MetricStore& store, OwnMetrics& own)
      : config_(config),
        plan_(plan),
        own_(own),
        refresher_([&store] { return store.snapshot(); }, std::chrono::milliseconds(500),
                   std::chrono::seconds(1)),
        bus_(config.filter),
        stats_sampler_(config.settings.bpf_stats, clock::now()) {}

  // Sinks first, so a broken sink stops start-up before anything is attached.
  bool start_sinks() {
    auto metrics_source = [this]() { return refresher_.metrics(); };
    contexts_.reserve(plan_.sinks.size());
    for (const auto& planned : plan_.sinks) {
      SinkContext& context = contexts_.emplace_back(planned.context);
      context.metrics = metrics_source;
      auto sink = create_sink(*planned.component);
      if (!sink) {
        spdlog::critical("{}", sink.status().message());
        return false;
      }
      auto worker = std::make_unique<SinkWorker>(context.instance, sink.take(), planned.routed,
                                                 config_.settings.sink_queue_capacity,
                                                 planned.component->abi_minor);
      if (Status s = bus_.add(std::move(worker), context); !s) {
        spdlog::critical("{}", s.message());
        return false;
      }
    }
    return true;
  }

  // Brings up every enabled plugin; those that fail are logged, reported as
  // down and left out. False when none could start.
  bool attach_plugins(const KernelFeatures& features) {
    bpf_stats_.set(stats_sampler_.wanted(clock::now()));
    started_at_ = clock::now();
    for (ProbeRuntime* runtime : plan_.enabled) {
      Status s = bring_up_planned(*runtime, plan_, config_, features, &bus_);
      if (s) s = runtime->add_to_poller(&poller_, bus_);
      own_.set_plugin_state(runtime->name(), s.ok(), runtime->hook_reports());
      if (!s) {
        spdlog::error("plugin '{}' disabled: {}", runtime->name(), s.message());
        runtime->shut_down();
        continue;
      }
      running_.push_back(runtime);
    }
    // Protocol plugins see nothing without the shared capture: say so, and
    // do not report them as running.
    const bool capture_running = std::any_of(running_.begin(), running_.end(),
                                             [](auto* r) { return r->name() == kL7CapturePlugin; });
    if (!capture_running)
      std::erase_if(running_, [&](ProbeRuntime* runtime) {
        if (!runtime->uses_l7_capture()) return false;
        spdlog::error("plugin '{}' disabled: the shared L7 capture (plugin '{}') is not running",
                      runtime->name(), kL7CapturePlugin);
        own_.set_plugin_state(runtime->name(), false, runtime->hook_reports());
        runtime->shut_down();
        return true;
      });
    for (const auto& name : plan_.configured_but_refused) own_.set_plugin_state(name, false, {});
    if (running_.empty() && !plan_.enabled.empty()) {
      spdlog::critical("no plugin could start; see the errors above and `netwatcher --check`");
      return false;
    }
    return true;
  }

  // Everything is attached and every netfilter link made (plugins' start()):
  // from here on only what keep_capabilities names is needed.
  bool drop_capabilities() const {
    CapabilityDrop dropped;
    if (Status s = host::drop_capabilities(config_.settings.keep_capabilities, dropped); !s) {
      spdlog::critical("{}; stopping ([netwatcher] keep_capabilities)", s.message());
      return false;
    }
    for (const auto& warning : dropped.warnings)
      spdlog::warn("capabilities ([netwatcher] keep_capabilities): {}", warning);
    spdlog::info(
        "capabilities kept: {} (every other one dropped in every thread); no_new_privs set",
        capability_names(dropped.kept));
    return true;
  }

  // Serves scrapes from here on; the first sees every family with its
  // current series.
  void serve_metrics() {
    refresh_metrics();
    refresher_.serve([this] { refresh_metrics(); });
    spdlog::info(
        "netwatcher {} running: {} plugin(s), {} sink(s), attached in {} ms", NETWATCHER_VERSION,
        running_.size(), bus_.workers().size(),
        std::chrono::duration_cast<std::chrono::milliseconds>(clock::now() - started_at_).count());
  }

  // Reads the ring buffers and takes snapshots until `signals.stop` or the
  // deadline. False only when the epoll set cannot be made.
  bool poll(clock::time_point deadline, StopSignals signals) {
    const auto interval = std::chrono::duration_cast<clock::duration>(
        std::chrono::duration<double>(config_.settings.snapshot_interval_s));
    // Records wake the poller only once wakeup_bytes wait (common.bpf.h); the
    // rest are read on the poll_interval tick, so a burst costs a few wakeups
    // and a few reads, not one of each per record.
    const int poll_ms = std::max(1, static_cast<int>(config_.settings.poll_interval_s * 1000));
    EpollSet epoll_set;
    if (!epoll_set.ok()) {
      spdlog::critical("epoll_create1: {}", std::strerror(errno));
      return false;
    }
    if (poller_) epoll_set.add(ring_buffer__epoll_fd(poller_));
    epoll_set.add(refresher_.wake_fd());
    // A sink more than half full holds the poller back for up to a poll
    // interval at a time; meanwhile records wait in the ring buffers.
    const auto backpressure =
        std::chrono::duration_cast<clock::duration>(std::chrono::milliseconds(poll_ms));
    auto next_collect = clock::now() + interval;
    auto last_rates = clock::now();
    while (!signals.stop.load() && clock::now() < deadline) {
      if (signals.reopen.exchange(false)) {
        spdlog::info("SIGHUP: reopening the sinks' files");
        bus_.reopen_sinks();
      }
      epoll_event ready[4];
      int n = epoll_wait(epoll_set.fd(), ready, 4, poller_ ? poll_ms : 100);
      if (n < 0 && errno != EINTR) {
        spdlog::error("ring buffer poll failed: {}", std::strerror(errno));
        break;
      }
      // Before reading: the fill gauges show what waited when scraped.
      if (refresher_.pending()) refresher_.run_pending();
      if (poller_ && !read_rings(backpressure)) break;
      bpf_stats_.set(stats_sampler_.wanted(clock::now()));
      if (clock::now() >= next_collect) {
        for (ProbeRuntime* runtime : running_) runtime->collect(bus_);
        own_.update_tables();
        bus_.flush();
        const auto now = clock::now();
        own_.update_rates(running_, std::chrono::duration<double>(now - last_rates).count());
        last_rates = now;
        next_collect += interval;
        if (next_collect < clock::now()) next_collect = clock::now() + interval;
      }
    }
    return true;
  }

  // Detaches, reads what was produced before, gives the sinks their last
  // output and logs what each plugin and sink produced and lost.
  void stop() {
    spdlog::info("shutting down");
    // Scrapes from now on get the store as it is, without waiting.
    refresher_.stop_serving();
    for (ProbeRuntime* runtime : running_) runtime->detach();
    if (poller_) {
      ring_buffer__consume(poller_);  // records produced before detach still count
      bus_.flush();
      ring_buffer__free(poller_);
      poller_ = nullptr;
    }
    // Final values for the sinks' last output (e.g. the textfile at close).
    refresh_metrics();
    bus_.stop();
    log_totals();
    // The L7 capture (started last) stops before the protocol plugins it calls.
    for (auto it = running_.rbegin(); it != running_.rend(); ++it) (*it)->shut_down();
    running_.clear();
  }

  // For a start-up that fails half-way: nothing was served yet.
  void abandon() {
    refresher_.stop_serving();
    bus_.stop();
    for (ProbeRuntime* runtime : running_) runtime->shut_down();
    running_.clear();
    if (poller_) ring_buffer__free(poller_);
    poller_ = nullptr;
  }

 private:
  // Poller thread only (see MetricsRefresher).
  void refresh_metrics() {
    for (ProbeRuntime* runtime : running_) runtime->refresh_metrics();
    own_.refresh(running_, bus_);
  }

  bool read_rings(clock::duration backpressure) {
    // Backpressure moves a burst from a sink queue into the ring buffers;
    // once a ring is a quarter full, there is no room left to move it to.
    double fullest = 0;
    for (ProbeRuntime* runtime : running_) fullest = std::max(fullest, runtime->note_ring_fill());
    bus_.set_backpressure_timeout(fullest < 0.25 ? backpressure : clock::duration::zero());
    int consumed = ring_buffer__consume(poller_);
    if (consumed < 0) {
      spdlog::error("ring buffer read failed: {}", std::strerror(-consumed));
      return false;
    }
    bus_.flush();
    return true;
  }

  // What an operator (and bench/) needs to know whether anything was lost.
  void log_totals() const {
    for (ProbeRuntime* runtime : running_) {
      std::uint64_t events = 0;
      for (std::size_t i = 0; i < runtime->schemas().size(); ++i) events += runtime->events(i);
      spdlog::info(
          "plugin '{}': {} events, {} lost in the kernel, {} suppressed, {} decode errors, {} "
          "filtered, ring buffer at most {:.0f}% full",
          runtime->name(), events, runtime->lost_events(), runtime->suppressed_events(),
          runtime->decode_errors(), runtime->filtered(), runtime->ring_fill_peak() * 100);
      for (const auto& program : runtime->program_stats())
        if (program.missed_runs)
          spdlog::warn(
              "plugin '{}': the kernel skipped {} runs of {} (it was already running on that "
              "CPU, interrupted, or for a classic tracepoint another BPF program was): what they "
              "would have recorded is missing",
              runtime->name(), program.missed_runs, program.program);
      for (const auto& table : runtime->table_usage())
        if (table.refused || table.evicted)
          spdlog::warn("plugin '{}': table '{}' ({} entries) refused {} and evicted {}; raise {}",
                       runtime->name(), table.table, table.capacity, table.refused, table.evicted,
                       table.raise_key);
    }
    for (const auto& table : own_.anomaly_usage())
      if (table.evicted)
        spdlog::warn("anomaly detector: {} series ({} entries) evicted {}; raise {}", table.table,
                     table.capacity, table.evicted, table.raise_key);
    for (const auto& worker : bus_.workers())
      spdlog::info(
          "sink '{}': {} written, {} dropped on a full queue, {} lost to write errors, {} "
          "errors",
          worker->instance(), worker->written(), worker->dropped(), worker->write_failures(),
          worker->errors());
  }

  const Config& config_;
  const StartupPlan& plan_;
  OwnMetrics& own_;
  // Declared before the bus so that they outlive every sink that reads them.
  std::vector<SinkContext> contexts_;
  MetricsRefresher refresher_;
  Bus bus_;
  BpfStatsSwitch bpf_stats_;
  const StatsSampler stats_sampler_;
  clock::time_point started_at_;
  ring_buffer* poller_ = nullptr;
  std::vector<ProbeRuntime*> running_;
};

}  // namespace

int run_agent(const Config& config, double duration_s, const StartupPlan& plan,
              const KernelFeatures& features, MetricStore& store, OwnMetrics& own,
              StopSignals signals) {
  if (geteuid() != 0)
    spdlog::warn(
        "not running as root: loading BPF programs needs CAP_BPF, CAP_PERFMON and "
        "CAP_NET_ADMIN");
  Agent agent(config, plan, store, own);
  // Every plugin that should run reads 0 until it is attached: a readiness
  // probe (the prometheus sink's /readyz) answers from these before and after.
  for (ProbeRuntime* runtime : plan.enabled) own.set_plugin_state(runtime->name(), false, {});
  if (!agent.start_sinks()) {
    agent.abandon();
    return 2;
  }
  if (!agent.attach_plugins(features) || !agent.drop_capabilities()) {
    agent.abandon();
    return 1;
  }
  agent.serve_metrics();
  const auto deadline = duration_s > 0
                            ? clock::now() + std::chrono::duration_cast<clock::duration>(
                                                 std::chrono::duration<double>(duration_s))
                            : clock::time_point::max();
  if (!agent.poll(deadline, signals)) {
    agent.abandon();
    return 1;
  }
  agent.stop();
  return 0;
}

}  // namespace netwatcher::host
