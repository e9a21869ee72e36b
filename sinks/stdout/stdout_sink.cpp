// Standard output: an aligned table with a header per event type (like the bcc
// tools), or JSON Lines with format = "json".
#include <algorithm>
#include <cctype>
#include <cstdio>
#include <string>
#include <string_view>

#include "netwatcher/format.hpp"
#include "netwatcher/rotating_file.hpp"
#include "netwatcher/sink.hpp"

namespace {

using namespace netwatcher;

int column_width(const FieldSchema& field) {
  if (field.width > 0) return std::max<int>(field.width, field.name.size());
  int by_type = 8;
  switch (field.type) {
    case FieldType::u64:
    case FieldType::i64:
      by_type = 8;
      break;
    case FieldType::f64:
      by_type = 10;
      break;
    case FieldType::boolean:
      by_type = 5;
      break;
    case FieldType::text:
      by_type = 12;
      break;
  }
  return std::max<int>(by_type, field.name.size());
}

bool right_aligned(const FieldSchema& field) {
  return field.type == FieldType::u64 || field.type == FieldType::i64 ||
         field.type == FieldType::f64;
}

// A table row must stay on one line whatever the value holds: control
// characters and backslashes are written as C-style escapes.
std::string printable(const std::string& text) {
  std::string out;
  for (unsigned char c : text) {
    switch (c) {
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (c < 0x20 || c == 0x7F) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\x%02x", c);
          out += buf;
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  return out;
}

void append_cell(std::string& out, std::string_view text, int width, bool right) {
  int pad = std::max<int>(0, width - static_cast<int>(text.size()));
  if (right) out.append(pad, ' ');
  out += text;
  if (!right) out.append(pad, ' ');
}

class StdoutSink {
 public:
  SinkDescription describe() const {
    return {{
        {"format",
         ConfigType::string,
         std::string("table"),
         "\"table\" (aligned columns, header per event type) or \"json\" (JSON Lines)",
         {},
         {},
         {"table", "json"}},
    }};
  }

  Status open(const SinkContext& context) {
    json_ = context.config.get_string("format") == "json";
    RotatingFile::Options options;
    options.path = "-";
    return out_.open(std::move(options));
  }

  Status write(const Event& event) {
    line_.clear();
    if (json_) {
      json_formatter_.append(line_, event);
      line_ += '\n';
      return out_.write(line_);
    }
    const EventSchema& schema = *event.schema;
    if (&schema != last_schema_) {
      if (last_schema_) line_ += '\n';
      line_ += "# " + schema.plugin + "/" + schema.name + "\n";
      append_cell(line_, "TIME", 12, false);
      for (const auto& field : schema.fields) {
        std::string name = field.name;
        std::transform(name.begin(), name.end(), name.begin(),
                       [](unsigned char c) { return std::toupper(c); });
        line_ += ' ';
        append_cell(line_, name, column_width(field), right_aligned(field));
      }
      trim_and_end(line_);
      last_schema_ = &schema;
    }
    // HH:MM:SS.mmm in UTC, like the TIME column of the bcc tools.
    std::string time = format_timestamp(event.timestamp_ns).substr(11, 12);
    append_cell(line_, time, 12, false);
    for (std::size_t i = 0; i < schema.fields.size() && i < event.values.size(); ++i) {
      // An empty value shows as "-"; a view, not an assignment to the cell,
      // which gcc 12 -O3 misreads as an overlapping copy (-Wrestrict).
      const std::string cell = printable(value_to_string(event.values[i]));
      line_ += ' ';
      append_cell(line_, cell.empty() ? std::string_view("-") : std::string_view(cell),
                  column_width(schema.fields[i]), right_aligned(schema.fields[i]));
    }
    trim_and_end(line_);
    return out_.write(line_);
  }

  Status flush() { return out_.flush(); }
  Status close() { return out_.close(); }

 private:
  static void trim_and_end(std::string& line) {
    while (!line.empty() && line.back() == ' ') line.pop_back();
    line += '\n';
  }

  bool json_ = false;
  const EventSchema* last_schema_ = nullptr;
  RotatingFile out_;
  std::string line_;
  JsonEventFormatter json_formatter_;
};

}  // namespace

NETWATCHER_SINK(StdoutSink, "stdout", "1.0.0", "aligned table or JSON Lines on standard output")
