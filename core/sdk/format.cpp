#include "netwatcher/format.hpp"

#include <arpa/inet.h>
#include <sys/socket.h>

#include <charconv>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <ctime>

namespace netwatcher {

std::string format_timestamp(std::uint64_t realtime_ns) {
  std::time_t seconds = static_cast<std::time_t>(realtime_ns / 1000000000ULL);
  std::tm tm{};
  gmtime_r(&seconds, &tm);
  char buf[64];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%09" PRIu64 "Z", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                static_cast<std::uint64_t>(realtime_ns % 1000000000ULL));
  return buf;
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
          out += std::to_string(v);
        }
      },
      value);
}

void append_json_event(std::string& out, const Event& event) {
  out += "{\"time\":";
  append_json_string(out, format_timestamp(event.timestamp_ns));
  out += ",\"timestamp_ns\":";
  out += std::to_string(event.timestamp_ns);
  out += ",\"plugin\":";
  append_json_string(out, event.schema->plugin);
  out += ",\"event\":";
  append_json_string(out, event.schema->name);
  out += ",\"fields\":{";
  const auto& fields = event.schema->fields;
  bool first = true;
  for (std::size_t i = 0; i < fields.size() && i < event.values.size(); ++i) {
    if (std::holds_alternative<std::monostate>(event.values[i])) continue;
    if (!first) out += ',';
    first = false;
    append_json_string(out, fields[i].name);
    out += ':';
    append_json_value(out, event.values[i]);
  }
  out += "}}";
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
  char buf[INET6_ADDRSTRLEN] = {};
  if (family == AF_INET) {
    inet_ntop(AF_INET, bytes, buf, sizeof buf);
  } else if (family == AF_INET6) {
    inet_ntop(AF_INET6, bytes, buf, sizeof buf);
  } else {
    return "";
  }
  return buf;
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
