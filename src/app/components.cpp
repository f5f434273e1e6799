#include "app/components.hpp"

#include <cstdlib>
#include <cstring>
#include <filesystem>

#include "admin/token.hpp"
#include "app/provider_factory.hpp"
#include "app/staged_file.hpp"
#include "chat/user_token.hpp"
#include "runtime/descriptors.hpp"
#include "runtime/log.hpp"

namespace mooring::app {
namespace {

Prepared refuse(std::string why) { return Prepared(boost::system::in_place_error, std::move(why)); }

// Runs `first` then `second`; either may be empty.
Commit both(Commit first, Commit second) {
  if (!first) return second;
  if (!second) return first;
  return [first = std::move(first), second = std::move(second)] {
    first();
    second();
  };
}

// The provider's own settings: system_prompt is the gateway's business.
ProviderConfig provider_settings(ProviderConfig config) {
  config.system_prompt.clear();
  return config;
}

std::string describe_provider(const ProviderConfig& config) {
  if (config.kind == "openai") return fmt::format("openai {} at {}", config.model, config.base_url);
  return config.kind;
}

}  // namespace

boost::system::result<chat::GatewayOptions, std::string> gateway_options(const Config& config) {
  const auto& gw = config.gateway;
  chat::GatewayOptions options;
  options.token = gw.token;
  options.history_messages = config.chat.history_messages;
  options.system_prompt = config.provider.system_prompt;
  options.ws.max_message_bytes = gw.max_message_bytes;
  options.ws.send_queue_limit = gw.send_queue_limit;
  options.ws.heartbeat_interval = gw.heartbeat_interval;
  options.ws.heartbeat_timeout = gw.heartbeat_timeout;
  options.ws.close_timeout = std::chrono::seconds(5);
  options.auth = gw.auth == "signed"  ? chat::GatewayAuth::signed_token
                 : gw.auth == "token" ? chat::GatewayAuth::token
                                      : chat::GatewayAuth::none;
  if (options.auth == chat::GatewayAuth::signed_token) {
    const char* key = std::getenv(gw.signing_key_env.c_str());
    if (key == nullptr || std::strlen(key) < chat::min_signing_key_bytes)
      return boost::system::result<chat::GatewayOptions, std::string>(
          boost::system::in_place_error,
          fmt::format("gateway: auth = \"signed\" needs a signing key of at least {} bytes in "
                      "${} (for example: export {}=$(openssl rand -base64 48))",
                      chat::min_signing_key_bytes, gw.signing_key_env, gw.signing_key_env));
    options.signing_key = key;
  }
  options.max_pending_messages = gw.max_pending_messages;
  options.max_messages_per_minute = gw.max_messages_per_minute;
  options.max_context_bytes = config.chat.max_context_bytes;
  options.allowed_origins = gw.allowed_origins;
  options.max_buffered_bytes = gw.max_buffered_bytes;
  return options;
}

chat::OneBotOptions onebot_options(const Config& config, const chat::GatewayOptions& gateway) {
  const auto& ob = config.onebot;
  chat::OneBotOptions options;
  options.enabled = ob.enabled;
  options.path = ob.path;
  options.link.access_token = ob.access_token;
  options.link.self_ids = ob.self_ids;
  options.group_prefixes = ob.group_prefixes;
  options.api_timeout = ob.api_timeout;
  options.max_message_chars = ob.max_message_chars;
  options.send_interval = ob.send_interval;
  options.max_pending_messages = gateway.max_pending_messages;
  options.max_messages_per_minute = gateway.max_messages_per_minute;
  options.ws = gateway.ws;
  return options;
}

namespace {
// Connections the admin listener serves at once (the panel, event streams,
// probes, scrapes), and descriptors kept for everything else.
constexpr std::size_t admin_max_connections = 256;
constexpr std::size_t other_descriptors = 128;
}  // namespace

net::HttpLimits gateway_limits(const Config& config) {
  net::HttpLimits limits;
  const auto wanted = static_cast<std::size_t>(config.gateway.max_connections);
  limits.max_connections = runtime::connections_within_descriptor_limit(
      wanted, admin_max_connections + other_descriptors);
  if (limits.max_connections < wanted)
    log::warn("gateway: at most {} connections fit in the descriptor limit ({}), not the {} of "
              "gateway.max_connections; raise LimitNOFILE (or ulimit -n) to serve more",
              limits.max_connections, runtime::descriptor_limit(), wanted);
  return limits;
}

net::HttpLimits admin_limits() {
  net::HttpLimits limits;
  limits.max_connections = admin_max_connections;
  return limits;
}

// --- store -----------------------------------------------------------------

StoreComponent::StoreComponent(asio::any_io_executor executor, const DataConfig& config,
                               ChangeCallback on_change)
    : executor_(std::move(executor)),
      data_dir_(config.dir),
      synchronous_full_(config.synchronous == "full"),
      on_change_(std::move(on_change)) {
  status_.name = "store";
}

void StoreComponent::health_changed(const store::Health& health) {
  if (status_.state == ComponentState::stopping || status_.state == ComponentState::stopped) return;
  switch (health.state) {
    case store::Health::State::ok:
      status_.state = ComponentState::running;
      status_.remember("writes succeed again");
      break;
    case store::Health::State::degraded:
      status_.state = ComponentState::degraded;
      status_.last_error = health.last_error;
      status_.remember("writes fail: " + health.last_error);
      break;
    case store::Health::State::failed:
      status_.state = ComponentState::failed;
      status_.last_error = health.last_error;
      status_.remember("failed: " + health.last_error);
      break;
  }
  if (on_change_) on_change_(status_);
}

awaitable<void> StoreComponent::start() {
  status_.state = ComponentState::starting;
  ++status_.start_attempts;
  store::StoreOptions options;
  options.synchronous_full = synchronous_full_;
  // A commit costs less than handing it to another thread and back: batches
  // run on the network thread. At "full" the store thread fsyncs the WAL
  // behind them, and a batch's outcomes wait for that fsync.
  options.worker = store::StoreOptions::Worker::caller;
  // A checkpoint runs beside the batches (its WAL synced first), and a page
  // written by many commits is copied once per checkpoint: rarer ones cost
  // less (a WAL of up to about 16 MB; 1 user: p99 1.4 -> 0.45 ms in
  // docs/benchmarks.md).
  options.checkpoint_pages = 4000;
  auto opened = co_await store::Store::open(executor_, data_dir_, options);
  if (!opened) {
    status_.last_error = opened.error().message;
    status_.remember("open failed: " + status_.last_error);
    status_.state = ComponentState::failed;
    co_return;
  }
  store_ = std::move(*opened);
  status_.remember("opened " + data_dir_);
  status_.state = ComponentState::running;
  // The store outlives no component that could be told: the observer stops
  // with the store, which this component owns.
  store_->watch_health(executor_, [this](const store::Health& health) { health_changed(health); });
}

Prepared StoreComponent::prepare(const Config& current, const Config& next) {
  if (current.data.synchronous != next.data.synchronous)
    return refuse(fmt::format("data.synchronous cannot change while the database is open; restart "
                              "mooring to use \"{}\"",
                              next.data.synchronous));
  if (current.data.dir == next.data.dir) return Commit{};
  // The same directory written another way ("./mooring-data", a full path, a
  // link to it) is no change.
  std::error_code ec;
  if (std::filesystem::equivalent(current.data.dir, next.data.dir, ec) && !ec) return Commit{};
  return refuse(fmt::format(
      "data.dir cannot change while mooring runs (the database is open in \"{}\"); restart "
      "mooring to use \"{}\"",
      current.data.dir, next.data.dir));
}

awaitable<void> StoreComponent::stop(runtime::Deadline) {
  if (!store_) co_return;
  status_.state = ComponentState::stopping;
  if (auto closed = co_await store_->close(); !closed) {
    status_.last_error = closed.error().message;
    log::warn("store: {}", closed.error().message);
  }
  status_.remember("closed");
  status_.state = ComponentState::stopped;
}

// --- provider --------------------------------------------------------------

ProviderComponent::ProviderComponent(asio::any_io_executor executor, ProviderConfig config,
                                     const runtime::ShutdownState* shutdown, SwapCallback on_swap)
    : executor_(std::move(executor)),
      config_(std::move(config)),
      shutdown_(shutdown),
      on_swap_(std::move(on_swap)) {
  status_.name = "provider";
}

awaitable<void> ProviderComponent::start() {
  ++status_.start_attempts;
  try {
    provider_ = make_provider(config_, executor_, shutdown_);
  } catch (const std::exception& e) {
    status_.last_error = fmt::format("provider: cannot use {}: {}", describe_provider(config_), e.what());
    status_.remember(status_.last_error);
    status_.state = ComponentState::failed;
    co_return;
  }
  status_.remember("using " + describe_provider(config_));
  status_.state = ComponentState::running;
}

Prepared ProviderComponent::prepare(const Config& current, const Config& next) {
  if (provider_settings(current.provider) == provider_settings(next.provider)) return Commit{};
  std::shared_ptr<llm::Provider> built;
  try {
    built = make_provider(next.provider, executor_, shutdown_);
  } catch (const std::exception& e) {
    return refuse(fmt::format("provider: cannot use {}: {}", describe_provider(next.provider),
                              e.what()));
  }
  return Commit([this, built, config = next.provider] {
    const auto before = describe_provider(config_);
    config_ = config;
    provider_ = built;
    status_.remember("switched from " + before + " to " + describe_provider(config_));
    log::info("provider: now {}; replies already in progress finish on the previous one",
              describe_provider(config_));
    if (on_swap_) on_swap_(provider_);
  });
}

awaitable<void> ProviderComponent::stop(runtime::Deadline) {
  // Nothing of its own to close: its requests belong to the replies, which the
  // shutdown plan drains and cancels; the shutdown state stops new ones.
  status_.state = ComponentState::stopped;
  co_return;
}

// --- listeners -------------------------------------------------------------

awaitable<void> ListeningComponent::stop(runtime::Deadline deadline) {
  co_await listener_->stop(deadline);
}

// --- gateway ---------------------------------------------------------------

GatewayComponent::GatewayComponent(runtime::Supervisor& supervisor, store::Store& store,
                                   std::shared_ptr<llm::Provider> provider, const Config& config,
                                   chat::GatewayOptions options,
                                   const runtime::ShutdownState* shutdown,
                                   ListenerComponent::ChangeCallback on_change)
    : gateway_(supervisor, store, std::move(provider), options, shutdown),
      onebot_(gateway_.conversations(), onebot_options(config, options)) {
  listener_ = std::make_unique<ListenerComponent>(supervisor, "gateway", config.gateway.listen,
                                                  router(), gateway_limits(config),
                                                  std::move(on_change));
}

// The web routes, then OneBot's on the paths the web routes leave free.
std::shared_ptr<const net::Router> GatewayComponent::router() {
  auto web = std::make_shared<net::Router>();
  gateway_.add_routes(*web);
  auto router = std::make_shared<net::Router>();
  onebot_.add_routes(*router, *web);
  gateway_.add_routes(*router);
  return router;
}

void GatewayComponent::stop_accepting() {
  listener_->stop_accepting();
  gateway_.conversations().stop_deliveries();
  onebot_.hand_over_held();
}

awaitable<void> GatewayComponent::stop(runtime::Deadline deadline) {
  co_await onebot_.settle_sends(runtime::Deadline(deadline.at() - net::close_flush_time));
  co_await ListeningComponent::stop(deadline);
}

awaitable<void> GatewayComponent::start() {
  listener_->open();
  co_await gateway_.recover();
}

Prepared GatewayComponent::prepare(const Config&, const Config& next) {
  auto moved = listener_->prepare_address(next.gateway.listen, next.shutdown.drain_timeout);
  if (!moved) return moved;
  auto next_options = gateway_options(next);
  if (!next_options) return refuse(next_options.error());
  Commit options;
  auto onebot_wanted = onebot_options(next, *next_options);
  if (auto wanted = *next_options;
      !(wanted == gateway_.options()) || !(onebot_wanted == onebot_.options())) {
    options = [this, wanted, onebot_wanted] {
      gateway_.set_options(wanted);
      onebot_.set_options(onebot_wanted);
      listener_->set_router(router());
    };
  }
  Commit limits;
  if (auto wanted = gateway_limits(next); wanted.max_connections != listener_->limits().max_connections)
    limits = [this, wanted] { listener_->set_limits(wanted); };
  return both(both(std::move(options), std::move(limits)), std::move(*moved));
}


// --- admin -----------------------------------------------------------------

AdminComponent::AdminComponent(runtime::Supervisor& supervisor, admin::AdminContext context,
                               const Config& config, ListenerComponent::ChangeCallback on_change)
    : context_(std::move(context)) {
  listener_ = std::make_unique<ListenerComponent>(supervisor, "admin", config.admin.listen,
                                                  admin::make_admin_router(context_),
                                                  admin_limits(), std::move(on_change));
}

awaitable<void> AdminComponent::start() {
  listener_->open();
  co_return;
}

Prepared AdminComponent::prepare(const Config& current, const Config& next) {
  Commit token;
  token_file_changed_ = false;
  if (current.admin.token != next.admin.token || next.admin.token.empty()) {
    // Nothing is created here: a dry run prepares too. A token file to be
    // made is staged beside its place and put there by the commit.
    auto resolved = admin::find_admin_token(next.admin.token, next.data.dir);
    if (!resolved) return refuse("admin: " + resolved.error());
    std::shared_ptr<StagedFile> file;
    if (resolved->to_write) {
      auto staged = StagedFile::stage(resolved->path, admin::token_file_text(resolved->token));
      if (!staged) return refuse("admin: " + staged.error());
      file = std::make_shared<StagedFile>(std::move(*staged));
    }
    const bool same_setting = current.admin.token == next.admin.token;
    token_file_changed_ = same_setting && resolved->token != context_.token;
    if (!same_setting || token_file_changed_) {
      token = [this, resolved = *resolved, file] {
        // Unwritten, the new token could not be read by anyone: the old one stays.
        if (file) {
          if (auto error = file->commit(); !error.empty()) {
            log::error("admin: {}; the admin token stays as it was", error);
            return;
          }
        }
        context_.token = resolved.token;
        listener_->set_router(admin::make_admin_router(context_));
        // Whoever subscribed with the old token is not admitted any more.
        if (context_.events) context_.events->disconnect_all("the admin token changed");
        if (!resolved.path.empty()) log::info("admin: token is in {}", resolved.path);
      };
    }
  }
  Commit hosts;
  if (current.admin.allowed_hosts != next.admin.allowed_hosts) {
    hosts = [this, names = next.admin.allowed_hosts] {
      context_.allowed_hosts = names;
      listener_->set_router(admin::make_admin_router(context_));
    };
  }
  auto moved = listener_->prepare_address(next.admin.listen, next.shutdown.drain_timeout);
  if (!moved) return moved;
  return both(both(std::move(token), std::move(hosts)), std::move(*moved));
}


}  // namespace mooring::app
