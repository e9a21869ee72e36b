// The dns plugin against a real resolver (dnsmasq, with local records) in one
// namespace and real clients in another (dig, and the C library's resolver
// through getent): every query once per local socket, with exact names,
// types, rcodes and answers, over UDP and TCP, and metrics that match.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <thread>

#include "harness.hpp"

using namespace nwtest;

namespace {

constexpr int kPromPort = 41478;
constexpr const char* kResolver = "10.77.0.2";
constexpr int kOtherPort = 5300;   // a second dnsmasq: DNS is found by content, not port
constexpr int kSilentPort = 5301;  // a server that reads queries and never answers

class Dns : public ::testing::Test {
 protected:
  void SetUp() override {
    NW_REQUIRE_ROOT();
    hosts_ = std::make_unique<TwoHosts>();
    write_file(dir_.file("hosts"), "10.77.0.10 web.test\n");
    // A TXT record too big for a 512-byte UDP answer: without EDNS the
    // client gets TC and retries over TCP.
    const std::string chunk(200, 'x');
    for (int port : {53, kOtherPort}) {
      const std::string tag = std::to_string(port);
      resolvers_.push_back(std::make_unique<Process>(
          std::vector<std::string>{
              "ip", "netns", "exec", TwoHosts::kServer, "dnsmasq", "--no-daemon", "--no-resolv",
              "--no-hosts", "--user=root", "--local=/test/", "--addn-hosts=" + dir_.file("hosts"),
              "--listen-address=" + std::string(kResolver), "--bind-interfaces", "--port=" + tag,
              "--cname=www.test,alias.test", "--cname=alias.test,web.test",
              "--host-record=v6.test,fd77::10",
              "--txt-record=big.test," + chunk + "," + chunk + "," + chunk, "--log-facility=-"},
          dir_.file("dnsmasq" + tag + ".log")));
    }
    silent_ = std::make_unique<Process>(
        std::vector<std::string>{"ip", "netns", "exec", TwoHosts::kServer, "python3", "-c",
                                 "import socket\n"
                                 "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
                                 "s.bind(('" +
                                     std::string(kResolver) + "', " + std::to_string(kSilentPort) +
                                     "))\n"
                                     "while True: s.recv(4096)\n"},
        dir_.file("silent.log"));
    for (int port : {53, kOtherPort})
      ASSERT_TRUE(wait_until([&] {
        return dig("web.test A -p " + std::to_string(port) + " +short").output == "10.77.0.10\n";
      })) << read_file(dir_.file("dnsmasq53.log"));
    ASSERT_TRUE(wait_until([&] {
      return run("ip netns exec " + std::string(TwoHosts::kServer) +
                 " ss -Huln sport = :" + std::to_string(kSilentPort))
                 .output.find(std::to_string(kSilentPort)) != std::string::npos;
    }));
    // `ip netns exec` execs dnsmasq, which (--no-daemon) stays that process.
    dnsmasq_pid_ = static_cast<std::uint64_t>(resolvers_.front()->pid());
  }

  void TearDown() override { std::filesystem::remove_all(kNetnsEtc); }

  CommandResult dig(const std::string& args) {
    return run("ip netns exec " + std::string(TwoHosts::kClient) + " dig @" + kResolver +
               " +tries=1 +time=2 " + args + " 2>&1");
  }

  std::string config(const std::string& keys = "") {
    return "snapshot_interval = 0.2\n[plugins.dns]\nquery_timeout = 1.0\n" + keys +
           sink_config_json(dir_.file("events.jsonl")) +
           "[[sinks]]\ntype = \"prometheus\"\nlisten = \"127.0.0.1:" + std::to_string(kPromPort) +
           "\"\n";
  }

  std::vector<Json> queries() {
    return events_of(read_json_lines(dir_.file("events.jsonl")), "dns_query");
  }
  // Waits until `count` queries match `pred`.
  bool wait_for(std::size_t count, const std::function<bool(const Json&)>& pred,
                std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
    return wait_until(
        [&] {
          std::size_t n = 0;
          for (const auto& e : queries()) n += pred(e["fields"]);
          return n >= count;
        },
        timeout);
  }
  static std::function<bool(const Json&)> named(const std::string& qname, const std::string& qtype,
                                                const std::string& transport = "udp") {
    return [=](const Json& f) {
      return f["qname"].str() == qname && f["qtype"].str() == qtype &&
             f["transport"].str() == transport;
    };
  }

