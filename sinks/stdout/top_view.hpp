// The stdout sink's `format = "top"`: a live view of the metric store, like
// tcptop or iftop for the whole of netwatcher. Built from metric families
// alone (never from a plugin's names), so every plugin's counters and
// histograms appear in it without code here:
//
//   - counters, per family: the series ranked by rate over the last interval
//     (bytes per second for *_bytes_total, e.g. per-connection bytes), with
//     their totals; drops by reason, retransmits by cause, HTTP and DNS
//     requests by status all come out of this;
//   - histograms, per series: the counts since start-up drawn as bars, one
//     line per bucket, the way bcc's tcprtt and biolatency print theirs.
//
// Pure: render() formats two snapshots into one frame. The sink owns the
// timer, the terminal and the thread.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include "netwatcher/metrics.hpp"

namespace netwatcher::top {

struct Layout {
  std::size_t rows_per_family = 5;  // series shown per counter family
  std::size_t histograms = 6;       // histogram series shown
  std::size_t width = 0;            // columns; 0: lines are not cut
  std::size_t height = 0;           // lines; 0: the frame is not cut
  // Also the agent's own families (those labelled by plugin, sink or
  // program, and process_*), which otherwise only sum up in the title line.
  bool agent_families = false;
};

// Whether a family describes netwatcher itself rather than the network.
bool is_agent_family(const MetricFamilySpec& spec);

// One frame. `before` is the snapshot of the previous frame (empty on the
// first), taken `elapsed_s` seconds before `now`; a series it lacks shows its
// rate as "-".
// `clock` is printed in the title line as it is (e.g. "10:41:02 UTC").
std::string render(const MetricsSnapshot& now, const MetricsSnapshot& before, double elapsed_s,
                   std::string_view clock, double interval_s, const Layout& layout);

// "512ns", "1.02us", "65.5ms", "1.07s": a bucket bound, three digits.
std::string format_seconds(double seconds);
// "999B", "1.5KiB", "12.0MiB".
std::string format_bytes(double bytes);

}  // namespace netwatcher::top
