// The mysql plugin against a real MariaDB server (mariadbd from Debian, a
// datadir of its own made by mariadb-install-db) in one namespace and real
// clients in another: the mariadb command-line client, mariadb-admin and
// sysbench with prepared statements. Every command once per local socket,
// with exact statements, statuses, rows, error codes and databases, and
// metrics that match.
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <map>
#include <memory>
#include <regex>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include "harness.hpp"

using namespace nwtest;

namespace {

constexpr int kMysqlPort = 41440;
constexpr int kPromPort = 41441;
constexpr const char* kClientNs = "nwt-mycli";
constexpr const char* kServerNs = "nwt-mysrv";
constexpr const char* kClientIp = "10.118.18.1";
constexpr const char* kServerIp = "10.118.18.2";
constexpr const char* kUser = "app";
constexpr const char* kPassword = "app-pw-18";

void sh(const std::string& command) {
  auto r = run(command);
  if (r.exit_code != 0) throw std::runtime_error(command + ": " + r.output);
}

// Two namespaces of this test's own, joined by a veth pair.
class MysqlHosts {
 public:
  MysqlHosts() {
    hold_machine_lock();
    run(std::string("ip netns del ") + kClientNs + " 2>/dev/null; ip netns del " + kServerNs +
        " 2>/dev/null");
    sh(std::string("ip netns add ") + kClientNs + " && ip netns add " + kServerNs);
    sh(std::string("ip link add nwt-myc0 netns ") + kClientNs +
       " type veth peer name nwt-mys0 netns " + kServerNs);
    for (auto [ns, dev, ip] : {std::tuple{kClientNs, "nwt-myc0", kClientIp},
                               std::tuple{kServerNs, "nwt-mys0", kServerIp}}) {
      const std::string in = std::string("ip -n ") + ns + " ";
      sh(in + "link set lo up && " + in + "addr add " + ip + "/24 dev " + dev + " && " + in +
         "link set " + dev + " up");
    }
  }
  ~MysqlHosts() { run(std::string("ip netns del ") + kClientNs + "; ip netns del " + kServerNs); }
};

// One mariadbd for the whole suite: installing a datadir takes seconds.
struct Server {
  MysqlHosts hosts;
  TempDir dir;
  std::unique_ptr<Process> mariadbd;

  std::string socket() const { return dir.file("mysqld.sock"); }
  CommandResult root_sql(const std::string& sql) const {
    write_file(dir.file("root.sql"), sql);
    return run("mariadb --no-defaults --socket=" + socket() + " -uroot < " + dir.file("root.sql") +
               " 2>&1");
  }

  Server() {
    const std::string data = dir.file("data");
    auto install = run(
        "mariadb-install-db --no-defaults --user=root --skip-test-db --datadir=" + data + " 2>&1");
    if (install.exit_code != 0) throw std::runtime_error("mariadb-install-db: " + install.output);
    // TLS for the clients that ask (--ssl); the others stay in cleartext.
    auto cert =
        run("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "
            "-days 1 -subj /CN=mariadb -keyout " +
            dir.file("key.pem") + " -out " + dir.file("cert.pem") + " 2>&1");
    if (cert.exit_code != 0) throw std::runtime_error("openssl req: " + cert.output);
    mariadbd = std::make_unique<Process>(
        std::vector<std::string>{
            "ip", "netns", "exec", kServerNs, "mariadbd", "--no-defaults", "--user=root",
            "--datadir=" + data, "--socket=" + socket(), "--pid-file=" + dir.file("mysqld.pid"),
            "--port=" + std::to_string(kMysqlPort), std::string("--bind-address=") + kServerIp,
            "--skip-name-resolve", "--innodb-buffer-pool-size=32M", "--innodb-log-file-size=16M",
            "--log-error=" + dir.file("mysqld.err"), "--ssl-cert=" + dir.file("cert.pem"),
            "--ssl-key=" + dir.file("key.pem")},
        dir.file("mysqld.out"));
    // The unix socket answers once the server is up; the user is made there
    // (root logs in by unix_socket), then the network login is a real one.
    if (!wait_until([&] { return root_sql("SELECT 1;\n").exit_code == 0; },
                    std::chrono::seconds(60)))
      throw std::runtime_error("mariadbd did not start: " + read_file(dir.file("mysqld.err")));
    auto made = root_sql(std::string("CREATE USER '") + kUser + "'@'%' IDENTIFIED BY '" +
                         kPassword + "';\nGRANT ALL ON *.* TO '" + kUser +
                         "'@'%';\nCREATE DATABASE shop;\nCREATE DATABASE sbtest;\n");
    if (made.exit_code != 0) throw std::runtime_error("creating the user: " + made.output);
  }
};

class Mysql : public ::testing::Test {
 protected:
  static void TearDownTestSuite() { server_.reset(); }

