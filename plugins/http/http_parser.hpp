// HTTP/1.0 and 1.1 message heads (RFC 9112), from untrusted bytes.
#pragma once

#include <cstddef>

#include "netwatcher/l7.hpp"
#include "netwatcher/l7_protocol.hpp"

namespace netwatcher::http {

struct HttpParserOptions {
  // A head (start line and header fields) longer than this is refused
  // rather than buffered without bound.
  std::size_t max_head_bytes = 16 * 1024;
  // Report the path without its query string (?...), which often carries
  // identifiers or secrets and explodes label cardinality.
  bool strip_query = true;
};

// Fills L7Request with operation = method, resource = path (request target),
// authority = Host; L7Response with status = status code, detail = reason.
// Body sizes come from Content-Length, or from the chunks when the whole
// chunked body is in the bytes; a response to HEAD, and 1xx/204/304
// responses, have none.
class HttpParser final : public ProtocolParser {
 public:
  explicit HttpParser(HttpParserOptions options = {}) : options_(options) {}

  std::string_view protocol() const noexcept override { return "http"; }
  bool detect_request(std::span<const std::byte> first_bytes) const noexcept override;
  ParseResult parse_request(std::span<const std::byte> bytes, L7Request& request) const override;
  ParseResult parse_response(std::span<const std::byte> bytes, const L7Request* request,
                             L7Response& response) const override;

 private:
  HttpParserOptions options_;
};

// Whether a socket whose first payload is `captured` speaks HTTP/1.x:
// `yes` once the request line is "method target HTTP/1.0|1" (or is cut off
// by the capture after "method "), `no` when it cannot be one (another
// protocol, or a one-space line such as a Redis inline "GET key"), `maybe`
// while the method or the line may still be arriving. `cut_short`: the
// capture holds only the first bytes of a longer segment.
L7Detection detect_request_start(std::span<const std::byte> captured, bool cut_short) noexcept;

}  // namespace netwatcher::http
