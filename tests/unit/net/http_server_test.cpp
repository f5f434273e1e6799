#include "net/http_server.hpp"

#include "support/clients.hpp"
#include "support/server_thread.hpp"
#include "support/wait.hpp"

#include <gtest/gtest.h>

#include <atomic>

namespace mooring::net {
namespace {

using namespace std::chrono_literals;
using test::ServerThread;

// What the WebSocket route saw, written on the server thread, read by the test
// after a call() on that thread (which orders the accesses).
struct WsLog {
  std::vector<std::shared_ptr<WsConnection>> open;
  std::vector<WsClosed> closed;
  std::vector<std::string> received;
};

awaitable<void> flood(std::shared_ptr<WsConnection> connection, std::atomic<int>* refused) {
  const std::string chunk(64 * 1024, 'x');
  for (int i = 0; i < 100000; ++i) {
    if (connection->send(chunk)) {
      ++*refused;
      co_return;
    }
    // Let the writer move what it can into the socket before queueing more.
    if (connection->queued() > 16) co_await asio::post(co_await asio::this_coro::executor, asio::use_awaitable);
  }
}

class HttpServerTest : public ::testing::Test {
 protected:
  void start(HttpLimits limits = {}, WsOptions ws_options = {}) {
    auto router = std::make_shared<Router>();
    router->add(http::verb::get, "/hello", [](Request& r) -> awaitable<HttpResponse> {
      co_return text_response(http::status::ok, "hi", "text/plain", r);
    });
    router->add(
        http::verb::post, "/echo",
        [](Request& r) -> awaitable<HttpResponse> {
          co_return text_response(http::status::ok, r.message.body(), "text/plain", r);
        },
        1024);
    router->add(
        http::verb::put, "/big",
        [](Request& r) -> awaitable<HttpResponse> {
          co_return text_response(http::status::ok, std::to_string(r.message.body().size()),
                                  "text/plain", r);
        },
        1024 * 1024);
    router->add(http::verb::get, "/items/{id}", [](Request& r) -> awaitable<HttpResponse> {
      co_return text_response(http::status::ok, r.params.at("id"), "text/plain", r);
    });
    router->add_websocket(
        "/ws", WsRoute{[](Request& r) -> std::optional<HttpResponse> {
                         if (r.query_param("deny"))
                           return error_response(http::status::unauthorized, "unauthorized",
                                                 "denied", r);
                         return std::nullopt;
                       },
                       [this](const std::shared_ptr<WsConnection>& c, Request& r) {
                         ws_.open.push_back(c);
                         c->on_text = [this, c](std::string text) {
                           ws_.received.push_back(text);
                           c->send("echo:" + text);
                         };
                         c->on_closed = [this](const WsClosed& closed) {
                           ws_.closed.push_back(closed);
                         };
                         if (r.query_param("flood"))
                           server_.supervisor().spawn("flood", "test", flood(c, &refused_));
                       },
                       ws_options});
    address_ = server_.run([&] {
      server = std::make_unique<HttpServer>(server_.supervisor(), "test", router, limits);
      auto acceptor = open_listener(server_.io().get_executor(), {"127.0.0.1", 0}, "test");
      server->start(std::move(*acceptor));
      return endpoint_string(*server->local_endpoint());
    });
  }

  void stop(runtime::Duration deadline) {
    server_.call([](HttpServer& s, runtime::Duration d) -> awaitable<bool> {
      co_await s.stop(runtime::Deadline::after(d));
      co_return true;
    }(*server, deadline));
  }

  std::size_t closed_count() {
    return server_.run([&] { return ws_.closed.size(); });
  }

  void TearDown() override {
    if (server) stop(1s);
    server_.run([&] {
      server.reset();
      ws_ = {};
      return true;
    });
  }

