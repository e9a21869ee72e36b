// The scrape-time refresh: sink threads ask, the poller thread refreshes.
#include <gtest/gtest.h>
#include <poll.h>

#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

#include "metrics_refresh.hpp"

using namespace netwatcher;
using namespace netwatcher::host;
using namespace std::chrono_literals;

namespace {

// A one-family store whose value is the number of refreshes seen.
struct Fixture {
  std::atomic<int> value{0};
  std::atomic<int> snapshots{0};
  MetricsSnapshot snapshot() {
    ++snapshots;
    MetricFamilySnapshot family{{"refreshed_total", MetricType::counter, "refreshes", {}, {}}, {}};
    family.series.push_back({{}, static_cast<double>(value.load()), {}, 0, 0});
    return {family};
  }
};

double value_of(const MetricsSnapshot& snapshot) {
  return snapshot.at(0).series.at(0).value;
}

// Runs the poller's side until stopped: waits on the wake fd, serves requests.
class Poller {
 public:
  Poller(MetricsRefresher& refresher, Fixture& fixture,
         std::chrono::milliseconds refresh_cost = 0ms)
      : thread_([&, refresh_cost] {
          const auto me = std::this_thread::get_id();
          refresher.serve([&, me, refresh_cost] {
            refreshed_on_.store(std::this_thread::get_id() == me);
            std::this_thread::sleep_for(refresh_cost);
            ++fixture.value;
          });
          ready_.store(true);
          while (!stop_.load()) {
            pollfd pfd{refresher.wake_fd(), POLLIN, 0};
            poll(&pfd, 1, 10);
            if (refresher.pending()) refresher.run_pending();
          }
          refresher.stop_serving();
        }) {
    while (!ready_.load()) std::this_thread::sleep_for(1ms);
  }
  ~Poller() {
    stop_.store(true);
    thread_.join();
  }
  bool refreshed_on_poller() const { return refreshed_on_.load(); }

 private:
  std::atomic<bool> stop_{false}, ready_{false}, refreshed_on_{false};
  std::thread thread_;
};

}  // namespace

TEST(MetricsRefresher, BeforeThePollerServesAScrapeGetsTheStoreAtOnce) {
  Fixture fixture;
  MetricsRefresher refresher([&] { return fixture.snapshot(); }, 5s, 0s);
  const auto started = std::chrono::steady_clock::now();
  EXPECT_EQ(value_of(refresher.metrics()), 0);
  EXPECT_LT(std::chrono::steady_clock::now() - started, 1s);
  EXPECT_EQ(refresher.refreshes(), 0u);
}

TEST(MetricsRefresher, TheRefreshRunsOnThePollerThreadBeforeTheScrapeReturns) {
  Fixture fixture;
  MetricsRefresher refresher([&] { return fixture.snapshot(); }, 5s, 0s);
  Poller poller(refresher, fixture);
  EXPECT_EQ(value_of(refresher.metrics()), 1);
  EXPECT_EQ(value_of(refresher.metrics()), 2);
  EXPECT_TRUE(poller.refreshed_on_poller());
}

TEST(MetricsRefresher, AStormOfScrapesCostsOneRefreshPerMaxAge) {
  Fixture fixture;
  MetricsRefresher refresher([&] { return fixture.snapshot(); }, 5s, 10s);
  Poller poller(refresher, fixture);
  std::vector<std::thread> scrapers;
  for (int t = 0; t < 4; ++t)
    scrapers.emplace_back([&] {
      for (int i = 0; i < 50; ++i) refresher.metrics();
    });
  for (auto& s : scrapers) s.join();
  // The first scrape's; the others found it younger than 10 s.
  EXPECT_EQ(refresher.refreshes(), 1u);
  EXPECT_EQ(fixture.value.load(), 1);
  EXPECT_EQ(fixture.snapshots.load(), 200);
}

TEST(MetricsRefresher, ScrapesWaitingTogetherShareOneRefresh) {
  Fixture fixture;
  MetricsRefresher refresher([&] { return fixture.snapshot(); }, 5s, 0s);
  Poller poller(refresher, fixture, 200ms);
  std::vector<std::thread> scrapers;
  for (int t = 0; t < 4; ++t) scrapers.emplace_back([&] { refresher.metrics(); });
  for (auto& s : scrapers) s.join();
  // The first request's refresh, and at most one more for those that came
  // while it ran.
  EXPECT_GE(refresher.refreshes(), 1u);
  EXPECT_LE(refresher.refreshes(), 2u);
}

TEST(MetricsRefresher, ABusyPollerDelaysAScrapeOnlyByMaxWait) {
  Fixture fixture;
  MetricsRefresher refresher([&] { return fixture.snapshot(); }, 100ms, 0s);
  refresher.serve([&] { ++fixture.value; });  // this thread "serves" but never runs them
  std::thread scraper([&] {
    const auto started = std::chrono::steady_clock::now();
    EXPECT_EQ(value_of(refresher.metrics()), 0);
    const auto waited = std::chrono::steady_clock::now() - started;
    EXPECT_GE(waited, 90ms);
    EXPECT_LT(waited, 2s);
  });
  scraper.join();
  EXPECT_TRUE(refresher.pending());
  refresher.run_pending();
  EXPECT_EQ(fixture.value.load(), 1);
  refresher.stop_serving();
}

TEST(MetricsRefresher, StoppingReleasesAWaitingScrapeAtOnce) {
  Fixture fixture;
  MetricsRefresher refresher([&] { return fixture.snapshot(); }, 30s, 0s);
  refresher.serve([&] { ++fixture.value; });
  std::atomic<bool> returned{false};
  std::thread scraper([&] {
    refresher.metrics();
    returned.store(true);
  });
  while (!refresher.pending()) std::this_thread::sleep_for(1ms);
  const auto started = std::chrono::steady_clock::now();
  refresher.stop_serving();
  scraper.join();
  EXPECT_TRUE(returned.load());
  EXPECT_LT(std::chrono::steady_clock::now() - started, 5s);
  EXPECT_EQ(fixture.value.load(), 0);
  refresher.run_pending();  // not serving: nothing runs
  EXPECT_EQ(fixture.value.load(), 0);
}

TEST(MetricsRefresher, OnThePollerThreadItselfTheRefreshRunsInline) {
  Fixture fixture;
  MetricsRefresher refresher([&] { return fixture.snapshot(); }, 30s, 0s);
  refresher.serve([&] { ++fixture.value; });
  EXPECT_EQ(value_of(refresher.metrics()), 1);
  refresher.stop_serving();
}
