// For fuzz targets that run the network code: SIGPIPE ignored (a peer may
// close first), and every log line formatted (elide() runs) but written nowhere.
#pragma once

#include <spdlog/sinks/null_sink.h>
#include <spdlog/spdlog.h>

#include <csignal>
#include <memory>

namespace mooring::fuzz {

inline void quiet_process() {
  std::signal(SIGPIPE, SIG_IGN);
  auto quiet = std::make_shared<spdlog::logger>("fuzz", std::make_shared<spdlog::sinks::null_sink_mt>());
  quiet->set_level(spdlog::level::trace);
  spdlog::set_default_logger(quiet);
}

}  // namespace mooring::fuzz
