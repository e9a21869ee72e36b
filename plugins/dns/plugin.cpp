// dns: DNS queries and answers read from the traffic of any process, over
// UDP and TCP, on any port: name, type, rcode, answers and latency, from the
// client's and from the server's socket. On the shared L7 capture.
#include <algorithm>
#include <map>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "dns_message.hpp"
#include "netwatcher/format.hpp"
#include "netwatcher/kernel.hpp"
#include "netwatcher/l7_framing.hpp"
#include "netwatcher/l7_pending.hpp"
#include "netwatcher/l7_protocol.hpp"
#include "netwatcher/plugin.hpp"

namespace {

using namespace netwatcher;

// Query durations from 16 us to 16 s, doubling (dns.lookup.duration).
std::vector<double> duration_buckets() {
  std::vector<double> bounds;
  for (double b = 16e-6; b <= 16.5; b *= 2) bounds.push_back(b);
  return bounds;
}

const char* outcome_names[] = {"answered", "timed_out", "closed"};
enum class Outcome : std::uint8_t { answered, timed_out, closed };

// A query waiting for its response at one socket.
struct Pending {
  std::uint64_t socket = 0;
  bool client = true;  // this socket sent the query
  L7Transport transport = L7Transport::udp;
  nw_tuple tuple{};
  std::uint32_t pid = 0;
  std::string comm;
  std::uint64_t cgroup_id = 0;
  std::uint16_t id = 0;
  std::uint8_t opcode = 0;
  dns::Question question;
  bool rd = false;
  std::uint64_t ns = 0;
};

// No BPF object of its own: the shared capture brings the packets.
class DnsPlugin final : public L7Protocol, public WithoutBpfObject {
 public:
  PluginDescription describe() const {
    PluginDescription d;
    d.config = keys_.keys();
    d.flags = {{'N', "dns", "enabled", "DNS queries and answers from the traffic"}};
    d.events = events_.schemas();
    d.metrics = metrics_.specs();
    d.hooks = {
        {"udp", "UDP datagrams, from the shared L7 capture", {"l7:udp"}, true},
        {"tcp", "TCP segments, from the shared L7 capture", {"l7:tcp"}, true},
    };
    return d;
  }

  Status configure(const ConfigValues& config, const GlobalFilter&) {
    if (Status s = keys_.read(config); !s) return s;
    if (!(*query_timeout_ >= 0.001 && *query_timeout_ <= 3600))
      return Status::failure("plugins.dns.query_timeout must be between 0.001 and 3600 s");
    pending_.set_capacity(*max_pending_);
    limits_.max_answers = std::max<std::size_t>(*max_answers_, 1);
    return Status::success();
  }

  Status start(PluginHost& host) {
    if (Status s = metrics_.bind(host); !s) return s;
    for (const char* side : {"client", "server"}) unanswered_.add({side, "0"}, 0);
    for (const char* kind : {"short_header", "bad_name", "name_loop", "name_too_long", "bad_record",
                             "trailing_garbage", "not_dns", "orphan_response", "lost_sync"})
      parse_errors_.add({kind}, 0);
    pending_table_ = host.track_table({"pending", "", 0, *max_pending_, "plugins.dns.max_pending"});
    if (*name_labels_)
      names_table_ = host.track_table({"names", "", 0, *max_names_, "plugins.dns.max_names"});
    host.set_metrics_refresh([this] { return refresh_metrics(); });
    return host.serve_protocol(*this);
  }

  Status collect(EventEmitter& out) {
    const std::uint64_t now = monotonic_ns();
    pending_.expire(now, timeout_ns(),
                    [&](const Pending& p) { finish(p, nullptr, 0, Outcome::timed_out, out); });
    // Streams of sockets gone quiet without a close seen.
    std::erase_if(streams_,
                  [now](const auto& s) { return now - s.second.last_ns() > kStreamIdleNs; });
    return refresh_metrics();
  }

  Status refresh_metrics() {
    if (pending_table_) pending_table_->set_entries(pending_.size());
    if (names_table_) names_table_->set_entries(known_names_.size());
    return Status::success();
  }

  void stop() {
    pending_.clear();
    streams_.clear();
  }

  // L7Protocol
  std::string_view protocol_name() const noexcept override { return "dns"; }
  unsigned transports() const noexcept override { return kL7Udp | kL7Tcp; }
  std::uint32_t capture_bytes() const noexcept override { return *capture_bytes_; }

