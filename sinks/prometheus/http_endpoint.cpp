#include "http_endpoint.hpp"

#include <gnutls/gnutls.h>
#include <microhttpd.h>
#include <unistd.h>
#include <zlib.h>

#include <cctype>
#include <cstring>
#include <vector>

namespace netwatcher::prometheus {

namespace {

constexpr const char* kRealm = "netwatcher";
constexpr const char* kTextType = "text/plain; charset=utf-8";
constexpr const char* kMetricsType = "text/plain; version=0.0.4; charset=utf-8";

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i)
    if (std::tolower(static_cast<unsigned char>(a[i])) !=
        std::tolower(static_cast<unsigned char>(b[i])))
      return false;
  return true;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

}  // namespace

bool accepts_gzip(std::string_view header) {
  bool gzip_named = false, gzip_ok = false, star_ok = false;
  while (!header.empty()) {
    const auto comma = header.find(',');
    std::string_view item = header.substr(0, comma);
    header = comma == std::string_view::npos ? std::string_view{} : header.substr(comma + 1);
    const auto semicolon = item.find(';');
    const std::string_view coding = trim(item.substr(0, semicolon));
    bool allowed = true;
    if (semicolon != std::string_view::npos) {
      std::string_view params = item.substr(semicolon + 1);
      const auto q = params.find("q=");
      if (q != std::string_view::npos) {
        // q=0, q=0.0, q=0.000: refused; anything else above zero is allowed.
        std::string_view value = trim(params.substr(q + 2));
        allowed = false;
        for (char c : value.substr(0, value.find(';'))) {
          if (c >= '1' && c <= '9') allowed = true;
          if (c != '0' && c != '.' && !(c >= '1' && c <= '9')) break;
        }
      }
    }
    if (iequals(coding, "gzip") || iequals(coding, "x-gzip")) {
      gzip_named = true;
      gzip_ok = gzip_ok || allowed;
    } else if (coding == "*") {
      star_ok = allowed;
    }
  }
  return gzip_named ? gzip_ok : star_ok;
}

std::string gzip(std::string_view data) {
  z_stream stream{};
  // windowBits 15 + 16: a gzip wrapper; level 1: scrapes are frequent and the
  // text is repetitive, so speed matters more than the last few percent.
  if (deflateInit2(&stream, 1, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK) return {};
  std::string out(deflateBound(&stream, data.size()), '\0');
  stream.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data()));
  stream.avail_in = static_cast<uInt>(data.size());
  stream.next_out = reinterpret_cast<Bytef*>(out.data());
  stream.avail_out = static_cast<uInt>(out.size());
  const int rc = deflate(&stream, Z_FINISH);
  const std::size_t produced = out.size() - stream.avail_out;
  deflateEnd(&stream);
  if (rc != Z_STREAM_END) return {};
  out.resize(produced);
  return out;
}

const std::string& ScrapeBody::gzipped() {
  std::call_once(gzip_once_, [this] { gzipped_ = gzip(text_); });
  return gzipped_;
}

struct HttpEndpoint::Impl {
  EndpointOptions options;
  Scrape scrape;
  ReadinessCheck readiness;
  std::unique_ptr<BasicAuthVerifier> auth;
  MHD_Daemon* daemon = nullptr;

  static MHD_Result dispatch(void* cls, MHD_Connection* connection, const char* url,
                             const char* method, const char*, const char*, std::size_t*, void**) {
    try {
      return static_cast<Impl*>(cls)->handle(connection, url, method);
    } catch (...) {
      return reply(connection, MHD_HTTP_INTERNAL_SERVER_ERROR, "internal error\n");
    }
  }

