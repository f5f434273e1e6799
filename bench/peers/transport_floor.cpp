// The chat protocol's transport alone: what one core can do for a round trip
// of bench_chat when nothing is stored, nothing is remembered and no provider
// runs. One thread, one coroutine per connection (accept, handshake, then for
// each message: parse its JSON, write the `ack`, one `chat_token` and the
// final `chat` frame, each its own WebSocket message, as mooring writes them).
// The frames are the ones mooring sends, so bench_chat's checks pass. Its rate
// is the ceiling of any server that speaks this protocol over the kernel's TCP
// on this machine; bench/chat_vs_peer.sh runs it beside mooring and the
// reference.
//
//   bench_transport_floor [PORT]     (0 or none: any free port; the port is printed)
#include "loopback_server.hpp"
#include "runtime/asio.hpp"

#include <boost/beast/core.hpp>
#include <boost/beast/websocket.hpp>
#include <boost/json.hpp>

#include <cstdint>
#include <string>

using namespace mooring;
namespace beast = boost::beast;
namespace json = boost::json;
namespace websocket = beast::websocket;
using tcp = asio::ip::tcp;

namespace {

std::int64_t next_seq = 1;

awaitable<void> converse(tcp::socket socket, std::string user_id) {
  // As mooring: a frame goes out when it is written, not after the peer's ACK.
  socket.set_option(tcp::no_delay(true));
  websocket::stream<tcp::socket> ws(std::move(socket));
  ws.set_option(websocket::stream_base::timeout::suggested(beast::role_type::server));
  auto [ec] = co_await ws.async_accept(use_tuple);
  if (ec) co_return;
  beast::flat_buffer buffer;
  for (;;) {
    auto [read_error, n] = co_await ws.async_read(buffer, use_tuple);
    if (read_error) co_return;
    const auto value = json::parse(beast::buffers_to_string(buffer.data()));
    buffer.consume(buffer.size());
    const auto& message = value.as_object();
    const std::string text = "echo: " + std::string(message.at("text").as_string());
    const auto seq = next_seq++;
    const auto reply_seq = next_seq++;
    const std::string frames[] = {
        json::serialize(json::object{{"type", "ack"}, {"id", message.at("id")}, {"seq", seq}}),
        json::serialize(json::object{{"type", "chat_token"}, {"content", text}, {"reply_to", seq}}),
        json::serialize(json::object{{"type", "chat"},
                                     {"content", text},
                                     {"text", text},
                                     {"who", "AI"},
                                     {"user_id", user_id},
                                     {"seq", reply_seq},
                                     {"reply_to", seq}}),
    };
    for (const auto& frame : frames) {
      auto [write_error, written] = co_await ws.async_write(asio::buffer(frame), use_tuple);
      if (write_error) co_return;
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  return bench::serve_loopback(argc, argv, [](tcp::socket socket, std::uint64_t n) {
    return converse(std::move(socket), "user-" + std::to_string(n));
  });
}
