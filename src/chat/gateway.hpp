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
// - a session with no connection and no work is dropped from memory.
#pragma once

#include "chat/protocol.hpp"
#include "llm/provider.hpp"
#include "net/router.hpp"
#include "runtime/supervisor.hpp"
#include "store/store.hpp"

#include <map>
#include <memory>
#include <string>

namespace mooring::chat {

struct GatewayOptions {
  std::string token;  // empty: no token needed
  std::size_t history_messages = 20;
  std::string system_prompt;
  net::WsOptions ws;
  friend bool operator==(const GatewayOptions&, const GatewayOptions&) = default;
};

class Gateway {
 public:
  Gateway(runtime::Supervisor& supervisor, store::Store& store,
          std::shared_ptr<llm::Provider> provider, GatewayOptions options);
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
  // For connections and replies from now on; open connections keep their
  // limits. The token is checked by router()'s routes at each upgrade.
  void set_options(GatewayOptions options) { options_ = std::move(options); }
  const GatewayOptions& options() const { return options_; }

  std::size_t sessions() const { return sessions_.size(); }
  std::size_t connections() const;
  // Replies being generated now.
  std::size_t replies_in_flight() const;

  class Session;

 private:
  friend class Session;
  std::shared_ptr<Session> session(const std::string& user_id);
  void forget_if_idle(const std::string& user_id);

  runtime::Supervisor& supervisor_;
  store::Store& store_;
  std::shared_ptr<llm::Provider> provider_;
  GatewayOptions options_;
  std::map<std::string, std::shared_ptr<Session>, std::less<>> sessions_;
};

}  // namespace mooring::chat
