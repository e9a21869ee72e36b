// netwatcher SDK: an append-only output file with size-based rotation.
//
// When a write would grow the file past `max_bytes`, the file is closed and
// renamed to "<path>.1" (older ones shift to .2 ... .<keep>, the oldest is
// removed), and a new file is started; `on_new_file` lets the owner write a
// header (e.g. a CSV header row) at the top of every file. Errors (a full disk,
// a removed directory) are returned with the path and errno text; nothing is
// buffered silently beyond what the Status reports.
//
// A failed write or flush drops everything written since the last successful
// flush, from the buffer and from the file (truncated back), so the file never
// ends in a torn line that the next write would be glued to. The next write
// tries again, so writing resumes as soon as there is room.
//
// Letting go: flush() checks (at most every kCheckInterval, and always while
// writes fail) that the path still names the open file. When it was removed
// (to free a full disk) or renamed (logrotate), the file is closed, so its
// space is released, and a new one is started at the path. reopen() does the
// same at once (SIGHUP).
//
// Counting: write() is told how many events its bytes hold. Those events are
// counted written when a flush (explicit, or the one before a rotation or a
// close) got them into the file, and failed when they were dropped as above;
// take_tally() hands the counts over.
//
// Rotation renames the current file only once a flush has put all of it on
// disk: a rotation that cannot flush (a full disk) fails and renames nothing,
// so the oldest kept file is removed only when a complete new .1 replaces it,
// and the file with the last good lines is never the one deleted.
//
// Not thread-safe: one owner thread (the sink's).
#pragma once

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "netwatcher/config.hpp"
#include "netwatcher/sink.hpp"
#include "netwatcher/status.hpp"

namespace netwatcher {

class RotatingFile {
 public:
  struct Options {
    std::string path;                     // "-" writes to standard output (never rotated)
    std::uint64_t max_bytes = 0;          // 0 = never rotate
    unsigned keep = 5;                    // rotated files kept
    std::function<std::string()> header;  // written at the top of each new file
  };

  // The `max_size` and `max_files` keys every file-writing sink declares, so
  // all of them rotate the same way and document it the same way.
  static std::vector<ConfigKey> rotation_keys();
  // Fills max_bytes and keep from validated values of rotation_keys().
  static void apply_rotation(const ConfigValues& config, Options& options);

  RotatingFile() = default;
  RotatingFile(const RotatingFile&) = delete;
  RotatingFile& operator=(const RotatingFile&) = delete;
  ~RotatingFile();

  // How often flush() looks for a removed or renamed file while writes succeed.
  static constexpr std::chrono::milliseconds kCheckInterval{500};

  Status open(Options options);
  // Appends `data`, which holds `events` events (0 for bytes that are no
  // events, e.g. a header). Buffered: the bytes reach the file at the latest
  // at the next flush().
  Status write(std::string_view data, std::uint64_t events = 0);
  Status flush();
  Status close();
  // Flushes, closes and opens the path again (a new file when it was moved).
  Status reopen();
  // Events whose fate was decided since the last call (see above).
  SinkTally take_tally() {
    SinkTally t = tally_;
    tally_ = {};
    return t;
  }
  // Counts events that never reached write() (e.g. the file for them could not
  // be opened) as failed, so they appear in the same tally.
  void count_failed(std::uint64_t events) { tally_.failed += events; }
  const std::string& path() const { return options_.path; }
  std::uint64_t size() const { return size_; }
  // Bytes that fit in the current file before a write rotates it (unlimited
  // when it never rotates). Sinks that gather lines into one write use it to
  // keep rotation exact to the line.
  std::uint64_t room() const {
    if (!rotatable_ || !options_.max_bytes) return ~std::uint64_t{0};
    return size_ >= options_.max_bytes ? 0 : options_.max_bytes - size_;
  }

 private:
  Status open_current();
  Status rotate();
  Status write_header();
  // After a failed write or flush: drops what was not flushed (see above).
  void discard_unflushed();
  // True when the path no longer names the open file (removed or replaced).
  bool replaced() const;
  // Closes the file without writing what is buffered (counted failed).
  void let_go();

  Options options_;
  std::FILE* file_ = nullptr;
  bool is_stdout_ = false;
  // Only regular files rotate: renaming /dev/null or a FIFO would break the
  // system or the reader behind it.
  bool rotatable_ = false;
  std::uint64_t size_ = 0;
  std::uint64_t flushed_ = 0;           // bytes in the file at the last successful flush
  bool failed_ = false;                 // the last write or flush failed
  bool header_due_ = false;             // truncated back to empty: the header goes first again
  std::uint64_t unflushed_events_ = 0;  // events in the bytes since the last good flush
  SinkTally tally_;
  std::chrono::steady_clock::time_point next_check_{};
};

}  // namespace netwatcher
