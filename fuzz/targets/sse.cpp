// The SSE parser fed upstream bytes in pieces split at arbitrary points: the
// events and the verdict must not depend on where the reads happened to end.
// Input: one byte for the line limit, one for the number of splits, the split
// points (two bytes each), then the stream.
#include "llm/sse.hpp"

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

namespace {

void require(bool condition, const char* what) {
  if (condition) return;
  std::fprintf(stderr, "sse: %s\n", what);
  std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 2) return 0;
  // 0 keeps the production limit; otherwise a small one, so that the
  // over-long-line path is reached too.
  const std::size_t max_line = data[0] == 0 ? 4 * 1024 * 1024 : data[0];
  std::size_t splits = data[1] % 16;
  data += 2;
  size -= 2;
  std::vector<std::size_t> cuts;
  while (splits-- > 0 && size >= 2) {
    cuts.push_back(static_cast<std::size_t>(data[0]) << 8 | data[1]);
    data += 2;
    size -= 2;
  }
  const std::string_view stream(reinterpret_cast<const char*>(data), size);
  for (auto& cut : cuts) cut = stream.empty() ? 0 : cut % (stream.size() + 1);
  std::sort(cuts.begin(), cuts.end());
  cuts.push_back(stream.size());

  mooring::llm::SseParser whole(max_line);
  std::vector<mooring::llm::SseEvent> whole_events;
  using Status = mooring::llm::SseParser::Status;
  const Status whole_status = whole.feed(stream, whole_events);
  const bool whole_ok = whole_status == Status::ok;

  mooring::llm::SseParser pieces(max_line);
  std::vector<mooring::llm::SseEvent> piece_events;
  Status pieces_status = Status::ok;
  std::size_t at = 0;
  for (const auto cut : cuts) {
    if (pieces_status != Status::ok) break;
    pieces_status = pieces.feed(stream.substr(at, cut - at), piece_events);
    at = cut;
  }

  require(whole_status == pieces_status, "the verdict depends on how the stream was split");
  require(whole_events == piece_events, "the events depend on how the stream was split");
  if (whole_ok) require(whole.has_partial() == pieces.has_partial(), "has_partial differs");
  for (const auto& event : whole_events) {
    require(event.data.size() <= stream.size(), "an event is longer than the stream");
    require(event.type.size() <= stream.size(), "an event's type is longer than the stream");
  }
  return 0;
}
