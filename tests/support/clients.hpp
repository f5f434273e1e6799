// Blocking HTTP and WebSocket clients for tests, each operation bounded by a
// timeout (it throws when the time runs out, so a hang fails the test).
#pragma once

#include "runtime/asio.hpp"

#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket.hpp>

#include <array>
#include <chrono>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace mooring::test {

namespace beast = boost::beast;
namespace http = beast::http;
namespace websocket = beast::websocket;
using namespace std::chrono_literals;

struct HttpReply {
  int status = 0;
  std::string body;
  std::map<std::string, std::string> headers;  // lower-case names
};

// `address` is "host:port" as in the ready file.
HttpReply http_request(const std::string& address, http::verb method, const std::string& target,
                       const std::string& body = "",
                       const std::vector<std::pair<std::string, std::string>>& headers = {},
                       std::chrono::milliseconds timeout = 10s);

inline HttpReply http_get(const std::string& address, const std::string& target,
                          const std::string& bearer = "") {
  std::vector<std::pair<std::string, std::string>> headers;
  if (!bearer.empty()) headers.emplace_back("Authorization", "Bearer " + bearer);
  return http_request(address, http::verb::get, target, "", headers);
}

// Splits "host:port" / "[::1]:port".
std::pair<std::string, std::string> split_address(const std::string& address);

// A raw TCP connection for HTTP, driven from the test thread, each wait
// bounded: for requests written byte by byte, stalled or pipelined.
class RawConnection {
 public:
  explicit RawConnection(const std::string& address) : socket_(io_) {
    auto [host, port] = split_address(address);
    socket_.connect(asio::ip::tcp::endpoint(asio::ip::make_address(host),
                                  static_cast<std::uint16_t>(std::stoi(port))));
  }

  void send(std::string_view bytes) { asio::write(socket_, asio::buffer(bytes)); }

  // The next response, or nullopt when none came whole within `timeout`.
  // `to_head`: the answer to a HEAD, which has no body whatever its header says.
  std::optional<http::response<http::string_body>> read(std::chrono::milliseconds timeout = 10s,
                                                        bool to_head = false) {
    http::response_parser<http::string_body> parser;
    parser.skip(to_head);
    std::optional<error_code> result;
    http::async_read(socket_, buffer_, parser, [&](error_code ec, std::size_t) { result = ec; });
    run(result, timeout);
    if (!result || *result) return std::nullopt;
    return parser.release();
  }

  // True when the server closes the connection within `timeout` (anything
  // it sends first is skipped).
  bool closed_within(std::chrono::milliseconds timeout) {
    const auto deadline = Clock::now() + timeout;
    for (;;) {
      std::optional<error_code> result;
      socket_.async_read_some(asio::buffer(scratch_), [&](error_code ec, std::size_t) { result = ec; });
      run(result, std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()));
      if (!result) return false;
      if (*result) return *result == asio::error::eof || *result == asio::error::connection_reset;
    }
  }

 private:
  void run(std::optional<error_code>& result, std::chrono::milliseconds timeout) {
    io_.restart();
    io_.run_for(std::max(timeout, std::chrono::milliseconds(1)));
    if (!result) {
      // Out of time: the pending read is cancelled and its handler run.
      socket_.cancel();
      io_.restart();
      io_.run();
      result.reset();
    }
  }

  asio::io_context io_;
  asio::ip::tcp::socket socket_;
  beast::flat_buffer buffer_;
  std::array<char, 4096> scratch_;
};

// A WebSocket client driven synchronously from the test thread.
class WsClient {
 public:
  WsClient();
  ~WsClient();

  // Connects and upgrades; on a refused upgrade returns the HTTP status
  // (e.g. 401) instead of 101.
  int connect(const std::string& address, const std::string& target,
              const std::vector<std::pair<std::string, std::string>>& headers = {},
              std::chrono::milliseconds timeout = 10s);

  void send(const std::string& text, std::chrono::milliseconds timeout = 10s);
  // The next text message, or nullopt when the connection closed (then
  // close_code() tells how). Throws on timeout.
  std::optional<std::string> read(std::chrono::milliseconds timeout = 10s);
  // read() on a slow link: at most `bytes` are taken off the socket every
  // `every`. With set_receive_buffer(), what this client has not read yet
  // stays with the server, as it does for a phone on a slow network.
  std::optional<std::string> read_slowly(std::size_t bytes, std::chrono::milliseconds every,
                                         std::chrono::milliseconds timeout = 30s);
  // Before connect(): the kernel holds at most about `bytes` of unread data
  // for this client (SO_RCVBUF).
  void set_receive_buffer(int bytes) { receive_buffer_ = bytes; }
  std::uint16_t close_code() const { return close_code_; }
  std::string close_reason() const { return close_reason_; }
  // Sends a close frame with `code` (0: a close frame without a code) and
  // waits for the server's.
  void close(std::chrono::milliseconds timeout = 10s, std::uint16_t code = 1000);
  // Closes the TCP connection without a WebSocket close frame.
  void drop();
  // Stops answering pings and reading: the server sees a silent peer.
  beast::tcp_stream& lowest_layer();

 private:
  asio::io_context io_;
  std::optional<websocket::stream<beast::tcp_stream>> ws_;
  beast::flat_buffer buffer_;
  std::uint16_t close_code_ = 0;
  std::string close_reason_;
  int receive_buffer_ = 0;  // 0: the kernel's default
};

}  // namespace mooring::test
