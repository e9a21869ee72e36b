#include "h2_connection.hpp"

#include <nghttp2/nghttp2.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <deque>

namespace netwatcher::http {

namespace {

enum FrameType : std::uint8_t {
  kData = 0x0,
  kHeaders = 0x1,
  kPriority = 0x2,
  kRstStream = 0x3,
  kSettings = 0x4,
  kPushPromise = 0x5,
  kPing = 0x6,
  kGoaway = 0x7,
  kWindowUpdate = 0x8,
  kContinuation = 0x9,
};
constexpr std::uint8_t kEndStream = 0x1, kAck = 0x1, kEndHeaders = 0x4, kPadded = 0x8,
                       kPriorityFlag = 0x20;
constexpr std::uint32_t kSettingsHeaderTableSize = 0x1;
constexpr std::size_t kFrameHeaderBytes = 9;
// The largest static table index (RFC 7541 appendix A).
constexpr std::uint32_t kStaticEntries = 61;

struct FrameHeader {
  std::uint32_t length = 0;
  std::uint8_t type = 0, flags = 0;
  std::uint32_t stream = 0;
};

FrameHeader read_frame_header(const std::uint8_t* p) {
  FrameHeader h;
  h.length = (std::uint32_t{p[0]} << 16) | (std::uint32_t{p[1]} << 8) | p[2];
  h.type = p[3];
  h.flags = p[4];
  h.stream = ((std::uint32_t{p[5]} << 24) | (std::uint32_t{p[6]} << 16) |
              (std::uint32_t{p[7]} << 8) | p[8]) &
             0x7fffffff;
  return h;
}

std::uint32_t be32(const char* p) {
  auto b = reinterpret_cast<const unsigned char*>(p);
  return (std::uint32_t{b[0]} << 24) | (std::uint32_t{b[1]} << 16) | (std::uint32_t{b[2]} << 8) |
         b[3];
}

// What RFC 9113 allows of a frame's stream id and size. Used on every frame:
// a violation means the bytes are not where we think they are.
bool allowed(const FrameHeader& h) {
  switch (h.type) {
    case kData:
    case kHeaders:
    case kContinuation:
      return h.stream != 0;
    case kPriority:
      return h.stream != 0 && h.length == 5;
    case kRstStream:
      return h.stream != 0 && h.length == 4;
    case kSettings:
      return h.stream == 0 && h.length % 6 == 0 && (!(h.flags & kAck) || h.length == 0);
    case kPushPromise:
      return h.stream != 0 && h.length >= 4;
    case kPing:
      return h.stream == 0 && h.length == 8;
    case kGoaway:
      return h.stream == 0 && h.length >= 8;
    case kWindowUpdate:
      return h.length == 4;
    default:
      return true;  // extension frames are ignored (RFC 9113 5.5)
  }
}

// Stricter, for finding a frame boundary in bytes of unknown position: a
// known type with only its defined flags, and a size the default
// SETTINGS_MAX_FRAME_SIZE allows (peers rarely raise it).
bool plausible(const FrameHeader& h) {
  static constexpr std::array<std::uint8_t, 10> kFlags = {
      kEndStream | kPadded,
      kEndStream | kEndHeaders | kPadded | kPriorityFlag,
      0,
      0,
      kAck,
      kEndHeaders | kPadded,
      kAck,
      0,
      0,
      kEndHeaders};
  return h.type < kFlags.size() && (h.flags & ~kFlags[h.type]) == 0 && h.length <= 16384 &&
         allowed(h);
}

const char* error_code_name(std::uint32_t code) {
  static constexpr std::array<const char*, 14> kNames = {"NO_ERROR",
                                                         "PROTOCOL_ERROR",
                                                         "INTERNAL_ERROR",
                                                         "FLOW_CONTROL_ERROR",
                                                         "SETTINGS_TIMEOUT",
                                                         "STREAM_CLOSED",
                                                         "FRAME_SIZE_ERROR",
                                                         "REFUSED_STREAM",
                                                         "CANCEL",
                                                         "COMPRESSION_ERROR",
                                                         "CONNECT_ERROR",
                                                         "ENHANCE_YOUR_CALM",
                                                         "INADEQUATE_SECURITY",
                                                         "HTTP_1_1_REQUIRED"};
  return code < kNames.size() ? kNames[code] : nullptr;
}

std::string error_code_text(std::uint32_t code) {
  if (const char* name = error_code_name(code)) return name;
  char hex[16];
  std::snprintf(hex, sizeof hex, "0x%x", code);
  return hex;
}

// Empties a buffer, giving back the memory a large header block took.
void release(std::string& buffer) {
  if (buffer.capacity() > 16384)
    std::string().swap(buffer);
  else
    buffer.clear();
}

// HPACK integers (RFC 7541 5.1). False when the bytes end first or the
// value would not fit in 32 bits.
bool read_integer(std::span<const std::uint8_t> in, std::size_t& at, int prefix_bits,
                  std::uint32_t& value) {
  if (at >= in.size()) return false;
  const std::uint32_t mask = (1u << prefix_bits) - 1;
  std::uint64_t sum = in[at++] & mask;
  if (sum < mask) {
    value = static_cast<std::uint32_t>(sum);
    return true;
  }
  for (int shift = 0; shift <= 28; shift += 7) {
    if (at >= in.size()) return false;
    const std::uint8_t b = in[at++];
    sum += std::uint64_t{b & 0x7fu} << shift;
    if (sum > UINT32_MAX) return false;
    if (!(b & 0x80)) {
      value = static_cast<std::uint32_t>(sum);
      return true;
    }
  }
  return false;
}

void write_integer(std::string& out, std::uint8_t first, int prefix_bits, std::uint32_t value) {
  const std::uint32_t mask = (1u << prefix_bits) - 1;
  if (value < mask) {
    out.push_back(static_cast<char>(first | value));
    return;
  }
  out.push_back(static_cast<char>(first | mask));
  value -= mask;
  while (value >= 0x80) {
    out.push_back(static_cast<char>(0x80 | (value & 0x7f)));
    value >>= 7;
  }
  out.push_back(static_cast<char>(value));
}

// Skips one HPACK string literal; false when it runs past the end.
bool skip_string(std::span<const std::uint8_t> in, std::size_t& at) {
  std::uint32_t length = 0;
  if (!read_integer(in, at, 7, length) || length > in.size() - at) return false;
  at += length;
  return true;
}

// A header block rewritten so that a fresh inflater can decode it: static
// references and literals stay (literals no longer indexed, so the fresh
// table stays empty), references to the unknown dynamic table are dropped
// and `dropped` says so. Stops at the first representation cut short.
std::string without_dynamic_references(std::span<const std::uint8_t> in, bool& dropped) {
  std::string out;
  std::size_t at = 0;
  while (at < in.size()) {
    const std::uint8_t b = in[at];
    std::uint32_t index = 0;
    if (b & 0x80) {  // indexed field
      if (!read_integer(in, at, 7, index) || index == 0) break;
      if (index <= kStaticEntries)
        write_integer(out, 0x80, 7, index);
      else
        dropped = true;
      continue;
    }
    if ((b & 0xe0) == 0x20) {  // dynamic table size update
      if (!read_integer(in, at, 5, index)) break;
      continue;
    }
    // A literal: with incremental indexing (01), without (0000) or never (0001).
    const int prefix = (b & 0x40) ? 6 : 4;
    if (!read_integer(in, at, prefix, index)) break;
    const std::size_t strings = at;
    if (index == 0 && !skip_string(in, at)) break;
    if (!skip_string(in, at)) break;
    if (index > kStaticEntries) {
      dropped = true;
      continue;
    }
    write_integer(out, (b & 0x40) ? 0x00 : (b & 0x10), 4, index);
    out.append(reinterpret_cast<const char*>(in.data() + strings), at - strings);
  }
  if (at < in.size()) dropped = true;
  return out;
}

// Whether frames read from the start of `bytes` (after the client preface,
// when they begin with it) end exactly at `offset`, every header on the way
// inside the bytes.
bool frames_reach(std::span<const std::byte> bytes, std::uint64_t offset) {
  const auto* p = reinterpret_cast<const std::uint8_t*>(bytes.data());
  const std::string_view text(reinterpret_cast<const char*>(p), bytes.size());
  std::uint64_t at = text.starts_with(kH2Preface) ? kH2Preface.size() : 0;
  while (at < offset) {
    if (at + kFrameHeaderBytes > bytes.size()) return false;
    at += kFrameHeaderBytes + read_frame_header(p + at).length;
  }
  return at == offset;
}

}  // namespace

L7Detection detect_h2(std::span<const std::byte> captured, std::uint32_t length) noexcept {
  std::string_view text(reinterpret_cast<const char*>(captured.data()), captured.size());
  if (text.size() >= kH2Preface.size()) {
    if (text.substr(0, kH2Preface.size()) == kH2Preface) return L7Detection::yes;
  } else if (!text.empty() && kH2Preface.substr(0, text.size()) == text) {
    // Cut short by the capture (which keeps at least 16 bytes: past the
    // "PRI * HTTP/2.0\r\n" no other protocol shares), or a short first write.
    return text.size() < length && text.size() >= 16 ? L7Detection::yes : L7Detection::maybe;
  }
  const auto* p = reinterpret_cast<const std::uint8_t*>(captured.data());
  std::size_t at = 0;
  bool first = true;
  while (at + kFrameHeaderBytes <= captured.size()) {
    const FrameHeader h = read_frame_header(p + at);
    if (!plausible(h)) return L7Detection::no;
    // A server's connection preface: SETTINGS, first.
    if (first && h.type == kSettings && !(h.flags & kAck) && kFrameHeaderBytes + h.length <= length)
      return L7Detection::yes;
    first = false;
    at += kFrameHeaderBytes + h.length;
    if (at == length) return L7Detection::yes;
  }
  return L7Detection::no;
}

struct H2Connection::Fields {
  bool has_method = false, has_path = false, has_status = false, partial = false;
  std::string method, path, authority, host, content_type;
  int status = 0;
  std::optional<int> grpc_status;
};

struct H2Connection::Stream {
  bool request_outbound = false;
  std::string method, path, authority, content_type;
  std::uint64_t request_ns = 0, response_ns = 0;
  std::uint64_t request_bytes = 0, response_bytes = 0;
  bool has_response = false;
  int status = 0;
  std::optional<int> grpc_status;
  bool partial = false;
  // False once a direction carrying this stream's body lost its place: DATA
  // frames may have gone by unseen.
  bool request_bytes_known = true, response_bytes_known = true;
  // The response direction lost its place before the response headers came:
  // they may have gone by unseen, so no end but its own says what happened.
  bool response_may_be_unseen = false;
};

struct H2Connection::Direction {
  explicit Direction(bool out) : outbound(out) {}
  ~Direction() {
    if (inflater) nghttp2_hd_inflate_del(inflater);
    if (static_inflater) nghttp2_hd_inflate_del(static_inflater);
  }

