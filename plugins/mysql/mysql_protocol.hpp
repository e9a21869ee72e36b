// The MySQL client/server protocol (also MariaDB's) read from captured
// traffic: the connection phase (server greeting, handshake response, SSL
// request, authentication) and the command phase (COM_* commands and their
// responses: OK, ERR, EOF and result sets).
//
// Packets are framed by a 3-byte little-endian length and a sequence id
// (LengthPrefix::mysql() in netwatcher/l7_framing.hpp); the functions here
// take one packet's body. The bytes are untrusted and may stop short of the
// packet: every function reads only inside the span it is given, throws
// nothing of its own (only std::bad_alloc from the strings it fills) and
// bounds every string it copies. Passwords and auth data are skipped, never
// copied.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

namespace netwatcher::mysql {

// Capability flags (the protocol's CLIENT_*) this parser looks at.
namespace capability {
inline constexpr std::uint32_t connect_with_db = 0x00000008;
inline constexpr std::uint32_t compress = 0x00000020;
inline constexpr std::uint32_t protocol_41 = 0x00000200;
inline constexpr std::uint32_t ssl = 0x00000800;
inline constexpr std::uint32_t secure_connection = 0x00008000;
inline constexpr std::uint32_t plugin_auth = 0x00080000;
inline constexpr std::uint32_t plugin_auth_lenenc_data = 0x00200000;
inline constexpr std::uint32_t deprecate_eof = 0x01000000;
inline constexpr std::uint32_t zstd_compression = 0x04000000;
}  // namespace capability

// Server status flags in OK and EOF packets.
inline constexpr std::uint16_t kMoreResultsExist = 0x0008;
inline constexpr std::uint16_t kCursorExists = 0x0040;

// A packet body of this length is continued by the next packet.
inline constexpr std::size_t kMaxPacketBody = 0xffffff;

// Command bytes (the first byte of a command packet).
enum Command : std::uint8_t {
  com_sleep = 0x00,
  com_quit = 0x01,
  com_init_db = 0x02,
  com_query = 0x03,
  com_field_list = 0x04,
  com_create_db = 0x05,
  com_drop_db = 0x06,
  com_refresh = 0x07,
  com_shutdown = 0x08,
  com_statistics = 0x09,
  com_process_info = 0x0a,
  com_connect = 0x0b,
  com_process_kill = 0x0c,
  com_debug = 0x0d,
  com_ping = 0x0e,
  com_time = 0x0f,
  com_delayed_insert = 0x10,
  com_change_user = 0x11,
  com_binlog_dump = 0x12,
  com_table_dump = 0x13,
  com_connect_out = 0x14,
  com_register_slave = 0x15,
  com_stmt_prepare = 0x16,
  com_stmt_execute = 0x17,
  com_stmt_send_long_data = 0x18,
  com_stmt_close = 0x19,
  com_stmt_reset = 0x1a,
  com_set_option = 0x1b,
  com_stmt_fetch = 0x1c,
  com_daemon = 0x1d,
  com_binlog_dump_gtid = 0x1e,
  com_reset_connection = 0x1f,
};

// "COM_QUERY", ...; "COM_<n>" (hex) for bytes no server defines.
std::string command_name(std::uint8_t command);
// Commands the server never answers: COM_QUIT, COM_STMT_CLOSE,
// COM_STMT_SEND_LONG_DATA.
bool command_has_response(std::uint8_t command) noexcept;

// Length-encoded integers and strings (the protocol's lenenc). Both read from
// `bytes` at `*offset` and advance it only on success; nullopt when the bytes
// end first or the first byte is not a valid prefix (0xff).
std::optional<std::uint64_t> read_lenenc_int(std::span<const std::byte> bytes,
                                             std::size_t* offset) noexcept;
// The string's first `max_keep` bytes; its full length must be captured.
std::optional<std::string> read_lenenc_string(std::span<const std::byte> bytes, std::size_t* offset,
                                              std::size_t max_keep);

// The server's first packet (Protocol::HandshakeV10).
struct Greeting {
  std::uint8_t protocol_version = 0;
  std::string server_version;  // at most 64 bytes, printable ASCII
  std::uint32_t connection_id = 0;
  std::uint32_t capabilities = 0;  // lower and upper halves joined; 0 when cut before them
  std::uint8_t charset = 0;
  std::uint16_t status = 0;
  std::string auth_plugin;  // empty when not captured or not sent
};

// Whether `body` (the first packet's body, sequence id 0) looks like a
// greeting: protocol version 10, a printable NUL-terminated version string
// of 1..64 bytes, then at least the connection id, 8 bytes of auth data and
// the zero filler (when captured). Cheap: for detection.
bool looks_like_greeting(std::span<const std::byte> body) noexcept;
std::optional<Greeting> parse_greeting(std::span<const std::byte> body);

// The client's answer to the greeting (Protocol::HandshakeResponse41), or an
// SSL request (its first 32 bytes alone: the client then starts TLS).
struct HandshakeResponse {
  std::uint32_t capabilities = 0;
  std::uint32_t max_packet = 0;
  std::uint8_t charset = 0;
  std::uint32_t mariadb_capabilities = 0;  // MariaDB's extension, in the filler's last 4 bytes
  bool ssl_request = false;
  std::string user;      // at most max_name bytes
  std::string database;  // with CLIENT_CONNECT_WITH_DB; at most max_name bytes
  std::string auth_plugin;
};

// Whether `body` (sequence id 1) looks like a HandshakeResponse41 or an SSL
// request: CLIENT_PROTOCOL_41 set, a sane maximum packet size and the first
// 19 filler bytes zero (MariaDB uses the last 4). `body_length` is its length
// on the wire.
bool looks_like_handshake_response(std::span<const std::byte> body,
                                   std::size_t body_length) noexcept;
std::optional<HandshakeResponse> parse_handshake_response(std::span<const std::byte> body,
                                                          std::size_t body_length,
                                                          std::size_t max_name = 64);

// A command packet (sequence id 0).
struct CommandPacket {
  std::uint8_t command = 0;
  // COM_QUERY, COM_STMT_PREPARE: the statement; COM_INIT_DB, COM_CREATE_DB,
  // COM_DROP_DB: the database; COM_FIELD_LIST: the table. At most
  // max_statement bytes of what was captured.
  std::string text;
  bool text_cut = false;  // the text is longer than what `text` holds
  // COM_STMT_EXECUTE, _CLOSE, _RESET, _SEND_LONG_DATA, _FETCH.
  std::optional<std::uint32_t> statement_id;
  // COM_CHANGE_USER.
  std::string user, database;
};
// nullopt for an empty body.
std::optional<CommandPacket> parse_command(
    std::span<const std::byte> body, std::size_t body_length, std::size_t max_statement,
    std::uint32_t capabilities = capability::protocol_41 | capability::secure_connection);

// The database a `USE name` statement switches to (backquotes removed), or
// nullopt when `statement` is not one.
std::optional<std::string> use_statement_database(std::string_view statement);

// `statement` as a metric label: string and number literals replaced by
// '?', comments dropped, runs of white space made one space, at most
// `max_size` bytes. "SELECT * FROM t WHERE id = 42 AND name = 'x'" becomes
// "SELECT * FROM t WHERE id = ? AND name = ?"; identifiers (also `quoted`
// ones and names with digits, like t1) stay.
std::string normalize_statement(std::string_view statement, std::size_t max_size);

struct OkPacket {
  std::uint64_t affected_rows = 0;
  std::uint64_t last_insert_id = 0;
  std::uint16_t status = 0;
  std::uint16_t warnings = 0;
};
struct ErrPacket {
  std::uint16_t code = 0;
  std::string sql_state;  // 5 characters, empty when the server sent none
  std::string message;    // at most max_message bytes of what was captured
};
struct EofPacket {
  std::uint16_t warnings = 0;
  std::uint16_t status = 0;
};
struct PrepareOk {
  std::uint32_t statement_id = 0;
  std::uint16_t columns = 0;
  std::uint16_t params = 0;
  std::uint16_t warnings = 0;
};

// OK (header 0x00 or, as a result-set terminator, 0xfe).
std::optional<OkPacket> parse_ok(std::span<const std::byte> body);
std::optional<ErrPacket> parse_err(std::span<const std::byte> body, std::size_t max_message);
std::optional<EofPacket> parse_eof(std::span<const std::byte> body);
std::optional<PrepareOk> parse_prepare_ok(std::span<const std::byte> body);

// The packets of one command's response, one by one, to their end.
//
// A response is an OK, an ERR, a result set (column count, column
// definitions, EOF unless CLIENT_DEPRECATE_EOF, rows, and an EOF or OK
// terminator), a COM_STMT_PREPARE_OK (with parameter and column definitions),
// a string (COM_STATISTICS), or several of these when the server says more
// results exist (multi-statement queries, stored procedures). Packets the
// capture cut short are classified by their first bytes; rows are counted,
// never read.
class ResponseReader {
 public:
  enum class Status : std::uint8_t { ok, error, resultset };
  struct Result {
    Status status = Status::ok;
    std::uint64_t affected_rows = 0;   // summed over the results
    std::uint64_t last_insert_id = 0;  // the last non-zero one
    std::uint64_t warnings = 0;
    std::uint64_t rows = 0;     // rows of all result sets
    std::uint64_t columns = 0;  // of the last result set
    std::optional<ErrPacket> error;
    std::optional<PrepareOk> prepared;  // COM_STMT_PREPARE answered
  };

