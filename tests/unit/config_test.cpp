#include <gtest/gtest.h>

#include "config.hpp"
#include "test_support.hpp"

using namespace netwatcher;
using namespace netwatcher::host;

namespace {

// Loads `text` from a file called t.toml and returns the error, or "" if none.
std::string config_error(const std::string& text, std::string* path_out = nullptr) {
  static nwtest::TempDir dir;
  std::string path = dir.file("t.toml");
  nwtest::write_file(path, text);
  if (path_out) *path_out = path;
  try {
    load_config(path);
  } catch (const ConfigError& e) {
    std::string message = e.what();
    // Make messages independent of the temp directory.
    if (message.rfind(path, 0) == 0) message = "t.toml" + message.substr(path.size());
    return message;
  }
  return "";
}

Config load_from_text(const std::string& text) {
  static nwtest::TempDir dir;
  std::string path = dir.file("ok.toml");
  nwtest::write_file(path, text);
  return load_config(path);
}

}  // namespace

TEST(Config, ValidFileLoadsWithDefaults) {
  std::string path;
  EXPECT_EQ(config_error("[netwatcher]\nsnapshot_interval = 2\n[plugins.tcp]\nextra = true\n"
                         "[[sinks]]\ntype = \"json\"\n[[sinks]]\ntype = \"json\"\nname = \"two\"\n",
                         &path),
            "");
  Config config = load_config(path);
  EXPECT_DOUBLE_EQ(config.settings.snapshot_interval_s, 2.0);
  EXPECT_EQ(config.settings.ring_buffer_bytes, 2097152u);
  EXPECT_TRUE(config.plugins.at("tcp").enabled);
  ASSERT_EQ(config.sinks.size(), 2u);
  EXPECT_EQ(config.sinks[0].instance, "json");
  EXPECT_EQ(config.sinks[1].instance, "two");
}

TEST(Config, SyntaxErrorNamesLineAndColumn) {
  EXPECT_EQ(config_error("[netwatcher]\nlog_level = \n"),
            "t.toml:2:13: Error while parsing key-value pair: expected value, saw '\\n'");
}

TEST(Config, UnknownKeyNamesFileLineAndKey) {
  EXPECT_EQ(config_error("[netwatcher]\nlog_level = \"info\"\nsnapshot = 3\n"),
            "t.toml:3:1: unknown key 'netwatcher.snapshot' (known: hook_override, plugin_dirs, "
            "log_level, "
            "snapshot_interval, ring_buffer_size, sink_queue_size, wakeup_bytes, "
            "poll_interval, bpf_stats, keep_capabilities)");
}

TEST(Config, UnknownTopLevelTable) {
  EXPECT_EQ(config_error("[sink]\ntype = \"json\"\n"),
            "t.toml:1:2: unknown key '<top level>.sink' (known: netwatcher, filter, anomaly, "
            "containers, plugins, sinks)");
}

TEST(Config, ContainersSectionIsReadAndItsKeysChecked) {
  nwtest::TempDir dir;
  const std::string path = dir.file("t.toml");
  nwtest::write_file(path, R"([containers]
enabled = false
cgroup_root = "/host/sys/fs/cgroup"
state_directories = ["/a", "/b"]
netns_directory = "/host/run/netns"
container_labels = true
max_container_labels = 20
)");
  const Config config = load_config(path);
  const auto& w = config.settings.workloads;
  EXPECT_FALSE(w.enabled);
  EXPECT_EQ(w.cgroup_root, "/host/sys/fs/cgroup");
  EXPECT_EQ(w.state_directories, (std::vector<std::string>{"/a", "/b"}));
  EXPECT_EQ(w.netns_directory, "/host/run/netns");
  EXPECT_TRUE(w.container_labels);
  EXPECT_EQ(w.max_container_labels, 20u);
  EXPECT_TRUE(default_config().settings.workloads.enabled);
  EXPECT_FALSE(default_config().settings.workloads.container_labels);
  EXPECT_EQ(config_error("[containers]\nmax_container_labels = 0\n"),
            "t.toml:2:24: key 'containers.max_container_labels' is 0, expected a value in [1, "
            "100000]");
  EXPECT_EQ(config_error("[containers]\nstate_directories = \"/run\"\n"),
            "t.toml:2:21: key 'containers.state_directories' must be an array of strings, got "
            "string");
}

