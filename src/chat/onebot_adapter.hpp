// The OneBot v11 transport: QQ accounts connect through an implementation
// (NapCat, Lagrange.OneBot, LLOneBot) that opens a reverse WebSocket to the
// gateway listener at [onebot] path (and the aliases other hosts' guides use).
// Each QQ private chat or group is a conversation (chat/conversation.hpp):
// "qq:<self_id>:private:<user_id>", "qq:<self_id>:group:<group_id>".
//
// Promises:
// - the handshake is decided before the upgrade (chat/onebot_link.hpp); a new
//   connection for the same account and role replaces the old one, whose
//   pending calls fail at once and whose work is redone on the new one;
// - a connection whose implementation stops sending heartbeats (none for 3 ×
//   their interval, an interval counted as 1 h at most) is closed; without
//   heartbeats the WebSocket ping decides;
// - a refused handshake is logged once per kind of refusal and 10 s, then
//   counted: clients retrying without the token cannot flood the log;
// - private messages are answered; group messages when the bot is
//   @-mentioned, replied to, or the text starts with a group prefix (which is
//   stripped); other group messages are stored as context with the sender's
//   name, not answered;
// - a reply is stored before it is sent (send_private_msg / send_group_msg,
//   quoting the message it answers), split at max_message_chars, and counted
//   delivered only on retcode 0: a timed-out or cut-off call is retried on the
//   account's next connection, in order, and never sent again after a success
//   this run has seen (after a restart, the delivered cursor decides);
// - a refused call (a retcode) is tried again 2 s later or on the next
//   connection; refused 3 times, its message is given up (a warning; it stays
//   stored, the delivered cursor moves past it) and the chat's next one goes;
// - sends to one chat are paced (send_interval, burst 3);
// - a full chat (max_pending_messages) holds the account's next messages in
//   memory, in order, not the connection's reading: the answers to calls
//   still arrive, so a send that succeeded is never taken for a lost one;
//   at a stop, the messages held are handed to their chats to be stored;
// - friend and group requests are logged and listed in status(), never answered.
#pragma once

#include "chat/conversation.hpp"
#include "chat/onebot_event.hpp"
#include "chat/onebot_link.hpp"
#include "chat/rate_limiter.hpp"
#include "net/router.hpp"
#include "net/ws_connection.hpp"
#include "runtime/log_limiter.hpp"

#include <boost/json/object.hpp>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace mooring::chat {

struct OneBotOptions {
  bool enabled = false;
  std::string path = "/onebot/v11/ws";
  onebot::LinkOptions link;
  std::vector<std::string> group_prefixes{"/ai"};
  runtime::Duration api_timeout = std::chrono::seconds(30);
  std::size_t max_message_chars = 4500;
  runtime::Duration send_interval = std::chrono::seconds(1);
  // gateway.max_pending_messages: while a chat holds this many messages
  // waiting or being answered, the account's next messages wait in memory
  // (1,000 or 4 MiB at most; beyond, the connection's reading stops) and the
  // answers to mooring's calls go on being read.
  std::size_t max_pending_messages = 16;
  // gateway.max_messages_per_minute, per QQ user and account: a message
  // beyond it that would be answered is neither stored nor answered, and the
  // chat is told (once a minute per user). 0: no limit.
  std::size_t max_messages_per_minute = 0;
  net::WsOptions ws;
  friend bool operator==(const OneBotOptions& a, const OneBotOptions& b) {
    return a.enabled == b.enabled && a.path == b.path &&
           a.link.access_token == b.link.access_token && a.link.self_ids == b.link.self_ids &&
           a.group_prefixes == b.group_prefixes && a.api_timeout == b.api_timeout &&
           a.max_message_chars == b.max_message_chars && a.send_interval == b.send_interval &&
           a.max_pending_messages == b.max_pending_messages &&
           a.max_messages_per_minute == b.max_messages_per_minute && a.ws == b.ws;
  }
};

class OneBotAdapter {
 public:
  OneBotAdapter(Conversations& conversations, OneBotOptions options);
  ~OneBotAdapter();
  OneBotAdapter(const OneBotAdapter&) = delete;
  OneBotAdapter& operator=(const OneBotAdapter&) = delete;

  // When enabled, adds the WebSocket routes: `path`, `path` + "/", and the
  // aliases "/onebot/v11/ws", "/onebot/v11/ws/", "/onebot/v11/", "/onebot",
  // "/ws" for which `taken` (the routes already there) finds nothing.
  void add_routes(net::Router& router, const net::Router& taken);

  // From now on; connections keep their WebSocket limits. Disabled, every
  // OneBot connection is closed.
  void set_options(OneBotOptions options);
  const OneBotOptions& options() const { return options_; }

