// netwatcher SDK: user-space side of the L7 capture (netwatcher/bpf/l7.bpf.h).
#pragma once

#include <cstdint>
#include <span>
#include <string>

#include "netwatcher/bpf/types.h"
#include "netwatcher/l7_tracker.hpp"
#include "netwatcher/status.hpp"

namespace netwatcher {

// One decoded capture record. For a segment, `segment` is ready for
// L7Tracker::segment(); its `captured` bytes point into the record passed to
// decode_l7_record() and are valid only as long as that record is.
struct L7CaptureRecord {
  enum class Kind : std::uint8_t { segment, close } kind = Kind::segment;
  std::uint64_t cookie = 0;
  nw_tuple tuple{};       // segment only: local / remote
  std::uint32_t pid = 0;  // segment only: 0 until the owner was seen
  std::string comm;       // segment only
  L7Segment segment;      // segment only
};

// Checks and decodes an NW_L7_RECORD_SEGMENT / NW_L7_RECORD_CLOSE record.
// Fails, saying why, for other types and for short or inconsistent records.
Status decode_l7_record(std::span<const std::byte> record, L7CaptureRecord& out);

// True for the record types decode_l7_record() handles.
bool is_l7_record(std::span<const std::byte> record) noexcept;

}  // namespace netwatcher
