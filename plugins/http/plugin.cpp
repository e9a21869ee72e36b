// http: HTTP/1.x and HTTP/2 requests and responses read from the traffic of
// any process, on any port: method, path, host, status, sizes and latency,
// from the client's and from the server's socket; gRPC's service, method and
// status from HTTP/2.
#include <algorithm>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "h2_connection.hpp"
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

const char* outcome_name(http::H2Outcome outcome) {
  switch (outcome) {
    case http::H2Outcome::answered:
      return "answered";
    case http::H2Outcome::reset:
      return "reset";
    case http::H2Outcome::closed:
      return "closed";
    case http::H2Outcome::timed_out:
      return "timed_out";
    case http::H2Outcome::lost:
      return "lost";
  }
  return "unknown";
}

// gRPC status codes by number (grpc/doc/statuscodes.md).
std::string grpc_code_name(std::optional<int> code) {
  static constexpr const char* kNames[] = {"OK",
                                           "CANCELLED",
                                           "UNKNOWN",
                                           "INVALID_ARGUMENT",
                                           "DEADLINE_EXCEEDED",
                                           "NOT_FOUND",
                                           "ALREADY_EXISTS",
                                           "PERMISSION_DENIED",
                                           "RESOURCE_EXHAUSTED",
                                           "FAILED_PRECONDITION",
                                           "ABORTED",
                                           "OUT_OF_RANGE",
                                           "UNIMPLEMENTED",
                                           "INTERNAL",
                                           "UNAVAILABLE",
                                           "DATA_LOSS",
                                           "UNAUTHENTICATED"};
  if (!code) return "none";
  if (*code >= 0 && *code < static_cast<int>(std::size(kNames))) return kNames[*code];
  return std::to_string(*code);
}

// "/package.Service/Method" into its two names; false for any other path.
bool grpc_names(std::string_view path, std::string_view& service, std::string_view& method) {
  if (path.size() < 4 || path[0] != '/') return false;
  const auto slash = path.find('/', 1);
  if (slash == std::string_view::npos || slash == 1 || slash + 1 == path.size()) return false;
  service = path.substr(1, slash - 1);
  method = path.substr(slash + 1);
  return method.find('/') == std::string_view::npos;
}

