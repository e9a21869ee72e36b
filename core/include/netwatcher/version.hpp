// netwatcher SDK: ABI version and compiler identity.
//
// A plugin records the values below in its descriptor when it is compiled. The
// host refuses a plugin whose ABI major differs from its own, or whose ABI minor
// is newer than its own (older minors are accepted: minors only append). Because
// the plugin interfaces are C++ classes, the host also refuses a plugin built
// with a different compiler family / standard library major / C++ standard; the
// compiler id string below captures exactly those.
//
// "Append" means new functions and new types only. A new member in a struct
// that crosses the boundary (FieldSchema, HookSpec, ...) changes its layout
// and needs a new major.
//
// A new virtual function at the end of a class the host implements and plugins
// only call (EventEmitter, PluginHost) is an append too.
//
// History: 2.0 added FieldSchema::anomaly, EventSchema::plugin_fields and
// HookSpec::enabled_by. 2.1 added EventEmitter::make_values(). 2.2 added
// user-space hook candidates ("user:<name>", see HookSpec) and
// PluginHost::set_metrics_refresh(). 2.3 added PluginHost::track_table()
// with TableSpec and TableAccount and the nw_tables map of common.bpf.h;
// PluginHost::release_netfilter() and attach_netfilter() from collect(); and
// SinkTally with, at the end of Sink, tallies_writes(), take_tally() and
// reopen(), which the host calls only on sinks whose descriptor says 2.3 or
// later.
#pragma once

#include <version>  // defines _GLIBCXX_RELEASE / _LIBCPP_VERSION

#define NETWATCHER_ABI_MAJOR 2
#define NETWATCHER_ABI_MINOR 3

#define NETWATCHER_STRINGIFY_IMPL(x) #x
#define NETWATCHER_STRINGIFY(x) NETWATCHER_STRINGIFY_IMPL(x)

#if defined(__clang__)
#define NETWATCHER_COMPILER_FAMILY "clang-" NETWATCHER_STRINGIFY(__clang_major__)
#elif defined(__GNUC__)
#define NETWATCHER_COMPILER_FAMILY "gcc-" NETWATCHER_STRINGIFY(__GNUC__)
#else
#define NETWATCHER_COMPILER_FAMILY "unknown"
#endif

#if defined(_GLIBCXX_RELEASE)
#define NETWATCHER_STDLIB "libstdc++-" NETWATCHER_STRINGIFY(_GLIBCXX_RELEASE)
#elif defined(_LIBCPP_VERSION)
#define NETWATCHER_STDLIB "libc++-" NETWATCHER_STRINGIFY(_LIBCPP_VERSION)
#else
#define NETWATCHER_STDLIB "unknown-stdlib"
#endif

// Example: "gcc-12/libstdc++-12/c++202002L".
#define NETWATCHER_COMPILER_ID \
  NETWATCHER_COMPILER_FAMILY "/" NETWATCHER_STDLIB "/c++" NETWATCHER_STRINGIFY(__cplusplus)

namespace netwatcher {
inline constexpr int kAbiMajor = NETWATCHER_ABI_MAJOR;
inline constexpr int kAbiMinor = NETWATCHER_ABI_MINOR;
inline constexpr const char* kCompilerId = NETWATCHER_COMPILER_ID;
}  // namespace netwatcher
