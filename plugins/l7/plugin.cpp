// l7: the shared capture behind every protocol plugin (http, dns, ...).
// It decides which protocol a socket speaks by asking the protocols' own
// detectors in user space, tells the kernel, and hands each owned socket's
// packets to its protocol. See netwatcher/l7_protocol.hpp.
#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include <cstddef>
#include <cstring>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "l7.h"
#include "netwatcher/kernel.hpp"
#include "netwatcher/plugin.hpp"
#include "netwatcher/skeleton.hpp"
#include "tls_libraries.hpp"

// After netwatcher/bpf/types.h: the skeleton names its nw_filter.
#include "l7.skel.h"

namespace {

using namespace netwatcher;

static_assert(L7_TLS_STREAM == kL7TlsStreamBit, "l7.h and the SDK name one stream bit");

constexpr std::uint8_t kNoProtocol = 0xff;
// A socket nobody claimed for this long is given up (and ignored).
constexpr std::uint64_t kUndecidedExpiryNs = 30'000'000'000;
// An ignored socket's decision is remembered this long, for the packets the
// kernel sent before it took it; a watched socket's owner until it closes or
// is idle this long (UDP sockets have no close the capture sees).
constexpr std::uint64_t kIgnoredMemoryNs = 5'000'000'000;
constexpr std::uint64_t kOwnerIdleNs = 600'000'000'000;

// The TLS library's functions and the programs that probe them: the return
// first, so that an entry is never probed without its return (which would
// leave the call behind). A library without the _ex forms (OpenSSL before
// 1.1.1) is still probed by the rest.
struct TlsProbe {
  const char* function;
  const char* on_return;
  const char* on_entry;  // nullptr: the return alone
  bool essential;        // the file is not counted as probed without it
};
constexpr TlsProbe kTlsProbes[] = {
    {"SSL_read", "l7_tls_read_done", "l7_tls_call", true},
    {"SSL_write", "l7_tls_write_done", "l7_tls_call", true},
    {"SSL_read_ex", "l7_tls_read_done", "l7_tls_call_ex", false},
    {"SSL_write_ex", "l7_tls_write_done", "l7_tls_call_ex", false},
    {"SSL_do_handshake", "l7_tls_handshake_done", "l7_tls_call", false},
};

class CapturePlugin {
 public:
  PluginDescription describe() const {
    PluginDescription d;
    d.config = keys_.keys();
    d.flags = {{0, "tls", "tls", "read the plaintext of OpenSSL connections (uprobes)"}};
    d.metrics = metrics_.specs();
    d.hooks = {
        {"egress", "packets sent (cgroup_skb egress)", {"l7_egress"}, true},
        {"ingress", "packets received (cgroup_skb ingress)", {"l7_ingress"}, true},
        {"send_owner", "TCP socket owner on send", {"l7_send_owner"}, false},
        {"recv_owner", "socket owner on receive", {"l7_recv_owner"}, false},
        {"socket_closed", "closes of watched TCP sockets", {"l7_socket_closed"}, false},
    };
    auto tls_hook = [&](const char* name, const char* description, const char* program) {
      d.hooks.push_back({name, description, {program}, false, "", "tls"});
    };
    tls_hook("tls_call", "entry of SSL_read, SSL_write, SSL_do_handshake (uprobe per library)",
             "l7_tls_call");
    tls_hook("tls_call_ex", "entry of SSL_read_ex, SSL_write_ex", "l7_tls_call_ex");
    tls_hook("tls_read_done", "return of SSL_read, SSL_read_ex: the plaintext read",
             "l7_tls_read_done");
    tls_hook("tls_write_done", "return of SSL_write, SSL_write_ex: the plaintext written",
             "l7_tls_write_done");
    tls_hook("tls_handshake_done", "return of SSL_do_handshake", "l7_tls_handshake_done");
    tls_hook("tls_free", "SSL_free: a session's end", "l7_tls_free");
    tls_hook("tls_mmap_enter", "a process maps a file named libssl* (syscalls:sys_enter_mmap)",
             "l7_tls_mmap_enter");
    tls_hook("tls_mmap_exit", "... and the mapping is made (syscalls:sys_exit_mmap)",
             "l7_tls_mmap_exit");
    tls_hook("tls_exec", "a new program, which may define SSL_write itself (sched_process_exec)",
             "l7_tls_exec");
    tls_hook("tls_thread_exit", "a thread's end: its unfinished call is forgotten",
             "l7_tls_thread_exit");
    return d;
  }

