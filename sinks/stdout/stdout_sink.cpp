// Standard output: an aligned table (like the bcc tools), JSON Lines with
// format = "json", or with format = "top" a live view of the metrics
// (top_view.hpp) redrawn every top_interval. Every table row starts with its
// event type, so rows of different types can interleave under headers that
// are not repeated on every change: each type's header is printed when the
// type first appears and again only once a screenful of other rows has
// scrolled it away.
#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <ctime>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>

#include "netwatcher/format.hpp"
#include "netwatcher/rotating_file.hpp"
#include "netwatcher/sink.hpp"
#include "top_view.hpp"

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
         "\"table\" (aligned columns, header per event type), \"json\" (JSON Lines) or "
         "\"top\" (a live view of every counter's rates and every histogram, redrawn every "
         "top_interval; events are not printed)",
         {},
         {},
         {"table", "json", "top"}},
        {"top_interval",
         ConfigType::floating,
         2.0,
         "format = \"top\": seconds between frames, at least 1.5 (rates are over this time; "
         "the host refreshes kernel counters at most once a second)",
         {},
         {},
         {}},
        {"top_rows",
         ConfigType::integer,
         std::int64_t{5},
         "format = \"top\": series shown per counter family (the fastest first)",
         std::int64_t{1},
         std::int64_t{1000},
         {}},
        {"top_histograms",
         ConfigType::integer,
         std::int64_t{6},
         "format = \"top\": histogram series drawn, those with the most new observations "
         "first",
         std::int64_t{0},
         std::int64_t{1000},
         {}},
        {"top_agent",
         ConfigType::boolean,
         false,
         "format = \"top\": also show netwatcher's own counters (per plugin, program and "
         "sink); otherwise only their sums, in the title line",
         {},
         {},
         {}},
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
    top_ = context.config.get_string("format") == "top";
    header_every_ = static_cast<std::uint64_t>(context.config.get_int("header_every"));
    if (header_every_ == 0 && ::isatty(STDOUT_FILENO)) {
      winsize size{};
      header_every_ =
          ::ioctl(STDOUT_FILENO, TIOCGWINSZ, &size) == 0 && size.ws_row > 4 ? size.ws_row - 2 : 24;
    }
    RotatingFile::Options options;
    options.path = "-";
    if (Status s = out_.open(std::move(options)); !s) return s;
    if (top_) return start_top(context);
    return Status::success();
  }

  Status write(const Event& event) {
    if (top_) return Status::success();  // the view shows what events add up to
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

  // In top mode only the view's thread touches the output.
  Status flush() { return top_ ? Status::success() : out_.flush(); }
  Status close() {
    stop_top();
    return out_.close();
  }

  ~StdoutSink() { stop_top(); }

 private:
  Status start_top(const SinkContext& context) {
    const double interval = context.config.get_double("top_interval");
    // A refresh younger than a second serves every request for metrics: a
    // shorter interval would see the same values in every other frame.
    if (!(interval >= 1.5) || interval > 86400)
      return Status::failure("key 'top_interval' must be between 1.5 and 86400 seconds, got " +
                             std::to_string(interval));
    if (!context.metrics) return Status::failure("format = \"top\" needs the host's metrics");
    layout_.rows_per_family = static_cast<std::size_t>(context.config.get_int("top_rows"));
    layout_.agent_families = context.config.get_bool("top_agent");
    layout_.histograms = static_cast<std::size_t>(context.config.get_int("top_histograms"));
    terminal_ = ::isatty(STDOUT_FILENO);
    top_thread_ = std::thread([this, interval, metrics = context.metrics] {
      run_top(std::chrono::duration<double>(interval), interval, metrics);
    });
    return Status::success();
  }

  void stop_top() {
    if (!top_thread_.joinable()) return;
    {
      std::lock_guard lock(top_mutex_);
      top_stop_ = true;
    }
    top_wake_.notify_all();
    top_thread_.join();
  }

  // The view's thread: a frame every interval, from the store's current
  // values and those of the frame before.
  void run_top(std::chrono::duration<double> interval, double interval_s,
               const std::function<MetricsSnapshot()>& metrics) {
    using clock = std::chrono::steady_clock;
    MetricsSnapshot before;
    clock::time_point before_at{};
    auto next = clock::now() + std::chrono::duration_cast<clock::duration>(interval);
    for (;;) {
      {
        std::unique_lock lock(top_mutex_);
        if (top_wake_.wait_until(lock, next, [&] { return top_stop_; })) return;
      }
      next += std::chrono::duration_cast<clock::duration>(interval);
      if (next < clock::now())
        next = clock::now() + std::chrono::duration_cast<clock::duration>(interval);
      MetricsSnapshot now = metrics();
      const auto now_at = clock::now();
      top::Layout layout = layout_;
      if (terminal_) {
        winsize size{};
        if (::ioctl(STDOUT_FILENO, TIOCGWINSZ, &size) == 0 && size.ws_row > 2) {
          layout.height = size.ws_row;
          layout.width = size.ws_col;
        }
      }
      const double elapsed =
          before.empty() ? 0 : std::chrono::duration<double>(now_at - before_at).count();
      std::string frame = top::render(now, before, elapsed, utc_clock(), interval_s, layout);
      // A terminal is redrawn in place, line by line (no flicker of a full
      // clear), without a last newline that would scroll the title away; a
      // pipe or file gets one frame after another, a blank line apart (like
      // top -b).
      if (terminal_) {
        std::string drawn = "\x1b[H";
        for (std::size_t at = 0, end; (end = frame.find('\n', at)) != std::string::npos;
             at = end + 1) {
          drawn.append(frame, at, end - at);
          drawn += end + 1 == frame.size() ? "\x1b[K\x1b[J" : "\x1b[K\n";
        }
        frame = std::move(drawn);
      } else if (frames_) {
        // Written on its own: gcc 12 at -O2 takes frame.insert(0, "\n") for
        // an overlapping memcpy (-Werror=restrict).
        (void)out_.write("\n");
      }
      ++frames_;
      (void)out_.write(frame);
      (void)out_.flush();
      before = std::move(now);
      before_at = now_at;
    }
  }

  static std::string utc_clock() {
    const std::time_t t = std::time(nullptr);
    std::tm tm{};
    gmtime_r(&t, &tm);
    char buf[32];
    std::strftime(buf, sizeof buf, "%H:%M:%S UTC", &tm);
    return buf;
  }

  static void trim_and_end(std::string& line) {
    while (!line.empty() && line.back() == ' ') line.pop_back();
    line += '\n';
  }

  bool json_ = false;
  bool top_ = false;
  bool terminal_ = false;
  top::Layout layout_;
  std::thread top_thread_;
  std::mutex top_mutex_;
  std::condition_variable top_wake_;
  bool top_stop_ = false;  // under top_mutex_
  std::uint64_t frames_ = 0;
  const EventSchema* last_schema_ = nullptr;
  std::uint64_t header_every_ = 0;                                 // 0: each type's header once
  std::uint64_t rows_ = 0;                                         // rows written so far
  std::unordered_map<const EventSchema*, std::uint64_t> headers_;  // row of each type's last header
  RotatingFile out_;
  std::string line_;
  JsonEventFormatter json_formatter_;
};

}  // namespace

NETWATCHER_SINK(StdoutSink, "stdout", "1.0.0",
                "aligned table, JSON Lines or a live top view on standard output")
