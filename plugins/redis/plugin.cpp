// redis: Redis commands and their replies read from the traffic of any
// process, on any port, from the client's and from the server's socket:
// command, first key, reply type, error, latency, database, RESP2 and RESP3,
// pipelining, MULTI/EXEC, pub/sub and MONITOR. On the shared L7 capture.
#include <algorithm>
#include <deque>
#include <optional>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "netwatcher/format.hpp"
#include "netwatcher/kernel.hpp"
#include "netwatcher/l7_protocol.hpp"
#include "netwatcher/plugin.hpp"
#include "redis_resp.hpp"

namespace {

using namespace netwatcher;
using namespace netwatcher::redis;

// Command durations from 8 us to 16 s, doubling (db.client.operation.duration).
std::vector<double> duration_buckets() {
  std::vector<double> bounds;
  for (double b = 8e-6; b <= 16.5; b *= 2) bounds.push_back(b);
  return bounds;
}

enum class Outcome : std::uint8_t { answered, timed_out, closed };
const char* outcome_names[] = {"answered", "timed_out", "closed"};

bool is_subscribe_kind(std::string_view kind) {
  return kind == "subscribe" || kind == "psubscribe" || kind == "ssubscribe" ||
         kind == "unsubscribe" || kind == "punsubscribe" || kind == "sunsubscribe";
}
bool is_subscribe_command(std::string_view name) {
  return name == "SUBSCRIBE" || name == "PSUBSCRIBE" || name == "SSUBSCRIBE" ||
         name == "UNSUBSCRIBE" || name == "PUNSUBSCRIBE" || name == "SUNSUBSCRIBE";
}
std::string lower(std::string_view text) {
  std::string out(text.substr(0, 16));
  for (char& c : out)
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  return out;
}
std::optional<int> small_number(std::string_view text) {
  if (text.empty() || text.size() > 4) return std::nullopt;
  int value = 0;
  for (char c : text) {
    if (c < '0' || c > '9') return std::nullopt;
    value = value * 10 + (c - '0');
  }
  return value;
}
// Keys are any bytes: printable ASCII stays, the rest is written \xNN.
std::string printable(std::string_view bytes, std::size_t max) {
  std::string out;
  for (char c : bytes.substr(0, max)) {
    const auto u = static_cast<unsigned char>(c);
    if (u >= 0x20 && u < 0x7f && c != '\\') {
      out += c;
    } else {
      static constexpr char kHex[] = "0123456789abcdef";
      out += "\\x";
      out += kHex[u >> 4];
      out += kHex[u & 15];
    }
  }
  return out;
}
// The error's prefix as Redis writes it (ERR, WRONGTYPE, MOVED...): an
// upper-case word; anything else is "other".
std::string error_prefix(std::string_view message) {
  const std::string_view word = message.substr(0, message.find(' '));
  if (word.empty() || word.size() > 24) return "other";
  for (char c : word)
    if (!((c >= 'A' && c <= 'Z') || c == '_' || (c >= '0' && c <= '9'))) return "other";
  return std::string(word);
}

// A command waiting for its reply at one socket.
struct Command {
  std::string name;
  std::string key;
  std::uint64_t args = 0;
  std::uint64_t bytes = 0;
  std::uint64_t ns = 0;
  int db = 0;
  int proto = 2;
  int select_db = -1;      // SELECT n: the database once +OK comes
  int hello_proto = -1;    // HELLO n: the protocol once it is accepted
  bool timed_out = false;  // reported already: its late reply is consumed, not reported
};

// One direction of a socket's stream, followed by TCP sequence number.
struct Direction {
  explicit Direction(bool requests, const Limits& limits) : stream(requests, limits) {}
  RespStream stream;
  bool synced = false;
  std::uint32_t next_seq = 0;
  // Lost its place: the bytes that follow may be the middle of the value
  // that was cut, so the stream picks up again only at a segment that comes
  // after the other direction spoke (the peer answered, or asked again).
  bool wait_for_other = false;
};

struct Socket {
  explicit Socket(const Limits& limits) : commands(true, limits), replies(false, limits) {}
  std::uint64_t cookie = 0;
  bool role_known = false;
  bool client = false;  // this socket sends the commands
  Direction commands, replies;
  std::deque<Command> pending;
  nw_tuple tuple{};
  std::uint32_t pid = 0;
  std::string comm;
  std::uint64_t cgroup_id = 0;
  bool tls = false;
  int db = 0;
  int proto = 2;
  bool subscribed = false;   // RESP2 pub/sub mode: messages arrive as arrays
  bool monitor = false;      // MONITOR accepted: the server streams what it runs
  bool replication = false;  // SYNC/PSYNC: an RDB and a command stream follow, not replies
};

// No BPF object of its own: the shared capture brings the packets.
class RedisPlugin final : public L7Protocol, public WithoutBpfObject {
 public:
  PluginDescription describe() const {
    PluginDescription d;
    d.config = keys_.keys();
    d.flags = {{'R', "redis", "enabled", "Redis commands and replies from the traffic"}};
    d.events = events_.schemas();
    d.metrics = metrics_.specs();
    d.hooks = {{"tcp", "TCP segments, from the shared L7 capture", {"l7:tcp"}, true}};
    return d;
  }

