// mysql: MySQL and MariaDB commands read from the traffic of any process, on
// any port: user, database, command, statement text, status, rows, error
// codes and latency, from the client's and from the server's socket. On the
// shared L7 capture; works for every server version and every connector,
// since it reads the client/server protocol rather than a server's symbols.
#include <algorithm>
#include <deque>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "mysql_protocol.hpp"
#include "netwatcher/format.hpp"
#include "netwatcher/kernel.hpp"
#include "netwatcher/l7_framing.hpp"
#include "netwatcher/l7_protocol.hpp"
#include "netwatcher/plugin.hpp"

namespace {

using namespace netwatcher;
namespace my = netwatcher::mysql;

// Command durations from 16 us to 16 s, doubling (db.client.operation.duration).
std::vector<double> duration_buckets() {
  std::vector<double> bounds;
  for (double b = 16e-6; b <= 16.5; b *= 2) bounds.push_back(b);
  return bounds;
}

enum class Outcome : std::uint8_t { answered, timed_out, closed, no_response };
const char* outcome_names[] = {"answered", "timed_out", "closed", "no_response"};

std::uint32_t body_length_of(std::span<const std::byte> header) {
  return static_cast<std::uint32_t>(header[0]) | static_cast<std::uint32_t>(header[1]) << 8 |
         static_cast<std::uint32_t>(header[2]) << 16;
}

// A command waiting for (or reading) its response.
struct PendingCommand {
  std::uint8_t command = 0;
  std::string statement;
  bool statement_cut = false;
  std::optional<std::uint32_t> statement_id;
  std::optional<std::string> new_database;  // USE / COM_INIT_DB, on success
  std::uint64_t ns = 0;
  std::uint64_t first_response_ns = 0;
  std::uint64_t response_bytes = 0;
  // The capture lost the response's place: it ends with the next command.
  bool lost = false;
  my::ResponseReader reader;
  PendingCommand(std::uint8_t c, std::uint32_t capabilities, std::size_t max_message)
      : command(c), reader(c, capabilities, max_message) {}
};

enum class Phase : std::uint8_t {
  greeting,        // waiting for the server's greeting
  handshake,       // the greeting came; waiting for the client's response
  authenticating,  // until the server's OK or ERR
  command,
  tls,         // SSL request: the rest is encrypted
  compressed,  // compressed protocol: recognised, not parsed
  failed,      // authentication failed: the server closes
};

struct Connection {
  std::uint64_t socket = 0;
  bool client = true;  // this socket sends the commands
  nw_tuple tuple{};
  std::uint32_t pid = 0;
  std::string comm;
  std::uint64_t cgroup_id = 0;
  bool tls = false;
  Phase phase = Phase::greeting;
  std::uint32_t server_capabilities = 0, client_capabilities = 0;
  bool compress_after_auth = false;
  std::string user, database;
  std::deque<PendingCommand> pending;
  std::unordered_map<std::uint32_t, std::string> statements;  // prepared: id -> text
  LengthPrefixedStream commands{LengthPrefix::mysql()}, responses{LengthPrefix::mysql()};
  bool continuing[2] = {false, false};  // [to_server]: the last packet was 16 MB - 1
  std::uint64_t last_ns = 0;

  std::uint32_t capabilities() const noexcept {
    if (!server_capabilities) return client_capabilities;
    if (!client_capabilities) return server_capabilities;
    return server_capabilities & client_capabilities;
  }
};

// No BPF object of its own: the shared capture brings the packets.
class MysqlPlugin final : public L7Protocol, public WithoutBpfObject {
 public:
  PluginDescription describe() const {
    PluginDescription d;
    d.config = keys_.keys();
    d.flags = {{'M', "mysql", "enabled", "MySQL/MariaDB commands and responses from the traffic"}};
    d.events = events_.schemas();
    d.metrics = metrics_.specs();
    d.hooks = {{"tcp", "TCP segments, from the shared L7 capture", {"l7:tcp"}, true}};
    return d;
  }

  Status configure(const ConfigValues& config, const GlobalFilter&) {
    if (Status s = keys_.read(config); !s) return s;
    if (!(*command_timeout_ >= 0.001 && *command_timeout_ <= 86400))
      return Status::failure("plugins.mysql.command_timeout must be between 0.001 and 86400 s");
    return Status::success();
  }

