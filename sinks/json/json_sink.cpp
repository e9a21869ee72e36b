// JSON Lines: one object per event, to a file (rotated by size) or stdout.
#include <cstdint>
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

  // Lines are formatted straight into a chunk written with one write(2) per
  // 256 KiB. A line that would not fit in the current file first sends the
  // lines before it, so rotation stays exact to the line.
  Status write(const Event& event) {
    const std::size_t start = pending_.size();
    formatter_.append(pending_, event);
    pending_ += '\n';
    const std::size_t line = pending_.size() - start;
    if (pending_.size() > file_.room() && start > 0) {
      Status s = file_.write(std::string_view(pending_).substr(0, start), pending_events_);
      pending_.erase(0, start);
      pending_events_ = 0;
      if (!s) {
        // The new line goes with the chunk before it: one failure, one drop.
        pending_.clear();
        file_.count_failed(1);
        return s;
      }
    }
    ++pending_events_;
    if (line > file_.room()) return send();  // rotates first
    if (pending_.size() >= kChunk) return send();
    return Status::success();
  }

  Status flush() {
    Status s = send();
    Status f = file_.flush();  // also after a failed send: it notices a removed file
    return s ? f : s;
  }
  Status close() {
    Status s = send();
    Status c = file_.close();
    return s ? c : s;
  }
  Status reopen() {
    Status s = send();
    Status r = file_.reopen();
    return s ? r : s;
  }
  SinkTally take_tally() { return file_.take_tally(); }

 private:
  static constexpr std::size_t kChunk = 256 * 1024;

  // On failure the chunk is dropped (and the write counted as failed): keeping
  // it would grow without bound on a full disk.
  Status send() {
    if (pending_.empty()) return Status::success();
    Status s = file_.write(pending_, pending_events_);
    pending_.clear();
    pending_events_ = 0;
    return s;
  }

  RotatingFile file_;
  JsonEventFormatter formatter_;
  std::string pending_;
  std::uint64_t pending_events_ = 0;  // lines in pending_
};

}  // namespace

NETWATCHER_SINK(JsonSink, "json", "1.0.0", "JSON Lines, one object per event, with rotation")
