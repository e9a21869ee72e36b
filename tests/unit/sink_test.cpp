// Each sink's exact output for a fixed set of events and metrics.
#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <filesystem>
#include <mutex>
#include <thread>

#include "loader.hpp"
#include "netwatcher/sink.hpp"
#include "test_support.hpp"

using namespace netwatcher;
using namespace netwatcher::host;

namespace {

class SinkFixture : public ::testing::Test {
 protected:
  void SetUp() override {
    schema_.plugin = "demo";
    schema_.name = "demo_event";
    schema_.fields = {
        {"name", FieldType::text, "", "", FieldRole::label, 10},
        {"count", FieldType::u64, "bytes", "", FieldRole::value, 6},
        {"delta", FieldType::i64, "", "", FieldRole::value, 6},
        {"ratio", FieldType::f64, "", "", FieldRole::value, 6},
        {"ok", FieldType::boolean, "", "", FieldRole::value, 5},
        {"note", FieldType::text, "", "", FieldRole::text, 0, true},
    };
    // 2026-11-21T22:13:33.000000123Z
    const std::uint64_t t = 1795299213000000123ULL;
    events_.push_back(make(t, {std::string("plain"), std::uint64_t{42}, std::int64_t{-7}, 0.5, true,
                               std::monostate{}}));
    events_.push_back(
        make(t + 1000000, {std::string("a,b \"q\""), std::uint64_t{0}, std::int64_t{3}, 1e-06,
                           false, std::string("line1\nline2\\\t\x01")}));
    events_.push_back(make(
        t + 2000000, {std::string("bad\xff utf8 \xc3\xa9"), std::uint64_t{18446744073709551615ULL},
                      std::int64_t{0}, 2.0, true, std::string("")}));
  }

  Event make(std::uint64_t ts, std::vector<Value> values) {
    Event e;
    e.schema = &schema_;
    e.timestamp_ns = ts;
    e.values = std::move(values);
    return e;
  }

  // What the stdout sink, opened with `overrides`, prints for the events.
  std::string stdout_of_sink(const std::map<std::string, ConfigValue>& overrides) {
    std::string path = dir_.file("stdout.txt");
    fflush(stdout);
    int saved = dup(1);
    int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    dup2(fd, 1);
    close(fd);
    run_sink("stdout", overrides);
    fflush(stdout);
    dup2(saved, 1);
    close(saved);
    return nwtest::read_file(path);
  }

  // Opens the named sink with its defaults plus `overrides`, writes the events, closes it.
  void run_sink(const std::string& type, const std::map<std::string, ConfigValue>& overrides,
                std::function<MetricsSnapshot()> metrics = {}) {
    RefusedFile refused;
    auto component =
        load_component(std::string(NW_PLUGIN_DIR) + "/netwatcher-sink-" + type + ".so", refused);
    ASSERT_TRUE(component.has_value()) << refused.reason;
    auto created_sink = create_sink(*component);
    ASSERT_TRUE(created_sink.ok()) << created_sink.status().message();
    auto sink = created_sink.take();
    SinkContext context;
    context.instance = type;
    for (const auto& key : sink->describe().config) context.config.set(key.name, key.default_value);
    for (const auto& [key, value] : overrides) context.config.set(key, value);
    context.schemas = {&schema_};
    context.metrics = std::move(metrics);
    Status s = sink->open(context);
    ASSERT_TRUE(s.ok()) << s.message();
    for (const auto& event : events_) ASSERT_TRUE(sink->write(event).ok());
    ASSERT_TRUE(sink->flush().ok());
    ASSERT_TRUE(sink->close().ok());
  }