  Status start(PluginHost& host) {
    if (Status s = metrics_.bind(host); !s) return s;
    for (const char* side : {"client", "server"}) unanswered_.add({side, "0"}, 0);
    for (const char* kind : {"lost_sync", "orphan_response", "malformed", "empty_command"})
      parse_errors_.add({kind}, 0);
    connections_table_ = host.track_table(
        {"connections", "", 0, *max_connections_, "plugins.mysql.max_connections"});
    errors_table_ = host.track_table(
        {"error_codes", "", 0, *max_error_codes_, "plugins.mysql.max_error_codes"});
    if (*statement_labels_)
      statements_table_ =
          host.track_table({"statements", "", 0, *max_statements_, "plugins.mysql.max_statements"});
    host.set_metrics_refresh([this] { return refresh_metrics(); });
    return host.serve_protocol(*this);
  }

  Status collect(EventEmitter& out) {
    const std::uint64_t now = monotonic_ns();
    for (auto it = connections_.begin(); it != connections_.end();) {
      Connection& c = it->second;
      // A command unanswered this long: so are those behind it, and the
      // server's stream is read afresh.
      if (!c.pending.empty() && now - c.pending.front().ns >= timeout_ns()) {
        while (!c.pending.empty()) {
          finish(c, c.pending.front(), Outcome::timed_out, 0, out);
          c.pending.pop_front();
        }
        c.responses.reset();
      }
      if (c.pending.empty() && now - c.last_ns > kIdleNs)
        it = connections_.erase(it);
      else
        ++it;
    }
    return refresh_metrics();
  }

  Status refresh_metrics() {
    if (connections_table_) connections_table_->set_entries(connections_.size());
    if (errors_table_) errors_table_->set_entries(known_error_codes_.size());
    if (statements_table_) statements_table_->set_entries(known_statements_.size());
    return Status::success();
  }

  void stop() { connections_.clear(); }

  // L7Protocol
  std::string_view protocol_name() const noexcept override { return "mysql"; }
  unsigned transports() const noexcept override { return kL7Tcp; }
  std::uint32_t capture_bytes() const noexcept override { return *capture_bytes_; }

  L7Detection detect(const L7Packet& packet) noexcept override {
    const std::span<const std::byte> bytes = packet.captured;
    if (packet.tls && bytes.size() == 4 && packet.length == 4) {
      // A server reads a packet's header, then its body, each through one
      // SSL_read: the first read of a TLS stream that is a header with
      // sequence id 2 is the handshake response after the SSL request.
      const std::uint32_t length = body_length_of(bytes);
      return static_cast<std::uint8_t>(bytes[3]) == 2 && length >= 32 && length <= 65536
                 ? L7Detection::yes
                 : L7Detection::no;
    }
    if (bytes.size() < 5) return L7Detection::no;
    const std::uint32_t length = body_length_of(bytes);
    const auto seq = static_cast<std::uint8_t>(bytes[3]);
    // Both are written at once: one packet, alone in its segment.
    if (std::uint64_t{length} + 4 != packet.length) return L7Detection::no;
    const auto body = bytes.subspan(4);
    if (seq == 0 && my::looks_like_greeting(body)) return L7Detection::yes;
    if (seq == 1 && my::looks_like_handshake_response(body, length)) return L7Detection::yes;
    // TLS plaintext starts after the SSL request (sequence id 1).
    if (packet.tls && seq == 2 && my::looks_like_handshake_response(body, length))
      return L7Detection::yes;
    return L7Detection::no;
  }

  void packet(const L7Packet& packet, EventEmitter& out) noexcept override {
    try {
      Connection* c = find(packet);
      if (!c) return;
      if (packet.cgroup_id) c->cgroup_id = packet.cgroup_id;
      c->tls = packet.tls;
      if (packet.pid) {
        c->pid = packet.pid;
        c->comm = std::string(packet.comm);
      }
      c->last_ns = packet.ns;
      const bool to_server = packet.outbound == c->client;
      LengthPrefixedStream& s = to_server ? c->commands : c->responses;
      const std::uint64_t lost = s.stats().lost_sync;
      s.feed(packet.seq, packet.length, packet.captured, packet.ns,
             [&](const FramedMessage& m) { message(*c, to_server, m, out); });
      if (s.stats().lost_sync != lost) {
        parse_errors_.add({"lost_sync"}, static_cast<double>(s.stats().lost_sync - lost));
        if (!to_server && !c->pending.empty()) c->pending.front().lost = true;
      }
    } catch (...) {
      internal_errors_.add({}, 1);
    }
  }

