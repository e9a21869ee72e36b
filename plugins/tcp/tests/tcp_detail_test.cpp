// tcp plugin internals on the real kernel: state transitions, resets, error
// packets, retransmits and congestion states, per-layer time (with a TBF
// qdisc slowing the link down) and the latency anomaly detector.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <future>
#include <set>
#include <stdexcept>
#include <thread>

#include "harness.hpp"

using namespace nwtest;

namespace {

constexpr int kPromPort = 41490;
constexpr int kPort = 5000;

std::uint64_t realtime_ns() {
  return static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                        std::chrono::system_clock::now().time_since_epoch())
                                        .count());
}

struct Tuple {
  std::string saddr;
  std::uint64_t sport;
  std::string daddr;
  std::uint64_t dport;
};

bool has_tuple(const Json& event, const Tuple& t) {
  const auto& f = event["fields"];
  return f["saddr"].str() == t.saddr && f["sport"].u64() == t.sport &&
         f["daddr"].str() == t.daddr && f["dport"].u64() == t.dport;
}

std::vector<Json> with_tuple(const std::vector<Json>& events, const Tuple& t) {
  std::vector<Json> out;
  for (const auto& e : events)
    if (has_tuple(e, t)) out.push_back(e);
  return out;
}

std::vector<Json> with_field(const std::vector<Json>& events, const std::string& field,
                             const std::string& value) {
  std::vector<Json> out;
  for (const auto& e : events)
    if (e["fields"].has(field) && e["fields"][field].str() == value) out.push_back(e);
  return out;
}

std::vector<std::string> transitions(const std::vector<Json>& states) {
  std::vector<std::string> out;
  for (const auto& e : states)
    out.push_back(e["fields"]["old_state"].str() + ">" + e["fields"]["new_state"].str());
  return out;
}

void must_run(const std::string& command) {
  auto result = run(command);
  if (result.exit_code != 0) throw std::runtime_error(command + ": " + result.output);
}

double median(std::vector<double> values) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  return values[values.size() / 2];
}

// Sum of one histogram's _count over series whose labels include `labels`.
double histogram_count(const PromText& metrics, const std::string& name,
                       const std::map<std::string, std::string>& labels) {
  double total = 0;
  for (const auto& sample : metrics.samples) {
    if (sample.name != name + "_count") continue;
    bool match = true;
    for (const auto& [key, value] : labels) {
      auto it = sample.labels.find(key);
      match = match && it != sample.labels.end() && it->second == value;
    }
    if (match) total += sample.value;
  }
  return total;
}

// The srtt `ss -ti` shows for one established connection in `netns`, in
// seconds (ss prints milliseconds with microsecond digits: "rtt:0.071/0.035").
double ss_srtt_seconds(const std::string& netns, std::uint64_t sport, std::uint64_t dport) {
  auto r = run("ip netns exec " + netns + " ss -tinH state established '( sport = :" +
               std::to_string(sport) + " and dport = :" + std::to_string(dport) + " )'");
  auto at = r.output.find(" rtt:");
  if (at == std::string::npos) throw std::runtime_error("ss shows no rtt: " + r.output);
  return std::stod(r.output.substr(at + 5)) / 1000;
}

class TcpDetail : public ::testing::Test {
 protected:
  void SetUp() override {
    NW_REQUIRE_ROOT();
    hosts_ = std::make_unique<TwoHosts>();
  }
  std::string config(const std::string& tcp_keys, const std::string& top = "") {
    return "snapshot_interval = 0.5\n" + top + "[plugins.tcp]\n" + tcp_keys +
           sink_config_json(dir_.file("events.jsonl")) +
           "[[sinks]]\ntype = \"prometheus\"\nlisten = \"127.0.0.1:" + std::to_string(kPromPort) +
           "\"\n";
  }
  std::vector<Json> events(const std::string& name) {
    return events_of(parse_json_lines(read_file(dir_.file("events.jsonl"))), name);
  }
  PromText metrics() { return parse_prometheus(http_get(kPromPort, "/metrics")); }
  // Only for the full-table test, whose counts include every scrape: its
  // snapshots cannot be waited for by scraping, and it has no row to show one.
  static void settle() { std::this_thread::sleep_for(std::chrono::milliseconds(1200)); }
  // Waits until `seen` holds for the events of type `name` written so far.
  bool wait_for_events(const std::string& name,
                       const std::function<bool(const std::vector<Json>&)>& seen) {
    return wait_until(
        [&] { return seen(events_of(read_json_lines(dir_.file("events.jsonl")), name)); });
  }
  // Waits until the connection with this tuple (either end) has closed.
  bool wait_for_close(const Tuple& t) {
    return wait_for_events("tcp_close", [&](const std::vector<Json>& closes) {
      return !with_tuple(closes, t).empty();
    });
  }
  PromText metrics_when(const std::function<bool(const PromText&)>& ready) {
    return scrape_until(kPromPort, ready);
  }
  // tcp_peers.py many in the background: `count` connections to the server,
  // `size` bytes each, held `seconds`; returns once all are open.
  std::future<std::vector<Json>> hold_many(int count, int size, int seconds) {
    const std::string ready = dir_.file("many.ready");
    auto peer = std::async(std::launch::async, [=] {
      return run_tcp_peer(TwoHosts::kClient,
                          {"many", "10.77.0.2", std::to_string(kPort), std::to_string(count),
                           std::to_string(size), std::to_string(seconds), "--ready", ready});
    });
    if (!wait_until([&] { return std::filesystem::exists(ready); }))
      throw std::runtime_error("the connections did not open");
    return peer;
  }
  // tcp_peers.py pace from the client to the server: COUNT sends of SIZE bytes.
  static Json pace(int size, int count, double interval, const std::string& server = "10.77.0.2") {
    return run_tcp_peer(TwoHosts::kClient,
                        {"pace", server, std::to_string(kPort), std::to_string(size),
                         std::to_string(count), std::to_string(interval)})
        .at(0);
  }

  // One segment per skb on the client's link: TBF splits larger GSO skbs into
  // new skbs, which the send path cannot follow (see the plugin README).
  static void one_segment_per_skb() {
    must_run("ip -n nwt-cli link set dev nwt-c0 gso_max_segs 1");
  }
  // A token bucket on the client's link: frames queue behind it.
  static void throttle_client_link(const std::string& rate) {
    must_run("ip netns exec nwt-cli tc qdisc add dev nwt-c0 root tbf rate " + rate +
             " burst 1600 latency 5s");
  }

  TempDir dir_;
  std::unique_ptr<TwoHosts> hosts_;
};

TEST_F(TcpDetail, StateTransitionsCoverTheWholeConnectionWithDurations) {
  Netwatcher nw(dir_, config("states = true\n"));
  TcpServer server(TwoHosts::kServer, {kPort}, dir_);
  auto clients = run_client(TwoHosts::kClient, "10.77.0.2", kPort, {20000});
  ASSERT_EQ(clients.size(), 1u);
  const auto& c = clients[0];
  EXPECT_TRUE(wait_for_events("tcp_state", [&](const std::vector<Json>& states) {
    return with_tuple(states, {"10.77.0.1", c.sport, "10.77.0.2", kPort}).size() >= 5 &&
           with_tuple(states, {"10.77.0.2", kPort, "10.77.0.1", c.sport}).size() >= 5;
  }));
  ASSERT_EQ(nw.stop(), 0) << nw.log();

  const auto states = events("tcp_state");
  auto client = with_tuple(states, {"10.77.0.1", c.sport, "10.77.0.2", kPort});
  EXPECT_EQ(
      transitions(client),
      (std::vector<std::string>{"CLOSE>SYN_SENT", "SYN_SENT>ESTABLISHED", "ESTABLISHED>FIN_WAIT1",
                                "FIN_WAIT1>FIN_WAIT2", "FIN_WAIT2>CLOSE"}))
      << nw.log();
  auto server_side = with_tuple(states, {"10.77.0.2", kPort, "10.77.0.1", c.sport});
  EXPECT_EQ(
      transitions(server_side),
      (std::vector<std::string>{"LISTEN>SYN_RECV", "SYN_RECV>ESTABLISHED", "ESTABLISHED>CLOSE_WAIT",
                                "CLOSE_WAIT>LAST_ACK", "LAST_ACK>CLOSE"}));
  ASSERT_EQ(client.size(), 5u);
  // One socket throughout; the owner from connect(); durations for every
  // state entered while watched. Each event is stamped with the instant that
  // ends the old state and starts the new one, so each duration is exactly
  // the time since the event before (in whole microseconds), and together
  // they add up to the lifetime.
  const std::uint64_t sock = client[0]["fields"]["sock"].u64();
  std::uint64_t sum_us = 0;
  for (std::size_t i = 0; i < client.size(); ++i) {
    const auto& f = client[i]["fields"];
    EXPECT_EQ(f["sock"].u64(), sock);
    EXPECT_EQ(f["pid"].u64(), c.pid);
    EXPECT_EQ(f["comm"].str(), "python3");
    if (i == 0) {
      EXPECT_FALSE(f.has("duration_us")) << "nothing is known about the time in CLOSE";
      continue;
    }
    ASSERT_TRUE(f.has("duration_us")) << transitions(client)[i];
    EXPECT_LT(f["duration_us"].u64(), 5000000u);
    sum_us += f["duration_us"].u64();
    ASSERT_GE(client[i]["timestamp_ns"].u64(), client[i - 1]["timestamp_ns"].u64());
    EXPECT_EQ(f["duration_us"].u64(),
              (client[i]["timestamp_ns"].u64() - client[i - 1]["timestamp_ns"].u64()) / 1000)
        << transitions(client)[i];
  }
  const std::uint64_t life_us =
      (client.back()["timestamp_ns"].u64() - client.front()["timestamp_ns"].u64()) / 1000;
  // Each of the four durations lost under a microsecond to rounding down.
  EXPECT_LE(sum_us, life_us);
  EXPECT_GE(sum_us + 4, life_us);
  EXPECT_GT(sum_us, 0u);
  // SYN_SENT lasted a round trip (plus neighbour resolution on a new link).
  EXPECT_GT(client[1]["fields"]["duration_us"].u64(), 0u);
}

