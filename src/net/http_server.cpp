#include "net/http_server.hpp"

#include "runtime/log.hpp"

#include <boost/beast/http.hpp>

#include <fmt/format.h>

namespace mooring::net {

namespace beast = boost::beast;

class HttpSession;

struct HttpServer::State {
  runtime::Supervisor* supervisor;
  std::string name;
  std::shared_ptr<const Router> router;
  HttpLimits limits;
  std::optional<tcp::acceptor> acceptor;
  std::map<std::uint64_t, HttpSession*> sessions;
  std::uint64_t next_session = 1;
  runtime::Notifier changed;

  State(runtime::Supervisor& s, std::string n, std::shared_ptr<const Router> r, HttpLimits l)
      : supervisor(&s), name(std::move(n)), router(std::move(r)), limits(l),
        changed(s.executor()) {}
};

// One accepted connection: HTTP requests in a loop, or one WebSocket after an
// upgrade. Lives as long as its task (the coroutine holds the shared_ptr).
class HttpSession : public std::enable_shared_from_this<HttpSession> {
 public:
  HttpSession(std::shared_ptr<HttpServer::State> server, tcp::socket socket)
      : server_(std::move(server)), stream_(std::move(socket)) {
    error_code ec;
    auto peer = stream_.socket().remote_endpoint(ec);
    remote_ = ec ? std::string("unknown peer") : endpoint_string(peer);
  }

  // `id` was registered in the server's session table by the accept loop.
  static awaitable<void> run(std::shared_ptr<HttpSession> self, std::uint64_t id) {
    try {
      co_await self->serve();
    } catch (const boost::system::system_error& e) {
      if (e.code() != asio::error::operation_aborted) throw;
    }
    self->force_close();
    self->server_->sessions.erase(id);
    self->server_->changed.notify_all();
  }

  const std::string& remote() const { return remote_; }

  // Idle: closed now. Busy: closed after the response in progress.
  // WebSocket: close 1001 after the frames already queued.
  void close_gracefully() {
    closing_ = true;
    if (ws_) {
      ws_->close(websocket::close_code::going_away, "server shutting down");
    } else if (idle_) {
      force_close();
    }
  }

  void force_close() {
    if (ws_) {
      ws_->force_close();
      return;
    }
    error_code ignored;
    stream_.socket().shutdown(asio::socket_base::shutdown_both, ignored);
    stream_.socket().close(ignored);
  }

