#include "runtime/log.hpp"

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

}  // namespace

void init_logging() {
  static std::once_flag once;
  std::call_once(once, [] {
    auto console = std::make_shared<spdlog::sinks::stderr_sink_mt>();
    auto logger = std::make_shared<spdlog::logger>(
        "mooring", spdlog::sinks_init_list{console, observer_sink()});
    logger->set_pattern("%Y-%m-%d %H:%M:%S.%e %-5l %v");
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

std::string shorten(std::string_view text, std::size_t max_bytes) {
  std::size_t keep = text.size();
  if (keep > max_bytes) {
    keep = max_bytes;
    // Step back over UTF-8 continuation bytes so no character is cut in half.
    while (keep > 0 && (static_cast<unsigned char>(text[keep]) & 0xC0) == 0x80) --keep;
  }
  std::string out;
  out.reserve(keep + 24);
  for (char c : text.substr(0, keep)) {
    switch (c) {
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
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
