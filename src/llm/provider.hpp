// The LLM provider interface: a chat request in, a stream of text pieces out,
// then the final text or an error that says what happened in words a user can
// act on. Implementations: `echo` (no network) and `openai` (any
// OpenAI-compatible /chat/completions). ResilientProvider wraps either with
// limits, retries, a circuit breaker and deadlines.
#pragma once

#include "runtime/asio.hpp"
#include "runtime/duration.hpp"

#include <boost/system/result.hpp>

#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace mooring::llm {

struct ChatMessage {
  std::string role;  // "user" or "assistant"
  std::string content;
  std::vector<std::string> images;  // data URLs ("data:image/png;base64,...") or https URLs
};

struct ChatRequest {
  std::string system_prompt;
  std::vector<ChatMessage> history;  // oldest first, without the new message
  ChatMessage message;               // the new user message
};

struct ProviderError {
  enum class Kind {
    network,        // connect/reset/TLS failure: worth retrying
    timeout,        // an attempt or the whole request ran out of time
    status,         // the provider answered with an HTTP error status
    stream,         // an error event inside a 200 stream, or a malformed stream
    rejected,       // a client error: bad key, bad request, unknown model (never retried)
    overloaded,     // mooring's own wait queue is full
    circuit_open,   // too many failures in a row; failing fast for a while
    shutting_down,  // no new request or attempt once shutdown has begun
    cancelled,      // the caller cancelled (user cancel, session closed, shutdown)
  };
  Kind kind = Kind::network;
  int status = 0;                          // the HTTP status, when there was one
  std::optional<runtime::Duration> retry_after;  // from Retry-After
  bool retryable = false;                  // worth another attempt
  std::string message;                     // for the user and the log, never with secrets
};

const char* to_string(ProviderError::Kind kind);

// Receives each piece of the reply as it arrives, on the network thread.
using PieceSink = std::function<void(std::string_view piece)>;

using CompletionResult = boost::system::result<std::string, ProviderError>;

class Provider {
 public:
  virtual ~Provider() = default;
  // Streams the reply into `on_piece` and returns the whole text. Honours
  // cancellation of the calling coroutine at any instant.
  virtual awaitable<CompletionResult> complete(const ChatRequest& request, PieceSink on_piece) = 0;
  virtual std::string_view kind() const = 0;
  virtual std::string_view model() const { return {}; }
};

inline CompletionResult failure(ProviderError error) {
  return CompletionResult(boost::system::in_place_error, std::move(error));
}

}  // namespace mooring::llm