 private:
  awaitable<void> serve() {
    const HttpLimits& limits = server_->limits;
    for (bool first = true; !closing_; first = false) {
      http::request_parser<http::string_body> parser;
      parser.header_limit(static_cast<std::uint32_t>(limits.header_bytes));
      // No body limit while the header is read: Beast would hold Content-Length
      // to it before the route, whose limit counts, is known (checked below).
      parser.body_limit(boost::none);
      stream_.expires_after(first ? limits.header_timeout : limits.keep_alive_timeout);
      idle_ = true;
      auto [ec, n] = co_await http::async_read_header(stream_, buffer_, parser, use_tuple);
      idle_ = false;
      if (ec == http::error::header_limit) {
        auto response = error_response(
            http::status::request_header_fields_too_large, "header_too_large",
            fmt::format("request headers exceed {} bytes", limits.header_bytes), 11, false);
        co_await write(std::move(response));
        co_return;
      }
      if (ec) {
        if (ec == beast::error::timeout) {
          log::debug("{}: closed connection from {}: no complete request in time",
                     server_->name, remote_);
        } else if (!is_expected_ending(ec)) {
          log::debug("{}: bad request from {}: {}", server_->name, remote_, ec.message());
          auto response =
              error_response(http::status::bad_request, "bad_request", ec.message(), 11, false);
          co_await write(std::move(response));
        }
        co_return;
      }

      // Routing uses the header only, so the body limit can be the route's.
      const auto router = server_->router;
      Request request;
      request.remote = remote_;
      auto match = router->match(parser.get().method(), parser.get().target().substr(
                                     0, parser.get().target().find('?')));
      // A path no route matches still has its body read (to answer 404/405
      // on a connection that stays usable), within the default limit.
      const auto limit = match.route ? match.route->body_limit : Router::default_body_limit;
      parser.body_limit(limit);
      bool too_large = parser.content_length() && *parser.content_length() > limit;
      stream_.expires_after(limits.body_timeout);
      if (!too_large && !parser.is_done()) {
        auto [body_ec, body_n] = co_await http::async_read(stream_, buffer_, parser, use_tuple);
        too_large = body_ec == http::error::body_limit;
        if (body_ec && !too_large) co_return;
      }
      if (too_large) {
        auto response = error_response(http::status::payload_too_large, "body_too_large",
                                       fmt::format("request body exceeds {} bytes", limit), 11,
                                       false);
        co_await write(std::move(response));
        co_return;
      }
      request.message = parser.release();
      request.params = std::move(match.params);

      if (!match.route) {
        // Built before the co_await: GCC 12 mishandles temporaries of a
        // conditional expression inside a co_await operand (double free).
        std::string message;
        if (match.status == http::status::not_found) {
          message = fmt::format("no such path: {}", elide(request.path()));
        } else {
          message = fmt::format("{} is not allowed on {}",
                                std::string_view(request.message.method_string()),
                                elide(request.path()));
        }
        auto response = error_response(
            match.status,
            match.status == http::status::not_found ? "not_found" : "method_not_allowed",
            message, request);
        co_await write(std::move(response));
        if (!request.message.keep_alive()) co_return;
        continue;
      }

      if (match.route->ws) {
        co_await upgrade(*match.route->ws, request);
        co_return;
      }

      HttpResponse response;
      try {
        response = co_await match.route->handler(request);
      } catch (const boost::system::system_error& e) {
        if (e.code() == asio::error::operation_aborted) throw;
        log::error("{}: {} {} failed: {}", server_->name,
                   std::string_view(request.message.method_string()), elide(request.path()),
                   elide(e.what()));
        response = error_response(http::status::internal_server_error, "internal",
                                  "the server failed to handle this request; see its log",
                                  request);
      } catch (const std::exception& e) {
        log::error("{}: {} {} failed: {}", server_->name,
                   std::string_view(request.message.method_string()), elide(request.path()),
                   elide(e.what()));
        response = error_response(http::status::internal_server_error, "internal",
                                  "the server failed to handle this request; see its log",
                                  request);
      }
      if (closing_) response.keep_alive(false);
      if (!co_await write(std::move(response))) co_return;
      if (!request.message.keep_alive() || closing_) co_return;
    }
  }

  awaitable<void> upgrade(const WsRoute& route, Request& request) {
    if (!websocket::is_upgrade(request.message)) {
      auto response = error_response(http::status::upgrade_required, "upgrade_required",
                                     "this path speaks WebSocket only", request);
      co_await write(std::move(response));
      co_return;
    }
    if (route.admit) {
      if (auto refusal = route.admit(request)) {
        refusal->keep_alive(false);
        co_await write(std::move(*refusal));
        co_return;
      }
    }
    WsConnection::Stream ws(std::move(stream_));
    ws.set_option(websocket::stream_base::decorator(
        [](websocket::response_type& res) { res.set(http::field::server, "mooring"); }));
    beast::get_lowest_layer(ws).expires_after(server_->limits.header_timeout);
    auto [ec] = co_await ws.async_accept(request.message, use_tuple);
    if (ec) co_return;
    ws_ = std::make_shared<WsConnection>(std::move(ws), route.options, remote_, server_->name);
    if (route.on_open) route.on_open(ws_, request);
    if (closing_) ws_->close(websocket::close_code::going_away, "server shutting down");
    co_await WsConnection::run(ws_);
  }

  awaitable<bool> write(HttpResponse response) {
    stream_.expires_after(server_->limits.write_timeout);
    auto [ec, n] = co_await http::async_write(stream_, response, use_tuple);
    if (!ec && !response.keep_alive()) {
      error_code ignored;
      stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
    }
    co_return !ec;
  }