  L7Detection detect(const L7Packet& packet) noexcept override {
    std::span<const std::byte> bytes = packet.captured;
    if (packet.transport == L7Transport::udp)
      return dns::looks_like_dns(bytes, packet.length) ? L7Detection::yes : L7Detection::no;
    auto length = dns::tcp_message_length(bytes);
    if (!length) return L7Detection::maybe;
    // The length alone in its own segment (some clients write it apart).
    if (bytes.size() == 2 && packet.length == 2) return L7Detection::maybe;
    if (packet.length == 2) return L7Detection::no;
    return dns::looks_like_dns(bytes.subspan(2), *length) ? L7Detection::yes : L7Detection::no;
  }

  void packet(const L7Packet& packet, EventEmitter& out) noexcept override {
    try {
      if (packet.transport == L7Transport::udp)
        message(packet, packet.captured, packet.length, packet.ns, out);
      else
        segment(packet, out);
    } catch (...) {
      internal_errors_.add({}, 1);
    }
  }

  void closed(std::uint64_t socket, EventEmitter& out) noexcept override {
    try {
      streams_.erase({socket, false});
      streams_.erase({socket, true});
      pending_.take_all_of(socket,
                           [&](const Pending& p) { finish(p, nullptr, 0, Outcome::closed, out); });
    } catch (...) {
      internal_errors_.add({}, 1);
    }
  }

 private:
  static constexpr std::uint64_t kStreamIdleNs = 600'000'000'000;
  // (socket, remote end as text, remote port, id): a UDP server socket
  // serves many clients, whose ids may collide.
  using Key = std::tuple<std::uint64_t, std::string, std::uint16_t, std::uint16_t>;

  std::uint64_t timeout_ns() const { return static_cast<std::uint64_t>(*query_timeout_ * 1e9); }

  static std::string remote_key(const nw_tuple& t) {
    return std::string(reinterpret_cast<const char*>(t.daddr), sizeof t.daddr) +
           static_cast<char>(t.family);
  }

  // A TCP segment: DNS messages with their 2-byte lengths (RFC 7766),
  // possibly many per segment or one over many.
  void segment(const L7Packet& packet, EventEmitter& out) {
    LengthPrefixedStream& s =
        streams_.try_emplace({packet.socket, packet.outbound}, LengthPrefix::dns()).first->second;
    const std::uint64_t lost = s.stats().lost_sync;
    s.feed(packet.seq, packet.length, packet.captured, packet.ns,
           [&](const FramedMessage& m) { message(packet, m.body, m.body_length, m.ns, out); });
    if (s.stats().lost_sync != lost)
      parse_errors_.add({"lost_sync"}, static_cast<double>(s.stats().lost_sync - lost));
  }

  // One whole (or capture-cut) DNS message seen by `packet`'s socket.
  void message(const L7Packet& packet, std::span<const std::byte> bytes, std::size_t wire_length,
               std::uint64_t ns, EventEmitter& out) {
    dns::Message m;
    dns::ParseError error = dns::parse_message(bytes, wire_length, m, limits_);
    if (error != dns::ParseError::none) {
      parse_errors_.add({dns::parse_error_name(error)}, 1);
      return;
    }
    Key key{packet.socket, remote_key(packet.tuple), packet.tuple.dport, m.id};
    if (!m.response) {
      if (m.questions.empty()) {
        parse_errors_.add({"not_dns"}, 1);
        return;
      }
      Pending p;
      p.socket = packet.socket;
      p.client = packet.outbound;
      p.transport = packet.transport;
      p.tuple = packet.tuple;
      p.pid = packet.pid;
      p.comm = std::string(packet.comm);
      p.cgroup_id = packet.cgroup_id;
      p.id = m.id;
      p.opcode = m.opcode;
      p.question = m.questions.front();
      p.rd = m.rd;
      p.ns = ns;
      // The same id again from the same end is a retry: the first is
      // unanswered. So is the oldest query when the table is full.
      pending_.insert(key, std::move(p), ns, [&](const Pending& old, Displaced why) {
        if (why == Displaced::evicted && pending_table_) pending_table_->count_evicted();
        finish(old, nullptr, 0, Outcome::timed_out, out);
      });
      return;
    }
    std::optional<Pending> p = pending_.take(key);
    if (!p) {
      parse_errors_.add({"orphan_response"}, 1);
      return;
    }
    if (packet.pid) {  // the socket's owner may be known only by now
      p->pid = packet.pid;
      p->comm = std::string(packet.comm);
    }
    finish(*p, &m, ns, Outcome::answered, out);
  }

