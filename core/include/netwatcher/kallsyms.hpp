// netwatcher SDK: kernel text addresses to `function+offset`.
//
// Built from /proc/kallsyms (or any stream in its format): the text symbols
// (types t/T) sorted by address, names kept in one arena so the table for a
// full kernel (~150k symbols) costs a few MB. Lookups are a binary search and
// do not allocate; the object is immutable after construction and therefore
// safe to share between threads.
#pragma once

#include <cstdint>
#include <istream>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace netwatcher {

class KernelSymbols {
 public:
  struct Resolved {
    std::string_view name;    // valid as long as the KernelSymbols object
    std::string_view module;  // empty for the kernel image
    std::uint64_t offset = 0;
  };

  KernelSymbols() = default;
  // Reads kallsyms-format lines ("<hex address> <type> <name>[\t[module]]").
  // Lines that do not parse and non-text symbols are skipped.
  static KernelSymbols parse(std::istream& in);
  // Reads /proc/kallsyms. Returns an empty table (and `hidden()` true when the
  // file had only zero addresses, i.e. kptr_restrict hid them) on failure.
  static KernelSymbols load(const std::string& path = "/proc/kallsyms");

  // The symbol at or below `address`. nullopt before the first symbol or for an
  // empty table. An address after the last symbol resolves to the last one:
  // kallsyms has no sizes, so the end of the last function is unknown.
  std::optional<Resolved> resolve(std::uint64_t address) const;
  // "name+0x1f", "name+0x1f [module]", or "0x<hex>" when unresolved.
  std::string format(std::uint64_t address) const;

  std::size_t size() const { return symbols_.size(); }
  bool hidden() const { return hidden_; }

 private:
  struct Symbol {
    std::uint64_t address;
    std::uint32_t name;  // offset into names_, NUL-terminated
    std::uint32_t module;
  };
  std::string_view at(std::uint32_t offset) const;

  std::vector<Symbol> symbols_;
  std::string names_;
  bool hidden_ = false;
};

}  // namespace netwatcher
