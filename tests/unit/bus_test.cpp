#include <gtest/gtest.h>

#include <condition_variable>
#include <mutex>

#include "bus.hpp"

using namespace netwatcher;
using namespace netwatcher::host;

namespace {

// A sink whose writes block until released, to fill its queue.
class GatedSink : public Sink {
 public:
  SinkDescription describe() const noexcept override { return {}; }
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

TEST(Bus, FullQueueDropsAndCountsInsteadOfBlocking) {
  EventSchema schema;
  schema.plugin = "demo";
  schema.name = "e";
  auto sink = std::make_shared<GatedSink>();
  Bus bus(GlobalFilter{});
  bus.add(std::make_unique<SinkWorker>("gated", sink, std::nullopt, 2));
  ASSERT_TRUE(bus.workers()[0]->start(SinkContext{}).ok());
  auto event = [&] {
    auto e = std::make_shared<Event>();
    e->schema = &schema;
    return e;
  };
  bus.publish(event());
  {
    std::unique_lock lock(sink->mutex);
    sink->entered_cv.wait(lock, [&] { return sink->entered == 1; });
  }
  for (int i = 0; i < 5; ++i) bus.publish(event());  // 2 fit, 3 overflow
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

TEST(Bus, RoutingAndHostFilter) {
  EventSchema schema;
  schema.plugin = "tcp";
  schema.name = "e";
  schema.fields = {{"pid", FieldType::u64}, {"dport", FieldType::u64}};
  GlobalFilter filter;
  filter.dports = {443};
  Bus bus(filter);
  auto make = [&](std::uint64_t pid, std::uint64_t dport) {
    auto e = std::make_shared<Event>();
    e->schema = &schema;
    e->values = {Value(pid), Value(dport)};
    return e;
  };
  EXPECT_TRUE(bus.publish(make(1, 443)));
  EXPECT_FALSE(bus.publish(make(1, 80)));
  EventFilter by_pid(GlobalFilter{42, {}, {}, 0});
  EXPECT_TRUE(by_pid.accepts(*make(42, 80)));
  EXPECT_FALSE(by_pid.accepts(*make(0, 80)));  // owner unknown is not "this process"
}
