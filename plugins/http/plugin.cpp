// http: HTTP/1.x requests and responses read from the traffic of any
// process, on any port: method, path, host, status, sizes and latency, from
// the client's and from the server's socket.
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "http_parser.hpp"
#include "netwatcher/bpf/types.h"
#include "netwatcher/format.hpp"
#include "netwatcher/kernel.hpp"
#include "netwatcher/l7_protocol.hpp"
#include "netwatcher/l7_tracker.hpp"
#include "netwatcher/plugin.hpp"

namespace {

using namespace netwatcher;

// Request durations from 64 us to 64 s, doubling.
std::vector<double> duration_buckets() {
  std::vector<double> bounds;
  for (double b = 64e-6; b <= 64.5; b *= 2) bounds.push_back(b);
  return bounds;
}

const char* side_name(L7Side side) {
  return side == L7Side::client ? "client" : "server";
}

const char* outcome_name(L7Outcome outcome) {
  switch (outcome) {
    case L7Outcome::answered:
      return "answered";
    case L7Outcome::timed_out:
      return "timed_out";
    case L7Outcome::closed:
      return "closed";
  }
  return "unknown";
}

std::string status_class(int status) {
  return status >= 100 && status <= 599 ? std::to_string(status / 100) + "xx" : "other";
}

// What the capture told about a socket, for the exchanges it ends in.
struct SocketInfo {
  nw_tuple tuple{};
  std::uint32_t pid = 0;
  std::string comm;
  std::uint64_t cgroup_id = 0;
  bool tls = false;
};

// No BPF object of its own: the shared capture brings the segments.
class HttpPlugin final : public L7Protocol, public WithoutBpfObject {
 public:
  PluginDescription describe() const {
    PluginDescription d;
    d.config = keys_.keys();
    d.flags = {{'i', "http", "enabled", "HTTP requests and responses from the traffic"}};
    d.events = events_.schemas();
    d.metrics = metrics_.specs();
    d.hooks = {{"tcp", "TCP segments, from the shared L7 capture", {"l7:tcp"}, true}};
    return d;
  }

  // The global filter is the shared capture's to apply, in the kernel.
  Status configure(const ConfigValues& config, const GlobalFilter&) {
    if (Status s = keys_.read(config); !s) return s;
    if (!(*request_timeout_ >= 0.001 && *request_timeout_ <= 86400))
      return Status::failure("plugins.http.request_timeout must be between 0.001 and 86400 s");
    limits_.timeout_ns = static_cast<std::uint64_t>(*request_timeout_ * 1e9);
    limits_.max_connections = *max_connections_;
    parser_ = std::make_unique<http::HttpParser>(http::HttpParserOptions{16 * 1024, *strip_query_});
    tracker_ = std::make_unique<L7Tracker>(*parser_, limits_);
    return Status::success();
  }

  Status start(PluginHost& host) {
    if (Status s = metrics_.bind(host); !s) return s;
    for (const char* outcome : {"timed_out", "closed"})
      for (const char* side : {"client", "server"}) unanswered_.add({outcome, side, "0"}, 0);
    connections_table_ =
        host.track_table({"connections", "", 0, *max_connections_, "plugins.http.max_connections"});
    if (*path_labels_)
      paths_table_ = host.track_table({"paths", "", 0, *max_paths_, "plugins.http.max_paths"});
    host.set_metrics_refresh([this] { return refresh_metrics(); });
    return host.serve_protocol(*this);
  }

  // L7Protocol, from the shared capture.
  std::string_view protocol_name() const noexcept override { return "http"; }
  unsigned transports() const noexcept override { return kL7Tcp; }
  std::uint32_t capture_bytes() const noexcept override { return *capture_bytes_; }
  L7Detection detect(const L7Packet& packet) noexcept override {
    // A socket is HTTP when its first payload is a request line, in
    // whichever direction it comes.
    return http::detect_request_start(packet.captured, packet.captured.size() < packet.length);
  }
  void packet(const L7Packet& packet, EventEmitter& out) noexcept override {
    try {
      done_.clear();
      remember_socket(packet);
      tracker_->segment(
          {packet.socket, packet.outbound, packet.seq, packet.length, packet.captured, packet.ns},
          done_);
      emit_all(out);
    } catch (...) {
      failures_.add({}, 1);
    }
  }
  void closed(std::uint64_t socket, EventEmitter& out) noexcept override {
    try {
      done_.clear();
      tracker_->close(socket, done_);
      emit_all(out);
      forget_socket(socket);
    } catch (...) {
      failures_.add({}, 1);
    }
  }

