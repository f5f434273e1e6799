#include "chat/protocol.hpp"

#include <fmt/format.h>

namespace mooring::chat {

namespace json = boost::json;

namespace {

ProtocolError wrong_type(std::string_view key, std::string_view expected) {
  return {"wrong_type", fmt::format("\"{}\" must be {}", key, expected)};
}

}  // namespace

bool valid_user_id(std::string_view user_id) {
  if (user_id.empty() || user_id.size() > 128) return false;
  for (char c : user_id) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '_' || c == '.' || c == ':' || c == '-';
    if (!ok) return false;
  }
  return true;
}

ClientFrame parse_client_frame(std::string_view text) {
  boost::system::error_code ec;
  json::value value = json::parse(text, ec);
  if (ec) return ProtocolError{"invalid_json", fmt::format("the frame is not JSON: {}", ec.message())};
  if (!value.is_object()) return ProtocolError{"invalid_frame", "the frame must be a JSON object"};
  const auto& frame = value.as_object();

  if (const auto* type = frame.if_contains("type"); type && !type->is_null()) {
    if (!type->is_string()) return wrong_type("type", "a string");
    const std::string_view kind = type->as_string();
    if (kind == "resume") {
      const auto* after = frame.if_contains("after");
      if (!after) return ProtocolError{"missing_after", "a resume frame needs \"after\": <seq>"};
      if (!after->is_int64() && !after->is_uint64()) return wrong_type("after", "an integer");
      const auto n = after->to_number<std::int64_t>();
      if (n < 0) return wrong_type("after", "a non-negative integer");
      return Resume{n};
    }
    if (kind == "cancel") return Cancel{};
    if (kind != "message" && kind != "user_message" && kind != "chat")
      return ProtocolError{"unknown_type",
                           fmt::format("unknown frame type \"{}\" (use a message, \"resume\" or "
                                       "\"cancel\")",
                                       kind.substr(0, 64))};
  }

  UserMessage message;
  const auto* text_value = frame.if_contains("text");
  if (!text_value) return ProtocolError{"missing_text", "a message needs \"text\""};
  if (!text_value->is_string()) return wrong_type("text", "a string");
  message.text = std::string(text_value->as_string());

  if (const auto* id = frame.if_contains("id"); id && !id->is_null()) {
    if (id->is_string()) {
      message.id = std::string(id->as_string());
    } else if (id->is_int64() || id->is_uint64()) {
      message.id = json::serialize(*id);
    } else {
      return wrong_type("id", "a string or an integer");
    }
    if (message.id->empty() || message.id->size() > max_client_id_bytes)
      return wrong_type("id", fmt::format("1 to {} characters", max_client_id_bytes));
  }

  if (const auto* images = frame.if_contains("images"); images && !images->is_null()) {
    if (!images->is_array()) return wrong_type("images", "an array of strings");
    for (const auto& image : images->as_array()) {
      if (!image.is_string()) return wrong_type("images", "an array of strings");
      message.images.emplace_back(image.as_string());
    }
  }
  if (const auto* image = frame.if_contains("image"); image && !image->is_null()) {
    if (!image->is_string()) return wrong_type("image", "a string");
    message.images.emplace_back(image->as_string());
  }
  if (message.images.size() > max_images)
    return ProtocolError{"too_many_images", fmt::format("at most {} images per message", max_images)};
  for (const auto& image : message.images) {
    const std::string_view v = image;
    if (!v.starts_with("data:") && !v.starts_with("https://") && !v.starts_with("http://"))
      return ProtocolError{"invalid_image",
                           "an image must be a data: URL or an http(s):// URL"};
  }
  if (message.text.empty() && message.images.empty())
    return ProtocolError{"empty_message", "the message has no text and no image"};
  return message;
}

std::string ack_frame(const std::optional<std::string>& id, std::int64_t seq) {
  return json::serialize(json::object{
      {"type", "ack"}, {"id", id ? json::value(*id) : json::value(nullptr)}, {"seq", seq}});
}

std::string token_frame(std::string_view piece, std::int64_t reply_to) {
  return json::serialize(
      json::object{{"type", "chat_token"}, {"content", piece}, {"reply_to", reply_to}});
}

std::string chat_frame(std::string_view text, std::string_view user_id, std::int64_t seq,
                       std::int64_t reply_to) {
  return json::serialize(json::object{{"type", "chat"},
                                      {"content", text},
                                      {"text", text},
                                      {"who", "AI"},
                                      {"user_id", user_id},
                                      {"seq", seq},
                                      {"reply_to", reply_to}});
}

std::string notification_frame(std::string_view content) {
  return json::serialize(json::object{{"type", "notification"}, {"content", content}});
}

std::string error_frame(std::string_view name, std::string_view description,
                        std::optional<std::int64_t> reply_to) {
  json::object frame{{"type", "error"}, {"name", name}, {"description", description}};
  if (reply_to) frame["reply_to"] = *reply_to;
  return json::serialize(frame);
}

}  // namespace mooring::chat