TEST(Config, WrongTypeNamesExpectedType) {
  EXPECT_EQ(config_error("[netwatcher]\nsnapshot_interval = \"fast\"\n"),
            "t.toml:2:21: key 'netwatcher.snapshot_interval' must be a number, got string");
  EXPECT_EQ(config_error("[plugins.tcp]\nenabled = \"yes\"\n"),
            "t.toml:2:11: key 'plugins.tcp.enabled' must be a boolean, got string");
}

TEST(Config, OutOfRangeAndBadChoices) {
  EXPECT_EQ(config_error("[filter]\nsport = [80, 70000]\n"),
            "t.toml:2:14: key 'filter.sport' is 70000, expected a value in [1, 65535]");
  EXPECT_EQ(config_error("[filter]\nfamily = \"ipx\"\n"),
            "t.toml:2:10: key 'filter.family' is \"ipx\", expected one of: any, ipv4, ipv6");
  EXPECT_EQ(config_error("[netwatcher]\nring_buffer_size = 5000\n"),
            "t.toml:2:20: key 'netwatcher.ring_buffer_size' must be a power of two");
}

TEST(Config, SinksMustBeTablesWithType) {
  EXPECT_EQ(config_error("sinks = [\"json\"]\n"),
            "t.toml:1:9: 'sinks' must be an array of tables ([[sinks]])");
  EXPECT_EQ(config_error("[[sinks]]\npath = \"x\"\n"), "t.toml:1:1: 'sinks[0]' has no 'type' key");
  EXPECT_EQ(
      config_error("[[sinks]]\ntype = \"json\"\n[[sinks]]\ntype = \"json\"\nname = \"json\"\n"),
      "t.toml:3:1: two sinks are named 'json'; set distinct 'name' keys");
}

TEST(Config, PluginKeysAreValidatedAgainstTheirDeclaration) {
  std::vector<ConfigKey> keys = {
      {"extra", ConfigType::boolean, false, "", {}, {}, {}},
      {"max_connections", ConfigType::integer, std::int64_t{100}, "", 64, 1000, {}},
  };
  auto error_of = [&](const std::string& text) -> std::string {
    std::string path;
    config_error(text, &path);
    Config config = load_config(path);
    try {
      validate_keys(config, "plugins.tcp", config.plugins.at("tcp").table, keys, {"enabled"});
    } catch (const ConfigError& e) {
      return "t.toml" + std::string(e.what()).substr(path.size());
    }
    return "";
  };
  EXPECT_EQ(error_of("[plugins.tcp]\nextra = true\nbogus = true\n"),
            "t.toml:3:1: unknown key 'plugins.tcp.bogus' (known: enabled, extra, max_connections)");
  EXPECT_EQ(error_of("[plugins.tcp]\nextra = 1\n"),
            "t.toml:2:9: key 'plugins.tcp.extra' must be a boolean, got integer");
  EXPECT_EQ(error_of("[plugins.tcp]\nenabled = true\nmax_connections = 10\n"),
            "t.toml:3:19: key 'plugins.tcp.max_connections' is 10, expected a value in [64, 1000]");
  EXPECT_EQ(error_of("[plugins.tcp]\nextra = true\n"), "");
  std::string path;
  config_error("", &path);
  ConfigValues defaults = validate_keys(load_config(path), "plugins.tcp", nullptr, keys, {});
  EXPECT_FALSE(defaults.get_bool("extra"));
  EXPECT_EQ(defaults.get_int("max_connections"), 100);
}