bool is_grpc(std::string_view content_type) {
  return content_type.substr(0, 16) == "application/grpc" &&
         (content_type.size() == 16 || content_type[16] == '+' || content_type[16] == ';');
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
    d.flags = {
        {'i', "http", "enabled", "HTTP/1.x and HTTP/2 requests and responses from the traffic"}};
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
    h2_limits_.strip_query = *strip_query_;
    tracker_ = std::make_unique<L7Tracker>(*parser_, limits_);
    return Status::success();
  }

  Status start(PluginHost& host) {
    if (Status s = metrics_.bind(host); !s) return s;
    for (const char* outcome : {"timed_out", "closed", "reset"})
      for (const char* side : {"client", "server"}) unanswered_.add({outcome, side, "0"}, 0);
    connections_table_ =
        host.track_table({"connections", "", 0, *max_connections_, "plugins.http.max_connections"});
    if (*path_labels_)
      paths_table_ = host.track_table({"paths", "", 0, *max_paths_, "plugins.http.max_paths"});
    grpc_table_ = host.track_table(
        {"grpc_methods", "", 0, *max_grpc_methods_, "plugins.http.max_grpc_methods"});
    host.set_metrics_refresh([this] { return refresh_metrics(); });
    return host.serve_protocol(*this);
  }

  // L7Protocol, from the shared capture.
  std::string_view protocol_name() const noexcept override { return "http"; }
  unsigned transports() const noexcept override { return kL7Tcp; }
  std::uint32_t capture_bytes() const noexcept override { return *capture_bytes_; }
  L7Detection detect(const L7Packet& packet) noexcept override {
    // A socket is HTTP when its first payload is a request line, in
    // whichever direction it comes, or HTTP/2 framing.
    const L7Detection h1 =
        http::detect_request_start(packet.captured, packet.captured.size() < packet.length);
    if (h1 == L7Detection::yes) return h1;
    return std::max(h1, http::detect_h2(packet.captured, packet.length));
  }
  void packet(const L7Packet& packet, EventEmitter& out) noexcept override {
    try {
      done_.clear();
      remember_socket(packet);
      if (auto it = switched_.find(packet.socket); it != switched_.end()) {
        after_switch(it, packet, 0, out);
        return;
      }
      if (http::H2Connection* h2 = h2_connection(packet)) {
        h2->segment(packet.outbound, packet.seq, packet.length, packet.captured, packet.pieces,
                    packet.ns, h2_done_);
        emit_h2(out);
        return;
      }
      if (const std::size_t head = switching_head(packet)) {
        switch_protocols(packet, head, out);
        return;
      }
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
      if (auto it = switched_.find(socket); it != switched_.end()) {
        if (it->second.upgrade)  // nothing came after the 101
          done_.push_back(std::move(*it->second.upgrade));
        switched_.erase(it);
      }
      emit_all(out);
      if (auto it = h2_.find(socket); it != h2_.end()) {
        it->second->close(h2_done_);
        h2_.erase(it);
        emit_h2(out);
      }
      h2_sockets_.erase(socket);
      forget_socket(socket);
    } catch (...) {
      failures_.add({}, 1);
    }
  }

  Status collect(EventEmitter& out) {
    done_.clear();
    const std::uint64_t now = monotonic_ns();
    tracker_->expire(now, done_);
    emit_all(out);
    for (auto& [socket, h2] : h2_) h2->expire(now, limits_.timeout_ns, h2_done_);
    // An idle HTTP/2 connection with nothing open is forgotten like an
    // HTTP/1 one (its HPACK tables with it: heard from again, it is joined
    // mid-way).
    std::erase_if(h2_, [&](const auto& entry) {
      return entry.second->open_streams() == 0 && now > entry.second->last_ns() + limits_.idle_ns;
    });
    emit_h2(out);
    // Past a 101, idle like a forgotten connection: the 101 exchange is
    // reported if nothing said what followed it.
    for (auto it = switched_.begin(); it != switched_.end();) {
      if (now > it->second.last_ns + limits_.idle_ns) {
        if (it->second.upgrade) done_.push_back(std::move(*it->second.upgrade));
        it = switched_.erase(it);
      } else {
        ++it;
      }
    }
    emit_all(out);
    // Sockets the trackers forgot (idle, evicted) need no info either.
    std::erase_if(sockets_, [this](const auto& socket) {
      if (tracker_->tracking(socket.first) || h2_.count(socket.first) ||
          switched_.count(socket.first))
        return false;
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
    parse_errors_.mirror({"h2_invalid_frame"}, static_cast<double>(h2_stats_.invalid_frames));
    parse_errors_.mirror({"h2_lost_sync"}, static_cast<double>(h2_stats_.lost_sync));
    parse_errors_.mirror({"h2_table_lost"}, static_cast<double>(h2_stats_.table_lost));
    parse_errors_.mirror({"h2_orphan_response"}, static_cast<double>(h2_stats_.orphan_responses));
    parse_errors_.mirror({"h2_dropped_stream"}, static_cast<double>(h2_stats_.dropped_streams));
    parse_errors_.mirror({"h2_lost_stream"}, static_cast<double>(h2_stats_.lost_streams));
    if (connections_table_) {
      connections_table_->set_entries(tracker_->connections() + h2_.size());
      const std::uint64_t evicted = s.evicted_connections + h2_evicted_;
      connections_table_->count_evicted(evicted - evictions_reported_);
      evictions_reported_ = evicted;
    }
    if (grpc_table_) grpc_table_->set_entries(known_grpc_.size());
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

  // An exchange of either version, as metrics and the event show it.
  struct Finished {
    std::uint64_t connection = 0;
    L7Side side = L7Side::client;
    std::string_view method, path, host, version, outcome;
    int status = 0;  // 0: no response (or its :status was lost)
    std::optional<std::uint64_t> request_bytes, response_bytes;
    std::uint64_t request_ns = 0, response_ns = 0;  // response_ns 0: no response
    // HTTP/2 only.
    std::uint32_t stream_id = 0;
    bool partial_headers = false;
    std::string_view reset_code;
    bool grpc = false;
    std::string_view grpc_service, grpc_method;
    std::optional<int> grpc_status;
  };

  void emit(const L7Exchange& e, EventEmitter& out) {
    Finished f;
    f.connection = e.connection;
    f.side = e.side;
    f.method = e.request.operation;
    f.path = e.request.resource;
    f.host = e.request.authority;
    f.version = e.request.version;
    f.outcome = outcome_name(e.outcome);
    f.request_bytes = e.request.body_size;
    f.request_ns = e.request_ns;
    if (e.response) {
      f.status = e.response->status;
      f.response_bytes = e.response->body_size;
      f.response_ns = e.response_ns;
    }
    record(f, out);
  }

  void emit_h2(EventEmitter& out) {
    for (const http::H2Exchange& e : h2_done_) {
      Finished f;
      f.connection = e.connection;
      f.side = e.side;
      f.method = e.method;
      f.path = e.path;
      f.host = e.authority;
      f.version = "2";
      f.outcome = outcome_name(e.outcome);
      f.status = e.status;
      f.request_bytes = e.request_bytes;
      f.request_ns = e.request_ns;
      if (e.response_ns) {
        f.response_bytes = e.response_bytes;
        f.response_ns = e.response_ns;
      }
      f.stream_id = e.stream_id;
      f.partial_headers = e.partial_headers;
      f.reset_code = e.reset_code;
      f.grpc = is_grpc(e.content_type) && grpc_names(e.path, f.grpc_service, f.grpc_method);
      f.grpc_status = e.grpc_status;
      record(f, out);
    }
    h2_done_.clear();
  }

  void record(const Finished& e, EventEmitter& out) {
    const char* side = side_name(e.side);
    const std::string method(e.method);
    SocketInfo info;
    if (auto it = sockets_.find(e.connection); it != sockets_.end()) info = it->second;
    const std::string cgroup = std::to_string(info.cgroup_id);
    if (e.outcome == "answered" && e.response_ns) {
      const std::string klass = status_class(e.status);
      requests_.add({method, klass, side, cgroup}, 1);
      duration_.observe({method, side, cgroup},
                        static_cast<double>(e.response_ns - e.request_ns) / 1e9);
      if (*path_labels_) count_path(method, std::string(e.path), klass, side);
    } else if (e.outcome != "lost") {  // lost: counted as h2_lost_stream
      unanswered_.add({std::string(e.outcome), side, cgroup}, 1);
    }
    if (e.grpc) count_grpc(e, side);
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
        .set(x.path, std::string(e.path))
        .set(x.host, std::string(e.host))
        .set(x.outcome, std::string(e.outcome))
        .set(x.tls, info.tls)
        .set(x.sock, e.connection);
    if (!e.version.empty()) row.set(x.version, std::string(e.version));
    if (peer && peer->pid) row.set(x.peer_pid, peer->pid).set(x.peer_comm, peer->comm);
    if (e.request_bytes) row.set(x.request_bytes, *e.request_bytes);
    if (e.response_ns) {
      if (e.status) row.set(x.status, static_cast<std::uint64_t>(e.status));
      row.set(x.latency_us, static_cast<double>(e.response_ns - e.request_ns) / 1e3);
      if (e.response_bytes) row.set(x.response_bytes, *e.response_bytes);
    }
    if (e.stream_id) {
      row.set(x.stream_id, e.stream_id).set(x.partial_headers, e.partial_headers);
      if (!e.reset_code.empty()) row.set(x.reset_code, std::string(e.reset_code));
    }
    if (e.grpc) {
      row.set(x.grpc_service, std::string(e.grpc_service))
          .set(x.grpc_method, std::string(e.grpc_method));
      if (e.grpc_status) row.set(x.grpc_status, static_cast<std::uint64_t>(*e.grpc_status));
    }
    row.emit(e.response_ns);
  }

  void count_grpc(const Finished& e, const char* side) {
    std::string service(e.grpc_service), method(e.grpc_method);
    const std::string key = service + "/" + method;
    if (!known_grpc_.count(key)) {
      if (known_grpc_.size() < *max_grpc_methods_) {
        known_grpc_.insert(key);
      } else {
        service = method = "other";
        if (grpc_table_) grpc_table_->count_refused();
      }
    }
    grpc_requests_.add({service, method, grpc_code_name(e.grpc_status), side}, 1);
  }

  // A socket past a 101 response: the request that asked, until what
  // follows says HTTP/2; none once it said another protocol (the socket is
  // then not read further).
  struct Switched {
    std::optional<L7Exchange> upgrade;
    std::uint64_t last_ns = 0;  // the socket's last packet, for idle_ns
  };

  // The size of a "101 Switching Protocols" head that starts the packet and
  // ends inside its captured bytes, on a connection the HTTP/1 tracker
  // follows; 0 otherwise.
  std::size_t switching_head(const L7Packet& packet) const {
    const std::string_view text(reinterpret_cast<const char*>(packet.captured.data()),
                                packet.captured.size());
    if (!text.starts_with("HTTP/1.1 101") || !tracker_->tracking(packet.socket) ||
        switched_.size() >= *max_connections_)
      return 0;
    const std::size_t end = text.find("\r\n\r\n");
    return end == std::string_view::npos ? 0 : end + 4;
  }

  // A 101 answered the connection's request: HTTP/1 ends with its head.
  // What follows decides what the exchange becomes: HTTP/2 (Upgrade: h2c,
  // RFC 7540 3.2) makes it stream 1 of the new connection;
  // anything else (WebSocket...) leaves it the 101 exchange it is, and the
  // socket is not read further.
  void switch_protocols(const L7Packet& packet, std::size_t head, EventEmitter& out) {
    tracker_->segment({packet.socket, packet.outbound, packet.seq, static_cast<std::uint32_t>(head),
                       packet.captured.first(head), packet.ns},
                      done_);
    std::optional<L7Exchange> upgraded;
    for (auto it = done_.begin(); it != done_.end(); ++it) {
      if (it->connection == packet.socket && it->response && it->response->status == 101) {
        upgraded = std::move(*it);
        done_.erase(it);
        break;
      }
    }
    if (upgraded) tracker_->close(packet.socket, done_);  // nothing else is pending after it
    emit_all(out);
    if (!upgraded) {  // a 101 nobody asked for: the tracker reads the rest as it can
      tracker_->segment(
          {packet.socket, packet.outbound, packet.seq + static_cast<std::uint32_t>(head),
           packet.length - static_cast<std::uint32_t>(head), packet.captured.subspan(head),
           packet.ns},
          done_);
      emit_all(out);
      return;
    }
    auto it = switched_.emplace(packet.socket, Switched{std::move(upgraded), packet.ns}).first;
    after_switch(it, packet, head, out);
  }

  // A packet after a 101, from `offset` on.
  void after_switch(std::unordered_map<std::uint64_t, Switched>::iterator it,
                    const L7Packet& packet, std::size_t offset, EventEmitter& out) {
    it->second.last_ns = packet.ns;
    std::optional<L7Exchange>& upgrade = it->second.upgrade;
    if (offset >= packet.length || !upgrade) return;  // nothing yet, or not HTTP/2
    const auto bytes = packet.captured.subspan(std::min(offset, packet.captured.size()));
    const auto length = packet.length - static_cast<std::uint32_t>(offset);
    const L7Detection h2 = http::detect_h2(bytes, length);
    if (h2 == L7Detection::maybe) return;
    // A retransmission of the upgrade request or of the 101 decides nothing.
    const std::string_view text(reinterpret_cast<const char*>(bytes.data()), bytes.size());
    if (h2 == L7Detection::no &&
        (text.starts_with("HTTP/1.") ||
         http::detect_request_start(bytes, bytes.size() < length) == L7Detection::yes))
      return;
    if (h2 == L7Detection::no) {
      done_.push_back(std::move(*upgrade));
      upgrade.reset();  // the socket stays out of the HTTP/1 tracker
      emit_all(out);
      return;
    }
    const L7Exchange request = std::move(*upgrade);
    switched_.erase(it);
    http::H2Connection* connection = new_h2_connection(packet.socket);
    if (h2_sockets_.size() < 4 * *max_connections_) h2_sockets_.insert(packet.socket);
    connection->upgraded(request.side == L7Side::client, request.request.operation,
                         request.request.resource, request.request.authority,
                         request.request.body_size, request.request_ns);
    connection->segment(packet.outbound, packet.seq + static_cast<std::uint32_t>(offset), length,
                        bytes, offset == 0 ? packet.pieces : std::span<const L7Piece>(), packet.ns,
                        h2_done_);
    emit_h2(out);
  }

  // The HTTP/2 state of the packet's socket: found, made for a socket whose
  // first packet is HTTP/2, or null (HTTP/1, followed by the tracker). A
  // socket once seen speaking HTTP/2 stays HTTP/2 after its state went (idle,
  // evicted): it is joined again mid-way rather than read as HTTP/1.
  http::H2Connection* h2_connection(const L7Packet& packet) {
    if (auto it = h2_.find(packet.socket); it != h2_.end()) return it->second.get();
    if (!h2_sockets_.count(packet.socket)) {
      if (tracker_->tracking(packet.socket) ||
          http::detect_h2(packet.captured, packet.length) == L7Detection::no)
        return nullptr;
      // Bounded like the connections, a few times over: one forgotten
      // early is read as HTTP/1 until it next starts with a frame.
      if (h2_sockets_.size() >= 4 * *max_connections_) h2_sockets_.erase(h2_sockets_.begin());
      h2_sockets_.insert(packet.socket);
    }
    return new_h2_connection(packet.socket);
  }

  http::H2Connection* new_h2_connection(std::uint64_t socket) {
    if (h2_.size() >= *max_connections_) {
      // The least recently active one goes, its open streams as closed.
      auto oldest = std::min_element(h2_.begin(), h2_.end(), [](const auto& a, const auto& b) {
        return a.second->last_ns() < b.second->last_ns();
      });
      oldest->second->close(h2_done_);
      h2_.erase(oldest);
      ++h2_evicted_;
    }
    auto& slot = h2_[socket];
    slot = std::make_unique<http::H2Connection>(socket, h2_limits_, h2_stats_);
    return slot.get();
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
      NW_L7_MAX_CAPTURE,
      "payload bytes of each TCP segment read (the shared capture takes the largest any "
      "protocol asks for); HTTP/2 header blocks past it are lost with the HPACK table",
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
  Setting<std::size_t> max_grpc_methods_{
      keys_,
      "max_grpc_methods",
      100,
      "gRPC service/method pairs with their own series; the rest count as \"other\"",
      {.min = 1, .max = 100000}};
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
    Label<std::string> host{*this, "host", "Host header (HTTP/2: :authority)", {.width = 16}};
    Label<std::string> version{
        *this, "version", "HTTP version: 1.0, 1.1 or 2", {.width = 3, .optional = true}};
    Label<std::uint64_t> status{
        *this, "status", "response status code", {.width = 6, .optional = true}};
    Label<std::string> outcome{*this,
                               "outcome",
                               "answered, timed_out or closed (no response); HTTP/2 also reset "
                               "(RST_STREAM before the response ended) and lost (frames went "
                               "past the capture: whether it was answered is unknown)",
                               {.width = 9}};
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
    Label<std::uint64_t> stream_id{
        *this, "stream_id", "HTTP/2 stream id", {.width = 6, .optional = true}};
    Label<bool> partial_headers{*this,
                                "partial_headers",
                                "HTTP/2: a header field was lost with HPACK state the capture "
                                "missed (joined mid-way, or bytes not captured); shown fields "
                                "are exact, absent ones unknown",
                                {.width = 5, .optional = true}};
    Label<std::string> reset_code{*this,
                                  "reset_code",
                                  "HTTP/2 RST_STREAM error code, for outcome reset (e.g. CANCEL)",
                                  {.width = 14, .optional = true}};
    Label<std::string> grpc_service{*this,
                                    "grpc_service",
                                    "gRPC service (content-type application/grpc), from the path",
                                    {.width = 20, .optional = true}};
    Label<std::string> grpc_method{
        *this, "grpc_method", "gRPC method, from the path", {.width = 12, .optional = true}};
    Label<std::uint64_t> grpc_status{*this,
                                     "grpc_status",
                                     "gRPC status code from the trailers (0 is OK)",
                                     {.width = 4, .optional = true}};
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
                        "Message starts that did not parse, responses without a request, and "
                        "HTTP/2 framing and HPACK state the capture lost (kind h2_*).",
                        {"kind"}};
  Counter grpc_requests_{
      metrics_,
      "netwatcher_grpc_requests_total",
      "gRPC calls over HTTP/2 by service, method (at most max_grpc_methods pairs, the rest "
      "\"other\"), status code name (none: no grpc-status, e.g. reset) and side.",
      {"service", "method", "code", "side"}};
  Counter failures_{metrics_,
                    "netwatcher_http_internal_errors_total",
                    "Segments the plugin could not process (out of memory).",
                    {}};

  L7TrackerLimits limits_;
  TableAccount *connections_table_ = nullptr, *paths_table_ = nullptr, *grpc_table_ = nullptr;
  std::uint64_t evictions_reported_ = 0;  // of the tracker's, already counted in the table
  std::unique_ptr<http::HttpParser> parser_;
  std::unique_ptr<L7Tracker> tracker_;
  std::vector<L7Exchange> done_;
  http::H2Limits h2_limits_;
  http::H2Stats h2_stats_;
  std::unordered_map<std::uint64_t, std::unique_ptr<http::H2Connection>> h2_;
  std::uint64_t h2_evicted_ = 0;
  std::unordered_set<std::uint64_t> h2_sockets_;
  // Sockets past a 101 response (switch_protocols()).
  std::unordered_map<std::uint64_t, Switched> switched_;
  std::vector<http::H2Exchange> h2_done_;
  std::unordered_set<std::string> known_grpc_;
  std::unordered_map<std::uint64_t, SocketInfo> sockets_;
  std::unordered_map<std::string, std::uint64_t> by_tuple_;  // tuple_key(local first) -> cookie
  std::unordered_map<std::string, bool> known_paths_;
};

}  // namespace

NETWATCHER_PROBE_PLUGIN(HttpPlugin, "http", "1.1.0",
                        "HTTP/1.x and HTTP/2 (gRPC) requests and responses read from any "
                        "process's traffic")
