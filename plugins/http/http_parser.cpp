#include "http_parser.hpp"

#include <algorithm>
#include <array>
#include <cctype>
#include <charconv>
#include <utility>

namespace netwatcher::http {
namespace {

constexpr std::array<std::string_view, 9> kMethods = {
    "GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "CONNECT", "TRACE"};
// Beyond 2^53 a size is not a size a real peer sends (and JSON loses it).
constexpr std::uint64_t kMaxBodySize = std::uint64_t{1} << 53;
constexpr std::size_t kMaxChunkLine = 1024;
constexpr int kMaxChunks = 65536;

bool is_tchar(char c) {
  if (std::isalnum(static_cast<unsigned char>(c))) return true;
  return std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
}

bool is_token(std::string_view text) {
  return !text.empty() && std::all_of(text.begin(), text.end(), is_tchar);
}

bool is_ctl(char c) {
  auto u = static_cast<unsigned char>(c);
  return u < 0x20 || u == 0x7f;
}

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) ==
                  std::tolower(static_cast<unsigned char>(y));
         });
}

std::string_view trim(std::string_view text) {
  while (!text.empty() && (text.front() == ' ' || text.front() == '\t')) text.remove_prefix(1);
  while (!text.empty() && (text.back() == ' ' || text.back() == '\t')) text.remove_suffix(1);
  return text;
}

std::optional<std::uint64_t> decimal(std::string_view text) {
  if (text.empty() || text.size() > 16) return std::nullopt;
  std::uint64_t value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size() || value > kMaxBodySize)
    return std::nullopt;
  return value;
}

// One line of the head, within what is left of the head budget.
std::optional<std::string_view> head_line(ByteReader& reader, std::size_t max_head,
                                          ParseResult& failure) {
  std::size_t budget = max_head > reader.position() ? max_head - reader.position() : 0;
  auto line = reader.line(budget);
  if (!line)
    failure = reader.remaining() > budget
                  ? ParseResult::invalid("head longer than " + std::to_string(max_head) + " bytes")
                  : ParseResult::incomplete();
  return line;
}

struct Fields {
  std::optional<std::uint64_t> content_length;
  bool transfer_encoding = false;
  bool chunked = false;  // chunked is the final transfer coding
  std::string host;
};

// Header fields up to and including the empty line that ends the head.
ParseResult read_fields(ByteReader& reader, std::size_t max_head, Fields& fields) {
  for (;;) {
    ParseResult failure;
    auto line = head_line(reader, max_head, failure);
    if (!line) return failure;
    if (line->empty()) return ParseResult::complete();
    if (line->front() == ' ' || line->front() == '\t')
      return ParseResult::invalid("obsolete line folding in a header field");
    auto colon = line->find(':');
    if (colon == std::string_view::npos) return ParseResult::invalid("header line without ':'");
    std::string_view name = line->substr(0, colon);
    if (!is_token(name)) return ParseResult::invalid("malformed header field name");
    std::string_view value = trim(line->substr(colon + 1));
    if (std::any_of(value.begin(), value.end(), [](char c) { return is_ctl(c) && c != '\t'; }))
      return ParseResult::invalid("control character in header field '" + std::string(name) + "'");

    if (iequals(name, "content-length")) {
      // A list of identical values is allowed (RFC 9110 8.6); anything else
      // makes the message length ambiguous.
      std::optional<std::uint64_t> length;
      std::size_t start = 0;
      for (;;) {
        auto comma = value.find(',', start);
        auto item = decimal(trim(value.substr(start, comma - start)));
        if (!item || (length && *length != *item))
          return ParseResult::invalid("invalid Content-Length");
        length = item;
        if (comma == std::string_view::npos) break;
        start = comma + 1;
      }
      if (fields.content_length && fields.content_length != length)
        return ParseResult::invalid("conflicting Content-Length fields");
      fields.content_length = length;
    } else if (iequals(name, "transfer-encoding")) {
      fields.transfer_encoding = true;
      auto comma = value.rfind(',');
      std::string_view last =
          trim(comma == std::string_view::npos ? value : value.substr(comma + 1));
      fields.chunked = iequals(last, "chunked");
    } else if (iequals(name, "host") && fields.host.empty()) {
      fields.host = std::string(value);
    }
  }
}

