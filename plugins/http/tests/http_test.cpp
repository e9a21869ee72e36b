// The http plugin against a real HTTP/1.1 server (python http.server) in one
// namespace and a keep-alive client in another: every exchange, from both
// sockets, with method, path, status, sizes and latency.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <sstream>
#include <stdexcept>
#include <thread>

#include "harness.hpp"

using namespace nwtest;

namespace {

constexpr int kPromPort = 41489;
constexpr int kHttpPort = 8080;
// NW_TEST_DIR: this file's folder (set by the test build for every test source).
const std::string kHttpPeers = std::string(NW_TEST_DIR) + "/http_peers.py";

class Http : public ::testing::Test {
 protected:
  void SetUp() override {
    NW_REQUIRE_ROOT();
    hosts_ = std::make_unique<TwoHosts>();
    std::string ready = dir_.file("http.ready");
    server_ = std::make_unique<Process>(
        std::vector<std::string>{"ip", "netns", "exec", TwoHosts::kServer, "/usr/bin/python3",
                                 kHttpPeers, "server", std::to_string(kHttpPort), "--pidfile",
                                 dir_.file("http.pid"), "--ready", ready},
        dir_.file("http-server.log"));
    for (int i = 0; i < 100 && !std::filesystem::exists(ready); ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    ASSERT_TRUE(std::filesystem::exists(ready)) << read_file(dir_.file("http-server.log"));
    server_pid_ = std::stoull(read_file(dir_.file("http.pid")));
  }
  std::string config(const std::string& keys = "", const std::string& interval = "0.5") {
    return "snapshot_interval = " + interval + "\n[plugins.http]\n" + keys +
           sink_config_json(dir_.file("events.jsonl")) +
           "[[sinks]]\ntype = \"prometheus\"\nlisten = \"127.0.0.1:" + std::to_string(kPromPort) +
           "\"\n";
  }
  std::vector<Json> exchanges(const std::string& side, std::uint64_t client_port) {
    std::vector<Json> out;
    for (const auto& e :
         events_of(parse_json_lines(read_file(dir_.file("events.jsonl"))), "http_exchange")) {
      const auto& f = e["fields"];
      const bool client = f["side"].str() == "client";
      if (f["side"].str() != side) continue;
      if ((client ? f["sport"].u64() : f["dport"].u64()) == client_port) out.push_back(e);
    }
    return out;
  }
  // Waits until `count` exchanges of the client port are reported from `side`.
  bool wait_for_exchanges(const std::string& side, std::uint64_t client_port, std::size_t count) {
    return wait_until([&] {
      std::size_t n = 0;
      for (const auto& e : events_of(read_json_lines(dir_.file("events.jsonl")), "http_exchange")) {
        const auto& f = e["fields"];
        n += f["side"].str() == side &&
             (side == "client" ? f["sport"].u64() : f["dport"].u64()) == client_port;
      }
      return n >= count;
    });
  }
  PromText metrics_when(const std::function<bool(const PromText&)>& ready) {
    return scrape_until(kPromPort, ready);
  }

  TempDir dir_;
  std::unique_ptr<TwoHosts> hosts_;
  std::unique_ptr<Process> server_;
  std::uint64_t server_pid_ = 0;
};

TEST_F(Http, KeepAliveExchangesAreReportedFromBothSockets) {
  Netwatcher nw(dir_, config(), {"-i"});
  auto result = run("ip netns exec nwt-cli /usr/bin/python3 " + kHttpPeers + " client 10.77.0.2 " +
                    std::to_string(kHttpPort));
  ASSERT_EQ(result.exit_code, 0) << result.output;
  Json client = parse_json_lines(result.output).at(0);
  EXPECT_TRUE(wait_for_exchanges("client", client["sport"].u64(), 5));
  EXPECT_TRUE(wait_for_exchanges("server", client["sport"].u64(), 5));
  auto prom = parse_prometheus(http_get(kPromPort, "/metrics"));
  ASSERT_EQ(nw.stop(), 0) << nw.log();

  struct Expected {
    const char* method;
    const char* path;
    std::uint64_t status, request_bytes, response_bytes;
  };
  const Expected expected[] = {{"GET", "/hello", 200, 0, 2},
                               {"POST", "/echo", 200, 1000, 1000},
                               {"GET", "/missing", 404, 0, 12},
                               {"GET", "/slow", 200, 0, 4},  // query string stripped
                               {"GET", "/hello", 200, 0, 2}};
  const std::uint64_t sport = client["sport"].u64();
  for (const char* side : {"client", "server"}) {
    SCOPED_TRACE(side);
    auto seen = exchanges(side, sport);
    ASSERT_EQ(seen.size(), 5u) << nw.log();
    for (std::size_t i = 0; i < seen.size(); ++i) {
      const auto& f = seen[i]["fields"];
      EXPECT_EQ(f["method"].str(), expected[i].method) << i;
      EXPECT_EQ(f["path"].str(), expected[i].path) << i;
      EXPECT_EQ(f["status"].u64(), expected[i].status) << i;
      EXPECT_EQ(f["outcome"].str(), "answered");
      EXPECT_EQ(f["host"].str(), "10.77.0.2:8080");
      EXPECT_EQ(f["request_bytes"].u64(), expected[i].request_bytes) << i;
      EXPECT_EQ(f["response_bytes"].u64(), expected[i].response_bytes) << i;
      EXPECT_EQ(f["comm"].str(), "python3");
      const bool client_side = std::string(side) == "client";
      EXPECT_EQ(f["pid"].u64(), client_side ? client["pid"].u64() : server_pid_);
      // Both ends are on this host: each event names the other one too.
      EXPECT_EQ(f["peer_pid"].u64(), client_side ? server_pid_ : client["pid"].u64());
      EXPECT_EQ(f["peer_comm"].str(), "python3");
      EXPECT_GT(f["latency_us"].num(), 0);
    }
    // The server sleeps 0.3 s before answering /slow.
    EXPECT_GE(seen[3]["fields"]["latency_us"].num(), 300000);
    EXPECT_LT(seen[0]["fields"]["latency_us"].num(), 300000);
    const auto& first = seen[0]["fields"];
    EXPECT_EQ(first["saddr"].str(), std::string(side) == "client" ? "10.77.0.1" : "10.77.0.2");
  }
  // The scrape itself is a GET answered 200 on this host: it may or may not
  // have been counted yet.
  auto requests = [&](const char* method, const char* status_class, const char* side) {
    return prom
        .value("netwatcher_http_requests_total",
               {{"method", method}, {"status_class", status_class}, {"side", side}})
        .value_or(0);
  };
  EXPECT_EQ(requests("POST", "2xx", "client"), 1);
  EXPECT_EQ(requests("GET", "4xx", "server"), 1);
  EXPECT_GE(requests("GET", "2xx", "client"), 3);
  EXPECT_LE(requests("GET", "2xx", "client"), 4);
  EXPECT_GE(prom.value("netwatcher_http_request_duration_seconds_count",
                       {{"method", "GET"}, {"side", "server"}})
                .value_or(0),
            4);
}

TEST_F(Http, ARequestLeftUnansweredIsReportedWhenItsConnectionCloses) {
  Netwatcher nw(dir_, config(), {"-i"});
  // Ask for the slow page and hang up before the answer.
  auto result =
      run("ip netns exec nwt-cli /usr/bin/python3 -c \"import socket,json\n"
          "s=socket.create_connection(('10.77.0.2', 8080))\n"
          "s.sendall(b'GET /slow HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n')\n"
          "print(json.dumps({'sport': s.getsockname()[1]}))\ns.close()\"");
  ASSERT_EQ(result.exit_code, 0) << result.output;
  const std::uint64_t sport = parse_json_lines(result.output).at(0)["sport"].u64();
  // Reported when the client's socket closes (the server answers into it later).
  EXPECT_TRUE(wait_for_exchanges("client", sport, 1));
  auto prom = metrics_when([](const PromText& m) {
    return m.value("netwatcher_http_requests_unanswered_total",
                   {{"outcome", "closed"}, {"side", "client"}})
               .value_or(0) >= 1;
  });
  ASSERT_EQ(nw.stop(), 0) << nw.log();

  auto seen = exchanges("client", sport);
  ASSERT_EQ(seen.size(), 1u) << nw.log();
  const auto& f = seen[0]["fields"];
  EXPECT_EQ(f["path"].str(), "/slow");
  EXPECT_EQ(f["outcome"].str(), "closed");
  EXPECT_FALSE(f.has("status"));
  EXPECT_FALSE(f.has("latency_us"));
  EXPECT_GE(prom.value("netwatcher_http_requests_unanswered_total",
                       {{"outcome", "closed"}, {"side", "client"}})
                .value_or(0),
            1);
}

TEST_F(Http, ARequestOverTheTimeoutIsReportedAsTimedOutAndItsLateAnswerCounted) {
  // Expiry runs every snapshot (0.1 s here); /slow answers after 0.3 s.
  Netwatcher nw(dir_, config("request_timeout = 0.1\n", "0.1"), {"-i"});
  auto result =
      run("ip netns exec nwt-cli /usr/bin/python3 -c \"import http.client,json\n"
          "c=http.client.HTTPConnection('10.77.0.2', 8080)\nc.request('GET','/slow')\n"
          "c.getresponse().read()\nprint(json.dumps({'sport': c.sock.getsockname()[1]}))\"");
  ASSERT_EQ(result.exit_code, 0) << result.output;
  const std::uint64_t sport = parse_json_lines(result.output).at(0)["sport"].u64();
  EXPECT_TRUE(wait_for_exchanges("client", sport, 1));
  auto prom = metrics_when([](const PromText& m) {
    return m.value("netwatcher_http_parse_errors_total", {{"kind", "orphan_response"}})
               .value_or(0) >= 1;
  });
  ASSERT_EQ(nw.stop(), 0) << nw.log();

  auto seen = exchanges("client", sport);
  ASSERT_EQ(seen.size(), 1u) << nw.log();
  EXPECT_EQ(seen[0]["fields"]["outcome"].str(), "timed_out");
  EXPECT_EQ(seen[0]["fields"]["path"].str(), "/slow");
  EXPECT_FALSE(seen[0]["fields"].has("status"));
  EXPECT_GE(prom.value("netwatcher_http_requests_unanswered_total",
                       {{"outcome", "timed_out"}, {"side", "client"}})
                .value_or(0),
            1);
  EXPECT_GE(
      prom.value("netwatcher_http_parse_errors_total", {{"kind", "orphan_response"}}).value_or(0),
      1)
      << "the answer came after its request was given up";
}

// Binary TCP traffic in the same run as one real HTTP exchange: the plugin
// is watching (it reports the exchange), and the other connections are no
// exchange and no parse error.
TEST_F(Http, OtherTcpTrafficIsNotMistakenForHttp) {
  Netwatcher nw(dir_, config(), {"-i"});
  TcpServer server(TwoHosts::kServer, {5000}, dir_);
  run_client(TwoHosts::kClient, "10.77.0.2", 5000, {5000, 70000});
  auto result =
      run("ip netns exec nwt-cli /usr/bin/python3 -c \"import http.client,json\n"
          "c=http.client.HTTPConnection('10.77.0.2', 8080)\nc.request('GET','/hello')\n"
          "c.getresponse().read()\nprint(json.dumps({'sport': c.sock.getsockname()[1]}))\"");
  ASSERT_EQ(result.exit_code, 0) << result.output;
  const std::uint64_t sport = parse_json_lines(result.output).at(0)["sport"].u64();
  // The TCP connections ended before the request was made.
  EXPECT_TRUE(wait_for_exchanges("server", sport, 1));
  EXPECT_TRUE(wait_for_exchanges("client", sport, 1));
  auto prom = parse_prometheus(http_get(kPromPort, "/metrics"));
  ASSERT_EQ(nw.stop(), 0) << nw.log();
  for (const char* side : {"client", "server"}) {
    auto seen = exchanges(side, sport);
    ASSERT_EQ(seen.size(), 1u) << side;
    EXPECT_EQ(seen[0]["fields"]["path"].str(), "/hello");
    EXPECT_EQ(seen[0]["fields"]["status"].u64(), 200u);
  }
  for (const auto& e :
       events_of(parse_json_lines(read_file(dir_.file("events.jsonl"))), "http_exchange")) {
    EXPECT_NE(e["fields"]["sport"].u64(), 5000u);
    EXPECT_NE(e["fields"]["dport"].u64(), 5000u);
  }
  for (const auto& sample : prom.samples) {
    if (sample.name == "netwatcher_http_parse_errors_total") {
      EXPECT_EQ(sample.value, 0) << sample.labels.at("kind");
    }
  }
}

// 20 connections held open at once, so 40 sockets (client and server),
// against a tracker of 16. They open one after the other and each is done
// with before the next: every new socket pushes out the least recently
// active one, never one still in use, so exactly 40 - 16 are evicted. The
// closes then free the table; the test's one scrape (loopback HTTP, tracked
// too) finds room. The anomaly detector, one series per socket, holds 8 of
// the 40 exchanges' series: 32 evicted (the scrape's exchange is judged only
// after its response, so after the metrics it carries).
TEST_F(Http, AFullConnectionTrackerAndAnomalyDetectorCountWhatTheyForgot) {
  constexpr int kConnections = 20, kCapacity = 16, kSeries = 8;
  Netwatcher nw(
      dir_,
      config("max_connections = " + std::to_string(kCapacity) +
             "\n[anomaly]\nper_connection = true\nmax_series = " + std::to_string(kSeries) + "\n"),
      {"-i", "-L"});
  auto result = run("ip netns exec nwt-cli /usr/bin/python3 " + kHttpPeers + " many 10.77.0.2 " +
                    std::to_string(kHttpPort) + " " + std::to_string(kConnections));
  ASSERT_EQ(result.exit_code, 0) << result.output;
  const Json statuses = parse_json_lines(result.output).at(0)["statuses"];
  EXPECT_EQ(std::get<std::shared_ptr<Json::Array>>(statuses.value)->size(),
            static_cast<std::size_t>(kConnections));
  // A snapshot counts the tables. Polling /metrics cannot tell when: every
  // scrape is an HTTP exchange the plugin tracks, which would move the
  // exact counts below.
  std::this_thread::sleep_for(std::chrono::milliseconds(1200));
  auto prom = parse_prometheus(http_get(kPromPort, "/metrics"));
  ASSERT_EQ(nw.stop(), 0) << nw.log();

  const std::map<std::string, std::string> table{{"plugin", "http"}, {"table", "connections"}};
  EXPECT_EQ(prom.value("netwatcher_table_capacity", table), kCapacity);
  EXPECT_EQ(prom.value("netwatcher_table_evictions_total", table), 2 * kConnections - kCapacity);
  EXPECT_EQ(prom.value("netwatcher_table_full_total", table), 0) << "the tracker evicts";
  EXPECT_LE(prom.value("netwatcher_table_entries", table).value_or(99), 2)
      << "closed connections left; at most the scrape's two sockets remain";
  const std::string log = nw.log();
  const std::string warning = "table 'connections' is full (16 entries)";
  ASSERT_NE(log.find(warning), std::string::npos) << log;
  EXPECT_EQ(log.find(warning, log.find(warning) + 1), std::string::npos) << "warned once";
  EXPECT_NE(log.find("raise plugins.http.max_connections"), std::string::npos);

  const std::map<std::string, std::string> series{{"plugin", "anomaly"}, {"table", "series"}};
  EXPECT_EQ(prom.value("netwatcher_table_capacity", series), kSeries);
  EXPECT_EQ(prom.value("netwatcher_table_entries", series), kSeries);
  EXPECT_EQ(prom.value("netwatcher_table_evictions_total", series), 2 * kConnections - kSeries);
  EXPECT_EQ(prom.value("netwatcher_table_full_total", series), 0);
  EXPECT_NE(log.find("table 'series' is full (8 entries)"), std::string::npos) << log;
  EXPECT_NE(log.find("raise anomaly.max_series"), std::string::npos);
}

}  // namespace

// curl over IPv6 with the query kept, and per-path series bounded by
// max_paths: two paths get their own series, the third counts as "other"
// and as a refusal of the paths table.
// --raddr, applied by the shared capture in the kernel: of one GET over
// IPv4 and one over IPv6, only the IPv4 client's socket (remote 10.77.0.2)
// reports, in events and in metrics.
TEST_F(Http, AddressFilterKeepsOnlySocketsWithThatRemoteAddress) {
  Netwatcher nw(dir_, config(), {"--raddr", "10.77.0.2/32"});
  auto get = [&](const std::string& host) {
    auto curl = run("ip netns exec " + std::string(TwoHosts::kClient) +
                    " curl -sS -o /dev/null -w '%{local_port}' 'http://" + host + ":" +
                    std::to_string(kHttpPort) + "/hello'");
    EXPECT_EQ(curl.exit_code, 0) << curl.output;
    return std::stoull(curl.output);
  };
  const std::uint64_t v4_port = get("10.77.0.2");
  const std::uint64_t v6_port = get("[fd77::2]");
  EXPECT_TRUE(wait_for_exchanges("client", v4_port, 1));
  auto prom = metrics_when([](const PromText& m) {
    return m.value("netwatcher_http_requests_total",
                   {{"method", "GET"}, {"status_class", "2xx"}, {"side", "client"}})
               .value_or(0) >= 1;
  });
  ASSERT_EQ(nw.stop(), 0) << nw.log();
  EXPECT_EQ(exchanges("client", v4_port).size(), 1u);
  EXPECT_TRUE(exchanges("server", v4_port).empty());
  EXPECT_TRUE(exchanges("client", v6_port).empty());
  EXPECT_TRUE(exchanges("server", v6_port).empty());
  EXPECT_EQ(
      events_of(parse_json_lines(read_file(dir_.file("events.jsonl"))), "http_exchange").size(),
      1u);
  EXPECT_EQ(prom.value("netwatcher_http_requests_total",
                       {{"method", "GET"}, {"status_class", "2xx"}, {"side", "client"}}),
            1);
  EXPECT_FALSE(prom.value("netwatcher_http_requests_total",
                          {{"method", "GET"}, {"status_class", "2xx"}, {"side", "server"}})
                   .has_value());
}

TEST_F(Http, Ipv6QueriesKeptAndPathSeriesBoundedByMaxPaths) {
  Netwatcher nw(dir_, config("strip_query = false\npath_labels = true\nmax_paths = 2\n"));
  const std::string base = "http://[fd77::2]:" + std::to_string(kHttpPort);
  // One connection: curl reuses it for every URL it is given (each with
  // its own -o, which applies to one URL only).
  std::string command = "ip netns exec " + std::string(TwoHosts::kClient) +
                        " curl -sS -w '%{local_port} %{http_code}\\n'";
  for (const char* path : {"/hello?a=1&b=2", "/missing", "/nothing?x", "/hello?a=1&b=2"})
    command += " -o /dev/null '" + base + path + "'";
  auto curl = run(command);
  ASSERT_EQ(curl.exit_code, 0) << curl.output;
  std::istringstream lines(curl.output);
  std::uint64_t sport = 0;
  std::string status;
  std::vector<std::string> statuses;
  while (lines >> sport >> status) statuses.push_back(status);
  ASSERT_EQ(statuses, (std::vector<std::string>{"200", "404", "404", "200"}));
  EXPECT_TRUE(wait_for_exchanges("server", sport, 4));
  auto prom = metrics_when([](const PromText& m) {
    // value() matches the whole label set.
    return m
        .value("netwatcher_http_path_requests_total",
               {{"method", "GET"}, {"path", "other"}, {"status_class", "4xx"}, {"side", "server"}})
        .has_value();
  });
  ASSERT_EQ(nw.stop(), 0) << nw.log();

  for (const char* side : {"client", "server"}) {
    SCOPED_TRACE(side);
    auto seen = exchanges(side, sport);
    ASSERT_EQ(seen.size(), 4u);
    const std::vector<std::string> paths = {"/hello?a=1&b=2", "/missing", "/nothing?x",
                                            "/hello?a=1&b=2"};
    for (std::size_t i = 0; i < seen.size(); ++i) {
      const auto& f = seen[i]["fields"];
      EXPECT_EQ(f["path"].str(), paths[i]) << "strip_query = false keeps the query";
      EXPECT_EQ(f["family"].str(), "ipv6");
      EXPECT_EQ(f[std::string(side) == "client" ? "daddr" : "saddr"].str(), "fd77::2");
      EXPECT_EQ(f["host"].str(), "[fd77::2]:8080");
    }
  }
  auto path_count = [&](const std::string& path, const std::string& status_class) {
    return prom
        .value(
            "netwatcher_http_path_requests_total",
            {{"method", "GET"}, {"path", path}, {"status_class", status_class}, {"side", "server"}})
        .value_or(0);
  };
  EXPECT_EQ(path_count("/hello?a=1&b=2", "2xx"), 2);
  EXPECT_EQ(path_count("/missing", "4xx"), 1);
  EXPECT_EQ(path_count("other", "4xx"), 1) << "the third path found the table full";
  EXPECT_EQ(path_count("/nothing?x", "4xx"), 0);
  const std::map<std::string, std::string> paths_table{{"plugin", "http"}, {"table", "paths"}};
  EXPECT_EQ(prom.value("netwatcher_table_capacity", paths_table), 2);
  EXPECT_GE(prom.value("netwatcher_table_full_total", paths_table).value_or(0), 1);
}

namespace {

// http_peers.py `mode` with `args` from the client namespace; its JSON line.
Json run_http_peer(const std::string& mode, const std::vector<std::string>& args) {
  std::string command = "ip netns exec " + std::string(TwoHosts::kClient) + " /usr/bin/python3 " +
                        kHttpPeers + " " + mode + " 10.77.0.2 " + std::to_string(kHttpPort);
  for (const auto& arg : args) command += " '" + arg + "'";
  auto result = run(command);
  if (result.exit_code != 0) throw std::runtime_error(command + ": " + result.output);
  return parse_json_lines(result.output).at(0);
}

double parse_errors(const PromText& prom, const std::string& kind) {
  return prom.value("netwatcher_http_parse_errors_total", {{"kind", kind}}).value_or(-1);
}

std::vector<std::uint64_t> sports_of(const Json& peer) {
  std::vector<std::uint64_t> out;
  for (const auto& port : *std::get<std::shared_ptr<Json::Array>>(peer["sports"].value))
    out.push_back(port.u64());
  return out;
}

}  // namespace

// POST /echo with a 300-byte body and GET /hello pipelined in one segment:
// the capture (256 bytes) ends inside the body, so the GET is never seen.
// Each socket's request stream has lost its place: counted once as lost_sync
// when the next request arrives, which is parsed again (re-synchronised on
// the next segment that parses); the answer to the unseen GET has no request
// to pair with (orphan_response). Exactly two exchanges per socket.
TEST_F(Http, ARequestTheCaptureCouldNotSeeLosesSyncAndTheNextRequestIsParsedAgain) {
  Netwatcher nw(dir_, config("capture_bytes = 256\n"), {"-i"});
  const Json peer = run_http_peer("pipeline", {});
  const std::uint64_t sport = peer["sport"].u64();
  EXPECT_TRUE(wait_for_exchanges("client", sport, 2));
  EXPECT_TRUE(wait_for_exchanges("server", sport, 2));
  // One scrape, after the last exchange: every count above is in by then.
  auto prom = parse_prometheus(http_get(kPromPort, "/metrics"));
  ASSERT_EQ(nw.stop(), 0) << nw.log();

  for (const char* side : {"client", "server"}) {
    SCOPED_TRACE(side);
    auto seen = exchanges(side, sport);
    ASSERT_EQ(seen.size(), 2u) << nw.log();
    const auto& post = seen[0]["fields"];
    EXPECT_EQ(post["method"].str(), "POST");
    EXPECT_EQ(post["path"].str(), "/echo");
    EXPECT_EQ(post["status"].u64(), 200u);
    EXPECT_EQ(post["request_bytes"].u64(), 300u);
    EXPECT_EQ(post["response_bytes"].u64(), 300u);
    const auto& next = seen[1]["fields"];
    EXPECT_EQ(next["method"].str(), "GET");
    EXPECT_EQ(next["path"].str(), "/hello");
    EXPECT_EQ(next["outcome"].str(), "answered");
    EXPECT_EQ(next["status"].u64(), 200u);
    EXPECT_EQ(next["host"].str(), "10.77.0.2:8080");
    EXPECT_EQ(next["response_bytes"].u64(), 2u);
  }
  EXPECT_EQ(parse_errors(prom, "lost_sync"), 2) << "once per socket";
  EXPECT_EQ(parse_errors(prom, "orphan_response"), 2) << "the unseen GET's answer, per socket";
  EXPECT_EQ(parse_errors(prom, "invalid_request"), 0);
  EXPECT_EQ(parse_errors(prom, "invalid_response"), 0);
}

// A response body longer than its Content-Length says (2, then 11 bytes
// more in the same segment), on a connection whose response stream is in
// sync (a GET /hello before it): where the next response should start the
// bytes do not parse, counted once per socket as invalid_response, and the
// stream is re-synchronised on the next segment that parses: the next
// exchange on the connection is whole again.
TEST_F(Http, ABodyLongerThanItsContentLengthIsAnInvalidResponseAndTheNextIsParsedAgain) {
  Netwatcher nw(dir_, config(), {"-i"});
  const Json peer = run_http_peer("overlong", {"--after-hello"});
  const std::uint64_t sport = peer["sport"].u64();
  EXPECT_TRUE(wait_for_exchanges("client", sport, 3));
  EXPECT_TRUE(wait_for_exchanges("server", sport, 3));
  auto prom = parse_prometheus(http_get(kPromPort, "/metrics"));
  ASSERT_EQ(nw.stop(), 0) << nw.log();

  for (const char* side : {"client", "server"}) {
    SCOPED_TRACE(side);
    auto seen = exchanges(side, sport);
    ASSERT_EQ(seen.size(), 3u) << nw.log();
    const std::vector<std::string> paths = {"/hello", "/overlong", "/hello"};
    for (std::size_t i = 0; i < seen.size(); ++i) {
      const auto& f = seen[i]["fields"];
      EXPECT_EQ(f["path"].str(), paths[i]) << i;
      EXPECT_EQ(f["outcome"].str(), "answered") << i;
      EXPECT_EQ(f["status"].u64(), 200u) << i;
      EXPECT_EQ(f["response_bytes"].u64(), 2u) << i << ": what Content-Length says";
    }
  }
  EXPECT_EQ(parse_errors(prom, "invalid_response"), 2) << "once per socket";
  EXPECT_EQ(parse_errors(prom, "orphan_response"), 0);
  EXPECT_EQ(parse_errors(prom, "lost_sync"), 0);
  EXPECT_EQ(parse_errors(prom, "invalid_request"), 0);
}

// The same overlong response as the connection's first: the same bytes at the
// same place should count the same.
TEST_F(Http, AnOverlongFirstResponseCountsAsInvalidResponseToo) {
  Netwatcher nw(dir_, config(), {"-i"});
  const Json peer = run_http_peer("overlong", {});
  const std::uint64_t sport = peer["sport"].u64();
  EXPECT_TRUE(wait_for_exchanges("client", sport, 2));
  EXPECT_TRUE(wait_for_exchanges("server", sport, 2));
  auto prom = parse_prometheus(http_get(kPromPort, "/metrics"));
  ASSERT_EQ(nw.stop(), 0) << nw.log();
  for (const char* side : {"client", "server"}) {
    SCOPED_TRACE(side);
    auto seen = exchanges(side, sport);
    ASSERT_EQ(seen.size(), 2u) << nw.log();
    EXPECT_EQ(seen[0]["fields"]["path"].str(), "/overlong");
    EXPECT_EQ(seen[1]["fields"]["path"].str(), "/hello");
    EXPECT_EQ(seen[1]["fields"]["response_bytes"].u64(), 2u);
  }
  EXPECT_EQ(parse_errors(prom, "invalid_response"), 2) << "once per socket";
}

// A head longer than capture_bytes: with 32 bytes only the request line
// ("GET /hello HTTP/1.1\r\n", 21 bytes) is captured, and it is still reported
// with its method, path and status; the Host header and the sizes are beyond
// the capture and left out. With the default (2048) the same requests are
// whole. Both runs share the namespaces and the server.
TEST_F(Http, AHeadLongerThanCaptureBytesStillGivesItsRequestLine) {
  for (const bool small : {true, false}) {
    SCOPED_TRACE(small ? "capture_bytes = 32" : "default capture_bytes");
    // A second netwatcher in the same folder: without its predecessor's log,
    // whose "running" line would end the wait for its own start at once.
    std::filesystem::remove(dir_.file("events.jsonl"));
    std::filesystem::remove(dir_.file("netwatcher.log"));
    Netwatcher nw(dir_, config(small ? "capture_bytes = 32\n" : ""), {"-i"});
    // About 190 bytes of head per request (an X-Padding header of 100).
    const Json peer = run_http_peer("requests", {"--pad", "100", "0:/hello*2"});
    const std::uint64_t sport = sports_of(peer).at(0);
    EXPECT_TRUE(wait_for_exchanges("client", sport, 2));
    EXPECT_TRUE(wait_for_exchanges("server", sport, 2));
    auto prom = parse_prometheus(http_get(kPromPort, "/metrics"));
    ASSERT_EQ(nw.stop(), 0) << nw.log();
    for (const char* side : {"client", "server"}) {
      SCOPED_TRACE(side);
      auto seen = exchanges(side, sport);
      ASSERT_EQ(seen.size(), 2u) << nw.log();
      for (const auto& e : seen) {
        const auto& f = e["fields"];
        EXPECT_EQ(f["method"].str(), "GET");
        EXPECT_EQ(f["path"].str(), "/hello");
        EXPECT_EQ(f["outcome"].str(), "answered");
        EXPECT_EQ(f["status"].u64(), 200u);
        if (small) {
          EXPECT_EQ(f["host"].str(), "") << "the Host header is beyond the capture";
          EXPECT_FALSE(f.has("request_bytes"));
          EXPECT_FALSE(f.has("response_bytes"));
        } else {
          EXPECT_EQ(f["host"].str(), "10.77.0.2:8080");
          EXPECT_EQ(f["request_bytes"].u64(), 0u);
          EXPECT_EQ(f["response_bytes"].u64(), 2u);
        }
      }
    }
    for (const char* kind : {"lost_sync", "orphan_response", "invalid_request", "invalid_response"})
      EXPECT_EQ(parse_errors(prom, kind), 0) << kind;
  }
}

// Latency anomalies on http_exchange.latency_us, end to end: 20 fast GETs,
// one /slow (0.3 s), five fast again, on one connection. One series per side
// (no per_connection): after the warm-up of 10 the slow exchange is flagged
// from both sockets, and the fast ones are not (a multiplier of 20 leaves room
// for a loaded machine's jitter: at most one of them may be flagged per side).
// The counter counts exactly the flagged events.
TEST_F(Http, TheOneSlowExchangeAmongFastOnesIsFlaggedAsALatencyAnomaly) {
  Netwatcher nw(dir_, config("[anomaly]\nwarmup = 10\nmultiplier = 20\n"), {"-i", "-L"});
  const Json peer = run_http_peer("requests", {"0:/hello*20", "0:/slow", "0:/hello*5"});
  const std::uint64_t sport = sports_of(peer).at(0);
  EXPECT_TRUE(wait_for_exchanges("client", sport, 26));
  EXPECT_TRUE(wait_for_exchanges("server", sport, 26));
  // The only scrape: its own exchange is judged after it answered.
  auto prom = parse_prometheus(http_get(kPromPort, "/metrics"));
  ASSERT_EQ(nw.stop(), 0) << nw.log();

  double flagged = 0;
  for (const char* side : {"client", "server"}) {
    SCOPED_TRACE(side);
    auto seen = exchanges(side, sport);
    ASSERT_EQ(seen.size(), 26u) << nw.log();
    int fast_flagged = 0;
    for (std::size_t i = 0; i < seen.size(); ++i) {
      const auto& f = seen[i]["fields"];
      ASSERT_TRUE(f.has("anomaly")) << i;
      const bool anomaly = f["anomaly"].boolean();
      flagged += anomaly;
      if (i < 10) {
        EXPECT_FALSE(anomaly) << "warm-up, exchange " << i;
      }
      if (i == 20) {
        EXPECT_EQ(f["path"].str(), "/slow");
        EXPECT_GE(f["latency_us"].num(), 300000);
        EXPECT_TRUE(anomaly) << "the slow exchange";
      } else {
        EXPECT_EQ(f["path"].str(), "/hello");
        fast_flagged += anomaly;
      }
    }
    EXPECT_LE(fast_flagged, 1) << "the steady part";
  }
  EXPECT_EQ(prom.value("netwatcher_latency_anomalies_total",
                       {{"plugin", "http"}, {"field", "latency_us"}}),
            flagged);
  EXPECT_NE(nw.log().find("latency anomaly: http.http_exchange latency_us"), std::string::npos)
      << nw.log();
}

// [anomaly] per_connection: each socket is its own series. Connection 0
// waits 40 ms per request (12 of them), then connection 1 answers 20 at once;
// then each gets one more 40 ms request, the slow connection first. 40 ms is
// normal for connection 0 and not flagged there, and far over connection 1's
// baseline: flagged there (from both sockets of each). With one series per
// side it is the other way round: connection 0's last would be judged
// against a baseline of mostly fast exchanges (flagged), and connection 1's
// against one that connection 0's last has just raised (not flagged).
TEST_F(Http, PerConnectionAnomaliesJudgeEachConnectionAgainstItsOwnBaseline) {
  Netwatcher nw(dir_, config("[anomaly]\nper_connection = true\nwarmup = 10\nmultiplier = 10\n"),
                {"-i", "-L"});
  const Json peer = run_http_peer(
      "requests", {"0:/wait?ms=40*12", "1:/hello*20", "0:/wait?ms=40", "1:/wait?ms=40"});
  const auto sports = sports_of(peer);
  ASSERT_EQ(sports.size(), 2u);
  for (const char* side : {"client", "server"})
    for (std::size_t c = 0; c < 2; ++c)
      EXPECT_TRUE(wait_for_exchanges(side, sports[c], c ? 21 : 13));
  auto prom = parse_prometheus(http_get(kPromPort, "/metrics"));
  ASSERT_EQ(nw.stop(), 0) << nw.log();

  double flagged = 0;
  for (const char* side : {"client", "server"}) {
    SCOPED_TRACE(side);
    auto slow = exchanges(side, sports[0]);
    auto fast = exchanges(side, sports[1]);
    ASSERT_EQ(slow.size(), 13u);
    ASSERT_EQ(fast.size(), 21u);
    for (const auto* list : {&slow, &fast})
      for (const auto& e : *list) flagged += e["fields"]["anomaly"].boolean();
    const auto& slow_last = slow.back()["fields"];
    const auto& fast_last = fast.back()["fields"];
    EXPECT_EQ(slow_last["path"].str(), "/wait");
    EXPECT_EQ(fast_last["path"].str(), "/wait");
    EXPECT_GE(slow_last["latency_us"].num(), 40000);
    EXPECT_GE(fast_last["latency_us"].num(), 40000);
    EXPECT_FALSE(slow_last["anomaly"].boolean()) << "40 ms is the slow connection's normal";
    EXPECT_TRUE(fast_last["anomaly"].boolean())
        << "40 ms is far over the fast connection's baseline";
    EXPECT_NE(slow_last["sock"].u64(), fast_last["sock"].u64());
  }
  EXPECT_EQ(prom.value("netwatcher_latency_anomalies_total",
                       {{"plugin", "http"}, {"field", "latency_us"}}),
            flagged);
}

// The README's own lost_sync case: a request body larger than one segment,
// sent chunked and not held whole in the capture (three 300-byte chunks,
// each in its own segment), "leaves the stream unsynchronised until the next
// request start (counted as lost_sync)". The next request on the connection
// is parsed again.
TEST_F(Http, AChunkedRequestBodyOverSeveralSegmentsCountsAsLostSyncUntilTheNextRequest) {
  Netwatcher nw(dir_, config(), {"-i"});
  const Json peer = run_http_peer("chunked", {});
  const std::uint64_t sport = peer["sport"].u64();
  EXPECT_TRUE(wait_for_exchanges("client", sport, 2));
  EXPECT_TRUE(wait_for_exchanges("server", sport, 2));
  auto prom = parse_prometheus(http_get(kPromPort, "/metrics"));
  ASSERT_EQ(nw.stop(), 0) << nw.log();

  for (const char* side : {"client", "server"}) {
    SCOPED_TRACE(side);
    auto seen = exchanges(side, sport);
    ASSERT_EQ(seen.size(), 2u) << nw.log();
    const auto& post = seen[0]["fields"];
    EXPECT_EQ(post["method"].str(), "POST");
    EXPECT_EQ(post["path"].str(), "/echo");
    EXPECT_EQ(post["status"].u64(), 200u);
    EXPECT_FALSE(post.has("request_bytes")) << "the chunked body was not held whole";
    EXPECT_EQ(post["response_bytes"].u64(), 900u);
    const auto& next = seen[1]["fields"];
    EXPECT_EQ(next["method"].str(), "GET");
    EXPECT_EQ(next["path"].str(), "/hello");
    EXPECT_EQ(next["status"].u64(), 200u);
    EXPECT_EQ(next["response_bytes"].u64(), 2u);
  }
  EXPECT_EQ(parse_errors(prom, "lost_sync"), 2) << "once per socket, as the README says";
  EXPECT_EQ(parse_errors(prom, "invalid_request"), 0);
  EXPECT_EQ(parse_errors(prom, "orphan_response"), 0);
}
