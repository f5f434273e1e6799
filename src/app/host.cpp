#include "app/host.hpp"

#include "admin/admin_api.hpp"
#include "admin/token.hpp"
#include "app/components.hpp"
#include "app/staged_file.hpp"
#include "net/buffer_budget.hpp"
#include "net/listener.hpp"
#include "runtime/blocking.hpp"
#include "runtime/descriptors.hpp"
#include "runtime/log.hpp"
#include "runtime/memory.hpp"
#include "runtime/metrics.hpp"
#include "runtime/run.hpp"
#include "runtime/shutdown.hpp"
#include "runtime/signals.hpp"
#include "runtime/supervisor.hpp"
#include "runtime/systemd.hpp"

#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/json.hpp>

#include <algorithm>
#include <deque>
#include <filesystem>

#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

namespace mooring::app {
namespace {

namespace json = boost::json;
namespace http = net::http;
using namespace std::chrono_literals;
using admin::ConfigOutcome;

// After the forced stage cancels everything, tasks get this long to unwind
// before the host gives up on them and exits anyway.
constexpr runtime::Duration forced_stage_grace = 100ms;


// Where PUT /api/config writes when mooring was started without a file: the
// file `serve` reads by default, so the change survives a restart.
constexpr const char* default_config_file = "mooring.toml";

json::array keys_json(const std::vector<std::string>& keys) {
  json::array out;
  for (const auto& key : keys) out.emplace_back(key);
  return out;
}

std::string join(const std::vector<std::string>& words) {
  std::string out;
  for (const auto& word : words) out += (out.empty() ? "" : ", ") + word;
  return out;
}

// Where a listening socket passed by the service manager listens, when other
// machines can reach it ("0.0.0.0:8080"); nullopt for a loopback address
// (or one that cannot be read: a Unix socket is refused later).
std::optional<std::string> reachable_address(int fd) {
  net::tcp::endpoint endpoint;
  socklen_t length = static_cast<socklen_t>(endpoint.capacity());
  if (::getsockname(fd, endpoint.data(), &length) != 0 ||
      (endpoint.data()->sa_family != AF_INET && endpoint.data()->sa_family != AF_INET6))
    return std::nullopt;
  endpoint.resize(length);
  auto address = endpoint.address();
  if (address.is_v6() && address.to_v6().is_v4_mapped())
    address = asio::ip::make_address_v4(asio::ip::v4_mapped, address.to_v6());
  if (address.is_loopback()) return std::nullopt;
  return net::endpoint_string(endpoint);
}

// The rules gateway.listen is held to (auth = "none", OneBot without a token:
// not where others can reach), for a gateway socket the service manager
// passed, which listens where its unit says, whatever gateway.listen says.
std::optional<std::string> open_on_passed_socket(const Config& c, const std::string& address) {
  if (c.gateway.allow_anonymous) return std::nullopt;
  if (c.gateway.auth == "none")
    return fmt::format("the gateway's socket, passed by the service manager, listens on {}, which "
                       "other machines can reach, and gateway.auth is \"none\": anyone could read "
                       "any user's replies; set gateway.auth to \"token\" or \"signed\", listen "
                       "on a loopback address in the unit (ListenStream=127.0.0.1:PORT), or set "
                       "gateway.allow_anonymous = true if that is meant",
                       address);
  if (c.onebot.enabled && c.onebot.access_token.empty())
    return fmt::format("the gateway's socket, passed by the service manager, listens on {}, which "
                       "other machines can reach, and onebot has no access_token: anyone could "
                       "connect as a QQ bot; set onebot.access_token, listen on a loopback address "
                       "in the unit, or set gateway.allow_anonymous = true if that is meant",
                       address);
  return std::nullopt;
}

ConfigOutcome refusal(http::status status, std::string_view code, std::string message,
                      std::uint64_t generation) {
  return {status, json::object{{"error", {{"code", code}, {"message", message}}},
                               {"generation", generation}}};
}

// Reloads by outcome, for alerts: "applied", "invalid" (400), "refused"
// (409: could not be prepared, or would weaken access), "stale" (412),
// "unavailable" (503: starting or shutting down).
runtime::Counter& reloads(std::string_view outcome) {
  return runtime::metrics().counter("mooring_config_reloads_total",
                                    "Configuration changes asked for, by outcome.",
                                    {{"outcome", std::string(outcome)}});
}

void count_reload(http::status status) {
  switch (status) {
    case http::status::ok: reloads("applied").inc(); break;
    case http::status::bad_request: reloads("invalid").inc(); break;
    case http::status::precondition_failed: reloads("stale").inc(); break;
    case http::status::service_unavailable: reloads("unavailable").inc(); break;
    default: reloads("refused").inc(); break;
  }
}

class Host {
 public:
  Host(asio::io_context& io, ConfigPtr config, HostOptions options)
      : io_(io),
        config_(std::move(config)),
        options_(std::move(options)),
        supervisor_(io.get_executor()),
        shutdown_requested_(io.get_executor()),
        events_(std::make_shared<admin::EventHub>(io.get_executor())) {
    config_text_ = options_.config_path.empty() ? default_config_toml() : options_.config_text;
  }

