// KernelFeatures judging the tcp plugin's real programs: a refused iterator
// target rules out the program that needs it and no other.
#include <gtest/gtest.h>

#include "fake_kernel.hpp"
#include "kernel_features.hpp"
#include "tcp.h"  // the types of the skeleton's rodata
#include "tcp.skel.h"

using netwatcher::fakes::RefusingKernel;
using netwatcher::host::KernelFeatures;

namespace {

struct TcpObject {
  tcp_bpf* skel = tcp_bpf__open();
  ~TcpObject() { tcp_bpf__destroy(skel); }
};

TEST(KernelFeatures, ARefusedIterTargetRulesOutItsProgramsOnly) {
  NW_REQUIRE_BTF();
  RefusingKernel kernel;
  KernelFeatures features = kernel.probe();
  TcpObject tcp;
  ASSERT_NE(tcp.skel, nullptr);
  auto why = features.program_unavailable(tcp.skel->progs.dump_conns);
  ASSERT_TRUE(why.has_value());
  EXPECT_EQ(*why, "iter/bpf_map_elem: program load refused: Operation not permitted");
  EXPECT_EQ(features.program_unavailable(tcp.skel->progs.adopt_tcp), std::nullopt);
  // Each target is probed once, then remembered.
  EXPECT_TRUE(features.program_unavailable(tcp.skel->progs.dump_conns).has_value());
  EXPECT_EQ(kernel.count("iter/bpf_map_elem"), 1);
  EXPECT_EQ(kernel.count("iter/tcp"), 1);
  ASSERT_EQ(features.iter_targets().size(), 2u);
  EXPECT_FALSE(features.iter_targets().at("bpf_map_elem").available);
  EXPECT_TRUE(features.iter_targets().at("tcp").available);
}

}  // namespace
