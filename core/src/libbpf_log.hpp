// Routes libbpf's log through spdlog and remembers which program failed to load.
#pragma once

#include <string>

namespace netwatcher::host {

void route_libbpf_log();
// Name of the last program libbpf reported as failing to load, then cleared.
std::string take_failed_program();

}  // namespace netwatcher::host