  Status collect(EventEmitter& out) {
    done_.clear();
    tracker_->expire(monotonic_ns(), done_);
    emit_all(out);
    // Sockets the tracker forgot (idle, evicted) need no info either.
    std::erase_if(sockets_, [this](const auto& socket) {
      if (tracker_->tracking(socket.first)) return false;
      by_tuple_.erase(tuple_key(socket.second.tuple, false));
      return true;
    });
    return refresh_metrics();
  }

  // The tracker counts parse errors as records are decoded; also run at
  // scrape time.
  Status refresh_metrics() {
    const auto& s = tracker_->stats();
    parse_errors_.mirror({"invalid_request"}, static_cast<double>(s.invalid_requests));
    parse_errors_.mirror({"invalid_response"}, static_cast<double>(s.invalid_responses));
    parse_errors_.mirror({"orphan_response"}, static_cast<double>(s.orphan_responses));
    parse_errors_.mirror({"lost_sync"}, static_cast<double>(s.lost_sync));
    if (connections_table_) {
      connections_table_->set_entries(tracker_->connections());
      connections_table_->count_evicted(s.evicted_connections - evictions_reported_);
      evictions_reported_ = s.evicted_connections;
    }
    if (paths_table_) paths_table_->set_entries(known_paths_.size());
    return Status::success();
  }

  void stop() {}

 private:
  // Local and remote end of a tuple as a key; `mirrored` swaps them, which
  // is how the other end's socket sees the same connection.
  static std::string tuple_key(const nw_tuple& t, bool mirrored) {
    std::string key(reinterpret_cast<const char*>(&t.family), sizeof t.family);
    auto end = [&](const __u8* addr, __u16 port) {
      key.append(reinterpret_cast<const char*>(addr), 16);
      key.append(reinterpret_cast<const char*>(&port), sizeof port);
    };
    if (mirrored) {
      end(t.daddr, t.dport);
      end(t.saddr, t.sport);
    } else {
      end(t.saddr, t.sport);
      end(t.daddr, t.dport);
    }
    return key;
  }

  void remember_socket(const L7Packet& packet) {
    auto [it, inserted] = sockets_.try_emplace(packet.socket);
    SocketInfo& info = it->second;
    if (inserted) by_tuple_[tuple_key(packet.tuple, false)] = packet.socket;
    info.tuple = packet.tuple;
    info.tls = packet.tls;
    if (packet.cgroup_id) info.cgroup_id = packet.cgroup_id;
    if (packet.pid) {
      info.pid = packet.pid;
      info.comm = packet.comm;
    }
  }

  void forget_socket(std::uint64_t cookie) {
    auto it = sockets_.find(cookie);
    if (it == sockets_.end()) return;
    by_tuple_.erase(tuple_key(it->second.tuple, false));
    sockets_.erase(it);
  }

  // The socket at the other end of `info`'s connection, when it is on this
  // host and was seen. (Two namespaces with the same addresses and ports
  // would be confused; the tuple is all there is to go by.)
  const SocketInfo* peer_of(const SocketInfo& info) const {
    auto it = by_tuple_.find(tuple_key(info.tuple, true));
    if (it == by_tuple_.end()) return nullptr;
    auto peer = sockets_.find(it->second);
    return peer != sockets_.end() ? &peer->second : nullptr;
  }

  void emit_all(EventEmitter& out) {
    for (const L7Exchange& exchange : done_) emit(exchange, out);
    done_.clear();
  }

