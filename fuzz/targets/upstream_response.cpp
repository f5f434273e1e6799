// What an LLM upstream sends, through the real client code: the input is the
// whole byte stream an upstream writes back on one connection (status lines,
// interim responses, headers, chunked framing, trailers, server-sent events,
// JSON, extra responses, invalid UTF-8); then it closes. OpenAiProvider asks
// for a reply through HttpClient on loopback. After each input: no crash, no
// sanitizer report, an outcome within the deadline, a reply no longer than
// max_reply_bytes plus the truncation notice, and valid UTF-8 in whatever
// reaches a user or the log.
#include "llm/openai_provider.hpp"
#include "llm/utf8.hpp"

#include "support/quiet.hpp"

#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>

namespace {

using namespace mooring;
using namespace std::chrono_literals;
using tcp = asio::ip::tcp;

constexpr std::size_t max_reply = 4096;

[[noreturn]] void fail(const char* what) {
  std::fprintf(stderr, "upstream_response: %s\n", what);
  std::abort();
}

void require_utf8(std::string_view text, const char* what) {
  if (llm::repair_utf8(text) != text) fail(what);
}

// The upstream: reads the request (up to its blank line and a little more),
// writes the input, closes.
awaitable<void> upstream(tcp::acceptor& acceptor, std::string response) {
  auto [ec, socket] = co_await acceptor.async_accept(use_tuple);
  if (ec) co_return;
  std::string request;
  char buffer[4096];
  while (request.find("\r\n\r\n") == std::string::npos && request.size() < 65536) {
    auto [read_ec, n] = co_await socket.async_read_some(asio::buffer(buffer), use_tuple);
    if (read_ec) break;
    request.append(buffer, n);
  }
  co_await asio::async_write(socket, asio::buffer(response), use_tuple);
  error_code ignored;
  socket.shutdown(tcp::socket::shutdown_send, ignored);
  // Drain until the client closes, so the response is not cut by a reset.
  for (;;) {
    auto [read_ec, n] = co_await socket.async_read_some(asio::buffer(buffer), use_tuple);
    if (read_ec) break;
  }
}

awaitable<void> ask(llm::OpenAiProvider& provider, bool& done) {
  llm::ChatRequest request;
  request.message = {llm::Role::user, "hello", {}};
  std::size_t streamed = 0;
  auto result = co_await provider.complete(request, [&](std::string_view piece) {
    require_utf8(piece, "a streamed piece is not valid UTF-8");
    streamed += piece.size();
  });
  const std::size_t bound = max_reply + llm::truncation_notice(max_reply).size();
  if (streamed > bound) fail("more was streamed than max_reply_bytes allows");
  if (result) {
    require_utf8(*result, "the reply is not valid UTF-8");
    if (result->size() > bound) fail("the reply is longer than max_reply_bytes allows");
  } else {
    require_utf8(result.error().message, "an error message is not valid UTF-8");
    require_utf8(result.error().detail, "an error detail is not valid UTF-8");
  }
  done = true;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  mooring::fuzz::quiet_process();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  asio::io_context io;
  tcp::acceptor acceptor(io, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
  llm::OpenAiOptions options;
  options.base_url = "http://127.0.0.1:" + std::to_string(acceptor.local_endpoint().port()) + "/v1";
  options.model = "fuzz";
  options.api_key = "sk-fuzz-key-0123456789";
  options.max_reply_bytes = max_reply;
  options.max_sse_line_bytes = options.max_sse_event_bytes = 8192;
  options.max_document_bytes = 16384;
  llm::OpenAiProvider provider(io.get_executor(), options);

  asio::co_spawn(io, upstream(acceptor, std::string(reinterpret_cast<const char*>(data), size)),
                 [](std::exception_ptr e) {
                   if (e) std::rethrow_exception(e);
                 });
  bool done = false;
  asio::co_spawn(io, ask(provider, done), [](std::exception_ptr e) {
    if (e) std::rethrow_exception(e);
  });
  io.run_for(5s);
  if (!done) fail("no outcome within 5 s of an upstream that closed");
  return 0;
}
