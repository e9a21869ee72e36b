#include "test_support.hpp"

#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>
#include <stdexcept>

namespace nwtest {

CommandResult run(const std::string& command) {
  CommandResult result;
  std::string full = command + " 2>&1";
  FILE* pipe = popen(full.c_str(), "r");
  if (!pipe) return result;
  char buf[4096];
  std::size_t n;
  while ((n = fread(buf, 1, sizeof buf, pipe)) > 0) result.output.append(buf, n);
  int status = pclose(pipe);
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return result;
}

TempDir::TempDir() {
  char pattern[] = "/tmp/netwatcher-test-XXXXXX";
  if (!mkdtemp(pattern)) throw std::runtime_error("mkdtemp failed");
  path_ = pattern;
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void write_file(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
}

const Json& Json::operator[](const std::string& key) const {
  auto it = obj().find(key);
  if (it == obj().end()) throw std::runtime_error("JSON object has no key '" + key + "'");
  return it->second;
}

bool Json::has(const std::string& key) const {
  return obj().count(key) != 0;
}

namespace {

class JsonParser {
 public:
  explicit JsonParser(const std::string& text) : s_(text) {}

  Json parse_document() {
    Json v = parse_value();
    skip_ws();
    if (i_ != s_.size()) fail("trailing characters");
    return v;
  }

 private:
  [[noreturn]] void fail(const std::string& what) {
    throw std::runtime_error("JSON: " + what + " at offset " + std::to_string(i_) + " in: " + s_);
  }
  void skip_ws() {
    while (i_ < s_.size() && std::isspace(static_cast<unsigned char>(s_[i_]))) ++i_;
  }
  char peek() {
    skip_ws();
    if (i_ >= s_.size()) fail("unexpected end");
    return s_[i_];
  }
  void expect(char c) {
    if (peek() != c) fail(std::string("expected '") + c + "'");
    ++i_;
  }

  std::string parse_string() {
    expect('"');
    std::string out;
    while (true) {
      if (i_ >= s_.size()) fail("unterminated string");
      char c = s_[i_++];
      if (c == '"') break;
      if (static_cast<unsigned char>(c) < 0x20) fail("control character in string");
      if (c != '\\') {
        out += c;
        continue;
      }
      if (i_ >= s_.size()) fail("bad escape");
      char e = s_[i_++];
      switch (e) {
        case '"':
          out += '"';
          break;
        case '\\':
          out += '\\';
          break;
        case '/':
          out += '/';
          break;
        case 'b':
          out += '\b';
          break;
        case 'f':
          out += '\f';
          break;
        case 'n':
          out += '\n';
          break;
        case 'r':
          out += '\r';
          break;
        case 't':
          out += '\t';
          break;
        case 'u': {
          if (i_ + 4 > s_.size()) fail("bad \\u escape");
          unsigned cp = std::stoul(s_.substr(i_, 4), nullptr, 16);
          i_ += 4;
          if (cp < 0x80) {
            out += static_cast<char>(cp);
          } else if (cp < 0x800) {
            out += static_cast<char>(0xC0 | (cp >> 6));
            out += static_cast<char>(0x80 | (cp & 0x3F));
          } else {
            out += static_cast<char>(0xE0 | (cp >> 12));
            out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
            out += static_cast<char>(0x80 | (cp & 0x3F));
          }
          break;
        }
        default:
          fail("bad escape");
      }
    }
    return out;
  }

  Json parse_value() {
    Json v;
    char c = peek();
    if (c == '{') {
      ++i_;
      auto object = std::make_shared<Json::Object>();
      if (peek() == '}') {
        ++i_;
      } else {
        while (true) {
          std::string key = parse_string();
          expect(':');
          (*object)[key] = parse_value();
          if (peek() == ',') {
            ++i_;
            continue;
          }
          expect('}');
          break;
        }
      }
      v.value = object;
    } else if (c == '[') {
      ++i_;
      auto array = std::make_shared<Json::Array>();
      if (peek() == ']') {
        ++i_;
      } else {
        while (true) {
          array->push_back(parse_value());
          if (peek() == ',') {
            ++i_;
            continue;
          }
          expect(']');
          break;
        }
      }
      v.value = array;
    } else if (c == '"') {
      v.value = parse_string();
    } else if (s_.compare(i_, 4, "true") == 0) {
      i_ += 4;
      v.value = true;
    } else if (s_.compare(i_, 5, "false") == 0) {
      i_ += 5;
      v.value = false;
    } else if (s_.compare(i_, 4, "null") == 0) {
      i_ += 4;
      v.value = nullptr;
    } else {
      std::size_t start = i_;
      while (i_ < s_.size() && std::strchr("+-0123456789.eE", s_[i_])) ++i_;
      if (start == i_) fail("unexpected character");
      v.number_text = s_.substr(start, i_ - start);
      v.value = std::stod(v.number_text);
    }
    return v;
  }

  const std::string& s_;
  std::size_t i_ = 0;
};

}  // namespace

Json parse_json(const std::string& text) {
  return JsonParser(text).parse_document();
}

std::vector<Json> parse_json_lines(const std::string& text) {
  std::vector<Json> out;
  std::stringstream in(text);
  std::string line;
  while (std::getline(in, line))
    if (!line.empty()) out.push_back(parse_json(line));
  return out;
}

std::optional<double> PromText::value(const std::string& name,
                                      const std::map<std::string, std::string>& labels) const {
  for (const auto& s : samples)
    if (s.name == name && s.labels == labels) return s.value;
  return std::nullopt;
}

PromText parse_prometheus(const std::string& text) {
  static const std::regex metric_name("[a-zA-Z_:][a-zA-Z0-9_:]*");
  static const std::regex label_name("[a-zA-Z_][a-zA-Z0-9_]*");
  PromText out;
  std::set<std::string> seen_series;
  std::stringstream in(text);
  std::string line;
  int number = 0;
  auto fail = [&](const std::string& what) {
    throw std::runtime_error("Prometheus text line " + std::to_string(number) + ": " + what + ": " +
                             line);
  };
  auto family_of = [&](const std::string& sample) -> std::string {
    if (out.families.count(sample)) return sample;
    for (const char* suffix : {"_bucket", "_sum", "_count"}) {
      std::string s(suffix);
      if (sample.size() > s.size() && sample.compare(sample.size() - s.size(), s.size(), s) == 0) {
        std::string base = sample.substr(0, sample.size() - s.size());
        if (out.families.count(base) && out.families[base].type == "histogram") return base;
      }
    }
    return "";
  };
  while (std::getline(in, line)) {
    ++number;
    if (line.empty()) continue;
    if (line[0] == '#') {
      std::stringstream words(line);
      std::string hash, kind, name;
      words >> hash >> kind >> name;
      if (kind != "HELP" && kind != "TYPE") continue;
      if (!std::regex_match(name, metric_name)) fail("bad metric name");
      std::string rest;
      std::getline(words, rest);
      if (!rest.empty() && rest[0] == ' ') rest.erase(0, 1);
      if (kind == "TYPE") {
        static const std::set<std::string> types = {"counter", "gauge", "histogram", "summary",
                                                    "untyped"};
        if (!types.count(rest)) fail("unknown type");
        if (!out.families[name].type.empty()) fail("second TYPE for the family");
        out.families[name].type = rest;
        if (rest == "counter" && name.size() > 6 && name.compare(name.size() - 6, 6, "_total") != 0)
          fail("counter name without _total");
      } else {
        out.families[name].help = rest;
      }
      continue;
    }
    PromSample sample;
    std::size_t i = 0;
    while (i < line.size() && line[i] != '{' && line[i] != ' ') ++i;
    sample.name = line.substr(0, i);
    if (!std::regex_match(sample.name, metric_name)) fail("bad sample name");
    if (family_of(sample.name).empty()) fail("sample before its TYPE line");
    if (i < line.size() && line[i] == '{') {
      ++i;
      while (i < line.size() && line[i] != '}') {
        std::size_t eq = line.find('=', i);
        if (eq == std::string::npos) fail("label without '='");
        std::string label = line.substr(i, eq - i);
        if (!std::regex_match(label, label_name)) fail("bad label name '" + label + "'");
        i = eq + 1;
        if (i >= line.size() || line[i] != '"') fail("label value not quoted");
        ++i;
        std::string value;
        while (true) {
          if (i >= line.size()) fail("unterminated label value");
          char c = line[i++];
          if (c == '"') break;
          if (c == '\\') {
            if (i >= line.size()) fail("bad escape");
            char e = line[i++];
            if (e == 'n')
              value += '\n';
            else if (e == '\\')
              value += '\\';
            else if (e == '"')
              value += '"';
            else
              fail("bad escape in label value");
          } else {
            value += c;
          }
        }
        if (sample.labels.count(label)) fail("duplicate label");
        sample.labels[label] = value;
        if (i < line.size() && line[i] == ',') ++i;
      }
      if (i >= line.size()) fail("unterminated label set");
      ++i;
    }
    if (i >= line.size() || line[i] != ' ') fail("missing value");
    std::string rest = line.substr(i + 1);
    std::string value_text = rest.substr(0, rest.find(' '));
    if (value_text == "+Inf")
      sample.value = INFINITY;
    else if (value_text == "-Inf")
      sample.value = -INFINITY;
    else if (value_text == "NaN")
      sample.value = NAN;
    else {
      std::size_t used = 0;
      try {
        sample.value = std::stod(value_text, &used);
      } catch (...) {
        fail("bad value");
      }
      if (used != value_text.size()) fail("bad value");
    }
    std::string key = sample.name;
    for (const auto& [k, v] : sample.labels) key += "|" + k + "=" + v;
    if (!seen_series.insert(key).second) fail("duplicate series");
    out.samples.push_back(sample);
  }
  return out;
}

bool is_root() {
  return geteuid() == 0;
}

bool in_ci() {
  const char* ci = std::getenv("CI");
  return ci && std::string(ci) == "true";
}

}  // namespace nwtest