  Status configure(const ConfigValues& config, const GlobalFilter&) {
    if (Status s = keys_.read(config); !s) return s;
    if (!(*command_timeout_ >= 0.001 && *command_timeout_ <= 86400))
      return Status::failure("plugins.redis.command_timeout must be between 0.001 and 86400 s");
    limits_.kept_bytes = std::max<std::size_t>(*max_key_bytes_, 128);
    return Status::success();
  }

  Status start(PluginHost& host) {
    if (Status s = metrics_.bind(host); !s) return s;
    for (const char* side : {"client", "server"}) unanswered_.add({side, "0"}, 0);
    for (const char* kind : {"bad_type", "bad_length", "too_long", "too_deep", "line_too_long",
                             "bad_crlf", "lost_sync", "orphan_reply", "bad_command"})
      parse_errors_.add({kind}, 0);
    commands_table_ =
        host.track_table({"commands", "", 0, *max_commands_, "plugins.redis.max_commands"});
    host.set_metrics_refresh([this] { return refresh_metrics(); });
    return host.serve_protocol(*this);
  }

  Status collect(EventEmitter& out) {
    const std::uint64_t now = monotonic_ns();
    for (auto& [cookie, s] : sockets_)
      for (Command& c : s.pending) {
        if (c.timed_out) continue;
        if (now - c.ns < timeout_ns()) break;  // in order: the rest are younger
        finish(s, c, nullptr, Outcome::timed_out, out);
        c.timed_out = true;
      }
    if (*hot_keys_) report_hot_keys(now, out);
    Status refreshed = refresh_metrics();
    forget_idle_series();
    return refreshed;
  }

  // Series are kept per cgroup (the cgroup_id label): pods come and go, so a
  // series unused for kIdleSnapshots snapshots is forgotten here and by the
  // host's mirror; its exported counts stay.
  void forget_idle_series() {
    auto sweep = [](auto& table, const auto& family) {
      for (auto it = table.begin(); it != table.end();) {
        auto& series = it->second;
        if (series.used) {
          series.used = false;
          series.idle = 0;
        } else if (++series.idle >= kIdleSnapshots) {
          family.remove(series.labels);
          it = table.erase(it);
          continue;
        }
        ++it;
      }
    };
    sweep(counts_, commands_);
    sweep(durations_, duration_);
  }

  Status refresh_metrics() {
    if (commands_table_) commands_table_->set_entries(known_commands_.size());
    for (auto& [key, series] : counts_)
      if (series.dirty) {
        commands_.mirror(series.labels, series.value);
        series.dirty = false;
      }
    for (auto& [key, series] : durations_)
      if (series.dirty) {
        duration_.replace(series.labels, series.counts, series.sum);
        series.dirty = false;
      }
    return Status::success();
  }

