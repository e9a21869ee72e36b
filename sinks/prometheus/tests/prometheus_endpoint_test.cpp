// The prometheus sink's endpoint in-process: routes, methods, gzip, limits,
// basic auth, readiness; and the web config's errors.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>
#include <zlib.h>

#include <atomic>
#include <chrono>
#include <map>
#include <mutex>
#include <string>
#include <thread>

#include "http_endpoint.hpp"
#include "test_support.hpp"
#include "web_config.hpp"

using namespace netwatcher;
using namespace netwatcher::prometheus;

namespace {

// bcrypt (cost 5) of "nw-scrape-secret".
constexpr const char* kHash = "$2b$05$jutLSgtxB0PqxJclHsuNlez7.tUqgxjl5mSym3253oHBgDa4PABWm";

int connect_to(int port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<std::uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    close(fd);
    return -1;
  }
  timeval timeout{5, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
  return fd;
}

// Sends `request` and reads until the server closes.
std::string round_trip(int port, const std::string& request) {
  int fd = connect_to(port);
  if (fd < 0) return "connect failed";
  std::size_t sent = 0;
  while (sent < request.size()) {
    ssize_t n = send(fd, request.data() + sent, request.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) break;  // the server may answer and close before it read all
    sent += static_cast<std::size_t>(n);
  }
  std::string response;
  char buf[8192];
  ssize_t n;
  while ((n = recv(fd, buf, sizeof buf, 0)) > 0) response.append(buf, static_cast<std::size_t>(n));
  close(fd);
  return response;
}

std::string request(const std::string& method, const std::string& path,
                    const std::string& headers = "") {
  return method + " " + path + " HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n" + headers +
         "\r\n";
}

int status_of(const std::string& response) {
  if (response.rfind("HTTP/1.1 ", 0) != 0) return -1;
  return std::stoi(response.substr(9, 3));
}

std::string body_of(const std::string& response) {
  auto at = response.find("\r\n\r\n");
  return at == std::string::npos ? "" : response.substr(at + 4);
}

bool has_header(const std::string& response, const std::string& line) {
  const std::string head = response.substr(0, response.find("\r\n\r\n"));
  return head.find("\r\n" + line + "\r\n") != std::string::npos;
}

std::string gunzip(const std::string& data) {
  z_stream stream{};
  if (inflateInit2(&stream, 15 + 16) != Z_OK) return "inflateInit2 failed";
  std::string out(1 << 20, '\0');
  stream.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data()));
  stream.avail_in = static_cast<uInt>(data.size());
  stream.next_out = reinterpret_cast<Bytef*>(out.data());
  stream.avail_out = static_cast<uInt>(out.size());
  int rc = inflate(&stream, Z_FINISH);
  out.resize(out.size() - stream.avail_out);
  inflateEnd(&stream);
  return rc == Z_STREAM_END ? out : "inflate failed";
}

class Endpoint : public ::testing::Test {
 protected:
  void start(EndpointOptions options = {}) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    ASSERT_EQ(listen(fd, 64), 0);
    socklen_t len = sizeof addr;
    getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
    options.listen_fd = fd;
    Status s = endpoint_.start(
        std::move(options),
        [this] {
          ++scrapes_;
          return std::make_shared<ScrapeBody>(body_);
        },
        [this] {
          std::lock_guard lock(ready_mutex_);
          return ready_;
        });
    ASSERT_TRUE(s.ok()) << s.message();
  }
  void set_ready(Readiness r) {
    std::lock_guard lock(ready_mutex_);
    ready_ = std::move(r);
  }

  int port_ = 0;
  std::string body_ = "# TYPE demo_total counter\ndemo_total 1\n";
  std::mutex ready_mutex_;
  Readiness ready_{true, {}};
  std::atomic<int> scrapes_{0};
  HttpEndpoint endpoint_;  // last: stopped before what its threads use is gone
};

TEST_F(Endpoint, ServesMetricsHealthAndReadinessAndRefusesTheRest) {
  ready_ = {false, "plugins not attached: tcp"};
  start();
  std::string r = round_trip(port_, request("GET", "/metrics"));
  EXPECT_EQ(status_of(r), 200) << r;
  EXPECT_EQ(body_of(r), body_);
  EXPECT_TRUE(has_header(r, "Content-Type: text/plain; version=0.0.4; charset=utf-8")) << r;
  EXPECT_EQ(status_of(round_trip(port_, request("GET", "/metrics?x=1"))), 200);

  r = round_trip(port_, request("HEAD", "/metrics"));
  EXPECT_EQ(status_of(r), 200) << r;
  EXPECT_EQ(body_of(r), "") << "HEAD has no body";

  r = round_trip(port_, request("GET", "/healthz"));
  EXPECT_EQ(status_of(r), 200);
  EXPECT_EQ(body_of(r), "ok\n");
  r = round_trip(port_, request("GET", "/readyz"));
  EXPECT_EQ(status_of(r), 503);
  EXPECT_EQ(body_of(r), "not ready: plugins not attached: tcp\n");
  set_ready({true, {}});
  EXPECT_EQ(body_of(round_trip(port_, request("GET", "/readyz"))), "ready\n");

  r = round_trip(port_, request("GET", "/metricsx"));
  EXPECT_EQ(status_of(r), 404) << r;
  for (const char* method : {"POST", "PUT", "DELETE", "OPTIONS", "TRACE"}) {
    r = round_trip(port_, request(method, "/metrics", "Content-Length: 0\r\n"));
    EXPECT_EQ(status_of(r), 405) << method << ": " << r;
    EXPECT_TRUE(has_header(r, "Allow: GET, HEAD")) << r;
  }
}

