// A component that serves HTTP on one address. start() never throws into the
// host: when the address cannot be bound the component goes to `failed` with
// the reason, and binding is retried with backoff (1 s doubling to 30 s) until
// it succeeds; the rest of the host keeps running meanwhile.
#pragma once

#include "app/component.hpp"
#include "net/http_server.hpp"
#include "runtime/supervisor.hpp"

#include <functional>
#include <memory>
#include <string>

namespace mooring::app {

class ListenerComponent {
 public:
  // `on_change` runs after every change of state or of the bound address (the
  // host rewrites its ready file and publishes the event then).
  using ChangeCallback = std::function<void(const ComponentStatus&)>;
  ListenerComponent(runtime::Supervisor& supervisor, std::string name, net::ListenAddress address,
                    std::shared_ptr<const net::Router> router, net::HttpLimits limits,
                    ChangeCallback on_change);
  ListenerComponent(const ListenerComponent&) = delete;
  ListenerComponent& operator=(const ListenerComponent&) = delete;

  void start();
  void stop_accepting();
  awaitable<void> stop(runtime::Deadline deadline);
  void force_close_all() { server_.force_close_all(); }

  const ComponentStatus& status() const { return status_; }
  const std::string& name() const { return status_.name; }
  net::HttpServer& server() { return server_; }

 private:
  bool try_bind();
  awaitable<void> retry_bind();
  void set_state(ComponentState state);
  void changed();

  runtime::Supervisor& supervisor_;
  net::ListenAddress address_;
  net::HttpServer server_;
  ChangeCallback on_change_;
  ComponentStatus status_;
};

}  // namespace mooring::app