  std::shared_ptr<HttpServer::State> server_;
  beast::tcp_stream stream_;
  beast::flat_buffer buffer_;
  std::string remote_;
  std::shared_ptr<WsConnection> ws_;
  bool idle_ = true;
  bool closing_ = false;
};

namespace {

awaitable<void> accept_loop(std::shared_ptr<HttpServer::State> state) {
  for (;;) {
    if (!state->acceptor || !state->acceptor->is_open()) co_return;
    auto [ec, socket] = co_await state->acceptor->async_accept(use_tuple);
    if (ec) {
      if (ec == asio::error::operation_aborted || !state->acceptor->is_open()) co_return;
      // Out of descriptors or a similar pressure: say so and back off a little
      // instead of spinning on the same error.
      log::warn("{}: accept failed: {}; retrying in 100ms", state->name, ec.message());
      if (!co_await runtime::sleep_for(std::chrono::milliseconds(100))) co_return;
      continue;
    }
    // Small frames (acks, streamed pieces) must not wait for Nagle's algorithm.
    error_code ignored;
    socket.set_option(tcp::no_delay(true), ignored);
    auto session = std::make_shared<HttpSession>(state, std::move(socket));
    const auto id = state->next_session++;
    state->sessions.emplace(id, session.get());
    state->supervisor->spawn(fmt::format("{} connection {}", state->name, session->remote()),
                             state->name + ".connections", HttpSession::run(session, id));
  }
}

}  // namespace

HttpServer::HttpServer(runtime::Supervisor& supervisor, std::string name,
                       std::shared_ptr<const Router> router, HttpLimits limits)
    : supervisor_(supervisor),
      state_(std::make_shared<State>(supervisor, std::move(name), std::move(router), limits)) {}

HttpServer::~HttpServer() {
  stop_accepting();
  force_close_all();
}

void HttpServer::start(tcp::acceptor acceptor) {
  error_code ec;
  auto endpoint = acceptor.local_endpoint(ec);
  if (!ec) endpoint_ = endpoint;
  state_->acceptor.emplace(std::move(acceptor));
  accept_task_ = supervisor_.spawn(state_->name + " accept loop", state_->name + ".accept",
                                   accept_loop(state_));
}

void HttpServer::set_router(std::shared_ptr<const Router> router) {
  state_->router = std::move(router);
}

bool HttpServer::accepting() const { return state_->acceptor && state_->acceptor->is_open(); }

std::size_t HttpServer::connections() const { return state_->sessions.size(); }

void HttpServer::stop_accepting() {
  if (state_->acceptor && state_->acceptor->is_open()) {
    error_code ignored;
    state_->acceptor->close(ignored);
  }
}

void HttpServer::force_close_all() {
  for (auto& [id, session] : state_->sessions) session->force_close();
}

awaitable<void> HttpServer::stop(runtime::Deadline deadline) {
  stop_accepting();
  // close_gracefully may end a session synchronously; iterate over a copy.
  auto sessions = state_->sessions;
  for (auto& [id, session] : sessions)
    if (state_->sessions.count(id)) session->close_gracefully();
  // A deadline that had already passed (a shutdown whose drain used it up)
  // still lets the close frames just asked for be written: the clients are
  // told "going away" instead of being cut off.
  if (deadline.passed()) deadline = runtime::Deadline::after(close_flush_time);
  while (!state_->sessions.empty() && !deadline.passed())
    co_await state_->changed.wait_until(deadline);
  if (!state_->sessions.empty()) {
    log::info("{}: {} connection(s) did not finish in time; closing them", state_->name,
              state_->sessions.size());
    force_close_all();
  }
  // Every socket is closed now; give the connection tasks a moment to unwind so
  // their memory is released before stop() returns.
  const auto unwind = runtime::Deadline::after(std::chrono::seconds(1));
  while (!state_->sessions.empty() && !unwind.passed())
    co_await state_->changed.wait_until(unwind);
}

}  // namespace mooring::net
