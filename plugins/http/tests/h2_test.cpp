// HTTP/2 read from the traffic, with servers and clients from Debian: nginx
// with h2 over TLS (ALPN) and cleartext h2c, nghttpd, curl, nghttp, and
// gRPC (python3-grpcio) with OK, failed, timed-out and cancelled calls. Each
// exchange is reported once from each socket, paired by stream id, with the
// paths, statuses and body sizes the clients themselves report.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <memory>
#include <sstream>
#include <string>

#include "harness.hpp"

using namespace nwtest;

namespace {

constexpr int kPromPort = 41485;
constexpr int kTlsPort = 8443;       // nginx, h2 over TLS
constexpr int kNginxH2cPort = 8082;  // nginx, h2c with prior knowledge
constexpr int kNghttpdPort = 8090;   // nghttpd, h2c
constexpr int kGrpcPort = 50051;
constexpr int kUpgradePort = 8091;       // h2c_upgrade_server.py: HTTP/1.1 Upgrade: h2c
constexpr int kSplitUpgradePort = 8092;  // the same, the 101 and HTTP/2 in two segments
constexpr int kUpstreamPort = 18080;
// Small enough that every frame of five parallel streams is in the capture.
constexpr std::size_t kSmallBytes = 100;
// Many DATA frames, most of them past the capture (see ExpectBigBody).
constexpr std::size_t kBigBytes = 100000;
const std::string kServerAddress = "10.77.0.2";
const std::string kGrpcPeers = std::string(NW_TEST_DIR) + "/grpc_peers.py";
const std::string kHttpPeers = std::string(NW_TEST_DIR) + "/http_peers.py";
const std::string kUpgradeServer = std::string(NW_TEST_DIR) + "/h2c_upgrade_server.py";

std::string in_client(const std::string& command) {
  return "ip netns exec " + std::string(TwoHosts::kClient) + " " + command;
}

class H2 : public ::testing::Test {
 protected:
  void SetUp() override {
    NW_REQUIRE_ROOT();
    hosts_ = std::make_unique<TwoHosts>();
    www_ = dir_.file("www");
    std::filesystem::create_directories(www_);
    std::filesystem::create_directories(dir_.file("tmp"));
    write_file(www_ + "/hello", "hi\n");
    write_file(www_ + "/small", std::string(kSmallBytes, 's'));
    write_file(www_ + "/big", std::string(kBigBytes, 'x'));
    auto cert =
        run("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "
            "-days 1 -subj /CN=nwt-srv -keyout " +
            dir_.file("key.pem") + " -out " + dir_.file("cert.pem") + " 2>&1");
    ASSERT_EQ(cert.exit_code, 0) << cert.output;
    const std::string d = dir_.path();
    const std::string listen = "    listen " + kServerAddress + ":";
    write_file(dir_.file("nginx.conf"),
               "daemon off;\nmaster_process off;\npid " + d + "/nginx.pid;\nerror_log " + d +
                   "/error.log;\nevents {}\nhttp {\n  access_log " + d + "/access.log;\n" +
                   "  client_body_temp_path " + d + "/tmp;\n  proxy_temp_path " + d +
                   "/tmp;\n  fastcgi_temp_path " + d + "/tmp;\n  uwsgi_temp_path " + d +
                   "/tmp;\n  scgi_temp_path " + d + "/tmp;\n  server {\n" + listen +
                   std::to_string(kTlsPort) + " ssl http2;\n" + listen +
                   std::to_string(kNginxH2cPort) + " http2;\n    ssl_certificate " + d +
                   "/cert.pem;\n    ssl_certificate_key " + d + "/key.pem;\n    root " + www_ +
                   ";\n    location = /slow { proxy_pass http://127.0.0.1:" +
                   std::to_string(kUpstreamPort) + "; }\n  }\n}\n");
    start("upstream",
          {"/usr/bin/python3", kHttpPeers, "server", std::to_string(kUpstreamPort), "--pidfile",
           dir_.file("upstream.pid"), "--ready", dir_.file("upstream.ready")});
    ASSERT_TRUE(wait_until([&] { return std::filesystem::exists(dir_.file("upstream.ready")); }));
    start("nginx", {"nginx", "-c", dir_.file("nginx.conf")});
    ASSERT_TRUE(wait_until([&] {
      return run(in_client("curl -sk --http2 -o /dev/null https://" + kServerAddress + ":" +
                           std::to_string(kTlsPort) + "/hello"))
                 .exit_code == 0;
    })) << read_file(dir_.file("nginx.log"))
        << read_file(dir_.file("error.log"));
  }

