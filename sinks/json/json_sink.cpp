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
    return {{
        {"path",
         ConfigType::string,
         std::string("-"),
         "output file; \"-\" writes to standard output",
         {},
         {},
         {}},
        {"max_size",
         ConfigType::integer,
         std::int64_t{100} << 20,
         "rotate when the file would grow past this many bytes (0 = never)",
         0,
         {},
         {}},
        {"max_files", ConfigType::integer, std::int64_t{5}, "rotated files kept", 0, 1000, {}},
    }};
  }

  Status open(const SinkContext& context) {
    RotatingFile::Options options;
    options.path = context.config.get_string("path");
    options.max_bytes = static_cast<std::uint64_t>(context.config.get_int("max_size"));
    options.keep = static_cast<unsigned>(context.config.get_int("max_files"));
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
