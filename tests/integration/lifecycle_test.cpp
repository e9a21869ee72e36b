// Start-up, --check and shutdown against the real kernel.
#include <gtest/gtest.h>

#include <chrono>
#include <thread>

#include "harness.hpp"

using namespace nwtest;

namespace {

class Lifecycle : public ::testing::Test {
 protected:
  void SetUp() override { NW_REQUIRE_ROOT(); }
  TempDir dir_;
};

TEST_F(Lifecycle, CheckReportsKernelFeaturesAndAttachableHooks) {
  auto result = run(std::string(NW_BINARY) + " --plugin-dir " + NW_PLUGIN_DIR + " --config " +
                    NW_SOURCE_DIR + "/netwatcher.toml --check");
  EXPECT_EQ(result.exit_code, 0) << result.output;
  EXPECT_NE(result.output.find("BTF             yes"), std::string::npos) << result.output;
  EXPECT_NE(result.output.find("ring buffer     yes"), std::string::npos);
  EXPECT_NE(result.output.find("plugin tcp: ok"), std::string::npos);
  EXPECT_NE(result.output.find("hook inet_sock_set_state: ok via "), std::string::npos);
  // Each iterator target is loaded on its own: machines of this kind refuse
  // bpf_map_elem or take it, and the tcp plugin's table candidate says which.
  EXPECT_NE(result.output.find("\n  iter/tcp "), std::string::npos) << result.output;
  const std::size_t map_elem = result.output.find("\n  iter/bpf_map_elem ");
  ASSERT_NE(map_elem, std::string::npos) << result.output;
  const std::string verdict =
      result.output.substr(map_elem, result.output.find('\n', map_elem + 1) - map_elem);
  if (verdict.find(" yes  loads") != std::string::npos) {
    EXPECT_NE(result.output.find("dump_conns [iter/bpf_map_elem]: attached"), std::string::npos)
        << result.output;
  } else {
    EXPECT_NE(verdict.find(" no   program load refused: "), std::string::npos) << verdict;
    EXPECT_NE(result.output.find("dump_conns [iter/bpf_map_elem]: iter/bpf_map_elem: program load "
                                 "refused: "),
              std::string::npos)
        << result.output;
  }
}

TEST_F(Lifecycle, CheckFailsWhenAConfiguredPluginCannotRun) {
  write_file(dir_.file("c.toml"), "[plugins.wrong_major]\nenabled = true\n[plugins.tcp]\n");
  auto result = run(std::string(NW_BINARY) + " --plugin-dir " + NW_PLUGIN_DIR + " --plugin-dir " +
                    NW_FIXTURE_DIR + " --config " + dir_.file("c.toml") + " --check");
  EXPECT_EQ(result.exit_code, 1) << result.output;
  EXPECT_NE(result.output.find("plugin wrong_major: CANNOT RUN (refused by the loader)"),
            std::string::npos)
      << result.output;
  EXPECT_NE(result.output.find("ABI major version mismatch"), std::string::npos);
  EXPECT_NE(result.output.find("plugin tcp: ok"), std::string::npos);
}

TEST_F(Lifecycle, CheckShowsHooksSwitchedOffByConfigAndRefusesInconsistentKeys) {
  auto check = [&](const std::string& tcp_keys) {
    write_file(dir_.file("c.toml"), "[plugins.tcp]\n" + tcp_keys);
    return run(std::string(NW_BINARY) + " --plugin-dir " + NW_PLUGIN_DIR + " --config " +
               dir_.file("c.toml") + " --check");
  };
  auto off = check("errors = false\n");
  EXPECT_EQ(off.exit_code, 0) << off.output;
  EXPECT_NE(
      off.output.find("hook error_drops (optional): off, disabled by config (errors = false)"),
      std::string::npos)
      << off.output;
  auto on = check("errors = true\nlayer_time = true\n");
  EXPECT_EQ(on.exit_code, 0) << on.output;
  EXPECT_NE(on.output.find("hook error_drops (optional): ok via error_drop_btf"), std::string::npos)
      << on.output;
  EXPECT_NE(on.output.find("layer_rx_local_in [netfilter]: attached"), std::string::npos)
      << on.output;
  auto bad = check("layer_events = true\n");
  EXPECT_EQ(bad.exit_code, 1) << bad.output;
  EXPECT_NE(bad.output.find("plugins.tcp.layer_events needs layer_time = true"), std::string::npos)
      << bad.output;
}

TEST_F(Lifecycle, MountsTracefsWhenItIsMissing) {
  run("umount /sys/kernel/tracing 2>/dev/null; umount /sys/kernel/debug/tracing 2>/dev/null");
  ASSERT_NE(run("test -e /sys/kernel/tracing/events").exit_code, 0)
      << "tracefs is still mounted; cannot test mounting it";
  auto result = run(std::string(NW_BINARY) + " --plugin-dir " + NW_PLUGIN_DIR + " --config " +
                    NW_SOURCE_DIR + "/netwatcher.toml --check");
  EXPECT_EQ(result.exit_code, 0) << result.output;
  EXPECT_NE(result.output.find("(mounted by netwatcher)"), std::string::npos) << result.output;
  EXPECT_EQ(run("test -e /sys/kernel/tracing/events/sock/inet_sock_set_state/id").exit_code, 0);
}

TEST_F(Lifecycle, SigtermDetachesEveryProgramAndFlushesSinks) {
  {
    Netwatcher nw(dir_, tcp_config(dir_.file("e.jsonl")));
    EXPECT_NE(run("bpftool prog show").output.find("set_state_btf"), std::string::npos);
    EXPECT_EQ(nw.stop(), 0) << nw.log();
    EXPECT_NE(nw.log().find("shutting down"), std::string::npos);
  }
  // The kernel frees programs asynchronously once their last link and fd are gone.
  std::string after;
  for (int i = 0; i < 100; ++i) {
    after = run("bpftool prog show | grep -c set_state_btf").output;
    if (after == "0\n") break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_EQ(after, "0\n");
}

TEST_F(Lifecycle, BrokenSinkStopsStartUpWithAClearError) {
  std::string config = dir_.file("b.toml");
  write_file(config,
             "[netwatcher]\nplugin_dirs = [\"" + std::string(NW_PLUGIN_DIR) +
                 "\"]\n[plugins.tcp]\n[[sinks]]\ntype = \"csv\"\ndirectory = \"/proc/nope\"\n");
  auto result = run(std::string(NW_BINARY) + " --config " + config + " --duration 1");
  EXPECT_EQ(result.exit_code, 2) << result.output;
  EXPECT_NE(
      result.output.find(
          "sink 'csv': cannot open '/proc/nope/.netwatcher-write-test': No such file or directory"),
      std::string::npos)
      << result.output;
}

}  // namespace
