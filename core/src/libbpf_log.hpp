// Routes libbpf's log through spdlog and remembers which program failed to load.
#pragma once

#include <string>
#include <vector>

namespace netwatcher::host {

void route_libbpf_log();
// Name of the last program libbpf reported as failing to load, then cleared.
std::string take_failed_program();
// While held, libbpf's warnings go to the debug log (-v) and are kept, so a
// refused candidate that has a successor costs one info line, not a screen of
// warnings; whoever holds them prints them if nothing served instead.
void hold_libbpf_warnings(bool hold);
std::vector<std::string> take_held_libbpf_warnings();
// The verifier's verdict on `program` in held warnings ("R0 invalid mem
// access 'scalar'"), or "" when libbpf printed no load log for it.
std::string verifier_reason(const std::vector<std::string>& warnings, const std::string& program);

}  // namespace netwatcher::host
