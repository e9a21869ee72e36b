// Helpers shared by the unit and integration tests.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <variant>
#include <vector>

namespace nwtest {

struct CommandResult {
  int exit_code = -1;
  std::string output;  // stdout and stderr together
};

// Runs `command` with /bin/sh and returns its exit code and output.
CommandResult run(const std::string& command);

// A directory under /tmp removed (recursively) when the object dies.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

std::string read_file(const std::string& path);
void write_file(const std::string& path, const std::string& text);

// A small JSON value, enough to read netwatcher's JSON Lines.
struct Json {
  using Object = std::map<std::string, Json>;
  using Array = std::vector<Json>;
  std::variant<std::nullptr_t, bool, double, std::string, std::shared_ptr<Object>,
               std::shared_ptr<Array>>
      value;
  // The numeric text as written, so 64-bit integers survive exactly.
  std::string number_text;

  bool is_null() const { return std::holds_alternative<std::nullptr_t>(value); }
  const std::string& str() const { return std::get<std::string>(value); }
  std::uint64_t u64() const { return std::stoull(number_text); }
  double num() const { return std::get<double>(value); }
  bool boolean() const { return std::get<bool>(value); }
  const Object& obj() const { return *std::get<std::shared_ptr<Object>>(value); }
  const Json& operator[](const std::string& key) const;
  bool has(const std::string& key) const;
};

// Throws std::runtime_error with the offset on malformed input.
Json parse_json(const std::string& text);
// One Json per non-empty line.
std::vector<Json> parse_json_lines(const std::string& text);

// A strict reader of the Prometheus text exposition format 0.0.4. Returns the
// samples, or throws std::runtime_error naming the line and the problem.
struct PromSample {
  std::string name;
  std::map<std::string, std::string> labels;
  double value = 0;
};
struct PromFamily {
  std::string type;
  std::string help;
};
struct PromText {
  std::map<std::string, PromFamily> families;
  std::vector<PromSample> samples;
  // Value of the sample with exactly these labels, or nullopt.
  std::optional<double> value(const std::string& name,
                              const std::map<std::string, std::string>& labels = {}) const;
};
PromText parse_prometheus(const std::string& text);

// True when the tests are running as root.
bool is_root();
// True when CI=true: integration tests must not skip then.
bool in_ci();

}  // namespace nwtest
