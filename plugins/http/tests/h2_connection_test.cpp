#include "h2_connection.hpp"

#include <gtest/gtest.h>
#include <nghttp2/nghttp2.h>

#include <string>
#include <utility>
#include <vector>

using namespace netwatcher;
using namespace netwatcher::http;

namespace {

using HeaderList = std::vector<std::pair<std::string, std::string>>;

std::string frame(std::uint8_t type, std::uint8_t flags, std::uint32_t stream,
                  const std::string& payload) {
  std::string f;
  const auto n = static_cast<std::uint32_t>(payload.size());
  f += static_cast<char>(n >> 16);
  f += static_cast<char>(n >> 8);
  f += static_cast<char>(n);
  f += static_cast<char>(type);
  f += static_cast<char>(flags);
  for (int shift = 24; shift >= 0; shift -= 8) f += static_cast<char>(stream >> shift);
  return f + payload;
}

std::string be32(std::uint32_t v) {
  return {static_cast<char>(v >> 24), static_cast<char>(v >> 16), static_cast<char>(v >> 8),
          static_cast<char>(v)};
}

// One endpoint's HPACK encoder (libnghttp2's, as real peers use).
class Encoder {
 public:
  // `max_table`: the most change_table_size() may raise the table to.
  explicit Encoder(std::size_t max_table = 4096) { nghttp2_hd_deflate_new(&deflater_, max_table); }
  ~Encoder() { nghttp2_hd_deflate_del(deflater_); }
  std::string block(const HeaderList& fields) {
    std::vector<nghttp2_nv> nva;
    for (const auto& [name, value] : fields)
      nva.push_back({reinterpret_cast<std::uint8_t*>(const_cast<char*>(name.data())),
                     reinterpret_cast<std::uint8_t*>(const_cast<char*>(value.data())), name.size(),
                     value.size(), NGHTTP2_NV_FLAG_NONE});
    std::string out(nghttp2_hd_deflate_bound(deflater_, nva.data(), nva.size()), '\0');
    const auto n = nghttp2_hd_deflate_hd(deflater_, reinterpret_cast<std::uint8_t*>(out.data()),
                                         out.size(), nva.data(), nva.size());
    EXPECT_GT(n, 0);
    out.resize(static_cast<std::size_t>(n));
    return out;
  }
  void change_table_size(std::size_t size) {
    ASSERT_EQ(nghttp2_hd_deflate_change_table_size(deflater_, size), 0);
  }

 private:
  nghttp2_hd_deflater* deflater_ = nullptr;
};

constexpr std::uint8_t kEndStream = 0x1, kEndHeaders = 0x4, kPadded = 0x8;

std::string headers(Encoder& e, std::uint32_t stream, const HeaderList& fields, bool end_stream) {
  return frame(0x1, kEndHeaders | (end_stream ? kEndStream : 0), stream, e.block(fields));
}
// A test's bytes as a segment's, from `from` on.
std::span<const std::byte> as_bytes(const std::string& s, std::size_t from = 0) {
  return std::span(reinterpret_cast<const std::byte*>(s.data()), s.size()).subspan(from);
}

// A path of 101 bytes. (Built in place: GCC 12 at -O2 sees a false overlap
// in "/" + std::string(...), -Wrestrict.)
std::string long_path() {
  std::string path(101, 'p');
  path[0] = '/';
  return path;
}
std::string data(std::uint32_t stream, const std::string& body, bool end_stream) {
  return frame(0x0, end_stream ? kEndStream : 0, stream, body);
}
std::string settings(const std::vector<std::pair<std::uint16_t, std::uint32_t>>& values = {}) {
  std::string payload;
  for (auto [id, value] : values) {
    payload += static_cast<char>(id >> 8);
    payload += static_cast<char>(id);
    payload += be32(value);
  }
  return frame(0x4, 0, 0, payload);
}
std::string settings_ack() {
  return frame(0x4, 0x1, 0, "");
}

HeaderList get(const std::string& path) {
  return {{":method", "GET"}, {":scheme", "https"},          {":authority", "example.test:8443"},
          {":path", path},    {"user-agent", "curl/7.88.1"}, {"accept", "*/*"}};
}
HeaderList reply(const std::string& status) {
  return {{":status", status},
          {"server", "nginx/1.22.1"},
          {"content-type", "text/plain"},
          {"x-request-id", "abcdef0123456789"}};
}

// One socket's view: segments it sends and receives, at a capture length.
class Socket {
 public:
  explicit Socket(std::size_t capture = 2048) : capture_(capture) {}
  std::vector<H2Exchange> send(const std::string& bytes, std::uint64_t ns = 0) {
    return segment(true, bytes, ns);
  }
  std::vector<H2Exchange> receive(const std::string& bytes, std::uint64_t ns = 0) {
    return segment(false, bytes, ns);
  }
  std::vector<H2Exchange> close() {
    std::vector<H2Exchange> done;
    connection_.close(done);
    return done;
  }
  std::vector<H2Exchange> expire(std::uint64_t now, std::uint64_t timeout) {
    std::vector<H2Exchange> done;
    connection_.expire(now, timeout, done);
    return done;
  }
  // Bytes the capture keeps of each segment from now on.
  void capture(std::size_t bytes) { capture_ = bytes; }
  // Every byte a segment of its own, after each direction's first segment
  // (a frame boundary is found only in a segment that holds a frame header).
  bool byte_by_byte = false;
  // Give the frames past the capture as the kernel's walk does (each send
  // here starts at a frame, or at the preface).
  bool walked = false;
  H2Stats stats;