TEST_F(TcpDetail, AConnectionToAClosedPortGivesResetEventsOnBothSides) {
  Netwatcher nw(dir_, config("states = true\n"));
  auto result =
      run("ip netns exec nwt-cli /usr/bin/python3 -c \"import os,socket\n"
          "s=socket.socket()\ntry:\n s.connect(('10.77.0.2', 5999))\nexcept "
          "ConnectionRefusedError:\n print(os.getpid(), s.getsockname()[1])\"");
  ASSERT_EQ(result.exit_code, 0) << result.output;
  std::uint64_t pid = 0, sport = 0;
  ASSERT_EQ(std::sscanf(result.output.c_str(), "%lu %lu", &pid, &sport), 2) << result.output;
  EXPECT_TRUE(wait_for_events("tcp_reset", [&](const std::vector<Json>& resets) {
    return !with_tuple(resets, {"10.77.0.2", 5999, "10.77.0.1", sport}).empty() &&
           !with_tuple(resets, {"10.77.0.1", sport, "10.77.0.2", 5999}).empty();
  }));
  EXPECT_TRUE(wait_for_events("tcp_state", [&](const std::vector<Json>& states) {
    return with_tuple(states, {"10.77.0.1", sport, "10.77.0.2", 5999}).size() >= 2;
  }));
  auto prom = metrics_when([](const PromText& m) {
    return m.value("netwatcher_tcp_resets_total", {{"direction", "sent"}}).value_or(0) >= 1 &&
           m.value("netwatcher_tcp_resets_total", {{"direction", "received"}}).value_or(0) >= 1;
  });
  ASSERT_EQ(nw.stop(), 0) << nw.log();

  const auto resets = events("tcp_reset");
  auto sent =
      with_tuple(with_field(resets, "direction", "sent"), {"10.77.0.2", 5999, "10.77.0.1", sport});
  ASSERT_EQ(sent.size(), 1u) << nw.log();
  const auto& sf = sent[0]["fields"];
  EXPECT_FALSE(sf.has("sock")) << "no socket listens on the port";
  EXPECT_FALSE(sf.has("state"));
  EXPECT_EQ(sf["reason"].str(), "NO_SOCKET");

  auto received = with_tuple(with_field(resets, "direction", "received"),
                             {"10.77.0.1", sport, "10.77.0.2", 5999});
  ASSERT_EQ(received.size(), 1u);
  const auto& rf = received[0]["fields"];
  EXPECT_EQ(rf["state"].str(), "SYN_SENT");
  EXPECT_EQ(rf["pid"].u64(), pid);
  EXPECT_EQ(rf["comm"].str(), "python3");
  EXPECT_TRUE(rf.has("sock"));

  auto states = with_tuple(events("tcp_state"), {"10.77.0.1", sport, "10.77.0.2", 5999});
  EXPECT_EQ(transitions(states), (std::vector<std::string>{"CLOSE>SYN_SENT", "SYN_SENT>CLOSE"}));
  EXPECT_GE(prom.value("netwatcher_tcp_resets_total", {{"direction", "sent"}}).value_or(0), 1);
  EXPECT_GE(prom.value("netwatcher_tcp_resets_total", {{"direction", "received"}}).value_or(0), 1);
}

// An established connection aborted with SO_LINGER 0: the client sends the
// RST and the server receives it in ESTABLISHED; the counters agree with the
// namespaces' TcpOutRsts and TcpEstabResets.
TEST_F(TcpDetail, AnAbortedEstablishedConnectionGivesResetsOnBothSides) {
  Netwatcher nw(dir_, config(""));
  TcpServer server(TwoHosts::kServer, {kPort}, dir_);
  const std::uint64_t out_rsts = nstat(TwoHosts::kClient, "TcpOutRsts");
  const std::uint64_t estab_resets = nstat(TwoHosts::kServer, "TcpEstabResets");
  auto result =
      run("ip netns exec nwt-cli /usr/bin/python3 -c \"import os,socket,struct,time\n"
          "s=socket.create_connection(('10.77.0.2', " +
          std::to_string(kPort) +
          "))\ns.sendall(b'x'*10)\ntime.sleep(0.2)\n"
          "s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))\n"
          "print(os.getpid(), s.getsockname()[1])\ns.close()\"");
  ASSERT_EQ(result.exit_code, 0) << result.output;
  std::uint64_t pid = 0, sport = 0;
  ASSERT_EQ(std::sscanf(result.output.c_str(), "%lu %lu", &pid, &sport), 2) << result.output;
  const Tuple client{"10.77.0.1", sport, "10.77.0.2", kPort};
  const Tuple server_end{"10.77.0.2", kPort, "10.77.0.1", sport};
  EXPECT_TRUE(wait_for_events("tcp_reset", [&](const std::vector<Json>& resets) {
    return !with_tuple(resets, client).empty() && !with_tuple(resets, server_end).empty();
  }));
  auto prom = metrics_when([](const PromText& m) {
    return m.value("netwatcher_tcp_resets_total", {{"direction", "received"}}).value_or(0) >= 1;
  });
  ASSERT_EQ(nw.stop(), 0) << nw.log();
  EXPECT_EQ(nstat(TwoHosts::kClient, "TcpOutRsts") - out_rsts, 1u);
  EXPECT_EQ(nstat(TwoHosts::kServer, "TcpEstabResets") - estab_resets, 1u);

  const auto resets = events("tcp_reset");
  auto sent = with_tuple(with_field(resets, "direction", "sent"), client);
  ASSERT_EQ(sent.size(), 1u) << read_file(dir_.file("events.jsonl"));
  // The abort ends the connection (CLOSE) before the RST leaves; the port
  // and the owner are still the connection's.
  EXPECT_EQ(sent[0]["fields"]["state"].str(), "CLOSE");
  EXPECT_EQ(sent[0]["fields"]["reason"].str(), "TCP_STATE");
  EXPECT_EQ(sent[0]["fields"]["pid"].u64(), pid);
  EXPECT_EQ(sent[0]["fields"]["comm"].str(), "python3");
  auto received = with_tuple(with_field(resets, "direction", "received"), server_end);
  ASSERT_EQ(received.size(), 1u);
  EXPECT_EQ(received[0]["fields"]["state"].str(), "ESTABLISHED");
  EXPECT_EQ(with_tuple(resets, client).size() + with_tuple(resets, server_end).size(), 2u);
  EXPECT_EQ(prom.value("netwatcher_tcp_resets_total", {{"direction", "sent"}}), 1);
  EXPECT_EQ(prom.value("netwatcher_tcp_resets_total", {{"direction", "received"}}), 1);
  auto closes = with_tuple(events("tcp_close"), server_end);
  ASSERT_EQ(closes.size(), 1u);
  EXPECT_EQ(closes[0]["fields"]["bytes_received"].u64(), 10u);
}

