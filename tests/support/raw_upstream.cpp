#include "support/raw_upstream.hpp"

#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/json.hpp>
#include <fmt/format.h>

#include <sstream>

namespace mooring::test {

namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

std::string raw_head(int status, const std::vector<std::pair<std::string, std::string>>& headers) {
  std::string out =
      fmt::format("HTTP/1.1 {} {}\r\n", status,
                  std::string_view(http::obsolete_reason(http::int_to_status(status))));
  for (const auto& [name, value] : headers) out += name + ": " + value + "\r\n";
  return out + "\r\n";
}

std::string raw_response(int status, const std::string& body, const std::string& content_type) {
  return raw_head(status, {{"Content-Type", content_type},
                           {"Content-Length", std::to_string(body.size())}}) +
         body;
}

std::string raw_stream_head() {
  return raw_head(200, {{"Content-Type", "text/event-stream"}, {"Transfer-Encoding", "chunked"}});
}

std::string raw_chunk(const std::string& data) {
  return fmt::format("{:x}\r\n{}\r\n", data.size(), data);
}

std::string raw_last_chunk(const std::string& trailers) {
  return "0\r\n" + trailers + "\r\n";
}

std::string raw_sse_piece(const std::string& content) {
  return "data: " +
         boost::json::serialize(boost::json::object{
             {"choices", boost::json::array{{{"index", 0}, {"delta", {{"content", content}}}}}}}) +
         "\n\n";
}

std::string raw_sse_piece_unescaped(const std::string& bytes) {
  return "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"" + bytes + "\"}}]}\n\n";
}

std::string raw_sse_response(const std::vector<std::string>& pieces) {
  std::string out = raw_stream_head();
  for (const auto& piece : pieces) out += raw_chunk(raw_sse_piece(piece));
  out += raw_chunk(raw_sse_done);
  return out + raw_last_chunk();
}

RawUpstream::RawUpstream(Responder responder)
    : acceptor_(io_, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0)),
      responder_(std::move(responder)) {
  port_ = acceptor_.local_endpoint().port();
  asio::co_spawn(io_, accept_loop(), asio::detached);
  thread_ = std::thread([this] { io_.run(); });
}

RawUpstream::~RawUpstream() {
  io_.stop();
  thread_.join();
}

std::string RawUpstream::base_url() const {
  return fmt::format("http://127.0.0.1:{}/v1", port_);
}

std::vector<RawRequest> RawUpstream::requests() const {
  std::lock_guard lock(mutex_);
  return recorded_;
}

awaitable<void> RawUpstream::accept_loop() {
  for (;;) {
    auto [ec, socket] = co_await acceptor_.async_accept(use_tuple);
    if (ec) co_return;
    asio::co_spawn(io_, serve(std::move(socket), ++connections_), asio::detached);
  }
}

awaitable<void> RawUpstream::serve(tcp::socket socket, int connection) {
  beast::flat_buffer buffer;
  for (int index = 0;; ++index) {
    http::request<http::string_body> request;
    auto [read_ec, n] = co_await http::async_read(socket, buffer, request, use_tuple);
    if (read_ec) {
      ++closed_by_client_;
      co_return;
    }
    std::ostringstream head;
    head << request.base();
    // Field by field: GCC 12 mishandles a braced aggregate of temporaries
    // inside a coroutine.
    RawRequest recorded;
    recorded.method = std::string(request.method_string());
    recorded.target = std::string(request.target());
    recorded.authorization = std::string(request[http::field::authorization]);
    recorded.body = request.body();
    recorded.head = head.str();
    recorded.connection = connection;
    recorded.index = index;
    {
      std::lock_guard lock(mutex_);
      recorded_.push_back(recorded);
    }
    ++requests_;
    const RawReply reply = responder_(recorded);
    if (reply.hang) {
      char byte;
      co_await socket.async_read_some(asio::buffer(&byte, 1), use_tuple);
      ++closed_by_client_;
      co_return;
    }
    auto write = [&](const std::string& bytes) -> awaitable<bool> {
      auto [ec, written] = co_await asio::async_write(socket, asio::buffer(bytes), use_tuple);
      bytes_sent_ += written;
      co_return !ec;
    };
    for (const auto& bytes : reply.writes) {
      if (!co_await write(bytes)) {
        ++closed_by_client_;
        co_return;
      }
    }
    if (!reply.endless.empty()) {
      // Large writes: the client's reading pace, not ours, sets the speed.
      std::string block = reply.endless;
      while (reply.endless_pause.count() == 0 && block.size() < 256 * 1024) block += reply.endless;
      for (std::uint64_t sent = 0; sent < reply.endless_limit; sent += block.size()) {
        if (!co_await write(block)) {
          ++closed_by_client_;
          co_return;
        }
        if (reply.endless_pause.count() != 0) {
          asio::steady_timer pause(io_, reply.endless_pause);
          co_await pause.async_wait(use_tuple);
        }
      }
    }
    if (!reply.late.empty()) {
      asio::steady_timer timer(io_, reply.late_delay);
      co_await timer.async_wait(use_tuple);
      const bool written = co_await write(reply.late);
      ++late_writes_;
      if (!written) {
        ++closed_by_client_;
        co_return;
      }
    }
    if (reply.close) {
      error_code ignored;
      socket.shutdown(tcp::socket::shutdown_both, ignored);
      co_return;
    }
  }
}

}  // namespace mooring::test
