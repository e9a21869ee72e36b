#include "redis_resp.hpp"

#include <algorithm>
#include <array>
#include <cstring>
#include <optional>

namespace netwatcher::redis {

namespace {

// Bytes kept of a line whose text matters (simple strings, errors, inline
// commands); the rest is counted, not kept.
constexpr std::size_t kLineKept = 512;

bool is_digit(char c) {
  return c >= '0' && c <= '9';
}
bool is_letter(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}
char upper(char c) {
  return c >= 'a' && c <= 'z' ? static_cast<char>(c - 'a' + 'A') : c;
}
std::string upper(std::string_view text) {
  std::string out(text);
  for (char& c : out) c = upper(c);
  return out;
}

// A decimal length or count: "-1" gives -1, other negatives and non-numbers
// nothing. Values past 2^62 are refused too (no RESP length comes near).
std::optional<std::int64_t> parse_length(std::string_view text) {
  if (text == "-1") return -1;
  if (text.empty() || text.size() > 18) return std::nullopt;
  std::int64_t value = 0;
  for (char c : text) {
    if (!is_digit(c)) return std::nullopt;
    value = value * 10 + (c - '0');
  }
  return value;
}

std::string_view as_text(std::span<const std::byte> bytes) {
  return {reinterpret_cast<const char*>(bytes.data()), bytes.size()};
}

// Two-word commands: the name is the container and its subcommand.
constexpr std::array<std::string_view, 16> kContainers = {
    "ACL",    "CLIENT", "CLUSTER", "COMMAND", "CONFIG", "DEBUG",   "FUNCTION", "LATENCY",
    "MEMORY", "MODULE", "OBJECT",  "PUBSUB",  "SCRIPT", "SLOWLOG", "XGROUP",   "XINFO",
};

// Commands whose first argument is not a key.
constexpr std::array<std::string_view, 60> kKeyless = {
    "PING",         "ECHO",         "INFO",      "SELECT",      "AUTH",       "HELLO",
    "MULTI",        "EXEC",         "DISCARD",   "DBSIZE",      "FLUSHALL",   "FLUSHDB",
    "PUBLISH",      "SPUBLISH",     "SUBSCRIBE", "UNSUBSCRIBE", "PSUBSCRIBE", "PUNSUBSCRIBE",
    "SSUBSCRIBE",   "SUNSUBSCRIBE", "QUIT",      "MONITOR",     "SAVE",       "BGSAVE",
    "BGREWRITEAOF", "TIME",         "LASTSAVE",  "SCAN",        "KEYS",       "RANDOMKEY",
    "WAIT",         "WAITAOF",      "SWAPDB",    "SHUTDOWN",    "SLAVEOF",    "REPLICAOF",
    "PSYNC",        "SYNC",         "REPLCONF",  "EVAL",        "EVALSHA",    "EVAL_RO",
    "EVALSHA_RO",   "FCALL",        "FCALL_RO",  "RESET",       "READONLY",   "READWRITE",
    "ROLE",         "LOLWUT",       "FAILOVER",  "UNWATCH",     "ASKING",     "MOVE",
    "COPY",         "OBJECT",       "MEMORY",    "XINFO",       "XGROUP",     "SORT_RO",
};

// Inline commands are plain text lines: only these first words count as
// Redis when telling a new connection apart (HTTP's "GET / HTTP/1.1" is not).
constexpr std::array<std::string_view, 24> kInlineCommands = {
    "PING",   "ECHO",   "INFO",      "SET",     "GET",  "DEL",      "EXISTS",  "KEYS",
    "AUTH",   "HELLO",  "SELECT",    "DBSIZE",  "INCR", "FLUSHALL", "FLUSHDB", "MONITOR",
    "CONFIG", "CLIENT", "SUBSCRIBE", "PUBLISH", "QUIT", "MULTI",    "EXEC",    "COMMAND",
};

constexpr std::string_view kReplyTypes = "+-:$*_#,(!=%~>|";
// Types whose line is a length or a count.
constexpr std::string_view kHeaderTypes = "$!=*~>%|";

}  // namespace

const char* resp_type_name(RespType type) {
  switch (type) {
    case RespType::simple:
      return "simple";
    case RespType::error:
      return "error";
    case RespType::integer:
      return "integer";
    case RespType::bulk:
      return "bulk";
    case RespType::array:
      return "array";
    case RespType::null:
      return "null";
    case RespType::boolean:
      return "boolean";
    case RespType::double_:
      return "double";
    case RespType::big_number:
      return "big_number";
    case RespType::bulk_error:
      return "bulk_error";
    case RespType::verbatim:
      return "verbatim";
    case RespType::map:
      return "map";
    case RespType::set:
      return "set";
    case RespType::push:
      return "push";
    case RespType::inline_text:
      return "inline";
  }
  return "unknown";
}

const char* resp_error_name(RespError error) {
  switch (error) {
    case RespError::none:
      return "none";
    case RespError::bad_type:
      return "bad_type";
    case RespError::bad_length:
      return "bad_length";
    case RespError::too_long:
      return "too_long";
    case RespError::too_deep:
      return "too_deep";
    case RespError::line_too_long:
      return "line_too_long";
    case RespError::bad_crlf:
      return "bad_crlf";
    case RespError::lost_sync:
      return "lost_sync";
  }
  return "unknown";
}

RespStream::RespStream(bool requests, const Limits& limits) : requests_(requests), limits_(limits) {
  frames_.reserve(limits_.max_depth);
}

void RespStream::reset() {
  state_ = State::start;
  frames_.clear();
  in_message_ = false;
  top_is_attribute_ = false;
  message_ = RespMessage{};
}

void RespStream::begin_message() {
  message_ = RespMessage{};
  message_.start_ns = ns_;
  in_message_ = true;
}

bool RespStream::keeping() const {
  if (frames_.empty()) return true;
  if (frames_.size() != 1 || frames_[0].attribute) return false;
  return message_.strings.size() == frames_[0].done &&
         message_.strings.size() < limits_.kept_strings;
}

void RespStream::keep_scalar(RespType type, std::string_view text) {
  if (frames_.empty()) {
    message_.type = type;
    message_.strings.assign(1, std::string(text.substr(0, limits_.kept_bytes)));
    return;
  }
  if (keeping()) message_.strings.emplace_back(text.substr(0, limits_.kept_bytes));
}

void RespStream::value_done(std::vector<RespMessage>& out) {
  while (!frames_.empty()) {
    Frame& frame = frames_.back();
    ++frame.done;
    if (--frame.remaining > 0) return;
    const bool attribute = frame.attribute;
    frames_.pop_back();
    // An attribute is not a value of its own: the value it annotates follows.
    if (attribute) {
      if (frames_.empty()) top_is_attribute_ = false;
      return;
    }
  }
  out.push_back(std::move(message_));
  message_ = RespMessage{};
  in_message_ = false;
}

RespError RespStream::begin_aggregate(std::uint64_t count, bool attribute, RespType type,
                                      std::vector<RespMessage>& out) {
  if (frames_.empty()) {
    if (attribute) {
      top_is_attribute_ = true;
    } else {
      message_.type = type;
      message_.elements = type == RespType::map ? count / 2 : count;
      message_.strings.clear();
    }
  }
  if (count == 0) {
    if (!attribute) value_done(out);
    return RespError::none;
  }
  if (frames_.size() >= limits_.max_depth) return RespError::too_deep;
  frames_.push_back(Frame{count, 0, attribute});
  return RespError::none;
}

RespError RespStream::on_line(std::vector<RespMessage>& out) {
  std::string_view text = line_;
  state_ = State::start;
  switch (line_type_) {
    case 0: {  // an inline command: words separated by blanks
      std::vector<std::string> words;
      std::uint64_t count = 0;
      std::size_t at = 0;
      while (at < text.size()) {
        while (at < text.size() && (text[at] == ' ' || text[at] == '\t')) ++at;
        if (at == text.size()) break;
        std::size_t end = at;
        while (end < text.size() && text[end] != ' ' && text[end] != '\t') ++end;
        if (words.size() < limits_.kept_strings)
          words.emplace_back(text.substr(at, std::min(end - at, limits_.kept_bytes)));
        ++count;
        at = end;
      }
      if (count == 0) {  // an empty line between commands: Redis ignores it
        in_message_ = false;
        message_ = RespMessage{};
        return RespError::none;
      }
      message_.type = RespType::inline_text;
      message_.elements = count;
      message_.strings = std::move(words);
      out.push_back(std::move(message_));
      message_ = RespMessage{};
      in_message_ = false;
      return RespError::none;
    }
    case '+':
    case '-':
    case ':':
    case ',':
    case '(':
    case '#': {
      static constexpr std::string_view kTypes = "+-:,(#";
      static constexpr RespType kScalar[] = {RespType::simple,     RespType::error,
                                             RespType::integer,    RespType::double_,
                                             RespType::big_number, RespType::boolean};
      keep_scalar(kScalar[kTypes.find(line_type_)], text);
      value_done(out);
      return RespError::none;
    }
    case '_':
      keep_scalar(RespType::null, {});
      value_done(out);
      return RespError::none;
    case '$':
    case '!':
    case '=': {
      auto length = parse_length(text);
      if (!length) return RespError::bad_length;
      if (*length < 0) {
        if (line_type_ != '$') return RespError::bad_length;
        keep_scalar(RespType::null, {});
        value_done(out);
        return RespError::none;
      }
      if (static_cast<std::uint64_t>(*length) > limits_.max_bulk) return RespError::too_long;
      payload_type_ = line_type_ == '$'   ? RespType::bulk
                      : line_type_ == '!' ? RespType::bulk_error
                                          : RespType::verbatim;
      if (frames_.empty()) message_.type = payload_type_;
      payload_left_ = static_cast<std::uint64_t>(*length);
      keep_payload_ = keeping();
      payload_.clear();
      state_ = payload_left_ ? State::payload : State::crlf_cr;
      return RespError::none;
    }
    default: {  // * ~ > % |
      auto count = parse_length(text);
      if (!count) return RespError::bad_length;
      if (*count < 0) {
        if (line_type_ != '*') return RespError::bad_length;
        keep_scalar(RespType::null, {});
        value_done(out);
        return RespError::none;
      }
      const bool pairs = line_type_ == '%' || line_type_ == '|';
      if (static_cast<std::uint64_t>(*count) > limits_.max_elements) return RespError::too_long;
      const std::uint64_t elements = static_cast<std::uint64_t>(*count) * (pairs ? 2 : 1);
      const RespType type = line_type_ == '*'   ? RespType::array
                            : line_type_ == '~' ? RespType::set
                            : line_type_ == '>' ? RespType::push
                                                : RespType::map;
      return begin_aggregate(elements, line_type_ == '|', type, out);
    }
  }
}

RespError RespStream::feed(std::span<const std::byte> bytes, std::uint64_t ns,
                           std::vector<RespMessage>& out) {
  ns_ = ns;
  const char* data = reinterpret_cast<const char*>(bytes.data());
  std::size_t at = 0;
  const std::size_t size = bytes.size();
  while (at < size) {
    switch (state_) {
      case State::start: {
        const char c = data[at];
        if (!in_message_) begin_message();
        if (requests_ && frames_.empty() && !top_is_attribute_ && c != '*') {
          line_type_ = 0;  // inline: the byte is part of the line
        } else {
          if (kReplyTypes.find(c) == std::string_view::npos) return RespError::bad_type;
          line_type_ = c;
          ++at;
          ++message_.bytes;
        }
        line_.clear();
        line_length_ = 0;
        line_cr_ = false;
        state_ = State::line;
        break;
      }
      case State::line: {
        const void* found = std::memchr(data + at, '\n', size - at);
        const std::size_t end =
            found ? static_cast<std::size_t>(static_cast<const char*>(found) - data) : size;
        const std::size_t n = end - at;
        // Lengths and counts need a few digits; other lines are text.
        const bool header =
            line_type_ != 0 && kHeaderTypes.find(line_type_) != std::string_view::npos;
        const std::size_t limit = header ? std::size_t{24} : kLineKept;
        if (line_.size() < limit) line_.append(data + at, std::min(n, limit - line_.size()));
        if (n) line_cr_ = data[end - 1] == '\r';
        line_length_ += n;
        message_.bytes += n;
        at = end;
        if (line_length_ > limits_.max_line) return RespError::line_too_long;
        if (!found) break;
        ++at;  // the '\n'
        ++message_.bytes;
        // RESP lines end in \r\n; an inline command may end in \n alone.
        if (line_cr_) {
          if (line_.size() == line_length_) line_.pop_back();
        } else if (line_type_ != 0) {
          return RespError::bad_crlf;
        }
        // A length or count longer than what was kept is no length we take.
        if (header && line_.size() < line_length_ - (line_cr_ ? 1 : 0))
          return RespError::bad_length;
        if (RespError e = on_line(out); e != RespError::none) return e;
        break;
      }
      case State::payload: {
        const std::size_t n =
            static_cast<std::size_t>(std::min<std::uint64_t>(payload_left_, size - at));
        if (keep_payload_ && payload_.size() < limits_.kept_bytes)
          payload_.append(data + at, std::min(n, limits_.kept_bytes - payload_.size()));
        payload_left_ -= n;
        message_.bytes += n;
        at += n;
        if (payload_left_ == 0) state_ = State::crlf_cr;
        break;
      }
      case State::crlf_cr:
        if (data[at] != '\r') return RespError::bad_crlf;
        ++at;
        ++message_.bytes;
        state_ = State::crlf_lf;
        break;
      case State::crlf_lf:
        if (data[at] != '\n') return RespError::bad_crlf;
        ++at;
        ++message_.bytes;
        state_ = State::start;
        keep_scalar(payload_type_, payload_);
        value_done(out);
        break;
    }
  }
  return RespError::none;
}

RespError RespStream::skip(std::uint64_t count, std::vector<RespMessage>& out) {
  if (count == 0) return RespError::none;
  if (in_message_) message_.cut = true;
  while (count > 0) {
    switch (state_) {
      case State::payload: {
        const std::uint64_t n = std::min(count, payload_left_);
        payload_left_ -= n;
        message_.bytes += n;
        count -= n;
        if (payload_left_ == 0) state_ = State::crlf_cr;
        break;
      }
      case State::crlf_cr:
        --count;
        ++message_.bytes;
        state_ = State::crlf_lf;
        break;
      case State::crlf_lf:
        --count;
        ++message_.bytes;
        state_ = State::start;
        keep_scalar(payload_type_, payload_);
        value_done(out);
        break;
      default:
        return RespError::lost_sync;
    }
  }
  return RespError::none;
}

bool command_shaped(std::string_view word) {
  if (word.empty() || word.size() > 32 || !is_letter(word[0])) return false;
  return std::all_of(word.begin(), word.end(), [](char c) {
    return is_letter(c) || is_digit(c) || c == '_' || c == '-' || c == '.' || c == '|';
  });
}

std::string command_name(const std::vector<std::string>& args) {
  if (args.empty() || !command_shaped(args[0])) return {};
  std::string name = upper(args[0]);
  if (args.size() >= 2 && command_shaped(args[1]) &&
      std::find(kContainers.begin(), kContainers.end(), name) != kContainers.end()) {
    // Appended in two steps: gcc 12 at -O2 misreads `" " + std::string` as
    // an overlapping copy (-Wrestrict).
    name += ' ';
    name += upper(args[1]);
  }
  return name;
}

std::size_t name_words(std::string_view command) {
  return command.find(' ') == std::string_view::npos ? 1 : 2;
}

bool has_key(std::string_view command) {
  const std::string_view first = command.substr(0, command.find(' '));
  if (name_words(command) == 2) {
    if (first == "OBJECT" || first == "XINFO") return true;
    if (first == "XGROUP") return command != "XGROUP HELP";
    return command == "MEMORY USAGE";
  }
  if (std::find(kContainers.begin(), kContainers.end(), first) != kContainers.end()) return false;
  return std::find(kKeyless.begin(), kKeyless.end(), first) == kKeyless.end();
}

int looks_like_command(std::span<const std::byte> captured, std::size_t wire_length) {
  const std::string_view text = as_text(captured);
  const bool whole = captured.size() >= wire_length;
  if (text.empty()) return -1;
  // Too few bytes to tell, but all this packet had: the next may tell.
  const int short_answer = whole ? -1 : 0;
  if (text[0] == '*') {
    // *<count>\r\n$<length>\r\n<name>\r\n
    std::size_t at = 1;
    auto number = [&](std::uint64_t max) -> std::optional<std::uint64_t> {
      std::uint64_t value = 0;
      std::size_t digits = 0;
      while (at < text.size() && is_digit(text[at]) && digits < 8) {
        value = value * 10 + static_cast<std::uint64_t>(text[at] - '0');
        ++at;
        ++digits;
      }
      if (digits == 0 || value > max) return std::nullopt;
      return value;
    };
    auto crlf = [&]() -> int {
      if (at + 2 > text.size()) return at + 1 == text.size() && text[at] != '\r' ? 0 : -1;
      if (text[at] != '\r' || text[at + 1] != '\n') return 0;
      at += 2;
      return 1;
    };
    if (at >= text.size()) return short_answer;
    auto count = number(1 << 20);
    if (!count || *count == 0) return at >= text.size() ? short_answer : 0;
    if (int c = crlf(); c != 1) return c < 0 ? short_answer : 0;
    if (at >= text.size()) return short_answer;
    if (text[at++] != '$') return 0;
    if (at >= text.size()) return short_answer;
    auto length = number(32);
    if (!length || *length == 0) return at >= text.size() ? short_answer : 0;
    if (int c = crlf(); c != 1) return c < 0 ? short_answer : 0;
    if (at + *length + 2 > text.size()) {
      // The part of the name there must be shaped like one.
      const std::string_view part = text.substr(at);
      const std::string_view name = part.substr(0, std::min<std::size_t>(part.size(), *length));
      if (!name.empty() && !command_shaped(name)) return 0;
      return short_answer;
    }
    if (!command_shaped(text.substr(at, *length))) return 0;
    at += *length;
    return text[at] == '\r' && text[at + 1] == '\n' ? 1 : 0;
  }
  if (!is_letter(text[0])) return 0;
  const std::size_t end = text.find('\n');
  if (end == std::string_view::npos) return text.size() < 64 ? short_answer : 0;
  std::string_view line = text.substr(0, end);
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  if (line.find(" HTTP/") != std::string_view::npos) return 0;
  const std::string word = upper(line.substr(0, line.find(' ')));
  return std::find(kInlineCommands.begin(), kInlineCommands.end(), word) != kInlineCommands.end()
             ? 1
             : 0;
}

int looks_like_reply(std::span<const std::byte> captured, std::size_t wire_length) {
  const std::string_view text = as_text(captured);
  if (text.empty()) return -1;
  if (kReplyTypes.find(text[0]) == std::string_view::npos) return 0;
  // Only a whole packet that is whole replies tells: a cut one says nothing.
  if (captured.size() < wire_length) return 0;
  if (text[0] == '+') {
    if (text != "+OK\r\n" && text != "+PONG\r\n" && text != "+QUEUED\r\n") return 0;
  } else if (text[0] == '-') {
    static constexpr std::string_view kPrefixes[] = {
        "ERR",        "WRONGTYPE",  "NOAUTH",    "NOPERM",      "MOVED",     "ASK",
        "LOADING",    "BUSY",       "NOSCRIPT",  "READONLY",    "EXECABORT", "OOM",
        "MASTERDOWN", "NOREPLICAS", "CROSSSLOT", "CLUSTERDOWN", "TRYAGAIN",  "WRONGPASS"};
    const std::string_view prefix = text.substr(1, text.find_first_of(" \r", 1) - 1);
    if (std::find(std::begin(kPrefixes), std::end(kPrefixes), prefix) == std::end(kPrefixes))
      return 0;
  }
  RespStream stream(false);
  std::vector<RespMessage> replies;
  if (stream.feed(captured, 0, replies) != RespError::none || replies.empty() ||
      !stream.at_boundary())
    return 0;
  return 1;
}

}  // namespace netwatcher::redis
