// Chat client frames: whatever a client sends, parse_client_frame returns a
// frame or a ProtocolError (it never throws), what it accepts holds the
// protocol's limits, and the error frame answering a bad one is valid JSON.
// The server's frames, written key by key, carry any bytes (the input as a
// reply's text) exactly as Boost.JSON serializes the same object.
#include "chat/protocol.hpp"

#include <boost/json.hpp>

#include <cstdint>
#include <cstdlib>
#include <cstdio>
#include <string_view>

namespace {

void require(bool condition, const char* what) {
  if (condition) return;
  std::fprintf(stderr, "chat_frame: %s\n", what);
  std::abort();
}

bool parses(const std::string& frame) {
  boost::system::error_code ec;
  boost::json::parse(frame, ec);
  return !ec;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace mooring::chat;
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  const auto n = static_cast<std::int64_t>(size) - 1;
  require(chat_frame(text, text, n, -n) ==
              boost::json::serialize(boost::json::object{{"type", "chat"},
                                                         {"content", text},
                                                         {"text", text},
                                                         {"who", "AI"},
                                                         {"user_id", text},
                                                         {"seq", n},
                                                         {"reply_to", -n}}),
          "a chat frame differs from Boost.JSON's serialization");
  require(token_frame(text, n) == boost::json::serialize(boost::json::object{
                                      {"type", "chat_token"}, {"content", text}, {"reply_to", n}}),
          "a chat_token frame differs from Boost.JSON's serialization");
  const ClientFrame frame = parse_client_frame(text);

  if (const auto* message = std::get_if<UserMessage>(&frame)) {
    require(!message->text.empty() || !message->images.empty(), "an empty message was accepted");
    require(message->images.size() <= max_images, "more images than max_images were accepted");
    if (message->id) {
      require(!message->id->empty() && message->id->size() <= max_client_id_bytes,
              "an id outside 1..max_client_id_bytes was accepted");
      require(parses(ack_frame(*message->id, 1)), "the ack frame is not JSON");
    }
    for (const auto& image : message->images) {
      const std::string_view v = image;
      require(v.starts_with("data:") || v.starts_with("https://") || v.starts_with("http://"),
              "an image that is not a data: or http(s) URL was accepted");
    }
  } else if (const auto* resume = std::get_if<Resume>(&frame)) {
    require(resume->after >= 0, "a negative resume point was accepted");
  } else if (const auto* error = std::get_if<ProtocolError>(&frame)) {
    require(!error->name.empty(), "a protocol error without a name");
    require(parses(error_frame(error->name, error->description)),
            "the error frame answering this input is not JSON");
  }
  return 0;
}
