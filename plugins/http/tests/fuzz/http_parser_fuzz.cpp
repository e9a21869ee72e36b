// libFuzzer target for the HTTP/1.x parser: any bytes, as a request, as a
// response to a GET and to a HEAD, and cut at every pipelined boundary the
// parser reports. AddressSanitizer and UBSan turn any overrun into a crash.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "http_parser.hpp"
#include "netwatcher/l7_tracker.hpp"

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

  // The same bytes as a conversation: segments cut where the input says,
  // alternating directions, with a short capture and overlapping sequence
  // numbers now and then.
  static L7Tracker tracker(parser, L7TrackerLimits{1000, 2000, 64, 8, 256});
  std::vector<L7Exchange> done;
  std::uint32_t seq[2] = {0, 0};
  std::size_t offset = 0;
  for (int i = 0; offset < size && i < 32; ++i) {
    std::size_t length = 1 + data[offset] % 97;
    if (offset + length > size) length = size - offset;
    L7Segment segment;
    segment.connection = data[offset] % 3;
    segment.outbound = i % 2 == 0;
    segment.seq = seq[i % 2] - (data[offset] % 5 == 0 ? 7 : 0);
    segment.length = static_cast<std::uint32_t>(length + data[offset] % 11);
    segment.captured = bytes.subspan(offset, std::min<std::size_t>(length, 48));
    segment.ns = static_cast<std::uint64_t>(i) * 100;
    seq[i % 2] += segment.length;
    tracker.segment(segment, done);
    offset += length;
  }
  tracker.expire(10000, done);
  return 0;
}