  void stop() { sockets_.clear(); }

  // L7Protocol
  std::string_view protocol_name() const noexcept override { return "redis"; }
  unsigned transports() const noexcept override { return kL7Tcp; }
  std::uint32_t capture_bytes() const noexcept override { return *capture_bytes_; }

  L7Detection detect(const L7Packet& packet) noexcept override {
    const int command = looks_like_command(packet.captured, packet.length);
    if (command == 1) return L7Detection::yes;
    const int reply = looks_like_reply(packet.captured, packet.length);
    if (reply == 1) return L7Detection::yes;
    return command < 0 || reply < 0 ? L7Detection::maybe : L7Detection::no;
  }

  void packet(const L7Packet& packet, EventEmitter& out) noexcept override {
    try {
      segment(packet, out);
    } catch (...) {
      internal_errors_.add({}, 1);
    }
  }

  void closed(std::uint64_t socket, EventEmitter& out) noexcept override {
    try {
      auto it = sockets_.find(socket);
      if (it == sockets_.end()) return;
      for (const Command& c : it->second.pending)
        if (!c.timed_out) finish(it->second, c, nullptr, Outcome::closed, out);
      sockets_.erase(it);
    } catch (...) {
      internal_errors_.add({}, 1);
    }
  }

 private:
  std::uint64_t timeout_ns() const { return static_cast<std::uint64_t>(*command_timeout_ * 1e9); }

  void segment(const L7Packet& packet, EventEmitter& out) {
    if (packet.length == 0) return;
    Socket& s = sockets_.try_emplace(packet.socket, limits_).first->second;
    s.cookie = packet.socket;
    s.tuple = packet.tuple;
    if (packet.cgroup_id) s.cgroup_id = packet.cgroup_id;
    s.tls = packet.tls;
    if (packet.pid) {
      s.pid = packet.pid;
      s.comm = std::string(packet.comm);
    }
    if (!s.role_known) {
      if (packet.captured.empty()) return;
      const char first = static_cast<char>(packet.captured[0]);
      // Commands are arrays or inline lines; anything else a server sends.
      const bool command = first == '*'
                               ? looks_like_command(packet.captured, packet.length) != 0
                               : (first >= 'A' && first <= 'Z') || (first >= 'a' && first <= 'z');
      s.client = command == packet.outbound;
      s.role_known = true;
    }
    if (s.replication) return;
    const bool is_command = packet.outbound == s.client;
    Direction& d = is_command ? s.commands : s.replies;
    (is_command ? s.replies : s.commands).wait_for_other = false;
    messages_.clear();
    std::optional<RespMessage> lost = follow(d, is_command, packet, messages_);
    for (RespMessage& m : messages_) {
      if (is_command)
        on_command(s, m, out);
      else
        on_reply(s, m, out);
      if (s.replication) return;
    }
    // The value that was cut still counts: a command is still answered, a
    // reply still answers one.
    if (lost && lost->type != RespType::null) {
      lost->cut = true;
      if (is_command)
        on_command(s, *lost, out);
      else
        on_reply(s, *lost, out);
    }
  }

