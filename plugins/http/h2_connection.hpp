// HTTP/2 (RFC 9113) read from one socket's traffic, as the L7 capture gives
// it: for each segment (or TLS read/write) its sequence number, its length
// and its first bytes. Frames are followed per direction; header blocks are
// decoded with libnghttp2's HPACK inflater, one per direction, so the
// dynamic table stays in step with the peers'; streams pair by stream id,
// however many are open at once.
//
// Bytes the capture did not keep are skipped when they fall inside a frame
// payload nobody needs (DATA); the capture follows the frame headers past
// them in the kernel for a connection it saw start (L7Packet::pieces).
// Anything else loses the direction's place: the stream is then
// re-synchronised on the next segment that starts with a plausible frame
// header. A header block that was not seen whole (or a gap
// that may have held one) leaves the dynamic table unknown for good: later
// blocks are read for what the static table and literals give, and an
// exchange missing a field for that reason says partial_headers. Values are
// never guessed.
//
// Not thread-safe: one per socket, fed from the plugin's (poller) thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "netwatcher/l7_protocol.hpp"
#include "netwatcher/l7_tracker.hpp"

namespace netwatcher::http {

// The 24 bytes a client sends first (RFC 9113 3.4).
inline constexpr std::string_view kH2Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

enum class H2Outcome : std::uint8_t {
  answered,   // response headers arrived (and the response ended, or the socket closed)
  reset,      // RST_STREAM before the response ended; reset_code says why
  closed,     // the socket closed, or a GOAWAY excluded the stream, before any response
  timed_out,  // no response headers within the timeout
  // Ended (closed, timed out) with no response seen after the capture lost
  // the response direction's frames: it may have been answered unseen.
  lost,
};

struct H2Exchange {
  std::uint64_t connection = 0;
  L7Side side = L7Side::client;
  std::uint32_t stream_id = 0;
  std::string method, path, authority, content_type;
  int status = 0;  // the final (non-1xx) :status; 0 without response headers
  // DATA payload, padding excluded; absent when frames may have gone by
  // unseen (the direction lost its place while the stream was open).
  std::optional<std::uint64_t> request_bytes, response_bytes;
  std::uint64_t request_ns = 0, response_ns = 0;  // the HEADERS frames' segments
  H2Outcome outcome = H2Outcome::answered;
  std::string reset_code;          // RST_STREAM's error code name (e.g. CANCEL)
  bool partial_headers = false;    // a field was lost with the dynamic table
  std::optional<int> grpc_status;  // grpc-status of the trailers (or trailers-only reply)
};

struct H2Limits {
  std::size_t max_streams = 1024;            // open streams kept per connection
  std::size_t max_header_block = 64 * 1024;  // a larger block loses the table
  std::size_t max_field_bytes = 8 * 1024;    // a longer header value is cut
  bool strip_query = true;
};

struct H2Stats {
  std::uint64_t invalid_frames = 0;    // a frame the protocol forbids (bad stream id, size)
  std::uint64_t lost_sync = 0;         // a direction lost its frame boundaries
  std::uint64_t table_lost = 0;        // a direction's HPACK table became unknown
  std::uint64_t orphan_responses = 0;  // response headers on a stream whose request was not seen
  std::uint64_t dropped_streams = 0;   // over max_streams (the oldest ends as closed)
  std::uint64_t lost_streams = 0;      // ended as H2Outcome::lost
};

// What the first payload of a socket says: `yes` for the client preface (or
// its start, when cut short) and for a server's SETTINGS frame (nginx sends
// it before reading the preface); `yes` also for a run of well-formed frames
// filling the packet exactly, a connection that was open before the capture;
// `maybe` for a prefix of the preface; `no` otherwise.
L7Detection detect_h2(std::span<const std::byte> captured, std::uint32_t length) noexcept;

class H2Connection {
 public:
  H2Connection(std::uint64_t id, const H2Limits& limits, H2Stats& stats);
  ~H2Connection();
  H2Connection(const H2Connection&) = delete;
  H2Connection& operator=(const H2Connection&) = delete;

  // One segment of the socket's traffic (its first bytes, and the frames
  // past them the capture followed: L7Packet::pieces); finished exchanges go
  // to `done`.
  void segment(bool outbound, std::uint32_t seq, std::uint32_t length,
               std::span<const std::byte> captured, std::span<const L7Piece> pieces,
               std::uint64_t ns, std::vector<H2Exchange>& done);
  // The connection began as HTTP/1.1 and switched with Upgrade: h2c (RFC
  // 7540 3.2): the request that asked is stream 1, its response to come over
  // HTTP/2. Called once, before the first segment.
  void upgraded(bool request_outbound, std::string method, std::string path, std::string authority,
                std::optional<std::uint64_t> request_bytes, std::uint64_t request_ns);
  // The socket closed: open streams end (answered when their response began,
  // closed otherwise), without a response size: their end was not seen.
  void close(std::vector<H2Exchange>& done);
  // Requests without response headers for `timeout_ns` end as timed_out.
  void expire(std::uint64_t now_ns, std::uint64_t timeout_ns, std::vector<H2Exchange>& done);

  std::size_t open_streams() const noexcept { return streams_.size(); }
  std::uint64_t last_ns() const noexcept { return last_ns_; }

 private:
  struct Direction;
  struct Stream;
  struct Fields;

  void feed(Direction& d, std::span<const std::byte> bytes, std::uint64_t ns,
            std::vector<H2Exchange>& done);
  // `bytes` went by unseen: false (and the place lost) unless they were the
  // rest of a payload nobody reads, ending where `at_boundary` says.
  bool unseen(Direction& d, std::uint64_t bytes, bool at_boundary, std::vector<H2Exchange>& done);
  bool resync(Direction& d, std::span<const std::byte> bytes, std::uint32_t length);
  // Bytes of `d` went by unread: the open streams' bytes that way are
  // unknown, and their responses may have begun unseen.
  void missed(const Direction& d);
  // Takes up `d` at a frame header the kernel's walk found.
  void sync_at_frame(Direction& d);
  void lose_sync(Direction& d, bool table_too);
  void frame_done(Direction& d, std::vector<H2Exchange>& done);
  void header_block(Direction& d, std::uint32_t stream_id, bool end_stream, bool promise,
                    std::vector<H2Exchange>& done);
  bool decode_block(Direction& d, Fields& fields);
  void headers(Direction& d, std::uint32_t stream_id, Fields& fields, bool end_stream,
               std::uint64_t ns, std::vector<H2Exchange>& done);
  void end_of_side(Direction& d, std::uint32_t stream_id, std::vector<H2Exchange>& done);
  // Ends a stream whose response did not end: answered if it began.
  void end_unfinished(std::map<std::uint32_t, Stream>::iterator it, std::vector<H2Exchange>& done);
  void finish(std::map<std::uint32_t, Stream>::iterator it, H2Outcome outcome,
              std::vector<H2Exchange>& done, std::string reset_code = {});
  Direction& other(const Direction& d);

  std::uint64_t id_;
  const H2Limits& limits_;
  H2Stats& stats_;
  std::unique_ptr<Direction> in_, out_;
  // Which way the requests go, once a preface or a request/response header
  // block said; streams remember their own request direction too.
  std::optional<bool> requests_outbound_;
  std::optional<std::uint32_t> last_request_stream_;
  std::map<std::uint32_t, Stream> streams_;
  std::uint64_t last_ns_ = 0;
};

}  // namespace netwatcher::http
