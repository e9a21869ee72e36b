// Loading and validating netwatcher.toml.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include <toml++/toml.h>

#include "anomaly.hpp"
#include "capabilities.hpp"
#include "netwatcher/config.hpp"
#include "stats_sampler.hpp"
#include "workloads.hpp"

namespace netwatcher::host {

// A start-up configuration error; what() is "file:line:column: message".
class ConfigError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct HostSettings {
  std::vector<std::string> plugin_dirs;
  std::string log_level = "info";
  double snapshot_interval_s = 5.0;
  std::uint64_t ring_buffer_bytes = 2 * 1024 * 1024;
  std::uint64_t sink_queue_capacity = 16384;
  // Unread ring-buffer bytes that wake the poller; below that it reads on its
  // next poll_interval tick. 0: woken for every record the kernel's way.
  std::uint64_t wakeup_bytes = 65536;
  double poll_interval_s = 0.01;
  // Kernel run-time statistics for BPF programs (see stats_sampler.hpp).
  BpfStatsMode bpf_stats = BpfStatsMode::sampled;
  // [netwatcher] hook_override: "*", "plugin.*" or "plugin.hook" -> a
  // candidate program, "fallback" or "none" (see ProbeRuntime).
  std::map<std::string, std::string> hook_overrides;
  // Capabilities kept once everything is attached (capability_bit() mask).
  std::uint64_t keep_capabilities = kDefaultKeptCapabilities;
  AnomalySettings anomaly;
  WorkloadSettings workloads;  // [containers]
};

struct PluginSection {
  bool enabled = false;
  const toml::table* table = nullptr;  // null when the file has no such section
};

struct SinkSection {
  std::string type;
  std::string instance;                             // `name`, or derived from type
  std::optional<std::vector<std::string>> plugins;  // routing; nullopt = all
  const toml::table* table = nullptr;
  std::string table_path;  // "sinks[0]" for messages
};

struct Config {
  std::string path;
  bool from_file = false;
  std::shared_ptr<toml::table> root;  // owns the tables referenced below
  HostSettings settings;
  GlobalFilter filter;
  std::map<std::string, PluginSection> plugins;
  std::vector<SinkSection> sinks;

  // "file:line:column" of a node, or just the file.
  std::string where(const toml::node* node) const;
};

// Parses and validates the host-level parts ([netwatcher], [filter], the shape
// of [plugins.*] and [[sinks]]). Throws ConfigError.
Config load_config(const std::string& path);

// The configuration used when the default file does not exist: every
// discovered probe plugin on, one stdout sink.
Config default_config();

// Validates `table` (may be null: all defaults) against declared keys and
// returns typed values with defaults filled in. `table_path` ("plugins.tcp")
// prefixes key names in messages; `reserved` keys are skipped. Throws ConfigError.
ConfigValues validate_keys(const Config& config, const std::string& table_path,
                           const toml::table* table, const std::vector<ConfigKey>& keys,
                           const std::set<std::string>& reserved);

// Parses "80,443" style port lists (CLI and config), throws ConfigError naming `what`.
std::vector<std::uint16_t> parse_port_list(const std::string& text, const std::string& what);
// "10.0.0.0/8,fd00::/8" from --laddr/--raddr; ConfigError naming `what`.
std::vector<AddressNet> parse_net_list(const std::string& text, const std::string& what);

// Converts a CLI string into a value of the key's type, throws ConfigError.
ConfigValue parse_cli_value(const ConfigKey& key, const std::string& text, const std::string& flag);

}  // namespace netwatcher::host
