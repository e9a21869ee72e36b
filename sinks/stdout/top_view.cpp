#include "top_view.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <unordered_map>
#include <vector>

namespace netwatcher::top {

namespace {

constexpr int kBarWidth = 40;  // bcc's

bool ends_with(std::string_view text, std::string_view suffix) {
  return text.size() >= suffix.size() && text.substr(text.size() - suffix.size()) == suffix;
}

enum class Unit { plain, bytes, seconds };

Unit unit_of(const MetricFamilySpec& spec) {
  const std::string_view name = spec.name;
  if (ends_with(name, "_bytes_total") || ends_with(name, "_bytes")) return Unit::bytes;
  if (ends_with(name, "_seconds_total") || ends_with(name, "_seconds")) return Unit::seconds;
  return Unit::plain;
}

std::string printf_string(const char* format, double value) {
  char buf[64];
  std::snprintf(buf, sizeof buf, format, value);
  return buf;
}

// Three significant digits with a k/M/G/T suffix past 9999.
std::string format_count(double value) {
  if (std::fabs(value) < 10000) {
    if (value == std::floor(value)) return printf_string("%.0f", value);
    return printf_string(std::fabs(value) < 10 ? "%.2f" : "%.1f", value);
  }
  static constexpr const char* kSuffixes[] = {"k", "M", "G", "T", "P"};
  int i = -1;
  while (std::fabs(value) >= 1000 && i < 4) {
    value /= 1000;
    ++i;
  }
  return printf_string(value < 100 ? "%.3g" : "%.0f", value) + kSuffixes[i];
}

std::string format_value(Unit unit, double value) {
  switch (unit) {
    case Unit::bytes:
      return format_bytes(value);
    case Unit::seconds:
      return format_seconds(value);
    case Unit::plain:
      break;
  }
  return format_count(value);
}

// Label values are whatever the traffic held: one line each, whatever they hold.
void append_escaped(std::string& out, std::string_view text) {
  for (unsigned char c : text) {
    if (c < 0x20 || c == 0x7F) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
    } else {
      out += static_cast<char>(c);
    }
  }
}

std::string label_text(const MetricFamilySpec& spec, const LabelValues& labels) {
  std::string out;
  for (std::size_t i = 0; i < labels.size() && i < spec.labels.size(); ++i) {
    if (!out.empty()) out += ' ';
    out += spec.labels[i];
    out += '=';
    append_escaped(out, labels[i]);
  }
  return out;
}

std::string right(std::string text, std::size_t width) {
  if (text.size() < width) text.insert(0, width - text.size(), ' ');
  return text;
}

// Cuts at `width` bytes without splitting a UTF-8 sequence.
void cut(std::string& line, std::size_t width) {
  if (width == 0 || line.size() <= width) return;
  std::size_t at = width;
  while (at > 0 && (static_cast<unsigned char>(line[at]) & 0xC0) == 0x80) --at;
  line.resize(at);
}

using SeriesIndex = std::unordered_map<std::string, std::map<LabelValues, const MetricSeries*>>;

SeriesIndex index_of(const MetricsSnapshot& snapshot) {
  SeriesIndex index;
  for (const auto& family : snapshot) {
    auto& series = index[family.spec.name];
    for (const auto& s : family.series) series.emplace(s.labels, &s);
  }
  return index;
}

const MetricSeries* find(const SeriesIndex& index, const std::string& family,
                         const LabelValues& labels) {
  auto f = index.find(family);
  if (f == index.end()) return nullptr;
  auto s = f->second.find(labels);
  return s == f->second.end() ? nullptr : s->second;
}

struct CounterRow {
  const MetricSeries* series;
  double rate;  // NaN: no earlier value
};

struct HistogramRow {
  const MetricFamilySnapshot* family;
  const MetricSeries* series;
  std::uint64_t recent;  // observations since the previous frame
};

void append_bars(std::vector<std::string>& lines, const MetricFamilySnapshot& family,
                 const MetricSeries& series) {
  const auto& counts = series.bucket_counts;
  const auto& bounds = family.spec.buckets;
  std::size_t first = counts.size(), last = 0;
  std::uint64_t peak = 0;
  for (std::size_t i = 0; i < counts.size(); ++i) {
    if (!counts[i]) continue;
    first = std::min(first, i);
    last = i;
    peak = std::max(peak, counts[i]);
  }
  if (first == counts.size()) return;
  const Unit unit = unit_of(family.spec);
  std::vector<std::string> ranges;
  std::size_t range_width = 5;
  for (std::size_t i = first; i <= last; ++i) {
    std::string range;
    if (i < bounds.size()) {
      range =
          format_value(unit, i == 0 ? 0 : bounds[i - 1]) + " -> " + format_value(unit, bounds[i]);
    } else {
      range = "> " + format_value(unit, bounds.empty() ? 0 : bounds.back());
    }
    range_width = std::max(range_width, range.size());
    ranges.push_back(std::move(range));
  }
  lines.push_back(right("range", range_width + 2) + " : count      distribution");
  for (std::size_t i = first; i <= last; ++i) {
    const int stars = static_cast<int>(
        std::lround(static_cast<double>(counts[i]) * kBarWidth / static_cast<double>(peak)));
    std::string count = std::to_string(counts[i]);
    count.resize(std::max<std::size_t>(count.size(), 10), ' ');
    lines.push_back(right(ranges[i - first], range_width + 2) + " : " + count + " |" +
                    std::string(static_cast<std::size_t>(stars), '*') +
                    std::string(static_cast<std::size_t>(kBarWidth - stars), ' ') + "|");
  }
}

}  // namespace

