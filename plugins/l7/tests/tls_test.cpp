// TLS plaintext ([plugins.l7] tls): nginx from Debian serving HTTPS in one
// namespace, clients linked with the system's OpenSSL in another (curl with
// SSL_read/SSL_write, Python's ssl with SSL_read_ex/SSL_write_ex). Every
// exchange is reported once from each socket with what cleartext HTTP
// would show, plus tls = true; the same nginx's cleartext port keeps
// tls = false.
#include <gtest/gtest.h>

#include <filesystem>
#include <map>
#include <memory>
#include <sstream>
#include <string>

#include "harness.hpp"

using namespace nwtest;

namespace {

constexpr int kPromPort = 41484;
constexpr int kHttpsPort = 8443;
constexpr int kHttpPort = 8081;
constexpr std::size_t kBigBytes = 100000;  // many TLS records (16 KiB each)
constexpr int kUpstreamPort = 18080;
const std::string kClient = std::string(NW_TEST_DIR) + "/tls_client.py";
const std::string kHttpPeers = std::string(NW_SOURCE_DIR) + "/plugins/http/tests/http_peers.py";

class Tls : public ::testing::Test {
 protected:
  void SetUp() override {
    NW_REQUIRE_ROOT();
    hosts_ = std::make_unique<TwoHosts>();
    const std::string www = dir_.file("www");
    std::filesystem::create_directories(www);
    std::filesystem::create_directories(dir_.file("tmp"));
    write_file(www + "/hello", "hi\n");
    write_file(www + "/big", std::string(kBigBytes, 'x'));
    auto cert =
        run("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "
            "-days 1 -subj /CN=nwt-srv -keyout " +
            dir_.file("key.pem") + " -out " + dir_.file("cert.pem") + " 2>&1");
    ASSERT_EQ(cert.exit_code, 0) << cert.output;
    const std::string d = dir_.path();
    write_file(dir_.file("nginx.conf"),
               "daemon off;\nmaster_process off;\npid " + d + "/nginx.pid;\nerror_log " + d +
                   "/error.log;\nevents {}\nhttp {\n  access_log " + d + "/access.log;\n" +
                   "  client_body_temp_path " + d + "/tmp;\n  proxy_temp_path " + d +
                   "/tmp;\n  fastcgi_temp_path " + d + "/tmp;\n  uwsgi_temp_path " + d +
                   "/tmp;\n  scgi_temp_path " + d + "/tmp;\n  keepalive_timeout 30;\n" +
                   "  server {\n    listen 10.77.0.2:" + std::to_string(kHttpsPort) +
                   " ssl;\n    listen 10.77.0.2:" + std::to_string(kHttpPort) +
                   ";\n    ssl_certificate " + d + "/cert.pem;\n    ssl_certificate_key " + d +
                   "/key.pem;\n    root " + www + ";\n    location = /slow { proxy_pass " +
                   "http://127.0.0.1:" + std::to_string(kUpstreamPort) + "; }\n  }\n}\n");
    // /slow answers after 0.3 s, through nginx from this upstream.
    upstream_ = std::make_unique<Process>(
        std::vector<std::string>{"ip", "netns", "exec", TwoHosts::kServer, "/usr/bin/python3",
                                 kHttpPeers, "server", std::to_string(kUpstreamPort), "--pidfile",
                                 dir_.file("upstream.pid"), "--ready", dir_.file("upstream.ready")},
        dir_.file("upstream.log"));
    ASSERT_TRUE(wait_until([&] { return std::filesystem::exists(dir_.file("upstream.ready")); }));
    server_ =
        std::make_unique<Process>(std::vector<std::string>{"ip", "netns", "exec", TwoHosts::kServer,
                                                           "nginx", "-c", dir_.file("nginx.conf")},
                                  dir_.file("nginx.log"));
    ASSERT_TRUE(wait_until([&] {
      return run("ip netns exec " + std::string(TwoHosts::kClient) +
                 " curl -sk -o /dev/null https://10.77.0.2:" + std::to_string(kHttpsPort) +
                 "/hello")
                 .exit_code == 0;
    })) << read_file(dir_.file("nginx.log"))
        << read_file(dir_.file("error.log"));
  }

  std::string config() const {
    return "snapshot_interval = 0.5\n[plugins.http]\n[plugins.l7]\ntls = true\n" +
           sink_config_json(dir_.file("events.jsonl")) +
           "[[sinks]]\ntype = \"prometheus\"\nlisten = \"127.0.0.1:" + std::to_string(kPromPort) +
           "\"\n";
  }

