#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <list>
#include <set>

#include "loader.hpp"
#include "metric_store.hpp"
#include "netwatcher/bpf/types.h"
#include "probe_runtime.hpp"
#include "test_support.hpp"

using namespace netwatcher;
using namespace netwatcher::host;

namespace {

std::string fixture(const std::string& name) {
  return std::string(NW_FIXTURE_DIR) + "/" + name + ".so";
}

std::string refusal(const std::string& path) {
  RefusedFile refused;
  auto component = load_component(path, refused);
  EXPECT_FALSE(component.has_value()) << path << " was accepted";
  EXPECT_EQ(refused.path, path);
  return refused.reason;
}

std::string refusal_of(const std::string& name) {
  return refusal(fixture(name));
}

std::string host_versions() {
  return "host ABI " + std::to_string(NETWATCHER_ABI_MAJOR) + "." +
         std::to_string(NETWATCHER_ABI_MINOR);
}

// What the host records as its own identity, as the loader prints it.
std::string host_identity() {
  return std::string(NETWATCHER_STDLIB) + "/cxx11-abi-" + std::to_string(NETWATCHER_DUAL_ABI) +
         "/c++" + std::to_string(NETWATCHER_CPLUSPLUS);
}

// Whether `path` is mapped into this process (i.e. was dlopen()ed).
bool mapped(const std::string& path) {
  std::ifstream maps("/proc/self/maps");
  std::string line;
  while (std::getline(maps, line))
    if (line.find(path) != std::string::npos) return true;
  return false;
}

// A copy of a fixture under a name of its own, so that no earlier test of this
// process has loaded that very file.
std::string fresh_copy(const nwtest::TempDir& dir, const std::string& name) {
  const std::string copy = dir.file(name + ".so");
  std::filesystem::copy_file(fixture(name), copy);
  return copy;
}

}  // namespace

// --- Read from the file, before any code of it runs -------------------------

TEST(Loader, ReadsTheDescriptorFromTheFileWithoutLoadingIt) {
  nwtest::TempDir dir;
  const std::string path = fresh_copy(dir, "good_probe");
  nw_plugin_descriptor d{};
  EXPECT_EQ(read_descriptor(path, d), std::nullopt);
  EXPECT_FALSE(mapped(path)) << "read_descriptor() must not load the file";
  EXPECT_STREQ(d.name, "good_probe");
  EXPECT_STREQ(d.version, "0.0.1");
  EXPECT_EQ(d.kind, NW_PLUGIN_KIND_PROBE);
  EXPECT_EQ(d.abi_major, NETWATCHER_ABI_MAJOR);
  EXPECT_EQ(d.struct_size, sizeof(nw_plugin_descriptor));
  EXPECT_STREQ(d.stdlib, NETWATCHER_STDLIB);
  EXPECT_STREQ(d.compiler, NETWATCHER_COMPILER_FAMILY);
  EXPECT_EQ(check_descriptor(d), std::nullopt);

  RefusedFile refused;
  auto component = load_component(path, refused);
  ASSERT_TRUE(component.has_value()) << refused.reason;
  EXPECT_TRUE(mapped(path));
  EXPECT_EQ(component->compiler, NETWATCHER_COMPILER_FAMILY);
  EXPECT_EQ(component->stdlib, host_identity());
}

