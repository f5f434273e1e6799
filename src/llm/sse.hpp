// An incremental parser for server-sent events (text/event-stream): bytes go
// in as they arrive, in pieces of any size (a line may be split across reads);
// complete events come out. Comments (":...") and fields other than `data`
// are skipped; several data lines of one event are joined with "\n".
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace mooring::llm {

class SseParser {
 public:
  // Longest line accepted; a longer one is a malformed stream.
  explicit SseParser(std::size_t max_line_bytes = 4 * 1024 * 1024) : max_line_(max_line_bytes) {}

  // Appends the data of each event completed by `bytes` to `events`. Returns
  // false when a line grew past the limit.
  bool feed(std::string_view bytes, std::vector<std::string>& events);

  // True when a partial line or an unfinished event is pending.
  bool has_partial() const { return !line_.empty() || has_data_; }

 private:
  void take_line(std::vector<std::string>& events);

  std::string line_;
  std::string data_;
  bool has_data_ = false;
  bool skip_lf_ = false;
  std::size_t max_line_;
};

}  // namespace mooring::llm
