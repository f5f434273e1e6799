// The embedded default provider: no network. Replies "echo: <the user's text>"
// word by word, waiting `token_delay` between pieces (for demos and tests), and
// mentions attached images by count.
#pragma once

#include "llm/provider.hpp"

namespace mooring::llm {

class EchoProvider : public Provider {
 public:
  explicit EchoProvider(runtime::Duration token_delay) : token_delay_(token_delay) {}
  awaitable<CompletionResult> complete(const ChatRequest& request, PieceSink on_piece) override;
  std::string_view kind() const override { return "echo"; }
  // Only its pauses between pieces wait.
  bool may_wait() const override { return token_delay_ > runtime::Duration::zero(); }

 private:
  runtime::Duration token_delay_;
};

}  // namespace mooring::llm