TEST(Config, PortListsFromTheCommandLine) {
  EXPECT_EQ(parse_port_list("80,443", "-s"), (std::vector<std::uint16_t>{80, 443}));
  try {
    parse_port_list("80,http", "-s");
    FAIL();
  } catch (const ConfigError& e) {
    EXPECT_STREQ(e.what(), "-s: 'http' is not a port number (1-65535)");
  }
}

TEST(Config, AddressListsParseNetworksAndNameTheBadOne) {
  EXPECT_EQ(config_error("[filter]\nlocal_addresses = [\"10.0.0.0/8\", \"10.0.0.300\"]\n"),
            "t.toml:2:34: key 'filter.local_addresses': \"10.0.0.300\" is not an address or a "
            "network (e.g. \"10.0.0.0/8\", \"fd00::/8\")");
  EXPECT_EQ(config_error("[filter]\nremote_addresses = [\"fd00::/129\"]\n"),
            "t.toml:2:21: key 'filter.remote_addresses': \"fd00::/129\" is not an address or a "
            "network (e.g. \"10.0.0.0/8\", \"fd00::/8\")");
  const auto nets = parse_net_list("10.1.2.3/8,fd00::1,192.0.2.1", "--laddr");
  ASSERT_EQ(nets.size(), 3u);
  EXPECT_EQ(nets[0].to_string(), "10.0.0.0/8");  // host bits cleared
  EXPECT_EQ(nets[1].to_string(), "fd00::1/128");
  EXPECT_EQ(nets[2].to_string(), "192.0.2.1/32");
  const std::uint8_t inside[4] = {10, 200, 0, 1}, outside[4] = {11, 0, 0, 1};
  const std::uint8_t mapped[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 9, 8, 7};
  EXPECT_TRUE(nets[0].contains(4, inside));
  EXPECT_FALSE(nets[0].contains(4, outside));
  EXPECT_TRUE(nets[0].contains(6, mapped)) << "IPv4-mapped IPv6";
  EXPECT_FALSE(nets[1].contains(6, mapped));
  const auto odd = AddressNet::parse("10.0.0.129/25");
  ASSERT_TRUE(odd);
  const std::uint8_t below[4] = {10, 0, 0, 127}, above[4] = {10, 0, 0, 200};
  EXPECT_FALSE(odd->contains(4, below));
  EXPECT_TRUE(odd->contains(4, above));
  for (const char* bad : {"10.0.0.0/", "10.0.0.0/33", "10.0.0.0/8x", "host", ""})
    EXPECT_FALSE(AddressNet::parse(bad)) << bad;
  try {
    parse_net_list("10.0.0.0/8,nowhere", "--raddr");
    FAIL();
  } catch (const ConfigError& e) {
    EXPECT_STREQ(e.what(),
                 "--raddr: 'nowhere' is not an address or a network (e.g. 10.0.0.0/8, fd00::/8)");
  }
}

// The errors that need discovered plugins and sinks come from the binary.
TEST(Config, UnknownPluginAndSinkNamesStopStartUp) {
  nwtest::TempDir dir;
  std::string base = std::string(NW_BINARY) + " --plugin-dir " + NW_PLUGIN_DIR + " --config ";
  nwtest::write_file(dir.file("p.toml"), "[plugins.tpc]\nenabled = true\n");
  auto result = nwtest::run(base + dir.file("p.toml") + " --list-plugins");
  EXPECT_EQ(result.exit_code, 2);
  EXPECT_NE(result.output.find(dir.file("p.toml") +
                               ":1:1: unknown plugin 'tpc' (found: dns, drop, http, icmp, l7, "
                               "mysql, netfilter, nic, redis, tcp, udp in " +
                               std::string(NW_PLUGIN_DIR) + ")"),
            std::string::npos)
      << result.output;

  nwtest::write_file(dir.file("s.toml"), "[[sinks]]\ntype = \"kafka\"\n");
  result = nwtest::run(base + dir.file("s.toml") + " --list-plugins");
  EXPECT_EQ(result.exit_code, 2);
  EXPECT_NE(
      result.output.find(dir.file("s.toml") +
                         ":2:8: unknown sink type 'kafka' (found: csv, json, prometheus, stdout)"),
      std::string::npos)
      << result.output;

  nwtest::write_file(dir.file("k.toml"), "[[sinks]]\ntype = \"json\"\npaht = \"x\"\n");
  result = nwtest::run(base + dir.file("k.toml") + " --list-plugins");
  EXPECT_EQ(result.exit_code, 2);
  EXPECT_NE(result.output.find(dir.file("k.toml") + ":3:1: unknown key 'sinks[0].paht'"),
            std::string::npos)
      << result.output;

  nwtest::write_file(dir.file("r.toml"),
                     "[[sinks]]\ntype = \"json\"\nplugins = [\"no_such_plugin\"]\n");
  result = nwtest::run(base + dir.file("r.toml") + " --list-plugins");
  EXPECT_EQ(result.exit_code, 2);
  EXPECT_NE(result.output.find("key 'sinks[0].plugins' names unknown plugin 'no_such_plugin'"),
            std::string::npos)
      << result.output;
}

