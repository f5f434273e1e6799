// A scripted OneBot v11 implementation (the QQ side, as NapCat, Lagrange or
// LLOneBot are): it dials mooring's reverse WebSocket, writes the events a
// test asks for, and reads and answers the actions mooring calls. Blocking and
// driven from the test thread; every read is bounded and throws with what was
// read so far when time runs out, so a hang fails the test by its deadline.
//
// Promises:
// - No action read is lost: an action passed over by wait_action(), or read
//   while waiting for the close, is kept in skipped(); every action read is in
//   received().
// - An answer carries the action's echo exactly as received (a string stays a
//   string, a number a number) unless the test asks for another form.
// - go_silent() leaves the connection open and never writes again, not even a
//   pong: the server sees a half-open peer.
// - An operation that runs out of time leaves the connection unusable: any
//   later read or write throws std::logic_error (drop() and connect() still
//   work), so a test cannot go on reading a stream in an unknown state.
#pragma once

#include "support/clients.hpp"

#include <boost/json.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace mooring::test {

class OneBotPeer {
 public:
  using Headers = std::vector<std::pair<std::string, std::string>>;

  // One call from mooring: {"action", "params", "echo"}. `params` is empty
  // when the frame has none (or none that is an object); `action` is empty
  // when the frame names none. `frame` is the whole frame as received.
  struct Action {
    std::string action;
    boost::json::object params;
    boost::json::value echo;  // null when the frame carried none
    boost::json::object frame;
  };

  // How an answer writes the echo back. Implementations differ: most return
  // it untouched, some turn it into a string or a number.
  enum class EchoForm { same, as_string, as_number, omit };

  OneBotPeer();
  ~OneBotPeer();
  OneBotPeer(const OneBotPeer&) = delete;
  OneBotPeer& operator=(const OneBotPeer&) = delete;

  // Opens ws://<gateway><path> as an implementation does, with
  // X-Self-ID (left out when self_id is 0), X-Client-Role (left out when
  // empty), Authorization: Bearer <token> (or ?access_token=<token> when
  // token_in_query; nothing when token is empty) and User-Agent: OneBot/11.
  // `extra` headers are set last and replace any of these. Returns 101 when
  // upgraded, else the HTTP status of the refused upgrade. A peer may connect
  // again after any ending; each connect starts a fresh connection.
  int connect(const std::string& gateway, std::int64_t self_id, std::string_view role = "Universal",
              const std::string& token = "", bool token_in_query = false,
              const std::string& path = "/onebot/v11/ws", Headers extra = {});

  std::int64_t self_id() const { return self_id_; }

  // Events. Each writes one text frame with time = now and self_id = the
  // connected self id. The message senders return the message_id they used
  // (the next of a counter this peer shares with its send_* answers, unless
  // given); `message` is a CQ string or an array of segments, and
  // raw_message is its CQ-string form.
  void lifecycle_connect();
  void heartbeat(std::int64_t interval_ms);
  std::int64_t private_message(std::int64_t user_id, const boost::json::value& message,
                               std::string nickname = "alice",
                               std::optional<std::int64_t> message_id = std::nullopt);
  std::int64_t group_message(std::int64_t group_id, std::int64_t user_id,
                             const boost::json::value& message, std::string card = "",
                             std::string nickname = "bob",
                             std::optional<std::int64_t> message_id = std::nullopt);
  // The bot's own message as go-cqhttp-style implementations report it
  // (post_type "message_sent"): message_type "private" (to user peer_id) or
  // "group" (in group peer_id).
  std::int64_t message_sent(std::string_view message_type, std::int64_t peer_id,
                            const boost::json::value& message,
                            std::optional<std::int64_t> message_id = std::nullopt);
  void friend_request(std::int64_t user_id, const std::string& comment, const std::string& flag);
  void group_request(std::int64_t group_id, std::int64_t user_id, const std::string& sub_type,
                     const std::string& comment, const std::string& flag);
  // {post_type: "notice", notice_type} plus `fields` (sub_type, group_id, ...).
  void notice(const std::string& notice_type, const boost::json::object& fields = {});
  // {time, self_id, post_type}: the start of any event, for a test that
  // writes an unusual one through send().
  boost::json::object event_base(std::string_view post_type) const;
  void send(const boost::json::object& frame);
  void send_raw(const std::string& text);

