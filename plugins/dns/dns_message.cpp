#include "dns_message.hpp"

#include <arpa/inet.h>

#include <algorithm>
#include <array>

#include "netwatcher/l7.hpp"

namespace netwatcher::dns {
namespace {

constexpr std::size_t kHeaderSize = 12;
// The smallest question is the root name (1 byte) with type and class; the
// smallest resource record adds TTL and RDLENGTH (RFC 1035 §4.1.2, §4.1.3).
constexpr std::size_t kMinQuestionSize = 1 + 4;
constexpr std::size_t kMinRecordSize = 1 + 10;
constexpr std::size_t kMaxTxtValue = 255;

constexpr std::uint16_t kTypeA = 1, kTypeNs = 2, kTypeCname = 5, kTypePtr = 12, kTypeMx = 15,
                        kTypeTxt = 16, kTypeAaaa = 28, kTypeSrv = 33, kTypeDname = 39,
                        kTypeOpt = 41;

// Header flag bits (RFC 1035 §4.1.1, AD and CD from RFC 4035 §3.2).
constexpr std::uint16_t kFlagResponse = 0x8000, kFlagAa = 0x0400, kFlagTc = 0x0200,
                        kFlagRd = 0x0100, kFlagRa = 0x0080, kFlagZ = 0x0040, kFlagAd = 0x0020,
                        kFlagCd = 0x0010;

struct Header {
  std::uint16_t id = 0, flags = 0;
  std::uint16_t question_count = 0, answer_count = 0, authority_count = 0, additional_count = 0;

  std::uint8_t opcode() const { return static_cast<std::uint8_t>((flags >> 11) & 0x0F); }
};

// The caller guarantees kHeaderSize bytes.
Header read_header(std::span<const std::byte> bytes) {
  ByteReader reader(bytes);
  Header header;
  header.id = reader.be16().value_or(0);
  header.flags = reader.be16().value_or(0);
  header.question_count = reader.be16().value_or(0);
  header.answer_count = reader.be16().value_or(0);
  header.authority_count = reader.be16().value_or(0);
  header.additional_count = reader.be16().value_or(0);
  return header;
}

// Every question and record takes some bytes, so counts the message cannot
// hold mean the bytes are not DNS. This is also what bounds the parse: no
// loop below runs more often than the message has bytes.
bool counts_fit(const Header& header, std::size_t wire_length) {
  const std::size_t records =
      std::size_t{header.answer_count} + header.authority_count + header.additional_count;
  return kHeaderSize + header.question_count * kMinQuestionSize + records * kMinRecordSize <=
         wire_length;
}

bool opcode_known(std::uint8_t opcode) {
  return opcode <= 2 || (opcode >= 4 && opcode <= 6);  // 3 and 7-15 are unassigned
}

// Appends one byte of a label or character-string as master-file text
// (RFC 1035 §5.1): printable characters as they are, others as \DDD.
void append_escaped(std::string& text, std::uint8_t c, bool escape_dot) {
  if ((escape_dot && c == '.') || c == '\\') {
    text += '\\';
    text += static_cast<char>(c);
  } else if (c > 0x20 && c < 0x7F) {
    text += static_cast<char>(c);
  } else if (c == ' ' && !escape_dot) {
    text += ' ';
  } else {
    text += '\\';
    text += static_cast<char>('0' + c / 100);
    text += static_cast<char>('0' + c / 10 % 10);
    text += static_cast<char>('0' + c % 10);
  }
}

struct Mnemonic {
  std::uint16_t code;
  const char* name;
};

// The table's name for `code`, or RFC 3597's generic form ("TYPE65535").
template <std::size_t N>
std::string mnemonic(const Mnemonic (&table)[N], std::uint16_t code, const char* prefix) {
  for (const Mnemonic& entry : table) {
    if (entry.code == code) return entry.name;
  }
  return prefix + std::to_string(code);
}

// Walks one message. Each step returns true to go on; false stops the parse,
// and then either cut_short_ is set (the capture ended inside the message)
// or error_ says what is wrong with it.
class MessageParser {
 public:
  MessageParser(std::span<const std::byte> bytes, std::size_t wire_length, const Limits& limits)
      : captured_(bytes.first(std::min(bytes.size(), wire_length))),
        wire_length_(wire_length),
        limits_(limits) {}

