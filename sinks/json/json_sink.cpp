// JSON Lines: one object per event, to a file (rotated by size) or stdout.
#include <string>

#include "netwatcher/format.hpp"
#include "netwatcher/rotating_file.hpp"
#include "netwatcher/sink.hpp"

namespace {

using namespace netwatcher;

class JsonSink {
 public:
  SinkDescription describe() const {
    SinkDescription d;
    d.config = {{"path",
                 ConfigType::string,
                 std::string("-"),
                 "output file; \"-\" writes to standard output",
                 {},
                 {},
                 {}}};
    for (auto& key : RotatingFile::rotation_keys()) d.config.push_back(std::move(key));
    return d;
  }

  Status open(const SinkContext& context) {
    RotatingFile::Options options;
    options.path = context.config.get_string("path");
    RotatingFile::apply_rotation(context.config, options);
    return file_.open(std::move(options));
  }

  // Lines are gathered and written in large chunks: one write(2) and no
  // stdio copy for hundreds of events. A line that would not fit in the
  // current file first sends what is gathered, so rotation stays per line.
  Status write(const Event& event) {
    line_.clear();
    formatter_.append(line_, event);
    line_ += '\n';
    if (pending_.size() + line_.size() > file_.room() || pending_.size() >= kChunk) {
      if (Status s = send(); !s) return s;
    }
    if (line_.size() > file_.room()) return file_.write(line_);  // rotates first
    pending_ += line_;
    return Status::success();
  }

  Status flush() {
    if (Status s = send(); !s) return s;
    return file_.flush();
  }
  Status close() {
    Status s = send();
    Status c = file_.close();
    return s ? c : s;
  }

 private:
  static constexpr std::size_t kChunk = 256 * 1024;

  // On failure the chunk is dropped (and the write counted as failed): keeping
  // it would grow without bound on a full disk.
  Status send() {
    if (pending_.empty()) return Status::success();
    Status s = file_.write(pending_);
    pending_.clear();
    return s;
  }

  RotatingFile file_;
  JsonEventFormatter formatter_;
  std::string line_, pending_;
};

}  // namespace

NETWATCHER_SINK(JsonSink, "json", "1.0.0", "JSON Lines, one object per event, with rotation")
