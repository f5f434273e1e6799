// Secrets out of upstream text. Whatever an upstream writes back (an error
// body, an error event, a line that is not JSON) may quote the credentials it
// was sent: "Incorrect API key provided: sk-...". Every such text passes
// through redact() before it goes anywhere (a log line, an error detail).
// Replaced by "[redacted]":
// - the configured API key, wherever it appears (one of fewer than 8
//   characters, a placeholder such as "EMPTY", only where it stands alone);
// - a bearer credential: "Bearer <token>" (any case) keeps "Bearer ";
// - anything shaped like an API key: "sk-" and 8 or more key characters
//   (OpenAI's "sk-proj-...", Anthropic's "sk-ant-...", masked "sk-abc***xyz");
// - a long base64 run: 32 or more characters of [A-Za-z0-9+/=_-] with at
//   least one digit and one letter (tokens, JWT parts, image data).
#pragma once

#include <string>
#include <string_view>

namespace mooring::llm {

inline constexpr std::string_view redacted_marker = "[redacted]";

std::string redact(std::string_view text, std::string_view api_key = {});

}  // namespace mooring::llm
