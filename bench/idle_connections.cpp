// Memory per idle WebSocket connection of a running server: reads the
// server's RSS, opens CONNECTIONS WebSocket connections to
// ws://HOST:PORT/PATH_PREFIX<i> (at most 256 handshakes in flight), holds
// them idle (each with a read pending, so pings are answered), waits
// --settle seconds, reads the RSS again, then closes them all.
//
//   bench_idle HOST:PORT PATH_PREFIX CONNECTIONS SERVER_PID [--settle S] [--csv]
//
// Output: one line for a reader, or with --csv one machine-readable line:
//   csv,CONNECTIONS_OPEN,RSS_BEFORE_KIB,RSS_AFTER_KIB,KIB_PER_CONNECTION,CONNECT_SECONDS,FAILED
// The exit status is 1 when any connection failed to open or was closed by
// the server while idle.
#include "runtime/asio.hpp"

#include <boost/beast/core.hpp>
#include <boost/beast/websocket.hpp>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

using namespace mooring;
namespace beast = boost::beast;
namespace websocket = beast::websocket;
using tcp = asio::ip::tcp;

namespace {

long rss_kib(int pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(in, line);)
    if (line.starts_with("VmRSS:")) return std::stol(line.substr(6));
  return -1;
}

using Stream = websocket::stream<beast::tcp_stream>;

struct Held {
  explicit Held(asio::io_context& io) : ws(io) {}
  Stream ws;
  beast::flat_buffer buffer;
};

struct State {
  int open = 0;
  int failed = 0;
  int dropped = 0;  // closed by the server while held
  std::string first_error;
  bool closing = false;
  void fail(const std::string& what) {
    if (first_error.empty()) first_error = what;
    ++failed;
  }
};

// Keeps a read pending so control frames (ping, close) are handled; returns
// when the server closes the connection or when we close it.
awaitable<void> hold(std::shared_ptr<Held> held, State& state) {
  auto [ec, n] = co_await held->ws.async_read(held->buffer, use_tuple);
  if (!state.closing) {
    ++state.dropped;
    if (state.first_error.empty()) state.first_error = "dropped while idle: " + ec.message();
  }
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> positional;
  double settle = 2.0;
  bool csv = false;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--csv") csv = true;
    else if (arg == "--settle" && i + 1 < argc) settle = std::stod(argv[++i]);
    else positional.push_back(arg);
  }
  if (positional.size() != 4 || positional[0].rfind(':') == std::string::npos) {
    std::cerr << "usage: bench_idle HOST:PORT PATH_PREFIX CONNECTIONS SERVER_PID [--settle S] [--csv]\n";
    return 2;
  }
  const auto colon = positional[0].rfind(':');
  const std::string host = positional[0].substr(0, colon);
  const std::string port = positional[0].substr(colon + 1);
  const std::string prefix = positional[1];
  const int connections = std::stoi(positional[2]);
  const int pid = std::stoi(positional[3]);

  asio::io_context io(1);
  State state;
  std::vector<std::shared_ptr<Held>> held;
  held.reserve(static_cast<std::size_t>(connections));
  const long before = rss_kib(pid);
  const auto t0 = Clock::now();
  double connect_seconds = 0;
  long after = -1;

  asio::co_spawn(io, [&]() -> awaitable<void> {
    auto executor = co_await asio::this_coro::executor;
    tcp::resolver resolver(executor);
    const auto endpoints = co_await resolver.async_resolve(host, port, asio::use_awaitable);
    // Opens connections [next, connections) on one of `lanes` lanes.
    int next = 0;
    auto lane = [&]() -> awaitable<void> {
      while (next < connections) {
        const int index = next++;
        auto connection = std::make_shared<Held>(io);
        beast::get_lowest_layer(connection->ws).expires_after(std::chrono::seconds(30));
        auto [ec, endpoint] =
            co_await beast::get_lowest_layer(connection->ws).async_connect(endpoints, use_tuple);
        if (!ec)
          std::tie(ec) = co_await connection->ws.async_handshake(
              host, prefix + std::to_string(index), use_tuple);
        if (ec) {
          state.fail(ec.message());
          continue;
        }
        beast::get_lowest_layer(connection->ws).expires_never();
        ++state.open;
        held.push_back(connection);
        asio::co_spawn(executor, hold(connection, state), asio::detached);
      }
    };
    const int count = std::min(256, std::max(1, connections));
    int running = count;
    asio::steady_timer lanes_done(executor, Clock::time_point::max());
    for (int i = 0; i < count; ++i)
      asio::co_spawn(executor, lane(), [&](std::exception_ptr) {
        if (--running == 0) lanes_done.cancel();
      });
    co_await lanes_done.async_wait(use_tuple);
    connect_seconds = std::chrono::duration<double>(Clock::now() - t0).count();

    asio::steady_timer wait(executor);
    wait.expires_after(std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(settle)));
    co_await wait.async_wait(use_tuple);
    after = rss_kib(pid);

    state.closing = true;
    for (auto& connection : held) beast::get_lowest_layer(connection->ws).close();
  }, [&](std::exception_ptr e) {
    if (!e) return;
    try {
      std::rethrow_exception(e);
    } catch (const std::exception& error) {
      state.fail(error.what());
    }
  });
  io.run();

  const double per = state.open > 0 && after >= 0 && before >= 0
      ? static_cast<double>(after - before) / state.open
      : 0.0;
  const int problems = state.failed + state.dropped;
  if (csv) {
    std::printf("csv,%d,%ld,%ld,%.2f,%.3f,%d\n", state.open, before, after, per, connect_seconds, problems);
  } else {
    std::printf("%d idle connections open (in %.2f s): RSS %ld KiB before, %ld KiB after = %.2f KiB "
                "per connection; %d failed, %d dropped\n",
                state.open, connect_seconds, before, after, per, state.failed, state.dropped);
  }
  if (!state.first_error.empty()) std::fprintf(stderr, "bench_idle: first failure: %s\n", state.first_error.c_str());
  return problems == 0 ? 0 : 1;
}
