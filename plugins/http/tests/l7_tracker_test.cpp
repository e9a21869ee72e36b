#include "netwatcher/l7_tracker.hpp"

#include <cstring>

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "http_parser.hpp"

using namespace netwatcher;

namespace {

// One socket's view of a TCP connection, segment by segment.
class Conversation {
 public:
  Conversation(L7Tracker& tracker, std::uint64_t id, std::size_t capture = 256)
      : tracker_(tracker), id_(id), capture_(capture) {}

  // `text` leaves (outbound) or arrives (inbound) as one segment at `ns`.
  std::vector<L7Exchange> send(const std::string& text, std::uint64_t ns) {
    return segment(true, text, ns);
  }
  std::vector<L7Exchange> receive(const std::string& text, std::uint64_t ns) {
    return segment(false, text, ns);
  }
  // The same bytes again, as a retransmission.
  std::vector<L7Exchange> resend(const std::string& text, std::uint64_t ns) {
    out_seq_ -= static_cast<std::uint32_t>(text.size());
    return send(text, ns);
  }

 private:
  std::vector<L7Exchange> segment(bool outbound, const std::string& text, std::uint64_t ns) {
    std::uint32_t& seq = outbound ? out_seq_ : in_seq_;
    L7Segment s;
    s.connection = id_;
    s.outbound = outbound;
    s.seq = seq;
    s.length = static_cast<std::uint32_t>(text.size());
    s.captured = as_bytes(std::string_view(text).substr(0, capture_));
    s.ns = ns;
    seq += s.length;
    std::vector<L7Exchange> done;
    tracker_.segment(s, done);
    return done;
  }