  void start(const std::string& name, std::vector<std::string> argv) {
    argv.insert(argv.begin(), {"ip", "netns", "exec", TwoHosts::kServer});
    servers_.push_back(std::make_unique<Process>(argv, dir_.file(name + ".log")));
  }

  void start_nghttpd() {
    start("nghttpd",
          {"nghttpd", "--no-tls", "-a", kServerAddress, "-d", www_, std::to_string(kNghttpdPort)});
    ASSERT_TRUE(wait_until([&] {
      return run("ip netns exec " + std::string(TwoHosts::kServer) +
                 " ss -Htln 'sport = :" + std::to_string(kNghttpdPort) + "' | grep -q .")
                 .exit_code == 0;
    })) << read_file(dir_.file("nghttpd.log"));
  }

  void start_upgrade_server(const std::string& name, int port, bool split) {
    std::vector<std::string> argv = {"/usr/bin/python3",
                                     kUpgradeServer,
                                     std::to_string(port),
                                     "--host",
                                     kServerAddress,
                                     "--root",
                                     www_,
                                     "--pidfile",
                                     dir_.file(name + ".pid"),
                                     "--ready",
                                     dir_.file(name + ".ready")};
    if (split) argv.push_back("--split");
    start(name, argv);
    ASSERT_TRUE(wait_until([&] { return std::filesystem::exists(dir_.file(name + ".ready")); }))
        << read_file(dir_.file(name + ".log"));
  }

  void start_grpc() {
    start("grpc",
          {"/usr/bin/python3", kGrpcPeers, "server", std::to_string(kGrpcPort), "--host",
           kServerAddress, "--pidfile", dir_.file("grpc.pid"), "--ready", dir_.file("grpc.ready")});
    ASSERT_TRUE(wait_until([&] { return std::filesystem::exists(dir_.file("grpc.ready")); }))
        << read_file(dir_.file("grpc.log"));
  }

  std::string config(const std::string& l7 = "") const {
    return "snapshot_interval = 0.5\n[plugins.http]\n[plugins.l7]\ntls = true\n" + l7 +
           sink_config_json(dir_.file("events.jsonl")) +
           "[[sinks]]\ntype = \"prometheus\"\nlisten = \"127.0.0.1:" + std::to_string(kPromPort) +
           "\"\n";
  }

  // The exchanges of the connection from `client_port`, as `side` saw them,
  // by stream id.
  std::vector<Json> exchanges(const std::string& side, std::uint64_t client_port) const {
    std::vector<Json> out;
    for (const auto& e : events_of(read_json_lines(dir_.file("events.jsonl")), "http_exchange")) {
      const auto& f = e["fields"];
      if (f["side"].str() != side) continue;
      if ((side == "client" ? f["sport"].u64() : f["dport"].u64()) == client_port) out.push_back(e);
    }
    std::stable_sort(out.begin(), out.end(), [](const Json& a, const Json& b) {
      return a["fields"]["stream_id"].u64() < b["fields"]["stream_id"].u64();
    });
    return out;
  }
  bool wait_for(std::uint64_t client_port, std::size_t count) const {
    return wait_until([&] {
      return exchanges("client", client_port).size() >= count &&
             exchanges("server", client_port).size() >= count;
    });
  }
  std::uint64_t pid_in(const std::string& file) const {
    return std::stoull(read_file(dir_.file(file)));
  }

  struct Expected {
    std::string path;
    std::uint64_t status, response_bytes;
  };
  // Exactly `expected`, in stream order, from both sockets of the connection.
  void expect_exchanges(std::uint64_t client_port, int server_port, const std::string& client_comm,
                        std::uint64_t server_pid, const std::string& server_comm,
                        const std::vector<Expected>& expected, bool tls) {
    ASSERT_TRUE(wait_for(client_port, expected.size()));
    for (const char* side : {"client", "server"}) {
      SCOPED_TRACE(side);
      const bool client = std::string(side) == "client";
      auto seen = exchanges(side, client_port);
      ASSERT_EQ(seen.size(), expected.size());
      std::uint64_t stream = 0;
      for (std::size_t i = 0; i < seen.size(); ++i) {
        SCOPED_TRACE(expected[i].path);
        const auto& f = seen[i]["fields"];
        EXPECT_EQ(f["version"].str(), "2");
        EXPECT_EQ(f["method"].str(), "GET");
        EXPECT_EQ(f["path"].str(), expected[i].path);
        EXPECT_EQ(f["status"].u64(), expected[i].status);
        EXPECT_EQ(f["response_bytes"].u64(), expected[i].response_bytes);
        EXPECT_EQ(f["request_bytes"].u64(), 0u);
        EXPECT_EQ(f["outcome"].str(), "answered");
        EXPECT_EQ(f["host"].str(), kServerAddress + ":" + std::to_string(server_port));
        EXPECT_EQ(f["tls"].boolean(), tls);
        EXPECT_FALSE(f["partial_headers"].boolean());
        EXPECT_GT(f["latency_us"].num(), 0);
        // Client streams are odd and rise; each one once.
        EXPECT_EQ(f["stream_id"].u64() % 2, 1u);
        EXPECT_GT(f["stream_id"].u64(), stream);
        stream = f["stream_id"].u64();
        if (client) {
          EXPECT_EQ(f["comm"].str(), client_comm);
        } else {
          EXPECT_EQ(f["pid"].u64(), server_pid);
          EXPECT_EQ(f["comm"].str(), server_comm);
        }
        EXPECT_EQ(f[client ? "dport" : "sport"].u64(), static_cast<std::uint64_t>(server_port));
      }
    }
  }

