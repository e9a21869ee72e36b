// netwatcher SDK: ABI version and the identity that must match across the
// plugin boundary.
//
// What is compared, and when
// --------------------------
// A plugin records the values below in its descriptor (descriptor.hpp) when it
// is compiled. The host reads that descriptor from the file, before the file is
// loaded, and refuses:
//   - an ABI major other than its own;
//   - an ABI minor newer than its own (older minors are accepted: minors only
//     append);
//   - a different C++ standard library identity: library and its major
//     (NETWATCHER_STDLIB), libstdc++'s dual ABI (NETWATCHER_DUAL_ABI, i.e.
//     _GLIBCXX_USE_CXX11_ABI) and the C++ standard (NETWATCHER_CPLUSPLUS).
//     These decide the layout of the std types (std::string, std::vector,
//     std::function, std::variant...) that cross the boundary inside the
//     interfaces of plugin.hpp and sink.hpp.
// The compiler family (NETWATCHER_COMPILER_FAMILY, e.g. "gcc-12", "clang-14")
// is informational only: it is shown by --list-plugins and --version but not
// compared, because gcc and clang targeting the same libstdc++ and Itanium
// C++ ABI produce interchangeable objects.
//
// What a minor may add
// --------------------
// "Append" means new functions and new types only. A new member in a struct
// that crosses the boundary as a C++ type (FieldSchema, HookSpec, ...) changes
// its layout and needs a new major. A new virtual function at the end of a
// class the host implements and plugins only call (EventEmitter, PluginHost)
// is an append too. nw_plugin_descriptor may grow at its end in a minor
// (struct_size says how much of it a plugin knows).
//
// Why descriptions still cross as C++ types (not serialized)
// -----------------------------------------------------------
// ProbePlugin::describe(PluginDescription&) still fills C++ structs. A
// versioned, self-describing serialized PluginDescription (host parses it and
// ignores unknown keys) is left out of 3.0 on purpose, because on its own it
// would not make a new member of FieldSchema/EventSchema/HookSpec a minor:
//   - the same structs cross the boundary again in the other direction: the
//     host hands sinks (which are plugins too) `const EventSchema*` in
//     SinkContext::schemas and Event::schema, and MetricFamilySpec inside
//     MetricsSnapshot, so a sink built against the old layout would misread
//     a host built with the new member;
//   - the calls after describe() pass std types as well (std::vector<Value>
//     in EventEmitter::emit(), ConfigValues, std::function in PluginHost), so
//     the std library identity check stays necessary either way.
// Making additions minors needs the whole boundary to be plain C in the style
// of Falco's plugin_api.h (schemas as data, every entry with its struct
// size), with the C++ classes as inline wrappers on each side. Until then a
// member added to a struct that crosses the boundary is a new major, and the
// file-level descriptor check above is what keeps mismatched layouts out.
//
// The BPF side of the contract (the maps nw_events, nw_lost, nw_suppressed,
// nw_tables, the rodata nw_wakeup_bytes and struct nw_record_header) has a
// version of its own, NW_BPF_CONTRACT_VERSION in netwatcher/bpf/types.h,
// which the host checks in each BPF object after the plugin's open() and
// before load.
//
// History: 2.0 added FieldSchema::anomaly, EventSchema::plugin_fields and
// HookSpec::enabled_by. 2.1 added EventEmitter::make_values(). 2.2 added
// user-space hook candidates ("user:<name>", see HookSpec) and
// PluginHost::set_metrics_refresh(). 2.3 added PluginHost::track_table()
// with TableSpec and TableAccount and the nw_tables map of common.bpf.h;
// PluginHost::release_netfilter() and attach_netfilter() from collect(); and
// SinkTally with, at the end of Sink, tallies_writes(), take_tally() and
// reopen(), which the host calls only on sinks whose descriptor says 2.3 or
// later. 3.0 made the descriptor pointer-free and put it in the
// .netwatcher_descriptor ELF section, read by the host before the file is
// loaded; replaced the compiler id by the standard library identity
// (library and major, dual ABI, C++ standard); changed
// ProbePlugin::describe() to return a Status (a throwing describe() refuses
// the plugin); and gave the BPF contract its version (nw_bpf_contract).
// 3.1 added the shared L7 capture: "l7:tcp"/"l7:udp" hook candidates,
// L7Protocol (netwatcher/l7_protocol.hpp), and at the end of PluginHost
// serve_protocol(), served_protocol_count() and served_protocol(); a probe
// plugin may open no BPF object. 3.2 added, at the end of GlobalFilter, the
// address lists local_nets / remote_nets ([filter] local_addresses /
// remote_addresses), and the nw_local_nets / nw_remote_nets tries of
// common.bpf.h that Skeleton::load() fills. 3.3 added the fields the host
// names (kCgroupIdField, kNetnsField in event.hpp; CgroupIdLabel), the
// nw_sock_cgroup_id() helper of common.bpf.h, L7Packet::cgroup_id, and the
// metric label the host turns into container labels (kCgroupIdLabel in
// metrics.hpp). 3.4 added, at the end of PluginHost, attach_uprobe() (uprobe
// programs, SEC("uprobe") / SEC("uretprobe"), linked per file by the
// plugin), and L7Packet::tls. 3.5 added L7Packet::pieces (L7Piece: HTTP/2
// frames the capture followed past its captured bytes).
#pragma once

