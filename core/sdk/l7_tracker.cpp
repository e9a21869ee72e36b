#include "netwatcher/l7_tracker.hpp"

#include <algorithm>

namespace netwatcher {
namespace {

// Sequence-number order that survives wraparound (RFC 1982 style).
bool seq_before(std::uint32_t a, std::uint32_t b) {
  return static_cast<std::int32_t>(a - b) < 0;
}

// Connections whose first segments never look like a request are given up.
constexpr int kSegmentsToDetect = 8;
// Messages parsed from one segment at most (pipelining).
constexpr int kMessagesPerSegment = 64;

}  // namespace

L7Tracker::L7Tracker(const ProtocolParser& parser, L7TrackerLimits limits)
    : parser_(parser), limits_(limits) {}

L7Tracker::Connection& L7Tracker::find(std::uint64_t id, std::vector<L7Exchange>& done) {
  if (auto it = connections_.find(id); it != connections_.end()) {
    recency_.splice(recency_.begin(), recency_, it->second);
    return *it->second;
  }
  if (limits_.max_connections > 0 && connections_.size() >= limits_.max_connections) {
    Connection& oldest = recency_.back();
    finish(oldest, L7Outcome::timed_out, done);
    connections_.erase(oldest.id);
    recency_.pop_back();
    ++stats_.evicted_connections;
  }
  recency_.push_front(Connection{});
  recency_.front().id = id;
  connections_[id] = recency_.begin();
  return recency_.front();
}

void L7Tracker::segment(const L7Segment& segment, std::vector<L7Exchange>& done) {
  if (segment.length == 0) return;
  Connection& c = find(segment.connection, done);
  c.last_ns = segment.ns;
  std::span<const std::byte> captured =
      segment.captured.first(std::min<std::size_t>(segment.captured.size(), segment.length));
  if (c.role == Role::unknown) {
    // HTTP-like protocols: the client speaks first. A connection already
    // running when the capture started gets a few segments to show a request.
    if (parser_.detect_request(captured)) {
      c.role = segment.outbound ? Role::client : Role::server;
    } else {
      if (++c.unidentified_segments >= kSegmentsToDetect) c.role = Role::other;
      return;
    }
  }
  if (c.role == Role::other) return;
  const bool is_request = (c.role == Role::client) == segment.outbound;
  Stream& stream = is_request ? c.requests : c.responses;
  L7Segment bounded = segment;
  bounded.captured = captured;
  feed(c, stream, is_request, bounded, done);
}

void L7Tracker::feed(Connection& c, Stream& s, bool is_request, const L7Segment& segment,
                     std::vector<L7Exchange>& done) {
  const std::uint32_t start = segment.seq;
  const std::uint32_t end = segment.seq + segment.length;
  const bool whole = segment.captured.size() >= segment.length;

  if (!s.head.empty()) {
    const std::uint32_t head_end = s.head_seq + static_cast<std::uint32_t>(s.head.size());
    if (start == head_end && s.head.size() + segment.captured.size() <= limits_.max_head_bytes) {
      // The rest of a head split over segments.
      std::string joined = s.head;
      joined.append(reinterpret_cast<const char*>(segment.captured.data()),
                    segment.captured.size());
      const std::uint32_t head_seq = s.head_seq;
      const std::uint64_t head_ns = s.head_ns;
      s.head.clear();
      parse_from(c, s, is_request, head_seq, as_bytes(joined), whole, head_ns, done, false);
      return;
    }
    if (!seq_before(head_end, end)) return;  // a retransmission of what we hold
    s.head.clear();
    s.synced = false;
    ++stats_.lost_sync;
  }

  if (s.synced) {
    if (!seq_before(s.next_seq, end)) return;  // body bytes or a retransmission
    if (!seq_before(s.next_seq, start)) {
      const std::size_t offset = s.next_seq - start;
      if (offset < segment.captured.size()) {
        parse_from(c, s, is_request, s.next_seq, segment.captured.subspan(offset), whole,
                   segment.ns, done, false);
        return;
      }
    }
    // The next message starts where nothing was captured, or segments went
    // missing: find a message start again.
    s.synced = false;
    ++stats_.lost_sync;
    if (!seq_before(s.next_seq, start)) return;
  }
  // Not synchronised: a message may start at this segment's first byte.
  parse_from(c, s, is_request, start, segment.captured, whole, segment.ns, done, true);
}

bool L7Tracker::parse_from(Connection& c, Stream& s, bool is_request, std::uint32_t seq,
                           std::span<const std::byte> bytes, bool whole, std::uint64_t ns,
                           std::vector<L7Exchange>& done, bool probing) {
  std::size_t offset = 0;
  for (int message = 0; message < kMessagesPerSegment && offset < bytes.size(); ++message) {
    const std::span<const std::byte> rest = bytes.subspan(offset);
    const std::uint32_t message_seq = seq + static_cast<std::uint32_t>(offset);
    L7Request request;
    L7Response response;
    ParseResult result =
        is_request ? parser_.parse_request(rest, request)
                   : parser_.parse_response(
                         rest, c.pending.empty() ? nullptr : &c.pending.front().request, response);
    const bool start_line = is_request ? !request.operation.empty() : response.status != 0;

    if (result.status == ParseStatus::invalid) {
      // While probing, most segments are body bytes: not an error.
      if (!probing) ++(is_request ? stats_.invalid_requests : stats_.invalid_responses);
      s.synced = false;
      return false;
    }
    if (result.status == ParseStatus::incomplete && whole) {
      // The head continues in the next segment.
      if (rest.size() > limits_.max_head_bytes) {
        s.synced = false;
        ++stats_.lost_sync;
        return false;
      }
      s.head.assign(reinterpret_cast<const char*>(rest.data()), rest.size());
      s.head_seq = message_seq;
      s.head_ns = ns;
      s.synced = true;
      s.next_seq = message_seq;
      return true;
    }
    if (result.status == ParseStatus::incomplete && !start_line) {
      // Cut by the capture before even the start line ended.
      s.synced = false;
      ++stats_.lost_sync;
      return false;
    }

    // Complete, or cut by the capture after the start line: a message.
    if (is_request) {
      if (c.pending.size() >= limits_.max_pending) {
        done.push_back(take_oldest(c, L7Outcome::timed_out));
        ++stats_.dropped_requests;
      }
      c.pending.push_back({request, ns});
    } else if (c.pending.empty()) {
      ++stats_.orphan_responses;
    } else {
      L7Exchange exchange = take_oldest(c, L7Outcome::answered);
      exchange.response = response;
      exchange.response_ns = ns;
      done.push_back(std::move(exchange));
    }

    const std::optional<std::uint64_t> size =
        is_request ? request.message_size : response.message_size;
    if (result.status == ParseStatus::incomplete || !size || *size == 0) {
      // Where the next message starts is unknown: find it again later. A
      // whole head without a size (a chunked body not held whole) loses the
      // stream's place; a head the capture cut usually does not (the next
      // message tends to start a segment), so only the first counts.
      s.synced = false;
      if (result.status == ParseStatus::complete) ++stats_.lost_sync;
      return false;
    }
    s.synced = true;
    s.next_seq = message_seq + static_cast<std::uint32_t>(*size);
    if (*size > rest.size()) return true;  // the next message starts in a later segment
    offset += static_cast<std::size_t>(*size);
    // After a message that parsed, the bytes that follow in the same segment
    // are the next message: bytes that do not parse are an error, not body.
    probing = false;
  }
  return true;
}

L7Exchange L7Tracker::take_oldest(Connection& c, L7Outcome outcome) {
  L7Exchange exchange;
  exchange.connection = c.id;
  exchange.side = c.role == Role::client ? L7Side::client : L7Side::server;
  exchange.request = std::move(c.pending.front().request);
  exchange.request_ns = c.pending.front().ns;
  exchange.outcome = outcome;
  c.pending.pop_front();
  return exchange;
}

void L7Tracker::finish(Connection& c, L7Outcome outcome, std::vector<L7Exchange>& done) {
  while (!c.pending.empty()) done.push_back(take_oldest(c, outcome));
}

void L7Tracker::close(std::uint64_t connection, std::vector<L7Exchange>& done) {
  auto it = connections_.find(connection);
  if (it == connections_.end()) return;
  finish(*it->second, L7Outcome::closed, done);
  recency_.erase(it->second);
  connections_.erase(it);
}

void L7Tracker::expire(std::uint64_t now_ns, std::vector<L7Exchange>& done) {
  for (auto it = recency_.begin(); it != recency_.end();) {
    Connection& c = *it;
    while (!c.pending.empty() && c.pending.front().ns + limits_.timeout_ns < now_ns) {
      done.push_back(take_oldest(c, L7Outcome::timed_out));
    }
    if (c.pending.empty() && c.last_ns + limits_.idle_ns < now_ns) {
      connections_.erase(c.id);
      it = recency_.erase(it);
    } else {
      ++it;
    }
  }
}

}  // namespace netwatcher