  // A body larger than the capture, on both sides: path and status (in the
  // first bytes) exact; its size exact when the kernel followed its frames,
  // absent (not a count of the frames seen) when it did not.
  void expect_big_body(std::uint64_t client_port, bool followed = true) {
    ASSERT_TRUE(wait_for(client_port, 1));
    for (const char* side : {"client", "server"}) {
      SCOPED_TRACE(side);
      auto seen = exchanges(side, client_port);
      ASSERT_EQ(seen.size(), 1u);
      const auto& f = seen[0]["fields"];
      EXPECT_EQ(f["path"].str(), "/big");
      EXPECT_EQ(f["status"].u64(), 200u);
      EXPECT_EQ(f["outcome"].str(), "answered");
      if (followed) {
        EXPECT_EQ(f["response_bytes"].u64(), kBigBytes);
        EXPECT_FALSE(f["partial_headers"].boolean());
      } else {
        EXPECT_FALSE(f.has("response_bytes"));
      }
    }
  }

  TempDir dir_;
  std::unique_ptr<TwoHosts> hosts_;
  std::string www_;
  std::vector<std::unique_ptr<Process>> servers_;
};

// "port status bytes version" per URL, from one curl.
std::vector<std::vector<std::string>> curl_lines(const std::string& output) {
  std::vector<std::vector<std::string>> lines;
  std::istringstream in(output);
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream words(line);
    std::vector<std::string> w;
    for (std::string word; words >> word;) w.push_back(word);
    if (w.size() == 4) lines.push_back(w);
  }
  return lines;
}

const char* kCurlFormat = " -w '%{local_port} %{http_code} %{size_download} %{http_version}\\n'";

// curl multiplexes parallel transfers as streams of one TLS connection;
// nginx answers them as they come.
TEST_F(H2, TlsStreamsInParallelOnOneConnectionAreReportedOnBothSides) {
  Netwatcher nw(dir_, config());
  const std::string base = "https://" + kServerAddress + ":" + std::to_string(kTlsPort);
  std::string command = "curl -sk --http2 --parallel --parallel-max 5" + std::string(kCurlFormat);
  for (const char* path : {"/hello", "/small", "/missing", "/hello?id=7", "/small"})
    command += " -o /dev/null " + base + path;
  auto curl = run(in_client(command));
  ASSERT_EQ(curl.exit_code, 0) << curl.output;
  auto lines = curl_lines(curl.output);
  ASSERT_EQ(lines.size(), 5u) << curl.output;
  for (const auto& line : lines) {
    EXPECT_EQ(line[0], lines[0][0]) << "not one connection: " << curl.output;
    EXPECT_EQ(line[3], "2") << curl.output;
  }
  // nginx's 404 page, as curl counted it.
  std::uint64_t not_found_bytes = 0;
  for (const auto& line : lines)
    if (line[1] == "404") not_found_bytes = std::stoull(line[2]);
  ASSERT_GT(not_found_bytes, 0u) << curl.output;
  const std::uint64_t port = std::stoull(lines[0][0]);
  expect_exchanges(port, kTlsPort, "curl", pid_in("nginx.pid"), "nginx",
                   {{"/hello", 200, 3},
                    {"/small", 200, kSmallBytes},
                    {"/missing", 404, not_found_bytes},
                    {"/hello", 200, 3},
                    {"/small", 200, kSmallBytes}},
                   true);
  auto prom = scrape_until(kPromPort, [](const PromText& p) {
    return p.value("netwatcher_http_parse_errors_total", {{"kind", "h2_table_lost"}}).has_value();
  });
  for (const char* kind : {"h2_invalid_frame", "h2_lost_sync", "h2_table_lost",
                           "h2_orphan_response", "h2_lost_stream"})
    EXPECT_EQ(prom.value("netwatcher_http_parse_errors_total", {{"kind", kind}}), 0.0) << kind;

  auto big = run(in_client("curl -sk --http2 -o /dev/null -w '%{local_port}' " + base + "/big"));
  ASSERT_EQ(big.exit_code, 0) << big.output;
  expect_big_body(std::stoull(big.output));

  // curl (7.88) ends a transfer past --max-time by closing its connection:
  // nginx never answered, and both sides say closed.
  auto timed_out =
      run(in_client("curl -sk --http2 --max-time 0.1 -o /dev/null -w "
                    "'%{local_port}' " +
                    base + "/slow"));
  ASSERT_EQ(timed_out.exit_code, 28) << timed_out.output;
  const std::uint64_t slow_port = std::stoull(timed_out.output);
  ASSERT_TRUE(wait_for(slow_port, 1));
  for (const char* side : {"client", "server"}) {
    SCOPED_TRACE(side);
    auto seen = exchanges(side, slow_port);
    ASSERT_EQ(seen.size(), 1u);
    EXPECT_EQ(seen[0]["fields"]["path"].str(), "/slow");
    EXPECT_EQ(seen[0]["fields"]["outcome"].str(), "closed");
    EXPECT_FALSE(seen[0]["fields"].has("status"));
  }

  ASSERT_EQ(nw.stop(), 0) << nw.log();
  EXPECT_EQ(exchanges("client", port).size(), 5u);
  EXPECT_EQ(exchanges("server", port).size(), 5u);
}

