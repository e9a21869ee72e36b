// The prometheus sink's HTTP(S) endpoint, served by libmicrohttpd.
//
// libmicrohttpd runs a small pool of threads, each with an epoll set over its
// connections, so a client that is slow, idle or sends half a request holds a
// connection slot, never a thread: every other request is read and answered
// while it waits. Every connection is bounded (max_connections in all, an idle
// timeout, a memory budget that caps the request head: larger requests get
// 431 and are closed).
//
// Routes: GET and HEAD only (others 405), /metrics, /healthz (the process
// serves), /readyz (200 when `readiness` says so, else 503 with its reason),
// / (a pointer to /metrics); anything else 404. Bodies are gzip-compressed
// when the request's Accept-Encoding allows it. With TLS and/or basic auth
// configured (WebConfig), /metrics and / require them; /healthz and /readyz
// are served over the same TLS but without client certificate or password,
// so that Kubernetes probes (which can do neither) work.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>

#include "netwatcher/status.hpp"
#include "web_config.hpp"

namespace netwatcher::prometheus {

struct EndpointOptions {
  int listen_fd = -1;  // bound and listening; the endpoint owns it from start()
  unsigned threads = 2;
  unsigned max_connections = 2048;
  unsigned max_connections_per_ip = 0;  // 0: no limit of its own
  unsigned idle_timeout_s = 10;
  std::size_t connection_memory_bytes = 32 * 1024;
  WebConfig web;
};

struct Readiness {
  bool ready = false;
  std::string reason;  // why not, for the 503 body
};

// The exposition text of one scrape; shared by the requests that asked for it
// while it was rendered, gzip included (made at most once, on demand).
class ScrapeBody {
 public:
  explicit ScrapeBody(std::string text) : text_(std::move(text)) {}
  const std::string& text() const { return text_; }
  const std::string& gzipped();

 private:
  std::string text_;
  std::once_flag gzip_once_;
  std::string gzipped_;
};

class HttpEndpoint {
 public:
  // Called from the server threads, possibly several at once.
  using Scrape = std::function<std::shared_ptr<ScrapeBody>()>;
  using ReadinessCheck = std::function<Readiness()>;

  HttpEndpoint();
  ~HttpEndpoint();
  HttpEndpoint(const HttpEndpoint&) = delete;
  HttpEndpoint& operator=(const HttpEndpoint&) = delete;

  // Starts the server threads. Fails (naming the reason) when libmicrohttpd
  // lacks what the options need (TLS) or cannot start.
  Status start(EndpointOptions options, Scrape scrape, ReadinessCheck readiness);
  // Closes every connection and joins the threads; the listening socket is closed.
  void stop();

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

// Whether an Accept-Encoding header value allows gzip (RFC 9110: "gzip" or
// "*" with a q-value above 0; names are case-insensitive).
bool accepts_gzip(std::string_view accept_encoding);
// gzip (RFC 1952) of `data`; empty when zlib fails.
std::string gzip(std::string_view data);

}  // namespace netwatcher::prometheus
