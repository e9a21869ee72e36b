// The real netwatcher binary, the real kernel, real TCP traffic between two
// network namespaces; assertions on the events it wrote.
#include <gtest/gtest.h>

#include <array>
#include <chrono>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <thread>

#include "harness.hpp"

using namespace nwtest;

namespace {

std::uint64_t realtime_ns() {
  return static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                        std::chrono::system_clock::now().time_since_epoch())
                                        .count());
}

const Json* find_close(const std::vector<Json>& closes, const std::string& direction,
                       std::uint64_t sport, std::uint64_t dport) {
  for (const auto& e : closes) {
    const auto& f = e["fields"];
    if (f["direction"].str() == direction && f["sport"].u64() == sport && f["dport"].u64() == dport)
      return &e;
  }
  return nullptr;
}

class Tcp : public ::testing::Test {
 protected:
  void SetUp() override {
    NW_REQUIRE_ROOT();
    hosts_ = std::make_unique<TwoHosts>();
  }
  std::vector<Json> events() { return parse_json_lines(read_file(dir_.file("events.jsonl"))); }
  // Waits until `seen` holds for the events written so far.
  bool wait_for_events(const std::function<bool(const std::vector<Json>&)>& seen) {
    return wait_until([&] { return seen(read_json_lines(dir_.file("events.jsonl"))); });
  }
  // Waits until both ends of each connection to `port` have closed.
  bool wait_for_closes(const std::vector<ClientConnection>& clients, std::uint64_t port) {
    return wait_for_events([&](const std::vector<Json>& all) {
      auto closes = events_of(all, "tcp_close");
      for (const auto& c : clients)
        if (!find_close(closes, "client", c.sport, port) ||
            !find_close(closes, "server", port, c.sport))
          return false;
      return true;
    });
  }

  TempDir dir_;
  std::unique_ptr<TwoHosts> hosts_;
};

TEST_F(Tcp, Ipv4ConnectionsReportOwnersTuplesStatesAndExactBytes) {
  Netwatcher nw(dir_, tcp_config(dir_.file("events.jsonl"), "extra = true\n"));
  TcpServer server(TwoHosts::kServer, {5000}, dir_);
  const std::vector<int> sizes = {1000, 2001, 30002, 400003, 5};
  auto clients = run_client(TwoHosts::kClient, "10.77.0.2", 5000, sizes);
  ASSERT_EQ(clients.size(), sizes.size());
  EXPECT_TRUE(wait_for_closes(clients, 5000)) << nw.log();
  ASSERT_EQ(nw.stop(), 0) << nw.log();

  auto all = events();
  auto opens = events_of(all, "tcp_open");
  auto closes = events_of(all, "tcp_close");
  for (const auto& c : clients) {
    SCOPED_TRACE("client port " + std::to_string(c.sport));
    const Json* client = find_close(closes, "client", c.sport, 5000);
    ASSERT_NE(client, nullptr) << nw.log();
    const auto& cf = (*client)["fields"];
    EXPECT_EQ(cf["pid"].u64(), c.pid);
    EXPECT_EQ(cf["comm"].str(), "python3");
    EXPECT_EQ(cf["family"].str(), "ipv4");
    EXPECT_EQ(cf["saddr"].str(), "10.77.0.1");
    EXPECT_EQ(cf["daddr"].str(), "10.77.0.2");
    EXPECT_EQ(cf["bytes_acked"].u64(), c.sent);
    EXPECT_EQ(cf["bytes_received"].u64(), c.received);
    EXPECT_EQ(cf["state"].str(), "FIN_WAIT2");  // then TIME_WAIT, which closes the socket
    EXPECT_GT(cf["duration_us"].u64(), 0u);
    EXPECT_LT(cf["duration_us"].u64(), 10000000u);
    EXPECT_GT(cf["srtt_us"].u64(), 0u);
    EXPECT_GT(cf["cwnd"].u64(), 0u);

    const Json* served = find_close(closes, "server", 5000, c.sport);
    ASSERT_NE(served, nullptr);
    const auto& sf = (*served)["fields"];
    EXPECT_EQ(sf["pid"].u64(), static_cast<std::uint64_t>(server.pid()));
    EXPECT_EQ(sf["saddr"].str(), "10.77.0.2");
    EXPECT_EQ(sf["daddr"].str(), "10.77.0.1");
    EXPECT_EQ(sf["bytes_received"].u64(), c.sent);
    EXPECT_EQ(sf["bytes_acked"].u64(), c.received);
    EXPECT_EQ(sf["state"].str(), "LAST_ACK");
  }
  std::size_t client_opens = 0, server_opens = 0;
  for (const auto& e : opens) {
    const auto& f = e["fields"];
    if (f["direction"].str() == "client" && f["dport"].u64() == 5000) ++client_opens;
    if (f["direction"].str() == "server" && f["sport"].u64() == 5000) ++server_opens;
  }
  EXPECT_EQ(client_opens, sizes.size());
  EXPECT_EQ(server_opens, sizes.size());
}