  void finish(const Pending& p, const dns::Message* response, std::uint64_t response_ns,
              Outcome outcome, EventEmitter& out) {
    const char* side = p.client ? "client" : "server";
    const std::string qtype = dns::type_name(p.question.type);
    const std::string cgroup = std::to_string(p.cgroup_id);
    if (response) {
      const std::string rcode = dns::rcode_name(response->rcode);
      requests_.add({qtype, rcode, side, cgroup}, 1);
      const double seconds = static_cast<double>(response_ns - p.ns) / 1e9;
      duration_.observe({qtype, side, cgroup}, seconds);
      if (*name_labels_) count_name(p.question.name, qtype, rcode, side);
    } else {
      unanswered_.add({side, cgroup}, 1);
    }
    if (!*events_on_) return;
    const Query& q = query_;
    const nw_tuple& t = p.tuple;
    auto row = q.row(out);
    if (p.cgroup_id) row.set(q.cgroup_id, p.cgroup_id);
    row.set(q.side, side)
        .set(q.pid, p.pid)
        .set(q.comm, p.comm)
        .set(q.transport, p.transport == L7Transport::udp ? "udp" : "tcp")
        .set(q.family, family_name(t.family))
        .set(q.saddr, format_address(t.family, t.saddr))
        .set(q.sport, t.sport)
        .set(q.daddr, format_address(t.family, t.daddr))
        .set(q.dport, t.dport)
        .set(q.id, std::uint64_t{p.id})
        .set(q.opcode, dns::opcode_name(p.opcode))
        .set(q.qname, p.question.name)
        .set(q.qtype, qtype)
        .set(q.qclass, dns::class_name(p.question.klass))
        .set(q.rd, p.rd)
        .set(q.outcome, outcome_names[static_cast<int>(outcome)])
        .set(q.sock, p.socket);
    if (response) {
      std::string answers;
      std::size_t kept = 0;
      for (const auto& a : response->answers) {
        if (a.value.empty() || kept == *max_answers_) continue;
        if (!answers.empty()) answers += ',';
        answers += a.value;
        ++kept;
      }
      row.set(q.rcode, dns::rcode_name(response->rcode))
          .set(q.aa, response->aa)
          .set(q.tc, response->tc)
          .set(q.ra, response->ra)
          .set(q.answer_count, std::uint64_t{response->answer_count})
          .set(q.answers, answers)
          .set(q.latency_us, static_cast<double>(response_ns - p.ns) / 1e3);
      if (response->cut_short) row.set(q.cut_short, true);
    }
    row.emit(response ? response_ns : 0);
  }

  void count_name(const std::string& name, const std::string& qtype, const std::string& rcode,
                  const char* side) {
    std::string label = name;
    if (!known_names_.count(name)) {
      if (known_names_.size() < *max_names_) {
        known_names_.emplace(name, true);
      } else {
        label = "other";
        if (names_table_) names_table_->count_refused();
      }
    }
    names_.add({label, qtype, rcode, side}, 1);
  }

  KeySet keys_;
  Setting<std::uint32_t> capture_bytes_{
      keys_,
      "capture_bytes",
      512,
      "payload bytes of each datagram or segment read (answers past them are not seen)",
      {.min = 64, .max = NW_L7_MAX_CAPTURE}};
  Setting<double> query_timeout_{
      keys_, "query_timeout", 5.0,
      "seconds after which an unanswered query is reported as timed_out (resolv.conf's "
      "default)"};
  Setting<std::size_t> max_pending_{
      keys_,
      "max_pending",
      65536,
      "unanswered queries kept at once (the oldest are reported as timed_out)",
      {.min = 16, .max = 1 << 22}};
  Setting<std::size_t> max_answers_{keys_,
                                    "max_answers",
                                    8,
                                    "answer values (addresses, CNAME targets) in each event",
                                    {.min = 0, .max = 64}};
  Setting<bool> events_on_{keys_, "events", true, "a dns_query event per query"};
  Setting<bool> name_labels_{keys_, "name_labels", false,
                             "also count queries per name (netwatcher_dns_name_requests_total)"};
  Setting<std::size_t> max_names_{
      keys_,
      "max_names",
      100,
      "names with their own series; the rest count under qname=\"other\"",
      {.min = 1, .max = 100000}};

