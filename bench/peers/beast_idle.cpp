// A raw Beast WebSocket echo server, the transport alone: one thread, one
// coroutine per connection (accept, handshake, then read a message and write
// it back), no application state. bench/chat_vs_peer.sh measures its memory
// per idle connection beside mooring's /ws/<user> and Node's `ws`.
//
//   bench_beast_idle [PORT]     (0 or none: any free port; the port is printed)
#include "runtime/asio.hpp"

#include <boost/beast/core.hpp>
#include <boost/beast/websocket.hpp>

#include <cstdio>
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

awaitable<void> serve(tcp::acceptor& acceptor) {
  for (;;) {
    auto [ec, socket] = co_await acceptor.async_accept(use_tuple);
    if (ec) continue;
    asio::co_spawn(acceptor.get_executor(), echo(std::move(socket)), asio::detached);
  }
}

}  // namespace

int main(int argc, char** argv) {
  const auto port = static_cast<unsigned short>(argc > 1 ? std::stoi(argv[1]) : 0);
  asio::io_context io(1);
  tcp::acceptor acceptor(io, {asio::ip::make_address("127.0.0.1"), port});
  acceptor.listen(asio::socket_base::max_listen_connections);
  std::printf("%u\n", acceptor.local_endpoint().port());
  std::fflush(stdout);
  asio::co_spawn(io, serve(acceptor), asio::detached);
  asio::signal_set signals(io, SIGINT, SIGTERM);
  signals.async_wait([&](const error_code&, int) { io.stop(); });
  io.run();
}
