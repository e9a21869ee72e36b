#include "mysql_protocol.hpp"

#include <algorithm>
#include <cctype>
#include <cstdio>

namespace netwatcher::mysql {

namespace {

// MySQL 8's COM_QUERY carries query attributes before the text with this.
constexpr std::uint32_t kQueryAttributes = 0x08000000;

std::uint8_t at(std::span<const std::byte> bytes, std::size_t i) noexcept {
  return static_cast<std::uint8_t>(bytes[i]);
}

std::optional<std::uint16_t> le16(std::span<const std::byte> bytes, std::size_t offset) noexcept {
  if (offset > bytes.size() || bytes.size() - offset < 2) return std::nullopt;
  return static_cast<std::uint16_t>(at(bytes, offset) | at(bytes, offset + 1) << 8);
}

std::optional<std::uint32_t> le32(std::span<const std::byte> bytes, std::size_t offset) noexcept {
  if (offset > bytes.size() || bytes.size() - offset < 4) return std::nullopt;
  std::uint32_t v = 0;
  for (int i = 3; i >= 0; --i) v = v << 8 | at(bytes, offset + static_cast<std::size_t>(i));
  return v;
}

// Whether a cut after `size` bytes of `text` falls inside a UTF-8 sequence;
// returns the size that ends at a character boundary.
std::size_t utf8_boundary(std::string_view text, std::size_t size) noexcept {
  std::size_t start = size;
  while (start > 0 && size - start < 4 &&
         (static_cast<unsigned char>(text[start - 1]) & 0xc0) == 0x80)
    --start;
  if (start == 0) return size;
  const auto lead = static_cast<unsigned char>(text[start - 1]);
  std::size_t need = lead >= 0xf0 ? 4 : lead >= 0xe0 ? 3 : lead >= 0xc0 ? 2 : 1;
  return size - (start - 1) >= need ? size : start - 1;
}

// At most `max_keep` bytes of `raw` as one safe line of text: control bytes
// become '?', a cut never splits a UTF-8 character.
std::string bounded_text(std::string_view raw, std::size_t max_keep) {
  std::size_t keep = std::min(raw.size(), max_keep);
  if (keep < raw.size()) keep = utf8_boundary(raw, keep);
  std::string out(raw.substr(0, keep));
  for (char& c : out) {
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x20 && c != '\t' && c != '\n' && c != '\r') c = '?';
    if (u == 0x7f) c = '?';
  }
  return out;
}

std::string_view chars(std::span<const std::byte> bytes, std::size_t offset, std::size_t n) {
  return {reinterpret_cast<const char*>(bytes.data()) + offset, n};
}

// A NUL-terminated string at *offset: its bytes, and *offset past the NUL.
// nullopt when no NUL comes within the bytes.
std::optional<std::string_view> read_nul_string(std::span<const std::byte> bytes,
                                                std::size_t* offset) {
  for (std::size_t i = *offset; i < bytes.size(); ++i) {
    if (at(bytes, i) == 0) {
      auto s = chars(bytes, *offset, i - *offset);
      *offset = i + 1;
      return s;
    }
  }
  return std::nullopt;
}

bool skip(std::span<const std::byte> bytes, std::size_t* offset, std::uint64_t n) noexcept {
  if (*offset > bytes.size() || bytes.size() - *offset < n) return false;
  *offset += static_cast<std::size_t>(n);
  return true;
}

const char* const kCommandNames[] = {
    "COM_SLEEP",
    "COM_QUIT",
    "COM_INIT_DB",
    "COM_QUERY",
    "COM_FIELD_LIST",
    "COM_CREATE_DB",
    "COM_DROP_DB",
    "COM_REFRESH",
    "COM_SHUTDOWN",
    "COM_STATISTICS",
    "COM_PROCESS_INFO",
    "COM_CONNECT",
    "COM_PROCESS_KILL",
    "COM_DEBUG",
    "COM_PING",
    "COM_TIME",
    "COM_DELAYED_INSERT",
    "COM_CHANGE_USER",
    "COM_BINLOG_DUMP",
    "COM_TABLE_DUMP",
    "COM_CONNECT_OUT",
    "COM_REGISTER_SLAVE",
    "COM_STMT_PREPARE",
    "COM_STMT_EXECUTE",
    "COM_STMT_SEND_LONG_DATA",
    "COM_STMT_CLOSE",
    "COM_STMT_RESET",
    "COM_SET_OPTION",
    "COM_STMT_FETCH",
    "COM_DAEMON",
    "COM_BINLOG_DUMP_GTID",
    "COM_RESET_CONNECTION",
};

}  // namespace

