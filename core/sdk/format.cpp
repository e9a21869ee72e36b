#include "netwatcher/format.hpp"

#include <arpa/inet.h>
#include <sys/socket.h>

#include <charconv>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <ctime>

namespace netwatcher {

void append_timestamp(std::string& out, std::uint64_t realtime_ns) {
  // Sinks write many events per second: the date part is formatted once per
  // second and per thread, the nanoseconds by hand.
  thread_local std::uint64_t cached_second = ~std::uint64_t{0};
  thread_local char prefix[32];
  thread_local std::size_t prefix_length = 0;
  const std::uint64_t second = realtime_ns / 1000000000ULL;
  if (second != cached_second) {
    std::time_t seconds = static_cast<std::time_t>(second);
    std::tm tm{};
    gmtime_r(&seconds, &tm);
    int n =
        std::snprintf(prefix, sizeof prefix, "%04d-%02d-%02dT%02d:%02d:%02d.", tm.tm_year + 1900,
                      tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
    prefix_length = n > 0 ? static_cast<std::size_t>(n) : 0;
    cached_second = second;
  }
  out.append(prefix, prefix_length);
  char digits[10];
  std::uint64_t fraction = realtime_ns % 1000000000ULL;
  for (int i = 8; i >= 0; --i) {
    digits[i] = static_cast<char>('0' + fraction % 10);
    fraction /= 10;
  }
  digits[9] = 'Z';
  out.append(digits, sizeof digits);
}

std::string format_timestamp(std::uint64_t realtime_ns) {
  std::string out;
  append_timestamp(out, realtime_ns);
  return out;
}

namespace {

// Length of the valid UTF-8 sequence starting at s[i], or 0 if it is invalid.
std::size_t utf8_sequence_length(std::string_view s, std::size_t i) {
  const auto byte = [&](std::size_t k) { return static_cast<unsigned char>(s[k]); };
  unsigned char c = byte(i);
  std::size_t len;
  std::uint32_t min;
  if (c >= 0xC2 && c <= 0xDF) {
    len = 2;
    min = 0x80;
  } else if (c >= 0xE0 && c <= 0xEF) {
    len = 3;
    min = 0x800;
  } else if (c >= 0xF0 && c <= 0xF4) {
    len = 4;
    min = 0x10000;
  } else {
    return 0;
  }
  if (i + len > s.size()) return 0;
  std::uint32_t cp = c & (0xFF >> (len + 1));
  for (std::size_t k = 1; k < len; ++k) {
    if ((byte(i + k) & 0xC0) != 0x80) return 0;
    cp = (cp << 6) | (byte(i + k) & 0x3F);
  }
  if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
  return len;
}

void append_double(std::string& out, double v) {
  if (!std::isfinite(v)) {
    out += "null";
    return;
  }
  // Shortest text that reads back as the same double: 1e-06, not 9.99...e-07.
  char buf[32];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);
  out.append(buf, ec == std::errc() ? end : buf);
}

}  // namespace

void append_json_string(std::string& out, std::string_view text) {
  out += '"';
  for (std::size_t i = 0; i < text.size();) {
    // Runs of plain printable ASCII, the common case, are copied at once.
    std::size_t plain = i;
    while (plain < text.size()) {
      unsigned char p = static_cast<unsigned char>(text[plain]);
      if (p < 0x20 || p >= 0x7F || p == '"' || p == '\\') break;
      ++plain;
    }
    if (plain > i) {
      out.append(text.data() + i, plain - i);
      i = plain;
      continue;
    }
    unsigned char c = static_cast<unsigned char>(text[i]);
    if (c < 0x80) {
      switch (c) {
        case '"':
          out += "\\\"";
          break;
        case '\\':
          out += "\\\\";
          break;
        case '\n':
          out += "\\n";
          break;
        case '\r':
          out += "\\r";
          break;
        case '\t':
          out += "\\t";
          break;
        case '\b':
          out += "\\b";
          break;
        case '\f':
          out += "\\f";
          break;
        default:
          if (c < 0x20 || c == 0x7F) {
            char buf[8];
            std::snprintf(buf, sizeof buf, "\\u%04x", c);
            out += buf;
          } else {
            out += static_cast<char>(c);
          }
      }
      ++i;
      continue;
    }
    std::size_t len = utf8_sequence_length(text, i);
    if (len == 0) {
      out += "\\ufffd";
      ++i;
    } else {
      out.append(text.substr(i, len));
      i += len;
    }
  }
  out += '"';
}

void append_json_value(std::string& out, const Value& value) {
  std::visit(
      [&](const auto& v) {
        using T = std::decay_t<decltype(v)>;
        if constexpr (std::is_same_v<T, std::monostate>) {
          out += "null";
        } else if constexpr (std::is_same_v<T, bool>) {
          out += v ? "true" : "false";
        } else if constexpr (std::is_same_v<T, double>) {
          append_double(out, v);
        } else if constexpr (std::is_same_v<T, std::string>) {
          append_json_string(out, v);
        } else {
          char buf[24];
          auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);
          out.append(buf, ec == std::errc() ? end : buf);
        }
      },
      value);
}

