#include "app/component.hpp"

#include <fmt/chrono.h>

namespace mooring::app {

const char* to_string(ComponentState state) {
  switch (state) {
    case ComponentState::stopped: return "stopped";
    case ComponentState::starting: return "starting";
    case ComponentState::running: return "running";
    case ComponentState::degraded: return "degraded";
    case ComponentState::stopping: return "stopping";
    case ComponentState::failed: return "failed";
  }
  return "unknown";
}

std::string format_time(std::chrono::system_clock::time_point t) {
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch());
  const auto seconds = std::chrono::system_clock::time_point(
      std::chrono::duration_cast<std::chrono::seconds>(ms));
  return fmt::format("{:%Y-%m-%dT%H:%M:%S}.{:03}Z", fmt::gmtime(std::chrono::system_clock::to_time_t(seconds)),
                     ms.count() % 1000);
}

void ComponentStatus::remember(std::string_view event) {
  history.push_back(format_time(std::chrono::system_clock::now()) + " " + std::string(event));
  while (history.size() > max_history) history.pop_front();
}

boost::json::object ComponentStatus::to_json() const {
  boost::json::object out{{"name", name}, {"state", to_string(state)}};
  out["last_error"] = last_error.empty() ? boost::json::value(nullptr) : boost::json::value(last_error);
  out["next_retry"] = next_retry ? boost::json::value(format_time(*next_retry)) : boost::json::value(nullptr);
  out["listen"] = listen.empty() ? boost::json::value(nullptr) : boost::json::value(listen);
  out["start_attempts"] = start_attempts;
  boost::json::array events;
  for (const auto& event : history) events.emplace_back(event);
  out["history"] = std::move(events);
  return out;
}

}  // namespace mooring::app
