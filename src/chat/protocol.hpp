// The chat gateway's wire protocol (DESIGN.md, "Chat gateway"), shaped after
// Cheshire Cat's WebSocket API so its clients work unchanged. Parsing never
// throws, whatever the bytes: a frame is either a known message or a
// ProtocolError with a name and a description for the `error` frame. Keys the
// protocol does not name are ignored; a named key with a wrong type (or null
// where a value is needed) is an error. Server frames are valid UTF-8 whenever
// the strings given to them are.
#pragma once

#include <boost/json.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace mooring::chat {

struct UserMessage {
  std::string text;
  // The client's id, a string (a number in its place is a ProtocolError);
  // the same id twice is stored once.
  std::optional<std::string> id;
  std::vector<std::string> images;
};

struct Resume {
  std::int64_t after = 0;
};

struct Cancel {};

struct ProtocolError {
  std::string name;  // "invalid_json", "missing_text", "wrong_type", ...
  std::string description;
  // The refused message's client id, when it has a readable one: its error
  // frame carries it, so a client that sent several can tell which.
  std::optional<std::string> id{};
};

using ClientFrame = std::variant<UserMessage, Resume, Cancel, ProtocolError>;

// Longest accepted client id, image count and JSON nesting; more is a ProtocolError.
inline constexpr std::size_t max_client_id_bytes = 256;
inline constexpr std::size_t max_images = 16;
inline constexpr std::size_t max_frame_depth = 32;

ClientFrame parse_client_frame(std::string_view text);

// Whether `user_id` matches [A-Za-z0-9_.:-]{1,128} and is neither "." nor "..".
bool valid_user_id(std::string_view user_id);

// Server frames, serialized. An ack is sent only for a message that carries a
// client id: Cheshire Cat clients send none and take any frame that is neither
// a token nor a message for an error. `duplicate`: the id was stored before,
// and this message was not stored again (its text, if it differs, is not kept).
std::string ack_frame(std::string_view id, std::int64_t seq, bool duplicate = false);
std::string token_frame(std::string_view piece, std::int64_t reply_to);
std::string chat_frame(std::string_view text, std::string_view user_id, std::int64_t seq,
                       std::int64_t reply_to);
// `seq`, `reply_to`: for a stored reply that is a notice (a cancelled one).
std::string notification_frame(std::string_view content, std::optional<std::int64_t> seq = std::nullopt,
                               std::optional<std::int64_t> reply_to = std::nullopt);
// `id`: the client id of the message it refuses, when it had one; `seq`: a
// stored reply's (a failed one), past which a client resumes.
std::string error_frame(std::string_view name, std::string_view description,
                        std::optional<std::int64_t> reply_to = std::nullopt,
                        std::optional<std::string_view> id = std::nullopt,
                        std::optional<std::int64_t> seq = std::nullopt);

}  // namespace mooring::chat
