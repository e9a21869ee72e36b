// HTTP/1.0 and 1.1 message heads (RFC 9112), from untrusted bytes.
#pragma once

#include <cstddef>

#include "netwatcher/l7.hpp"

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

}  // namespace netwatcher::http