TEST_F(Tcp, Ipv6ConnectionsAreReported) {
  Netwatcher nw(dir_, tcp_config(dir_.file("events.jsonl")));
  TcpServer server(TwoHosts::kServer, {5000}, dir_);
  auto clients = run_client(TwoHosts::kClient, "fd77::2", 5000, {777});
  EXPECT_TRUE(wait_for_closes(clients, 5000));
  ASSERT_EQ(nw.stop(), 0);
  auto closes = events_of(events(), "tcp_close");
  const Json* client = find_close(closes, "client", clients.at(0).sport, 5000);
  ASSERT_NE(client, nullptr);
  const auto& f = (*client)["fields"];
  EXPECT_EQ(f["family"].str(), "ipv6");
  EXPECT_EQ(f["saddr"].str(), "fd77::1");
  EXPECT_EQ(f["daddr"].str(), "fd77::2");
  EXPECT_EQ(f["bytes_acked"].u64(), 777u);
  EXPECT_FALSE(f.has("srtt_us"));  // extra is off
}

// `ss -tinH` of one established connection in `netns`, as key -> value
// ("cwnd" -> "10", "rtt" -> "0.071/0.035", "bytes_acked" -> "12346").
std::map<std::string, std::string> ss_info(const std::string& netns, std::uint64_t sport,
                                           std::uint64_t dport) {
  auto r = run("ip netns exec " + netns + " ss -tinH state established '( sport = :" +
               std::to_string(sport) + " and dport = :" + std::to_string(dport) + " )'");
  std::map<std::string, std::string> info;
  std::istringstream words(r.output);
  std::string word;
  while (words >> word) {
    auto colon = word.find(':');
    if (colon != std::string::npos && colon > 0)
      info[word.substr(0, colon)] = word.substr(colon + 1);
  }
  return info;
}

// Whichever way the table is read (the map iterator, or sock_diag in the
// fallback run), a snapshot row carries the kernel's own current values.
TEST_F(Tcp, SnapshotsShowLiveConnectionsWithCurrentStatistics) {
  Netwatcher nw(dir_, "snapshot_interval = 0.2\n" +
                          tcp_config(dir_.file("events.jsonl"), "extra = true\nstates = true\n"));
  TcpServer server(TwoHosts::kServer, {5000}, dir_);
  HeldConnection held(TwoHosts::kClient, "10.77.0.2", 5000, 12345, 3.0, dir_);
  const std::uint64_t sport = held.info().sport;
  // Idle once its write is acked and read: what ss says then is what the
  // next snapshots see. (The kernel's bytes_acked counts the SYN.)
  std::map<std::string, std::string> client_ss, server_ss;
  ASSERT_TRUE(wait_until([&] {
    client_ss = ss_info(TwoHosts::kClient, sport, 5000);
    server_ss = ss_info(TwoHosts::kServer, 5000, sport);
    return client_ss["bytes_acked"] == "12346" && server_ss["bytes_received"] == "12345";
  })) << "ss: client bytes_acked "
      << client_ss["bytes_acked"] << ", server bytes_received " << server_ss["bytes_received"];
  const std::uint64_t idle_ns = realtime_ns();
  // A snapshot row of each end read after that.
  auto row_after = [&](const std::vector<Json>& all,
                       const std::string& direction) -> std::optional<Json> {
    for (const auto& e : events_of(all, "tcp_conn")) {
      const auto& f = e["fields"];
      if (e["timestamp_ns"].u64() > idle_ns && f["direction"].str() == direction &&
          f[direction == "client" ? "sport" : "dport"].u64() == sport)
        return e;
    }
    return std::nullopt;
  };
  std::optional<Json> client_row, server_row;
  EXPECT_TRUE(wait_for_events([&](const std::vector<Json>& all) {
    client_row = row_after(all, "client");
    server_row = row_after(all, "server");
    return client_row && server_row;
  }));
  ASSERT_EQ(nw.stop(), 0);
  ASSERT_TRUE(client_ss.count("cwnd") && client_ss.count("rtt")) << "ss printed no tcp_info";
  ASSERT_TRUE(client_row.has_value()) << nw.log();
  ASSERT_TRUE(server_row.has_value());
  // The iterator where the kernel loads it, else (and in the fallback run)
  // sock_diag.
  const bool iterator = !fallback_hooks() && kernel_loads_iterator("bpf_map_elem");
  const char* path = iterator ? "'conn_table' attached via dump_conns"
                              : "'conn_table' attached via user:sock_diag";
  EXPECT_NE(nw.log().find(path), std::string::npos) << nw.log();
  const auto& c = (*client_row)["fields"];
  EXPECT_EQ(c["state"].str(), "ESTABLISHED");
  EXPECT_EQ(c["pid"].u64(), held.info().pid);
  EXPECT_EQ(c["bytes_acked"].u64(), 12345u);
  // The kernel's counter includes the SYN; netwatcher's is payload only.
  EXPECT_EQ(std::to_string(c["bytes_acked"].u64() + 1), client_ss["bytes_acked"]);
  EXPECT_EQ(std::to_string(c["cwnd"].u64()), client_ss["cwnd"]);
  // ss prints srtt in ms with microsecond digits: "0.071/0.035".
  double ss_srtt_ms = std::stod(client_ss["rtt"].substr(0, client_ss["rtt"].find('/')));
  EXPECT_NEAR(c["srtt_us"].u64() / 1000.0, ss_srtt_ms, 0.0015);
  EXPECT_GT(c["srtt_us"].u64(), 0u);
  EXPECT_LT(c["srtt_us"].u64(), 20000u) << "a veth round trip is far below 20 ms";
  // ss leaves out an ssthresh that is still TCP_INFINITE_SSTHRESH.
  if (client_ss.count("ssthresh")) {
    EXPECT_EQ(std::to_string(c["ssthresh"].u64()), client_ss["ssthresh"]);
  } else {
    EXPECT_EQ(c["ssthresh"].u64(), 0x7fffffffu);
  }
  EXPECT_EQ(c["total_retrans"].u64(), 0u);
  EXPECT_GT(c["rwnd"].u64(), 0u);
  EXPECT_GT(c["sndbuf"].u64(), 0u);
  // The connection's age when the row was read: from its start, which its
  // first tcp_state (CLOSE > SYN_SENT) is stamped with, on the same clock.
  std::optional<std::uint64_t> start_ns;
  for (const auto& e : events_of(events(), "tcp_state")) {
    const auto& f = e["fields"];
    if (f["sport"].u64() == sport && f["dport"].u64() == 5000 && f["old_state"].str() == "CLOSE")
      start_ns = e["timestamp_ns"].u64();
  }
  ASSERT_TRUE(start_ns.has_value()) << "no CLOSE > SYN_SENT of the connection";
  EXPECT_EQ(c["duration_us"].u64(), ((*client_row)["timestamp_ns"].u64() - *start_ns) / 1000);
  // sock_diag has no accept backlog for connected sockets: the fallback
  // leaves those fields out instead of reporting 0.
  EXPECT_EQ(c.has("backlog"), iterator);
  EXPECT_EQ(c.has("max_backlog"), iterator);
  const auto& s = (*server_row)["fields"];
  EXPECT_EQ(s["bytes_received"].u64(), 12345u);
  // Received bytes count no SYN in the kernel either (the FIN would count).
  EXPECT_EQ(std::to_string(s["bytes_received"].u64()), server_ss["bytes_received"]);
  EXPECT_EQ(s["pid"].u64(), static_cast<std::uint64_t>(server.pid()));
}

