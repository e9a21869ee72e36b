// netwatcher SDK: protocol plugins on the shared L7 capture (ABI 3.1).
//
// A protocol plugin (http, dns, ...) brings no BPF code. One capture, the
// `l7` plugin (plugins/l7), watches every TCP segment and UDP datagram with
// payload where it meets IP, for every protocol plugin at once:
//
//   1. While a socket is undecided, its first few payload packets in each
//      direction reach user space and are offered to every enabled protocol
//      whose transports match, through L7Protocol::detect().
//   2. The first protocol that answers `yes` owns the socket: the capture
//      replays the packets it held back to that protocol, in order, and
//      writes the verdict into the socket's storage in the kernel. When every
//      protocol said `no` (or nobody said `yes` within the offered packets),
//      the socket is ignored: from then on it costs one storage lookup per
//      packet and nothing in user space.
//   3. Packets of an owned socket go to L7Protocol::packet(); its end (a TCP
//      close, or 10 minutes without a packet) to L7Protocol::closed(), once.
//      Per-socket state a protocol keeps lives between the two: the kit
//      guarantees the end, so no socket's state is left behind.
//
// A protocol plugin is an ordinary probe plugin (plugin.hpp) whose hooks name
// the candidates "l7:tcp" and/or "l7:udp": the host then starts the `l7`
// capture after it, and open() may leave `*object` null (the plugin has no
// BPF object of its own). In start() the plugin hands its L7Protocol to
// PluginHost::serve_protocol(); the host keeps a pointer until stop().
//
// Parsing and pairing stay in the plugin, with the SDK's helpers:
// netwatcher/l7.hpp (ByteReader, bounded parsers), netwatcher/l7_tracker.hpp
// (request/response streams paired in order), netwatcher/l7_framing.hpp
// (LengthPrefixedStream: TCP segments to length-prefixed messages) and
// netwatcher/l7_pending.hpp (PendingRequests: requests paired by an id, with
// timeout, bound and close), with the plugin's own state per socket (e.g. DNS
// pairs by transaction id).
#pragma once

#include <cstdint>
#include <span>
#include <string_view>

#include "netwatcher/bpf/types.h"
#include "netwatcher/declare.hpp"
#include "netwatcher/event.hpp"
#include "netwatcher/status.hpp"

struct bpf_object;