  // Feeds one segment to its direction's parser, following the stream by
  // sequence number: retransmitted bytes are dropped, bytes the capture did
  // not keep are skipped by length, and a stream that lost its place waits
  // for a segment that starts a value.
  // Returns the value that was begun when the stream lost its place, if any.
  std::optional<RespMessage> follow(Direction& d, bool is_command, const L7Packet& packet,
                                    std::vector<RespMessage>& out) {
    std::uint32_t seq = packet.seq;
    std::uint64_t length = packet.length;
    std::span<const std::byte> captured = packet.captured;
    if (d.synced) {
      const auto ahead = static_cast<std::int32_t>(seq - d.next_seq);
      if (ahead < 0) {  // a retransmission, maybe with new bytes after the old
        const std::uint64_t old = static_cast<std::uint32_t>(-ahead);
        if (old >= length) return std::nullopt;
        seq += static_cast<std::uint32_t>(old);
        length -= old;
        captured = captured.size() > old ? captured.subspan(old) : std::span<const std::byte>{};
      } else if (ahead > 0) {  // bytes never seen (the capture lost them)
        if (RespError e = d.stream.skip(static_cast<std::uint32_t>(ahead), out);
            e != RespError::none)
          return lose(d, e);
      }
    }
    if (!d.synced) {
      if (captured.empty() || d.wait_for_other) return std::nullopt;
      const char first = static_cast<char>(captured[0]);
      const bool starts =
          is_command
              ? first == '*' || (first >= 'A' && first <= 'Z') || (first >= 'a' && first <= 'z')
              : std::string_view("+-:$*_#,(!=%~>|").find(first) != std::string_view::npos;
      if (!starts) return std::nullopt;
      d.stream.reset();
      d.synced = true;
    }
    d.next_seq = seq + static_cast<std::uint32_t>(length);
    RespError e = d.stream.feed(captured, packet.ns, out);
    if (e == RespError::none && length > captured.size())
      e = d.stream.skip(length - captured.size(), out);
    if (e != RespError::none) return lose(d, e);
    return std::nullopt;
  }

  std::optional<RespMessage> lose(Direction& d, RespError error) {
    parse_errors_.add({resp_error_name(error)}, 1);
    std::optional<RespMessage> begun;
    // Only a value whose framing was fine up to the cut was really begun.
    if (error == RespError::lost_sync && d.stream.partial()) begun = *d.stream.partial();
    d.stream.reset();
    d.synced = false;
    d.wait_for_other = true;
    return begun;
  }

  void on_command(Socket& s, const RespMessage& m, EventEmitter& out) {
    Command c;
    c.name = command_name(m.strings);
    if (c.name.empty()) {
      // Still a command the server answers: kept so the pairing stays in order.
      if (!m.cut) parse_errors_.add({"bad_command"}, 1);
      c.name = "UNKNOWN";
    }
    const CommandInfo& info = command_info(c.name);
    if (*key_field_ && info.has_key && m.strings.size() > info.words)
      c.key = printable(m.strings[info.words], *max_key_bytes_);
    c.args = m.elements;
    c.bytes = m.bytes;
    c.ns = m.start_ns;
    c.db = s.db;
    c.proto = s.proto;
    if (c.name == "SELECT" && m.strings.size() > 1)
      c.select_db = small_number(m.strings[1]).value_or(-1);
    if (c.name == "HELLO" && m.strings.size() > 1)
      c.hello_proto = small_number(m.strings[1]).value_or(-1);
    if (c.name == "SYNC") s.replication = true;  // the reply is the RDB itself, unframed
    if (*hot_keys_ && !c.key.empty()) count_key(c.key);
    if (s.pending.size() >= *max_pending_) {
      Command& oldest = s.pending.front();
      if (!oldest.timed_out) finish(s, oldest, nullptr, Outcome::timed_out, out);
      s.pending.pop_front();
    }
    s.pending.push_back(std::move(c));
  }

