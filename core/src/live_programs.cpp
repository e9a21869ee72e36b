#include "live_programs.hpp"

#include <bpf/bpf.h>
#include <bpf/btf.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <set>
#include <string>

namespace netwatcher::host {

namespace {

std::string read_first_line(const std::filesystem::path& path) {
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);
  return line;
}

// The program's function name from its BTF: bpf_prog_info::name stops at 15
// characters, and several of netwatcher's programs share their first 15.
std::string full_name(int fd, const bpf_prog_info& basic) {
  std::string name = basic.name;
  if (!basic.btf_id || !basic.nr_func_info) return name;
  bpf_func_info func{};
  bpf_prog_info info{};
  info.nr_func_info = 1;
  info.func_info_rec_size = sizeof func;
  info.func_info = reinterpret_cast<std::uint64_t>(&func);
  __u32 length = sizeof info;
  if (bpf_obj_get_info_by_fd(fd, &info, &length) != 0) return name;
  btf* types = btf__load_from_kernel_by_id(basic.btf_id);
  if (!types) return name;
  if (const btf_type* type = btf__type_by_id(types, func.type_id))
    if (const char* found = btf__name_by_offset(types, type->name_off); found && *found)
      name = found;
  btf__free(types);
  return name;
}

}  // namespace

std::vector<LiveProgram> live_netwatcher_programs() {
  std::vector<LiveProgram> programs;
  std::set<std::uint32_t> seen;
  std::error_code ec;
  const int self = static_cast<int>(getpid());
  for (const auto& entry : std::filesystem::directory_iterator("/proc", ec)) {
    const std::string pid_text = entry.path().filename().string();
    if (pid_text.find_first_not_of("0123456789") != std::string::npos) continue;
    const int pid = std::stoi(pid_text);
    if (pid == self || read_first_line(entry.path() / "comm") != "netwatcher") continue;
    std::error_code fd_ec;
    for (const auto& fd : std::filesystem::directory_iterator(entry.path() / "fdinfo", fd_ec)) {
      std::ifstream in(fd.path());
      std::string line;
      while (std::getline(in, line)) {
        if (line.rfind("prog_id:", 0) != 0) continue;
        const auto id = static_cast<std::uint32_t>(std::stoul(line.substr(8)));
        if (!seen.insert(id).second) break;
        int prog_fd = bpf_prog_get_fd_by_id(id);
        if (prog_fd < 0) break;
        bpf_prog_info info{};
        __u32 length = sizeof info;
        if (bpf_obj_get_info_by_fd(prog_fd, &info, &length) == 0)
          programs.push_back({id, pid, full_name(prog_fd, info), program_tag(info.tag),
                              info.run_cnt, info.run_time_ns});
        close(prog_fd);
        break;
      }
    }
  }
  return programs;
}

std::string program_tag(const unsigned char (&tag)[8]) {
  static const char digits[] = "0123456789abcdef";
  std::string out;
  for (unsigned char byte : tag) {
    out += digits[byte >> 4];
    out += digits[byte & 15];
  }
  return out;
}

std::string describe_live(const LiveProgram& program) {
  if (!program.runs)
    return "loaded by pid " + std::to_string(program.pid) +
           ", 0 runs counted (no traffic while statistics were on, or bpf_stats = \"off\" there)";
  return "running in pid " + std::to_string(program.pid) + ": " + std::to_string(program.runs) +
         " runs, " + std::to_string(program.run_time_ns / program.runs) + " ns/run";
}

}  // namespace netwatcher::host
