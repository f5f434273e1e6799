#include "chat/protocol.hpp"

#include <boost/json/monotonic_resource.hpp>
#include <boost/json/serialize.hpp>
#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstddef>
#include <limits>

namespace mooring::chat {

namespace json = boost::json;

namespace {

ProtocolError wrong_type(std::string_view key, std::string_view expected) {
  return {"wrong_type", fmt::format("\"{}\" must be {}", key, expected)};
}

// A frame's JSON, read or built, lives in a buffer on the stack while it is
// needed: only what outgrows the buffer (a long text, many images) reaches
// the heap, all of it freed at once with the resource.
class FrameMemory {
 public:
  json::storage_ptr storage() { return json::storage_ptr(&resource_); }

 private:
  alignas(std::max_align_t) unsigned char buffer_[1024];
  json::monotonic_resource resource_{buffer_, sizeof buffer_};
};

// At most `max_bytes` of `text`, cut before a UTF-8 sequence rather than inside one.
std::string_view shorten_utf8(std::string_view text, std::size_t max_bytes) {
  if (text.size() <= max_bytes) return text;
  std::size_t end = max_bytes;
  while (end > 0 && (static_cast<unsigned char>(text[end]) & 0xC0) == 0x80) --end;
  return text.substr(0, end);
}

ClientFrame parse_resume(const json::object& frame) {
  const auto* after = frame.if_contains("after");
  if (!after) return ProtocolError{"missing_after", "a resume frame needs \"after\": <seq>"};
  // Checked before any conversion: to_number throws for a value it cannot hold.
  if (after->is_int64() && after->get_int64() >= 0) return Resume{after->get_int64()};
  if (after->is_uint64() && after->get_uint64() <= std::numeric_limits<std::int64_t>::max())
    return Resume{static_cast<std::int64_t>(after->get_uint64())};
  // A whole number past 2^64 reaches here as a double: as far out of range.
  if (after->is_uint64() || (after->is_double() && after->get_double() >= 0x1p63 &&
                             std::isfinite(after->get_double())))
    return ProtocolError{"out_of_range", "\"after\" must be a seq below 2^63"};
  return wrong_type("after", "a non-negative integer");
}

// Cheshire Cat clients send one image as "image", others a list as "images";
// both may come together.
std::optional<ProtocolError> parse_images(const json::object& frame, UserMessage& message) {
  const auto too_many = [] {
    return ProtocolError{"too_many_images", fmt::format("at most {} images per message", max_images)};
  };
  if (const auto* images = frame.if_contains("images"); images && !images->is_null()) {
    if (!images->is_array()) return wrong_type("images", "an array of strings");
    if (images->get_array().size() > max_images) return too_many();
    for (const auto& image : images->get_array()) {
      if (!image.is_string()) return wrong_type("images", "an array of strings");
      message.images.emplace_back(image.get_string());
    }
  }
  if (const auto* image = frame.if_contains("image"); image && !image->is_null()) {
    if (!image->is_string()) return wrong_type("image", "a string");
    if (message.images.size() == max_images) return too_many();
    message.images.emplace_back(image->get_string());
  }
  for (const auto& image : message.images) {
    const std::string_view v = image;
    if (!v.starts_with("data:") && !v.starts_with("https://") && !v.starts_with("http://"))
      return ProtocolError{"invalid_image", "an image must be a data: URL or an http(s):// URL"};
    if (!v.starts_with("data:")) continue;
    // What the provider is handed as an image is one: an image type, in base64.
    const auto comma = v.find(',');
    const auto header = v.substr(5, comma == std::string_view::npos ? 0 : comma - 5);
    if (comma == std::string_view::npos || !header.starts_with("image/") ||
        !header.ends_with(";base64"))
      return ProtocolError{"invalid_image",
                           "a data: URL image must be data:image/<type>;base64,<data>"};
    const auto data = v.substr(comma + 1);
    const bool base64 = std::all_of(data.begin(), data.end(), [](char c) {
      return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
             c == '+' || c == '/' || c == '=';
    });
    if (!base64)
      return ProtocolError{"invalid_image", "a data: URL image's data is not base64"};
  }
  return std::nullopt;
}

ClientFrame parse_message_fields(const json::object& frame);

// A refusal names the message by its client id where it has a readable one.
ClientFrame parse_message(const json::object& frame) {
  auto parsed = parse_message_fields(frame);
  if (auto* error = std::get_if<ProtocolError>(&parsed)) {
    const auto* id = frame.if_contains("id");
    if (id && id->is_string() && !id->get_string().empty() &&
        id->get_string().size() <= max_client_id_bytes)
      error->id = std::string(id->get_string());
  }
  return parsed;
}

ClientFrame parse_message_fields(const json::object& frame) {
  UserMessage message;
  if (const auto* text = frame.if_contains("text"); text && !text->is_null()) {
    if (!text->is_string()) return wrong_type("text", "a string");
    message.text = std::string(text->get_string());
  } else if (!frame.contains("image") && !frame.contains("images")) {
    return ProtocolError{"missing_text", "a message needs \"text\""};
  }

  // A client id is a string, echoed in the ack as it came. A number is
  // refused rather than taken as its digits, which would make 1 and "1" one id.
  if (const auto* id = frame.if_contains("id"); id && !id->is_null()) {
    if (id->is_int64() || id->is_uint64()) {
      const auto digits = json::serialize(*id);
      return ProtocolError{"wrong_type",
                           fmt::format("\"id\" must be a string: send \"id\": \"{}\", not "
                                       "\"id\": {}; this message was not stored",
                                       digits, digits)};
    }
    if (!id->is_string()) return wrong_type("id", "a string");
    message.id = std::string(id->get_string());
    if (message.id->empty() || message.id->size() > max_client_id_bytes)
      return wrong_type("id", fmt::format("1 to {} bytes long in UTF-8 (this one is {})",
                                          max_client_id_bytes, message.id->size()));
  }

  if (auto refused = parse_images(frame, message)) return std::move(*refused);
  if (message.text.empty() && message.images.empty())
    return ProtocolError{"empty_message", "the message has no text and no image"};
  return message;
}

ClientFrame parse_object(const json::object& frame) {
  if (const auto* type = frame.if_contains("type"); type && !type->is_null()) {
    if (!type->is_string()) return wrong_type("type", "a string");
    const std::string_view kind = type->get_string();
    if (kind == "resume") return parse_resume(frame);
    if (kind == "cancel") return Cancel{};
    if (kind != "message" && kind != "user_message" && kind != "chat")
      return ProtocolError{"unknown_type",
                           fmt::format("unknown frame type \"{}\" (use a message, \"resume\" or "
                                       "\"cancel\")",
                                       shorten_utf8(kind, 64))};
  }
  return parse_message(frame);
}

}  // namespace

ClientFrame parse_client_frame(std::string_view text) {
  try {
    boost::system::error_code ec;
    json::parse_options options;
    options.max_depth = max_frame_depth;
    FrameMemory memory;
    json::value value = json::parse(text, ec, memory.storage(), options);
    if (ec)
      return ProtocolError{"invalid_json", fmt::format("the frame is not JSON: {}", ec.message())};
    if (!value.is_object()) return ProtocolError{"invalid_frame", "the frame must be a JSON object"};
    return parse_object(value.get_object());
  } catch (const std::exception&) {
    // Only an allocation can fail above; the frame is refused, the connection goes on.
    return ProtocolError{"invalid_frame", "the frame could not be read"};
  }
}

bool valid_user_id(std::string_view user_id) {
  if (user_id.empty() || user_id.size() > 128) return false;
  // No URL holds them: clients take /ws/.. for the parent path, and the
  // panel could not open their conversation.
  if (user_id == "." || user_id == "..") return false;
  for (char c : user_id) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '_' || c == '.' || c == ':' || c == '-';
    if (!ok) return false;
  }
  return true;
}