  // The next action, or nullopt when the server closed the connection (then
  // close_code() says how). Throws when nothing arrives within `timeout` or
  // the frame is not a JSON object.
  std::optional<Action> next_action(std::chrono::milliseconds timeout = std::chrono::seconds(10));
  // Reads until an action named `name` and returns it; the actions read before
  // it go to skipped(). Throws when the connection closes first or `timeout`
  // passes (naming what was read).
  Action wait_action(std::string_view name,
                     std::chrono::milliseconds timeout = std::chrono::seconds(10));
  // Reads actions, answering the standard ones (answer_standard) with retcode
  // 0, until `done(action)` holds; returns every action read, in order, the
  // last being the one `done` accepted, which is left unanswered. Throws as
  // wait_action does.
  std::vector<Action> serve_until(const std::function<bool(const Action&)>& done,
                                  std::chrono::milliseconds timeout = std::chrono::seconds(10));

  // Answers `action`: {"status", "retcode", "data", "message", "wording",
  // "echo"}; status is "ok" for retcode 0, "async" for 1, else "failed".
  void answer(const Action& action, int retcode = 0, boost::json::value data = nullptr,
              EchoForm echo = EchoForm::same);
  // Answers the actions every implementation serves, with retcode 0:
  // get_version_info {app_name "scripted", app_version "1.0", protocol_version
  // "v11"}, get_login_info {user_id: self id, nickname "mooring-bot"},
  // get_status {online, good}, and send_private_msg / send_group_msg /
  // send_msg {message_id: the next of the counter}. False (nothing sent) for
  // any other action.
  bool answer_standard(const Action& action, EchoForm echo = EchoForm::same);
  // The message_id of the last message event or send_* answer.
  std::int64_t last_message_id() const { return next_message_id_ - 1; }

  // Every action read on this connection, in order; and those passed over by
  // wait_action() or read by read_until_closed().
  const std::vector<Action>& received() const { return received_; }
  const std::vector<Action>& skipped() const { return skipped_; }
  std::vector<Action> take_skipped() { return std::exchange(skipped_, {}); }

  // Endings. close(): a clean close (1000). drop(): a TCP reset, no close
  // frame. go_silent(): the socket stays open and nothing is read or written
  // any more (sending or reading afterwards throws, except
  // silent_until_closed()).
  void close();
  void drop();
  void go_silent();
  // Reads until the server closes the connection; returns its close code
  // (0 when it ended without a close frame). Actions read go to skipped().
  std::uint16_t read_until_closed(std::chrono::milliseconds timeout = std::chrono::seconds(10));
  // Stays silent (writes nothing: no pong, no close reply) while it reads
  // until the server ends the TCP connection; returns the code of the close
  // frame the server sent, 0 when there was none. Actions read go to
  // skipped(). Throws on timeout.
  std::uint16_t silent_until_closed(std::chrono::milliseconds timeout = std::chrono::seconds(10));
  std::uint16_t close_code() const;

 private:
  std::int64_t take_message_id(std::optional<std::int64_t> given);
  boost::json::object message_event(std::string_view post_type, std::string_view message_type,
                                    std::string_view sub_type, std::int64_t user_id,
                                    const boost::json::value& message,
                                    std::int64_t message_id) const;
  void require_open(const char* what) const;
  std::string describe_since(std::size_t first) const;

  struct Link;
  static std::optional<Action> read_action(const std::string& text);

  std::unique_ptr<Link> link_;
  std::int64_t self_id_ = 0;
  std::int64_t next_message_id_ = 1001;
  bool silent_ = false;
  bool broken_ = false;  // an operation timed out: the stream is in an unknown state
  std::vector<Action> received_;
  std::vector<Action> skipped_;
};

// The CQ-string form of a send action's params.message, whether it came as a
// string, one segment or an array of segments (a string with auto_escape set
// is plain text and comes back escaped). Throws when it is none of these.
std::string message_text(const OneBotPeer::Action& action);
// The text segments of params.message joined, unescaped: what a reader sees.
std::string plain_text(const OneBotPeer::Action& action);
// params[key] as an integer (a number or a decimal string, as implementations
// accept both); throws when absent or not a number.
std::int64_t int_param(const OneBotPeer::Action& action, std::string_view key);

}  // namespace mooring::test
