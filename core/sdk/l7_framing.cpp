#include "netwatcher/l7_framing.hpp"

#include <algorithm>

namespace netwatcher {

namespace {

bool seq_before(std::uint32_t a, std::uint32_t b) {
  return static_cast<std::int32_t>(a - b) < 0;
}

// Messages longer than this cannot be followed by 32-bit sequence numbers.
constexpr std::uint64_t kMaxMessage = 0x7fffffff;

}  // namespace

std::int64_t LengthPrefixedStream::read_length(std::span<const std::byte> bytes) const noexcept {
  if (bytes.size() < prefix_.size) return -1;
  std::uint64_t length = 0;
  for (std::size_t i = 0; i < prefix_.size; ++i) {
    const std::size_t at =
        prefix_.order == LengthPrefix::Order::big_endian ? i : prefix_.size - 1 - i;
    length = (length << 8) | std::to_integer<std::uint64_t>(bytes[at]);
  }
  return static_cast<std::int64_t>(length);
}

void LengthPrefixedStream::lose() noexcept {
  ++stats_.lost_sync;
  buffer_.clear();
  skipping_ = false;
  synced_ = false;
}

void LengthPrefixedStream::reset() noexcept {
  buffer_.clear();
  skipping_ = false;
  synced_ = false;
  first_ns_ = 0;
}

void LengthPrefixedStream::feed(std::uint32_t seq, std::uint32_t wire_length,
                                std::span<const std::byte> captured, std::uint64_t ns,
                                const std::function<void(const FramedMessage&)>& on_message) {
  std::span<const std::byte> data =
      captured.first(std::min<std::size_t>(captured.size(), wire_length));
  if (!synced_) {
    reset();
    synced_ = true;
    next_seq_ = seq;
  }
  if (seq != next_seq_) {
    if (seq_before(seq, next_seq_)) {
      ++stats_.retransmissions;
      return;
    }
    ++stats_.lost_sync;  // a segment the capture did not see
    buffer_.clear();
    skipping_ = false;
  }
  next_seq_ = seq + wire_length;
  if (skipping_) {
    if (!seq_before(skip_to_, seq + wire_length)) return;  // still inside the cut message
    const std::uint32_t offset = skip_to_ - seq;
    skipping_ = false;
    if (offset > data.size()) {  // the next message starts past the capture
      lose();
      return;
    }
    data = data.subspan(offset);
    seq = skip_to_;
  }
  const bool cut = data.size() < next_seq_ - seq;
  if (buffer_.empty()) {
    first_ns_ = ns;
    buffer_seq_ = seq;
  }
  buffer_.insert(buffer_.end(), data.begin(), data.end());
  // If on_message throws, the stream must not read the same bytes again.
  struct Guard {
    LengthPrefixedStream& s;
    bool armed = true;
    ~Guard() {
      if (armed) s.reset();
    }
  } guard{*this};
  const std::size_t header = prefix_.header_size();
  std::size_t pos = 0;  // where the next message starts in buffer_
  while (true) {
    const std::span<const std::byte> rest = std::span<const std::byte>(buffer_).subspan(pos);
    const std::int64_t field = rest.size() >= header ? read_length(rest) : -1;
    if (field < 0) {
      // The next header is past the capture (wholly, when the capture ends
      // right after a message: the segment's uncaptured bytes start one).
      if (cut) {
        guard.armed = false;
        lose();
        return;
      }
      break;
    }
    std::uint64_t body_length = static_cast<std::uint64_t>(field);
    if (prefix_.counts_header) {
      if (body_length < header) {  // not a length: the stream is not where it seems
        guard.armed = false;
        lose();
        return;
      }
      body_length -= header;
    }
    const std::uint64_t total = header + body_length;
    if (total > kMaxMessage) {
      guard.armed = false;
      lose();
      return;
    }
    FramedMessage m;
    m.header = rest.first(header);
    m.body_length = static_cast<std::size_t>(body_length);
    m.seq = buffer_seq_ + static_cast<std::uint32_t>(pos);
    m.ns = first_ns_;
    if (rest.size() >= total) {
      m.body = rest.subspan(header, m.body_length);
      m.whole = true;
      ++stats_.messages;
      on_message(m);
      pos += static_cast<std::size_t>(total);
      first_ns_ = ns;
      continue;
    }
    const bool oversized = body_length > prefix_.max_body;
    if (cut || oversized) {
      // What is at hand of this message is all there will be.
      m.body = rest.subspan(header, std::min<std::size_t>(rest.size() - header, prefix_.max_body));
      m.whole = false;
      ++stats_.messages;
      ++stats_.cut;
      if (oversized) ++stats_.oversized;
      on_message(m);
      guard.armed = false;
      buffer_.clear();
      skipping_ = true;
      skip_to_ = m.seq + static_cast<std::uint32_t>(total);
      if (!seq_before(skip_to_, next_seq_)) return;
      // The next message starts inside this segment, past the capture.
      lose();
      return;
    }
    break;  // the rest comes in later segments
  }
  guard.armed = false;
  buffer_.erase(buffer_.begin(), buffer_.begin() + static_cast<std::ptrdiff_t>(pos));
  if (!buffer_.empty()) buffer_seq_ += static_cast<std::uint32_t>(pos);
}

}  // namespace netwatcher