TEST_F(TcpDetail, ErrorPacketsAreReportedAndOutOfOrderSegmentsAreNot) {
  // Without timestamps the crafted segments need no TS option.
  run("ip netns exec nwt-cli sysctl -qw net.ipv4.tcp_timestamps=0");
  Netwatcher nw(dir_, config("errors = true\n"));
  TcpServer server(TwoHosts::kServer, {kPort}, dir_);
  Json crafted =
      run_tcp_peer(TwoHosts::kClient, {"craft", "10.77.0.2", std::to_string(kPort)}).at(0);
  const std::uint32_t seq = static_cast<std::uint32_t>(crafted["seq"].u64());
  const std::uint64_t sport = crafted["sport"].u64();
  EXPECT_TRUE(wait_for_events("tcp_error", [&](const std::vector<Json>& errors) {
    return with_tuple(errors, {"10.77.0.2", kPort, "10.77.0.1", sport}).size() >= 4;
  }));
  auto prom = metrics_when([](const PromText& m) {
    return m.value("netwatcher_tcp_error_packets_total", {{"reason", "bad_checksum"}})
                   .value_or(0) >= 1 &&
           m.value("netwatcher_tcp_error_packets_total", {{"reason", "sequence_beyond_window"}})
                   .value_or(0) >= 1;
  });
  ASSERT_EQ(nw.stop(), 0) << nw.log();

  auto errors = with_tuple(events("tcp_error"), {"10.77.0.2", kPort, "10.77.0.1", sport});
  ASSERT_EQ(errors.size(), 4u) << nw.log();
  std::map<std::string, Json> by_reason;
  for (const auto& e : errors) by_reason[e["fields"]["reason"].str()] = e["fields"];

  ASSERT_TRUE(by_reason.count("sequence_beyond_window"));
  const auto& beyond = by_reason["sequence_beyond_window"];
  EXPECT_EQ(beyond["seq"].u64(), static_cast<std::uint32_t>(seq + 0x40000000u));
  EXPECT_EQ(beyond["ack"].u64(), crafted["ack"].u64());
  EXPECT_EQ(beyond["payload"].u64(), 10u);
  EXPECT_EQ(beyond["kernel_reason"].str(), "TCP_INVALID_SEQUENCE");
  EXPECT_EQ(beyond["rcv_nxt"].u64(), seq);
  EXPECT_EQ(beyond["offset"].num(), 0x40000000);

  ASSERT_TRUE(by_reason.count("bad_checksum"));
  const auto& csum = by_reason["bad_checksum"];
  EXPECT_EQ(csum["seq"].u64(), seq);
  EXPECT_EQ(csum["payload"].u64(), 10u);
  EXPECT_EQ(csum["kernel_reason"].str(), "TCP_CSUM");
  // Dropped before the socket lookup; found again by its tuple.
  ASSERT_TRUE(csum.has("sock"));
  EXPECT_EQ(csum["sock"].u64(), beyond["sock"].u64());

  ASSERT_TRUE(by_reason.count("sequence_before_window"));
  const auto& before = by_reason["sequence_before_window"];
  EXPECT_EQ(before["seq"].u64(), static_cast<std::uint32_t>(seq - 0x40000000u));
  EXPECT_EQ(before["offset"].num(), -0x40000000);
  EXPECT_EQ(before["kernel_reason"].str(), "TCP_OLD_SEQUENCE");

  ASSERT_TRUE(by_reason.count("invalid_ack"));
  const auto& unsent = by_reason["invalid_ack"];
  EXPECT_EQ(unsent["seq"].u64(), seq);
  EXPECT_EQ(
      unsent["ack"].u64(),
      static_cast<std::uint32_t>(static_cast<std::uint32_t>(crafted["ack"].u64()) + 0x40000000u));
  EXPECT_EQ(unsent["kernel_reason"].str(), "TCP_ACK_UNSENT_DATA");

  // The in-window segment at seq + 1000 went to the out-of-order queue, and
  // the keepalive probe at seq - 1 is routine.
  for (const auto& e : errors) {
    EXPECT_NE(e["fields"]["seq"].u64(), (seq + 1000u) & 0xFFFFFFFFu);
    EXPECT_NE(e["fields"]["seq"].u64(), (seq - 1u) & 0xFFFFFFFFu);
  }
  EXPECT_GE(
      prom.value("netwatcher_tcp_error_packets_total", {{"reason", "bad_checksum"}}).value_or(0),
      1);
  EXPECT_GE(prom.value("netwatcher_tcp_error_packets_total", {{"reason", "sequence_beyond_window"}})
                .value_or(0),
            1);
}

TEST_F(TcpDetail, DroppedPacketsCauseRetransmitEventsThatMatchTheConnectionCounters) {
  Netwatcher nw(dir_, config("retrans = true\nextra = true\n"));
  TcpServer server(TwoHosts::kServer, {kPort}, dir_);
  // MSS-sized packets: with 64 KB GSO packets 1.5 MB is ~30 packets, and 8%
  // loss misses all of them about one time in twelve.
  one_segment_per_skb();
  nft(TwoHosts::kServer,
      "table inet nwt_loss {\n chain input {\n  type filter hook input priority 0;\n"
      "  tcp dport 5000 numgen random mod 100 < 8 drop\n }\n}\n");
  auto clients = run_client(TwoHosts::kClient, "10.77.0.2", kPort, {1500000});
  ASSERT_EQ(clients.size(), 1u);
  const Tuple tuple{"10.77.0.1", clients[0].sport, "10.77.0.2", kPort};
  ASSERT_TRUE(wait_for_close(tuple));
  // One ring: every retransmit of the connection was written before its close.
  const auto written = read_json_lines(dir_.file("events.jsonl"));
  auto retransmits = with_tuple(events_of(written, "tcp_retransmit"), tuple);
  ASSERT_GT(retransmits.size(), 0u) << "8% loss over 1.5 MB must retransmit";
  std::uint64_t fast = 0, timeout = 0;
  for (const auto& e : retransmits) {
    const auto& f = e["fields"];
    EXPECT_EQ(f["pid"].u64(), clients[0].pid);
    EXPECT_GT(f["length"].u64(), 0u);
    // Counts are in segments: a retransmission may collapse two skbs into one.
    EXPECT_GE(f["segments"].u64(), 1u);
    (f["type"].str() == "timeout" ? timeout : fast) += f["segments"].u64();
  }
  auto closes = with_tuple(events_of(written, "tcp_close"), tuple);
  ASSERT_EQ(closes.size(), 1u);
  EXPECT_EQ(closes[0]["fields"]["fast_retrans"].u64(), fast);
  EXPECT_EQ(closes[0]["fields"]["timeout_retrans"].u64(), timeout);
  // The kernel's own count, in segments too (one per skb here). A classic
  // tracepoint program does not run while another BPF program runs on the
  // same CPU (the fallback run's send/recv hooks are classic too): the
  // kernel counts each such skipped run, and so must the total. The
  // missed-runs count is read from the program's stats at a scrape, so it is
  // waited for; a run missed on another connection would overshoot it.
  const std::uint64_t total = closes[0]["fields"]["total_retrans"].u64();
  ASSERT_GE(total, fast + timeout);
  const std::string program = fallback_hooks() ? "retransmit_tp" : "retransmit_btf";
  const std::map<std::string, std::string> missed_series{{"plugin", "tcp"}, {"program", program}};
  PromText prom;
  double missed = -1;
  const bool agreed = wait_until([&] {
    prom = metrics();
    missed = prom.value("netwatcher_bpf_program_missed_runs_total", missed_series).value_or(-1);
    return missed >= 0 && static_cast<std::uint64_t>(missed) == total - fast - timeout;
  });
  EXPECT_TRUE(agreed) << "total_retrans " << total << " = fast " << fast << " + timeout " << timeout
                      << " + missed runs " << missed << "? client's TcpRetransSegs "
                      << nstat(TwoHosts::kClient, "TcpRetransSegs") << ", TcpExtTCPRetransFail "
                      << nstat(TwoHosts::kClient, "TcpExtTCPRetransFail");
  ASSERT_EQ(nw.stop(), 0) << nw.log();

  auto congestion = with_tuple(events("tcp_congestion"), tuple);
  ASSERT_GT(congestion.size(), 0u);
  bool recovered = false;
  for (const auto& e : congestion) {
    const auto& f = e["fields"];
    EXPECT_NE(f["old_state"].str(), f["new_state"].str());
    recovered = recovered || f["new_state"].str() == "Recovery" || f["new_state"].str() == "Loss";
  }
  EXPECT_TRUE(recovered);
  double counted =
      prom.value("netwatcher_tcp_retransmits_total", {{"type", "fast"}}).value_or(0) +
      prom.value("netwatcher_tcp_retransmits_total", {{"type", "timeout"}}).value_or(0);
  EXPECT_GE(counted, static_cast<double>(retransmits.size()));
}

TEST_F(TcpDetail, PerConnectionSrttHistogramsLiveAsLongAsTheirConnection) {
  Netwatcher nw(dir_, config("rtt_per_connection = true\n"));
  TcpServer server(TwoHosts::kServer, {kPort}, dir_);
  std::map<std::string, std::string> labels;
  {
    HeldConnection held(TwoHosts::kClient, "10.77.0.2", kPort, 200000, 2.5, dir_);
    const std::uint64_t sport = held.info().sport;
    labels = {{"daddr", "10.77.0.2"},
              {"saddr", "10.77.0.1"},
              {"sport", std::to_string(sport)},
              {"dport", std::to_string(kPort)}};
    const std::map<std::string, std::string> server_labels = {{"daddr", "10.77.0.1"},
                                                              {"saddr", "10.77.0.2"},
                                                              {"sport", std::to_string(kPort)},
                                                              {"dport", std::to_string(sport)}};
    // One sample per snapshot: wait for two of each end's.
    auto open = metrics_when([&](const PromText& m) {
      return m.value("netwatcher_tcp_srtt_seconds_count", labels).value_or(0) >= 2 &&
             m.value("netwatcher_tcp_srtt_seconds_count", server_labels).value_or(0) >= 2;
    });
    // The transfer took milliseconds: since then each end's srtt is what ss
    // shows, and so is (nearly) every sample. A sample taken during the
    // transfer may differ, hence the factors 1/2 and 4; the kernel's srtt
    // left shifted (srtt_us << 3) would be 8 times ss's, one read as
    // milliseconds 1000 times.
    for (const auto& [end, series] :
         {std::pair{"client", labels}, std::pair{"server", server_labels}}) {
      SCOPED_TRACE(end);
      const bool client = std::string(end) == "client";
      const double ss = ss_srtt_seconds(client ? TwoHosts::kClient : TwoHosts::kServer,
                                        client ? sport : kPort, client ? kPort : sport);
      double count = open.value("netwatcher_tcp_srtt_seconds_count", series).value_or(0);
      double sum = open.value("netwatcher_tcp_srtt_seconds_sum", series).value_or(0);
      ASSERT_GE(count, 2) << "the connection is tracked from its start";
      EXPECT_GE(sum / count, ss * 0.5) << "ss srtt " << ss << " s";
      EXPECT_LE(sum / count, ss * 4) << "ss srtt " << ss << " s";
    }
  }
  // The client closes after 2.5 s; the series ends with its connection.
  EXPECT_TRUE(wait_for_close({"10.77.0.1", std::stoull(labels.at("sport")), "10.77.0.2", kPort}));
  PromText closed;
  EXPECT_TRUE(wait_until([&] {
    closed = metrics();
    return !closed.value("netwatcher_tcp_srtt_seconds_count", labels).has_value();
  })) << "the series ends with its connection";
  ASSERT_EQ(nw.stop(), 0) << nw.log();
}