  EventSchema schema_;
  std::vector<Event> events_;
  nwtest::TempDir dir_;
};

TEST_F(SinkFixture, JsonEscapesAndOmitsAbsentFields) {
  run_sink("json", {{"path", dir_.file("out.jsonl")}});
  EXPECT_EQ(
      nwtest::read_file(dir_.file("out.jsonl")),
      R"({"time":"2026-11-21T22:13:33.000000123Z","timestamp_ns":1795299213000000123,"plugin":"demo","event":"demo_event","fields":{"name":"plain","count":42,"delta":-7,"ratio":0.5,"ok":true}})"
      "\n"
      R"({"time":"2026-11-21T22:13:33.001000123Z","timestamp_ns":1795299213001000123,"plugin":"demo","event":"demo_event","fields":{"name":"a,b \"q\"","count":0,"delta":3,"ratio":1e-06,"ok":false,"note":"line1\nline2\\\t\u0001"}})"
      "\n"
      R"({"time":"2026-11-21T22:13:33.002000123Z","timestamp_ns":1795299213002000123,"plugin":"demo","event":"demo_event","fields":{"name":"bad\ufffd utf8 é","count":18446744073709551615,"delta":0,"ratio":2,"ok":true,"note":""}})"
      "\n");
  // And every line is valid JSON that round-trips the tricky string.
  auto lines = nwtest::parse_json_lines(nwtest::read_file(dir_.file("out.jsonl")));
  ASSERT_EQ(lines.size(), 3u);
  EXPECT_EQ(lines[1]["fields"]["note"].str(), "line1\nline2\\\t\x01");
}

TEST_F(SinkFixture, JsonRotatesBySize) {
  run_sink("json", {{"path", dir_.file("r.jsonl")},
                    {"max_size", std::int64_t{400}},
                    {"max_files", std::int64_t{2}}});
  // Each line is ~250 bytes: three lines need three files, the oldest two kept.
  EXPECT_TRUE(std::filesystem::exists(dir_.file("r.jsonl")));
  EXPECT_TRUE(std::filesystem::exists(dir_.file("r.jsonl.1")));
  EXPECT_TRUE(std::filesystem::exists(dir_.file("r.jsonl.2")));
  EXPECT_FALSE(std::filesystem::exists(dir_.file("r.jsonl.3")));
  EXPECT_NE(nwtest::read_file(dir_.file("r.jsonl")).find("18446744073709551615"),
            std::string::npos);
  EXPECT_NE(nwtest::read_file(dir_.file("r.jsonl.2")).find("\"plain\""), std::string::npos);
}

TEST_F(SinkFixture, JsonNeverRotatesAFifo) {
  // A sink pointed at /dev/null or a pipe must never rename it, however much
  // it writes.
  const std::string fifo = dir_.file("pipe");
  ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0);
  int reader = open(fifo.c_str(), O_RDONLY | O_NONBLOCK);
  ASSERT_GE(reader, 0);
  run_sink("json", {{"path", fifo}, {"max_size", std::int64_t{100}}});
  std::string got(4096, '\0');
  ssize_t n = read(reader, got.data(), got.size());
  close(reader);
  EXPECT_GT(n, 500);
  EXPECT_TRUE(std::filesystem::is_fifo(fifo));
  EXPECT_FALSE(std::filesystem::exists(fifo + ".1"));
}

TEST_F(SinkFixture, CsvQuotesPerRfc4180) {
  run_sink("csv", {{"directory", dir_.file("csv")}});
  EXPECT_EQ(
      nwtest::read_file(dir_.file("csv/demo_demo_event.csv")),
      "time,name,count,delta,ratio,ok,note\r\n"
      "2026-11-21T22:13:33.000000123Z,plain,42,-7,0.5,true,\r\n"
      "2026-11-21T22:13:33.001000123Z,\"a,b \"\"q\"\"\",0,3,1e-06,false,"
      "\"line1\nline2\\\t\x01\"\r\n"
      "2026-11-21T22:13:33.002000123Z,bad\xff utf8 \xc3\xa9,18446744073709551615,0,2,true,\r\n");
}

