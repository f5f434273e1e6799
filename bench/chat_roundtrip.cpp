// Chat round trips against a running gateway (mooring or the reference peer):
// N WebSocket clients each send a message and wait for its `chat` reply, M
// times over. Reports messages per second and p50/p99 latency; with a server
// pid, also the server's CPU seconds (from /proc/<pid>/stat).
//
//   bench_chat HOST:PORT CLIENTS MESSAGES_PER_CLIENT [SERVER_PID]
#include "runtime/asio.hpp"

#include <boost/beast/core.hpp>
#include <boost/beast/websocket.hpp>
#include <boost/json.hpp>

#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <iostream>
#include <sstream>

using namespace mooring;
namespace beast = boost::beast;
namespace websocket = beast::websocket;
using tcp = asio::ip::tcp;

namespace {

double cpu_seconds(int pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  std::getline(in, line);
  std::istringstream fields(line.substr(line.rfind(')') + 2));
  std::string skip;
  for (int i = 0; i < 11; ++i) fields >> skip;  // fields 3..13
  long utime = 0, stime = 0;
  fields >> utime >> stime;
  return static_cast<double>(utime + stime) / static_cast<double>(sysconf(_SC_CLK_TCK));
}

awaitable<void> client(std::string host, std::string port, int index, int messages,
                       std::vector<double>* latencies_ms, int* failures) {
  try {
    tcp::resolver resolver(co_await asio::this_coro::executor);
    auto endpoints = co_await resolver.async_resolve(host, port, asio::use_awaitable);
    websocket::stream<beast::tcp_stream> ws(co_await asio::this_coro::executor);
    co_await beast::get_lowest_layer(ws).async_connect(endpoints, asio::use_awaitable);
    co_await ws.async_handshake(host, "/ws/bench-" + std::to_string(index), asio::use_awaitable);
    beast::flat_buffer buffer;
    for (int m = 0; m < messages; ++m) {
      const auto t0 = Clock::now();
      const std::string frame = boost::json::serialize(boost::json::object{
          {"text", "round trip number " + std::to_string(m)},
          {"id", "c" + std::to_string(index) + "-" + std::to_string(m)}});
      co_await ws.async_write(asio::buffer(frame), asio::use_awaitable);
      for (;;) {
        co_await ws.async_read(buffer, asio::use_awaitable);
        auto value = boost::json::parse(beast::buffers_to_string(buffer.data()));
        buffer.consume(buffer.size());
        if (value.at("type") == "chat") break;
      }
      latencies_ms->push_back(
          std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
    }
    co_await ws.async_close(websocket::close_code::normal, asio::use_awaitable);
  } catch (const std::exception&) {
    ++*failures;
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 4) {
    std::cerr << "usage: bench_chat HOST:PORT CLIENTS MESSAGES_PER_CLIENT [SERVER_PID]\n";
    return 2;
  }
  const std::string address = argv[1];
  const auto colon = address.rfind(':');
  const int clients = std::stoi(argv[2]);
  const int messages = std::stoi(argv[3]);
  const int pid = argc > 4 ? std::stoi(argv[4]) : 0;

  asio::io_context io;
  std::vector<double> latencies;
  int failures = 0;
  const double cpu_before = pid ? cpu_seconds(pid) : 0;
  const auto t0 = Clock::now();
  for (int i = 0; i < clients; ++i)
    asio::co_spawn(io, client(address.substr(0, colon), address.substr(colon + 1), i, messages,
                              &latencies, &failures),
                   asio::detached);
  io.run();
  const double seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  const double cpu = pid ? cpu_seconds(pid) - cpu_before : 0;
  std::sort(latencies.begin(), latencies.end());
  auto percentile = [&](double p) {
    return latencies.empty() ? 0.0 : latencies[static_cast<std::size_t>(p * (latencies.size() - 1))];
  };
  std::cout << clients << " clients x " << messages << " messages: " << latencies.size()
            << " round trips in " << seconds << " s = " << latencies.size() / seconds
            << " msg/s, p50 " << percentile(0.5) << " ms, p99 " << percentile(0.99)
            << " ms, server CPU " << cpu << " s, failed clients " << failures << "\n";
  return failures == 0 ? 0 : 1;
}