TEST(Config, ShippedDefaultConfigIsValid) {
  auto result = nwtest::run(std::string(NW_BINARY) + " --plugin-dir " + NW_PLUGIN_DIR +
                            " --config " + NW_SOURCE_DIR + "/netwatcher.toml --list-plugins");
  EXPECT_EQ(result.exit_code, 0) << result.output;
  EXPECT_NE(result.output.find("plugin tcp"), std::string::npos);
  EXPECT_NE(result.output.find("sink prometheus"), std::string::npos);
}

TEST(Config, AnomalySettingsAreReadAndChecked) {
  std::string path;
  ASSERT_EQ(
      config_error("[anomaly]\nenabled = true\nalpha = 0.5\nmultiplier = 4\nwarmup = 10\n", &path),
      "");
  Config config = load_config(path);
  EXPECT_TRUE(config.settings.anomaly.enabled);
  EXPECT_DOUBLE_EQ(config.settings.anomaly.alpha, 0.5);
  EXPECT_DOUBLE_EQ(config.settings.anomaly.multiplier, 4);
  EXPECT_EQ(config.settings.anomaly.warmup, 10u);
  EXPECT_EQ(config_error("[anomaly]\nalpha = 1.5\n"),
            "t.toml:2:9: key 'anomaly.alpha' must be in (0, 1]");
  EXPECT_EQ(config_error("[anomaly]\nmultiplier = 0.5\n"),
            "t.toml:2:14: key 'anomaly.multiplier' must be between 1 and 1000000");
}

TEST(StatsSampler, SampledModeIsOnForOneWindowPerPeriod) {
  using namespace std::chrono_literals;
  const auto start = StatsSampler::clock::now();
  const StatsSampler sampled(BpfStatsMode::sampled, start);
  EXPECT_TRUE(sampled.wanted(start));
  EXPECT_TRUE(sampled.wanted(start + 999ms));
  EXPECT_FALSE(sampled.wanted(start + 1s));
  EXPECT_FALSE(sampled.wanted(start + 29s));
  EXPECT_TRUE(sampled.wanted(start + 30s + 500ms));
  EXPECT_FALSE(sampled.wanted(start + 61s));
  EXPECT_TRUE(StatsSampler(BpfStatsMode::always, start).wanted(start + 17s));
  EXPECT_FALSE(StatsSampler(BpfStatsMode::off, start).wanted(start));
}

TEST(Config, BpfStatsTakesOnlyItsThreeModes) {
  EXPECT_EQ(load_from_text("[netwatcher]\nbpf_stats = \"always\"\n").settings.bpf_stats,
            BpfStatsMode::always);
  EXPECT_EQ(load_from_text("").settings.bpf_stats, BpfStatsMode::sampled);
  EXPECT_NE(config_error("[netwatcher]\nbpf_stats = true\n").find("bpf_stats"), std::string::npos);
  EXPECT_NE(config_error("[netwatcher]\nbpf_stats = \"sometimes\"\n").find("sometimes"),
            std::string::npos);
}

