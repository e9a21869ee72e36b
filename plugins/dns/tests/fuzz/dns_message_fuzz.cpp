// libFuzzer target for the DNS message parser: any bytes as a whole message
// (wire_length == size), as the captured start of a longer one (> size), as
// a datagram with bytes past its end (< size), as a TCP stream of
// length-prefixed messages, with the default and with tight limits, and
// through looks_like_dns. AddressSanitizer and UBSan turn any overrun into a
// crash; the checks below turn a broken promise of the API into one.
#include <cstddef>
#include <cstdint>
#include <span>

#include "dns_message.hpp"

namespace {

using namespace netwatcher::dns;

void check(std::span<const std::byte> bytes, std::size_t wire_length, const Limits& limits) {
  Message message;
  const ParseError error = parse_message(bytes, wire_length, message, limits);
  if (message.questions.size() > limits.max_questions) __builtin_trap();
  if (message.answers.size() > limits.max_answers) __builtin_trap();
  // Only a capture shorter than the message can cut it short, and being cut
  // short is never an error.
  if (message.cut_short && (bytes.size() >= wire_length || error != ParseError::none))
    __builtin_trap();
  for (const auto& answer : message.answers) {
    // A name is at most 255 bytes on the wire, 4 characters per byte as text.
    if (answer.name.size() > 4 * limits.max_name_length) __builtin_trap();
    if (answer.type == 16 && answer.value.size() > 255) __builtin_trap();
  }
  if (parse_error_name(error)[0] == '\0') __builtin_trap();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::span<const std::byte> bytes(reinterpret_cast<const std::byte*>(data), size);
  static const Limits defaults;
  static const Limits tight{1, 2, 40, 2};

  for (const Limits* limits : {&defaults, &tight}) {
    check(bytes, size, *limits);
    check(bytes, size + 1, *limits);
    check(bytes, size + 300, *limits);
    check(bytes, 65535, *limits);
    if (size > 0) check(bytes, size - 1, *limits);
    if (size > 12) check(bytes, 12 + data[0] % (size - 12), *limits);
  }
  looks_like_dns(bytes, size);
  looks_like_dns(bytes, size + 100);

  // The same bytes as a TCP stream: each message behind its 2-byte length.
  std::size_t offset = 0;
  for (int i = 0; i < 16; ++i) {
    const auto length = tcp_message_length(bytes.subspan(offset));
    if (!length) break;
    const auto message = bytes.subspan(offset + 2);
    looks_like_dns(message, *length);
    check(message, *length, defaults);
    if (*length == 0 || *length > message.size()) break;
    offset += 2 + *length;
  }
  return 0;
}
