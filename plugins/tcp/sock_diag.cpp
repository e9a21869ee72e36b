#include "sock_diag.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/sock_diag.h>
#include <linux/tcp.h>
#include <netinet/in.h>
#include <sched.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstring>

namespace netwatcher::tcp {

namespace {

// tcpi_rcv_wnd follows tcpi_snd_wnd; Debian 12's <linux/tcp.h> ends before it.
constexpr std::size_t kRcvWndOffset = offsetof(tcp_info, tcpi_snd_wnd) + sizeof(__u32);

std::string errno_text(const char* what) {
  return std::string(what) + ": " + std::strerror(errno);
}

class Fd {
 public:
  explicit Fd(int fd = -1) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }

 private:
  int fd_;
};

void parse_entry(const nlmsghdr* header, std::vector<DiagSocket>& out) {
  if (header->nlmsg_len < NLMSG_LENGTH(sizeof(inet_diag_msg))) return;
  const auto* msg = static_cast<const inet_diag_msg*>(NLMSG_DATA(header));
  DiagSocket socket;
  socket.tuple.family = msg->idiag_family;
  socket.tuple.sport = ntohs(msg->id.idiag_sport);
  socket.tuple.dport = ntohs(msg->id.idiag_dport);
  std::size_t address_bytes = msg->idiag_family == AF_INET ? 4 : 16;
  std::memcpy(socket.tuple.saddr, msg->id.idiag_src, address_bytes);
  std::memcpy(socket.tuple.daddr, msg->id.idiag_dst, address_bytes);
  socket.state = msg->idiag_state;
  socket.write_queue = msg->idiag_wqueue;
  bool has_info = false;
  int left = static_cast<int>(header->nlmsg_len - NLMSG_LENGTH(sizeof(*msg)));
  for (const auto* attr = reinterpret_cast<const rtattr*>(msg + 1); RTA_OK(attr, left);
       attr = RTA_NEXT(attr, left)) {
    const auto* payload = static_cast<const unsigned char*>(RTA_DATA(attr));
    std::size_t length = RTA_PAYLOAD(attr);
    if (attr->rta_type == INET_DIAG_INFO) {
      tcp_info info{};
      std::memcpy(&info, payload, std::min(length, sizeof info));
      // Fields past what this kernel sends stay zero; the ones used here all
      // predate Linux 4.6 except tcpi_rcv_wnd, checked by length.
      if (length < offsetof(tcp_info, tcpi_bytes_received) + sizeof(__u64)) continue;
      has_info = true;
      socket.stats.bytes_received = info.tcpi_bytes_received;
      socket.stats.bytes_acked = info.tcpi_bytes_acked;
      socket.stats.srtt_us = info.tcpi_rtt;
      socket.stats.snd_cwnd = info.tcpi_snd_cwnd;
      socket.stats.snd_ssthresh = info.tcpi_snd_ssthresh;
      socket.stats.total_retrans = info.tcpi_total_retrans;
      if (length >= kRcvWndOffset + sizeof(__u32)) {
        std::memcpy(&socket.stats.rcv_wnd, payload + kRcvWndOffset, sizeof socket.stats.rcv_wnd);
        socket.has_rcv_wnd = true;
      }
    } else if (attr->rta_type == INET_DIAG_SKMEMINFO &&
               length >= sizeof(__u32) * (SK_MEMINFO_WMEM_QUEUED + 1)) {
      const auto* meminfo = reinterpret_cast<const __u32*>(payload);
      socket.stats.sndbuf = meminfo[SK_MEMINFO_SNDBUF];
      socket.stats.wmem_queued = meminfo[SK_MEMINFO_WMEM_QUEUED];
    }
  }
  // Without tcp_info (e.g. a socket past CLOSE) there are no statistics to report.
  if (has_info) out.push_back(socket);
}

Status dump_family(int fd, int family, std::uint32_t states, std::vector<DiagSocket>& out) {
  struct {
    nlmsghdr header;
    inet_diag_req_v2 request;
  } message{};
  message.header.nlmsg_len = sizeof message;
  message.header.nlmsg_type = SOCK_DIAG_BY_FAMILY;
  message.header.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
  message.request.sdiag_family = static_cast<__u8>(family);
  message.request.sdiag_protocol = IPPROTO_TCP;
  message.request.idiag_states = states;
  message.request.idiag_ext = (1 << (INET_DIAG_INFO - 1)) | (1 << (INET_DIAG_SKMEMINFO - 1));
  sockaddr_nl kernel{};
  kernel.nl_family = AF_NETLINK;
  if (::sendto(fd, &message, sizeof message, 0, reinterpret_cast<sockaddr*>(&kernel),
               sizeof kernel) < 0)
    return Status::failure(errno_text("sock_diag request"));
  alignas(nlmsghdr) static thread_local char buffer[65536];
  for (;;) {
    ssize_t n = ::recv(fd, buffer, sizeof buffer, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      return Status::failure(errno_text("sock_diag reply"));
    }
    if (n == 0) return Status::failure("sock_diag reply: connection closed");
    // Walked by hand: NLMSG_OK() compares the unsigned nlmsg_len with an int.
    const char* at = buffer;
    std::size_t left = static_cast<std::size_t>(n);
    while (left >= sizeof(nlmsghdr)) {
      const auto* header = reinterpret_cast<const nlmsghdr*>(at);
      if (header->nlmsg_len < sizeof(nlmsghdr) || header->nlmsg_len > left) break;
      if (header->nlmsg_type == NLMSG_DONE) return Status::success();
      if (header->nlmsg_type == NLMSG_ERROR) {
        const auto* error = static_cast<const nlmsgerr*>(NLMSG_DATA(header));
        return Status::failure(std::string("sock_diag: ") + std::strerror(-error->error));
      }
      parse_entry(header, out);
      const std::size_t step = std::min<std::size_t>(left, NLMSG_ALIGN(header->nlmsg_len));
      at += step;
      left -= step;
    }
  }
}

}  // namespace

