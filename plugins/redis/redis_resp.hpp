// RESP (the Redis serialization protocol, RESP2 and RESP3) read
// incrementally from captured TCP bytes.
//
// The bytes are untrusted and arrive in pieces: a message may span many
// segments, a segment may hold many messages, and the capture may keep only
// the start of a segment. RespStream is fed the captured bytes and told how
// many bytes were not captured (skip()); it keeps only a bounded summary of
// each message (its type, size, element count and the first few strings)
// and never allocates or buffers by a length the bytes announce, so a lying
// length costs nothing but the bytes it swallows, within Limits.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace netwatcher::redis {

enum class RespType : std::uint8_t {
  simple,       // +
  error,        // -
  integer,      // :
  bulk,         // $
  array,        // *
  null,         // _ (and RESP2's $-1 / *-1)
  boolean,      // #
  double_,      // ,
  big_number,   // (
  bulk_error,   // !
  verbatim,     // =
  map,          // %
  set,          // ~
  push,         // >
  inline_text,  // a command written as a plain line (requests only)
};

// "simple", "error", ... as reported in events.
const char* resp_type_name(RespType type);

enum class RespError : std::uint8_t {
  none,
  bad_type,       // a byte that starts no RESP value
  bad_length,     // a length or count that is not a number, or negative
  too_long,       // a bulk length over Limits::max_bulk, or a count over max_elements
  too_deep,       // aggregates nested deeper than Limits::max_depth
  line_too_long,  // no line end within Limits::max_line
  bad_crlf,       // a bulk payload not followed by \r\n
  lost_sync,      // bytes that were not captured where the framing had to be read
};

// "bad_type", ... for the parse-error counter.
const char* resp_error_name(RespError error);

struct Limits {
  std::uint64_t max_bulk = 512ull * 1024 * 1024;  // redis-server's proto-max-bulk-len
  std::uint64_t max_elements = 1ull << 24;        // elements of one aggregate
  std::size_t max_depth = 16;                     // aggregates inside aggregates
  std::size_t max_line = 64 * 1024;               // a simple line (and inline commands)
  std::size_t kept_strings = 3;                   // top-level strings kept per message
  std::size_t kept_bytes = 128;                   // bytes kept of each string
};

// One top-level value: a command (an array of bulk strings, or an inline
// line) or a reply.
struct RespMessage {
  RespType type = RespType::null;
  std::uint64_t bytes = 0;  // on the wire, leading attributes included
  // Elements of an aggregate as its header says (pairs for a map), words of
  // an inline command; 0 for scalars.
  std::uint64_t elements = 0;
  // The value of a scalar (first kept_bytes of it), or the first kept_strings
  // top-level scalar elements of an aggregate; words of an inline command.
  std::vector<std::string> strings;
  bool cut = false;            // some of its bytes were not captured
  std::uint64_t start_ns = 0;  // time of the piece its first byte came in
};

// A stream of RESP values in one direction of one connection.
class RespStream {
 public:
  // `requests`: the client's direction, where a line that does not start
  // with '*' is an inline command.
  explicit RespStream(bool requests, const Limits& limits = {});

  // Parses `bytes` (the next bytes of the stream, captured at `ns`),
  // appending each value that ends in them to `out`. After an error the
  // stream is broken until reset().
  RespError feed(std::span<const std::byte> bytes, std::uint64_t ns, std::vector<RespMessage>& out);
  // `count` bytes of the stream that were not captured. Fine inside a bulk
  // payload (they are skipped by its length, however many segments it
  // spans); anywhere else the framing is lost (lost_sync).
  RespError skip(std::uint64_t count, std::vector<RespMessage>& out);

  // Forget everything: the next byte starts a new value.
  void reset();
  // The value begun and not ended, if any: its type (once its first line
  // was read), bytes so far and strings kept so far.
  const RespMessage* partial() const { return in_message_ ? &message_ : nullptr; }
  // Between two values (no value begun).
  bool at_boundary() const { return state_ == State::start && frames_.empty() && !in_message_; }

 private:
  enum class State : std::uint8_t { start, line, payload, crlf_cr, crlf_lf };
  struct Frame {
    std::uint64_t remaining = 0;  // elements still to come
    std::uint64_t done = 0;       // elements ended
    bool attribute = false;       // an attribute (|): the value it annotates follows
  };

  RespError on_line(std::vector<RespMessage>& out);
  RespError begin_aggregate(std::uint64_t count, bool attribute, RespType type,
                            std::vector<RespMessage>& out);
  // A value (scalar or aggregate) ended: climbs the frames, ends the
  // message when the top level completes.
  void value_done(std::vector<RespMessage>& out);
  void keep_scalar(RespType type, std::string_view text);
  // Whether the value beginning now is one of the strings the message keeps.
  bool keeping() const;
  void begin_message();

  bool requests_;
  Limits limits_;
  State state_ = State::start;
  // The line being read: its type byte, the first bytes of it and its length.
  char line_type_ = 0;
  std::string line_;
  std::size_t line_length_ = 0;
  bool line_cr_ = false;  // the last byte of the line so far was '\r'
  // The bulk payload being read: bytes still to come, and the kept prefix.
  std::uint64_t payload_left_ = 0;
  RespType payload_type_ = RespType::bulk;
  bool keep_payload_ = false;
  std::string payload_;
  // Aggregates open around the current value, at most max_depth.
  std::vector<Frame> frames_;
  bool in_message_ = false;
  bool top_is_attribute_ = false;  // the top-level value begun is an attribute
  RespMessage message_;
  std::uint64_t ns_ = 0;
};

// Upper-case name of a command, and for container commands (CONFIG GET,
// CLIENT SETNAME, ...) the two words; empty when the first word is not
// shaped like a command name.
std::string command_name(const std::vector<std::string>& args);
// Whether `word` is shaped like a command name: 1..32 letters, digits, '_',
// '-', '.' or '|', starting with a letter.
bool command_shaped(std::string_view word);
// Whether the command named by command_name() takes the name of a key after
// its name's words (GET, SET, HGET, OBJECT ENCODING...; not PING, SELECT,
// CONFIG GET, PUBLISH, EVAL...).
bool has_key(std::string_view command);
// How many words command_name() took: 1 or 2.
std::size_t name_words(std::string_view command);

// Whether the first bytes a socket sent or received (`captured` of
// `wire_length`) are a Redis command: an array of bulk strings whose first
// element is shaped like a command name, or an inline command naming a
// common one. yes / no / maybe (too few bytes to tell) as 1 / 0 / -1.
int looks_like_command(std::span<const std::byte> captured, std::size_t wire_length);
// Whether they are a whole reply as a server sends one (+OK, -ERR ..., :1,
// $3 abc, ...): how a connection seen only from its middle is recognised.
int looks_like_reply(std::span<const std::byte> captured, std::size_t wire_length);

}  // namespace netwatcher::redis
