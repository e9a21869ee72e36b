// RotatingFile counts the truth and lets go of removed files. A full disk is
// simulated without root by RLIMIT_FSIZE: writes past it fail with EFBIG, as
// they would with ENOSPC.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include <filesystem>
#include <string>
#include <thread>

#include "netwatcher/rotating_file.hpp"
#include "test_support.hpp"

using namespace netwatcher;

namespace {

// Files written by this process may not grow past `bytes` while it lives.
class FileSizeLimit {
 public:
  explicit FileSizeLimit(std::uint64_t bytes) {
    getrlimit(RLIMIT_FSIZE, &saved_);
    previous_handler_ = signal(SIGXFSZ, SIG_IGN);  // EFBIG instead of a kill
    rlimit limit = saved_;
    limit.rlim_cur = static_cast<rlim_t>(bytes);
    setrlimit(RLIMIT_FSIZE, &limit);
  }
  ~FileSizeLimit() {
    setrlimit(RLIMIT_FSIZE, &saved_);
    signal(SIGXFSZ, previous_handler_);
  }

 private:
  rlimit saved_{};
  sighandler_t previous_handler_;
};

// Whether this process still has `path` open after it was removed.
bool holds_deleted(const std::string& path) {
  for (const auto& fd : std::filesystem::directory_iterator("/proc/self/fd")) {
    std::error_code ec;
    if (std::filesystem::read_symlink(fd.path(), ec).string() == path + " (deleted)") return true;
  }
  return false;
}

std::string line(int i) {
  return "{\"event\":" + std::to_string(i) + ",\"padding\":\"" + std::string(40, 'x') + "\"}\n";
}

std::uint64_t lines_in(const std::string& path) {
  std::uint64_t n = 0;
  for (char c : nwtest::read_file(path)) n += c == '\n';
  return n;
}

TEST(RotatingFile, EventsCountAsWrittenOnlyOnceFlushedAndAsFailedWhenDropped) {
  nwtest::TempDir dir;
  const std::string path = dir.file("out.jsonl");
  RotatingFile file;
  ASSERT_TRUE(file.open({path, 0, 5, {}}).ok());
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(file.write(line(i), 1).ok());
  SinkTally t = file.take_tally();
  EXPECT_EQ(t.written, 0u) << "buffered is not written";
  ASSERT_TRUE(file.flush().ok());
  t = file.take_tally();
  EXPECT_EQ(t.written, 3u);
  EXPECT_EQ(t.failed, 0u);

  const std::uint64_t good = std::filesystem::file_size(path);
  {
    FileSizeLimit full(good + 100);  // room for one line and a half
    for (int i = 3; i < 13; ++i) (void)file.write(line(i), 1);
    EXPECT_FALSE(file.flush().ok());
    t = file.take_tally();
    EXPECT_EQ(t.written, 0u);
    EXPECT_EQ(t.failed, 10u) << "every event since the last good flush is lost";
    EXPECT_EQ(std::filesystem::file_size(path), good) << "no torn line left behind";
  }
  // Room again: the next event is written.
  ASSERT_TRUE(file.write(line(13), 1).ok());
  ASSERT_TRUE(file.flush().ok());
  t = file.take_tally();
  EXPECT_EQ(t.written, 1u);
  EXPECT_EQ(t.failed, 0u);
  EXPECT_EQ(lines_in(path), 4u);
  EXPECT_TRUE(file.close().ok());
}

TEST(RotatingFile, LetsGoOfARemovedFileWithinACheckInterval) {
  nwtest::TempDir dir;
  const std::string path = dir.file("out.jsonl");
  RotatingFile file;
  ASSERT_TRUE(file.open({path, 0, 5, {}}).ok());
  ASSERT_TRUE(file.write(line(0), 1).ok());
  ASSERT_TRUE(file.flush().ok());
  std::filesystem::remove(path);
  EXPECT_TRUE(holds_deleted(path)) << "premise: the removed file is still open";
  std::this_thread::sleep_for(RotatingFile::kCheckInterval + std::chrono::milliseconds(50));
  ASSERT_TRUE(file.flush().ok());  // an idle flush, no event
  ASSERT_TRUE(std::filesystem::exists(path)) << "no new file after the old one was removed";
  EXPECT_FALSE(holds_deleted(path)) << "the removed file (and its space) is still held";
  ASSERT_TRUE(file.write(line(1), 1).ok());
  ASSERT_TRUE(file.flush().ok());
  EXPECT_EQ(nwtest::read_file(path), line(1));
  EXPECT_EQ(file.take_tally().written, 2u);
}

TEST(RotatingFile, ReopenAfterAMoveStartsANewFileAndLosesNothing) {
  nwtest::TempDir dir;
  const std::string path = dir.file("out.csv");
  RotatingFile file;
  ASSERT_TRUE(file.open({path, 0, 5, [] { return std::string("time,n\r\n"); }}).ok());
  ASSERT_TRUE(file.write("t,1\r\n", 1).ok());
  std::filesystem::rename(path, path + ".old");
  ASSERT_TRUE(file.reopen().ok());  // the buffered row goes to the moved file
  ASSERT_TRUE(file.write("t,2\r\n", 1).ok());
  ASSERT_TRUE(file.close().ok());
  EXPECT_EQ(nwtest::read_file(path + ".old"), "time,n\r\nt,1\r\n");
  EXPECT_EQ(nwtest::read_file(path), "time,n\r\nt,2\r\n") << "the new file has its header";
  SinkTally t = file.take_tally();
  EXPECT_EQ(t.written, 2u);
  EXPECT_EQ(t.failed, 0u);
}

TEST(RotatingFile, RotationThatCannotFlushKeepsTheLastGoodFile) {
  nwtest::TempDir dir;
  const std::string path = dir.file("r.jsonl");
  RotatingFile file;
  const std::uint64_t max = 3 * line(0).size();
  ASSERT_TRUE(file.open({path, max, 2, {}}).ok());
  for (int i = 0; i < 4; ++i) ASSERT_TRUE(file.write(line(i), 1).ok());  // rotates once
  ASSERT_TRUE(file.flush().ok());
  ASSERT_EQ(lines_in(path + ".1"), 3u);
  const std::string rotated = nwtest::read_file(path + ".1");
  const std::string current = nwtest::read_file(path);
  {
    FileSizeLimit full(line(0).size() + 10);  // the current file cannot grow
    for (int i = 4; i < 12; ++i) (void)file.write(line(i), 1);
    (void)file.flush();
  }
  EXPECT_EQ(nwtest::read_file(path + ".1"), rotated) << "the rotated file was replaced";
  EXPECT_FALSE(std::filesystem::exists(path + ".2"));
  EXPECT_EQ(nwtest::read_file(path), current) << "the current file lost its good lines";
  const SinkTally t = file.take_tally();
  EXPECT_EQ(t.written, 4u);
  EXPECT_EQ(t.failed, 8u);
}

}  // namespace
