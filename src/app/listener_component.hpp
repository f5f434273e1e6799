// One HTTP listener, the part of the gateway and admin components that owns
// the address (see ListeningComponent in components.hpp). Opening never throws into the
// host: when the address cannot be bound the component goes to `failed` with
// the reason, and binding is retried with backoff (1 s doubling to 30 s) until
// it succeeds; the rest of the host keeps running meanwhile.
//
// On a reload, an unchanged address keeps its socket and every connection on
// it. A changed one is bound first (prepare); on commit the new address starts
// serving, the old one stops accepting at once, and the connections on it are
// asked to finish (a request in progress gets its response, a WebSocket close
// 1001 after its queued frames) and are force-closed after `retire_deadline`.
#pragma once

#include "app/component.hpp"
#include "net/http_server.hpp"
#include "runtime/supervisor.hpp"

#include <functional>
#include <memory>
#include <string>
#include <vector>

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

  // Serves on a socket a service manager passed (socket activation) instead
  // of binding the configured address; call before open().
  void use_passed_socket(int fd) { passed_fd_ = fd; }

  // Binds the address (or takes the passed socket) and serves, or goes to
  // `failed` and retries binding.
  void open();

  // Binds `next` without serving on it. The Commit moves the listener there;
  // dropping it closes the new socket. Same address: nothing to do.
  Prepared prepare_address(const net::ListenAddress& next, runtime::Duration retire_deadline);

  // Routes for requests that arrive from now on; connections keep theirs.
  void set_router(std::shared_ptr<const net::Router> router);
  // Limits for connections accepted from now on.
  void set_limits(net::HttpLimits limits);
  const net::HttpLimits& limits() const { return limits_; }

  const ComponentStatus& status() const { return status_; }
  // Closes the listening socket now: the port is free when this returns.
  void stop_accepting();
  // As HttpServer::stop, for this address and the ones a reload left behind.
  awaitable<void> stop(runtime::Deadline deadline);

  // The forced stage of a shutdown: every connection's socket closed now.
  void force_close_all();
  // Connections open now, on the current address and on addresses left behind.
  std::size_t connections() const;
  const std::string& name() const { return status_.name; }
  const net::ListenAddress& address() const { return address_; }

 private:
  bool try_bind();
  bool try_passed_socket(int fd);
  void serve(net::tcp::acceptor acceptor);
  awaitable<void> retry_bind();
  void move_to(net::ListenAddress next, net::tcp::acceptor acceptor, runtime::Duration retire_deadline);
  awaitable<void> retire(net::HttpServer* server, runtime::Deadline deadline);
  void set_state(ComponentState state);
  void changed();

  runtime::Supervisor& supervisor_;
  net::ListenAddress address_;
  std::shared_ptr<const net::Router> router_;
  net::HttpLimits limits_;
  std::unique_ptr<net::HttpServer> server_;
  // Servers on addresses left behind by a reload, finishing their connections.
  std::vector<std::unique_ptr<net::HttpServer>> retiring_;
  ChangeCallback on_change_;
  runtime::Notifier retired_;
  std::optional<int> passed_fd_;  // given by the service manager, not yet taken
  bool on_passed_socket_ = false;  // serving on it now
  ComponentStatus status_;
};

}  // namespace mooring::app
