// NetfilterNamespaces without the kernel's links: which namespaces it asks
// the plugin to link, which it releases, and what it reports. Runs as any
// user: only netwatcher's own namespace and files that point at it are used.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <string>
#include <vector>

#include "fake_host.hpp"
#include "netwatcher/netns.hpp"
#include "test_support.hpp"

namespace {

using netwatcher::NetfilterNamespaces;
using netwatcher::Status;

std::uint64_t own_inode() {
  struct stat st {};
  EXPECT_EQ(stat("/proc/thread-self/ns/net", &st), 0);
  return st.st_ino;
}

class NetfilterNamespacesTest : public ::testing::Test {
 protected:
  netwatcher::fakes::FakeHost host_{netwatcher::PluginDescription{}};
  std::vector<std::string> asked_;  // netns arguments of every link attempt
  bool refuse_ = false;

  NetfilterNamespaces::LinkOne linker() {
    return [this](const std::string& netns) {
      asked_.push_back(netns);
      return refuse_ ? Status::failure("EPERM from the fake") : Status::success();
    };
  }
};

TEST_F(NetfilterNamespacesTest, AnEmptyListOrEntryIsRefusedNamingTheKey) {
  NetfilterNamespaces namespaces;
  Status empty = namespaces.configure({}, "plugins.netfilter.namespaces");
  ASSERT_FALSE(empty);
  EXPECT_NE(empty.message().find("plugins.netfilter.namespaces is empty"), std::string::npos);
  Status blank = namespaces.configure({"self", ""}, "plugins.tcp.layer_namespaces");
  ASSERT_FALSE(blank);
  EXPECT_NE(blank.message().find("plugins.tcp.layer_namespaces has an empty entry"),
            std::string::npos);
}

TEST_F(NetfilterNamespacesTest, ANamedFileThatIsNoNamespaceStopsStartUp) {
  nwtest::TempDir dir;
  nwtest::write_file(dir.file("not-a-netns"), "");
  NetfilterNamespaces namespaces;
  ASSERT_TRUE(namespaces.configure({dir.file("not-a-netns")}, "plugins.netfilter.namespaces"));
  Status s = namespaces.start(host_, linker());
  ASSERT_FALSE(s);
  EXPECT_EQ(s.message(), "plugins.netfilter.namespaces: " + dir.file("not-a-netns") +
                             " is no network namespace");
  EXPECT_TRUE(asked_.empty());
}

TEST_F(NetfilterNamespacesTest, ARefusedNamedNamespaceStopsStartUpAndIsReleased) {
  refuse_ = true;
  NetfilterNamespaces namespaces;
  ASSERT_TRUE(namespaces.configure({"self"}, "plugins.netfilter.namespaces"));
  Status s = namespaces.start(host_, linker());
  ASSERT_FALSE(s);
  EXPECT_EQ(
      s.message(),
      "plugins.netfilter.namespaces: netwatcher's own network namespace: EPERM from the fake");
  EXPECT_EQ(asked_, std::vector<std::string>{""});
  EXPECT_EQ(host_.released, std::vector<std::uint64_t>{own_inode()});
}

// "*" finds namespaces that may vanish before they are linked: a refusal
// there is no reason to stop, but is said once and tried again.
TEST_F(NetfilterNamespacesTest, ARefusedFoundNamespaceIsRetriedAndReportedOnce) {
  refuse_ = true;
  NetfilterNamespaces namespaces;
  ASSERT_TRUE(namespaces.configure({"*"}, "plugins.netfilter.namespaces"));
  ASSERT_TRUE(namespaces.start(host_, linker()));
  EXPECT_TRUE(namespaces.linked().empty());

  Status first = namespaces.update();
  ASSERT_FALSE(first);
  EXPECT_NE(first.message().find("plugins.netfilter.namespaces: not watched"), std::string::npos);
  EXPECT_NE(first.message().find("netwatcher's own network namespace (netns " +
                                 std::to_string(own_inode()) + "): EPERM from the fake"),
            std::string::npos)
      << first.message();
  const auto own_attempts = [&] { return std::count(asked_.begin(), asked_.end(), ""); };
  EXPECT_EQ(own_attempts(), 2);

  Status second = namespaces.update();
  EXPECT_EQ(second.message().find("netwatcher's own"), std::string::npos) << "said twice";
  EXPECT_EQ(own_attempts(), 3);

  refuse_ = false;
  ASSERT_TRUE(namespaces.update());
  EXPECT_EQ(namespaces.linked().count(own_inode()), 1u);
}

// A namespace no file reaches any more is released, so that our links do
// not keep it alive; when it is back, it is linked again.
TEST_F(NetfilterNamespacesTest, ANamespaceThatIsGoneIsReleasedAndLinkedAgainWhenBack) {
  nwtest::TempDir dir;
  const std::string alias = dir.file("netns");
  std::filesystem::create_symlink("/proc/thread-self/ns/net", alias);
  NetfilterNamespaces namespaces;
  ASSERT_TRUE(namespaces.configure({alias}, "plugins.netfilter.namespaces"));
  ASSERT_TRUE(namespaces.start(host_, linker()));
  // The own namespace is entered as "" whatever file named it.
  EXPECT_EQ(asked_, std::vector<std::string>{""});
  EXPECT_EQ(namespaces.linked(), std::set<std::uint64_t>{own_inode()});

  ASSERT_TRUE(namespaces.update());
  EXPECT_EQ(asked_.size(), 1u) << "a linked namespace is not linked twice";
  EXPECT_TRUE(host_.released.empty());

  std::filesystem::remove(alias);
  ASSERT_TRUE(namespaces.update());
  EXPECT_EQ(host_.released, std::vector<std::uint64_t>{own_inode()});
  EXPECT_TRUE(namespaces.linked().empty());

  std::filesystem::create_symlink("/proc/thread-self/ns/net", alias);
  ASSERT_TRUE(namespaces.update());
  EXPECT_EQ(asked_.size(), 2u);
  EXPECT_EQ(namespaces.linked(), std::set<std::uint64_t>{own_inode()});
}

TEST_F(NetfilterNamespacesTest, OneNamespaceReachedByManyFilesIsLinkedOnce) {
  NetfilterNamespaces namespaces;
  ASSERT_TRUE(namespaces.configure({"self", "*", "/proc/self/ns/net", "/proc/thread-self/ns/net"},
                                   "plugins.netfilter.namespaces"));
  ASSERT_TRUE(namespaces.start(host_, linker()));
  EXPECT_EQ(std::count(asked_.begin(), asked_.end(), ""), 1);
}

TEST_F(NetfilterNamespacesTest, UpdateBeforeStartDoesNothing) {
  NetfilterNamespaces namespaces;
  ASSERT_TRUE(namespaces.configure({"*"}, "plugins.netfilter.namespaces"));
  EXPECT_TRUE(namespaces.update());
  EXPECT_TRUE(asked_.empty());
}

}  // namespace

TEST(RunInNetworkNamespace, AFileThatIsNoNamespaceFailsNamingItAndRunsNothing) {
  bool ran = false;
  const std::uint64_t before = own_inode();
  Status s = netwatcher::run_in_network_namespace("/proc/self/status", [&] {
    ran = true;
    return Status::success();
  });
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("/proc/self/status"), std::string::npos) << s.message();
  EXPECT_FALSE(ran);
  EXPECT_EQ(own_inode(), before);
}

TEST(RunInNetworkNamespace, AnEmptyPathRunsHereAndPassesTheResultOn) {
  Status s =
      netwatcher::run_in_network_namespace("", [] { return Status::failure("body said no"); });
  EXPECT_EQ(s.message(), "body said no");
}
