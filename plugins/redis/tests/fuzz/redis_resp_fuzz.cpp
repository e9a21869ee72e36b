// libFuzzer target for the RESP stream parser: any bytes as a request and as
// a reply stream, whole, in pieces whose sizes come from the input, with
// bytes declared uncaptured (skip) between pieces, with the default and with
// tight limits; and through the detectors. AddressSanitizer and UBSan turn
// any overrun into a crash; the checks below turn a broken promise of the API
// into one.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "redis_resp.hpp"

namespace {

using namespace netwatcher::redis;

void check(const std::vector<RespMessage>& out, const Limits& limits, std::size_t fed) {
  std::uint64_t total = 0;
  for (const auto& m : out) {
    if (m.strings.size() > std::max<std::size_t>(limits.kept_strings, 1)) __builtin_trap();
    for (const auto& s : m.strings)
      if (s.size() > limits.kept_bytes) __builtin_trap();
    if (m.bytes == 0) __builtin_trap();
    total += m.bytes;
  }
  // Messages are made of the bytes fed (captured or skipped), never more.
  if (total > fed) __builtin_trap();
}

void run(std::span<const std::byte> bytes, bool requests, const Limits& limits, bool pieces) {
  RespStream stream(requests, limits);
  std::vector<RespMessage> out;
  std::size_t at = 0, fed = 0;
  while (at < bytes.size()) {
    std::size_t n = bytes.size() - at;
    if (pieces) n = 1 + static_cast<std::size_t>(bytes[at]) % std::min<std::size_t>(n, 64);
    RespError e = stream.feed(bytes.subspan(at, n), at, out);
    at += n;
    fed += n;
    if (e == RespError::none && pieces && (static_cast<unsigned>(bytes[at - 1]) & 7) == 0) {
      const std::uint64_t hole = static_cast<unsigned>(bytes[at - 1]) >> 3;
      e = stream.skip(hole, out);
      fed += hole;
    }
    if (e != RespError::none) {
      if (resp_error_name(e)[0] == '\0') __builtin_trap();
      stream.reset();
      if (!stream.at_boundary()) __builtin_trap();
    }
  }
  check(out, limits, fed);
  for (const auto& m : out) {
    if (!requests) continue;
    const std::string name = command_name(m.strings);
    if (!name.empty()) {
      has_key(name);
      if (name.size() > 65) __builtin_trap();
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::span<const std::byte> bytes(reinterpret_cast<const std::byte*>(data), size);
  static const Limits defaults;
  static const Limits tight{64, 4, 3, 32, 2, 5};
  for (const Limits* limits : {&defaults, &tight})
    for (bool requests : {true, false})
      for (bool pieces : {false, true}) run(bytes, requests, *limits, pieces);
  for (std::size_t wire : {size, size + 1, size + 1000}) {
    const int c = looks_like_command(bytes, wire);
    const int r = looks_like_reply(bytes, wire);
    if (c < -1 || c > 1 || r < -1 || r > 1) __builtin_trap();
  }
  return 0;
}
