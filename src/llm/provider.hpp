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
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace mooring::llm {

// A message's text, immutable and shared rather than copied: a conversation's
// recent messages and each request whose history they are point at one copy.
class Text {
 public:
  Text() = default;
  Text(std::string text) : text_(std::make_shared<const std::string>(std::move(text))) {}
  Text(const char* text) : Text(std::string(text)) {}

  const std::string& str() const { return text_ ? *text_ : empty_string(); }
  std::size_t size() const { return str().size(); }
  bool empty() const { return str().empty(); }
  friend bool operator==(const Text& a, std::string_view b) { return a.str() == b; }

 private:
  static const std::string& empty_string() {
    static const std::string empty;
    return empty;
  }
  std::shared_ptr<const std::string> text_;
};

enum class Role : unsigned char { user, assistant };
const char* to_string(Role role);  // "user", "assistant"

// Small on purpose: a request's history of 20 fits the allocator's cache of
// blocks up to 1 KiB (a larger block costs a pass over its free lists).
struct ChatMessage {
  Role role = Role::user;
  Text content;
  std::vector<std::string> images;  // data URLs ("data:image/png;base64,...") or https URLs
};
static_assert(sizeof(ChatMessage) <= 48, "20 of them fit 1 KiB");

struct ChatRequest {
  std::string system_prompt;
  std::vector<ChatMessage> history;  // oldest first, without the new message
  ChatMessage message;               // the new user message
};

// What went wrong, in two registers: `message` is a short, fixed description
// of the kind of failure, safe to show any user and to store with the reply
// (never a word the upstream wrote); `detail` is for the operator's log: what
// the upstream said, with secrets redacted (llm/redact.hpp), repaired to valid
// UTF-8 and shortened.
// What a user is told of an answer mooring cannot read (ProviderError::message).
inline constexpr const char* unreadable_answer =
    "the provider sent an answer mooring cannot read; send your message again, and tell the "
    "operator if this goes on";

struct ProviderError {
  enum class Kind {
    network,        // connect/reset/TLS failure: worth retrying
    timeout,        // an attempt or the whole request ran out of time
    status,         // the provider answered with an HTTP error status (5xx, 429...)
    stream,         // an error event inside a 200 stream
    protocol,       // an answer mooring cannot read: not JSON, a wrong shape, over a limit
    cut_off,        // the stream ended before [DONE] or a finish_reason
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
  std::string message;                     // for the user: fixed per kind, no upstream text
  std::string detail;                      // for the log: redacted upstream detail
};

// Whether a failure says something about the upstream's health (5xx, 429,
// 408, timeouts, resets, broken or cut-off streams), and so counts toward the
// circuit breaker. A request the provider rejected (400, 401, 403, 404, 413,
// 422...) is that request's failure only.
bool is_upstream_fault(const ProviderError& error);

const char* to_string(ProviderError::Kind kind);

// Receives each piece of the reply as it arrives, on the network thread. An
// empty piece says the provider is at work with nothing for the user yet (a
// reasoning model thinking); ResilientProvider takes it as progress and
// passes on only the pieces that hold text.
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
  // False when complete() never waits for anything (it runs to its end once
  // started): there is then nothing for a timeout to cut short.
  virtual bool may_wait() const { return true; }
};

// A ProviderError by name: what kind, what the user is told, what the
// operator's log gets, and whether another attempt may help.
inline ProviderError provider_error(ProviderError::Kind kind, std::string message,
                                    std::string detail = {}, bool retryable = false) {
  ProviderError error;
  error.kind = kind;
  error.retryable = retryable;
  error.message = std::move(message);
  error.detail = std::move(detail);
  return error;
}

inline CompletionResult failure(ProviderError error) {
  return CompletionResult(boost::system::in_place_error, std::move(error));
}

}  // namespace mooring::llm
