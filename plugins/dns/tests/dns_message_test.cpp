#include "dns_message.hpp"

#include <gtest/gtest.h>

#include <cstdint>
#include <initializer_list>
#include <ostream>
#include <random>
#include <string>
#include <string_view>
#include <vector>

using namespace netwatcher::dns;

// Failures print "bad_name" rather than a byte.
namespace netwatcher::dns {
void PrintTo(ParseError error, std::ostream* out) {
  *out << parse_error_name(error);
}
}  // namespace netwatcher::dns

namespace {

// Messages are written out byte by byte; these only save typing the
// encodings every message repeats.
using Bytes = std::vector<std::uint8_t>;

void append(Bytes& out, std::initializer_list<std::uint8_t> bytes) {
  out.insert(out.end(), bytes);
}
void u16(Bytes& out, std::uint16_t v) {
  append(out, {std::uint8_t(v >> 8), std::uint8_t(v)});
}
void u32(Bytes& out, std::uint32_t v) {
  u16(out, std::uint16_t(v >> 16));
  u16(out, std::uint16_t(v));
}
// "www.example.com" as labels; `root` false leaves the name open for a
// pointer to follow.
void name(Bytes& out, std::string_view dotted, bool root = true) {
  while (!dotted.empty()) {
    const auto dot = dotted.find('.');
    const auto label = dotted.substr(0, dot);
    out.push_back(std::uint8_t(label.size()));
    out.insert(out.end(), label.begin(), label.end());
    dotted = dot == std::string_view::npos ? std::string_view{} : dotted.substr(dot + 1);
  }
  if (root) out.push_back(0);
}
void pointer(Bytes& out, std::uint16_t offset) {
  u16(out, std::uint16_t(0xC000 | offset));
}

Bytes header(std::uint16_t id, std::uint16_t flags, std::uint16_t questions, std::uint16_t answers,
             std::uint16_t authority = 0, std::uint16_t additional = 0) {
  Bytes out;
  u16(out, id);
  u16(out, flags);
  u16(out, questions);
  u16(out, answers);
  u16(out, authority);
  u16(out, additional);
  return out;
}
void question(Bytes& out, std::string_view dotted, std::uint16_t type, std::uint16_t klass = 1) {
  name(out, dotted);
  u16(out, type);
  u16(out, klass);
}
// TYPE, CLASS, TTL, RDLENGTH and RDATA after an owner name already written.
void record_tail(Bytes& out, std::uint16_t type, std::uint16_t klass, std::uint32_t ttl,
                 const Bytes& rdata) {
  u16(out, type);
  u16(out, klass);
  u32(out, ttl);
  u16(out, std::uint16_t(rdata.size()));
  out.insert(out.end(), rdata.begin(), rdata.end());
}

std::span<const std::byte> view(const Bytes& bytes) {
  return std::as_bytes(std::span<const std::uint8_t>(bytes));
}
std::span<const std::byte> view(std::string_view text) {
  return std::as_bytes(std::span<const char>(text.data(), text.size()));
}

ParseError parse(const Bytes& bytes, Message& out, const Limits& limits = {}) {
  return parse_message(view(bytes), bytes.size(), out, limits);
}

constexpr std::uint16_t kQueryRd = 0x0100;   // QUERY, RD
constexpr std::uint16_t kResponse = 0x8180;  // response, RD, RA, NOERROR
constexpr std::uint16_t kNxdomain = 0x8183;  // response, RD, RA, NXDOMAIN
constexpr std::size_t kQuestionName = 12;    // where the first question's name starts

Bytes a_query() {
  Bytes m = header(0x1234, kQueryRd, 1, 0);
  question(m, "www.example.com", 1);
  return m;
}

// The response to a_query(): two A records owned by the question's name.
Bytes a_response() {
  Bytes m = header(0x1234, kResponse, 1, 2);
  question(m, "www.example.com", 1);
  pointer(m, kQuestionName);
  record_tail(m, 1, 1, 300, {93, 184, 216, 34});
  pointer(m, kQuestionName);
  record_tail(m, 1, 1, 300, {93, 184, 216, 35});
  return m;
}

TEST(DnsMessage, AQuery) {
  const Bytes m = a_query();
  ASSERT_EQ(m.size(), 33u);
  Message msg;
  ASSERT_EQ(parse(m, msg), ParseError::none);
  EXPECT_EQ(msg.id, 0x1234);
  EXPECT_FALSE(msg.response);
  EXPECT_EQ(msg.opcode, 0);
  EXPECT_TRUE(msg.rd);
  EXPECT_FALSE(msg.aa || msg.tc || msg.ra || msg.ad || msg.cd);
  EXPECT_EQ(msg.rcode, 0);
  EXPECT_EQ(msg.question_count, 1);
  EXPECT_EQ(msg.answer_count, 0);
  ASSERT_EQ(msg.questions.size(), 1u);
  EXPECT_EQ(msg.questions[0].name, "www.example.com");
  EXPECT_EQ(msg.questions[0].type, 1);
  EXPECT_EQ(msg.questions[0].klass, 1);
  EXPECT_TRUE(msg.answers.empty());
  EXPECT_FALSE(msg.edns);
  EXPECT_FALSE(msg.cut_short);
}

// A query as dig 9.18 sent it (captured on loopback): AD set, EDNS with a
// cookie option.
TEST(DnsMessage, QueryAsDigSendsIt) {
  const Bytes m = {0xc6, 0x5c, 0x01, 0x20, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01,
                   0x03, 0x77, 0x77, 0x77, 0x07, 0x65, 0x78, 0x61, 0x6d, 0x70, 0x6c, 0x65,
                   0x03, 0x63, 0x6f, 0x6d, 0x00, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00, 0x29,
                   0x04, 0xd0, 0x00, 0x00, 0x00, 0x00, 0x00, 0x0c, 0x00, 0x0a, 0x00, 0x08,
                   0x40, 0x2a, 0xb9, 0xe8, 0x93, 0x70, 0x58, 0xbf};
  Message msg;
  ASSERT_EQ(parse(m, msg), ParseError::none);
  EXPECT_EQ(msg.id, 0xc65c);
  EXPECT_FALSE(msg.response);
  EXPECT_TRUE(msg.rd);
  EXPECT_TRUE(msg.ad);
  EXPECT_FALSE(msg.cd);
  EXPECT_EQ(msg.additional_count, 1);
  ASSERT_EQ(msg.questions.size(), 1u);
  EXPECT_EQ(msg.questions[0].name, "www.example.com");
  EXPECT_EQ(type_name(msg.questions[0].type), "A");
  EXPECT_EQ(class_name(msg.questions[0].klass), "IN");
  EXPECT_TRUE(msg.edns);
  EXPECT_EQ(msg.edns_udp_size, 1232);
  EXPECT_EQ(msg.edns_version, 0);
  EXPECT_FALSE(msg.edns_do);
  EXPECT_EQ(msg.rcode, 0);
  EXPECT_TRUE(looks_like_dns(view(m), m.size()));
}

TEST(DnsMessage, AResponseWithTwoAnswers) {
  const Bytes m = a_response();
  ASSERT_EQ(m.size(), 65u);
  Message msg;
  ASSERT_EQ(parse(m, msg), ParseError::none);
  EXPECT_EQ(msg.id, 0x1234);
  EXPECT_TRUE(msg.response);
  EXPECT_TRUE(msg.rd);
  EXPECT_TRUE(msg.ra);
  EXPECT_EQ(msg.rcode, 0);
  EXPECT_EQ(msg.answer_count, 2);
  ASSERT_EQ(msg.answers.size(), 2u);
  EXPECT_EQ(msg.answers[0].name, "www.example.com");
  EXPECT_EQ(msg.answers[0].type, 1);
  EXPECT_EQ(msg.answers[0].klass, 1);
  EXPECT_EQ(msg.answers[0].ttl, 300u);
  EXPECT_EQ(msg.answers[0].value, "93.184.216.34");
  EXPECT_EQ(msg.answers[1].name, "www.example.com");
  EXPECT_EQ(msg.answers[1].value, "93.184.216.35");
  EXPECT_FALSE(msg.cut_short);
}

TEST(DnsMessage, AaaaQueryAndResponse) {
  Bytes q = header(0xBEEF, kQueryRd, 1, 0);
  question(q, "ipv6.example.org", 28);
  Message msg;
  ASSERT_EQ(parse(q, msg), ParseError::none);
  ASSERT_EQ(msg.questions.size(), 1u);
  EXPECT_EQ(msg.questions[0].name, "ipv6.example.org");
  EXPECT_EQ(msg.questions[0].type, 28);

  Bytes r = header(0xBEEF, 0x8580, 1, 1);  // AA as well
  question(r, "ipv6.example.org", 28);
  pointer(r, kQuestionName);
  record_tail(r, 28, 1, 3600, {0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01});
  ASSERT_EQ(parse(r, msg), ParseError::none);
  EXPECT_TRUE(msg.aa);
  ASSERT_EQ(msg.answers.size(), 1u);
  EXPECT_EQ(msg.answers[0].type, 28);
  EXPECT_EQ(msg.answers[0].ttl, 3600u);
  EXPECT_EQ(msg.answers[0].value, "2001:db8::1");
}

TEST(DnsMessage, CnameChainWithCompressionPointers) {
  Bytes m = header(7, kResponse, 1, 3);
  question(m, "www.example.com", 1);  // www at 12, example at 16, com at 24
  // www.example.com CNAME web.example.com ("web" then a pointer to example.com)
  pointer(m, kQuestionName);
  const std::size_t web = m.size() + 10;  // the first RDATA byte
  Bytes rdata;
  name(rdata, "web", false);
  pointer(rdata, 16);
  record_tail(m, 5, 1, 60, rdata);
  // web.example.com CNAME cdn.example.net (owner: a pointer into the RDATA above)
  pointer(m, std::uint16_t(web));
  const std::size_t cdn = m.size() + 10;
  rdata.clear();
  name(rdata, "cdn.example.net");
  record_tail(m, 5, 1, 60, rdata);
  // cdn.example.net A 192.0.2.7
  pointer(m, std::uint16_t(cdn));
  record_tail(m, 1, 1, 20, {192, 0, 2, 7});

  Message msg;
  ASSERT_EQ(parse(m, msg), ParseError::none);
  ASSERT_EQ(msg.answers.size(), 3u);
  EXPECT_EQ(msg.answers[0].name, "www.example.com");
  EXPECT_EQ(msg.answers[0].type, 5);
  EXPECT_EQ(msg.answers[0].value, "web.example.com");
  EXPECT_EQ(msg.answers[1].name, "web.example.com");
  EXPECT_EQ(msg.answers[1].value, "cdn.example.net");
  EXPECT_EQ(msg.answers[2].name, "cdn.example.net");
  EXPECT_EQ(msg.answers[2].value, "192.0.2.7");
  EXPECT_EQ(msg.answers[2].ttl, 20u);
}

TEST(DnsMessage, NxdomainWithSoaInAuthority) {
  Bytes m = header(0x0101, kNxdomain, 1, 0, 1, 0);
  question(m, "nope.example.com", 1);  // example.com at 17
  pointer(m, 17);
  Bytes soa;
  name(soa, "ns1", false);
  pointer(soa, 17);
  name(soa, "hostmaster", false);
  pointer(soa, 17);
  for (std::uint32_t v : {2026120201u, 7200u, 3600u, 1209600u, 300u}) u32(soa, v);
  record_tail(m, 6, 1, 300, soa);

  Message msg;
  ASSERT_EQ(parse(m, msg), ParseError::none);
  EXPECT_EQ(msg.rcode, 3);
  EXPECT_EQ(rcode_name(msg.rcode), "NXDOMAIN");
  EXPECT_EQ(msg.answer_count, 0);
  EXPECT_EQ(msg.authority_count, 1);
  EXPECT_TRUE(msg.answers.empty()) << "authority records are not answers";
  ASSERT_EQ(msg.questions.size(), 1u);
  EXPECT_EQ(msg.questions[0].name, "nope.example.com");
  // The SOA was walked: one byte less and the message ends inside it.
  Bytes short_by_one(m.begin(), m.end() - 1);
  EXPECT_EQ(parse(short_by_one, msg), ParseError::bad_record);
}

// An OPT record owned by the root: CLASS = UDP size, TTL = ext-rcode, version, DO.
void opt(Bytes& out, std::uint16_t udp_size, std::uint8_t extended_rcode, std::uint8_t version,
         bool dnssec_ok) {
  out.push_back(0);
  record_tail(out, 41, udp_size,
              std::uint32_t{extended_rcode} << 24 | std::uint32_t{version} << 16 |
                  (dnssec_ok ? 0x8000u : 0u),
              {});
}

TEST(DnsMessage, EdnsQueryAndBadversResponse) {
  Bytes q = header(0x4242, kQueryRd, 1, 0, 0, 1);
  question(q, "example.com", 1);
  opt(q, 4096, 0, 0, true);
  Message msg;
  ASSERT_EQ(parse(q, msg), ParseError::none);
  EXPECT_TRUE(msg.edns);
  EXPECT_EQ(msg.edns_udp_size, 4096);
  EXPECT_EQ(msg.edns_version, 0);
  EXPECT_TRUE(msg.edns_do);
  EXPECT_EQ(msg.rcode, 0);
  EXPECT_EQ(msg.additional_count, 1);

  // BADVERS (16): header rcode 0, OPT's upper bits 1; a version-1 query.
  Bytes r = header(0x4242, 0x8180, 1, 0, 0, 1);
  question(r, "example.com", 1);
  opt(r, 1232, 1, 0, false);
  ASSERT_EQ(parse(r, msg), ParseError::none);
  EXPECT_TRUE(msg.edns);
  EXPECT_EQ(msg.edns_udp_size, 1232);
  EXPECT_FALSE(msg.edns_do);
  EXPECT_EQ(msg.rcode, 16);
  EXPECT_EQ(rcode_name(msg.rcode), "BADVERS");

  // Upper and lower bits together: ext 2, header 3 -> 35.
  Bytes mixed = header(1, 0x8183, 1, 0, 0, 1);
  question(mixed, "example.com", 1);
  opt(mixed, 512, 2, 1, false);
  ASSERT_EQ(parse(mixed, msg), ParseError::none);
  EXPECT_EQ(msg.rcode, 35);
  EXPECT_EQ(msg.edns_version, 1);
  EXPECT_EQ(rcode_name(msg.rcode), "RCODE35");

  // A second OPT makes the message malformed (RFC 6891 §6.1.1).
  Bytes twice = header(1, 0x8180, 1, 0, 0, 2);
  question(twice, "example.com", 1);
  opt(twice, 512, 0, 0, false);
  opt(twice, 512, 0, 0, false);
  EXPECT_EQ(parse(twice, msg), ParseError::bad_record);
}

TEST(DnsMessage, TxtStringsJoinedAndBounded) {
  Bytes m = header(9, kResponse, 1, 2);
  question(m, "txt.example", 16);
  pointer(m, kQuestionName);
  Bytes rdata;
  for (std::string_view s : {"v=spf1 -all", "hello\x01"}) {
    rdata.push_back(std::uint8_t(s.size()));
    rdata.insert(rdata.end(), s.begin(), s.end());
  }
  record_tail(m, 16, 1, 30, rdata);
  // 300 characters in two strings: cut at 255.
  pointer(m, kQuestionName);
  rdata.clear();
  for (int i = 0; i < 2; ++i) {
    rdata.push_back(150);
    rdata.insert(rdata.end(), 150, 'x');
  }
  record_tail(m, 16, 1, 30, rdata);

  Message msg;
  ASSERT_EQ(parse(m, msg), ParseError::none);
  ASSERT_EQ(msg.answers.size(), 2u);
  EXPECT_EQ(msg.answers[0].type, 16);
  EXPECT_EQ(msg.answers[0].value, "v=spf1 -all hello\\001");
  EXPECT_EQ(msg.answers[1].value, std::string(150, 'x') + ' ' + std::string(104, 'x'));
  EXPECT_EQ(msg.answers[1].value.size(), 255u);

  // A string longer than its RDATA.
  Bytes bad = header(9, kResponse, 1, 1);
  question(bad, "txt.example", 16);
  pointer(bad, kQuestionName);
  record_tail(bad, 16, 1, 30, {5, 'a', 'b'});
  EXPECT_EQ(parse(bad, msg), ParseError::bad_record);
}

TEST(DnsMessage, MxAndSrvValues) {
  Bytes m = header(3, kResponse, 1, 2);
  question(m, "example.com", 15);
  pointer(m, kQuestionName);
  Bytes rdata;
  u16(rdata, 10);
  name(rdata, "mail", false);
  pointer(rdata, kQuestionName);
  record_tail(m, 15, 1, 60, rdata);
  pointer(m, kQuestionName);
  rdata.clear();
  for (std::uint16_t v : {1, 5, 5060}) u16(rdata, v);
  name(rdata, "sip.example.com");
  record_tail(m, 33, 1, 60, rdata);
  Message msg;
  ASSERT_EQ(parse(m, msg), ParseError::none);
  ASSERT_EQ(msg.answers.size(), 2u);
  EXPECT_EQ(msg.answers[0].value, "10 mail.example.com");
  EXPECT_EQ(msg.answers[1].value, "1 5 5060 sip.example.com");
}

TEST(DnsMessage, UnknownTypeHasNoValue) {
  Bytes m = header(5, kResponse, 1, 1);
  question(m, "example.com", 65535, 3);
  pointer(m, kQuestionName);
  record_tail(m, 65535, 3, 1, {1, 2, 3, 4, 5});
  Message msg;
  ASSERT_EQ(parse(m, msg), ParseError::none);
  ASSERT_EQ(msg.questions.size(), 1u);
  EXPECT_EQ(msg.questions[0].type, 65535);
  EXPECT_EQ(msg.questions[0].klass, 3);
  ASSERT_EQ(msg.answers.size(), 1u);
  EXPECT_EQ(msg.answers[0].type, 65535);
  EXPECT_EQ(msg.answers[0].value, "");
  EXPECT_EQ(type_name(msg.answers[0].type), "TYPE65535");
  EXPECT_EQ(class_name(msg.answers[0].klass), "CH");
}

TEST(DnsMessage, CutShortInsideTheSecondAnswer) {
  const Bytes full = a_response();
  // The second answer starts at 49 (33 + 16); cut 3 bytes into its RDATA.
  const Bytes captured(full.begin(), full.begin() + 49 + 2 + 10 + 3);
  Message msg;
  ASSERT_EQ(parse_message(view(captured), full.size(), msg), ParseError::none);
  EXPECT_TRUE(msg.cut_short);
  EXPECT_EQ(msg.answer_count, 2);
  ASSERT_EQ(msg.answers.size(), 1u);
  EXPECT_EQ(msg.answers[0].value, "93.184.216.34");
  ASSERT_EQ(msg.questions.size(), 1u);

  // The same bytes as the whole message: the record runs past its end.
  EXPECT_EQ(parse(captured, msg), ParseError::bad_record);
  EXPECT_FALSE(msg.cut_short);

  // Cut inside the question: the header alone.
  ASSERT_EQ(parse_message(view(full).first(20), full.size(), msg), ParseError::none);
  EXPECT_TRUE(msg.cut_short);
  EXPECT_EQ(msg.id, 0x1234);
  EXPECT_TRUE(msg.questions.empty());
  const Bytes query = a_query();
  EXPECT_EQ(parse_message(view(query).first(20), 20, msg), ParseError::bad_name)
      << "a query of 20 bytes whose name goes on";

  // Bytes past wire_length are not part of the message.
  Bytes padded = query;
  padded.insert(padded.end(), {0xde, 0xad});
  ASSERT_EQ(parse_message(view(padded), query.size(), msg), ParseError::none);
  EXPECT_FALSE(msg.cut_short);
  EXPECT_EQ(msg.questions[0].name, "www.example.com");
}

TEST(DnsMessage, NameRunningPastTheCaptureAfterAPointer) {
  // The answer's owner points back at the question's QTYPE low byte (40),
  // read as a label of 40 bytes: they run past the end of the bytes.
  Bytes m = header(1, kResponse, 1, 1);
  question(m, "example", 40);  // name 12..20, QTYPE 21..22
  pointer(m, 22);
  record_tail(m, 1, 1, 5, {10, 0, 0, 1});
  ASSERT_EQ(m.size(), 41u);
  Message msg;
  ASSERT_EQ(parse_message(view(m), 100, msg), ParseError::none)
      << "past the capture but inside the message";
  EXPECT_TRUE(msg.cut_short);
  EXPECT_EQ(msg.questions.size(), 1u);
  EXPECT_EQ(parse(m, msg), ParseError::bad_name) << "past the end of the message";
}

TEST(DnsMessage, PointerLoop) {
  // The answer's name: label "a" at 25, then a pointer back to 25.
  Bytes m = header(1, kResponse, 1, 1);
  question(m, "example", 1);  // 12..24
  ASSERT_EQ(m.size(), 25u);
  name(m, "a", false);
  pointer(m, 25);
  record_tail(m, 1, 1, 5, {10, 0, 0, 1});
  Message msg;
  EXPECT_EQ(parse(m, msg), ParseError::name_loop);
  EXPECT_STREQ(parse_error_name(ParseError::name_loop), "name_loop");
  ASSERT_EQ(msg.questions.size(), 1u) << "what came before the error is kept";

  // With more jumps allowed the name grows past 255 bytes instead.
  Limits many_jumps;
  many_jumps.max_pointer_jumps = 1000;
  EXPECT_EQ(parse(m, msg, many_jumps), ParseError::name_too_long);
}

TEST(DnsMessage, ForwardPointer) {
  Bytes m = header(1, kResponse, 1, 1);
  question(m, "example", 1);
  pointer(m, 40);  // beyond the pointer itself
  record_tail(m, 1, 1, 5, {10, 0, 0, 1});
  Message msg;
  EXPECT_EQ(parse(m, msg), ParseError::bad_name);

  Bytes self = header(1, kResponse, 1, 1);
  question(self, "example", 1);
  pointer(self, std::uint16_t(self.size()));  // to itself
  record_tail(self, 1, 1, 5, {10, 0, 0, 1});
  EXPECT_EQ(parse(self, msg), ParseError::bad_name);

  Bytes into_header = header(1, kResponse, 1, 1);
  question(into_header, "example", 1);
  pointer(into_header, 4);
  record_tail(into_header, 1, 1, 5, {10, 0, 0, 1});
  EXPECT_EQ(parse(into_header, msg), ParseError::bad_name);
}

TEST(DnsMessage, LabelLongerThan63) {
  Bytes m = header(1, kQueryRd, 1, 0);
  m.push_back(64);  // 0x40: the extended-label type, not a length
  m.insert(m.end(), 64, 'a');
  append(m, {0, 0, 1, 0, 1});
  Message msg;
  EXPECT_EQ(parse(m, msg), ParseError::bad_name);

  Bytes ok = header(1, kQueryRd, 1, 0);
  question(ok, std::string(63, 'a') + ".com", 1);
  ASSERT_EQ(parse(ok, msg), ParseError::none);
  EXPECT_EQ(msg.questions[0].name.size(), 67u);
}

TEST(DnsMessage, NameLongerThan255) {
  // Three 63-byte labels (192 bytes) and one of 61 (62) plus the root: 255.
  const std::string label(63, 'x');
  const std::string longest = label + "." + label + "." + label + "." + std::string(61, 'y');
  Bytes ok = header(1, kQueryRd, 1, 0);
  question(ok, longest, 1);
  Message msg;
  ASSERT_EQ(parse(ok, msg), ParseError::none);
  EXPECT_EQ(msg.questions[0].name, longest);

  Bytes too_long = header(1, kQueryRd, 1, 0);
  question(too_long, longest + "y", 1);  // 256
  EXPECT_EQ(parse(too_long, msg), ParseError::name_too_long);
}

TEST(DnsMessage, NamesKeepTheirCaseAndEscapeOddBytes) {
  Bytes m = header(1, kQueryRd, 3, 0);
  question(m, "WwW.ExAmPle.COM", 1);
  question(m, "", 2);  // the root
  m.push_back(3);
  append(m, {'a', '.', ' '});
  append(m, {1, '\\', 0, 0, 1, 0, 1});
  Message msg;
  ASSERT_EQ(parse(m, msg), ParseError::none);
  ASSERT_EQ(msg.questions.size(), 3u);
  EXPECT_EQ(msg.questions[0].name, "WwW.ExAmPle.COM");
  EXPECT_EQ(msg.questions[1].name, ".");
  EXPECT_EQ(msg.questions[1].type, 2);
  EXPECT_EQ(msg.questions[2].name, "a\\.\\032.\\\\");
}

TEST(DnsMessage, LimitsBoundWhatIsKept) {
  Bytes m = header(1, kResponse, 2, 3);
  question(m, "one.test", 1);
  question(m, "two.test", 1);
  for (std::uint8_t i = 1; i <= 3; ++i) {
    pointer(m, kQuestionName);
    record_tail(m, 1, 1, 5, {10, 0, 0, i});
  }
  Limits limits;
  limits.max_questions = 1;
  limits.max_answers = 2;
  Message msg;
  ASSERT_EQ(parse(m, msg, limits), ParseError::none) << "records beyond the limits still parse";
  ASSERT_EQ(msg.questions.size(), 1u);
  EXPECT_EQ(msg.questions[0].name, "one.test");
  ASSERT_EQ(msg.answers.size(), 2u);
  EXPECT_EQ(msg.answers[1].value, "10.0.0.2");
  EXPECT_EQ(msg.answer_count, 3);
}

TEST(DnsMessage, TrailingGarbage) {
  Bytes m = a_query();
  append(m, {0xde, 0xad, 0xbe, 0xef});
  Message msg;
  EXPECT_EQ(parse(m, msg), ParseError::trailing_garbage);
  EXPECT_EQ(msg.questions.size(), 1u);
}

TEST(DnsMessage, BadRdataLength) {
  Bytes m = header(1, kResponse, 1, 1);
  question(m, "example", 1);
  pointer(m, kQuestionName);
  record_tail(m, 1, 1, 5, {10, 0, 0, 1, 9});  // an A record of 5 bytes
  Message msg;
  EXPECT_EQ(parse(m, msg), ParseError::bad_record);

  Bytes cname = header(1, kResponse, 1, 1);
  question(cname, "example", 5);
  pointer(cname, kQuestionName);
  Bytes rdata;
  name(rdata, "x");
  rdata.push_back(0);  // one byte after the target name
  record_tail(cname, 5, 1, 5, rdata);
  EXPECT_EQ(parse(cname, msg), ParseError::bad_record);
}

TEST(DnsMessage, ShortHeader) {
  const Bytes m = a_query();
  Message msg;
  EXPECT_EQ(parse_message(view(m).first(11), m.size(), msg), ParseError::short_header);
  EXPECT_EQ(parse_message(view(m).first(0), m.size(), msg), ParseError::short_header);
  EXPECT_EQ(parse_message(view(m), 11, msg), ParseError::short_header)
      << "a message shorter than a header";
  EXPECT_STREQ(parse_error_name(ParseError::short_header), "short_header");
}

TEST(DnsMessage, CountsTheMessageCannotHoldAreNotDns) {
  Bytes m = a_query();
  m[7] = 3;  // three answers of at least 11 bytes each in 33 bytes
  Message msg;
  EXPECT_EQ(parse(m, msg), ParseError::not_dns);
  EXPECT_EQ(msg.answer_count, 3);
  // With room for them in the message, they are past the capture.
  EXPECT_EQ(parse_message(view(m), 33 + 33, msg), ParseError::none);
  EXPECT_TRUE(msg.cut_short);
}

TEST(DnsMessage, Names) {
  EXPECT_EQ(type_name(1), "A");
  EXPECT_EQ(type_name(28), "AAAA");
  EXPECT_EQ(type_name(65), "HTTPS");
  EXPECT_EQ(type_name(257), "CAA");
  EXPECT_EQ(type_name(252), "AXFR");
  EXPECT_EQ(type_name(0), "TYPE0");
  EXPECT_EQ(class_name(1), "IN");
  EXPECT_EQ(class_name(254), "NONE");
  EXPECT_EQ(class_name(42), "CLASS42");
  EXPECT_EQ(rcode_name(0), "NOERROR");
  EXPECT_EQ(rcode_name(10), "NOTZONE");
  EXPECT_EQ(rcode_name(11), "RCODE11");
  EXPECT_EQ(opcode_name(5), "UPDATE");
  EXPECT_EQ(opcode_name(6), "DSO");
  EXPECT_EQ(opcode_name(3), "OPCODE3");
  EXPECT_STREQ(parse_error_name(ParseError::trailing_garbage), "trailing_garbage");
  EXPECT_STREQ(parse_error_name(ParseError::not_dns), "not_dns");
}

TEST(DnsMessage, LooksLikeDnsForQueriesAndResponses) {
  for (const Bytes& m : {a_query(), a_response()}) {
    EXPECT_TRUE(looks_like_dns(view(m), m.size()));
  }
  const Bytes response = a_response();
  EXPECT_TRUE(looks_like_dns(view(response).first(40), response.size()))
      << "the header and first question are enough";
  EXPECT_FALSE(looks_like_dns(view(response).first(30), response.size()))
      << "a capture cut inside the first question is too little";
  Bytes mdns = header(0, 0, 1, 0);
  question(mdns, "_http._tcp.local", 12, 0x8001);  // QU bit
  EXPECT_TRUE(looks_like_dns(view(mdns), mdns.size()));
  Bytes odd_class = header(0, 0, 1, 0);
  question(odd_class, "example", 1, 77);
  EXPECT_FALSE(looks_like_dns(view(odd_class), odd_class.size()));
  Bytes z_set = a_query();
  z_set[3] |= 0x40;
  EXPECT_FALSE(looks_like_dns(view(z_set), z_set.size()));
  Bytes opcode3 = a_query();
  opcode3[2] |= 3 << 3;  // unassigned
  EXPECT_FALSE(looks_like_dns(view(opcode3), opcode3.size()));
  Bytes no_question = a_query();
  no_question[5] = 0;
  EXPECT_FALSE(looks_like_dns(view(no_question), no_question.size()));
  EXPECT_FALSE(looks_like_dns(view(a_query()), 16)) << "a wire length too short for a question";
  Bytes too_many_answers = a_query();
  too_many_answers[7] = 2;  // 2 records of 11 bytes or more cannot follow in 33 bytes
  EXPECT_FALSE(looks_like_dns(view(too_many_answers), too_many_answers.size()));
}

TEST(DnsMessage, LooksLikeDnsRefusesOtherProtocols) {
  const std::string_view http = "GET / HTTP/1.1\r\nHost: example.com\r\n\r\n";
  EXPECT_FALSE(looks_like_dns(view(http), http.size()));
  // A TLS 1.2 record holding a ClientHello, first bytes.
  const Bytes tls = {0x16, 0x03, 0x01, 0x00, 0xf1, 0x01, 0x00, 0x00, 0xed, 0x03, 0x03,
                     0x5a, 0x1b, 0x2c, 0x3d, 0x4e, 0x5f, 0x60, 0x71, 0x82, 0x93, 0xa4};
  EXPECT_FALSE(looks_like_dns(view(tls), 246));
  const std::string_view redis = "*1\r\n$4\r\nPING\r\n";
  EXPECT_FALSE(looks_like_dns(view(redis), redis.size()));
  const Bytes zeros(64, 0);
  EXPECT_FALSE(looks_like_dns(view(zeros), zeros.size()));
  EXPECT_FALSE(looks_like_dns(view(a_query()).first(11), 33));

  std::mt19937 random(20261202);
  int accepted = 0;
  for (int i = 0; i < 10000; ++i) {
    Bytes noise(64);
    for (auto& b : noise) b = std::uint8_t(random());
    accepted += looks_like_dns(view(noise), noise.size());
  }
  EXPECT_EQ(accepted, 0);
}

TEST(DnsMessage, TcpFraming) {
  EXPECT_EQ(tcp_message_length({}), std::nullopt);
  const Bytes one = {0x00};
  EXPECT_EQ(tcp_message_length(view(one)), std::nullopt);
  const Bytes query = a_query();
  Bytes stream = {0x00, std::uint8_t(query.size())};
  stream.insert(stream.end(), query.begin(), query.end());
  const auto length = tcp_message_length(view(stream));
  ASSERT_EQ(length, 33);
  const auto message = view(stream).subspan(2);
  EXPECT_TRUE(looks_like_dns(message, *length));
  Message msg;
  ASSERT_EQ(parse_message(message, *length, msg), ParseError::none);
  EXPECT_EQ(msg.questions[0].name, "www.example.com");
  const Bytes big = {0x12, 0x34, 0x56};
  EXPECT_EQ(tcp_message_length(view(big)), 0x1234);
}

}  // namespace