std::string command_name(std::uint8_t command) {
  if (command < std::size(kCommandNames)) return kCommandNames[command];
  if (command == 0xfe) return "COM_MULTI";  // MariaDB's batch of commands
  char buffer[16];
  std::snprintf(buffer, sizeof buffer, "COM_0x%02x", command);
  return buffer;
}

bool command_has_response(std::uint8_t command) noexcept {
  return command != com_quit && command != com_stmt_close && command != com_stmt_send_long_data;
}

std::optional<std::uint64_t> read_lenenc_int(std::span<const std::byte> bytes,
                                             std::size_t* offset) noexcept {
  if (*offset >= bytes.size()) return std::nullopt;
  const std::uint8_t first = at(bytes, *offset);
  std::size_t size = 0;
  if (first < 0xfb) {
    *offset += 1;
    return first;
  }
  if (first == 0xfc)
    size = 2;
  else if (first == 0xfd)
    size = 3;
  else if (first == 0xfe)
    size = 8;
  else
    return std::nullopt;  // 0xfb is NULL in rows, 0xff an error: neither is a length
  if (bytes.size() - *offset - 1 < size) return std::nullopt;
  std::uint64_t v = 0;
  for (std::size_t i = size; i > 0; --i) v = v << 8 | at(bytes, *offset + i);
  *offset += 1 + size;
  return v;
}

std::optional<std::string> read_lenenc_string(std::span<const std::byte> bytes, std::size_t* offset,
                                              std::size_t max_keep) {
  std::size_t o = *offset;
  auto length = read_lenenc_int(bytes, &o);
  if (!length || bytes.size() - o < *length) return std::nullopt;
  std::string s = bounded_text(chars(bytes, o, static_cast<std::size_t>(*length)), max_keep);
  *offset = o + static_cast<std::size_t>(*length);
  return s;
}

bool looks_like_greeting(std::span<const std::byte> body) noexcept {
  if (body.size() < 2 || at(body, 0) != 10) return false;
  std::size_t i = 1;
  for (; i < body.size() && at(body, i) != 0; ++i) {
    const std::uint8_t c = at(body, i);
    if (c < 0x20 || c > 0x7e || i > 64) return false;
  }
  if (i == 1) return false;           // an empty version
  if (i == body.size()) return true;  // the capture ended inside the version
  // The NUL, the connection id and 8 bytes of auth data, then a zero filler.
  const std::size_t filler = i + 1 + 4 + 8;
  if (filler < body.size() && at(body, filler) != 0) return false;
  // With the lower capability flags: the server speaks protocol 4.1.
  if (auto caps = le16(body, filler + 1); caps && !(*caps & capability::protocol_41)) return false;
  return true;
}

std::optional<Greeting> parse_greeting(std::span<const std::byte> body) {
  if (!looks_like_greeting(body)) return std::nullopt;
  Greeting g;
  g.protocol_version = at(body, 0);
  std::size_t o = 1;
  auto version = read_nul_string(body, &o);
  if (!version) return std::nullopt;
  g.server_version = bounded_text(*version, 64);
  auto id = le32(body, o);
  if (!id) return g;
  g.connection_id = *id;
  o += 4 + 8 + 1;
  auto lower = le16(body, o);
  if (!lower) return g;
  g.capabilities = *lower;
  o += 2;
  if (o + 5 > body.size()) return g;
  g.charset = at(body, o);
  g.status = *le16(body, o + 1);
  g.capabilities |= std::uint32_t{*le16(body, o + 3)} << 16;
  o += 5;
  if (o >= body.size()) return g;
  const std::uint8_t auth_length = at(body, o);
  o += 1 + 10;  // the reserved bytes
  if (g.capabilities & capability::secure_connection)
    o += std::max<std::size_t>(13, auth_length > 8 ? auth_length - 8u : 0u);
  if ((g.capabilities & capability::plugin_auth) && o < body.size()) {
    std::size_t p = o;
    if (auto plugin = read_nul_string(body, &p)) g.auth_plugin = bounded_text(*plugin, 64);
  }
  return g;
}

