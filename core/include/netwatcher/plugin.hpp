// netwatcher SDK: probe plugins.
//
// A probe plugin is a shared object that owns one BPF object and the decoder
// for the records it produces. Write a class with the methods of ProbePlugin
// (without `noexcept`, without `override`; throwing is fine) and export it:
//
//   class TcpPlugin { ... };
//   NETWATCHER_PROBE_PLUGIN(TcpPlugin, "tcp", "1.0.0", "TCP connections");
//
// The macro wraps the class in an adapter that catches every exception, so no
// exception ever crosses into the host.
//
// Lifecycle, driven by the host, all calls from one thread unless noted:
//   describe()            once, first, also for --list-plugins; must be cheap;
//                         a throw or an invalid description refuses the plugin
//   configure()           once, with validated config and the global filter
//   open()                open the BPF object and set rodata tunables; the host
//                         then picks one program per hook (autoload) and sizes
//                         the SDK maps (ring buffer)
//   load()                load the object into the kernel
//   [if load fails: close(), then open()/load() again with other candidates]
//   (host attaches programs hook by hook)
//   start()               links are up; fill maps, remember the PluginHost
//   (host drops every capability but [netwatcher] keep_capabilities, in
//   every thread, and sets no_new_privs: start() is the last call that may
//   rely on the others, e.g. CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN)
//   decode() / collect()  from the poller thread, until shutdown; also the
//                         refresh registered with set_metrics_refresh()
//   stop()                links are already destroyed; release everything
// The object is deleted after stop(); the host keeps the shared object mapped
// until then.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "netwatcher/config.hpp"
#include "netwatcher/declare.hpp"
#include "netwatcher/descriptor.hpp"
#include "netwatcher/event.hpp"
#include "netwatcher/l7_protocol.hpp"
#include "netwatcher/metrics.hpp"
#include "netwatcher/status.hpp"

struct bpf_object;