// The chunked body starting at `reader`: payload bytes and bytes on the wire,
// or nullopt when it does not end within the bytes or is malformed (the head
// is still good, the size is just not known).
std::optional<std::pair<std::uint64_t, std::uint64_t>> chunked_body(ByteReader reader) {
  const std::size_t start = reader.position();
  std::uint64_t payload = 0;
  for (int chunk = 0; chunk < kMaxChunks; ++chunk) {
    auto line = reader.line(kMaxChunkLine);
    if (!line) return std::nullopt;
    std::string_view size_text = trim(line->substr(0, line->find(';')));
    std::uint64_t size = 0;
    auto [end, ec] =
        std::from_chars(size_text.data(), size_text.data() + size_text.size(), size, 16);
    if (size_text.empty() || size_text.size() > 14 || ec != std::errc() ||
        end != size_text.data() + size_text.size())
      return std::nullopt;
    if (size == 0) {
      // Trailer fields, then the empty line.
      for (int trailer = 0; trailer < 256; ++trailer) {
        auto field = reader.line(kMaxChunkLine * 8);
        if (!field) return std::nullopt;
        if (field->empty()) return std::pair{payload, std::uint64_t{reader.position() - start}};
      }
      return std::nullopt;
    }
    if (!reader.skip(size)) return std::nullopt;
    auto end_of_data = reader.line(0);
    if (!end_of_data) return std::nullopt;
    payload += size;
    if (payload > kMaxBodySize) return std::nullopt;
  }
  return std::nullopt;
}

// Leading empty lines before a start line are to be ignored (RFC 9112 2.2).
void skip_empty_lines(ByteReader& reader) {
  for (int i = 0; i < 4; ++i) {
    if (reader.starts_with("\r\n"))
      reader.skip(2);
    else if (reader.starts_with("\n"))
      reader.skip(1);
    else
      return;
  }
}

// For a start line that has not ended yet: whether these first bytes can
// still begin a request line (a method token, then a space) or a status line
// ("HTTP/1."). Lets binary protocols fail at once instead of waiting for a
// line end that never comes.
bool could_start_request(ByteReader reader) {
  auto rest = reader.take(std::min<std::size_t>(reader.remaining(), 33));
  for (char c : rest.value_or(std::string_view())) {
    if (c == ' ') return true;
    if (!is_tchar(c)) return false;
  }
  return rest.value_or(std::string_view()).size() < 33;
}

bool could_start_response(ByteReader reader) {
  constexpr std::string_view kPrefix = "HTTP/1.";
  auto rest = reader.take(std::min(reader.remaining(), kPrefix.size()));
  return rest && kPrefix.substr(0, rest->size()) == *rest;
}

bool valid_version(std::string_view version) {
  return version.size() == 8 && version.substr(0, 7) == "HTTP/1." &&
         (version[7] == '0' || version[7] == '1');
}

}  // namespace

bool HttpParser::detect_request(std::span<const std::byte> first_bytes) const noexcept {
  return detect_request_start(first_bytes, /*cut_short=*/true) == L7Detection::yes;
}

L7Detection detect_request_start(std::span<const std::byte> captured, bool cut_short) noexcept {
  std::string_view text(reinterpret_cast<const char*>(captured.data()), captured.size());
  // RFC 9112 section 2.2: empty lines before the request line are ignored.
  while (text.starts_with("\r\n") || text.starts_with("\n"))
    text.remove_prefix(text.front() == '\r' ? 2 : 1);
  const auto method_end = text.find(' ');
  if (method_end == std::string_view::npos) {
    const bool method_arriving = std::any_of(kMethods.begin(), kMethods.end(), [&](auto method) {
      return method.size() > text.size() && method.starts_with(text);
    });
    return method_arriving && !cut_short ? L7Detection::maybe : L7Detection::no;
  }
  if (std::find(kMethods.begin(), kMethods.end(), text.substr(0, method_end)) == kMethods.end())
    return L7Detection::no;
  const auto line_end = text.find('\n', method_end);
  if (line_end == std::string_view::npos) return cut_short ? L7Detection::yes : L7Detection::maybe;
  std::string_view line = text.substr(0, line_end);
  if (line.ends_with('\r')) line.remove_suffix(1);
  const auto version_start = line.rfind(' ');
  if (version_start == method_end) return L7Detection::no;
  return valid_version(line.substr(version_start + 1)) ? L7Detection::yes : L7Detection::no;
}

