#include "runtime/log_limiter.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>

namespace mooring::runtime {

namespace {

const std::string other_kinds = "(other kinds)";

// "10 s", "1.5 s", "250 ms": how long the summary looked back.
std::string describe_window(LogLimiter::Clock::duration window) {
  using namespace std::chrono;
  const auto ms = duration_cast<milliseconds>(window).count();
  if (ms < 1000) return fmt::format("{} ms", ms);
  if (ms % 1000 == 0) return fmt::format("{} s", ms / 1000);
  return fmt::format("{:.1f} s", static_cast<double>(ms) / 1000.0);
}

}  // namespace

std::string group_thousands(std::uint64_t n) {
  std::string digits = std::to_string(n);
  std::string out;
  out.reserve(digits.size() + digits.size() / 3);
  for (std::size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return out;
}

LogLimiter::LogLimiter() : LogLimiter(Options{}) {}

LogLimiter::LogLimiter(Options options, Sink sink) : options_(options), sink_(std::move(sink)) {
  if (!sink_)
    sink_ = [](spdlog::level::level_enum level, std::string_view line) {
      spdlog::log(level, "{}", line);
    };
}

const std::string& LogLimiter::bucket(std::string_view kind) {
  if (auto found = storms_.find(kind); found != storms_.end()) return found->first;
  if (storms_.size() + 1 < options_.max_kinds) return storms_.emplace(kind, Storm{}).first->first;
  return storms_.emplace(other_kinds, Storm{}).first->first;
}

void LogLimiter::log(spdlog::level::level_enum level, std::string_view kind,
                     std::string_view line, Clock::time_point now) {
  auto& storm = storms_.find(bucket(kind))->second;
  // A window that ended without a flush() is closed here the way flush() would.
  if (storm.open && now - storm.window_start >= options_.window) {
    if (storm.repeats == 0) {
      storm.open = false;
    } else {
      summarise(storm, now);
    }
  }
  storm.level = level;
  storm.last_line.assign(line);
  if (!storm.open) {
    storm.open = true;
    storm.window_start = now;
    storm.repeats = 0;
    sink_(level, line);
    return;
  }
  ++storm.repeats;
}

void LogLimiter::summarise(Storm& storm, Clock::time_point now) {
  sink_(storm.level, fmt::format("{} … {} more in the last {}", storm.last_line,
                                 group_thousands(storm.repeats),
                                 describe_window(now - storm.window_start)));
  storm.repeats = 0;
  storm.window_start = now;
}

std::optional<LogLimiter::Clock::time_point> LogLimiter::flush(Clock::time_point now) {
  std::optional<Clock::time_point> next;
  for (auto it = storms_.begin(); it != storms_.end();) {
    auto& storm = it->second;
    if (now - storm.window_start >= options_.window) {
      if (storm.repeats == 0) {
        it = storms_.erase(it);
        continue;
      }
      summarise(storm, now);
    }
    const auto due = storm.window_start + options_.window;
    next = next ? std::min(*next, due) : due;
    ++it;
  }
  return next;
}

void LogLimiter::settle(std::string_view kind, Clock::time_point now) {
  auto found = storms_.find(kind);
  if (found == storms_.end()) return;
  if (found->second.repeats > 0) summarise(found->second, now);
  storms_.erase(found);
}

void LogLimiter::settle_all(Clock::time_point now) {
  for (auto& [kind, storm] : storms_)
    if (storm.repeats > 0) summarise(storm, now);
  storms_.clear();
}

bool LogLimiter::writes_next(std::string_view kind, Clock::time_point now) const {
  auto found = storms_.find(kind);
  if (found == storms_.end()) {
    if (storms_.size() + 1 < options_.max_kinds) return true;
    found = storms_.find(other_kinds);
    if (found == storms_.end()) return true;
  }
  const auto& storm = found->second;
  // An ended window with repeats is summarised and goes on counting (log()).
  return !storm.open || (now - storm.window_start >= options_.window && storm.repeats == 0);
}

std::uint64_t LogLimiter::pending(std::string_view kind) const {
  auto found = storms_.find(kind);
  return found == storms_.end() ? 0 : found->second.repeats;
}

}  // namespace mooring::runtime
