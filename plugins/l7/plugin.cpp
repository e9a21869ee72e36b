// l7: the shared capture behind every protocol plugin (http, dns, ...).
// It decides which protocol a socket speaks by asking the protocols' own
// detectors in user space, tells the kernel, and hands each owned socket's
// packets to its protocol. See netwatcher/l7_protocol.hpp.
#include <bpf/bpf.h>

#include <cstring>
#include <string>
#include <unordered_map>
#include <vector>

#include "l7.h"
#include "netwatcher/kernel.hpp"
#include "netwatcher/plugin.hpp"
#include "netwatcher/skeleton.hpp"

// After netwatcher/bpf/types.h: the skeleton names its nw_filter.
#include "l7.skel.h"

namespace {

using namespace netwatcher;

constexpr std::uint8_t kNoProtocol = 0xff;
// A socket nobody claimed for this long is given up (and ignored).
constexpr std::uint64_t kUndecidedExpiryNs = 30'000'000'000;
// An ignored socket's decision is remembered this long, for the packets the
// kernel sent before it took it; a watched socket's owner until it closes or
// is idle this long (UDP sockets have no close the capture sees).
constexpr std::uint64_t kIgnoredMemoryNs = 5'000'000'000;
constexpr std::uint64_t kOwnerIdleNs = 600'000'000'000;

class CapturePlugin {
 public:
  PluginDescription describe() const {
    PluginDescription d;
    d.config = {
        {"offer_packets", ConfigType::integer, std::int64_t{8},
         "payload packets per direction of an undecided socket offered to the protocols' "
         "detectors before it is ignored",
         1, 64},
        {"max_undecided", ConfigType::integer, std::int64_t{4096},
         "undecided sockets whose first packets are held in user space at once; more are ignored",
         16, 1 << 20},
    };
    d.metrics = metrics_.specs();
    d.hooks = {
        {"egress", "packets sent (cgroup_skb egress)", {"l7_egress"}, true},
        {"ingress", "packets received (cgroup_skb ingress)", {"l7_ingress"}, true},
        {"send_owner", "TCP socket owner on send", {"l7_send_owner"}, false},
        {"recv_owner", "socket owner on receive", {"l7_recv_owner"}, false},
        {"socket_closed", "closes of watched TCP sockets", {"l7_socket_closed"}, false},
    };
    return d;
  }

  Status configure(const ConfigValues& config, const GlobalFilter& filter) {
    offer_packets_ = static_cast<std::uint32_t>(config.get_int("offer_packets"));
    max_undecided_ = static_cast<std::size_t>(config.get_int("max_undecided"));
    filter_ = filter;
    return Status::success();
  }

  Status open(bpf_object** object) { return skeleton_.open(object, filter_); }
  Status load() { return skeleton_.load(); }

  Status start(PluginHost& host) {
    if (Status s = metrics_.bind(host); !s) return s;
    protocols_.clear();
    unsigned transports = 0;
    std::uint32_t capture_bytes = 16;
    for (std::size_t i = 0; i < host.served_protocol_count(); ++i) {
      ServedProtocol served = host.served_protocol(i);
      if (!served.protocol) continue;
      if (protocols_.size() >= kNoProtocol)
        return Status::failure("more than 254 protocols served");
      Served p{served, std::string(served.protocol->protocol_name()), served.protocol->transports(),
               std::clamp<std::uint32_t>(served.protocol->capture_bytes(), 16, NW_L7_MAX_CAPTURE)};
      transports |= p.transports;
      capture_bytes = std::max(capture_bytes, p.capture_bytes);
      sockets_.add({p.name}, 0);
      protocols_.push_back(std::move(p));
    }
    if (protocols_.empty()) return Status::failure("no protocol plugin serves a protocol");
    sockets_.add({"none"}, 0);
    undecided_table_ =
        host.track_table({"undecided", "", 0, max_undecided_, "plugins.l7.max_undecided"});
    // Capture starts now that it knows what for.
    skeleton_->bss->offer_packets = offer_packets_;
    skeleton_->bss->capture_bytes = capture_bytes;
    skeleton_->bss->capture_udp = (transports & kL7Udp) ? 1 : 0;
    skeleton_->bss->capture_tcp = (transports & kL7Tcp) ? 1 : 0;
    decisions_fd_ = bpf_map__fd(skeleton_->maps.decisions);
    host.set_metrics_refresh([this] { return refresh_metrics(); });
    return Status::success();
  }