  // The exchanges of the connection from `client_port`, as `side` saw them.
  std::vector<Json> exchanges(const std::string& side, std::uint64_t client_port) const {
    std::vector<Json> out;
    for (const auto& e : events_of(read_json_lines(dir_.file("events.jsonl")), "http_exchange")) {
      const auto& f = e["fields"];
      if (f["side"].str() != side) continue;
      if ((side == "client" ? f["sport"].u64() : f["dport"].u64()) == client_port) out.push_back(e);
    }
    return out;
  }
  bool wait_for(std::uint64_t client_port, std::size_t count) const {
    return wait_until([&] {
      return exchanges("client", client_port).size() >= count &&
             exchanges("server", client_port).size() >= count;
    });
  }
  std::uint64_t server_pid() const { return std::stoull(read_file(dir_.file("nginx.pid"))); }

  struct Expected {
    std::string path;
    std::uint64_t status, response_bytes;
  };
  // Exactly `expected`, in order, from both sockets of the connection.
  void expect_exchanges(std::uint64_t client_port, std::uint64_t client_pid,
                        const std::string& client_comm, const std::vector<Expected>& expected,
                        bool tls) {
    ASSERT_TRUE(wait_for(client_port, expected.size()));
    for (const char* side : {"client", "server"}) {
      SCOPED_TRACE(side);
      const bool client = std::string(side) == "client";
      auto seen = exchanges(side, client_port);
      ASSERT_EQ(seen.size(), expected.size());
      for (std::size_t i = 0; i < seen.size(); ++i) {
        SCOPED_TRACE(expected[i].path);
        const auto& f = seen[i]["fields"];
        EXPECT_EQ(f["method"].str(), "GET");
        EXPECT_EQ(f["path"].str(), expected[i].path);
        EXPECT_EQ(f["status"].u64(), expected[i].status);
        EXPECT_EQ(f["response_bytes"].u64(), expected[i].response_bytes);
        EXPECT_EQ(f["outcome"].str(), "answered");
        EXPECT_EQ(f["host"].str(), "10.77.0.2:" + std::to_string(tls ? kHttpsPort : kHttpPort));
        EXPECT_EQ(f["tls"].boolean(), tls);
        EXPECT_GT(f["latency_us"].num(), 0);
        EXPECT_EQ(f["pid"].u64(), client ? client_pid : server_pid());
        EXPECT_EQ(f["comm"].str(), client ? client_comm : "nginx");
        EXPECT_EQ(f[client ? "dport" : "sport"].u64(), tls ? kHttpsPort : kHttpPort);
      }
    }
  }

