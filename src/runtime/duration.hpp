// Durations as written in the configuration and in logs: "250ms", "5s", "10m", "1h".
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <string_view>

namespace mooring::runtime {

using Duration = std::chrono::milliseconds;

// Accepts a non-negative integer followed by one unit: ms, s, m, h
// ("0ms", "250ms", "5s", "10m", "1h"). Anything else ("soon", "5", "-1s",
// "1.5s", "5 s") is nullopt.
std::optional<Duration> parse_duration(std::string_view text);

// The shortest exact spelling that parse_duration accepts back: 1500ms -> "1500ms",
// 5000ms -> "5s", 600000ms -> "10m".
std::string format_duration(Duration d);

}  // namespace mooring::runtime
