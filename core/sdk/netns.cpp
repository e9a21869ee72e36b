#include "netwatcher/netns.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sched.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>

namespace netwatcher {

namespace {

constexpr const char* kOwnNamespace = "/proc/thread-self/ns/net";

// Every namespace file lives on the one nsfs superblock: a file on another
// device (an empty /run/netns entry before `ip netns add` bind-mounts it, a
// typo pointing at a regular file) is no namespace.
bool stat_namespace(const std::string& path, dev_t nsfs, std::uint64_t& inode) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0 || st.st_dev != nsfs) return false;
  inode = static_cast<std::uint64_t>(st.st_ino);
  return true;
}

std::vector<std::string> directory_entries(const char* dir, bool digits_only) {
  std::vector<std::string> names;
  if (DIR* d = ::opendir(dir)) {
    while (const dirent* entry = ::readdir(d)) {
      const char first = entry->d_name[0];
      if (first == '.' || (digits_only && (first < '1' || first > '9'))) continue;
      names.emplace_back(entry->d_name);
    }
    ::closedir(d);
  }
  return names;
}

std::string describe(const std::string& path) {
  return path.empty() ? std::string("netwatcher's own network namespace") : path;
}

}  // namespace

NamespaceScan scan_namespaces(const std::vector<std::string>& entries) noexcept {
  NamespaceScan scan;
  try {
    struct stat own {};
    if (::stat(kOwnNamespace, &own) != 0) {
      scan.missing.push_back(kOwnNamespace);
      return scan;
    }
    const auto own_inode = static_cast<std::uint64_t>(own.st_ino);
    // First file wins: own, then named entries and /run/netns (stable), then
    // processes (gone when the process is).
    auto add = [&](std::uint64_t inode, const std::string& path, bool named) {
      auto [it, inserted] = scan.found.try_emplace(inode, NamespaceFile{inode, path, named});
      if (!inserted && named) it->second.named = true;
    };
    bool everything = false;
    for (const auto& entry : entries) {
      if (entry == "*") {
        everything = true;
        add(own_inode, "", false);
      } else if (entry == "self") {
        add(own_inode, "", true);
      } else {
        const std::string path =
            entry.find('/') != std::string::npos ? entry : "/run/netns/" + entry;
        std::uint64_t inode = 0;
        if (!stat_namespace(path, own.st_dev, inode))
          scan.missing.push_back(path);
        else
          add(inode, inode == own_inode ? "" : path, true);
      }
    }
    if (!everything) return scan;
    std::vector<std::string> files;
    for (const auto& name : directory_entries("/run/netns", false))
      files.push_back("/run/netns/" + name);
    for (const auto& pid : directory_entries("/proc", true))
      files.push_back("/proc/" + pid + "/ns/net");
    for (const auto& path : files) {
      std::uint64_t inode = 0;
      if (stat_namespace(path, own.st_dev, inode)) add(inode, path, false);
    }
  } catch (const std::exception&) {
    // Out of memory: what was found so far.
  }
  return scan;
}

Status NetfilterNamespaces::configure(const std::vector<std::string>& entries, std::string key) {
  key_ = std::move(key);
  if (entries.empty())
    return Status::failure(key_ + " is empty (\"*\" watches every network namespace)");
  for (const auto& entry : entries)
    if (entry.empty()) return Status::failure(key_ + " has an empty entry");
  entries_ = entries;
  return Status::success();
}

Status NetfilterNamespaces::link(const NamespaceFile& netns) {
  Status s = link_one_(netns.path);
  if (s) {
    linked_.insert(netns.inode);
    reported_.erase(netns.inode);
  } else {
    host_->release_netfilter(netns.inode);
  }
  return s;
}

Status NetfilterNamespaces::start(PluginHost& host, LinkOne link_one) {
  host_ = &host;
  link_one_ = std::move(link_one);
  linked_.clear();
  reported_.clear();
  NamespaceScan scan = scan_namespaces(entries_);
  if (!scan.missing.empty())
    return Status::failure(key_ + ": " + scan.missing.front() + " is no network namespace");
  for (const auto& [inode, netns] : scan.found) {
    Status s = link(netns);
    if (!s && netns.named)
      return Status::failure(key_ + ": " + describe(netns.path) + ": " + s.message());
  }
  return Status::success();
}

Status NetfilterNamespaces::update() {
  if (!host_) return Status::success();
  NamespaceScan scan = scan_namespaces(entries_);
  for (auto it = linked_.begin(); it != linked_.end();) {
    if (scan.found.count(*it)) {
      ++it;
      continue;
    }
    host_->release_netfilter(*it);
    it = linked_.erase(it);
  }
  std::string refused;
  for (const auto& [inode, netns] : scan.found) {
    if (linked_.count(inode)) continue;
    Status s = link(netns);
    if (s) continue;
    // A process that exited between the scan and the link is no news.
    std::uint64_t now = 0;
    struct stat own {};
    const bool still_there =
        netns.path.empty() || (::stat(kOwnNamespace, &own) == 0 &&
                               stat_namespace(netns.path, own.st_dev, now) && now == inode);
    if (!still_there || !reported_.insert(inode).second) continue;
    refused += (refused.empty() ? "" : "; ") + describe(netns.path) + " (netns " +
               std::to_string(inode) + "): " + s.message();
  }
  std::erase_if(reported_, [&](std::uint64_t inode) { return !scan.found.count(inode); });
  if (!refused.empty())
    return Status::failure(key_ + ": not watched, tried again every snapshot_interval: " + refused);
  return Status::success();
}

Status run_in_network_namespace(const std::string& path,
                                const std::function<Status()>& body) noexcept {
  if (path.empty()) {
    try {
      return body();
    } catch (...) {
      return Status::failure("failed with an exception");
    }
  }
  const int home = ::open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
  if (home < 0) return Status::failure("cannot open own network namespace");
  const int target = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  const int entered = target < 0 ? -1 : ::setns(target, CLONE_NEWNET);
  const int enter_errno = errno;
  if (target >= 0) ::close(target);
  if (entered != 0) {
    ::close(home);
    try {
      return Status::failure("cannot enter network namespace " + path + ": " +
                             std::strerror(enter_errno));
    } catch (...) {
      return Status::failure("cannot enter a network namespace");
    }
  }
  // Whatever `body` does, the thread goes home before anything else runs on it.
  struct GoHome {
    int fd;
    const std::string& from;
    ~GoHome() {
      if (::setns(fd, CLONE_NEWNET) != 0) {
        std::fprintf(stderr, "netwatcher: cannot return to its own network namespace from %s: %s\n",
                     from.c_str(), std::strerror(errno));
        std::abort();
      }
      ::close(fd);
    }
  };
  bool threw = false;
  std::string what;
  Status result;
  {
    GoHome home_again{home, path};
    try {
      result = body();
    } catch (const std::exception& e) {
      threw = true;
      try {
        what = e.what();
      } catch (...) {
      }
    } catch (...) {
      threw = true;
    }
  }
  if (!threw) return result;
  try {
    return Status::failure(what.empty() ? "failed with an exception" : what);
  } catch (...) {
    return Status::failure("");
  }
}

}  // namespace netwatcher
