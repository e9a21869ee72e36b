// netwatcher SDK: pairing L7 requests with responses, per connection.
//
// Input is what a BPF capture can afford: for each TCP segment a socket sends
// or receives, its sequence number, its payload length and only the first
// bytes of that payload. The tracker follows each direction's byte stream by
// sequence number, finds message starts with a ProtocolParser (a message
// whose size is known tells where the next one starts; otherwise the stream
// is re-synchronised on the next segment that parses), and pairs each
// response with the oldest unanswered request (HTTP/1.x pipelining order).
// Requests nobody answers are reported, never dropped: on timeout and when
// the connection closes.
//
// Not thread-safe: one tracker per plugin, fed from the poller thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <list>
#include <optional>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "netwatcher/l7.hpp"

namespace netwatcher {

// One TCP segment as seen by one socket.
struct L7Segment {
  std::uint64_t connection = 0;         // the socket (e.g. its cookie); both ends are separate
  bool outbound = false;                // sent by this socket (else received)
  std::uint32_t seq = 0;                // sequence number of the payload's first byte
  std::uint32_t length = 0;             // payload bytes in the segment
  std::span<const std::byte> captured;  // the first bytes of the payload (<= length)
  std::uint64_t ns = 0;                 // when it was seen (CLOCK_MONOTONIC)
};

enum class L7Side : std::uint8_t {
  client,  // this socket sent the requests
  server,  // this socket received them
};

enum class L7Outcome : std::uint8_t {
  answered,   // `response` is set
  timed_out,  // no response within the tracker's timeout
  closed,     // the connection closed first
};

struct L7Exchange {
  std::uint64_t connection = 0;
  L7Side side = L7Side::client;
  L7Request request;
  std::optional<L7Response> response;
  L7Outcome outcome = L7Outcome::answered;
  std::uint64_t request_ns = 0;   // first segment of the request
  std::uint64_t response_ns = 0;  // first segment of the response; 0 without one
};

struct L7TrackerLimits {
  std::uint64_t timeout_ns = 30'000'000'000;  // a request unanswered this long is reported
  // A connection with nothing pending and no segment for this long is
  // forgotten (keep-alive connections are often idle for minutes).
  std::uint64_t idle_ns = 300'000'000'000;
  std::size_t max_connections = 16384;     // least recently active ones are forgotten
  std::size_t max_pending = 64;            // unanswered requests kept per connection
  std::size_t max_head_bytes = 16 * 1024;  // a head split over segments is buffered up to this
};

struct L7TrackerStats {
  std::uint64_t invalid_requests = 0;     // a request start that did not parse
  std::uint64_t invalid_responses = 0;    // a response start that did not parse
  std::uint64_t orphan_responses = 0;     // a response with no request waiting
  std::uint64_t lost_sync = 0;            // a stream whose next message start was not seen
  std::uint64_t evicted_connections = 0;  // forgotten for max_connections
  std::uint64_t dropped_requests = 0;     // over max_pending (the oldest is reported as timed out)
};

class L7Tracker {
 public:
  // `parser` must outlive the tracker.
  L7Tracker(const ProtocolParser& parser, L7TrackerLimits limits = {});

  // Finished exchanges are appended to `done`.
  void segment(const L7Segment& segment, std::vector<L7Exchange>& done);
  // The connection closed: its unanswered requests end as `closed`.
  void close(std::uint64_t connection, std::vector<L7Exchange>& done);
  // Requests older than the timeout end as `timed_out`; connections idle
  // for `idle_ns` with nothing pending are forgotten.
  void expire(std::uint64_t now_ns, std::vector<L7Exchange>& done);

  const L7TrackerStats& stats() const { return stats_; }
  std::size_t connections() const { return connections_.size(); }
  bool tracking(std::uint64_t connection) const { return connections_.count(connection) != 0; }

 private:
  struct Stream {
    bool synced = false;
    std::uint32_t next_seq = 0;  // where the next message starts, when synced
    std::string head;            // a message head split over segments
    std::uint32_t head_seq = 0;
    std::uint64_t head_ns = 0;
  };
  struct Pending {
    L7Request request;
    std::uint64_t ns = 0;
  };
  enum class Role : std::uint8_t { unknown, client, server, other };
  struct Connection {
    std::uint64_t id = 0;
    Role role = Role::unknown;
    Stream requests, responses;
    std::deque<Pending> pending;
    std::uint64_t last_ns = 0;
    int unidentified_segments = 0;  // payload segments seen while the role is unknown
  };

  Connection& find(std::uint64_t id, std::vector<L7Exchange>& done);
  void feed(Connection& c, Stream& s, bool is_request, const L7Segment& segment,
            std::vector<L7Exchange>& done);
  // Parses messages from `bytes`, the stream from `seq` on. `whole` is true
  // when `bytes` holds everything up to the segment's end; `probing` when the
  // stream is looking for a message start (bytes that do not parse are then
  // body, not errors). Returns false when the stream lost its place.
  bool parse_from(Connection& c, Stream& s, bool is_request, std::uint32_t seq,
                  std::span<const std::byte> bytes, bool whole, std::uint64_t ns,
                  std::vector<L7Exchange>& done, bool probing);
  // Removes the oldest pending request of `c` as an exchange (no response).
  static L7Exchange take_oldest(Connection& c, L7Outcome outcome);
  void finish(Connection& c, L7Outcome outcome, std::vector<L7Exchange>& done);

  const ProtocolParser& parser_;
  L7TrackerLimits limits_;
  L7TrackerStats stats_;
  // Most recently active first.
  std::list<Connection> recency_;
  std::unordered_map<std::uint64_t, std::list<Connection>::iterator> connections_;
};

}  // namespace netwatcher
