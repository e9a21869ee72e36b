// netwatcher SDK: configuration keys.
//
// Plugins and sinks declare their keys (name, type, default, description). The
// host validates `[plugins.<name>]` and `[[sinks]]` tables of netwatcher.toml
// against the declaration before the plugin sees anything: unknown keys, wrong
// types and out-of-range values are start-up errors naming file, line and key.
// A plugin therefore receives only well-typed values, with defaults filled in.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace netwatcher {

enum class ConfigType : std::uint8_t {
  boolean,
  integer,
  floating,
  string,
  string_list,
  integer_list
};

using ConfigValue = std::variant<bool, std::int64_t, double, std::string, std::vector<std::string>,
                                 std::vector<std::int64_t>>;

// "a boolean", "an integer", ...: the type as messages name it.
constexpr const char* config_type_name(ConfigType type) noexcept {
  switch (type) {
    case ConfigType::boolean:
      return "a boolean";
    case ConfigType::integer:
      return "an integer";
    case ConfigType::floating:
      return "a number";
    case ConfigType::string:
      return "a string";
    case ConfigType::string_list:
      return "an array of strings";
    case ConfigType::integer_list:
      return "an array of integers";
  }
  return "?";
}

struct ConfigKey {
  std::string name;
  ConfigType type = ConfigType::boolean;
  ConfigValue default_value;
  std::string description;
  std::optional<std::int64_t> min;  // integer and integer_list only
  std::optional<std::int64_t> max;
  std::vector<std::string> choices;  // string only; empty = any
};

// A short command-line flag a plugin contributes, e.g. `-a` for tcp's all_conn.
// Setting it sets `key` of that plugin to true (or to the given value when
// `value_name` is not empty) and enables the plugin. A switch whose key is
// "enabled" only enables the plugin (e.g. `-k` for drop).
struct CliFlag {
  char short_name = 0;    // 0 = long form only
  std::string long_name;  // e.g. "all-conn"
  std::string key;        // plugin config key it sets
  std::string help;
  std::string value_name;  // empty: a switch
};

// Validated values, one per declared key. Getters throw std::out_of_range for an
// undeclared key and std::bad_variant_access for a wrong type: both are plugin
// bugs, and the SDK adapters turn them into a failed Status.
class ConfigValues {
 public:
  void set(const std::string& key, ConfigValue value) { values_[key] = std::move(value); }
  bool has(const std::string& key) const { return values_.count(key) != 0; }
  const ConfigValue& at(const std::string& key) const {
    auto it = values_.find(key);
    if (it == values_.end()) throw std::out_of_range("undeclared config key '" + key + "'");
    return it->second;
  }
  bool get_bool(const std::string& key) const { return std::get<bool>(at(key)); }
  std::int64_t get_int(const std::string& key) const { return std::get<std::int64_t>(at(key)); }
  double get_double(const std::string& key) const { return std::get<double>(at(key)); }
  const std::string& get_string(const std::string& key) const {
    return std::get<std::string>(at(key));
  }
  const std::vector<std::string>& get_strings(const std::string& key) const {
    return std::get<std::vector<std::string>>(at(key));
  }
  const std::vector<std::int64_t>& get_ints(const std::string& key) const {
    return std::get<std::vector<std::int64_t>>(at(key));
  }
  const std::map<std::string, ConfigValue>& all() const { return values_; }

 private:
  std::map<std::string, ConfigValue> values_;
};

// A network of an address filter: `prefix` leading bits of `addr` (IPv4 in
// addr[0..3]); the bits after them are zero.
struct AddressNet {
  int family = 0;  // 4 or 6
  std::array<std::uint8_t, 16> addr{};
  unsigned prefix = 0;

  // "10.0.0.0/8", "fd00::/8", or one address ("192.0.2.1" is a /32). Host bits
  // set in a network ("10.1.2.3/8") are cleared, as ip-route(8) would refuse
  // and iptables(8) clears them. nullopt when `text` is neither.
  static std::optional<AddressNet> parse(std::string_view text);
  // Whether an address (4 or 16 bytes, by `family`) is in this network. An
  // IPv4 network also holds the IPv4-mapped IPv6 form (::ffff:a.b.c.d) of
  // its addresses: dual-stack sockets show IPv4 peers that way.
  bool contains(int family, const std::uint8_t* address) const noexcept;
  std::string to_string() const;
};

// The `[filter]` table and -p/-s/-d/-4/-6/--laddr/--raddr. Plugins apply it
// in the kernel where they can; the host applies it again to events that
// carry fields named `pid`, `sport`, `dport`, `saddr`, `daddr` or `family`.
// Empty / zero means "no filter". Plugins receive it by reference from
// configure(); members are only ever added at the end (ABI 3.2 added the
// address lists).
struct GlobalFilter {
  std::uint32_t pid = 0;
  std::vector<std::uint16_t> sports;           // local ports
  std::vector<std::uint16_t> dports;           // remote ports
  int family = 0;                              // 0 = both, 4 = IPv4 only, 6 = IPv6 only
  static constexpr std::size_t kMaxPorts = 8;  // in-kernel filter capacity
  std::vector<AddressNet> local_nets;          // local address in one of them
  std::vector<AddressNet> remote_nets;         // remote address in one of them
  // In-kernel capacity per list (each IPv4 network takes two trie entries,
  // its IPv4 and its IPv4-mapped IPv6 form).
  static constexpr std::size_t kMaxNets = 128;
};

}  // namespace netwatcher
