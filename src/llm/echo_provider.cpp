#include "llm/echo_provider.hpp"

#include "runtime/time.hpp"

#include <fmt/format.h>

namespace mooring::llm {

awaitable<CompletionResult> EchoProvider::complete(const ChatRequest& request, PieceSink on_piece) {
  std::string reply = "echo: " + request.message.content.str();
  if (const auto n = request.message.images.size(); n > 0)
    reply += fmt::format(" ({} image{})", n, n == 1 ? "" : "s");

  // Pieces are words with the space that follows them, so they join back into
  // exactly the reply.
  std::size_t start = 0;
  while (start < reply.size()) {
    auto end = reply.find(' ', start);
    end = end == std::string::npos ? reply.size() : end + 1;
    if (start > 0 && token_delay_ > runtime::Duration::zero()) {
      if (!co_await runtime::sleep_for(token_delay_))
        co_return failure({.kind = ProviderError::Kind::cancelled, .message = "the reply was cancelled"});
    }
    if (on_piece) on_piece(std::string_view(reply).substr(start, end - start));
    start = end;
  }
  co_return CompletionResult(std::move(reply));
}

}  // namespace mooring::llm
