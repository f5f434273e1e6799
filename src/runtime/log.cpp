#include "runtime/log.hpp"

#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/base_sink.h>
#include <spdlog/sinks/stdout_sinks.h>

#include <atomic>
#include <map>
#include <mutex>

namespace mooring::runtime {
namespace {

std::atomic<std::size_t> g_max_field_bytes{512};

// Forwards each formatted line to the registered observers. spdlog's base_sink
// takes its own mutex around sink_it_, so the map needs no further locking
// against logging; registration takes the same mutex through the sink.
class ObserverSink : public spdlog::sinks::base_sink<std::mutex> {
 public:
  int add(LogObserver observer) {
    std::lock_guard lock(mutex_);
    observers_.emplace(next_id_, std::move(observer));
    return next_id_++;
  }
  void remove(int id) {
    std::lock_guard lock(mutex_);
    observers_.erase(id);
  }

 protected:
  void sink_it_(const spdlog::details::log_msg& msg) override {
    if (observers_.empty()) return;
    spdlog::memory_buf_t formatted;
    formatter_->format(msg, formatted);
    std::string_view line(formatted.data(), formatted.size());
    while (!line.empty() && (line.back() == '\n' || line.back() == '\r')) line.remove_suffix(1);
    for (auto& [id, observer] : observers_) observer(msg.level, line);
  }
  void flush_() override {}

 private:
  std::map<int, LogObserver> observers_;
  int next_id_ = 1;
};

std::shared_ptr<ObserverSink>& observer_sink() {
  static auto sink = std::make_shared<ObserverSink>();
  return sink;
}

constexpr const char* line_pattern = "%Y-%m-%d %H:%M:%S.%e %-5l %v";
// Far above any line mooring writes itself (its fields are elided to
// max_field_bytes): only a value that reached a log call whole is cut.
constexpr std::size_t max_line_bytes = 16 * 1024;

bool is_control(char c) { return static_cast<unsigned char>(c) < 0x20 || c == 0x7f; }

// The length of the UTF-8 character at `at`, or 0 when the bytes there are
// none (a stray continuation, an overlong form, a surrogate, a cut sequence).
std::size_t utf8_sequence(std::string_view text, std::size_t at) {
  const auto byte = [&](std::size_t i) { return static_cast<unsigned char>(text[i]); };
  const unsigned char lead = byte(at);
  if (lead < 0x80) return 1;
  std::size_t length = 0;
  unsigned char low = 0x80;  // the bounds of the second byte (Unicode, table 3-7)
  unsigned char high = 0xBF;
  if (lead >= 0xC2 && lead <= 0xDF) {
    length = 2;
  } else if (lead >= 0xE0 && lead <= 0xEF) {
    length = 3;
    if (lead == 0xE0) low = 0xA0;   // no overlong form
    if (lead == 0xED) high = 0x9F;  // no surrogate
  } else if (lead >= 0xF0 && lead <= 0xF4) {
    length = 4;
    if (lead == 0xF0) low = 0x90;
    if (lead == 0xF4) high = 0x8F;  // nothing past U+10FFFF
  } else {
    return 0;
  }
  if (at + length > text.size()) return 0;
  if (byte(at + 1) < low || byte(at + 1) > high) return 0;
  for (std::size_t i = 2; i < length; ++i)
    if ((byte(at + i) & 0xC0) != 0x80) return 0;
  return length;
}

// What shorten() would change: a control character or a byte of no UTF-8
// character.
bool needs_escaping(std::string_view text) {
  for (std::size_t at = 0; at < text.size();) {
    if (is_control(text[at])) return true;
    const auto length = utf8_sequence(text, at);
    if (length == 0) return true;
    at += length;
  }
  return false;
}

// Every event is one line of UTF-8 whatever its values hold: a message with
// a line break, another control character or a byte of no UTF-8 character
// is escaped, and one past
// max_line_bytes is cut, as elide() does to a field. A value a peer controls
// that reached a log call without elide() can then neither forge a line nor
// flood the terminal.
class OneLineFormatter final : public spdlog::formatter {
 public:
  OneLineFormatter() : pattern_(std::make_unique<spdlog::pattern_formatter>(line_pattern)) {}

  void format(const spdlog::details::log_msg& msg, spdlog::memory_buf_t& dest) override {
    const std::string_view text(msg.payload.data(), msg.payload.size());
    if (text.size() <= max_line_bytes && !needs_escaping(text)) {
      pattern_->format(msg, dest);
      return;
    }
    const auto safe = shorten(text, max_line_bytes);
    auto one_line = msg;
    one_line.payload = safe;
    pattern_->format(one_line, dest);
  }

  std::unique_ptr<spdlog::formatter> clone() const override {
    return std::make_unique<OneLineFormatter>();
  }

 private:
  std::unique_ptr<spdlog::pattern_formatter> pattern_;
};

}  // namespace

void init_logging() {
  static std::once_flag once;
  std::call_once(once, [] {
    auto console = std::make_shared<spdlog::sinks::stderr_sink_mt>();
    auto logger = std::make_shared<spdlog::logger>(
        "mooring", spdlog::sinks_init_list{console, observer_sink()});
    logger->set_formatter(std::make_unique<OneLineFormatter>());
    logger->flush_on(spdlog::level::trace);
    spdlog::set_default_logger(logger);
  });
}

bool set_log_level(std::string_view level) {
  auto parsed = spdlog::level::from_str(std::string(level));
  // from_str answers "off" for anything it does not know.
  if (parsed == spdlog::level::off && level != "off") return false;
  spdlog::set_level(parsed);
  return true;
}

void set_max_field_bytes(std::size_t bytes) { g_max_field_bytes = bytes; }
std::size_t max_field_bytes() { return g_max_field_bytes; }


bool is_utf8(std::string_view text) {
  for (std::size_t at = 0; at < text.size();) {
    const auto length = utf8_sequence(text, at);
    if (length == 0) return false;
    at += length;
  }
  return true;
}

std::string shorten(std::string_view text, std::size_t max_bytes) {
  std::size_t keep = text.size();
  if (keep > max_bytes) {
    keep = max_bytes;
    // Step back over UTF-8 continuation bytes so no character is cut in half.
    while (keep > 0 && (static_cast<unsigned char>(text[keep]) & 0xC0) == 0x80) --keep;
  }
  const auto kept = text.substr(0, keep);
  std::string out;
  out.reserve(keep + 24);
  for (std::size_t at = 0; at < kept.size();) {
    const char c = kept[at];
    const auto length = utf8_sequence(kept, at);
    if (length > 1) {
      out.append(kept.substr(at, length));
      at += length;
      continue;
    }
    ++at;
    switch (c) {
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        // A control character, or a byte of no UTF-8 character (a line must
        // stay UTF-8 for the panel's event stream, whose frames are text).
        if (length == 0 || is_control(c)) {
          out += fmt::format("\\x{:02x}", static_cast<unsigned char>(c));
        } else {
          out += c;
        }
    }
  }
  if (keep < text.size()) out += fmt::format("…[+{} bytes]", text.size() - keep);
  return out;
}

int add_log_observer(LogObserver observer) { return observer_sink()->add(std::move(observer)); }
void remove_log_observer(int id) { observer_sink()->remove(id); }

}  // namespace mooring::runtime
