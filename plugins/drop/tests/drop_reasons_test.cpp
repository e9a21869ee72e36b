// The drop plugin's naming of drop reasons, from a synthetic table and from
// the running kernel's BTF.
#include <gtest/gtest.h>

#include "reasons.hpp"

using netwatcher::drop::DropReasons;

namespace {

TEST(DropReasons, KnownUnknownAndSubsystemValues) {
  DropReasons reasons({{2, "NOT_SPECIFIED"}, {3, "NO_SOCKET"}},
                      {{0, "CORE"}, {1, "MAC80211_UNUSABLE"}, {2, "OPENVSWITCH"}});
  EXPECT_EQ(reasons.name(3), "NO_SOCKET");
  EXPECT_EQ(reasons.name(999), "UNKNOWN(0x3e7)");
  EXPECT_EQ(reasons.name(2u << 16 | 5), "OPENVSWITCH(0x5)");
  EXPECT_EQ(reasons.name(9u << 16 | 1), "UNKNOWN(0x90001)");
  reasons.add_subsystem_names({{2u << 16 | 5, "OVS_DROP_LAST_ACTION"}});
  EXPECT_EQ(reasons.name(2u << 16 | 5), "OVS_DROP_LAST_ACTION");
}

TEST(DropReasons, RunningKernelNamesCoreReasons) {
  auto reasons = DropReasons::from_kernel();
  EXPECT_EQ(reasons.name(0xfffe), "UNKNOWN(0xfffe)");
  // Whatever value this kernel gives NO_SOCKET, it must round-trip.
  bool found = false;
  for (std::uint32_t v = 0; v < 512 && !found; ++v) found = reasons.name(v) == "NO_SOCKET";
  EXPECT_TRUE(found);
  // The two values the kernel filters out: consumed and not dropped.
  auto consumed = reasons.value_of("SKB_CONSUMED");
  ASSERT_TRUE(consumed.has_value());
  EXPECT_EQ(reasons.name(*consumed), "SKB_CONSUMED");
  EXPECT_TRUE(reasons.value_of("SKB_NOT_DROPPED_YET").has_value());
  EXPECT_FALSE(reasons.value_of("NO_SUCH_REASON").has_value());
}

}  // namespace