// The static constructor of a refused file writes a marker and aborts: the
// test process surviving without a marker is the proof it never ran.
TEST(Loader, NoCodeOfARefusedFileRuns) {
  nwtest::TempDir dir;
  const std::string marker = dir.file("marker");
  ASSERT_EQ(setenv("NW_FIXTURE_MARKER", marker.c_str(), 1), 0);
  const std::string refused_path = fresh_copy(dir, "ctor_marker_refused");
  EXPECT_EQ(refusal(refused_path),
            "ABI major version mismatch: plugin ABI " + std::to_string(NETWATCHER_ABI_MAJOR + 1) +
                "." + std::to_string(NETWATCHER_ABI_MINOR) + ", " + host_versions());
  EXPECT_FALSE(std::filesystem::exists(marker)) << "the refused file's constructor ran";
  EXPECT_FALSE(mapped(refused_path));

  // The control: the same constructor in an accepted file does run on load.
  const std::string accepted_path = fresh_copy(dir, "ctor_marker_accepted");
  RefusedFile refused;
  auto component = load_component(accepted_path, refused);
  unsetenv("NW_FIXTURE_MARKER");
  ASSERT_TRUE(component.has_value()) << refused.reason;
  EXPECT_TRUE(std::filesystem::exists(marker)) << "the marker fixture does not work";
}

// --- One test per refusal ----------------------------------------------------

TEST(Loader, RefusesSharedObjectWithoutDescriptorSection) {
  EXPECT_EQ(refusal_of("no_descriptor"),
            "no '.netwatcher_descriptor' section: not a netwatcher plugin, or built against an "
            "SDK before ABI 3.0");
}

TEST(Loader, RefusesFileThatIsNotElf) {
  nwtest::TempDir dir;
  nwtest::write_file(dir.file("garbage.so"), "this is not ELF");
  EXPECT_EQ(refusal(dir.file("garbage.so")), "not an ELF file");
  nwtest::write_file(dir.file("empty.so"), "");
  EXPECT_EQ(refusal(dir.file("empty.so")), "not an ELF file");
}

TEST(Loader, RefusesOtherElfClassesAndByteOrders) {
  nwtest::TempDir dir;
  std::string header(64, '\0');
  header.replace(0, 4,
                 "\x7f"
                 "ELF");
  header[4] = 1;  // ELFCLASS32
  header[5] = 1;  // ELFDATA2LSB
  nwtest::write_file(dir.file("elf32.so"), header);
  EXPECT_EQ(refusal(dir.file("elf32.so")),
            "ELF class ELFCLASS32 (32-bit): this host loads only 64-bit little-endian plugins");
  header[4] = 2;  // ELFCLASS64
  header[5] = 2;  // ELFDATA2MSB
  nwtest::write_file(dir.file("elf64be.so"), header);
  EXPECT_EQ(refusal(dir.file("elf64be.so")),
            "ELF data encoding ELFDATA2MSB (big-endian): this host loads only 64-bit "
            "little-endian plugins");
  header[5] = 1;
  nwtest::write_file(dir.file("truncated.so"), header.substr(0, 20));
  EXPECT_EQ(refusal(dir.file("truncated.so")), "truncated ELF header");
}

TEST(Loader, RefusesElfThatIsNoSharedObject) {
  nwtest::TempDir dir;
  std::string header(64, '\0');
  header.replace(0, 4,
                 "\x7f"
                 "ELF");
  header[4] = 2;   // ELFCLASS64
  header[5] = 1;   // ELFDATA2LSB
  header[16] = 1;  // e_type ET_REL: an object file
  nwtest::write_file(dir.file("object.so"), header);
  EXPECT_EQ(refusal(dir.file("object.so")), "ELF type 1 is not a shared object (ET_DYN)");
  // A position-independent executable is ET_DYN, but no plugin.
  EXPECT_EQ(refusal(NW_BINARY),
            "no '.netwatcher_descriptor' section: not a netwatcher plugin, or built against an "
            "SDK before ABI 3.0");
}

TEST(Loader, RefusesBadMagic) {
  EXPECT_EQ(refusal_of("bad_magic"), "descriptor field 'magic' is not \"NWDESC\"");
}

TEST(Loader, RefusesSectionOfAnotherSizeThanTheDescriptorSays) {
  EXPECT_EQ(refusal_of("bad_size"), "descriptor field 'struct_size' says " +
                                        std::to_string(sizeof(nw_plugin_descriptor) - 8) +
                                        " bytes, its section is " +
                                        std::to_string(sizeof(nw_plugin_descriptor)));
}

