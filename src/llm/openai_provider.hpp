// Any OpenAI-compatible POST {base_url}/chat/completions (OpenAI, DeepSeek,
// Qwen, Ollama, vLLM, llama.cpp server...), streamed with server-sent events.
// One attempt per call: retries, limits and deadlines are ResilientProvider's.
// The API key comes from the environment and is never logged.
#pragma once

#include "llm/provider.hpp"
#include "net/http_client.hpp"

#include <memory>

namespace mooring::llm {

struct OpenAiOptions {
  std::string base_url;  // "https://api.openai.com/v1"
  std::string model;
  std::string api_key;   // may be empty (Ollama, llama.cpp)
  std::size_t max_error_body_bytes = 64 * 1024;
};

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

// Classifies an HTTP error status and its body into a ProviderError with a
// message a user can act on.
ProviderError error_from_status(int status, std::string_view body,
                                std::optional<runtime::Duration> retry_after);

// Classifies an error object found inside a stream ({"error": {...}}).
ProviderError error_from_stream_event(const boost::json::value& error);

}  // namespace mooring::llm
