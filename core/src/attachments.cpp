#include "attachments.hpp"

#include <fcntl.h>
#include <sched.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

#include <spdlog/spdlog.h>

#include "bpf_uapi.hpp"

namespace netwatcher::host {

namespace {

bool section_starts(const bpf_program* program, const char* prefix) {
  const char* section = bpf_program__section_name(program);
  return section && std::strncmp(section, prefix, std::strlen(prefix)) == 0;
}

bool is_return_probe(const bpf_program* program) {
  return section_starts(program, "uretprobe");
}

std::string errno_text(int err) {
  return std::strerror(err ? err : EINVAL);
}

// cgroup programs run for the sockets of a cgroup and its descendants: at the
// root of the v2 hierarchy they see every socket on the host. The link keeps
// the attachment; the directory fd is only needed to create it.
bpf_link* attach_to_cgroup_root(bpf_program* program, const std::string& root) {
  if (root.empty()) {
    errno = ENOENT;
    return nullptr;
  }
  OwnedFd directory(open(root.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!directory.valid()) return nullptr;
  return bpf_program__attach_cgroup(program, directory.get());
}

// bpf(BPF_LINK_CREATE) with the link_create.netfilter member of union bpf_attr,
// laid out by hand because the installed headers predate it.
int create_netfilter_link(int prog_fd, const NetfilterPoint& point) {
  struct {
    std::uint32_t prog_fd, target_fd, attach_type, flags;
    std::uint32_t pf, hooknum;
    std::int32_t priority;
    std::uint32_t nf_flags;
    std::uint8_t rest[96];
  } attr{};
  attr.prog_fd = static_cast<std::uint32_t>(prog_fd);
  attr.attach_type = kAttachNetfilter;
  attr.pf = static_cast<std::uint32_t>(point.family);
  attr.hooknum = static_cast<std::uint32_t>(point.hook);
  attr.priority = point.priority;
  return static_cast<int>(syscall(__NR_bpf, kBpfLinkCreate, &attr, sizeof attr));
}

}  // namespace

OwnedFd& OwnedFd::operator=(OwnedFd&& other) noexcept {
  if (this != &other) {
    reset();
    fd_ = other.release();
  }
  return *this;
}

int OwnedFd::release() noexcept {
  int fd = fd_;
  fd_ = -1;
  return fd;
}

void OwnedFd::reset() noexcept {
  if (fd_ >= 0) {
    // close() keeps errno for the caller that is reporting a failure.
    int err = errno;
    close(fd_);
    errno = err;
  }
  fd_ = -1;
}

ProgramLink& ProgramLink::operator=(ProgramLink&& other) noexcept {
  if (this != &other) {
    reset();
    link_ = other.link_;
    other.link_ = nullptr;
  }
  return *this;
}

void ProgramLink::reset() noexcept {
  if (link_) bpf_link__destroy(link_);
  link_ = nullptr;
}

AttachKind attach_kind(const bpf_program* program, bool iterates_map) {
  if (section_starts(program, "netfilter")) return AttachKind::netfilter;
  const char* section = bpf_program__section_name(program);
  if (section && (std::strcmp(section, "uprobe") == 0 || std::strcmp(section, "uretprobe") == 0))
    return AttachKind::uprobe;
  if (iterates_map) return AttachKind::map_iterator;
  if (section_starts(program, "cgroup_skb/") || section_starts(program, "cgroup/"))
    return AttachKind::cgroup_root;
  return AttachKind::automatic;
}

Result<ProgramLink> attach(bpf_program* program, AttachKind kind, const bpf_map* iterated,
                           const std::string& cgroup_root) {
  errno = 0;
  bpf_link* link = nullptr;
  switch (kind) {
    case AttachKind::map_iterator: {
      union bpf_iter_link_info info = {};
      info.map.map_fd = iterated ? bpf_map__fd(iterated) : -1;
      LIBBPF_OPTS(bpf_iter_attach_opts, opts, .link_info = &info, .link_info_len = sizeof info);
      link = bpf_program__attach_iter(program, &opts);
      break;
    }
    case AttachKind::cgroup_root:
      link = attach_to_cgroup_root(program, cgroup_root);
      break;
    case AttachKind::automatic:
      link = bpf_program__attach(program);
      break;
    case AttachKind::netfilter:
      return Status::failure("attach failed: netfilter programs are linked per point");
    case AttachKind::uprobe:
      return Status::failure("attach failed: uprobe programs are linked per file");
  }
  if (!link) return Status::failure("attach failed: " + errno_text(errno));
  return ProgramLink(link);
}

Result<ProgramLink> attach_uprobe(bpf_program* program, const std::string& binary,
                                  const std::string& function) {
  LIBBPF_OPTS(bpf_uprobe_opts, opts, .retprobe = is_return_probe(program),
              .func_name = function.c_str());
  errno = 0;
  // pid -1: every process that maps the file.
  bpf_link* link = bpf_program__attach_uprobe_opts(program, -1, binary.c_str(), 0, &opts);
  if (!link)
    return Status::failure((opts.retprobe ? "uretprobe on " : "uprobe on ") + function + " in " +
                           binary + " refused: " + errno_text(errno));
  return ProgramLink(link);
}

Result<NetfilterLinkFd> link_netfilter(const bpf_program* program, const NetfilterPoint& point) {
  OwnedFd target, home;
  struct stat netns {};
  if (!point.netns.empty()) {
    // Netfilter links live in the netns of the calling thread: enter the
    // target netns on this thread only, link, and come back.
    target = OwnedFd(open(point.netns.c_str(), O_RDONLY | O_CLOEXEC));
    if (!target.valid() || fstat(target.get(), &netns) != 0)
      return Status::failure("cannot open network namespace " + point.netns + ": " +
                             std::strerror(errno));
    home = OwnedFd(open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC));
    if (!home.valid())
      return Status::failure("cannot open own network namespace: " +
                             std::string(std::strerror(errno)));
    if (setns(target.get(), CLONE_NEWNET) != 0)
      return Status::failure("cannot enter network namespace " + point.netns + ": " +
                             std::strerror(errno));
  } else if (stat("/proc/thread-self/ns/net", &netns) != 0) {
    return Status::failure("cannot stat own network namespace: " +
                           std::string(std::strerror(errno)));
  }
  OwnedFd link(create_netfilter_link(bpf_program__fd(program), point));
  int err = errno;
  if (home.valid() && setns(home.get(), CLONE_NEWNET) != 0) {
    spdlog::critical("cannot return to netwatcher's network namespace: {}", std::strerror(errno));
    std::abort();
  }
  if (!link.valid())
    return Status::failure("netfilter link (family " + std::to_string(point.family) + ", hook " +
                           std::to_string(point.hook) + ", priority " +
                           std::to_string(point.priority) + ") refused: " + std::strerror(err));
  return NetfilterLinkFd{std::move(link), static_cast<std::uint64_t>(netns.st_ino)};
}

void prepare_netfilter_program(bpf_program* program) {
  bpf_program__set_type(program, static_cast<bpf_prog_type>(kProgTypeNetfilter));
  bpf_program__set_expected_attach_type(program, static_cast<bpf_attach_type>(kAttachNetfilter));
}

}  // namespace netwatcher::host