  awaitable<int> main();

 private:
  bool prepare_data_dir();
  void write_ready_file();
  void component_changed(const ComponentStatus& status);
  json::object status_document() const;
  std::string config_text() const;
  bool ready() const;
  awaitable<void> shut_down(const char* cause);

  // The reload transaction (see component.hpp): validate, refuse what would
  // weaken access, prepare every component, write the file if asked, commit.
  // `origin` names the trigger in logs ("PUT /api/config", "SIGHUP"). `text`
  // is what was parsed; with `write_file` it replaces the file. With `commit`
  // false it stops after the preparation (a dry run) and changes nothing.
  struct Change {
    std::string origin;
    std::string source;  // for error lines: the file name, or "request"
    std::string text;
    bool write_file = false;
    bool commit = true;
  };
  awaitable<ConfigOutcome> apply(ConfigResult parsed, Change change);
  // apply(), told to the service manager: RELOADING=1, then READY=1 with
  // the outcome (systemd has no "reload failed"; STATUS= says it).
  awaitable<ConfigOutcome> apply_and_notify(ConfigResult parsed, Change change);
  std::string summary() const;
  static awaitable<void> feed_watchdog(Host* host, runtime::Duration interval);
  awaitable<ConfigOutcome> put_config(std::string text,
                                      std::optional<std::uint64_t> expected_generation,
                                      bool commit);
  awaitable<ConfigOutcome> reload_file(std::string origin);
  static awaitable<void> reload_on_signal(Host* host);

