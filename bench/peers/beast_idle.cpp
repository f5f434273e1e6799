// A raw Beast WebSocket echo server, the transport alone: one thread, one
// coroutine per connection (accept, handshake, then read a message and write
// it back), no application state. bench/chat_vs_peer.sh measures its memory
// per idle connection beside mooring's /ws/<user> and Node's `ws`.
//
//   bench_beast_idle [PORT]     (0 or none: any free port; the port is printed)
#include "loopback_server.hpp"
#include "runtime/asio.hpp"

#include <boost/beast/core.hpp>
#include <boost/beast/websocket.hpp>

#include <cstdint>
#include <string>

using namespace mooring;
namespace beast = boost::beast;
namespace websocket = beast::websocket;
using tcp = asio::ip::tcp;

namespace {

awaitable<void> echo(tcp::socket socket) {
  websocket::stream<beast::tcp_stream> ws(std::move(socket));
  auto [ec] = co_await ws.async_accept(use_tuple);
  if (ec) co_return;
  beast::flat_buffer buffer;
  for (;;) {
    auto [read_error, n] = co_await ws.async_read(buffer, use_tuple);
    if (read_error) co_return;
    ws.text(ws.got_text());
    auto [write_error, written] = co_await ws.async_write(buffer.data(), use_tuple);
    if (write_error) co_return;
    buffer.consume(buffer.size());
  }
}

}  // namespace

int main(int argc, char** argv) {
  return bench::serve_loopback(argc, argv, [](tcp::socket socket, std::uint64_t) {
    return echo(std::move(socket));
  });
}
