#include "libbpf_log.hpp"

#include <bpf/libbpf.h>

#include <cstdarg>
#include <cstdio>
#include <mutex>
#include <regex>
#include <string>
#include <utility>
#include <vector>

#include <spdlog/spdlog.h>

namespace netwatcher::host {

namespace {

std::mutex failed_mutex;
std::string failed_program;
bool holding = false;
std::vector<std::string> held;

int print(enum libbpf_print_level level, const char* format, va_list args) {
  char buf[2048];
  int n = std::vsnprintf(buf, sizeof buf, format, args);
  std::string line(buf, n > 0 ? std::min<std::size_t>(n, sizeof buf - 1) : 0);
  while (!line.empty() && line.back() == '\n') line.pop_back();
  static const std::regex failed(R"(prog '([^']+)': (failed to load|BPF program load failed))");
  std::smatch match;
  if (std::regex_search(line, match, failed)) {
    std::lock_guard lock(failed_mutex);
    failed_program = match[1];
  }
  switch (level) {
    case LIBBPF_WARN: {
      std::unique_lock lock(failed_mutex);
      if (holding) {
        held.push_back(line);
        lock.unlock();
        spdlog::debug("libbpf: {}", line);
        break;
      }
      lock.unlock();
      spdlog::warn("libbpf: {}", line);
      break;
    }
    case LIBBPF_INFO:
      spdlog::debug("libbpf: {}", line);
      break;
    default:
      spdlog::trace("libbpf: {}", line);
      break;
  }
  return n;
}

}  // namespace

void route_libbpf_log() {
  libbpf_set_print(print);
}

void hold_libbpf_warnings(bool hold) {
  std::lock_guard lock(failed_mutex);
  holding = hold;
}

std::vector<std::string> take_held_libbpf_warnings() {
  std::lock_guard lock(failed_mutex);
  return std::exchange(held, {});
}

std::string verifier_reason(const std::vector<std::string>& warnings, const std::string& program) {
  const std::string begin = "prog '" + program + "': -- BEGIN PROG LOAD LOG --";
  for (const auto& warning : warnings) {
    auto at = warning.find(begin);
    if (at == std::string::npos) continue;
    // The verifier's verdict is its last line before the statistics.
    std::string reason;
    std::size_t start = warning.find('\n', at);
    while (start != std::string::npos) {
      std::size_t end = warning.find('\n', start + 1);
      std::string line =
          warning.substr(start + 1, end == std::string::npos ? end : end - start - 1);
      if (line.rfind("processed ", 0) == 0 || line.rfind("-- END PROG LOAD LOG", 0) == 0) break;
      if (!line.empty()) reason = line;
      start = end;
    }
    return reason;
  }
  return {};
}

std::string take_failed_program() {
  std::lock_guard lock(failed_mutex);
  return std::exchange(failed_program, {});
}

}  // namespace netwatcher::host
