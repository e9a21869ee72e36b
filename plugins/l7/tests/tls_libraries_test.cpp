// Which files the TLS capture probes: libssl mappings read from
// /proc/<pid>/maps, executables that define SSL_write, and each file once.
#include "tls_libraries.hpp"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

namespace {

using netwatcher::l7::elf_defines;
using netwatcher::l7::mapped_tls_libraries;
using netwatcher::l7::TlsLibraryFinder;

constexpr const char* kSystemLibssl = "/usr/lib/x86_64-linux-gnu/libssl.so.3";

TEST(TlsLibraries, MapsYieldEachExecutableLibsslMappingOnce) {
  const std::string maps =
      "55d0c0000000-55d0c0001000 r--p 00000000 08:01 100 /usr/bin/curl\n"
      "7f0000000000-7f0000020000 r--p 00000000 08:01 200 /usr/lib/x86_64-linux-gnu/libssl.so.3\n"
      "7f0000020000-7f0000090000 r-xp 00020000 08:01 200 /usr/lib/x86_64-linux-gnu/libssl.so.3\n"
      "7f00000a0000-7f00000b0000 r-xp 00000000 08:01 201 /opt/app/lib/libssl.so.1.1\n"
      "7f00000c0000-7f00000d0000 r-xp 00000000 08:01 202 /tmp/libssl.so.3 (deleted)\n"
      "7f00000e0000-7f00000f0000 r-xp 00000000 08:01 203 /usr/lib/x86_64-linux-gnu/libsslx\n"
      "7f00000f0000-7f00000f1000 r-xp 00000000 08:01 206 /venv/_ssl/libssl-1a2b3c.so.3\n"
      "7f0000100000-7f0000110000 r-xp 00000000 08:01 204 /usr/lib/libcrypto.so.3\n"
      "7f0000120000-7f0000121000 rw-p 00000000 00:00 0\n"
      "7ffc00000000-7ffc00021000 rw-p 00000000 00:00 0 [stack]\n"
      "7f0000130000-7f0000140000 r-xp 00000000 08:01 205 /srv/my libssl/libssl.so.3\n";
  std::vector<std::string> paths, ranges;
  std::vector<bool> deleted;
  for (const auto& m : mapped_tls_libraries(maps)) {
    paths.push_back(m.path);
    ranges.push_back(m.range);
    deleted.push_back(m.deleted);
  }
  EXPECT_EQ(paths, (std::vector<std::string>{"/usr/lib/x86_64-linux-gnu/libssl.so.3",
                                             "/opt/app/lib/libssl.so.1.1", "/tmp/libssl.so.3",
                                             "/venv/_ssl/libssl-1a2b3c.so.3",
                                             "/srv/my libssl/libssl.so.3"}));
  // The first executable mapping of each; a deleted file is reached through it.
  EXPECT_EQ(ranges[0], "7f0000020000-7f0000090000");
  EXPECT_EQ(ranges[2], "7f00000c0000-7f00000d0000");
  EXPECT_EQ(deleted, (std::vector<bool>{false, false, true, false, false}));
  EXPECT_TRUE(mapped_tls_libraries("").empty());
  EXPECT_TRUE(mapped_tls_libraries("garbage\n\n7f r-xp\n").empty());
}

TEST(TlsLibraries, ElfDefinesFindsOnlyDefinedFunctions) {
  ASSERT_TRUE(std::filesystem::exists(kSystemLibssl)) << "scripts/setup.sh installs OpenSSL";
  EXPECT_TRUE(elf_defines(kSystemLibssl, "SSL_write"));
  EXPECT_TRUE(elf_defines(kSystemLibssl, "SSL_read_ex"));
  EXPECT_FALSE(elf_defines(kSystemLibssl, "SSL_no_such_function"));
  // curl calls SSL_write but does not define it.
  EXPECT_FALSE(elf_defines("/usr/bin/curl", "SSL_write"));
  EXPECT_FALSE(elf_defines("/nonexistent", "SSL_write"));
  // Not ELF at all.
  const std::string text = "/tmp/nw-tls-libraries-test.txt";
  std::ofstream(text) << "not an ELF file\n";
  EXPECT_FALSE(elf_defines(text, "SSL_write"));
  std::filesystem::remove(text);
}

TEST(TlsLibraries, EachFileIsFoundOnceWhateverItsNames) {
  TlsLibraryFinder finder;
  auto system = finder.scan_system();
  // /lib is /usr/lib on a merged-/usr system, and libssl.so (the -dev
  // symlink) names libssl.so.3: one file, under its real name.
  std::size_t named = 0;
  for (const auto& library : system) named += library.path == kSystemLibssl;
  EXPECT_EQ(named, 1u);
  for (const auto& library : system)
    EXPECT_EQ(library.path, std::filesystem::canonical(library.path));
  EXPECT_EQ(finder.files(), system.size());
  EXPECT_TRUE(finder.scan_system().empty());
  // This test maps no libssl and its executable defines no SSL_write.
  EXPECT_TRUE(finder.scan_process(getpid()).empty());
}

}  // namespace
