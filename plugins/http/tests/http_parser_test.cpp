#include "http_parser.hpp"

#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

using namespace netwatcher;
using netwatcher::http::HttpParser;
using netwatcher::http::HttpParserOptions;

namespace {

ParseStatus request_status(const HttpParser& parser, std::string_view text,
                           L7Request* out = nullptr) {
  L7Request request;
  ParseStatus status = parser.parse_request(as_bytes(text), request).status;
  if (out) *out = request;
  return status;
}

TEST(ByteReader, NeverReadsPastTheEnd) {
  const std::string text = "ab\r\ncd";
  ByteReader reader(as_bytes(text));
  EXPECT_EQ(reader.line(10), "ab");
  EXPECT_FALSE(reader.line(10).has_value()) << "no line end before the end";
  EXPECT_EQ(reader.position(), 4u) << "a failed read consumes nothing";
  EXPECT_FALSE(reader.be32().has_value());
  EXPECT_EQ(reader.be16(), 0x6364);
  EXPECT_FALSE(reader.u8().has_value());
  EXPECT_FALSE(reader.skip(1));
  EXPECT_TRUE(reader.empty());
}

TEST(ByteReader, LinesLongerThanTheLimitAreRefused) {
  const std::string text = "0123456789\n";
  ByteReader reader(as_bytes(text));
  EXPECT_FALSE(reader.line(9).has_value());
  EXPECT_EQ(reader.line(10), "0123456789");
}

TEST(HttpParser, ParsesARequestHead) {
  HttpParser parser;
  L7Request request;
  const std::string text =
      "POST /api/items?id=7&token=secret HTTP/1.1\r\nHost: example.test\r\n"
      "Content-Length: 5\r\nUser-Agent: t\r\n\r\nhello";
  ASSERT_EQ(request_status(parser, text, &request), ParseStatus::complete);
  EXPECT_EQ(request.operation, "POST");
  EXPECT_EQ(request.resource, "/api/items") << "query stripped by default";
  EXPECT_EQ(request.authority, "example.test");
  EXPECT_EQ(request.head_size, text.size() - 5);
  EXPECT_EQ(request.body_size, 5u);
  EXPECT_EQ(request.message_size, text.size());

  HttpParser keep_query(HttpParserOptions{16 * 1024, false});
  ASSERT_EQ(request_status(keep_query, text, &request), ParseStatus::complete);
  EXPECT_EQ(request.resource, "/api/items?id=7&token=secret");
}

TEST(HttpParser, ARequestLineSplitOverSegmentsIsIncompleteUntilTheHeadEnds) {
  HttpParser parser;
  const std::string text = "GET /index.html HTTP/1.1\r\nHost: a\r\n\r\n";
  for (std::size_t cut = 0; cut < text.size(); ++cut)
    EXPECT_EQ(request_status(parser, text.substr(0, cut)), ParseStatus::incomplete)
        << "cut after " << cut << " bytes";
  EXPECT_EQ(request_status(parser, text), ParseStatus::complete);
  // Bare LF line ends, as some clients send them.
  EXPECT_EQ(request_status(parser, "GET / HTTP/1.0\nHost: a\n\n"), ParseStatus::complete);
}

TEST(HttpParser, PipelinedRequestsFollowEachOther) {
  HttpParser parser;
  const std::string text =
      "GET /a HTTP/1.1\r\nHost: h\r\n\r\n"
      "POST /b HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
      "4\r\nwiki\r\n5;ext=1\r\npedia\r\n0\r\nTrailer: x\r\n\r\n"
      "DELETE /c HTTP/1.1\r\n\r\n";
  std::vector<std::string> seen;
  std::size_t offset = 0;
  while (offset < text.size()) {
    L7Request request;
    ASSERT_EQ(parser.parse_request(as_bytes(std::string_view(text).substr(offset)), request).status,
              ParseStatus::complete);
    ASSERT_TRUE(request.message_size.has_value());
    seen.push_back(request.operation + " " + request.resource);
    if (request.operation == "POST") {
      EXPECT_EQ(request.body_size, 9u) << "chunks 4 + 5";
    }
    offset += *request.message_size;
  }
  EXPECT_EQ(seen, (std::vector<std::string>{"GET /a", "POST /b", "DELETE /c"}));
  EXPECT_EQ(offset, text.size());
}

TEST(HttpParser, ChunkedBodiesBeyondTheBytesHaveNoKnownSize) {
  HttpParser parser;
  L7Request request;
  ASSERT_EQ(
      request_status(parser, "PUT /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n100\r\nabc",
                     &request),
      ParseStatus::complete);
  EXPECT_FALSE(request.body_size.has_value());
  EXPECT_FALSE(request.message_size.has_value());
}

TEST(HttpParser, GarbageAndBinaryAreInvalidNotCrashes) {
  HttpParser parser;
  for (std::string_view text :
       {std::string_view("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 11),  // TLS ClientHello
        std::string_view("SSH-2.0-OpenSSH_9.2\r\n"), std::string_view("GET\r\n\r\n"),
        std::string_view("GET /a HTTP/2.0\r\n\r\n"), std::string_view("PRI * HTTP/2.0\r\n\r\n"),
        std::string_view("G ET / HTTP/1.1\r\n\r\n"),
        std::string_view("GET / HTTP/1.1\r\nNoColon\r\n\r\n"),
        std::string_view("GET / HTTP/1.1\r\n folded: x\r\n\r\n"),
        std::string_view("GET / HTTP/1.1\r\nContent-Length: 1, 2\r\n\r\n"),
        std::string_view("GET / HTTP/1.1\r\nContent-Length: -1\r\n\r\n"),
        std::string_view("GET / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"),
        std::string_view("POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n"),
        std::string_view("GET /\x01 HTTP/1.1\r\n\r\n", 19)}) {
    EXPECT_EQ(request_status(parser, text), ParseStatus::invalid) << text;
  }
  // Binary bytes fail at once, without waiting for a line end.
  EXPECT_EQ(request_status(parser, std::string_view("\x16\x03\x01", 3)), ParseStatus::invalid);
  L7Response response;
  EXPECT_EQ(
      parser.parse_response(as_bytes(std::string_view("\x00\x01", 2)), nullptr, response).status,
      ParseStatus::invalid);
  EXPECT_FALSE(parser.detect_request(as_bytes("\x16\x03\x01\x02\x00")));
  EXPECT_FALSE(parser.detect_request(as_bytes("GETX / HTTP/1.1")));
  EXPECT_TRUE(parser.detect_request(as_bytes("OPTIONS * HTTP/1.1\r\n")));
  EXPECT_TRUE(parser.detect_request(as_bytes("\r\nGET / HTTP/1.1")));
}

// The tracker asks on a socket's first payload; a wrong `yes` takes the
// socket from every other protocol for good, a wrong `no` loses it.
TEST(HttpParser, OnlyARequestLineClaimsASocket) {
  auto detect = [](std::string_view text, bool cut_short = false) {
    return netwatcher::http::detect_request_start(as_bytes(text), cut_short);
  };
  EXPECT_EQ(detect("GET /index.html HTTP/1.1\r\nHost: a\r\n\r\n"), L7Detection::yes);
  EXPECT_EQ(detect("DELETE /x HTTP/1.0\n"), L7Detection::yes);
  EXPECT_EQ(detect("\r\n\r\nPOST / HTTP/1.1\r\n"), L7Detection::yes);
  // Redis inline commands have the shape of a request line without a version.
  EXPECT_EQ(detect("GET key\r\n"), L7Detection::no);
  EXPECT_EQ(detect("GET a b\r\n"), L7Detection::no);
  EXPECT_EQ(detect("GET / HTTP/2.0\r\n"), L7Detection::no);
  EXPECT_EQ(detect("GETX / HTTP/1.1\r\n"), L7Detection::no);
  EXPECT_EQ(detect("*2\r\n$3\r\nGET\r\n$1\r\nk\r\n"), L7Detection::no);
  EXPECT_EQ(detect("\x16\x03\x01\x02\x00"), L7Detection::no);
  // Still arriving: the method, or the rest of the line, is in a later segment.
  EXPECT_EQ(detect(""), L7Detection::maybe);
  EXPECT_EQ(detect("OPTI"), L7Detection::maybe);
  EXPECT_EQ(detect("GET /a-long-path"), L7Detection::maybe);
  // Cut off by the capture after "method ": a target longer than the capture.
  EXPECT_EQ(detect("GET /a-long-path", true), L7Detection::yes);
  EXPECT_EQ(detect("OPTI", true), L7Detection::no);
}

TEST(HttpParser, HeadsLongerThanTheLimitAreRefused) {
  HttpParser parser(HttpParserOptions{64, true});
  EXPECT_EQ(request_status(parser, "GET / HTTP/1.1\r\nX: " + std::string(100, 'a') + "\r\n\r\n"),
            ParseStatus::invalid);
  // Still below the limit and not finished: wait for more.
  EXPECT_EQ(request_status(parser, "GET / HTTP/1.1\r\nX: aaaa"), ParseStatus::incomplete);
}

TEST(HttpParser, ResponsesWithAndWithoutBodies) {
  HttpParser parser;
  L7Response response;
  const std::string ok = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
  ASSERT_EQ(parser.parse_response(as_bytes(ok), nullptr, response).status, ParseStatus::complete);
  EXPECT_EQ(response.status, 200);
  EXPECT_EQ(response.detail, "OK");
  EXPECT_EQ(response.body_size, 2u);
  EXPECT_EQ(response.message_size, ok.size());

  L7Request head;
  head.operation = "HEAD";
  ASSERT_EQ(parser.parse_response(as_bytes(ok), &head, response).status, ParseStatus::complete);
  EXPECT_EQ(response.body_size, 0u) << "a response to HEAD has no body";

  const std::string not_modified = "HTTP/1.1 304 Not Modified\r\nContent-Length: 99\r\n\r\n";
  ASSERT_EQ(parser.parse_response(as_bytes(not_modified), nullptr, response).status,
            ParseStatus::complete);
  EXPECT_EQ(response.body_size, 0u);

  const std::string until_close = "HTTP/1.0 404\r\nServer: x\r\n\r\nnot found";
  ASSERT_EQ(parser.parse_response(as_bytes(until_close), nullptr, response).status,
            ParseStatus::complete);
  EXPECT_EQ(response.status, 404);
  EXPECT_EQ(response.detail, "");
  EXPECT_FALSE(response.body_size.has_value()) << "delimited by the connection's close";

  for (std::string_view bad :
       {"HTTP/1.1 20 OK\r\n\r\n", "HTTP/1.1 2000 OK\r\n\r\n", "HTTP/1.1 099 x\r\n\r\n",
        "HTTP/2 200\r\n\r\n", "ICY 200 OK\r\n\r\n"})
    EXPECT_EQ(parser.parse_response(as_bytes(bad), nullptr, response).status, ParseStatus::invalid)
        << bad;
  EXPECT_EQ(
      parser.parse_response(as_bytes("HTTP/1.1 200 OK\r\nContent-"), nullptr, response).status,
      ParseStatus::incomplete);
}

TEST(HttpParser, RandomBytesNeverCrashOrOverrun) {
  // The fuzz target explores far more; this keeps a cheap check in every run.
  HttpParser parser;
  std::mt19937 random(7);
  std::string bytes;
  for (int round = 0; round < 20000; ++round) {
    bytes.resize(random() % 200);
    for (auto& c : bytes)
      c = static_cast<char>(random() % 4 ? "GET /HTP1.\r\n: 0x"[random() % 17] : random());
    L7Request request;
    L7Response response;
    auto r = parser.parse_request(as_bytes(bytes), request);
    if (r.status == ParseStatus::complete) {
      EXPECT_LE(request.head_size, bytes.size());
      if (request.message_size && request.body_size && *request.body_size < 1000) {
        EXPECT_GE(*request.message_size, request.head_size + *request.body_size);
      }
    }
    parser.parse_response(as_bytes(bytes), &request, response);
    parser.detect_request(as_bytes(bytes));
  }
}

}  // namespace
