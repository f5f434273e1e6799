// A user of the chat gateway as a Cheshire Cat-style client is one: connects to
// /ws/<user>, sends JSON messages, reads JSON frames. Blocking and driven from
// the test thread; every read is bounded, and a read that runs out of time
// throws, so a hang fails the test by its deadline instead of stalling it.
#pragma once

#include "support/clients.hpp"

#include <boost/json.hpp>

#include <chrono>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace mooring::test {

class ChatClient {
 public:
  using Frame = boost::json::object;
  using Headers = std::vector<std::pair<std::string, std::string>>;

  // 101 when connected; otherwise the HTTP status of the refused upgrade.
  // `query` is appended to the path as is ("?token=...").
  int connect(const std::string& gateway, const std::string& user, const std::string& query = "",
              const Headers& headers = {});

  // Sends {"text": text, "id": id} (no id when empty).
  void say(const std::string& text, const std::string& id = "");
  void send(const Frame& frame);
  void send_raw(const std::string& text);

  // The next frame, or nullopt when the server closed the connection (then
  // close_code() says how). Throws when nothing arrives within `timeout` or
  // the frame is not a JSON object.
  std::optional<Frame> next(std::chrono::milliseconds timeout = std::chrono::seconds(10));

  // next() on a slow link (WsClient::read_slowly): at most `bytes` every `every`.
  std::optional<Frame> next_slowly(std::size_t bytes, std::chrono::milliseconds every,
                                   std::chrono::milliseconds timeout = std::chrono::seconds(30));
  // Before connect(): see WsClient::set_receive_buffer.
  void set_receive_buffer(int bytes) { ws_.set_receive_buffer(bytes); }

  // Reads until `done(frame)` holds and returns that frame. Throws when the
  // connection closes first or `timeout` passes (naming what was read).
  Frame read_until(const std::function<bool(const Frame&)>& done,
                   std::chrono::milliseconds timeout = std::chrono::seconds(10));

  // Reads until the server closes the connection; returns its close code.
  std::uint16_t read_until_closed(std::chrono::milliseconds timeout = std::chrono::seconds(10));

  // Every frame received on this connection, in order.
  const std::vector<Frame>& received() const { return received_; }
  void clear_received() { received_.clear(); }

  void close() { ws_.close(); }
  void drop() { ws_.drop(); }
  std::uint16_t close_code() const { return ws_.close_code(); }

 private:
  // A message read, as a frame (nullopt: the connection closed).
  std::optional<Frame> take(std::optional<std::string> text);

  WsClient ws_;
  std::vector<Frame> received_;
};

// Sends a message and returns the seq it was acknowledged with.
std::int64_t say_and_get_seq(ChatClient& client, const std::string& text, const std::string& id);

// The JSON of {"text": text, "id": id}, for clients that write frames themselves.
std::string message_frame(const std::string& text, const std::string& id);

// Frame predicates, for read_until and for counting.
bool is_type(const ChatClient::Frame& frame, std::string_view type);
bool is_ack(const ChatClient::Frame& frame, std::string_view id);
bool is_chat_for(const ChatClient::Frame& frame, std::int64_t reply_to);
bool is_token_for(const ChatClient::Frame& frame, std::int64_t reply_to);
std::int64_t int_field(const ChatClient::Frame& frame, std::string_view key);
std::string string_field(const ChatClient::Frame& frame, std::string_view key);

}  // namespace mooring::test
