// KernelFeatures: every program type and every BPF iterator target is judged
// by loading a minimal program of it, and candidates are chosen from that.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <string>
#include <vector>

#include "fake_kernel.hpp"
#include "kernel_features.hpp"
#include "test_support.hpp"

using netwatcher::fakes::RefusingKernel;
using netwatcher::host::FeatureResult;
using netwatcher::host::KernelFeatures;

TEST(KernelFeatures, EveryProgramTypeIsProbedByLoadingAProgramOfIt) {
  NW_REQUIRE_BTF();
  RefusingKernel kernel;
  KernelFeatures features = kernel.probe();
  for (const char* type : {"tracepoint", "raw_tp", "tp_btf", "fentry", "kprobe", "netfilter", "tc",
                           "xdp", "cgroup_skb", "sockops", "socket_filter"}) {
    EXPECT_EQ(kernel.count(type), 1) << type;
    EXPECT_TRUE(features.hook_types().count(type)) << type;
  }
  // No target is loaded before a program asks for it.
  EXPECT_TRUE(features.iter_targets().empty());
  EXPECT_EQ(std::count_if(kernel.loaded.begin(), kernel.loaded.end(),
                          [](const std::string& name) { return name.rfind("iter", 0) == 0; }),
            0);
}

TEST(KernelFeatures, AnUnknownIterTargetIsNoWithoutALoad) {
  NW_REQUIRE_BTF();
  RefusingKernel kernel;
  KernelFeatures features = kernel.probe();
  const FeatureResult& unknown = features.iter_target("no_such_target");
  EXPECT_FALSE(unknown.available);
  EXPECT_NE(unknown.detail.find("no BPF iterator 'no_such_target'"), std::string::npos)
      << unknown.detail;
  EXPECT_EQ(kernel.count("iter/no_such_target"), 0);
}

TEST(KernelFeatures, AllIterTargetsOfTheKernelAreFoundInBtf) {
  NW_REQUIRE_BTF();
  RefusingKernel kernel;
  KernelFeatures features = kernel.probe();
  features.probe_all_iter_targets();
  const auto& targets = features.iter_targets();
  // Present since 5.8/5.9; helpers and open-coded iterator kfuncs named
  // bpf_iter_* are not targets.
  for (const char* target : {"task", "tcp", "udp", "bpf_map_elem"})
    EXPECT_TRUE(targets.count(target)) << target;
  EXPECT_FALSE(targets.count("get_info"));
  for (const auto& [target, result] : targets) {
    for (const char* kfunc_suffix : {"_new", "_next", "_destroy"})
      EXPECT_EQ(target.find(kfunc_suffix), std::string::npos) << target;
    EXPECT_EQ(kernel.count("iter/" + target), 1) << target;
  }
}

TEST(KernelFeatures, RealProbesLoadWhatThisKernelHas) {
  NW_REQUIRE_BTF();
  NW_REQUIRE_BPF();
  KernelFeatures::Options options;
  options.mount_missing = false;
  KernelFeatures features = KernelFeatures::probe(std::move(options));
  // Present on every kernel netwatcher supports.
  for (const char* type : {"raw_tp", "tp_btf", "socket_filter", "tc"}) {
    const FeatureResult& result = features.hook_types().at(type);
    EXPECT_TRUE(result.available) << type << ": " << result.detail;
    EXPECT_EQ(result.detail, "loads") << type;
  }
  // An iterator target's verdict comes from a load, whichever it is here.
  for (const char* target : {"tcp", "bpf_map_elem"}) {
    const FeatureResult& result = features.iter_target(target);
    EXPECT_TRUE(result.detail == "loads" || result.detail.rfind("program load refused: ", 0) == 0)
        << target << ": " << result.detail;
    EXPECT_EQ(result.available, result.detail == "loads") << target;
  }
  EXPECT_FALSE(features.iter_target("no_such_target").available);
}