  static constexpr const char* kNetnsEtc = "/etc/netns/nwt-cli";
  TempDir dir_;
  std::unique_ptr<TwoHosts> hosts_;
  std::vector<std::unique_ptr<Process>> resolvers_;
  std::unique_ptr<Process> silent_;
  std::uint64_t dnsmasq_pid_ = 0;
};

// What dig and getent asked, each once from the client's socket and once
// from the resolver's, with the values the resolver answered.
TEST_F(Dns, EveryQueryOncePerSocketWithNamesTypesRcodesAndAnswers) {
  // The C library's resolver in the client namespace asks the test resolver.
  std::filesystem::create_directories(kNetnsEtc);
  write_file(std::string(kNetnsEtc) + "/resolv.conf",
             "nameserver " + std::string(kResolver) + "\noptions attempts:1 timeout:2\n");
  Netwatcher nw(dir_, config("name_labels = true\nmax_names = 3\n"));
  ASSERT_TRUE(wait_until([&] { return std::filesystem::exists(dir_.file("events.jsonl")); }));

  struct Asked {
    std::string args, qname, qtype, transport, rcode, answers;
    std::uint64_t answer_count;
    int port = 53;
  };
  const std::vector<Asked> asked = {
      {"web.test A", "web.test", "A", "udp", "NOERROR", "10.77.0.10", 1},
      {"v6.test AAAA", "v6.test", "AAAA", "udp", "NOERROR", "fd77::10", 1},
      {"www.test A", "www.test", "A", "udp", "NOERROR", "alias.test,web.test,10.77.0.10", 3},
      {"nope.test A", "nope.test", "A", "udp", "NXDOMAIN", "", 0},
      {"+tcp web.test A", "web.test", "A", "tcp", "NOERROR", "10.77.0.10", 1},
      {"-p 5300 v6.test AAAA", "v6.test", "AAAA", "udp", "NOERROR", "fd77::10", 1, kOtherPort},
  };
  std::map<std::string, double> wall_us;      // each client's own time, an upper bound
  std::map<std::string, bool> authoritative;  // as dig printed the header's flags
  for (const auto& a : asked) {
    const auto began = std::chrono::steady_clock::now();
    auto out = dig(a.args);
    wall_us[a.args] =
        std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - began).count();
    ASSERT_EQ(out.exit_code, 0) << out.output;
    ASSERT_NE(out.output.find("status: " + a.rcode), std::string::npos) << out.output;
    const auto flags = out.output.find(";; flags:");
    ASSERT_NE(flags, std::string::npos) << out.output;
    const std::string line = out.output.substr(flags, out.output.find(';', flags + 9) - flags);
    authoritative[a.args] = line.find(" aa") != std::string::npos;
  }
  // Three queries on one TCP connection (RFC 7766).
  auto kept = dig("+tcp +keepopen web.test A www.test A v6.test AAAA");
  ASSERT_EQ(kept.exit_code, 0) << kept.output;
  // Too big for UDP without EDNS: TC, and dig asks again over TCP.
  auto big = dig("+noedns big.test TXT");
  ASSERT_EQ(big.exit_code, 0) << big.output;
  ASSERT_NE(big.output.find("Truncated, retrying in TCP mode"), std::string::npos) << big.output;
  // The C library: A and AAAA for one name.
  auto getent = run("ip netns exec " + std::string(TwoHosts::kClient) + " getent ahosts web.test");
  ASSERT_EQ(getent.exit_code, 0) << getent.output;
  ASSERT_NE(getent.output.find("10.77.0.10"), std::string::npos) << getent.output;

  ASSERT_TRUE(wait_for(2, named("big.test", "TXT", "tcp"))) << nw.log();
  ASSERT_TRUE(wait_for(2, [](const Json& f) { return f["comm"].str() == "getent"; })) << nw.log();
  auto prom = scrape_until(kPromPort, [](const PromText& m) {
    return m.value("netwatcher_dns_requests_total",
                   {{"qtype", "TXT"}, {"rcode", "NOERROR"}, {"side", "server"}})
               .value_or(0) >= 2;
  });
  ASSERT_EQ(nw.stop(), 0) << nw.log();
  const auto all = queries();