  void SetUp() override {
    NW_REQUIRE_ROOT();
    if (!server_) server_ = std::make_unique<Server>();
  }

  // Cleartext unless `flags` ask for TLS: the server offers it, and the
  // client would take it.
  static std::string client_args(const std::string& db, const std::string& flags = "") {
    const std::string tls = flags.find("--ssl") == std::string::npos ? " --skip-ssl" : "";
    return std::string(" --no-defaults -h ") + kServerIp + " -P " + std::to_string(kMysqlPort) +
           " -u" + kUser + " -p" + kPassword + tls + " " + flags + " " + db;
  }
  // The mariadb client in the client namespace, reading `sql` as a script.
  CommandResult cli(const std::string& sql, const std::string& db, const std::string& flags = "") {
    write_file(dir_.file("client.sql"), sql);
    return run(std::string("ip netns exec ") + kClientNs + " mariadb" + client_args(db, flags) +
               " < " + dir_.file("client.sql") + " 2>&1");
  }
  std::string sysbench(const std::string& test, const std::string& args) {
    return std::string("ip netns exec ") + kClientNs + " sysbench " + test +
           " --db-driver=mysql --mysql-host=" + kServerIp +
           " --mysql-port=" + std::to_string(kMysqlPort) + " --mysql-user=" + kUser +
           " --mysql-password=" + kPassword + " --mysql-db=sbtest --tables=1 --table-size=1000 " +
           args + " 2>&1";
  }

  std::string config(const std::string& keys = "") {
    return "snapshot_interval = 0.2\n[plugins.mysql]\n" + keys +
           sink_config_json(dir_.file("events.jsonl")) +
           "[[sinks]]\ntype = \"prometheus\"\nlisten = \"127.0.0.1:" + std::to_string(kPromPort) +
           "\"\n";
  }
  std::vector<Json> queries() {
    return events_of(read_json_lines(dir_.file("events.jsonl")), "mysql_query");
  }
  std::size_t count(const std::function<bool(const Json&)>& pred) {
    std::size_t n = 0;
    for (const auto& e : queries()) n += pred(e["fields"]);
    return n;
  }
  // Metrics equal the events: every answered command by (command, status,
  // side), and nothing unanswered.
  // `whole_responses`: every response fitted the capture (no lost_sync).
  void expect_metrics_match(const PromText& prom, const std::vector<Json>& all,
                            bool whole_responses = true) {
    std::map<std::tuple<std::string, std::string, std::string>, double> counted;
    std::map<std::pair<std::string, std::string>, double> errors;
    for (const auto& e : all) {
      const auto& f = e["fields"];
      counted[{f["command"].str(), f.has("status") ? f["status"].str() : "none",
               f["side"].str()}] += 1;
      if (f.has("error_code"))
        errors[{std::to_string(f["error_code"].u64()), f["side"].str()}] += 1;
    }
    double metric_total = 0;
    for (const auto& s : prom.samples)
      if (s.name == "netwatcher_mysql_commands_total") metric_total += s.value;
    EXPECT_EQ(metric_total, static_cast<double>(all.size()));
    for (const auto& [key, n] : counted) {
      const auto& [command, status, side] = key;
      EXPECT_EQ(prom.value("netwatcher_mysql_commands_total",
                           {{"command", command}, {"status", status}, {"side", side}}),
                n)
          << command << " " << status << " " << side;
    }
    for (const auto& [key, n] : errors)
      EXPECT_EQ(prom.value("netwatcher_mysql_errors_total",
                           {{"error_code", key.first}, {"side", key.second}}),
                n)
          << key.first;
    for (const char* side : {"client", "server"})
      EXPECT_EQ(prom.value("netwatcher_mysql_commands_unanswered_total", {{"side", side}}), 0.0);
    for (const char* kind : {"lost_sync", "orphan_response", "malformed", "empty_command"}) {
      if (!whole_responses && std::string(kind) == "lost_sync") continue;
      EXPECT_EQ(prom.value("netwatcher_mysql_parse_errors_total", {{"kind", kind}}), 0.0) << kind;
    }
  }

