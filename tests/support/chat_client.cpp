#include "support/chat_client.hpp"

#include <stdexcept>

namespace mooring::test {

namespace json = boost::json;

int ChatClient::connect(const std::string& gateway, const std::string& user,
                        const std::string& query, const Headers& headers) {
  received_.clear();
  const int status = ws_.connect(gateway, "/ws/" + user + query, headers);
  // As browsers do: a small frame goes out at once, not after the previous one is acknowledged.
  if (status == 101) ws_.lowest_layer().socket().set_option(asio::ip::tcp::no_delay(true));
  return status;
}

void ChatClient::say(const std::string& text, const std::string& id) {
  Frame frame{{"text", text}};
  if (!id.empty()) frame["id"] = id;
  send(frame);
}

void ChatClient::send(const Frame& frame) {
  ws_.send(json::serialize(frame));
}

void ChatClient::send_raw(const std::string& text) {
  ws_.send(text);
}

std::optional<ChatClient::Frame> ChatClient::next(std::chrono::milliseconds timeout) {
  return take(ws_.read(timeout));
}

std::optional<ChatClient::Frame> ChatClient::next_slowly(std::size_t bytes,
                                                         std::chrono::milliseconds every,
                                                         std::chrono::milliseconds timeout) {
  return take(ws_.read_slowly(bytes, every, timeout));
}

std::optional<ChatClient::Frame> ChatClient::take(std::optional<std::string> text) {
  if (!text) return std::nullopt;
  boost::system::error_code ec;
  auto value = json::parse(*text, ec);
  if (ec || !value.is_object()) throw std::runtime_error("the server sent a non-object: " + *text);
  received_.push_back(value.as_object());
  return received_.back();
}

namespace {

std::string describe(const std::vector<ChatClient::Frame>& frames, std::size_t from) {
  std::string out;
  for (std::size_t i = from; i < frames.size(); ++i) out += "\n  " + json::serialize(frames[i]);
  return out.empty() ? " (nothing)" : out;
}

}  // namespace

ChatClient::Frame ChatClient::read_until(const std::function<bool(const Frame&)>& done,
                                         std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  const auto first = received_.size();
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    std::optional<Frame> frame;
    try {
      frame = next(std::max(left, std::chrono::milliseconds(1)));
    } catch (const std::runtime_error& e) {
      throw std::runtime_error(std::string(e.what()) +
                               "; read so far:" + describe(received_, first));
    }
    if (!frame)
      throw std::runtime_error("the connection closed with " + std::to_string(close_code()) +
                               " before the awaited frame; read:" + describe(received_, first));
    if (done(*frame)) return *frame;
  }
}

std::uint16_t ChatClient::read_until_closed(std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (!next(std::max(left, std::chrono::milliseconds(1)))) return close_code();
  }
}

bool is_type(const ChatClient::Frame& frame, std::string_view type) {
  const auto* value = frame.if_contains("type");
  return value && value->is_string() && value->as_string() == type;
}

bool is_ack(const ChatClient::Frame& frame, std::string_view id) {
  const auto* value = frame.if_contains("id");
  return is_type(frame, "ack") && value && value->is_string() && value->as_string() == id;
}

std::int64_t int_field(const ChatClient::Frame& frame, std::string_view key) {
  const auto* value = frame.if_contains(key);
  if (!value || !(value->is_int64() || value->is_uint64())) return -1;
  return value->to_number<std::int64_t>();
}

std::string string_field(const ChatClient::Frame& frame, std::string_view key) {
  const auto* value = frame.if_contains(key);
  return value && value->is_string() ? std::string(value->as_string()) : std::string();
}

bool is_chat_for(const ChatClient::Frame& frame, std::int64_t reply_to) {
  return is_type(frame, "chat") && int_field(frame, "reply_to") == reply_to;
}

bool is_token_for(const ChatClient::Frame& frame, std::int64_t reply_to) {
  return is_type(frame, "chat_token") && int_field(frame, "reply_to") == reply_to;
}

std::int64_t say_and_get_seq(ChatClient& client, const std::string& text, const std::string& id) {
  client.say(text, id);
  const auto ack = client.read_until([&](const ChatClient::Frame& f) { return is_ack(f, id); });
  return int_field(ack, "seq");
}

std::string message_frame(const std::string& text, const std::string& id) {
  return boost::json::serialize(boost::json::object{{"text", text}, {"id", id}});
}

}  // namespace mooring::test