bool looks_like_handshake_response(std::span<const std::byte> body,
                                   std::size_t body_length) noexcept {
  if (body_length < 32 || body.size() < 32) return false;
  auto caps = le32(body, 0);
  auto max_packet = le32(body, 4);
  if (!(*caps & capability::protocol_41)) return false;
  if (*max_packet == 0 && !(*caps & capability::ssl)) return false;
  for (std::size_t i = 9; i < 28; ++i)
    if (at(body, i) != 0) return false;
  if (body_length == 32) return (*caps & capability::ssl) != 0;
  return true;
}

std::optional<HandshakeResponse> parse_handshake_response(std::span<const std::byte> body,
                                                          std::size_t body_length,
                                                          std::size_t max_name) {
  if (!looks_like_handshake_response(body, body_length)) return std::nullopt;
  HandshakeResponse r;
  r.capabilities = *le32(body, 0);
  r.max_packet = *le32(body, 4);
  r.charset = at(body, 8);
  r.mariadb_capabilities = *le32(body, 28);
  if (body_length == 32) {
    r.ssl_request = true;
    return r;
  }
  std::size_t o = 32;
  auto user = read_nul_string(body, &o);
  if (!user) return r;  // cut before the user name ends
  r.user = bounded_text(*user, max_name);
  // The auth response: skipped by its length, never copied.
  if (r.capabilities & capability::plugin_auth_lenenc_data) {
    auto length = read_lenenc_int(body, &o);
    if (!length || !skip(body, &o, *length)) return r;
  } else if (r.capabilities & capability::secure_connection) {
    if (o >= body.size() || !skip(body, &o, 1u + at(body, o))) return r;
  } else if (!read_nul_string(body, &o)) {
    return r;
  }
  if (r.capabilities & capability::connect_with_db) {
    auto db = read_nul_string(body, &o);
    if (!db) return r;
    r.database = bounded_text(*db, max_name);
  }
  if (r.capabilities & capability::plugin_auth) {
    if (auto plugin = read_nul_string(body, &o)) r.auth_plugin = bounded_text(*plugin, 64);
  }
  return r;
}

std::optional<CommandPacket> parse_command(std::span<const std::byte> body, std::size_t body_length,
                                           std::size_t max_statement, std::uint32_t capabilities) {
  if (body.empty() || body_length == 0) return std::nullopt;
  CommandPacket c;
  c.command = at(body, 0);
  std::size_t o = 1;
  switch (c.command) {
    case com_query:
      if (capabilities & kQueryAttributes) {
        // Parameter count and set count; with parameters the text comes after
        // their types and values, which are not read.
        auto count = read_lenenc_int(body, &o);
        if (!count || !read_lenenc_int(body, &o) || *count != 0) return c;
      }
      [[fallthrough]];
    case com_stmt_prepare:
    case com_init_db:
    case com_create_db:
    case com_drop_db:
    case com_field_list: {
      std::string_view raw = chars(body, o, body.size() - o);
      if (c.command == com_field_list) raw = raw.substr(0, raw.find('\0'));
      c.text = bounded_text(raw, max_statement);
      c.text_cut = body_length - o > c.text.size();
      break;
    }
    case com_stmt_execute:
    case com_stmt_close:
    case com_stmt_reset:
    case com_stmt_send_long_data:
    case com_stmt_fetch:
      if (auto id = le32(body, o)) c.statement_id = *id;
      break;
    case com_change_user: {
      auto user = read_nul_string(body, &o);
      if (!user) break;
      c.user = bounded_text(*user, 64);
      if (capabilities & capability::secure_connection) {
        if (o >= body.size() || !skip(body, &o, 1u + at(body, o))) break;
      } else if (!read_nul_string(body, &o)) {
        break;
      }
      if (auto db = read_nul_string(body, &o)) c.database = bounded_text(*db, 64);
      break;
    }
    default:
      break;
  }
  return c;
}