// Twelve rows of 53 bytes under a 150-byte limit: the 37-byte header and two
// rows fill a file, so six files are written. Every file starts with the
// header, no file outgrows the limit, and the files read oldest first hold
// every row in order; with max_files = 3 exactly the newest four files
// remain, with the newest eight rows.
TEST_F(SinkFixture, CsvRotationKeepsEveryRowInOrderWithTheHeaderAndMaxFiles) {
  const std::string header = "time,name,count,delta,ratio,ok,note\r\n";
  std::vector<std::string> rows;
  events_.clear();
  for (int i = 0; i < 12; ++i) {
    events_.push_back(make(1795299213000000123ULL + static_cast<std::uint64_t>(i) * 1000000,
                           {std::string("row") + static_cast<char>('a' + i),
                            std::uint64_t{100} + static_cast<std::uint64_t>(i), std::int64_t{0},
                            0.5, true, std::monostate{}}));
    char row[64];
    std::snprintf(row, sizeof row, "2026-11-21T22:13:33.%03d000123Z,row%c,%d,0,0.5,true,\r\n", i,
                  'a' + i, 100 + i);
    rows.push_back(row);
  }
  ASSERT_EQ(rows[0].size(), 53u);
  // The rows the files read oldest (highest suffix) first hold, checking
  // each file's header and size on the way.
  auto rows_in = [&](const std::string& base, int rotated) {
    std::string out;
    for (int i = rotated; i >= 0; --i) {
      const std::string path = i == 0 ? base : base + "." + std::to_string(i);
      SCOPED_TRACE(path);
      EXPECT_TRUE(std::filesystem::exists(path));
      std::string text = nwtest::read_file(path);
      EXPECT_LE(text.size(), 150u);
      EXPECT_EQ(text.rfind(header, 0), 0u) << text;
      if (text.rfind(header, 0) == 0) text.erase(0, header.size());
      EXPECT_EQ(text.find(header), std::string::npos) << "one header per file";
      out += text;
    }
    EXPECT_FALSE(std::filesystem::exists(base + "." + std::to_string(rotated + 1)));
    return out;
  };
  auto joined = [&](std::size_t from) {
    std::string out;
    for (std::size_t i = from; i < rows.size(); ++i) out += rows[i];
    return out;
  };

  run_sink("csv", {{"directory", dir_.file("all")},
                   {"max_size", std::int64_t{150}},
                   {"max_files", std::int64_t{10}}});
  EXPECT_EQ(rows_in(dir_.file("all/demo_demo_event.csv"), 5), joined(0));

  run_sink("csv", {{"directory", dir_.file("kept")},
                   {"max_size", std::int64_t{150}},
                   {"max_files", std::int64_t{3}}});
  EXPECT_EQ(rows_in(dir_.file("kept/demo_demo_event.csv"), 3), joined(4));
}

TEST_F(SinkFixture, CsvReportsAnUnusableDirectory) {
  RefusedFile refused;
  auto component = load_component(std::string(NW_PLUGIN_DIR) + "/netwatcher-sink-csv.so", refused);
  ASSERT_TRUE(component.has_value());
  auto created_sink = create_sink(*component);
  ASSERT_TRUE(created_sink.ok()) << created_sink.status().message();
  auto sink = created_sink.take();
  SinkContext context;
  nwtest::write_file(dir_.file("file"), "");
  for (const auto& key : sink->describe().config) context.config.set(key.name, key.default_value);
  context.config.set("directory", dir_.file("file/sub"));
  Status s = sink->open(context);
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find(dir_.file("file/sub")), std::string::npos) << s.message();
}

TEST_F(SinkFixture, StdoutTableAlignsColumnsWithAHeaderPerEventType) {
  EXPECT_EQ(
      stdout_of_sink({}),
      "TIME         EVENT      NAME        COUNT  DELTA  RATIO OK    NOTE\n"
      "22:13:33.000 demo_event plain          42     -7    0.5 true  -\n"
      "22:13:33.001 demo_event a,b \"q\"         0      3  1e-06 false line1\\nline2\\\\\\t\\x01\n"
      "22:13:33.002 demo_event bad\xff utf8 \xc3\xa9 18446744073709551615      0      2 true  -\n");
}

