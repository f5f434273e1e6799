// How long HttpServer::stop() takes with many /api/events clients attached,
// and whether descriptors come back after many stop/start cycles.
//
//   bench_admin_stop [runs=20] [clients=100] [cycles=200]
//
// Two kinds of clients: "polite" ones read and answer the close handshake;
// "lingering" ones never read and never answer, so stop() has to give up on
// them at its deadline (1 s here) and force-close.
#include "admin/admin_api.hpp"
#include "net/http_server.hpp"
#include "runtime/log.hpp"

#include <boost/beast/websocket.hpp>

#include <algorithm>
#include <filesystem>
#include <future>
#include <iostream>
#include <thread>

using namespace mooring;
using namespace std::chrono_literals;
namespace beast = boost::beast;
namespace websocket = beast::websocket;
using tcp = asio::ip::tcp;

namespace {

const std::string token = "bench-token-0123456789abcdef";

std::size_t open_descriptors() {
  std::size_t n = 0;
  for ([[maybe_unused]] auto& e : std::filesystem::directory_iterator("/proc/self/fd")) ++n;
  return n;
}

// The server side: an admin router on its own thread.
struct Server {
  asio::io_context io;
  asio::executor_work_guard<asio::io_context::executor_type> work{io.get_executor()};
  runtime::Supervisor supervisor{io.get_executor()};
  std::shared_ptr<admin::EventHub> hub = std::make_shared<admin::EventHub>(io.get_executor());
  std::shared_ptr<const net::Router> router = admin::make_admin_router(
      {token, [] { return boost::json::object{}; }, [] { return true; }, hub, {}});
  std::unique_ptr<net::HttpServer> http;
  std::thread thread{[this] { io.run(); }};

  template <typename F>
  auto on_thread(F f) {
    std::packaged_task<decltype(f())()> task(std::move(f));
    auto future = task.get_future();
    asio::post(io, [&] { task(); });
    return future.get();
  }

  std::uint16_t start(std::uint16_t port) {
    return on_thread([&] {
      http = std::make_unique<net::HttpServer>(supervisor, "admin", router);
      auto acceptor = net::open_listener(io.get_executor(), {"127.0.0.1", port}, "admin");
      if (!acceptor) throw std::runtime_error(acceptor.error().message);
      http->start(std::move(*acceptor));
      return http->local_endpoint()->port();
    });
  }

  std::chrono::microseconds stop(runtime::Duration deadline) {
    auto future = asio::co_spawn(
        io,
        [](net::HttpServer& s, runtime::Duration d) -> awaitable<std::chrono::microseconds> {
          const auto t0 = Clock::now();
          co_await s.stop(runtime::Deadline::after(d));
          co_return std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - t0);
        }(*http, deadline),
        asio::use_future);
    auto took = future.get();
    on_thread([&] {
      http.reset();
      return 0;
    });
    return took;
  }

  ~Server() {
    work.reset();
    io.stop();
    thread.join();
  }
};

// Clients on their own io_context and thread; polite ones keep reading.
struct Clients {
  asio::io_context io;
  std::vector<std::unique_ptr<websocket::stream<tcp::socket>>> streams;

  void connect(std::uint16_t port, int count, bool polite) {
    for (int i = 0; i < count; ++i) {
      auto ws = std::make_unique<websocket::stream<tcp::socket>>(io);
      ws->next_layer().connect({asio::ip::make_address("127.0.0.1"), port});
      ws->handshake("127.0.0.1", "/api/events?token=" + token);
      if (polite) {
        asio::co_spawn(io, read_until_closed(ws.get()), asio::detached);
      }
      streams.push_back(std::move(ws));
    }
  }
  static awaitable<void> read_until_closed(websocket::stream<tcp::socket>* ws) {
    beast::flat_buffer buffer;
    for (;;) {
      auto [ec, n] = co_await ws->async_read(buffer, use_tuple);
      if (ec) co_return;
      buffer.consume(n);
    }
  }
  void close_all() {
    for (auto& ws : streams) {
      error_code ignored;
      ws->next_layer().close(ignored);
    }
    io.run_for(100ms);
    streams.clear();
  }
};

double median_ms(std::vector<std::chrono::microseconds> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2].count() / 1000.0;
}

}  // namespace

int main(int argc, char** argv) {
  const int runs = argc > 1 ? std::stoi(argv[1]) : 20;
  const int clients = argc > 2 ? std::stoi(argv[2]) : 100;
  const int cycles = argc > 3 ? std::stoi(argv[3]) : 200;
  spdlog::set_level(spdlog::level::warn);

  for (bool polite : {true, false}) {
    std::vector<std::chrono::microseconds> times;
    for (int run = 0; run < runs; ++run) {
      Server server;
      const auto port = server.start(0);
      Clients c;
      std::thread client_thread;
      c.connect(port, clients, polite);
      auto guard = asio::make_work_guard(c.io);
      client_thread = std::thread([&] { c.io.run(); });
      while (server.on_thread([&] { return server.http->connections(); }) <
             static_cast<std::size_t>(clients))
        std::this_thread::yield();
      server.on_thread([&] {
        server.hub->publish({{"type", "log"}, {"line", std::string(200, 'x')}});
        return 0;
      });
      times.push_back(server.stop(1s));
      guard.reset();
      c.io.stop();
      client_thread.join();
      c.close_all();
    }
    const auto max = *std::max_element(times.begin(), times.end());
    std::cout << "stop() with " << clients << (polite ? " polite" : " lingering")
              << " /api/events clients, deadline 1s, " << runs << " runs: median "
              << median_ms(times) << " ms, max " << max.count() / 1000.0 << " ms\n";
  }

  {
    Server server;
    auto port = server.start(0);
    server.stop(50ms);
    const auto before = open_descriptors();
    for (int cycle = 0; cycle < cycles; ++cycle) {
      port = server.start(port);
      Clients c;
      c.connect(port, 1, false);
      while (server.on_thread([&] { return server.http->connections(); }) < 1)
        std::this_thread::yield();
      server.stop(50ms);
      c.close_all();
    }
    std::cout << cycles << " stop/start cycles on port " << port
              << " with a lingering events client: descriptors before " << before << ", after "
              << open_descriptors() << "\n";
  }
  return 0;
}