TEST(Loader, RefusesUnterminatedString) {
  EXPECT_EQ(refusal_of("unterminated_name"), "descriptor field 'name' is not NUL-terminated");
}

TEST(Loader, RefusesOtherAbiMajorNamingBothVersions) {
  EXPECT_EQ(refusal_of("wrong_major"), "ABI major version mismatch: plugin ABI " +
                                           std::to_string(NETWATCHER_ABI_MAJOR + 1) + ".0, " +
                                           host_versions());
}

TEST(Loader, RefusesNewerAbiMinor) {
  EXPECT_EQ(refusal_of("newer_minor"),
            "built for a newer ABI minor version than this host: plugin ABI " +
                std::to_string(NETWATCHER_ABI_MAJOR) + "." +
                std::to_string(NETWATCHER_ABI_MINOR + 1) + ", " + host_versions());
}

TEST(Loader, RefusesOtherStandardLibrary) {
  EXPECT_EQ(refusal_of("wrong_stdlib"),
            "built against libc++-15000, host uses " NETWATCHER_STDLIB " (plugin libc++-15000/c++" +
                std::to_string(NETWATCHER_CPLUSPLUS) + ", host " + host_identity() +
                "): the std types in the C++ interfaces would not match");
}

TEST(Loader, RefusesTheOldStringAbiNamingIt) {
  EXPECT_EQ(refusal_of("old_string_abi"),
            "built with _GLIBCXX_USE_CXX11_ABI=0, host uses _GLIBCXX_USE_CXX11_ABI=1 (plugin " +
                std::string(NETWATCHER_STDLIB) + "/cxx11-abi-0/c++" +
                std::to_string(NETWATCHER_CPLUSPLUS) + ", host " + host_identity() +
                "): the std types in the C++ interfaces would not match");
}

TEST(Loader, RefusesOtherCxxStandard) {
  EXPECT_EQ(refusal_of("wrong_standard"),
            "built as C++ 201703 (__cplusplus), host as " + std::to_string(NETWATCHER_CPLUSPLUS) +
                " (plugin " + std::string(NETWATCHER_STDLIB) + "/cxx11-abi-1/c++201703, host " +
                host_identity() + "): the std types in the C++ interfaces would not match");
}

// Only this one is found after dlopen(): the section is fine, the symbol lies.
TEST(Loader, RefusesExportedDescriptorThatDiffersFromTheSection) {
  EXPECT_EQ(refusal_of("symbol_mismatch"),
            "the exported 'netwatcher_descriptor' differs from the '.netwatcher_descriptor' "
            "section (name 'impostor', section says 'symbol_mismatch')");
}

// --- What must not be refused ------------------------------------------------

// The compiler family is informational: a clang-built plugin shares the
// gcc-built host's libstdc++ and dual ABI.
TEST(Loader, AcceptsPluginBuiltByAnotherCompilerFamily) {
  if (!std::filesystem::exists(fixture("clang_probe"))) {
    if (std::getenv("CI")) FAIL() << "clang_probe.so not built; clang++ must exist in CI";
    GTEST_SKIP() << "clang++ not installed: clang_probe.so not built";
  }
  RefusedFile refused;
  auto component = load_component(fixture("clang_probe"), refused);
  ASSERT_TRUE(component.has_value()) << refused.reason;
  EXPECT_EQ(component->compiler.rfind("clang-", 0), 0u) << component->compiler;
  EXPECT_EQ(component->stdlib, host_identity());
  auto created_plugin = create_probe(*component);
  ASSERT_TRUE(created_plugin.ok()) << created_plugin.status().message();
  auto plugin = created_plugin.take();
  PluginDescription description;
  EXPECT_TRUE(plugin->describe(description).ok());
  bpf_object* object = nullptr;
  EXPECT_EQ(plugin->open(&object).message(), "fixture has no BPF");
}

