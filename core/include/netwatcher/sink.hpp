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
// queue. open(), write(), flush() and close() are all called from that thread;
// a slow sink only fills its own queue (overflow is counted by the host).
// `SinkContext::metrics` may be called from any thread the sink owns.
#pragma once

#include <functional>
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

class Sink {
 public:
  virtual ~Sink() = default;
  virtual SinkDescription describe() const noexcept = 0;
  // Prepare outputs (open files, bind sockets). A failure here is a start-up
  // error that names the sink and the reason.
  virtual Status open(const SinkContext& context) noexcept = 0;
  // Write one event. A failure is counted and logged (rate-limited); the sink
  // stays in service and is asked again with the next event.
  virtual Status write(const Event& event) noexcept = 0;
  // Called when the queue runs empty and on shutdown.
  virtual Status flush() noexcept = 0;
  virtual Status close() noexcept = 0;
};

namespace detail {

template <class Impl>
class GuardedSink final : public Sink {
 public:
  SinkDescription describe() const noexcept override {
    try {
      return impl_.describe();
    } catch (...) {
      return {};
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

 private:
  Impl impl_;
};

}  // namespace detail
}  // namespace netwatcher

#define NETWATCHER_SINK(Impl, name, version, description)                              \
  NETWATCHER_EXPORT_COMPONENT_(NW_PLUGIN_KIND_SINK, ::netwatcher::Sink,                \
                               ::netwatcher::detail::GuardedSink<Impl>, name, version, \
                               description)