TEST_F(Endpoint, CompressesWhenTheClientAcceptsGzip) {
  body_.clear();
  for (int i = 0; i < 2000; ++i) body_ += "demo_total{n=\"" + std::to_string(i) + "\"} 1\n";
  start();
  std::string r = round_trip(port_, request("GET", "/metrics", "Accept-Encoding: gzip\r\n"));
  ASSERT_EQ(status_of(r), 200) << r.substr(0, 300);
  EXPECT_TRUE(has_header(r, "Content-Encoding: gzip")) << r.substr(0, 300);
  EXPECT_LT(body_of(r).size(), body_.size() / 4);
  EXPECT_EQ(gunzip(body_of(r)), body_);
  r = round_trip(port_, request("GET", "/metrics", "Accept-Encoding: gzip;q=0, identity\r\n"));
  EXPECT_FALSE(has_header(r, "Content-Encoding: gzip"));
  EXPECT_EQ(body_of(r), body_);
}

TEST_F(Endpoint, AnOversizedRequestHeadGets431AndOthersAreStillServed) {
  start();
  const std::string huge =
      request("GET", "/metrics", "X-Big: " + std::string(1 << 20, 'a') + "\r\n");
  std::string r = round_trip(port_, huge);
  EXPECT_EQ(status_of(r), 431) << r.substr(0, 200);
  EXPECT_EQ(status_of(round_trip(port_, request("GET", "/metrics"))), 200);
}

TEST_F(Endpoint, AStalledRequestDelaysNoOtherAndIsClosedAfterTheIdleTimeout) {
  EndpointOptions options;
  options.idle_timeout_s = 1;
  start(options);
  int stalled = connect_to(port_);
  ASSERT_GE(stalled, 0);
  send(stalled, "GET /metr", 9, MSG_NOSIGNAL);
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(status_of(round_trip(port_, request("GET", "/metrics"))), 200);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::milliseconds(200));
  char c;
  const auto t1 = std::chrono::steady_clock::now();
  EXPECT_EQ(recv(stalled, &c, 1, 0), 0) << "the stalled connection was not closed";
  EXPECT_LT(std::chrono::steady_clock::now() - t1, std::chrono::seconds(3));
  close(stalled);
}

TEST_F(Endpoint, BasicAuthGuardsMetricsButNotTheProbes) {
  EndpointOptions options;
  options.web.users = {{"prometheus", kHash}};
  start(options);
  std::string r = round_trip(port_, request("GET", "/metrics"));
  EXPECT_EQ(status_of(r), 401) << r;
  EXPECT_TRUE(has_header(r, "WWW-Authenticate: Basic realm=\"netwatcher\"")) << r;
  // "prometheus:wrong" and "prometheus:nw-scrape-secret", base64.
  r = round_trip(port_,
                 request("GET", "/metrics", "Authorization: Basic cHJvbWV0aGV1czp3cm9uZw==\r\n"));
  EXPECT_EQ(status_of(r), 401);
  r = round_trip(port_, request("GET", "/metrics",
                                "Authorization: Basic cHJvbWV0aGV1czpudy1zY3JhcGUtc2VjcmV0\r\n"));
  EXPECT_EQ(status_of(r), 200) << r;
  EXPECT_EQ(body_of(r), body_);
  EXPECT_EQ(status_of(round_trip(port_, request("GET", "/healthz"))), 200);
  EXPECT_EQ(status_of(round_trip(port_, request("GET", "/readyz"))), 200);
  EXPECT_EQ(status_of(round_trip(port_, request("GET", "/nope"))), 401)
      << "who may not, learns nothing";
}

TEST(AcceptEncoding, FollowsQValuesAndWildcards) {
  EXPECT_TRUE(accepts_gzip("gzip"));
  EXPECT_TRUE(accepts_gzip("deflate, GZip;q=0.5"));
  EXPECT_TRUE(accepts_gzip("*"));
  EXPECT_TRUE(accepts_gzip("x-gzip"));
  EXPECT_FALSE(accepts_gzip(""));
  EXPECT_FALSE(accepts_gzip("identity"));
  EXPECT_FALSE(accepts_gzip("gzip;q=0"));
  EXPECT_FALSE(accepts_gzip("gzip; q=0.000, *"));
  EXPECT_FALSE(accepts_gzip("*;q=0"));
  EXPECT_FALSE(accepts_gzip("gzipx"));
}

