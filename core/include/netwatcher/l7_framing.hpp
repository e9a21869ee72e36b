// netwatcher SDK: length-prefixed messages over one direction of a TCP socket.
//
// Many binary protocols frame each message with its length: DNS over TCP (a
// 2-byte big-endian length, RFC 7766), MySQL (a 3-byte little-endian length
// and a 1-byte sequence id; the length excludes those 4 bytes), and many
// RPC protocols (a 4-byte big-endian length). A protocol plugin on the shared
// L7 capture sees TCP segments, not messages: several messages may come in
// one segment, one message over several, a length prefix alone in a segment
// of its own, and the capture keeps only the first capture_bytes() of each
// segment. LengthPrefixedStream turns the segments of one direction of one
// socket (L7Packet with the same socket and `outbound`) into messages:
//
//   - it follows the direction by TCP sequence number: a segment that starts
//     before the byte expected next is a retransmission and is ignored
//     (Stats::retransmissions); one that starts after it means the capture
//     missed bytes: the partial message is dropped, Stats::lost_sync counts
//     one, and the segment is read as if a message started with it (the usual
//     case: a client writes a message per send);
//   - a message whose end the capture cut off is delivered with the bytes
//     captured (Message::whole false) and the stream skips to its end by its
//     length, so the next message is found in a later segment;
//   - when the next message starts in bytes the capture did not keep, the
//     stream cannot find it: Stats::lost_sync counts one and the stream
//     starts again at the next segment, as at its first;
//   - at most max_body bytes of one message are buffered across segments: a
//     longer message is delivered cut (whole false) with the bytes at hand
//     and skipped to its end (Stats::oversized).
//
// The stream owns its buffer (at most header + max_body bytes plus one
// segment's captured bytes). It is not thread-safe; a protocol plugin uses it
// on the host's poller thread only, one stream per socket and direction,
// dropped at closed() (or when idle: see last_ns()).
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>
#include <vector>

namespace netwatcher {

// How a protocol writes its length prefix.
struct LengthPrefix {
  enum class Order : std::uint8_t { big_endian, little_endian };
  std::uint8_t size = 2;  // bytes of the length field: 1 .. 4
  Order order = Order::big_endian;
  // Header bytes after the length field, before the body (MySQL: 1, the
  // sequence id). The header is the length field and these bytes.
  std::uint8_t extra = 0;
  // Whether the length counts the header too (it then counts the whole
  // message); else it counts the body only.
  bool counts_header = false;
  // Body bytes buffered at most while a message comes over several segments.
  std::size_t max_body = 65535;

  std::size_t header_size() const noexcept { return std::size_t{size} + extra; }

  static LengthPrefix dns() noexcept { return {}; }  // RFC 7766: 2 bytes, big-endian
  // 3 bytes little-endian, then a 1-byte sequence id; the length excludes both.
  static LengthPrefix mysql() noexcept { return {3, Order::little_endian, 1, false, 65536}; }
  static LengthPrefix be32() noexcept { return {4, Order::big_endian, 0, false, 65536}; }
};

// One message found in the stream. Its views are valid only during the
// callback it is passed to.
struct FramedMessage {
  std::span<const std::byte> header;  // the length field and the extra bytes, whole
  // The body bytes captured: all of them when `whole`, else the first ones
  // (the capture cut the message, or it is longer than max_body).
  std::span<const std::byte> body;
  std::size_t body_length = 0;  // the body's length on the wire, from the prefix
  bool whole = false;           // body.size() == body_length
  std::uint32_t seq = 0;        // TCP sequence number of the header's first byte
  std::uint64_t ns = 0;         // when the segment with its first byte was seen
};

class LengthPrefixedStream {
 public:
  struct Stats {
    std::uint64_t messages = 0;         // delivered, whole or not
    std::uint64_t cut = 0;              // delivered with whole false
    std::uint64_t oversized = 0;        // of those, longer than max_body
    std::uint64_t retransmissions = 0;  // segments ignored: they start before the next byte
    std::uint64_t lost_sync = 0;        // times the start of the next message was not seen
  };

  explicit LengthPrefixedStream(LengthPrefix prefix = LengthPrefix::dns()) noexcept
      : prefix_(prefix) {}

  // One TCP segment of this direction: `seq` is the sequence number of its
  // first payload byte, `wire_length` its payload bytes on the wire,
  // `captured` the first of them (captured.size() < wire_length: cut short),
  // `ns` when it was seen. Calls on_message for every message that ends (or
  // is cut) in it, in order. on_message must not feed this stream; an
  // exception it throws leaves the stream to start again at the next segment.
  void feed(std::uint32_t seq, std::uint32_t wire_length, std::span<const std::byte> captured,
            std::uint64_t ns, const std::function<void(const FramedMessage&)>& on_message);

  // Forget the buffered bytes and the position: the next segment is read as
  // the first one. Stats are kept.
  void reset() noexcept;

  const Stats& stats() const noexcept { return stats_; }
  const LengthPrefix& prefix() const noexcept { return prefix_; }
  // Bytes of a message buffered until its next segment comes.
  std::size_t buffered() const noexcept { return buffer_.size(); }
  // When the message in progress (being buffered or skipped) started, else
  // when the last segment read came; 0 before the first segment. Drop streams
  // whose last_ns() is long ago: their socket went away without a close seen.
  std::uint64_t last_ns() const noexcept { return first_ns_; }

 private:
  // The length field at the front of `bytes`, or -1 when it is not all there.
  std::int64_t read_length(std::span<const std::byte> bytes) const noexcept;
  void lose() noexcept;  // lost_sync: start again at the next segment

  LengthPrefix prefix_;
  Stats stats_;
  bool synced_ = false;
  std::uint32_t next_seq_ = 0;     // the byte expected next
  std::vector<std::byte> buffer_;  // from a message start on, not yet a whole message
  std::uint32_t buffer_seq_ = 0;   // sequence number of buffer_'s first byte
  bool skipping_ = false;          // the rest of a cut message is skipped
  std::uint32_t skip_to_ = 0;      // where the next message starts, when skipping
  std::uint64_t first_ns_ = 0;
};

}  // namespace netwatcher