namespace {

// A server frame written as it goes out, key by key in order: no object is
// built and nothing hashed. A string with a byte JSON escapes (a quote, a
// backslash, a control character) goes through Boost.JSON's serializer, as
// the whole object did; others are copied between quotes. Keys are the
// literals below, which need no escape.
class FrameWriter {
 public:
  explicit FrameWriter(std::size_t text_bytes) {
    out_.reserve(64 + text_bytes);
    out_ += '{';
  }
  FrameWriter& text(std::string_view key, std::string_view value) {
    name(key);
    quoted(value);
    return *this;
  }
  FrameWriter& number(std::string_view key, std::int64_t value) {
    name(key);
    char digits[24];
    const auto end = std::to_chars(digits, digits + sizeof digits, value).ptr;
    out_.append(digits, end);
    return *this;
  }
  FrameWriter& flag(std::string_view key, bool value) {
    name(key);
    out_ += value ? "true" : "false";
    return *this;
  }
  std::string done() && {
    out_ += '}';
    return std::move(out_);
  }

 private:
  void name(std::string_view key) {
    if (out_.size() > 1) out_ += ',';
    out_ += '"';
    out_ += key;
    out_ += "\":";
  }
  void quoted(std::string_view value) {
    const auto escaped = [](char c) {
      return c == '"' || c == '\\' || static_cast<unsigned char>(c) < 0x20;
    };
    if (std::none_of(value.begin(), value.end(), escaped)) {
      out_ += '"';
      out_ += value;
      out_ += '"';
      return;
    }
    out_ += json::serialize(json::string_view(value.data(), value.size()));
  }

  std::string out_;
};

}  // namespace

std::string ack_frame(std::string_view id, std::int64_t seq, bool duplicate) {
  FrameWriter frame(id.size());
  frame.text("type", "ack").text("id", id).number("seq", seq);
  if (duplicate) frame.flag("duplicate", true);
  return std::move(frame).done();
}

std::string token_frame(std::string_view piece, std::int64_t reply_to) {
  return std::move(FrameWriter(piece.size())
                       .text("type", "chat_token")
                       .text("content", piece)
                       .number("reply_to", reply_to))
      .done();
}

std::string chat_frame(std::string_view text, std::string_view user_id, std::int64_t seq,
                       std::int64_t reply_to) {
  return std::move(FrameWriter(2 * text.size() + user_id.size())
                       .text("type", "chat")
                       .text("content", text)
                       .text("text", text)
                       .text("who", "AI")
                       .text("user_id", user_id)
                       .number("seq", seq)
                       .number("reply_to", reply_to))
      .done();
}

std::string notification_frame(std::string_view content, std::optional<std::int64_t> seq,
                               std::optional<std::int64_t> reply_to) {
  FrameWriter frame(content.size());
  frame.text("type", "notification").text("content", content);
  if (seq) frame.number("seq", *seq);
  if (reply_to) frame.number("reply_to", *reply_to);
  return std::move(frame).done();
}

std::string error_frame(std::string_view name, std::string_view description,
                        std::optional<std::int64_t> reply_to, std::optional<std::string_view> id,
                        std::optional<std::int64_t> seq) {
  FrameWriter frame(name.size() + description.size() + (id ? id->size() : 0));
  frame.text("type", "error").text("name", name).text("description", description);
  if (seq) frame.number("seq", *seq);
  if (reply_to) frame.number("reply_to", *reply_to);
  if (id) frame.text("id", *id);
  return std::move(frame).done();
}

}  // namespace mooring::chat