  void closed(std::uint64_t socket, EventEmitter& out) noexcept override {
    try {
      auto it = connections_.find(socket);
      if (it == connections_.end()) return;
      Connection& c = it->second;
      for (auto& p : c.pending) {
        // A response the capture lost track of ends with the connection.
        finish(c, p, p.lost ? Outcome::answered : Outcome::closed, c.last_ns, out);
      }
      connections_.erase(it);
    } catch (...) {
      internal_errors_.add({}, 1);
    }
  }

 private:
  static constexpr std::uint64_t kIdleNs = 600'000'000'000;
  static constexpr std::size_t kMaxPendingPerConnection = 64;
  static constexpr std::size_t kMaxStatementLabel = 200;

  std::uint64_t timeout_ns() const { return static_cast<std::uint64_t>(*command_timeout_ * 1e9); }

  // The connection of `packet`'s socket, made at its first packet.
  Connection* find(const L7Packet& packet) {
    auto it = connections_.find(packet.socket);
    if (it != connections_.end()) return &it->second;
    if (connections_.size() >= *max_connections_) {
      if (connections_table_) connections_table_->count_refused();
      return nullptr;
    }
    Connection c;
    c.socket = packet.socket;
    c.tuple = packet.tuple;
    // Who sent the greeting or the handshake response tells the side; a
    // socket heard from again after its close is taken mid-conversation.
    const auto bytes = packet.captured;
    const auto seq = bytes.size() >= 4 ? static_cast<std::uint8_t>(bytes[3]) : 0xff;
    if (seq == 0 && bytes.size() > 4 && my::looks_like_greeting(bytes.subspan(4))) {
      c.client = !packet.outbound;
    } else if ((seq == 1 && bytes.size() > 4 &&
                my::looks_like_handshake_response(bytes.subspan(4), body_length_of(bytes))) ||
               (packet.tls && seq == 2)) {
      c.client = packet.outbound;
      c.phase = Phase::handshake;
      // TLS plaintext: the greeting came in cleartext, on the socket itself.
      if (packet.tls)
        if (auto clear = connections_.find(packet.socket & ~kL7TlsStreamBit);
            clear != connections_.end())
          c.server_capabilities = clear->second.server_capabilities;
    } else {
      c.client = packet.outbound;
      c.phase = Phase::command;
    }
    return &connections_.emplace(packet.socket, std::move(c)).first->second;
  }

  void message(Connection& c, bool to_server, const FramedMessage& m, EventEmitter& out) {
    const auto seq = static_cast<std::uint8_t>(m.header[3]);
    const std::uint64_t wire = 4 + std::uint64_t{m.body_length};
    // The rest of a packet of 16 MB or more: not a packet start.
    const bool continuation = c.continuing[to_server];
    c.continuing[to_server] = m.body_length == my::kMaxPacketBody;
    if (continuation) {
      if (!to_server && !c.pending.empty()) c.pending.front().response_bytes += wire;
      return;
    }
    switch (c.phase) {
      case Phase::greeting:
        if (!to_server && seq == 0) {
          if (auto g = my::parse_greeting(m.body)) {
            c.server_capabilities = g->capabilities;
            c.phase = Phase::handshake;
          }
        } else if (to_server && seq == 1) {
          handshake(c, m);
        }
        return;
      case Phase::handshake:
        if (to_server) handshake(c, m);
        return;
      case Phase::authenticating:
        if (!to_server && !m.body.empty()) {
          const auto head = static_cast<std::uint8_t>(m.body[0]);
          if (head == 0x00) {
            c.phase = c.compress_after_auth ? Phase::compressed : Phase::command;
            // A TLS login was counted at its SSL request.
            if (c.compress_after_auth)
              connections_seen_.add({"compressed"}, 1);
            else if (!c.tls)
              connections_seen_.add({"plain"}, 1);
          } else if (head == 0xff) {
            c.phase = Phase::failed;
            auth_failures_.add({c.client ? "client" : "server"}, 1);
          }
        }
        return;
      case Phase::command:
        if (to_server)
          command(c, seq, m, out);
        else
          response(c, m, wire, out);
        return;
      case Phase::tls:
      case Phase::compressed:
      case Phase::failed:
        return;
    }
  }

