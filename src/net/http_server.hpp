// An HTTP/1.1 server with WebSocket upgrades: a listening socket, one task per
// connection (owned by the supervisor), limits on header and body size, on
// how long a client may take and on how many connections it holds.
//
// Promises:
// - stop_accepting() closes the listening socket at once: the port is free.
// - stop(deadline) stops accepting, asks every connection to finish (an idle
//   HTTP connection is closed, a busy one after its response, a WebSocket with
//   close 1001 after its queued frames), force-closes whatever is left at the
//   deadline — or after close_flush_time when the deadline had already passed,
//   so the close frames get written — and returns only when every socket of
//   the server is closed. A WebSocket whose peer leaves the close frame
//   unanswered for close_answer_time is closed then, before the deadline.
// - Whatever ends a connection — the peer, a timeout, an exception from a
//   handler or from a WebSocket's on_text — its socket is closed, it leaves
//   the connection table (connections()), its WebSocket's on_closed runs once,
//   and a failure is logged once with the peer. A route handler that throws
//   gets its client a 500.
// - Memory per connection is bounded whatever the client sends: the header by
//   header_bytes; a chunk-size line with its extensions, and the trailers, by
//   chunk_header_bytes (400 beyond); extensions and trailers count toward the
//   route's body limit (413 beyond).
// - A request whose route handler is a CheckedHandler and that has a body
//   gets the handler's check on its header first; a refusal (401...) is sent
//   before any of the body is read, and the connection is closed (after
//   discarding what the client still sends, a bounded amount for a bounded
//   time, so that it reads the answer instead of a reset).
// - At max_connections a new connection waits, beyond the limit, for its
//   request header (header_grace at most; 64 such at once, beyond which the
//   one waiting longest is closed): only a client that has sent a whole header
//   may take the place of another connection, so a client that opens
//   connection after connection and sends nothing whole closes nobody's. Its
//   header in, it takes the place of the connection idle longest (waiting for
//   its next request, or its first, with no byte of it received), else of the
//   one whose request header has been arriving longest, if for more than
//   header_grace — never a connection whose request header is whole (its body
//   being read, the request being handled) nor an upgraded WebSocket. With
//   none of these, it is answered 503 (JSON error) and closed, without routing
//   or upgrading; without a whole header in time, it is closed. When the
//   process is out of descriptors the server gives up a spare one it holds to
//   take the waiting connection (so it stays answerable), backs off (100 ms
//   doubling to 1 s) and logs at most one line a second.
// - Metrics, labelled by the server's name (`listener`): connections refused
//   at max_connections (answered 503, or closed without a whole header in
//   time: mooring_http_connections_refused_total), idle ones
//   closed to admit a new one (mooring_http_idle_connections_closed_total),
//   those closed with their header stalled
//   (mooring_http_slow_header_connections_closed_total) and accepts that
//   failed (mooring_accept_failures_total).
// - A request that sent Expect: 100-continue gets "100 Continue" once its
//   header has passed the checks (a CheckedHandler's, the body limit), before
//   its body is read; a refusal is the final answer instead.
#pragma once

#include "net/listener.hpp"
#include "net/router.hpp"
#include "runtime/supervisor.hpp"

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>

namespace mooring::net {

// How long stop() lets close frames be written when its deadline has passed.
constexpr runtime::Duration close_flush_time = std::chrono::milliseconds(100);
// How long stop() waits for a peer to answer the close frame it was sent
// before it closes the connection (the peer has had the close frame).
constexpr runtime::Duration close_answer_time = std::chrono::milliseconds(250);

struct HttpLimits {
  std::size_t header_bytes = 16 * 1024;
  runtime::Duration header_timeout = 10s;      // the first request's header, whole
  runtime::Duration keep_alive_timeout = 30s;  // waiting for (and reading) a later request's header
  runtime::Duration body_timeout = 30s;
  runtime::Duration write_timeout = 30s;
  // A chunk-size line with its extensions; the last chunk with its trailers.
  std::size_t chunk_header_bytes = 4 * 1024;
  // Connections served at once; beyond, a new one whose request header is in
  // replaces the longest idle, or the one whose request header has been
  // arriving longest (for more than header_grace), or is answered 503 and
  // closed when none may go.
  std::size_t max_connections = 10000;
  // How long a request header may take to arrive whole (a real client's comes
  // in one packet) before its connection may be closed to admit a new one at
  // max_connections; and how long a new connection beyond the limit has to
  // send its header.
  runtime::Duration header_grace = 1s;
};

// A route handler guarded by a check that needs only the request's header (a
// token): the server runs `check` before it reads a body, so a refused client
// cannot make it hold one; the refusal is answered at once and the connection
// closed. Called as a handler, it runs `check` again on the whole request,
// then `handler`. `check` returns the refusal, or nullopt.
struct CheckedHandler {
  std::function<std::optional<HttpResponse>(const Request&)> check;
  HttpHandler handler;

  awaitable<HttpResponse> operator()(Request& request) const;
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

  // Serves a connected socket as if it had just been accepted (the accept loop
  // does this for each connection; a fuzzer or a test passes one end of a
  // socket pair). It counts toward max_connections.
  void serve(TcpSocket socket);

  // Routes for requests that arrive from now on.
  void set_router(std::shared_ptr<const Router> router);
  // Limits for connections accepted from now on (max_connections at once).
  void set_limits(HttpLimits limits);

  bool accepting() const;
  std::optional<tcp::endpoint> local_endpoint() const { return endpoint_; }
  std::size_t connections() const;
  // Connections refused because max_connections were open (answered 503, or
  // closed without a whole request header in time).
  std::uint64_t refused_connections() const;
  // Idle connections closed to admit a new one at max_connections.
  std::uint64_t idle_connections_closed() const;
  // Connections closed, their request header stalled past header_grace, to
  // admit a new one at max_connections.
  std::uint64_t slow_headers_closed() const;
  // Accepts that failed (out of descriptors, mostly) since the last success.
  std::uint64_t accept_failures() const;

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
