// BPF programs loaded by other running netwatcher processes, so --check and
// --list-plugins can show what the running agent's programs cost.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace netwatcher::host {

struct LiveProgram {
  std::uint32_t id = 0;
  int pid = 0;             // a netwatcher process holding the program
  std::string name;        // full function name (from the program's BTF)
  std::string tag;         // hex instruction hash
  std::uint64_t runs = 0;  // 0 while BPF statistics are off
  std::uint64_t run_time_ns = 0;
};

// Scans /proc for processes named netwatcher (other than this one) and reads
// the programs behind their BPF fds. Needs root; returns what it could read.
std::vector<LiveProgram> live_netwatcher_programs();

// bpf_prog_info::tag as bpftool prints it.
std::string program_tag(const unsigned char (&tag)[8]);

// "running in pid 77: 1234 runs, 180 ns/run", or why there are no runs.
std::string describe_live(const LiveProgram& program);

}  // namespace netwatcher::host