// Cleartext HTTP/2 with prior knowledge: nghttpd answering nghttp's
// concurrent requests on one connection, and nginx answering curl.
TEST_F(H2, CleartextPriorKnowledgeFromNghttpdAndNginx) {
  start_nghttpd();
  const std::string nghttpd = "http://" + kServerAddress + ":" + std::to_string(kNghttpdPort);
  // nghttpd's 404 page, measured before the agent runs.
  auto missing =
      run(in_client("curl -s --http2-prior-knowledge -o /dev/null -w "
                    "'%{size_download}' " +
                    nghttpd + "/missing"));
  ASSERT_EQ(missing.exit_code, 0) << missing.output;
  const std::uint64_t missing_bytes = std::stoull(missing.output);

  Netwatcher nw(dir_, config());
  auto nghttp = run(
      in_client("nghttp -n " + nghttpd + "/hello " + nghttpd + "/small " + nghttpd + "/missing"));
  ASSERT_EQ(nghttp.exit_code, 0) << nghttp.output;
  // nghttp's local port, from its client events.
  std::uint64_t nghttp_port = 0;
  ASSERT_TRUE(wait_until([&] {
    for (const auto& e : events_of(read_json_lines(dir_.file("events.jsonl")), "http_exchange"))
      if (e["fields"]["comm"].str() == "nghttp") nghttp_port = e["fields"]["sport"].u64();
    return nghttp_port != 0;
  }));
  expect_exchanges(
      nghttp_port, kNghttpdPort, "nghttp", servers_.back()->pid(), "nghttpd",
      {{"/hello", 200, 3}, {"/small", 200, kSmallBytes}, {"/missing", 404, missing_bytes}}, false);

  auto curl =
      run(in_client("curl -s --http2-prior-knowledge -o /dev/null" + std::string(kCurlFormat) +
                    " http://" + kServerAddress + ":" + std::to_string(kNginxH2cPort) + "/big"));
  ASSERT_EQ(curl.exit_code, 0) << curl.output;
  auto lines = curl_lines(curl.output);
  ASSERT_EQ(lines.size(), 1u) << curl.output;
  expect_big_body(std::stoull(lines[0][0]));
  ASSERT_EQ(nw.stop(), 0) << nw.log();
}