  EventSet events_;
  struct Query : EventDecl {
    explicit Query(EventSet& set)
        : EventDecl(set, "dns_query", "one DNS query with its response (or why there is none)") {}
    Label<std::string> side{*this,
                            "side",
                            "client or server: which socket saw the query",
                            {.width = 6, .anomaly = AnomalyRole::key}};
    Label<std::uint64_t> pid{
        *this, "pid", "process owning the socket (0 until it sent or read)", {.width = 7}};
    Label<std::string> comm{*this, "comm", "process name", {.width = 15}};
    CgroupIdLabel cgroup_id{*this};
    Label<std::string> transport{*this, "transport", "udp or tcp", {.width = 4}};
    Label<std::string> family{*this, "family", "ipv4 or ipv6", {.width = 6}};
    Label<std::string> saddr{*this, "saddr", "local address", {.width = 15}};
    Label<std::uint64_t> sport{*this, "sport", "local port", {.width = 5}};
    Label<std::string> daddr{*this, "daddr", "remote address", {.width = 15}};
    Label<std::uint64_t> dport{*this, "dport", "remote port", {.width = 5}};
    Label<std::uint64_t> id{*this, "id", "transaction id", {.width = 5}};
    Label<std::string> opcode{*this, "opcode", "QUERY, NOTIFY, UPDATE, ...", {.width = 6}};
    Label<std::string> qname{*this, "qname", "the name asked for", {.width = 24}};
    Label<std::string> qtype{
        *this, "qtype", "A, AAAA, CNAME, ... (TYPE<n> when unknown)", {.width = 6}};
    Label<std::string> qclass{*this, "qclass", "IN, CH, ...", {.width = 3}};
    Field<bool> rd{*this, "rd", "recursion desired"};
    Label<std::string> rcode{*this,
                             "rcode",
                             "NOERROR, NXDOMAIN, SERVFAIL, REFUSED, ... (with EDNS's upper bits)",
                             {.width = 8, .optional = true}};
    Field<bool> aa{*this, "aa", "authoritative answer", {.optional = true}};
    Field<bool> tc{*this, "tc", "truncated: the client should retry over TCP", {.optional = true}};
    Field<bool> ra{*this, "ra", "recursion available", {.optional = true}};
    Field<std::uint64_t> answer_count{
        *this, "answer_count", "records in the answer section", {.optional = true}};
    Text answers{*this,
                 "answers",
                 "A/AAAA addresses and CNAME/PTR targets of the answer section, in order, comma "
                 "separated (at most max_answers)",
                 {.width = 24, .optional = true}};
    Field<double> latency_us{
        *this,
        "latency_us",
        "from the query to its response, at this socket",
        {.unit = "microseconds", .width = 10, .optional = true, .anomaly = AnomalyRole::sample}};
    Label<std::string> outcome{
        *this, "outcome", "answered, timed_out or closed (no response)", {.width = 9}};
    Field<bool> cut_short{*this,
                          "cut_short",
                          "the response was longer than capture_bytes: later answers not seen",
                          {.optional = true}};
    Label<std::uint64_t> sock{
        *this, "sock", "socket cookie", {.width = 20, .anomaly = AnomalyRole::connection}};
  } query_{events_};

  MetricSet metrics_;
  Counter requests_{metrics_,
                    "netwatcher_dns_requests_total",
                    "DNS queries answered, by query type, rcode and the side that saw them.",
                    {"qtype", "rcode", "side", kCgroupIdLabel}};
  Histogram duration_{metrics_,
                      "netwatcher_dns_request_duration_seconds",
                      "From query to response, by query type and side (dns.lookup.duration).",
                      {"qtype", "side", kCgroupIdLabel},
                      duration_buckets()};
  Counter unanswered_{metrics_,
                      "netwatcher_dns_requests_unanswered_total",
                      "DNS queries without a response: timed out, or their TCP connection closed.",
                      {"side", kCgroupIdLabel}};
  Counter names_{metrics_,
                 "netwatcher_dns_name_requests_total",
                 "DNS queries answered per name (name_labels = true, at most max_names names).",
                 {"qname", "qtype", "rcode", "side"}};
  Counter parse_errors_{metrics_,
                        "netwatcher_dns_parse_errors_total",
                        "Messages that did not parse, by kind; responses without a query; TCP "
                        "streams whose next message start was not seen.",
                        {"kind"}};
  Counter internal_errors_{metrics_,
                           "netwatcher_dns_internal_errors_total",
                           "Packets the plugin could not process (out of memory).",
                           {}};

  dns::Limits limits_;
  TableAccount *pending_table_ = nullptr, *names_table_ = nullptr;
  PendingRequests<Key, Pending> pending_;
  // Each TCP direction of each socket: (socket, outbound).
  std::map<std::pair<std::uint64_t, bool>, LengthPrefixedStream> streams_;
  std::unordered_map<std::string, bool> known_names_;
};

}  // namespace

NETWATCHER_PROBE_PLUGIN(DnsPlugin, "dns", "1.0.0",
                        "DNS queries and answers read from any process's traffic, UDP and TCP")
