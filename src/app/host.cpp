#include "app/host.hpp"

#include "admin/admin_api.hpp"
#include "admin/token.hpp"
#include "app/listener_component.hpp"
#include "app/provider_factory.hpp"
#include "chat/gateway.hpp"
#include "runtime/log.hpp"
#include "runtime/run.hpp"
#include "runtime/shutdown.hpp"
#include "runtime/signals.hpp"
#include "runtime/supervisor.hpp"
#include "store/store.hpp"

#include <boost/json.hpp>

#include <fcntl.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

namespace mooring::app {
namespace {

namespace json = boost::json;
using namespace std::chrono_literals;

// After the forced stage cancels everything, tasks get this long to unwind
// before the host gives up on them and exits anyway.
constexpr runtime::Duration forced_stage_grace = 100ms;

// Writes `content` to `path` atomically: a temporary file in the same
// directory, fsync, rename. Returns an empty string or the error.
std::string write_file_atomically(const std::string& path, const std::string& content) {
  const std::string temp = path + ".tmp";
  int fd = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return fmt::format("cannot write {}: {}", temp, std::strerror(errno));
  bool ok = ::write(fd, content.data(), content.size()) == static_cast<ssize_t>(content.size());
  ok = ok && ::fsync(fd) == 0;
  const int saved = errno;
  ::close(fd);
  if (!ok || std::rename(temp.c_str(), path.c_str()) != 0)
    return fmt::format("cannot write {}: {}", path, std::strerror(ok ? errno : saved));
  return {};
}

class Host {
 public:
  Host(asio::io_context& io, ConfigPtr config, HostOptions options)
      : io_(io),
        config_(std::move(config)),
        options_(std::move(options)),
        supervisor_(io.get_executor()),
        shutdown_requested_(io.get_executor()),
        events_(std::make_shared<admin::EventHub>(io.get_executor())) {}

  awaitable<int> main();

 private:
  bool prepare_data_dir();
  void write_ready_file();
  void component_changed(const ComponentStatus& status);
  json::object status_document() const;
  std::string config_text() const;
  bool ready() const;
  awaitable<void> shut_down(const char* cause);

