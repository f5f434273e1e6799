// Keeps a storm of the same failure to a few log lines. The first occurrence of
// a kind is logged in full; repeats within the window that follows are counted,
// and once per window one line summarises them ("… 4,211 more in the last 10 s").
// A kind quiet for a whole window is forgotten: its next occurrence is logged in
// full again. Not thread-safe: one owner thread logs through it.
#pragma once

#include <spdlog/common.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>

namespace mooring::runtime {

class LogLimiter {
 public:
  using Clock = std::chrono::steady_clock;
  // Where lines go: spdlog's default logger unless a test captures them.
  using Sink = std::function<void(spdlog::level::level_enum, std::string_view line)>;

  struct Options {
    Clock::duration window = std::chrono::seconds(10);
    // Kinds are meant to be a small fixed set ("write failed: disk full"); any
    // beyond this many (counting that bucket) share one bucket, so a caller that puts a variable in a
    // kind cannot grow the limiter without bound.
    std::size_t max_kinds = 64;
  };

  LogLimiter();
  explicit LogLimiter(Options options, Sink sink = {});

  // Logs `line` when it is the first of `kind` in its window, else counts it.
  void log(spdlog::level::level_enum level, std::string_view kind, std::string_view line,
           Clock::time_point now = Clock::now());

  // Writes the summary of every kind whose window has ended with repeats, and
  // forgets the kinds that stayed quiet. Returns when the next summary may be
  // due, for a caller that wakes itself to call flush() again.
  std::optional<Clock::time_point> flush(Clock::time_point now = Clock::now());

  // Ends `kind`'s storm now (the fault is gone): its pending summary, if any, is
  // written at once, and its next occurrence is logged in full.
  void settle(std::string_view kind, Clock::time_point now = Clock::now());

  // settle() for every kind.
  void settle_all(Clock::time_point now = Clock::now());

  // Whether the next occurrence of `kind` would be written in full (no
  // window of it runs), not counted.
  bool writes_next(std::string_view kind, Clock::time_point now = Clock::now()) const;

  // Occurrences of `kind` counted but not yet summarised.
  std::uint64_t pending(std::string_view kind) const;

 private:
  struct Storm {
    bool open = false;  // a window runs: occurrences are counted, not logged
    Clock::time_point window_start;
    std::uint64_t repeats = 0;
    spdlog::level::level_enum level = spdlog::level::err;
    std::string last_line;
  };

  void summarise(Storm& storm, Clock::time_point now);
  const std::string& bucket(std::string_view kind);

  Options options_;
  Sink sink_;
  std::map<std::string, Storm, std::less<>> storms_;
};

// 4211 -> "4,211": counts in summaries are read at a glance.
std::string group_thousands(std::uint64_t n);

}  // namespace mooring::runtime
