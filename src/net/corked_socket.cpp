#include "net/corked_socket.hpp"

#include <array>
#include <memory>
#include <utility>

namespace mooring::net {

struct CorkedSocket::Cork : runtime::TurnEnd, std::enable_shared_from_this<CorkedSocket::Cork> {
  explicit Cork(CorkedSocket* o) : owner(o) {}

  CorkedSocket* owner;  // null once the socket is gone
  std::string held;     // written, waiting for the next send
  std::optional<Handler> held_write;  // a write that completes once its bytes are sent
  std::size_t held_write_bytes = 0;
  std::string sending;  // being sent
  std::size_t sent = 0;  // of `sending`, taken by the socket
  std::optional<Handler> sending_write;
  std::size_t sending_write_bytes = 0;
  bool put_off = false;  // waiting for the end of the turn
  std::optional<asio::any_completion_handler<void()>> on_sent;

  void write(std::string& bytes, Handler handler) {
    const auto size = bytes.size();
    held.append(bytes);
    owner->written_ += size;
    const bool sending_now = !sending.empty();
    if (!sending_now && held.size() <= cork_bytes && runtime::turns_here()) {
      if (!put_off) {
        put_off = true;
        runtime::at_end_of_turn(shared_from_this());
      }
      complete(std::move(handler), {}, size);
      return;
    }
    held_write.emplace(std::move(handler));
    held_write_bytes = size;
    if (!sending_now) send_held();
  }

  void end_of_turn() override {
    put_off = false;
    if (sending.empty() && !held.empty()) send_held();
  }

  void send_held() {
    if (!owner) return;
    sending = std::move(held);
    held = std::string();
    sent = 0;
    sending_write = std::move(held_write);
    held_write.reset();
    sending_write_bytes = std::exchange(held_write_bytes, 0);
    send_some();
  }

  void send_some() {
    owner->socket_.async_write_some(
        asio::buffer(sending.data() + sent, sending.size() - sent),
        [self = shared_from_this()](error_code ec, std::size_t n) { self->some_sent(ec, n); });
  }

  void some_sent(error_code ec, std::size_t n) {
    sent += n;
    if (!owner) ec = asio::error::operation_aborted;
    if (!ec && sent < sending.size()) {
      send_some();
    } else {
      sending_ended(ec);
    }
    if (owner && n > 0) {
      owner->taken_ += n;
      // Last: the callback may write more.
      if (owner->on_taken_) owner->on_taken_();
    }
  }

  void sending_ended(error_code ec) {
    sending = std::string();
    sent = 0;
    if (sending_write) {
      complete(std::move(*sending_write), ec, ec ? 0 : sending_write_bytes);
      sending_write.reset();
    }
    if (ec) {
      if (owner) owner->failed_ = ec;
      held = std::string();
      if (held_write) {
        complete(std::move(*held_write), ec, 0);
        held_write.reset();
      }
    } else if (!held.empty()) {
      send_held();
      return;
    }
    if (on_sent) {
      post(std::move(*on_sent));
      on_sent.reset();
    }
  }

  template <typename Function>
  void post(Function&& f) {
    if (owner) asio::post(owner->socket_.get_executor(), std::forward<Function>(f));
  }

  void complete(Handler handler, error_code ec, std::size_t n) {
    post([handler = std::move(handler), ec, n]() mutable { std::move(handler)(ec, n); });
  }
};

CorkedSocket::CorkedSocket(CorkedSocket&& other) noexcept
    : socket_(std::move(other.socket_)),
      cork_(std::move(other.cork_)),
      written_(other.written_),
      taken_(other.taken_),
      failed_(other.failed_),
      corking_(other.corking_),
      on_taken_(std::move(other.on_taken_)) {
  if (auto cork = cork_.lock()) cork->owner = this;
}

CorkedSocket::~CorkedSocket() {
  if (auto cork = cork_.lock()) cork->owner = nullptr;
}

std::shared_ptr<CorkedSocket::Cork> CorkedSocket::cork() {
  auto cork = cork_.lock();
  if (!cork) {
    cork = std::make_shared<Cork>(this);
    cork_ = cork;
  }
  return cork;
}

void CorkedSocket::write(std::string& bytes, Handler handler) {
  if (failed_) {
    asio::post(socket_.get_executor(), [handler = std::move(handler), ec = failed_]() mutable {
      std::move(handler)(ec, 0);
    });
    return;
  }
  cork()->write(bytes, std::move(handler));
}

std::size_t CorkedSocket::held_bytes() const {
  const auto cork = cork_.lock();
  return cork ? cork->held.size() + (cork->sending.size() - cork->sent) : 0;
}

void CorkedSocket::async_wait_sent(asio::any_completion_handler<void()> handler) {
  auto cork = cork_.lock();
  if (cork && cork->sending.empty() && !cork->held.empty()) cork->send_held();
  if (!cork || cork->sending.empty()) {
    asio::post(socket_.get_executor(), std::move(handler));
    return;
  }
  cork->on_sent.emplace(std::move(handler));
}

namespace {

struct Teardown {
  boost::beast::role_type role;
  TcpSocket& socket;
  asio::any_completion_handler<void(error_code)> handler;
  std::uint64_t drained = 0;
};

// Closes the socket and reports `ec`, else whatever the close said.
void end_teardown(const std::shared_ptr<Teardown>& teardown, error_code ec) {
  if (!ec && teardown->role == boost::beast::role_type::client)
    teardown->socket.shutdown(asio::socket_base::shutdown_send, ec);
  error_code closed;
  teardown->socket.close(closed);
  std::move(teardown->handler)(ec ? ec : closed);
}

void drain(const std::shared_ptr<Teardown>& teardown) {
  for (;;) {
    std::array<char, 16 * 1024> dropped;
    error_code ec;
    const auto n = teardown->socket.read_some(asio::buffer(dropped), ec);
    if (ec == asio::error::would_block) {
      teardown->socket.async_wait(asio::socket_base::wait_read, [teardown](error_code waited) {
        if (waited) {
          end_teardown(teardown, waited);
          return;
        }
        drain(teardown);
      });
      return;
    }
    if (ec == asio::error::eof || (!ec && n == 0)) break;
    if (ec) {
      end_teardown(teardown, ec);
      return;
    }
    // A peer that goes on sending is closed on (and reset) past the bound.
    if ((teardown->drained += n) > teardown_drain_max) break;
  }
  end_teardown(teardown, {});
}

}  // namespace

void teardown_socket(boost::beast::role_type role, TcpSocket& socket,
                     asio::any_completion_handler<void(error_code)> handler) {
  auto teardown = std::make_shared<Teardown>(Teardown{role, socket, std::move(handler)});
  error_code ec;
  socket.non_blocking(true, ec);
  if (!ec && role == boost::beast::role_type::server)
    socket.shutdown(asio::socket_base::shutdown_send, ec);
  if (ec) {
    error_code ignored;
    socket.close(ignored);
    asio::post(socket.get_executor(),
               [teardown, ec] { std::move(teardown->handler)(ec); });
    return;
  }
  drain(teardown);
}

}  // namespace mooring::net
