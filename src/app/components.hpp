// The components of the host, each a thin adapter around a plain class:
//   store     the SQLite store (store::Store)
//   provider  the LLM provider behind its resilience wrapper (llm::Provider)
//   gateway   the chat gateway (chat::Gateway) on its listener
//   admin     the admin API (admin::make_admin_router) on its listener
// What a reload can change in each is documented on its prepare().
#pragma once

#include "admin/admin_api.hpp"
#include "app/component.hpp"
#include "app/listener_component.hpp"
#include "chat/gateway.hpp"
#include "chat/onebot_adapter.hpp"
#include "llm/provider.hpp"
#include "runtime/shutdown.hpp"
#include "store/store.hpp"

#include <functional>
#include <memory>

namespace mooring::app {

// The store's health is its state: `running` while writes succeed,
// `degraded` while the disk refuses them (back to `running` by itself),
// `failed` when the database is damaged or could not be opened.
class StoreComponent : public Component {
 public:
  using ChangeCallback = std::function<void(const ComponentStatus&)>;
  StoreComponent(asio::any_io_executor executor, const DataConfig& config, ChangeCallback on_change);

  // Null until start() succeeded.
  store::Store* store() const { return store_.get(); }

  const ComponentStatus& status() const override { return status_; }
  // Opens the database; on failure the component is `failed` with the reason.
  awaitable<void> start() override;
  // data.dir cannot change while the database is open there.
  Prepared prepare(const Config& current, const Config& next) override;
  // Finishes the queued writes and closes the database (the deadline is not
  // used: a write that was acknowledged to a user is never abandoned).
  awaitable<void> stop(runtime::Deadline deadline) override;

 private:
  void health_changed(const store::Health& health);

  asio::any_io_executor executor_;
  std::string data_dir_;
  bool synchronous_full_;
  ChangeCallback on_change_;
  std::unique_ptr<store::Store> store_;
  ComponentStatus status_;
};

class ProviderComponent : public Component {
 public:
  // `on_swap` receives the new provider when a reload replaced it.
  using SwapCallback = std::function<void(std::shared_ptr<llm::Provider>)>;
  ProviderComponent(asio::any_io_executor executor, ProviderConfig config,
                    const runtime::ShutdownState* shutdown, SwapCallback on_swap);

  std::shared_ptr<llm::Provider> provider() const { return provider_; }

  const ComponentStatus& status() const override { return status_; }
  awaitable<void> start() override;
  // Any [provider] key but system_prompt (which the gateway sends): a new
  // provider is built; replies in flight finish on the old one.
  Prepared prepare(const Config& current, const Config& next) override;
  awaitable<void> stop(runtime::Deadline deadline) override;

 private:
  asio::any_io_executor executor_;
  ProviderConfig config_;
  const runtime::ShutdownState* shutdown_;
  SwapCallback on_swap_;
  std::shared_ptr<llm::Provider> provider_;
  ComponentStatus status_;
};

// A component whose face is one listener: its state, its address and its
// stop are the listener's.
class ListeningComponent : public Component {
 public:
  ListenerComponent& listener() { return *listener_; }

  const ComponentStatus& status() const override { return listener_->status(); }
  void stop_accepting() override { listener_->stop_accepting(); }
  awaitable<void> stop(runtime::Deadline deadline) override;

 protected:
  // Built by the derived class once what its routes need exists.
  std::unique_ptr<ListenerComponent> listener_;
};

class GatewayComponent : public ListeningComponent {
 public:
  // `options`: gateway_options(config), which the host checked first.
  GatewayComponent(runtime::Supervisor& supervisor, store::Store& store,
                   std::shared_ptr<llm::Provider> provider, const Config& config,
                   chat::GatewayOptions options, const runtime::ShutdownState* shutdown,
                   ListenerComponent::ChangeCallback on_change);

  chat::Gateway& gateway() { return gateway_; }
  chat::OneBotAdapter& onebot() { return onebot_; }

  // The listener stops accepting; backlogs of stored replies stop being
  // sent, and the QQ messages held for full chats go to them: the drain
  // waits for the messages read to be stored, not for slow readers.
  void stop_accepting() override;

  // Binds the listener, then answers the messages a previous run left unanswered.
  awaitable<void> start() override;
  // The QQ sends under way get their answers (close_flush_time before the
  // deadline at most), then the listener stops and its connections close.
  awaitable<void> stop(runtime::Deadline deadline) override;
  // gateway.listen moves the listener; the token, heartbeat and size limits,
  // chat.history_messages, provider.system_prompt and [onebot] apply to
  // connections and replies from then on.
  Prepared prepare(const Config& current, const Config& next) override;

 private:
  std::shared_ptr<const net::Router> router();

  chat::Gateway gateway_;  // owns the conversations the OneBot adapter shares
  chat::OneBotAdapter onebot_;
};

class AdminComponent : public ListeningComponent {
 public:
  // `context.token` is the resolved token.
  AdminComponent(runtime::Supervisor& supervisor, admin::AdminContext context,
                 const Config& config, ListenerComponent::ChangeCallback on_change);

  awaitable<void> start() override;
  // admin.listen moves the listener (the request that moved it gets its
  // response first); admin.token applies to requests from then on and closes
  // the event streams opened with the old one. With admin.token empty, the
  // token file is read again: one rewritten (or deleted, and so made anew)
  // applies the same way.
  Prepared prepare(const Config& current, const Config& next) override;
  // Whether the last prepare() found a new token in the token file while the
  // configuration's admin.token stayed as it was.
  bool token_file_changed() const { return token_file_changed_; }

 private:
  admin::AdminContext context_;
  bool token_file_changed_ = false;
};

// The gateway's options as a configuration sets them, or why they cannot be
// (auth = "signed" without a usable key in its environment variable).
boost::system::result<chat::GatewayOptions, std::string> gateway_options(const Config& config);
// [onebot] as the adapter takes it, with the gateway's WebSocket limits.
chat::OneBotOptions onebot_options(const Config& config, const chat::GatewayOptions& gateway);

// The listeners' limits: the gateway's connection cap is gateway.max_connections,
// lowered to what the descriptor limit allows with a reserve for everything
// else (the admin listener keeps answering when the gateway is full).
net::HttpLimits gateway_limits(const Config& config);
net::HttpLimits admin_limits();

}  // namespace mooring::app
