// What cgroup paths, OCI config files and mount tables say about workloads,
// and the resolver over a directory tree that stands in for cgroupfs (a
// directory's inode is its cgroup id there as on kernfs). Runs as any user.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>
#include <string>

#include "metric_store.hpp"
#include "test_support.hpp"
#include "workloads.hpp"

namespace {

using netwatcher::host::cgroup2_mount;
using netwatcher::host::read_pod_annotations;
using netwatcher::host::Workload;
using netwatcher::host::workload_of_cgroup_path;
using netwatcher::host::WorkloadResolver;
using netwatcher::host::WorkloadSettings;

const std::string kIdA(64, 'a');
const std::string kIdB = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
const std::string kUid = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0";

std::uint64_t inode_of(const std::string& path) {
  struct stat st {};
  EXPECT_EQ(stat(path.c_str(), &st), 0) << path;
  return st.st_ino;
}

TEST(WorkloadPath, DockerUnderSystemdAndCgroupfs) {
  Workload w = workload_of_cgroup_path("/system.slice/docker-" + kIdA + ".scope");
  EXPECT_EQ(w.cgroup, "/system.slice/docker-" + kIdA + ".scope");
  EXPECT_EQ(w.container_id, kIdA);
  EXPECT_EQ(w.runtime, "docker");
  EXPECT_EQ(w.pod_uid, "");

  w = workload_of_cgroup_path("/docker/" + kIdB);
  EXPECT_EQ(w.container_id, kIdB);
  EXPECT_EQ(w.runtime, "docker");
}

TEST(WorkloadPath, KubernetesPodsUnderBothDrivers) {
  std::string uid_underscores = kUid;
  for (char& c : uid_underscores)
    if (c == '-') c = '_';
  Workload w =
      workload_of_cgroup_path("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" +
                              uid_underscores + ".slice/cri-containerd-" + kIdB + ".scope");
  EXPECT_EQ(w.container_id, kIdB);
  EXPECT_EQ(w.runtime, "containerd");
  EXPECT_EQ(w.pod_uid, kUid);

  w = workload_of_cgroup_path("/kubepods.slice/kubepods-pod" + uid_underscores + ".slice/crio-" +
                              kIdA + ".scope");
  EXPECT_EQ(w.runtime, "cri-o");
  EXPECT_EQ(w.pod_uid, kUid);

  // cgroupfs driver: the id is a bare component, the runtime unknown.
  w = workload_of_cgroup_path("/kubepods/besteffort/pod" + kUid + "/" + kIdA);
  EXPECT_EQ(w.container_id, kIdA);
  EXPECT_EQ(w.runtime, "");
  EXPECT_EQ(w.pod_uid, kUid);
}

TEST(WorkloadPath, PodmanAndNestedContainersNameTheInnermost) {
  Workload w = workload_of_cgroup_path("/machine.slice/libpod-" + kIdA + ".scope/container");
  EXPECT_EQ(w.container_id, kIdA);
  EXPECT_EQ(w.runtime, "podman");

  w = workload_of_cgroup_path("/system.slice/docker-" + kIdA + ".scope/docker/" + kIdB);
  EXPECT_EQ(w.container_id, kIdB);
}

TEST(WorkloadPath, OrdinaryCgroupsNameNoContainer) {
  for (const char* path :
       {"/", "/user.slice/user-1000.slice/session-2.scope", "/system.slice/nginx.service",
        "/system.slice/docker-abc.scope", "/podcast.slice"}) {
    Workload w = workload_of_cgroup_path(path);
    EXPECT_EQ(w.cgroup, path);
    EXPECT_EQ(w.container_id, "") << path;
    EXPECT_EQ(w.pod_uid, "") << path;
  }
  // Upper-case hex is no runtime's id.
  std::string upper(64, 'A');
  EXPECT_EQ(workload_of_cgroup_path("/docker-" + upper + ".scope").container_id, "");
}

TEST(PodAnnotations, ContainerdAndCriOKeys) {
  Workload w;
  ASSERT_TRUE(read_pod_annotations(R"({"ociVersion":"1.1.0","annotations":{
      "io.kubernetes.cri.container-type":"container",
      "io.kubernetes.cri.sandbox-name":"web-5d8f",
      "io.kubernetes.cri.sandbox-namespace":"shop",
      "io.kubernetes.cri.container-name":"nginx",
      "io.kubernetes.cri.sandbox-uid":")" +
                                       kUid + R"("}})",
                                   w));
  EXPECT_EQ(w.pod, "web-5d8f");
  EXPECT_EQ(w.pod_namespace, "shop");
  EXPECT_EQ(w.container_name, "nginx");
  EXPECT_EQ(w.pod_uid, kUid);

  Workload crio;
  crio.pod_uid = "from-the-path";
  ASSERT_TRUE(read_pod_annotations(R"({"annotations":{"io.kubernetes.pod.name":"db-0",
      "io.kubernetes.pod.namespace":"data","io.kubernetes.container.name":"mariadb",
      "io.kubernetes.pod.uid":"other"}})",
                                   crio));
  EXPECT_EQ(crio.pod, "db-0");
  EXPECT_EQ(crio.pod_namespace, "data");
  EXPECT_EQ(crio.container_name, "mariadb");
  EXPECT_EQ(crio.pod_uid, "from-the-path");  // the cgroup path is not overruled
}

