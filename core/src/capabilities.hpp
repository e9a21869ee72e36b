// Dropping the capabilities netwatcher no longer needs once it is attached.
//
// Capabilities, the bounding set and no_new_privs belong to each thread, not
// to the process: capset(2) and prctl(2) change only the calling thread. By
// the time every program is attached, sinks already run threads of their own
// (the Prometheus endpoint, one worker per sink), so the calling thread drops
// its own and asks every other thread, with a signal, to run the same few
// system calls in its handler. A thread that blocks that signal cannot be
// reached; it is named in a warning (in practice only a sanitizer's own
// thread). Header-only: the host's sources are listed one by one in its
// CMakeLists.txt.
#pragma once

#include <linux/capability.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "netwatcher/status.hpp"

namespace netwatcher::host {

struct CapabilityName {
  const char* name;
  int number;
};

// capabilities(7), in number order.
inline constexpr CapabilityName kCapabilityNames[] = {
    {"CAP_CHOWN", 0},
    {"CAP_DAC_OVERRIDE", 1},
    {"CAP_DAC_READ_SEARCH", 2},
    {"CAP_FOWNER", 3},
    {"CAP_FSETID", 4},
    {"CAP_KILL", 5},
    {"CAP_SETGID", 6},
    {"CAP_SETUID", 7},
    {"CAP_SETPCAP", 8},
    {"CAP_LINUX_IMMUTABLE", 9},
    {"CAP_NET_BIND_SERVICE", 10},
    {"CAP_NET_BROADCAST", 11},
    {"CAP_NET_ADMIN", 12},
    {"CAP_NET_RAW", 13},
    {"CAP_IPC_LOCK", 14},
    {"CAP_IPC_OWNER", 15},
    {"CAP_SYS_MODULE", 16},
    {"CAP_SYS_RAWIO", 17},
    {"CAP_SYS_CHROOT", 18},
    {"CAP_SYS_PTRACE", 19},
    {"CAP_SYS_PACCT", 20},
    {"CAP_SYS_ADMIN", 21},
    {"CAP_SYS_BOOT", 22},
    {"CAP_SYS_NICE", 23},
    {"CAP_SYS_RESOURCE", 24},
    {"CAP_SYS_TIME", 25},
    {"CAP_SYS_TTY_CONFIG", 26},
    {"CAP_MKNOD", 27},
    {"CAP_LEASE", 28},
    {"CAP_AUDIT_WRITE", 29},
    {"CAP_AUDIT_CONTROL", 30},
    {"CAP_SETFCAP", 31},
    {"CAP_MAC_OVERRIDE", 32},
    {"CAP_MAC_ADMIN", 33},
    {"CAP_SYSLOG", 34},
    {"CAP_WAKE_ALARM", 35},
    {"CAP_BLOCK_SUSPEND", 36},
    {"CAP_AUDIT_READ", 37},
    {"CAP_PERFMON", 38},
    {"CAP_BPF", 39},
    {"CAP_CHECKPOINT_RESTORE", 40},
};

inline constexpr std::uint64_t capability_bit(int number) {
  return std::uint64_t{1} << number;
}

// What a running netwatcher still needs, each found by running it without:
//  - CAP_SYS_ADMIN: BPF_ENABLE_STATS, which bpf_stats = "sampled" (the
//    default) opens and closes again every 30 s; and setns(2) into other
//    network namespaces, which the tcp plugin does at every snapshot to read
//    socket statistics there with sock_diag, and the netfilter and tcp
//    plugins do to link namespaces that appeared since start-up
//    (NetfilterNamespaces). The netfilter link itself needs no capability
//    (6.5+: BPF_LINK_CREATE checks none for netfilter programs; 6.4 wants
//    CAP_BPF or CAP_SYS_ADMIN for any bpf(2) command).
//  - CAP_SYS_PTRACE: opening /proc/<pid>/ns/net of processes with other
//    credentials or more capabilities (ptrace access mode read), which is how
//    both find those namespaces.
// Everything else is done with file descriptors opened during start-up,
// which need no capability on kernels since 6.5: map reads and deletes,
// BPF_OBJ_GET_INFO_BY_FD (run counts), BPF_ITER_CREATE from an iter link,
// closing links at shutdown. See docs/kernel-support.md.
inline constexpr std::uint64_t kDefaultKeptCapabilities =
    capability_bit(CAP_SYS_ADMIN) | capability_bit(CAP_SYS_PTRACE);

// The number of a "CAP_BPF"-style name (any case), or nullopt.
inline std::optional<int> capability_number(std::string_view name) {
  for (const auto& cap : kCapabilityNames) {
    std::string_view known = cap.name;
    if (known.size() == name.size() &&
        std::equal(known.begin(), known.end(), name.begin(),
                   [](char a, char b) { return a == std::toupper(static_cast<unsigned char>(b)); }))
      return cap.number;
  }
  return std::nullopt;
}

inline std::string capability_names(std::uint64_t mask) {
  std::string out;
  for (const auto& cap : kCapabilityNames)
    if (mask & capability_bit(cap.number)) out += (out.empty() ? "" : ", ") + std::string(cap.name);
  return out.empty() ? "none" : out;
}

namespace capability_detail {

// Written before the signals go out, read by the handlers (atomics: the
// signal is the only ordering, and a sanitizer does not see it as one).
inline std::atomic<std::uint64_t> keep{0};
inline std::atomic<int> last_cap{CAP_LAST_CAP};
inline std::atomic<int> done{0};
inline std::atomic<int> first_error{0};            // errno of a failed prctl/capset
inline std::atomic<bool> bounding_refused{false};  // PR_CAPBSET_DROP without CAP_SETPCAP

inline int capget_raw(__user_cap_data_struct (&data)[2]) {
  __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
  return static_cast<int>(syscall(SYS_capget, &header, data));
}

// The calling thread only. Async-signal-safe: system calls and atomics.
inline int apply_to_this_thread() {
  const std::uint64_t kept = keep.load();
  const int last = last_cap.load();
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return errno;
  prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);  // EINVAL before Linux 4.3: none
  // The bounding set first: dropping from it needs CAP_SETPCAP in the
  // effective set, which capset() below may take away.
  for (int cap = 0; cap <= last; ++cap) {
    if (kept & capability_bit(cap)) continue;
    if (prctl(PR_CAPBSET_READ, cap, 0, 0, 0) != 1) continue;
    if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0) {
      if (errno != EPERM) return errno;
      bounding_refused.store(true);
    }
  }
  __user_cap_data_struct data[2] = {};
  if (capget_raw(data) != 0) return errno;
  for (int i = 0; i < 2; ++i) {
    data[i].permitted &= static_cast<std::uint32_t>(kept >> (32 * i));
    data[i].effective = data[i].permitted;
    data[i].inheritable = 0;
  }
  __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
  if (syscall(SYS_capset, &header, data) != 0) return errno;
  return 0;
}

