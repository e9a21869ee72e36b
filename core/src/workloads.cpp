#include "workloads.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <fstream>
#include <sstream>

#include <spdlog/spdlog.h>
#include <nlohmann/json.hpp>

namespace netwatcher::host {

namespace {

bool all_hex(std::string_view text) {
  for (char c : text)
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  return true;
}

bool is_container_id(std::string_view text) {
  return text.size() == 64 && all_hex(text);
}

std::string_view strip_suffix(std::string_view text, std::string_view suffix) {
  if (text.size() >= suffix.size() && text.substr(text.size() - suffix.size()) == suffix)
    text.remove_suffix(suffix.size());
  return text;
}

// systemd scope names a runtime gives its containers, "<prefix><id>.scope".
struct ScopePrefix {
  std::string_view prefix;
  std::string_view runtime;
};
constexpr std::array kScopePrefixes = {
    ScopePrefix{"docker-", "docker"},
    ScopePrefix{"cri-containerd-", "containerd"},
    ScopePrefix{"crio-", "cri-o"},
    ScopePrefix{"libpod-", "podman"},
};

// A pod uid as kubelet writes it into cgroup names: 36 characters, with '_'
// for '-' under the systemd driver.
std::optional<std::string> pod_uid_of(std::string_view component) {
  component = strip_suffix(component, ".slice");
  std::size_t at = component.rfind("pod");
  if (at == std::string_view::npos) return std::nullopt;
  if (at != 0 && component[at - 1] != '-') return std::nullopt;
  std::string uid(component.substr(at + 3));
  if (uid.size() != 36) return std::nullopt;
  for (char& c : uid) {
    if (c == '_') c = '-';
    if (!(c == '-' || (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return std::nullopt;
  }
  return uid;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return {};
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

}  // namespace

Workload workload_of_cgroup_path(std::string_view path) {
  Workload w;
  w.cgroup = std::string(path);
  std::vector<std::string_view> components;
  for (std::size_t start = 0; start <= path.size();) {
    std::size_t end = path.find('/', start);
    if (end == std::string_view::npos) end = path.size();
    if (end > start) components.push_back(path.substr(start, end - start));
    start = end + 1;
  }
  for (std::size_t i = 0; i < components.size(); ++i) {
    std::string_view c = components[i];
    if (c.starts_with("kubepods") || c.starts_with("pod"))
      if (auto uid = pod_uid_of(c)) w.pod_uid = *uid;
    // The innermost container wins: docker-in-docker nests them.
    std::string_view scope = strip_suffix(c, ".scope");
    bool found = false;
    for (const ScopePrefix& p : kScopePrefixes) {
      if (scope.starts_with(p.prefix) && is_container_id(scope.substr(p.prefix.size()))) {
        w.container_id = std::string(scope.substr(p.prefix.size()));
        w.runtime = std::string(p.runtime);
        found = true;
      }
    }
    // cgroupfs drivers: /docker/<id>, /kubepods/burstable/pod<uid>/<id>,
    // /machine.slice/libpod-<id>.scope/container (podman's inner cgroup).
    if (!found && is_container_id(c)) {
      w.container_id = std::string(c);
      w.runtime = i > 0 && components[i - 1] == "docker" ? "docker" : "";
    }
  }
  return w;
}

bool read_pod_annotations(std::string_view json, Workload& into) {
  nlohmann::json config = nlohmann::json::parse(json, nullptr, /*allow_exceptions=*/false);
  if (!config.is_object()) return false;
  auto annotations = config.find("annotations");
  if (annotations == config.end() || !annotations->is_object()) return true;
  auto take = [&](std::string& field, std::initializer_list<const char*> keys) {
    for (const char* key : keys) {
      auto it = annotations->find(key);
      if (it != annotations->end() && it->is_string() &&
          !it->get_ref<const std::string&>().empty()) {
        field = it->get<std::string>();
        return;
      }
    }
  };
  take(into.pod, {"io.kubernetes.cri.sandbox-name", "io.kubernetes.pod.name"});
  take(into.pod_namespace, {"io.kubernetes.cri.sandbox-namespace", "io.kubernetes.pod.namespace"});
  take(into.container_name, {"io.kubernetes.cri.container-name", "io.kubernetes.container.name"});
  if (into.pod_uid.empty())
    take(into.pod_uid, {"io.kubernetes.cri.sandbox-uid", "io.kubernetes.pod.uid"});
  return true;
}

std::string cgroup2_mount(std::string_view mountinfo) {
  std::string best;
  std::istringstream lines{std::string(mountinfo)};
  for (std::string line; std::getline(lines, line);) {
    // "id parent major:minor root mount-point options [optional...] - type source super"
    std::size_t dash = line.find(" - ");
    if (dash == std::string::npos) continue;
    std::istringstream tail(line.substr(dash + 3));
    std::string type;
    tail >> type;
    if (type != "cgroup2") continue;
    std::istringstream head(line.substr(0, dash));
    std::string id, parent, device, root, point;
    head >> id >> parent >> device >> root >> point;
    if (point == "/sys/fs/cgroup") return point;
    if (best.empty()) best = point;
  }
  return best;
}

WorkloadResolver::WorkloadResolver(WorkloadSettings settings,
                                   std::chrono::milliseconds rescan_interval,
                                   std::size_t max_entries)
    : settings_(std::move(settings)), rescan_interval_(rescan_interval), max_entries_(max_entries) {
  root_ = settings_.cgroup_root.empty() ? cgroup2_mount(read_file("/proc/self/mountinfo"))
                                        : settings_.cgroup_root;
  while (root_.size() > 1 && root_.back() == '/') root_.pop_back();
}

std::shared_ptr<const Workload> WorkloadResolver::describe(const std::string& path) const {
  auto w = std::make_shared<Workload>(workload_of_cgroup_path(path));
  if (!w->container_id.empty()) {
    for (const std::string& dir : settings_.state_directories) {
      std::string json = read_file(dir + "/" + w->container_id + "/config.json");
      if (json.empty()) json = read_file(dir + "/" + w->container_id + "/userdata/config.json");
      if (json.empty()) continue;
      if (!read_pod_annotations(json, *w))
        spdlog::debug("{}/{}: config.json is not a JSON object", dir, w->container_id);
      break;
    }
  }
  return w;
}

void WorkloadResolver::walk_cgroups() {
  if (cgroups_.size() > max_entries_) cgroups_.clear();
  if (root_.empty()) return;
  struct stat st {};
  if (stat(root_.c_str(), &st) != 0) return;
  auto add = [&](std::uint64_t id, const std::string& path) {
    auto& entry = cgroups_[id];
    if (!entry || entry->cgroup != path) entry = describe(path);
  };
  add(st.st_ino, "/");
  // kernfs reports a directory's id as its inode, d_ino included, so the walk
  // reads directories and stats nothing.
  auto walk = [&](auto& self, int parent_fd, const std::string& path, int depth) -> void {
    DIR* dir = fdopendir(parent_fd);
    if (!dir) {
      close(parent_fd);
      return;
    }
    while (dirent* entry = readdir(dir)) {
      if (entry->d_type != DT_DIR || entry->d_name[0] == '.') continue;
      std::string child = (path == "/" ? "/" : path + "/") + entry->d_name;
      add(entry->d_ino, child);
      if (depth >= 32) continue;
      int fd = openat(dirfd(dir), entry->d_name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
      if (fd >= 0) self(self, fd, child, depth + 1);
    }
    closedir(dir);
  };
  int fd = open(root_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd >= 0) walk(walk, fd, "/", 0);
}

void WorkloadResolver::read_netns_names() {
  // Rebuilt whole: a deleted namespace's inode is given to the next one made.
  namespaces_.clear();
  DIR* dir = opendir(settings_.netns_directory.c_str());
  if (!dir) return;
  while (dirent* entry = readdir(dir)) {
    if (entry->d_name[0] == '.') continue;
    struct stat st {};
    // The entry is a bind mount of an nsfs file: stat sees the namespace.
    if (fstatat(dirfd(dir), entry->d_name, &st, 0) != 0) continue;
    namespaces_.try_emplace(st.st_ino, std::make_shared<const std::string>(entry->d_name));
  }
  closedir(dir);
}

std::shared_ptr<const Workload> WorkloadResolver::cgroup(std::uint64_t id) {
  std::lock_guard lock(mutex_);
  if (auto it = cgroups_.find(id); it != cgroups_.end()) return it->second;
  auto now = std::chrono::steady_clock::now();
  if (cgroups_walked_ && now - *cgroups_walked_ < rescan_interval_) return nullptr;
  cgroups_walked_ = now;
  walk_cgroups();
  auto it = cgroups_.find(id);
  return it == cgroups_.end() ? nullptr : it->second;
}

std::shared_ptr<const std::string> WorkloadResolver::netns_name(std::uint64_t inode) {
  std::lock_guard lock(mutex_);
  auto now = std::chrono::steady_clock::now();
  if (!namespaces_read_ || now - *namespaces_read_ >= rescan_interval_) {
    namespaces_read_ = now;
    read_netns_names();
  }
  auto it = namespaces_.find(inode);
  return it == namespaces_.end() ? nullptr : it->second;
}

std::size_t cgroup_label_index(const MetricFamilySpec& declared) {
  auto it = std::find(declared.labels.begin(), declared.labels.end(), kCgroupIdLabel);
  return it == declared.labels.end() ? std::string::npos
                                     : static_cast<std::size_t>(it - declared.labels.begin());
}

MetricFamilySpec exported_workload_spec(const MetricFamilySpec& declared, bool container_labels) {
  MetricFamilySpec exported = declared;
  const std::size_t at = cgroup_label_index(declared);
  if (at == std::string::npos) return exported;
  auto where = exported.labels.erase(exported.labels.begin() + static_cast<std::ptrdiff_t>(at));
  if (container_labels) exported.labels.insert(where, {"container", "pod", "namespace"});
  return exported;
}

WorkloadLabelledFamily::WorkloadLabelledFamily(MetricFamily& exported,
                                               const MetricFamilySpec& declared,
                                               bool container_labels, std::size_t max_workloads,
                                               std::string owner)
    : exported_(exported),
      name_(declared.name),
      owner_(std::move(owner)),
      cgroup_at_(cgroup_label_index(declared)),
      declared_labels_(declared.labels.size()),
      container_labels_(container_labels),
      max_workloads_(max_workloads) {}

void WorkloadLabelledFamily::put_workload(const std::string& id_text, LabelValues& out,
                                          std::size_t at) {
  std::uint64_t id = 0;
  std::from_chars(id_text.data(), id_text.data() + id_text.size(), id);
  auto put = [&](const std::array<std::string, 3>& workload) {
    for (std::size_t i = 0; i < 3; ++i) out[at + i] = workload[i];  // reuses their buffers
  };
  // Unknown: no cgroup, or one not walked yet (a container less than a
  // second old): empty like a host process, and asked again next time.
  static const std::array<std::string, 3> kNone;
  if (!id || !resolver_) return put(kNone);
  {
    std::lock_guard lock(mutex_);
    if (auto it = by_cgroup_.find(id); it != by_cgroup_.end()) return put(it->second);
  }
  std::shared_ptr<const Workload> w = resolver_->cgroup(id);
  if (!w) return put(kNone);
  std::array<std::string, 3> workload{
      // container, pod, namespace
      !w->container_name.empty() ? w->container_name : w->container_id.substr(0, 12), w->pod,
      w->pod_namespace};
  std::lock_guard lock(mutex_);
  if ((!workload[0].empty() || !workload[1].empty()) && !admitted_.count(workload)) {
    if (admitted_.size() < max_workloads_) {
      admitted_.insert(workload);
    } else {
      if (!warned_)
        spdlog::warn(
            "plugin '{}': {} has {} workloads' series; later ones count as container=\"other\" "
            "([containers] max_container_labels)",
            owner_, name_, max_workloads_);
      warned_ = true;
      workload = {"other", "other", "other"};
    }
  }
  // Cgroup ids are not reused, but they are many on a busy node: start over.
  if (by_cgroup_.size() >= kMaxCachedCgroups) by_cgroup_.clear();
  put(by_cgroup_.emplace(id, std::move(workload)).first->second);
}

const LabelValues& WorkloadLabelledFamily::exported_labels(const LabelValues& labels) {
  // A wrong count goes through as it is: the store ignores and counts it.
  if (labels.size() != declared_labels_ || cgroup_at_ >= labels.size()) return labels;
  // Reused per thread: an update costs no allocation once the strings fit.
  thread_local LabelValues out;
  out.resize(labels.size() - 1 + (container_labels_ ? 3 : 0));
  std::size_t o = 0;
  for (std::size_t i = 0; i < cgroup_at_; ++i) out[o++] = labels[i];
  if (container_labels_) {
    put_workload(labels[cgroup_at_], out, o);
    o += 3;
  }
  for (std::size_t i = cgroup_at_ + 1; i < labels.size(); ++i) out[o++] = labels[i];
  return out;
}

void WorkloadLabelledFamily::add(const LabelValues& labels, double delta) noexcept {
  try {
    exported_.add(exported_labels(labels), delta);
  } catch (...) {  // out of memory: the update is lost, the caller is not
  }
}

void WorkloadLabelledFamily::observe(const LabelValues& labels, double value) noexcept {
  try {
    exported_.observe(exported_labels(labels), value);
  } catch (...) {
  }
}

void WorkloadLabelledFamily::remove(const LabelValues& labels) noexcept {
  std::lock_guard lock(mirror_mutex_);
  mirrored_.erase(labels);
  mirrored_histograms_.erase(labels);
}

void WorkloadLabelledFamily::set(const LabelValues& labels, double value) noexcept {
  try {
    double grown;
    {
      std::lock_guard lock(mirror_mutex_);
      double& last = mirrored_[labels];
      if (!(value > last)) return;  // a lower count is ignored, as by the store
      grown = value - last;
      last = value;
    }
    exported_.add(exported_labels(labels), grown);
  } catch (...) {
  }
}

void WorkloadLabelledFamily::set_histogram(const LabelValues& labels,
                                           std::span<const std::uint64_t> bucket_counts,
                                           double sum) noexcept {
  try {
    const LabelValues exported = exported_labels(labels);
    std::lock_guard lock(mirror_mutex_);
    HistogramCounts& last = mirrored_histograms_[labels];
    if (last.buckets.empty()) last.buckets.assign(bucket_counts.size(), 0);
    if (last.buckets.size() != bucket_counts.size()) return;
    for (std::size_t i = 0; i < bucket_counts.size(); ++i)
      if (bucket_counts[i] < last.buckets[i]) return;  // not a count that only grows
    HistogramCounts& total = exported_histograms_[exported];
    if (total.buckets.empty()) total.buckets.assign(bucket_counts.size(), 0);
    for (std::size_t i = 0; i < bucket_counts.size(); ++i)
      total.buckets[i] += bucket_counts[i] - last.buckets[i];
    total.sum += sum - last.sum;
    last.buckets.assign(bucket_counts.begin(), bucket_counts.end());
    last.sum = sum;
    exported_.set_histogram(exported, total.buckets, total.sum);
  } catch (...) {
  }
}

}  // namespace netwatcher::host
