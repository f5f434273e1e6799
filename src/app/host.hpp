// The running host: builds the components from a configuration, starts them in
// dependency order, and carries out the shutdown plan of DESIGN.md when asked:
// (1) readiness false and every listener closed; (2) no new upstream work;
// in-flight work may finish until shutdown.drain_timeout; (3) then every task is
// cancelled and every socket force-closed; (4) storage closed; (5) one summary
// line. A second SIGINT/SIGTERM skips to (3) at once.
#pragma once

#include "app/config.hpp"

#include <functional>
#include <string>

namespace mooring::app {

struct HostOptions {
  std::string config_path;  // empty: built-in defaults
  std::string config_text;  // the text `config` was parsed from
  std::string ready_file;   // empty: none
  // Removes a ready file left at ready_file by an earlier run, called once
  // this run owns its data directory (set by run_host).
  std::function<void()> forget_ready_file;
};

// Runs until shut down; returns the process exit code.
int run_host(ConfigPtr config, const HostOptions& options);

}  // namespace mooring::app
