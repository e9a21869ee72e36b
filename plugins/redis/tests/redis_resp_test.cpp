#include "redis_resp.hpp"

#include <gtest/gtest.h>

#include <string>
#include <string_view>
#include <vector>

using namespace netwatcher::redis;

namespace {

std::span<const std::byte> bytes_of(std::string_view text) {
  return {reinterpret_cast<const std::byte*>(text.data()), text.size()};
}

struct Parsed {
  std::vector<RespMessage> messages;
  RespError error = RespError::none;
};

// Feeds `text` in pieces of `piece` bytes (0: all at once).
Parsed parse(std::string_view text, bool requests = false, std::size_t piece = 0,
             const Limits& limits = {}) {
  RespStream stream(requests, limits);
  Parsed p;
  if (piece == 0) piece = text.size() ? text.size() : 1;
  for (std::size_t at = 0; at < text.size() && p.error == RespError::none; at += piece)
    p.error = stream.feed(bytes_of(text.substr(at, piece)), at, p.messages);
  return p;
}

TEST(RedisResp, CommandAsArrayOfBulkStrings) {
  const std::string set = "*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$5\r\nvalue\r\n";
  auto p = parse(set, true);
  ASSERT_EQ(p.error, RespError::none);
  ASSERT_EQ(p.messages.size(), 1u);
  const RespMessage& m = p.messages[0];
  EXPECT_EQ(m.type, RespType::array);
  EXPECT_EQ(m.elements, 3u);
  EXPECT_EQ(m.bytes, set.size());
  EXPECT_EQ(m.strings, (std::vector<std::string>{"SET", "key", "value"}));
  EXPECT_FALSE(m.cut);
}

TEST(RedisResp, EveryScalarTypeOfResp2AndResp3) {
  struct Case {
    std::string wire;
    RespType type;
    std::string value;
  };
  const std::vector<Case> cases = {
      {"+OK\r\n", RespType::simple, "OK"},
      {"-WRONGTYPE Operation against a key\r\n", RespType::error,
       "WRONGTYPE Operation against a key"},
      {":-42\r\n", RespType::integer, "-42"},
      {"$5\r\nhello\r\n", RespType::bulk, "hello"},
      {"$0\r\n\r\n", RespType::bulk, ""},
      {"$-1\r\n", RespType::null, ""},
      {"*-1\r\n", RespType::null, ""},
      {"_\r\n", RespType::null, ""},
      {"#t\r\n", RespType::boolean, "t"},
      {",3.14\r\n", RespType::double_, "3.14"},
      {"(3492890328409238509324850943850943825024385\r\n", RespType::big_number,
       "3492890328409238509324850943850943825024385"},
      {"!21\r\nSYNTAX invalid syntax\r\n", RespType::bulk_error, "SYNTAX invalid syntax"},
      {"=15\r\ntxt:Some string\r\n", RespType::verbatim, "txt:Some string"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.wire);
    auto p = parse(c.wire);
    ASSERT_EQ(p.error, RespError::none);
    ASSERT_EQ(p.messages.size(), 1u);
    EXPECT_EQ(p.messages[0].type, c.type);
    EXPECT_EQ(p.messages[0].bytes, c.wire.size());
    ASSERT_EQ(p.messages[0].strings.size(), 1u);
    EXPECT_EQ(p.messages[0].strings[0], c.value.substr(0, Limits{}.kept_bytes));
  }
}

TEST(RedisResp, AggregatesOfResp3WithNestingAndAttributes) {
  struct Case {
    std::string wire;
    RespType type;
    std::uint64_t elements;
    std::vector<std::string> strings;
  };
  const std::vector<Case> cases = {
      {"*0\r\n", RespType::array, 0, {}},
      {"*2\r\n*1\r\n:1\r\n$1\r\nx\r\n", RespType::array, 2, {}},  // element 0 is no scalar
      {"%2\r\n+first\r\n:1\r\n+second\r\n:2\r\n", RespType::map, 2, {"first", "1", "second"}},
      {"~2\r\n+a\r\n+b\r\n", RespType::set, 2, {"a", "b"}},
      {">3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$5\r\nhello\r\n",
       RespType::push,
       3,
       {"message", "ch", "hello"}},
      // An attribute before the reply is part of it, and no value of its own.
      {"|1\r\n+key-popularity\r\n%1\r\n$1\r\na\r\n,0.19\r\n*2\r\n:2039\r\n:9543\r\n",
       RespType::array,
       2,
       {"2039", "9543"}},
      {"|1\r\n+ttl\r\n:3600\r\n+OK\r\n", RespType::simple, 0, {"OK"}},
      // ... and inside an aggregate, before one of its elements.
      {"*2\r\n|1\r\n+a\r\n+b\r\n:1\r\n:2\r\n", RespType::array, 2, {"1", "2"}},
      {"%0\r\n", RespType::map, 0, {}},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.wire);
    auto p = parse(c.wire);
    ASSERT_EQ(p.error, RespError::none);
    ASSERT_EQ(p.messages.size(), 1u);
    EXPECT_EQ(p.messages[0].type, c.type);
    EXPECT_EQ(p.messages[0].elements, c.elements);
    EXPECT_EQ(p.messages[0].bytes, c.wire.size());
    EXPECT_EQ(p.messages[0].strings, c.strings);
  }
}