// One destination's srtt histogram as scraped: cumulative count per bucket
// bound (seconds), total count and sum.
struct SrttHistogram {
  std::map<double, double> cumulative;
  double count = 0, sum = 0;
};
SrttHistogram srtt_histogram(const PromText& metrics, const std::string& daddr) {
  SrttHistogram h;
  for (const auto& sample : metrics.samples) {
    auto d = sample.labels.find("daddr");
    if (d == sample.labels.end() || d->second != daddr) continue;
    if (sample.name == "netwatcher_tcp_srtt_seconds_count") h.count += sample.value;
    if (sample.name == "netwatcher_tcp_srtt_seconds_sum") h.sum += sample.value;
    if (sample.name == "netwatcher_tcp_srtt_seconds_bucket" && sample.labels.at("le") != "+Inf")
      h.cumulative[std::stod(sample.labels.at("le"))] += sample.value;
  }
  return h;
}
// The same cumulative buckets built from srtt values in microseconds: the
// plugin's log2 slots hold [2^k, 2^(k+1)) ns, under the bound 2^(k+1) ns.
std::map<double, double> cumulative_buckets(const std::vector<std::uint64_t>& srtt_us,
                                            const std::map<double, double>& like) {
  std::map<double, double> out;
  for (const auto& [bound, unused] : like) {
    (void)unused;
    double n = 0;
    for (auto us : srtt_us)
      if (static_cast<double>(us) * 1e-6 < bound) n += 1;
    out[bound] = n;
  }
  return out;
}

// By default the histogram takes one sample per connection and snapshot
// (each tcp_conn row) and one at close, with no program per segment: the
// scraped buckets are exactly those of the rows' and the close's srtt, and
// the idle connection's rows carry what ss shows.
TEST_F(TcpDetail, SrttHistogramTakesOneSamplePerSnapshotAndOneAtClose) {
  Netwatcher nw(dir_, config("extra = true\n"));
  TcpServer server(TwoHosts::kServer, {kPort}, dir_);
  std::uint64_t sport = 0;
  std::string ss_rtt;
  {
    HeldConnection held(TwoHosts::kClient, "10.77.0.2", kPort, 12345, 2.5, dir_);
    sport = held.info().sport;
    // Three snapshot rows: the connection is long idle after its write.
    EXPECT_TRUE(wait_for_events("tcp_conn", [&](const std::vector<Json>& rows) {
      std::size_t n = 0;
      for (const auto& e : rows)
        n += e["fields"]["direction"].str() == "client" && e["fields"]["sport"].u64() == sport;
      return n >= 3;
    }));
    auto r = run("ip netns exec nwt-cli ss -tinH state established '( sport = :" +
                 std::to_string(sport) + " )'");
    auto at = r.output.find(" rtt:");
    ASSERT_NE(at, std::string::npos) << r.output;
    ss_rtt = r.output.substr(at + 5, r.output.find('/', at) - at - 5);
  }
  // Its close record decoded: the histogram has its last sample.
  EXPECT_TRUE(wait_for_close({"10.77.0.1", sport, "10.77.0.2", kPort}));
  auto scraped = metrics();
  ASSERT_EQ(nw.stop(), 0) << nw.log();
  EXPECT_EQ(nw.log().find("rtt_probe"), std::string::npos) << "no per-segment program by default";
  std::vector<std::uint64_t> samples;
  for (const auto& e : events("tcp_conn"))
    if (e["fields"]["direction"].str() == "client" && e["fields"]["sport"].u64() == sport)
      samples.push_back(e["fields"]["srtt_us"].u64());
  ASSERT_GE(samples.size(), 3u) << "2.5 s at one snapshot per 0.5 s";
  // After its write the connection is idle: srtt stays what ss printed.
  EXPECT_NEAR(samples.back() / 1000.0, std::stod(ss_rtt), 0.0015) << "ss rtt " << ss_rtt << " ms";
  std::vector<std::uint64_t> at_close;
  for (const auto& e : events("tcp_close"))
    if (e["fields"]["direction"].str() == "client" && e["fields"]["sport"].u64() == sport)
      at_close.push_back(e["fields"]["srtt_us"].u64());
  ASSERT_EQ(at_close.size(), 1u);
  samples.push_back(at_close[0]);
  auto h = srtt_histogram(scraped, "10.77.0.2");
  EXPECT_EQ(h.count, static_cast<double>(samples.size())) << "rows plus the close";
  double sum_us = 0;
  for (auto us : samples) sum_us += static_cast<double>(us);
  EXPECT_NEAR(h.sum, sum_us * 1e-6, 1e-9);
  EXPECT_EQ(h.cumulative, cumulative_buckets(samples, h.cumulative));
}

// rtt_every_change samples at tcp:tcp_probe instead, whenever a socket's
// srtt changed: a 200 kB transfer changes it many times, and the value the
// idle connection ends with (what ss shows) is among the samples. tcp_probe
// fires as a segment arrives, before TCP takes its RTT sample, so (as with
// bcc's tcprtt) the srtt the last ACK set is seen by the next segment: here
// the server's "ok", which acknowledges nothing new and so changes nothing.
TEST_F(TcpDetail, SrttHistogramAtEveryChangeHoldsTheSrttSsShows) {
  constexpr int kBytes = 200000;
  Netwatcher nw(dir_, config("rtt_every_change = true\n"));
  write_file(dir_.file("answer.py"),
             "import socket, sys, time\n"
             "l = socket.socket()\n"
             "l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
             "l.bind(('10.77.0.2', " +
                 std::to_string(kPort) +
                 "))\n"
                 "l.listen(1)\n"
                 "open(sys.argv[1], 'w').close()\n"
                 "c, _ = l.accept()\n"
                 "left = " +
                 std::to_string(kBytes) +
                 "\n"
                 "while left > 0:\n"
                 "    left -= len(c.recv(65536))\n"
                 "time.sleep(0.3)\n"  // every ACK of the client's data is in
                 "c.sendall(b'ok')\n"
                 "time.sleep(5)\n");
  const std::string ready = dir_.file("answer.ready");
  Process server(
      {"ip", "netns", "exec", TwoHosts::kServer, "/usr/bin/python3", dir_.file("answer.py"), ready},
      dir_.file("answer.log"));
  ASSERT_TRUE(wait_until([&] { return std::filesystem::exists(ready); }))
      << read_file(dir_.file("answer.log"));
  HeldConnection held(TwoHosts::kClient, "10.77.0.2", kPort, kBytes, 2.0, dir_);
  // Until the transfer changed srtt more than once; the connection is held
  // open for 2 s, so ss still shows it.
  ASSERT_TRUE(wait_until([&] { return srtt_histogram(metrics(), "10.77.0.2").count > 1; }))
      << nw.log();
  // The answer has arrived: the client's receive queue holds it.
  std::string r_output;  // Recv-Q first: with a state filter ss prints no State
  ASSERT_TRUE(wait_until([&] {
    r_output = run("ip netns exec nwt-cli ss -tinH state established '( sport = :" +
                   std::to_string(held.info().sport) + " )'")
                   .output;
    return r_output.rfind("2 ", 0) == 0;
  })) << r_output;
  auto at = r_output.find(" rtt:");
  ASSERT_NE(at, std::string::npos) << r_output;
  double ss_srtt_s = std::stod(r_output.substr(at + 5)) / 1000;
  // The bucket holding ss's srtt has a sample: the last change. Scrapes
  // within a second of each other share one refresh, so the one that shows
  // the answer's sample may be the next but one.
  auto in_ss_bucket = [&](const auto& h) {
    auto upper = h.cumulative.upper_bound(ss_srtt_s);
    if (upper == h.cumulative.end()) return -1.0;
    double below = upper == h.cumulative.begin() ? 0 : std::prev(upper)->second;
    return upper->second - below;
  };
  auto h = srtt_histogram(metrics(), "10.77.0.2");
  wait_until(
      [&] {
        h = srtt_histogram(metrics(), "10.77.0.2");
        return in_ss_bucket(h) >= 1;
      },
      std::chrono::seconds(5));
  ASSERT_EQ(nw.stop(), 0) << nw.log();
  EXPECT_NE(nw.log().find("'rtt_samples' attached via rtt_probe"), std::string::npos) << nw.log();
  EXPECT_GT(h.count, 1) << "200 kB change srtt more than once";
  EXPECT_GE(in_ss_bucket(h), 1) << "ss srtt " << ss_srtt_s << " s";
}

