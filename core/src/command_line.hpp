// netwatcher's command line: the core's options, the flags plugins add to
// them, and where the config and the plugins are found by default.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include <boost/program_options.hpp>

#include "config.hpp"
#include "probe_runtime.hpp"

namespace netwatcher::host {

inline constexpr const char* kDefaultConfig = "netwatcher.toml";

struct Options {
  std::string config_path = kDefaultConfig;
  bool config_given = false;
  std::vector<std::string> plugin_dirs;
  bool list_plugins = false;
  bool check = false;
  double duration_s = 0;
  bool verbose = false;
};

// The options netwatcher itself takes, before any plugin's.
boost::program_options::options_description core_options();

// Beside the binary (plugins/) in a build tree, lib/netwatcher beside bin/
// once installed; the ones that exist.
std::vector<std::string> default_plugin_dirs();

// Without --config: ./netwatcher.toml, else the installed one (etc/ of the
// install prefix, then /etc); empty when there is none.
std::string default_config_path();

// A flag a plugin declared, with the config key it sets.
struct PluginFlag {
  std::string plugin;
  CliFlag flag;
  ConfigKey key;
};

// Every plugin's flags, skipping (with a warning) any that collide with the
// core's options or an earlier plugin's, or name no declared key.
std::vector<PluginFlag> plugin_flags(const std::vector<std::unique_ptr<ProbeRuntime>>& runtimes);

// Adds one group per plugin with flags to `all`, headed by the plugin's name
// and `descriptions` entry, in the order README.md describes the plugins.
void add_plugin_flags(boost::program_options::options_description& all,
                      const std::vector<PluginFlag>& flags,
                      const std::map<std::string, std::string>& descriptions);

// Config keys set by plugin flags, per plugin; they win over the file's.
using PluginOverrides = std::map<std::string, std::map<std::string, ConfigValue>>;

// Folds the filter flags and plugins' flags of `vm` into `config` (a plugin
// flag also enables its plugin) and `overrides`. Throws ConfigError naming
// the flag for a bad value.
void apply_command_line(const boost::program_options::variables_map& vm,
                        const std::vector<PluginFlag>& flags, Config& config,
                        PluginOverrides& overrides);

}  // namespace netwatcher::host
