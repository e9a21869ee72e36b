#include "netwatcher/kallsyms.hpp"

#include <algorithm>
#include <cstdio>
#include <fstream>

namespace netwatcher {

namespace {

bool is_text_type(char type) {
  return type == 't' || type == 'T';
}

std::optional<std::uint64_t> parse_hex(std::string_view text) {
  if (text.empty() || text.size() > 16) return std::nullopt;
  std::uint64_t value = 0;
  for (char c : text) {
    int digit;
    if (c >= '0' && c <= '9')
      digit = c - '0';
    else if (c >= 'a' && c <= 'f')
      digit = c - 'a' + 10;
    else if (c >= 'A' && c <= 'F')
      digit = c - 'A' + 10;
    else
      return std::nullopt;
    value = value << 4 | static_cast<std::uint64_t>(digit);
  }
  return value;
}

}  // namespace

KernelSymbols KernelSymbols::parse(std::istream& in) {
  KernelSymbols table;
  table.names_.push_back('\0');  // offset 0: the empty module name
  bool any_line = false, any_nonzero = false;
  std::string line;
  while (std::getline(in, line)) {
    std::string_view rest(line);
    std::size_t space = rest.find(' ');
    if (space == std::string_view::npos) continue;
    auto address = parse_hex(rest.substr(0, space));
    rest.remove_prefix(space + 1);
    if (!address || rest.size() < 3 || rest[1] != ' ') continue;
    any_line = true;
    any_nonzero = any_nonzero || *address != 0;
    if (!is_text_type(rest[0])) continue;
    rest.remove_prefix(2);
    std::string_view name = rest, module;
    if (std::size_t tab = rest.find('\t'); tab != std::string_view::npos) {
      name = rest.substr(0, tab);
      module = rest.substr(tab + 1);
      if (module.size() >= 2 && module.front() == '[' && module.back() == ']')
        module = module.substr(1, module.size() - 2);
    }
    if (name.empty()) continue;
    Symbol symbol{*address, static_cast<std::uint32_t>(table.names_.size()), 0};
    table.names_.append(name).push_back('\0');
    if (!module.empty()) {
      symbol.module = static_cast<std::uint32_t>(table.names_.size());
      table.names_.append(module).push_back('\0');
    }
    table.symbols_.push_back(symbol);
  }
  table.hidden_ = any_line && !any_nonzero;
  if (table.hidden_) table.symbols_.clear();
  // Stable: of several names at one address, the first listed wins.
  std::stable_sort(table.symbols_.begin(), table.symbols_.end(),
                   [](const Symbol& a, const Symbol& b) { return a.address < b.address; });
  table.symbols_.shrink_to_fit();
  table.names_.shrink_to_fit();
  return table;
}

KernelSymbols KernelSymbols::load(const std::string& path) {
  std::ifstream in(path);
  if (!in) return {};
  return parse(in);
}

std::string_view KernelSymbols::at(std::uint32_t offset) const {
  return std::string_view(names_.c_str() + offset);
}

std::optional<KernelSymbols::Resolved> KernelSymbols::resolve(std::uint64_t address) const {
  // First symbol above the address; the one before it contains the address.
  auto above = std::upper_bound(
      symbols_.begin(), symbols_.end(), address,
      [](std::uint64_t value, const Symbol& symbol) { return value < symbol.address; });
  if (above == symbols_.begin()) return std::nullopt;
  const Symbol& symbol = *std::prev(above);
  // Skip to the first name listed at this address (aliases share it).
  auto first =
      std::lower_bound(symbols_.begin(), above, symbol.address,
                       [](const Symbol& s, std::uint64_t value) { return s.address < value; });
  return Resolved{at(first->name), at(first->module), address - symbol.address};
}

std::string KernelSymbols::format(std::uint64_t address) const {
  char hex[24];
  auto resolved = resolve(address);
  if (!resolved) {
    std::snprintf(hex, sizeof hex, "0x%llx", static_cast<unsigned long long>(address));
    return hex;
  }
  std::snprintf(hex, sizeof hex, "+0x%llx", static_cast<unsigned long long>(resolved->offset));
  std::string out(resolved->name);
  out += hex;
  if (!resolved->module.empty()) {
    out += " [";
    out += resolved->module;
    out += ']';
  }
  return out;
}

}  // namespace netwatcher
