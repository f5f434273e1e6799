#include "app/listener_component.hpp"

#include "runtime/log.hpp"

#include <algorithm>

namespace mooring::app {

using namespace std::chrono_literals;

ListenerComponent::ListenerComponent(runtime::Supervisor& supervisor, std::string name,
                                     net::ListenAddress address,
                                     std::shared_ptr<const net::Router> router,
                                     net::HttpLimits limits, ChangeCallback on_change)
    : supervisor_(supervisor),
      address_(std::move(address)),
      server_(supervisor, name, std::move(router), limits),
      on_change_(std::move(on_change)) {
  status_.name = std::move(name);
}

void ListenerComponent::changed() {
  if (on_change_) on_change_(status_);
}

void ListenerComponent::set_state(ComponentState state) {
  if (status_.state == state) return;
  status_.state = state;
  changed();
}

bool ListenerComponent::try_bind() {
  ++status_.start_attempts;
  auto acceptor = net::open_listener(supervisor_.executor(), address_, status_.name);
  if (!acceptor) {
    status_.last_error = acceptor.error().message;
    status_.remember("bind failed: " + status_.last_error);
    return false;
  }
  server_.start(std::move(*acceptor));
  status_.listen = net::endpoint_string(*server_.local_endpoint());
  status_.next_retry.reset();
  status_.remember("listening on " + status_.listen);
  set_state(ComponentState::running);
  return true;
}

void ListenerComponent::start() {
  set_state(ComponentState::starting);
  if (try_bind()) {
    log::info("{}: listening on {}", status_.name, status_.listen);
    return;
  }
  status_.next_retry = std::chrono::system_clock::now() + 1s;
  set_state(ComponentState::failed);
  log::warn("{}; retrying in 1s while the rest of the host keeps running", status_.last_error);
  supervisor_.spawn(status_.name + " bind retry", status_.name + ".bind", retry_bind());
}

awaitable<void> ListenerComponent::retry_bind() {
  auto delay = runtime::Duration(1s);
  for (;;) {
    status_.next_retry = std::chrono::system_clock::now() + delay;
    if (!co_await runtime::sleep_for(delay)) co_return;
    if (status_.state != ComponentState::failed) co_return;
    if (try_bind()) {
      log::info("{}: listening on {} (bound after {} attempts)", status_.name, status_.listen,
                status_.start_attempts);
      co_return;
    }
    delay = std::min<runtime::Duration>(delay * 2, 30s);
    log::debug("{}; retrying in {}", status_.last_error, runtime::format_duration(delay));
    changed();
  }
}

void ListenerComponent::stop_accepting() {
  supervisor_.cancel_group(status_.name + ".bind");
  status_.next_retry.reset();
  const bool was_listening = server_.accepting();
  server_.stop_accepting();
  if (was_listening) {
    status_.remember("stopped listening on " + status_.listen);
    status_.listen.clear();
    changed();
  }
}

awaitable<void> ListenerComponent::stop(runtime::Deadline deadline) {
  set_state(ComponentState::stopping);
  stop_accepting();
  co_await server_.stop(deadline);
  set_state(ComponentState::stopped);
}

}  // namespace mooring::app