TEST(PodAnnotations, NoAnnotationsOrNoJson) {
  Workload w;
  EXPECT_TRUE(read_pod_annotations(R"({"ociVersion":"1.0.2"})", w));
  EXPECT_EQ(w.pod, "");
  EXPECT_TRUE(read_pod_annotations(R"({"annotations":{"io.kubernetes.pod.name":7}})", w));
  EXPECT_EQ(w.pod, "");
  EXPECT_FALSE(read_pod_annotations("{\"annotations\": {", w));
  EXPECT_FALSE(read_pod_annotations("[1,2]", w));
}

TEST(Cgroup2Mount, PureAndHybridHosts) {
  EXPECT_EQ(cgroup2_mount("30 1 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw\n"),
            "/sys/fs/cgroup");
  EXPECT_EQ(cgroup2_mount("25 1 0:22 / /sys/fs/cgroup rw - tmpfs tmpfs rw,mode=755\n"
                          "26 25 0:23 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n"
                          "33 25 0:30 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n"),
            "/sys/fs/cgroup/unified");
  EXPECT_EQ(cgroup2_mount("40 1 0:40 / /host/sys/fs/cgroup rw - cgroup2 cgroup2 rw\n"
                          "30 1 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n"),
            "/sys/fs/cgroup");
  EXPECT_EQ(cgroup2_mount("25 1 0:22 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n"), "");
}

TEST(WorkloadResolver, NamesCgroupsOfATreeAndReadsTheRuntimeState) {
  nwtest::TempDir dir;
  const std::string root = dir.file("cgroup");
  const std::string pod_slice =
      root + "/kubepods.slice/kubepods-pod" + std::string(kUid) + ".slice";
  const std::string container = pod_slice + "/cri-containerd-" + kIdB + ".scope";
  std::filesystem::create_directories(container);
  std::filesystem::create_directories(dir.file("state/" + kIdB));
  nwtest::write_file(dir.file("state/" + kIdB + "/config.json"),
                     R"({"annotations":{"io.kubernetes.cri.sandbox-name":"api-1",
                         "io.kubernetes.cri.sandbox-namespace":"prod",
                         "io.kubernetes.cri.container-name":"app"}})");
  WorkloadSettings settings;
  settings.cgroup_root = root + "/";
  settings.state_directories = {dir.file("missing"), dir.file("state")};
  WorkloadResolver resolver(settings, std::chrono::milliseconds(0));
  EXPECT_EQ(resolver.cgroup_root(), root);

  auto w = resolver.cgroup(inode_of(container));
  ASSERT_TRUE(w);
  EXPECT_EQ(w->cgroup,
            "/kubepods.slice/kubepods-pod" + kUid + ".slice/cri-containerd-" + kIdB + ".scope");
  EXPECT_EQ(w->container_id, kIdB);
  EXPECT_EQ(w->pod_uid, kUid);
  EXPECT_EQ(w->pod, "api-1");
  EXPECT_EQ(w->pod_namespace, "prod");
  EXPECT_EQ(w->container_name, "app");

  auto top = resolver.cgroup(inode_of(root));
  ASSERT_TRUE(top);
  EXPECT_EQ(top->cgroup, "/");
  EXPECT_FALSE(resolver.cgroup(inode_of(dir.path())));  // outside the tree

  // A cgroup made later is found by the next walk; a removed one keeps its name.
  const std::string later = root + "/system.slice/docker-" + kIdA + ".scope";
  std::filesystem::create_directories(later);
  const std::uint64_t later_id = inode_of(later);
  auto d = resolver.cgroup(later_id);
  ASSERT_TRUE(d);
  EXPECT_EQ(d->container_id, kIdA);
  EXPECT_EQ(d->runtime, "docker");
  EXPECT_EQ(d->pod, "");
  std::filesystem::remove(later);
  ASSERT_TRUE(resolver.cgroup(later_id));
  EXPECT_EQ(resolver.cgroup(later_id)->cgroup, "/system.slice/docker-" + kIdA + ".scope");
}

