// LengthPrefixedStream turns TCP segments into length-prefixed messages: the
// prefix shapes of DNS, MySQL and 4-byte protocols; messages packed and split
// any way over segments; what the capture cut, retransmitted or lost.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "netwatcher/l7_framing.hpp"

using namespace netwatcher;

namespace {

struct Seen {
  std::string header;
  std::string body;
  std::size_t body_length = 0;
  bool whole = false;
  std::uint32_t seq = 0;
  std::uint64_t ns = 0;
};

std::string text(std::span<const std::byte> bytes) {
  return {reinterpret_cast<const char*>(bytes.data()), bytes.size()};
}

// Feeds segments to one stream and keeps what it found.
class Feeder {
 public:
  explicit Feeder(LengthPrefix prefix) : stream(prefix) {}

  // A segment at `seq` whose payload on the wire is `wire` bytes, of which
  // `payload` was captured (the whole of it when wire is 0).
  void feed(std::uint32_t seq, const std::string& payload, std::uint32_t wire = 0,
            std::uint64_t ns = 0) {
    if (wire == 0) wire = static_cast<std::uint32_t>(payload.size());
    stream.feed(
        seq, wire, std::span(reinterpret_cast<const std::byte*>(payload.data()), payload.size()),
        ns ? ns : seq, [this](const FramedMessage& m) {
          seen.push_back({text(m.header), text(m.body), m.body_length, m.whole, m.seq, m.ns});
        });
  }
  std::vector<std::string> bodies() const {
    std::vector<std::string> out;
    for (const Seen& s : seen) out.push_back(s.body);
    return out;
  }