TEST(RedisResp, InlineCommandsOnlyInTheRequestDirection) {
  auto p = parse("PING\r\nset  k\tv\n\r\n*1\r\n$4\r\nPING\r\n", true);
  ASSERT_EQ(p.error, RespError::none);
  ASSERT_EQ(p.messages.size(), 3u);  // the empty line is no command
  EXPECT_EQ(p.messages[0].type, RespType::inline_text);
  EXPECT_EQ(p.messages[0].strings, std::vector<std::string>{"PING"});
  EXPECT_EQ(p.messages[0].bytes, 6u);
  EXPECT_EQ(p.messages[1].strings, (std::vector<std::string>{"set", "k", "v"}));
  EXPECT_EQ(p.messages[1].elements, 3u);
  EXPECT_EQ(p.messages[1].bytes, 9u);
  EXPECT_EQ(p.messages[2].type, RespType::array);
  // A reply stream has no inline values.
  EXPECT_EQ(parse("PING\r\n").error, RespError::bad_type);
}

// Every split of a pipeline into two pieces, and byte by byte, gives the
// same messages as the whole.
TEST(RedisResp, IncrementalAtEverySegmentBoundary) {
  const std::string replies =
      "+OK\r\n$5\r\nhello\r\n-ERR unknown command 'FOO'\r\n*2\r\n$1\r\na\r\n:7\r\n"
      "|1\r\n+a\r\n+b\r\n%1\r\n+k\r\n~1\r\n,1.5\r\n_\r\n>2\r\n+pong\r\n$0\r\n\r\n";
  auto whole = parse(replies);
  ASSERT_EQ(whole.error, RespError::none);
  ASSERT_EQ(whole.messages.size(), 7u);
  for (std::size_t cut = 1; cut < replies.size(); ++cut) {
    SCOPED_TRACE(cut);
    RespStream stream(false);
    std::vector<RespMessage> out;
    ASSERT_EQ(stream.feed(bytes_of(std::string_view(replies).substr(0, cut)), 1, out),
              RespError::none);
    ASSERT_EQ(stream.feed(bytes_of(std::string_view(replies).substr(cut)), 2, out),
              RespError::none);
    ASSERT_EQ(out.size(), whole.messages.size());
    for (std::size_t i = 0; i < out.size(); ++i) {
      EXPECT_EQ(out[i].type, whole.messages[i].type);
      EXPECT_EQ(out[i].bytes, whole.messages[i].bytes);
      EXPECT_EQ(out[i].strings, whole.messages[i].strings);
    }
    EXPECT_TRUE(stream.at_boundary());
  }
  auto bytewise = parse(replies, false, 1);
  ASSERT_EQ(bytewise.messages.size(), whole.messages.size());
  // A message's time is the time of the piece its first byte came in.
  EXPECT_EQ(bytewise.messages[1].start_ns, 5u);
}

TEST(RedisResp, ManyPipelinedCommandsInOneSegment) {
  std::string pipeline;
  for (int i = 0; i < 100; ++i)
    pipeline += "*3\r\n$3\r\nSET\r\n$16\r\nkey:__rand_int__\r\n$3\r\nxxx\r\n";
  auto p = parse(pipeline, true);
  ASSERT_EQ(p.error, RespError::none);
  ASSERT_EQ(p.messages.size(), 100u);
  for (const auto& m : p.messages) {
    EXPECT_EQ(m.bytes, 45u);
    EXPECT_EQ(m.strings[1], "key:__rand_int__");
  }
}

