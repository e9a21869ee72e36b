#include "config.hpp"

#include <algorithm>
#include <charconv>
#include <filesystem>
#include <sstream>

namespace netwatcher::host {

namespace {

[[noreturn]] void fail(const Config& config, const toml::node* node, const std::string& message) {
  throw ConfigError(config.where(node) + ": " + message);
}

std::string join(const std::vector<std::string>& items) {
  std::string out;
  for (const auto& item : items) {
    if (!out.empty()) out += ", ";
    out += item;
  }
  return out;
}

const char* toml_type_name(const toml::node& node) {
  switch (node.type()) {
    case toml::node_type::table:
      return "table";
    case toml::node_type::array:
      return "array";
    case toml::node_type::string:
      return "string";
    case toml::node_type::integer:
      return "integer";
    case toml::node_type::floating_point:
      return "float";
    case toml::node_type::boolean:
      return "boolean";
    default:
      return "date/time";
  }
}

void check_known_keys(const Config& config, const std::string& table_path, const toml::table& table,
                      const std::vector<std::string>& known) {
  for (auto&& [key, node] : table) {
    if (std::find(known.begin(), known.end(), key.str()) == known.end()) {
      throw ConfigError(config.path + ":" + std::to_string(key.source().begin.line) + ":" +
                        std::to_string(key.source().begin.column) + ": unknown key '" + table_path +
                        "." + std::string(key.str()) + "' (known: " + join(known) + ")");
    }
  }
}

ConfigValue convert(const Config& config, const std::string& full_key, const toml::node& node,
                    const ConfigKey& key) {
  auto type_error = [&]() {
    fail(config, &node,
         "key '" + full_key + "' must be " + config_type_name(key.type) + ", got " +
             toml_type_name(node));
  };
  auto check_range = [&](std::int64_t v, const toml::node& at) {
    if ((key.min && v < *key.min) || (key.max && v > *key.max)) {
      std::string range = "[" + (key.min ? std::to_string(*key.min) : std::string("-inf")) + ", " +
                          (key.max ? std::to_string(*key.max) : std::string("inf")) + "]";
      fail(config, &at,
           "key '" + full_key + "' is " + std::to_string(v) + ", expected a value in " + range);
    }
  };
  switch (key.type) {
    case ConfigType::boolean:
      if (!node.is_boolean()) type_error();
      return node.as_boolean()->get();
    case ConfigType::integer: {
      if (!node.is_integer()) type_error();
      std::int64_t v = node.as_integer()->get();
      check_range(v, node);
      return v;
    }
    case ConfigType::floating:
      if (node.is_integer()) return static_cast<double>(node.as_integer()->get());
      if (!node.is_floating_point()) type_error();
      return node.as_floating_point()->get();
    case ConfigType::string: {
      if (!node.is_string()) type_error();
      std::string v = node.as_string()->get();
      if (!key.choices.empty() &&
          std::find(key.choices.begin(), key.choices.end(), v) == key.choices.end())
        fail(config, &node,
             "key '" + full_key + "' is \"" + v + "\", expected one of: " + join(key.choices));
      return v;
    }
    case ConfigType::string_list: {
      const toml::array* array = node.as_array();
      if (!array) type_error();
      std::vector<std::string> out;
      for (const auto& item : *array) {
        if (!item.is_string())
          fail(config, &item,
               "key '" + full_key + "' must contain only strings, got " + toml_type_name(item));
        out.push_back(item.as_string()->get());
      }
      return out;
    }
    case ConfigType::integer_list: {
      const toml::array* array = node.as_array();
      if (!array) type_error();
      std::vector<std::int64_t> out;
      for (const auto& item : *array) {
        if (!item.is_integer())
          fail(config, &item,
               "key '" + full_key + "' must contain only integers, got " + toml_type_name(item));
        std::int64_t v = item.as_integer()->get();
        check_range(v, item);
        out.push_back(v);
      }
      return out;
    }
  }
  type_error();
  return {};
}

const toml::table* sub_table(const Config& config, const toml::table& root, const char* name) {
  const toml::node* node = root.get(name);
  if (!node) return nullptr;
  if (!node->is_table()) fail(config, node, std::string("'") + name + "' must be a table");
  return node->as_table();
}

std::vector<ConfigKey> host_keys() {
  return {
      {"plugin_dirs", ConfigType::string_list, std::vector<std::string>{}, "", {}, {}, {}},
      {"log_level",
       ConfigType::string,
       std::string("info"),
       "",
       {},
       {},
       {"trace", "debug", "info", "warn", "error", "critical", "off"}},
      {"snapshot_interval", ConfigType::floating, 5.0, "", {}, {}, {}},
      {"ring_buffer_size",
       ConfigType::integer,
       std::int64_t{2 * 1024 * 1024},
       "",
       4096,
       std::int64_t{1} << 30,
       {}},
      {"sink_queue_size", ConfigType::integer, std::int64_t{16384}, "", 16, 1 << 24, {}},
      {"wakeup_bytes", ConfigType::integer, std::int64_t{65536}, "", 0, std::int64_t{1} << 29, {}},
      {"poll_interval", ConfigType::floating, 0.01, "", {}, {}, {}},
      {"bpf_stats",
       ConfigType::string,
       std::string("sampled"),
       "",
       {},
       {},
       {"off", "sampled", "always"}},
      {"keep_capabilities",
       ConfigType::string_list,
       std::vector<std::string>{"CAP_SYS_ADMIN", "CAP_SYS_PTRACE"},
       "",
       {},
       {},
       {}},
  };
}

// [netwatcher] hook_override = { "tcp.conn_table" = "user:sock_diag", "*" = "fallback" }.
// Keys are "*", "<plugin>.*" or "<plugin>.<hook>"; which plugins and hooks
// exist is only known once plugins are loaded, so names are checked there.
std::map<std::string, std::string> parse_hook_overrides(const Config& config,
                                                        const toml::node& node) {
  const toml::table* table = node.as_table();
  if (!table)
    fail(config, &node,
         "key 'netwatcher.hook_override' must be a table of \"plugin.hook\" = \"program\"");
  std::map<std::string, std::string> overrides;
  for (const auto& [key, value] : *table) {
    std::string name(key.str());
    std::string path = "netwatcher.hook_override.\"" + name + "\"";
    auto dot = name.find('.');
    bool well_formed =
        name == "*" || (dot != std::string::npos && dot > 0 && dot + 1 < name.size() &&
                        name.find('.', dot + 1) == std::string::npos);
    if (!well_formed)
      fail(config, &value,
           "key '" + path + "' must be \"*\", \"<plugin>.*\" or \"<plugin>.<hook>\"");
    const std::string* program = value.as_string() ? &value.as_string()->get() : nullptr;
    if (!program || program->empty())
      fail(config, &value,
           "key '" + path +
               "' must be a candidate program name, \"fallback\" (the hook's next candidate) or "
               "\"none\"");
    overrides[name] = *program;
  }
  return overrides;
}

std::vector<ConfigKey> anomaly_keys() {
  return {
      {"enabled", ConfigType::boolean, false, "", {}, {}, {}},
      {"alpha", ConfigType::floating, 0.2, "", {}, {}, {}},
      {"multiplier", ConfigType::floating, 3.0, "", {}, {}, {}},
      {"warmup", ConfigType::integer, std::int64_t{30}, "", 0, 1000000000, {}},
      {"per_connection", ConfigType::boolean, false, "", {}, {}, {}},
      {"max_series", ConfigType::integer, std::int64_t{65536}, "", 1, 1 << 24, {}},
      {"max_logs_per_second", ConfigType::floating, 10.0, "", {}, {}, {}},
  };
}

std::vector<ConfigKey> container_keys() {
  const WorkloadSettings defaults;
  return {
      {"enabled", ConfigType::boolean, defaults.enabled, "", {}, {}, {}},
      {"cgroup_root", ConfigType::string, defaults.cgroup_root, "", {}, {}, {}},
      {"state_directories", ConfigType::string_list, defaults.state_directories, "", {}, {}, {}},
      {"netns_directory", ConfigType::string, defaults.netns_directory, "", {}, {}, {}},
      {"container_labels", ConfigType::boolean, defaults.container_labels, "", {}, {}, {}},
      {"max_container_labels",
       ConfigType::integer,
       static_cast<std::int64_t>(defaults.max_container_labels),
       "",
       1,
       100000,
       {}},
  };
}

std::vector<ConfigKey> filter_keys() {
  return {
      {"pid", ConfigType::integer, std::int64_t{0}, "", 0, 4194304, {}},
      {"sport", ConfigType::integer_list, std::vector<std::int64_t>{}, "", 1, 65535, {}},
      {"dport", ConfigType::integer_list, std::vector<std::int64_t>{}, "", 1, 65535, {}},
      {"family", ConfigType::string, std::string("any"), "", {}, {}, {"any", "ipv4", "ipv6"}},
      {"local_addresses", ConfigType::string_list, std::vector<std::string>{}, "", {}, {}, {}},
      {"remote_addresses", ConfigType::string_list, std::vector<std::string>{}, "", {}, {}, {}},
  };
}

std::vector<std::uint16_t> to_ports(const Config& config, const toml::node* node,
                                    const std::vector<std::int64_t>& values,
                                    const std::string& key) {
  if (values.size() > GlobalFilter::kMaxPorts)
    fail(config, node,
         "key '" + key + "' lists " + std::to_string(values.size()) + " ports, at most " +
             std::to_string(GlobalFilter::kMaxPorts) + " are supported");
  return {values.begin(), values.end()};
}

std::vector<AddressNet> to_nets(const Config& config, const toml::node* node,
                                const std::vector<std::string>& values, const std::string& key) {
  if (values.size() > GlobalFilter::kMaxNets)
    fail(config, node,
         "key '" + key + "' lists " + std::to_string(values.size()) + " networks, at most " +
             std::to_string(GlobalFilter::kMaxNets) + " are supported");
  std::vector<AddressNet> nets;
  for (std::size_t i = 0; i < values.size(); ++i) {
    std::optional<AddressNet> net = AddressNet::parse(values[i]);
    if (!net) {
      const toml::node* item = node && node->as_array() ? node->as_array()->get(i) : node;
      fail(config, item,
           "key '" + key + "': \"" + values[i] +
               "\" is not an address or a network (e.g. \"10.0.0.0/8\", \"fd00::/8\")");
    }
    nets.push_back(*net);
  }
  return nets;
}

}  // namespace

std::string Config::where(const toml::node* node) const {
  if (!node || !node->source().begin) return path;
  return path + ":" + std::to_string(node->source().begin.line) + ":" +
         std::to_string(node->source().begin.column);
}

ConfigValues validate_keys(const Config& config, const std::string& table_path,
                           const toml::table* table, const std::vector<ConfigKey>& keys,
                           const std::set<std::string>& reserved) {
  ConfigValues values;
  if (table) {
    std::vector<std::string> known(reserved.begin(), reserved.end());
    for (const auto& key : keys) known.push_back(key.name);
    check_known_keys(config, table_path, *table, known);
  }
  for (const auto& key : keys) {
    const toml::node* node = table ? table->get(key.name) : nullptr;
    values.set(key.name,
               node ? convert(config, table_path + "." + key.name, *node, key) : key.default_value);
  }
  return values;
}

std::vector<std::uint16_t> parse_port_list(const std::string& text, const std::string& what) {
  std::vector<std::uint16_t> ports;
  std::stringstream in(text);
  std::string item;
  while (std::getline(in, item, ',')) {
    unsigned value = 0;
    auto [end, ec] = std::from_chars(item.data(), item.data() + item.size(), value);
    if (ec != std::errc() || end != item.data() + item.size() || value == 0 || value > 65535)
      throw ConfigError(what + ": '" + item + "' is not a port number (1-65535)");
    ports.push_back(static_cast<std::uint16_t>(value));
  }
  if (ports.empty()) throw ConfigError(what + ": expected a port or a comma-separated list");
  if (ports.size() > GlobalFilter::kMaxPorts)
    throw ConfigError(what + ": at most " + std::to_string(GlobalFilter::kMaxPorts) + " ports");
  return ports;
}

std::vector<AddressNet> parse_net_list(const std::string& text, const std::string& what) {
  std::vector<AddressNet> nets;
  std::stringstream in(text);
  std::string item;
  while (std::getline(in, item, ',')) {
    std::optional<AddressNet> net = AddressNet::parse(item);
    if (!net)
      throw ConfigError(what + ": '" + item +
                        "' is not an address or a network (e.g. 10.0.0.0/8, fd00::/8)");
    nets.push_back(*net);
  }
  if (nets.empty()) throw ConfigError(what + ": expected a network or a comma-separated list");
  if (nets.size() > GlobalFilter::kMaxNets)
    throw ConfigError(what + ": at most " + std::to_string(GlobalFilter::kMaxNets) + " networks");
  return nets;
}

ConfigValue parse_cli_value(const ConfigKey& key, const std::string& text,
                            const std::string& flag) {
  auto bad = [&]() -> ConfigValue {
    throw ConfigError(flag + ": '" + text + "' is not " + config_type_name(key.type));
  };
  switch (key.type) {
    case ConfigType::boolean:
      if (text == "true" || text == "1") return true;
      if (text == "false" || text == "0") return false;
      return bad();
    case ConfigType::integer: {
      std::int64_t v = 0;
      auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
      if (ec != std::errc() || end != text.data() + text.size()) return bad();
      if ((key.min && v < *key.min) || (key.max && v > *key.max))
        throw ConfigError(flag + ": " + text + " is out of range");
      return v;
    }
    case ConfigType::floating:
      try {
        std::size_t used = 0;
        double v = std::stod(text, &used);
        if (used != text.size()) return bad();
        return v;
      } catch (const std::exception&) {
        return bad();
      }
    case ConfigType::string:
      return text;
    case ConfigType::string_list:
      return std::vector<std::string>{text};
    case ConfigType::integer_list: {
      std::vector<std::int64_t> out;
      for (auto port : parse_port_list(text, flag)) out.push_back(port);
      return out;
    }
  }
  return bad();
}

Config default_config() {
  Config config;
  config.path = "<built-in defaults>";
  config.root = std::make_shared<toml::table>();
  SinkSection sink;
  sink.type = "stdout";
  sink.instance = "stdout";
  sink.table_path = "sinks[0]";
  config.sinks.push_back(sink);
  return config;
}

Config load_config(const std::string& path) {
  Config config;
  config.path = path;
  config.from_file = true;
  try {
    config.root = std::make_shared<toml::table>(toml::parse_file(path));
  } catch (const toml::parse_error& e) {
    const auto& begin = e.source().begin;
    throw ConfigError(path + ":" + std::to_string(begin.line) + ":" + std::to_string(begin.column) +
                      ": " + std::string(e.description()));
  }
  const toml::table& root = *config.root;
  check_known_keys(config, "<top level>", root,
                   {"netwatcher", "filter", "anomaly", "containers", "plugins", "sinks"});

  const toml::table* host = sub_table(config, root, "netwatcher");
  ConfigValues hv = validate_keys(config, "netwatcher", host, host_keys(), {"hook_override"});
  if (const toml::node* overrides = host ? host->get("hook_override") : nullptr)
    config.settings.hook_overrides = parse_hook_overrides(config, *overrides);
  config.settings.plugin_dirs = hv.get_strings("plugin_dirs");
  // Relative plugin directories are relative to the config file, like includes.
  auto base = std::filesystem::path(path).parent_path();
  for (auto& dir : config.settings.plugin_dirs)
    if (std::filesystem::path(dir).is_relative()) dir = (base / dir).lexically_normal().string();
  config.settings.log_level = hv.get_string("log_level");
  config.settings.snapshot_interval_s = hv.get_double("snapshot_interval");
  if (config.settings.snapshot_interval_s < 0.1 || config.settings.snapshot_interval_s > 3600)
    fail(config, host ? host->get("snapshot_interval") : nullptr,
         "key 'netwatcher.snapshot_interval' must be between 0.1 and 3600 seconds");
  config.settings.ring_buffer_bytes = hv.get_int("ring_buffer_size");
  if (config.settings.ring_buffer_bytes & (config.settings.ring_buffer_bytes - 1))
    fail(config, host ? host->get("ring_buffer_size") : nullptr,
         "key 'netwatcher.ring_buffer_size' must be a power of two");
  config.settings.sink_queue_capacity = hv.get_int("sink_queue_size");
  config.settings.wakeup_bytes = static_cast<std::uint64_t>(hv.get_int("wakeup_bytes"));
  if (config.settings.wakeup_bytes > config.settings.ring_buffer_bytes / 2)
    fail(config, host ? host->get("wakeup_bytes") : nullptr,
         "key 'netwatcher.wakeup_bytes' must be at most half of ring_buffer_size (" +
             std::to_string(config.settings.ring_buffer_bytes / 2) +
             "), or records are lost before the host is woken");
  config.settings.poll_interval_s = hv.get_double("poll_interval");
  if (!(config.settings.poll_interval_s >= 0.001 && config.settings.poll_interval_s <= 1))
    fail(config, host ? host->get("poll_interval") : nullptr,
         "key 'netwatcher.poll_interval' must be between 0.001 and 1 second");
  const std::string stats = hv.get_string("bpf_stats");
  config.settings.bpf_stats = stats == "off"      ? BpfStatsMode::off
                              : stats == "always" ? BpfStatsMode::always
                                                  : BpfStatsMode::sampled;
  const auto& keep = hv.get_strings("keep_capabilities");
  config.settings.keep_capabilities = 0;
  for (std::size_t i = 0; i < keep.size(); ++i) {
    const std::optional<int> number = capability_number(keep[i]);
    if (!number) {
      const toml::node* list = host ? host->get("keep_capabilities") : nullptr;
      const toml::node* item = list && list->as_array() ? list->as_array()->get(i) : list;
      fail(config, item,
           "key 'netwatcher.keep_capabilities' names unknown capability \"" + keep[i] +
               "\" (expected names like \"CAP_SYS_ADMIN\" or \"CAP_BPF\", see capabilities(7))");
    }
    config.settings.keep_capabilities |= capability_bit(*number);
  }

  const toml::table* anomaly = sub_table(config, root, "anomaly");
  ConfigValues av = validate_keys(config, "anomaly", anomaly, anomaly_keys(), {});
  AnomalySettings& detector = config.settings.anomaly;
  detector.enabled = av.get_bool("enabled");
  detector.alpha = av.get_double("alpha");
  detector.multiplier = av.get_double("multiplier");
  detector.warmup = static_cast<std::uint64_t>(av.get_int("warmup"));
  detector.per_connection = av.get_bool("per_connection");
  detector.max_series = static_cast<std::size_t>(av.get_int("max_series"));
  detector.max_logs_per_second = av.get_double("max_logs_per_second");
  if (!(detector.alpha > 0 && detector.alpha <= 1))
    fail(config, anomaly ? anomaly->get("alpha") : nullptr,
         "key 'anomaly.alpha' must be in (0, 1]");
  if (!(detector.multiplier >= 1 && detector.multiplier <= 1e6))
    fail(config, anomaly ? anomaly->get("multiplier") : nullptr,
         "key 'anomaly.multiplier' must be between 1 and 1000000");
  if (!(detector.max_logs_per_second >= 0 && detector.max_logs_per_second <= 1e6))
    fail(config, anomaly ? anomaly->get("max_logs_per_second") : nullptr,
         "key 'anomaly.max_logs_per_second' must be between 0 and 1000000");

  const toml::table* containers = sub_table(config, root, "containers");
  ConfigValues cv = validate_keys(config, "containers", containers, container_keys(), {});
  WorkloadSettings& workloads = config.settings.workloads;
  workloads.enabled = cv.get_bool("enabled");
  workloads.cgroup_root = cv.get_string("cgroup_root");
  workloads.state_directories = cv.get_strings("state_directories");
  workloads.netns_directory = cv.get_string("netns_directory");
  workloads.container_labels = cv.get_bool("container_labels");
  workloads.max_container_labels = static_cast<std::size_t>(cv.get_int("max_container_labels"));

  const toml::table* filter = sub_table(config, root, "filter");
  ConfigValues fv = validate_keys(config, "filter", filter, filter_keys(), {});
  config.filter.pid = static_cast<std::uint32_t>(fv.get_int("pid"));
  config.filter.sports = to_ports(config, filter ? filter->get("sport") : nullptr,
                                  fv.get_ints("sport"), "filter.sport");
  config.filter.dports = to_ports(config, filter ? filter->get("dport") : nullptr,
                                  fv.get_ints("dport"), "filter.dport");
  const std::string& family = fv.get_string("family");
  config.filter.family = family == "ipv4" ? 4 : family == "ipv6" ? 6 : 0;
  config.filter.local_nets = to_nets(config, filter ? filter->get("local_addresses") : nullptr,
                                     fv.get_strings("local_addresses"), "filter.local_addresses");
  config.filter.remote_nets =
      to_nets(config, filter ? filter->get("remote_addresses") : nullptr,
              fv.get_strings("remote_addresses"), "filter.remote_addresses");

  if (const toml::table* plugins = sub_table(config, root, "plugins")) {
    for (auto&& [name, node] : *plugins) {
      if (!node.is_table())
        fail(config, &node, "'plugins." + std::string(name.str()) + "' must be a table");
      PluginSection section;
      section.table = node.as_table();
      section.enabled = true;
      if (const toml::node* enabled = section.table->get("enabled")) {
        if (!enabled->is_boolean())
          fail(config, enabled,
               "key 'plugins." + std::string(name.str()) + ".enabled' must be a boolean, got " +
                   toml_type_name(*enabled));
        section.enabled = enabled->as_boolean()->get();
      }
      config.plugins[std::string(name.str())] = section;
    }
  }

  if (const toml::node* sinks = root.get("sinks")) {
    const toml::array* array = sinks->as_array();
    if (!array || !array->is_array_of_tables())
      fail(config, sinks, "'sinks' must be an array of tables ([[sinks]])");
    std::map<std::string, int> seen_types;
    std::set<std::string> instances;
    for (std::size_t i = 0; i < array->size(); ++i) {
      const toml::table* table = (*array)[i].as_table();
      SinkSection sink;
      sink.table = table;
      sink.table_path = "sinks[" + std::to_string(i) + "]";
      const toml::node* type = table->get("type");
      if (!type) fail(config, table, "'" + sink.table_path + "' has no 'type' key");
      if (!type->is_string())
        fail(config, type, "key '" + sink.table_path + ".type' must be a string");
      sink.type = type->as_string()->get();
      if (const toml::node* name = table->get("name")) {
        if (!name->is_string())
          fail(config, name, "key '" + sink.table_path + ".name' must be a string");
        sink.instance = name->as_string()->get();
      } else {
        int n = seen_types[sink.type]++;
        sink.instance = n == 0 ? sink.type : sink.type + "#" + std::to_string(n);
      }
      if (!instances.insert(sink.instance).second)
        fail(config, table,
             "two sinks are named '" + sink.instance + "'; set distinct 'name' keys");
      if (const toml::node* routed = table->get("plugins")) {
        const toml::array* list = routed->as_array();
        if (!list) fail(config, routed, "key '" + sink.table_path + ".plugins' must be an array");
        std::vector<std::string> names;
        for (const auto& item : *list) {
          if (!item.is_string())
            fail(config, &item, "key '" + sink.table_path + ".plugins' must contain strings");
          names.push_back(item.as_string()->get());
        }
        sink.plugins = names;
      }
      config.sinks.push_back(sink);
    }
  }
  return config;
}

}  // namespace netwatcher::host
