#include "support/clients.hpp"

#include <stdexcept>

namespace mooring::test {
namespace {

using tcp = asio::ip::tcp;

// Runs `op` on `io` until done or timeout; throws on timeout.
template <typename Op>
void run_bounded(asio::io_context& io, Op&& op, std::chrono::milliseconds timeout,
                 const char* what) {
  bool done = false;
  std::exception_ptr failure;
  asio::co_spawn(io, std::forward<Op>(op), [&](std::exception_ptr e) {
    failure = e;
    done = true;
  });
  io.restart();
  io.run_for(timeout);
  if (!done) {
    // Let the cancelled operation unwind before the caller throws.
    io.stop();
    throw std::runtime_error(std::string(what) + " timed out");
  }
  if (failure) std::rethrow_exception(failure);
}

}  // namespace

std::pair<std::string, std::string> split_address(const std::string& address) {
  auto colon = address.rfind(':');
  std::string host = address.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[') host = host.substr(1, host.size() - 2);
  return {host, address.substr(colon + 1)};
}

HttpReply http_request(const std::string& address, http::verb method, const std::string& target,
                       const std::string& body,
                       const std::vector<std::pair<std::string, std::string>>& headers,
                       std::chrono::milliseconds timeout) {
  asio::io_context io;
  HttpReply reply;
  auto op = [&]() -> awaitable<void> {
    auto [host, port] = split_address(address);
    tcp::resolver resolver(io);
    auto endpoints = co_await resolver.async_resolve(host, port, asio::use_awaitable);
    beast::tcp_stream stream(io);
    co_await stream.async_connect(endpoints, asio::use_awaitable);
    http::request<http::string_body> req{method, target, 11};
    req.set(http::field::host, address);
    for (const auto& [name, value] : headers) req.set(name, value);
    req.body() = body;
    req.prepare_payload();
    co_await http::async_write(stream, req, asio::use_awaitable);
    beast::flat_buffer buffer;
    http::response_parser<http::string_body> parser;
    parser.body_limit(64 * 1024 * 1024);
    parser.skip(method == http::verb::head);  // its header describes the GET's body
    co_await http::async_read(stream, buffer, parser, asio::use_awaitable);
    auto res = parser.release();
    reply.status = static_cast<int>(res.result_int());
    reply.body = res.body();
    for (const auto& field : res) {
      std::string name(field.name_string());
      for (auto& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      reply.headers[name] = std::string(field.value());
    }
    error_code ignored;
    stream.socket().shutdown(tcp::socket::shutdown_both, ignored);
  };
  run_bounded(io, op(), timeout, "HTTP request");
  return reply;
}

WsClient::WsClient() = default;
WsClient::~WsClient() {
  if (ws_) {
    error_code ignored;
    beast::get_lowest_layer(*ws_).socket().close(ignored);
  }
}

beast::tcp_stream& WsClient::lowest_layer() { return beast::get_lowest_layer(*ws_); }

int WsClient::connect(const std::string& address, const std::string& target,
                      const std::vector<std::pair<std::string, std::string>>& headers,
                      std::chrono::milliseconds timeout) {
  int status = 0;
  auto op = [&]() -> awaitable<void> {
    auto [host, port] = split_address(address);
    tcp::resolver resolver(io_);
    auto endpoints = co_await resolver.async_resolve(host, port, asio::use_awaitable);
    ws_.emplace(io_);
    auto& stream = beast::get_lowest_layer(*ws_);
    if (receive_buffer_ > 0) {
      // Set before connecting, so the window offered to the server is small
      // from the start; the socket is opened here, for the first address only.
      const auto endpoint = endpoints.begin()->endpoint();
      stream.socket().open(endpoint.protocol());
      stream.socket().set_option(asio::socket_base::receive_buffer_size(receive_buffer_));
      co_await stream.async_connect(endpoint, asio::use_awaitable);
    } else {
      co_await stream.async_connect(endpoints, asio::use_awaitable);
    }
    ws_->set_option(websocket::stream_base::decorator([headers](websocket::request_type& req) {
      for (const auto& [name, value] : headers) req.set(name, value);
    }));
    websocket::response_type res;
    auto [ec] = co_await ws_->async_handshake(res, address, target, use_tuple);
    // Beast fills in 500 before it reads: a status counts only when the server
    // declined the upgrade with one; a hang-up or a broken answer throws.
    if (ec && ec != websocket::error::upgrade_declined) throw boost::system::system_error(ec);
    status = static_cast<int>(res.result_int());
  };
  run_bounded(io_, op(), timeout, "WebSocket connect");
  return status;
}

void WsClient::send(const std::string& text, std::chrono::milliseconds timeout) {
  auto op = [&]() -> awaitable<void> {
    ws_->text(true);
    co_await ws_->async_write(asio::buffer(text), asio::use_awaitable);
  };
  run_bounded(io_, op(), timeout, "WebSocket send");
}

std::optional<std::string> WsClient::read(std::chrono::milliseconds timeout) {
  std::optional<std::string> message;
  auto op = [&]() -> awaitable<void> {
    auto [ec, n] = co_await ws_->async_read(buffer_, use_tuple);
    if (ec) {
      close_code_ = ws_->reason().code;
      close_reason_ = std::string(ws_->reason().reason.c_str());
      co_return;
    }
    message = beast::buffers_to_string(buffer_.data());
    buffer_.consume(buffer_.size());
  };
  run_bounded(io_, op(), timeout, "WebSocket read");
  return message;
}

std::optional<std::string> WsClient::read_slowly(std::size_t bytes, std::chrono::milliseconds every,
                                                 std::chrono::milliseconds timeout) {
  std::optional<std::string> message;
  auto op = [&]() -> awaitable<void> {
    asio::steady_timer pace(io_);
    auto step_ends = std::chrono::steady_clock::now() + every;
    std::size_t taken = 0;  // in this step
    do {
      if (taken >= bytes) {
        pace.expires_at(step_ends);
        co_await pace.async_wait(asio::use_awaitable);
        step_ends += every;
        taken = 0;
      }
      auto [ec, n] = co_await ws_->async_read_some(buffer_, bytes - taken, use_tuple);
      if (ec) {
        close_code_ = ws_->reason().code;
        close_reason_ = std::string(ws_->reason().reason.c_str());
        buffer_.consume(buffer_.size());
        co_return;
      }
      taken += n;
    } while (!ws_->is_message_done());
    message = beast::buffers_to_string(buffer_.data());
    buffer_.consume(buffer_.size());
  };
  run_bounded(io_, op(), timeout, "WebSocket slow read");
  return message;
}

void WsClient::close(std::chrono::milliseconds timeout, std::uint16_t code) {
  auto op = [&]() -> awaitable<void> {
    co_await ws_->async_close(websocket::close_reason(code), use_tuple);
  };
  run_bounded(io_, op(), timeout, "WebSocket close");
}

void WsClient::drop() {
  error_code ignored;
  beast::get_lowest_layer(*ws_).socket().close(ignored);
}

}  // namespace mooring::test