  Status decode(std::span<const std::byte> bytes, EventEmitter&) {
    nw_record_header header;
    if (Status s = read_record(bytes, "l7", header); !s) return s;
    if (header.type == L7_RECORD_CLOSE) {
      l7_close rec;
      if (Status s = read_record(bytes, "l7 close", rec); !s) return s;
      closed(rec.cookie);
      return Status::success();
    }
    if (header.type != L7_RECORD_PACKET)
      return Status::failure("unknown l7 record type " + std::to_string(header.type));
    l7_packet rec;
    if (Status s = read_record(bytes, "l7 packet", rec); !s) return s;
    if (rec.captured > NW_L7_MAX_CAPTURE || rec.captured > rec.length ||
        bytes.size() < sizeof rec + rec.captured)
      return Status::failure("l7 packet record claims " + std::to_string(rec.captured) +
                             " captured bytes of " + std::to_string(rec.length) + " in " +
                             std::to_string(bytes.size()));
    if (rec.verdict == L7_WATCHED) {
      owners_[rec.cookie] = {rec.protocol, rec.hdr.timestamp_ns};
      deliver(rec.protocol, rec, bytes);
      return Status::success();
    }
    // Offered for detection, or sent before the kernel saw our decision.
    offered_.add({}, 1);
    if (auto it = owners_.find(rec.cookie); it != owners_.end()) {
      if (it->second.protocol != kNoProtocol) {
        it->second.ns = rec.hdr.timestamp_ns;
        deliver(it->second.protocol, rec, bytes);
      }
      return Status::success();
    }
    offer(rec, bytes);
    return Status::success();
  }

  Status collect(EventEmitter&) {
    const std::uint64_t now = monotonic_ns();
    for (auto it = undecided_.begin(); it != undecided_.end();) {
      if (now - it->second.last_ns > kUndecidedExpiryNs) {
        decide(it->first, kNoProtocol, now);
        it = undecided_.erase(it);
      } else {
        ++it;
      }
    }
    // An owned socket quiet this long (UDP sockets have no close here, and a
    // TCP close can be missed) ends for its protocol as a close would.
    std::erase_if(owners_, [&](const auto& o) {
      const auto& [cookie, decision] = o;
      if (decision.protocol == kNoProtocol) return now - decision.ns > kIgnoredMemoryNs;
      if (now - decision.ns <= kOwnerIdleNs) return false;
      if (decision.protocol < protocols_.size()) {
        Served& p = protocols_[decision.protocol];
        if (p.served.events) p.served.protocol->closed(cookie, *p.served.events);
      }
      return true;
    });
    return refresh_metrics();
  }

  Status refresh_metrics() {
    if (undecided_table_) undecided_table_->set_entries(undecided_.size());
    const std::uint32_t zero = 0;
    if (std::optional<std::uint64_t> skipped =
            sum_percpu_u64(bpf_map__fd(skeleton_->maps.unoffered), &zero))
      unoffered_.mirror({}, static_cast<double>(*skipped));
    return Status::success();
  }

  void stop() {
    skeleton_.reset();
    protocols_.clear();
    undecided_.clear();
    owners_.clear();
  }

 private:
  struct Served {
    ServedProtocol served;
    std::string name;
    unsigned transports = 0;
    std::uint32_t capture_bytes = 0;
  };
  struct Undecided {
    std::vector<std::vector<std::byte>> held;  // whole records, oldest first
    std::vector<bool> ruled_out;               // by protocol index
    std::uint32_t offered[2] = {0, 0};         // by direction: in, out
    std::uint64_t last_ns = 0;
  };
  struct Decision {
    std::uint8_t protocol = kNoProtocol;
    std::uint64_t ns = 0;
  };

  static unsigned transport_bit(const l7_packet& rec) {
    return rec.transport == static_cast<std::uint8_t>(L7Transport::udp) ? kL7Udp : kL7Tcp;
  }

  // The packet as protocol `p` sees it: its bytes trimmed to what it asked
  // for. Views into `rec` and `bytes`, so no copy per packet.
  static L7Packet view(const l7_packet& rec, std::span<const std::byte> bytes, const Served& p) {
    L7Packet packet;
    packet.socket = rec.cookie;
    packet.transport = static_cast<L7Transport>(rec.transport);
    packet.outbound = rec.outbound != 0;
    packet.tuple = rec.tuple;
    packet.pid = rec.pid;
    packet.cgroup_id = rec.cgroup;
    packet.comm = std::string_view(rec.comm, strnlen(rec.comm, sizeof rec.comm));
    packet.seq = rec.seq;
    packet.length = rec.length;
    packet.captured =
        bytes.subspan(sizeof rec, std::min<std::size_t>(rec.captured, p.capture_bytes));
    packet.ns = rec.hdr.timestamp_ns;
    return packet;
  }

  void deliver(std::uint8_t index, const l7_packet& rec, std::span<const std::byte> bytes) {
    if (index >= protocols_.size()) {
      misrouted_.add({}, 1);
      return;
    }
    Served& p = protocols_[index];
    if (!p.served.events) return;  // --check: nothing is emitted
    p.served.protocol->packet(view(rec, bytes, p), *p.served.events);
    packets_.add({p.name}, 1);
  }

