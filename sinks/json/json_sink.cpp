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

  Status write(const Event& event) {
    line_.clear();
    append_json_event(line_, event);
    line_ += '\n';
    return file_.write(line_);
  }

  Status flush() { return file_.flush(); }
  Status close() { return file_.close(); }

 private:
  RotatingFile file_;
  std::string line_;
};

}  // namespace

NETWATCHER_SINK(JsonSink, "json", "1.0.0", "JSON Lines, one object per event, with rotation")