// HTTP/1.1 Upgrade: h2c: the request that asked is stream 1, answered over
// HTTP/2 after the 101, and the connection's later requests are streams.
TEST_F(H2, AnHttp11UpgradeToH2cIsFollowedFromItsFirstRequest) {
  start_upgrade_server("upgrade", kUpgradePort, false);
  start_upgrade_server("split", kSplitUpgradePort, true);
  const std::string base = "http://" + kServerAddress + ":" + std::to_string(kUpgradePort);
  auto missing = run(in_client("curl -s -o /dev/null -w '%{size_download}' " + base + "/missing"));
  ASSERT_EQ(missing.exit_code, 0) << missing.output;
  const std::uint64_t missing_bytes = std::stoull(missing.output);

  Netwatcher nw(dir_, config());
  auto nghttp =
      run(in_client("nghttp -nu " + base + "/hello " + base + "/small " + base + "/missing"));
  ASSERT_EQ(nghttp.exit_code, 0) << nghttp.output << read_file(dir_.file("upgrade.log"));
  std::uint64_t nghttp_port = 0;
  ASSERT_TRUE(wait_until([&] {
    for (const auto& e : events_of(read_json_lines(dir_.file("events.jsonl")), "http_exchange"))
      if (e["fields"]["comm"].str() == "nghttp") nghttp_port = e["fields"]["sport"].u64();
    return nghttp_port != 0;
  }));
  expect_exchanges(
      nghttp_port, kUpgradePort, "nghttp", pid_in("upgrade.pid"), "python3",
      {{"/hello", 200, 3}, {"/small", 200, kSmallBytes}, {"/missing", 404, missing_bytes}}, false);
  for (const char* side : {"client", "server"}) {
    SCOPED_TRACE(side);
    EXPECT_EQ(exchanges(side, nghttp_port)[0]["fields"]["stream_id"].u64(), 1u);
  }

  // curl --http2 on http:// asks for the upgrade itself.
  auto curl = run(
      in_client("curl -s --http2 -o /dev/null" + std::string(kCurlFormat) + " " + base + "/small"));
  ASSERT_EQ(curl.exit_code, 0) << curl.output;
  auto lines = curl_lines(curl.output);
  ASSERT_EQ(lines.size(), 1u) << curl.output;
  ASSERT_EQ(lines[0][3], "2") << curl.output;
  expect_exchanges(std::stoull(lines[0][0]), kUpgradePort, "curl", pid_in("upgrade.pid"), "python3",
                   {{"/small", 200, kSmallBytes}}, false);
  // The server's first HTTP/2 bytes in a segment after the 101's.
  auto split =
      run(in_client("curl -s --http2 -o /dev/null" + std::string(kCurlFormat) + " http://" +
                    kServerAddress + ":" + std::to_string(kSplitUpgradePort) + "/hello"));
  ASSERT_EQ(split.exit_code, 0) << split.output;
  lines = curl_lines(split.output);
  ASSERT_EQ(lines.size(), 1u) << split.output;
  expect_exchanges(std::stoull(lines[0][0]), kSplitUpgradePort, "curl", pid_in("split.pid"),
                   "python3", {{"/hello", 200, 3}}, false);
  auto prom = scrape_until(kPromPort, [](const PromText& p) {
    return p.value("netwatcher_http_parse_errors_total", {{"kind", "h2_table_lost"}}).has_value();
  });
  for (const char* kind : {"invalid_request", "invalid_response", "lost_sync", "h2_invalid_frame",
                           "h2_lost_sync", "h2_table_lost", "h2_orphan_response"})
    EXPECT_EQ(prom.value("netwatcher_http_parse_errors_total", {{"kind", kind}}), 0.0) << kind;
  ASSERT_EQ(nw.stop(), 0) << nw.log();
}

