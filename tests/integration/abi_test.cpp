// The plugin ABI as the netwatcher binary enforces it: refusals at start-up
// name the plugin and the reason, and the other plugins keep running.
#include <gtest/gtest.h>

#include "harness.hpp"

using namespace nwtest;

namespace {

class Abi : public ::testing::Test {
 protected:
  void SetUp() override { NW_REQUIRE_ROOT(); }
  CommandResult check(const std::string& config) {
    write_file(dir_.file("c.toml"), config);
    return run(std::string(NW_BINARY) + " --plugin-dir " + NW_PLUGIN_DIR + " --plugin-dir " +
               NW_FIXTURE_DIR + " --config " + dir_.file("c.toml") + " --check 2>&1");
  }
  TempDir dir_;
};

TEST_F(Abi, ABpfObjectOfAnotherContractIsRefusedBeforeLoad) {
  auto result = check("[plugins.contract_probe]\n[plugins.tcp]\n");
  EXPECT_EQ(result.exit_code, 1) << result.output;
  // The fixture says the host's contract + 98 (the unit test pins the numbers).
  const std::size_t line =
      result.output.find("plugin contract_probe: CANNOT RUN: BPF object built against contract ");
  ASSERT_NE(line, std::string::npos) << result.output;
  EXPECT_NE(result.output.find(", host speaks ", line), std::string::npos) << result.output;
  EXPECT_NE(result.output.find("plugin tcp: ok"), std::string::npos) << result.output;
}

TEST_F(Abi, AThrowingDescribeOrAnInvalidSchemaRefusesThePlugin) {
  auto result = check("[plugins.describe_throws]\n[plugins.invalid_schema]\n[plugins.tcp]\n");
  EXPECT_EQ(result.exit_code, 1) << result.output;
  EXPECT_NE(
      result.output.find(
          "error plugin 'describe_throws': describe() failed: fixture cannot describe itself"),
      std::string::npos)
      << result.output;
  EXPECT_NE(result.output.find("plugin describe_throws: CANNOT RUN (refused by the loader)"),
            std::string::npos)
      << result.output;
  EXPECT_NE(result.output.find("error plugin 'invalid_schema': event 'tick': declared twice"),
            std::string::npos)
      << result.output;
  EXPECT_NE(result.output.find("plugin invalid_schema: CANNOT RUN (refused by the loader)"),
            std::string::npos)
      << result.output;
  EXPECT_NE(result.output.find("error sink 'sink_describe_throws': describe() failed: fixture "
                               "sink cannot describe itself"),
            std::string::npos)
      << result.output;
  EXPECT_NE(result.output.find("plugin tcp: ok"), std::string::npos) << result.output;
}

// A 3.1 plugin loads on a 3.2 host, but its BPF object has no address
// tries: the host says so instead of letting the filter look applied.
TEST_F(Abi, AnAddressFilterWarnsOfAPluginThatPredatesIt) {
  auto result = check(
      "[filter]\nremote_addresses = [\"10.0.0.0/8\"]\n[plugins.older_minor]\n[plugins.tcp]\n");
  EXPECT_NE(result.output.find("plugin 'older_minor' (ABI 3.1) predates address filters: "
                               "local_addresses/remote_addresses apply only to its events"),
            std::string::npos)
      << result.output;
  EXPECT_EQ(result.output.find("plugin 'tcp' (ABI"), std::string::npos) << result.output;
  EXPECT_NE(result.output.find("plugin tcp: ok"), std::string::npos) << result.output;
}

TEST_F(Abi, APluginOfTheOldStringAbiIsRefusedNamingIt) {
  auto result = check("[plugins.old_string_abi]\n[plugins.tcp]\n");
  EXPECT_EQ(result.exit_code, 1) << result.output;
  EXPECT_NE(result.output.find("old_string_abi.so': built with _GLIBCXX_USE_CXX11_ABI=0, host "
                               "uses _GLIBCXX_USE_CXX11_ABI=1"),
            std::string::npos)
      << result.output;
  EXPECT_NE(result.output.find("plugin old_string_abi: CANNOT RUN (refused by the loader)"),
            std::string::npos)
      << result.output;
}

TEST_F(Abi, ListPluginsShowsTheCompilerAndTheIdentity) {
  auto result =
      run(std::string(NW_BINARY) + " --plugin-dir " + NW_PLUGIN_DIR + " --list-plugins 2>&1");
  EXPECT_EQ(result.exit_code, 0) << result.output;
  EXPECT_NE(result.output.find("\n  built by "), std::string::npos) << result.output;
  EXPECT_NE(result.output.find(" for libstdc++-"), std::string::npos) << result.output;
}

}  // namespace
