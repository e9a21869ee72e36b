// A kernel for KernelFeatures that refuses one program type, and the checks
// that skip (or, under CI, fail) a test that needs kernel BTF or CAP_BPF.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <string>
#include <vector>

#include "kernel_features.hpp"
#include "test_support.hpp"

namespace netwatcher::fakes {

using netwatcher::host::FeatureResult;
using netwatcher::host::KernelFeatures;
using netwatcher::host::ProgramLoad;

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

}  // namespace netwatcher::fakes

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
