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

TEST_F(Lifecycle, HookOverrideForcesCandidatesAndNamesWhatIsWrong) {
  auto check = [&](const std::string& overrides) {
    write_file(dir_.file("c.toml"),
               "[netwatcher]\nhook_override = { " + overrides +
                   " }\n[plugins.tcp]\nextra = true\nrtt_every_change = true\n");
    return run(std::string(NW_BINARY) + " --plugin-dir " + NW_PLUGIN_DIR + " --config " +
               dir_.file("c.toml") + " --check");
  };
  auto forced = check("\"tcp.conn_table\" = \"user:sock_diag\", \"tcp.rtt_samples\" = \"none\"");
  EXPECT_EQ(forced.exit_code, 0) << forced.output;
  for (const char* line :
       {"hook conn_table (optional): ok via user:sock_diag",
        "dump_conns: skipped: netwatcher.hook_override = \"user:sock_diag\"",
        "user:sock_diag [user space]: serves the hook from user space; no backlog, max_backlog",
        "hook rtt_samples (optional): NOT ATTACHED",
        "rtt_probe_tp: skipped: netwatcher.hook_override = \"none\""})
    EXPECT_NE(forced.output.find(line), std::string::npos) << line << "\n" << forced.output;

  auto fallback = check("\"*\" = \"fallback\"");
  EXPECT_EQ(fallback.exit_code, 0) << fallback.output;
  EXPECT_NE(fallback.output.find("hook inet_sock_set_state: ok via set_state_tp"),
            std::string::npos)
      << fallback.output;
  // A hook with a single candidate keeps it.
  EXPECT_NE(fallback.output.find("hook tcp_adopt (optional): ok via adopt_tcp"), std::string::npos);

  auto unknown = check("\"tcp.conn_table\" = \"nope\"");
  EXPECT_EQ(unknown.exit_code, 1);
  EXPECT_NE(unknown.output.find("plugin tcp: CANNOT RUN: netwatcher.hook_override: hook "
                                "'conn_table' has no candidate 'nope' (candidates: dump_conns, "
                                "user:sock_diag)"),
            std::string::npos)
      << unknown.output;
  auto no_hook = check("\"tcp.nope\" = \"fallback\"");
  EXPECT_NE(no_hook.output.find("netwatcher.hook_override: plugin 'tcp' has no hook 'nope'"),
            std::string::npos)
      << no_hook.output;
  auto required = check("\"tcp.inet_sock_set_state\" = \"none\"");
  EXPECT_NE(required.output.find("hook 'inet_sock_set_state' is required and cannot be \"none\""),
            std::string::npos)
      << required.output;
  auto no_plugin = check("\"nope.x\" = \"fallback\"");
  EXPECT_EQ(no_plugin.exit_code, 2);
  EXPECT_NE(
      no_plugin.output.find("key 'netwatcher.hook_override.\"nope.x\"': unknown plugin 'nope'"),
      std::string::npos)
      << no_plugin.output;
}

// A candidate the kernel refuses, with a successor that serves, is the
// fallback working as designed: one info line with the hook, the refused
// program, the verifier's verdict and the program serving instead; libbpf's
// own warnings only with -v.
TEST_F(Lifecycle, ARefusedCandidateWithASuccessorCostsOneInfoLine) {
  write_file(dir_.file("c.toml"), "[plugins.fallback_probe]\n");
  const std::string command = std::string(NW_BINARY) + " --plugin-dir " + NW_FIXTURE_DIR +
                              " --config " + dir_.file("c.toml") + " --duration 0.5";
  auto quiet = run(command + " 2>&1");
  EXPECT_EQ(quiet.exit_code, 0) << quiet.output;
  EXPECT_NE(quiet.output.find("info plugin 'fallback_probe': hook 'tick': the kernel refused "
                              "refused_candidate (load failed: cannot load BPF object: Permission "
                              "denied: R0 invalid mem access 'scalar'); served_candidate serves "
                              "instead"),
            std::string::npos)
      << quiet.output;
  EXPECT_EQ(quiet.output.find("libbpf"), std::string::npos) << quiet.output;
  EXPECT_EQ(quiet.output.find(" warn "), std::string::npos) << quiet.output;
  auto verbose = run(command + " -v 2>&1");
  EXPECT_NE(verbose.output.find("debug libbpf: libbpf: prog 'refused_candidate': BPF program load "
                                "failed"),
            std::string::npos)
      << verbose.output;
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

// A connection closes just before SIGTERM; its close must be in the file
// after it. With poll_interval = 1 its record (far below wakeup_bytes) waits
// in the ring buffer for the host's next timed poll, a second away: only a
// read of the ring buffer after SIGTERM (the poll loop's last or the
// shutdown's, after detaching) and the sink's flush put it there.
TEST_F(Lifecycle, SigtermDetachesEveryProgramAndFlushesSinks) {
  const std::string program = fallback_hooks() ? "set_state_tp" : "set_state_btf";
  {
    TwoHosts hosts;
    Netwatcher nw(dir_, "poll_interval = 1\n" + tcp_config(dir_.file("e.jsonl")));
    EXPECT_NE(run("bpftool prog show").output.find(program), std::string::npos);
    TcpServer server(TwoHosts::kServer, {5000}, dir_);
    auto clients = run_client(TwoHosts::kClient, "10.77.0.2", 5000, {4321});
    ASSERT_EQ(clients.size(), 1u);
    EXPECT_EQ(nw.stop(), 0) << nw.log();
    EXPECT_NE(nw.log().find("shutting down"), std::string::npos);
    bool found = false;
    for (const auto& e :
         events_of(parse_json_lines(read_file(dir_.file("e.jsonl"))), "tcp_close")) {
      const auto& f = e["fields"];
      if (f["direction"].str() == "client" && f["sport"].u64() == clients[0].sport) {
        found = true;
        EXPECT_EQ(f["bytes_acked"].u64(), 4321u);
      }
    }
    EXPECT_TRUE(found) << "the last connection's close is not in the file:\n"
                       << read_file(dir_.file("e.jsonl")) << nw.log();
  }
  // The kernel frees programs asynchronously once their last link and fd are gone.
  std::string after;
  for (int i = 0; i < 100; ++i) {
    after = run("bpftool prog show | grep -c " + program).output;
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
