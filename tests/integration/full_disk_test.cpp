// A JSON and a CSV sink on a full filesystem (a 1 MiB tmpfs) next to a JSON
// sink on normal disk, under loopback TCP traffic: netwatcher keeps running,
// counts the failed writes, the other sink still writes every event, and once
// there is room again (the tmpfs enlarged, or the full files removed: their
// space comes back at once) the sinks write whole lines again. Every sink
// accounts for every event: written + dropped (queue_full, write_error) ==
// produced, and "written" is exactly what the files hold. A SIGHUP after a
// logrotate-style move starts new files and loses nothing.
#include <gtest/gtest.h>

#include <netinet/in.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <functional>
#include <regex>
#include <stdexcept>
#include <thread>

#include "harness.hpp"

using namespace nwtest;

namespace {

constexpr int kPromPort = 41493;
// The test's own TCP servers: connections made while the tmpfs fills and is
// full go to the first, those after it has room again to the second. In the
// range the harness reserves (41400-41499), so no ephemeral port of an
// earlier test's connection can hold them.
constexpr int kFillPort = 41476;
constexpr int kAfterPort = 41477;

// A tmpfs of `size` at `path`; unmounted when destroyed, whatever happened.
class Tmpfs {
 public:
  Tmpfs(std::string path, const std::string& size) : path_(std::move(path)) {
    std::filesystem::create_directories(path_);
    if (::mount("nwtest-full", path_.c_str(), "tmpfs", 0, ("size=" + size).c_str()) != 0)
      throw std::runtime_error("cannot mount a tmpfs at " + path_ + ": " + std::strerror(errno));
  }
  ~Tmpfs() {
    // Lazily if something (a netwatcher that failed to stop) still holds it.
    if (::umount(path_.c_str()) != 0) ::umount2(path_.c_str(), MNT_DETACH);
  }
  Tmpfs(const Tmpfs&) = delete;
  Tmpfs& operator=(const Tmpfs&) = delete;
  void resize(const std::string& size) {
    if (::mount("nwtest-full", path_.c_str(), "tmpfs", MS_REMOUNT, ("size=" + size).c_str()) != 0)
      throw std::runtime_error("cannot resize the tmpfs: " + std::string(std::strerror(errno)));
  }
  std::string file(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

int listen_on(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<std::uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 || ::listen(fd, 512) != 0) {
    ::close(fd);
    throw std::runtime_error("cannot listen on 127.0.0.1:" + std::to_string(port) + ": " +
                             std::strerror(errno));
  }
  return fd;
}

// Loopback servers in this process: each connection is read to its end and
// closed, so every connection makes one client and one server tcp_close.
class LoopbackServers {
 public:
  explicit LoopbackServers(const std::vector<int>& ports) {
    for (int port : ports) {
      int fd = listen_on(port);
      fds_.push_back(fd);
      threads_.emplace_back([fd] {
        for (;;) {
          int conn = ::accept4(fd, nullptr, nullptr, SOCK_CLOEXEC);
          if (conn < 0) {
            if (errno == EINTR || errno == ECONNABORTED) continue;
            return;  // shut down
          }
          char buf[4096];
          while (::recv(conn, buf, sizeof buf, 0) > 0) {
          }
          ::close(conn);
        }
      });
    }
  }
  ~LoopbackServers() {
    for (int fd : fds_) ::shutdown(fd, SHUT_RDWR);  // wakes accept()
    for (auto& t : threads_) t.join();
    for (int fd : fds_) ::close(fd);
  }