  const bool outbound;
  bool synced = false, ever_synced = false, seq_known = false;
  // The stream position after the furthest bytes seen (read when synced).
  std::uint32_t next_seq = 0;
  std::size_t preface_left = 0;
  std::array<std::uint8_t, kFrameHeaderBytes> header{};
  std::size_t header_have = 0;
  bool in_payload = false;
  FrameHeader frame;
  std::uint64_t frame_ns = 0;
  std::uint32_t payload_left = 0;
  std::string payload;  // the frame's payload, for the types read (bounded)
  bool payload_cut = false;

  // A header block: HEADERS or PUSH_PROMISE, then CONTINUATION frames.
  bool block_open = false, block_end_stream = false, block_promise = false, block_cut = false;
  std::uint32_t block_stream = 0;
  std::uint64_t block_ns = 0;
  std::string block;

  // HPACK: the table of the blocks this direction carries. Unknown once a
  // block was missed; `static_inflater` then decodes static references and
  // literals only.
  bool table_known = false;
  nghttp2_hd_inflater* inflater = nullptr;
  nghttp2_hd_inflater* static_inflater = nullptr;
  // HEADER_TABLE_SIZE values the other side announced, applied to this
  // direction's table when this direction acknowledges them (in order).
  std::deque<std::optional<std::uint32_t>> sizes_awaiting_ack;