// Two types interleaving: each header once (stdout is no terminal here), rows
// tagged with their type; with header_every, a header comes back once that
// many rows have passed. Kernel addresses print in hex.
TEST_F(SinkFixture, StdoutTableHeadersDoNotRepeatWhenTypesInterleave) {
  EventSchema other;
  other.plugin = "demo";
  other.name = "demo_sock";
  other.fields = {{"sock", FieldType::u64, kAddressUnit, "", FieldRole::label, 18}};
  auto sock_event = [&](std::uint64_t ts) {
    Event e;
    e.schema = &other;
    e.timestamp_ns = ts;
    e.values = {std::uint64_t{0xffff9d1ecb3ba300ULL}};
    return e;
  };
  const std::uint64_t t = 1795299213000000123ULL;
  std::vector<Event> interleaved;
  for (int i = 0; i < 3; ++i) {
    Event a = events_[0];
    a.timestamp_ns = t + i * 2000000;
    interleaved.push_back(a);
    interleaved.push_back(sock_event(t + i * 2000000 + 1000000));
  }
  events_ = interleaved;
  const std::string header_a =
      "TIME         EVENT      NAME        COUNT  DELTA  RATIO OK    NOTE\n";
  const std::string header_b = "TIME         EVENT      SOCK\n";
  auto row_a = [](const char* time) {
    return std::string(time) + " demo_event plain          42     -7    0.5 true  -\n";
  };
  auto row_b = [](const char* time) {
    return std::string(time) + " demo_sock  0xffff9d1ecb3ba300\n";
  };
  EXPECT_EQ(stdout_of_sink({}), header_a + row_a("22:13:33.000") + "\n" + header_b +
                                    row_b("22:13:33.001") + row_a("22:13:33.002") +
                                    row_b("22:13:33.003") + row_a("22:13:33.004") +
                                    row_b("22:13:33.005"));
  EXPECT_EQ(stdout_of_sink({{"header_every", std::int64_t{3}}}),
            header_a + row_a("22:13:33.000") + "\n" + header_b + row_b("22:13:33.001") +
                row_a("22:13:33.002") + row_b("22:13:33.003") + "\n" + header_a +
                row_a("22:13:33.004") + "\n" + header_b + row_b("22:13:33.005"));

  // CSV writes the address in hex too; JSON keeps the number.
  run_sink("csv", {{"directory", dir_.file("csv")}});
  EXPECT_NE(nwtest::read_file(dir_.file("csv/demo_demo_sock.csv")).find(",0xffff9d1ecb3ba300\r\n"),
            std::string::npos);
}

MetricsSnapshot sample_metrics() {
  MetricFamilySnapshot counter;
  counter.spec = {"demo_requests_total",
                  MetricType::counter,
                  "Requests with \\ and\nnewline.",
                  {"path", "code"}};
  counter.series.push_back({{"/a\"b", "200"}, 3, {}, 0, 0});
  counter.series.push_back({{"c:\\dir\n", "500"}, 1.5, {}, 0, 0});
  MetricFamilySnapshot gauge;
  gauge.spec = {"demo_up", MetricType::gauge, "Up.", {}};
  gauge.series.push_back({{}, 1, {}, 0, 0});
  MetricFamilySnapshot histogram;
  histogram.spec = {
      "demo_latency_seconds", MetricType::histogram, "Latency.", {"layer"}, {0.001, 0.01}};
  histogram.series.push_back({{"ip"}, 0, {2, 1, 1}, 0.5, 4});
  return {counter, gauge, histogram};
}