  void handshake(Connection& c, const FramedMessage& m) {
    auto r = my::parse_handshake_response(m.body, m.body_length);
    if (!r) return;
    c.client_capabilities = r->capabilities;
    if (r->ssl_request) {
      c.phase = Phase::tls;
      connections_seen_.add({"tls"}, 1);
      return;
    }
    c.user = r->user;
    c.database = r->database;
    const std::uint32_t both =
        c.server_capabilities ? c.server_capabilities & r->capabilities : r->capabilities;
    c.compress_after_auth = both & (my::capability::compress | my::capability::zstd_compression);
    c.phase = Phase::authenticating;
  }

  void command(Connection& c, std::uint8_t seq, const FramedMessage& m, EventEmitter& out) {
    // Only a command starts at sequence id 0; the rest are a file the client
    // sends for LOAD DATA LOCAL, or auth data for COM_CHANGE_USER.
    if (seq != 0) return;
    auto parsed = my::parse_command(m.body, m.body_length, *max_statement_bytes_, c.capabilities());
    if (!parsed) {
      parse_errors_.add({"empty_command"}, 1);
      return;
    }
    // The response the capture lost track of has ended: the client speaks.
    if (!c.pending.empty() && c.pending.front().lost) {
      finish(c, c.pending.front(), Outcome::answered, m.ns, out);
      c.pending.pop_front();
      c.responses.reset();
    }
    if (c.pending.size() >= kMaxPendingPerConnection) {
      finish(c, c.pending.front(), Outcome::timed_out, 0, out);
      c.pending.pop_front();
    }
    PendingCommand p(parsed->command, c.capabilities(), *max_message_bytes_);
    p.ns = m.ns;
    p.statement = std::move(parsed->text);
    p.statement_cut = parsed->text_cut;
    p.statement_id = parsed->statement_id;
    switch (p.command) {
      case my::com_init_db:
        p.new_database = p.statement;
        break;
      case my::com_query:
        if (!p.statement_cut) p.new_database = my::use_statement_database(p.statement);
        break;
      case my::com_stmt_execute:
      case my::com_stmt_close:
      case my::com_stmt_reset:
      case my::com_stmt_fetch:
      case my::com_stmt_send_long_data:
        if (p.statement_id) {
          auto it = c.statements.find(*p.statement_id);
          if (it != c.statements.end()) p.statement = it->second;
        }
        break;
      case my::com_change_user:
        c.user = parsed->user;
        c.database = parsed->database;
        c.statements.clear();
        break;
      default:
        break;
    }
    if (!my::command_has_response(p.command)) {
      if (p.command == my::com_stmt_close && p.statement_id) c.statements.erase(*p.statement_id);
      finish(c, p, Outcome::no_response, m.ns, out);
      return;
    }
    c.pending.push_back(std::move(p));
  }

  void response(Connection& c, const FramedMessage& m, std::uint64_t wire, EventEmitter& out) {
    if (c.pending.empty()) {
      parse_errors_.add({"orphan_response"}, 1);
      return;
    }
    PendingCommand& p = c.pending.front();
    if (!p.first_response_ns) p.first_response_ns = m.ns;
    p.response_bytes += wire;
    if (p.lost) return;
    const std::uint64_t malformed = p.reader.malformed();
    const bool done = p.reader.feed(m.body, m.body_length);
    if (p.reader.malformed() != malformed)
      parse_errors_.add({"malformed"}, static_cast<double>(p.reader.malformed() - malformed));
    if (!done) return;
    finish(c, p, Outcome::answered, m.ns, out);
    c.pending.pop_front();
  }