// A bulk longer than the capture: the bytes not captured are skipped by its
// length, over as many segments as it takes, and the next value parses.
TEST(RedisResp, UncapturedBulkSkippedByLengthAcrossSegments) {
  RespStream stream(false);
  std::vector<RespMessage> out;
  ASSERT_EQ(stream.feed(bytes_of("$10000\r\nabc"), 1, out), RespError::none);
  ASSERT_EQ(stream.skip(4000, out), RespError::none);
  ASSERT_EQ(stream.skip(5997, out), RespError::none);
  EXPECT_TRUE(out.empty());
  ASSERT_EQ(stream.skip(2, out), RespError::none);  // the \r\n
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].type, RespType::bulk);
  EXPECT_EQ(out[0].bytes, 8u + 10000 + 2);
  EXPECT_EQ(out[0].strings[0], "abc");
  EXPECT_TRUE(out[0].cut);
  EXPECT_EQ(out[0].start_ns, 1u);
  ASSERT_EQ(stream.feed(bytes_of("+OK\r\n"), 2, out), RespError::none);
  ASSERT_EQ(out.size(), 2u);
  EXPECT_FALSE(out[1].cut);
  // Bytes not captured where a header must be read cannot be skipped.
  EXPECT_EQ(stream.skip(1, out), RespError::lost_sync);
  RespStream cut_header(false);
  ASSERT_EQ(cut_header.feed(bytes_of("*2\r\n$3\r\nab"), 1, out), RespError::none);
  EXPECT_EQ(cut_header.skip(10, out), RespError::lost_sync);
}

TEST(RedisResp, LyingLengthsAreBoundedAndNeverBuffered) {
  Limits limits;
  limits.max_bulk = 1024;
  limits.max_elements = 100;
  EXPECT_EQ(parse("$1025\r\n", false, 0, limits).error, RespError::too_long);
  EXPECT_EQ(parse("*101\r\n", false, 0, limits).error, RespError::too_long);
  EXPECT_EQ(parse("%51\r\n", false, 0, limits).error, RespError::none);  // 102 elements: fine
  EXPECT_EQ(parse("$99999999999999999999999\r\n").error, RespError::bad_length);
  EXPECT_EQ(parse("$0000000000000000000000000005\r\nhello\r\n").error, RespError::bad_length);
  EXPECT_EQ(parse("$-2\r\n").error, RespError::bad_length);
  EXPECT_EQ(parse("!-1\r\n").error, RespError::bad_length);
  EXPECT_EQ(parse("$x\r\n").error, RespError::bad_length);
  EXPECT_EQ(parse("$?\r\n").error, RespError::bad_length);  // streamed strings: not supported
  // The largest bulk allowed by default costs what it swallows, no more: a
  // stream that claims 512 MB and sends 5 bytes holds 5 bytes' state.
  RespStream stream(false);
  std::vector<RespMessage> out;
  ASSERT_EQ(stream.feed(bytes_of("$536870912\r\nhello"), 0, out), RespError::none);
  EXPECT_TRUE(out.empty());
  EXPECT_FALSE(stream.at_boundary());
  // A line that never ends is refused at max_line.
  Limits short_lines;
  short_lines.max_line = 100;
  EXPECT_EQ(parse("+" + std::string(101, 'a'), false, 7, short_lines).error,
            RespError::line_too_long);
  EXPECT_EQ(parse("+" + std::string(99, 'a') + "\r\n", false, 7, short_lines).error,
            RespError::none);
}

TEST(RedisResp, NestingDepthIsBounded) {
  Limits limits;
  limits.max_depth = 4;
  EXPECT_EQ(parse("*1\r\n*1\r\n*1\r\n*1\r\n:1\r\n", false, 0, limits).error, RespError::none);
  EXPECT_EQ(parse("*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n:1\r\n", false, 0, limits).error,
            RespError::too_deep);
  std::string deep;
  for (int i = 0; i < 1000; ++i) deep += "*1\r\n";
  EXPECT_EQ(parse(deep).error, RespError::too_deep);
}

TEST(RedisResp, GarbageIsRefused) {
  EXPECT_EQ(parse("GET / HTTP/1.1\r\n").error, RespError::bad_type);
  EXPECT_EQ(parse("$3\r\nabcd\r\n").error, RespError::bad_crlf);
  EXPECT_EQ(parse("+OK\n").error, RespError::bad_crlf);
  EXPECT_EQ(parse(std::string("\x16\x03\x01\x02\x00", 5)).error, RespError::bad_type);
}