  static std::unique_ptr<Server> server_;
  TempDir dir_;
};

std::unique_ptr<Server> Mysql::server_;

// The command-line client: DDL, an insert, selects with known row counts, a
// database switch by COM_INIT_DB (the client's `use`) and by a USE
// statement, a syntax error and a duplicate key; then mariadb-admin's ping.
TEST_F(Mysql, TheCommandLineClientsCommandsOncePerSocketWithExactResults) {
  Netwatcher nw(dir_, config("statement_labels = true\nmax_statements = 3\n"));
  ASSERT_TRUE(wait_until([&] { return std::filesystem::exists(dir_.file("events.jsonl")); }));
  auto out =
      cli("CREATE TABLE items (id INT PRIMARY KEY, name VARCHAR(20));\n"
          "INSERT INTO items VALUES (1,'a'),(2,'b'),(3,'c');\n"
          "SELECT id, name FROM items ORDER BY id;\n"
          "use sbtest\n"
          "SELECT DATABASE();\n"
          "SELEC oops;\n"
          "INSERT INTO shop.items VALUES (1,'dup');\n"
          "/* back */ USE shop;\n"
          "SELECT COUNT(*) FROM items WHERE id > 1;\n",
          "shop", "--force --comments");
  ASSERT_NE(out.output.find("ERROR 1064 (42000)"), std::string::npos) << out.output;
  ASSERT_NE(out.output.find("ERROR 1062 (23000)"), std::string::npos) << out.output;
  auto ping = run(std::string("ip netns exec ") + kClientNs + " mariadb-admin" + client_args("") +
                  " ping 2>&1");
  ASSERT_EQ(ping.exit_code, 0) << ping.output;

  ASSERT_TRUE(wait_until([&] {
    return count([](const Json& f) {
             return f["command"].str() == "COM_QUIT" && f["side"].str() == "server";
           }) >= 2;
  })) << nw.log();
  auto prom = scrape_until(kPromPort, [&](const PromText& m) {
    double total = 0;
    for (const auto& s : m.samples)
      if (s.name == "netwatcher_mysql_commands_total") total += s.value;
    return total >= static_cast<double>(queries().size());
  });
  ASSERT_EQ(nw.stop(), 0) << nw.log();
  const auto all = queries();

  struct Expected {
    std::string command, statement, status, database;
    std::uint64_t rows = 0, affected = 0, error_code = 0;
    std::string sql_state;
  };
  const std::vector<Expected> expected = {
      {"COM_QUERY", "CREATE TABLE items (id INT PRIMARY KEY, name VARCHAR(20))", "ok", "shop"},
      {"COM_QUERY", "INSERT INTO items VALUES (1,'a'),(2,'b'),(3,'c')", "ok", "shop", 0, 3},
      {"COM_QUERY", "SELECT id, name FROM items ORDER BY id", "resultset", "shop", 3},
      // The client's `use` asks for the current database first.
      {"COM_QUERY", "SELECT DATABASE()", "resultset", "shop", 1},
      {"COM_INIT_DB", "sbtest", "ok", "sbtest"},
      {"COM_QUERY", "SELECT DATABASE()", "resultset", "sbtest", 1},
      {"COM_QUERY", "SELEC oops", "error", "sbtest", 0, 0, 1064, "42000"},
      {"COM_QUERY", "INSERT INTO shop.items VALUES (1,'dup')", "error", "sbtest", 0, 0, 1062,
       "23000"},
      {"COM_QUERY", "/* back */ USE shop", "ok", "shop"},
      {"COM_QUERY", "SELECT COUNT(*) FROM items WHERE id > 1", "resultset", "shop", 1},
      {"COM_QUIT", "", "", "shop"},
  };
  for (const char* side : {"client", "server"}) {
    SCOPED_TRACE(side);
    std::vector<Json> cli_events, admin_events;
    std::set<std::uint64_t> client_ports;
    for (const auto& e : all) {
      const auto& f = e["fields"];
      if (f["side"].str() != side) continue;
      const std::uint64_t client_port = f[side == std::string("client") ? "sport" : "dport"].u64();
      client_ports.insert(client_port);
      // mariadb-admin logs in without a database.
      (f["command"].str() == "COM_PING" || f["database"].str().empty() ? admin_events : cli_events)
          .push_back(f);
    }
    EXPECT_EQ(client_ports.size(), 2u) << "one connection each";
    std::string seen;
    for (const auto& f : cli_events) seen += f["command"].str() + " " + f["statement"].str() + "\n";
    ASSERT_EQ(cli_events.size(), expected.size()) << seen;
    for (std::size_t i = 0; i < expected.size(); ++i) {
      const auto& f = cli_events[i];
      const auto& x = expected[i];
      SCOPED_TRACE(x.statement);
      EXPECT_EQ(f["command"].str(), x.command);
      EXPECT_EQ(f["statement"].str(), x.statement);
      EXPECT_EQ(f["user"].str(), kUser);
      EXPECT_EQ(f["database"].str(), x.database);
      if (x.command == "COM_QUIT") {
        EXPECT_EQ(f["outcome"].str(), "no_response");
        EXPECT_FALSE(f.has("status"));
        continue;
      }
      EXPECT_EQ(f["outcome"].str(), "answered");
      EXPECT_EQ(f["status"].str(), x.status);
      EXPECT_GT(f["latency_us"].num(), 0);
      EXPECT_GT(f["response_bytes"].u64(), 4u);
      EXPECT_FALSE(f.has("cut_short"));
      if (x.status == "resultset") {
        EXPECT_EQ(f["rows"].u64(), x.rows);
      } else if (x.status == "ok") {
        EXPECT_EQ(f["affected_rows"].u64(), x.affected);
      } else {
        EXPECT_EQ(f["error_code"].u64(), x.error_code);
        EXPECT_EQ(f["sql_state"].str(), x.sql_state);
        EXPECT_FALSE(f["error_message"].str().empty());
      }
      if (side == std::string("client")) {
        EXPECT_EQ(f["comm"].str(), "mariadb");
        EXPECT_EQ(f["saddr"].str(), kClientIp);
        EXPECT_EQ(f["daddr"].str(), kServerIp);
        EXPECT_EQ(f["dport"].u64(), static_cast<std::uint64_t>(kMysqlPort));
      } else {
        EXPECT_EQ(f["saddr"].str(), kServerIp);
        EXPECT_EQ(f["sport"].u64(), static_cast<std::uint64_t>(kMysqlPort));
      }
    }
    ASSERT_EQ(admin_events.size(), 2u);
    EXPECT_EQ(admin_events[0]["command"].str(), "COM_PING");
    EXPECT_EQ(admin_events[0]["status"].str(), "ok");
    EXPECT_EQ(admin_events[0]["user"].str(), kUser);
    EXPECT_EQ(admin_events[1]["command"].str(), "COM_QUIT");
  }
  expect_metrics_match(prom, all);
  EXPECT_EQ(
      prom.value("netwatcher_mysql_errors_total", {{"error_code", "1064"}, {"side", "client"}}),
      1.0);
  EXPECT_EQ(prom.value("netwatcher_mysql_connections_total", {{"protocol", "plain"}}), 4.0)
      << "two logins, each seen from both sockets";
  // Statement series: the first three normalised statements, the rest as
  // "other", counting every answered COM_QUERY.
  std::map<std::string, double> per_statement;
  for (const auto& sample : prom.samples)
    if (sample.name == "netwatcher_mysql_statement_commands_total" &&
        sample.labels.at("side") == "client")
      per_statement[sample.labels.at("statement")] += sample.value;
  EXPECT_EQ(per_statement, (std::map<std::string, double>{
                               {"CREATE TABLE items (id INT PRIMARY KEY, name VARCHAR(?))", 1},
                               {"INSERT INTO items VALUES (?,?),(?,?),(?,?)", 1},
                               {"SELECT id, name FROM items ORDER BY id", 1},
                               {"other", 6}}));
  EXPECT_EQ(
      prom.value("netwatcher_table_full_total", {{"plugin", "mysql"}, {"table", "statements"}}),
      12.0)
      << "six refused at each socket";
}

// sysbench point selects with prepared statements: every execute once per
// socket, with its prepared text, one row each, and as many as sysbench
// says it ran.
TEST_F(Mysql, SysbenchPreparedPointSelectsAllCountedWithTheirText) {
  auto prepare = run(sysbench("oltp_point_select", "prepare"));
  ASSERT_EQ(prepare.exit_code, 0) << prepare.output;
  Netwatcher nw(dir_, config());
  ASSERT_TRUE(wait_until([&] { return std::filesystem::exists(dir_.file("events.jsonl")); }));
  auto bench =
      run(sysbench("oltp_point_select", "--threads=2 --time=3 --rate=1500 --db-ps-mode=auto run"));
  ASSERT_EQ(bench.exit_code, 0) << bench.output;
  std::smatch match;
  ASSERT_TRUE(std::regex_search(bench.output, match, std::regex(R"(queries:\s+(\d+))")))
      << bench.output;
  const std::uint64_t reported = std::stoull(match[1]);
  ASSERT_GT(reported, 1000u) << bench.output;

  auto executes = [](const std::string& side) {
    return [=](const Json& f) {
      return f["command"].str() == "COM_STMT_EXECUTE" && f["side"].str() == side;
    };
  };
  ASSERT_TRUE(
      wait_until([&] { return count(executes("server")) >= reported; }, std::chrono::seconds(20)))
      << count(executes("server")) << " of " << reported << "\n"
      << nw.log();
  auto prom = scrape_until(kPromPort, [&](const PromText& m) {
    return m.value("netwatcher_mysql_commands_total",
                   {{"command", "COM_STMT_EXECUTE"}, {"status", "resultset"}, {"side", "server"}})
               .value_or(0) >= static_cast<double>(reported);
  });
  ASSERT_EQ(nw.stop(), 0) << nw.log();
  run(sysbench("oltp_point_select", "cleanup"));
  const auto all = queries();
  for (const char* side : {"client", "server"}) {
    SCOPED_TRACE(side);
    std::uint64_t n = 0, prepared = 0;
    std::map<std::string, int> other;
    for (const auto& e : all) {
      const auto& f = e["fields"];
      if (f["side"].str() != side) continue;
      if (f["command"].str() == "COM_STMT_EXECUTE") {
        ++n;
        EXPECT_EQ(f["statement"].str(), "SELECT c FROM sbtest1 WHERE id=?");
        EXPECT_EQ(f["status"].str(), "resultset");
        EXPECT_EQ(f["rows"].u64(), 1u);
        EXPECT_EQ(f["columns"].u64(), 1u);
        EXPECT_EQ(f["database"].str(), "sbtest");
        EXPECT_EQ(f["user"].str(), kUser);
      } else if (f["command"].str() == "COM_STMT_PREPARE") {
        ++prepared;
        EXPECT_EQ(f["statement"].str(), "SELECT c FROM sbtest1 WHERE id=?");
        EXPECT_TRUE(f.has("statement_id"));
      } else {
        ++other[f["command"].str() + " " + f["statement"].str()];
      }
    }
    EXPECT_EQ(n, reported);
    EXPECT_EQ(prepared, 2u) << "one per thread";
    EXPECT_EQ(other, (std::map<std::string, int>{
                         {"COM_QUIT ", 2}, {"COM_STMT_CLOSE SELECT c FROM sbtest1 WHERE id=?", 2}}))
        << "each thread's connection closes its statement and quits";
  }
  expect_metrics_match(prom, all);
}

// sysbench oltp_read_write in transactions (BEGIN ... COMMIT, prepared):
// every statement once per socket, as many as sysbench says it ran. Range
// selects return more rows than the capture keeps of their segments: those
// end at the next command, cut_short, still counted and timed.
TEST_F(Mysql, SysbenchReadWriteTransactionsAllCounted) {
  auto prepare = run(sysbench("oltp_read_write", "prepare"));
  ASSERT_EQ(prepare.exit_code, 0) << prepare.output;
  Netwatcher nw(dir_, config());
  ASSERT_TRUE(wait_until([&] { return std::filesystem::exists(dir_.file("events.jsonl")); }));
  auto bench = run(sysbench("oltp_read_write", "--threads=1 --time=3 --db-ps-mode=auto run"));
  ASSERT_EQ(bench.exit_code, 0) << bench.output;
  std::smatch total, transactions;
  ASSERT_TRUE(std::regex_search(bench.output, total, std::regex(R"(total:\s+(\d+))")))
      << bench.output;
  ASSERT_TRUE(std::regex_search(bench.output, transactions, std::regex(R"(transactions:\s+(\d+))")))
      << bench.output;
  const std::uint64_t reported = std::stoull(total[1]);
  const std::uint64_t reported_transactions = std::stoull(transactions[1]);
  ASSERT_GT(reported_transactions, 10u) << bench.output;
  ASSERT_EQ(reported, 20 * reported_transactions) << bench.output;

  auto statements = [](const std::string& side) {
    return [=](const Json& f) {
      return (f["command"].str() == "COM_STMT_EXECUTE" || f["command"].str() == "COM_QUERY") &&
             f["side"].str() == side;
    };
  };
  ASSERT_TRUE(
      wait_until([&] { return count(statements("server")) >= reported; }, std::chrono::seconds(20)))
      << count(statements("server")) << " of " << reported << "\n"
      << nw.log();
  auto prom = scrape_until(kPromPort, [&](const PromText& m) {
    double total_commands = 0;
    for (const auto& s : m.samples)
      if (s.name == "netwatcher_mysql_commands_total") total_commands += s.value;
    return total_commands >= static_cast<double>(queries().size());
  });
  ASSERT_EQ(nw.stop(), 0) << nw.log();
  run(sysbench("oltp_read_write", "cleanup"));
  const auto all = queries();
  for (const char* side : {"client", "server"}) {
    SCOPED_TRACE(side);
    std::uint64_t n = 0;
    std::map<std::string, std::uint64_t> per_statement;
    for (const auto& e : all) {
      const auto& f = e["fields"];
      if (f["side"].str() != side || !statements(side)(f)) continue;
      ++n;
      ++per_statement[f["statement"].str()];
      EXPECT_EQ(f["outcome"].str(), "answered");
      EXPECT_NE(f["status"].str(), "error") << f["statement"].str();
      if (f["statement"].str() == "SELECT c FROM sbtest1 WHERE id=?") {
        EXPECT_EQ(f["rows"].u64(), 1u);
      }
      if (f.has("cut_short")) {
        EXPECT_NE(f["statement"].str().find("BETWEEN"), std::string::npos) << f["statement"].str();
      }
    }
    EXPECT_EQ(n, reported);
    EXPECT_EQ(per_statement["BEGIN"], reported_transactions);
    EXPECT_EQ(per_statement["COMMIT"], reported_transactions);
    EXPECT_EQ(per_statement["SELECT c FROM sbtest1 WHERE id=?"], 10 * reported_transactions);
    EXPECT_EQ(per_statement["DELETE FROM sbtest1 WHERE id=?"], reported_transactions);
  }
  expect_metrics_match(prom, all, false);
}

// A command slower than command_timeout is reported as timed_out from both
// sockets; its late response then has no command waiting.
TEST_F(Mysql, ACommandSlowerThanTheTimeoutIsReportedAsTimedOut) {
  Netwatcher nw(dir_, config("command_timeout = 0.5\n"));
  ASSERT_TRUE(wait_until([&] { return std::filesystem::exists(dir_.file("events.jsonl")); }));
  auto out = cli("SELECT SLEEP(1.5);\n", "shop");
  ASSERT_EQ(out.exit_code, 0) << out.output;
  ASSERT_TRUE(wait_until([&] {
    return count([](const Json& f) {
             return f["command"].str() == "COM_QUIT" && f["side"].str() == "server";
           }) >= 1;
  })) << nw.log();
  auto prom = scrape_until(kPromPort, [](const PromText& m) {
    return m.value("netwatcher_mysql_parse_errors_total", {{"kind", "orphan_response"}})
               .value_or(0) >= 10;
  });
  ASSERT_EQ(nw.stop(), 0) << nw.log();
  std::map<std::string, int> sides;
  for (const auto& e : queries()) {
    const auto& f = e["fields"];
    if (f["command"].str() != "COM_QUERY") continue;
    EXPECT_EQ(f["statement"].str(), "SELECT SLEEP(1.5)");
    EXPECT_EQ(f["outcome"].str(), "timed_out");
    EXPECT_FALSE(f.has("status"));
    EXPECT_FALSE(f.has("latency_us"));
    ++sides[f["side"].str()];
  }
  EXPECT_EQ(sides, (std::map<std::string, int>{{"client", 1}, {"server", 1}}));
  for (const char* side : {"client", "server"})
    EXPECT_EQ(prom.value("netwatcher_mysql_commands_unanswered_total", {{"side", side}}), 1.0);
  // The late result set's five packets (column count, definition, EOF, row,
  // EOF: this client does not ask for CLIENT_DEPRECATE_EOF), at each socket.
  EXPECT_EQ(prom.value("netwatcher_mysql_parse_errors_total", {{"kind", "orphan_response"}}), 10.0);
}

// slow_threshold_us: events only for the slow command; the metrics count
// every command.
TEST_F(Mysql, OnlyCommandsOverTheSlowThresholdAreEventsButAllAreCounted) {
  Netwatcher nw(dir_, config("slow_threshold_us = 300000\n"));
  ASSERT_TRUE(wait_until([&] { return std::filesystem::exists(dir_.file("events.jsonl")); }));
  auto out = cli("SELECT 1;\nSELECT SLEEP(0.4);\nSELECT 2;\n", "shop");
  ASSERT_EQ(out.exit_code, 0) << out.output;
  auto prom = scrape_until(kPromPort, [](const PromText& m) {
    return m.value("netwatcher_mysql_commands_total",
                   {{"command", "COM_QUIT"}, {"status", "none"}, {"side", "server"}})
               .value_or(0) >= 1;
  });
  ASSERT_TRUE(wait_until([&] { return queries().size() >= 2; })) << nw.log();
  ASSERT_EQ(nw.stop(), 0) << nw.log();
  std::map<std::string, int> sides;
  for (const auto& e : queries()) {
    const auto& f = e["fields"];
    EXPECT_EQ(f["statement"].str(), "SELECT SLEEP(0.4)");
    EXPECT_GE(f["latency_us"].num(), 300000);
    EXPECT_EQ(f["rows"].u64(), 1u);
    ++sides[f["side"].str()];
  }
  EXPECT_EQ(sides, (std::map<std::string, int>{{"client", 1}, {"server", 1}}));
  for (const char* side : {"client", "server"}) {
    EXPECT_EQ(prom.value("netwatcher_mysql_commands_total",
                         {{"command", "COM_QUERY"}, {"status", "resultset"}, {"side", side}}),
              3.0);
    EXPECT_EQ(prom.value("netwatcher_mysql_commands_total",
                         {{"command", "COM_QUIT"}, {"status", "none"}, {"side", side}}),
              1.0);
  }
}

// The compressed protocol (mariadb --compress): the login is seen and
// counted as compressed, its compressed packets are not misread as commands.
TEST_F(Mysql, TheCompressedProtocolIsCountedNotMisparsed) {
  Netwatcher nw(dir_, config());
  ASSERT_TRUE(wait_until([&] { return std::filesystem::exists(dir_.file("events.jsonl")); }));
  auto out = cli("SELECT 1;\nSELECT REPEAT('x', 1000);\n", "shop", "--compress");
  ASSERT_EQ(out.exit_code, 0) << out.output;
  auto plain = cli("SELECT 3;\n", "shop");  // afterwards: the events are written by now
  ASSERT_EQ(plain.exit_code, 0) << plain.output;
  ASSERT_TRUE(wait_until([&] {
    return count([](const Json& f) {
             return f["command"].str() == "COM_QUIT" && f["side"].str() == "server";
           }) >= 1;
  })) << nw.log();
  auto prom = scrape_until(kPromPort, [](const PromText& m) {
    return m.value("netwatcher_mysql_connections_total", {{"protocol", "plain"}}).value_or(0) >= 2;
  });
  ASSERT_EQ(nw.stop(), 0) << nw.log();
  std::multiset<std::string> seen;
  for (const auto& e : queries())
    seen.insert(e["fields"]["command"].str() + " " + e["fields"]["statement"].str());
  EXPECT_EQ(seen, (std::multiset<std::string>{"COM_QUERY SELECT 3", "COM_QUERY SELECT 3",
                                              "COM_QUIT ", "COM_QUIT "}));
  EXPECT_EQ(prom.value("netwatcher_mysql_connections_total", {{"protocol", "compressed"}}), 2.0);
  EXPECT_EQ(prom.value("netwatcher_mysql_connections_total", {{"protocol", "plain"}}), 2.0);
  for (const char* kind : {"lost_sync", "orphan_response", "malformed", "empty_command"})
    EXPECT_EQ(prom.value("netwatcher_mysql_parse_errors_total", {{"kind", kind}}), 0.0) << kind;
}

// Over TLS (mariadb --ssl, [plugins.l7] tls): the greeting and SSL request
// are cleartext, the rest is read from the plaintext; the same commands and
// results as in cleartext, once per socket, with tls = true.
TEST_F(Mysql, TlsCommandsAreReadFromThePlaintext) {
  Netwatcher nw(dir_, config() + "[plugins.l7]\ntls = true\n");
  ASSERT_TRUE(wait_until([&] { return std::filesystem::exists(dir_.file("events.jsonl")); }));
  auto out = cli("SELECT 41 + 1;\nSHOW STATUS LIKE 'Ssl_version';\n", "shop", "--ssl -N");
  ASSERT_EQ(out.exit_code, 0) << out.output;
  ASSERT_NE(out.output.find("42\n"), std::string::npos) << out.output;
  ASSERT_NE(out.output.find("Ssl_version\tTLSv1.3"), std::string::npos) << out.output;
  ASSERT_TRUE(wait_until([&] {
    return count([](const Json& f) {
             return f["command"].str() == "COM_QUIT" && f["side"].str() == "server";
           }) >= 1;
  })) << nw.log()
      << read_file(dir_.file("events.jsonl")) << http_get(kPromPort, "/metrics");
  auto prom = scrape_until(kPromPort, [](const PromText& m) {
    return m.value("netwatcher_mysql_connections_total", {{"protocol", "tls"}}).value_or(0) >= 2;
  });
  ASSERT_EQ(nw.stop(), 0) << nw.log();
  for (const std::string side : {"client", "server"}) {
    SCOPED_TRACE(side);
    std::vector<std::string> seen;
    for (const auto& e : queries()) {
      const auto& f = e["fields"];
      if (f["side"].str() != side) continue;
      seen.push_back(f["command"].str() + " " + f["statement"].str());
      EXPECT_TRUE(f["tls"].boolean());
      EXPECT_EQ(f["user"].str(), kUser);
      EXPECT_EQ(f["database"].str(), "shop");
      EXPECT_EQ(f["comm"].str(), side == "client" ? "mariadb" : "mariadbd");
    }
    // The client's own start-up query comes first.
    ASSERT_GE(seen.size(), 3u);
    // Literals of TLS traffic stay hidden unless tls_literals = true.
    EXPECT_EQ(seen[seen.size() - 3], "COM_QUERY SELECT ? + ?");
    EXPECT_EQ(seen[seen.size() - 2], "COM_QUERY SHOW STATUS LIKE ?");
    EXPECT_EQ(seen.back(), "COM_QUIT ");
  }
  EXPECT_EQ(prom.value("netwatcher_mysql_connections_total", {{"protocol", "tls"}}), 2.0);
  EXPECT_EQ(prom.value("netwatcher_mysql_connections_total", {{"protocol", "plain"}}).value_or(0),
            0.0);
  for (const char* kind : {"lost_sync", "orphan_response", "malformed", "empty_command"})
    EXPECT_EQ(prom.value("netwatcher_mysql_parse_errors_total", {{"kind", kind}}), 0.0) << kind;
}

}  // namespace
