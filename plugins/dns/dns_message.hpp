// DNS messages (RFC 1035 §4.1, compression §4.1.4; EDNS(0) OPT, RFC 6891;
// AAAA, RFC 3596; TCP framing, RFC 7766) read from captured traffic.
//
// The bytes are untrusted and may stop short of the message: a capture keeps
// only the first N bytes of a datagram or segment. Every function here reads
// only inside the span it is given, throws nothing of its own (only
// std::bad_alloc from the strings it fills could escape) and does work bounded
// by the message size and the Limits.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace netwatcher::dns {

struct Limits {
  // How many questions and answer-section records are kept in a Message.
  // Records beyond these are still walked (to find the OPT record and to
  // tell a well-formed message from garbage), just not kept.
  std::size_t max_questions = 4;
  std::size_t max_answers = 16;
  // Longest name accepted, counted on the wire (length bytes and the final
  // root byte included), as RFC 1035 §3.1 counts its 255.
  std::size_t max_name_length = 255;
  // Compression pointers followed within one name before it counts as a loop.
  std::size_t max_pointer_jumps = 16;
};

// Names are kept in the case they have on the wire, without a trailing dot;
// the root is ".". Label bytes that are not printable ASCII, and "." or "\"
// inside a label, are written as in master files (RFC 1035 §5.1): "\DDD"
// (decimal) or "\." / "\\", so a name is always one safe line of text.
struct Question {
  std::string name;
  std::uint16_t type = 0, klass = 0;
};

struct Answer {
  std::string name;
  std::uint16_t type = 0, klass = 0;
  std::uint32_t ttl = 0;
  // A/AAAA: the address as text ("192.0.2.1", "2001:db8::1");
  // CNAME/NS/PTR/DNAME: the target name; MX: "preference name";
  // SRV: "priority weight port target"; TXT: its strings joined by one space,
  // cut at 255 characters (non-printable bytes and "\" escaped as in names);
  // any other type: empty.
  std::string value;
};

struct Message {
  std::uint16_t id = 0;
  bool response = false;
  std::uint8_t opcode = 0;
  bool aa = false, tc = false, rd = false, ra = false, ad = false, cd = false;
  // The header's 4 bits, extended by the OPT record's upper 8 bits when
  // there is one (so BADVERS reads 16).
  std::uint16_t rcode = 0;
  // As in the header, whatever was kept or parsed.
  std::uint16_t question_count = 0, answer_count = 0, authority_count = 0, additional_count = 0;
  std::vector<Question> questions;  // at most Limits::max_questions
  std::vector<Answer> answers;      // answer section only, at most Limits::max_answers
  // From the OPT record in the additional section (RFC 6891 §6.1.3).
  bool edns = false;
  std::uint16_t edns_udp_size = 0;
  std::uint8_t edns_version = 0;
  bool edns_do = false;
  // The captured bytes ended before the message did. What was complete
  // (the header, every whole question and answer) is kept.
  bool cut_short = false;
};

enum class ParseError : std::uint8_t {
  none,
  short_header,      // fewer than 12 bytes captured, or a message shorter than a header
  bad_name,          // a label type other than 0/pointer, a pointer that does not go back, a
                     // name running past the end of the message
  name_loop,         // more than Limits::max_pointer_jumps pointers in one name
  name_too_long,     // longer than Limits::max_name_length on the wire
  bad_record,        // a question or record running past the end of the message, or RDATA
                     // that does not fit its type (an A record of 5 bytes, a second OPT)
  trailing_garbage,  // bytes after the last record the header counts
  not_dns,           // the header's counts cannot fit in the message: not DNS at all
};

// "none", "short_header", ... (usable as metric label values).
const char* parse_error_name(ParseError error) noexcept;

// Parses one message. `wire_length` is its real length (the datagram's
// payload length, or the TCP length prefix); `bytes` may be shorter (the part
// that was captured) or longer (bytes past wire_length are not looked at).
//
// Running out of captured bytes before wire_length is not an error: `out`
// gets cut_short and everything that was complete, and the result is none.
// Running out at wire_length is a malformed message, and so is a name or
// record that needs bytes beyond wire_length. On an error `out` holds what
// was parsed before it. `out` is reset first.
ParseError parse_message(std::span<const std::byte> bytes, std::size_t wire_length, Message& out,
                         const Limits& limits = {});

// Mnemonics for metric labels and logs; unknown values as RFC 3597 writes
// them ("TYPE65535", "CLASS42") and likewise "RCODE<n>", "OPCODE<n>".
std::string type_name(std::uint16_t type);
std::string class_name(std::uint16_t klass);
std::string rcode_name(std::uint16_t rcode);
std::string opcode_name(std::uint8_t opcode);

// Cheap content detection, for deciding whether a socket speaks DNS at all:
// true when the bytes start with a plausible header and a whole first
// question: a known opcode, the Z bit clear, 1 to Limits{}.max_questions
// questions, section counts that fit in `wire_length`, a well-formed first
// name (no compression: nothing precedes it) and a known class (the mDNS
// unicast-response bit aside). False for HTTP, TLS, Redis, zeros and random
// bytes. For TCP pass the bytes after the 2-byte length, and that length.
bool looks_like_dns(std::span<const std::byte> bytes, std::size_t wire_length) noexcept;

// TCP framing (RFC 7766 §8): the length of the next message, read from its
// 2-byte prefix; nullopt while fewer than 2 bytes are there.
std::optional<std::uint16_t> tcp_message_length(std::span<const std::byte> bytes) noexcept;

}  // namespace netwatcher::dns
