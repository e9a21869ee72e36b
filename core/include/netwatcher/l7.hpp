// netwatcher SDK: application-protocol (L7) parsing.
//
// Protocol plugins (HTTP, later DNS, Redis, MySQL) read requests and
// responses from bytes captured off sockets. Those bytes come from other
// processes and the network: untrusted, truncated at any point, possibly not
// the protocol at all. Everything here is built for that:
//   - ByteReader never reads outside its span and reports running out as
//     "not there" (std::nullopt), never as an exception or a crash;
//   - a parser says `incomplete` when the bytes stop before the message head
//     ends (the caller may retry with more), `invalid` when they cannot be
//     this protocol, and `complete` with what it found.
// These types live inside a plugin; none of them crosses the plugin ABI.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

namespace netwatcher {

// A bounds-checked cursor over untrusted bytes. Every read either succeeds
// and advances, or returns std::nullopt / false and leaves the position alone.
// The reader does not own the bytes: they must outlive it.
class ByteReader {
 public:
  explicit ByteReader(std::span<const std::byte> bytes) noexcept : bytes_(bytes) {}

  std::size_t position() const noexcept { return position_; }
  std::size_t remaining() const noexcept { return bytes_.size() - position_; }
  bool empty() const noexcept { return remaining() == 0; }

  std::optional<std::uint8_t> peek() const noexcept;
  std::optional<std::uint8_t> u8() noexcept;
  std::optional<std::uint16_t> be16() noexcept;  // network byte order
  std::optional<std::uint32_t> be32() noexcept;
  // The next `n` bytes as characters.
  std::optional<std::string_view> take(std::size_t n) noexcept;
  bool skip(std::size_t n) noexcept;
  // One text line: the bytes before the next '\n' (a '\r' before it is
  // dropped), consuming the line end. nullopt when no '\n' comes within
  // `max_length` bytes or before the end (tell the two apart with
  // remaining()).
  std::optional<std::string_view> line(std::size_t max_length) noexcept;
  // True when the unread bytes start with `prefix`; consumes nothing.
  bool starts_with(std::string_view prefix) const noexcept;

 private:
  std::span<const std::byte> bytes_;
  std::size_t position_ = 0;
};

enum class ParseStatus : std::uint8_t {
  complete,  // the message head was parsed; see the message for sizes
  // The bytes end before the head does: more may make it complete. The
  // start-line fields (operation and resource, or status and detail) are
  // filled when the start line itself was complete.
  incomplete,
  invalid,  // not this protocol, or malformed beyond repair
};

struct ParseResult {
  ParseStatus status = ParseStatus::invalid;
  std::string error;  // for `invalid`: what was wrong, for logs and counters

  static ParseResult complete() { return {ParseStatus::complete, {}}; }
  static ParseResult incomplete() { return {ParseStatus::incomplete, {}}; }
  static ParseResult invalid(std::string why) { return {ParseStatus::invalid, std::move(why)}; }
};

// A request, in terms every protocol can fill: HTTP (method, path, Host),
// DNS (query type, name), Redis (command, key), MySQL (command, statement).
struct L7Request {
  std::string operation;
  std::string resource;
  std::string authority;      // e.g. the HTTP Host header; empty when absent
  std::string version;        // e.g. HTTP's "1.1"; empty when the protocol has none
  std::size_t head_size = 0;  // bytes of the head (request line and headers)
  // Payload bytes after the head, when the head says (or the capture holds
  // all of a self-delimiting body).
  std::optional<std::uint64_t> body_size;
  // head_size plus the body's bytes on the wire (framing included) when
  // known: where the next pipelined request starts.
  std::optional<std::uint64_t> message_size;
};

struct L7Response {
  int status = 0;      // e.g. HTTP status code, DNS rcode
  std::string detail;  // e.g. the HTTP reason phrase
  std::size_t head_size = 0;
  std::optional<std::uint64_t> body_size;
  std::optional<std::uint64_t> message_size;
};

// What a protocol plugin implements. Implementations must be safe on any
// input (see the fuzz targets in plugins/*/tests/fuzz) and keep no state between calls:
// a connection tracker owns the per-connection state.
class ProtocolParser {
 public:
  virtual ~ProtocolParser() = default;
  virtual std::string_view protocol() const noexcept = 0;
  // Whether the first bytes a client sent on a connection look like this
  // protocol's request. Cheap: called on every new connection.
  virtual bool detect_request(std::span<const std::byte> first_bytes) const noexcept = 0;
  virtual ParseResult parse_request(std::span<const std::byte> bytes, L7Request& request) const = 0;
  // `request` is the request this response answers, when known (an HTTP
  // response to HEAD has no body whatever its headers say).
  virtual ParseResult parse_response(std::span<const std::byte> bytes, const L7Request* request,
                                     L7Response& response) const = 0;
};

// The bytes of a string, for tests and callers holding text.
inline std::span<const std::byte> as_bytes(std::string_view text) noexcept {
  return {reinterpret_cast<const std::byte*>(text.data()), text.size()};
}

}  // namespace netwatcher