inline void on_signal(int) {
  const int saved = errno;
  if (int err = apply_to_this_thread()) {
    int none = 0;
    first_error.compare_exchange_strong(none, err);
  }
  done.fetch_add(1);
  errno = saved;
}

struct ThreadState {
  pid_t tid = 0;
  std::string name;
  std::uint64_t blocked = 0, effective = 0, permitted = 0, bounding = 0, inheritable = 0,
                ambient = 0;
  bool no_new_privs = false;
};

inline std::optional<ThreadState> read_thread(pid_t tid) {
  std::ifstream in("/proc/self/task/" + std::to_string(tid) + "/status");
  if (!in) return std::nullopt;  // gone
  ThreadState t;
  t.tid = tid;
  std::string line;
  auto hex = [](const std::string& text) { return std::stoull(text, nullptr, 16); };
  while (std::getline(in, line)) {
    const auto colon = line.find(':');
    if (colon == std::string::npos) continue;
    const std::string key = line.substr(0, colon);
    std::string value = line.substr(colon + 1);
    value.erase(0, value.find_first_not_of(" \t"));
    if (key == "Name") t.name = value;
    if (key == "SigBlk") t.blocked = hex(value);
    if (key == "CapEff") t.effective = hex(value);
    if (key == "CapPrm") t.permitted = hex(value);
    if (key == "CapBnd") t.bounding = hex(value);
    if (key == "CapInh") t.inheritable = hex(value);
    if (key == "CapAmb") t.ambient = hex(value);
    if (key == "NoNewPrivs") t.no_new_privs = value == "1";
  }
  return t;
}