std::optional<std::string> use_statement_database(std::string_view s) {
  auto space = [](char ch) { return std::isspace(static_cast<unsigned char>(ch)) != 0; };
  // Leading space and /* comments */ (clients that keep comments send them).
  for (;;) {
    while (!s.empty() && space(s.front())) s.remove_prefix(1);
    if (s.substr(0, 2) != "/*") break;
    const auto end = s.find("*/", 2);
    if (end == std::string_view::npos) return std::nullopt;
    s.remove_prefix(end + 2);
  }
  while (!s.empty() && (space(s.back()) || s.back() == ';')) s.remove_suffix(1);
  if (s.size() < 5) return std::nullopt;
  for (std::size_t i = 0; i < 3; ++i)
    if (std::tolower(static_cast<unsigned char>(s[i])) != "use"[i]) return std::nullopt;
  if (!space(s[3])) return std::nullopt;
  s.remove_prefix(4);
  while (!s.empty() && space(s.front())) s.remove_prefix(1);
  if (s.size() >= 2 && s.front() == '`' && s.back() == '`') {
    s = s.substr(1, s.size() - 2);
  } else {
    for (char ch : s)
      if (space(ch) || ch == '`') return std::nullopt;
  }
  if (s.empty() || s.size() > 64) return std::nullopt;
  return std::string(s);
}

std::string normalize_statement(std::string_view s, std::size_t max_size) {
  std::string out;
  auto word_char = [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '$' ||
           static_cast<unsigned char>(c) >= 0x80;
  };
  auto put = [&](char c) {
    if (c == ' ' && (out.empty() || out.back() == ' ')) return;
    out.push_back(c);
  };
  std::size_t i = 0;
  while (i < s.size() && out.size() < max_size) {
    const char c = s[i];
    if (std::isspace(static_cast<unsigned char>(c))) {
      put(' ');
      ++i;
    } else if (c == '/' && i + 1 < s.size() && s[i + 1] == '*') {
      const auto end = s.find("*/", i + 2);
      i = end == std::string_view::npos ? s.size() : end + 2;
      put(' ');
    } else if (c == '\'' || c == '"') {
      // A string: backslash escapes and doubled quotes stay inside it.
      ++i;
      while (i < s.size()) {
        if (s[i] == '\\') {
          i += 2;
        } else if (s[i] == c) {
          if (i + 1 < s.size() && s[i + 1] == c) {
            i += 2;
          } else {
            ++i;
            break;
          }
        } else {
          ++i;
        }
      }
      put('?');
    } else if (c == '`') {
      const auto end = s.find('`', i + 1);
      const std::size_t stop = end == std::string_view::npos ? s.size() : end + 1;
      for (; i < stop; ++i) out.push_back(s[i]);
    } else if (std::isdigit(static_cast<unsigned char>(c)) && (i == 0 || !word_char(s[i - 1]))) {
      // A number: 42, 4.2, 4e2, 0x2a.
      while (i < s.size() && (word_char(s[i]) || s[i] == '.')) ++i;
      put('?');
    } else {
      const auto u = static_cast<unsigned char>(c);
      out.push_back(u < 0x20 || u == 0x7f ? '?' : c);
      ++i;
    }
  }
  while (!out.empty() && out.back() == ' ') out.pop_back();
  if (out.size() > max_size) out.resize(utf8_boundary(out, max_size));
  return out;
}

