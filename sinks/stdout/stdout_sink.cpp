// Standard output: an aligned table (like the bcc tools), or JSON Lines with
// format = "json". Every row starts with its event type, so rows of different
// types can interleave under headers that are not repeated on every change:
// each type's header is printed when the type first appears and again only
// once a screenful of other rows has scrolled it away.
#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <string>
#include <string_view>
#include <unordered_map>

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
  if (field.unit == kAddressUnit) return false;  // hex, like a name
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
        {"header_every",
         ConfigType::integer,
         std::int64_t{0},
         "rows after which an event type's header is printed again before its next row; 0: "
         "the terminal's height when stdout is a terminal, else never (one header per type)",
         std::int64_t{0},
         std::int64_t{1000000},
         {}},
    }};
  }

  Status open(const SinkContext& context) {
    json_ = context.config.get_string("format") == "json";
    header_every_ = static_cast<std::uint64_t>(context.config.get_int("header_every"));
    if (header_every_ == 0 && ::isatty(STDOUT_FILENO)) {
      winsize size{};
      header_every_ =
          ::ioctl(STDOUT_FILENO, TIOCGWINSZ, &size) == 0 && size.ws_row > 4 ? size.ws_row - 2 : 24;
    }
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
    const int type_width = std::max<int>(10, static_cast<int>(schema.name.size()));
    auto header = headers_.find(&schema);
    bool due =
        header == headers_.end() ||
        (header_every_ && rows_ - header->second >= header_every_ && last_schema_ != &schema);
    if (due) {
      if (rows_) line_ += '\n';
      append_cell(line_, "TIME", 12, false);
      line_ += ' ';
      append_cell(line_, "EVENT", type_width, false);
      for (const auto& field : schema.fields) {
        std::string name = field.name;
        std::transform(name.begin(), name.end(), name.begin(),
                       [](unsigned char c) { return std::toupper(c); });
        line_ += ' ';
        append_cell(line_, name, column_width(field), right_aligned(field));
      }
      trim_and_end(line_);
      headers_[&schema] = rows_;
    }
    last_schema_ = &schema;
    ++rows_;
    // HH:MM:SS.mmm in UTC, like the TIME column of the bcc tools.
    std::string time = format_timestamp(event.timestamp_ns).substr(11, 12);
    append_cell(line_, time, 12, false);
    line_ += ' ';
    append_cell(line_, schema.name, type_width, false);
    for (std::size_t i = 0; i < schema.fields.size() && i < event.values.size(); ++i) {
      // An empty value shows as "-"; a view, not an assignment to the cell,
      // which gcc 12 -O3 misreads as an overlapping copy (-Wrestrict).
      const std::string cell = printable(field_value_to_string(schema.fields[i], event.values[i]));
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
  std::uint64_t header_every_ = 0;                                 // 0: each type's header once
  std::uint64_t rows_ = 0;                                         // rows written so far
  std::unordered_map<const EventSchema*, std::uint64_t> headers_;  // row of each type's last header
  RotatingFile out_;
  std::string line_;
  JsonEventFormatter json_formatter_;
};

}  // namespace

NETWATCHER_SINK(StdoutSink, "stdout", "1.0.0", "aligned table or JSON Lines on standard output")