 private:
  std::vector<H2Exchange> segment(bool outbound, const std::string& bytes, std::uint64_t ns) {
    std::vector<H2Exchange> done;
    std::uint32_t& seq = outbound ? out_seq_ : in_seq_;
    bool& started = outbound ? out_started_ : in_started_;
    const std::size_t step = byte_by_byte && started ? 1 : bytes.size();
    started = true;
    for (std::size_t at = 0; at < bytes.size(); at += step) {
      const std::size_t n = std::min(step, bytes.size() - at);
      auto span =
          std::span(reinterpret_cast<const std::byte*>(bytes.data() + at), std::min(n, capture_));
      std::vector<L7Piece> pieces;
      if (walked && n == bytes.size()) pieces = walk(bytes);
      connection_.segment(outbound, seq, static_cast<std::uint32_t>(n), span, pieces, ns, done);
      seq += static_cast<std::uint32_t>(n);
    }
    return done;
  }
  // What l7.bpf.c's h2_walk() copies of `bytes`.
  std::vector<L7Piece> walk(const std::string& bytes) const {
    std::vector<L7Piece> pieces;
    const auto* p = reinterpret_cast<const std::uint8_t*>(bytes.data());
    std::size_t off = bytes.rfind(kH2Preface, 0) == 0 ? kH2Preface.size() : 0;
    while (off + 9 <= bytes.size()) {
      const std::size_t length = (std::size_t{p[off]} << 16) | (p[off + 1] << 8) | p[off + 2];
      std::size_t want = p[off + 3] == 0 ? ((p[off + 4] & 0x8) ? 1 : 0) : length;
      want = std::min({want, std::size_t{239}, bytes.size() - off - 9});
      if (off + 9 + want > capture_)
        pieces.push_back({static_cast<std::uint32_t>(off),
                          std::span(reinterpret_cast<const std::byte*>(p + off), 9 + want)});
      off += 9 + length;
    }
    return pieces;
  }