namespace netwatcher {

// One logical attachment point with its candidate programs, best first. The
// host attaches the first candidate the kernel supports and reports which one
// (see --check). Candidates are BPF program names in the plugin's object; the
// program's SEC() decides how it attaches (tp_btf, tracepoint, raw_tp, iter...).
// SEC("cgroup_skb/ingress|egress") and other SEC("cgroup/...") programs are
// attached to the root of the cgroup v2 hierarchy (mounted by the host if
// needed), so they run for every socket on the host, in every netns; they must
// always allow the packet (return 1).
//
// A candidate named "user:<name>" is no BPF program: it stands for the plugin
// serving the hook from user space (e.g. "user:sock_diag" reads socket
// statistics over netlink where no iterator loads). The host always "attaches"
// it, links nothing, and reports it; the plugin sees link_fd() < 0 for the BPF
// candidates and takes its user-space path. Text after a space, in
// parentheses, is shown in --check, e.g. "user:sock_diag (no backlog)" for the
// fields that path lacks. Hosts before 2.2 report such a candidate as missing.
//
// A candidate "l7:tcp" or "l7:udp" is no BPF program either: it stands for
// the shared L7 capture (plugin `l7`, see netwatcher/l7_protocol.hpp), which
// the host starts after every protocol plugin that names it. (ABI 3.1)
//
// SEC("uprobe") and SEC("uretprobe") programs without a path are loaded but
// not attached by the host: the plugin links them per file and function with
// PluginHost::attach_uprobe(). (ABI 3.4)
//
// Operators (and tests) can force candidates with [netwatcher] hook_override:
// a program name, "fallback" (skip the preferred one) or "none".
struct HookSpec {
  std::string name;  // e.g. "inet_sock_set_state"
  std::string description;
  std::vector<std::string> programs;  // candidate program names, preferred first
  bool required = true;               // plugin is disabled if a required hook fails
  // For `iter/bpf_map_elem` programs: the name of the map (in the same object)
  // the iterator walks. Empty for every other program type.
  std::string iter_map;
  // Name of one of the plugin's boolean config keys. When that key is false the
  // host does not load or attach this hook at all (it shows as "disabled by
  // config" in --check), so an unused feature costs nothing per packet. Empty:
  // always wanted. A required hook that is disabled this way is not an error.
  std::string enabled_by;
};

inline bool is_user_space_candidate(std::string_view program) {
  return program.substr(0, 5) == "user:";
}

inline bool is_l7_candidate(std::string_view program) {
  return program.substr(0, 3) == "l7:";
}

// One attachment of a SEC("netfilter") program (BPF_PROG_TYPE_NETFILTER). The
// host loads such programs with the right type but does not link them itself:
// where they run depends on the plugin's config, so the plugin asks for each
// point with PluginHost::attach_netfilter() from start().
struct NetfilterPoint {
  int family = 2;    // NFPROTO_IPV4 (2) or NFPROTO_IPV6 (10)
  int hook = 0;      // NF_INET_PRE_ROUTING (0) ... NF_INET_POST_ROUTING (4)
  int priority = 0;  // strictly between INT_MIN and INT_MAX (the kernel refuses both)
  // A network namespace file (/run/netns/<name>, /proc/<pid>/ns/net); empty
  // means netwatcher's own. Netfilter hooks are per netns.
  std::string netns;
};

// ABI 2.3. One bounded table of a plugin: a hash or LRU hash map in its BPF
// object, or a container in the plugin's own memory. For every table the host
// exports, with labels {plugin, table}:
//   netwatcher_table_entries         entries in use (gauge)
//   netwatcher_table_capacity        entries that fit (gauge)
//   netwatcher_table_full_total      inserts refused for want of room
//   netwatcher_table_evictions_total entries that left to make room (LRU), or
//                                    that a new entry under their key replaced
//                                    before they were used
// and logs one warning naming `raise_key` the first time the table refuses or
// evicts anything; the shutdown summary lists such tables again. So a table
// that is too small is never silent.
struct TableSpec {
  std::string name;  // e.g. "connections"; unique within the plugin
  // The BPF map (BPF_MAP_TYPE_HASH or _LRU_HASH) of the plugin's object that
  // holds the table. The BPF code inserts and deletes through
  // nw_table_insert() / nw_table_remove() (common.bpf.h) with `kernel_index`,
  // and the host counts the map's entries every snapshot_interval (one
  // bpf_map_get_next_key() per entry). Empty for a table in user space: the
  // plugin then reports everything through its TableAccount.
  std::string map;
  unsigned kernel_index = 0;  // 0 .. NW_MAX_TABLES - 1; kernel tables only
  // How many entries fit. Kernel tables: 0 takes the map's max_entries.
  std::uint64_t capacity = 0;
  // What an operator raises when the table is too small, as written in
  // netwatcher.toml, e.g. "plugins.tcp.max_connections".
  std::string raise_key;
};

// What a plugin reports about one of its tables (see TableSpec). Owned by the
// host; valid from track_table() until stop() returns. Poller thread only
// (decode(), collect(), the metrics refresh, start()).
class TableAccount {
 public:
  // Inserts that found no room, and entries dropped to make room. For kernel
  // tables the BPF side counts its own; these add what user space refused or
  // evicted.
  virtual void count_refused(std::uint64_t n = 1) noexcept = 0;
  virtual void count_evicted(std::uint64_t n = 1) noexcept = 0;
  // User-space tables: the entries in use now. Ignored for kernel tables,
  // whose entries the host counts.
  virtual void set_entries(std::uint64_t entries) noexcept = 0;
  // Kernel tables: entries user space deleted from the map (e.g. expiry of
  // idle entries), so that they are not taken for evictions.
  virtual void count_removed(std::uint64_t n = 1) noexcept = 0;