 private:
  std::vector<int> fds_;
  std::vector<std::thread> threads_;
};

// `count` connections to 127.0.0.1:port, one after the other, each sending
// `bytes` and then waiting for the server to close.
void connect_many(int port, int count, std::size_t bytes = 1000) {
  const std::string payload(bytes, 'x');
  for (int i = 0; i < count; ++i) {
    int fd = connect_loopback(port);
    ::send(fd, payload.data(), payload.size(), MSG_NOSIGNAL);
    ::shutdown(fd, SHUT_WR);
    char buf[64];
    while (::recv(fd, buf, sizeof buf, 0) > 0) {
    }
    ::close(fd);
  }
}

bool wait_until(const std::function<bool()>& condition, int timeout_ms) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (std::chrono::steady_clock::now() < deadline) {
    if (condition()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return condition();
}

// tcp_close events of one side of the test's connections to `port`.
std::size_t closes_to(const std::vector<Json>& all, int port, const std::string& direction) {
  std::size_t n = 0;
  for (const auto& e : events_of(all, "tcp_close")) {
    const auto& f = e["fields"];
    const auto& ours = direction == "client" ? f["dport"] : f["sport"];
    if (f["direction"].str() == direction && ours.u64() == static_cast<std::uint64_t>(port) &&
        f["daddr"].str() == "127.0.0.1")
      ++n;
  }
  return n;
}

// Lines of a file that parse as JSON, and whether every line did.
struct Lines {
  std::vector<Json> events;
  std::size_t torn = 0;
};
Lines read_lines(const std::string& path) {
  Lines out;
  const std::string text = read_file(path);
  std::size_t start = 0;
  while (start < text.size()) {
    std::size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    if (end > start) {
      try {
        out.events.push_back(parse_json(text.substr(start, end - start)));
      } catch (const std::exception&) {
        ++out.torn;
      }
    }
    start = end + 1;
  }
  return out;
}

// What netwatcher's shutdown log says about one sink and the tcp plugin.
struct Accounting {
  std::uint64_t produced = 0, written = 0, queue_full = 0, write_error = 0;
};
Accounting accounting(const std::string& log, const std::string& sink) {
  Accounting a;
  std::smatch m;
  if (std::regex_search(log, m, std::regex("plugin 'tcp': (\\d+) events")))
    a.produced = std::stoull(m[1]);
  else
    ADD_FAILURE() << "no event count for tcp in the log:\n" << log;
  const std::regex line("sink '" + sink +
                        "': (\\d+) written, (\\d+) dropped on a full queue, (\\d+) lost to write "
                        "errors");
  if (std::regex_search(log, m, line)) {
    a.written = std::stoull(m[1]);
    a.queue_full = std::stoull(m[2]);
    a.write_error = std::stoull(m[3]);
  } else {
    ADD_FAILURE() << "no accounting for sink " << sink << " in the log:\n" << log;
  }
  return a;
}

void expect_every_event_accounted(const std::string& log, const std::string& sink) {
  const Accounting a = accounting(log, sink);
  EXPECT_GT(a.produced, 0u);
  EXPECT_EQ(a.written + a.queue_full + a.write_error, a.produced)
      << "sink " << sink << ": " << a.written << " written, " << a.queue_full << " queue_full, "
      << a.write_error << " write_error";
}

// Data rows (all lines but the header) of the CSV files in `directory`
// (rotated or moved ones included when `suffix` matches them), and how many
// contain `needle`.
struct CsvRows {
  std::size_t rows = 0, matching = 0;
};
CsvRows csv_rows(const std::string& directory, const std::string& suffix,
                 const std::string& needle = "\x01") {
  CsvRows out;
  for (const auto& entry : std::filesystem::directory_iterator(directory)) {
    const std::string name = entry.path().filename().string();
    if (name.size() < suffix.size() ||
        name.compare(name.size() - suffix.size(), suffix.size(), suffix) != 0)
      continue;
    const std::string text = read_file(entry.path().string());
    std::size_t start = text.find("\r\n");  // past the header
    while (start != std::string::npos && start + 2 < text.size()) {
      const std::size_t end = text.find("\r\n", start + 2);
      const std::string row = text.substr(start + 2, end - start - 2);
      ++out.rows;
      if (row.find(needle) != std::string::npos) ++out.matching;
      start = end;
    }
  }
  return out;
}

// A port as a whole CSV field, so no other number that contains it matches.
std::string field(int port) {
  // Appended, not `"," + std::to_string(port) + ","`: gcc 12 at -O2 warns
  // (-Wrestrict, a known false positive) on that concatenation.
  std::string text(",");
  text += std::to_string(port);
  text += ',';
  return text;
}

std::uint64_t free_bytes(const std::string& path) {
  struct statvfs st {};
  if (::statvfs(path.c_str(), &st) != 0) return 0;
  return static_cast<std::uint64_t>(st.f_bavail) * st.f_frsize;
}

class FullDisk : public ::testing::Test {
 protected:
  void SetUp() override {
    NW_REQUIRE_ROOT();
    tmpfs_ = std::make_unique<Tmpfs>(dir_.file("small"), "1m");
    servers_ = std::make_unique<LoopbackServers>(std::vector<int>{kFillPort, kAfterPort});
  }
  void TearDown() override {
    nw_.reset();  // before the unmount: it holds the file open
    servers_.reset();
    tmpfs_.reset();
  }

  std::string config() const {
    return "[plugins.tcp]\n"
           "[[sinks]]\nname = \"full\"\ntype = \"json\"\npath = \"" +
           tmpfs_->file("events.jsonl") +
           "\"\nmax_size = 0\n"
           "[[sinks]]\nname = \"fullcsv\"\ntype = \"csv\"\ndirectory = \"" +
           tmpfs_->file("csv") +
           "\"\nmax_size = 0\n"
           "[[sinks]]\nname = \"disk\"\ntype = \"json\"\npath = \"" +
           dir_.file("events.jsonl") +
           "\"\n"
           "[[sinks]]\ntype = \"prometheus\"\nlisten = \"127.0.0.1:" +
           std::to_string(kPromPort) + "\"\n";
  }
  PromText metrics() const { return parse_prometheus(http_get(kPromPort, "/metrics")); }
  double full_errors() const {
    return metrics().value("netwatcher_sink_errors_total", {{"sink", "full"}}).value_or(-1);
  }
  bool running() const { return ::kill(nw_->pid(), 0) == 0 && full_errors() >= 0; }

  // Connections until the full sink has failed writes, then as many again
  // while it stays full; returns how many were made.
  int fill_and_keep_going() {
    int made = 0;
    while (full_errors() <= 0) {
      if (made >= 20000) {
        ADD_FAILURE() << "no write error after " << made << " connections:\n" << nw_->log();
        return made;
      }
      connect_many(kFillPort, 100);
      made += 100;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    const double first_errors = full_errors();
    for (int i = 0; i < 10; ++i) {
      connect_many(kFillPort, 100);
      made += 100;
      EXPECT_TRUE(running()) << nw_->log();
    }
    EXPECT_TRUE(wait_until([&] { return full_errors() > first_errors; }, 5000))
        << "writes into the full tmpfs stopped failing";
    return made;
  }

  // Connections after there is room again: every one of them reaches the
  // full sink's file, with no more errors.
  // `files_kept`: the full sinks' files were never removed, so they must hold
  // exactly what the sinks counted as written.
  void expect_writes_resume(int made_before, bool files_kept) {
    std::this_thread::sleep_for(std::chrono::milliseconds(300));  // writes in flight settle
    const double errors = full_errors();
    constexpr int kAfter = 200;  // ~300 KB of JSON: fits a new file in the 1 MiB tmpfs
    connect_many(kAfterPort, kAfter);
    const std::string path = tmpfs_->file("events.jsonl");
    EXPECT_TRUE(wait_until(
        [&] {
          return std::filesystem::exists(path) &&
                 closes_to(read_lines(path).events, kAfterPort, "client") >= kAfter;
        },
        10000))
        << "the full sink did not write the connections made after space was freed";
    Lines lines = read_lines(path);
    EXPECT_EQ(closes_to(lines.events, kAfterPort, "client"), static_cast<std::size_t>(kAfter));
    EXPECT_EQ(closes_to(lines.events, kAfterPort, "server"), static_cast<std::size_t>(kAfter));
    // A write cut short by the full disk leaves no torn line behind for the
    // next one to be glued to.
    EXPECT_EQ(lines.torn, 0u) << "lines that are not JSON in " << path;
    EXPECT_EQ(full_errors(), errors) << "writes still fail after space was freed";
    // The CSV sink too: both sides' tcp_close rows of every new connection.
    EXPECT_TRUE(wait_until(
        [&] {
          return csv_rows(tmpfs_->file("csv"), "tcp_close.csv", field(kAfterPort)).matching >=
                 2 * kAfter;
        },
        10000));
    EXPECT_EQ(csv_rows(tmpfs_->file("csv"), "tcp_close.csv", field(kAfterPort)).matching,
              static_cast<std::size_t>(2 * kAfter));

    PromText m = metrics();
    EXPECT_EQ(m.value("netwatcher_sink_errors_total", {{"sink", "disk"}}), 0);
    // The premises of exact counts: nothing lost in the kernel or a queue.
    EXPECT_EQ(m.value("netwatcher_events_lost_total", {{"plugin", "tcp"}}), 0);
    for (const char* sink : {"disk", "full", "fullcsv"})
      EXPECT_EQ(
          m.value("netwatcher_sink_dropped_total", {{"sink", sink}, {"reason", "queue_full"}}), 0)
          << sink;
    EXPECT_EQ(
        m.value("netwatcher_sink_dropped_total", {{"sink", "disk"}, {"reason", "write_error"}}), 0);
    // The failures were counted as lost events, not as written ones.
    EXPECT_GT(
        m.value("netwatcher_sink_dropped_total", {{"sink", "full"}, {"reason", "write_error"}})
            .value_or(0),
        0);
    EXPECT_GT(
        m.value("netwatcher_sink_dropped_total", {{"sink", "fullcsv"}, {"reason", "write_error"}})
            .value_or(0),
        0);
    ASSERT_EQ(nw_->stop(), 0) << nw_->log();
    const std::string log = nw_->log();
    for (const char* sink : {"disk", "full", "fullcsv"}) expect_every_event_accounted(log, sink);
    const Accounting on_disk = accounting(log, "disk");
    EXPECT_EQ(on_disk.written, on_disk.produced);
    EXPECT_EQ(parse_json_lines(read_file(dir_.file("events.jsonl"))).size(), on_disk.written);
    if (files_kept) {
      EXPECT_EQ(read_lines(path).events.size(), accounting(log, "full").written)
          << "written is not what the file holds";
      EXPECT_EQ(csv_rows(tmpfs_->file("csv"), ".csv").rows, accounting(log, "fullcsv").written)
          << "written is not what the CSV files hold";
    }

    // The sink on normal disk wrote every connection, before, during and
    // after the other one's trouble: one close per side of each.
    auto disk = parse_json_lines(read_file(dir_.file("events.jsonl")));
    EXPECT_EQ(closes_to(disk, kFillPort, "client"), static_cast<std::size_t>(made_before));
    EXPECT_EQ(closes_to(disk, kFillPort, "server"), static_cast<std::size_t>(made_before));
    EXPECT_EQ(closes_to(disk, kAfterPort, "client"), static_cast<std::size_t>(kAfter));
    EXPECT_EQ(closes_to(disk, kAfterPort, "server"), static_cast<std::size_t>(kAfter));
    // The operator was told, with the reason.
    EXPECT_NE(nw_->log().find("sink 'full': "), std::string::npos) << nw_->log();
    EXPECT_NE(nw_->log().find("No space left on device"), std::string::npos) << nw_->log();
  }

  TempDir dir_;
  std::unique_ptr<Tmpfs> tmpfs_;
  std::unique_ptr<LoopbackServers> servers_;
  std::unique_ptr<Netwatcher> nw_;
};

}  // namespace

TEST_F(FullDisk, KeepsRunningCountsErrorsAndResumesWhenTheFilesystemGrows) {
  nw_ = std::make_unique<Netwatcher>(dir_, config());
  const int made = fill_and_keep_going();
  ASSERT_GT(full_errors(), 0);
  tmpfs_->resize("16m");
  expect_writes_resume(made, true);
}

TEST_F(FullDisk, ResumesInANewFileWhenTheFullOneIsRemoved) {
  nw_ = std::make_unique<Netwatcher>(dir_, config());
  int made = fill_and_keep_going();
  ASSERT_GT(full_errors(), 0);
  // What an operator does to free the space; the space only comes back once
  // netwatcher lets go of the removed files, which it notices within a flush
  // interval without waiting for another event.
  std::filesystem::remove(tmpfs_->file("events.jsonl"));
  for (const auto& entry : std::filesystem::directory_iterator(tmpfs_->file("csv")))
    std::filesystem::remove(entry.path());
  const std::uint64_t total = 1u << 20;
  EXPECT_TRUE(wait_until([&] { return free_bytes(tmpfs_->file("")) > total * 9 / 10; }, 3000))
      << "df still shows " << free_bytes(tmpfs_->file("")) << " bytes free of " << total;
  EXPECT_TRUE(wait_until(
      [&] {
        connect_many(kFillPort, 20);
        made += 20;
        return std::filesystem::exists(tmpfs_->file("events.jsonl"));
      },
      10000))
      << "no new file after the full one was removed:\n"
      << nw_->log();
  expect_writes_resume(made, false);
}

// logrotate without copytruncate: move the files away, SIGHUP, and every
// event is in the moved files or the new ones, none lost, none in both.
TEST_F(FullDisk, SighupAfterAMoveStartsNewFilesAndLosesNothing) {
  const std::string json = dir_.file("events.jsonl");
  const std::string csv = dir_.file("csv");
  nw_ = std::make_unique<Netwatcher>(
      dir_, "[plugins.tcp]\n[[sinks]]\nname = \"disk\"\ntype = \"json\"\npath = \"" + json +
                "\"\n[[sinks]]\nname = \"csv\"\ntype = \"csv\"\ndirectory = \"" + csv +
                "\"\n[[sinks]]\ntype = \"prometheus\"\nlisten = \"127.0.0.1:" +
                std::to_string(kPromPort) + "\"\n");
  constexpr int kBefore = 300, kAfter = 300;
  connect_many(kFillPort, kBefore);
  const std::string fill = field(kFillPort), after = field(kAfterPort);
  ASSERT_TRUE(wait_until(
      [&] {
        return closes_to(read_lines(json).events, kFillPort, "client") == kBefore &&
               csv_rows(csv, "tcp_close.csv", fill).matching == 2 * kBefore;
      },
      10000));
  std::filesystem::rename(json, json + ".1");
  const std::string close_csv = csv + "/tcp_tcp_close.csv";
  std::filesystem::rename(close_csv, close_csv + ".1");
  ASSERT_EQ(::kill(nw_->pid(), SIGHUP), 0);
  EXPECT_TRUE(wait_until(
      [&] { return std::filesystem::exists(json) && std::filesystem::exists(close_csv); }, 2000))
      << nw_->log();
  connect_many(kAfterPort, kAfter);
  ASSERT_TRUE(wait_until(
      [&] { return closes_to(read_lines(json).events, kAfterPort, "client") == kAfter; }, 10000));
  ASSERT_EQ(nw_->stop(), 0) << nw_->log();
  EXPECT_NE(nw_->log().find("SIGHUP: reopening the sinks' files"), std::string::npos);

  const auto moved = read_lines(json + ".1").events, current = read_lines(json).events;
  for (const char* side : {"client", "server"}) {
    EXPECT_EQ(closes_to(moved, kFillPort, side), static_cast<std::size_t>(kBefore)) << side;
    EXPECT_EQ(closes_to(moved, kAfterPort, side), 0u) << side;
    EXPECT_EQ(closes_to(current, kFillPort, side), 0u) << side;
    EXPECT_EQ(closes_to(current, kAfterPort, side), static_cast<std::size_t>(kAfter)) << side;
  }
  EXPECT_EQ(csv_rows(csv, "tcp_close.csv.1", fill).matching, static_cast<std::size_t>(2 * kBefore));
  EXPECT_EQ(csv_rows(csv, "tcp_close.csv.1", after).matching, 0u);
  EXPECT_EQ(csv_rows(csv, "tcp_close.csv", fill).matching, 0u);
  EXPECT_EQ(csv_rows(csv, "tcp_close.csv", after).matching, static_cast<std::size_t>(2 * kAfter));
  const std::string log = nw_->log();
  for (const char* sink : {"disk", "csv"}) {
    const Accounting a = accounting(log, sink);
    EXPECT_EQ(a.written, a.produced) << sink;
    EXPECT_EQ(a.queue_full + a.write_error, 0u) << sink;
  }
  EXPECT_EQ(moved.size() + current.size(), accounting(log, "disk").written);
  EXPECT_EQ(csv_rows(csv, ".csv").rows + csv_rows(csv, ".csv.1").rows,
            accounting(log, "csv").written);
}
