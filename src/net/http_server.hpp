// An HTTP/1.1 server with WebSocket upgrades: a listening socket, one task per
// connection (owned by the supervisor), limits on header and body size and on
// how long a client may take.
//
// Promises:
// - stop_accepting() closes the listening socket at once: the port is free.
// - stop(deadline) stops accepting, asks every connection to finish (an idle
//   HTTP connection is closed, a busy one after its response, a WebSocket with
//   close 1001 after its queued frames), force-closes whatever is left at the
//   deadline — or after close_flush_time when the deadline had already passed,
//   so the close frames get written — and returns only when every socket of
//   the server is closed.
#pragma once

#include "net/listener.hpp"
#include "net/router.hpp"
#include "runtime/supervisor.hpp"

#include <map>
#include <memory>
#include <string>

namespace mooring::net {

// How long stop() lets close frames be written when its deadline has passed.
constexpr runtime::Duration close_flush_time = std::chrono::milliseconds(100);

struct HttpLimits {
  std::size_t header_bytes = 16 * 1024;
  runtime::Duration header_timeout = 10s;      // the first request's header, whole
  runtime::Duration keep_alive_timeout = 30s;  // waiting for (and reading) a later request's header
  runtime::Duration body_timeout = 30s;
  runtime::Duration write_timeout = 30s;
};

class HttpServer {
 public:
  // `name` appears in logs and task names ("admin", "gateway").
  HttpServer(runtime::Supervisor& supervisor, std::string name,
             std::shared_ptr<const Router> router, HttpLimits limits = {});
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Starts serving on a socket bound by open_listener.
  void start(tcp::acceptor acceptor);

  // Routes for requests that arrive from now on.
  void set_router(std::shared_ptr<const Router> router);

  bool accepting() const;
  std::optional<tcp::endpoint> local_endpoint() const { return endpoint_; }
  std::size_t connections() const;

  void stop_accepting();
  awaitable<void> stop(runtime::Deadline deadline);
  // Closes every connection's socket now (the forced stage of a shutdown).
  void force_close_all();

  struct State;  // shared with the connection tasks, which may outlive a call to stop()

 private:
  runtime::Supervisor& supervisor_;
  std::shared_ptr<State> state_;
  std::optional<tcp::endpoint> endpoint_;
  runtime::TaskId accept_task_ = 0;
};

}  // namespace mooring::net