  void on_reply(Socket& s, const RespMessage& m, EventEmitter& out) {
    // Pushes are never replies, except that RESP3 confirms (un)subscribing
    // with one; so does RESP2 in subscribed mode, with arrays, one per channel.
    const bool pubsub_shape =
        m.type == RespType::push || (s.subscribed && m.type == RespType::array);
    if (pubsub_shape) {
      const std::string kind = m.strings.empty() ? std::string() : lower(m.strings[0]);
      const bool front_subscribes =
          !s.pending.empty() && is_subscribe_command(s.pending.front().name);
      if (is_subscribe_kind(kind) && m.strings.size() >= 3 &&
          kind.find("unsub") != std::string::npos && m.strings[2] == "0")
        s.subscribed = false;
      if (!(is_subscribe_kind(kind) && front_subscribes) &&
          (m.type == RespType::push || kind == "message" || kind == "pmessage" ||
           kind == "smessage" || is_subscribe_kind(kind))) {
        count_push(s, kind);
        return;
      }
    }
    if (s.monitor && s.pending.empty() && m.type == RespType::simple) {
      count_push(s, "monitor");
      return;
    }
    if (s.pending.empty()) {
      parse_errors_.add({"orphan_reply"}, 1);
      return;
    }
    Command c = std::move(s.pending.front());
    s.pending.pop_front();
    const bool error = m.type == RespType::error || m.type == RespType::bulk_error;
    if (!error) {
      if (c.name == "SELECT" && c.select_db >= 0) s.db = c.select_db;
      if (c.name == "HELLO" && c.hello_proto >= 2) s.proto = c.hello_proto;
      if (c.name == "MONITOR") s.monitor = true;
      if (is_subscribe_command(c.name) && c.name.find("UNSUB") == std::string::npos)
        s.subscribed = s.proto == 2;
      if (c.name == "RESET") {
        s.db = 0;
        s.proto = 2;
        s.subscribed = s.monitor = false;
      }
      if (c.name == "PSYNC") s.replication = true;
    }
    if (!c.timed_out) finish(s, c, &m, Outcome::answered, out);
  }

  // Answered commands are counted here and handed to the metric store in
  // refresh_metrics() (before every scrape and snapshot): one lookup by a
  // reused key per command instead of two label vectors and two locks.
  void count_answered(const std::string& label, const std::string& status, const char* side,
                      std::uint64_t cgroup_id, double seconds) {
    const std::string cgroup = std::to_string(cgroup_id);
    key_.assign(label).append(1, '\n').append(status).append(1, '\n').append(side);
    key_.append(1, '\n').append(cgroup);
    auto count = counts_.find(key_);
    if (count == counts_.end())
      count = counts_.emplace(key_, CountSeries{{label, status, side, cgroup}}).first;
    count->second.value += 1;
    count->second.dirty = count->second.used = true;
    key_.assign(label).append(1, '\n').append(side).append(1, '\n').append(cgroup);
    auto duration = durations_.find(key_);
    if (duration == durations_.end())
      duration = durations_
                     .emplace(key_, DurationSeries{{label, side, cgroup},
                                                   std::vector<std::uint64_t>(bounds_.size() + 1)})
                     .first;
    const auto bucket = std::lower_bound(bounds_.begin(), bounds_.end(), seconds) - bounds_.begin();
    ++duration->second.counts[static_cast<std::size_t>(bucket)];
    duration->second.sum += seconds;
    duration->second.dirty = duration->second.used = true;
  }

  void count_push(const Socket& s, const std::string& kind) {
    static const std::unordered_set<std::string> kKinds = {
        "message",     "pmessage",     "smessage",     "subscribe",  "psubscribe", "ssubscribe",
        "unsubscribe", "punsubscribe", "sunsubscribe", "invalidate", "monitor"};
    pushes_.add({kKinds.count(kind) ? kind : "other", s.client ? "client" : "server"}, 1);
  }

  // What the plugin needs to know of a command name, worked out once per name.
  struct CommandInfo {
    bool has_key = false;
    std::size_t words = 1;
  };
  const CommandInfo& command_info(const std::string& name) {
    auto it = command_infos_.find(name);
    if (it != command_infos_.end()) return it->second;
    CommandInfo info{has_key(name), name_words(name)};
    // Names come from the traffic: past the bound, work it out every time.
    if (command_infos_.size() >= kMaxCommandInfos) {
      scratch_info_ = info;
      return scratch_info_;
    }
    return command_infos_.emplace(name, info).first->second;
  }

  std::string command_label(const std::string& name) {
    if (known_commands_.count(name)) return name;
    if (known_commands_.size() < *max_commands_) {
      known_commands_.insert(name);
      return name;
    }
    if (commands_table_) commands_table_->count_refused();
    return "other";
  }