// 100 connections between the namespaces, so 200 sockets, against a table
// of 64: what did not fit is counted as refused, warned about once with the
// key to raise, and every connection's open, close and bytes still count.
// The test's own scrapes are connections too (root netns, loopback), each
// one client and one server socket: they are in the expected numbers.
TEST_F(TcpDetail, AFullConnectionTableCountsWhatItRefusedAndStillEveryConnection) {
  constexpr int kConnections = 100, kSize = 3000;
  Netwatcher nw(dir_, config("max_connections = 64\n"));
  TcpServer server(TwoHosts::kServer, {kPort}, dir_);
  auto peer = hold_many(kConnections, kSize, 3);
  settle();               // a snapshot counted the table
  auto full = metrics();  // scrape 1: its two sockets find the table full too
  Json done = peer.get().at(0);
  EXPECT_EQ(done["received"].u64(), 2u * kConnections) << "each server answered \"ok\"";
  // Scrape 2 must find room: every full socket of the test gone on both
  // sides (TIME-WAIT ones left the table when they became so). Under load
  // the servers' closes can lag the peer's exit.
  const std::string open_sockets =
      "ss -Htn state all exclude time-wait exclude listening '( "
      "sport = :" +
      std::to_string(kPort) + " or dport = :" + std::to_string(kPort) + " )' | wc -l";
  EXPECT_TRUE(wait_until([&] {
    return run("ip netns exec " + std::string(TwoHosts::kServer) + " " + open_sockets).output ==
               "0\n" &&
           run("ip netns exec " + std::string(TwoHosts::kClient) + " " + open_sockets).output ==
               "0\n";
  })) << "the test's connections did not close";
  settle();
  auto after = metrics();  // scrape 2
  ASSERT_EQ(nw.stop(), 0) << nw.log();
  const std::map<std::string, std::string> table{{"plugin", "tcp"}, {"table", "connections"}};
  EXPECT_EQ(full.value("netwatcher_table_capacity", table), 64);
  EXPECT_EQ(full.value("netwatcher_table_entries", table), 64);
  EXPECT_EQ(full.value("netwatcher_table_full_total", table), 2 * kConnections - 64 + 2);
  EXPECT_EQ(after.value("netwatcher_table_full_total", table), 2 * kConnections - 64 + 2)
      << "scrape 2 found room: the test's connections had closed";
  EXPECT_EQ(full.value("netwatcher_table_evictions_total", table), 0) << "a hash map refuses";
  auto direction = [](const PromText& m, const std::string& name, const std::string& d) {
    return m.value(name, {{"direction", d}}).value_or(0);
  };
  auto all_directions = [&](const PromText& m, const std::string& name) {
    return direction(m, name, "client") + direction(m, name, "server") +
           direction(m, name, "unknown");
  };
  EXPECT_EQ(direction(full, "netwatcher_tcp_connections_opened_total", "client"), kConnections + 1);
  EXPECT_EQ(direction(full, "netwatcher_tcp_connections_opened_total", "server"), kConnections + 1);
  EXPECT_EQ(direction(after, "netwatcher_tcp_connections_opened_total", "client"),
            kConnections + 2);
  // Scrape 1's connection closed before scrape 2; scrape 2's is open.
  EXPECT_EQ(all_directions(after, "netwatcher_tcp_connections_closed_total"),
            2 * (kConnections + 1));
  // Bytes: the test's, plus the scrapes' (a request of under 200 bytes each
  // way in; responses out of the endpoint are acked by the scraper's side).
  const double sent = static_cast<double>(kConnections) * kSize;
  const double received = all_directions(after, "netwatcher_tcp_received_bytes_total");
  EXPECT_GE(received, sent + 2 * kConnections) << "refused connections count at close";
  if (!fallback_hooks()) {
    // Refused sockets are marked (socket storage), so their direction is known.
    EXPECT_EQ(direction(after, "netwatcher_tcp_connections_closed_total", "client"),
              kConnections + 1);
    EXPECT_EQ(direction(after, "netwatcher_tcp_connections_closed_total", "server"),
              kConnections + 1);
    const double server_received =
        direction(after, "netwatcher_tcp_received_bytes_total", "server");
    EXPECT_GE(server_received, sent);
    EXPECT_LT(server_received, sent + 400);
    const double client_acked = direction(after, "netwatcher_tcp_acked_bytes_total", "client");
    EXPECT_GE(client_acked, sent);
    EXPECT_LT(client_acked, sent + 400);
  }
  const std::string log = nw.log();
  const std::string warning = "table 'connections' is full (64 entries)";
  ASSERT_NE(log.find(warning), std::string::npos) << log;
  EXPECT_EQ(log.find(warning, log.find(warning) + 1), std::string::npos) << "warned once";
  EXPECT_NE(log.find("raise plugins.tcp.max_connections"), std::string::npos);
}

// per_connection_metrics with room for 4 of the 6 sockets (both ends of
// three connections on this host): 4 series with each socket's own bytes,
// 2 refusals counted once each however many snapshots see them, and every
// series gone once its connection closed. Read from the textfile: scrapes
// would be connections of their own.
TEST_F(TcpDetail, PerConnectionSeriesAreCappedAndFollowTheirConnections) {
  constexpr int kConnections = 3, kSize = 1000;
  const std::string textfile = dir_.file("tcp.prom");
  Netwatcher nw(dir_,
                "snapshot_interval = 0.3\n[plugins.tcp]\nper_connection_metrics = true\n"
                "max_connection_series = 4\n[[sinks]]\ntype = \"prometheus\"\nlisten = "
                "\"\"\ntextfile = \"" +
                    textfile + "\"\ntextfile_interval = 0.2\n");
  TcpServer server(TwoHosts::kServer, {kPort}, dir_);
  auto series_of = [&](const PromText& m, const std::string& name) {
    std::vector<PromSample> out;
    for (const auto& sample : m.samples)
      if (sample.name == name && (sample.labels.at("sport") == std::to_string(kPort) ||
                                  sample.labels.at("dport") == std::to_string(kPort)))
        out.push_back(sample);
    return out;
  };
  const std::map<std::string, std::string> table{{"plugin", "tcp"}, {"table", "connection_series"}};
  auto peer = hold_many(kConnections, kSize, 2);
  PromText held;
  EXPECT_TRUE(wait_until([&] {
    held = parse_prometheus(read_file(textfile));
    return series_of(held, "netwatcher_tcp_connection_received_bytes_total").size() == 4 &&
           held.value("netwatcher_table_full_total", table).value_or(0) == 2;
  })) << read_file(textfile);
  // Later snapshots see the same refused sockets: not counted again.
  std::this_thread::sleep_for(std::chrono::milliseconds(700));
  held = parse_prometheus(read_file(textfile));
  EXPECT_EQ(held.value("netwatcher_table_full_total", table), 2);
  EXPECT_EQ(held.value("netwatcher_table_capacity", table), 4);
  EXPECT_EQ(held.value("netwatcher_table_entries", table), 4);
  for (const auto& received : series_of(held, "netwatcher_tcp_connection_received_bytes_total")) {
    const bool server_end = received.labels.at("sport") == std::to_string(kPort);
    EXPECT_EQ(received.value, server_end ? kSize : 0);
    EXPECT_EQ(held.value("netwatcher_tcp_connection_acked_bytes_total", received.labels),
              server_end ? 0 : kSize);
    EXPECT_GT(held.value("netwatcher_tcp_connection_cwnd_segments", received.labels).value_or(0),
              0);
    EXPECT_TRUE(held.value("netwatcher_tcp_connection_srtt_seconds", received.labels).has_value());
  }
  peer.get();
  EXPECT_TRUE(wait_until([&] {
    auto m = parse_prometheus(read_file(textfile));
    return series_of(m, "netwatcher_tcp_connection_received_bytes_total").empty() &&
           series_of(m, "netwatcher_tcp_connection_srtt_seconds").empty();
  })) << "series of closed connections are removed\n"
      << read_file(textfile);
  ASSERT_EQ(nw.stop(), 0) << nw.log();
}