 protected:
  ~TableAccount() = default;
};

struct PluginDescription {
  std::vector<ConfigKey> config;  // `enabled` is implicit: do not declare it
  std::vector<CliFlag> flags;
  std::vector<EventSchema> events;
  std::vector<MetricFamilySpec> metrics;
  std::vector<HookSpec> hooks;
};

// Services the host offers a running plugin. Valid from start() until stop()
// returns. All members are safe to call from the poller thread.
class PluginHost {
 public:
  virtual ~PluginHost() = default;
  // The family declared under `name`, or nullptr if the plugin did not declare it.
  virtual MetricFamily* metric(std::string_view name) noexcept = 0;
  // FD of the BPF link of `program`, or -1 when that program is not attached.
  // Used e.g. to create BPF iterators from an attached iter program.
  virtual int link_fd(std::string_view program) const noexcept = 0;
  // Links the loaded SEC("netfilter") `program` at `point`. The host owns the
  // link and destroys it with the others at shutdown (before stop()), or
  // earlier through release_netfilter(). Fails, with the reason, when the
  // program is not a loaded netfilter program, the netns cannot be entered or
  // the kernel refuses the link (e.g. EBUSY for a priority already taken at
  // that hook with BPF_F_NETFILTER_IP_DEFRAG). The host logs one info line
  // the first time the plugin links into a namespace.
  // Call from start() or, since ABI 2.3, from collect() (for namespaces that
  // appeared since); it briefly switches the calling thread's netns. After
  // start() the process keeps only [netwatcher] keep_capabilities: entering
  // a namespace needs CAP_SYS_ADMIN (and opening /proc/<pid>/ns/net of
  // another user's process CAP_SYS_PTRACE), both kept by default; the link
  // itself needs none beyond the already loaded program's fd on 6.5+ (on
  // 6.4, CAP_SYS_ADMIN or CAP_BPF).
  virtual Status attach_netfilter(std::string_view program,
                                  const NetfilterPoint& point) noexcept = 0;
  // ABI 2.2. Registers how the plugin brings its metric families up to date
  // (e.g. from counters and histograms in its BPF maps) without emitting
  // events, so that a scrape sees the kernel's counts of now rather than of
  // the last snapshot_interval. The host calls `refresh` on the poller
  // thread, never during decode() or collect(): once when start-up is done,
  // then whenever a sink asks for current metrics (a Prometheus scrape; at
  // most about once a second however often it is scraped), and once at
  // shutdown after the links are gone. collect() should still update the
  // same metrics (calling the same code is simplest). A failed Status is
  // logged. Call from start(); the host destroys `refresh` before stop().
  // Without it, metrics change only in decode() and collect().
  virtual void set_metrics_refresh(std::function<Status()> refresh) noexcept = 0;
  // ABI 2.3. Declares one bounded table (TableSpec) and returns its account.
  // Call from start(). nullptr, with a warning in the log, when the spec is
  // invalid: a duplicate name, a map the object does not have or that is not
  // a hash map, a kernel_index out of range, a user-space table without a
  // capacity.
  virtual TableAccount* track_table(const TableSpec& spec) noexcept = 0;
  // ABI 2.3. Closes every netfilter link this plugin made in the network
  // namespace whose nsfs inode is `netns_inode` (as stat(2) of its file, or a
  // record's netns, tells it) and returns how many there were; 0 for a
  // namespace without links. Each link holds a reference to its namespace
  // (bpf_nf_link_attach takes one on current kernels), so a namespace that was
  // deleted (ip netns del, its last process gone) is only freed, with its
  // devices and sockets, once its links are released. The host logs one info
  // line per namespace released. From start() or collect().
  virtual std::size_t release_netfilter(std::uint64_t netns_inode) noexcept = 0;
  // ABI 3.1. A protocol plugin (see netwatcher/l7_protocol.hpp) offers
  // `protocol` to the shared L7 capture. Call from start(), once; the host
  // keeps the pointer until the plugin's stop() (the capture is stopped
  // first). Fails when the plugin declared no "l7:tcp"/"l7:udp" hook, or
  // called it before.
  virtual Status serve_protocol(L7Protocol& protocol) noexcept = 0;
  // ABI 3.1. For the capture plugin (`l7`) only: the protocols served by the
  // plugins started before it, in start-up order; index >= count gives an
  // empty ServedProtocol. Valid until the capture's stop().
  virtual std::size_t served_protocol_count() const noexcept = 0;
  virtual ServedProtocol served_protocol(std::size_t index) const noexcept = 0;
  // ABI 3.4. Attaches the loaded uprobe program `program` (SEC("uprobe"), or
  // SEC("uretprobe") for the function's return) to `function`, a symbol of
  // the ELF file `binary`, for every process that maps that file, now and
  // later (a uprobe is per file: the kernel resolves `binary` to its inode).
  // A file in another mount namespace is reached through
  // /proc/<pid>/root/<path>. The host owns the link and destroys it with the
  // others at shutdown, before stop(). Fails, with the reason, when the
  // program is not a loaded uprobe program of this plugin, the file has no
  // such symbol, or the kernel refuses the probe. From start() or collect()
  // and the plugin's decode(); needs CAP_SYS_ADMIN or CAP_PERFMON after
  // start-up (kept by default in [netwatcher] keep_capabilities). The hook
  // reads "attached (N uprobes in M files: <the first three>)" in --check.
  virtual Status attach_uprobe(std::string_view program, std::string_view binary,
                               std::string_view function) noexcept = 0;
};

class ProbePlugin {
 public:
  virtual ~ProbePlugin() = default;
  // ABI 3.0. Writes what the plugin declares (events, metrics, config keys,
  // flags, hooks) into `out`. Thread: the host's main thread, once, right
  // after the factory, before configure(); nothing else of the plugin runs
  // before it. Ownership: the host keeps its own copy in `out`; the plugin
  // keeps nothing of it. Must be cheap and must not touch the kernel (it also
  // serves --list-plugins and --help, run without privileges).
  // Error: a failed Status (the adapter turns an exception of the plugin's
  // describe() into one, with the exception's message) refuses the plugin:
  // "plugin 'x': describe() failed: <message>". The host then validates the
  // description (see docs/writing-a-plugin.md, "ABI and compatibility") and
  // refuses an invalid one the same way, naming the item and the reason.
  virtual Status describe(PluginDescription& out) const noexcept = 0;
  // For tests and tools: the description, or std::runtime_error with the
  // failure. The host always calls the Status form above.
  PluginDescription describe() const {
    PluginDescription description;
    if (Status s = describe(description); !s) throw std::runtime_error(s.message());
    return description;
  }
  virtual Status configure(const ConfigValues& config, const GlobalFilter& filter) noexcept = 0;
  // On success `*object` is the opened, not yet loaded, BPF object. The plugin
  // keeps owning it; it stays valid until stop() or the next open(). A
  // plugin whose every hook is an "l7:" or "user:" candidate may leave it
  // null: the host then loads and attaches nothing and calls start() (and
  // load() is not called).
  virtual Status open(bpf_object** object) noexcept = 0;
  virtual Status load() noexcept = 0;
  virtual Status start(PluginHost& host) noexcept = 0;
  // One ring-buffer record. The bytes are only valid during the call; the
  // plugin must check the size before reading (records can be short or from a
  // mismatched BPF object). A failed Status is counted as a decode error.
  virtual Status decode(std::span<const std::byte> record, EventEmitter& out) noexcept = 0;
  // Periodic (every [netwatcher] snapshot_interval): snapshot events, gauges.
  virtual Status collect(EventEmitter& out) noexcept = 0;
  virtual void stop() noexcept = 0;
};

namespace detail {

template <class Impl>
class GuardedProbe final : public ProbePlugin {
 public:
  Status describe(PluginDescription& out) const noexcept override {
    try {
      out = impl_.describe();
      return Status::success();
    } catch (const std::exception& e) {
      return Status::failure(e.what());
    } catch (...) {
      return Status::failure("unknown exception");
    }
  }
  Status configure(const ConfigValues& config, const GlobalFilter& filter) noexcept override {
    return guard("configure", [&] { return impl_.configure(config, filter); });
  }
  Status open(bpf_object** object) noexcept override {
    return guard("open", [&] { return impl_.open(object); });
  }
  Status load() noexcept override {
    return guard("load", [&] { return impl_.load(); });
  }
  Status start(PluginHost& host) noexcept override {
    return guard("start", [&] { return impl_.start(host); });
  }
  Status decode(std::span<const std::byte> record, EventEmitter& out) noexcept override {
    return guard("decode", [&] { return impl_.decode(record, out); });
  }
  Status collect(EventEmitter& out) noexcept override {
    return guard("collect", [&] { return impl_.collect(out); });
  }
  void stop() noexcept override {
    try {
      impl_.stop();
    } catch (...) {
    }
  }

 private:
  Impl impl_;
};

}  // namespace detail
}  // namespace netwatcher

#define NETWATCHER_PROBE_PLUGIN(Impl, name, version, description)                       \
  NETWATCHER_EXPORT_COMPONENT_(NW_PLUGIN_KIND_PROBE, ::netwatcher::ProbePlugin,         \
                               ::netwatcher::detail::GuardedProbe<Impl>, name, version, \
                               description)