  TempDir dir_;
  std::unique_ptr<TwoHosts> hosts_;
  std::unique_ptr<Process> upstream_;
  std::unique_ptr<Process> server_;
};

// "port status bytes" per URL, from one curl process and one connection.
std::vector<std::vector<std::string>> curl_lines(const std::string& output) {
  std::vector<std::vector<std::string>> lines;
  std::istringstream in(output);
  std::string a, b, c;
  while (in >> a >> b >> c) lines.push_back({a, b, c});
  return lines;
}

TEST_F(Tls, CurlAndPythonExchangesAreReadFromThePlaintextOnBothSides) {
  Netwatcher nw(dir_, config());
  const std::string base = "https://10.77.0.2:" + std::to_string(kHttpsPort);
  // curl: three requests on one keep-alive connection (SSL_read/SSL_write).
  // `sh -c 'echo $$; exec curl'` gives curl's own pid.
  auto curl = run("ip netns exec " + std::string(TwoHosts::kClient) +
                  " sh -c 'echo $$ 0 0; exec curl -sk --http1.1 -w \"%{local_port} "
                  "%{http_code} %{size_download}\\n\" -o /dev/null " +
                  base + "/hello -o /dev/null " + base + "/big -o /dev/null " + base + "/missing'");
  ASSERT_EQ(curl.exit_code, 0) << curl.output;
  auto lines = curl_lines(curl.output);
  ASSERT_EQ(lines.size(), 4u) << curl.output;
  const std::uint64_t curl_pid = std::stoull(lines[0][0]);
  const std::uint64_t curl_port = std::stoull(lines[1][0]);
  ASSERT_EQ(lines[3][0], lines[1][0]) << "curl did not keep the connection";
  ASSERT_EQ(lines[2][2], std::to_string(kBigBytes));
  const std::uint64_t not_found_bytes = std::stoull(lines[3][2]);
  expect_exchanges(
      curl_port, curl_pid, "curl",
      {{"/hello", 200, 3}, {"/big", 200, kBigBytes}, {"/missing", 404, not_found_bytes}}, true);

  // Python's ssl (SSL_read_ex/SSL_write_ex).
  auto python = run("ip netns exec " + std::string(TwoHosts::kClient) + " /usr/bin/python3 " +
                    kClient + " 10.77.0.2 " + std::to_string(kHttpsPort) + " /hello /big");
  ASSERT_EQ(python.exit_code, 0) << python.output;
  Json client = parse_json_lines(python.output).at(0);
  expect_exchanges(client["sport"].u64(), client["pid"].u64(), "python3",
                   {{"/hello", 200, 3}, {"/big", 200, kBigBytes}}, true);

  // A client that hangs up while nginx waits for its upstream: nginx drops
  // the request unanswered (499 in its log), so both sides report it closed.
  auto hangup = run("ip netns exec " + std::string(TwoHosts::kClient) + " /usr/bin/python3 " +
                    kClient + " 10.77.0.2 " + std::to_string(kHttpsPort) + " /slow --hangup");
  ASSERT_EQ(hangup.exit_code, 0) << hangup.output;
  const std::uint64_t hangup_port = parse_json_lines(hangup.output).at(0)["sport"].u64();
  ASSERT_TRUE(wait_for(hangup_port, 1));
  for (const char* side : {"client", "server"}) {
    SCOPED_TRACE(side);
    auto seen = exchanges(side, hangup_port);
    ASSERT_EQ(seen.size(), 1u);
    const auto& f = seen[0]["fields"];
    EXPECT_EQ(f["path"].str(), "/slow");
    EXPECT_EQ(f["outcome"].str(), "closed");
    EXPECT_FALSE(f.has("status"));
    EXPECT_TRUE(f["tls"].boolean());
  }

  // Cleartext to the same nginx: from the segments, tls = false, once.
  auto plain = run("ip netns exec " + std::string(TwoHosts::kClient) +
                   " sh -c 'echo $$ 0 0; exec curl -s --http1.1 -w \"%{local_port} %{http_code} "
                   "%{size_download}\\n\" -o /dev/null http://10.77.0.2:" +
                   std::to_string(kHttpPort) + "/hello'");
  ASSERT_EQ(plain.exit_code, 0) << plain.output;
  auto plain_lines = curl_lines(plain.output);
  ASSERT_EQ(plain_lines.size(), 2u) << plain.output;
  expect_exchanges(std::stoull(plain_lines[1][0]), std::stoull(plain_lines[0][0]), "curl",
                   {{"/hello", 200, 3}}, false);

  auto prom = scrape_until(kPromPort, [](const PromText& p) {
    return p.value("netwatcher_l7_tls_libraries").has_value();
  });
  // The system's libssl.so.3 at least (/usr/lib/... and /lib/... are one
  // inode, counted once); other copies on the machine count too.
  EXPECT_GE(prom.value("netwatcher_l7_tls_libraries").value_or(0), 1.0);
  EXPECT_EQ(prom.value("netwatcher_l7_tls_unmatched_total"), 0.0);
  ASSERT_EQ(nw.stop(), 0) << nw.log();
  // Still exactly once each, now that everything is written.
  EXPECT_EQ(exchanges("client", curl_port).size(), 3u);
  EXPECT_EQ(exchanges("server", curl_port).size(), 3u);
  EXPECT_EQ(exchanges("client", client["sport"].u64()).size(), 2u);
  EXPECT_EQ(exchanges("server", client["sport"].u64()).size(), 2u);
  EXPECT_EQ(exchanges("server", hangup_port).size(), 1u);
  EXPECT_NE(nw.log().find("plugin 'l7': uprobes in /usr/lib/x86_64-linux-gnu/libssl.so.3"),
            std::string::npos)
      << nw.log();
}

// A copy of libssl outside the system's directories, loaded by a process
// that starts after netwatcher: found when the process maps it.
TEST_F(Tls, ALibraryCopyLoadedAfterStartIsProbedWhenMapped) {
  const std::string lib = dir_.file("lib");
  std::filesystem::create_directories(lib);
  std::filesystem::copy_file("/usr/lib/x86_64-linux-gnu/libssl.so.3", lib + "/libssl.so.3");
  Netwatcher nw(dir_, config());
  const double libraries_before =
      scrape_until(
          kPromPort,
          [](const PromText& p) { return p.value("netwatcher_l7_tls_libraries").has_value(); })
          .value("netwatcher_l7_tls_libraries")
          .value_or(0);
  auto python = run("ip netns exec " + std::string(TwoHosts::kClient) +
                    " env LD_LIBRARY_PATH=" + lib + " /usr/bin/python3 " + kClient + " 10.77.0.2 " +
                    std::to_string(kHttpsPort) + " /hello --wait 1");
  ASSERT_EQ(python.exit_code, 0) << python.output;
  Json client = parse_json_lines(python.output).at(0);
  expect_exchanges(client["sport"].u64(), client["pid"].u64(), "python3", {{"/hello", 200, 3}},
                   true);
  auto prom = scrape_until(kPromPort, [&](const PromText& p) {
    return p.value("netwatcher_l7_tls_libraries") == libraries_before + 1;
  });
  EXPECT_EQ(prom.value("netwatcher_l7_tls_libraries"), libraries_before + 1);
  ASSERT_EQ(nw.stop(), 0) << nw.log();
  EXPECT_NE(nw.log().find("plugin 'l7': uprobes in " + lib + "/libssl.so.3"), std::string::npos)
      << nw.log();
}

// A container's library: a copy on a tmpfs mounted in another mount
// namespace, invisible from netwatcher's, reached through /proc/<pid>/root.
TEST_F(Tls, ALibraryOnlyInAnotherMountNamespaceIsProbedThroughItsRoot) {
  const std::string hidden = dir_.file("hidden");
  std::filesystem::create_directories(hidden);
  Netwatcher nw(dir_, config());
  auto python = run("ip netns exec " + std::string(TwoHosts::kClient) +
                    " unshare -m --propagation private sh -c 'mount -t tmpfs none " + hidden +
                    " && cp /usr/lib/x86_64-linux-gnu/libssl.so.3 " + hidden +
                    "/ && LD_LIBRARY_PATH=" + hidden + " exec /usr/bin/python3 " + kClient +
                    " 10.77.0.2 " + std::to_string(kHttpsPort) + " /hello --wait 1' 2>&1");
  ASSERT_EQ(python.exit_code, 0) << python.output;
  ASSERT_FALSE(std::filesystem::exists(hidden + "/libssl.so.3"));
  Json client = parse_json_lines(python.output).at(0);
  expect_exchanges(client["sport"].u64(), client["pid"].u64(), "python3", {{"/hello", 200, 3}},
                   true);
  ASSERT_EQ(nw.stop(), 0) << nw.log();
  EXPECT_NE(nw.log().find("plugin 'l7': uprobes in /proc/" + std::to_string(client["pid"].u64()) +
                          "/root" + hidden + "/libssl.so.3"),
            std::string::npos)
      << nw.log();
}

// Off by default: no uprobe, and the ciphertext is no protocol's.
TEST_F(Tls, OffByDefaultHttpsIsNotReported) {
  Netwatcher nw(dir_, "snapshot_interval = 0.5\n[plugins.http]\n" +
                          sink_config_json(dir_.file("events.jsonl")));
  auto curl = run("ip netns exec " + std::string(TwoHosts::kClient) +
                  " curl -sk --http1.1 -o /dev/null -w '%{local_port}' https://10.77.0.2:" +
                  std::to_string(kHttpsPort) + "/hello");
  ASSERT_EQ(curl.exit_code, 0) << curl.output;
  // A cleartext exchange after it shows the agent had time to see both.
  auto plain = run("ip netns exec " + std::string(TwoHosts::kClient) +
                   " curl -s --http1.1 -o /dev/null -w '%{local_port}' http://10.77.0.2:" +
                   std::to_string(kHttpPort) + "/hello");
  ASSERT_EQ(plain.exit_code, 0) << plain.output;
  ASSERT_TRUE(wait_for(std::stoull(plain.output), 1));
  EXPECT_TRUE(exchanges("client", std::stoull(curl.output)).empty());
  EXPECT_TRUE(exchanges("server", std::stoull(curl.output)).empty());
  ASSERT_EQ(nw.stop(), 0) << nw.log();
  EXPECT_EQ(nw.log().find("uprobes in"), std::string::npos) << nw.log();
}

}  // namespace
