// `netwatcher --help` as a user reads it: the core options, then one group
// per plugin, headed by its name and description, in README.md's order.
#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>
#include <map>
#include <regex>
#include <sstream>

#include "harness.hpp"

using namespace nwtest;

namespace {

struct Group {
  std::string heading;
  std::vector<std::string> lines;
};

// A heading is a line that starts in column 0 and ends with ':'.
std::vector<Group> groups_of(const std::string& help) {
  std::vector<Group> groups;
  std::istringstream in(help);
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty() && line[0] != ' ' && line.back() == ':')
      groups.push_back({line, {}});
    else if (!groups.empty() && !line.empty())
      groups.back().lines.push_back(line);
  }
  return groups;
}

bool has_line_starting(const Group& group, const std::string& start) {
  for (const auto& line : group.lines)
    if (line.rfind(start, 0) == 0) return true;
  return false;
}

// Plugin names in the order of README.md's "### What the <name> plugin reports".
std::vector<std::string> readme_order() {
  std::ifstream in(std::string(NW_SOURCE_DIR) + "/README.md");
  const std::regex section("^### What the (\\w+) plugin reports");
  std::vector<std::string> names;
  std::string line;
  std::smatch match;
  while (std::getline(in, line))
    if (std::regex_search(line, match, section)) names.push_back(match[1]);
  return names;
}

// name -> one-line description, from --list-plugins ("plugin NAME VERSION (...)"
// and the description indented below it).
std::map<std::string, std::string> descriptions(const std::string& listing) {
  std::map<std::string, std::string> out;
  std::istringstream in(listing);
  std::string line, pending;
  while (std::getline(in, line)) {
    if (!pending.empty()) {
      out[pending] = line.substr(line.find_first_not_of(' '));
      pending.clear();
    } else if (line.rfind("plugin ", 0) == 0) {
      pending = line.substr(7, line.find(' ', 7) - 7);
    }
  }
  return out;
}

TEST(Help, GroupsFlagsByPluginInTheReadmesOrderUnderTheCoreOptions) {
  TempDir dir;
  write_file(dir.file("c.toml"),
             "[netwatcher]\nplugin_dirs = [\"" + std::string(NW_PLUGIN_DIR) + "\"]\n");
  const std::string binary = std::string(NW_BINARY) + " --config " + dir.file("c.toml");
  auto help = run(binary + " --help 2>&1");
  ASSERT_EQ(help.exit_code, 0) << help.output;
  auto listing = run(binary + " --list-plugins 2>/dev/null");
  ASSERT_EQ(listing.exit_code, 0) << listing.output;
  const auto described = descriptions(listing.output);
  const auto readme = readme_order();
  ASSERT_EQ(readme.size(), described.size()) << "README.md describes every plugin built, once";

  // The shared L7 capture has no switch of its own (the protocol plugins'
  // switches start it), but it has --tls: its group comes last, as it
  // starts after them.
  std::vector<std::string> order;
  for (const auto& name : readme) {
    ASSERT_TRUE(described.count(name)) << name;
    if (name != "l7") order.push_back(name);
  }
  ASSERT_EQ(order.size() + 1, readme.size()) << "README.md describes the l7 capture";
  order.push_back("l7");
  const auto groups = groups_of(help.output);
  ASSERT_EQ(groups.size(), order.size() + 1) << help.output;
  EXPECT_EQ(groups[0].heading, "Options:");
  EXPECT_TRUE(has_line_starting(groups[0], "  -h [ --help ]"));
  EXPECT_TRUE(has_line_starting(groups[0], "  -p [ --pid ] arg"));
  for (std::size_t i = 0; i < order.size(); ++i) {
    ASSERT_TRUE(described.count(order[i])) << order[i];
    EXPECT_EQ(groups[i + 1].heading, order[i] + " plugin (" + described.at(order[i]) + "):");
  }
  auto group = [&](const std::string& plugin) -> const Group& {
    return groups[std::find(order.begin(), order.end(), plugin) - order.begin() + 1];
  };
  // Letters next to the long names, and each flag under its own plugin only.
  EXPECT_TRUE(has_line_starting(group("tcp"), "  -x [ --extra ]"));
  EXPECT_TRUE(has_line_starting(group("tcp"), "  -t [ --layer-time ]"));
  EXPECT_TRUE(has_line_starting(group("tcp"), "  --layer-events"));
  EXPECT_TRUE(has_line_starting(group("drop"), "  -k [ --drop ]"));
  EXPECT_TRUE(has_line_starting(group("netfilter"), "  -n [ --netfilter ]"));
  EXPECT_TRUE(has_line_starting(group("nic"), "  --nic"));
  EXPECT_TRUE(has_line_starting(group("l7"), "  --tls"));
  EXPECT_FALSE(has_line_starting(group("l7"), "  --l7"));
  for (const auto& g : groups) {
    if (g.heading.rfind("tcp ", 0) == 0) continue;
    EXPECT_FALSE(has_line_starting(g, "  -x [ --extra ]")) << g.heading;
  }
  EXPECT_FALSE(has_line_starting(groups[0], "  -n [ --netfilter ]"));
}

}  // namespace