  // The host is stopping: the messages held for full chats go to their chats
  // now, and those read later at once, to be stored before the store closes
  // and answered after the restart (QQ does not send a message again). Past
  // the bounds of what is held, counted from here, reading stops.
  void hand_over_held();

  // The connections are about to close: no send starts any more (the replies
  // stay stored for the next run), and the sends under way have until
  // `deadline` for their answers. A send QQ took whose answer came after
  // the close would go to QQ again after the restart.
  awaitable<void> settle_sends(runtime::Deadline deadline);

  // {"enabled", "bots": [...], "requests": [...]} for /api/status.
  boost::json::object status() const;
  // OneBot connections open now.
  std::size_t connections() const;

  struct Bot;
  struct Link;
  class Outlet;

 private:
  void open(const std::shared_ptr<net::WsConnection>& connection, onebot::Admitted admitted,
            const std::string& remote);
  void on_text(const std::shared_ptr<Link>& link, std::string_view text);
  void on_closed(const std::shared_ptr<Link>& link);
  void on_too_big(const std::shared_ptr<Link>& link, std::size_t bytes);
  void on_event(Bot& bot, const std::shared_ptr<Link>& link, const boost::json::object& event,
                std::size_t frame_bytes);
  void on_message(Bot& bot, const onebot::MessageEvent& message);
  // Whether the sender may have one more message answered this minute;
  // when not, their chat is told (once a minute) and the refusal logged.
  bool admit(Bot& bot, const onebot::MessageEvent& message);
  void on_heartbeat(const std::shared_ptr<Link>& link, const onebot::Heartbeat& heartbeat);
  void on_other(const std::shared_ptr<Link>& link, const onebot::OneBotEvent& event);
  // Messages for a chat holding max_pending_messages wait, in order, until
  // it holds fewer; the account's other chats go on. All of the account's
  // messages wait while its chats have max_account_work. `all`: the bounds
  // notwithstanding.
  void hold(Bot& bot, onebot::MessageEvent message, std::size_t frame_bytes);
  // Past every bound, on a connection that must be read for the answers to
  // mooring's sends: the message is dropped, counted and logged (limited).
  void drop(Bot& bot, const onebot::MessageEvent& message);
  bool chat_full(const std::string& session_id) const;
  void release_held(Bot& bot, bool all = false);
  Bot& bot(std::int64_t self_id);
  void attach_outlet(Conversation& conversation);
  void log_refusal(const std::string& remote, std::string_view body);
  // The refusal of a new account beyond the number kept, if it is one.
  std::optional<net::HttpResponse> refuse_account(std::int64_t self_id,
                                                  const net::Request& request) const;
  // Logs `line` when it is the first of `kind` in 10 s, else counts it for
  // one summary line: a connection that closes under 500 chats, or clients
  // retrying without the token, write a few lines, not one each.
  void log_limited(spdlog::level::level_enum level, std::string_view kind, const std::string& line);
  // A give-up ends the tries before it: when its line is written, the count
  // of the tries so far is written first, not after it as if they went on.
  void log_given_up(std::string_view tries_kind, std::string_view kind, const std::string& line);
  static awaitable<void> flush_limited_log(OneBotAdapter* adapter);
  static awaitable<void> greet(OneBotAdapter* adapter, std::shared_ptr<Link> link);
  static awaitable<void> watch(OneBotAdapter* adapter, std::shared_ptr<Link> link);
  static awaitable<void> retire(OneBotAdapter* adapter, std::shared_ptr<Link> link);

  Conversations& conversations_;
  OneBotOptions options_;
  std::map<std::int64_t, std::unique_ptr<Bot>> bots_;
  std::vector<boost::json::object> requests_;  // the newest last, bounded
  std::uint64_t next_link_ = 1;
  // Its kinds are the refusal bodies (one per reason, and one per unknown
  // self id) and the reasons a send failed, until the cap puts the rest together.
  runtime::LogLimiter limited_log_{runtime::LogLimiter::Options{.max_kinds = 16}};
  bool limited_log_flushing_ = false;
  RateLimiter rate_limiter_;
  RateLimiter told_limited_{1};  // a sender is told of their limit once a minute
  bool releasing_ = false;  // release_held() is handing messages over
  bool stopping_ = false;   // hand_over_held() ran: nothing is held any more
  bool settling_ = false;   // settle_sends() ran: no send starts
  std::size_t sends_in_flight_ = 0;
  runtime::Notifier send_ended_;
  // Tasks of this adapter check it before touching `this` after a wait.
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

}  // namespace mooring::chat
