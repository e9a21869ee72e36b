// The kernel attachments the host makes for a plugin's programs. Each kind is
// one move-only type that owns what keeps the attachment alive, so that
// destroying it detaches, and every attachment is made through attach() or
// link_netfilter(), which return the attachment or the reason there is none.
#pragma once

#include <bpf/libbpf.h>

#include <cstdint>
#include <string>

#include "netwatcher/plugin.hpp"
#include "netwatcher/status.hpp"

namespace netwatcher::host {

// A file descriptor, closed with its owner.
class OwnedFd {
 public:
  OwnedFd() = default;
  explicit OwnedFd(int fd) noexcept : fd_(fd) {}
  OwnedFd(OwnedFd&& other) noexcept : fd_(other.release()) {}
  OwnedFd& operator=(OwnedFd&& other) noexcept;
  OwnedFd(const OwnedFd&) = delete;
  OwnedFd& operator=(const OwnedFd&) = delete;
  ~OwnedFd() { reset(); }

  int get() const noexcept { return fd_; }
  bool valid() const noexcept { return fd_ >= 0; }
  int release() noexcept;
  void reset() noexcept;

 private:
  int fd_ = -1;
};

// A libbpf link (tracing, iterator or cgroup attachment), destroyed with its
// owner.
class ProgramLink {
 public:
  ProgramLink() = default;
  explicit ProgramLink(bpf_link* link) noexcept : link_(link) {}
  ProgramLink(ProgramLink&& other) noexcept : link_(other.link_) { other.link_ = nullptr; }
  ProgramLink& operator=(ProgramLink&& other) noexcept;
  ProgramLink(const ProgramLink&) = delete;
  ProgramLink& operator=(const ProgramLink&) = delete;
  ~ProgramLink() { reset(); }

  int fd() const noexcept { return link_ ? bpf_link__fd(link_) : -1; }
  void reset() noexcept;

 private:
  bpf_link* link_ = nullptr;
};

// How a program is attached, from its section and its hook.
enum class AttachKind {
  automatic,     // what libbpf derives from the section (tracepoints, kprobes, fentry, ...)
  map_iterator,  // iter/bpf_map_elem and friends over one map of the object
  cgroup_root,   // cgroup_skb/ and cgroup/ programs at the root of the v2 hierarchy
  netfilter,     // SEC("netfilter"): linked per point by link_netfilter(), not here
  uprobe,        // SEC("uprobe"/"uretprobe") without a path: linked per file by attach_uprobe()
};

AttachKind attach_kind(const bpf_program* program, bool iterates_map);

// Attaches a program of kind automatic, map_iterator (over `iterated`) or
// cgroup_root (at `cgroup_root`). The failure says "attach failed: <errno
// text>".
Result<ProgramLink> attach(bpf_program* program, AttachKind kind, const bpf_map* iterated,
                           const std::string& cgroup_root);

// Links a loaded uprobe program to `function` in the ELF file `binary`, for
// every process (a uretprobe when the program's section says so). The
// failure names the file and the function.
Result<ProgramLink> attach_uprobe(bpf_program* program, const std::string& binary,
                                  const std::string& function);

// A netfilter link and the network namespace it hooks.
struct NetfilterLinkFd {
  OwnedFd fd;
  std::uint64_t netns_inode = 0;  // nsfs inode
};

// Links a loaded SEC("netfilter") program at `point`, in `point.netns` (""
// is netwatcher's own): the calling thread enters that namespace for the
// call and returns. Failures name the namespace or the point. A thread that
// cannot return to its namespace aborts the process: every later socket
// and link of it would land in the wrong one.
Result<NetfilterLinkFd> link_netfilter(const bpf_program* program, const NetfilterPoint& point);

// Gives a SEC("netfilter") program its type and attach type before the
// object is loaded (libbpf 1.1 of Debian 12 does not know the section).
void prepare_netfilter_program(bpf_program* program);

}  // namespace netwatcher::host