  // Buffers are copied: a response outlives this call, the body may not.
  static MHD_Result reply(MHD_Connection* connection, unsigned status, std::string_view body,
                          const char* type = kTextType, const char* encoding = nullptr) {
    MHD_Response* response = MHD_create_response_from_buffer(
        body.size(), const_cast<char*>(body.data()), MHD_RESPMEM_MUST_COPY);
    if (!response) return MHD_NO;
    MHD_add_response_header(response, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    if (encoding) {
      MHD_add_response_header(response, MHD_HTTP_HEADER_CONTENT_ENCODING, encoding);
      MHD_add_response_header(response, MHD_HTTP_HEADER_VARY, MHD_HTTP_HEADER_ACCEPT_ENCODING);
    }
    if (status == MHD_HTTP_METHOD_NOT_ALLOWED)
      MHD_add_response_header(response, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
    const MHD_Result queued = MHD_queue_response(connection, status, response);
    MHD_destroy_response(response);
    return queued;
  }

  // Requires a client certificate signed by the configured CA.
  bool client_certificate_ok(MHD_Connection* connection) const {
    const MHD_ConnectionInfo* info =
        MHD_get_connection_info(connection, MHD_CONNECTION_INFO_GNUTLS_SESSION);
    if (!info || !info->tls_session) return false;
    auto session = static_cast<gnutls_session_t>(info->tls_session);
    unsigned status = 0;
    if (gnutls_certificate_verify_peers2(session, &status) != GNUTLS_E_SUCCESS) return false;
    return status == 0;
  }

  MHD_Result handle(MHD_Connection* connection, const std::string_view url,
                    const std::string_view method) {
    if (method != MHD_HTTP_METHOD_GET && method != MHD_HTTP_METHOD_HEAD)
      return reply(connection, MHD_HTTP_METHOD_NOT_ALLOWED, "only GET and HEAD are supported\n");
    if (url == "/healthz") return reply(connection, MHD_HTTP_OK, "ok\n");
    if (url == "/readyz") {
      Readiness r = readiness();
      return r.ready
                 ? reply(connection, MHD_HTTP_OK, "ready\n")
                 : reply(connection, MHD_HTTP_SERVICE_UNAVAILABLE, "not ready: " + r.reason + "\n");
    }
    if (options.web.client_certs() && !client_certificate_ok(connection))
      return reply(connection, MHD_HTTP_FORBIDDEN,
                   "a client certificate signed by tls_client_ca_file is required\n");
    if (auth && !authenticated(connection)) {
      const std::string_view body = "authentication required\n";
      MHD_Response* response = MHD_create_response_from_buffer(
          body.size(), const_cast<char*>(body.data()), MHD_RESPMEM_MUST_COPY);
      if (!response) return MHD_NO;
      MHD_add_response_header(response, MHD_HTTP_HEADER_CONTENT_TYPE, kTextType);
      const MHD_Result queued = MHD_queue_basic_auth_fail_response(connection, kRealm, response);
      MHD_destroy_response(response);
      return queued;
    }
    if (url == "/metrics") {
      std::shared_ptr<ScrapeBody> body = scrape();
      const char* accept =
          MHD_lookup_connection_value(connection, MHD_HEADER_KIND, MHD_HTTP_HEADER_ACCEPT_ENCODING);
      if (accept && accepts_gzip(accept)) {
        const std::string& compressed = body->gzipped();
        if (!compressed.empty())
          return reply(connection, MHD_HTTP_OK, compressed, kMetricsType, "gzip");
      }
      return reply(connection, MHD_HTTP_OK, body->text(), kMetricsType);
    }
    if (url == "/") return reply(connection, MHD_HTTP_OK, "netwatcher: metrics at /metrics\n");
    return reply(connection, MHD_HTTP_NOT_FOUND, "not found; try /metrics\n");
  }

  bool authenticated(MHD_Connection* connection) const {
    char* password = nullptr;
    char* user = MHD_basic_auth_get_username_password(connection, &password);
    bool ok = false;
    if (user && password) ok = auth->verify(user, password);
    if (password) {
      std::memset(password, 0, std::strlen(password));
      MHD_free(password);
    }
    if (user) MHD_free(user);
    return ok;
  }
};

HttpEndpoint::HttpEndpoint() : impl_(std::make_unique<Impl>()) {}

HttpEndpoint::~HttpEndpoint() {
  stop();
}

Status HttpEndpoint::start(EndpointOptions options, Scrape scrape, ReadinessCheck readiness) {
  impl_->options = std::move(options);
  impl_->scrape = std::move(scrape);
  impl_->readiness = std::move(readiness);
  const EndpointOptions& o = impl_->options;
  const WebConfig& web = o.web;
  if (web.basic_auth()) impl_->auth = std::make_unique<BasicAuthVerifier>(web.users);
  if (web.tls() && MHD_is_feature_supported(MHD_FEATURE_TLS) != MHD_YES) {
    ::close(o.listen_fd);
    return Status::failure("this libmicrohttpd was built without TLS support (tls_cert_file)");
  }
  unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL;
  if (web.tls()) flags |= MHD_USE_TLS;
  std::vector<MHD_OptionItem> items = {
      {MHD_OPTION_LISTEN_SOCKET, o.listen_fd, nullptr},
      {MHD_OPTION_THREAD_POOL_SIZE, static_cast<intptr_t>(o.threads), nullptr},
      {MHD_OPTION_CONNECTION_LIMIT, static_cast<intptr_t>(o.max_connections), nullptr},
      {MHD_OPTION_PER_IP_CONNECTION_LIMIT, static_cast<intptr_t>(o.max_connections_per_ip),
       nullptr},
      {MHD_OPTION_CONNECTION_TIMEOUT, static_cast<intptr_t>(o.idle_timeout_s), nullptr},
      {MHD_OPTION_CONNECTION_MEMORY_LIMIT, static_cast<intptr_t>(o.connection_memory_bytes),
       nullptr},
  };
  if (web.tls()) {
    items.push_back({MHD_OPTION_HTTPS_MEM_CERT, 0, const_cast<char*>(web.cert_pem.c_str())});
    items.push_back({MHD_OPTION_HTTPS_MEM_KEY, 0, const_cast<char*>(web.key_pem.c_str())});
    if (web.client_certs())
      items.push_back(
          {MHD_OPTION_HTTPS_MEM_TRUST, 0, const_cast<char*>(web.client_ca_pem.c_str())});
  }
  items.push_back({MHD_OPTION_END, 0, nullptr});
  impl_->daemon = MHD_start_daemon(flags, 0, nullptr, nullptr, &Impl::dispatch, impl_.get(),
                                   MHD_OPTION_ARRAY, items.data(), MHD_OPTION_END);
  if (!impl_->daemon) {
    ::close(o.listen_fd);
    return Status::failure(
        "libmicrohttpd could not start the endpoint (threads, epoll or TLS "
        "setup failed)");
  }
  return Status::success();
}

void HttpEndpoint::stop() {
  if (!impl_ || !impl_->daemon) return;
  // MHD_stop_daemon closes the listening socket it was given, too.
  MHD_stop_daemon(impl_->daemon);
  impl_->daemon = nullptr;
}

}  // namespace netwatcher::prometheus
