// Logging for people: one line per event, written through spdlog. Any value a
// client or an upstream controls goes through elide(), which shortens it to
// `log.max_field_bytes` with a marker saying how much was left out and escapes
// line breaks, so a base64 image or a multi-line body never floods a terminal.
#pragma once

#include <spdlog/spdlog.h>

#include <functional>
#include <string>
#include <string_view>

namespace mooring::runtime {

// Sets up the process logger (stderr, "2026-11-23 08:34:32.123 info  message").
void init_logging();

// Accepts trace, debug, info, warn, error, critical, off; false for anything else.
bool set_log_level(std::string_view level);

void set_max_field_bytes(std::size_t bytes);
std::size_t max_field_bytes();

// `text` cut at a UTF-8 boundary to at most `max_bytes` bytes, followed by
// "…[+N bytes]" when something was left out; control characters are escaped.
std::string shorten(std::string_view text, std::size_t max_bytes);

// Whether `text` is UTF-8 throughout (no overlong form, no surrogate).
bool is_utf8(std::string_view text);

// A value to be shortened with the current max_field_bytes when formatted.
struct Elided {
  std::string_view text;
};
inline Elided elide(std::string_view text) { return Elided{text}; }

// Every formatted log line is also handed to these observers (the admin events
// stream). Observers run on the logging thread, which in mooring is the network
// thread; they must not log themselves. Returns an id for remove_log_observer.
using LogObserver = std::function<void(spdlog::level::level_enum, std::string_view line)>;
int add_log_observer(LogObserver observer);
void remove_log_observer(int id);

}  // namespace mooring::runtime

template <>
struct fmt::formatter<mooring::runtime::Elided> : fmt::formatter<std::string_view> {
  template <typename FormatContext>
  auto format(const mooring::runtime::Elided& e, FormatContext& ctx) const {
    return fmt::formatter<std::string_view>::format(
        mooring::runtime::shorten(e.text, mooring::runtime::max_field_bytes()), ctx);
  }
};

namespace mooring::log {
using runtime::elide;
using spdlog::debug;
using spdlog::error;
using spdlog::info;
using spdlog::trace;
using spdlog::warn;
}  // namespace mooring::log

namespace mooring {
using runtime::elide;
}