TEST(Config, HookOverridesNameTheirKeyWhenMalformed) {
  Config config = load_from_text(
      "[netwatcher]\nhook_override = { \"*\" = \"fallback\", \"tcp.conn_table\" = "
      "\"user:sock_diag\", \"drop.*\" = \"none\" }\n");
  EXPECT_EQ(config.settings.hook_overrides,
            (std::map<std::string, std::string>{
                {"*", "fallback"}, {"drop.*", "none"}, {"tcp.conn_table", "user:sock_diag"}}));
  EXPECT_EQ(config_error("[netwatcher]\nhook_override = \"fallback\"\n"),
            "t.toml:2:17: key 'netwatcher.hook_override' must be a table of \"plugin.hook\" = "
            "\"program\"");
  EXPECT_EQ(config_error("[netwatcher]\nhook_override = { conn_table = \"x\" }\n"),
            "t.toml:2:32: key 'netwatcher.hook_override.\"conn_table\"' must be \"*\", "
            "\"<plugin>.*\" or \"<plugin>.<hook>\"");
  EXPECT_EQ(config_error("[netwatcher]\nhook_override = { \"tcp.conn_table\" = 3 }\n"),
            "t.toml:2:38: key 'netwatcher.hook_override.\"tcp.conn_table\"' must be a candidate "
            "program name, \"fallback\" (the hook's next candidate) or \"none\"");
}

TEST(Config, KeepCapabilitiesTakesCapabilityNames) {
  EXPECT_EQ(load_from_text("").settings.keep_capabilities,
            capability_bit(CAP_SYS_ADMIN) | capability_bit(CAP_SYS_PTRACE));
  EXPECT_EQ(load_from_text("[netwatcher]\nkeep_capabilities = []\n").settings.keep_capabilities,
            0u);
  EXPECT_EQ(load_from_text("[netwatcher]\nkeep_capabilities = [\"CAP_BPF\", \"cap_net_admin\"]\n")
                .settings.keep_capabilities,
            capability_bit(CAP_BPF) | capability_bit(CAP_NET_ADMIN));
  EXPECT_EQ(config_error("[netwatcher]\nkeep_capabilities = [\"CAP_BPF\", \"CAP_NOPE\"]\n"),
            "t.toml:2:33: key 'netwatcher.keep_capabilities' names unknown capability "
            "\"CAP_NOPE\" (expected names like \"CAP_SYS_ADMIN\" or \"CAP_BPF\", see "
            "capabilities(7))");
  EXPECT_EQ(config_error("[netwatcher]\nkeep_capabilities = \"CAP_BPF\"\n"),
            "t.toml:2:21: key 'netwatcher.keep_capabilities' must be an array of strings, got "
            "string");
}

TEST(Capabilities, NamesAndNumbersMatchTheKernelHeaders) {
  EXPECT_EQ(capability_number("CAP_CHOWN"), CAP_CHOWN);
  EXPECT_EQ(capability_number("CAP_SYS_ADMIN"), CAP_SYS_ADMIN);
  EXPECT_EQ(capability_number("cap_bpf"), CAP_BPF);
  EXPECT_EQ(capability_number("CAP_CHECKPOINT_RESTORE"), CAP_CHECKPOINT_RESTORE);
  EXPECT_EQ(capability_number("SYS_ADMIN"), std::nullopt);
  EXPECT_EQ(capability_number(""), std::nullopt);
  int expected = 0;
  for (const auto& cap : kCapabilityNames) EXPECT_EQ(cap.number, expected++) << cap.name;
  EXPECT_EQ(expected, CAP_LAST_CAP + 1);
  EXPECT_EQ(capability_names(capability_bit(CAP_SYS_PTRACE) | capability_bit(CAP_SYS_ADMIN)),
            "CAP_SYS_PTRACE, CAP_SYS_ADMIN");
  EXPECT_EQ(capability_names(0), "none");
}
