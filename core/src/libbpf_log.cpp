#include "libbpf_log.hpp"

#include <bpf/libbpf.h>

#include <cstdarg>
#include <cstdio>
#include <mutex>
#include <regex>

#include <spdlog/spdlog.h>

namespace netwatcher::host {

namespace {

std::mutex failed_mutex;
std::string failed_program;

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
    case LIBBPF_WARN:
      spdlog::warn("libbpf: {}", line);
      break;
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

std::string take_failed_program() {
  std::lock_guard lock(failed_mutex);
  return std::exchange(failed_program, {});
}

}  // namespace netwatcher::host