  L7Tracker& tracker_;
  std::uint64_t id_;
  std::size_t capture_;
  // Near the wrap, so sequence arithmetic is exercised.
  std::uint32_t out_seq_ = 0xfffffe00, in_seq_ = 0x7ffffff0;
};

const std::string kGet = "GET /a HTTP/1.1\r\nHost: h\r\n\r\n";
std::string ok(const std::string& body) {
  return "HTTP/1.1 200 OK\r\nContent-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
}

class Tracker : public ::testing::Test {
 protected:
  http::HttpParser parser_;
  L7Tracker tracker_{parser_};
};

TEST_F(Tracker, KeepAliveRequestsArePairedInOrderWithTheirLatency) {
  Conversation client(tracker_, 1);
  EXPECT_TRUE(client.send(kGet, 1000).empty());
  auto first = client.receive(ok("one"), 1500);
  ASSERT_EQ(first.size(), 1u);
  EXPECT_EQ(first[0].side, L7Side::client);
  EXPECT_EQ(first[0].outcome, L7Outcome::answered);
  EXPECT_EQ(first[0].request.operation, "GET");
  EXPECT_EQ(first[0].request.resource, "/a");
  EXPECT_EQ(first[0].response->status, 200);
  EXPECT_EQ(first[0].response->body_size, 3u);
  EXPECT_EQ(first[0].response_ns - first[0].request_ns, 500u);

  client.send("POST /b HTTP/1.1\r\nContent-Length: 4\r\n\r\nbody", 2000);
  auto second = client.receive("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n", 2600);
  ASSERT_EQ(second.size(), 1u);
  EXPECT_EQ(second[0].request.operation, "POST");
  EXPECT_EQ(second[0].request.body_size, 4u);
  EXPECT_EQ(second[0].response->status, 404);
  EXPECT_EQ(tracker_.stats().lost_sync, 0u);
}

TEST_F(Tracker, PipelinedRequestsAndResponsesInOneSegmentPairUp) {
  Conversation client(tracker_, 2);
  client.send(kGet + "GET /b HTTP/1.1\r\n\r\nHEAD /c HTTP/1.1\r\n\r\n", 10);
  auto done = client.receive(
      ok("1") + ok("22") + "HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n",  // HEAD: no body
      20);
  ASSERT_EQ(done.size(), 3u);
  EXPECT_EQ(done[0].request.resource, "/a");
  EXPECT_EQ(done[1].request.resource, "/b");
  EXPECT_EQ(done[1].response->body_size, 2u);
  EXPECT_EQ(done[2].request.operation, "HEAD");
  EXPECT_EQ(done[2].response->body_size, 0u);
}

TEST_F(Tracker, BodiesBeyondTheCaptureAreSkippedBySequenceNumber) {
  Conversation client(tracker_, 3, 64);
  const std::string upload =
      "PUT /big HTTP/1.1\r\nContent-Length: 3000\r\n\r\n" + std::string(3000, 'x');
  client.send(upload.substr(0, 1448), 1);
  client.send(upload.substr(1448), 2);  // body only: not a request
  client.send(kGet, 3);
  const std::string big = ok(std::string(5000, 'y'));
  auto done = client.receive(big.substr(0, 2000), 4);
  auto more = client.receive(big.substr(2000), 5);
  auto last = client.receive(ok("z"), 6);
  ASSERT_EQ(done.size(), 1u);
  EXPECT_EQ(done[0].request.resource, "/big");
  EXPECT_EQ(done[0].response->body_size, 5000u);
  EXPECT_TRUE(more.empty());
  ASSERT_EQ(last.size(), 1u);
  EXPECT_EQ(last[0].request.resource, "/a");
  EXPECT_EQ(tracker_.stats().lost_sync, 0u);
  EXPECT_EQ(tracker_.stats().invalid_requests + tracker_.stats().invalid_responses, 0u);
}

TEST_F(Tracker, AHeadSplitOverSegmentsIsOneRequest) {
  Conversation client(tracker_, 4);
  client.send("GET /split HT", 1);
  client.send("TP/1.1\r\nHost: h", 2);
  client.send("\r\n\r\n", 3);
  auto done = client.receive(ok(""), 9);
  ASSERT_EQ(done.size(), 1u);
  EXPECT_EQ(done[0].request.resource, "/split");
  EXPECT_EQ(done[0].request.authority, "h");
  EXPECT_EQ(done[0].request_ns, 1u) << "the request started with its first segment";
}

TEST_F(Tracker, AHeadCutByTheCaptureStillGivesItsStartLineAndTheNextRequestIsFound) {
  Conversation client(tracker_, 5, 40);
  client.send("GET /long HTTP/1.1\r\nCookie: " + std::string(500, 'c') + "\r\n\r\n", 1);
  auto first = client.receive(ok("1"), 2);
  client.send(kGet, 3);
  auto second = client.receive(ok("2"), 4);
  ASSERT_EQ(first.size(), 1u);
  EXPECT_EQ(first[0].request.resource, "/long");
  ASSERT_EQ(second.size(), 1u);
  EXPECT_EQ(second[0].request.resource, "/a");
}

TEST_F(Tracker, TheServerSideSeesRequestsComeIn) {
  Conversation server(tracker_, 6);
  server.receive(kGet, 100);
  auto done = server.send(ok("x"), 130);
  ASSERT_EQ(done.size(), 1u);
  EXPECT_EQ(done[0].side, L7Side::server);
  EXPECT_EQ(done[0].response_ns - done[0].request_ns, 30u);
}

TEST_F(Tracker, UnansweredRequestsAreReportedOnTimeoutAndOnClose) {
  L7Tracker tracker(parser_, L7TrackerLimits{1000, 5000, 16, 64, 16 * 1024});
  Conversation a(tracker, 7), b(tracker, 8);
  a.send(kGet, 100);
  b.send(kGet, 900);
  std::vector<L7Exchange> done;
  tracker.expire(1500, done);
  ASSERT_EQ(done.size(), 1u);
  EXPECT_EQ(done[0].connection, 7u);
  EXPECT_EQ(done[0].outcome, L7Outcome::timed_out);
  EXPECT_FALSE(done[0].response.has_value());
  done.clear();
  tracker.close(8, done);
  ASSERT_EQ(done.size(), 1u);
  EXPECT_EQ(done[0].outcome, L7Outcome::closed);
  // A connection with nothing pending stays until it has been idle for idle_ns,
  // so a late answer is still recognised as one.
  done.clear();
  tracker.expire(4000, done);
  EXPECT_EQ(tracker.connections(), 1u);
  tracker.expire(10000, done);
  EXPECT_EQ(tracker.connections(), 0u);
}

TEST_F(Tracker, RetransmissionsAndOtherProtocolsProduceNothing) {
  Conversation client(tracker_, 9);
  client.send(kGet, 1);
  client.resend(kGet, 2);
  auto done = client.receive(ok("a"), 3);
  EXPECT_EQ(done.size(), 1u) << "the retransmitted request is not a second request";

  Conversation tls(tracker_, 10);
  for (int i = 0; i < 10; ++i) {
    EXPECT_TRUE(tls.send(std::string("\x16\x03\x01\x00\x10", 5) + std::string(16, 'k'), i).empty());
    EXPECT_TRUE(
        tls.receive(std::string("\x16\x03\x03\x00\x10", 5) + std::string(16, 's'), i).empty());
  }
  EXPECT_EQ(tracker_.stats().invalid_requests, 0u);
}

TEST_F(Tracker, AResponseWithoutARequestIsCountedNotPaired) {
  Conversation client(tracker_, 11);
  client.send(kGet, 1);
  client.receive(ok("a"), 2);
  auto done = client.receive(ok("b"), 3);
  EXPECT_TRUE(done.empty());
  EXPECT_EQ(tracker_.stats().orphan_responses, 1u);
}

TEST_F(Tracker, TheLeastRecentlyActiveConnectionIsForgottenFirst) {
  L7Tracker tracker(parser_, L7TrackerLimits{1'000'000, 1'000'000, 2, 64, 16 * 1024});
  Conversation a(tracker, 1), b(tracker, 2), c(tracker, 3);
  a.send(kGet, 1);
  b.send(kGet, 2);
  std::vector<L7Exchange> evicted;
  L7Segment s;
  s.connection = 3;
  s.outbound = true;
  s.length = static_cast<std::uint32_t>(kGet.size());
  s.captured = as_bytes(kGet);
  tracker.segment(s, evicted);
  ASSERT_EQ(evicted.size(), 1u);
  EXPECT_EQ(evicted[0].connection, 1u);
  EXPECT_EQ(evicted[0].outcome, L7Outcome::timed_out);
  EXPECT_EQ(tracker.stats().evicted_connections, 1u);
}

}  // namespace
