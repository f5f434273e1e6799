// HTTP request bytes through the real server code: the input is what one
// client writes on one connection (requests, chunked bodies with extensions
// and trailers, a WebSocket upgrade and its frames); then it stops writing and
// reads everything the server answers until the server closes. The connection
// is one end of a socket pair handed to HttpServer::serve(), the server's own
// entry for an accepted connection. After each input: no crash, no sanitizer
// report, and nothing left behind (the session table and the supervisor are
// empty once the server has stopped).
#include "net/http_server.hpp"
#include "net/router.hpp"
#include "runtime/supervisor.hpp"

#include "support/quiet.hpp"

#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>

#include <sys/socket.h>

namespace {

using namespace mooring;
using namespace std::chrono_literals;
namespace http = net::http;
using net::tcp;
using unix_socket = asio::local::stream_protocol::socket;

[[noreturn]] void fail(const char* what) {
  std::fprintf(stderr, "http_request_fuzz: %s\n", what);
  std::abort();
}

std::shared_ptr<const net::Router> make_router() {
  auto router = std::make_shared<net::Router>();
  router->add(http::verb::get, "/hello", [](net::Request& r) -> awaitable<net::HttpResponse> {
    co_return net::text_response(http::status::ok, "hi", "text/plain", r);
  });
  router->add(
      http::verb::post, "/echo",
      [](net::Request& r) -> awaitable<net::HttpResponse> {
        co_return net::text_response(http::status::ok, r.message.body(), "text/plain", r);
      },
      1024);
  router->add(http::verb::get, "/items/{id}", [](net::Request& r) -> awaitable<net::HttpResponse> {
    co_return net::text_response(http::status::ok, r.params.at("id"), "text/plain", r);
  });
  router->add(http::verb::get, "/throw", [](net::Request&) -> awaitable<net::HttpResponse> {
    throw 42;
    co_return net::HttpResponse{};
  });
  net::WsRoute ws;
  ws.on_open = [](const std::shared_ptr<net::WsConnection>& connection, net::Request&) {
    std::weak_ptr<net::WsConnection> weak = connection;
    connection->on_text = [weak](std::string text) {
      if (text == "throw") throw std::runtime_error("on_text failed");
      if (auto c = weak.lock()) (void)c->send(std::move(text));
    };
  };
  ws.options.max_message_bytes = 4096;
  router->add_websocket("/ws", std::move(ws));
  return router;
}

awaitable<void> write_then_read(unix_socket& client, std::string input, bool& done) {
  // Write errors are expected: the server may answer and close early.
  co_await asio::async_write(client, asio::buffer(input), use_tuple);
  error_code ignored;
  client.shutdown(asio::socket_base::shutdown_send, ignored);
  std::array<char, 4096> sink;
  for (;;) {
    auto [ec, n] = co_await client.async_read_some(asio::buffer(sink), use_tuple);
    if (ec) break;
  }
  done = true;
}

awaitable<void> stop(net::HttpServer& server, bool& stopped) {
  co_await server.stop(runtime::Deadline::after(1s));
  stopped = true;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  mooring::fuzz::quiet_process();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const auto router = make_router();
  asio::io_context io;
  runtime::Supervisor supervisor(io.get_executor());
  net::HttpLimits limits;
  // An input ends with EOF, which ends every wait; these only bound a hang.
  limits.header_timeout = limits.keep_alive_timeout = limits.body_timeout = limits.write_timeout = 2s;
  net::HttpServer server(supervisor, "fuzz", router, limits);

  int pair[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) != 0) fail("socketpair failed");
  tcp::socket server_end(io);
  server_end.assign(tcp::v4(), pair[0]);
  unix_socket client(io);
  client.assign(asio::local::stream_protocol(), pair[1]);
  server.serve(std::move(server_end));

  bool done = false;
  asio::co_spawn(io, write_then_read(client, std::string(reinterpret_cast<const char*>(data), size), done),
                 [](std::exception_ptr e) {
                   if (e) std::rethrow_exception(e);
                 });
  io.run_for(5s);
  if (!done) fail("the server neither answered nor closed within 5 s of the end of the input");
  if (server.connections() != 0) fail("a connection is still in the session table after the server closed it");

  bool stopped = false;
  asio::co_spawn(io, stop(server, stopped), [](std::exception_ptr e) {
    if (e) std::rethrow_exception(e);
  });
  io.restart();
  while (!stopped || supervisor.size() > 0)
    if (io.run_one_for(2s) == 0) break;
  if (!stopped || supervisor.size() != 0) fail("a task outlived its connection");
  return 0;
}