  void emit(const L7Exchange& e, EventEmitter& out) {
    const char* side = side_name(e.side);
    const std::string& method = e.request.operation;
    SocketInfo info;
    if (auto it = sockets_.find(e.connection); it != sockets_.end()) info = it->second;
    const std::string cgroup = std::to_string(info.cgroup_id);
    if (e.outcome == L7Outcome::answered && e.response) {
      const std::string klass = status_class(e.response->status);
      requests_.add({method, klass, side, cgroup}, 1);
      duration_.observe({method, side, cgroup},
                        static_cast<double>(e.response_ns - e.request_ns) / 1e9);
      if (*path_labels_) count_path(method, e.request.resource, klass, side);
    } else {
      unanswered_.add({outcome_name(e.outcome), side, cgroup}, 1);
    }
    if (!*events_on_) return;
    const SocketInfo* peer = peer_of(info);
    const nw_tuple& t = info.tuple;
    const Exchange& x = exchange_;
    auto row = x.row(out);
    if (info.cgroup_id) row.set(x.cgroup_id, info.cgroup_id);
    row.set(x.side, side)
        .set(x.pid, info.pid)
        .set(x.comm, info.comm)
        .set(x.family, family_name(t.family))
        .set(x.saddr, format_address(t.family, t.saddr))
        .set(x.sport, t.sport)
        .set(x.daddr, format_address(t.family, t.daddr))
        .set(x.dport, t.dport)
        .set(x.method, method)
        .set(x.path, e.request.resource)
        .set(x.host, e.request.authority)
        .set(x.outcome, outcome_name(e.outcome))
        .set(x.tls, info.tls)
        .set(x.sock, e.connection);
    if (peer && peer->pid) row.set(x.peer_pid, peer->pid).set(x.peer_comm, peer->comm);
    if (e.request.body_size) row.set(x.request_bytes, *e.request.body_size);
    if (e.response) {
      row.set(x.status, static_cast<std::uint64_t>(e.response->status))
          .set(x.latency_us, static_cast<double>(e.response_ns - e.request_ns) / 1e3);
      if (e.response->body_size) row.set(x.response_bytes, *e.response->body_size);
    }
    row.emit(e.response ? e.response_ns : 0);
  }

  void count_path(const std::string& method, const std::string& path, const std::string& klass,
                  const char* side) {
    std::string label = path;
    if (!known_paths_.count(path)) {
      if (known_paths_.size() < *max_paths_) {
        known_paths_[path] = true;
      } else {
        label = "other";
        if (paths_table_) paths_table_->count_refused();
      }
    }
    paths_.add({method, label, klass, side}, 1);
  }

  KeySet keys_;
  Setting<std::uint32_t> capture_bytes_{
      keys_,
      "capture_bytes",
      256,
      "payload bytes of each TCP segment read (the shared capture takes the largest any "
      "protocol asks for)",
      {.min = 16, .max = NW_L7_MAX_CAPTURE}};
  Setting<bool> strip_query_{keys_, "strip_query", true,
                             "report paths without their query string (?...)"};
  Setting<double> request_timeout_{
      keys_, "request_timeout", 30.0,
      "seconds after which an unanswered request is reported as timed_out"};
  Setting<std::size_t> max_connections_{
      keys_,
      "max_connections",
      16384,
      "connections followed at once (least recently active forgotten)",
      {.min = 16, .max = 1 << 22}};
  Setting<bool> events_on_{keys_, "events", true, "an http_exchange event per request"};
  Setting<bool> path_labels_{keys_, "path_labels", false,
                             "also count requests per path (netwatcher_http_path_requests_total)"};
  Setting<std::size_t> max_paths_{
      keys_,
      "max_paths",
      100,
      "paths with their own series; the rest count under path=\"other\"",
      {.min = 1, .max = 100000}};

