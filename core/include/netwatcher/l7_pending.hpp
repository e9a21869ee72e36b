// netwatcher SDK: requests waiting for their response, paired by an id.
//
// A protocol whose responses name their request (DNS by transaction id,
// HTTP/2 by stream id, a MySQL prepared statement, ...) keeps its open
// requests in a PendingRequests<Key, Request>:
//
//   - insert() a request under its key; the same key again replaces it, and
//     the old request is handed back as `replaced` (a retry: the first one
//     went unanswered);
//   - take() it when its response comes;
//   - expire() from collect() reports the requests older than a timeout;
//   - at capacity, insert() first evicts the oldest request (`evicted`);
//   - take_all_of() reports a closed socket's requests.
//
// "Oldest" is insertion order (a replaced request counts from its
// replacement), which is time order as long as the callers insert with the
// time they see: expire() stops at the first request not yet timed out.
//
// Key is ordered (operator<); socket_of(key) gives its socket cookie, by
// default the key's first element (std::get<0>: a std::tuple or std::pair
// starting with the L7Packet::socket). A key should hold whatever tells two
// requests apart at one socket: a UDP server socket serves many clients,
// whose ids may collide, so DNS keys (socket, remote address, remote port,
// id).
//
// The table owns its requests; a request handed to a callback is the
// callback's to move from, and gone from the table when it is called. Every
// operation is O(log n); memory is bounded by the capacity. Not thread-safe:
// a protocol plugin uses it on the host's poller thread only. Callbacks must
// not use the table; an exception from one propagates, after the request it
// was given has left the table.
#pragma once

#include <cstddef>
#include <cstdint>
#include <list>
#include <map>
#include <optional>
#include <tuple>
#include <utility>

namespace netwatcher {

// Why insert() hands back a request that was in the table.
enum class Displaced : std::uint8_t {
  replaced,  // a request with the same key came: this one was not answered
  evicted,   // the table was full: this was the oldest
};

// The default socket_of: the key's first element.
struct SocketIsFirst {
  template <class Key>
  std::uint64_t operator()(const Key& key) const noexcept {
    return static_cast<std::uint64_t>(std::get<0>(key));
  }
};

template <class Key, class Request, class SocketOf = SocketIsFirst>
class PendingRequests {
 public:
  explicit PendingRequests(std::size_t capacity = 65536) : capacity_(capacity ? capacity : 1) {}
  PendingRequests(const PendingRequests&) = delete;
  PendingRequests& operator=(const PendingRequests&) = delete;

  std::size_t size() const noexcept { return map_.size(); }
  bool empty() const noexcept { return map_.empty(); }
  std::size_t capacity() const noexcept { return capacity_; }
  // A smaller capacity applies from the next insert().
  void set_capacity(std::size_t capacity) noexcept { capacity_ = capacity ? capacity : 1; }

  // Keeps `request`, seen at `ns`, under `key`. A request already under the
  // key is handed to displaced(Request&, Displaced::replaced) and replaced;
  // else, when the table is full, the oldest goes to
  // displaced(Request&, Displaced::evicted) first.
  template <class F>
  void insert(const Key& key, Request request, std::uint64_t ns, F&& displaced) {
    const Indexed indexed{socket_of_(key), key};
    if (auto it = map_.find(indexed); it != map_.end()) {
      Request old = std::move(it->second.request);
      it->second.request = std::move(request);
      it->second.ns = ns;
      age_.splice(age_.end(), age_, it->second.age);  // counts from now on
      displaced(old, Displaced::replaced);
      return;
    }
    std::optional<Request> evicted;
    if (map_.size() >= capacity_) evicted = pop(age_.begin());
    auto it = map_.emplace(indexed, Entry{std::move(request), ns, {}}).first;
    it->second.age = age_.insert(age_.end(), it);
    if (evicted) displaced(*evicted, Displaced::evicted);
  }

  // The request under `key`, still in the table; nullptr when there is none.
  Request* find(const Key& key) {
    auto it = map_.find(Indexed{socket_of_(key), key});
    return it == map_.end() ? nullptr : &it->second.request;
  }

  // The request under `key`, out of the table (its response came).
  std::optional<Request> take(const Key& key) {
    auto it = map_.find(Indexed{socket_of_(key), key});
    if (it == map_.end()) return std::nullopt;
    return pop(it->second.age);
  }

  // When the request under `key` was inserted; nullopt when there is none.
  std::optional<std::uint64_t> inserted_ns(const Key& key) const {
    auto it = map_.find(Indexed{socket_of_(key), key});
    if (it == map_.end()) return std::nullopt;
    return it->second.ns;
  }

  // Hands every request inserted at least `timeout` before `now` to
  // expired(Request&), oldest first, and returns how many.
  template <class F>
  std::size_t expire(std::uint64_t now, std::uint64_t timeout, F&& expired) {
    std::size_t n = 0;
    while (!age_.empty()) {
      const std::uint64_t ns = (*age_.begin())->second.ns;
      if (now - ns < timeout) break;
      Request r = pop(age_.begin());
      ++n;
      expired(r);
    }
    return n;
  }

  // Hands every request of `socket` to each(Request&), in key order, and
  // returns how many: the socket closed.
  template <class F>
  std::size_t take_all_of(std::uint64_t socket, F&& each) {
    std::size_t n = 0;
    for (auto it = map_.lower_bound(socket); it != map_.end() && it->first.first == socket;) {
      auto next = std::next(it);
      Request r = pop(it->second.age);
      ++n;
      each(r);
      it = next;
    }
    return n;
  }

  void clear() noexcept {
    age_.clear();
    map_.clear();
  }

 private:
  using Indexed = std::pair<std::uint64_t, Key>;  // (socket, key): a socket's keys are adjacent
  struct Less {
    using is_transparent = void;
    bool operator()(const Indexed& a, const Indexed& b) const { return a < b; }
    bool operator()(const Indexed& a, std::uint64_t socket) const { return a.first < socket; }
    bool operator()(std::uint64_t socket, const Indexed& b) const { return socket < b.first; }
  };
  struct Entry;
  using Map = std::map<Indexed, Entry, Less>;
  using Age = std::list<typename Map::iterator>;  // oldest first
  struct Entry {
    Request request;
    std::uint64_t ns = 0;
    typename Age::iterator age;
  };

  // Removes the entry `age` points at and returns its request.
  Request pop(typename Age::iterator age) {
    auto it = *age;
    Request r = std::move(it->second.request);
    age_.erase(age);
    map_.erase(it);
    return r;
  }

  std::size_t capacity_;
  [[no_unique_address]] SocketOf socket_of_;
  Map map_;
  Age age_;
};

}  // namespace netwatcher
