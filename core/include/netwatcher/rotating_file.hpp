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
// ends in a torn line that the next write would be glued to. While writes
// fail, each one first checks that the path still names the open file: when
// it was removed (to free a full disk) or replaced, a new file is started
// there, and the space of the old one is released.
#pragma once

#include <cstdint>
#include <cstdio>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "netwatcher/config.hpp"

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

  Status open(Options options);
  Status write(std::string_view data);
  Status flush();
  Status close();
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

  Options options_;
  std::FILE* file_ = nullptr;
  bool is_stdout_ = false;
  // Only regular files rotate: renaming /dev/null or a FIFO would break the
  // system or the reader behind it.
  bool rotatable_ = false;
  std::uint64_t size_ = 0;
  std::uint64_t flushed_ = 0;  // bytes in the file at the last successful flush
  bool failed_ = false;        // the last write or flush failed
  bool header_due_ = false;    // truncated back to empty: the header goes first again
};

}  // namespace netwatcher