// What a user sees on a terminal: the table through a pty (script(1)), with
// open and close rows interleaving under one header per event type, each
// row tagged with its type, and sockets as kernel tools print them.
TEST_F(Tcp, TheTableOnATerminalHasOneHeaderPerTypeAndHexSockets) {
  const std::string config = dir_.file("tty.toml");
  write_file(config, "[netwatcher]\nplugin_dirs = [\"" + std::string(NW_PLUGIN_DIR) + "\"]\n" +
                         hook_override_line() +
                         "[plugins.tcp]\n[plugins.drop]\nenabled = false\n[[sinks]]\ntype = "
                         "\"stdout\"\n");
  const std::string screen = dir_.file("tty.txt");
  Process terminal({"script", "-qfec", std::string(NW_BINARY) + " --config " + config, screen},
                   dir_.file("script.log"));
  auto wait_for_text = [&](const std::string& text, int count) {
    for (int i = 0; i < 200; ++i) {
      std::string shown = read_file(screen);
      int seen = 0;
      for (auto at = shown.find(text); at != std::string::npos; at = shown.find(text, at + 1))
        ++seen;
      if (seen >= count) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return false;
  };
  ASSERT_TRUE(wait_for_text(" running: ", 1)) << read_file(screen);
  TcpServer server(TwoHosts::kServer, {5000}, dir_);
  auto clients = run_client(TwoHosts::kClient, "10.77.0.2", 5000, {100, 200, 300});
  ASSERT_EQ(clients.size(), 3u);
  ASSERT_TRUE(wait_for_text(" tcp_close ", 6)) << read_file(screen);
  terminal.stop();
  std::istringstream lines(read_file(screen));
  std::string line;
  int headers = 0, rows = 0, hex_sockets = 0;
  while (std::getline(lines, line)) {
    if (line.rfind("TIME ", 0) == 0) {
      ++headers;
      EXPECT_NE(line.find(" EVENT "), std::string::npos) << line;
    }
    if (line.find(" tcp_open ") != std::string::npos ||
        line.find(" tcp_close ") != std::string::npos) {
      ++rows;
      hex_sockets += line.find(" 0xffff") != std::string::npos;
    }
  }
  EXPECT_EQ(headers, 2) << read_file(screen);  // tcp_open and tcp_close, once each
  EXPECT_GE(rows, 12);                         // both ends of three connections
  EXPECT_EQ(hex_sockets, rows);
}

TEST_F(Tcp, AllConnKeepsClosedConnectionsInTheTable) {
  for (bool all_conn : {false, true}) {
    SCOPED_TRACE(all_conn ? "with -a" : "without -a");
    TempDir dir;
    std::vector<std::string> args;
    if (all_conn) args.push_back("-a");
    // Keys before any table header land in [netwatcher].
    Netwatcher nw(dir, "snapshot_interval = 0.2\n" + tcp_config(dir.file("events.jsonl")), args);
    TcpServer server(TwoHosts::kServer, {5000}, dir);
    HeldConnection held(TwoHosts::kClient, "10.77.0.2", 5000, 10, 3.0, dir);
    auto clients = run_client(TwoHosts::kClient, "10.77.0.2", 5000, {100, 200});
    const std::uint64_t closed_ns = realtime_ns();
    // Two snapshots begun after the connections closed: the first of them is
    // then complete, closed connections and all.
    std::set<std::uint64_t> closed_ports, live_ports;
    EXPECT_TRUE(wait_until([&] {
      closed_ports.clear();
      live_ports.clear();
      std::size_t held_rows_after = 0;
      for (const auto& e : events_of(read_json_lines(dir.file("events.jsonl")), "tcp_conn")) {
        const auto& f = e["fields"];
        if (f["direction"].str() != "client") continue;
        (f["state"].str() == "CLOSE" ? closed_ports : live_ports).insert(f["sport"].u64());
        held_rows_after +=
            f["sport"].u64() == held.info().sport && e["timestamp_ns"].u64() > closed_ns;
      }
      return held_rows_after >= 2;
    })) << nw.log();
    ASSERT_EQ(nw.stop(), 0);
    EXPECT_TRUE(live_ports.count(held.info().sport)) << nw.log();
    EXPECT_EQ(closed_ports.count(clients[0].sport) + closed_ports.count(clients[1].sport),
              all_conn ? 2u : 0u);
  }
}

// The kernel programs apply the filter: the host-side filter behind them
// (netwatcher_events_filtered_total) never sees an event to drop.
TEST_F(Tcp, PortFiltersDropOtherConnectionsInTheKernel) {
  constexpr int kPromPort = 41496;
  Netwatcher nw(dir_,
                tcp_config(dir_.file("events.jsonl")) +
                    "[[sinks]]\ntype = \"prometheus\"\nlisten = \"127.0.0.1:" +
                    std::to_string(kPromPort) + "\"\n",
                {"-d", "5001"});
  TcpServer server(TwoHosts::kServer, {5000, 5001}, dir_);
  auto to_5000 = run_client(TwoHosts::kClient, "10.77.0.2", 5000, {10, 20});
  auto to_5001 = run_client(TwoHosts::kClient, "10.77.0.2", 5001, {30, 40});
  // The connections to 5000 ended first: once those to 5001 are reported,
  // theirs would have been too.
  EXPECT_TRUE(wait_for_events([&](const std::vector<Json>& all) {
    auto closes = events_of(all, "tcp_close");
    for (const auto& c : to_5001)
      if (!find_close(closes, "client", c.sport, 5001)) return false;
    return true;
  }));
  auto metrics = parse_prometheus(http_get(kPromPort, "/metrics"));
  ASSERT_EQ(nw.stop(), 0);
  EXPECT_EQ(metrics.value("netwatcher_events_filtered_total", {{"plugin", "tcp"}}), 0)
      << "the host-side filter dropped events the kernel should have";
  // And at shutdown, in the plugin's summary line.
  const std::string log = nw.log();
  const auto summary = log.find("plugin 'tcp': ", log.find("shutting down"));
  ASSERT_NE(summary, std::string::npos) << log;
  const std::string line = log.substr(summary, log.find('\n', summary) - summary);
  EXPECT_NE(line.find(" decode errors, 0 filtered, "), std::string::npos) << line;
  auto all = events();
  ASSERT_FALSE(all.empty());
  for (const auto& e : all) {
    if (e["plugin"].str() == "tcp") {
      EXPECT_EQ(e["fields"]["dport"].u64(), 5001u) << e["event"].str();
    }
  }
  auto closes = events_of(all, "tcp_close");
  for (const auto& c : to_5001) EXPECT_NE(find_close(closes, "client", c.sport, 5001), nullptr);
  for (const auto& c : to_5000) EXPECT_EQ(find_close(closes, "client", c.sport, 5000), nullptr);
}

TEST_F(Tcp, PidFilterKeepsOnlyThatProcess) {
  TcpServer server(TwoHosts::kServer, {5000}, dir_);
  Netwatcher nw(dir_, tcp_config(dir_.file("events.jsonl")), {"-p", std::to_string(server.pid())});
  auto clients = run_client(TwoHosts::kClient, "10.77.0.2", 5000, {50, 60, 70});
  // The server's end closes last (on the client's final ACK).
  EXPECT_TRUE(wait_for_events([&](const std::vector<Json>& all) {
    auto closes = events_of(all, "tcp_close");
    for (const auto& c : clients)
      if (!find_close(closes, "server", 5000, c.sport)) return false;
    return true;
  }));
  ASSERT_EQ(nw.stop(), 0);
  auto closes = events_of(events(), "tcp_close");
  EXPECT_EQ(closes.size(), clients.size());
  for (const auto& e : closes) {
    EXPECT_EQ(e["fields"]["pid"].u64(), static_cast<std::uint64_t>(server.pid()));
    EXPECT_EQ(e["fields"]["direction"].str(), "server");
  }
}

// -s: the local port, so of the two ends only the server's socket is ours.
TEST_F(Tcp, LocalPortFilterKeepsOnlyTheServersEnd) {
  Netwatcher nw(dir_, tcp_config(dir_.file("events.jsonl")), {"-s", "5001"});
  TcpServer server(TwoHosts::kServer, {5000, 5001}, dir_);
  auto to_5000 = run_client(TwoHosts::kClient, "10.77.0.2", 5000, {10});
  auto to_5001 = run_client(TwoHosts::kClient, "10.77.0.2", 5001, {30, 40});
  EXPECT_TRUE(wait_for_events([&](const std::vector<Json>& all) {
    auto closes = events_of(all, "tcp_close");
    for (const auto& c : to_5001)
      if (!find_close(closes, "server", 5001, c.sport)) return false;
    return true;
  }));
  ASSERT_EQ(nw.stop(), 0) << nw.log();
  auto all = events();
  ASSERT_FALSE(all.empty());
  for (const auto& e : all) {
    EXPECT_EQ(e["fields"]["sport"].u64(), 5001u) << e["event"].str();
    EXPECT_EQ(e["fields"]["direction"].str(), "server") << e["event"].str();
  }
  EXPECT_EQ(events_of(all, "tcp_close").size(), to_5001.size());
  EXPECT_EQ(events_of(all, "tcp_open").size(), to_5001.size());
}

// --raddr / [filter] local_addresses: networks of either family, applied in
// the kernel (an LPM trie), local and remote addresses separately.
TEST_F(Tcp, AddressFiltersKeepOnlyConnectionsInTheNetworks) {
  constexpr int kPromPort = 41496;
  struct Case {
    std::vector<std::string> flags;
    std::string filter_table;
    // Which ends pass: {v4 client, v4 server, v6 client, v6 server}.
    std::array<bool, 4> kept;
  };
  const std::vector<Case> cases = {
      // Remote address: the server's v4 address alone, and all of fd77::/64.
      {{"--raddr", "10.77.0.2,fd77::/64"}, "", {true, false, true, true}},
      // Local address from the config file: the client's v4 end only.
      {{}, "[filter]\nlocal_addresses = [\"10.77.0.1/32\"]\n", {true, false, false, false}},
      // A /30 holding both v4 ends, and a v6 network holding neither.
      {{"--laddr", "10.77.0.0/30,fd00:1::/32"}, "", {true, true, false, false}},
  };
  for (const auto& c : cases) {
    TempDir dir;
    SCOPED_TRACE(c.filter_table + (c.flags.empty() ? "" : c.flags[1]));
    Netwatcher nw(dir,
                  c.filter_table + tcp_config(dir.file("events.jsonl")) +
                      "[[sinks]]\ntype = \"prometheus\"\nlisten = \"127.0.0.1:" +
                      std::to_string(kPromPort) + "\"\n",
                  c.flags);
    TcpServer server(TwoHosts::kServer, {5000}, dir);
    auto v4 = run_client(TwoHosts::kClient, "10.77.0.2", 5000, {100, 200});
    auto v6 = run_client(TwoHosts::kClient, "fd77::2", 5000, {300, 400});
    // Every connection's client end closes before the server's: wait for
    // the last kept end of every connection, or for the v4 client ends
    // (kept in every case) when no server end is.
    const bool server_kept = c.kept[1] || c.kept[3];
    EXPECT_TRUE(wait_until([&] {
      auto closes = events_of(read_json_lines(dir.file("events.jsonl")), "tcp_close");
      for (const auto& conn : v4)
        if (!find_close(closes, c.kept[1] ? "server" : "client", c.kept[1] ? 5000 : conn.sport,
                        c.kept[1] ? conn.sport : 5000))
          return false;
      for (const auto& conn : v6)
        if (c.kept[3] && !find_close(closes, "server", 5000, conn.sport)) return false;
      return true;
    }));
    if (!server_kept) std::this_thread::sleep_for(std::chrono::milliseconds(300));
    auto metrics = parse_prometheus(http_get(kPromPort, "/metrics"));
    ASSERT_EQ(nw.stop(), 0) << nw.log();
    EXPECT_EQ(metrics.value("netwatcher_events_filtered_total", {{"plugin", "tcp"}}), 0)
        << "the host-side filter dropped events the kernel should have";
    auto closes = events_of(parse_json_lines(read_file(dir.file("events.jsonl"))), "tcp_close");
    for (const auto& conn : v4) {
      EXPECT_EQ(find_close(closes, "client", conn.sport, 5000) != nullptr, c.kept[0]);
      EXPECT_EQ(find_close(closes, "server", 5000, conn.sport) != nullptr, c.kept[1]);
    }
    for (const auto& conn : v6) {
      EXPECT_EQ(find_close(closes, "client", conn.sport, 5000) != nullptr, c.kept[2]);
      EXPECT_EQ(find_close(closes, "server", 5000, conn.sport) != nullptr, c.kept[3]);
    }
    std::size_t expected = 0;
    for (std::size_t end = 0; end < 4; ++end) expected += c.kept[end] ? 2 : 0;
    EXPECT_EQ(closes.size(), expected);
  }
}

// -4 and -6: one family's connections, never the other's.
TEST_F(Tcp, FamilyFiltersKeepOnlyThatFamily) {
  for (const std::string family : {"ipv4", "ipv6"}) {
    SCOPED_TRACE(family);
    TempDir dir;
    Netwatcher nw(dir, tcp_config(dir.file("events.jsonl")), {family == "ipv4" ? "-4" : "-6"});
    TcpServer server(TwoHosts::kServer, {5000}, dir);
    auto v4 = run_client(TwoHosts::kClient, "10.77.0.2", 5000, {100, 200});
    auto v6 = run_client(TwoHosts::kClient, "fd77::2", 5000, {300, 400});
    const auto& wanted = family == "ipv4" ? v4 : v6;
    EXPECT_TRUE(wait_until([&] {
      auto closes = events_of(read_json_lines(dir.file("events.jsonl")), "tcp_close");
      for (const auto& c : wanted)
        if (!find_close(closes, "client", c.sport, 5000)) return false;
      return true;
    }));
    ASSERT_EQ(nw.stop(), 0) << nw.log();
    auto all = parse_json_lines(read_file(dir.file("events.jsonl")));
    for (const auto& e : all) EXPECT_EQ(e["fields"]["family"].str(), family) << e["event"].str();
    // Both ends of each wanted connection, nothing more.
    EXPECT_EQ(events_of(all, "tcp_close").size(), 2 * wanted.size());
  }
}

TEST_F(Tcp, RefusedConnectionIsReportedAsClosedFromSynSent) {
  Netwatcher nw(dir_, tcp_config(dir_.file("events.jsonl")));
  auto result =
      run("ip netns exec nwt-cli /usr/bin/python3 -c \"import socket\n"
          "try:\n  socket.create_connection(('10.77.0.2', 5999), timeout=5)\n"
          "except ConnectionRefusedError:\n  print('refused')\"");
  EXPECT_NE(result.output.find("refused"), std::string::npos) << result.output;
  EXPECT_TRUE(wait_for_events([](const std::vector<Json>& all) {
    for (const auto& e : events_of(all, "tcp_close"))
      if (e["fields"]["dport"].u64() == 5999) return true;
    return false;
  }));
  ASSERT_EQ(nw.stop(), 0);
  bool found = false;
  for (const auto& e : events_of(events(), "tcp_close")) {
    const auto& f = e["fields"];
    if (f["dport"].u64() == 5999) {
      found = true;
      EXPECT_EQ(f["state"].str(), "SYN_SENT");
      EXPECT_EQ(f["direction"].str(), "client");
      EXPECT_EQ(f["bytes_acked"].u64(), 0u);
    }
  }
  EXPECT_TRUE(found);
  EXPECT_TRUE(events_of(events(), "tcp_open").empty());
}

// Retransmissions count segments, as the kernel's RetransSegs does: a
// GSO skb of many segments is many retransmits (it used to be one).
TEST_F(Tcp, RetransmittedSegmentsEqualTheKernelsRetransSegs) {
  constexpr int kPort = 41497;
  Netwatcher nw(dir_, "snapshot_interval = 0.2\n[filter]\ndport = [5000]\n" +
                          tcp_config(dir_.file("events.jsonl"), "retrans = true\n") +
                          "[[sinks]]\ntype = \"prometheus\"\nlisten = \"127.0.0.1:" +
                          std::to_string(kPort) + "\"\n");
  TcpServer server(TwoHosts::kServer, {5000}, dir_);
  nft(TwoHosts::kServer,
      "table inet nwloss {\n chain in {\n  type filter hook input priority 0;\n  tcp dport 5000 "
      "numgen inc mod 20 == 7 drop\n }\n}\n");
  const std::uint64_t before = nstat(TwoHosts::kClient, "TcpRetransSegs");
  auto clients = run_client(TwoHosts::kClient, "10.77.0.2", 5000, {3000000});
  ASSERT_EQ(clients.size(), 1u);
  const std::uint64_t kernel = nstat(TwoHosts::kClient, "TcpRetransSegs") - before;
  // Every 20th segment (GSO skbs of up to 64 KB, so 3 MB is 50 or more) is lost.
  ASSERT_GT(kernel, 2u) << "every 20th packet lost retransmits";
  auto counted = [&](const PromText& m) {
    return m.value("netwatcher_tcp_retransmits_total", {{"type", "fast"}}).value_or(0) +
           m.value("netwatcher_tcp_retransmits_total", {{"type", "timeout"}}).value_or(0);
  };
  PromText metrics;
  for (int i = 0; i < 50; ++i) {  // mirrored from the kernel every snapshot
    metrics = parse_prometheus(http_get(kPort, "/metrics"));
    if (counted(metrics) >= static_cast<double>(kernel)) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_EQ(nw.stop(), 0) << nw.log();
  EXPECT_EQ(counted(metrics), static_cast<double>(kernel));
  const double skbs = metrics.value("netwatcher_tcp_retransmitted_skbs_total", {}).value_or(0);
  EXPECT_GT(skbs, 0);
  EXPECT_LE(skbs, static_cast<double>(kernel));
  std::uint64_t event_segments = 0;
  for (const auto& e : events_of(events(), "tcp_retransmit")) {
    EXPECT_GE(e["fields"]["segments"].u64(), 1u);
    event_segments += e["fields"]["segments"].u64();
  }
  EXPECT_EQ(event_segments, kernel);
}

// Since 6.9 the retransmit tracepoint also fires for failed attempts, and
// the errno alone does not tell whether the kernel counted one: an attempt
// netfilter drops on the way out (-EPERM) is counted, one refused for want
// of a route (-EHOSTUNREACH) is not, and the transmit path can return either
// kind of error after counting. Each case against the kernel's own counts.
void check_failed_retransmits_are_counted_as_the_kernel_does(Netwatcher& nw, const TempDir& dir,
                                                             int prom_port,
                                                             const std::string& block,
                                                             const std::string& unblock,
                                                             bool kernel_counts_failures) {
  TcpServer server(TwoHosts::kServer, {5000}, dir);
  // The server drops the segment first, so that it waits in the
  // retransmit queue; then the client's own retransmissions are blocked
  // (every RTO and every 0.5 s resource probe after), then let through.
  write_file(dir.file("failing.py"), R"(import json, socket, subprocess, sys, time
def sh(cmd):
    subprocess.run(["sh", "-c", cmd], check=True)
def server_nft(*args):
    subprocess.run(["ip", "netns", "exec", "nwt-srv", "nft", *args], check=True)
s = socket.create_connection(("10.77.0.2", 5000))
s.sendall(b"a" * 100)
time.sleep(0.3)
server_nft("add", "table", "inet", "nwt_in")
server_nft("add", "chain", "inet", "nwt_in", "in", "{ type filter hook input priority 0; }")
server_nft("add", "rule", "inet", "nwt_in", "in", "tcp", "dport", "5000", "drop")
s.sendall(b"b" * 1000)
time.sleep(0.5)
sh(sys.argv[1])
time.sleep(1.5)
sh(sys.argv[2])
server_nft("delete", "table", "inet", "nwt_in")
s.shutdown(socket.SHUT_WR)
while s.recv(100):
    pass
print(json.dumps({"sport": s.getsockname()[1]}))
s.close()
)");
  const std::uint64_t segs_before = nstat(TwoHosts::kClient, "TcpRetransSegs");
  const std::uint64_t fails_before = nstat(TwoHosts::kClient, "TcpExtTCPRetransFail");
  auto result = run("ip netns exec nwt-cli /usr/bin/python3 " + dir.file("failing.py") + " '" +
                    block + "' '" + unblock + "'");
  ASSERT_EQ(result.exit_code, 0) << result.output;
  const std::uint64_t sport = parse_json(result.output)["sport"].u64();
  const std::uint64_t kernel_segs = nstat(TwoHosts::kClient, "TcpRetransSegs") - segs_before;
  const std::uint64_t kernel_fails =
      nstat(TwoHosts::kClient, "TcpExtTCPRetransFail") - fails_before;
  if (kernel_counts_failures)
    EXPECT_GE(kernel_fails, 1u) << "the blocked retransmissions must have failed after counting";
  else
    EXPECT_EQ(kernel_fails, 0u);
  Json client;
  ASSERT_TRUE(wait_until([&] {
    const auto closes = events_of(read_json_lines(dir.file("events.jsonl")), "tcp_close");
    const Json* close = find_close(closes, "client", sport, 5000);
    if (close) client = *close;
    return close != nullptr;
  }));
  const auto& f = client["fields"];
  PromText metrics;
  auto counted = [&] {
    return metrics.value("netwatcher_tcp_retransmits_total", {{"type", "fast"}}).value_or(0) +
           metrics.value("netwatcher_tcp_retransmits_total", {{"type", "timeout"}}).value_or(0);
  };
  wait_until([&] {
    metrics = parse_prometheus(http_get(prom_port, "/metrics"));
    return counted() >= static_cast<double>(kernel_segs);
  });
  ASSERT_EQ(nw.stop(), 0) << nw.log();
  EXPECT_GE(f["timeout_retrans"].u64(), 2u) << "RTOs while blocked, and one after";
  EXPECT_EQ(f["total_retrans"].u64(), kernel_segs);
  EXPECT_EQ(f["timeout_retrans"].u64() + f["fast_retrans"].u64(), kernel_segs);
  EXPECT_EQ(counted(), static_cast<double>(kernel_segs));
  std::uint64_t event_segments = 0;
  for (const auto& e : events_of(read_json_lines(dir.file("events.jsonl")), "tcp_retransmit"))
    if (e["fields"]["sport"].u64() == sport) event_segments += e["fields"]["segments"].u64();
  EXPECT_EQ(event_segments, kernel_segs);
}

TEST_F(Tcp, RetransmissionsNetfilterDropsOnTheWayOutCountAsTheKernelCountsThem) {
  constexpr int kPort = 41416;
  Netwatcher nw(dir_, "snapshot_interval = 0.2\n" +
                          tcp_config(dir_.file("events.jsonl"), "extra = true\nretrans = true\n") +
                          "[[sinks]]\ntype = \"prometheus\"\nlisten = \"127.0.0.1:" +
                          std::to_string(kPort) + "\"\n");
  check_failed_retransmits_are_counted_as_the_kernel_does(
      nw, dir_, kPort,
      "nft add table inet nwt_out && nft add chain inet nwt_out out "
      "\"{ type filter hook output priority 0; }\" && "
      "nft add rule inet nwt_out out tcp dport 5000 drop",
      "nft delete table inet nwt_out", true);
}

TEST_F(Tcp, RetransmissionsRefusedForWantOfARouteAreNotCounted) {
  constexpr int kPort = 41417;
  Netwatcher nw(dir_, "snapshot_interval = 0.2\n" +
                          tcp_config(dir_.file("events.jsonl"), "extra = true\nretrans = true\n") +
                          "[[sinks]]\ntype = \"prometheus\"\nlisten = \"127.0.0.1:" +
                          std::to_string(kPort) + "\"\n");
  check_failed_retransmits_are_counted_as_the_kernel_does(
      nw, dir_, kPort, "ip route del 10.77.0.0/24 dev nwt-c0",
      "ip route add 10.77.0.0/24 dev nwt-c0 src 10.77.0.1", false);
}

TEST_F(Tcp, RetransmitsAfterTimeoutAreCountedPerConnection) {
  // Kernel-side counters are mirrored into metrics every snapshot_interval.
  Netwatcher nw(dir_, "snapshot_interval = 0.2\n" +
                          tcp_config(dir_.file("events.jsonl"), "extra = true\nretrans = true\n") +
                          "[[sinks]]\ntype = \"prometheus\"\nlisten = \"127.0.0.1:41498\"\n");
  TcpServer server(TwoHosts::kServer, {5000}, dir_);
  // The client blackholes its own traffic at the server for ~1.5 s mid-flow,
  // so its segment is retransmitted on RTO, then lets it through.
  write_file(dir_.file("lossy.py"), R"(import json, socket, subprocess, time
def nft(*args):
    subprocess.run(["ip", "netns", "exec", "nwt-srv", "nft", *args], check=True)
s = socket.create_connection(("10.77.0.2", 5000))
s.sendall(b"a" * 100)
time.sleep(0.3)
nft("add", "table", "inet", "nwtest")
nft("add", "chain", "inet", "nwtest", "in", "{ type filter hook input priority 0; }")
nft("add", "rule", "inet", "nwtest", "in", "tcp", "dport", "5000", "drop")
s.sendall(b"b" * 1000)
time.sleep(1.5)
nft("delete", "table", "inet", "nwtest")
s.shutdown(socket.SHUT_WR)
while s.recv(100):
    pass
print(json.dumps({"sport": s.getsockname()[1]}))
s.close()
)");
  auto result = run("ip netns exec nwt-cli /usr/bin/python3 " + dir_.file("lossy.py"));
  ASSERT_EQ(result.exit_code, 0) << result.output;
  std::uint64_t sport = parse_json(result.output)["sport"].u64();
  EXPECT_TRUE(wait_for_events([&](const std::vector<Json>& all) {
    return find_close(events_of(all, "tcp_close"), "client", sport, 5000) != nullptr;
  }));
  auto closes = events_of(events(), "tcp_close");
  const Json* client = find_close(closes, "client", sport, 5000);
  ASSERT_NE(client, nullptr) << nw.log();
  const auto& f = (*client)["fields"];
  // Mirrored into the metric at the next snapshot.
  PromText metrics;
  wait_until([&] {
    metrics = parse_prometheus(http_get(41498, "/metrics"));
    return metrics.value("netwatcher_tcp_retransmits_total", {{"type", "timeout"}}).value_or(0) >=
           static_cast<double>(f["timeout_retrans"].u64());
  });
  ASSERT_EQ(nw.stop(), 0);
  EXPECT_GE(f["timeout_retrans"].u64(), 1u);
  EXPECT_EQ(f["total_retrans"].u64(), f["timeout_retrans"].u64() + f["fast_retrans"].u64());
  EXPECT_EQ(f["bytes_acked"].u64(), 1100u);  // retransmitted bytes are not counted twice
  EXPECT_GE(metrics.value("netwatcher_tcp_retransmits_total", {{"type", "timeout"}}).value_or(0),
            static_cast<double>(f["timeout_retrans"].u64()));
}

TEST_F(Tcp, PrometheusEndpointServesValidTextWithTheCounts) {
  Netwatcher nw(dir_, tcp_config(dir_.file("events.jsonl")) +
                          "[[sinks]]\ntype = \"prometheus\"\nlisten = \"127.0.0.1:41499\"\n");
  TcpServer server(TwoHosts::kServer, {5000}, dir_);
  run_client(TwoHosts::kClient, "10.77.0.2", 5000, {1, 2, 3});
  // Until the six closes are counted (each scrape refreshes the counts).
  std::string text;
  PromText parsed;
  wait_until([&] {
    text = http_get(41499, "/metrics");
    try {
      parsed = parse_prometheus(text);
    } catch (const std::exception&) {
      return true;  // asserted below
    }
    return parsed.value("netwatcher_events_total", {{"plugin", "tcp"}, {"event", "tcp_close"}})
               .value_or(0) >= 6;
  });
  ASSERT_NO_THROW(parsed = parse_prometheus(text)) << text;
  EXPECT_EQ(parsed.families["netwatcher_tcp_connections_opened_total"].type, "counter");
  EXPECT_GE(parsed.value("netwatcher_tcp_connections_opened_total", {{"direction", "client"}})
                .value_or(0),
            3);
  EXPECT_GE(parsed.value("netwatcher_tcp_connections_closed_total", {{"direction", "server"}})
                .value_or(0),
            3);
  EXPECT_EQ(parsed.value("netwatcher_plugin_up", {{"plugin", "tcp"}}), 1);
  EXPECT_EQ(parsed.value("netwatcher_events_lost_total", {{"plugin", "tcp"}}), 0);
  EXPECT_EQ(parsed.value("netwatcher_plugin_hook_attached",
                         {{"plugin", "tcp"},
                          {"hook", "inet_sock_set_state"},
                          {"program", fallback_hooks() ? "set_state_tp" : "set_state_btf"}}),
            1);
  EXPECT_GE(parsed.value("netwatcher_events_total", {{"plugin", "tcp"}, {"event", "tcp_close"}})
                .value_or(0),
            6);
  EXPECT_EQ(
      parsed.value("netwatcher_sink_dropped_total", {{"sink", "json"}, {"reason", "queue_full"}}),
      0);
  ASSERT_EQ(nw.stop(), 0);
}

}  // namespace