  asio::io_context& io_;
  ConfigPtr config_;
  std::string config_text_;
  std::uint64_t generation_ = 1;
  HostOptions options_;
  runtime::Supervisor supervisor_;
  runtime::ShutdownState shutdown_;
  runtime::Notifier shutdown_requested_;
  bool stop_requested_ = false;
  bool forced_ = false;
  int stop_signal_ = 0;
  std::shared_ptr<admin::EventHub> events_;
  runtime::SystemdNotifier systemd_ = runtime::SystemdNotifier::from_environment();
  // In dependency order; each depends only on those before it.
  std::unique_ptr<StoreComponent> store_;
  std::unique_ptr<ProviderComponent> provider_;
  std::unique_ptr<GatewayComponent> gateway_;
  std::unique_ptr<AdminComponent> admin_;
  std::vector<Component*> components_;
  std::string ready_text_;  // what the ready file says now
  std::string told_status_;  // the last STATUS= sent that summary() made
  // Snapshots of the provider's latency histogram, about one a second over
  // the last ten, for the status document's recent percentiles.
  mutable std::deque<std::pair<Clock::time_point, runtime::Histogram::Snapshot>> latency_window_;
  // The gateway's socket, passed by the service manager, where others can
  // reach it: held to gateway.listen's rules at the start and every reload.
  std::optional<std::string> passed_gateway_reachable_;
  bool running_ = false;  // every component started: reloads are accepted
  bool applying_ = false;  // a change is between its preparation and its commit
  std::uint64_t file_reads_ = 0;  // reloads of the file begun so far
  Clock::time_point started_ = Clock::now();
};

bool Host::prepare_data_dir() {
  std::error_code ec;
  // The conversations are private: the directory is the owner's alone,
  // whatever the umask (the store makes its files 0600).
  const auto old_mask = ::umask(077);
  std::filesystem::create_directories(config_->data.dir, ec);
  ::umask(old_mask);
  if (ec) {
    log::error("cannot create the data directory {}: {}; set [data] dir to a writable path",
               config_->data.dir, ec.message());
    return false;
  }
  std::filesystem::permissions(config_->data.dir, std::filesystem::perms::owner_all,
                               std::filesystem::perm_options::replace, ec);
  if (ec) {
    // It exists: most often another user's (a directory made by root, mooring
    // run as a service user).
    log::error("cannot make the data directory {} private (mode 0700): {}; it must belong to the "
               "user mooring runs as (uid {}): chown it to that user, or set [data] dir to a "
               "directory of theirs",
               config_->data.dir, ec.message(), ::getuid());
    return false;
  }
  return true;
}

// Written once every listener is bound, and again whenever one moves; never
// with a listener missing (a supervisor reading it gets every address or no
// file), left alone by the shutdown and removed once the host has stopped
// (run_host).
void Host::write_ready_file() {
  if (options_.ready_file.empty() || shutdown_.begun() || !gateway_ || !admin_) return;
  const auto& gateway = gateway_->status().listen;
  const auto& admin = admin_->status().listen;
  if (gateway.empty() || admin.empty()) return;
  const auto text = json::serialize(json::object{{"gateway", gateway}, {"admin", admin}}) + "\n";
  if (text == ready_text_) return;
  if (auto error = write_file_atomically(options_.ready_file, text); !error.empty())
    log::warn("{}", error);
  else
    ready_text_ = text;
}

void Host::component_changed(const ComponentStatus& status) {
  write_ready_file();
  // The service manager's status follows a listener that binds later, or
  // stops listening.
  if (running_ && !shutdown_.begun() && !applying_ && systemd_.enabled()) {
    if (auto now = summary(); now != told_status_) {
      told_status_ = now;
      systemd_.status(now);
    }
  }
  auto event = status.to_json();
  event.erase("history");
  event["type"] = "component";
  events_->publish(event);
}

json::object Host::status_document() const {
  json::array components;
  for (const auto* component : components_) components.push_back(component->status().to_json());
  const auto uptime = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - started_);
  auto& chat = gateway_->gateway();
  auto document = json::object{
      {"ready", ready()},
      {"shutting_down", shutdown_.begun()},
      {"uptime_ms", uptime.count()},
      {"generation", generation_},
      {"config_file", options_.config_path},
      {"components", std::move(components)},
      {"tasks", supervisor_.size()},
      {"sessions", chat.sessions()},
      {"connections", chat.connections()},
      {"replies_in_flight", chat.replies_in_flight()},
      {"buffered_bytes", net::buffer_budget().used()},
      {"onebot", gateway_->onebot().status()},
      {"task_failures", supervisor_.failures()},
  };
  // For the panel's live charts: a running total (it computes the rate), and
  // the provider's latency over about the last ten seconds.
  document["messages_total"] =
      runtime::metrics()
          .counter("mooring_messages_received_total",
                   "User messages stored (a resent duplicate is not counted).")
          .value();
  auto& latency = runtime::metrics().histogram(
      "mooring_llm_request_duration_seconds",
      "From asking for a reply to its end (waiting for a slot and retries included).",
      runtime::latency_buckets(), {{"provider", std::string(provider_->provider()->kind())}});
  const auto now = Clock::now();
  auto snapshot = latency.snapshot();
  if (latency_window_.empty() || now - latency_window_.back().first >= 1s)
    latency_window_.emplace_back(now, snapshot);
  while (latency_window_.size() > 1 && now - latency_window_.front().first > 10s)
    latency_window_.pop_front();
  auto delta = snapshot.cumulative;
  for (std::size_t i = 0; i < delta.size(); ++i) delta[i] -= latency_window_.front().second.cumulative[i];
  json::value p50 = nullptr, p99 = nullptr;
  if (auto q = runtime::quantile(latency.bounds(), delta, 0.5)) p50 = *q * 1000;
  if (auto q = runtime::quantile(latency.bounds(), delta, 0.99)) p99 = *q * 1000;
  document["llm_latency_ms"] = json::object{{"p50", p50}, {"p99", p99}};
  return document;
}

// The text of the configuration being served (which the file on disk may no
// longer be, when it was edited and not reloaded, or reloaded and refused).
std::string Host::config_text() const { return config_text_; }

bool Host::ready() const {
  if (shutdown_.begun() || components_.empty()) return false;
  for (const auto* component : components_)
    if (component->status().state != ComponentState::running) return false;
  return true;
}

awaitable<ConfigOutcome> Host::apply(ConfigResult parsed, Change change) {
  const std::string_view origin = change.origin;
  if (shutdown_.begun() || !running_) {
    const auto* why = shutdown_.begun() ? "mooring is shutting down" : "mooring is still starting";
    log::warn("{}: {}; the configuration was not changed", origin, why);
    co_return refusal(http::status::service_unavailable,
                      shutdown_.begun() ? "shutting_down" : "starting",
                      fmt::format("{}; the configuration was not changed", why), generation_);
  }
  if (applying_) {
    log::warn("{}: another configuration change is being applied; this one was not", origin);
    co_return refusal(http::status::conflict, "busy",
                      "another configuration change is being applied; try again", generation_);
  }

  // 1. Validate the whole text: every problem, nothing changed.
  if (auto* errors = std::get_if<std::vector<ConfigError>>(&parsed)) {
    json::array problems;
    for (const auto& error : *errors) {
      log::warn("{}: {}", origin, error.describe(change.source));
      problems.push_back({{"key", error.key},
                          {"line", error.line},
                          {"message", error.message},
                          {"description", error.describe(change.source)}});
    }
    auto message = fmt::format("{} problem(s) in the configuration; nothing was changed",
                               errors->size());
    log::warn("{}: {}; still serving generation {}", origin, message, generation_);
    auto outcome = refusal(http::status::bad_request, "invalid_config", std::move(message),
                           generation_);
    outcome.body.at("error").as_object()["problems"] = std::move(problems);
    co_return outcome;
  }
  ConfigPtr next = std::get<ConfigPtr>(std::move(parsed));

  // 1b. A hot reload never weakens access: dropping a guard is done by a
  //     restart, on purpose, never by a truncated or mistaken file.
  if (auto reasons = weakened_access(*config_, *next); !reasons.empty()) {
    auto message = fmt::format("{}; a reload never weakens access: restart mooring to apply it",
                               join(reasons));
    log::warn("{}: configuration not applied: {}; still serving generation {}", origin, message,
              generation_);
    co_return refusal(http::status::conflict, "weakens_access", std::move(message), generation_);
  }

  if (passed_gateway_reachable_)
    if (auto why = open_on_passed_socket(*next, *passed_gateway_reachable_)) {
      log::warn("{}: configuration not applied: {}; still serving generation {}", origin, *why,
                generation_);
      co_return refusal(http::status::conflict, "weakens_access", std::move(*why), generation_);
    }

  // 2. Prepare every component. A failure drops the commits made so far,
  //    which releases what they hold (a new port is closed again).
  std::vector<Commit> commits;
  for (auto* component : components_) {
    auto prepared = component->prepare(*config_, *next);
    if (!prepared) {
      auto message = prepared.error() + "; nothing was changed";
      log::warn("{}: configuration not applied: {}; still serving generation {}", origin,
                prepared.error(), generation_);
      co_return refusal(http::status::conflict, "not_applied", std::move(message), generation_);
    }
    if (*prepared) commits.push_back(std::move(*prepared));
  }
  auto changed = changed_keys(*config_, *next);
  if (admin_->token_file_changed()) changed.push_back("admin.token");
  if (!change.commit) {
    // The dry run ends here; dropping the commits releases what they hold.
    co_return ConfigOutcome{http::status::ok, json::object{{"valid", true},
                                                           {"generation", generation_},
                                                           {"changed", keys_json(changed)}}};
  }

  // 3. The file, when the text came from a request: replaced before the
  //    commit, so a file that cannot be written changes nothing. The write
  //    and its fsyncs run off the network thread; meanwhile no other change
  //    starts.
  const std::string path = options_.config_path.empty() ? default_config_file : options_.config_path;
  if (change.write_file) {
    applying_ = true;
    struct Applied {
      bool& flag;
      ~Applied() { flag = false; }
    } applied{applying_};
    // Named, not built in the co_await's operand (GCC 12 destroys such
    // temporaries twice).
    auto write = [path, text = change.text] { return replace_keeping_previous(path, text); };
    auto error = co_await runtime::run_blocking(std::move(write));
    if (!error.empty()) {
      log::warn("{}: configuration not applied: {}", origin, error);
      co_return refusal(http::status::conflict, "not_applied", error + "; nothing was changed",
                        generation_);
    }
    options_.config_path = path;
    if (shutdown_.begun()) {
      log::info("{}: {} was written; mooring is shutting down, so it applies at the next start",
                origin, path);
      co_return refusal(http::status::service_unavailable, "shutting_down",
                        fmt::format("mooring is shutting down; {} was written and applies at the "
                                    "next start",
                                    path),
                        generation_);
    }
  }

  // 4. Commit: nothing below can fail.
  config_ = next;
  config_text_ = std::move(change.text);
  ++generation_;
  runtime::set_log_level(config_->log.level);
  runtime::set_max_field_bytes(config_->log.max_field_bytes);
  for (auto& commit : commits) commit();
  // A token just set that can be guessed is said once, when it is set.
  for (const auto& warning : guessable_tokens(*config_))
    if (std::any_of(changed.begin(), changed.end(),
                    [&](const std::string& key) { return warning.starts_with(key + " "); }))
      log::warn("{}: {}", origin, warning);

  log::info("{}: configuration generation {} applied: {}", origin, generation_,
            changed.empty() ? std::string("no changes") : join(changed) + " changed");
  events_->publish({{"type", "config"}, {"generation", generation_}, {"changed", keys_json(changed)}});
  json::object listen;
  for (auto* listener : {&gateway_->listener(), &admin_->listener()})
    listen[listener->name()] = listener->status().listen.empty()
                                   ? json::value(nullptr)
                                   : json::value(listener->status().listen);
  json::object body{{"generation", generation_}, {"changed", keys_json(changed)},
                    {"listen", std::move(listen)}};
  if (change.write_file) body["file"] = path;
  co_return ConfigOutcome{http::status::ok, std::move(body)};
}

awaitable<ConfigOutcome> Host::put_config(std::string text,
                                          std::optional<std::uint64_t> expected_generation,
                                          bool commit) {
  if (expected_generation && *expected_generation != generation_) {
    count_reload(http::status::precondition_failed);
    co_return refusal(http::status::precondition_failed, "generation_changed",
                      fmt::format("the configuration is at generation {} now, not {}: GET "
                                  "/api/config again and apply your change to it",
                                  generation_, *expected_generation),
                      generation_);
  }
  Change change;
  change.origin = commit ? "PUT /api/config" : "POST /api/config/validate";
  change.source = "request";
  change.text = std::move(text);
  change.write_file = commit;
  change.commit = commit;
  auto parsed = parse_config(change.text);
  co_return co_await apply_and_notify(std::move(parsed), std::move(change));
}

awaitable<ConfigOutcome> Host::reload_file(std::string origin) {
  if (options_.config_path.empty()) {
    const auto message = fmt::format(
        "mooring runs on its built-in defaults: there is no file to read; write one "
        "(mooring print-default-config) and start with -c, or PUT /api/config");
    log::warn("{}: {}", origin, message);
    co_return refusal(http::status::conflict, "no_config_file", message, generation_);
  }
  // Reads run off this thread and may end in any order: only the newest
  // read is applied, so two quick SIGHUPs never leave the older file served.
  const auto read_number = ++file_reads_;
  auto read = [path = options_.config_path] { return read_config_text(path); };
  auto text = co_await runtime::run_blocking(std::move(read));
  if (read_number != file_reads_) {
    log::info("{}: a newer reload read {} meanwhile; its outcome stands", origin,
              options_.config_path);
    reloads("superseded").inc();
    co_return refusal(http::status::conflict, "superseded",
                      "a newer reload read the file meanwhile; its outcome stands", generation_);
  }
  // Named before the co_await: GCC 12 miscompiles aggregates built in its operand.
  Change change;
  change.origin = std::move(origin);
  change.source = options_.config_path;
  ConfigResult parsed = std::vector<ConfigError>{};
  if (auto* error = std::get_if<ConfigError>(&text)) {
    parsed = std::vector<ConfigError>{*error};
  } else {
    change.text = std::move(std::get<std::string>(text));
    parsed = parse_config(change.text);
  }
  co_return co_await apply_and_notify(std::move(parsed), std::move(change));
}

awaitable<ConfigOutcome> Host::apply_and_notify(ConfigResult parsed, Change change) {
  // Starting or stopping, nothing is reloaded, and the service manager is not
  // told of a reload (a READY=1 after STOPPING=1 would take the stop back).
  if (!change.commit || shutdown_.begun() || !running_)
    co_return co_await apply(std::move(parsed), std::move(change));
  systemd_.reloading();
  auto outcome = co_await apply(std::move(parsed), std::move(change));
  count_reload(outcome.status);
  if (outcome.status == http::status::ok) {
    systemd_.ready(told_status_ = summary());
  } else {
    const auto* error = outcome.body.if_contains("error");
    const auto* message = error && error->is_object() ? error->as_object().if_contains("message")
                                                      : nullptr;
    std::string reason = message && message->is_string() ? std::string(message->as_string())
                                                         : "refused";
    systemd_.ready("reload refused: " + reason);
  }
  co_return outcome;
}

// One line for the service manager's status: what serves where.
std::string Host::summary() const {
  // A listener that could not bind says so (it retries every second).
  const auto where = [](const Component* component) -> std::string {
    if (!component) return "";
    const auto status = component->status();
    if (!status.listen.empty()) return status.listen;
    return "not listening" + (status.last_error.empty() ? "" : " (" + status.last_error + ")");
  };
  return fmt::format("serving generation {}: gateway {}, admin {}", generation_,
                     where(gateway_.get()), where(admin_.get()));
}

awaitable<void> Host::feed_watchdog(Host* host, runtime::Duration interval) {
  // From the network thread: a wedged event loop stops feeding it, and the
  // service manager restarts the process.
  for (;;) {
    // Not in the loop's condition: GCC 12 mishandles a co_await there.
    const bool elapsed = co_await runtime::sleep_for(interval);
    if (!elapsed) co_return;
    host->systemd_.watchdog();
  }
}

// The outcome of a SIGHUP is in the log (apply logs it); nobody waits for it.
awaitable<void> Host::reload_on_signal(Host* host) {
  std::string origin = "SIGHUP";
  co_await host->reload_file(std::move(origin));
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
       .reload = [this] {
         supervisor_.spawn("configuration reload (SIGHUP)", "config.reload", reload_on_signal(this));
       }});

  // Memory follows what is live, not the largest burst of messages ever seen.
  runtime::return_large_blocks_when_freed();
  // One descriptor per connection: the soft limit services start with (1024)
  // is far below what the hard limit allows.
  const auto descriptors = runtime::raise_descriptor_limit();
  if (descriptors.error)
    log::warn("{}", descriptors.describe());
  else
    log::debug("{}", descriptors.describe());
  if (!prepare_data_dir()) co_return 1;
  auto token = admin::resolve_admin_token(config_->admin.token, config_->data.dir);
  if (!token) {
    log::error("admin: {}", token.error());
    co_return 1;
  }
  if (!token->path.empty()) log::info("admin: token is in {}", token->path);
  for (const auto& warning : guessable_tokens(*config_)) log::warn("{}", warning);

  // Sockets passed by a service manager (socket activation) replace binding.
  static constexpr std::string_view listener_names[] = {"gateway", "admin"};
  auto passed = runtime::take_passed_sockets(listener_names);
  if (!passed) {
    log::error("{}", passed.error());
    co_return 1;
  }
  if (auto it = passed->find("gateway"); it != passed->end()) {
    passed_gateway_reachable_ = reachable_address(it->second);
    if (passed_gateway_reachable_)
      if (auto why = open_on_passed_socket(*config_, *passed_gateway_reachable_)) {
        log::error("{}", *why);
        co_return 1;
      }
  }

  events_->capture_logs();

  // The components, built and started in dependency order.
  const auto executor = io_.get_executor();
  auto on_change = [this](const ComponentStatus& status) { component_changed(status); };
  store_ = std::make_unique<StoreComponent>(executor, config_->data, on_change);
  co_await store_->start();
  if (store_->status().state != ComponentState::running) {
    log::error("store: {}", store_->status().last_error);
    signals.close();
    co_return 1;
  }
  // The data directory is this run's now (the store holds its lock): a
  // ready file at the path was left by an earlier run, not written by one
  // still running (which a second start, refused, must not take from it).
  if (options_.forget_ready_file) options_.forget_ready_file();

  provider_ = std::make_unique<ProviderComponent>(
      executor, config_->provider, &shutdown_,
      [this](std::shared_ptr<llm::Provider> provider) { gateway_->gateway().set_provider(provider); });
  co_await provider_->start();

  auto options = gateway_options(*config_);
  if (!options) {
    log::error("{}", options.error());
    co_await store_->stop(runtime::Deadline::never());
    signals.close();
    co_return 1;
  }
  gateway_ = std::make_unique<GatewayComponent>(supervisor_, *store_->store(),
                                                provider_->provider(), *config_,
                                                std::move(*options), &shutdown_, on_change);

  net::WsOptions event_options;
  event_options.send_queue_limit = 1024;
  admin::AdminContext context{token->token,
                              [this] { return status_document(); },
                              [this] { return ready(); },
                              events_,
                              event_options,
                              store_->store(),
                              &supervisor_,
                              [this] { return config_text(); },
                              [this](std::string text, std::optional<std::uint64_t> expected,
                                     bool commit) {
                                return put_config(std::move(text), expected, commit);
                              },
                              [this] { return reload_file("POST /api/reload"); },
                              [this] { return generation_; }};
  context.allowed_hosts = config_->admin.allowed_hosts;
  admin_ = std::make_unique<AdminComponent>(supervisor_, std::move(context), *config_, on_change);
  components_ = {store_.get(), provider_.get(), gateway_.get(), admin_.get()};
  for (auto* listener : {&gateway_->listener(), &admin_->listener()})
    if (auto it = passed->find(listener->name()); it != passed->end())
      listener->use_passed_socket(it->second);

  co_await gateway_->start();
  co_await admin_->start();
  running_ = true;
  log::info("mooring started: provider {}, data in {}",
            provider_->provider()->kind(), config_->data.dir);
  if (!admin_->status().listen.empty())
    log::info("admin: web panel at http://{}/ (sign in with the admin token)",
              admin_->status().listen);
  systemd_.ready(told_status_ = summary());
  if (auto interval = systemd_.watchdog_interval())
    supervisor_.spawn("systemd watchdog", "systemd", feed_watchdog(this, *interval));

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
  systemd_.stopping(fmt::format("{}: draining for up to {}", cause,
                                runtime::format_duration(config_->shutdown.drain_timeout)));
  shutdown_.begin();
  for (auto it = components_.rbegin(); it != components_.rend(); ++it) (*it)->stop_accepting();
  auto& gateway = gateway_->listener();
  auto& admin = admin_->listener();
  const auto connections_at_start = gateway.connections() + admin.connections();

  // (2) No new provider request or retry starts (ShutdownState); messages
  // read are stored (their replies wait for the restart); replies in
  // flight may finish and be delivered until close_flush_time before the
  // drain deadline; then clients get close 1001 after their queued frames,
  // and what is still open at the deadline is closed. A second signal cuts
  // this short.
  auto stop_deadline = forced_ ? runtime::Deadline::after(0ms) : drain_deadline;
  const auto close_flush =
      std::min<runtime::Duration>(net::close_flush_time, config_->shutdown.drain_timeout);
  const auto replies_deadline = runtime::Deadline(stop_deadline.at() - close_flush);
  {
    using namespace asio::experimental::awaitable_operators;
    auto forced_signal = [](Host* host) -> awaitable<void> {
      while (!host->forced_)
        co_await host->shutdown_requested_.wait_until(runtime::Deadline::never());
    };
    auto drain = [](Host* host, runtime::Deadline replies,
                    runtime::Deadline deadline) -> awaitable<void> {
      co_await host->supervisor_.join_group("chat.inbox", replies);
      co_await host->supervisor_.join_group("chat.replies", replies);
      co_await (host->admin_->stop(deadline) && host->gateway_->stop(deadline));
    };
    co_await (drain(this, replies_deadline, stop_deadline) || forced_signal(this));
  }

  // (3) Whatever is left is cancelled and closed.
  gateway.force_close_all();
  admin.force_close_all();
  const auto cancelled = supervisor_.cancel_all(asio::cancellation_type::terminal);
  auto stragglers = co_await supervisor_.join(runtime::Deadline::after(forced_stage_grace));
  for (const auto& task : stragglers) log::warn("task {} did not end in time; abandoned", task.name);

  // (4) The provider and the store, in reverse order of their start: the
  // store finishes its queued writes and closes.
  co_await provider_->stop(runtime::Deadline::after(0ms));
  co_await store_->stop(runtime::Deadline::never());

  // (5) One summary line.
  const auto took = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - begun);
  log::info("mooring stopped in {}ms: {} task(s) cancelled, {} connection(s) closed", took.count(),
            cancelled, connections_at_start);
}

}  // namespace

