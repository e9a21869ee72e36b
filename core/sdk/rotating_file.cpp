#include "netwatcher/rotating_file.hpp"

#include <stdio_ext.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <system_error>

namespace netwatcher {

namespace {
Status io_error(const std::string& what, const std::string& path, int err) {
  return Status::failure(what + " '" + path + "': " + std::strerror(err));
}
}  // namespace

std::vector<ConfigKey> RotatingFile::rotation_keys() {
  return {
      {"max_size",
       ConfigType::integer,
       std::int64_t{100} << 20,
       "rotate a file when it would grow past this many bytes (0 = never)",
       0,
       {},
       {}},
      {"max_files",
       ConfigType::integer,
       std::int64_t{5},
       "rotated files kept per output file",
       0,
       1000,
       {}},
  };
}

void RotatingFile::apply_rotation(const ConfigValues& config, Options& options) {
  options.max_bytes = static_cast<std::uint64_t>(config.get_int("max_size"));
  options.keep = static_cast<unsigned>(config.get_int("max_files"));
}

RotatingFile::~RotatingFile() {
  close();
}

Status RotatingFile::open(Options options) {
  options_ = std::move(options);
  return open_current();
}

Status RotatingFile::open_current() {
  if (options_.path == "-") {
    file_ = stdout;
    is_stdout_ = true;
    return Status::success();
  }
  std::error_code ec;
  auto parent = std::filesystem::path(options_.path).parent_path();
  if (!parent.empty()) std::filesystem::create_directories(parent, ec);
  file_ = std::fopen(options_.path.c_str(), "ae");
  if (!file_) return io_error("cannot open", options_.path, errno);
  // Sinks flush whenever their queue runs empty; between flushes a large
  // buffer turns thousands of lines into one write(2).
  std::setvbuf(file_, nullptr, _IOFBF, 1 << 18);
  rotatable_ = std::filesystem::is_regular_file(options_.path, ec);
  size_ = rotatable_ ? std::filesystem::file_size(options_.path, ec) : 0;
  if (ec) size_ = 0;
  flushed_ = size_;
  failed_ = false;
  header_due_ = size_ == 0 && options_.header;
  return write_header();
}

Status RotatingFile::write_header() {
  if (!header_due_) return Status::success();
  std::string header = options_.header();
  if (std::fwrite(header.data(), 1, header.size(), file_) != header.size()) {
    int err = errno;
    discard_unflushed();
    return io_error("cannot write", options_.path, err);
  }
  size_ += header.size();
  header_due_ = false;
  return Status::success();
}

void RotatingFile::discard_unflushed() {
  failed_ = true;
  tally_.failed += unflushed_events_;
  unflushed_events_ = 0;
  // The C library has dropped what the failed write(2) did not take; drop
  // whatever else it still buffers, then the part of it that reached the file.
  __fpurge(file_);
  std::clearerr(file_);
  if (!rotatable_) return;
  struct stat st {};
  if (::ftruncate(::fileno(file_), static_cast<off_t>(flushed_)) == 0) {
    size_ = flushed_;
  } else if (::fstat(::fileno(file_), &st) == 0) {
    size_ = static_cast<std::uint64_t>(st.st_size);
    flushed_ = size_;
  }
  header_due_ = size_ == 0 && options_.header;
}

void RotatingFile::let_go() {
  if (!file_) return;
  tally_.failed += unflushed_events_;
  unflushed_events_ = 0;
  // Nothing of it is worth writing into a file nobody can read.
  __fpurge(file_);
  if (!is_stdout_) std::fclose(file_);
  file_ = nullptr;
}

bool RotatingFile::replaced() const {
  if (!file_ || !rotatable_) return false;
  struct stat held {};
  struct stat named {};
  if (::fstat(::fileno(file_), &held) != 0) return false;
  if (::stat(options_.path.c_str(), &named) != 0) return errno == ENOENT;
  return held.st_dev != named.st_dev || held.st_ino != named.st_ino;
}

Status RotatingFile::rotate() {
  if (Status s = close(); !s) return s;
  std::error_code ec;
  const std::string& base = options_.path;
  if (options_.keep == 0) {
    std::filesystem::remove(base, ec);
  } else {
    std::filesystem::remove(base + "." + std::to_string(options_.keep), ec);
    for (unsigned i = options_.keep; i > 1; --i) {
      std::string from = base + "." + std::to_string(i - 1);
      if (std::filesystem::exists(from, ec))
        std::filesystem::rename(from, base + "." + std::to_string(i), ec);
    }
    std::filesystem::rename(base, base + ".1", ec);
    if (ec) return Status::failure("cannot rotate '" + base + "': " + ec.message());
  }
  return open_current();
}

Status RotatingFile::write(std::string_view data, std::uint64_t events) {
  if (failed_ && replaced()) let_go();
  if (!file_) {
    if (Status s = open_current(); !s) {
      tally_.failed += events;
      return s;
    }
  }
  if (size_ > 0 && data.size() > room()) {
    if (Status s = rotate(); !s) {
      tally_.failed += events;
      return s;
    }
  }
  if (Status s = write_header(); !s) {
    tally_.failed += events;
    return s;
  }
  if (std::fwrite(data.data(), 1, data.size(), file_) != data.size()) {
    int err = errno;
    discard_unflushed();
    tally_.failed += events;
    return io_error("cannot write", options_.path, err);
  }
  size_ += data.size();
  unflushed_events_ += events;
  return Status::success();
}

Status RotatingFile::flush() {
  if (!file_) return Status::success();
  Status result = Status::success();
  if (std::fflush(file_) != 0) {
    int err = errno;
    discard_unflushed();
    result = io_error("cannot flush", options_.path, err);
  } else {
    flushed_ = size_;
    failed_ = false;
    tally_.written += unflushed_events_;
    unflushed_events_ = 0;
  }
  // Also when the flush failed: removing the full file is how an operator
  // frees the disk, and its space comes back only once it is closed.
  const auto now = std::chrono::steady_clock::now();
  if (rotatable_ && (failed_ || now >= next_check_)) {
    next_check_ = now + kCheckInterval;
    if (replaced()) {
      let_go();
      if (Status s = open_current(); !s && result) result = s;
    }
  }
  return result;
}

Status RotatingFile::close() {
  if (!file_) return Status::success();
  Status result = flush();
  if (!file_) return result;  // let go of a removed file and could not start a new one
  if (!is_stdout_ && std::fclose(file_) != 0 && result)
    result = io_error("cannot close", options_.path, errno);
  file_ = nullptr;
  return result;
}

Status RotatingFile::reopen() {
  if (options_.path.empty() || is_stdout_) return flush();
  Status result = close();
  Status opened = open_current();
  return result ? opened : result;
}

}  // namespace netwatcher