  // What a finished command changes in its connection, its metrics and its
  // event. `end_ns`: when its response ended.
  void finish(Connection& c, const PendingCommand& p, Outcome outcome, std::uint64_t end_ns,
              EventEmitter& out) {
    const char* side = c.client ? "client" : "server";
    const std::string command = my::command_name(p.command);
    const auto& result = p.reader.result();
    const bool answered = outcome == Outcome::answered && p.first_response_ns;
    const bool complete = answered && p.reader.done();
    const char* status = "none";
    double latency_us = 0;
    const std::string cgroup = std::to_string(c.cgroup_id);
    if (answered) {
      status = my::status_name(result.status);
      latency_us = static_cast<double>(p.first_response_ns - p.ns) / 1e3;
      commands_.add({command, status, side, cgroup}, 1);
      duration_.observe({command, side, cgroup}, latency_us / 1e6);
      if (complete) apply(c, p);
      if (*statement_labels_ && !p.statement.empty() &&
          (p.command == my::com_query || p.command == my::com_stmt_prepare ||
           p.command == my::com_stmt_execute))
        count_statement(p.statement, status, side, latency_us / 1e6);
      if (result.error) {
        std::string code = std::to_string(result.error->code);
        if (!known_error_codes_.count(code)) {
          if (known_error_codes_.size() < *max_error_codes_) {
            known_error_codes_.insert(code);
          } else {
            code = "other";
            if (errors_table_) errors_table_->count_refused();
          }
        }
        errors_.add({code, side}, 1);
      }
    } else if (outcome == Outcome::no_response) {
      commands_.add({command, status, side, cgroup}, 1);
    } else {
      unanswered_.add({side, cgroup}, 1);
    }
    if (!*events_on_) return;
    // Slow commands only, when asked; an unanswered command always counts as slow.
    const bool unanswered = outcome == Outcome::timed_out || outcome == Outcome::closed;
    if (*slow_threshold_us_ && !unanswered && latency_us < static_cast<double>(*slow_threshold_us_))
      return;
    const Query& q = query_;
    const nw_tuple& t = c.tuple;
    auto row = q.row(out);
    if (c.cgroup_id) row.set(q.cgroup_id, c.cgroup_id);
    row.set(q.side, side)
        .set(q.pid, c.pid)
        .set(q.comm, c.comm)
        .set(q.family, family_name(t.family))
        .set(q.saddr, format_address(t.family, t.saddr))
        .set(q.sport, t.sport)
        .set(q.daddr, format_address(t.family, t.daddr))
        .set(q.dport, t.dport)
        .set(q.user, c.user)
        .set(q.database, c.database)
        .set(q.command, command)
        .set(q.statement, c.tls && !*tls_literals_
                              ? my::normalize_statement(p.statement, *max_statement_bytes_)
                              : p.statement)
        .set(q.outcome, outcome_names[static_cast<int>(outcome)])
        .set(q.tls, c.tls)
        .set(q.sock, c.socket);
    if (p.statement_id) row.set(q.statement_id, std::uint64_t{*p.statement_id});
    if (p.statement_cut) row.set(q.statement_cut, true);
    if (answered) {
      row.set(q.status, status)
          .set(q.latency_us, latency_us)
          .set(q.response_bytes, p.response_bytes);
      if (!complete) row.set(q.cut_short, true);
      if (result.status == my::ResponseReader::Status::resultset) {
        if (complete) row.set(q.rows, result.rows);
        row.set(q.columns, result.columns);
      } else if (result.status == my::ResponseReader::Status::ok) {
        row.set(q.affected_rows, result.affected_rows).set(q.last_insert_id, result.last_insert_id);
      }
      if (complete) row.set(q.warnings, result.warnings);
      if (result.error) {
        row.set(q.error_code, std::uint64_t{result.error->code})
            .set(q.sql_state, result.error->sql_state)
            .set(q.error_message, result.error->message);
      }
      if (result.prepared) row.set(q.statement_id, std::uint64_t{result.prepared->statement_id});
    }
    row.emit(answered ? end_ns : 0);
  }

  void count_statement(const std::string& statement, const char* status, const char* side,
                       double seconds) {
    std::string label = my::normalize_statement(statement, kMaxStatementLabel);
    if (!known_statements_.count(label)) {
      if (known_statements_.size() < *max_statements_) {
        known_statements_.insert(label);
      } else {
        label = "other";
        if (statements_table_) statements_table_->count_refused();
      }
    }
    statement_commands_.add({label, status, side}, 1);
    statement_duration_.observe({label, side}, seconds);
  }

  // A command's effect on its connection's session, once its response is in.
  void apply(Connection& c, const PendingCommand& p) {
    const auto& result = p.reader.result();
    if (result.status == my::ResponseReader::Status::error) return;
    if (p.new_database) c.database = *p.new_database;
    if (result.prepared && c.statements.size() < *max_prepared_)
      c.statements[result.prepared->statement_id] = p.statement;
    if (p.command == my::com_reset_connection) c.statements.clear();
  }

