// The netwatcher command: CLI parsing, start-up, main loop, shutdown.
#pragma once

namespace netwatcher::host {

// Returns the process exit code.
int run_netwatcher(int argc, char** argv);

}  // namespace netwatcher::host