#include <version>  // defines _GLIBCXX_RELEASE / _LIBCPP_VERSION / _GLIBCXX_USE_CXX11_ABI

#define NETWATCHER_ABI_MAJOR 3
#define NETWATCHER_ABI_MINOR 5

#define NETWATCHER_STRINGIFY_IMPL(x) #x
#define NETWATCHER_STRINGIFY(x) NETWATCHER_STRINGIFY_IMPL(x)

// Informational: who compiled the plugin.
#if defined(__clang__)
#define NETWATCHER_COMPILER_FAMILY "clang-" NETWATCHER_STRINGIFY(__clang_major__)
#elif defined(__GNUC__)
#define NETWATCHER_COMPILER_FAMILY "gcc-" NETWATCHER_STRINGIFY(__GNUC__)
#else
#define NETWATCHER_COMPILER_FAMILY "unknown"
#endif

// Compared: the standard library and its major version.
#if defined(_GLIBCXX_RELEASE)
#define NETWATCHER_STDLIB "libstdc++-" NETWATCHER_STRINGIFY(_GLIBCXX_RELEASE)
#elif defined(_LIBCPP_VERSION)
#define NETWATCHER_STDLIB "libc++-" NETWATCHER_STRINGIFY(_LIBCPP_VERSION)
#else
#define NETWATCHER_STDLIB "unknown-stdlib"
#endif

// Compared: libstdc++'s dual ABI (1: the C++11 std::string and std::list,
// 0: the old copy-on-write ones); -1 for a library without a dual ABI.
#if defined(_GLIBCXX_USE_CXX11_ABI)
#define NETWATCHER_DUAL_ABI _GLIBCXX_USE_CXX11_ABI
#else
#define NETWATCHER_DUAL_ABI (-1)
#endif

// Compared: the C++ standard (__cplusplus, e.g. 202002).
#define NETWATCHER_CPLUSPLUS (__cplusplus)

// The compared identity as one string, e.g. "libstdc++-12/cxx11-abi-1/c++202002L".
#if defined(_GLIBCXX_USE_CXX11_ABI)
#define NETWATCHER_COMPAT_ID                            \
  NETWATCHER_STDLIB "/cxx11-abi-" NETWATCHER_STRINGIFY( \
      _GLIBCXX_USE_CXX11_ABI) "/c++" NETWATCHER_STRINGIFY(__cplusplus)
#else
#define NETWATCHER_COMPAT_ID NETWATCHER_STDLIB "/c++" NETWATCHER_STRINGIFY(__cplusplus)
#endif

// For display (--version): "gcc-12 libstdc++-12/cxx11-abi-1/c++202002L".
#define NETWATCHER_COMPILER_ID NETWATCHER_COMPILER_FAMILY " " NETWATCHER_COMPAT_ID

namespace netwatcher {
inline constexpr int kAbiMajor = NETWATCHER_ABI_MAJOR;
inline constexpr int kAbiMinor = NETWATCHER_ABI_MINOR;
inline constexpr const char* kCompilerId = NETWATCHER_COMPILER_ID;
}  // namespace netwatcher