  auto matching = [&](const std::string& side, const std::function<bool(const Json&)>& pred) {
    std::vector<Json> out;
    for (const auto& e : all)
      if (e["fields"]["side"].str() == side && pred(e["fields"])) out.push_back(e["fields"]);
    return out;
  };
  // The server's event of a client's query: same id, and its remote port is
  // the client's.
  auto served = [&](const Json& client) {
    return matching("server", [&](const Json& f) {
      return f["id"].u64() == client["id"].u64() && f["dport"].u64() == client["sport"].u64() &&
             f["transport"].str() == client["transport"].str();
    });
  };
  for (const auto& a : asked) {
    SCOPED_TRACE(a.args);
    auto client = matching("client", [&](const Json& f) {
      return named(a.qname, a.qtype, a.transport)(f) &&
             f["dport"].u64() == static_cast<std::uint64_t>(a.port) && f["comm"].str() != "getent";
    });
    // The keep-open run asks web.test A over TCP again, on another connection.
    if (a.args == "+tcp web.test A") {
      std::map<std::uint64_t, int> per_port;
      for (const auto& f : matching("client", [](const Json& f) {
             return f["transport"].str() == "tcp" && f["qname"].str() != "big.test";
           }))
        ++per_port[f["sport"].u64()];
      std::erase_if(client, [&](const Json& f) { return per_port[f["sport"].u64()] != 1; });
    }
    ASSERT_EQ(client.size(), 1u);
    auto server = served(client[0]);
    ASSERT_EQ(server.size(), 1u);
    EXPECT_EQ(server[0]["sport"].u64(), static_cast<std::uint64_t>(a.port));
    for (const Json* f : {&client[0], &server[0]}) {
      EXPECT_EQ((*f)["rcode"].str(), a.rcode);
      EXPECT_EQ((*f)["answers"].str(), a.answers);
      EXPECT_EQ((*f)["answer_count"].u64(), a.answer_count);
      EXPECT_EQ((*f)["outcome"].str(), "answered");
      EXPECT_EQ((*f)["qclass"].str(), "IN");
      EXPECT_EQ((*f)["opcode"].str(), "QUERY");
      EXPECT_TRUE((*f)["rd"].boolean());
      EXPECT_EQ((*f)["aa"].boolean(), authoritative[a.args]);
      EXPECT_FALSE((*f)["tc"].boolean());
      EXPECT_GT((*f)["latency_us"].num(), 0);
      EXPECT_LT((*f)["latency_us"].num(), wall_us[a.args]);
    }
    EXPECT_EQ(client[0]["id"].u64(), server[0]["id"].u64());
    EXPECT_EQ(client[0]["saddr"].str(), "10.77.0.1");
    EXPECT_EQ(client[0]["daddr"].str(), kResolver);
    EXPECT_EQ(server[0]["saddr"].str(), kResolver);
    EXPECT_EQ(server[0]["daddr"].str(), "10.77.0.1");
    EXPECT_EQ(server[0]["dport"].u64(), client[0]["sport"].u64());
    EXPECT_EQ(server[0]["comm"].str(), "dnsmasq");
    if (a.port == 53) {
      EXPECT_EQ(server[0]["pid"].u64(), dnsmasq_pid_);
    }
    // The resolver answers before the client hears it.
    EXPECT_LT(server[0]["latency_us"].num(), client[0]["latency_us"].num());
  }

  // The keep-open run: three queries on one connection, in order; the
  // single "+tcp" query had a connection of its own.
  {
    auto tcp = [](const Json& f) {
      return f["transport"].str() == "tcp" && f["qname"].str() != "big.test";
    };
    std::map<std::uint64_t, std::vector<std::string>> by_connection;
    for (const auto& f : matching("client", tcp))
      by_connection[f["sport"].u64()].push_back(f["qname"].str() + "/" + f["qtype"].str());
    std::multiset<std::vector<std::string>> connections;
    for (const auto& [port, names] : by_connection) connections.insert(names);
    EXPECT_EQ(connections, (std::multiset<std::vector<std::string>>{
                               {"web.test/A"}, {"web.test/A", "www.test/A", "v6.test/AAAA"}}));
    EXPECT_EQ(matching("server", tcp).size(), 4u);
  }