bool is_agent_family(const MetricFamilySpec& spec) {
  if (spec.name.rfind("process_", 0) == 0) return true;
  return std::any_of(spec.labels.begin(), spec.labels.end(), [](const std::string& label) {
    return label == "plugin" || label == "sink" || label == "program";
  });
}

std::string format_seconds(double seconds) {
  const double magnitude = std::fabs(seconds);
  if (magnitude == 0) return "0";
  if (magnitude < 1e-6) return printf_string("%.3gns", seconds * 1e9);
  if (magnitude < 1e-3) return printf_string("%.3gus", seconds * 1e6);
  if (magnitude < 1) return printf_string("%.3gms", seconds * 1e3);
  return printf_string("%.3gs", seconds);
}

std::string format_bytes(double bytes) {
  static constexpr const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int i = 0;
  while (std::fabs(bytes) >= 1024 && i < 4) {
    bytes /= 1024;
    ++i;
  }
  if (i == 0) return printf_string("%.0f", bytes) + kUnits[0];
  return printf_string("%.1f", bytes) + kUnits[i];
}

std::string render(const MetricsSnapshot& now, const MetricsSnapshot& before, double elapsed_s,
                   std::string_view clock, double interval_s, const Layout& layout) {
  const SeriesIndex earlier = index_of(before);
  const bool have_rates = !before.empty() && elapsed_s > 0;
  auto rate_of = [&](const MetricFamilySnapshot& family, const MetricSeries& series) {
    if (!have_rates) return std::nan("");
    // A series the previous frame lacked has no rate yet: it may count what
    // happened long before (a connection admitted late under a cap).
    const MetricSeries* then = find(earlier, family.spec.name, series.labels);
    if (!then) return std::nan("");
    return std::max(0.0, series.value - then->value) / elapsed_s;
  };

  std::vector<std::string> lines;
  {
    // The host's own totals: how much the view stands for, and what it missed.
    double events = 0, events_rate = 0, lost = 0;
    bool have_events = false;
    for (const auto& family : now) {
      if (family.spec.name == "netwatcher_events_total") {
        have_events = true;
        for (const auto& s : family.series) {
          events += s.value;
          if (have_rates) events_rate += rate_of(family, s);
        }
      } else if (family.spec.name == "netwatcher_events_lost_total") {
        for (const auto& s : family.series) lost += s.value;
      }
    }
    std::string title =
        "netwatcher top  " + std::string(clock) + "  every " + format_count(interval_s) + " s";
    if (have_events)
      title += "  events " + format_count(events) +
               (have_rates ? " (" + format_count(events_rate) + "/s)" : "") + ", lost " +
               format_count(lost);
    lines.push_back(std::move(title));
  }

  // Counters: families that moved since the last frame first, each family's
  // series by rate, then by total.
  struct CounterFamily {
    const MetricFamilySnapshot* family;
    std::vector<CounterRow> rows;
    bool moved = false;
  };
  std::vector<CounterFamily> counters;
  std::vector<HistogramRow> histograms;
  for (const auto& family : now) {
    if (!layout.agent_families && is_agent_family(family.spec)) continue;
    if (family.spec.type == MetricType::histogram) {
      for (const auto& series : family.series) {
        if (!series.count) continue;
        const MetricSeries* then = find(earlier, family.spec.name, series.labels);
        const std::uint64_t from = then ? then->count : 0;
        histograms.push_back({&family, &series, series.count > from ? series.count - from : 0});
      }
      continue;
    }
    if (family.spec.type != MetricType::counter) continue;
    CounterFamily shown{&family, {}, false};
    for (const auto& series : family.series) {
      if (series.value == 0) continue;
      const double rate = rate_of(family, series);
      shown.moved = shown.moved || rate > 0;
      shown.rows.push_back({&series, rate});
    }
    if (shown.rows.empty()) continue;
    std::sort(shown.rows.begin(), shown.rows.end(), [](const CounterRow& a, const CounterRow& b) {
      const double ra = std::isnan(a.rate) ? 0 : a.rate, rb = std::isnan(b.rate) ? 0 : b.rate;
      if (ra != rb) return ra > rb;
      if (a.series->value != b.series->value) return a.series->value > b.series->value;
      return a.series->labels < b.series->labels;
    });
    counters.push_back(std::move(shown));
  }
  std::stable_sort(
      counters.begin(), counters.end(),
      [](const CounterFamily& a, const CounterFamily& b) { return a.moved > b.moved; });

  lines.emplace_back();
  lines.push_back(right("RATE/s", 12) + " " + right("TOTAL", 12) + "  COUNTER SERIES");
  if (counters.empty()) lines.push_back("  (no counter has counted anything yet)");
  for (const auto& shown : counters) {
    const Unit unit = unit_of(shown.family->spec);
    lines.push_back(shown.family->spec.name);
    const std::size_t n =
        std::min(shown.rows.size(), std::max<std::size_t>(1, layout.rows_per_family));
    for (std::size_t i = 0; i < n; ++i) {
      const CounterRow& row = shown.rows[i];
      const std::string rate = std::isnan(row.rate) ? "-" : format_value(unit, row.rate);
      std::string labels = label_text(shown.family->spec, row.series->labels);
      lines.push_back(right(rate, 12) + " " + right(format_value(unit, row.series->value), 12) +
                      "  " + (labels.empty() ? "(no labels)" : labels));
    }
    if (shown.rows.size() > n)
      lines.push_back(right("", 27) + "... " + std::to_string(shown.rows.size() - n) +
                      " more series");
  }

  std::stable_sort(histograms.begin(), histograms.end(),
                   [](const HistogramRow& a, const HistogramRow& b) {
                     if (a.recent != b.recent) return a.recent > b.recent;
                     return a.series->count > b.series->count;
                   });
  lines.emplace_back();
  lines.push_back("HISTOGRAMS (counts since start-up; +N: observations since the last frame)");
  if (histograms.empty()) lines.push_back("  (no histogram has an observation yet)");
  const std::size_t shown_histograms = std::min(histograms.size(), layout.histograms);
  for (std::size_t i = 0; i < shown_histograms; ++i) {
    const HistogramRow& row = histograms[i];
    const Unit unit = unit_of(row.family->spec);
    std::string head = row.family->spec.name;
    const std::string labels = label_text(row.family->spec, row.series->labels);
    if (!labels.empty()) head += " " + labels;
    head += "  count " + std::to_string(row.series->count) + " (+" + std::to_string(row.recent) +
            ")  mean " +
            format_value(unit, row.series->sum / static_cast<double>(row.series->count));
    lines.push_back(std::move(head));
    append_bars(lines, *row.family, *row.series);
  }
  if (histograms.size() > shown_histograms)
    lines.push_back("... " + std::to_string(histograms.size() - shown_histograms) +
                    " more histogram series");

  if (layout.height > 1 && lines.size() > layout.height) {
    const std::size_t hidden = lines.size() - (layout.height - 1);
    lines.resize(layout.height - 1);
    lines.push_back("... " + std::to_string(hidden) + " more lines (a taller terminal shows them)");
  }
  std::string frame;
  for (auto& line : lines) {
    cut(line, layout.width);
    frame += line;
    frame += '\n';
  }
  return frame;
}

}  // namespace netwatcher::top
