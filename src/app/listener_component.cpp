#include "app/listener_component.hpp"

#include "runtime/cancellation.hpp"
#include "runtime/log.hpp"

#include <algorithm>

#include <fmt/format.h>
#include <sys/socket.h>

namespace mooring::app {

using namespace std::chrono_literals;

ListenerComponent::ListenerComponent(runtime::Supervisor& supervisor, std::string name,
                                     net::ListenAddress address,
                                     std::shared_ptr<const net::Router> router,
                                     net::HttpLimits limits, ChangeCallback on_change)
    : supervisor_(supervisor),
      address_(std::move(address)),
      router_(std::move(router)),
      limits_(limits),
      server_(std::make_unique<net::HttpServer>(supervisor, name, router_, limits)),
      on_change_(std::move(on_change)),
      retired_(supervisor.executor()) {
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
  serve(std::move(*acceptor));
  return true;
}

void ListenerComponent::serve(net::tcp::acceptor acceptor) {
  server_->start(std::move(acceptor));
  status_.listen = net::endpoint_string(*server_->local_endpoint());
  status_.next_retry.reset();
  status_.remember("listening on " + status_.listen);
  set_state(ComponentState::running);
}

// The service manager keeps its own copy of a passed socket and hands it to
// the next start too: closing ours is fine, shutting it down is not (and
// nothing here does).
bool ListenerComponent::try_passed_socket(int fd) {
  ++status_.start_attempts;
  sockaddr_storage address{};
  socklen_t length = sizeof address;
  error_code ec;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) != 0)
    ec = error_code(errno, boost::system::system_category());
  net::tcp::acceptor acceptor(supervisor_.executor());
  if (!ec)
    acceptor.assign(address.ss_family == AF_INET6 ? net::tcp::v6() : net::tcp::v4(), fd, ec);
  if (ec) {
    status_.last_error = fmt::format("{}: cannot use the socket passed by the service manager (fd "
                                     "{}): {}",
                                     status_.name, fd, ec.message());
    status_.remember(status_.last_error);
    return false;
  }
  serve(std::move(acceptor));
  on_passed_socket_ = true;
  return true;
}

void ListenerComponent::open() {
  if (server_->accepting()) return;
  set_state(ComponentState::starting);
  if (auto fd = std::exchange(passed_fd_, std::nullopt)) {
    if (try_passed_socket(*fd)) {
      log::info("{}: listening on {} (socket passed by the service manager)", status_.name,
                status_.listen);
      return;
    }
    log::warn("{}; binding {} instead", status_.last_error, address_.to_string());
  }
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

Prepared ListenerComponent::prepare_address(const net::ListenAddress& next,
                                            runtime::Duration retire_deadline) {
  if (next == address_) return Commit{};
  // The socket it has, written another way ("localhost" for 127.0.0.1, the
  // port it got for port 0, or port 0 again): kept, not bound a second time.
  if (server_ && server_->local_endpoint()) {
    const auto bound = *server_->local_endpoint();
    const auto wanted = net::listen_endpoint(next);
    if (wanted && wanted->address() == bound.address() &&
        (next.port == 0 || next.port == bound.port()))
      return Commit([this, next] { address_ = next; });
  }
  auto acceptor = net::open_listener(supervisor_.executor(), next, status_.name);
  if (!acceptor) return Prepared(boost::system::in_place_error, acceptor.error().message);
  // std::function needs a copyable callable: the socket travels in a shared_ptr
  // and closes with it when the commit is dropped.
  auto bound = std::make_shared<net::tcp::acceptor>(std::move(*acceptor));
  return Commit([this, next, bound, retire_deadline] {
    move_to(next, std::move(*bound), retire_deadline);
  });
}

void ListenerComponent::move_to(net::ListenAddress next, net::tcp::acceptor acceptor,
                                runtime::Duration retire_deadline) {
  // A listener still retrying its old address gives that up.
  supervisor_.cancel_group(status_.name + ".bind");
  const std::string before = status_.listen;
  if (std::exchange(on_passed_socket_, false))
    log::info("{}: {} was passed by the service manager; mooring binds {} itself from now on "
              "(the socket unit still names the old address)",
              status_.name, before, next.to_string());
  auto old = std::exchange(server_,
                           std::make_unique<net::HttpServer>(supervisor_, status_.name, router_, limits_));
  address_ = std::move(next);
  server_->start(std::move(acceptor));
  old->stop_accepting();
  status_.listen = net::endpoint_string(*server_->local_endpoint());
  status_.next_retry.reset();
  status_.last_error.clear();
  if (before.empty()) {
    status_.remember("listening on " + status_.listen);
    log::info("{}: listening on {}", status_.name, status_.listen);
  } else {
    status_.remember("moved from " + before + " to " + status_.listen);
    log::info("{}: moved from {} to {}; connections on the old address finish their current "
              "request and are closed",
              status_.name, before, status_.listen);
  }
  if (old->connections() > 0) {
    auto* retiring = old.get();
    retiring_.push_back(std::move(old));
    supervisor_.spawn(status_.name + " old address", status_.name + ".retire",
                      retire(retiring, runtime::Deadline::after(retire_deadline)));
  }
  status_.state = ComponentState::running;
  changed();
}

awaitable<void> ListenerComponent::retire(net::HttpServer* server, runtime::Deadline deadline) {
  try {
    co_await server->stop(deadline);
  } catch (const std::exception& e) {
    // Cancelled (by an operator or the shutdown), or broken: either way,
    // whatever is left closes now and the server is forgotten.
    if (!runtime::is_cancellation(e))
      log::error("{}: retiring the old address failed: {}", status_.name, e.what());
    server->force_close_all();
  }
  std::erase_if(retiring_, [server](const auto& s) { return s.get() == server; });
  retired_.notify_all();
}

void ListenerComponent::set_limits(net::HttpLimits limits) {
  limits_ = limits;
  server_->set_limits(limits_);
}

void ListenerComponent::set_router(std::shared_ptr<const net::Router> router) {
  router_ = std::move(router);
  server_->set_router(router_);
}

void ListenerComponent::stop_accepting() {
  supervisor_.cancel_group(status_.name + ".bind");
  status_.next_retry.reset();
  const bool was_listening = server_->accepting();
  server_->stop_accepting();
  if (was_listening) {
    status_.remember("stopped listening on " + status_.listen);
    status_.listen.clear();
    changed();
  }
}

awaitable<void> ListenerComponent::stop(runtime::Deadline deadline) {
  set_state(ComponentState::stopping);
  stop_accepting();
  co_await server_->stop(deadline);
  // Addresses left behind by a reload are finishing their connections by a
  // deadline of their own; the earlier of the two counts now.
  while (!retiring_.empty() && !deadline.passed()) co_await retired_.wait_until(deadline);
  for (auto& server : retiring_) server->force_close_all();
  set_state(ComponentState::stopped);
}

void ListenerComponent::force_close_all() {
  server_->force_close_all();
  for (auto& server : retiring_) server->force_close_all();
}

std::size_t ListenerComponent::connections() const {
  std::size_t n = server_->connections();
  for (const auto& server : retiring_) n += server->connections();
  return n;
}

}  // namespace mooring::app