// A 101 to a WebSocket upgrade: that exchange as HTTP/1.1 with status 101,
// and nothing after it read as HTTP, even bytes that look like a request.
TEST_F(H2, ASwitchToAnotherProtocolEndsHttpAtThe101) {
  start_upgrade_server("upgrade", kUpgradePort, false);
  Netwatcher nw(dir_, config());
  const std::string script =
      "import socket,sys\n"
      "s=socket.create_connection(('" +
      kServerAddress + "'," + std::to_string(kUpgradePort) +
      "))\n"
      "s.sendall(b'GET /chat HTTP/1.1\\r\\nHost: ws\\r\\nUpgrade: websocket\\r\\n"
      "Connection: Upgrade\\r\\n\\r\\n')\n"
      "head=b''\n"
      "while not head.endswith(b'\\r\\n\\r\\n'): head+=s.recv(1)\n"
      "for m in (b'GET /not-a-request HTTP/1.1\\r\\n\\r\\n', b'\\x81\\x05hello'):\n"
      "  s.sendall(m)\n"
      "  got=b''\n"
      "  while len(got)<len(m): got+=s.recv(100)\n"
      "print(s.getsockname()[1], head.split(b' ')[1].decode())\n"
      "s.close()\n";
  write_file(dir_.file("ws.py"), script);
  auto ws = run(in_client("/usr/bin/python3 " + dir_.file("ws.py")));
  ASSERT_EQ(ws.exit_code, 0) << ws.output;
  std::istringstream words(ws.output);
  std::uint64_t port = 0;
  std::string status;
  words >> port >> status;
  ASSERT_EQ(status, "101") << ws.output;
  ASSERT_TRUE(wait_until([&] {
    return exchanges("client", port).size() == 1 && exchanges("server", port).size() == 1;
  }));
  for (const char* side : {"client", "server"}) {
    SCOPED_TRACE(side);
    const auto& f = exchanges(side, port)[0]["fields"];
    EXPECT_EQ(f["version"].str(), "1.1");
    EXPECT_EQ(f["path"].str(), "/chat");
    EXPECT_EQ(f["status"].u64(), 101u);
    EXPECT_EQ(f["outcome"].str(), "answered");
  }
  // The bytes after the 101 went by both sockets without a parse error.
  auto prom = scrape_until(kPromPort, [](const PromText& p) {
    return p.value("netwatcher_http_parse_errors_total", {{"kind", "invalid_request"}}).has_value();
  });
  for (const char* kind : {"invalid_request", "invalid_response", "orphan_response", "lost_sync",
                           "h2_invalid_frame", "h2_lost_sync"})
    EXPECT_EQ(prom.value("netwatcher_http_parse_errors_total", {{"kind", kind}}), 0.0) << kind;
  ASSERT_EQ(nw.stop(), 0) << nw.log();
  EXPECT_EQ(exchanges("client", port).size(), 1u);
  EXPECT_EQ(exchanges("server", port).size(), 1u);
}

// The kernel's frame walk off (as on a kernel without bpf_loop): a body past
// the capture has no size and ends the stream unseen, so the exchange is
// answered at the close; path and status stay exact, nothing is wrong.
TEST_F(H2, WithoutTheKernelsFrameWalkABigBodyHasNoSize) {
  Netwatcher nw(dir_, config("h2_frame_walk = false\n"));
  auto prom = scrape_until(kPromPort, [](const PromText& p) {
    return p.value("netwatcher_l7_h2_frame_walk").has_value();
  });
  EXPECT_EQ(prom.value("netwatcher_l7_h2_frame_walk"), 0.0);
  auto curl =
      run(in_client("curl -s --http2-prior-knowledge -o /dev/null" + std::string(kCurlFormat) +
                    " http://" + kServerAddress + ":" + std::to_string(kNginxH2cPort) + "/big"));
  ASSERT_EQ(curl.exit_code, 0) << curl.output;
  auto lines = curl_lines(curl.output);
  ASSERT_EQ(lines.size(), 1u) << curl.output;
  ASSERT_EQ(lines[0][2], std::to_string(kBigBytes)) << curl.output;
  expect_big_body(std::stoull(lines[0][0]), false);
  ASSERT_EQ(nw.stop(), 0) << nw.log();
}