TEST(Loader, ThrowingFactoryBecomesAnErrorNotACrash) {
  RefusedFile refused;
  auto component = load_component(fixture("throwing_factory"), refused);
  ASSERT_TRUE(component.has_value()) << refused.reason;
  auto plugin = create_probe(*component);
  EXPECT_FALSE(plugin.ok());
  EXPECT_EQ(plugin.status().message(),
            fixture("throwing_factory") +
                ": factory of 'throwing_factory' failed: fixture constructor refuses to start");
}

TEST(Loader, DiscoveryKeepsGoingPastBadFiles) {
  Discovery discovery = discover({NW_FIXTURE_DIR});
  ASSERT_NE(discovery.probe("good_probe"), nullptr);
  EXPECT_NE(discovery.probe("throwing_factory"), nullptr);  // refused later, at creation
  EXPECT_NE(discovery.probe("describe_throws"), nullptr);   // refused later, at describe()
  std::set<std::string> refused;
  for (const auto& r : discovery.refused)
    refused.insert(std::filesystem::path(r.path).stem().string());
  EXPECT_EQ(refused, (std::set<std::string>{"bad_magic", "bad_size", "ctor_marker_refused",
                                            "newer_minor", "no_descriptor", "old_string_abi",
                                            "symbol_mismatch", "unterminated_name", "wrong_major",
                                            "wrong_standard", "wrong_stdlib"}));
  EXPECT_NE(discovery.refused_named("wrong_major"), nullptr);
  EXPECT_NE(discovery.refused_named("newer_minor"), nullptr);
  auto created_plugin = create_probe(*discovery.probe("good_probe"));
  ASSERT_TRUE(created_plugin.ok()) << created_plugin.status().message();
  auto plugin = created_plugin.take();
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

// --- describe() and the description ------------------------------------------

namespace {

std::unique_ptr<ProbeRuntime> runtime_of(const Component& component, MetricStore& store) {
  auto plugin = create_probe(component);
  EXPECT_TRUE(plugin.ok()) << plugin.status().message();
  if (!plugin) return nullptr;
  return std::make_unique<ProbeRuntime>(component, plugin.take(), store);
}

std::unique_ptr<ProbeRuntime> fixture_runtime(const std::string& name, MetricStore& store) {
  RefusedFile refused;
  static std::list<Component> keep;  // the runtimes point at their component
  auto component = load_component(fixture(name), refused);
  EXPECT_TRUE(component.has_value()) << refused.reason;
  if (!component) return nullptr;
  keep.push_back(*component);
  return runtime_of(keep.back(), store);
}

}  // namespace

TEST(Describe, AThrowingDescribeRefusesThePluginWithItsMessage) {
  MetricStore store;
  auto runtime = fixture_runtime("describe_throws", store);
  ASSERT_NE(runtime, nullptr);
  EXPECT_EQ(runtime->described().message(),
            "plugin 'describe_throws': describe() failed: fixture cannot describe itself");
  EXPECT_TRUE(runtime->schemas().empty());
}

TEST(Describe, AnInvalidDescriptionRefusesThePluginNamingTheItem) {
  MetricStore store;
  auto runtime = fixture_runtime("invalid_schema", store);
  ASSERT_NE(runtime, nullptr);
  EXPECT_EQ(runtime->described().message(),
            "plugin 'invalid_schema': event 'tick': declared twice");
  EXPECT_TRUE(runtime->schemas().empty());
}

TEST(Describe, AThrowingSinkDescribeIsAFailureNotAnEmptySink) {
  RefusedFile refused;
  auto component = load_component(fixture("sink_describe_throws"), refused);
  ASSERT_TRUE(component.has_value()) << refused.reason;
  auto created_sink = create_sink(*component);
  ASSERT_TRUE(created_sink.ok()) << created_sink.status().message();
  auto sink = created_sink.take();
  SinkDescription description;
  EXPECT_EQ(sink->describe(description).message(), "fixture sink cannot describe itself");
}

TEST(Describe, EveryRealPluginDescribesItselfValidly) {
  Discovery discovery = discover({NW_PLUGIN_DIR});
  ASSERT_FALSE(discovery.probes.empty());
  for (const auto& component : discovery.probes) {
    MetricStore store;
    auto runtime = runtime_of(component, store);
    ASSERT_NE(runtime, nullptr) << component.name;
    EXPECT_TRUE(runtime->described().ok()) << runtime->described().message();
    EXPECT_FALSE(runtime->schemas().empty() && runtime->description().metrics.empty())
        << component.name;
  }
}

// -L promises anomaly detection on "every plugin's latency fields": each
// one is a sample, and the labels that must never be compared across are
// keys.
TEST(Describe, EveryLatencyFieldIsAnAnomalySample) {
  struct Expected {
    std::string plugin, event, field;
    AnomalyRole role;
  };
  const std::vector<Expected> expected = {
      {"tcp", "tcp_layer", "total_us", AnomalyRole::sample},
      {"tcp", "tcp_layer", "direction", AnomalyRole::key},
      {"http", "http_exchange", "latency_us", AnomalyRole::sample},
      {"udp", "udp_datagram", "kernel_ns", AnomalyRole::sample},
      {"udp", "udp_datagram", "direction", AnomalyRole::key},
      {"icmp", "icmp_message", "rtt_ns", AnomalyRole::sample},
      {"icmp", "icmp_message", "reply_ns", AnomalyRole::sample},
      {"icmp", "icmp_message", "direction", AnomalyRole::key},
      {"netfilter", "nf_hook", "hook_ns", AnomalyRole::sample},
      {"netfilter", "nf_hook", "hook", AnomalyRole::key},
  };
  Discovery discovery = discover({NW_PLUGIN_DIR});
  for (const auto& want : expected) {
    SCOPED_TRACE(want.plugin + " " + want.event + "." + want.field);
    const Component* component = discovery.probe(want.plugin);
    ASSERT_NE(component, nullptr);
    MetricStore store;
    auto runtime = runtime_of(*component, store);
    ASSERT_NE(runtime, nullptr);
    const EventSchema* schema = nullptr;
    for (const auto& s : runtime->description().events)
      if (s.name == want.event) schema = &s;
    ASSERT_NE(schema, nullptr);
    const int index = schema->index_of(want.field);
    ASSERT_GE(index, 0);
    EXPECT_EQ(schema->fields[static_cast<std::size_t>(index)].anomaly, want.role);
  }
}

// --- The BPF contract ----------------------------------------------------------

TEST(BpfContract, AnObjectOfAnotherContractIsRefusedBeforeLoad) {
  RefusedFile refused;
  auto component = load_component(fixture("netwatcher-contract_probe"), refused);
  ASSERT_TRUE(component.has_value()) << refused.reason;
  auto created_plugin = create_probe(*component);
  ASSERT_TRUE(created_plugin.ok()) << created_plugin.status().message();
  auto plugin = created_plugin.take();
  bpf_object* object = nullptr;
  ASSERT_TRUE(plugin->open(&object).ok());
  EXPECT_EQ(check_bpf_contract(object),
            "BPF object built against contract " + std::to_string(NW_BPF_CONTRACT_VERSION + 98) +
                ", host speaks " + std::to_string(NW_BPF_CONTRACT_VERSION));
  plugin->stop();
}

TEST(BpfContract, AnObjectBuiltWithCommonBpfHSpeaksTheHostsContract) {
  RefusedFile refused;
  auto component = load_component(fixture("netwatcher-fallback_probe"), refused);
  ASSERT_TRUE(component.has_value()) << refused.reason;
  auto created_plugin = create_probe(*component);
  ASSERT_TRUE(created_plugin.ok()) << created_plugin.status().message();
  auto plugin = created_plugin.take();
  bpf_object* object = nullptr;
  ASSERT_TRUE(plugin->open(&object).ok());
  EXPECT_EQ(check_bpf_contract(object), std::nullopt);
  plugin->stop();
}