TEST(RedisResp, KeptStringsAreBounded) {
  Limits limits;
  limits.kept_bytes = 4;
  limits.kept_strings = 2;
  auto p = parse("*4\r\n$6\r\nCOMMAND\r\n$3\r\nabc\r\n$1\r\nx\r\n$1\r\ny\r\n", true, 3, limits);
  ASSERT_EQ(p.error, RespError::bad_crlf);  // $6 is not COMMAND's 7 bytes
  p = parse("*4\r\n$7\r\nCOMMAND\r\n$3\r\nabc\r\n$1\r\nx\r\n$1\r\ny\r\n", true, 3, limits);
  ASSERT_EQ(p.error, RespError::none);
  ASSERT_EQ(p.messages.size(), 1u);
  EXPECT_EQ(p.messages[0].strings, (std::vector<std::string>{"COMM", "abc"}));
  EXPECT_EQ(p.messages[0].elements, 4u);
}

TEST(RedisResp, CommandNamesKeysAndContainers) {
  EXPECT_EQ(command_name({"get", "k"}), "GET");
  EXPECT_EQ(command_name({"config", "get", "maxmemory"}), "CONFIG GET");
  EXPECT_EQ(command_name({"CLIENT", "setname", "x"}), "CLIENT SETNAME");
  EXPECT_EQ(command_name({"CONFIG"}), "CONFIG");
  EXPECT_EQ(command_name({"1abc"}), "");
  EXPECT_EQ(command_name({}), "");
  EXPECT_TRUE(has_key("GET"));
  EXPECT_TRUE(has_key("HSET"));
  EXPECT_TRUE(has_key("OBJECT ENCODING"));
  EXPECT_TRUE(has_key("MEMORY USAGE"));
  EXPECT_FALSE(has_key("CONFIG GET"));
  EXPECT_FALSE(has_key("PING"));
  EXPECT_FALSE(has_key("SELECT"));
  EXPECT_FALSE(has_key("PUBLISH"));
  EXPECT_FALSE(has_key("CONFIG"));
  EXPECT_EQ(name_words("CONFIG GET"), 2u);
  EXPECT_EQ(name_words("GET"), 1u);
}

TEST(RedisResp, DetectsCommandsAndReplies) {
  auto command = [](std::string_view t, std::size_t wire = 0) {
    return looks_like_command(bytes_of(t), wire ? wire : t.size());
  };
  auto reply = [](std::string_view t, std::size_t wire = 0) {
    return looks_like_reply(bytes_of(t), wire ? wire : t.size());
  };
  EXPECT_EQ(command("*2\r\n$3\r\nGET\r\n$1\r\nk\r\n"), 1);
  EXPECT_EQ(command("*1\r\n$4\r\nPING\r\n"), 1);
  EXPECT_EQ(command("*1\r\n$4\r\nPI"), -1);  // all this packet had
  EXPECT_EQ(command("*1\r\n$4\r\nPI", 100), 0);
  EXPECT_EQ(command("*"), -1);
  EXPECT_EQ(command("*1\r\n$4\r\n1234\r\n"), 0);
  EXPECT_EQ(command("*1\r\n+PING\r\n"), 0);
  EXPECT_EQ(command("*0\r\n"), 0);
  EXPECT_EQ(command("PING\r\n"), 1);
  EXPECT_EQ(command("ping\n"), 1);
  EXPECT_EQ(command("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), 0);
  EXPECT_EQ(command("EHLO mail.example\r\n"), 0);
  EXPECT_EQ(command("SSH-2.0-OpenSSH_9.2\r\n"), 0);
  EXPECT_EQ(command("\x16\x03\x01"), 0);
  EXPECT_EQ(reply("+OK\r\n"), 1);
  EXPECT_EQ(reply("-WRONGTYPE Operation against a key holding the wrong kind of value\r\n"), 1);
  EXPECT_EQ(reply("-NOPE\r\n"), 0);
  EXPECT_EQ(reply(":12\r\n"), 1);
  EXPECT_EQ(reply("$3\r\nabc\r\n"), 1);
  EXPECT_EQ(reply("$3\r\nabc\r\n", 20), 0);
  EXPECT_EQ(reply("*2\r\n$1\r\na\r\n$1\r\nb\r\n"), 1);
  EXPECT_EQ(reply("+OK POP3 server ready\r\n"), 0);
  EXPECT_EQ(reply("HTTP/1.1 200 OK\r\n"), 0);
  EXPECT_EQ(reply(""), -1);
}

}  // namespace