  std::string status_label(const std::string& prefix) {
    if (known_statuses_.count(prefix)) return prefix;
    if (known_statuses_.size() < kMaxStatuses) {
      known_statuses_.insert(prefix);
      return prefix;
    }
    return "other";
  }

  void finish(const Socket& s, const Command& c, const RespMessage* reply, Outcome outcome,
              EventEmitter& out) {
    const char* side = s.client ? "client" : "server";
    const std::string label = command_label(c.name);
    std::string error;
    if (reply) {
      const bool is_error = reply->type == RespType::error || reply->type == RespType::bulk_error;
      if (is_error && !reply->strings.empty()) error = printable(reply->strings[0], 128);
      count_answered(label, is_error ? status_label(error_prefix(error)) : "ok", side, s.cgroup_id,
                     static_cast<double>(reply->start_ns - c.ns) / 1e9);
    } else {
      unanswered_.add({side, std::to_string(s.cgroup_id)}, 1);
    }
    if (!*events_on_) return;
    const Cmd& e = command_;
    const nw_tuple& t = s.tuple;
    auto row = e.row(out);
    if (s.cgroup_id) row.set(e.cgroup_id, s.cgroup_id);
    row.set(e.side, side)
        .set(e.pid, s.pid)
        .set(e.comm, s.comm)
        .set(e.family, family_name(t.family))
        .set(e.saddr, format_address(t.family, t.saddr))
        .set(e.sport, t.sport)
        .set(e.daddr, format_address(t.family, t.daddr))
        .set(e.dport, t.dport)
        .set(e.command, c.name)
        .set(e.args, c.args)
        .set(e.request_bytes, c.bytes)
        .set(e.db, static_cast<std::uint64_t>(c.db))
        .set(e.proto, static_cast<std::uint64_t>(c.proto))
        .set(e.outcome, outcome_names[static_cast<int>(outcome)])
        .set(e.tls, s.tls)
        .set(e.sock, s.cookie);
    if (!c.key.empty()) row.set(e.key, c.key);
    if (reply) {
      row.set(e.reply_type, resp_type_name(reply->type))
          .set(e.reply_bytes, reply->bytes)
          .set(e.latency_us, static_cast<double>(reply->start_ns - c.ns) / 1e3);
      if (!error.empty()) row.set(e.error, error);
      if (reply->type == RespType::simple && !reply->strings.empty())
        row.set(e.reply, printable(reply->strings[0], 64));
    }
    row.emit(reply ? reply->start_ns : 0);
  }

  void count_key(const std::string& key) {
    auto it = key_counts_.find(key);
    if (it != key_counts_.end()) {
      ++it->second;
    } else if (key_counts_.size() < *max_tracked_keys_) {
      key_counts_.emplace(key, 1);
    } else {
      ++untracked_keys_;
    }
  }

  void report_hot_keys(std::uint64_t now, EventEmitter& out) {
    if (key_counts_.empty()) return;
    std::vector<std::pair<std::string, std::uint64_t>> top(key_counts_.begin(), key_counts_.end());
    const std::size_t n = std::min(*hot_keys_, top.size());
    std::partial_sort(top.begin(), top.begin() + static_cast<std::ptrdiff_t>(n), top.end(),
                      [](const auto& a, const auto& b) {
                        return a.second != b.second ? a.second > b.second : a.first < b.first;
                      });
    std::string keys;
    for (std::size_t i = 0; i < n; ++i) {
      if (i) keys += ',';
      keys += top[i].first + "=" + std::to_string(top[i].second);
    }
    std::uint64_t total = untracked_keys_;
    for (const auto& [key, count] : key_counts_) total += count;
    auto row = hot_.row(out);
    row.set(hot_.keys, keys)
        .set(hot_.distinct, static_cast<std::uint64_t>(key_counts_.size()))
        .set(hot_.commands, total)
        .set(hot_.untracked, untracked_keys_);
    row.emit(now);
    key_counts_.clear();
    untracked_keys_ = 0;
  }