DiagStates::DiagStates(const std::map<std::uint32_t, std::string>& names) {
  for (const auto& [value, name] : names) {
    if (value >= 32) continue;
    std::uint32_t bit = 1u << value;
    if (name != "LISTEN" && name != "TIME_WAIT" && name != "NEW_SYN_RECV") dump_mask |= bit;
    if (name == "CLOSE_WAIT" || name == "LAST_ACK" || name == "CLOSING") fin_received |= bit;
    if (name == "FIN_WAIT1" || name == "FIN_WAIT2" || name == "CLOSING" || name == "LAST_ACK")
      fin_sent |= bit;
  }
}

Status dump_tcp_sockets(const DiagStates& states, std::vector<DiagSocket>& out) {
  Fd fd(::socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_SOCK_DIAG));
  if (fd.get() < 0) return Status::failure(errno_text("NETLINK_SOCK_DIAG socket"));
  for (int family : {AF_INET, AF_INET6})
    if (Status s = dump_family(fd.get(), family, states.dump_mask, out); !s) return s;
  return Status::success();
}

tcp_conn_stats stats_from_diag(const DiagSocket& socket, const tcp_conn_info& info,
                               const DiagStates& states) {
  tcp_conn_stats s = socket.stats;
  std::uint32_t state = socket.state < 32 ? 1u << socket.state : 0;
  std::uint64_t received = s.bytes_received, acked = s.bytes_acked;
  // The peer's FIN was consumed in exactly the states entered through tcp_fin().
  if ((state & states.fin_received) && received) received--;
  // Our FIN counts once everything up to write_seq (which includes it) is acked.
  if ((state & states.fin_sent) && socket.write_queue == 0 && acked) acked--;
  s.bytes_received = received;
  s.bytes_acked = acked > info.acked_base ? acked - info.acked_base : 0;
  return s;
}

std::string NamespaceDumper::find(std::uint32_t inode) {
  auto matches = [inode](const std::string& path) {
    struct stat st {};
    return ::stat(path.c_str(), &st) == 0 && st.st_ino == inode;
  };
  if (auto it = paths_.find(inode); it != paths_.end() && matches(it->second)) return it->second;
  std::vector<std::string> places;
  if (DIR* dir = ::opendir("/run/netns")) {
    while (const dirent* entry = ::readdir(dir))
      if (entry->d_name[0] != '.') places.push_back(std::string("/run/netns/") + entry->d_name);
    ::closedir(dir);
  }
  if (DIR* dir = ::opendir("/proc")) {
    while (const dirent* entry = ::readdir(dir))
      if (entry->d_name[0] >= '1' && entry->d_name[0] <= '9')
        places.push_back(std::string("/proc/") + entry->d_name + "/ns/net");
    ::closedir(dir);
  }
  for (const auto& path : places)
    if (matches(path)) return paths_[inode] = path;
  paths_.erase(inode);
  return {};
}

Status NamespaceDumper::dump(const DiagStates& states, const std::vector<std::uint32_t>& inodes,
                             std::map<std::uint32_t, std::vector<DiagSocket>>& out,
                             std::vector<std::uint32_t>& missing) {
  Fd own(::open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC));
  if (own.get() < 0) return Status::failure(errno_text("/proc/thread-self/ns/net"));
  struct stat st {};
  if (::fstat(own.get(), &st) != 0) return Status::failure(errno_text("fstat own netns"));
  const auto own_inode = static_cast<std::uint32_t>(st.st_ino);
  for (std::uint32_t inode : inodes) {
    if (inode == own_inode) {
      if (Status s = dump_tcp_sockets(states, out[inode]); !s) return s;
      continue;
    }
    std::string path = find(inode);
    Fd target(path.empty() ? -1 : ::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (target.get() < 0) {
      missing.push_back(inode);
      continue;
    }
    if (::setns(target.get(), CLONE_NEWNET) != 0) {
      missing.push_back(inode);
      continue;
    }
    Status s = dump_tcp_sockets(states, out[inode]);
    // Back home before anything else runs on this thread.
    if (::setns(own.get(), CLONE_NEWNET) != 0)
      return Status::failure(errno_text("cannot return to netwatcher's own netns"));
    if (!s) return s;
  }
  return Status::success();
}

}  // namespace netwatcher::tcp
