// libFuzzer target for the HTTP/1.x parser: any bytes, as a request, as a
// response to a GET and to a HEAD, and cut at every pipelined boundary the
// parser reports. AddressSanitizer and UBSan turn any overrun into a crash.
#include <cstddef>
#include <cstdint>
#include <span>

#include "http_parser.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace netwatcher;
  static const http::HttpParser parser;
  static const http::HttpParser small(http::HttpParserOptions{64, false});
  std::span<const std::byte> bytes(reinterpret_cast<const std::byte*>(data), size);

  parser.detect_request(bytes);
  for (const auto* p : {&parser, &small}) {
    std::size_t offset = 0;
    for (int message = 0; message < 8 && offset < size; ++message) {
      L7Request request;
      auto rest = bytes.subspan(offset);
      if (p->parse_request(rest, request).status != ParseStatus::complete) break;
      if (request.head_size > rest.size()) __builtin_trap();
      if (!request.message_size || *request.message_size == 0) break;
      offset += static_cast<std::size_t>(*request.message_size);
    }
    L7Request get, head;
    get.operation = "GET";
    head.operation = "HEAD";
    L7Response response;
    if (p->parse_response(bytes, &get, response).status == ParseStatus::complete &&
        response.head_size > size)
      __builtin_trap();
    p->parse_response(bytes, &head, response);
  }
  return 0;
}