  Status configure(const ConfigValues& config, const GlobalFilter& filter) {
    if (Status s = keys_.read(config); !s) return s;
    filter_ = filter;
    return Status::success();
  }

  Status open(bpf_object** object) {
    if (Status s = skeleton_.open(object, filter_); !s) return s;
    // Hash maps are allocated whole: without TLS they hold nothing.
    const std::uint32_t tls_entries = *tls_ ? *max_tls_connections_ : 1;
    bpf_map__set_max_entries(skeleton_->maps.tls_sessions, tls_entries);
    bpf_map__set_max_entries(skeleton_->maps.tls_streams, tls_entries);
    bpf_map__set_max_entries(skeleton_->maps.tls_calls, tls_entries);
    // bpf_loop came with Linux 5.17: without it the walk stays out of the
    // programs (a constant the verifier prunes on), and the gauge says so.
    h2_walking_ = *h2_frame_walk_ &&
                  libbpf_probe_bpf_helper(BPF_PROG_TYPE_CGROUP_SKB, BPF_FUNC_loop, nullptr) == 1;
    skeleton_->rodata->h2_frame_walk = h2_walking_ ? 1 : 0;
    return Status::success();
  }
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
        host.track_table({"undecided", "", 0, *max_undecided_, "plugins.l7.max_undecided"});
    // Capture starts now that it knows what for.
    skeleton_->bss->offer_packets = *offer_packets_;
    skeleton_->bss->capture_bytes = capture_bytes;
    skeleton_->bss->capture_udp = (transports & kL7Udp) ? 1 : 0;
    skeleton_->bss->capture_tcp = (transports & kL7Tcp) ? 1 : 0;
    decisions_fd_ = bpf_map__fd(skeleton_->maps.decisions);
    if (*tls_) start_tls(host);
    h2_frame_walk_gauge_.set({}, h2_walking_ ? 1 : 0);
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
    if (header.type == L7_RECORD_TLS_LIBRARY) {
      l7_tls_library rec;
      if (Status s = read_record(bytes, "l7 tls library", rec); !s) return s;
      // A mapping now: the process is about to call the library. An exec
      // waits for collect(): execs are many, and most are of known files.
      if (host_ && rec.exec)
        execs_.insert(static_cast<pid_t>(rec.pid));
      else if (host_)
        probe_tls_libraries(libraries_.scan_process(static_cast<pid_t>(rec.pid)));
      return Status::success();
    }
    if (header.type != L7_RECORD_PACKET)
      return Status::failure("unknown l7 record type " + std::to_string(header.type));
    l7_packet rec;
    if (Status s = read_record(bytes, "l7 packet", rec); !s) return s;
    if (rec.captured > NW_L7_MAX_CAPTURE || rec.captured > rec.length ||
        bytes.size() < record_size(rec))
      return Status::failure("l7 packet record claims " + std::to_string(rec.captured) +
                             " captured bytes and " + std::to_string(rec.piece_bytes) +
                             " bytes of frame pieces of " + std::to_string(rec.length) + " in " +
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
    for (pid_t pid : execs_) probe_tls_libraries(libraries_.scan_process(pid));
    execs_.clear();
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
    if (host_) {
      if (std::optional<std::uint64_t> unmatched =
              sum_percpu_u64(bpf_map__fd(skeleton_->maps.tls_unmatched), &zero))
        tls_unmatched_.mirror({}, static_cast<double>(*unmatched));
      tls_files_.set({}, static_cast<double>(tls_files_probed_));
    }
    return Status::success();
  }