std::optional<OkPacket> parse_ok(std::span<const std::byte> body) {
  if (body.empty() || (at(body, 0) != 0x00 && at(body, 0) != 0xfe)) return std::nullopt;
  OkPacket ok;
  std::size_t o = 1;
  auto affected = read_lenenc_int(body, &o);
  if (!affected) return std::nullopt;
  auto last_id = read_lenenc_int(body, &o);
  if (!last_id) return std::nullopt;
  ok.affected_rows = *affected;
  ok.last_insert_id = *last_id;
  auto status = le16(body, o);
  auto warnings = le16(body, o + 2);
  if (!status || !warnings) return std::nullopt;
  ok.status = *status;
  ok.warnings = *warnings;
  return ok;
}

std::optional<ErrPacket> parse_err(std::span<const std::byte> body, std::size_t max_message) {
  if (body.size() < 3 || at(body, 0) != 0xff) return std::nullopt;
  ErrPacket e;
  e.code = *le16(body, 1);
  std::size_t o = 3;
  if (o < body.size() && at(body, o) == '#' && body.size() - o >= 6) {
    e.sql_state = bounded_text(chars(body, o + 1, 5), 5);
    o += 6;
  }
  e.message = bounded_text(chars(body, o, body.size() - o), max_message);
  return e;
}

std::optional<EofPacket> parse_eof(std::span<const std::byte> body) {
  if (body.empty() || at(body, 0) != 0xfe) return std::nullopt;
  auto warnings = le16(body, 1);
  auto status = le16(body, 3);
  if (!warnings || !status) return std::nullopt;
  return EofPacket{*warnings, *status};
}

std::optional<PrepareOk> parse_prepare_ok(std::span<const std::byte> body) {
  if (body.size() < 9 || at(body, 0) != 0x00) return std::nullopt;
  PrepareOk p;
  p.statement_id = *le32(body, 1);
  p.columns = *le16(body, 5);
  p.params = *le16(body, 7);
  if (auto warnings = le16(body, 10)) p.warnings = *warnings;
  return p;
}

const char* status_name(ResponseReader::Status status) noexcept {
  switch (status) {
    case ResponseReader::Status::ok:
      return "ok";
    case ResponseReader::Status::error:
      return "error";
    case ResponseReader::Status::resultset:
      return "resultset";
  }
  return "ok";
}

bool ResponseReader::feed(std::span<const std::byte> body, std::size_t body_length) {
  if (state_ == State::done) return true;
  if (body.empty() || body_length == 0) {
    // No packet of a response is empty (a row always has a column).
    ++malformed_;
    return false;
  }
  const std::uint8_t head = at(body, 0);
  // A terminator: EOF (5 bytes), or with CLIENT_DEPRECATE_EOF an OK with
  // header 0xfe. A row starting with 0xfe is at least 2^24 bytes.
  const bool eof_like =
      head == 0xfe && (deprecate_eof() ? body_length < kMaxPacketBody : body_length < 9);
  switch (state_) {
    case State::first:
      if (command_ == com_stmt_fetch) {
        state_ = State::rows;
        result_.status = Status::resultset;
        return feed(body, body_length);
      }
      first(body, body_length);
      break;
    case State::column_defs:
      if (head == 0xff) {
        error(body);
        break;
      }
      if (--remaining_ == 0) state_ = deprecate_eof() ? State::rows : State::column_eof;
      break;
    case State::column_eof:
      if (head == 0xfe && body_length < 9) {
        auto eof = parse_eof(body);
        if (!eof) ++malformed_;
        state_ = State::rows;
        // A cursor: the rows come with COM_STMT_FETCH.
        if (eof && (eof->status & kCursorExists)) end_result(eof->status & ~kMoreResultsExist);
      } else if (head == 0xff) {
        error(body);
      } else {
        // No EOF where one belongs (MariaDB leaves it out with cached
        // metadata): this is already a row.
        state_ = State::rows;
        ++result_.rows;
      }
      break;
    case State::rows:
      if (head == 0xff) {
        error(body);
      } else if (eof_like) {
        std::uint16_t status = 0;
        if (deprecate_eof()) {
          if (auto ok = parse_ok(body)) {
            status = ok->status;
            result_.warnings += ok->warnings;
          } else {
            ++malformed_;
          }
        } else if (auto eof = parse_eof(body)) {
          status = eof->status;
          result_.warnings += eof->warnings;
        } else {
          ++malformed_;
        }
        end_result(status);
      } else {
        ++result_.rows;
      }
      break;
    case State::prepare_params:
    case State::prepare_columns:
      if (remaining_ > 0) {
        if (--remaining_ == 0 && deprecate_eof()) after_definitions(state_);
      } else {
        if (!(head == 0xfe && body_length < 9)) ++malformed_;
        after_definitions(state_);
      }
      break;
    case State::local_infile:
      if (head == 0xff) {
        error(body);
      } else if (head == 0x00) {
        first(body, body_length);
      }
      break;
    case State::done:
      break;
  }
  return state_ == State::done;
}

