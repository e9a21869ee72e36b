// The kallsyms symboliser, fed synthetic tables and the running kernel's.
#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>
#include <sstream>

#include "netwatcher/kallsyms.hpp"
#include "test_support.hpp"

using netwatcher::KernelSymbols;

namespace {

KernelSymbols table(const std::string& text) {
  std::istringstream in(text);
  return KernelSymbols::parse(in);
}

const std::string kLongName(300, 'x');

const std::string kTable =
    "ffffffff81000100 T second\n"
    "ffffffff81000000 T first\n"
    "ffffffff81000000 t first_alias\n"
    "ffffffff81000180 D some_data\n"
    "ffffffff81000200 t " +
    kLongName +
    "\n"
    "ffffffffc0001000 t mod_func\t[nf_tables]\n"
    "garbage line\n";

TEST(KernelSymbols, AddressBeforeTheFirstSymbolIsUnresolved) {
  auto symbols = table(kTable);
  EXPECT_FALSE(symbols.resolve(0xffffffff80ffffff).has_value());
  EXPECT_EQ(symbols.format(0x1234), "0x1234");
}

TEST(KernelSymbols, AddressBetweenSymbolsResolvesToTheLowerOne) {
  auto symbols = table(kTable);
  EXPECT_EQ(symbols.format(0xffffffff81000000), "first+0x0");
  EXPECT_EQ(symbols.format(0xffffffff810000ff), "first+0xff");
  EXPECT_EQ(symbols.format(0xffffffff81000100), "second+0x0");
  // Data symbols are not function boundaries.
  EXPECT_EQ(symbols.format(0xffffffff81000190), "second+0x90");
}

TEST(KernelSymbols, AddressAfterTheLastSymbolResolvesToTheLastOne) {
  auto symbols = table(kTable);
  EXPECT_EQ(symbols.format(0xffffffffc0001010), "mod_func+0x10 [nf_tables]");
  auto resolved = symbols.resolve(0xffffffffc0001010);
  ASSERT_TRUE(resolved.has_value());
  EXPECT_EQ(resolved->module, "nf_tables");
}

TEST(KernelSymbols, LongNamesAreKeptWhole) {
  auto symbols = table(kTable);
  EXPECT_EQ(symbols.format(0xffffffff81000204), kLongName + "+0x4");
  EXPECT_EQ(symbols.size(), 5u);  // four text symbols and one alias
}

TEST(KernelSymbols, ZeroAddressesMeanTheyAreHidden) {
  auto symbols = table("0000000000000000 T first\n0000000000000000 t second\n");
  EXPECT_TRUE(symbols.hidden());
  EXPECT_EQ(symbols.size(), 0u);
  EXPECT_FALSE(symbols.resolve(0).has_value());
}

TEST(KernelSymbols, EmptyTableResolvesNothing) {
  KernelSymbols symbols;
  EXPECT_FALSE(symbols.resolve(0xffffffff81000000).has_value());
  EXPECT_FALSE(symbols.hidden());
}

TEST(KernelSymbols, RealKallsymsResolvesAKnownFunction) {
  auto symbols = KernelSymbols::load();
  if (symbols.hidden() || symbols.size() == 0) {
    if (nwtest::in_ci()) FAIL() << "CI runs as root: /proc/kallsyms must be readable";
    GTEST_SKIP() << "kallsyms hidden (not root)";
  }
  EXPECT_GT(symbols.size(), 1000u);
  // The kernel's own listing, read here without the symboliser: the
  // addresses of tcp_v4_rcv, of the text symbol after it and of one module
  // function (if any module is loaded).
  std::ifstream in("/proc/kallsyms");
  std::string line;
  std::uint64_t rcv = 0, next = ~std::uint64_t{0}, module_address = 0;
  std::string module_name, module;
  std::vector<std::pair<std::uint64_t, std::string>> text;
  while (std::getline(in, line)) {
    std::istringstream words(line);
    std::string address, type, name, owner;
    if (!(words >> address >> type >> name) || (type != "t" && type != "T")) continue;
    words >> owner;
    const std::uint64_t value = std::stoull(address, nullptr, 16);
    text.emplace_back(value, name);
    if (name == "tcp_v4_rcv" && owner.empty()) rcv = value;
    if (module_address == 0 && owner.size() > 2 && owner.front() == '[') {
      module_address = value;
      module_name = name;
      module = owner.substr(1, owner.size() - 2);
    }
  }
  ASSERT_NE(rcv, 0u) << "no tcp_v4_rcv in /proc/kallsyms";
  std::string first_at_rcv;  // of aliases at one address, the first listed
  for (const auto& [address, name] : text) {
    if (address == rcv && first_at_rcv.empty()) first_at_rcv = name;
    if (address > rcv) next = std::min(next, address);
  }
  auto at = symbols.resolve(rcv);
  ASSERT_TRUE(at.has_value());
  EXPECT_EQ(at->name, first_at_rcv);
  EXPECT_EQ(at->offset, 0u);
  EXPECT_TRUE(at->module.empty());
  // The last byte before the next symbol is still tcp_v4_rcv's.
  ASSERT_GT(next, rcv + 1);
  std::ostringstream last_byte;
  last_byte << first_at_rcv << "+0x" << std::hex << (next - 1 - rcv);
  EXPECT_EQ(symbols.format(next - 1), last_byte.str());
  auto after = symbols.resolve(next);
  ASSERT_TRUE(after.has_value());
  EXPECT_NE(after->name, first_at_rcv);
  EXPECT_EQ(after->offset, 0u);
  if (module_address != 0) {
    auto in_module = symbols.resolve(module_address);
    ASSERT_TRUE(in_module.has_value());
    EXPECT_EQ(in_module->name, module_name);
    EXPECT_EQ(in_module->module, module);
    EXPECT_EQ(in_module->offset, 0u);
  }
}

}  // namespace
