#include <gtest/gtest.h>

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <thread>

#include "bus.hpp"

using namespace netwatcher;
using namespace netwatcher::host;

namespace {

// A sink whose writes block until released, to fill its queue.
class GatedSink : public Sink {
 public:
  Status describe(SinkDescription&) const noexcept override { return {}; }
  Status open(const SinkContext&) noexcept override { return {}; }
  Status write(const Event&) noexcept override {
    std::unique_lock lock(mutex);
    ++entered;
    entered_cv.notify_all();
    released_cv.wait(lock, [&] { return released; });
    ++written;
    return written % 2 ? Status() : Status::failure("disk full");
  }
  Status flush() noexcept override { return {}; }
  Status close() noexcept override {
    closed = true;
    return {};
  }
  std::mutex mutex;
  std::condition_variable entered_cv, released_cv;
  int entered = 0, written = 0;
  bool released = false, closed = false;
};

}  // namespace

// A sink that counts what it saw.
class CountingSink : public Sink {
 public:
  Status describe(SinkDescription&) const noexcept override { return {}; }
  Status open(const SinkContext&) noexcept override { return {}; }
  Status write(const Event& event) noexcept override {
    total += std::get<std::uint64_t>(event.values.at(0));
    ++seen;
    return {};
  }
  Status flush() noexcept override { return {}; }
  Status close() noexcept override { return {}; }
  std::atomic<std::uint64_t> total{0}, seen{0};
};

TEST(Bus, FullQueueDropsAndCountsInsteadOfBlocking) {
  // Built, not assigned: gcc 12 -O3 takes `schema.name = "e"` here for an
  // overlapping copy (-Wrestrict, GCC bug 105651).
  EventSchema schema{.name = "e", .plugin = "demo"};
  auto sink = std::make_shared<GatedSink>();
  Bus bus(GlobalFilter{});
  ASSERT_TRUE(
      bus.add(std::make_unique<SinkWorker>("gated", sink, std::nullopt, 2), SinkContext{}).ok());
  auto publish = [&] { bus.publish(&schema, 0, {}); };
  publish();
  bus.flush();
  {
    std::unique_lock lock(sink->mutex);
    sink->entered_cv.wait(lock, [&] { return sink->entered == 1; });
  }
  for (int i = 0; i < 5; ++i) publish();  // one batch: 2 fit, 3 overflow
  bus.flush();
  EXPECT_EQ(bus.workers()[0]->dropped(), 3u);
  EXPECT_EQ(bus.workers()[0]->depth(), 2u);
  {
    std::lock_guard lock(sink->mutex);
    sink->released = true;
  }
  sink->released_cv.notify_all();
  bus.stop();  // drains what was queued
  EXPECT_EQ(sink->written, 3);
  EXPECT_EQ(bus.workers()[0]->written(), 2u);  // every second write fails
  EXPECT_EQ(bus.workers()[0]->errors(), 1u);
  EXPECT_TRUE(sink->closed);
}

TEST(Bus, EventsAndTheirStorageAreRecycledAcrossSinks) {
  EventSchema schema;
  schema.plugin = "demo";
  schema.name = "e";
  schema.fields = {{"n", FieldType::u64}};
  auto a = std::make_shared<CountingSink>(), b = std::make_shared<CountingSink>();
  Bus bus(GlobalFilter{});
  ASSERT_TRUE(bus.add(std::make_unique<SinkWorker>("a", a, std::nullopt, 1 << 16), {}).ok());
  ASSERT_TRUE(bus.add(std::make_unique<SinkWorker>("b", b, std::nullopt, 1 << 16), {}).ok());
  constexpr std::uint64_t kEvents = 200000;
  std::uint64_t expected = 0;
  for (std::uint64_t n = 1; n <= kEvents; ++n) {
    std::vector<Value> values = bus.make_values(1);
    ASSERT_EQ(values.size(), 1u);
    values[0] = n;
    expected += n;
    ASSERT_TRUE(bus.publish(&schema, 0, std::move(values)));
    if (n % 1000 == 0) {
      bus.flush();
      // Give the sinks a chance to return events, as the poller's waits do.
      while (a->seen + 10000 < n || b->seen + 10000 < n) std::this_thread::yield();
    }
  }
  bus.stop();
  EXPECT_EQ(a->seen, kEvents);
  EXPECT_EQ(b->seen, kEvents);
  EXPECT_EQ(a->total, expected);  // every value arrived intact at both sinks
  EXPECT_EQ(b->total, expected);
  // Both sinks held every event; the pool only grew to what was in flight:
  // at most 10000 unwritten, a batch being written (released as a whole) and
  // the producer's batch and cache.
  EXPECT_LT(bus.pool().created(), 30000u);
}

TEST(Bus, RoutingAndHostFilter) {
  EventSchema schema;
  schema.plugin = "tcp";
  schema.name = "e";
  schema.fields = {{"pid", FieldType::u64}, {"dport", FieldType::u64}};
  GlobalFilter filter;
  filter.dports = {443};
  Bus bus(filter);
  auto values = [](std::uint64_t pid, std::uint64_t dport) {
    return std::vector<Value>{Value(pid), Value(dport)};
  };
  EXPECT_TRUE(bus.publish(&schema, 0, values(1, 443)));
  EXPECT_FALSE(bus.publish(&schema, 0, values(1, 80)));
  auto make = [&](std::uint64_t pid, std::uint64_t dport) {
    Event e;
    e.schema = &schema;
    e.values = values(pid, dport);
    return e;
  };
  EventFilter by_pid(GlobalFilter{42, {}, {}, 0});
  EXPECT_TRUE(by_pid.accepts(make(42, 80)));
  EXPECT_FALSE(by_pid.accepts(make(0, 80)));  // owner unknown is not "this process"
}

// The host's second look at address filters: the event's text addresses
// against the networks, local and remote apart; an event without one passes.
TEST(Bus, HostFilterOnAddresses) {
  EventSchema schema;
  schema.plugin = "tcp";
  schema.name = "e";
  schema.fields = {{"saddr", FieldType::text}, {"daddr", FieldType::text}};
  GlobalFilter filter;
  filter.local_nets = {*AddressNet::parse("10.0.0.0/8")};
  filter.remote_nets = {*AddressNet::parse("fd00::/8"), *AddressNet::parse("192.0.2.7")};
  EventFilter by_address(filter);
  auto make = [&](const std::string& saddr, const std::string& daddr) {
    Event e;
    e.schema = &schema;
    e.values = {Value(saddr), Value(daddr)};
    return e;
  };
  EXPECT_TRUE(by_address.accepts(make("10.1.2.3", "192.0.2.7")));
  EXPECT_TRUE(by_address.accepts(make("::ffff:10.1.2.3", "fd12::1")));
  EXPECT_FALSE(by_address.accepts(make("11.1.2.3", "192.0.2.7")));
  EXPECT_FALSE(by_address.accepts(make("10.1.2.3", "192.0.2.8")));
  EXPECT_FALSE(by_address.accepts(make("10.1.2.3", "fe80::1")));
  EventSchema without;
  without.plugin = "nic";
  without.name = "n";
  without.fields = {{"interface", FieldType::text}};
  Event e;
  e.schema = &without;
  e.values = {Value(std::string("eth0"))};
  EXPECT_TRUE(by_address.accepts(e));
}