// Connections open before the agent started, in namespaces other than its
// own: adopted from each namespace's socket table, shown in snapshots, and
// closed with the kernel's counts.
TEST_F(TcpDetail, ConnectionsOpenBeforeStartUpAreAdoptedAndReportedAtClose) {
  constexpr int kConnections = 5, kSize = 3000;
  TcpServer server(TwoHosts::kServer, {kPort}, dir_);
  auto peer = hold_many(kConnections, kSize, 3);
  Netwatcher nw(dir_, config(""));
  // The direction of an adopted socket: accepted where its local port
  // listens, else connected.
  auto mine = [](const std::vector<Json>& rows, const std::string& direction) {
    std::vector<Json> out;
    for (const auto& e : rows) {
      const auto& f = e["fields"];
      if (f["direction"].str() == direction &&
          (direction == "server" ? f["sport"].u64() : f["dport"].u64()) == kPort)
        out.push_back(e);
    }
    return out;
  };
  EXPECT_TRUE(wait_for_events("tcp_conn", [&](const std::vector<Json>& rows) {
    return mine(rows, "client").size() >= kConnections &&
           mine(rows, "server").size() >= kConnections;
  })) << "adopted connections appear in the table";
  Json done = peer.get().at(0);
  EXPECT_TRUE(wait_for_events("tcp_close", [&](const std::vector<Json>& closes) {
    return mine(closes, "client").size() == kConnections &&
           mine(closes, "server").size() == kConnections;
  })) << nw.log();
  ASSERT_EQ(nw.stop(), 0) << nw.log();
  const auto closes = events("tcp_close");
  for (const auto& e : mine(closes, "client")) {
    const auto& f = e["fields"];
    EXPECT_EQ(f["saddr"].str(), "10.77.0.1");
    // Named by the peer's reads and writes after adoption.
    EXPECT_EQ(f["pid"].u64(), done["pid"].u64());
    EXPECT_EQ(f["comm"].str(), "python3");
    EXPECT_EQ(f["bytes_acked"].u64(), static_cast<std::uint64_t>(kSize));
    EXPECT_EQ(f["bytes_received"].u64(), 2u);
    EXPECT_FALSE(f.has("duration_us")) << "no SYN was seen, so no duration is claimed";
  }
  for (const auto& e : mine(closes, "server")) {
    const auto& f = e["fields"];
    EXPECT_EQ(f["pid"].u64(), static_cast<std::uint64_t>(server.pid()));
    EXPECT_EQ(f["bytes_received"].u64(), static_cast<std::uint64_t>(kSize));
    EXPECT_EQ(f["bytes_acked"].u64(), 2u);
    EXPECT_FALSE(f.has("duration_us"));
  }
}

// 200 sockets and snapshot_rows = 50: every snapshot shows exactly 50 rows,
// continuing where the last one stopped, so four snapshots in a row show
// every socket; the gauge says how many waited.
TEST_F(TcpDetail, ALargeTableIsShownInTurnsOfSnapshotRows) {
  constexpr int kConnections = 100, kRows = 50;
  Netwatcher nw(dir_, config("snapshot_rows = 50\n"));
  TcpServer server(TwoHosts::kServer, {kPort}, dir_);
  auto peer = hold_many(kConnections, 10, 4);
  // A whole snapshot taken since: its 50 rows are read after the connections opened.
  const std::uint64_t ready_ns = realtime_ns();
  EXPECT_TRUE(wait_for_events("tcp_conn", [&](const std::vector<Json>& rows) {
    std::size_t after = 0;
    for (const auto& e : rows) after += e["timestamp_ns"].u64() > ready_ns;
    return after >= static_cast<std::size_t>(kRows);
  }));
  auto held = metrics();
  peer.get();
  ASSERT_EQ(nw.stop(), 0) << nw.log();
  // Snapshots 0.5 s apart; the rows of one are read within milliseconds.
  std::vector<std::vector<Json>> snapshots;
  std::uint64_t last_ns = 0;
  for (const auto& e : events("tcp_conn")) {
    std::uint64_t ns = e["timestamp_ns"].u64();
    // Rows come in socket order, each stamped when the iterator read it.
    const std::uint64_t gap = ns > last_ns ? ns - last_ns : last_ns - ns;
    if (snapshots.empty() || gap > 200000000) snapshots.emplace_back();
    snapshots.back().push_back(e);
    last_ns = ns;
  }
  // Socket identity: the tuple seen from its side.
  auto key = [](const Json& e) {
    const auto& f = e["fields"];
    return f["saddr"].str() + ":" + std::to_string(f["sport"].u64()) + ">" + f["daddr"].str() +
           ":" + std::to_string(f["dport"].u64());
  };
  std::size_t full_runs = 0, best_run_cover = 0;
  for (std::size_t i = 0; i + 4 <= snapshots.size(); ++i) {
    bool all_full = true;
    std::set<std::string> seen;
    for (std::size_t j = i; j < i + 4; ++j) {
      all_full = all_full && snapshots[j].size() == static_cast<std::size_t>(kRows);
      for (const auto& e : snapshots[j])
        if (e["fields"]["dport"].u64() == kPort || e["fields"]["sport"].u64() == kPort)
          seen.insert(key(e));
    }
    if (!all_full) continue;
    ++full_runs;
    best_run_cover = std::max(best_run_cover, seen.size());
  }
  std::string sizes;
  for (const auto& snapshot : snapshots) sizes += std::to_string(snapshot.size()) + " ";
  ASSERT_GE(full_runs, 1u) << "4 s of 200 sockets: snapshots of exactly 50 rows, 4 in a row: "
                           << sizes;
  EXPECT_EQ(best_run_cover, 2u * kConnections) << "four turns show every socket";
  for (const auto& snapshot : snapshots)
    EXPECT_LE(snapshot.size(), static_cast<std::size_t>(kRows));
  EXPECT_GE(held.value("netwatcher_tcp_snapshot_deferred_rows").value_or(0),
            2 * kConnections - kRows);
}