  LengthPrefixedStream stream;
  std::vector<Seen> seen;
};

// A 2-byte big-endian length and the body (DNS over TCP).
std::string be16(const std::string& body) {
  const std::size_t n = body.size();
  return std::string{static_cast<char>(n >> 8), static_cast<char>(n & 0xff)} + body;
}

std::string be32(std::uint32_t n) {
  return {static_cast<char>(n >> 24), static_cast<char>((n >> 16) & 0xff),
          static_cast<char>((n >> 8) & 0xff), static_cast<char>(n & 0xff)};
}

using V = std::vector<std::string>;

TEST(L7Framing, TwoByteBigEndianSeveralMessagesInOneSegment) {
  Feeder f(LengthPrefix::dns());
  std::string big(300, 'q');  // 0x012c: both length bytes matter
  f.feed(1000, be16("abc") + be16(big) + be16("") + be16("x"));
  EXPECT_EQ(f.bodies(), (V{"abc", big, "", "x"}));
  ASSERT_EQ(f.seen.size(), 4u);
  EXPECT_EQ(f.seen[1].body_length, 300u);
  EXPECT_EQ(f.seen[1].header, std::string("\x01\x2c", 2));
  EXPECT_EQ(f.seen[1].seq, 1005u);
  EXPECT_EQ(f.seen[2].seq, 1307u);
  EXPECT_EQ(f.seen[3].seq, 1309u);
  for (const Seen& s : f.seen) EXPECT_TRUE(s.whole);
  EXPECT_EQ(f.stream.stats().messages, 4u);
  EXPECT_EQ(f.stream.stats().lost_sync, 0u);
  EXPECT_EQ(f.stream.buffered(), 0u);
}

TEST(L7Framing, ThreeByteLittleEndianWithASequenceIdTheLengthExcludes) {
  Feeder f(LengthPrefix::mysql());
  const std::string small(0x0105, 's');  // 261: little-endian 05 01 00
  f.feed(7, std::string("\x05\x01\x00\x00", 4) + small + std::string("\x01\x00\x00\x01", 4) + "!");
  ASSERT_EQ(f.seen.size(), 2u);
  EXPECT_EQ(f.seen[0].body, small);
  EXPECT_EQ(f.seen[0].body_length, 261u);
  EXPECT_EQ(f.seen[0].header, std::string("\x05\x01\x00\x00", 4));
  EXPECT_EQ(f.seen[1].body, "!");
  EXPECT_EQ(f.seen[1].header[3], '\x01');  // the sequence id
  EXPECT_EQ(f.seen[1].seq, 7u + 4 + 261);
  EXPECT_TRUE(f.seen[1].whole);
  EXPECT_EQ(f.stream.stats().lost_sync, 0u);
}

TEST(L7Framing, FourByteBigEndianOneMessageOverThreeSegments) {
  Feeder f(LengthPrefix::be32());
  const std::string msg = be32(0x0000010a) + std::string(0x10a, 'b');  // 266-byte body
  f.feed(50, msg.substr(0, 6), 0, 111);
  EXPECT_TRUE(f.seen.empty());
  EXPECT_EQ(f.stream.buffered(), 6u);
  f.feed(56, msg.substr(6, 200), 0, 222);
  EXPECT_TRUE(f.seen.empty());
  f.feed(256, msg.substr(206) + be32(1) + "z", 0, 333);
  ASSERT_EQ(f.seen.size(), 2u);
  EXPECT_EQ(f.seen[0].body, std::string(0x10a, 'b'));
  EXPECT_TRUE(f.seen[0].whole);
  EXPECT_EQ(f.seen[0].seq, 50u);
  EXPECT_EQ(f.seen[0].ns, 111u);  // when its first byte came
  EXPECT_EQ(f.seen[1].body, "z");
  EXPECT_EQ(f.seen[1].ns, 333u);
  EXPECT_EQ(f.stream.buffered(), 0u);
  EXPECT_EQ(f.stream.last_ns(), 333u);
}

TEST(L7Framing, ALengthThatCountsTheHeaderItself) {
  LengthPrefix p = LengthPrefix::be32();
  p.counts_header = true;
  Feeder f(p);
  f.feed(0, be32(7) + "abc" + be32(4));
  EXPECT_EQ(f.bodies(), (V{"abc", ""}));
  // A length shorter than its own header cannot be: the stream is lost.
  f.feed(11, be32(3) + "abc");
  EXPECT_EQ(f.stream.stats().lost_sync, 1u);
  f.feed(18, be32(5) + "q");  // read as a fresh start
  EXPECT_EQ(f.bodies(), (V{"abc", "", "q"}));
}

TEST(L7Framing, APrefixAloneInASegment) {
  Feeder f(LengthPrefix::dns());
  f.feed(10, std::string("\x00\x05", 2));
  EXPECT_TRUE(f.seen.empty());
  f.feed(12, "hello");
  f.feed(17, std::string("\x00", 1));  // half a prefix
  f.feed(18, std::string("\x02", 1) + "hi");
  ASSERT_EQ(f.bodies(), (V{"hello", "hi"}));
  EXPECT_EQ(f.seen[0].seq, 10u);
  EXPECT_EQ(f.seen[1].seq, 17u);
  EXPECT_EQ(f.stream.stats().lost_sync, 0u);
}

TEST(L7Framing, ACutMessageIsSkippedToItsEndAndTheNextOneFound) {
  Feeder f(LengthPrefix::dns());
  // 100-byte message in a 102-byte segment of which 20 bytes were captured.
  const std::string m1 = be16(std::string(100, 'a'));
  f.feed(0, m1.substr(0, 20), 102);
  ASSERT_EQ(f.seen.size(), 1u);
  EXPECT_FALSE(f.seen[0].whole);
  EXPECT_EQ(f.seen[0].body, std::string(18, 'a'));
  EXPECT_EQ(f.seen[0].body_length, 100u);
  f.feed(102, be16("hi"));
  // A 300-byte message over three segments, the first cut: the second lies
  // inside it, the third holds its end and a message after it.
  const std::string m2 = be16(std::string(300, 'c'));
  f.feed(106, m2.substr(0, 30), 150);
  f.feed(256, std::string(100, 'c'));
  f.feed(356, std::string(52, 'c') + be16("z"));
  ASSERT_EQ(f.bodies(), (V{std::string(18, 'a'), "hi", std::string(28, 'c'), "z"}));
  EXPECT_EQ(f.seen[3].seq, 408u);
  EXPECT_EQ(f.stream.stats().cut, 2u);
  EXPECT_EQ(f.stream.stats().lost_sync, 0u);
}

TEST(L7Framing, ANextMessageStartingPastTheCaptureIsLostSync) {
  Feeder f(LengthPrefix::dns());
  // A whole message, then one byte of the next length, then the capture ends.
  f.feed(0, be16("abc") + std::string("\x00", 1), 40);
  EXPECT_EQ(f.bodies(), (V{"abc"}));
  EXPECT_EQ(f.stream.stats().lost_sync, 1u);
  f.feed(40, be16("next"));  // starts again here
  // A cut message that ends inside its own segment, past the capture.
  f.feed(46, be16("0123456789").substr(0, 5), 30);
  EXPECT_EQ(f.stream.stats().lost_sync, 2u);
  f.feed(76, be16("last"));
  EXPECT_EQ(f.bodies(), (V{"abc", "next", "012", "last"}));
}

TEST(L7Framing, ACaptureEndingRightAfterAMessageIsLostSyncWhenTheSegmentGoesOn) {
  Feeder f(LengthPrefix::dns());
  // The capture kept exactly one message of a 40-byte segment: the next
  // message starts in the 35 bytes not seen, so the following segment does
  // not start one where it seems to.
  f.feed(0, be16("abc"), 40);
  EXPECT_EQ(f.bodies(), (V{"abc"}));
  EXPECT_EQ(f.stream.stats().lost_sync, 1u);
  // The same after a skip that ends right at the capture's end.
  f.feed(40, be16(std::string(10, 'k')).substr(0, 4), 12);
  f.feed(52, "", 30);
  EXPECT_EQ(f.stream.stats().lost_sync, 2u);
  f.feed(82, be16("ok"));
  EXPECT_EQ(f.bodies(), (V{"abc", "kk", "ok"}));
  EXPECT_EQ(f.stream.stats().lost_sync, 2u);
}

TEST(L7Framing, ARetransmissionIsIgnored) {
  Feeder f(LengthPrefix::dns());
  f.feed(1000, be16("one"));
  f.feed(1000, be16("one"));  // again
  f.feed(1005, std::string("\x00\x03", 2) + "tw");
  f.feed(1005, std::string("\x00\x03", 2) + "tw");  // a retransmission mid-message
  f.feed(1009, "o");
  EXPECT_EQ(f.bodies(), (V{"one", "two"}));
  EXPECT_EQ(f.stream.stats().retransmissions, 2u);
  EXPECT_EQ(f.stream.stats().lost_sync, 0u);
}

TEST(L7Framing, AGapIsLostSyncAndTheNextSegmentStartsAgain) {
  Feeder f(LengthPrefix::dns());
  f.feed(0, std::string("\x00\x08", 2) + "part");  // 4 of 8 bytes
  f.feed(20, be16("x"));                           // bytes 6..19 never seen
  EXPECT_EQ(f.bodies(), (V{"x"}));
  EXPECT_EQ(f.stream.stats().lost_sync, 1u);
  f.feed(23, be16("y"));
  EXPECT_EQ(f.bodies(), (V{"x", "y"}));
  EXPECT_EQ(f.stream.stats().lost_sync, 1u);
}

TEST(L7Framing, SequenceNumbersWrapAround) {
  Feeder f(LengthPrefix::dns());
  const std::string m = be16("wrapped");
  f.feed(0xfffffffe, m.substr(0, 4), 0, 1);
  f.feed(2, m.substr(4), 0, 2);
  f.feed(0xfffffffe, m.substr(0, 4), 0, 3);  // a retransmission from before the wrap
  EXPECT_EQ(f.bodies(), (V{"wrapped"}));
  EXPECT_EQ(f.stream.stats().retransmissions, 1u);
}

TEST(L7Framing, AMessageLongerThanMaxBodyIsNotBuffered) {
  LengthPrefix p = LengthPrefix::be32();
  p.max_body = 16;
  Feeder f(p);
  f.feed(0, be32(1000) + std::string(36, 'L'));
  ASSERT_EQ(f.seen.size(), 1u);
  EXPECT_FALSE(f.seen[0].whole);
  EXPECT_EQ(f.seen[0].body, std::string(16, 'L'));
  EXPECT_EQ(f.seen[0].body_length, 1000u);
  EXPECT_EQ(f.stream.buffered(), 0u);
  EXPECT_EQ(f.stream.stats().oversized, 1u);
  f.feed(40, std::string(900, 'L'));
  f.feed(940, std::string(64, 'L') + be32(2) + "ok");
  EXPECT_EQ(f.bodies(), (V{std::string(16, 'L'), "ok"}));
  // At max_body a message is still buffered whole.
  f.feed(1010, be32(16) + std::string(10, 'w'));
  EXPECT_EQ(f.stream.buffered(), 14u);
  f.feed(1024, std::string(6, 'w'));
  ASSERT_EQ(f.seen.size(), 3u);
  EXPECT_EQ(f.seen.back().body, std::string(16, 'w'));
  EXPECT_TRUE(f.seen.back().whole);
  // A length sequence numbers cannot follow is not a length.
  f.feed(1030, be32(0xfffffff0) + "??");
  EXPECT_EQ(f.stream.stats().lost_sync, 1u);
}

TEST(L7Framing, AThrowingCallbackLeavesTheStreamToStartAgain) {
  LengthPrefixedStream s(LengthPrefix::dns());
  const std::string seg = be16("a") + be16("b");
  const std::span bytes(reinterpret_cast<const std::byte*>(seg.data()), seg.size());
  EXPECT_THROW(s.feed(0, 6, bytes, 1, [](const FramedMessage&) { throw 1; }), int);
  EXPECT_EQ(s.buffered(), 0u);
  int n = 0;
  s.feed(100, 6, bytes, 2, [&](const FramedMessage&) { ++n; });  // not a gap: a fresh start
  EXPECT_EQ(n, 2);
  EXPECT_EQ(s.stats().lost_sync, 0u);
}

}  // namespace
