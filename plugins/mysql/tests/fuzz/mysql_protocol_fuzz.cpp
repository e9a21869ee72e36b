// libFuzzer target for the MySQL protocol parser: any bytes as a greeting, a
// handshake response and a command (whole, and as the captured start of a
// longer packet), and as a stream of length-prefixed packets read as the
// response to each command byte, with and without CLIENT_DEPRECATE_EOF.
// AddressSanitizer and UBSan turn any overrun into a crash; the checks below
// turn a broken promise of the API into one.
#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

#include "mysql_protocol.hpp"

namespace {

using namespace netwatcher::mysql;

std::string_view chars_of(std::span<const std::byte> bytes) {
  return {reinterpret_cast<const char*>(bytes.data()), bytes.size()};
}

void check_packet(std::span<const std::byte> body, std::size_t wire_length) {
  if (auto g = parse_greeting(body); g && g->server_version.size() > 64) __builtin_trap();
  if (auto h = parse_handshake_response(body, wire_length, 16)) {
    if (h->user.size() > 16 || h->database.size() > 16) __builtin_trap();
  }
  if (auto c = parse_command(body, wire_length, 32, capability::protocol_41 | 0x08000000)) {
    if (c->text.size() > 32) __builtin_trap();
  }
  if (auto e = parse_err(body, 8); e && (e->message.size() > 8 || e->sql_state.size() > 5))
    __builtin_trap();
  parse_ok(body);
  parse_eof(body);
  parse_prepare_ok(body);
  if (normalize_statement(chars_of(body), 40).size() > 40) __builtin_trap();
  std::size_t offset = 0;
  if (auto s = read_lenenc_string(body, &offset, 4); s && (s->size() > 4 || offset > body.size()))
    __builtin_trap();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::span<const std::byte> bytes(reinterpret_cast<const std::byte*>(data), size);
  check_packet(bytes, size);
  check_packet(bytes, size + 500);
  if (size == 0) return 0;

  // The bytes after the first as packets (3-byte length, sequence id), the
  // first byte choosing the command they answer.
  for (std::uint32_t caps :
       {capability::protocol_41, capability::protocol_41 | capability::deprecate_eof}) {
    ResponseReader reader(data[0], caps, 8);
    std::size_t offset = 1;
    bool done = false;
    for (int i = 0; i < 64 && size - offset >= 4; ++i) {
      const std::size_t length = std::size_t{data[offset]} | std::size_t{data[offset + 1]} << 8 |
                                 std::size_t{data[offset + 2]} << 16;
      const auto body = bytes.subspan(offset + 4, std::min(length, size - offset - 4));
      check_packet(body, length);
      const bool now_done = reader.feed(body, length);
      if (done && !now_done) __builtin_trap();  // finished stays finished
      done = now_done;
      if (reader.result().error && reader.result().error->message.size() > 8) __builtin_trap();
      offset += 4 + body.size();
    }
  }
  return 0;
}