namespace netwatcher {

enum class L7Transport : std::uint8_t { tcp = 6, udp = 17 };

// An HTTP/2 frame in the part of a packet past L7Packet::captured, which the
// capture followed by frame lengths in the kernel for a connection it saw
// start (ABI 3.5): the frame's 9-byte header and, but for DATA (whose pad
// length only), the first of its payload. A frame whose header and those
// bytes fit in `captured` has no piece. A piece shorter than 9 bytes ends the packet: a header
// that goes on in the next packet (whose captured bytes hold its rest).
struct L7Piece {
  std::uint32_t offset = 0;          // from the payload's first byte
  std::span<const std::byte> bytes;  // header, then payload; valid as L7Packet::captured
};

// L7Packet::socket of a TLS connection's plaintext: its socket's cookie with
// this bit set (cookies count up from 1 and never reach it). (ABI 3.4)
inline constexpr std::uint64_t kL7TlsStreamBit = 1ULL << 63;

// Bits for L7Protocol::transports().
inline constexpr unsigned kL7Tcp = 1u << 0;
inline constexpr unsigned kL7Udp = 1u << 1;

// One TCP segment or UDP datagram with payload, as one local socket saw it.
// Every view (captured, comm) is valid only during the call it is passed to.
struct L7Packet {
  std::uint64_t socket = 0;  // the socket's cookie: one per socket, so one per side
  L7Transport transport = L7Transport::tcp;
  bool outbound = false;  // sent by this socket (else received by it)
  // saddr/sport: this socket's end; daddr/dport: the other end. For UDP taken
  // from the datagram, so an unconnected server socket shows each client.
  nw_tuple tuple{};
  std::uint32_t pid = 0;  // the socket's last sender or receiver; 0 until seen
  std::string_view comm;
  std::uint32_t seq = 0;     // TCP: sequence number of the payload's first byte
  std::uint32_t length = 0;  // payload bytes on the wire (a GSO/GRO packet: all of them)
  // The first payload bytes: at most the protocol's capture_bytes(), and fewer
  // when the packet is shorter. captured.size() < length means cut short.
  std::span<const std::byte> captured;
  std::uint64_t ns = 0;  // when the capture saw it (CLOCK_MONOTONIC)
  // The socket's cgroup2 id, for a CgroupIdLabel; 0 when unknown. Since 3.3:
  // a capture plugin of an older minor leaves it 0.
  std::uint64_t cgroup_id = 0;
  // Since 3.4: plaintext the TLS library read or wrote ([plugins.l7] tls).
  // `socket` is then the plaintext stream's own key, not the socket's cookie
  // (a TLS socket's ciphertext is never offered), `seq` counts the stream's
  // bytes, and `length` is one SSL_read/SSL_write's worth.
  bool tls = false;
  // Since 3.5: HTTP/2 frames past `captured`, by rising offset. When the
  // kernel followed the frames (the connection's start was seen, nothing
  // lost or out of order since) and they fit in the record's 4 KiB, every
  // frame header past `captured` is here, so the bytes between pieces are
  // payload past a piece; bytes past the last piece that are not are frames
  // that did not fit. Empty when the kernel did not follow (or a capture
  // plugin of an older minor).
  std::span<const L7Piece> pieces;
};

enum class L7Detection : std::uint8_t {
  no,     // this socket does not speak the protocol: ask no more
  maybe,  // cannot tell yet (e.g. too few bytes): offer the next packet too
  yes,    // it does: the protocol owns the socket from now on
};

// What a protocol plugin implements. Every member is called on the host's
// poller thread only, between the plugin's start() and stop(), never
// concurrently with the plugin's decode()/collect() (the same thread runs
// them). Members are noexcept: catch inside; an exception must not cross.
// Input bytes are untrusted and may be cut short anywhere.
class L7Protocol {
 public:
  // Lower-case name for logs and the capture's metrics, e.g. "dns".
  virtual std::string_view protocol_name() const noexcept = 0;
  // kL7Tcp | kL7Udp: which transports to offer. Read once, when the capture
  // starts.
  virtual unsigned transports() const noexcept = 0;
  // Payload bytes the protocol needs from the start of each packet (16 ..
  // NW_L7_MAX_CAPTURE). The capture takes the largest any protocol asks for
  // and trims packets to each protocol's own. Read once.
  virtual std::uint32_t capture_bytes() const noexcept = 0;
  // Whether an undecided socket speaks the protocol, from one of its first
  // packets (either direction; a server-first protocol sees the greeting
  // first). Cheap and side-effect free: the capture asks every protocol.
  virtual L7Detection detect(const L7Packet& packet) noexcept = 0;
  // A packet of a socket this protocol owns, the detecting packet included.
  // Events go to `out`, which emits as this plugin.
  virtual void packet(const L7Packet& packet, EventEmitter& out) noexcept = 0;
  // A socket this protocol owns ended: a TCP socket reached CLOSE, or the
  // socket sent and received nothing for 10 minutes (UDP sockets, whose close
  // the capture does not see, or a TCP close it missed). Called at most once
  // per claim: report what is unanswered and release the socket's state. A
  // socket that is heard from again afterwards comes back through packet().
  virtual void closed(std::uint64_t socket, EventEmitter& out) noexcept = 0;

 protected:
  ~L7Protocol() = default;
};

// The ProbePlugin members a protocol plugin has nothing to do in: it opens
// no BPF object (the host then loads and attaches nothing for it) and has no
// ring buffer (decode() is never called). Derive the plugin class from it
// beside L7Protocol; NETWATCHER_PROBE_PLUGIN finds the members here.
class WithoutBpfObject {
 public:
  Status open(bpf_object** object) {
    *object = nullptr;
    return Status::success();
  }
  Status load() { return Status::success(); }
  Status decode(std::span<const std::byte>, EventEmitter&) {
    return Status::failure("a protocol plugin has no ring buffer of its own");
  }
};

// The two labels every protocol's exchange event carries for its socket:
// `tls` (L7Packet::tls) and `sock` (L7Packet::socket, the connection for the
// anomaly detector). (ABI 3.4)
class L7TlsLabel : public Label<bool> {
 public:
  explicit L7TlsLabel(EventDecl& event)
      : Label<bool>(event, "tls",
                    "read from the TLS library's plaintext ([plugins.l7] tls), not the segments",
                    {.width = 5}) {}
};
class L7SocketLabel : public Label<std::uint64_t> {
 public:
  explicit L7SocketLabel(EventDecl& event)
      : Label<std::uint64_t>(event, "sock",
                             "socket cookie (with bit 63 set for a TLS connection's plaintext)",
                             {.width = 20, .anomaly = AnomalyRole::connection}) {}
};

// One protocol as the capture sees it (PluginHost::served_protocol()).
struct ServedProtocol {
  L7Protocol* protocol = nullptr;
  EventEmitter* events = nullptr;  // emits as the protocol's plugin; host-owned
  const char* plugin = "";         // the serving plugin's name; host-owned
};

}  // namespace netwatcher