  std::size_t capture_;
  H2Limits limits_;
  H2Connection connection_{7, limits_, stats};
  std::uint32_t out_seq_ = 1000, in_seq_ = 5000;
  bool out_started_ = false, in_started_ = false;
};

// Each argument in turn: an encoder's blocks must reach the bytes in the
// order it made them (the operands of + are evaluated in any order).
template <typename... Parts>
std::string in_order(Parts&&... parts) {
  std::string out;
  ((out += parts()), ...);
  return out;
}

// A client's view of two concurrent streams answered out of order.
std::vector<H2Exchange> two_streams(Socket& s) {
  Encoder client, server;
  std::vector<H2Exchange> done;
  auto add = [&](std::vector<H2Exchange> more) {
    for (auto& e : more) done.push_back(std::move(e));
  };
  add(s.send(in_order(
                 [] {
                   return std::string(kH2Preface) + settings({{0x3, 100}});
                 },
                 [&] { return headers(client, 1, get("/a"), true); },
                 [&] {
                   return headers(client, 3,
                                  {{":method", "POST"},
                                   {":scheme", "https"},
                                   {":authority", "example.test:8443"},
                                   {":path", "/b?secret=1"},
                                   {"content-type", "application/json"}},
                                  false);
                 }),
             100));
  add(s.send(data(3, "12345", true), 150));
  add(s.receive(settings() + settings_ack(), 200));
  add(s.receive(headers(server, 3, reply("201"), false) + data(3, "created", true), 300));
  // Padded: 1 byte of pad length, 4 bytes of padding.
  add(s.receive(headers(server, 1, reply("200"), false) +
                    frame(0x0, kPadded | kEndStream, 1,
                          std::string("\x04", 1) + "hello" + std::string(4, '\0')),
                400));
  return done;
}

void expect_two_streams(const std::vector<H2Exchange>& done, L7Side side) {
  ASSERT_EQ(done.size(), 2u);
  EXPECT_EQ(done[0].stream_id, 3u);
  EXPECT_EQ(done[0].side, side);
  EXPECT_EQ(done[0].method, "POST");
  EXPECT_EQ(done[0].path, "/b");
  EXPECT_EQ(done[0].authority, "example.test:8443");
  EXPECT_EQ(done[0].status, 201);
  EXPECT_EQ(done[0].request_bytes, 5u);
  EXPECT_EQ(done[0].response_bytes, 7u);
  EXPECT_EQ(done[0].request_ns, 100u);
  EXPECT_EQ(done[0].response_ns, 300u);
  EXPECT_EQ(done[0].outcome, H2Outcome::answered);
  EXPECT_FALSE(done[0].partial_headers);
  EXPECT_EQ(done[1].stream_id, 1u);
  EXPECT_EQ(done[1].method, "GET");
  EXPECT_EQ(done[1].path, "/a");
  EXPECT_EQ(done[1].status, 200);
  EXPECT_EQ(done[1].request_bytes, 0u);
  EXPECT_EQ(done[1].response_bytes, 5u);
  EXPECT_EQ(done[1].response_ns, 400u);
  EXPECT_FALSE(done[1].partial_headers);
}

TEST(H2Connection, ConcurrentStreamsPairByStreamIdWithBodiesWithoutPadding) {
  Socket s;
  expect_two_streams(two_streams(s), L7Side::client);
  EXPECT_EQ(s.stats.table_lost, 0u);
  EXPECT_EQ(s.stats.lost_sync, 0u);
}

TEST(H2Connection, OneByteSegmentsGiveTheSameExchanges) {
  Socket s;
  s.byte_by_byte = true;
  expect_two_streams(two_streams(s), L7Side::client);
  EXPECT_EQ(s.stats.table_lost, 0u);
}

// The server's socket receives what the client's sends.
TEST(H2Connection, TheServersSocketSeesTheSameExchangesAsServer) {
  Encoder client, server;
  Socket s;
  s.send(settings(), 10);  // nginx: SETTINGS before it reads the preface
  s.receive(std::string(kH2Preface) + settings() + headers(client, 1, get("/x"), true), 20);
  auto done = s.send(headers(server, 1, reply("204"), true), 30);
  ASSERT_EQ(done.size(), 1u);
  EXPECT_EQ(done[0].side, L7Side::server);
  EXPECT_EQ(done[0].path, "/x");
  EXPECT_EQ(done[0].status, 204);
  EXPECT_EQ(done[0].response_ns, 30u);
  EXPECT_FALSE(done[0].partial_headers);
}

// Later requests refer to the dynamic table the first ones filled.
TEST(H2Connection, RepeatedHeadersDecodeFromTheDynamicTable) {
  Encoder client, server;
  Socket s;
  s.send(std::string(kH2Preface) + settings());
  s.receive(settings());
  for (std::uint32_t stream = 1; stream < 40; stream += 2) {
    const std::string path = "/item/" + std::to_string(stream);
    s.send(headers(client, stream, get(path), true));
    auto done = s.receive(headers(server, stream, reply("200"), true));
    ASSERT_EQ(done.size(), 1u);
    EXPECT_EQ(done[0].path, path);
    EXPECT_EQ(done[0].authority, "example.test:8443");
    EXPECT_EQ(done[0].status, 200);
    EXPECT_FALSE(done[0].partial_headers);
  }
  EXPECT_EQ(s.stats.table_lost, 0u);
}

// A connection open before the capture: no table. What the static table and
// literals give is exact; what referred to the table is absent, and said so.
TEST(H2Connection, JoinedMidWayReportsStaticAndLiteralFieldsAsPartial) {
  Encoder client, server;
  // The encoders' tables fill before the socket is watched.
  client.block(get("/before"));
  server.block(reply("200"));
  Socket s;
  s.send(headers(client, 41, get("/after"), true), 10);
  auto done = s.receive(headers(server, 41, reply("404"), true), 20);
  ASSERT_EQ(done.size(), 1u);
  EXPECT_EQ(done[0].method, "GET");   // static table
  EXPECT_EQ(done[0].path, "/after");  // a literal with a static name
  EXPECT_EQ(done[0].authority, "");   // in the dynamic table since /before
  EXPECT_EQ(done[0].status, 404);     // a literal
  EXPECT_TRUE(done[0].partial_headers);
  EXPECT_EQ(done[0].side, L7Side::client);
}

// A large DATA frame whose bytes the capture did not keep is skipped whole;
// the frames after it are read.
TEST(H2Connection, UncapturedDataBytesAreCountedAndSkipped) {
  Encoder client, server;
  Socket s(256);
  s.send(std::string(kH2Preface) + settings() + headers(client, 1, get("/big"), true));
  s.receive(settings());
  s.receive(headers(server, 1, reply("200"), false));
  s.receive(data(1, std::string(16000, 'x'), false));
  auto done = s.receive(data(1, std::string(3000, 'y'), true));
  ASSERT_EQ(done.size(), 1u);
  EXPECT_EQ(done[0].response_bytes, 19000u);
  s.send(headers(client, 3, get("/next"), true));
  done = s.receive(headers(server, 3, reply("200"), true));
  ASSERT_EQ(done.size(), 1u);
  EXPECT_EQ(done[0].path, "/next");
  EXPECT_FALSE(done[0].partial_headers);
  EXPECT_EQ(s.stats.table_lost, 0u);
  EXPECT_EQ(s.stats.lost_sync, 0u);
}

// Frames past the capture in a segment: the direction loses its place, and
// what it carried for open streams is not guessed. A response that had
// begun is answered without a size; one that had not is lost, not closed.
TEST(H2Connection, FramesPastTheCaptureLeaveSizesAbsentAndUnseenResponsesLost) {
  Encoder client, server;
  Socket s(256);
  s.send(in_order([] { return std::string(kH2Preface) + settings(); },
                  [&] { return headers(client, 1, get("/big"), true); },
                  [&] { return headers(client, 3, get("/later"), true); }));
  s.receive(settings());
  s.receive(in_order([&] { return headers(server, 1, reply("200"), false); },
                     [] { return data(1, std::string(1000, 'x'), false); },
                     [] { return data(1, std::string(1000, 'x'), true); },
                     [&] { return headers(server, 3, reply("200"), true); }));
  EXPECT_EQ(s.stats.lost_sync, 1u);
  auto done = s.close();
  ASSERT_EQ(done.size(), 2u);
  EXPECT_EQ(done[0].outcome, H2Outcome::answered);
  EXPECT_EQ(done[0].status, 200);
  EXPECT_FALSE(done[0].response_bytes.has_value());
  EXPECT_EQ(done[0].request_bytes, 0u);
  EXPECT_EQ(done[1].outcome, H2Outcome::lost);
  EXPECT_EQ(done[1].path, "/later");
  EXPECT_EQ(done[1].status, 0);
  EXPECT_EQ(s.stats.lost_streams, 1u);
}

// The same frames with the kernel's walk: every header past the capture is
// a piece, so nothing is lost and the sizes are exact.
TEST(H2Connection, FramesFollowedByTheKernelKeepSizesAndTablesExact) {
  Encoder client, server;
  Socket s(64);
  s.walked = true;
  s.send(in_order(
      [] {
        return std::string(kH2Preface) + settings({{0x3, 100}});
      },
      [&] { return headers(client, 1, get("/big"), true); },
      [&] { return headers(client, 3, get(long_path()), true); }));
  s.receive(settings());
  auto done = s.receive(in_order([&] { return headers(server, 1, reply("200"), false); },
                                 [] { return data(1, std::string(16384, 'x'), false); },
                                 [&] { return headers(server, 3, reply("404"), false); },
                                 [] {
                                   return frame(0x0, kPadded | kEndStream, 3,
                                                std::string("\x05", 1) + std::string(700, 'y') +
                                                    std::string(5, '\0'));
                                 },
                                 [] { return data(1, std::string(5000, 'x'), true); }));
  ASSERT_EQ(done.size(), 2u);
  EXPECT_EQ(done[0].stream_id, 3u);
  EXPECT_EQ(done[0].path, long_path());
  EXPECT_EQ(done[0].status, 404);
  EXPECT_EQ(done[0].response_bytes, 700u);
  EXPECT_FALSE(done[0].partial_headers);
  EXPECT_EQ(done[1].stream_id, 1u);
  EXPECT_EQ(done[1].response_bytes, 21384u);
  EXPECT_FALSE(done[1].partial_headers);
  EXPECT_EQ(s.stats.lost_sync, 0u);
  EXPECT_EQ(s.stats.table_lost, 0u);
}

// A header block past the capture: that direction's table is unknown from
// then on, the other direction's is not.
TEST(H2Connection, AHeaderBlockPastTheCaptureLosesThatDirectionsTable) {
  Encoder client, server;
  Socket s(64);
  s.send(std::string(kH2Preface) + settings());
  s.receive(settings());
  s.send(headers(client, 1, get(long_path()), true));
  auto done = s.receive(headers(server, 1, reply("200"), true));
  ASSERT_EQ(done.size(), 1u);
  EXPECT_EQ(done[0].method, "GET");
  EXPECT_TRUE(done[0].partial_headers);
  EXPECT_EQ(s.stats.table_lost, 1u);
  s.send(headers(client, 3, get("/q"), true));
  done = s.receive(headers(server, 3, reply("500"), true));
  ASSERT_EQ(done.size(), 1u);
  EXPECT_EQ(done[0].path, "/q");
  EXPECT_EQ(done[0].status, 500);
  EXPECT_TRUE(done[0].partial_headers);  // the request's :authority was indexed
}

TEST(H2Connection, RstStreamEndsAStreamAsResetWithItsCode) {
  Encoder client, server;
  Socket s;
  s.send(std::string(kH2Preface) + settings() + headers(client, 1, get("/slow"), true), 10);
  auto done = s.send(frame(0x3, 0, 1, be32(0x8)), 20);
  ASSERT_EQ(done.size(), 1u);
  EXPECT_EQ(done[0].outcome, H2Outcome::reset);
  EXPECT_EQ(done[0].reset_code, "CANCEL");
  EXPECT_EQ(done[0].status, 0);
  EXPECT_EQ(done[0].path, "/slow");
  // Frames for the reset stream that were already on their way pair with nothing.
  EXPECT_TRUE(s.receive(headers(server, 1, reply("200"), true)).empty());
  EXPECT_EQ(s.stats.orphan_responses, 1u);
}

TEST(H2Connection, GoawayClosesTheStreamsAboveItsLastStreamId) {
  Encoder client, server;
  Socket s;
  s.send(in_order([] { return std::string(kH2Preface) + settings(); },
                  [&] { return headers(client, 1, get("/one"), true); },
                  [&] { return headers(client, 3, get("/three"), true); }));
  s.receive(settings());
  auto done = s.receive(frame(0x7, 0, 0, be32(1) + be32(0)));
  ASSERT_EQ(done.size(), 1u);
  EXPECT_EQ(done[0].stream_id, 3u);
  EXPECT_EQ(done[0].outcome, H2Outcome::closed);
  done = s.receive(headers(server, 1, reply("200"), true));
  ASSERT_EQ(done.size(), 1u);
  EXPECT_EQ(done[0].stream_id, 1u);
  EXPECT_EQ(done[0].outcome, H2Outcome::answered);
}

TEST(H2Connection, GrpcStatusComesFromTheTrailers) {
  Encoder client, server;
  Socket s;
  s.send(std::string(kH2Preface) + settings() +
         headers(client, 1,
                 {{":method", "POST"},
                  {":scheme", "http"},
                  {":path", "/echo.Echo/Say"},
                  {":authority", "10.0.0.2:50051"},
                  {"content-type", "application/grpc"},
                  {"te", "trailers"}},
                 false) +
         data(1, std::string("\0\0\0\0\x03hey", 8), true));
  s.receive(settings());
  s.receive(headers(server, 1, {{":status", "200"}, {"content-type", "application/grpc"}}, false) +
            data(1, std::string("\0\0\0\0\x03yeh", 8), false));
  auto done = s.receive(
      headers(server, 1, {{"grpc-status", "5"}, {"grpc-message", "no such thing"}}, true));
  ASSERT_EQ(done.size(), 1u);
  EXPECT_EQ(done[0].content_type, "application/grpc");
  EXPECT_EQ(done[0].path, "/echo.Echo/Say");
  EXPECT_EQ(done[0].status, 200);
  EXPECT_EQ(done[0].grpc_status, 5);
  EXPECT_EQ(done[0].request_bytes, 8u);
  EXPECT_EQ(done[0].response_bytes, 8u);
}

TEST(H2Connection, ContinuationFramesCompleteTheHeaderBlock) {
  Encoder client, server;
  Socket s;
  const std::string block = client.block(get("/split"));
  s.send(std::string(kH2Preface) + settings() + frame(0x1, kEndStream, 1, block.substr(0, 5)) +
         frame(0x9, 0, 1, block.substr(5, 3)) + frame(0x9, kEndHeaders, 1, block.substr(8)));
  s.receive(settings());
  auto done = s.receive(headers(server, 1, reply("200"), true));
  ASSERT_EQ(done.size(), 1u);
  EXPECT_EQ(done[0].path, "/split");
  EXPECT_FALSE(done[0].partial_headers);
}

// A PUSH_PROMISE's header block changes the server's table like any other:
// the entries it adds move the indices a later response refers to.
TEST(H2Connection, PushPromiseBlocksKeepTheTableInStep) {
  Encoder client, server;
  Socket s;
  s.send(in_order([] { return std::string(kH2Preface) + settings(); },
                  [&] { return headers(client, 1, get("/page"), true); },
                  [&] { return headers(client, 3, get("/other"), true); }));
  s.receive(settings());
  auto done = s.receive(headers(server, 1, reply("200"), true));
  const std::string promise = server.block(get("/pushed.css"));
  s.receive(frame(0x5, kEndHeaders, 1, be32(2) + promise));
  const std::string second = server.block(reply("200"));
  ASSERT_LT(second.size(), 10u) << "the second reply refers to the table";
  auto more = s.receive(frame(0x1, kEndHeaders | kEndStream, 3, second));
  ASSERT_EQ(done.size(), 1u);
  ASSERT_EQ(more.size(), 1u);
  EXPECT_EQ(more[0].path, "/other");
  EXPECT_EQ(more[0].status, 200);
  EXPECT_FALSE(more[0].partial_headers);
  EXPECT_EQ(s.stats.table_lost, 0u);
}

// A larger HEADER_TABLE_SIZE takes effect once acknowledged, as the
// encoder applies it.
// The ACK comes before the first block of that direction: the size must
// hold for the table the block is then read with (a size update above the
// default 4096 is refused otherwise).
TEST(H2Connection, AHeaderTableSizeSettingAppliesWhenAcknowledged) {
  Encoder client, server(65536);
  Socket s;
  s.send(std::string(kH2Preface) + settings({{0x1, 16384}}));
  s.receive(settings() + settings_ack());
  server.change_table_size(16384);
  s.send(headers(client, 1, get("/t"), true));
  auto done = s.receive(headers(server, 1, reply("200"), true));
  ASSERT_EQ(done.size(), 1u);
  EXPECT_EQ(done[0].status, 200);
  EXPECT_FALSE(done[0].partial_headers);
  EXPECT_EQ(s.stats.table_lost, 0u);
}

TEST(H2Connection, CloseAndTimeoutEndOpenStreams) {
  Encoder client, server;
  Socket s;
  s.send(in_order([] { return std::string(kH2Preface) + settings(); },
                  [&] { return headers(client, 1, get("/a"), true); },
                  [&] { return headers(client, 3, get("/b"), true); },
                  [&] { return headers(client, 5, get("/c"), true); }),
         1000);
  s.receive(settings(), 1000);
  s.receive(headers(server, 5, reply("200"), false), 2000);
  EXPECT_TRUE(s.expire(1500, 1000).empty());
  auto done = s.expire(2500, 1000);  // 1 and 3: no response; 5 has one
  ASSERT_EQ(done.size(), 2u);
  EXPECT_EQ(done[0].outcome, H2Outcome::timed_out);
  EXPECT_EQ(done[1].outcome, H2Outcome::timed_out);
  done = s.close();
  ASSERT_EQ(done.size(), 1u);
  EXPECT_EQ(done[0].stream_id, 5u);
  EXPECT_EQ(done[0].outcome, H2Outcome::answered);  // its body was cut, its status known
  EXPECT_EQ(done[0].status, 200);
}

TEST(H2Connection, RetransmittedSegmentsAreReadOnce) {
  Encoder client, server;
  H2Stats stats;
  H2Limits limits;
  H2Connection c(1, limits, stats);
  std::vector<H2Exchange> done;
  const std::string first = std::string(kH2Preface) + settings();
  const std::string request = headers(client, 1, get("/once"), true);
  c.segment(true, 100, static_cast<std::uint32_t>(first.size()), as_bytes(first), {}, 1, done);
  const auto at = static_cast<std::uint32_t>(100 + first.size());
  c.segment(true, at, static_cast<std::uint32_t>(request.size()), as_bytes(request), {}, 2, done);
  c.segment(true, at, static_cast<std::uint32_t>(request.size()), as_bytes(request), {}, 3, done);
  // The response body, its middle segment sent twice, the second time
  // with new bytes after the old.
  const std::string response = headers(server, 1, reply("200"), false) +
                               data(1, std::string(300, 'r'), false) + data(1, "end", true);
  const std::uint32_t cut = 60, more = 40;
  c.segment(false, 9, cut, as_bytes(response).first(cut), {}, 4, done);
  c.segment(false, 9 + cut, more, as_bytes(response).subspan(cut, more), {}, 5, done);
  const auto rest = static_cast<std::uint32_t>(response.size() - cut);
  c.segment(false, 9 + cut, rest, as_bytes(response).subspan(cut), {}, 6, done);
  c.segment(false, 9 + cut, rest, as_bytes(response).subspan(cut), {}, 7, done);
  ASSERT_EQ(done.size(), 1u);
  EXPECT_EQ(done[0].request_ns, 2u);
  EXPECT_EQ(done[0].status, 200);
  ASSERT_TRUE(done[0].response_bytes);
  EXPECT_EQ(*done[0].response_bytes, 303u);
  EXPECT_EQ(stats.invalid_frames, 0u);
  EXPECT_EQ(stats.lost_sync, 0u);
}

// A retransmission of bytes from before a resync is neither read again nor
// taken for a frame boundary; a request block of a stream already reported
// is not a new request.
TEST(H2Connection, OldBytesAfterALostPlaceAreNotReadAgain) {
  Encoder client, server;
  H2Stats stats;
  H2Limits limits;
  H2Connection c(1, limits, stats);
  std::vector<H2Exchange> done;
  auto size = [](const std::string& s) { return static_cast<std::uint32_t>(s.size()); };
  const std::string first = std::string(kH2Preface) + settings();
  const std::string one = headers(client, 1, get("/one"), true);
  c.segment(true, 0, size(first), as_bytes(first), {}, 1, done);
  c.segment(true, size(first), size(one), as_bytes(one), {}, 2, done);
  c.segment(false, 0, size(settings()), as_bytes(settings()), {}, 3, done);
  const std::string answer = headers(server, 1, reply("200"), true);
  c.segment(false, size(settings()), size(answer), as_bytes(answer), {}, 4, done);
  ASSERT_EQ(done.size(), 1u);
  // A gap in the requests: the place is lost; the next segment resyncs.
  const std::uint32_t after = size(first) + size(one) + 50;
  const std::string three = headers(client, 3, get("/three"), true);
  c.segment(true, after, size(three), as_bytes(three), {}, 5, done);
  // Stream 1's block again, from before the gap.
  c.segment(true, size(first), size(one), as_bytes(one), {}, 6, done);
  EXPECT_EQ(c.open_streams(), 1u);
  done.clear();
  c.close(done);
  ASSERT_EQ(done.size(), 1u);
  EXPECT_EQ(done[0].stream_id, 3u);
  EXPECT_EQ(stats.lost_sync, 1u);
}

// More frames past the capture than a record has pieces for: the place is
// lost there, and found again at the next segment's first piece although
// that segment starts inside a DATA payload.
TEST(H2Connection, TheKernelsNextPieceGivesThePlaceBackAfterTooManyFrames) {
  Encoder client, server;
  H2Stats stats;
  H2Limits limits;
  H2Connection c(1, limits, stats);
  std::vector<H2Exchange> done;
  constexpr std::size_t kCapture = 64, kMaxPieces = 8;
  std::string first = std::string(kH2Preface) + settings();
  std::vector<std::size_t> frames;
  for (std::uint32_t id = 1; id <= 19; id += 2) {
    frames.push_back(first.size());
    first += headers(client, id, get("/many"), true);
  }
  frames.push_back(first.size());
  const std::string body = data(21, std::string(200, 'x'), false);
  first += body.substr(0, 9 + 50);
  std::vector<L7Piece> pieces;
  for (std::size_t i = 0; i < frames.size(); ++i) {
    // A HEADERS frame whole, the DATA frame's header (it has no pad length).
    const std::size_t end = i + 1 < frames.size() ? frames[i + 1] : frames[i] + 9;
    if (pieces.size() < kMaxPieces && end > kCapture)
      pieces.push_back({static_cast<std::uint32_t>(frames[i]),
                        as_bytes(first, frames[i]).first(end - frames[i])});
  }
  const auto first_size = static_cast<std::uint32_t>(first.size());
  c.segment(true, 0, first_size, as_bytes(first).first(kCapture), pieces, 1, done);
  EXPECT_EQ(stats.lost_sync, 1u);

  const std::string after = headers(client, 23, get("/after"), true);
  const std::string second = body.substr(9 + 50) + after;
  const std::vector<L7Piece> next = {{150, as_bytes(second, 150)}};
  c.segment(true, first_size, static_cast<std::uint32_t>(second.size()),
            as_bytes(second).first(kCapture), next, 2, done);
  const std::string answer = settings() + headers(server, 23, reply("200"), true);
  c.segment(false, 0, static_cast<std::uint32_t>(answer.size()), as_bytes(answer), {}, 3, done);
  ASSERT_EQ(done.size(), 1u);
  EXPECT_EQ(done[0].stream_id, 23u);
  EXPECT_EQ(done[0].path, "/after");
  EXPECT_EQ(done[0].status, 200);
  EXPECT_EQ(done[0].outcome, H2Outcome::answered);
  EXPECT_EQ(stats.lost_sync, 1u);
}

// A frame header cut by the segment's end, past the capture: the kernel
// gives its start as a short piece, the next segment's captured bytes hold
// the rest.
TEST(H2Connection, AFrameHeaderSplitBetweenSegmentsIsJoined) {
  Encoder client, server;
  H2Stats stats;
  H2Limits limits;
  H2Connection c(1, limits, stats);
  std::vector<H2Exchange> done;
  const std::string start = std::string(kH2Preface) + settings();
  const std::string one = headers(client, 1, get("/one"), true);
  const std::string three = headers(client, 3, get("/three"), true);
  const std::string first = start + one + three.substr(0, 4);
  const std::string second = three.substr(4);
  constexpr std::size_t kCapture = 36;  // the preface and SETTINGS, 3 bytes more
  const std::vector<L7Piece> pieces = {
      {static_cast<std::uint32_t>(start.size()), as_bytes(first, start.size()).first(one.size())},
      {static_cast<std::uint32_t>(start.size() + one.size()), as_bytes(three).first(4)}};
  c.segment(true, 0, static_cast<std::uint32_t>(first.size()), as_bytes(first).first(kCapture),
            pieces, 1, done);
  c.segment(true, static_cast<std::uint32_t>(first.size()),
            static_cast<std::uint32_t>(second.size()), as_bytes(second), {}, 2, done);
  std::string answers = settings() + headers(server, 1, reply("200"), true);
  answers += headers(server, 3, reply("404"), true);
  c.segment(false, 0, static_cast<std::uint32_t>(answers.size()), as_bytes(answers), {}, 3, done);
  ASSERT_EQ(done.size(), 2u);
  EXPECT_EQ(done[0].path, "/one");
  EXPECT_EQ(done[0].status, 200);
  EXPECT_EQ(done[1].path, "/three");
  EXPECT_EQ(done[1].status, 404);
  EXPECT_FALSE(done[1].partial_headers);
  EXPECT_EQ(stats.lost_sync, 0u);
  EXPECT_EQ(stats.table_lost, 0u);
}

// Upgrade: h2c: the HTTP/1.1 request is stream 1, answered over HTTP/2
// after the server's SETTINGS; the client's preface follows, then its own
// streams from 3.
TEST(H2Connection, AnUpgradedConnectionAnswersItsHttp1RequestOnStreamOne) {
  Encoder client, server;
  H2Stats stats;
  H2Limits limits;
  H2Connection c(1, limits, stats);
  std::vector<H2Exchange> done;
  c.upgraded(true, "GET", "/up", "example", 0, 5);
  std::string answer = settings() + headers(server, 1, reply("200"), false);
  answer += data(1, "hello", true);
  c.segment(false, 0, static_cast<std::uint32_t>(answer.size()), as_bytes(answer), {}, 9, done);
  ASSERT_EQ(done.size(), 1u);
  EXPECT_EQ(done[0].stream_id, 1u);
  EXPECT_EQ(done[0].method, "GET");
  EXPECT_EQ(done[0].path, "/up");
  EXPECT_EQ(done[0].authority, "example");
  EXPECT_EQ(done[0].status, 200);
  EXPECT_EQ(done[0].request_ns, 5u);
  EXPECT_EQ(done[0].response_ns, 9u);
  EXPECT_EQ(done[0].request_bytes, 0u);
  EXPECT_EQ(done[0].response_bytes, 5u);
  const std::string next =
      std::string(kH2Preface) + settings() + headers(client, 3, get("/next"), true);
  c.segment(true, 0, static_cast<std::uint32_t>(next.size()), as_bytes(next), {}, 10, done);
  const std::string second = headers(server, 3, reply("404"), true);
  c.segment(false, static_cast<std::uint32_t>(answer.size()),
            static_cast<std::uint32_t>(second.size()), as_bytes(second), {}, 11, done);
  ASSERT_EQ(done.size(), 2u);
  EXPECT_EQ(done[1].stream_id, 3u);
  EXPECT_EQ(done[1].path, "/next");
  EXPECT_EQ(done[1].status, 404);
  EXPECT_FALSE(done[1].partial_headers);
  EXPECT_EQ(stats.table_lost, 0u);
}

// DATA padded, its pad length byte past the capture: its size is unknown.
TEST(H2Connection, PaddedDataWithThePadLengthUnseenHasNoSize) {
  Encoder client, server;
  Socket s;
  s.send(std::string(kH2Preface) + settings() + headers(client, 1, get("/p"), true));
  s.receive(settings() + headers(server, 1, reply("200"), false));
  const std::string padded =
      frame(0x0, kPadded | kEndStream, 1, std::string("\x04", 1) + "body" + std::string(4, '\0'));
  s.capture(9);  // the frame header only
  auto done = s.receive(padded);
  ASSERT_EQ(done.size(), 1u);
  EXPECT_EQ(done[0].status, 200);
  EXPECT_FALSE(done[0].response_bytes);
}

TEST(H2Detect, PrefaceServerSettingsAndFramesAreHttp2) {
  auto detect = [](const std::string& s, std::size_t length = 0) {
    return detect_h2(as_bytes(s), static_cast<std::uint32_t>(length ? length : s.size()));
  };
  EXPECT_EQ(detect(std::string(kH2Preface) + settings()), L7Detection::yes);
  EXPECT_EQ(detect("PRI * HTTP/2.0\r\n", 200), L7Detection::yes);  // cut by the capture
  EXPECT_EQ(detect("PRI * HT"), L7Detection::maybe);
  EXPECT_EQ(detect(settings({{0x3, 128}, {0x4, 65535}})), L7Detection::yes);
  Encoder e;
  EXPECT_EQ(detect(headers(e, 7, get("/"), true) + data(7, "x", true)), L7Detection::yes);
  EXPECT_EQ(detect("GET / HTTP/1.1\r\nHost: a\r\n\r\n"), L7Detection::no);
  EXPECT_EQ(detect("PRI * HTTP/1.1\r\n"), L7Detection::no);
  EXPECT_EQ(detect(std::string("\x00\x00\x05\x01\x04\x00\x00\x00\x01hello!!", 16)),
            L7Detection::no);  // the frame does not fill the packet
}

}  // namespace
