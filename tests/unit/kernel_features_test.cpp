// KernelFeatures: every program type and every BPF iterator target is judged
// by loading a minimal program of it, and candidates are chosen from that.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <string>
#include <vector>

#include "kernel_features.hpp"
#include "tcp.h"  // the types of the skeleton's rodata
#include "tcp.skel.h"
#include "test_support.hpp"

using netwatcher::host::FeatureResult;
using netwatcher::host::KernelFeatures;
using netwatcher::host::ProgramLoad;

namespace {

// Plays a kernel of the kind that refuses iter/bpf_map_elem at load (EPERM)
// and takes every other program; remembers what it was asked to load.
struct RefusingKernel {
  std::vector<std::string> loaded;

  KernelFeatures probe() {
    KernelFeatures::Options options;
    options.mount_missing = false;
    options.loader = [this](const ProgramLoad& load) -> FeatureResult {
      loaded.push_back(load.name);
      if (load.name == "iter/bpf_map_elem")
        return {false, "program load refused: Operation not permitted"};
      return {true, "loads"};
    };
    return KernelFeatures::probe(std::move(options));
  }
  long count(const std::string& name) const {
    return std::count(loaded.begin(), loaded.end(), name);
  }
};

// Types attached by BTF id (tp_btf, fentry, iter) are probed against kernel BTF.
#define NW_REQUIRE_BTF()                                              \
  do {                                                                \
    if (access("/sys/kernel/btf/vmlinux", R_OK) != 0) {               \
      if (::nwtest::in_ci()) FAIL() << "CI machines have kernel BTF"; \
      GTEST_SKIP() << "no readable /sys/kernel/btf/vmlinux";          \
    }                                                                 \
  } while (0)

// Loading real programs needs CAP_BPF: skipped without root, except in CI.
#define NW_REQUIRE_BPF()                                               \
  do {                                                                 \
    if (!::nwtest::is_root()) {                                        \
      if (::nwtest::in_ci()) FAIL() << "unit tests run as root in CI"; \
      GTEST_SKIP() << "loading BPF programs needs root";               \
    }                                                                  \
  } while (0)

struct TcpObject {
  tcp_bpf* skel = tcp_bpf__open();
  ~TcpObject() { tcp_bpf__destroy(skel); }
};

}  // namespace

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
