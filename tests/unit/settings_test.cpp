// Config keys declared as Setting members (declare.hpp): what the host is
// told, what it then refuses, and what the plugin reads back.
#include <gtest/gtest.h>

#include "config.hpp"
#include "netwatcher/declare.hpp"
#include "test_support.hpp"

namespace {

using namespace netwatcher;
using netwatcher::host::Config;
using netwatcher::host::ConfigError;
using netwatcher::host::load_config;
using netwatcher::host::validate_keys;

struct Declared {
  KeySet keys;
  Setting<bool> events{keys, "events", true, "emit events"};
  Setting<std::uint32_t> max_flows{keys, "max_flows", 16384, "flows", {.min = 64, .max = 1 << 22}};
  Setting<std::uint16_t> port{keys, "port", 53, "a port"};
  Setting<std::int64_t> offset{keys, "offset", -5, "signed, unbounded"};
  Setting<double> ratio{keys, "ratio", 0.5, "a share"};
  Setting<std::string> mode{keys, "mode", "fast", "how", {.choices = {"fast", "slow"}}};
  Setting<std::vector<std::string>> names{keys, "names", {"a"}, "names"};
};

// validate_keys() over a [plugins.p] table with `body`: the values, or the
// error without the temporary file's directory.
std::pair<ConfigValues, std::string> validated(const std::vector<ConfigKey>& keys,
                                               const std::string& body) {
  static nwtest::TempDir dir;
  const std::string path = dir.file("t.toml");
  nwtest::write_file(path, "[plugins.p]\n" + body);
  Config config = load_config(path);
  try {
    return {validate_keys(config, "plugins.p", config.plugins.at("p").table, keys, {"enabled"}),
            ""};
  } catch (const ConfigError& e) {
    const std::string message = e.what();
    return {{}, "t.toml" + message.substr(path.size())};
  }
}

TEST(Settings, KeysAreDeclaredInOrderWithTypesDefaultsAndTheRangeOfTheirType) {
  Declared d;
  const std::vector<ConfigKey> keys = d.keys.keys();
  ASSERT_EQ(keys.size(), 7u);
  EXPECT_EQ(keys[0].name, "events");
  EXPECT_EQ(keys[0].type, ConfigType::boolean);
  EXPECT_EQ(std::get<bool>(keys[0].default_value), true);
  EXPECT_EQ(keys[1].type, ConfigType::integer);
  EXPECT_EQ(std::get<std::int64_t>(keys[1].default_value), 16384);
  EXPECT_EQ(keys[1].min, 64);
  EXPECT_EQ(keys[1].max, 1 << 22);
  // Not declared, but a u16 holds nothing else.
  EXPECT_EQ(keys[2].min, 0);
  EXPECT_EQ(keys[2].max, 65535);
  EXPECT_FALSE(keys[3].min.has_value());
  EXPECT_FALSE(keys[3].max.has_value());
  EXPECT_EQ(keys[4].type, ConfigType::floating);
  EXPECT_EQ(keys[5].type, ConfigType::string);
  EXPECT_EQ(keys[5].choices, (std::vector<std::string>{"fast", "slow"}));
  EXPECT_EQ(keys[6].type, ConfigType::string_list);
  EXPECT_EQ(keys[1].description, "flows");
}

TEST(Settings, TheHostRefusesWhatTheSettingCannotHold) {
  Declared d;
  EXPECT_EQ(validated(d.keys.keys(), "port = 70000\n").second,
            "t.toml:2:8: key 'plugins.p.port' is 70000, expected a value in [0, 65535]");
  EXPECT_EQ(validated(d.keys.keys(), "max_flows = -1\n").second,
            "t.toml:2:13: key 'plugins.p.max_flows' is -1, expected a value in [64, 4194304]");
  EXPECT_NE(validated(d.keys.keys(), "mode = \"medium\"\n").second.find("'plugins.p.mode'"),
            std::string::npos);
}

TEST(Settings, DefaultsUntilReadThenTheValidatedValues) {
  Declared d;
  EXPECT_TRUE(*d.events);
  EXPECT_EQ(*d.max_flows, 16384u);
  EXPECT_EQ(*d.mode, "fast");
  auto [values, error] =
      validated(d.keys.keys(),
                "events = false\nmax_flows = 100\nport = 5353\nratio = 0.25\nmode = \"slow\"\n"
                "names = [\"x\", \"y\"]\n");
  ASSERT_EQ(error, "");
  ASSERT_TRUE(d.keys.read(values).ok());
  EXPECT_FALSE(*d.events);
  EXPECT_EQ(*d.max_flows, 100u);
  EXPECT_EQ(*d.port, 5353);
  EXPECT_EQ(*d.offset, -5) << "the default the host filled in";
  EXPECT_DOUBLE_EQ(*d.ratio, 0.25);
  EXPECT_EQ(*d.mode, "slow");
  EXPECT_EQ(d.names->size(), 2u);
}

TEST(Settings, ValuesThatDidNotComeFromTheDeclarationFailNamingTheKey) {
  Declared d;
  ConfigValues missing;
  missing.set("events", false);
  EXPECT_EQ(d.keys.read(missing).message(), "config key 'max_flows' has no value");
  auto [values, error] = validated(d.keys.keys(), "");
  ASSERT_EQ(error, "");
  values.set("port", std::string("53"));
  EXPECT_EQ(d.keys.read(values).message(), "config key 'port' does not hold an integer");
}

}  // namespace
