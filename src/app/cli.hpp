// The command line: serve, check-config, print-default-config, --version.
#pragma once

namespace mooring::app {

// Returns the process exit code: 0 success, 2 invalid configuration or usage,
// 1 any other failure.
int run_cli(int argc, char** argv);

}  // namespace mooring::app