TEST_F(SinkFixture, PrometheusTextfileIsExactAndStrictlyValid) {
  run_sink("prometheus", {{"listen", std::string("")}, {"textfile", dir_.file("nw.prom")}},
           sample_metrics);
  std::string text = nwtest::read_file(dir_.file("nw.prom"));
  EXPECT_EQ(text,
            "# HELP demo_requests_total Requests with \\\\ and\\nnewline.\n"
            "# TYPE demo_requests_total counter\n"
            "demo_requests_total{path=\"/a\\\"b\",code=\"200\"} 3\n"
            "demo_requests_total{path=\"c:\\\\dir\\n\",code=\"500\"} 1.5\n"
            "# HELP demo_up Up.\n"
            "# TYPE demo_up gauge\n"
            "demo_up 1\n"
            "# HELP demo_latency_seconds Latency.\n"
            "# TYPE demo_latency_seconds histogram\n"
            "demo_latency_seconds_bucket{layer=\"ip\",le=\"0.001\"} 2\n"
            "demo_latency_seconds_bucket{layer=\"ip\",le=\"0.01\"} 3\n"
            "demo_latency_seconds_bucket{layer=\"ip\",le=\"+Inf\"} 4\n"
            "demo_latency_seconds_sum{layer=\"ip\"} 0.5\n"
            "demo_latency_seconds_count{layer=\"ip\"} 4\n"
            "# HELP netwatcher_prometheus_series_refused_total Series not exported because their "
            "family reached max_series_per_family.\n"
            "# TYPE netwatcher_prometheus_series_refused_total counter\n");
  auto parsed = nwtest::parse_prometheus(text);
  EXPECT_EQ(parsed.value("demo_requests_total", {{"path", "c:\\dir\n"}, {"code", "500"}}), 1.5);
  // Written to a temporary file and renamed over the textfile: nothing else
  // is left in the directory.
  std::vector<std::string> left;
  for (const auto& entry : std::filesystem::directory_iterator(dir_.path()))
    left.push_back(entry.path().filename().string());
  EXPECT_EQ(left, std::vector<std::string>{"nw.prom"});
}

TEST_F(SinkFixture, PrometheusCapsSeriesPerFamilyAndCountsRefusals) {
  run_sink("prometheus",
           {{"listen", std::string("")},
            {"textfile", dir_.file("cap.prom")},
            {"max_series_per_family", std::int64_t{1}}},
           sample_metrics);
  auto parsed = nwtest::parse_prometheus(nwtest::read_file(dir_.file("cap.prom")));
  EXPECT_EQ(parsed.value("demo_requests_total", {{"path", "/a\"b"}, {"code", "200"}}), 3);
  EXPECT_FALSE(parsed.value("demo_requests_total", {{"path", "c:\\dir\n"}, {"code", "500"}}));
  EXPECT_EQ(parsed.value("netwatcher_prometheus_series_refused_total",
                         {{"family", "demo_requests_total"}}),
            1);
}

// The cap is a bounded table like a plugin's: the sink adds its own row,
// under its instance name, to the host's netwatcher_table_* families.
TEST_F(SinkFixture, PrometheusCountsItsCapAsABoundedTable) {
  auto with_tables = [] {
    MetricsSnapshot snapshot = sample_metrics();
    for (const char* name : {"netwatcher_table_entries", "netwatcher_table_capacity",
                             "netwatcher_table_full_total", "netwatcher_table_evictions_total"}) {
      MetricFamilySnapshot family;
      family.spec = {name, MetricType::gauge, "Tables.", {"plugin", "table"}};
      family.series.push_back({{"tcp", "connections"}, 7, {}, 0, 0});
      snapshot.push_back(family);
    }
    return snapshot;
  };
  run_sink("prometheus",
           {{"listen", std::string("")},
            {"textfile", dir_.file("tables.prom")},
            {"max_series_per_family", std::int64_t{1}}},
           with_tables);
  auto parsed = nwtest::parse_prometheus(nwtest::read_file(dir_.file("tables.prom")));
  const std::map<std::string, std::string> own{{"plugin", "prometheus"},
                                               {"table", "series_per_family"}};
  EXPECT_EQ(parsed.value("netwatcher_table_capacity", own), 1);
  EXPECT_EQ(parsed.value("netwatcher_table_entries", own), 1) << "the fullest family's series";
  EXPECT_EQ(parsed.value("netwatcher_table_full_total", own), 1) << "demo_requests_total's second";
  EXPECT_EQ(parsed.value("netwatcher_table_evictions_total", own), 0);
  EXPECT_EQ(parsed.value("netwatcher_table_entries", {{"plugin", "tcp"}, {"table", "connections"}}),
            7)
      << "the host's rows stay";
}

