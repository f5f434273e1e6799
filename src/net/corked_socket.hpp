// A TCP socket whose small writes made during one turn of the network thread
// leave together, in one write at the end of the turn (runtime/turn.hpp).
// Under a WebSocket, a chat round trip's frames (ack, chat_token, chat) made
// in one turn then cost one send and wake the peer once.
//
// Promises:
// - Bytes leave in the order they were written, and a write's handler never
//   runs before the bytes of the writes before it have been handed on.
// - A write completes at once (its bytes held for the end of the turn) only
//   while nothing is being sent and at most cork_bytes are held; otherwise
//   it completes once the socket has taken its bytes, so a peer that does
//   not read pushes back as on a bare socket. At most cork_bytes plus one
//   write wait here.
// - taken() says how much of what was written the socket has taken (a write
//   that completed at once is not there yet): an owner that must know its
//   bytes left the process waits for that.
// - held_bytes() counts what was written here and the socket has not taken
//   yet: with what the socket holds unread (SIOCOUTQ), the bytes the peer
//   has not taken.
// - A failed send fails every later write with its error; nothing written
//   after it is sent.
// - An idle socket costs a weak pointer, two counters and an error code
//   beside the socket: the buffers are made when needed.
// - On a thread without turns every write is sent at once.
// - The WebSocket's closing handshake ends (teardown) only after what is
//   held has been sent.
#pragma once

#include "runtime/asio.hpp"
#include "runtime/turn.hpp"

#include <boost/asio/any_completion_handler.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core/role.hpp>
#include <boost/beast/core/stream_traits.hpp>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

namespace mooring::net {

// A connection's socket, on the network thread's executor (runtime/asio.hpp).
using TcpSocket = asio::basic_stream_socket<asio::ip::tcp, IoExecutor>;

class CorkedSocket {
 public:
  using socket_type = TcpSocket;
  using executor_type = socket_type::executor_type;
  using Handler = asio::any_completion_handler<void(error_code, std::size_t)>;

  // More than this is not held for the end of a turn.
  static constexpr std::size_t cork_bytes = 16 * 1024;

  explicit CorkedSocket(socket_type socket) : socket_(std::move(socket)) {}
  CorkedSocket(CorkedSocket&& other) noexcept;
  CorkedSocket& operator=(CorkedSocket&&) = delete;
  ~CorkedSocket();

  executor_type get_executor() { return socket_.get_executor(); }
  socket_type& next_layer() { return socket_; }
  const socket_type& next_layer() const { return socket_; }

  // Until this is called, each write goes straight to the socket (a
  // handshake's: nothing is kept for a connection that then idles); from
  // then on writes are held and counted as above.
  void start_corking() { corking_ = true; }

  std::size_t held_bytes() const;
  // Bytes written here so far, and of them those the socket has taken.
  std::uint64_t written() const { return written_; }
  std::uint64_t taken() const { return taken_; }
  // Called (on the socket's executor) after the socket has taken more bytes.
  void on_taken(std::function<void()> callback) { on_taken_ = std::move(callback); }

  // A read is not cancelled by its handler's cancellation slot, which a
  // WebSocket's owner binds to end a read Beast holds suspended (closing the
  // socket ends one the socket holds): the socket does not install a handler
  // in the slot at every read, and an idle connection's pending read holds
  // no memory for it.
  template <typename Buffers, typename Token>
  auto async_read_some(const Buffers& buffers, Token&& token) {
    return asio::async_initiate<Token, void(error_code, std::size_t)>(
        [this](auto handler, const Buffers& buffers) {
          socket_.async_read_some(
              buffers, asio::bind_cancellation_slot(asio::cancellation_slot(), std::move(handler)));
        },
        token, buffers);
  }

  template <typename Buffers, typename Token>
  auto async_write_some(const Buffers& buffers, Token&& token) {
    return asio::async_initiate<Token, void(error_code, std::size_t)>(
        [this](auto handler, const Buffers& buffers) {
          if (!corking_) {
            socket_.async_write_some(buffers, std::move(handler));
            return;
          }
          std::string bytes;
          bytes.reserve(asio::buffer_size(buffers));
          for (auto it = asio::buffer_sequence_begin(buffers);
               it != asio::buffer_sequence_end(buffers); ++it) {
            const asio::const_buffer piece(*it);
            bytes.append(static_cast<const char*>(piece.data()), piece.size());
          }
          write(bytes, Handler(std::move(handler)));
        },
        token, buffers);
  }

  // Runs `handler` once nothing is held or being sent.
  void async_wait_sent(asio::any_completion_handler<void()> handler);

 private:
  // What is held or being sent, made by the first write after an idle
  // moment and gone with the next one: an idle connection holds none. It is
  // owned by the send under way (so the io_context's end destroys it with
  // the send, and the handler of a write waiting in it) and by the turn it
  // waits for.
  struct Cork;
  void write(std::string& bytes, Handler handler);
  std::shared_ptr<Cork> cork();

  socket_type socket_;
  std::weak_ptr<Cork> cork_;
  std::uint64_t written_ = 0;
  std::uint64_t taken_ = 0;
  error_code failed_;
  bool corking_ = false;
  std::function<void()> on_taken_;
};

// The TCP end of a WebSocket's closing handshake: the server shuts its
// sending side (the peer reads the close frame, then the end), reads and
// drops what the peer still sends until it ends too (at most
// teardown_drain_max bytes), then closes. Closed with bytes unread, the
// socket would be reset, and the peer would lose the close frame with the
// rest of what it had not read (a client that sent a message over the limit
// saw 1006 instead of 1009): Beast's own teardown (1.81) stops after its
// first read.
inline constexpr std::uint64_t teardown_drain_max = 64ull * 1024 * 1024;
void teardown_socket(boost::beast::role_type role, TcpSocket& socket,
                     asio::any_completion_handler<void(error_code)> handler);

// The closing handshake ends on the socket once what is held has been sent
// (Beast finds this by argument-dependent lookup).
template <typename TeardownHandler>
void async_teardown(boost::beast::role_type role, CorkedSocket& socket,
                    TeardownHandler&& handler) {
  socket.async_wait_sent(
      [role, &socket, handler = std::forward<TeardownHandler>(handler)]() mutable {
        teardown_socket(role, socket.next_layer(), std::move(handler));
      });
}

}  // namespace mooring::net