  KeySet keys_;
  Setting<std::uint32_t> capture_bytes_{
      keys_,
      "capture_bytes",
      NW_L7_MAX_CAPTURE,
      "payload bytes of each segment read (statements and result sets past them are not "
      "seen whole)",
      {.min = 64, .max = NW_L7_MAX_CAPTURE}};
  Setting<std::size_t> max_statement_bytes_{keys_,
                                            "max_statement_bytes",
                                            256,
                                            "statement text kept in each event",
                                            {.min = 0, .max = 65536}};
  Setting<std::size_t> max_message_bytes_{keys_,
                                          "max_message_bytes",
                                          128,
                                          "error message text kept in each event",
                                          {.min = 0, .max = 4096}};
  Setting<double> command_timeout_{
      keys_, "command_timeout", 60.0,
      "seconds after which an unanswered command is reported as timed_out"};
  Setting<std::uint64_t> slow_threshold_us_{
      keys_,
      "slow_threshold_us",
      0,
      "events only for commands answered this slowly or slower (metrics count all)",
      {.min = 0, .max = std::int64_t{3600} * 1000000}};
  Setting<std::size_t> max_connections_{keys_,
                                        "max_connections",
                                        16384,
                                        "connections followed at once (more are not parsed)",
                                        {.min = 16, .max = 1 << 20}};
  Setting<std::size_t> max_prepared_{keys_,
                                     "max_prepared",
                                     1024,
                                     "prepared statements remembered per connection",
                                     {.min = 0, .max = 1 << 20}};
  Setting<std::size_t> max_error_codes_{
      keys_,
      "max_error_codes",
      100,
      "error codes with their own series; the rest count under error_code=\"other\"",
      {.min = 1, .max = 65536}};
  Setting<bool> events_on_{keys_, "events", true, "a mysql_query event per command"};
  Setting<bool> tls_literals_{
      keys_, "tls_literals", false,
      "statements of TLS connections (read with [plugins.l7] tls) keep their literals; off: "
      "literals as ? in events, as what TLS protects stays protected"};
  Setting<bool> statement_labels_{keys_, "statement_labels", false,
                                  "also count commands per normalised statement (literals as ?)"};
  Setting<std::size_t> max_statements_{
      keys_,
      "max_statements",
      100,
      "statements with their own series; the rest count under statement=\"other\"",
      {.min = 1, .max = 100000}};

  EventSet events_;
  struct Query : EventDecl {
    explicit Query(EventSet& set)
        : EventDecl(set, "mysql_query",
                    "one MySQL command with its response (or why there is none)") {}
    Label<std::string> side{*this,
                            "side",
                            "client or server: which socket saw the command",
                            {.width = 6, .anomaly = AnomalyRole::key}};
    Label<std::uint64_t> pid{
        *this, "pid", "process owning the socket (0 until it sent or read)", {.width = 7}};
    Label<std::string> comm{*this, "comm", "process name", {.width = 15}};
    CgroupIdLabel cgroup_id{*this};
    Label<std::string> family{*this, "family", "ipv4 or ipv6", {.width = 6}};
    Label<std::string> saddr{*this, "saddr", "local address", {.width = 15}};
    Label<std::uint64_t> sport{*this, "sport", "local port", {.width = 5}};
    Label<std::string> daddr{*this, "daddr", "remote address", {.width = 15}};
    Label<std::uint64_t> dport{*this, "dport", "remote port", {.width = 5}};
    Label<std::string> user{*this,
                            "user",
                            "the user that logged in (empty when the login was not seen)",
                            {.width = 10}};
    Label<std::string> database{
        *this, "database", "the default database (login, COM_INIT_DB, USE)", {.width = 10}};
    Label<std::string> command{
        *this, "command", "COM_QUERY, COM_STMT_EXECUTE, COM_PING, ...", {.width = 16}};
    Text statement{*this,
                   "statement",
                   "the SQL text (COM_STMT_EXECUTE: the prepared statement's), at most "
                   "max_statement_bytes; COM_INIT_DB: the database",
                   {.width = 32}};
    Field<bool> statement_cut{
        *this, "statement_cut", "the statement is longer than what is shown", {.optional = true}};
    Field<std::uint64_t> statement_id{
        *this, "statement_id", "prepared statement id", {.optional = true}};
    Label<std::string> status{
        *this, "status", "ok, error or resultset", {.width = 9, .optional = true}};
    Field<std::uint64_t> affected_rows{
        *this, "affected_rows", "rows changed (OK packets)", {.optional = true}};
    Field<std::uint64_t> last_insert_id{
        *this, "last_insert_id", "the last AUTO_INCREMENT value", {.optional = true}};
    Field<std::uint64_t> warnings{
        *this, "warnings", "warnings the server counted", {.optional = true}};
    Field<std::uint64_t> rows{
        *this, "rows", "rows returned (when the whole result set was seen)", {.optional = true}};
    Field<std::uint64_t> columns{*this, "columns", "columns of the result set", {.optional = true}};
    Field<std::uint64_t> error_code{
        *this, "error_code", "the ERR packet's code (1064, 1062, ...)", {.optional = true}};
    Label<std::string> sql_state{*this,
                                 "sql_state",
                                 "the ERR packet's SQLSTATE (42000, ...)",
                                 {.width = 5, .optional = true}};
    Text error_message{*this,
                       "error_message",
                       "the ERR packet's message, at most max_message_bytes",
                       {.width = 24, .optional = true}};
    Field<double> latency_us{
        *this,
        "latency_us",
        "from the command to the first packet of its response, at this socket",
        {.unit = "microseconds", .width = 10, .optional = true, .anomaly = AnomalyRole::sample}};
    Field<std::uint64_t> response_bytes{*this,
                                        "response_bytes",
                                        "bytes of the response, headers included",
                                        {.unit = "bytes", .optional = true}};
    Label<std::string> outcome{
        *this,
        "outcome",
        "answered, timed_out, closed, or no_response (COM_QUIT, COM_STMT_CLOSE: none is sent)",
        {.width = 11}};
    Field<bool> cut_short{*this,
                          "cut_short",
                          "the capture lost the response's end: rows and warnings not counted",
                          {.optional = true}};
    L7TlsLabel tls{*this};
    L7SocketLabel sock{*this};
  } query_{events_};