// GET /metrics over loopback; the body, or "" when it fails.
std::string get_metrics(int port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<std::uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  timeval timeout{10, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    close(fd);
    return "";
  }
  const std::string request = "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
  if (send(fd, request.data(), request.size(), MSG_NOSIGNAL) !=
      static_cast<ssize_t>(request.size())) {
    close(fd);
    return "";
  }
  std::string response;
  char buf[4096];
  ssize_t n;
  while ((n = recv(fd, buf, sizeof buf, 0)) > 0) response.append(buf, static_cast<std::size_t>(n));
  close(fd);
  const auto body = response.find("\r\n\r\n");
  return response.rfind("HTTP/1.1 200", 0) == 0 && body != std::string::npos
             ? response.substr(body + 4)
             : "";
}

// Concurrent scrapes share renders, but never one whose snapshot was taken
// before the scrape arrived: that is how a scrape just after start-up once
// missed series the host had set before it (a render begun mid-start-up).
TEST_F(SinkFixture, PrometheusNeverAnswersWithARenderBegunBeforeTheScrapeArrived) {
  constexpr int kPort = 41479;
  std::mutex mutex;
  std::condition_variable changed;
  bool first_render_started = false, release_first_render = false;
  std::atomic<int> value{1};
  auto metrics = [&] {
    const int seen = value.load();
    {
      std::unique_lock lock(mutex);
      if (!first_render_started) {
        first_render_started = true;
        changed.notify_all();
        changed.wait(lock, [&] { return release_first_render; });
      }
    }
    MetricFamilySnapshot gauge;
    gauge.spec = {"demo_state", MetricType::gauge, "State.", {}};
    gauge.series.push_back({{}, static_cast<double>(seen), {}, 0, 0});
    return MetricsSnapshot{gauge};
  };
  RefusedFile refused;
  auto component =
      load_component(std::string(NW_PLUGIN_DIR) + "/netwatcher-sink-prometheus.so", refused);
  ASSERT_TRUE(component.has_value()) << refused.reason;
  auto created_sink = create_sink(*component);
  ASSERT_TRUE(created_sink.ok()) << created_sink.status().message();
  auto sink = created_sink.take();
  SinkContext context;
  context.instance = "prometheus";
  for (const auto& key : sink->describe().config) context.config.set(key.name, key.default_value);
  context.config.set("listen", "127.0.0.1:" + std::to_string(kPort));
  context.metrics = metrics;
  ASSERT_TRUE(sink->open(context).ok());

  std::string early_body, late_body;
  std::thread early([&] { early_body = get_metrics(kPort); });
  {
    std::unique_lock lock(mutex);
    // EXPECT: a failed ASSERT would leave `early` running past the test.
    EXPECT_TRUE(
        changed.wait_for(lock, std::chrono::seconds(10), [&] { return first_render_started; }));
  }
  // The early render holds the old state; the late scrape arrives after the change.
  value = 2;
  std::thread late([&] { late_body = get_metrics(kPort); });
  std::this_thread::sleep_for(std::chrono::milliseconds(300));  // the late one waits by now
  {
    std::lock_guard lock(mutex);
    release_first_render = true;
  }
  changed.notify_all();
  early.join();
  late.join();
  EXPECT_EQ(nwtest::parse_prometheus(early_body).value("demo_state", {}), 1) << early_body;
  EXPECT_EQ(nwtest::parse_prometheus(late_body).value("demo_state", {}), 2) << late_body;
  ASSERT_TRUE(sink->close().ok());
}

TEST_F(SinkFixture, PrometheusRefusesAnAddressItCannotBind) {
  RefusedFile refused;
  auto component =
      load_component(std::string(NW_PLUGIN_DIR) + "/netwatcher-sink-prometheus.so", refused);
  ASSERT_TRUE(component.has_value());
  auto created_sink = create_sink(*component);
  ASSERT_TRUE(created_sink.ok()) << created_sink.status().message();
  auto sink = created_sink.take();
  SinkContext context;
  for (const auto& key : sink->describe().config) context.config.set(key.name, key.default_value);
  context.config.set("listen", std::string("localhost-no-port"));
  Status s = sink->open(context);
  EXPECT_EQ(s.message(), "key 'listen' must be address:port, got \"localhost-no-port\"");
}

}  // namespace