  // The truncated answer and the retry over TCP are two queries.
  for (const char* side : {"client", "server"}) {
    SCOPED_TRACE(side);
    auto udp = matching(side, named("big.test", "TXT", "udp"));
    auto tcp = matching(side, named("big.test", "TXT", "tcp"));
    ASSERT_EQ(udp.size(), 1u);
    ASSERT_EQ(tcp.size(), 1u);
    EXPECT_TRUE(udp[0]["tc"].boolean());
    EXPECT_FALSE(tcp[0]["tc"].boolean());
    EXPECT_EQ(tcp[0]["answer_count"].u64(), 1u);
    EXPECT_EQ(tcp[0]["rcode"].str(), "NOERROR");
  }

  // getent: the A and the AAAA query, each once per socket.
  {
    auto client = matching("client", [](const Json& f) { return f["comm"].str() == "getent"; });
    std::multiset<std::string> types;
    for (const auto& f : client) {
      types.insert(f["qtype"].str());
      EXPECT_EQ(f["qname"].str(), "web.test");
      EXPECT_EQ(f["rcode"].str(), "NOERROR");
      EXPECT_EQ(f["answer_count"].u64(), f["qtype"].str() == "A" ? 1u : 0u);
      EXPECT_EQ(served(f).size(), 1u) << f["qtype"].str();
    }
    EXPECT_EQ(types, (std::multiset<std::string>{"A", "AAAA"}));
  }

  // The metrics count exactly what the events say.
  std::map<std::tuple<std::string, std::string, std::string>, double> counted;
  for (const auto& e : all) {
    const auto& f = e["fields"];
    ASSERT_EQ(f["outcome"].str(), "answered") << f["qname"].str();
    counted[{f["qtype"].str(), f["rcode"].str(), f["side"].str()}] += 1;
  }
  for (const auto& [key, n] : counted) {
    const auto& [qtype, rcode, side] = key;
    EXPECT_EQ(prom.value("netwatcher_dns_requests_total",
                         {{"qtype", qtype}, {"rcode", rcode}, {"side", side}}),
              n)
        << qtype << " " << rcode << " " << side;
  }
  EXPECT_EQ(prom.value("netwatcher_dns_requests_unanswered_total", {{"side", "client"}}), 0.0);
  // Per-name series for the first max_names (3) names asked, "other" for
  // the rest, counting the same queries.
  std::map<std::string, double> per_name;
  double all_names = 0;
  for (const auto& sample : prom.samples) {
    if (sample.name != "netwatcher_dns_name_requests_total") continue;
    per_name[sample.labels.at("qname")] += sample.value;
    all_names += sample.value;
  }
  EXPECT_EQ(all_names, static_cast<double>(all.size()));
  EXPECT_EQ(per_name.size(), 4u);
  for (const char* name : {"web.test", "v6.test", "www.test", "other"})
    EXPECT_GT(per_name[name], 0) << name;
  EXPECT_EQ(per_name["other"],
            static_cast<double>(std::count_if(all.begin(), all.end(), [](const Json& e) {
              const std::string& name = e["fields"]["qname"].str();
              return name != "web.test" && name != "v6.test" && name != "www.test";
            })));
  EXPECT_GT(prom.value("netwatcher_table_full_total", {{"plugin", "dns"}, {"table", "names"}})
                .value_or(0),
            0);
  for (const char* kind :
       {"bad_name", "bad_record", "short_header", "orphan_response", "lost_sync"})
    EXPECT_EQ(prom.value("netwatcher_dns_parse_errors_total", {{"kind", kind}}), 0.0) << kind;
}

