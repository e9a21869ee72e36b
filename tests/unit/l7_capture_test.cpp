// decode_l7_record(): the SDK's check of L7 capture records before a
// protocol plugin trusts them.
#include "netwatcher/l7_capture.hpp"

#include <gtest/gtest.h>

#include <cstring>
#include <span>
#include <string>

using namespace netwatcher;

namespace {

TEST(L7Capture, RecordsAreCheckedBeforeTheyAreTrusted) {
  struct {
    nw_l7_segment fixed;
    char payload[8];
  } record{};
  record.fixed.hdr.type = NW_L7_RECORD_SEGMENT;
  record.fixed.cookie = 42;
  record.fixed.seq = 7;
  record.fixed.length = 1000;
  record.fixed.captured = 8;
  record.fixed.outbound = 1;
  std::memcpy(record.fixed.comm, "curl", 4);
  std::memcpy(record.payload, "GET / HT", 8);
  auto bytes = std::as_bytes(std::span(&record, 1));

  L7CaptureRecord out;
  ASSERT_TRUE(decode_l7_record(bytes, out).ok());
  EXPECT_EQ(out.kind, L7CaptureRecord::Kind::segment);
  EXPECT_EQ(out.segment.connection, 42u);
  EXPECT_TRUE(out.segment.outbound);
  EXPECT_EQ(out.segment.length, 1000u);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(out.segment.captured.data()),
                        out.segment.captured.size()),
            "GET / HT");
  EXPECT_EQ(out.comm, "curl");

  EXPECT_FALSE(decode_l7_record(bytes.first(sizeof(nw_l7_segment) + 4), out).ok())
      << "claims more captured bytes than the record holds";
  record.fixed.captured = 9;
  record.fixed.length = 8;
  EXPECT_FALSE(decode_l7_record(bytes, out).ok()) << "captured more than the segment's length";
  record.fixed.hdr.type = 1;
  EXPECT_FALSE(decode_l7_record(bytes, out).ok());
  EXPECT_FALSE(is_l7_record(bytes));
  EXPECT_FALSE(decode_l7_record(bytes.first(4), out).ok());
}

}  // namespace