  EventSet events_;
  struct Exchange : EventDecl {
    explicit Exchange(EventSet& set)
        : EventDecl(set, "http_exchange",
                    "one HTTP request with its response (or why there is none)") {}
    Label<std::string> side{*this,
                            "side",
                            "client or server: which socket saw the exchange",
                            {.width = 6, .anomaly = AnomalyRole::key}};
    Label<std::uint64_t> pid{
        *this, "pid", "process owning the socket (0 until it sent or read)", {.width = 7}};
    Label<std::string> comm{*this, "comm", "process name", {.width = 15}};
    CgroupIdLabel cgroup_id{*this};
    Label<std::uint64_t> peer_pid{
        *this,
        "peer_pid",
        "process at the other end, when it is on this host (absent otherwise)",
        {.width = 8, .optional = true}};
    Label<std::string> peer_comm{*this, "peer_comm", "its name", {.width = 15, .optional = true}};
    Label<std::string> family{*this, "family", "ipv4 or ipv6", {.width = 6}};
    Label<std::string> saddr{*this, "saddr", "local address", {.width = 15}};
    Label<std::uint64_t> sport{*this, "sport", "local port", {.width = 5}};
    Label<std::string> daddr{*this, "daddr", "remote address", {.width = 15}};
    Label<std::uint64_t> dport{*this, "dport", "remote port", {.width = 5}};
    Label<std::string> method{*this, "method", "request method", {.width = 7}};
    Label<std::string> path{
        *this, "path", "request path (query stripped unless strip_query = false)", {.width = 24}};
    Label<std::string> host{*this, "host", "Host header", {.width = 16}};
    Label<std::uint64_t> status{
        *this, "status", "response status code", {.width = 6, .optional = true}};
    Label<std::string> outcome{
        *this, "outcome", "answered, timed_out or closed (no response)", {.width = 9}};
    Field<double> latency_us{
        *this,
        "latency_us",
        "from the request's first segment to the response's first segment, at this socket",
        {.unit = "microseconds", .width = 10, .optional = true, .anomaly = AnomalyRole::sample}};
    Field<std::uint64_t> request_bytes{*this,
                                       "request_bytes",
                                       "request body size, when known",
                                       {.unit = "bytes", .optional = true}};
    Field<std::uint64_t> response_bytes{*this,
                                        "response_bytes",
                                        "response body size, when known",
                                        {.unit = "bytes", .optional = true}};
    L7TlsLabel tls{*this};
    L7SocketLabel sock{*this};
  } exchange_{events_};

  MetricSet metrics_;
  Counter requests_{metrics_,
                    "netwatcher_http_requests_total",
                    "HTTP requests answered, by method, status class and the side that saw them.",
                    {"method", "status_class", "side", kCgroupIdLabel}};
  Histogram duration_{metrics_,
                      "netwatcher_http_request_duration_seconds",
                      "From request to response start, by method and side.",
                      {"method", "side", kCgroupIdLabel},
                      duration_buckets()};
  Counter unanswered_{metrics_,
                      "netwatcher_http_requests_unanswered_total",
                      "HTTP requests without a response: timed_out or closed.",
                      {"outcome", "side", kCgroupIdLabel}};
  Counter paths_{metrics_,
                 "netwatcher_http_path_requests_total",
                 "HTTP requests per path (path_labels = true, at most max_paths paths).",
                 {"method", "path", "status_class", "side"}};
  Counter parse_errors_{metrics_,
                        "netwatcher_http_parse_errors_total",
                        "Message starts that did not parse, and responses without a request.",
                        {"kind"}};
  Counter failures_{metrics_,
                    "netwatcher_http_internal_errors_total",
                    "Segments the plugin could not process (out of memory).",
                    {}};

  L7TrackerLimits limits_;
  TableAccount *connections_table_ = nullptr, *paths_table_ = nullptr;
  std::uint64_t evictions_reported_ = 0;  // of the tracker's, already counted in the table
  std::unique_ptr<http::HttpParser> parser_;
  std::unique_ptr<L7Tracker> tracker_;
  std::vector<L7Exchange> done_;
  std::unordered_map<std::uint64_t, SocketInfo> sockets_;
  std::unordered_map<std::string, std::uint64_t> by_tuple_;  // tuple_key(local first) -> cookie
  std::unordered_map<std::string, bool> known_paths_;
};

}  // namespace

NETWATCHER_PROBE_PLUGIN(HttpPlugin, "http", "1.0.0",
                        "HTTP/1.x requests and responses read from any process's traffic")
