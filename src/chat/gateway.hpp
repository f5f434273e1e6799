// The chat gateway: ws://<gateway.listen>/ws/<user_id>. One session per user,
// a small state machine that never goes stale:
// - a user message is stored before it is acknowledged; the same client id
//   twice is stored and answered once;
// - each session answers its messages in order, one reply at a time, with the
//   last `history_messages` stored messages as context;
// - the final reply is stored before it is sent; a reply being made when the
//   client leaves is finished, stored, and delivered when the user comes back
//   (every stored reply after the delivered cursor, or after resume.after),
//   each exactly once per connection, in order;
// - a new connection replaces the old one (closed with 4000 after its queued
//   frames), and nothing of the old one leaks into the new;
// - a session with no connection and no work is dropped from memory;
// - a client cannot make the host buffer without bound: while a user has
//   max_pending_messages messages waiting or being answered, the connection
//   is not read (TCP pushes back), and beyond max_messages_per_minute a
//   message is refused with an error frame and not stored;
// - a connection is admitted by the auth mode in force at its upgrade: none,
//   one shared token, or a signed per-user token whose `sub` is the user;
// - whatever ends a task of a session (a frame's handling, a reply) — a user's
//   cancel, an operator's cancel, a failure — leaves the session able to take
//   and answer the next message.
#pragma once

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

  // The routes of the gateway listener.
  std::shared_ptr<const net::Router> router();

  // Answers the messages that were acknowledged but never answered (the host
  // was killed), so a crash loses nothing a user was told was received.
  awaitable<std::size_t> recover();

  // Replies in flight keep the provider they started with; new ones use this.
  void set_provider(std::shared_ptr<llm::Provider> provider) { provider_ = std::move(provider); }
  // For connections, messages and replies from now on; open connections keep
  // their WebSocket limits. The auth mode, token and key in force are checked
  // at each upgrade.
  void set_options(GatewayOptions options);
  const GatewayOptions& options() const { return options_; }

  std::size_t sessions() const { return sessions_.size(); }
  std::size_t connections() const;
  // Replies being generated now.
  std::size_t replies_in_flight() const;
  // The most messages one session has held waiting or being answered since
  // the start: max_pending_messages unless recovery or a reconnect's backlog
  // added to a full session.
  std::size_t peak_pending() const { return peak_pending_; }
  // Messages refused by the rate limit since the start.
  std::uint64_t rate_limited() const { return rate_limited_; }

  class Session;

 private:
  friend class Session;
  std::shared_ptr<Session> session(const std::string& user_id);
  void forget_if_idle(const std::string& user_id);
  // nullopt: admitted.
  std::optional<net::HttpResponse> admit(net::Request& request) const;
  // Whether `user_id` may send one more message now (the rate limit).
  bool admit_message(std::string_view user_id);
  bool host_stopping() const;

  runtime::Supervisor& supervisor_;
  store::Store& store_;
  std::shared_ptr<llm::Provider> provider_;
  GatewayOptions options_;
  const runtime::ShutdownState* shutdown_;
  RateLimiter rate_limiter_;
  std::map<std::string, std::shared_ptr<Session>, std::less<>> sessions_;
  std::size_t peak_pending_ = 0;
  std::uint64_t rate_limited_ = 0;
};

}  // namespace mooring::chat