  MetricSet metrics_;
  Counter commands_{metrics_,
                    "netwatcher_mysql_commands_total",
                    "MySQL commands, by command, status (ok, error, resultset; none for commands "
                    "without a response) and side.",
                    {"command", "status", "side", kCgroupIdLabel}};
  Histogram duration_{metrics_,
                      "netwatcher_mysql_command_duration_seconds",
                      "From command to the first response packet, by command and side "
                      "(db.client.operation.duration).",
                      {"command", "side", kCgroupIdLabel},
                      duration_buckets()};
  Counter errors_{metrics_,
                  "netwatcher_mysql_errors_total",
                  "ERR responses by error code (at most max_error_codes codes) and side.",
                  {"error_code", "side"}};
  Counter unanswered_{metrics_,
                      "netwatcher_mysql_commands_unanswered_total",
                      "Commands without a response: timed out, or their connection closed.",
                      {"side", kCgroupIdLabel}};
  Counter parse_errors_{metrics_,
                        "netwatcher_mysql_parse_errors_total",
                        "Packets that did not fit the protocol where they came, by kind; "
                        "responses without a command; streams whose next packet start was not "
                        "seen.",
                        {"kind"}};
  Counter connections_seen_{metrics_,
                            "netwatcher_mysql_connections_total",
                            "Logins seen, by protocol: plain (parsed), tls or compressed "
                            "(recognised, not parsed).",
                            {"protocol"}};
  Counter auth_failures_{metrics_,
                         "netwatcher_mysql_auth_failures_total",
                         "Logins the server refused, by side.",
                         {"side"}};
  Counter statement_commands_{
      metrics_,
      "netwatcher_mysql_statement_commands_total",
      "Answered COM_QUERY, COM_STMT_PREPARE and COM_STMT_EXECUTE per normalised statement "
      "(statement_labels = true, at most max_statements statements), status and side.",
      {"statement", "status", "side"}};
  Histogram statement_duration_{metrics_,
                                "netwatcher_mysql_statement_duration_seconds",
                                "From command to first response packet per normalised statement "
                                "(statement_labels = true).",
                                {"statement", "side"},
                                duration_buckets()};
  Counter internal_errors_{metrics_,
                           "netwatcher_mysql_internal_errors_total",
                           "Packets the plugin could not process (out of memory).",
                           {}};

  TableAccount* statements_table_ = nullptr;
  std::set<std::string> known_statements_;
  TableAccount *connections_table_ = nullptr, *errors_table_ = nullptr;
  std::unordered_map<std::uint64_t, Connection> connections_;
  std::set<std::string> known_error_codes_;
};

}  // namespace

NETWATCHER_PROBE_PLUGIN(MysqlPlugin, "mysql", "1.0.0",
                        "MySQL and MariaDB commands read from any process's traffic")
