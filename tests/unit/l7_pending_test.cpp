// PendingRequests keeps requests until their response, a timeout, the
// table's capacity or their socket's close: each outcome exactly once, in age
// order.
#include <gtest/gtest.h>

#include <compare>
#include <string>
#include <tuple>
#include <vector>

#include "netwatcher/l7_pending.hpp"

using namespace netwatcher;

namespace {

using Key = std::tuple<std::uint64_t, std::uint16_t>;  // (socket, id)
using Table = PendingRequests<Key, std::string>;
using V = std::vector<std::string>;

// Records what insert() displaced.
struct Displacements {
  std::vector<std::pair<std::string, Displaced>> seen;
  auto operator()() {
    return [this](std::string& r, Displaced why) { seen.emplace_back(std::move(r), why); };
  }
};

TEST(L7Pending, TheSameKeyAgainReplacesAndReportsTheFirstAsUnanswered) {
  Table t(8);
  Displacements d;
  t.insert({1, 7}, "first", 100, d());
  t.insert({1, 8}, "other", 110, d());
  t.insert({1, 7}, "retry", 120, d());
  ASSERT_EQ(d.seen.size(), 1u);
  EXPECT_EQ(d.seen[0].first, "first");
  EXPECT_EQ(d.seen[0].second, Displaced::replaced);
  EXPECT_EQ(t.size(), 2u);
  EXPECT_EQ(t.inserted_ns({1, 7}), 120u);
  EXPECT_EQ(t.take({1, 7}), "retry");
  EXPECT_EQ(t.take({1, 7}), std::nullopt);  // taken once only
  ASSERT_NE(t.find({1, 8}), nullptr);
  EXPECT_EQ(*t.find({1, 8}), "other");
  EXPECT_EQ(t.size(), 1u);
}

TEST(L7Pending, ExpiryReportsTheTimedOutInAgeOrderAndStopsAtTheFirstNot) {
  Table t(8);
  Displacements d;
  t.insert({3, 1}, "a", 100, d());
  t.insert({1, 2}, "b", 200, d());
  t.insert({2, 3}, "c", 300, d());
  t.insert({3, 1}, "a2", 350, d());  // asked again: counts from 350
  t.insert({4, 4}, "d", 400, d());
  (void)t.take({4, 4});  // answered
  V expired;
  auto record = [&](std::string& r) { expired.push_back(r); };
  EXPECT_EQ(t.expire(1000, 700, record), 2u);  // 200 and 300 are >= 700 old; 350 is not
  EXPECT_EQ(expired, (V{"b", "c"}));
  EXPECT_EQ(t.expire(1049, 700, record), 0u);
  EXPECT_EQ(t.expire(1050, 700, record), 1u);
  EXPECT_EQ(expired, (V{"b", "c", "a2"}));
  EXPECT_TRUE(t.empty());
}

TEST(L7Pending, AtCapacityTheOldestIsEvicted) {
  Table t(3);
  Displacements d;
  t.insert({1, 1}, "a", 1, d());
  t.insert({1, 2}, "b", 2, d());
  t.insert({1, 3}, "c", 3, d());
  t.insert({1, 1}, "a2", 4, d());  // a replacement, not a new entry: nothing evicted
  EXPECT_EQ(d.seen.size(), 1u);
  t.insert({2, 1}, "d", 5, d());  // full: "b" is now the oldest
  t.insert({2, 2}, "e", 6, d());
  ASSERT_EQ(d.seen.size(), 3u);
  EXPECT_EQ(d.seen[1], (std::pair<std::string, Displaced>{"b", Displaced::evicted}));
  EXPECT_EQ(d.seen[2], (std::pair<std::string, Displaced>{"c", Displaced::evicted}));
  EXPECT_EQ(t.size(), 3u);
  (void)t.take({2, 1});
  t.insert({2, 3}, "f", 7, d());  // room again
  EXPECT_EQ(d.seen.size(), 3u);
  EXPECT_EQ(t.size(), 3u);
}

TEST(L7Pending, TakeAllOfASocketTakesItsRequestsOnly) {
  Table t(16);
  Displacements d;
  t.insert({2, 9}, "s2 9", 1, d());
  t.insert({1, 5}, "s1 5", 2, d());
  t.insert({3, 1}, "s3 1", 3, d());
  t.insert({2, 4}, "s2 4", 4, d());
  t.insert({2, 0xffff}, "s2 max", 5, d());
  V taken;
  EXPECT_EQ(t.take_all_of(2, [&](std::string& r) { taken.push_back(r); }), 3u);
  EXPECT_EQ(taken, (V{"s2 4", "s2 9", "s2 max"}));  // in key order
  EXPECT_EQ(t.size(), 2u);
  EXPECT_EQ(t.take_all_of(7, [&](std::string& r) { taken.push_back(r); }), 0u);
  // What is left still expires, oldest first: the age order forgot socket 2.
  V expired;
  t.expire(100, 1, [&](std::string& r) { expired.push_back(r); });
  EXPECT_EQ(expired, (V{"s1 5", "s3 1"}));
}

// A key whose socket is not its first element.
struct ById {
  std::string name;
  std::uint64_t socket;
  auto operator<=>(const ById&) const = default;
};
struct SocketOfById {
  std::uint64_t operator()(const ById& k) const noexcept { return k.socket; }
};

TEST(L7Pending, AKeyExtractorNamesTheSocket) {
  PendingRequests<ById, int, SocketOfById> t(4);
  auto none = [](int&, Displaced) { FAIL() << "nothing to displace"; };
  t.insert({"a", 9}, 1, 1, none);
  t.insert({"b", 5}, 2, 2, none);
  t.insert({"c", 9}, 3, 3, none);
  std::vector<int> taken;
  EXPECT_EQ(t.take_all_of(9, [&](int& r) { taken.push_back(r); }), 2u);
  EXPECT_EQ(taken, (std::vector<int>{1, 3}));
  EXPECT_EQ(t.take({"b", 5}), 2);
}

}  // namespace