  ResponseReader(std::uint8_t command, std::uint32_t capabilities, std::size_t max_message = 256)
      : command_(command), capabilities_(capabilities), max_message_(max_message) {}

  // One response packet: `body` its captured bytes, `body_length` its length
  // on the wire. Returns true when the response is complete (then result()
  // holds it); packets after that are not this response's.
  bool feed(std::span<const std::byte> body, std::size_t body_length);
  bool done() const noexcept { return state_ == State::done; }
  const Result& result() const noexcept { return result_; }
  std::uint8_t command() const noexcept { return command_; }
  // Packets that did not fit where they came (a terminator that does not
  // parse, an empty packet): the response went on as well as it could.
  std::uint64_t malformed() const noexcept { return malformed_; }

 private:
  enum class State : std::uint8_t {
    first,           // the response's (or the next result's) first packet
    column_defs,     // definitions of a result set's columns
    column_eof,      // the EOF after them (no CLIENT_DEPRECATE_EOF)
    rows,            // rows, up to the terminator
    prepare_params,  // COM_STMT_PREPARE_OK's parameter definitions (and EOF)
    prepare_columns,
    local_infile,  // the client sends a file; the server's OK or ERR ends it
    done,
  };
  bool deprecate_eof() const noexcept { return capabilities_ & capability::deprecate_eof; }
  void first(std::span<const std::byte> body, std::size_t body_length);
  void end_result(std::uint16_t status);
  void error(std::span<const std::byte> body);
  // Definitions of a prepared statement: `count` packets, then an EOF.
  void definitions(std::uint64_t count, State next);
  void after_definitions(State next);

  std::uint8_t command_;
  std::uint32_t capabilities_;
  std::size_t max_message_;
  State state_ = State::first;
  std::uint64_t remaining_ = 0;  // definitions still to come
  std::uint16_t prepare_columns_ = 0;
  std::uint64_t malformed_ = 0;
  Result result_;
};

const char* status_name(ResponseReader::Status status) noexcept;

}  // namespace netwatcher::mysql