TEST(WorkloadResolver, AnUnknownIdWaitsForTheNextWalk) {
  nwtest::TempDir dir;
  const std::string root = dir.file("cgroup");
  std::filesystem::create_directories(root);
  WorkloadSettings settings;
  settings.cgroup_root = root;
  WorkloadResolver resolver(settings, std::chrono::hours(1));
  ASSERT_TRUE(resolver.cgroup(inode_of(root)));  // the first walk
  std::filesystem::create_directories(root + "/new.slice");
  EXPECT_FALSE(resolver.cgroup(inode_of(root + "/new.slice")));  // not walked again yet
}

TEST(WorkloadResolver, NetnsNamesFollowTheDirectory) {
  nwtest::TempDir dir;
  const std::string netns = dir.file("netns");
  std::filesystem::create_directories(netns);
  nwtest::write_file(netns + "/blue", "");
  WorkloadSettings settings;
  settings.cgroup_root = dir.file("no-cgroup");
  settings.netns_directory = netns;
  WorkloadResolver resolver(settings, std::chrono::milliseconds(0));
  const std::uint64_t blue = inode_of(netns + "/blue");
  ASSERT_TRUE(resolver.netns_name(blue));
  EXPECT_EQ(*resolver.netns_name(blue), "blue");
  std::filesystem::remove(netns + "/blue");
  EXPECT_FALSE(resolver.netns_name(blue));  // inodes of deleted namespaces are reused
  EXPECT_FALSE(resolver.cgroup(1));         // no cgroup tree at all
}

}  // namespace

namespace {

using netwatcher::MetricFamilySpec;
using netwatcher::MetricType;
using netwatcher::host::exported_workload_spec;
using netwatcher::host::MetricStore;
using netwatcher::host::WorkloadLabelledFamily;

double value_of(const MetricStore& store, const std::string& family,
                const netwatcher::LabelValues& labels) {
  for (const auto& f : store.snapshot())
    if (f.spec.name == family)
      for (const auto& s : f.series)
        if (s.labels == labels) return f.spec.type == MetricType::histogram ? s.count : s.value;
  return -1;
}

TEST(ContainerLabels, TheCgroupIdBecomesContainerPodAndNamespaceOrNothing) {
  const MetricFamilySpec declared{
      "demo_requests_total", MetricType::counter, "Requests.", {"method", "cgroup_id", "side"}, {}};
  EXPECT_EQ(exported_workload_spec(declared, true).labels,
            (std::vector<std::string>{"method", "container", "pod", "namespace", "side"}));
  EXPECT_EQ(exported_workload_spec(declared, false).labels,
            (std::vector<std::string>{"method", "side"}));

  nwtest::TempDir dir;
  const std::string root = dir.file("cgroup");
  const std::string pod = root + "/kubepods.slice/kubepods-pod" + kUid + ".slice";
  const std::string app = pod + "/cri-containerd-" + kIdB + ".scope";
  const std::string docker = root + "/system.slice/docker-" + kIdA + ".scope";
  std::filesystem::create_directories(app);
  std::filesystem::create_directories(docker);
  std::filesystem::create_directories(dir.file("state/" + kIdB));
  nwtest::write_file(dir.file("state/" + kIdB + "/config.json"),
                     R"({"annotations":{"io.kubernetes.cri.sandbox-name":"api-1",
                         "io.kubernetes.cri.sandbox-namespace":"prod",
                         "io.kubernetes.cri.container-name":"app"}})");
  WorkloadSettings settings;
  settings.cgroup_root = root;
  settings.state_directories = {dir.file("state")};
  WorkloadResolver resolver(settings, std::chrono::milliseconds(0));

  MetricStore labelled_store, plain_store;
  WorkloadLabelledFamily labelled(*labelled_store.declare(exported_workload_spec(declared, true)),
                                  declared, true, 2, "demo");
  WorkloadLabelledFamily plain(*plain_store.declare(exported_workload_spec(declared, false)),
                               declared, false, 2, "demo");
  labelled.use_resolver(&resolver);
  plain.use_resolver(&resolver);
  const std::string app_id = std::to_string(inode_of(app));
  const std::string docker_id = std::to_string(inode_of(docker));
  const std::string host_id = std::to_string(inode_of(root));
  for (auto* family : {&labelled, &plain}) {
    family->add({"GET", app_id, "server"}, 3);
    family->add({"GET", docker_id, "server"}, 2);
    family->add({"GET", host_id, "server"}, 1);
    family->add({"GET", "0", "server"}, 1);
    family->add({"GET", "not a number", "server"}, 1);
    family->remove({"GET", app_id, "server"});  // the exported series stay (shared)
  }
  EXPECT_EQ(
      value_of(labelled_store, "demo_requests_total", {"GET", "app", "api-1", "prod", "server"}),
      3);
  EXPECT_EQ(value_of(labelled_store, "demo_requests_total",
                     {"GET", kIdA.substr(0, 12), "", "", "server"}),
            2)
      << "a container outside Kubernetes is its short id";
  EXPECT_EQ(value_of(labelled_store, "demo_requests_total", {"GET", "", "", "", "server"}), 3)
      << "the host's own cgroup, no cgroup and a bad id: no workload";
  EXPECT_EQ(value_of(plain_store, "demo_requests_total", {"GET", "server"}), 8);

  // The third workload is past max_container_labels = 2.
  const std::string late = root + "/system.slice/docker-" + std::string(64, 'c') + ".scope";
  std::filesystem::create_directories(late);
  labelled.add({"GET", std::to_string(inode_of(late)), "server"}, 5);
  EXPECT_EQ(
      value_of(labelled_store, "demo_requests_total", {"GET", "other", "other", "other", "server"}),
      5);
  labelled.add({"GET", app_id, "server"}, 1);
  EXPECT_EQ(
      value_of(labelled_store, "demo_requests_total", {"GET", "app", "api-1", "prod", "server"}), 4)
      << "admitted workloads keep their series";
}