  void offer(const l7_packet& rec, std::span<const std::byte> bytes) {
    auto it = undecided_.find(rec.cookie);
    if (it == undecided_.end()) {
      if (undecided_.size() >= max_undecided_) {
        if (undecided_table_) undecided_table_->count_refused();
        decide(rec.cookie, kNoProtocol, rec.hdr.timestamp_ns);
        return;
      }
      it = undecided_.emplace(rec.cookie, Undecided{}).first;
      it->second.ruled_out.assign(protocols_.size(), false);
    }
    Undecided& u = it->second;
    u.last_ns = rec.hdr.timestamp_ns;
    u.held.emplace_back(bytes.begin(), bytes.begin() + sizeof rec + rec.captured);
    ++u.offered[rec.outbound ? 1 : 0];

    bool anyone_left = false;
    for (std::size_t i = 0; i < protocols_.size(); ++i) {
      Served& p = protocols_[i];
      if (u.ruled_out[i]) continue;
      if (!(p.transports & transport_bit(rec))) {
        u.ruled_out[i] = true;
        continue;
      }
      L7Detection detection = p.served.protocol->detect(view(rec, bytes, p));
      if (detection == L7Detection::yes) {
        claim(it, static_cast<std::uint8_t>(i));
        return;
      }
      if (detection == L7Detection::no) {
        u.ruled_out[i] = true;
        continue;
      }
      anyone_left = true;
    }
    // Nobody claimed it: for good once every detector said no, or once the
    // kernel will offer no more in this direction.
    if (!anyone_left || u.offered[rec.outbound ? 1 : 0] >= offer_packets_) {
      decide(rec.cookie, kNoProtocol, rec.hdr.timestamp_ns);
      undecided_.erase(it);
    }
  }

  // Protocol `index` owns the socket: it gets the packets held so far.
  void claim(std::unordered_map<std::uint64_t, Undecided>::iterator it, std::uint8_t index) {
    const std::uint64_t cookie = it->first;
    std::vector<std::vector<std::byte>> held = std::move(it->second.held);
    undecided_.erase(it);
    decide(cookie, index, held.empty() ? monotonic_ns() : 0);
    for (const auto& record : held) {
      l7_packet rec;
      std::memcpy(&rec, record.data(), sizeof rec);
      owners_[cookie].ns = rec.hdr.timestamp_ns;
      deliver(index, rec, record);
    }
  }

  // Tells the kernel (at the socket's next packet) and remembers it for the
  // packets already on their way.
  void decide(std::uint64_t cookie, std::uint8_t protocol, std::uint64_t ns) {
    l7_decision decision{};
    decision.verdict = protocol == kNoProtocol ? L7_IGNORED : L7_WATCHED;
    decision.protocol = protocol == kNoProtocol ? 0 : protocol;
    if (decisions_fd_ >= 0 && bpf_map_update_elem(decisions_fd_, &cookie, &decision, BPF_ANY) != 0)
      decision_failures_.add({}, 1);
    owners_[cookie] = {protocol, ns ? ns : monotonic_ns()};
    sockets_.add({protocol == kNoProtocol ? std::string("none") : protocols_[protocol].name}, 1);
  }

  void closed(std::uint64_t cookie) {
    undecided_.erase(cookie);
    auto it = owners_.find(cookie);
    if (it == owners_.end()) return;
    const std::uint8_t protocol = it->second.protocol;
    owners_.erase(it);
    if (protocol >= protocols_.size()) return;
    Served& p = protocols_[protocol];
    if (p.served.events) p.served.protocol->closed(cookie, *p.served.events);
  }

  MetricSet metrics_;
  Counter sockets_{metrics_,
                   "netwatcher_l7_sockets_total",
                   "Sockets the L7 capture decided, by the protocol that owns them (none: "
                   "ignored from then on).",
                   {"protocol"}};
  Counter packets_{metrics_,
                   "netwatcher_l7_packets_total",
                   "Payload packets the L7 capture handed to each protocol.",
                   {"protocol"}};
  Counter offered_{metrics_,
                   "netwatcher_l7_offered_packets_total",
                   "Packets of sockets still undecided in the kernel that reached user space (at "
                   "most offer_packets per direction and socket, fewer once a verdict is back).",
                   {}};
  Counter unoffered_{metrics_,
                     "netwatcher_l7_unoffered_packets_total",
                     "Payload packets of sockets still undecided past their offer_packets, seen "
                     "by no protocol (a new socket sends faster than the agent decides; raise "
                     "plugins.l7.offer_packets).",
                     {}};
  Counter decision_failures_{metrics_,
                             "netwatcher_l7_decision_failures_total",
                             "Decisions the kernel could not be told (the socket keeps being "
                             "offered until it is ignored).",
                             {}};
  Counter misrouted_{metrics_,
                     "netwatcher_l7_misrouted_packets_total",
                     "Packets of a protocol index no protocol has (a bug).",
                     {}};

  Skeleton<l7_bpf> skeleton_{l7_bpf__open, l7_bpf__load, l7_bpf__destroy};
  GlobalFilter filter_;
  std::uint32_t offer_packets_ = 8;
  std::size_t max_undecided_ = 4096;
  int decisions_fd_ = -1;
  TableAccount* undecided_table_ = nullptr;
  std::vector<Served> protocols_;
  std::unordered_map<std::uint64_t, Undecided> undecided_;
  // Sockets decided: their owner, or kNoProtocol for ignored ones.
  std::unordered_map<std::uint64_t, Decision> owners_;
};

}  // namespace

NETWATCHER_PROBE_PLUGIN(CapturePlugin, "l7", "1.0.0",
                        "the shared capture of every protocol plugin (started when one is on)")
