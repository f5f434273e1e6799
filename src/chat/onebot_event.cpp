#include "chat/onebot_event.hpp"

#include "runtime/log.hpp"

#include <boost/json.hpp>

#include <fmt/format.h>

#include <charconv>

namespace mooring::chat::onebot {

namespace json = boost::json;

namespace {

// An id as implementations send it: a number, or (some) a decimal string.
std::optional<std::int64_t> id_field(const json::object& object, std::string_view key) {
  const auto* value = object.if_contains(key);
  if (!value) return std::nullopt;
  if (value->is_int64()) return value->as_int64();
  if (value->is_uint64() && value->as_uint64() <= static_cast<std::uint64_t>(INT64_MAX))
    return static_cast<std::int64_t>(value->as_uint64());
  if (value->is_string()) {
    const std::string_view text = value->as_string();
    std::int64_t out = 0;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), out);
    if (ec == std::errc() && end == text.data() + text.size()) return out;
  }
  return std::nullopt;
}

std::string string_field(const json::object& object, std::string_view key) {
  const auto* value = object.if_contains(key);
  return value && value->is_string() ? std::string(value->as_string()) : std::string();
}

OneBotEvent read_message(const json::object& event, std::int64_t self_id) {
  MessageEvent out;
  out.self_id = self_id;
  const auto type = string_field(event, "message_type");
  if (type != "private" && type != "group")
    return Ignored{fmt::format("a message of type \"{}\"", type.substr(0, 32))};
  out.group = type == "group";
  // A QQ number is a whole number from 1 up: anything else names nobody.
  const auto qq_number = [&event](std::string_view key) -> std::variant<std::int64_t, Ignored> {
    const auto* raw = event.if_contains(key);
    if (!raw) return Ignored{fmt::format("a message without {}", key), true};
    const auto id = id_field(event, key);
    if (!id || *id <= 0)
      return Ignored{fmt::format("a message whose {} is {}, not a QQ number", key,
                                 runtime::shorten(json::serialize(*raw), 64)),
                     true};
    return *id;
  };
  const auto user = qq_number("user_id");
  if (const auto* ignored = std::get_if<Ignored>(&user)) return *ignored;
  out.user_id = std::get<std::int64_t>(user);
  if (out.group) {
    const auto group = qq_number("group_id");
    if (const auto* ignored = std::get_if<Ignored>(&group)) return *ignored;
    out.group_id = std::get<std::int64_t>(group);
  }
  out.message_id = id_field(event, "message_id").value_or(0);
  out.time = id_field(event, "time").value_or(0);
  const auto* message = event.if_contains("message");
  if (!message) return Ignored{"a message event without a message", true};
  auto segments = parse_message(*message);
  if (!segments) return Ignored{"an unreadable message: " + segments.error(), true};
  out.message = std::move(*segments);
  if (const auto* sender = event.if_contains("sender"); sender && sender->is_object()) {
    out.sender_name = string_field(sender->as_object(), "card");
    if (out.sender_name.empty()) out.sender_name = string_field(sender->as_object(), "nickname");
  }
  if (out.sender_name.empty()) out.sender_name = std::to_string(out.user_id);
  return out;
}

}  // namespace

std::string MessageEvent::session_id() const {
  return group ? fmt::format("qq:{}:group:{}", self_id, group_id)
               : fmt::format("qq:{}:private:{}", self_id, user_id);
}

OneBotEvent read_event(const json::object& event) {
  const auto post_type = string_field(event, "post_type");
  const auto self_id = id_field(event, "self_id").value_or(0);
  if (post_type == "message") return read_message(event, self_id);
  if (post_type == "meta_event") {
    const auto kind = string_field(event, "meta_event_type");
    if (kind == "heartbeat") {
      Heartbeat heartbeat{self_id, id_field(event, "interval")};
      if (heartbeat.interval_ms && *heartbeat.interval_ms <= 0) heartbeat.interval_ms.reset();
      return heartbeat;
    }
    // Its names are short words ("connect", "enable"): a longer one is cut.
    if (kind == "lifecycle")
      return Lifecycle{self_id, string_field(event, "sub_type").substr(0, 32)};
    return Ignored{fmt::format("a meta event \"{}\"", kind.substr(0, 32))};
  }
  if (post_type == "request") {
    RequestEvent request;
    request.self_id = self_id;
    request.kind = string_field(event, "request_type").substr(0, 32);  // "friend", "group"
    request.user_id = id_field(event, "user_id").value_or(0);
    request.group_id = id_field(event, "group_id").value_or(0);
    request.comment = string_field(event, "comment").substr(0, 500);
    return request;
  }
  if (post_type == "message_sent") return Ignored{"the bot's own message"};
  if (post_type == "notice")
    return Ignored{fmt::format("a notice \"{}\"", string_field(event, "notice_type").substr(0, 32))};
  return Ignored{fmt::format("an event of post type \"{}\"", post_type.substr(0, 32))};
}

}  // namespace mooring::chat::onebot