  ParseError parse(Message& out);

  // Decodes the name at `offset`; `end` becomes the offset just after it
  // (after its first pointer, if it has one). `text` may be null to only
  // check the name.
  bool read_name(std::size_t offset, std::string* text, std::size_t& end);

 private:
  // True when `count` bytes at `offset` were captured. Otherwise stops the
  // parse: cut short when the message goes on past the capture, else `error`
  // (the message itself ends first).
  bool need(std::size_t offset, std::size_t count, ParseError error);
  // Unchecked: every caller has asked need() for these bytes first.
  std::uint8_t byte_at(std::size_t offset) const {
    return std::to_integer<std::uint8_t>(captured_[offset]);
  }
  std::uint16_t be16_at(std::size_t offset) const {
    return static_cast<std::uint16_t>(byte_at(offset) << 8 | byte_at(offset + 1));
  }
  std::uint32_t be32_at(std::size_t offset) const {
    return std::uint32_t{be16_at(offset)} << 16 | be16_at(offset + 2);
  }
  bool fail(ParseError error) {
    error_ = error;
    return false;
  }

  bool read_question(Question* kept);
  enum class Section { answer, authority, additional };
  bool read_record(Section section, Message& out);
  bool read_value(const Answer& record, std::size_t rdata, std::size_t rdata_length,
                  std::string& value);
  bool read_target_name(std::size_t offset, std::size_t rdata_end, std::string& value);

