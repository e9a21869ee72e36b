#include "netwatcher/l7_capture.hpp"

#include <cstring>

namespace netwatcher {

bool is_l7_record(std::span<const std::byte> record) noexcept {
  nw_record_header header;
  if (record.size() < sizeof header) return false;
  std::memcpy(&header, record.data(), sizeof header);
  return header.type == NW_L7_RECORD_SEGMENT || header.type == NW_L7_RECORD_CLOSE;
}

Status decode_l7_record(std::span<const std::byte> record, L7CaptureRecord& out) {
  nw_record_header header;
  if (record.size() < sizeof header)
    return Status::failure("record of " + std::to_string(record.size()) + " bytes");
  std::memcpy(&header, record.data(), sizeof header);
  if (header.type == NW_L7_RECORD_CLOSE) {
    if (record.size() < sizeof(nw_l7_close)) return Status::failure("short L7 close record");
    nw_l7_close close;
    std::memcpy(&close, record.data(), sizeof close);
    out.kind = L7CaptureRecord::Kind::close;
    out.cookie = close.cookie;
    return Status::success();
  }
  if (header.type != NW_L7_RECORD_SEGMENT)
    return Status::failure("not an L7 capture record (type " + std::to_string(header.type) + ")");
  if (record.size() < sizeof(nw_l7_segment)) return Status::failure("short L7 segment record");
  nw_l7_segment rec;
  std::memcpy(&rec, record.data(), sizeof rec);
  if (rec.captured > NW_L7_MAX_CAPTURE || rec.captured > rec.length ||
      record.size() < sizeof rec + rec.captured)
    return Status::failure("L7 segment record claims " + std::to_string(rec.captured) +
                           " captured bytes of " + std::to_string(rec.length) + " in " +
                           std::to_string(record.size()));
  out.kind = L7CaptureRecord::Kind::segment;
  out.cookie = rec.cookie;
  out.tuple = rec.tuple;
  out.pid = rec.pid;
  out.comm.assign(rec.comm, strnlen(rec.comm, sizeof rec.comm));
  out.segment.connection = rec.cookie;
  out.segment.outbound = rec.outbound != 0;
  out.segment.seq = rec.seq;
  out.segment.length = rec.length;
  out.segment.captured = record.subspan(sizeof rec, rec.captured);
  out.segment.ns = rec.hdr.timestamp_ns;
  return Status::success();
}

}  // namespace netwatcher
