// CSV: one RFC 4180 file per event type, with a header row, rotated by size.
#include <map>
#include <memory>
#include <string>

#include "netwatcher/format.hpp"
#include "netwatcher/rotating_file.hpp"
#include "netwatcher/sink.hpp"

namespace {

using namespace netwatcher;

class CsvSink {
 public:
  SinkDescription describe() const {
    SinkDescription d;
    d.config = {{"directory",
                 ConfigType::string,
                 std::string("netwatcher-csv"),
                 "directory for <plugin>_<event>.csv files (created if missing)",
                 {},
                 {},
                 {}}};
    for (auto& key : RotatingFile::rotation_keys()) d.config.push_back(std::move(key));
    return d;
  }

  Status open(const SinkContext& context) {
    directory_ = context.config.get_string("directory");
    RotatingFile::apply_rotation(context.config, rotation_);
    // Files are created on the first event of each type, so a quiet plugin
    // leaves no empty files behind; but check the directory is usable now.
    RotatingFile probe;
    RotatingFile::Options options;
    options.path = directory_ + "/.netwatcher-write-test";
    if (Status s = probe.open(options); !s) return s;
    probe.close();
    std::remove(options.path.c_str());
    return Status::success();
  }

  Status write(const Event& event) {
    RotatingFile& file = file_for(*event.schema);
    if (!file_ok_[event.schema]) {
      if (Status s = open_file(file, *event.schema); !s) {
        file.count_failed(1);
        return s;
      }
      file_ok_[event.schema] = true;
    }
    row_.clear();
    append_csv_field(row_, format_timestamp(event.timestamp_ns));
    const auto& fields = event.schema->fields;
    for (std::size_t i = 0; i < event.values.size(); ++i) {
      row_ += ',';
      append_csv_field(row_, i < fields.size() ? field_value_to_string(fields[i], event.values[i])
                                               : value_to_string(event.values[i]));
    }
    row_ += "\r\n";
    return file.write(row_, 1);
  }

  Status flush() {
    Status result;
    for (auto& [schema, file] : files_)
      if (Status s = file->flush(); !s) result = s;
    return result;
  }

  Status close() {
    Status result;
    for (auto& [schema, file] : files_) {
      if (Status s = file->close(); !s) result = s;
      SinkTally t = file->take_tally();
      closed_tally_.written += t.written;
      closed_tally_.failed += t.failed;
    }
    files_.clear();
    return result;
  }

  Status reopen() {
    Status result;
    for (auto& [schema, file] : files_)
      if (file_ok_[schema])
        if (Status s = file->reopen(); !s) result = s;
    return result;
  }

  SinkTally take_tally() {
    SinkTally total = closed_tally_;
    closed_tally_ = {};
    for (auto& [schema, file] : files_) {
      SinkTally t = file->take_tally();
      total.written += t.written;
      total.failed += t.failed;
    }
    return total;
  }

 private:
  RotatingFile& file_for(const EventSchema& schema) {
    auto& slot = files_[&schema];
    if (!slot) slot = std::make_unique<RotatingFile>();
    return *slot;
  }

  Status open_file(RotatingFile& file, const EventSchema& schema) {
    RotatingFile::Options options;
    options.path = directory_ + "/" + schema.plugin + "_" + schema.name + ".csv";
    options.max_bytes = rotation_.max_bytes;
    options.keep = rotation_.keep;
    options.header = [&schema] {
      std::string header = "time";
      for (const auto& field : schema.fields) {
        header += ',';
        append_csv_field(header, field.name);
      }
      return header + "\r\n";
    };
    return file.open(std::move(options));
  }

  std::string directory_;
  RotatingFile::Options rotation_;  // only max_bytes and keep are used
  std::map<const EventSchema*, std::unique_ptr<RotatingFile>> files_;
  std::map<const EventSchema*, bool> file_ok_;
  std::string row_;
  SinkTally closed_tally_;  // of files closed by close(), until the host takes it
};

}  // namespace

NETWATCHER_SINK(CsvSink, "csv", "1.0.0", "RFC 4180 CSV, one file per event type, with rotation")
