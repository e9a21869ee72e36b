#include <gtest/gtest.h>

#include "loader.hpp"
#include "test_support.hpp"

using namespace netwatcher;
using namespace netwatcher::host;

namespace {

std::string fixture(const std::string& name) {
  return std::string(NW_FIXTURE_DIR) + "/" + name + ".so";
}

std::string refusal(const std::string& name) {
  RefusedFile refused;
  auto component = load_component(fixture(name), refused);
  EXPECT_FALSE(component.has_value()) << name << " was accepted";
  EXPECT_EQ(refused.path, fixture(name));
  return refused.reason;
}

}  // namespace

TEST(Loader, RefusesSharedObjectWithoutDescriptor) {
  EXPECT_EQ(refusal("no_descriptor"), "not a netwatcher plugin: no 'netwatcher_descriptor' symbol");
}

TEST(Loader, RefusesOtherAbiMajorNamingBothVersions) {
  EXPECT_EQ(refusal("wrong_major"), "ABI major version mismatch: plugin ABI " +
                                        std::to_string(NETWATCHER_ABI_MAJOR + 1) + ".0, host ABI " +
                                        std::to_string(NETWATCHER_ABI_MAJOR) + "." +
                                        std::to_string(NETWATCHER_ABI_MINOR));
}

TEST(Loader, RefusesNewerAbiMinor) {
  EXPECT_EQ(refusal("newer_minor"),
            "built for a newer ABI minor version than this host: plugin ABI " +
                std::to_string(NETWATCHER_ABI_MAJOR) + "." +
                std::to_string(NETWATCHER_ABI_MINOR + 1) + ", host ABI " +
                std::to_string(NETWATCHER_ABI_MAJOR) + "." + std::to_string(NETWATCHER_ABI_MINOR));
}

TEST(Loader, RefusesOtherCompiler) {
  EXPECT_EQ(refusal("wrong_compiler"),
            std::string("built with compiler 'msvc-19/msstl/c++201703L', host uses '") +
                NETWATCHER_COMPILER_ID + "'; the C++ interfaces are not compatible");
}

TEST(Loader, RefusesFileThatIsNotASharedObject) {
  nwtest::TempDir dir;
  nwtest::write_file(dir.file("garbage.so"), "this is not ELF");
  RefusedFile refused;
  EXPECT_FALSE(load_component(dir.file("garbage.so"), refused).has_value());
  EXPECT_NE(refused.reason.find("cannot load shared object"), std::string::npos) << refused.reason;
}

TEST(Loader, ThrowingFactoryBecomesAnErrorNotACrash) {
  RefusedFile refused;
  auto component = load_component(fixture("throwing_factory"), refused);
  ASSERT_TRUE(component.has_value()) << refused.reason;
  std::string error;
  auto plugin = create_probe(*component, error);
  EXPECT_EQ(plugin, nullptr);
  EXPECT_EQ(error,
            fixture("throwing_factory") +
                ": factory of 'throwing_factory' failed: fixture constructor refuses to start");
}

TEST(Loader, DiscoveryKeepsGoingPastBadFiles) {
  Discovery discovery = discover({NW_FIXTURE_DIR});
  ASSERT_NE(discovery.probe("good_probe"), nullptr);
  EXPECT_NE(discovery.probe("throwing_factory"), nullptr);  // refused later, at creation
  EXPECT_EQ(discovery.refused.size(), 4u);
  EXPECT_NE(discovery.refused_named("wrong_major"), nullptr);
  EXPECT_NE(discovery.refused_named("newer_minor"), nullptr);
  std::string error;
  auto plugin = create_probe(*discovery.probe("good_probe"), error);
  ASSERT_NE(plugin, nullptr) << error;
  bpf_object* object = nullptr;
  EXPECT_EQ(plugin->open(&object).message(), "fixture has no BPF");
}

TEST(Loader, RealPluginsAreAcceptedWithTheirKinds) {
  Discovery discovery = discover({NW_PLUGIN_DIR});
  EXPECT_TRUE(discovery.refused.empty());
  ASSERT_NE(discovery.probe("tcp"), nullptr);
  for (const char* sink : {"stdout", "json", "csv", "prometheus"})
    EXPECT_NE(discovery.sink(sink), nullptr) << sink;
  EXPECT_EQ(discovery.probe("json"), nullptr);
}
