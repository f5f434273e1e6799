// A scripted upstream that writes raw bytes, for tests of what mooring does
// with an upstream it cannot trust: interim (1xx) responses, an unsolicited
// extra response, endless lines, chunk extensions and trailers, events with
// no end, invalid UTF-8, secrets in error bodies, JSON of the wrong shape.
// Requests are read as HTTP (mooring's own client sends well-formed ones);
// what goes back is whatever the responder says, byte for byte. It runs on
// its own thread; the responder is called there, once per request.
#pragma once

#include "runtime/asio.hpp"

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace mooring::test {

struct RawRequest {
  std::string method;
  std::string target;
  std::string authorization;
  std::string body;
  std::string head;    // the request line and header fields, as received
  int connection = 0;  // 1 for the first connection accepted, and so on
  int index = 0;       // 0 for the first request on its connection
};

struct RawReply {
  // Written one after another, each with its own write.
  std::vector<std::string> writes;
  // Then, when not empty, written again and again until the client goes away
  // or `endless_limit` bytes of it went out.
  std::string endless;
  std::uint64_t endless_limit = 4ull << 30;
  // When set, `endless` is written one unit at a time with this pause
  // between (a trickle), instead of in large blocks.
  std::chrono::milliseconds endless_pause{0};
  // Then, after `late_delay`, written on the idle connection (an unsolicited
  // response the client could not have asked for yet).
  std::string late;
  std::chrono::milliseconds late_delay{0};
  // Then the connection is closed; otherwise the next request is read.
  bool close = false;
  // Nothing is written and the connection is held open until the client leaves.
  bool hang = false;
};

using Responder = std::function<RawReply(const RawRequest&)>;

class RawUpstream {
 public:
  explicit RawUpstream(Responder responder);
  ~RawUpstream();
  RawUpstream(const RawUpstream&) = delete;
  RawUpstream& operator=(const RawUpstream&) = delete;

  // "http://127.0.0.1:PORT/v1"
  std::string base_url() const;

  std::size_t request_count() const { return requests_; }
  int connections() const { return connections_; }
  // Connections whose client went away (read or write failed), and the late
  // writes done so far.
  int closed_by_client() const { return closed_by_client_; }
  int late_writes() const { return late_writes_; }
  // Bytes written to all clients so far.
  std::uint64_t bytes_sent() const { return bytes_sent_; }
  std::vector<RawRequest> requests() const;

 private:
  awaitable<void> accept_loop();
  awaitable<void> serve(asio::ip::tcp::socket socket, int connection);

  asio::io_context io_;
  asio::ip::tcp::acceptor acceptor_;
  Responder responder_;
  std::uint16_t port_ = 0;
  std::thread thread_;
  mutable std::mutex mutex_;
  std::vector<RawRequest> recorded_;
  std::atomic<std::size_t> requests_{0};
  std::atomic<int> connections_{0};
  std::atomic<int> closed_by_client_{0};
  std::atomic<int> late_writes_{0};
  std::atomic<std::uint64_t> bytes_sent_{0};
};

// Pieces of responses, byte for byte.
std::string raw_head(int status, const std::vector<std::pair<std::string, std::string>>& headers);
// A whole response with Content-Length.
std::string raw_response(int status, const std::string& body,
                         const std::string& content_type = "application/json");
// The head of a chunked text/event-stream 200, a chunk, the last chunk.
std::string raw_stream_head();
std::string raw_chunk(const std::string& data);
std::string raw_last_chunk(const std::string& trailers = "");
// One SSE event carrying a piece of content (JSON-escaped), and one with raw
// bytes spliced into the JSON string unescaped (for invalid UTF-8).
std::string raw_sse_piece(const std::string& content);
std::string raw_sse_piece_unescaped(const std::string& bytes);
inline const std::string raw_sse_done = "data: [DONE]\n\n";
// A complete chunked SSE response carrying `pieces`, then [DONE].
std::string raw_sse_response(const std::vector<std::string>& pieces);

}  // namespace mooring::test