// gRPC over h2c: the service and method from the path, the status from the
// trailers, and a call the client cancels (RST_STREAM) reported as reset.
TEST_F(H2, GrpcCallsCarryServiceMethodAndStatusAndACancelIsAReset) {
  start_grpc();
  Netwatcher nw(dir_, config());
  auto client = run(in_client("/usr/bin/python3 " + kGrpcPeers + " client " + kServerAddress + " " +
                              std::to_string(kGrpcPort) + " Say:hello Fail:x Say:again Cancel:x"));
  ASSERT_EQ(client.exit_code, 0) << client.output;
  auto results = parse_json_lines(client.output);
  ASSERT_EQ(results.size(), 5u) << client.output;
  EXPECT_EQ(results[2]["code"].str(), "NOT_FOUND");
  EXPECT_EQ(results[4]["code"].str(), "CANCELLED");
  const std::uint64_t port = results[0]["sport"].u64();
  const std::uint64_t client_pid = results[0]["pid"].u64();
  ASSERT_TRUE(wait_for(port, 4)) << client.output;

  struct Call {
    std::string method, outcome;
    std::optional<std::uint64_t> grpc_status;
    std::uint64_t request_bytes;
  };
  // Request bodies: a 5-byte gRPC message prefix and the payload.
  const std::vector<Call> calls = {{"Say", "answered", 0, 10},
                                   {"Fail", "answered", 5, 6},
                                   {"Say", "answered", 0, 10},
                                   {"Slow", "reset", std::nullopt, 6}};
  for (const char* side : {"client", "server"}) {
    SCOPED_TRACE(side);
    auto seen = exchanges(side, port);
    ASSERT_EQ(seen.size(), calls.size());
    for (std::size_t i = 0; i < calls.size(); ++i) {
      SCOPED_TRACE(i);
      const auto& f = seen[i]["fields"];
      EXPECT_EQ(f["version"].str(), "2");
      EXPECT_EQ(f["method"].str(), "POST");
      EXPECT_EQ(f["path"].str(), "/netwatcher.test.Echo/" + calls[i].method);
      EXPECT_EQ(f["grpc_service"].str(), "netwatcher.test.Echo");
      EXPECT_EQ(f["grpc_method"].str(), calls[i].method);
      EXPECT_EQ(f["outcome"].str(), calls[i].outcome);
      EXPECT_EQ(f["request_bytes"].u64(), calls[i].request_bytes);
      EXPECT_FALSE(f["partial_headers"].boolean());
      EXPECT_EQ(f["pid"].u64(), std::string(side) == "client" ? client_pid : pid_in("grpc.pid"));
      if (calls[i].grpc_status) {
        EXPECT_EQ(f["grpc_status"].u64(), *calls[i].grpc_status);
        EXPECT_EQ(f["status"].u64(), 200u);
      } else {
        EXPECT_FALSE(f.has("grpc_status"));
        EXPECT_EQ(f["reset_code"].str(), "CANCEL");
      }
    }
    // The replies: "olleh" and "niaga" with their prefix.
    EXPECT_EQ(seen[0]["fields"]["response_bytes"].u64(), 10u);
  }

  auto prom = scrape_until(kPromPort, [](const PromText& p) {
    return p
        .value("netwatcher_grpc_requests_total", {{"service", "netwatcher.test.Echo"},
                                                  {"method", "Slow"},
                                                  {"code", "none"},
                                                  {"side", "server"}})
        .has_value();
  });
  for (const char* side : {"client", "server"}) {
    auto count = [&](const char* method, const char* code) {
      return prom.value("netwatcher_grpc_requests_total", {{"service", "netwatcher.test.Echo"},
                                                           {"method", method},
                                                           {"code", code},
                                                           {"side", side}});
    };
    EXPECT_EQ(count("Say", "OK"), 2.0) << side;
    EXPECT_EQ(count("Fail", "NOT_FOUND"), 1.0) << side;
    EXPECT_EQ(count("Slow", "none"), 1.0) << side;
  }
  ASSERT_EQ(nw.stop(), 0) << nw.log();
}

// A gRPC connection open before the agent started: its HPACK tables were
// built unseen. Later calls are still reported, paired by stream id; fields
// the tables held are absent and the exchange says partial_headers, and
// every field shown is the true one.
TEST_F(H2, AConnectionJoinedMidWayIsReportedWithoutWrongValues) {
  start_grpc();
  const std::string go = dir_.file("go");
  Process client({"ip", "netns", "exec", TwoHosts::kClient, "/usr/bin/python3", kGrpcPeers,
                  "client", kServerAddress, std::to_string(kGrpcPort), "--wait-for", go,
                  "Say:before", "Say:after", "Fail:after", "Say:again"},
                 dir_.file("client.log"));
  ASSERT_TRUE(wait_until([&] {
    return read_file(dir_.file("client.log")).find("\"OK\"") != std::string::npos;
  })) << read_file(dir_.file("client.log"));
  Netwatcher nw(dir_, config());
  write_file(go, "");
  ASSERT_TRUE(wait_until([&] {
    return parse_json_lines(read_file(dir_.file("client.log"))).size() == 5;
  })) << read_file(dir_.file("client.log"));
  auto results = parse_json_lines(read_file(dir_.file("client.log")));
  const std::uint64_t port = results[0]["sport"].u64();
  ASSERT_TRUE(wait_for(port, 3));
  const std::vector<std::string> methods = {"Say", "Fail", "Say"};
  for (const char* side : {"client", "server"}) {
    SCOPED_TRACE(side);
    auto seen = exchanges(side, port);
    ASSERT_EQ(seen.size(), 3u);
    bool any_partial = false;
    for (std::size_t i = 0; i < seen.size(); ++i) {
      const auto& f = seen[i]["fields"];
      EXPECT_EQ(f["stream_id"].u64(), 3 + 2 * i);
      EXPECT_EQ(f["method"].str(), "POST");  // the static table's
      EXPECT_EQ(f["outcome"].str(), "answered");
      if (f.has("status")) {
        EXPECT_EQ(f["status"].u64(), 200u);
      }
      if (!f["path"].str().empty()) {
        EXPECT_EQ(f["path"].str(), "/netwatcher.test.Echo/" + methods[i]);
      }
      if (f.has("grpc_status")) {
        EXPECT_EQ(f["grpc_status"].u64(), i == 1 ? 5u : 0u);
      }
      any_partial = any_partial || f["partial_headers"].boolean();
    }
    EXPECT_TRUE(any_partial);
  }
  auto prom = scrape_until(kPromPort, [](const PromText& p) {
    return p.value("netwatcher_http_parse_errors_total", {{"kind", "h2_table_lost"}}).value_or(0) >
           0;
  });
  // Both directions of both sockets joined with an unknown table.
  EXPECT_EQ(prom.value("netwatcher_http_parse_errors_total", {{"kind", "h2_table_lost"}}), 4.0);
  ASSERT_EQ(nw.stop(), 0) << nw.log();
}

