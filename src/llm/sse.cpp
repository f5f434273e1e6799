#include "llm/sse.hpp"

#include <utility>

namespace mooring::llm {

SseParser::Status SseParser::feed(std::string_view bytes, std::vector<SseEvent>& events) {
  while (status_ == Status::ok && !bytes.empty()) {
    if (skip_lf_) {
      skip_lf_ = false;
      if (bytes.front() == '\n') {
        bytes.remove_prefix(1);
        continue;
      }
    }
    const auto end = bytes.find_first_of("\r\n");
    const auto part = bytes.substr(0, end);
    if (line_.size() + part.size() > max_line_) {
      status_ = Status::line_too_long;
      break;
    }
    line_ += part;
    if (end == std::string_view::npos) break;
    skip_lf_ = bytes[end] == '\r';
    bytes.remove_prefix(end + 1);
    status_ = take_line(events);
  }
  return status_;
}

SseParser::Status SseParser::take_line(std::vector<SseEvent>& events) {
  // A byte order mark before the stream's first line is not part of it.
  if (std::exchange(first_line_, false) && line_.starts_with("\xEF\xBB\xBF")) line_.erase(0, 3);
  if (line_.empty()) {  // a blank line ends the event
    if (has_data_) events.push_back(SseEvent{std::move(type_), std::move(data_)});
    data_.clear();
    type_.clear();
    has_data_ = false;
    return Status::ok;
  }
  std::string_view line = line_;
  if (line.front() != ':') {
    auto colon = line.find(':');
    std::string_view field = line.substr(0, colon);
    std::string_view value = colon == std::string_view::npos ? std::string_view{} : line.substr(colon + 1);
    if (!value.empty() && value.front() == ' ') value.remove_prefix(1);
    if (field == "data") {
      if (data_.size() + value.size() + (has_data_ ? 1 : 0) > max_event_) return Status::event_too_long;
      if (has_data_) data_ += '\n';
      data_ += value;
      has_data_ = true;
    } else if (field == "event") {
      type_ = value;
    }
  }
  line_.clear();
  return Status::ok;
}

const char* to_string(SseParser::Status status) {
  switch (status) {
    case SseParser::Status::ok: return "ok";
    case SseParser::Status::line_too_long: return "a line over the limit";
    case SseParser::Status::event_too_long: return "an event over the limit";
  }
  return "unknown";
}

}  // namespace mooring::llm
