// The states a component of the host goes through, and what it reports about
// itself in /api/status and /readyz.
#pragma once

#include "runtime/asio.hpp"

#include <boost/json.hpp>

#include <chrono>
#include <deque>
#include <string_view>
#include <optional>
#include <string>

namespace mooring::app {

enum class ComponentState { stopped, starting, running, stopping, failed };

const char* to_string(ComponentState state);

struct ComponentStatus {
  std::string name;
  ComponentState state = ComponentState::stopped;
  std::string last_error;
  std::optional<std::chrono::system_clock::time_point> next_retry;
  std::string listen;           // the bound address, for listeners
  std::uint64_t start_attempts = 0;
  // The latest events of this component, oldest first ("... bind failed: ...",
  // "... listening on ..."), at most max_history of them.
  std::deque<std::string> history;
  static constexpr std::size_t max_history = 16;

  void remember(std::string_view event);
  boost::json::object to_json() const;
};

std::string format_time(std::chrono::system_clock::time_point t);  // RFC 3339, UTC

}  // namespace mooring::app
