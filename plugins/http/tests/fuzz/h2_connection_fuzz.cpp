// libFuzzer target for the HTTP/2 frame layer and header-block handling.
// The input is a conversation: chunks of [control][length: 2 bytes LE]
// [bytes]; control bit 0 is the direction, bits 1-3 cut the capture short,
// bit 4 leaves a gap before the segment, bit 5 repeats the last one (a
// retransmission), bit 6 adds the frame pieces the kernel's walk would (from
// the segment's start, whatever is there). AddressSanitizer and UBSan turn any overrun into a
// crash.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "h2_connection.hpp"

namespace {

// What l7.bpf.c's h2_walk() copies: every frame not wholly in `captured`.
std::vector<netwatcher::L7Piece> walk(const std::uint8_t* p, std::size_t length,
                                      std::size_t captured) {
  std::vector<netwatcher::L7Piece> pieces;
  std::size_t off = 0;
  while (off + 9 <= length && pieces.size() < 8) {
    const std::size_t frame = (std::size_t{p[off]} << 16) | (p[off + 1] << 8) | p[off + 2];
    std::size_t want = p[off + 3] == 0 ? ((p[off + 4] & 0x8) ? 1 : 0) : frame;
    want = std::min({want, std::size_t{239}, length - off - 9});
    if (off + 9 + want > captured)
      pieces.push_back({static_cast<std::uint32_t>(off),
                        {reinterpret_cast<const std::byte*>(p + off), 9 + want}});
    off += 9 + frame;
  }
  if (off < length && off + 9 > length && length > captured && pieces.size() < 8)
    pieces.push_back({static_cast<std::uint32_t>(off),
                      {reinterpret_cast<const std::byte*>(p + off), length - off}});
  return pieces;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace netwatcher::http;
  const auto* bytes = reinterpret_cast<const std::byte*>(data);
  detect_h2({bytes, size}, static_cast<std::uint32_t>(size));

  H2Stats stats;
  H2Limits limits;
  limits.max_streams = 8;
  limits.max_header_block = 512;
  limits.max_field_bytes = 64;
  H2Connection connection(1, limits, stats);
  std::vector<H2Exchange> done;
  std::uint32_t seq[2] = {0, 0};
  std::uint64_t ns = 1;
  std::size_t at = 0;
  while (at + 3 <= size) {
    const std::uint8_t control = data[at];
    const std::size_t length =
        std::min<std::size_t>(data[at + 1] | (std::size_t{data[at + 2]} << 8), size - at - 3);
    at += 3;
    const bool outbound = control & 1;
    const std::size_t cut = (control >> 1) & 7;
    const std::size_t captured = cut ? length * (8 - cut) / 8 : length;
    if (control & 0x10) seq[outbound] += 100;
    if ((control & 0x20) && length <= seq[outbound])
      seq[outbound] -= static_cast<std::uint32_t>(length);
    std::vector<netwatcher::L7Piece> pieces;
    if (control & 0x40) pieces = walk(data + at, length, captured);
    connection.segment(outbound, seq[outbound], static_cast<std::uint32_t>(length),
                       {bytes + at, captured}, pieces, ns++, done);
    seq[outbound] += static_cast<std::uint32_t>(length);
    at += length;
  }
  connection.expire(ns, 1, done);
  connection.close(done);
  for (const H2Exchange& e : done) {
    if (e.path.size() > limits.max_field_bytes || e.method.size() > limits.max_field_bytes)
      __builtin_trap();
    if (e.outcome == H2Outcome::answered && e.response_ns == 0) __builtin_trap();
  }
  if (connection.open_streams() != 0) __builtin_trap();
  return 0;
}
