// netwatcher SDK: the network namespaces a plugin links netfilter programs
// into, followed as they come and go.
//
// Netfilter hooks exist per network namespace, so a plugin that times them
// needs links in every namespace it watches. Config lists such as
// [plugins.netfilter] namespaces name them:
//   "self"           netwatcher's own namespace
//   "*"              every namespace on the host: netwatcher's own, each one
//                    bind-mounted under /run/netns (ip netns add) and each one
//                    a process is in (/proc/<pid>/ns/net: docker, podman and
//                    Kubernetes pods, unshare -n)
//   "<name>"         /run/netns/<name>
//   "<path>"         anything with a slash, e.g. /proc/1234/ns/net
// Namespaces are told apart by their nsfs inode (what BPF programs read as
// net->ns.inum and what records carry as `netns`), so one reached by several
// files is linked once.
//
// Part of netwatcher::sdk_kernel, which every probe plugin links.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "netwatcher/plugin.hpp"
#include "netwatcher/status.hpp"

namespace netwatcher {

// One network namespace found now.
struct NamespaceFile {
  std::uint64_t inode = 0;
  // A file to enter it by, as NetfilterPoint::netns wants it: "" for
  // netwatcher's own, else the first of /run/netns/<name>, /proc/<pid>/ns/net
  // that reached it (bind mounts outlive processes).
  std::string path;
  // Named by an entry other than "*": its absence at start-up is an error.
  bool named = false;
};

struct NamespaceScan {
  std::map<std::uint64_t, NamespaceFile> found;  // by inode
  // Files of named entries that are no network namespace now (missing, or
  // e.g. a /run/netns file that `ip netns add` has not bind-mounted yet).
  std::vector<std::string> missing;
};

// Resolves `entries` (see above) against the host as it is now. Files the
// process may not open are skipped: /proc/<pid>/ns/net of another user's
// process needs CAP_SYS_PTRACE (ptrace read access). Cost: one stat(2) per
// process and per /run/netns entry when `entries` has "*". Uses the calling
// thread's namespace as netwatcher's own. Never throws.
NamespaceScan scan_namespaces(const std::vector<std::string>& entries) noexcept;

// Runs `body` with the calling thread in the network namespace of `path` (a
// NamespaceFile::path; "" runs it where the thread is) and brings the thread
// back before returning, whatever `body` returns. What a namespace decides at
// creation stays with the object: a socket, or a BPF iterator created with
// bpf_iter_create() (the kernel's tcp/udp iterators walk the namespace they
// were created in). Entering needs CAP_SYS_ADMIN, kept after start-up by
// default. Fails, naming `path`, when the file is no namespace any more or
// setns() refuses; the process aborts if it cannot return, since every later
// socket of the thread would be made in the wrong namespace. Never throws.
Status run_in_network_namespace(const std::string& path,
                                const std::function<Status()>& body) noexcept;

// Keeps a plugin's netfilter links in step with a namespace list: links each
// namespace that appears, releases (PluginHost::release_netfilter) each one
// that is no longer found, so that a deleted namespace is not kept alive by
// our links. Not thread-safe: call from the plugin's start() and collect()
// (the poller thread). A namespace is "no longer found" when no file of the
// scan reaches it: one held only by an open file descriptor of some process
// is released too.
class NetfilterNamespaces {
 public:
  // Makes every link of the plugin in one namespace (`netns` as in
  // NetfilterPoint::netns) with PluginHost::attach_netfilter(). On failure
  // the links it made there are released by the caller of this function.
  using LinkOne = std::function<Status(const std::string& netns)>;

  // `key` is the full config key ("plugins.netfilter.namespaces"), named in
  // every message. Fails on an empty list or an empty entry.
  Status configure(const std::vector<std::string>& entries, std::string key);

  // From start(): links every namespace found. Fails, naming the key and
  // the namespace, when a named one is missing or refuses its links. A
  // namespace found through "*" that cannot be linked (its process exited
  // meanwhile, say) is left for update() to try again. `host` and
  // `link_one` are kept until the plugin stops.
  Status start(PluginHost& host, LinkOne link_one);

  // From collect(): releases namespaces that are gone and links new ones.
  // A namespace that refuses its links is reported once in the Status
  // (which the host logs) and tried again at every call. Does nothing
  // before start() succeeded.
  Status update();

  // Inodes of the namespaces linked now.
  const std::set<std::uint64_t>& linked() const { return linked_; }

 private:
  // Links one namespace; on failure releases what it made and returns why.
  Status link(const NamespaceFile& netns);

  std::vector<std::string> entries_;
  std::string key_;
  PluginHost* host_ = nullptr;
  LinkOne link_one_;
  std::set<std::uint64_t> linked_;
  std::set<std::uint64_t> reported_;  // refused and already said so
};

}  // namespace netwatcher