void ResponseReader::first(std::span<const std::byte> body, std::size_t body_length) {
  const std::uint8_t head = at(body, 0);
  // COM_CHANGE_USER authenticates again: an auth switch request (0xfe) or
  // more auth data (0x01) may come before the OK or ERR.
  if (command_ == com_change_user && (head == 0xfe || head == 0x01)) return;
  if (head == 0x00 && command_ == com_stmt_prepare) {
    auto p = parse_prepare_ok(body);
    if (!p) {
      ++malformed_;
      state_ = State::done;
      return;
    }
    result_.prepared = p;
    result_.warnings += p->warnings;
    result_.columns = p->columns;
    prepare_columns_ = p->columns;
    if (p->params > 0)
      definitions(p->params, State::prepare_params);
    else if (p->columns > 0)
      definitions(p->columns, State::prepare_columns);
    else
      state_ = State::done;
    return;
  }
  if (head == 0x00) {
    auto ok = parse_ok(body);
    if (!ok) {
      ++malformed_;
      state_ = State::done;
      return;
    }
    result_.affected_rows += ok->affected_rows;
    if (ok->last_insert_id) result_.last_insert_id = ok->last_insert_id;
    result_.warnings += ok->warnings;
    end_result(ok->status);
    return;
  }
  if (head == 0xff) {
    error(body);
    return;
  }
  if (head == 0xfe && body_length < 9) {  // COM_SET_OPTION, COM_DEBUG: an EOF
    auto eof = parse_eof(body);
    if (!eof) ++malformed_;
    end_result(eof ? eof->status : 0);
    return;
  }
  if (head == 0xfb) {  // LOCAL INFILE: the client sends a file first
    state_ = State::local_infile;
    return;
  }
  if (command_ == com_statistics) {  // a string, nothing else
    state_ = State::done;
    return;
  }
  std::size_t o = 0;
  auto columns = read_lenenc_int(body, &o);
  if (!columns || *columns == 0) {
    ++malformed_;
    state_ = State::done;
    return;
  }
  result_.status = Status::resultset;
  result_.columns = *columns;
  // MariaDB with cached metadata: one more byte, 0 when the definitions are
  // left out.
  if (o < body.size() && at(body, o) == 0) {
    state_ = deprecate_eof() ? State::rows : State::column_eof;
    return;
  }
  remaining_ = *columns;
  state_ = State::column_defs;
}

void ResponseReader::end_result(std::uint16_t status) {
  if (result_.status != Status::error && result_.status != Status::resultset)
    result_.status = Status::ok;
  state_ = (status & kMoreResultsExist) ? State::first : State::done;
}

void ResponseReader::error(std::span<const std::byte> body) {
  auto e = parse_err(body, max_message_);
  if (e && e->code == 0xffff) return;  // MariaDB's progress report, not an error
  if (!e) ++malformed_;
  result_.status = Status::error;
  if (e) result_.error = std::move(e);
  state_ = State::done;
}

void ResponseReader::definitions(std::uint64_t count, State next) {
  remaining_ = count;
  state_ = next;
}

void ResponseReader::after_definitions(State current) {
  if (current == State::prepare_params && prepare_columns_ > 0)
    definitions(prepare_columns_, State::prepare_columns);
  else
    state_ = State::done;
}

}  // namespace netwatcher::mysql
