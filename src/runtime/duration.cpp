#include "runtime/duration.hpp"

#include <cstdint>
#include <limits>

namespace mooring::runtime {
namespace {

struct Unit {
  std::string_view suffix;
  std::int64_t millis;
};

// Largest first, so format_duration picks the shortest exact spelling.
constexpr Unit units[] = {{"h", 3'600'000}, {"m", 60'000}, {"s", 1'000}, {"ms", 1}};

}  // namespace

std::optional<Duration> parse_duration(std::string_view text) {
  std::size_t digits = 0;
  while (digits < text.size() && text[digits] >= '0' && text[digits] <= '9') ++digits;
  if (digits == 0) return std::nullopt;

  const std::string_view suffix = text.substr(digits);
  const Unit* unit = nullptr;
  for (const auto& candidate : units) {
    if (candidate.suffix == suffix) unit = &candidate;
  }
  if (unit == nullptr) return std::nullopt;

  // A number that does not fit in milliseconds is refused rather than wrapped:
  // a wrapped "huge" timeout would silently become a tiny or negative one.
  constexpr std::int64_t max = std::numeric_limits<Duration::rep>::max();
  std::int64_t count = 0;
  for (char c : text.substr(0, digits)) {
    const int digit = c - '0';
    if (count > (max - digit) / 10) return std::nullopt;
    count = count * 10 + digit;
  }
  if (count > max / unit->millis) return std::nullopt;
  return Duration(count * unit->millis);
}

std::string format_duration(Duration d) {
  const auto ms = d.count();
  if (ms == 0) return "0ms";
  // Negative durations (an overdue deadline's remaining time) cannot be parsed
  // back, but still read naturally in a log line. Work on the magnitude as
  // unsigned so that the smallest value does not overflow on negation.
  const bool negative = ms < 0;
  const std::uint64_t magnitude =
      negative ? std::uint64_t{0} - static_cast<std::uint64_t>(ms) : static_cast<std::uint64_t>(ms);
  for (const auto& unit : units) {
    const auto factor = static_cast<std::uint64_t>(unit.millis);
    if (magnitude % factor == 0) {
      return (negative ? "-" : "") + std::to_string(magnitude / factor) + std::string(unit.suffix);
    }
  }
  return {};  // unreachable: every count is a multiple of 1ms
}

}  // namespace mooring::runtime
