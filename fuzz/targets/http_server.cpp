// HTTP requests through the real server code: the input is what one client
// writes on one connection (requests, chunked bodies, a WebSocket upgrade and
// its frames), then it stops writing. The server (net::HttpServer with the
// limits it runs with) must answer or close, and the connection must be gone
// from the server and from the supervisor shortly after: no crash, no session
// left behind, no task that outlives its connection.
//
// The connection is a loopback socket: HttpServer accepts its connections from
// a listening socket. Everything runs on one thread, one io_context for the
// whole run.
#include "net/http_server.hpp"
#include "net/listener.hpp"
#include "net/router.hpp"
#include "runtime/supervisor.hpp"

#include <spdlog/spdlog.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>

namespace {

using namespace mooring;
using namespace std::chrono_literals;
namespace http = net::http;
using net::tcp;

[[noreturn]] void fail(const char* what) {
  std::fprintf(stderr, "http_server: %s\n", what);
  std::abort();
}

std::shared_ptr<const net::Router> make_router() {
  auto router = std::make_shared<net::Router>();
  router->add(http::verb::get, "/healthz", [](net::Request& r) -> awaitable<net::HttpResponse> {
    co_return net::text_response(http::status::ok, "ok\n", "text/plain", r);
  });
  // The body comes back: what the server assembled from a chunked or a
  // Content-Length body is what the handler sees.
  router->add(
      http::verb::post, "/echo",
      [](net::Request& r) -> awaitable<net::HttpResponse> {
        co_return net::text_response(http::status::ok, r.message.body(), "text/plain", r);
      },
      1024);
  router->add(
      http::verb::put, "/api/config",
      [](net::Request& r) -> awaitable<net::HttpResponse> {
        co_return net::text_response(http::status::ok, std::to_string(r.message.body().size()),
                                     "text/plain", r);
      },
      1024 * 1024);
  router->add(http::verb::get, "/api/sessions/{user}/messages",
              [](net::Request& r) -> awaitable<net::HttpResponse> {
                auto token = r.query_param("token");
                co_return net::text_response(
                    http::status::ok, r.params.at("user") + (token ? *token : std::string()),
                    "text/plain", r);
              });
  router->add(http::verb::get, "/throws", [](net::Request&) -> awaitable<net::HttpResponse> {
    throw std::runtime_error("a handler that fails");
    co_return net::HttpResponse{};
  });
  net::WsRoute ws;
  ws.admit = [](net::Request& r) -> std::optional<net::HttpResponse> {
    if (r.query_param("token").value_or("") == "refused")
      return net::error_response(http::status::unauthorized, "unauthorized", "no", r);
    return std::nullopt;
  };
  ws.on_open = [](const std::shared_ptr<net::WsConnection>& connection, net::Request&) {
    std::weak_ptr<net::WsConnection> weak = connection;
    connection->on_text = [weak](std::string text) {
      if (auto c = weak.lock()) (void)c->send(std::move(text));
    };
  };
  ws.options.max_message_bytes = 4096;
  router->add_websocket("/ws/{user_id}", std::move(ws));
  return router;
}

struct Harness {
  asio::io_context io;
  runtime::Supervisor supervisor{io.get_executor()};
  std::unique_ptr<net::HttpServer> server;
  tcp::endpoint endpoint;
  std::size_t idle_tasks = 0;

  Harness() {
    // Every log line is formatted (elide() and friends run) and printed nowhere.
    auto quiet = std::make_shared<spdlog::logger>("fuzz");
    quiet->set_level(spdlog::level::trace);
    spdlog::set_default_logger(quiet);
    spdlog::set_level(spdlog::level::trace);

    // Short timeouts: a request the input leaves unfinished ends by EOF
    // anyway, these only bound a hang.
    net::HttpLimits limits;
    limits.header_timeout = 2s;
    limits.keep_alive_timeout = 2s;
    limits.body_timeout = 2s;
    limits.write_timeout = 2s;
    server = std::make_unique<net::HttpServer>(supervisor, "fuzz", make_router(), limits);
    auto acceptor = net::open_listener(io.get_executor(), net::ListenAddress{"127.0.0.1", 0}, "fuzz");
    if (!acceptor) fail("cannot listen on 127.0.0.1");
    server->start(std::move(*acceptor));
    if (!server->local_endpoint()) fail("the server has no address");
    endpoint = *server->local_endpoint();
    idle_tasks = supervisor.size();
  }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static Harness* harness = new Harness;  // lives for the whole run
  auto& h = *harness;

  tcp::socket client(h.io);
  error_code ec;
  client.connect(h.endpoint, ec);
  if (ec) fail("cannot connect to the server");

  bool written = false;
  bool closed = false;
  std::string response;
  asio::async_write(client, asio::buffer(data, size), [&](error_code, std::size_t) {
    error_code ignored;
    client.shutdown(tcp::socket::shutdown_send, ignored);
    written = true;
  });
  auto sink = asio::dynamic_buffer(response, 1 << 20);
  std::function<void(error_code, std::size_t)> on_read = [&](error_code read_ec, std::size_t) {
    if (read_ec) {
      closed = true;
      return;
    }
    asio::async_read(client, sink, asio::transfer_at_least(1), on_read);
  };
  asio::async_read(client, sink, asio::transfer_at_least(1), on_read);

  // The server must end the connection within its own timeouts, and forget it.
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (!(written && closed && h.server->connections() == 0 &&
           h.supervisor.size() == h.idle_tasks)) {
    if (std::chrono::steady_clock::now() > deadline) {
      if (!closed) fail("the server kept the connection open after the client stopped writing");
      if (h.server->connections() != 0) fail("a closed connection is still counted by the server");
      fail("a connection's task outlived its connection");
    }
    h.io.run_one_for(100ms);
  }
  if (!response.empty() && !response.starts_with("HTTP/1.1 ") && !response.starts_with("HTTP/1.0 "))
    fail("the server wrote something that is not an HTTP/1.x response");
  return 0;
}
