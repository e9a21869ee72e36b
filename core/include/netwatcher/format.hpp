// netwatcher SDK: formatting helpers shared by sinks (and available to plugins).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "netwatcher/event.hpp"
#include "netwatcher/metrics.hpp"

namespace netwatcher {

// RFC 3339 UTC timestamp with nanoseconds, e.g. "2026-11-21T22:13:33.123456789Z".
std::string format_timestamp(std::uint64_t realtime_ns);
// The same, appended to `out` (no quotes); cheap enough for every event.
void append_timestamp(std::string& out, std::uint64_t realtime_ns);

// Appends `text` as a JSON string literal (quotes included). Control characters
// are escaped; bytes that are not valid UTF-8 become U+FFFD, so the output is
// always valid JSON whatever the kernel handed us (task names are raw bytes).
void append_json_string(std::string& out, std::string_view text);

// Appends a value as a JSON token (number, true/false, string, or null when absent).
void append_json_value(std::string& out, const Value& value);

// Appends {"time":..., "timestamp_ns":..., "plugin":..., "event":..., "fields":{...}}
// without a trailing newline. For one-off use; sinks use JsonEventFormatter.
void append_json_event(std::string& out, const Event& event);

// append_json_event() for sinks that write many events: the constant parts of
// each schema (plugin, event and field names) are escaped once and reused, so
// only the values are formatted per event. The output is the same.
// Not thread-safe; schemas must outlive the formatter (they outlive sinks).
class JsonEventFormatter {
 public:
  void append(std::string& out, const Event& event);

 private:
  struct Keys {
    std::string head;                 // ,"plugin":"..","event":"..","fields":{
    std::vector<std::string> fields;  // "name":
  };
  const Keys& keys(const EventSchema* schema);
  std::unordered_map<const EventSchema*, Keys> keys_;
};

// A value as plain text, as a table or CSV cell shows it: "" when absent.
std::string value_to_string(const Value& value);
// The same for a value of `field`: a u64 whose unit is kAddressUnit (a kernel
// address such as a socket) is written as hex, "0xffff9d1ecb3ba300", the way
// kernel tools print pointers. JSON keeps the number.
std::string field_value_to_string(const FieldSchema& field, const Value& value);

// Appends one RFC 4180 field: quoted (with doubled quotes) when it contains a
// comma, a quote, CR or LF, verbatim otherwise.
void append_csv_field(std::string& out, std::string_view text);

// Formats a network address of the given family (AF_INET / AF_INET6) from raw bytes.
std::string format_address(int family, const std::uint8_t* bytes);

// The `family` label value of an address family: "ipv6" for AF_INET6 (10),
// "ipv4" for anything else (callers only hold IPv4 or IPv6 addresses).
const char* family_name(int family);

// An IP protocol number as a label value: "tcp", "udp", "icmp", "icmpv6",
// "sctp", ... or "ip_proto_<n>" (so at most 256 distinct values).
std::string ip_protocol_name(std::uint8_t protocol);

// "u64", "i64", "f64", "bool", "text".
const char* field_type_name(FieldType type);
// The Prometheus TYPE word: "counter", "gauge", "histogram".
const char* metric_type_name(MetricType type);

}  // namespace netwatcher
