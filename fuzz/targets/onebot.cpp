// What a OneBot implementation sends, through the adapter's readers: the input
// is one WebSocket text frame. It is sorted (event or answer), read as an
// event, its message read in both forms (the frame as a CQ string too), and
// turned into what a conversation keeps; a reply is split. Nothing may throw,
// and what is written back (the array form, CQ strings) must read back the same.
#include "chat/onebot_event.hpp"
#include "chat/onebot_link.hpp"
#include "chat/onebot_message.hpp"

#include <boost/json.hpp>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

namespace {

using namespace mooring::chat::onebot;

void require(bool condition, const char* what) {
  if (condition) return;
  std::fprintf(stderr, "onebot: %s\n", what);
  std::abort();
}

std::size_t code_points(std::string_view text) {
  std::size_t n = 0;
  for (unsigned char c : text) n += (c & 0xC0) != 0x80;
  return n;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);

  // The frame as a CQ string: read, written, read again to the same segments.
  const auto segments = parse_cq_string(text);
  require(parse_cq_string(to_cq_string(segments)) == segments, "a CQ string does not read back");
  const auto array = to_json(segments);
  auto from_array = parse_message(boost::json::value(array));
  require(from_array && *from_array == segments, "the array form does not read back");
  (void)read_incoming(segments, 10001);

  // The frame as a frame.
  auto sorted = sort_frame(text);
  if (auto* event = std::get_if<Event>(&sorted)) {
    auto read = read_event(event->object);
    if (auto* message = std::get_if<MessageEvent>(&read)) {
      const auto in = read_incoming(message->message, message->self_id);
      (void)group_request(in, false, {"/ai"});
      (void)message->session_id();
    }
  }

  // A reply split at a size the input chooses.
  const std::size_t max_chars = size == 0 ? 1 : 1 + data[0] % 64;
  for (const auto& piece : split_reply(text, max_chars))
    require(code_points(piece) <= max_chars || max_chars < 4, "a piece is longer than allowed");
  return 0;
}
