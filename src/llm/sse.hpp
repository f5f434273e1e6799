// An incremental parser for server-sent events (text/event-stream): bytes go
// in as they arrive, in pieces of any size (a line may be split across reads);
// complete events come out, each with its data and its type (the `event`
// field: "" when none, which SSE reads as "message"). Comments (":...") and
// the other fields are skipped; several data lines of one event are joined
// with "\n". An event without data is not passed on, whatever its type.
// Memory is bounded: a line longer than `max_line_bytes`, or an event whose
// data grows past `max_event_bytes` (many `data:` lines and no blank line),
// ends the parse with an error; the parser accepts nothing after that.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace mooring::llm {

struct SseEvent {
  std::string type;  // the last `event` field's value; "" when none
  std::string data;
  friend bool operator==(const SseEvent&, const SseEvent&) = default;
};

class SseParser {
 public:
  enum class Status { ok, line_too_long, event_too_long };

  explicit SseParser(std::size_t max_line_bytes = 4 * 1024 * 1024,
                     std::size_t max_event_bytes = 4 * 1024 * 1024)
      : max_line_(max_line_bytes), max_event_(max_event_bytes) {}

  // Appends the data of each event completed by `bytes` to `events`. Stops at
  // the first limit exceeded and reports it (then and on every later call).
  Status feed(std::string_view bytes, std::vector<SseEvent>& events);

  // True when a partial line or an unfinished event is pending.
  bool has_partial() const { return !line_.empty() || has_data_; }

 private:
  Status take_line(std::vector<SseEvent>& events);

  std::string line_;
  std::string data_;
  std::string type_;
  bool has_data_ = false;
  bool skip_lf_ = false;
  bool first_line_ = true;
  Status status_ = Status::ok;
  std::size_t max_line_;
  std::size_t max_event_;
};

const char* to_string(SseParser::Status status);

}  // namespace mooring::llm