// A server that never answers: the query is reported as timed_out after
// query_timeout, from both sockets, and counted.
TEST_F(Dns, AnUnansweredQueryIsReportedAsTimedOutAfterTheTimeout) {
  Netwatcher nw(dir_, config());
  ASSERT_TRUE(wait_until([&] { return std::filesystem::exists(dir_.file("events.jsonl")); }));
  auto out = dig("-p " + std::to_string(kSilentPort) + " +time=1 quiet.test A");
  ASSERT_NE(out.exit_code, 0) << out.output;
  auto timed_out = [](const Json& f) {
    return f["qname"].str() == "quiet.test" && f["outcome"].str() == "timed_out";
  };
  ASSERT_TRUE(wait_for(2, timed_out)) << nw.log();
  auto prom = scrape_until(kPromPort, [](const PromText& m) {
    return m.value("netwatcher_dns_requests_unanswered_total", {{"side", "server"}}).value_or(0) >=
           1;
  });
  ASSERT_EQ(nw.stop(), 0) << nw.log();
  std::map<std::string, int> sides;
  for (const auto& e : queries()) {
    const auto& f = e["fields"];
    if (f["qname"].str() != "quiet.test") continue;
    EXPECT_EQ(f["outcome"].str(), "timed_out");
    EXPECT_FALSE(f.has("rcode"));
    EXPECT_FALSE(f.has("latency_us"));
    EXPECT_EQ(f["qtype"].str(), "A");
    ++sides[f["side"].str()];
  }
  EXPECT_EQ(sides, (std::map<std::string, int>{{"client", 1}, {"server", 1}}));
  EXPECT_EQ(prom.value("netwatcher_dns_requests_unanswered_total", {{"side", "client"}}), 1.0);
  EXPECT_EQ(prom.value("netwatcher_dns_requests_unanswered_total", {{"side", "server"}}), 1.0);
}

// A malformed datagram on a socket that speaks DNS: a parse error at each
// socket, and the next query on the same socket is reported as usual.
TEST_F(Dns, AMalformedDatagramIsAParseErrorAndNothingElseIsLost) {
  Netwatcher nw(dir_, config());
  ASSERT_TRUE(wait_until([&] { return std::filesystem::exists(dir_.file("events.jsonl")); }));
  // One socket: a good query, a header whose one question's name runs past
  // the datagram, then another good query.
  const std::string script =
      "import socket, struct\n"
      "def q(i, name):\n"
      "    labels = b''.join(bytes([len(p)]) + p.encode() for p in name.split('.')) + b'\\0'\n"
      "    return struct.pack('!6H', i, 0x0100, 1, 0, 0, 0) + labels + struct.pack('!2H', 1, 1)\n"
      "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
      "s.settimeout(2)\n"
      "s.connect(('" +
      std::string(kResolver) +
      "', 53))\n"
      "s.send(q(0x1111, 'web.test')); s.recv(512)\n"
      "s.send(struct.pack('!6H', 0x2222, 0x0100, 1, 0, 0, 0) + b'\\x3fshort')\n"
      "s.send(q(0x3333, 'www.test')); s.recv(512)\n"
      "print('ok')\n";
  auto out = run("ip netns exec " + std::string(TwoHosts::kClient) + " python3 -c \"" + script +
                 "\" 2>&1");
  ASSERT_EQ(out.output, "ok\n") << out.output;
  ASSERT_TRUE(wait_for(2, [](const Json& f) { return f["id"].u64() == 0x3333; })) << nw.log();
  auto prom = scrape_until(kPromPort, [](const PromText& m) {
    return m.value("netwatcher_dns_parse_errors_total", {{"kind", "bad_name"}}).value_or(0) >= 2;
  });
  ASSERT_EQ(nw.stop(), 0) << nw.log();
  EXPECT_EQ(prom.value("netwatcher_dns_parse_errors_total", {{"kind", "bad_name"}}), 2.0)
      << "one at the client's socket, one at the resolver's";
  std::map<std::uint64_t, int> ids;
  for (const auto& e : queries()) {
    const auto& f = e["fields"];
    ++ids[f["id"].u64()];
    EXPECT_EQ(f["outcome"].str(), "answered");
    EXPECT_EQ(f["rcode"].str(), "NOERROR");
  }
  EXPECT_EQ(ids, (std::map<std::uint64_t, int>{{0x1111, 2}, {0x3333, 2}}));
}

}  // namespace
