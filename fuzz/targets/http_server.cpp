// HTTP request bytes through the real server code: the input is what one
// client writes on one connection (requests, chunked bodies with extensions
// and trailers, a WebSocket upgrade and its frames); then it stops writing and
// reads everything the server answers until the server closes. The connection
// is one end of a socket pair handed to HttpServer::serve(), the server's own
// entry for an accepted connection. After each input: no crash, no sanitizer
// report, and nothing left behind (the session table and the supervisor are
// empty once the server has stopped).
#include "net/buffer_budget.hpp"
#include "net/http_server.hpp"
#include "net/router.hpp"
#include "runtime/supervisor.hpp"

#include "support/one_connection.hpp"
#include "support/quiet.hpp"

#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <optional>
#include <string>
#include <vector>


namespace {

using namespace mooring;
using namespace std::chrono_literals;
namespace http = net::http;

// The connections the input opened: none may outlive the server's stop.
std::vector<std::weak_ptr<net::WsConnection>> opened;

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
  // The gateway's origin rule, on Origin and Host headers as the input sends them.
  ws.admit = [](net::Request& r) -> std::optional<net::HttpResponse> {
    static const std::vector<std::string> listed{"https://listed.example"};
    if (net::origin_admitted(r, listed)) return std::nullopt;
    return net::error_response(http::status::forbidden, "origin_not_allowed", "no", r);
  };
  ws.on_open = [](const std::shared_ptr<net::WsConnection>& connection, net::Request&) {
    std::weak_ptr<net::WsConnection> weak = connection;
    opened.push_back(weak);
    connection->on_text = [weak](std::string text) {
      if (text == "throw") throw std::runtime_error("on_text failed");
      if (auto c = weak.lock()) (void)c->send(std::move(text));
    };
  };
  ws.options.max_message_bytes = 4096;
  // Within the harness's 5 s: a close left unanswered ends in time.
  ws.options.close_timeout = std::chrono::seconds(1);
  // As a OneBot bridge's: a message over the limit, up to four times it, is
  // read and dropped with the connection kept.
  auto dropping = ws;
  dropping.options.dropped_message_max = 4 * ws.options.max_message_bytes;
  dropping.options.shed_when_over_budget = false;
  router->add_websocket("/ws", std::move(ws));
  router->add_websocket("/drop", std::move(dropping));
  return router;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  mooring::fuzz::quiet_process();
  // Below two of the route's largest messages: a message past about 2 KB
  // takes the refusal (1013) and discarding path, a shorter one is read.
  net::buffer_budget().set_limit(6000);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const auto router = make_router();
  {
    asio::io_context io;
    runtime::Supervisor supervisor(io.get_executor());
    net::HttpServer server(supervisor, "fuzz", router, fuzz::short_limits());
    fuzz::serve_one_connection("http_server", io, supervisor, server,
                               std::string(reinterpret_cast<const char*>(data), size));
    for (const auto& connection : opened)
      if (!connection.expired())
        fuzz::fail("http_server", "a WebSocket connection outlived the server's stop");
    opened.clear();
  }
  // Whatever the connection did, what it held was given back.
  if (net::buffer_budget().used() != 0) fuzz::fail("http_server", "the buffer budget was not given back");
  return 0;
}