  static constexpr std::size_t kMaxStatuses = 64;
  static constexpr std::size_t kMaxCommandInfos = 4096;

  KeySet keys_;
  Setting<std::uint32_t> capture_bytes_{
      keys_,
      "capture_bytes",
      2048,
      "payload bytes of each TCP segment read (the shared capture takes the largest any "
      "protocol asks for; pipelined commands past them are lost)",
      {.min = 64, .max = NW_L7_MAX_CAPTURE}};
  Setting<double> command_timeout_{
      keys_, "command_timeout", 30.0,
      "seconds after which an unanswered command is reported as timed_out (blocking "
      "commands such as BLPOP may wait longer)"};
  Setting<std::size_t> max_pending_{
      keys_,
      "max_pending",
      1024,
      "unanswered commands kept per socket (the oldest is reported as timed_out)",
      {.min = 16, .max = 1 << 20}};
  Setting<bool> key_field_{keys_, "key_field", true, "report each command's first key"};
  Setting<std::size_t> max_key_bytes_{keys_,
                                      "max_key_bytes",
                                      64,
                                      "bytes of a key reported (non-printable bytes as \\xNN)",
                                      {.min = 1, .max = 1024}};
  Setting<bool> events_on_{keys_, "events", true, "a redis_command event per command"};
  Setting<std::size_t> max_commands_{
      keys_,
      "max_commands",
      200,
      "command names with their own series; the rest count under command=\"other\"",
      {.min = 1, .max = 10000}};
  Setting<std::size_t> hot_keys_{
      keys_,
      "hot_keys",
      0,
      "report the N most used keys of each snapshot as a redis_hot_keys event (0: off)",
      {.min = 0, .max = 1000}};
  Setting<std::size_t> max_tracked_keys_{
      keys_,
      "max_tracked_keys",
      100000,
      "distinct keys counted per snapshot for hot_keys (more are not counted)",
      {.min = 16, .max = 1 << 22}};

  EventSet events_;
  struct Cmd : EventDecl {
    explicit Cmd(EventSet& set)
        : EventDecl(set, "redis_command",
                    "one Redis command with its reply (or why there is none)") {}
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
    Label<std::string> command{*this,
                               "command",
                               "upper-case command name; two words for container commands "
                               "(CONFIG GET, CLIENT SETNAME); UNKNOWN when not shaped like one",
                               {.width = 14, .anomaly = AnomalyRole::key}};
    Text key{*this,
             "key",
             "the command's first key (at most max_key_bytes; non-printable bytes as \\xNN)",
             {.width = 20, .optional = true}};
    Field<std::uint64_t> args{*this, "args", "arguments, the command's name included", {}};
    Field<std::uint64_t> request_bytes{
        *this, "request_bytes", "bytes of the command on the wire", {.unit = "bytes"}};
    Field<std::uint64_t> db{*this, "db", "database index the command ran in (after SELECT)", {}};
    Field<std::uint64_t> proto{
        *this, "proto", "RESP version of the connection (2, or 3 after HELLO 3)", {}};
    Label<std::string> reply_type{*this,
                                  "reply_type",
                                  "simple, error, integer, bulk, array, null, map, set, "
                                  "boolean, double, big_number, bulk_error, verbatim",
                                  {.width = 7, .optional = true}};
    Text reply{*this,
               "reply",
               "a simple-string reply: OK, QUEUED, PONG, ...",
               {.width = 8, .optional = true}};
    Text error{*this,
               "error",
               "an error reply: its prefix and message, e.g. WRONGTYPE Operation against ...",
               {.width = 24, .optional = true}};
    Field<std::uint64_t> reply_bytes{*this,
                                     "reply_bytes",
                                     "bytes of the reply on the wire",
                                     {.unit = "bytes", .optional = true}};
    Field<double> latency_us{
        *this,
        "latency_us",
        "from the command's first byte to its reply's, at this socket",
        {.unit = "microseconds", .width = 10, .optional = true, .anomaly = AnomalyRole::sample}};
    Label<std::string> outcome{
        *this, "outcome", "answered, timed_out or closed (no reply)", {.width = 9}};
    L7TlsLabel tls{*this};
    L7SocketLabel sock{*this};
  } command_{events_};
  struct HotKeys : EventDecl {
    explicit HotKeys(EventSet& set)
        : EventDecl(set, "redis_hot_keys",
                    "the most used keys since the last snapshot (hot_keys = N)") {}
    Text keys{*this, "keys", "key=commands, most used first, comma separated", {.width = 40}};
    Field<std::uint64_t> distinct{*this, "distinct", "distinct keys counted", {}};
    Field<std::uint64_t> commands{*this, "commands", "commands with a key", {}};
    Field<std::uint64_t> untracked{
        *this, "untracked", "commands on keys past max_tracked_keys, not counted per key", {}};
  } hot_{events_};