  // The table's inflater, made when first needed (a HEADER_TABLE_SIZE may
  // be acknowledged before the first block); false if nghttp2 could not.
  bool ensure_inflater() {
    if (!inflater && nghttp2_hd_inflate_new(&inflater) != 0) inflater = nullptr;
    return inflater != nullptr;
  }

  // Bytes of the frame's payload worth keeping.
  std::size_t keep_limit(std::size_t max_block) const {
    switch (frame.type) {
      case kHeaders:
      case kPushPromise:
      case kContinuation:
        return max_block;
      case kData:
        return 1;  // the pad length
      case kRstStream:
      case kGoaway:
        return 8;
      case kSettings:
        return 6 * 64;
      default:
        return 0;
    }
  }
};

H2Connection::H2Connection(std::uint64_t id, const H2Limits& limits, H2Stats& stats)
    : id_(id),
      limits_(limits),
      stats_(stats),
      in_(std::make_unique<Direction>(false)),
      out_(std::make_unique<Direction>(true)) {}

H2Connection::~H2Connection() = default;

H2Connection::Direction& H2Connection::other(const Direction& d) {
  return d.outbound ? *in_ : *out_;
}

void H2Connection::segment(bool outbound, std::uint32_t seq, std::uint32_t length,
                           std::span<const std::byte> captured, std::span<const L7Piece> pieces,
                           std::uint64_t ns, std::vector<H2Exchange>& done) {
  Direction& d = outbound ? *out_ : *in_;
  std::vector<L7Piece> shifted;
  last_ns_ = ns;
  if (length == 0) return;
  if (captured.size() > length) captured = captured.first(length);
  if (d.seq_known) {
    auto ahead = static_cast<std::int32_t>(seq - d.next_seq);
    // Further back than any window: not a retransmission but a stream
    // numbered anew (a TLS stream's state forgotten in the kernel).
    if (ahead < -(1 << 24)) ahead = 1;
    if (ahead < 0) {  // a retransmission, maybe with new bytes after the old
      const auto overlap = static_cast<std::uint32_t>(-static_cast<std::int64_t>(ahead));
      if (overlap >= length) return;
      if (!d.synced) {  // the new bytes start mid-segment: no frame boundary
        d.next_seq = seq + length;
        missed(d);
        return;
      }
      captured = captured.subspan(std::min<std::size_t>(overlap, captured.size()));
      length -= overlap;
      seq = d.next_seq;
      // Pieces in the bytes already seen (the kernel's walk may have taken
      // up its place at this segment's start) are dropped with them.
      shifted.clear();
      for (const L7Piece& piece : pieces)
        if (piece.offset >= overlap) shifted.push_back({piece.offset - overlap, piece.bytes});
      pieces = shifted;
    } else if (ahead > 0) {
      if (!d.synced)
        missed(d);
      else if (d.in_payload && static_cast<std::uint32_t>(ahead) <= d.payload_left &&
               d.preface_left == 0)
        unseen(d, static_cast<std::uint32_t>(ahead), false, done);  // inside one payload
      else
        lose_sync(d, true);  // the gap may have held a header block
    }
  }
  d.seq_known = true;
  d.next_seq = seq + length;
  std::size_t known = captured.size();
  if (!pieces.empty()) known = std::min<std::size_t>(known, pieces.front().offset);
  std::uint64_t at = 0;
  if (!d.synced) {
    // The kernel followed the frames: a guess from the captured bytes must
    // lead to its first piece, else that piece is where the frames are.
    if (!pieces.empty()
            ? !frames_reach(captured, pieces.front().offset) || !resync(d, captured, length)
            : !resync(d, captured, length)) {
      missed(d);
      if (pieces.empty()) return;
      sync_at_frame(d);
      at = known = pieces.front().offset;
    }
  }
  // The captured bytes up to the first piece, then each piece, with what
  // lies between them unseen.
  if (known > at) feed(d, captured.subspan(at, known - at), ns, done);
  at = known;
  for (const L7Piece& piece : pieces) {
    if (piece.offset < at || !unseen(d, piece.offset - at, true, done)) return;
    feed(d, piece.bytes, ns, done);
    at = std::uint64_t{piece.offset} + piece.bytes.size();
  }
  if (at < length) unseen(d, length - at, false, done);
}

bool H2Connection::unseen(Direction& d, std::uint64_t bytes, bool at_boundary,
                          std::vector<H2Exchange>& done) {
  if (!d.synced) return false;
  if (bytes > 0) {
    if (d.preface_left != 0 || !d.in_payload || bytes > d.payload_left) {
      lose_sync(d, true);
      return false;
    }
    d.payload_left -= static_cast<std::uint32_t>(bytes);
    d.payload_cut = true;
    if (d.payload_left == 0) frame_done(d, done);
  }
  // A piece starts with a frame header: the frame before must have ended.
  if (at_boundary && (d.in_payload || d.header_have != 0 || d.preface_left != 0)) {
    lose_sync(d, true);
    return false;
  }
  return d.synced;
}

bool H2Connection::resync(Direction& d, std::span<const std::byte> bytes, std::uint32_t length) {
  std::string_view text(reinterpret_cast<const char*>(bytes.data()), bytes.size());
  const bool first = !d.ever_synced;
  bool at_start = false;
  const std::size_t compared = std::min(text.size(), kH2Preface.size());
  if (compared > 0 && text.substr(0, compared) == kH2Preface.substr(0, compared)) {
    d.preface_left = kH2Preface.size();
    at_start = first;
  } else {
    if (bytes.size() < kFrameHeaderBytes) return false;
    const auto* p = reinterpret_cast<const std::uint8_t*>(bytes.data());
    const FrameHeader h = read_frame_header(p);
    if (!plausible(h)) return false;
    // The next header too, when it is in the bytes.
    const std::size_t next = kFrameHeaderBytes + h.length;
    if (next < length && next + kFrameHeaderBytes <= bytes.size() &&
        !plausible(read_frame_header(p + next)))
      return false;
    at_start = first && h.type == kSettings && !(h.flags & kAck);
  }
  d.synced = d.ever_synced = true;
  d.header_have = 0;
  d.in_payload = false;
  if (at_start) {
    d.table_known = true;
  } else if (first) {
    ++stats_.table_lost;  // joined an open connection: its table was built before
  }
  return true;
}

void H2Connection::missed(const Direction& d) {
  for (auto& [id, stream] : streams_) {
    if (stream.request_outbound == d.outbound) {
      stream.request_bytes_known = false;
    } else {
      stream.response_bytes_known = false;
      if (!stream.has_response) stream.response_may_be_unseen = true;
    }
  }
}

void H2Connection::sync_at_frame(Direction& d) {
  d.synced = true;
  d.header_have = 0;
  d.in_payload = false;
  d.preface_left = 0;
  if (!d.ever_synced) ++stats_.table_lost;  // as for a connection joined mid-way
  d.ever_synced = true;
}

void H2Connection::lose_sync(Direction& d, bool table_too) {
  ++stats_.lost_sync;
  missed(d);
  d.synced = false;
  d.in_payload = false;
  d.header_have = 0;
  d.preface_left = 0;
  d.block_open = false;
  release(d.block);
  if (table_too && d.table_known) {
    d.table_known = false;
    ++stats_.table_lost;
  }
}

void H2Connection::feed(Direction& d, std::span<const std::byte> bytes, std::uint64_t ns,
                        std::vector<H2Exchange>& done) {
  const auto* p = reinterpret_cast<const std::uint8_t*>(bytes.data());
  std::size_t at = 0;
  while (at < bytes.size() && d.synced) {
    if (d.preface_left) {
      const std::size_t offset = kH2Preface.size() - d.preface_left;
      const std::size_t n = std::min(d.preface_left, bytes.size() - at);
      if (std::memcmp(p + at, kH2Preface.data() + offset, n) != 0) {
        lose_sync(d, true);
        return;
      }
      d.preface_left -= n;
      at += n;
      continue;
    }
    if (!d.in_payload) {
      const std::size_t n = std::min(kFrameHeaderBytes - d.header_have, bytes.size() - at);
      std::memcpy(d.header.data() + d.header_have, p + at, n);
      d.header_have += n;
      at += n;
      if (d.header_have < kFrameHeaderBytes) return;
      d.header_have = 0;
      d.frame = read_frame_header(d.header.data());
      if (!allowed(d.frame)) {
        ++stats_.invalid_frames;
        lose_sync(d, true);
        return;
      }
      d.in_payload = true;
      d.frame_ns = ns;
      d.payload_left = d.frame.length;
      release(d.payload);
      d.payload_cut = false;
      if (d.payload_left == 0) frame_done(d, done);
      continue;
    }
    const std::size_t n = std::min<std::size_t>(d.payload_left, bytes.size() - at);
    const std::size_t keep = d.keep_limit(limits_.max_header_block);
    // After bytes went by unseen, what follows is not the payload's next.
    if (!d.payload_cut && d.payload.size() < keep) {
      const std::size_t kept = std::min(n, keep - d.payload.size());
      d.payload.append(reinterpret_cast<const char*>(p + at), kept);
      if (kept < n) d.payload_cut = true;
    }
    d.payload_left -= static_cast<std::uint32_t>(n);
    at += n;
    if (d.payload_left == 0) frame_done(d, done);
  }
}

void H2Connection::frame_done(Direction& d, std::vector<H2Exchange>& done) {
  d.in_payload = false;
  const FrameHeader& f = d.frame;
  const std::string& p = d.payload;
  if (d.block_open && f.type != kContinuation) {
    ++stats_.invalid_frames;  // a header block must not be interrupted
    lose_sync(d, true);
    return;
  }
  switch (f.type) {
    case kData: {
      std::uint64_t bytes = f.length;
      const bool pad_unseen = (f.flags & kPadded) && p.empty() && f.length > 0;
      if ((f.flags & kPadded) && !p.empty()) {
        const std::uint64_t pad = 1 + static_cast<std::uint8_t>(p[0]);
        bytes = pad <= bytes ? bytes - pad : 0;
      }
      if (auto it = streams_.find(f.stream); it != streams_.end()) {
        Stream& s = it->second;
        const bool request = s.request_outbound == d.outbound;
        (request ? s.request_bytes : s.response_bytes) += bytes;
        if (pad_unseen) (request ? s.request_bytes_known : s.response_bytes_known) = false;
      }
      if (f.flags & kEndStream) end_of_side(d, f.stream, done);
      return;
    }
    case kHeaders:
    case kPushPromise: {
      std::size_t start = 0, pad = 0;
      if (f.flags & kPadded) {
        pad = p.empty() ? 0 : static_cast<std::uint8_t>(p[0]);
        start = 1;
      }
      if (f.type == kHeaders && (f.flags & kPriorityFlag)) start += 5;
      if (f.type == kPushPromise) start += 4;
      d.block_open = true;
      d.block_cut = d.payload_cut;
      d.block_stream = f.stream;
      d.block_end_stream = f.type == kHeaders && (f.flags & kEndStream);
      d.block_promise = f.type == kPushPromise;
      d.block_ns = d.frame_ns;
      d.block.clear();
      // Padding is at the payload's end, which a cut payload did not keep.
      const std::size_t end = d.payload_cut ? p.size() : (p.size() >= pad ? p.size() - pad : 0);
      if (start < end) d.block.assign(p, start, end - start);
      if (f.flags & kEndHeaders)
        header_block(d, d.block_stream, d.block_end_stream, d.block_promise, done);
      return;
    }
    case kContinuation:
      if (!d.block_open || f.stream != d.block_stream) {
        ++stats_.invalid_frames;
        lose_sync(d, true);
        return;
      }
      if (d.block_cut || d.payload_cut || d.block.size() + p.size() > limits_.max_header_block) {
        d.block_cut = true;
      } else {
        d.block += p;
      }
      if (f.flags & kEndHeaders)
        header_block(d, d.block_stream, d.block_end_stream, d.block_promise, done);
      return;
    case kRstStream:
      if (auto it = streams_.find(f.stream); it != streams_.end())
        finish(it, H2Outcome::reset, done, p.size() >= 4 ? error_code_text(be32(p.data())) : "");
      return;
    case kGoaway: {
      if (p.size() < 4) return;
      // Streams the receiver opened above the last one the sender took
      // were never processed.
      const std::uint32_t last = be32(p.data()) & 0x7fffffff;
      for (auto it = streams_.upper_bound(last); it != streams_.end();) {
        auto next = std::next(it);
        if (it->second.request_outbound != d.outbound) finish(it, H2Outcome::closed, done);
        it = next;
      }
      return;
    }
    case kSettings: {
      Direction& o = other(d);
      if (f.flags & kAck) {
        if (d.sizes_awaiting_ack.empty()) return;
        const auto size = d.sizes_awaiting_ack.front();
        d.sizes_awaiting_ack.pop_front();
        if (size && d.table_known && d.ensure_inflater() &&
            nghttp2_hd_inflate_change_table_size(d.inflater, *size) != 0) {
          d.table_known = false;
          ++stats_.table_lost;
        }
        return;
      }
      std::optional<std::uint32_t> size;
      for (std::size_t i = 0; i + 6 <= p.size(); i += 6) {
        const auto id = static_cast<std::uint16_t>((static_cast<std::uint8_t>(p[i]) << 8) |
                                                   static_cast<std::uint8_t>(p[i + 1]));
        if (id == kSettingsHeaderTableSize) size = be32(p.data() + i + 2);
      }
      if (d.payload_cut && !size && o.table_known) {
        // A HEADER_TABLE_SIZE may have been in what went by unseen.
        o.table_known = false;
        ++stats_.table_lost;
      }
      if (o.sizes_awaiting_ack.size() < 16) o.sizes_awaiting_ack.push_back(size);
      return;
    }
    default:
      return;
  }
}

void H2Connection::header_block(Direction& d, std::uint32_t stream_id, bool end_stream,
                                bool promise, std::vector<H2Exchange>& done) {
  d.block_open = false;
  if (d.block_cut && d.table_known) {
    d.table_known = false;
    ++stats_.table_lost;
  }
  Fields fields;
  const bool decoded = decode_block(d, fields);
  if (d.block_cut) fields.partial = true;
  release(d.block);
  if (promise || !decoded) return;
  headers(d, stream_id, fields, end_stream, d.block_ns, done);
}

namespace {

// Decodes a whole block; false when the inflater refused it.
template <typename OnField>
bool inflate(nghttp2_hd_inflater* inflater, std::span<const std::uint8_t> block,
             OnField&& on_field) {
  const std::uint8_t* in = block.data();
  std::size_t left = block.size();
  for (;;) {
    nghttp2_nv nv;
    int flags = 0;
    const auto used = nghttp2_hd_inflate_hd2(inflater, &nv, &flags, in, left, 1);
    if (used < 0) return false;
    in += used;
    left -= static_cast<std::size_t>(used);
    if (flags & NGHTTP2_HD_INFLATE_EMIT)
      on_field(std::string_view(reinterpret_cast<const char*>(nv.name), nv.namelen),
               std::string_view(reinterpret_cast<const char*>(nv.value), nv.valuelen));
    if (flags & NGHTTP2_HD_INFLATE_FINAL) {
      nghttp2_hd_inflate_end_headers(inflater);
      return true;
    }
    if (used == 0 && !(flags & NGHTTP2_HD_INFLATE_EMIT)) return false;
  }
}

}  // namespace

namespace {

// A decimal of at most `digits` digits; nullopt for anything else.
std::optional<int> small_number(std::string_view text, std::size_t digits) {
  if (text.empty() || text.size() > digits) return std::nullopt;
  int value = 0;
  for (char c : text) {
    if (c < '0' || c > '9') return std::nullopt;
    value = value * 10 + (c - '0');
  }
  return value;
}

}  // namespace

bool H2Connection::decode_block(Direction& d, Fields& fields) {
  Fields* into = &fields;
  auto on_field = [&](std::string_view name, std::string_view value) {
    Fields& f = *into;
    value = value.substr(0, limits_.max_field_bytes);
    // A repeated pseudo-header is malformed (RFC 9113 8.3): the first counts.
    if (name == ":method") {
      if (f.has_method) return;
      f.has_method = true;
      f.method = value;
    } else if (name == ":path") {
      if (f.has_path) return;
      f.has_path = true;
      f.path = limits_.strip_query ? value.substr(0, value.find('?')) : value;
    } else if (name == ":authority") {
      if (f.authority.empty()) f.authority = value;
    } else if (name == "host") {
      f.host = value;
    } else if (name == ":status") {
      if (f.has_status) return;
      if (auto status = small_number(value, 3); status && *status >= 100) {
        f.has_status = true;
        f.status = *status;
      }
    } else if (name == "content-type") {
      f.content_type = value;
    } else if (name == "grpc-status") {
      f.grpc_status = small_number(value, 3);
    }
  };
  const auto* bytes = reinterpret_cast<const std::uint8_t*>(d.block.data());
  const std::span<const std::uint8_t> block(bytes, d.block.size());
  if (d.table_known) {
    Fields whole;
    into = &whole;
    if (d.ensure_inflater() && inflate(d.inflater, block, on_field)) {
      fields = std::move(whole);
      return true;
    }
    // A block the table does not explain: ours is not the peers' table.
    into = &fields;
    d.table_known = false;
    ++stats_.table_lost;
  }
  if (d.inflater) {
    nghttp2_hd_inflate_del(d.inflater);
    d.inflater = nullptr;
  }
  bool dropped = false;
  const std::string stateless = without_dynamic_references(block, dropped);
  if (!d.static_inflater && nghttp2_hd_inflate_new(&d.static_inflater) != 0) {
    d.static_inflater = nullptr;
    return false;
  }
  const auto* rewritten = reinterpret_cast<const std::uint8_t*>(stateless.data());
  if (!inflate(d.static_inflater, {rewritten, stateless.size()}, on_field)) {
    nghttp2_hd_inflate_del(d.static_inflater);
    d.static_inflater = nullptr;
    dropped = true;
  }
  fields.partial = dropped;
  return true;
}

void H2Connection::headers(Direction& d, std::uint32_t stream_id, Fields& f, bool end_stream,
                           std::uint64_t ns, std::vector<H2Exchange>& done) {
  auto it = streams_.find(stream_id);
  bool request = f.has_method;
  if (!f.has_method && !f.has_status && it == streams_.end()) {
    // Neither pseudo-header survived: a request if this side sends them.
    if (!f.partial || !requests_outbound_ || *requests_outbound_ != d.outbound) return;
    request = true;
  }
  if (request && it == streams_.end()) {
    // Client streams are odd and come one way (RFC 9113 5.1.1); a block read
    // without its table that jumps far ahead is more likely bytes taken for
    // a frame than a thousand requests unseen.
    if (stream_id % 2 == 0 || (requests_outbound_ && *requests_outbound_ != d.outbound) ||
        (f.partial && last_request_stream_ &&
         stream_id > *last_request_stream_ + 2 * limits_.max_streams))
      return;
    if (!requests_outbound_) requests_outbound_ = d.outbound;
    // Stream ids only grow (RFC 9113 5.1.1): a lower one is a retransmitted
    // or trailing block of a stream already reported, not a new request.
    if (last_request_stream_ && stream_id <= *last_request_stream_) return;
    last_request_stream_ = stream_id;
    if (streams_.size() >= limits_.max_streams) {
      ++stats_.dropped_streams;
      end_unfinished(streams_.begin(), done);
    }
    Stream& s = streams_[stream_id];
    s.request_outbound = d.outbound;
    s.method = std::move(f.method);
    s.path = std::move(f.path);
    s.authority = f.authority.empty() ? std::move(f.host) : std::move(f.authority);
    s.content_type = std::move(f.content_type);
    s.request_ns = ns;
    s.partial = f.partial;
    return;  // a request's END_STREAM changes nothing we report
  }
  if (it == streams_.end()) {
    if (f.has_status) ++stats_.orphan_responses;
    return;
  }
  Stream& s = it->second;
  if (s.request_outbound == d.outbound) return;  // request trailers
  if (!requests_outbound_) requests_outbound_ = !d.outbound;
  s.partial = s.partial || f.partial;
  if (f.grpc_status) s.grpc_status = f.grpc_status;
  if (!s.has_response && f.has_status && f.status >= 200) {
    s.has_response = true;
    s.status = f.status;
    s.response_ns = ns;
  } else if (!s.has_response && !f.has_status && f.partial && !s.response_may_be_unseen) {
    // The :status was lost with the table: a response all the same (unless
    // the response headers may have gone by unseen, and this is trailers).
    s.has_response = true;
    s.response_ns = ns;
  }
  if (end_stream) end_of_side(d, stream_id, done);
}

void H2Connection::end_of_side(Direction& d, std::uint32_t stream_id,
                               std::vector<H2Exchange>& done) {
  auto it = streams_.find(stream_id);
  if (it == streams_.end() || it->second.request_outbound == d.outbound) return;
  finish(it, it->second.has_response ? H2Outcome::answered : H2Outcome::closed, done);
}

void H2Connection::finish(std::map<std::uint32_t, Stream>::iterator it, H2Outcome outcome,
                          std::vector<H2Exchange>& done, std::string reset_code) {
  Stream& s = it->second;
  if (s.response_may_be_unseen &&
      (outcome == H2Outcome::closed || outcome == H2Outcome::timed_out)) {
    outcome = H2Outcome::lost;
    ++stats_.lost_streams;
  }
  H2Exchange& e = done.emplace_back();
  e.connection = id_;
  e.side = s.request_outbound ? L7Side::client : L7Side::server;
  e.stream_id = it->first;
  e.method = std::move(s.method);
  e.path = std::move(s.path);
  e.authority = std::move(s.authority);
  e.content_type = std::move(s.content_type);
  e.status = s.has_response ? s.status : 0;
  if (s.request_bytes_known) e.request_bytes = s.request_bytes;
  if (s.response_bytes_known) e.response_bytes = s.response_bytes;
  e.request_ns = s.request_ns;
  e.response_ns = s.has_response ? s.response_ns : 0;
  e.outcome = outcome;
  e.reset_code = std::move(reset_code);
  e.partial_headers = s.partial;
  e.grpc_status = s.grpc_status;
  streams_.erase(it);
}

void H2Connection::upgraded(bool request_outbound, std::string method, std::string path,
                            std::string authority, std::optional<std::uint64_t> request_bytes,
                            std::uint64_t request_ns) {
  requests_outbound_ = request_outbound;
  last_request_stream_ = 1;
  Stream& s = streams_[1];
  s.request_outbound = request_outbound;
  s.method = std::move(method);
  s.path = std::move(path);
  s.authority = std::move(authority);
  s.request_ns = request_ns;
  s.request_bytes = request_bytes.value_or(0);
  s.request_bytes_known = request_bytes.has_value();
}

void H2Connection::close(std::vector<H2Exchange>& done) {
  while (!streams_.empty()) end_unfinished(streams_.begin(), done);
}

void H2Connection::end_unfinished(std::map<std::uint32_t, Stream>::iterator it,
                                  std::vector<H2Exchange>& done) {
  // Its response's END_STREAM was not seen: what was counted of the body may
  // be short of it (segments the capture never offered, a tail never
  // delivered), so its size is not known.
  it->second.response_bytes_known = false;
  finish(it, it->second.has_response ? H2Outcome::answered : H2Outcome::closed, done);
}

void H2Connection::expire(std::uint64_t now_ns, std::uint64_t timeout_ns,
                          std::vector<H2Exchange>& done) {
  for (auto it = streams_.begin(); it != streams_.end();) {
    auto next = std::next(it);
    if (!it->second.has_response && now_ns > it->second.request_ns + timeout_ns)
      finish(it, H2Outcome::timed_out, done);
    it = next;
  }
}

}  // namespace netwatcher::http
