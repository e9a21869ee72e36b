// Names the workload behind an event: a cgroup id becomes the cgroup's path,
// the container it is, and the Kubernetes pod it runs in; a network
// namespace inode becomes its /run/netns name.
//
// Plugins put the kernel's ids on events (fields `cgroup_id` and `netns`);
// the host appends what they resolve to (see append_fields()), so a plugin
// never reads cgroupfs or runtime state itself.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "netwatcher/metrics.hpp"

namespace netwatcher::host {

struct WorkloadSettings {
  bool enabled = true;
  // The cgroup2 mount; "" finds it in /proc/self/mountinfo.
  std::string cgroup_root;
  // Where container runtimes keep each task's OCI config.json: a container
  // `<id>` is looked up as <dir>/<id>/config.json (containerd's task
  // directories) and <dir>/<id>/userdata/config.json (cri-o, podman).
  std::vector<std::string> state_directories = {
      "/run/containerd/io.containerd.runtime.v2.task/k8s.io",
      "/run/containerd/io.containerd.runtime.v2.task/moby",
      "/run/containers/storage/overlay-containers",
  };
  std::string netns_directory = "/run/netns";
  // Families a plugin declares with a cgroup_id label (metrics.hpp) get
  // container, pod and namespace labels instead; off, they get none.
  bool container_labels = false;
  // Distinct workloads per such family; later ones count as "other".
  std::size_t max_container_labels = 100;
};

struct Workload {
  std::string cgroup;  // below the cgroup2 root, "/system.slice/docker-<id>.scope"
  std::string container_id;
  std::string runtime;  // docker, containerd, cri-o, podman; "" when unknown
  std::string pod_uid;
  // From the runtime's state (OCI annotations); "" when it has none.
  std::string pod;
  std::string pod_namespace;
  std::string container_name;
};

// The fields the host appends after a `cgroup_id` field, in this order.
struct WorkloadField {
  const char* name;
  const char* description;
  int width;
  std::string Workload::*member;
};
inline const WorkloadField kWorkloadFields[] = {
    {"cgroup", "the socket's or process's cgroup2 path", 24, &Workload::cgroup},
    {"container_id", "the container the cgroup belongs to", 12, &Workload::container_id},
    {"container_runtime", "docker, containerd, cri-o or podman", 10, &Workload::runtime},
    {"pod_uid", "the Kubernetes pod's uid", 12, &Workload::pod_uid},
    {"pod", "the pod's name (from the runtime's state)", 16, &Workload::pod},
    {"pod_namespace", "the pod's Kubernetes namespace", 12, &Workload::pod_namespace},
    {"container_name", "the container's name in its pod", 14, &Workload::container_name},
};

// What a cgroup path alone tells: the container id and runtime of the
// innermost component that names one, and the pod uid of a kubepods
// component (systemd driver "kubepods-burstable-pod<uid>.slice" with '_'
// for '-', cgroupfs driver "pod<uid>"). Pure.
Workload workload_of_cgroup_path(std::string_view path);

// The pod, namespace and container names in an OCI config.json's annotations
// (containerd's io.kubernetes.cri.*, cri-o's io.kubernetes.pod.*); fields it
// lacks stay as they are. False when `json` is no JSON object.
bool read_pod_annotations(std::string_view json, Workload& into);

// The cgroup2 mount point listed in a mountinfo text, preferring
// /sys/fs/cgroup over others (hybrid hosts mount it at
// /sys/fs/cgroup/unified); "" when there is none.
std::string cgroup2_mount(std::string_view mountinfo);

// Resolves ids as events carry them. Thread-safe. An id never seen before
// costs one walk of the cgroup tree (or one read of the netns directory), at
// most once per `rescan_interval`: an id born after the walk stays unknown
// until the next one. Cgroups that are gone keep their names until
// `max_entries` is passed, so a connection that outlives its container is
// still named (cgroup ids are not reused). Namespace names are reread once per
// `rescan_interval` while events ask for them: the kernel reuses the inode of
// a deleted namespace.
class WorkloadResolver {
 public:
  explicit WorkloadResolver(WorkloadSettings settings,
                            std::chrono::milliseconds rescan_interval = std::chrono::seconds(1),
                            std::size_t max_entries = 65536);