  std::span<const std::byte> captured_;  // never longer than the message
  std::size_t wire_length_;
  const Limits& limits_;
  std::size_t offset_ = kHeaderSize;  // where the next question or record starts
  bool cut_short_ = false;
  bool seen_opt_ = false;
  ParseError error_ = ParseError::none;
};

bool MessageParser::need(std::size_t offset, std::size_t count, ParseError error) {
  if (offset <= captured_.size() && count <= captured_.size() - offset) return true;
  if (offset <= wire_length_ && count <= wire_length_ - offset) {
    cut_short_ = true;
    return false;
  }
  return fail(error);
}

bool MessageParser::read_name(std::size_t offset, std::string* text, std::size_t& end) {
  if (text) text->clear();
  std::size_t position = offset;
  std::size_t jumps = 0;
  bool jumped = false;
  std::size_t wire_name_length = 1;  // the root label that ends every name
  for (;;) {
    if (!need(position, 1, ParseError::bad_name)) return false;
    const std::uint8_t length = byte_at(position);
    const std::uint8_t label_type = length & 0xC0;
    if (label_type == 0xC0) {
      if (!need(position, 2, ParseError::bad_name)) return false;
      const std::size_t target = be16_at(position) & 0x3FFF;
      if (!jumped) end = position + 2;
      jumped = true;
      // Only backwards, and never into the header: a pointer names an
      // earlier occurrence of a name (RFC 1035 §4.1.4). Together with the
      // jump count and the length limit this ends every loop.
      if (target >= position || target < kHeaderSize) return fail(ParseError::bad_name);
      if (++jumps > limits_.max_pointer_jumps) return fail(ParseError::name_loop);
      position = target;
      continue;
    }
    // 0x40 (extended labels, RFC 6891 §5) and 0x80 are not in use; they
    // are also every length byte above 63.
    if (label_type != 0) return fail(ParseError::bad_name);
    if (length == 0) break;
    wire_name_length += 1 + length;
    if (wire_name_length > limits_.max_name_length) return fail(ParseError::name_too_long);
    if (!need(position + 1, length, ParseError::bad_name)) return false;
    if (text) {
      if (!text->empty()) *text += '.';
      for (std::size_t i = 1; i <= length; ++i)
        append_escaped(*text, byte_at(position + i), /*escape_dot=*/true);
    }
    position += 1 + length;
  }
  if (!jumped) end = position + 1;
  // push_back, not assignment: gcc 12 -O2 warns (-Wrestrict) on the latter.
  if (text && text->empty()) text->push_back('.');
  return true;
}

bool MessageParser::read_question(Question* kept) {
  std::string name;
  std::size_t end = 0;
  if (!read_name(offset_, kept ? &name : nullptr, end)) return false;
  if (!need(end, 4, ParseError::bad_record)) return false;
  if (kept) {
    kept->name = std::move(name);
    kept->type = be16_at(end);
    kept->klass = be16_at(end + 2);
  }
  offset_ = end + 4;
  return true;
}

bool MessageParser::read_record(Section section, Message& out) {
  const bool keep = section == Section::answer && out.answers.size() < limits_.max_answers;
  Answer record;
  std::size_t end = 0;
  if (!read_name(offset_, keep ? &record.name : nullptr, end)) return false;
  // TYPE, CLASS, TTL, RDLENGTH, then RDATA (RFC 1035 §4.1.3).
  if (!need(end, 10, ParseError::bad_record)) return false;
  record.type = be16_at(end);
  record.klass = be16_at(end + 2);
  record.ttl = be32_at(end + 4);
  const std::size_t rdata_length = be16_at(end + 8);
  const std::size_t rdata = end + 10;
  if (!need(rdata, rdata_length, ParseError::bad_record)) return false;

  if (section == Section::additional && record.type == kTypeOpt) {
    // One OPT at most, owned by the root (RFC 6891 §6.1.1). Its CLASS is
    // the requester's UDP payload size; its TTL holds the upper 8 bits of
    // the rcode, the version and the DO bit (§6.1.3).
    if (seen_opt_ || end != offset_ + 1) return fail(ParseError::bad_record);
    seen_opt_ = true;
    out.edns = true;
    out.edns_udp_size = record.klass;
    out.rcode = static_cast<std::uint16_t>((record.ttl >> 24) << 4 | (out.rcode & 0x0F));
    out.edns_version = static_cast<std::uint8_t>(record.ttl >> 16);
    out.edns_do = (record.ttl & 0x8000) != 0;
  }
  // Only the RDATA of kept answers is looked into; the rest is skipped.
  if (keep) {
    if (!read_value(record, rdata, rdata_length, record.value)) return false;
    out.answers.push_back(std::move(record));
  }
  offset_ = rdata + rdata_length;
  return true;
}

// A name that must fill the RDATA up to `rdata_end` exactly.
bool MessageParser::read_target_name(std::size_t offset, std::size_t rdata_end,
                                     std::string& value) {
  std::string name;
  std::size_t end = 0;
  if (!read_name(offset, &name, end)) return false;
  if (end != rdata_end) return fail(ParseError::bad_record);
  value += name;
  return true;
}

bool MessageParser::read_value(const Answer& record, std::size_t rdata, std::size_t rdata_length,
                               std::string& value) {
  const std::size_t rdata_end = rdata + rdata_length;
  switch (record.type) {
    case kTypeA:
    case kTypeAaaa: {
      const bool v4 = record.type == kTypeA;
      if (rdata_length != (v4 ? 4u : 16u)) return fail(ParseError::bad_record);
      std::array<unsigned char, 16> address{};
      for (std::size_t i = 0; i < rdata_length; ++i) address[i] = byte_at(rdata + i);
      std::array<char, INET6_ADDRSTRLEN> text{};
      if (!inet_ntop(v4 ? AF_INET : AF_INET6, address.data(), text.data(), text.size()))
        return fail(ParseError::bad_record);
      value = text.data();
      return true;
    }
    case kTypeNs:
    case kTypeCname:
    case kTypePtr:
    case kTypeDname:
      return read_target_name(rdata, rdata_end, value);
    case kTypeMx:
      if (rdata_length < 3) return fail(ParseError::bad_record);
      value = std::to_string(be16_at(rdata)) + ' ';
      return read_target_name(rdata + 2, rdata_end, value);
    case kTypeSrv:
      if (rdata_length < 7) return fail(ParseError::bad_record);
      value = std::to_string(be16_at(rdata)) + ' ' + std::to_string(be16_at(rdata + 2)) + ' ' +
              std::to_string(be16_at(rdata + 4)) + ' ';
      return read_target_name(rdata + 6, rdata_end, value);
    case kTypeTxt: {
      // One or more <length><bytes> strings filling the RDATA (§3.3.14).
      std::size_t position = rdata;
      std::string piece;
      while (position < rdata_end) {
        const std::size_t length = byte_at(position);
        if (length > rdata_end - position - 1) return fail(ParseError::bad_record);
        piece.clear();
        if (position != rdata) piece += ' ';
        for (std::size_t i = 1; i <= length; ++i)
          append_escaped(piece, byte_at(position + i), /*escape_dot=*/false);
        // Whole characters (escapes included) up to the bound, never half
        // an escape.
        for (std::size_t i = 0; i < piece.size() && value.size() < kMaxTxtValue; ++i) {
          if (piece[i] == '\\') {
            const std::size_t escape = piece[i + 1] >= '0' && piece[i + 1] <= '9' ? 4 : 2;
            if (value.size() + escape > kMaxTxtValue) break;
            value.append(piece, i, escape);
            i += escape - 1;
          } else {
            value += piece[i];
          }
        }
        position += 1 + length;
      }
      return true;
    }
    default:
      return true;
  }
}

ParseError MessageParser::parse(Message& out) {
  out = Message{};
  if (captured_.size() < kHeaderSize) return ParseError::short_header;
  const Header header = read_header(captured_);
  out.id = header.id;
  out.response = (header.flags & kFlagResponse) != 0;
  out.opcode = header.opcode();
  out.aa = (header.flags & kFlagAa) != 0;
  out.tc = (header.flags & kFlagTc) != 0;
  out.rd = (header.flags & kFlagRd) != 0;
  out.ra = (header.flags & kFlagRa) != 0;
  out.ad = (header.flags & kFlagAd) != 0;
  out.cd = (header.flags & kFlagCd) != 0;
  out.rcode = header.flags & 0x0F;
  out.question_count = header.question_count;
  out.answer_count = header.answer_count;
  out.authority_count = header.authority_count;
  out.additional_count = header.additional_count;
  if (!counts_fit(header, wire_length_)) return ParseError::not_dns;

  const auto finish = [&]() {
    out.cut_short = cut_short_;
    return error_;
  };
  for (std::size_t i = 0; i < header.question_count; ++i) {
    Question question;
    const bool keep = out.questions.size() < limits_.max_questions;
    if (!read_question(keep ? &question : nullptr)) return finish();
    if (keep) out.questions.push_back(std::move(question));
  }
  const std::pair<Section, std::uint16_t> sections[] = {
      {Section::answer, header.answer_count},
      {Section::authority, header.authority_count},
      {Section::additional, header.additional_count}};
  for (const auto& [section, count] : sections) {
    for (std::size_t i = 0; i < count; ++i) {
      if (!read_record(section, out)) return finish();
    }
  }
  // Every counted record is there; the wire says the message goes on.
  if (offset_ != wire_length_) return ParseError::trailing_garbage;
  return ParseError::none;
}

}  // namespace

const char* parse_error_name(ParseError error) noexcept {
  switch (error) {
    case ParseError::none:
      return "none";
    case ParseError::short_header:
      return "short_header";
    case ParseError::bad_name:
      return "bad_name";
    case ParseError::name_loop:
      return "name_loop";
    case ParseError::name_too_long:
      return "name_too_long";
    case ParseError::bad_record:
      return "bad_record";
    case ParseError::trailing_garbage:
      return "trailing_garbage";
    case ParseError::not_dns:
      return "not_dns";
  }
  return "unknown";
}

ParseError parse_message(std::span<const std::byte> bytes, std::size_t wire_length, Message& out,
                         const Limits& limits) {
  return MessageParser(bytes, wire_length, limits).parse(out);
}

std::string type_name(std::uint16_t type) {
  static constexpr Mnemonic kTypes[] = {
      {1, "A"},      {2, "NS"},     {5, "CNAME"}, {6, "SOA"},     {12, "PTR"},   {15, "MX"},
      {16, "TXT"},   {28, "AAAA"},  {33, "SRV"},  {35, "NAPTR"},  {39, "DNAME"}, {41, "OPT"},
      {43, "DS"},    {46, "RRSIG"}, {47, "NSEC"}, {48, "DNSKEY"}, {64, "SVCB"},  {65, "HTTPS"},
      {251, "IXFR"}, {252, "AXFR"}, {255, "ANY"}, {257, "CAA"}};
  return mnemonic(kTypes, type, "TYPE");
}

std::string class_name(std::uint16_t klass) {
  static constexpr Mnemonic kClasses[] = {
      {1, "IN"}, {3, "CH"}, {4, "HS"}, {254, "NONE"}, {255, "ANY"}};
  return mnemonic(kClasses, klass, "CLASS");
}

std::string rcode_name(std::uint16_t rcode) {
  static constexpr Mnemonic kRcodes[] = {{0, "NOERROR"},  {1, "FORMERR"},  {2, "SERVFAIL"},
                                         {3, "NXDOMAIN"}, {4, "NOTIMP"},   {5, "REFUSED"},
                                         {6, "YXDOMAIN"}, {7, "YXRRSET"},  {8, "NXRRSET"},
                                         {9, "NOTAUTH"},  {10, "NOTZONE"}, {16, "BADVERS"}};
  return mnemonic(kRcodes, rcode, "RCODE");
}

std::string opcode_name(std::uint8_t opcode) {
  static constexpr Mnemonic kOpcodes[] = {{0, "QUERY"},  {1, "IQUERY"}, {2, "STATUS"},
                                          {4, "NOTIFY"}, {5, "UPDATE"}, {6, "DSO"}};
  return mnemonic(kOpcodes, opcode, "OPCODE");
}

bool looks_like_dns(std::span<const std::byte> bytes, std::size_t wire_length) noexcept {
  if (bytes.size() < kHeaderSize || wire_length < kHeaderSize + kMinQuestionSize) return false;
  const Header header = read_header(bytes);
  if (!opcode_known(header.opcode()) || (header.flags & kFlagZ) != 0) return false;
  if (header.question_count == 0 || header.question_count > Limits{}.max_questions) return false;
  if (!counts_fit(header, wire_length)) return false;

  // The whole first question must be in the bytes: a capture cut inside it
  // is too little to tell DNS from noise.
  const Limits limits;
  MessageParser parser(bytes, wire_length, limits);
  std::size_t end = 0;
  if (!parser.read_name(kHeaderSize, nullptr, end)) return false;
  if (end + 4 > std::min(bytes.size(), wire_length)) return false;
  const std::uint16_t klass =
      static_cast<std::uint16_t>(std::to_integer<std::uint8_t>(bytes[end + 2]) << 8 |
                                 std::to_integer<std::uint8_t>(bytes[end + 3]));
  // mDNS (RFC 6762 §5.4) borrows the top bit for "unicast response".
  switch (klass & 0x7FFF) {
    case 1:
    case 3:
    case 4:
    case 254:
    case 255:
      return true;
  }
  return false;
}

std::optional<std::uint16_t> tcp_message_length(std::span<const std::byte> bytes) noexcept {
  ByteReader reader(bytes);
  return reader.be16();
}

}  // namespace netwatcher::dns