  void stop() {
    host_ = nullptr;
    libraries_ = {};
    tls_files_probed_ = 0;
    execs_.clear();
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

  static std::size_t record_size(const l7_packet& rec) {
    return sizeof rec + rec.captured + rec.piece_bytes;
  }

  // The frame pieces after the captured bytes, checked: each inside the
  // area and the packet, offsets rising, shorter than a frame header only
  // at the packet's end. A record breaking that (a kernel bug) keeps none.
  void read_pieces(const l7_packet& rec, std::span<const std::byte> bytes) {
    pieces_.clear();
    if (rec.piece_bytes > L7_PIECE_AREA) return;
    const auto area = bytes.subspan(sizeof rec + rec.captured, rec.piece_bytes);
    std::size_t at = 0;
    std::uint64_t end = 0;
    for (std::size_t i = 0; i < rec.pieces; ++i) {
      l7_frame_piece piece;
      if (at + sizeof piece > area.size()) return pieces_.clear();
      std::memcpy(&piece, area.data() + at, sizeof piece);
      const std::uint64_t piece_end = std::uint64_t{piece.offset} + piece.kept;
      if (piece.kept == 0 || piece.kept > L7_PIECE_BYTES || piece.offset < end ||
          piece_end > rec.length || (piece.kept < 9 && piece_end != rec.length) ||
          at + L7_PIECE_SIZE(piece.kept) > area.size())
        return pieces_.clear();
      pieces_.push_back({piece.offset, area.subspan(at + sizeof piece, piece.kept)});
      end = piece_end;
      at += L7_PIECE_SIZE(piece.kept);
    }
  }

  // The packet as protocol `p` sees it: its bytes trimmed to what it asked
  // for. Views into `rec` and `bytes`, so no copy per packet.
  L7Packet view(const l7_packet& rec, std::span<const std::byte> bytes, const Served& p) {
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
    packet.tls = rec.tls != 0;
    // Pieces past the protocol's own capture would leave a hole between its
    // bytes and them: it gets them only when it sees all that was captured.
    read_pieces(rec, bytes);
    if (p.capture_bytes >= rec.captured) packet.pieces = pieces_;
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
      if (undecided_.size() >= *max_undecided_) {
        if (undecided_table_) undecided_table_->count_refused();
        decide(rec.cookie, kNoProtocol, rec.hdr.timestamp_ns);
        return;
      }
      it = undecided_.emplace(rec.cookie, Undecided{}).first;
      it->second.ruled_out.assign(protocols_.size(), false);
    }
    Undecided& u = it->second;
    u.last_ns = rec.hdr.timestamp_ns;
    u.held.emplace_back(bytes.begin(), bytes.begin() + record_size(rec));
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
    if (!anyone_left || u.offered[rec.outbound ? 1 : 0] >= *offer_packets_) {
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

  // TLS: the libraries on the system and in running processes now; later
  // ones as processes map them (L7_RECORD_TLS_LIBRARY).
  void start_tls(PluginHost& host) {
    host_ = &host;
    const char* raise = "plugins.l7.max_tls_connections";
    host.track_table({"tls_calls", "tls_calls", L7_TABLE_TLS_CALLS, 0, raise});
    host.track_table({"tls_sessions", "tls_sessions", L7_TABLE_TLS_SESSIONS, 0, raise});
    host.track_table({"tls_streams", "tls_streams", L7_TABLE_TLS_STREAMS, 0, raise});
    skeleton_->bss->capture_tls = 1;
    probe_tls_libraries(libraries_.scan_system());
    probe_tls_libraries(libraries_.scan_all());
  }

  // The host logs each file's first uprobe and every refusal.
  void probe_tls_libraries(const std::vector<l7::TlsLibrary>& found) {
    for (const l7::TlsLibrary& library : found) {
      bool essential_failed = false;
      for (const TlsProbe& probe : kTlsProbes) {
        const bool hooked = host_->attach_uprobe(probe.on_return, library.path, probe.function) &&
                            host_->attach_uprobe(probe.on_entry, library.path, probe.function);
        essential_failed = essential_failed || (probe.essential && !hooked);
      }
      // Only forgets sessions: nothing is lost without it.
      host_->attach_uprobe("l7_tls_free", library.path, "SSL_free");
      if (essential_failed)
        tls_refused_.add({}, 1);
      else
        ++tls_files_probed_;
    }
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

  KeySet keys_;
  Setting<std::uint32_t> offer_packets_{keys_,
                                        "offer_packets",
                                        8,
                                        "payload packets per direction of an undecided socket "
                                        "offered to the protocols' detectors before it is ignored",
                                        {.min = 1, .max = 64}};
  Setting<std::uint64_t> max_undecided_{
      keys_,
      "max_undecided",
      4096,
      "undecided sockets whose first packets are held in user space at once; more are ignored",
      {.min = 16, .max = 1 << 20}};
  Setting<bool> h2_frame_walk_{
      keys_, "h2_frame_walk", true,
      "follow HTTP/2 frame lengths past capture_bytes in the kernel, so that header blocks and "
      "body sizes past them are not lost (needs bpf_loop, Linux 5.17; off by itself without)"};
  bool h2_walking_ = false;
  Setting<bool> tls_{keys_, "tls", false,
                     "read the plaintext of OpenSSL connections with uprobes on libssl "
                     "(SSL_read/SSL_write): protocols then see TLS traffic too"};
  Setting<std::uint32_t> max_tls_connections_{
      keys_,
      "max_tls_connections",
      16384,
      "TLS sessions and plaintext streams followed at once, and threads inside a TLS call (least "
      "recently used forgotten)",
      {.min = 64, .max = 1 << 22}};

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

  Counter tls_unmatched_{metrics_,
                         "netwatcher_l7_tls_unmatched_total",
                         "TLS library calls with data whose socket was never seen (their "
                         "plaintext reaches no protocol).",
                         {}};
  Gauge h2_frame_walk_gauge_{metrics_, "netwatcher_l7_h2_frame_walk",
                             "1 when the kernel follows HTTP/2 frames past capture_bytes; 0 when "
                             "h2_frame_walk is off or the kernel lacks bpf_loop."};
  Gauge tls_files_{metrics_, "netwatcher_l7_tls_libraries",
                   "TLS library files probed with uprobes ([plugins.l7] tls)."};
  Counter tls_refused_{metrics_,
                       "netwatcher_l7_tls_libraries_refused_total",
                       "Candidate TLS library files whose SSL_read or SSL_write could not be "
                       "probed (the log says why).",
                       {}};

  Skeleton<l7_bpf> skeleton_{l7_bpf__open, l7_bpf__load, l7_bpf__destroy};
  GlobalFilter filter_;
  int decisions_fd_ = -1;
  PluginHost* host_ = nullptr;  // set while TLS probing is on
  l7::TlsLibraryFinder libraries_;
  std::size_t tls_files_probed_ = 0;
  std::set<pid_t> execs_;  // programs started since the last collect()
  TableAccount* undecided_table_ = nullptr;
  std::vector<Served> protocols_;
  std::vector<L7Piece> pieces_;  // of the record being delivered (view())
  std::unordered_map<std::uint64_t, Undecided> undecided_;
  // Sockets decided: their owner, or kNoProtocol for ignored ones.
  std::unordered_map<std::uint64_t, Decision> owners_;
};

}  // namespace

NETWATCHER_PROBE_PLUGIN(CapturePlugin, "l7", "1.0.0",
                        "the shared capture of every protocol plugin (started when one is on)")