TEST(BasicAuth, ChecksBcryptHashesWithLibcrypt) {
  EXPECT_TRUE(password_matches("nw-scrape-secret", kHash));
  EXPECT_FALSE(password_matches("nw-scrape-secreT", kHash));
  EXPECT_FALSE(password_matches("", kHash));
  BasicAuthVerifier verifier(std::map<std::string, std::string>{{"prometheus", kHash}});
  EXPECT_TRUE(verifier.verify("prometheus", "nw-scrape-secret"));
  EXPECT_TRUE(verifier.verify("prometheus", "nw-scrape-secret"));  // remembered
  EXPECT_FALSE(verifier.verify("prometheus", "nw-scrape-secre"));
  EXPECT_FALSE(verifier.verify("root", "nw-scrape-secret"));
}

// The web config keys with their defaults, then `overrides`.
ConfigValues web_values(const std::map<std::string, ConfigValue>& overrides) {
  ConfigValues values;
  for (const auto& key : web_config_keys()) values.set(key.name, key.default_value);
  for (const auto& [key, value] : overrides) values.set(key, value);
  return values;
}

std::string load_error(const std::map<std::string, ConfigValue>& overrides) {
  WebConfig web;
  Status s = load_web_config(web_values(overrides), web);
  return s.ok() ? "ok" : s.message();
}

TEST(WebConfig, OffByDefault) {
  WebConfig web;
  ASSERT_TRUE(load_web_config(web_values({}), web).ok());
  EXPECT_FALSE(web.tls());
  EXPECT_FALSE(web.basic_auth());
}

TEST(WebConfig, NamesTheKeyAndFileItRefuses) {
  nwtest::TempDir dir;
  EXPECT_EQ(load_error({{"tls_cert_file", dir.file("c.pem")}}),
            "keys 'tls_cert_file' and 'tls_key_file' go together: set both for TLS, or neither");
  EXPECT_EQ(load_error({{"tls_client_ca_file", dir.file("ca.pem")}}),
            "key 'tls_client_ca_file' needs TLS: set 'tls_cert_file' and 'tls_key_file' too");
  EXPECT_EQ(load_error({{"tls_cert_file", dir.file("c.pem")}, {"tls_key_file", dir.file("k.pem")}}),
            "key 'tls_cert_file' = \"" + dir.file("c.pem") +
                "\": cannot read: No such file or directory");
  nwtest::write_file(dir.file("c.pem"), "not a certificate\n");
  nwtest::write_file(dir.file("k.pem"), "not a key\n");
  EXPECT_EQ(
      load_error({{"tls_cert_file", dir.file("c.pem")}, {"tls_key_file", dir.file("k.pem")}})
          .rfind("keys 'tls_cert_file' = \"" + dir.file("c.pem") + "\" and 'tls_key_file' = \"" +
                     dir.file("k.pem") + "\": not a PEM certificate and matching private key: ",
                 0),
      0u);

  using Users = std::vector<std::string>;
  EXPECT_EQ(load_error({{"basic_auth_users", Users{"prometheus"}}}),
            "key 'basic_auth_users' entry 1: expected \"name:bcrypt-hash\"");
  EXPECT_EQ(load_error({{"basic_auth_users", Users{std::string("a:") + kHash, "b:secret"}}}),
            "key 'basic_auth_users' entry 2 (user 'b'): not a bcrypt hash ($2a$/$2b$/$2y$, 60 "
            "characters)");
  EXPECT_EQ(load_error({{"basic_auth_users",
                         Users{std::string("a:") + kHash, std::string("a:") + kHash}}}),
            "key 'basic_auth_users' entry 2: user 'a' appears twice");
  EXPECT_EQ(load_error({{"basic_auth_users", Users{std::string("a:") + kHash}}}), "ok");
}

TEST(WebConfig, AcceptsACertificateAndKeyOpensslMade) {
  nwtest::TempDir dir;
  auto made = nwtest::run(
      "openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=localhost "
      "-keyout " +
      dir.file("k.pem") + " -out " + dir.file("c.pem") + " 2>&1");
  ASSERT_EQ(made.exit_code, 0) << made.output;
  EXPECT_EQ(load_error({{"tls_cert_file", dir.file("c.pem")}, {"tls_key_file", dir.file("k.pem")}}),
            "ok");
  EXPECT_EQ(load_error({{"tls_cert_file", dir.file("c.pem")},
                        {"tls_key_file", dir.file("k.pem")},
                        {"tls_client_ca_file", dir.file("k.pem")}}),
            "key 'tls_client_ca_file' = \"" + dir.file("k.pem") + "\": no PEM certificate in it");
}

}  // namespace