TEST_F(TcpDetail, LayerTimesAreCompleteAndATbfQdiscShowsInTheLinkLayer) {
  Netwatcher nw(dir_, config("extra = true\nlayer_time = true\nlayer_events = true\n"));
  TcpServer server(TwoHosts::kServer, {kPort}, dir_);
  one_segment_per_skb();
  // Each run's wall time in microseconds: no segment of it can have spent
  // longer in any layer (the server reads all before it answers, and the
  // client waits for the answer).
  auto timed = [](double& wall_us, const std::function<Json()>& run_pace) {
    const auto start = std::chrono::steady_clock::now();
    Json out = run_pace();
    wall_us =
        std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - start).count();
    return out;
  };
  double fast_us = 0, fast_v6_us = 0, slow_us = 0;
  Json fast = timed(fast_us, [] { return pace(1000, 40, 0.005); });
  Json fast_v6 = timed(fast_v6_us, [] { return pace(700, 15, 0.005, "fd77::2"); });
  // 200 kbit/s: a 1066-byte frame takes 43 ms, so back-to-back sends queue.
  throttle_client_link("200kbit");
  Json slow = timed(slow_us, [] { return pace(1000, 20, 0.001); });
  EXPECT_TRUE(wait_for_close({"10.77.0.2", kPort, "10.77.0.1", slow["sport"].u64()}));
  auto prom = metrics();
  ASSERT_EQ(nw.stop(), 0) << nw.log();

  const auto layers = events("tcp_layer");
  // check_coverage: every byte sent must be in a tx event. Behind the TBF
  // a segment now and then goes unreported (about 1 run in 20, cause not
  // found yet; see the tcp plugin README), so that run checks timing only.
  auto check = [&](const Json& client, double wall_us, std::vector<double>& tx_link,
                   std::vector<double>& tx_total, bool check_coverage,
                   const std::string& client_addr = "10.77.0.1",
                   const std::string& server_addr = "10.77.0.2") {
    const std::uint64_t sport = client["sport"].u64();
    auto tx =
        with_field(with_tuple(layers, {client_addr, sport, server_addr, kPort}), "direction", "tx");
    auto rx =
        with_field(with_tuple(layers, {server_addr, kPort, client_addr, sport}), "direction", "rx");
    std::uint64_t tx_bytes = 0, rx_bytes = 0;
    for (const auto& e : tx) {
      const auto& f = e["fields"];
      for (const char* field : {"link_us", "ip_us", "transport_us", "total_us"}) {
        ASSERT_TRUE(f.has(field)) << field;
        EXPECT_GE(f[field].num(), 0) << field;
        EXPECT_LE(f[field].num(), wall_us) << field << ": longer than the run";
      }
      EXPECT_FALSE(f.has("app_us"));
      tx_total.push_back(f["total_us"].num());
      EXPECT_LE(f["link_us"].num() + f["ip_us"].num() + f["transport_us"].num(),
                f["total_us"].num() + 0.01);
      EXPECT_EQ(f["pid"].u64(), client["pid"].u64());
      tx_bytes += f["length"].u64();
      tx_link.push_back(f["link_us"].num());
    }
    for (const auto& e : rx) {
      const auto& f = e["fields"];
      for (const char* field : {"link_us", "ip_us", "transport_us", "app_us", "total_us"}) {
        ASSERT_TRUE(f.has(field)) << field;
        EXPECT_GE(f[field].num(), 0) << field;
        EXPECT_LE(f[field].num(), wall_us) << field << ": longer than the run";
      }
      EXPECT_LE(f["link_us"].num() + f["ip_us"].num() + f["transport_us"].num() + f["app_us"].num(),
                f["total_us"].num() + 0.01);
      EXPECT_EQ(f["pid"].u64(), static_cast<std::uint64_t>(server.pid())) << "the reader";
      rx_bytes += f["length"].u64();
    }
    // Every byte sent is in a tx event: the events cover the stream from its
    // first byte to the last, with no gap. (Retransmissions, e.g. tail loss
    // probes, add events for bytes already covered.)
    if (check_coverage) {
      std::vector<std::pair<std::uint32_t, std::uint32_t>> ranges;  // relative to the first
      const std::uint32_t base = static_cast<std::uint32_t>(tx.front()["fields"]["seq"].u64());
      for (const auto& e : tx)
        ranges.emplace_back(static_cast<std::uint32_t>(e["fields"]["seq"].u64()) - base,
                            static_cast<std::uint32_t>(e["fields"]["length"].u64()));
      std::sort(ranges.begin(), ranges.end());
      std::uint64_t covered_to = 0;
      for (const auto& [start, length] : ranges) {
        EXPECT_LE(start, covered_to) << "bytes " << covered_to << ".." << start << " in no event";
        covered_to = std::max<std::uint64_t>(covered_to, std::uint64_t{start} + length);
      }
      EXPECT_EQ(covered_to, client["sent"].u64())
          << "tx unmatched: "
          << prom.value("netwatcher_tcp_layer_unmatched_total", {{"direction", "tx"}}).value_or(-1)
          << ", events lost: "
          << prom.value("netwatcher_events_lost_total", {{"plugin", "tcp"}}).value_or(-1);
    }
    EXPECT_GE(tx_bytes, check_coverage ? client["sent"].u64() : 1u);
    EXPECT_GT(rx.size(), 0u);
    EXPECT_LE(rx_bytes, client["sent"].u64());
  };
  std::vector<double> link_fast, link_slow, link_v6, total_fast, total_slow, total_v6;
  check(fast, fast_us, link_fast, total_fast, true);
  check(fast_v6, fast_v6_us, link_v6, total_v6, true, "fd77::1", "fd77::2");
  EXPECT_GE(link_v6.size(), 10u);
  check(slow, slow_us, link_slow, total_slow, false);
  // Unloaded veth segments take tens of microseconds from the send call to
  // the device: nanoseconds taken for microseconds would be a thousand
  // times that, and microseconds for nanoseconds a thousandth.
  for (const auto* totals : {&total_fast, &total_v6}) {
    EXPECT_GT(median(*totals), 1) << "median tx total_us";
    EXPECT_LT(median(*totals), 1000) << "median tx total_us";
  }
  // Writes queued behind a busy link join the tail skb: fewer segments.
  ASSERT_GE(link_fast.size(), 30u);
  ASSERT_GE(link_slow.size(), 5u);
  EXPECT_GT(median(link_slow), 10 * median(link_fast))
      << "median tx link time " << median(link_slow) << " us with TBF vs " << median(link_fast);
  EXPECT_GT(median(link_slow), 20000) << "frames wait ~43 ms each behind the TBF";

  // Every segment of the test is in the histograms, and every histogram
  // sample has its event (with layer_events nothing is sampled silently).
  // Other TCP traffic on the host may add to both, so bound from both sides.
  // The scrape's own segments count too: a snapshot taken while the scrape
  // is being answered has them in the histograms.
  std::map<std::string, double> ours, all;
  for (const auto& e : layers) {
    const auto& f = e["fields"];
    const std::string direction = f["direction"].str();
    all[direction] += 1;
    if ((direction == "tx" && f["dport"].u64() == kPort) ||
        (direction == "rx" && f["sport"].u64() == kPort))
      ours[direction] += 1;
  }
  for (const char* direction : {"tx", "rx"}) {
    for (const char* layer : {"link", "ip", "transport", "application", "total"}) {
      if (std::string(direction) == "tx" && std::string(layer) == "application") continue;
      double count = histogram_count(prom, "netwatcher_tcp_layer_latency_seconds",
                                     {{"layer", layer}, {"direction", direction}});
      EXPECT_GE(count, ours[direction]) << direction << " " << layer;
      EXPECT_LE(count, all[direction]) << direction << " " << layer;
    }
  }
  EXPECT_GT(histogram_count(prom, "netwatcher_tcp_srtt_seconds", {{"daddr", "10.77.0.2"}}), 0);
}

TEST_F(TcpDetail, NamespacesWithoutNetfilterLinksStillGetLinkAndTotalTimes) {
  Netwatcher nw(dir_, config("layer_time = true\nlayer_events = true\n"
                             "layer_namespaces = [\"self\"]\n"));
  TcpServer server(TwoHosts::kServer, {kPort}, dir_);
  Json client = pace(800, 10, 0.005);
  EXPECT_TRUE(wait_for_close({"10.77.0.2", kPort, "10.77.0.1", client["sport"].u64()}));
  ASSERT_EQ(nw.stop(), 0) << nw.log();

  const auto layers = events("tcp_layer");
  const std::uint64_t sport = client["sport"].u64();
  auto tx =
      with_field(with_tuple(layers, {"10.77.0.1", sport, "10.77.0.2", kPort}), "direction", "tx");
  auto rx =
      with_field(with_tuple(layers, {"10.77.0.2", kPort, "10.77.0.1", sport}), "direction", "rx");
  ASSERT_GE(tx.size(), 5u) << nw.log();
  ASSERT_GE(rx.size(), 5u);
  std::uint64_t tx_bytes = 0;
  for (const auto& e : tx) {
    const auto& f = e["fields"];
    // Picked up at the device queue: the IP and transport split is unknown.
    EXPECT_FALSE(f.has("ip_us"));
    EXPECT_FALSE(f.has("transport_us"));
    ASSERT_TRUE(f.has("link_us"));
    ASSERT_TRUE(f.has("total_us"));
    EXPECT_LE(f["link_us"].num(), f["total_us"].num());
    tx_bytes += f["length"].u64();
  }
  EXPECT_EQ(tx_bytes, client["sent"].u64());
  for (const auto& e : rx) {
    const auto& f = e["fields"];
    EXPECT_FALSE(f.has("ip_us"));
    EXPECT_FALSE(f.has("transport_us"));
    for (const char* field : {"link_us", "app_us", "total_us"}) ASSERT_TRUE(f.has(field)) << field;
  }
}

TEST_F(TcpDetail, ASlowerLinkMidFlowIsFlaggedAsALatencyAnomaly) {
  Netwatcher nw(dir_,
                config("layer_time = true\nlayer_events = true\n",
                       "[anomaly]\nwarmup = 10\nmultiplier = 3\n"),
                {"-L"});
  TcpServer server(TwoHosts::kServer, {kPort}, dir_);
  one_segment_per_skb();
  Json steady = pace(500, 30, 0.005);
  throttle_client_link("100kbit");
  Json slow = pace(1000, 8, 0.001);
  EXPECT_TRUE(wait_for_close({"10.77.0.2", kPort, "10.77.0.1", slow["sport"].u64()}));
  auto prom = metrics();
  ASSERT_EQ(nw.stop(), 0) << nw.log();

  // The steady part: 30 segments 5 ms apart on an idle veth. Link, IP and
  // transport times of a few microseconds jitter, and a sample over three
  // times the running mean of one of them flags the segment, so now and
  // then one is; a detector that flags everything, or every sample after its
  // warm-up, flags 20 of them.
  auto steady_tx = with_field(
      with_tuple(events("tcp_layer"), {"10.77.0.1", steady["sport"].u64(), "10.77.0.2", kPort}),
      "direction", "tx");
  ASSERT_GE(steady_tx.size(), 25u);
  std::size_t steady_flagged = 0;
  for (const auto& e : steady_tx) {
    ASSERT_TRUE(e["fields"].has("anomaly"));
    steady_flagged += e["fields"]["anomaly"].boolean();
  }
  EXPECT_LE(steady_flagged, steady_tx.size() / 4) << "the steady part is mostly not an anomaly";

  auto tx = with_field(
      with_tuple(events("tcp_layer"), {"10.77.0.1", slow["sport"].u64(), "10.77.0.2", kPort}),
      "direction", "tx");
  ASSERT_GE(tx.size(), 3u);
  std::size_t flagged = 0;
  for (const auto& e : tx) {
    const auto& f = e["fields"];
    ASSERT_TRUE(f.has("anomaly"));
    if (f["anomaly"].boolean()) ++flagged;
  }
  EXPECT_GE(flagged, 1u) << "link time jumps from microseconds to tens of milliseconds";
  EXPECT_GE(
      prom.value("netwatcher_latency_anomalies_total", {{"plugin", "tcp"}, {"field", "link_us"}})
          .value_or(0),
      1);
  // The first anomaly is always logged (later ones are rate-limited).
  EXPECT_NE(nw.log().find("latency anomaly: tcp.tcp_layer "), std::string::npos) << nw.log();
}