ParseResult HttpParser::parse_request(std::span<const std::byte> bytes, L7Request& request) const {
  ByteReader reader(bytes);
  skip_empty_lines(reader);
  if (!could_start_request(reader)) return ParseResult::invalid("does not start with a method");
  ParseResult failure;
  auto line = head_line(reader, options_.max_head_bytes, failure);
  if (!line) return failure;
  auto first_space = line->find(' ');
  auto last_space = line->rfind(' ');
  if (first_space == std::string_view::npos || last_space == first_space)
    return ParseResult::invalid("request line is not 'method target version'");
  std::string_view method = line->substr(0, first_space);
  std::string_view target = line->substr(first_space + 1, last_space - first_space - 1);
  std::string_view version = line->substr(last_space + 1);
  if (!is_token(method) || method.size() > 32) return ParseResult::invalid("malformed method");
  if (target.empty() ||
      std::any_of(target.begin(), target.end(), [](char c) { return is_ctl(c) || c == ' '; }))
    return ParseResult::invalid("malformed request target");
  if (!valid_version(version)) return ParseResult::invalid("not HTTP/1.0 or HTTP/1.1");

  // The start line is known even if the capture cut the headers.
  request.operation = std::string(method);
  request.version = std::string(version.substr(5));
  std::string_view path = target;
  if (options_.strip_query) path = path.substr(0, path.find('?'));
  request.resource = std::string(path);

  Fields fields;
  if (ParseResult r = read_fields(reader, options_.max_head_bytes, fields);
      r.status != ParseStatus::complete)
    return r;
  if (fields.transfer_encoding && !fields.chunked)
    return ParseResult::invalid("request with a Transfer-Encoding other than chunked last");
  request.authority = fields.host;
  request.head_size = reader.position();
  request.body_size.reset();
  request.message_size.reset();
  if (fields.chunked) {
    // Transfer-Encoding overrides Content-Length (RFC 9112 6.3).
    if (auto body = chunked_body(reader)) {
      request.body_size = body->first;
      request.message_size = request.head_size + body->second;
    }
  } else {
    std::uint64_t length = fields.content_length.value_or(0);
    request.body_size = length;
    request.message_size = request.head_size + length;
  }
  return ParseResult::complete();
}

ParseResult HttpParser::parse_response(std::span<const std::byte> bytes, const L7Request* request,
                                       L7Response& response) const {
  ByteReader reader(bytes);
  skip_empty_lines(reader);
  if (!could_start_response(reader)) return ParseResult::invalid("does not start with HTTP/1.");
  ParseResult failure;
  auto line = head_line(reader, options_.max_head_bytes, failure);
  if (!line) return failure;
  // HTTP-version SP 3DIGIT SP [reason]; some servers omit the last SP.
  if (line->size() < 12 || !valid_version(line->substr(0, 8)) || (*line)[8] != ' ')
    return ParseResult::invalid("status line does not start with 'HTTP/1.x '");
  std::string_view code = line->substr(9, 3);
  if (!std::all_of(code.begin(), code.end(),
                   [](char c) { return std::isdigit(static_cast<unsigned char>(c)); }) ||
      code[0] < '1')
    return ParseResult::invalid("malformed status code");
  if (line->size() > 12 && (*line)[12] != ' ')
    return ParseResult::invalid("status code is not three digits");
  std::string_view reason = line->size() > 13 ? line->substr(13) : std::string_view();
  if (std::any_of(reason.begin(), reason.end(), [](char c) { return is_ctl(c) && c != '\t'; }))
    return ParseResult::invalid("control character in reason phrase");

  const int status = (code[0] - '0') * 100 + (code[1] - '0') * 10 + (code[2] - '0');
  response.status = status;
  response.detail = std::string(reason);

  Fields fields;
  if (ParseResult r = read_fields(reader, options_.max_head_bytes, fields);
      r.status != ParseStatus::complete)
    return r;
  response.head_size = reader.position();
  response.body_size.reset();
  response.message_size.reset();
  const bool head_request = request && request->operation == "HEAD";
  if (head_request || status < 200 || status == 204 || status == 304) {
    response.body_size = 0;
    response.message_size = response.head_size;
  } else if (fields.chunked) {
    if (auto body = chunked_body(reader)) {
      response.body_size = body->first;
      response.message_size = response.head_size + body->second;
    }
  } else if (fields.content_length && !fields.transfer_encoding) {
    response.body_size = *fields.content_length;
    response.message_size = response.head_size + *fields.content_length;
  }
  // Otherwise the body runs until the connection closes: size unknown here.
  return ParseResult::complete();
}

}  // namespace netwatcher::http