// Packets lost on the way to the client (every 25th of the server's, dropped
// in the client's prerouting, before its socket sees them): the server's
// socket sent every byte and reports every exchange exactly; the client's
// loses its place at each gap, and the kernel's frame walk and the decoder
// take it up again at a later frame. No value is ever wrong: a body size is
// exact or absent.
TEST_F(H2, PacketsLostOnTheWayLeaveSizesExactOrAbsentAndTheWalkResumes) {
  start_nghttpd();
  const std::string client_ns = TwoHosts::kClient;
  auto nft = run("ip netns exec " + client_ns +
                 " nft 'add table inet nwt_loss; add chain inet nwt_loss in { type filter hook "
                 "prerouting priority 0; }; add rule inet nwt_loss in tcp sport " +
                 std::to_string(kNghttpdPort) + " numgen inc mod 25 == 0 drop' 2>&1");
  ASSERT_EQ(nft.exit_code, 0) << nft.output;
  Netwatcher nw(dir_, config());
  auto walk = scrape_until(kPromPort, [](const PromText& p) {
    return p.value("netwatcher_l7_h2_frame_walk").has_value();
  });
  EXPECT_EQ(walk.value("netwatcher_l7_h2_frame_walk"), 1.0);
  constexpr std::size_t kRequests = 40;
  // One connection, one stream at a time: each exchange after a gap starts
  // from a fresh place.
  auto h2load = run(in_client("h2load -n " + std::to_string(kRequests) + " -c 1 -m 1 http://" +
                              kServerAddress + ":" + std::to_string(kNghttpdPort) + "/big"));
  ASSERT_EQ(h2load.exit_code, 0) << h2load.output;
  ASSERT_NE(h2load.output.find(std::to_string(kRequests) + " succeeded"), std::string::npos)
      << h2load.output;
  std::uint64_t port = 0;
  ASSERT_TRUE(wait_until([&] {
    for (const auto& e : events_of(read_json_lines(dir_.file("events.jsonl")), "http_exchange"))
      if (e["fields"]["comm"].str() == "h2load") port = e["fields"]["sport"].u64();
    return port != 0 && exchanges("server", port).size() >= kRequests;
  }));
  ASSERT_EQ(nw.stop(), 0) << nw.log();  // closes the client's streams left open

  auto server = exchanges("server", port);
  ASSERT_EQ(server.size(), kRequests);
  for (const auto& e : server) {
    const auto& f = e["fields"];
    EXPECT_EQ(f["path"].str(), "/big");
    EXPECT_EQ(f["status"].u64(), 200u);
    EXPECT_EQ(f["outcome"].str(), "answered");
    EXPECT_EQ(f["response_bytes"].u64(), kBigBytes);
    EXPECT_FALSE(f["partial_headers"].boolean());
  }
  auto client = exchanges("client", port);
  ASSERT_EQ(client.size(), kRequests);
  std::uint64_t first_unsized = 0, exact_after = 0;
  for (const auto& e : client) {
    const auto& f = e["fields"];
    SCOPED_TRACE(f["stream_id"].u64());
    EXPECT_EQ(f["path"].str(), "/big");  // the requests were not lost
    if (f.has("status")) {
      EXPECT_EQ(f["status"].u64(), 200u);
    }
    if (f.has("response_bytes")) {
      EXPECT_EQ(f["response_bytes"].u64(), kBigBytes);
      if (first_unsized != 0) ++exact_after;
    } else if (first_unsized == 0) {
      first_unsized = f["stream_id"].u64();
    }
    const std::string outcome = f["outcome"].str();
    EXPECT_TRUE(outcome == "answered" || outcome == "lost") << outcome;
  }
  EXPECT_NE(first_unsized, 0u) << "no packet loss reached the client's socket";
  EXPECT_GT(exact_after, 0u) << "the client's place was not found again after a gap";
}

}  // namespace
