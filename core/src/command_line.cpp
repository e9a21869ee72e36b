#include "command_line.hpp"

#include <algorithm>
#include <filesystem>
#include <iterator>
#include <set>

#include <spdlog/spdlog.h>

namespace po = boost::program_options;

namespace netwatcher::host {

namespace {

std::filesystem::path executable_dir() {
  std::error_code ec;
  auto exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  return ec ? std::filesystem::path{} : exe.parent_path();
}

// --help lists plugins in the order README.md describes them ("What the ...
// plugin reports"), the ones it does not know after them by name.
constexpr const char* kHelpOrder[] = {"tcp",  "http",      "dns", "redis", "mysql",
                                      "drop", "netfilter", "udp", "icmp",  "nic"};

std::vector<std::string> help_order(std::vector<std::string> plugins) {
  auto rank = [](const std::string& plugin) {
    auto it = std::find(std::begin(kHelpOrder), std::end(kHelpOrder), plugin);
    return std::distance(std::begin(kHelpOrder), it);
  };
  std::sort(plugins.begin(), plugins.end(), [&](const std::string& a, const std::string& b) {
    return rank(a) != rank(b) ? rank(a) < rank(b) : a < b;
  });
  return plugins;
}

}  // namespace

std::vector<std::string> default_plugin_dirs() {
  auto dir = executable_dir();
  if (dir.empty()) return {};
  std::error_code ec;
  std::vector<std::string> dirs;
  for (auto candidate : {dir / "plugins", dir / ".." / "lib" / "netwatcher"})
    if (std::filesystem::is_directory(candidate, ec))
      dirs.push_back(candidate.lexically_normal().string());
  return dirs;
}

std::string default_config_path() {
  std::error_code ec;
  std::vector<std::filesystem::path> candidates{kDefaultConfig};
  if (auto dir = executable_dir(); !dir.empty())
    candidates.push_back(dir / ".." / "etc" / "netwatcher" / kDefaultConfig);
  candidates.push_back(std::filesystem::path("/etc/netwatcher") / kDefaultConfig);
  for (const auto& candidate : candidates)
    if (std::filesystem::is_regular_file(candidate, ec))
      return candidate.lexically_normal().string();
  return {};
}

po::options_description core_options() {
  po::options_description desc("Options");
  desc.add_options()("help,h", "show this help (plugin flags included)")(
      "version", "print the version")("config,c", po::value<std::string>(),
                                      "configuration file (default ./netwatcher.toml)")(
      "plugin-dir", po::value<std::vector<std::string>>()->composing(),
      "directory with plugin and sink .so files (repeatable)")(
      "list-plugins", "list plugins and sinks: version, ABI, hooks, events, metrics")(
      "check", "report kernel features and whether each enabled plugin can attach")(
      "duration", po::value<double>(), "stop after SECONDS")("verbose,v", "debug logging")(
      "pid,p", po::value<std::uint32_t>(), "only this process ([filter] pid)")(
      "sport,s", po::value<std::string>(), "only these local ports, e.g. 80,443 ([filter] sport)")(
      "dport,d", po::value<std::string>(), "only these remote ports ([filter] dport)")(
      "laddr", po::value<std::string>(),
      "only these local addresses or networks, e.g. 10.0.0.0/8,fd00::/8 ([filter] "
      "local_addresses)")("raddr", po::value<std::string>(),
                          "only these remote addresses or networks ([filter] remote_addresses)")(
      "ipv4,4", "IPv4 only ([filter] family)")("ipv6,6", "IPv6 only ([filter] family)")(
      "timeload,L", "flag latency anomalies in events ([anomaly] enabled)");
  return desc;
}

std::vector<PluginFlag> plugin_flags(const std::vector<std::unique_ptr<ProbeRuntime>>& runtimes) {
  // The core's own names, long and short, come first.
  std::set<std::string> taken;
  const po::options_description core = core_options();
  for (const auto& option : core.options()) {
    taken.insert(option->long_name());
    const std::string shown =
        option->canonical_display_name(po::command_line_style::allow_dash_for_short);
    if (shown.size() == 2 && shown[0] == '-') taken.insert(shown.substr(1));
  }
  std::vector<PluginFlag> flags;
  for (const auto& runtime : runtimes) {
    for (const auto& flag : runtime->description().flags) {
      std::string shorty = flag.short_name ? std::string(1, flag.short_name) : "";
      if (taken.count(flag.long_name) || (!shorty.empty() && taken.count(shorty))) {
        spdlog::warn("plugin '{}': flag --{} collides with another flag; ignored", runtime->name(),
                     flag.long_name);
        continue;
      }
      static const ConfigKey kEnabled{"enabled", ConfigType::boolean, false, "enable the plugin"};
      const ConfigKey* key = flag.key == "enabled" ? &kEnabled : nullptr;
      for (const auto& k : runtime->description().config)
        if (k.name == flag.key) key = &k;
      if (!key) {
        spdlog::warn("plugin '{}': flag --{} names unknown key '{}'; ignored", runtime->name(),
                     flag.long_name, flag.key);
        continue;
      }
      taken.insert(flag.long_name);
      if (!shorty.empty()) taken.insert(shorty);
      flags.push_back({runtime->name(), flag, *key});
    }
  }
  return flags;
}

void add_plugin_flags(po::options_description& all, const std::vector<PluginFlag>& flags,
                      const std::map<std::string, std::string>& descriptions) {
  std::vector<std::string> plugins;
  for (const auto& [plugin, description] : descriptions) plugins.push_back(plugin);
  for (const auto& plugin : help_order(plugins)) {
    const std::string& description = descriptions.at(plugin);
    po::options_description group(plugin + " plugin" +
                                  (description.empty() ? "" : " (" + description + ")"));
    for (const auto& f : flags) {
      if (f.plugin != plugin) continue;
      std::string spec = f.flag.long_name;
      if (f.flag.short_name) spec += std::string(",") + f.flag.short_name;
      std::string help = f.flag.help + " (" + f.plugin + "." + f.flag.key + ")";
      if (f.flag.value_name.empty())
        group.add_options()(spec.c_str(), help.c_str());
      else
        group.add_options()(spec.c_str(), po::value<std::string>()->value_name(f.flag.value_name),
                            help.c_str());
    }
    if (!group.options().empty()) all.add(group);
  }
}

void apply_command_line(const po::variables_map& vm, const std::vector<PluginFlag>& flags,
                        Config& config, PluginOverrides& overrides) {
  if (vm.count("pid")) config.filter.pid = vm["pid"].as<std::uint32_t>();
  if (vm.count("sport"))
    config.filter.sports = parse_port_list(vm["sport"].as<std::string>(), "-s/--sport");
  if (vm.count("dport"))
    config.filter.dports = parse_port_list(vm["dport"].as<std::string>(), "-d/--dport");
  if (vm.count("laddr"))
    config.filter.local_nets = parse_net_list(vm["laddr"].as<std::string>(), "--laddr");
  if (vm.count("raddr"))
    config.filter.remote_nets = parse_net_list(vm["raddr"].as<std::string>(), "--raddr");
  if (vm.count("ipv4") && vm.count("ipv6")) throw ConfigError("-4 and -6 exclude each other");
  if (vm.count("ipv4")) config.filter.family = 4;
  if (vm.count("ipv6")) config.filter.family = 6;
  if (vm.count("timeload")) config.settings.anomaly.enabled = true;
  for (const auto& f : flags) {
    if (!vm.count(f.flag.long_name)) continue;
    ConfigValue value = f.flag.value_name.empty()
                            ? ConfigValue(true)
                            : parse_cli_value(f.key, vm[f.flag.long_name].as<std::string>(),
                                              "--" + f.flag.long_name);
    if (f.flag.value_name.empty() && f.key.type != ConfigType::boolean)
      throw ConfigError("--" + f.flag.long_name +
                        ": plugin declared a switch for a non-boolean key");
    if (f.flag.key != "enabled") overrides[f.plugin][f.flag.key] = value;
    config.plugins[f.plugin].enabled = true;
  }
}

}  // namespace netwatcher::host