  MetricSet metrics_;
  Counter commands_{metrics_,
                    "netwatcher_redis_commands_total",
                    "Redis commands answered, by command, status (ok or the error prefix) and "
                    "the side that saw them.",
                    {"command", "status", "side", kCgroupIdLabel}};
  Histogram duration_{metrics_,
                      "netwatcher_redis_command_duration_seconds",
                      "From command to reply, by command and side (db.client.operation.duration).",
                      {"command", "side", kCgroupIdLabel},
                      duration_buckets()};
  Counter unanswered_{metrics_,
                      "netwatcher_redis_commands_unanswered_total",
                      "Redis commands without a reply: timed out, or their connection closed.",
                      {"side", kCgroupIdLabel}};
  Counter pushes_{metrics_,
                  "netwatcher_redis_pushes_total",
                  "Values the server pushed that answer no command: pub/sub messages, extra "
                  "(un)subscribe confirmations, MONITOR lines, invalidations.",
                  {"kind", "side"}};
  Counter parse_errors_{metrics_,
                        "netwatcher_redis_parse_errors_total",
                        "RESP that did not parse, by kind; replies with no command waiting; "
                        "streams whose next value start was not seen (lost_sync).",
                        {"kind"}};
  Counter internal_errors_{metrics_,
                           "netwatcher_redis_internal_errors_total",
                           "Packets the plugin could not process (out of memory).",
                           {}};

  Limits limits_;
  TableAccount* commands_table_ = nullptr;
  std::unordered_map<std::uint64_t, Socket> sockets_;
  std::vector<RespMessage> messages_;
  std::unordered_set<std::string> known_commands_, known_statuses_;
  std::unordered_map<std::string, CommandInfo> command_infos_;
  // dirty: changed since the last refresh; used: since the last snapshot.
  struct CountSeries {
    LabelValues labels;
    double value = 0;
    bool dirty = false, used = false;
    unsigned idle = 0;  // snapshots without use
  };
  struct DurationSeries {
    LabelValues labels;
    std::vector<std::uint64_t> counts;  // per bucket of bounds_, then +Inf
    double sum = 0;
    bool dirty = false, used = false;
    unsigned idle = 0;
  };
  static constexpr unsigned kIdleSnapshots = 60;
  // Bounded like the labels they carry: max_commands x 64 statuses x 2 sides,
  // per cgroup that sent commands in the last kIdleSnapshots snapshots.
  std::unordered_map<std::string, CountSeries> counts_;
  std::unordered_map<std::string, DurationSeries> durations_;
  const std::vector<double> bounds_ = duration_buckets();
  std::string key_;
  CommandInfo scratch_info_;
  std::unordered_map<std::string, std::uint64_t> key_counts_;
  std::uint64_t untracked_keys_ = 0;
};

}  // namespace

NETWATCHER_PROBE_PLUGIN(RedisPlugin, "redis", "1.0.0",
                        "Redis commands and replies read from any process's traffic, RESP2 and "
                        "RESP3")