namespace {
enum class AtPath { nothing, ready_file, other };

// What is at a ready file's path: nothing, a ready file (a small JSON object
// of the two listeners' addresses, as write_ready_file() writes it), or
// something else, which is not mooring's to replace or remove.
AtPath what_is_at(const std::string& path) {
  std::error_code failed;
  const auto status = std::filesystem::symlink_status(path, failed);
  if (status.type() == std::filesystem::file_type::not_found) return AtPath::nothing;
  if (failed || status.type() != std::filesystem::file_type::regular) return AtPath::other;
  const auto text = read_config_text(path);  // bounded, and says why it cannot
  const auto* read = std::get_if<std::string>(&text);
  if (!read || read->size() > 4096) return AtPath::other;
  boost::system::error_code ec;
  const auto value = json::parse(*read, ec);
  const auto* object = ec ? nullptr : value.if_object();
  const bool ready = object && object->size() == 2 && object->contains("gateway") &&
                     object->contains("admin") && object->at("gateway").is_string() &&
                     object->at("admin").is_string();
  return ready ? AtPath::ready_file : AtPath::other;
}
}  // namespace

int run_host(ConfigPtr config, const HostOptions& options) {
  // The ready file names the listeners of a running host: one left by an
  // earlier run is gone before this one starts, and this one's is gone once
  // it has stopped, so a supervisor waiting for it never reads stale addresses.
  // Anything else at its path (a path given by mistake) is left alone, and
  // nothing starts.
  if (!options.ready_file.empty() && what_is_at(options.ready_file) == AtPath::other) {
    log::error("--ready-file {}: something other than a ready file is there; mooring neither "
               "replaces nor removes it, and did not start: pass another path, or remove it",
               options.ready_file);
    return 2;
  }
  // Removed once the run owns its data directory, and again when it ends;
  // never by a run that did not get that far.
  bool owned = false;
  HostOptions with_forget = options;
  with_forget.forget_ready_file = [&options, &owned] {
    owned = true;
    std::error_code ignored;
    if (!options.ready_file.empty() && what_is_at(options.ready_file) == AtPath::ready_file)
      std::filesystem::remove(options.ready_file, ignored);
  };
  int code = 0;
  {
    asio::io_context io(1);
    Host host(io, std::move(config), with_forget);
    code = runtime::run_main(io, host.main());
  }
  if (owned) with_forget.forget_ready_file();
  return code;
}

}  // namespace mooring::app