  // Null when the id names no cgroup found (or no cgroup2 mount exists).
  std::shared_ptr<const Workload> cgroup(std::uint64_t id);
  // The name under netns_directory, or null.
  std::shared_ptr<const std::string> netns_name(std::uint64_t inode);

  const std::string& cgroup_root() const { return root_; }

 private:
  void walk_cgroups();
  void read_netns_names();
  std::shared_ptr<const Workload> describe(const std::string& path) const;

  WorkloadSettings settings_;
  std::string root_;
  std::chrono::milliseconds rescan_interval_;
  std::size_t max_entries_;
  std::mutex mutex_;
  std::map<std::uint64_t, std::shared_ptr<const Workload>> cgroups_;
  std::map<std::uint64_t, std::shared_ptr<const std::string>> namespaces_;
  std::optional<std::chrono::steady_clock::time_point> cgroups_walked_, namespaces_read_;
};

// Families declared with a kCgroupIdLabel label (metrics.hpp): where the
// label is, or npos.
std::size_t cgroup_label_index(const MetricFamilySpec& declared);
// What such a family is exported as: the label replaced by container, pod
// and namespace, or (container_labels false) left out.
MetricFamilySpec exported_workload_spec(const MetricFamilySpec& declared, bool container_labels);

// The family a plugin updates when it declared a cgroup_id label: each
// update's cgroup id becomes the exported labels (see metrics.hpp).
// Thread-safe like the store's families.
class WorkloadLabelledFamily final : public MetricFamily {
 public:
  // `exported` is the store's family declared with exported_workload_spec();
  // `owner` names the plugin in the warning once the cap is reached.
  WorkloadLabelledFamily(MetricFamily& exported, const MetricFamilySpec& declared,
                         bool container_labels, std::size_t max_workloads, std::string owner);
  // Before the first update; null leaves every workload's labels empty.
  void use_resolver(WorkloadResolver* resolver) { resolver_ = resolver; }

  void add(const LabelValues& labels, double delta) noexcept override;
  void observe(const LabelValues& labels, double value) noexcept override;
  // Mirrors: what grew since the last call for `labels` is added.
  void set(const LabelValues& labels, double value) noexcept override;
  void set_histogram(const LabelValues& labels, std::span<const std::uint64_t> bucket_counts,
                     double sum) noexcept override;
  // Forgets what set()/set_histogram() last gave for `labels`; the exported
  // series keep their counts (other cgroups may share them).
  void remove(const LabelValues& labels) noexcept override;

 private:
  struct HistogramCounts {
    std::vector<std::uint64_t> buckets;
    double sum = 0;
  };
  // The labels to give the store; valid until this thread's next call.
  const LabelValues& exported_labels(const LabelValues& labels);
  // Writes container, pod and namespace of the cgroup `id_text` to out[at..].
  void put_workload(const std::string& id_text, LabelValues& out, std::size_t at);
  static constexpr std::size_t kMaxCachedCgroups = 65536;

  MetricFamily& exported_;
  const std::string name_, owner_;
  const std::size_t cgroup_at_, declared_labels_;
  const bool container_labels_;
  const std::size_t max_workloads_;
  WorkloadResolver* resolver_ = nullptr;
  std::mutex mutex_;
  std::set<std::array<std::string, 3>> admitted_;  // under mutex_
  // Each resolved cgroup's labels, as admitted; under mutex_.
  std::unordered_map<std::uint64_t, std::array<std::string, 3>> by_cgroup_;
  bool warned_ = false;  // under mutex_
  // Mirrors, under mirror_mutex_: the last value given per declared labels,
  // and each exported histogram's sums (the store can only replace one).
  std::mutex mirror_mutex_;
  std::map<LabelValues, double> mirrored_;
  std::map<LabelValues, HistogramCounts> mirrored_histograms_;
  std::map<LabelValues, HistogramCounts> exported_histograms_;
};

}  // namespace netwatcher::host
