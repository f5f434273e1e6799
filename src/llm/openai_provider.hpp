// Any OpenAI-compatible POST {base_url}/chat/completions (OpenAI, DeepSeek,
// Qwen, Ollama, vLLM, llama.cpp server...), streamed with server-sent events.
// One attempt per call: retries, limits and deadlines are ResilientProvider's.
// The API key comes from the environment and is never logged.
//
// Promises about what the upstream sends back:
// - every piece and the final text are valid UTF-8 (invalid bytes and a
//   surrogate escape without its other half become U+FFFD; a character split
//   between two events, its UTF-8 bytes or its two surrogate escapes "\ud83d"
//   "\ude00", is joined, not replaced), and the final text is exactly the
//   pieces joined;
// - the reply is bounded: once its text would pass `max_reply_bytes`, it is
//   cut there (at a character boundary), `truncation_notice` is appended as a
//   last piece, the stream is read no further and the reply counts as a
//   success; an SSE line or event, an error body and a non-streamed body are
//   bounded too, and a limit reached stops the read at once;
// - a stream that ends without `[DONE]` or a `finish_reason` is a `cut_off`
//   failure, never a complete answer; after either, the rest of the stream (a
//   usage event, `[DONE]`) is awaited at most ClientOptions::rest_of_body: a
//   stream held open past them ends there, its reply whole;
// - an answer compressed though not asked to be (a Content-Encoding other
//   than identity) is a `protocol` failure at once, never tried again;
// - a body of the wrong shape (not JSON, `{"choices":[1]}`, a non-string
//   content...) is a `protocol` failure with its own detail, never an
//   exception;
// - what the upstream wrote reaches only ProviderError::detail, redacted
//   (llm/redact.hpp); ProviderError::message is a fixed description;
// - a request cancelled while its host name is still being looked up is
//   `cancelled` with a detail that names the host and says where to look
//   (ResilientProvider adds it to an attempt its deadline ended); any other
//   cancellation has no detail;
// - by default every request has a connection of its own, so no response
//   meant for (or slipped in after) one request is read as another's answer.
#pragma once

#include "llm/provider.hpp"
#include "net/http_client.hpp"

#include <boost/json/value.hpp>

#include <memory>

namespace mooring::llm {

struct OpenAiOptions {
  std::string base_url;  // "https://api.openai.com/v1"
  std::string model;
  std::string api_key;   // may be empty (Ollama, llama.cpp)
  std::size_t max_error_body_bytes = 64 * 1024;  // of a non-200 answer, read no further
  std::size_t max_reply_bytes = 1024 * 1024;     // the reply's text (provider.max_reply_bytes)
  std::size_t max_document_bytes = 4 * 1024 * 1024;  // a 200 answered as one JSON document
  std::size_t max_sse_line_bytes = 4 * 1024 * 1024;
  std::size_t max_sse_event_bytes = 4 * 1024 * 1024;  // one event's data, all its lines
  // Keep-alive connections reused across requests. Off by default: HTTP/1.1
  // cannot tell an unsolicited response that arrives just after a pooled
  // connection was checked from the answer to the next request, which may be
  // another user's. The pool's checks catch a stray sent with the answer or
  // while idle; only a connection per request rules out every stray. Turn on
  // for an upstream you trust to save a handshake per request.
  bool reuse_connections = false;
};

// What ends a reply cut at `max_reply_bytes`.
std::string truncation_notice(std::size_t max_reply_bytes);

class OpenAiProvider : public Provider {
 public:
  OpenAiProvider(asio::any_io_executor executor, OpenAiOptions options,
                 net::ClientOptions client_options = {});
  awaitable<CompletionResult> complete(const ChatRequest& request, PieceSink on_piece) override;
  std::string_view kind() const override { return "openai"; }
  std::string_view model() const override { return options_.model; }

  // The JSON body of a request (exposed for tests and debug logs).
  std::string request_body(const ChatRequest& request) const;
  net::HttpClient& client() { return *client_; }

 private:
  OpenAiOptions options_;
  std::unique_ptr<net::HttpClient> client_;
};

// Classifies an HTTP error status and its body into a ProviderError: a fixed
// message by status, the provider's own words (redacted of `api_key` and
// anything secret-shaped) in the detail.
ProviderError error_from_status(int status, std::string_view body,
                                std::optional<runtime::Duration> retry_after,
                                std::string_view api_key = {});

// Classifies an error object found inside a stream ({"error": {...}}).
ProviderError error_from_stream_event(const boost::json::value& error,
                                      std::string_view api_key = {});

}  // namespace mooring::llm