  ServerThread server_;
  std::unique_ptr<HttpServer> server;
  std::string address_;
  WsLog ws_;
  std::atomic<int> refused_{0};
};

TEST_F(HttpServerTest, ServesRoutesWithParametersAndJsonErrors) {
  start();
  auto hello = test::http_get(address_, "/hello");
  EXPECT_EQ(hello.status, 200);
  EXPECT_EQ(hello.body, "hi");
  EXPECT_EQ(test::http_get(address_, "/items/42").body, "42");

  auto missing = test::http_get(address_, "/nope?x=1");
  EXPECT_EQ(missing.status, 404);
  EXPECT_EQ(missing.headers["content-type"], "application/json");
  auto error = boost::json::parse(missing.body).at("error");
  EXPECT_EQ(error.at("code"), "not_found");
  EXPECT_EQ(error.at("message"), "no such path: /nope");

  auto wrong = test::http_request(address_, http::verb::delete_, "/hello");
  EXPECT_EQ(wrong.status, 405);
  EXPECT_EQ(boost::json::parse(wrong.body).at("error").at("code"), "method_not_allowed");
}

TEST_F(HttpServerTest, OversizeHeaderIs431AndOversizeBodyIs413) {
  start(HttpLimits{.header_bytes = 4096});
  auto big_header = test::http_request(address_, http::verb::get, "/hello", "",
                                       {{"X-Filler", std::string(8000, 'a')}});
  EXPECT_EQ(big_header.status, 431);
  EXPECT_EQ(boost::json::parse(big_header.body).at("error").at("code"), "header_too_large");

  auto big_body = test::http_request(address_, http::verb::post, "/echo", std::string(2048, 'b'));
  EXPECT_EQ(big_body.status, 413);
  EXPECT_EQ(boost::json::parse(big_body.body).at("error").at("code"), "body_too_large");

  auto fits = test::http_request(address_, http::verb::post, "/echo", std::string(1000, 'c'));
  EXPECT_EQ(fits.status, 200);
  EXPECT_EQ(fits.body.size(), 1000u);
}

// A route may allow more than the default body limit; a path no route has
// gets the default, also for a chunked body, whose size no header announces.
TEST_F(HttpServerTest, EachRouteHasItsOwnBodyLimitAndAnUnknownPathHasTheDefault) {
  start();
  // Sends `head` then `body` (write errors ignored: the server may answer and
  // close before the body is all written) and returns the response's status.
  const auto status_of = [this](const std::string& head, const std::string& body) {
    asio::io_context io;
    auto [host, port] = test::split_address(address_);
    tcp::socket socket(io);
    socket.connect(tcp::endpoint(asio::ip::make_address(host),
                                 static_cast<std::uint16_t>(std::stoi(port))));
    error_code ec;
    asio::write(socket, asio::buffer(head), ec);
    asio::write(socket, asio::buffer(body), ec);
    beast::flat_buffer buffer;
    http::response<http::string_body> response;
    http::read(socket, buffer, response, ec);
    return ec ? 0u : response.result_int();
  };
  const auto with_length = [](std::string_view method, std::string_view path, std::size_t size) {
    return fmt::format("{} {} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n", method, path, size);
  };
  const std::string big(200 * 1024, 'd');
  auto allowed = test::http_request(address_, http::verb::put, "/big", big);
  EXPECT_EQ(allowed.status, 200) << allowed.body;
  EXPECT_EQ(allowed.body, std::to_string(big.size()));
  EXPECT_EQ(status_of(with_length("PUT", "/big", 1024 * 1024 + 1), ""), 413u);
  EXPECT_EQ(status_of(with_length("POST", "/nowhere", big.size()), big), 413u);

  const std::string chunk(70 * 1024, 'f');
  EXPECT_EQ(status_of("POST /nowhere HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
                      fmt::format("{:x}\r\n{}\r\n0\r\n\r\n", chunk.size(), chunk)),
            413u);
  // The server is still there.
  EXPECT_EQ(test::http_request(address_, http::verb::get, "/hello").status, 200);
}

// A client that trickles its headers one byte at a time never finishes them;
// the header timeout is a deadline for the whole header, not per read, so the
// server cuts it off.
TEST_F(HttpServerTest, SlowlorisIsCutByTheHeaderTimeout) {
  start(HttpLimits{.header_timeout = 300ms});
  asio::io_context io;
  bool cut_off = false;
  int bytes_sent = 0;
  auto trickle = [&]() -> awaitable<void> {
    auto [host, port] = test::split_address(address_);
    tcp::socket socket(io);
    co_await socket.async_connect({asio::ip::make_address(host), static_cast<std::uint16_t>(std::stoi(port))},
                                  asio::use_awaitable);
    const std::string start_line = "GET /hello HTTP/1.1\r\nX-Slow: ";
    co_await asio::async_write(socket, asio::buffer(start_line), asio::use_awaitable);
    asio::steady_timer pace(io);
    for (int i = 0; i < 500; ++i) {  // 500 bytes at 20 ms: 10 s if never cut
      // Once the server has closed, a write fails (reset or broken pipe).
      auto [ec, n] = co_await asio::async_write(socket, asio::buffer("a", 1), use_tuple);
      if (ec) {
        cut_off = true;
        co_return;
      }
      ++bytes_sent;
      pace.expires_after(20ms);
      co_await pace.async_wait(asio::use_awaitable);
    }
  };
  asio::co_spawn(io, trickle(), asio::detached);
  io.run_for(20s);
  EXPECT_TRUE(cut_off);
  EXPECT_LT(bytes_sent, 500);
}

TEST_F(HttpServerTest, WebSocketEchoAndARefusedUpgrade) {
  start();
  test::WsClient denied;
  EXPECT_EQ(denied.connect(address_, "/ws?deny=1"), 401);

  test::WsClient client;
  ASSERT_EQ(client.connect(address_, "/ws"), 101);
  client.send("ping?");
  EXPECT_EQ(client.read(), "echo:ping?");
  client.close();
  ASSERT_TRUE(test::poll_until([&] { return closed_count() == 1; }, 10s));
  auto closed = server_.run([&] { return ws_.closed.at(0); });
  EXPECT_TRUE(closed.by_peer);
  EXPECT_EQ(closed.code, 1000);
}

TEST_F(HttpServerTest, AMessageOverTheLimitClosesWith1009) {
  start({}, WsOptions{.max_message_bytes = 1024});
  test::WsClient client;
  ASSERT_EQ(client.connect(address_, "/ws"), 101);
  client.send(std::string(4096, 'z'));
  EXPECT_EQ(client.read(), std::nullopt);
  EXPECT_EQ(client.close_code(), 1009);
}

TEST_F(HttpServerTest, ASlowConsumerIsClosedWith1008AndTheQueueStaysBounded) {
  start({}, WsOptions{.send_queue_limit = 32});
  test::WsClient client;
  ASSERT_EQ(client.connect(address_, "/ws?flood=1"), 101);
  // The client never reads: the kernel buffers fill, the queue fills, and the
  // server gives up on the client instead of growing without limit.
  ASSERT_TRUE(test::poll_until([&] { return closed_count() == 1; }, 20s));
  auto closed = server_.run([&] { return ws_.closed.at(0); });
  EXPECT_EQ(closed.code, 1008);
  EXPECT_EQ(closed.reason, "slow consumer");
  EXPECT_EQ(refused_.load(), 1);
}

TEST_F(HttpServerTest, CloseSendsQueuedFramesFirstAndSendAfterCloseIsAnError) {
  start();
  test::WsClient client;
  ASSERT_EQ(client.connect(address_, "/ws"), 101);
  // The client may see the 101 before the server has run on_open.
  ASSERT_TRUE(test::poll_until([&] { return server_.run([&] { return ws_.open.size(); }) == 1; }, 10s));
  auto after_close = server_.run([&] {
    auto c = ws_.open.at(0);
    c->send("one");
    c->send("two");
    c->close(websocket::close_code::going_away, "bye");
    return c->send("three");
  });
  EXPECT_EQ(after_close, asio::error::not_connected);
  EXPECT_EQ(client.read(), "one");
  EXPECT_EQ(client.read(), "two");
  EXPECT_EQ(client.read(), std::nullopt);
  EXPECT_EQ(client.close_code(), 1001);
  EXPECT_EQ(client.close_reason(), "bye");
}

TEST_F(HttpServerTest, APeerThatDoesNotAnswerPingsIsCutOff) {
  start({}, WsOptions{.heartbeat_interval = 50ms, .heartbeat_timeout = 100ms});
  test::WsClient silent;  // never reads, so never answers a ping
  ASSERT_EQ(silent.connect(address_, "/ws"), 101);
  ASSERT_TRUE(test::poll_until([&] { return closed_count() == 1; }, 10s));

  // A peer that reads answers pings automatically and stays connected.
  test::WsClient lively;
  ASSERT_EQ(lively.connect(address_, "/ws"), 101);
  for (int i = 0; i < 10; ++i) {
    lively.send("tick");
    EXPECT_EQ(lively.read(), "echo:tick");
  }
  EXPECT_EQ(closed_count(), 1u);
}

// A peer that stops reading while frames are being written to it (the socket
// buffers fill, the write never completes) is cut off like a silent one, even
// when the send queue never reaches its limit.
TEST_F(HttpServerTest, APeerThatStopsReadingMidWriteIsCutOff) {
  start({}, WsOptions{.heartbeat_interval = 50ms, .heartbeat_timeout = 100ms});
  test::WsClient stalled;
  ASSERT_EQ(stalled.connect(address_, "/ws"), 101);
  ASSERT_TRUE(test::poll_until([&] { return server_.run([&] { return ws_.open.size(); }) == 1; }, 10s));
  server_.run([&] {
    for (int i = 0; i < 16; ++i) ws_.open.at(0)->send(std::string(1024 * 1024, 'z'));
    return true;
  });
  EXPECT_TRUE(test::poll_until([&] { return closed_count() == 1; }, 10s))
      << "a write blocked on a peer that does not read never ended";
}

// The seed-000 story: stop() with clients that never read, never answer the
// close handshake, or keep an idle TCP connection. It returns by its deadline,
// every socket is closed, and the port can be bound again at once.
TEST_F(HttpServerTest, StopReturnsWithEverySocketClosedWhateverTheClientsDo) {
  start();
  test::WsClient ws_never_reads;
  ASSERT_EQ(ws_never_reads.connect(address_, "/ws"), 101);
  asio::io_context io;
  auto [host, port] = test::split_address(address_);
  tcp::endpoint endpoint(asio::ip::make_address(host), static_cast<std::uint16_t>(std::stoi(port)));
  tcp::socket silent_tcp(io);
  silent_tcp.connect(endpoint);
  tcp::socket half_request(io);
  half_request.connect(endpoint);
  asio::write(half_request, asio::buffer(std::string("GET /hello HTTP/1.1\r\nHost: x\r\n")));
  ASSERT_TRUE(test::poll_until([&] { return server_.run([&] { return server->connections(); }) == 3; }, 10s));

  stop(300ms);
  EXPECT_EQ(server_.run([&] { return server->connections(); }), 0u);
  auto again = open_listener(io.get_executor(), {"127.0.0.1", endpoint.port()}, "again");
  EXPECT_TRUE(again.has_value()) << again.error().message;

  // The clients see their connections end.
  char byte;
  error_code ec;
  silent_tcp.read_some(asio::buffer(&byte, 1), ec);
  EXPECT_TRUE(ec == asio::error::eof || ec == asio::error::connection_reset) << ec.message();
  half_request.read_some(asio::buffer(&byte, 1), ec);
  EXPECT_TRUE(ec == asio::error::eof || ec == asio::error::connection_reset) << ec.message();
}

// Shutdown calls stop() when the drain deadline has passed: the WebSocket
// clients are still told "going away" rather than cut off.
TEST_F(HttpServerTest, StopWithADeadlineAlreadyPassedStillSendsTheCloseFrames) {
  start();
  std::vector<std::unique_ptr<test::WsClient>> clients;
  for (int i = 0; i < 20; ++i) {
    auto& client = *clients.emplace_back(std::make_unique<test::WsClient>());
    ASSERT_EQ(client.connect(address_, "/ws"), 101);
  }
  ASSERT_TRUE(test::poll_until([&] { return server_.run([&] { return server->connections(); }) == 20; }, 10s));

  stop(0ms);
  EXPECT_EQ(server_.run([&] { return server->connections(); }), 0u);
  for (auto& client : clients) {
    EXPECT_EQ(client->read(), std::nullopt);
    EXPECT_EQ(client->close_code(), 1001);
  }
}

}  // namespace
}  // namespace mooring::net