  asio::io_context& io_;
  ConfigPtr config_;
  HostOptions options_;
  runtime::Supervisor supervisor_;
  runtime::ShutdownState shutdown_;
  runtime::Notifier shutdown_requested_;
  bool stop_requested_ = false;
  bool forced_ = false;
  int stop_signal_ = 0;
  std::shared_ptr<admin::EventHub> events_;
  std::unique_ptr<store::Store> store_;
  std::shared_ptr<llm::Provider> provider_;
  std::unique_ptr<chat::Gateway> gateway_;
  std::unique_ptr<ListenerComponent> gateway_listener_;
  std::unique_ptr<ListenerComponent> admin_;
  Clock::time_point started_ = Clock::now();
};

bool Host::prepare_data_dir() {
  std::error_code ec;
  std::filesystem::create_directories(config_->data.dir, ec);
  if (ec) {
    log::error("cannot create the data directory {}: {}; set [data] dir to a writable path",
               config_->data.dir, ec.message());
    return false;
  }
  return true;
}

void Host::write_ready_file() {
  if (options_.ready_file.empty()) return;
  json::object listeners;
  if (gateway_listener_ && !gateway_listener_->status().listen.empty())
    listeners["gateway"] = gateway_listener_->status().listen;
  if (admin_ && !admin_->status().listen.empty()) listeners["admin"] = admin_->status().listen;
  if (auto error = write_file_atomically(options_.ready_file, json::serialize(listeners) + "\n");
      !error.empty())
    log::warn("{}", error);
}

void Host::component_changed(const ComponentStatus& status) {
  write_ready_file();
  auto event = status.to_json();
  event.erase("history");
  event["type"] = "component";
  events_->publish(event);
}

json::object Host::status_document() const {
  json::array components;
  if (gateway_listener_) components.push_back(gateway_listener_->status().to_json());
  if (admin_) components.push_back(admin_->status().to_json());
  const auto uptime = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - started_);
  return json::object{
      {"ready", ready()},
      {"shutting_down", shutdown_.begun()},
      {"uptime_ms", uptime.count()},
      {"components", std::move(components)},
      {"tasks", supervisor_.size()},
      {"sessions", gateway_ ? gateway_->sessions() : 0},
      {"connections", gateway_ ? gateway_->connections() : 0},
      {"replies_in_flight", gateway_ ? gateway_->replies_in_flight() : 0},
      {"task_failures", supervisor_.failures()},
  };
}

// The configuration file as it is on disk, or the defaults when serving without one.
std::string Host::config_text() const {
  if (options_.config_path.empty()) return default_config_toml();
  std::ifstream in(options_.config_path);
  std::stringstream content;
  content << in.rdbuf();
  return content.str();
}

bool Host::ready() const {
  return !shutdown_.begun() && admin_ && admin_->status().state == ComponentState::running &&
         gateway_listener_ && gateway_listener_->status().state == ComponentState::running;
}

awaitable<int> Host::main() {
  // Signals first: from here on SIGINT/SIGTERM mean the shutdown plan, not death.
  runtime::SignalWatcher signals(
      io_.get_executor(),
      {.graceful_stop =
           [this](int signal) {
             stop_requested_ = true;
             stop_signal_ = signal;
             shutdown_requested_.notify_all();
           },
       .forced_stop =
           [this](int signal) {
             log::info("{} again: skipping the drain", runtime::signal_name(signal));
             forced_ = true;
             shutdown_requested_.notify_all();
           },
       .reload =
           [] {
             log::warn("SIGHUP: configuration reload is not available in this version; "
                       "restart mooring to apply a changed file");
           }});

  if (!prepare_data_dir()) co_return 1;
  auto token = admin::resolve_admin_token(config_->admin.token, config_->data.dir);
  if (!token) {
    log::error("admin: {}", token.error());
    co_return 1;
  }
  if (!token->path.empty()) log::info("admin: token is in {}", token->path);

  events_->capture_logs();

  auto opened = co_await store::Store::open(io_.get_executor(), config_->data.dir);
  if (!opened) {
    log::error("store: {}", opened.error().message);
    signals.close();
    co_return 1;
  }
  store_ = std::move(*opened);
  provider_ = make_provider(config_->provider, io_.get_executor(), &shutdown_);
  const auto& gw = config_->gateway;
  gateway_ = std::make_unique<chat::Gateway>(
      supervisor_, *store_, provider_,
      chat::GatewayOptions{gw.token, config_->chat.history_messages, config_->provider.system_prompt,
                           net::WsOptions{gw.max_message_bytes, gw.send_queue_limit,
                                          gw.heartbeat_interval, gw.heartbeat_timeout,
                                          std::chrono::seconds(5)}});
  auto on_change = [this](const ComponentStatus& status) { component_changed(status); };
  gateway_listener_ = std::make_unique<ListenerComponent>(supervisor_, "gateway", gw.listen,
                                                          gateway_->router(), net::HttpLimits{},
                                                          on_change);

  net::WsOptions event_options;
  event_options.send_queue_limit = 1024;
  admin_ = std::make_unique<ListenerComponent>(
      supervisor_, "admin", config_->admin.listen,
      admin::make_admin_router({token->token, [this] { return status_document(); },
                                [this] { return ready(); }, events_, event_options, store_.get(),
                                &supervisor_, [this] { return config_text(); }}),
      net::HttpLimits{}, on_change);
  gateway_listener_->start();
  admin_->start();
  co_await gateway_->recover();
  log::info("mooring started: provider {}, data in {}", provider_->kind(), config_->data.dir);

  while (!stop_requested_) co_await shutdown_requested_.wait_until(runtime::Deadline::never());
  co_await shut_down(runtime::signal_name(stop_signal_));
  signals.close();
  co_return 0;
}

awaitable<void> Host::shut_down(const char* cause) {
  const auto begun = Clock::now();
  const auto drain_deadline = runtime::Deadline::after(config_->shutdown.drain_timeout);
  log::info("{}: shutting down (drain up to {}; send it again to stop at once)", cause,
            runtime::format_duration(config_->shutdown.drain_timeout));

  // (1) Not ready, and no listener accepts any more: the ports are free now.
  shutdown_.begin();
  gateway_listener_->stop_accepting();
  admin_->stop_accepting();
  const auto connections_at_start =
      gateway_listener_->server().connections() + admin_->server().connections();

  // (2) No new provider request or retry starts (ShutdownState); replies in
  // flight may finish and be delivered until the drain deadline; then clients
  // get close 1001 after their queued frames. A second signal cuts this short.
  auto stop_deadline = forced_ ? runtime::Deadline::after(0ms) : drain_deadline;
  {
    using namespace asio::experimental::awaitable_operators;
    auto forced_signal = [](Host* host) -> awaitable<void> {
      while (!host->forced_)
        co_await host->shutdown_requested_.wait_until(runtime::Deadline::never());
    };
    auto drain = [](Host* host, runtime::Deadline deadline) -> awaitable<void> {
      co_await host->supervisor_.join_group("chat.replies", deadline);
      co_await host->gateway_listener_->stop(deadline);
      co_await host->admin_->stop(deadline);
    };
    co_await (drain(this, stop_deadline) || forced_signal(this));
  }

  // (3) Whatever is left is cancelled and closed.
  gateway_listener_->force_close_all();
  admin_->force_close_all();
  const auto cancelled = supervisor_.cancel_all(asio::cancellation_type::terminal);
  auto stragglers = co_await supervisor_.join(runtime::Deadline::after(forced_stage_grace));
  for (const auto& task : stragglers) log::warn("task {} did not end in time; abandoned", task.name);

  // (4) The store finishes its queued writes and closes.
  if (auto closed = co_await store_->close(); !closed)
    log::warn("store: {}", closed.error().message);

  // (5) One summary line.
  const auto took = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - begun);
  log::info("mooring stopped in {}ms: {} task(s) cancelled, {} connection(s) closed", took.count(),
            cancelled, connections_at_start);
}

}  // namespace

int run_host(ConfigPtr config, const HostOptions& options) {
  asio::io_context io(1);
  Host host(io, std::move(config), options);
  return runtime::run_main(io, host.main());
}

}  // namespace mooring::app