// A segment in the window whose TCP timestamp is older than the last one the
// server recorded fails PAWS (RFC 7323): the kernel drops it before looking
// at its sequence number, and counts it in TcpExtPAWSEstab. netwatcher
// reports it once, as `paws`, and its counter agrees with the kernel's.
TEST_F(TcpDetail, ASegmentFailingPawsIsReportedOnceAndAgreesWithTheKernelsCounter) {
  Netwatcher nw(dir_, config("errors = true\n"));
  TcpServer server(TwoHosts::kServer, {kPort}, dir_);
  const std::uint64_t paws_before = nstat(TwoHosts::kServer, "TcpExtPAWSEstab");
  auto r = run("ip netns exec " + std::string(TwoHosts::kClient) + " /usr/bin/python3 " +
               std::string(NW_TEST_DIR) + "/tcp_paws.py 10.77.0.2 " + std::to_string(kPort));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const Json crafted = parse_json_lines(r.output).at(0);
  const std::uint32_t seq = static_cast<std::uint32_t>(crafted["seq"].u64());
  const Tuple at_server{"10.77.0.2", kPort, "10.77.0.1", crafted["sport"].u64()};
  EXPECT_TRUE(wait_for_events("tcp_error", [&](const std::vector<Json>& errors) {
    return !with_tuple(errors, at_server).empty();
  }));
  auto prom = metrics_when([](const PromText& m) {
    return m.value("netwatcher_tcp_error_packets_total", {{"reason", "paws"}}).value_or(0) >= 1;
  });
  // The client has closed: every segment of the connection has been judged.
  EXPECT_TRUE(wait_for_close(at_server));
  const std::uint64_t paws = nstat(TwoHosts::kServer, "TcpExtPAWSEstab") - paws_before;
  ASSERT_EQ(nw.stop(), 0) << nw.log();

  EXPECT_EQ(paws, 1u) << "the kernel rejected the one crafted segment";
  auto errors = with_tuple(events("tcp_error"), at_server);
  ASSERT_EQ(errors.size(), 1u) << nw.log();
  const auto& f = errors[0]["fields"];
  EXPECT_EQ(f["reason"].str(), "paws");
  EXPECT_EQ(f["kernel_reason"].str(), "TCP_RFC7323_PAWS");
  EXPECT_EQ(f["seq"].u64(), seq);
  EXPECT_EQ(f["ack"].u64(), crafted["ack"].u64());
  EXPECT_EQ(f["payload"].u64(), 10u);
  EXPECT_EQ(f["rcv_nxt"].u64(), seq) << "at exactly the expected sequence number";
  EXPECT_EQ(f["offset"].num(), 0);
  EXPECT_TRUE(f.has("sock"));
  EXPECT_EQ(prom.value("netwatcher_tcp_error_packets_total", {{"reason", "paws"}}),
            static_cast<double>(paws));
  for (const char* other :
       {"bad_checksum", "sequence_before_window", "sequence_beyond_window", "invalid_ack"})
    EXPECT_EQ(prom.value("netwatcher_tcp_error_packets_total", {{"reason", other}}).value_or(0), 0)
        << other;
}

// max_rtt_series = 2, one series per destination, and three destinations:
// the first two destinations sampled keep their series, every sample of the
// third is counted in netwatcher_tcp_srtt_samples_dropped_total (and as a
// refusal of the rtt_series table), in both sampling modes. With a snapshot
// interval longer than the test, the default mode samples only at closes
// (one per socket, both ends are tracked), so its counts are exact; with
// rtt_every_change each socket to the third destination samples at least
// once (its first segment received in ESTABLISHED). IPv6 only keeps loopback
// scrapes and anything else on the host out of the table.
TEST_F(TcpDetail, SrttSeriesBeyondMaxRttSeriesAreCountedAsDroppedSamples) {
  must_run("ip -n nwt-srv addr add fd77::3/64 dev nwt-s0 nodad");
  TcpServer server(TwoHosts::kServer, {kPort}, dir_);
  for (const bool every_change : {false, true}) {
    SCOPED_TRACE(every_change ? "rtt_every_change" : "sampled at snapshots and closes");
    // A second netwatcher in the same folder: without its predecessor's log,
    // whose "running" line would end the wait for its own start at once.
    std::filesystem::remove(dir_.file("events.jsonl"));
    std::filesystem::remove(dir_.file("netwatcher.log"));
    Netwatcher nw(dir_,
                  "snapshot_interval = 3600\n[filter]\nfamily = \"ipv6\"\n"
                  "[plugins.tcp]\nmax_rtt_series = 2\nextra = true\n" +
                      std::string(every_change ? "rtt_every_change = true\n" : "") +
                      sink_config_json(dir_.file("events.jsonl")) +
                      "[[sinks]]\ntype = \"prometheus\"\nlisten = \"127.0.0.1:" +
                      std::to_string(kPromPort) + "\"\n");
    // First fd77::2 (the client's socket) and fd77::1 (the server's), both
    // closed before anything else is sampled. Enough data that each socket
    // receives many segments: in the fallback run a classic tcp_probe
    // program misses a run now and then (another BPF program on the CPU),
    // and with rtt_every_change one sampled segment is all a series needs.
    const auto first = run_client(TwoHosts::kClient, "fd77::2", kPort, {200000}).at(0);
    EXPECT_TRUE(wait_for_events("tcp_close", [&](const std::vector<Json>& closes) {
      return with_tuple(closes, {"fd77::1", first.sport, "fd77::2", kPort}).size() == 1 &&
             with_tuple(closes, {"fd77::2", kPort, "fd77::1", first.sport}).size() == 1;
    }));
    // Then three connections to fd77::3: a third destination, whose samples
    // are dropped, and three more sockets for fd77::1.
    const auto later = run_client(TwoHosts::kClient, "fd77::3", kPort, {200000, 200000, 200000});
    ASSERT_EQ(later.size(), 3u);
    EXPECT_TRUE(wait_for_events("tcp_close", [&](const std::vector<Json>& closes) {
      for (const auto& c : later)
        if (with_tuple(closes, {"fd77::1", c.sport, "fd77::3", kPort}).size() != 1 ||
            with_tuple(closes, {"fd77::3", kPort, "fd77::1", c.sport}).size() != 1)
          return false;
      return true;
    }));
    auto prom = metrics();
    ASSERT_EQ(nw.stop(), 0) << nw.log();

    // Every close carried an srtt (extra = true shows it; each connection
    // moved data both ways).
    std::map<std::string, double> closes_by_daddr;
    for (const auto& e : events("tcp_close")) {
      EXPECT_GT(e["fields"]["srtt_us"].u64(), 0u);
      closes_by_daddr[e["fields"]["daddr"].str()] += 1;
    }
    EXPECT_EQ(closes_by_daddr,
              (std::map<std::string, double>{{"fd77::1", 4}, {"fd77::2", 1}, {"fd77::3", 3}}));
    std::set<std::string> series;
    for (const auto& s : prom.samples)
      if (s.name == "netwatcher_tcp_srtt_seconds_count") series.insert(s.labels.at("daddr"));
    EXPECT_EQ(series, (std::set<std::string>{"fd77::1", "fd77::2"}));
    const double dropped = prom.value("netwatcher_tcp_srtt_samples_dropped_total", {}).value_or(0);
    if (every_change) {
      EXPECT_GE(dropped, 3) << "at least one sample per socket to fd77::3";
    } else {
      EXPECT_EQ(histogram_count(prom, "netwatcher_tcp_srtt_seconds", {{"daddr", "fd77::1"}}), 4);
      EXPECT_EQ(histogram_count(prom, "netwatcher_tcp_srtt_seconds", {{"daddr", "fd77::2"}}), 1);
      EXPECT_EQ(dropped, 3) << "the three close samples of fd77::3";
    }
    const std::map<std::string, std::string> table{{"plugin", "tcp"}, {"table", "rtt_series"}};
    EXPECT_EQ(prom.value("netwatcher_table_capacity", table), 2);
    EXPECT_EQ(prom.value("netwatcher_table_full_total", table), dropped);
  }
}

}  // namespace

TEST_F(TcpDetail, LayerTimeRunsAlongsideTheNetfilterPluginInTheSameHooks) {
  // Both time LOCAL_IN and LOCAL_OUT with BPF netfilter links, which the
  // kernel allows only one of per priority and hook: once, tcp was refused.
  Netwatcher nw(dir_, config("layer_time = true\nlayer_events = true\n", "") +
                          "[plugins.netfilter]\nhooks = [\"input\", \"output\"]\n"
                          "namespaces = [\"*\"]\n");
  TcpServer server(TwoHosts::kServer, {kPort}, dir_);
  Json client = pace(600, 10, 0.005);
  EXPECT_TRUE(wait_for_close({"10.77.0.2", kPort, "10.77.0.1", client["sport"].u64()}));
  PromText prom = metrics();
  ASSERT_EQ(nw.stop(), 0) << nw.log();
  EXPECT_EQ(nw.log().find("disabled"), std::string::npos) << nw.log();

  const std::uint64_t sport = client["sport"].u64();
  auto tx = with_field(with_tuple(events("tcp_layer"), {"10.77.0.1", sport, "10.77.0.2", kPort}),
                       "direction", "tx");
  ASSERT_GE(tx.size(), 5u) << nw.log();
  for (const auto& e : tx) EXPECT_TRUE(e["fields"].has("ip_us"));
  double hooked = 0;
  for (const auto& s : prom.samples)
    if (s.name == "netwatcher_netfilter_packets_total") hooked += s.value;
  EXPECT_GE(hooked, 20);  // our segments, both ways, in and out
}