TEST(ContainerLabels, HistogramsObserveUnderTheExportedLabels) {
  const MetricFamilySpec declared{
      "demo_seconds", MetricType::histogram, "Latency.", {"cgroup_id"}, {0.1, 1}};
  MetricStore store;
  WorkloadLabelledFamily family(*store.declare(exported_workload_spec(declared, false)), declared,
                                false, 10, "demo");
  family.observe({"1"}, 0.05);
  family.observe({"2"}, 0.5);
  family.observe({"1", "2"}, 0.5);  // a wrong count goes to the store, which ignores it
  EXPECT_EQ(value_of(store, "demo_seconds", {}), 2);
}

TEST(ContainerLabels, MirroredCountsAddWhatGrewPerCgroup) {
  const MetricFamilySpec counter{"demo_total", MetricType::counter, "Total.", {"cgroup_id"}, {}};
  const MetricFamilySpec histogram{
      "demo_seconds", MetricType::histogram, "Latency.", {"cgroup_id"}, {0.1, 1}};
  MetricStore store;
  WorkloadLabelledFamily total(*store.declare(exported_workload_spec(counter, false)), counter,
                               false, 10, "demo");
  WorkloadLabelledFamily seconds(*store.declare(exported_workload_spec(histogram, false)),
                                 histogram, false, 10, "demo");
  // Two cgroups' absolute counts, as a plugin mirrors them: they add up.
  total.set({"1"}, 5);
  total.set({"2"}, 3);
  total.set({"1"}, 7);
  total.set({"1"}, 6);  // lower: ignored
  EXPECT_EQ(value_of(store, "demo_total", {}), 10);
  // Forgotten (the plugin let cgroup 1 go): its next count starts afresh.
  total.remove({"1"});
  total.set({"1"}, 2);
  EXPECT_EQ(value_of(store, "demo_total", {}), 12);
  const std::vector<std::uint64_t> first{1, 0, 0}, second{2, 1, 0}, other{0, 0, 4};
  seconds.set_histogram({"1"}, first, 0.05);
  seconds.set_histogram({"1"}, second, 0.7);
  seconds.set_histogram({"2"}, other, 8);
  EXPECT_EQ(value_of(store, "demo_seconds", {}), 7);
  for (const auto& f : store.snapshot())
    if (f.spec.name == "demo_seconds") {
      ASSERT_EQ(f.series.size(), 1u);
      EXPECT_EQ(f.series[0].bucket_counts, (std::vector<std::uint64_t>{2, 1, 4}));
      EXPECT_DOUBLE_EQ(f.series[0].sum, 8.7);
    }
}

}  // namespace
