// The web chat transport: ws://<gateway.listen>/ws/<user_id>, one connection
// per user, mapped onto that user's conversation (chat/conversation.hpp),
// which keeps the promises about storing, ordering and answering. What this
// layer adds:
// - an acknowledgement frame for a stored message that carries a client id;
//   replies streamed as token frames and sent whole as a chat frame, stored
//   replies (after the delivered cursor, or after resume.after) in order, and
//   none twice among those a connection sent lately (its last
//   2 x send_queue_limit + max_pending_messages + 1: the memory a connection
//   keeps for this is bounded; a resume from further back gets the older ones
//   again, with their seqs); the cursor moves once a frame is written;
// - a new connection replaces the old one (closed with 4000 after its queued
//   frames), and nothing of the old one leaks into the new;
// - a client cannot make the host buffer without bound: while its
//   conversation holds max_pending_messages messages waiting or being
//   answered, or while frames wait for it (below), the connection is not
//   read (TCP pushes back), and beyond max_messages_per_minute a message is
//   refused with an error frame and not stored;
// - a client is judged by whether it reads, not by how much there is for it:
//   frames go to the socket's send queue only as far as its bounds allow
//   (send_queue_limit frames, send_queue_bytes bytes; a frame alone may be
//   larger), the rest wait in order (a stored reply as its text, once; the
//   pieces of a reply joined), and a backlog is read a page at a time, the
//   next page once the queue is down to a quarter of its bounds. A client
//   that takes nothing for heartbeat_interval + heartbeat_timeout is cut off
//   and what waited for it is let go; the replies stay stored for its return;
// - the host takes in at most Conversations::work_at_once messages at once
//   (Conversations::gate()): one read beyond that waits for a pass, not
//   acknowledged, in the order messages came, and its connection is not read
//   meanwhile. Not read, it sees its client leave only when its turn comes
//   (the message is then stored and answered, for the user's return) or when
//   it ends otherwise (replaced, stopped): then it leaves the line, and the
//   message, never acknowledged, is not stored;
// - a connection is admitted by the auth mode in force at its upgrade: none,
//   one shared token, or a signed per-user token whose `sub` is the user;
//   user ids starting with "qq:" belong to the OneBot transport and are refused.
#pragma once

#include "chat/conversation.hpp"
#include "chat/protocol.hpp"
#include "chat/rate_limiter.hpp"
#include "llm/provider.hpp"
#include "net/router.hpp"
#include "runtime/shutdown.hpp"
#include "runtime/supervisor.hpp"
#include "store/store.hpp"

#include <map>
#include <memory>
#include <string>
#include <vector>

namespace mooring::chat {

// How a connection proves who it is (gateway.auth).
enum class GatewayAuth {
  none,    // anyone may be any user; still, a `token` that is set is required
  token,   // the shared `token`, as "Authorization: Bearer" or ?token=
  signed_token,  // "signed": a per-user HS256 token (chat/user_token.hpp) made with `signing_key`
};

struct GatewayOptions {
  std::string token;  // the shared token; with auth none, empty means no token needed
  std::size_t history_messages = 20;
  std::string system_prompt;
  net::WsOptions ws;
  GatewayAuth auth = GatewayAuth::none;
  std::string signing_key;  // the key's bytes, for auth signed
  std::size_t max_pending_messages = 16;
  // 0: no limit. The configuration's default (gateway.max_messages_per_minute) is 60.
  std::size_t max_messages_per_minute = 0;
  std::size_t max_context_bytes = 256 * 1024;
  // Origins of pages on other hosts that may open /ws/<user> (net::origin_admitted).
  std::vector<std::string> allowed_origins;
  // What all WebSocket connections may hold (net::buffer_budget(), the process's).
  std::size_t max_buffered_bytes = net::BufferBudget::default_limit;
  friend bool operator==(const GatewayOptions&, const GatewayOptions&) = default;
};

class Gateway {
 public:
  // `shutdown` tells a reply cancelled by the host's shutdown (left pending, to
  // be answered after the restart) from one cancelled by an operator (stored
  // as cancelled, and the next message answered). Without it every
  // cancellation is taken for an operator's.
  Gateway(runtime::Supervisor& supervisor, store::Store& store,
          std::shared_ptr<llm::Provider> provider, GatewayOptions options,
          const runtime::ShutdownState* shutdown = nullptr);
  ~Gateway();
  Gateway(const Gateway&) = delete;
  Gateway& operator=(const Gateway&) = delete;

  // The routes of the gateway listener (the web chat's), alone or added to `router`.
  std::shared_ptr<const net::Router> router();
  void add_routes(net::Router& router);

  // Answers the messages that were acknowledged but never answered (the host
  // was killed), so a crash loses nothing a user was told was received.
  awaitable<std::size_t> recover() { return conversations_.recover(); }

  // Replies in flight keep the provider they started with; new ones use this.
  void set_provider(std::shared_ptr<llm::Provider> provider) {
    conversations_.set_provider(std::move(provider));
  }
  // For connections, messages and replies from now on; open connections keep
  // their WebSocket limits. The auth mode, token and key in force are checked
  // at each upgrade.
  void set_options(GatewayOptions options);
  const GatewayOptions& options() const { return options_; }

  // Every conversation, the OneBot transport's too.
  Conversations& conversations() { return conversations_; }

  // Conversations in memory (web and OneBot), web connections open.
  std::size_t sessions() const { return conversations_.size(); }
  std::size_t connections() const;
  // Replies being generated now.
  std::size_t replies_in_flight() const { return conversations_.replies_in_flight(); }
  // The most messages one session has held waiting or being answered since
  // the start: max_pending_messages unless recovery or a reconnect's backlog
  // added to a full session.
  std::size_t peak_pending() const { return conversations_.peak_pending(); }
  // Messages refused by the rate limit since the start.
  std::uint64_t rate_limited() const { return rate_limited_; }

  class Connection;

 private:
  friend class Connection;
  // nullopt: admitted.
  std::optional<net::HttpResponse> admit(net::Request& request) const;
  // Whether `user_id` may send one more message now (the rate limit).
  bool admit_message(std::string_view user_id);
  void open(const std::shared_ptr<net::WsConnection>& connection, const std::string& user_id);

  GatewayOptions options_;
  Conversations conversations_;
  RateLimiter rate_limiter_;
  std::uint64_t rate_limited_ = 0;
};

}  // namespace mooring::chat