inline std::vector<pid_t> thread_ids() {
  std::vector<pid_t> tids;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator("/proc/self/task", ec))
    tids.push_back(static_cast<pid_t>(std::stol(entry.path().filename().string())));
  return tids;
}

inline int running_last_cap() {
  std::ifstream in("/proc/sys/kernel/cap_last_cap");
  int n = -1;
  if (in >> n && n >= 0 && n < 64) return n;
  for (n = 0; n < 63 && prctl(PR_CAPBSET_READ, n + 1, 0, 0, 0) >= 0; ++n) {
  }
  return n;
}

}  // namespace capability_detail

struct CapabilityDrop {
  std::uint64_t kept = 0;  // what every thread still has
  std::vector<std::string> warnings;
};

// Keeps `keep` (what of it the process has) in every thread's effective,
// permitted and bounding sets, clears the inheritable and ambient sets and
// sets no_new_privs. Fails when a thread could not drop; the process should
// not go on then.
inline Status drop_capabilities(std::uint64_t keep, CapabilityDrop& report) {
  namespace d = capability_detail;
  const pid_t self = static_cast<pid_t>(syscall(SYS_gettid));
  __user_cap_data_struct data[2] = {};
  if (d::capget_raw(data) != 0)
    return Status::failure("capget: " + std::string(std::strerror(errno)));
  const std::uint64_t permitted =
      data[0].permitted | (static_cast<std::uint64_t>(data[1].permitted) << 32);
  if (const std::uint64_t missing = keep & ~permitted)
    report.warnings.push_back("cannot keep " + capability_names(missing) +
                              ": the process does not have it");
  report.kept = keep & permitted;
  d::keep.store(keep);
  d::last_cap.store(d::running_last_cap());
  d::first_error.store(0);
  d::bounding_refused.store(false);

  // SIGRTMIN already skips the real-time signals glibc keeps for itself;
  // + 4 stays clear of libraries that take the first free ones.
  const int signal = SIGRTMIN + 4;
  struct sigaction action {
  }, previous{};
  action.sa_handler = d::on_signal;
  action.sa_flags = SA_RESTART;
  sigemptyset(&action.sa_mask);
  if (sigaction(signal, &action, &previous) != 0)
    return Status::failure("sigaction: " + std::string(std::strerror(errno)));

  // Rounds, in case a thread started another one while it still had
  // everything: each round reaches the threads that do not show the result.
  Status result;
  const std::uint64_t signal_bit = std::uint64_t{1} << (signal - 1);
  std::vector<pid_t> unreachable;
  for (int round = 0; round < 3; ++round) {
    int sent = 0;
    for (pid_t tid : d::thread_ids()) {
      if (tid == self ||
          std::find(unreachable.begin(), unreachable.end(), tid) != unreachable.end())
        continue;
      auto state = d::read_thread(tid);
      if (!state) continue;
      if (round > 0 && state->no_new_privs && state->permitted == report.kept) continue;
      if (state->blocked & signal_bit) {
        unreachable.push_back(tid);
        report.warnings.push_back("thread " + std::to_string(tid) + " (" + state->name +
                                  ") blocks signal " + std::to_string(signal) +
                                  " and keeps its capabilities");
        continue;
      }
      d::done.store(0);
      if (syscall(SYS_tgkill, getpid(), tid, signal) != 0) continue;  // exited meanwhile
      ++sent;
      // One thread at a time, so that `done` tells that this one answered.
      const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
      while (d::done.load() == 0 && std::chrono::steady_clock::now() < deadline)
        std::this_thread::sleep_for(std::chrono::microseconds(200));
      if (d::done.load() == 0 && d::read_thread(tid)) {
        result = Status::failure("thread " + std::to_string(tid) + " (" + state->name +
                                 ") did not drop its capabilities within 5 s");
        break;
      }
    }
    if (!result || sent == 0) break;
  }
  if (result) {
    if (int err = d::apply_to_this_thread()) d::first_error.store(err);
    if (int err = d::first_error.load())
      result = Status::failure("dropping capabilities: " + std::string(std::strerror(err)));
  }
  sigaction(signal, &previous, nullptr);
  if (d::bounding_refused.load())
    report.warnings.push_back(
        "the bounding set stays as it was: dropping from it needs CAP_SETPCAP");
  return result;
}

}  // namespace netwatcher::host
