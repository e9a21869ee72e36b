// netwatcher SDK: sinks.
//
// A sink is a shared object like a probe plugin (same descriptor, kind = sink)
// that writes events and metrics somewhere. Sinks are generic: they learn the
// shape of events only from EventSchema, never from plugin-specific code.
//
//   class JsonSink { ... };   // methods of Sink, may throw
//   NETWATCHER_SINK(JsonSink, "json", "1.0.0", "JSON Lines");
//
// Threading: each configured sink instance gets its own thread and a bounded
// queue. open(), write(), flush(), close() and, from ABI 2.3, take_tally()
// and reopen() are all called from that thread; a slow sink only fills its
// own queue (overflow is counted by the host). `SinkContext::metrics` may be
// called from any thread the sink owns.
//
// Counting (ABI 2.3): an event counts as written (netwatcher_sink_events_total)
// only once its bytes reached the output. A sink that buffers declares
// `SinkTally take_tally()` on its class: the host then asks it, after every
// batch and flush, what became of the events it was given since the last
// call, and counts the failed ones as dropped with reason "write_error". A
// sink without take_tally() is counted by the host: each write() that
// succeeded is written, each one that failed is dropped.
#pragma once

#include <concepts>
#include <cstdint>
#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

#include "netwatcher/config.hpp"
#include "netwatcher/descriptor.hpp"
#include "netwatcher/event.hpp"
#include "netwatcher/metrics.hpp"
#include "netwatcher/status.hpp"

namespace netwatcher {

struct SinkDescription {
  std::vector<ConfigKey> config;  // `type`, `name` and `plugins` are reserved by the host
};

struct SinkContext {
  std::string instance;  // `name` from the config, or "<type>" / "<type>#N"
  ConfigValues config;   // validated, defaults filled in
  // Schemas of every event this instance may receive (after routing). Owned by
  // the host; valid until close() returns.
  std::vector<const EventSchema*> schemas;
  // Current value of every metric family (plugins' and netwatcher's own).
  // Thread-safe; valid until close() returns. The host's poller thread
  // refreshes the values first (at most once a second, however often this
  // is called), so a call may wait up to about 0.5 s: call it from a thread
  // of the sink's own rather than from write().
  std::function<MetricsSnapshot()> metrics;
};

// What became of the events given to write() since the previous take_tally()
// (ABI 2.3). Every event is counted once, in one of the two, when its fate is
// known; events still buffered are in neither yet.
struct SinkTally {
  std::uint64_t written = 0;  // their bytes reached the output
  std::uint64_t failed = 0;   // they are gone: a write or flush failed, or no file could be opened
};

class Sink {
 public:
  virtual ~Sink() = default;
  // ABI 3.0. Writes the sink's config keys into `out`. Thread: the host's main
  // thread, right after the factory, before open(); the host keeps its copy.
  // Error: a failed Status (the adapter turns an exception of the sink's
  // describe() into one) refuses the sink type: "sink 'x': describe() failed:
  // <message>", and a [[sinks]] entry of that type is then a start-up error.
  virtual Status describe(SinkDescription& out) const noexcept = 0;
  // For tests and tools: the description, or std::runtime_error with the
  // failure. The host always calls the Status form above.
  SinkDescription describe() const {
    SinkDescription description;
    if (Status s = describe(description); !s) throw std::runtime_error(s.message());
    return description;
  }
  // Prepare outputs (open files, bind sockets). A failure here is a start-up
  // error that names the sink and the reason.
  virtual Status open(const SinkContext& context) noexcept = 0;
  // Write one event. A failure is counted and logged (rate-limited); the sink
  // stays in service and is asked again with the next event.
  virtual Status write(const Event& event) noexcept = 0;
  // Called when the queue runs empty and on shutdown.
  virtual Status flush() noexcept = 0;
  virtual Status close() noexcept = 0;

  // ABI 2.3 (the host calls these only on sinks built for 2.3 or later).
  //
  // True when take_tally() reports what was written; false: the host counts
  // the results of write() instead.
  virtual bool tallies_writes() const noexcept { return false; }
  // See SinkTally. Never fails.
  virtual SinkTally take_tally() noexcept { return {}; }
  // SIGHUP: let go of every output file and open it again by its path (after
  // logrotate moved it away, a new one is started). Nothing else is re-read.
  // A failure is counted and logged like a failed flush; the sink stays in
  // service and tries again with its next write.
  virtual Status reopen() noexcept { return Status::success(); }
};

namespace detail {

template <class Impl>
class GuardedSink final : public Sink {
 public:
  Status describe(SinkDescription& out) const noexcept override {
    try {
      out = impl_.describe();
      return Status::success();
    } catch (const std::exception& e) {
      return Status::failure(e.what());
    } catch (...) {
      return Status::failure("unknown exception");
    }
  }
  Status open(const SinkContext& context) noexcept override {
    return guard("open", [&] { return impl_.open(context); });
  }
  Status write(const Event& event) noexcept override {
    return guard("write", [&] { return impl_.write(event); });
  }
  Status flush() noexcept override {
    return guard("flush", [&] { return impl_.flush(); });
  }
  Status close() noexcept override {
    return guard("close", [&] { return impl_.close(); });
  }
  bool tallies_writes() const noexcept override { return kTallies; }
  SinkTally take_tally() noexcept override {
    if constexpr (kTallies) {
      try {
        return impl_.take_tally();
      } catch (...) {
        return {};
      }
    } else {
      return {};
    }
  }
  Status reopen() noexcept override {
    if constexpr (requires(Impl & impl) { impl.reopen(); }) {
      return guard("reopen", [&] { return impl_.reopen(); });
    } else {
      return Status::success();
    }
  }

 private:
  static constexpr bool kTallies = requires(Impl & impl) {
    { impl.take_tally() } -> std::same_as<SinkTally>;
  };
  Impl impl_;
};

}  // namespace detail
}  // namespace netwatcher

#define NETWATCHER_SINK(Impl, name, version, description)                              \
  NETWATCHER_EXPORT_COMPONENT_(NW_PLUGIN_KIND_SINK, ::netwatcher::Sink,                \
                               ::netwatcher::detail::GuardedSink<Impl>, name, version, \
                               description)