const JsonEventFormatter::Keys& JsonEventFormatter::keys(const EventSchema* schema) {
  auto it = keys_.find(schema);
  if (it != keys_.end()) return it->second;
  Keys k;
  k.head = ",\"plugin\":";
  append_json_string(k.head, schema->plugin);
  k.head += ",\"event\":";
  append_json_string(k.head, schema->name);
  k.head += ",\"fields\":{";
  for (const auto& field : schema->fields) {
    std::string key;
    append_json_string(key, field.name);
    key += ':';
    k.fields.push_back(std::move(key));
  }
  return keys_.emplace(schema, std::move(k)).first->second;
}

void JsonEventFormatter::append(std::string& out, const Event& event) {
  const Keys& k = keys(event.schema);
  out += "{\"time\":\"";
  append_timestamp(out, event.timestamp_ns);
  out += "\",\"timestamp_ns\":";
  char buf[24];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, event.timestamp_ns);
  out.append(buf, ec == std::errc() ? end : buf);
  out += k.head;
  bool first = true;
  for (std::size_t i = 0; i < k.fields.size() && i < event.values.size(); ++i) {
    if (std::holds_alternative<std::monostate>(event.values[i])) continue;
    if (!first) out += ',';
    first = false;
    out += k.fields[i];
    append_json_value(out, event.values[i]);
  }
  out += "}}";
}

void append_json_event(std::string& out, const Event& event) {
  JsonEventFormatter().append(out, event);
}

std::string field_value_to_string(const FieldSchema& field, const Value& value) {
  if (field.unit == kAddressUnit)
    if (const auto* address = std::get_if<std::uint64_t>(&value)) {
      char hex[24];
      std::snprintf(hex, sizeof hex, "0x%" PRIx64, *address);
      return hex;
    }
  return value_to_string(value);
}

std::string value_to_string(const Value& value) {
  return std::visit(
      [](const auto& v) -> std::string {
        using T = std::decay_t<decltype(v)>;
        if constexpr (std::is_same_v<T, std::monostate>) {
          return "";
        } else if constexpr (std::is_same_v<T, bool>) {
          return v ? "true" : "false";
        } else if constexpr (std::is_same_v<T, double>) {
          std::string s;
          append_double(s, v);
          return s == "null" ? "" : s;
        } else if constexpr (std::is_same_v<T, std::string>) {
          return v;
        } else {
          return std::to_string(v);
        }
      },
      value);
}

void append_csv_field(std::string& out, std::string_view text) {
  if (text.find_first_of(",\"\r\n") == std::string_view::npos) {
    out.append(text);
    return;
  }
  out += '"';
  for (char c : text) {
    if (c == '"') out += '"';
    out += c;
  }
  out += '"';
}

const char* family_name(int family) {
  return family == AF_INET6 ? "ipv6" : "ipv4";
}

std::string format_address(int family, const std::uint8_t* bytes) {
  if (family == AF_INET) {
    // By hand: glibc's inet_ntop goes through sprintf, a hot spot per packet.
    // Each octet has at most 3 digits, so "255.255.255.255" (15 bytes) is the
    // longest text and every write below stays inside buf, which the compiler
    // can see (std::to_chars' error path, which returns the end, is gone).
    char buf[sizeof "255.255.255.255"];
    char* p = buf;
    for (int i = 0; i < 4; ++i) {
      if (i) *p++ = '.';
      const unsigned octet = bytes[i];
      if (octet >= 100) *p++ = static_cast<char>('0' + octet / 100);
      if (octet >= 10) *p++ = static_cast<char>('0' + octet / 10 % 10);
      *p++ = static_cast<char>('0' + octet % 10);
    }
    return std::string(buf, p);
  }
  if (family == AF_INET6) {
    char buf[INET6_ADDRSTRLEN] = {};
    if (!inet_ntop(AF_INET6, bytes, buf, sizeof buf)) return "";
    return buf;
  }
  return "";
}

const char* field_type_name(FieldType type) {
  switch (type) {
    case FieldType::u64:
      return "u64";
    case FieldType::i64:
      return "i64";
    case FieldType::f64:
      return "f64";
    case FieldType::boolean:
      return "bool";
    case FieldType::text:
      return "text";
  }
  return "?";
}

const char* metric_type_name(MetricType type) {
  switch (type) {
    case MetricType::counter:
      return "counter";
    case MetricType::gauge:
      return "gauge";
    case MetricType::histogram:
      return "histogram";
  }
  return "untyped";
}

std::string ip_protocol_name(std::uint8_t protocol) {
  switch (protocol) {
    case 1:
      return "icmp";
    case 2:
      return "igmp";
    case 6:
      return "tcp";
    case 17:
      return "udp";
    case 47:
      return "gre";
    case 50:
      return "esp";
    case 58:
      return "icmpv6";
    case 132:
      return "sctp";
    case 136:
      return "udplite";
    default:
      return "ip_proto_" + std::to_string(protocol);
  }
}

}  // namespace netwatcher
