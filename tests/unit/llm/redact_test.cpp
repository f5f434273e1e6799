#include "llm/redact.hpp"

#include <gtest/gtest.h>

namespace mooring::llm {
namespace {

TEST(Redact, TheConfiguredKeyGoesWhereverItIs) {
  EXPECT_EQ(redact("Incorrect API key provided: my-own-key-123.", "my-own-key-123"),
            "Incorrect API key provided: [redacted].");
  EXPECT_EQ(redact("xmy-own-key-123ymy-own-key-123", "my-own-key-123"), "x[redacted]y[redacted]");
  // A placeholder key (Ollama's, vLLM's "EMPTY", "x") where it stands alone
  // only: the upstream's words stay readable. Defect: "ma[redacted]_tokens".
  EXPECT_EQ(redact("max_tokens is too large for x (nginx/1.22.1)", "x"),
            "max_tokens is too large for [redacted] (nginx/1.22.1)");
  EXPECT_EQ(redact("EMPTY: key EMPTY, EMPTYISH", "EMPTY"), "[redacted]: key [redacted], EMPTYISH");
}

TEST(Redact, KeyShapedTokensGoWithoutBeingConfigured) {
  EXPECT_EQ(redact("Incorrect API key provided: sk-proj-abcDEF123456. You can find"),
            "Incorrect API key provided: [redacted]. You can find");
  EXPECT_EQ(redact("key sk-abc1***********************wxyz is wrong"), "key [redacted] is wrong");
  EXPECT_EQ(redact("sent Authorization: Bearer abc.def-123 here"),
            "sent Authorization: Bearer [redacted] here");
  EXPECT_EQ(redact("BEARER\tzzz"), "BEARER\t[redacted]");
  // A JWT: each base64 part long enough goes.
  EXPECT_EQ(
      redact(
          "token "
          "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4ifQ.x"),
      "token [redacted].[redacted].x");
  // Whatever follows "Bearer " is taken for a credential, even a plain word.
  EXPECT_EQ(redact("the bearer of news"), "the bearer [redacted] news");
  EXPECT_EQ(
      redact("data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk"),
      "data:image/png;base64,[redacted]");
}

TEST(Redact, OrdinaryTextIsLeftAlone) {
  const std::string text =
      "The model `gpt-4o-mini` does not exist or you do not have access to it; see "
      "https://platform.openai.com/docs/models (request req_123). Ask-me-anything. "
      "internationalization-and-localization-everywhere";
  EXPECT_EQ(redact(text), text);
  EXPECT_EQ(redact("task-1234567890 sketch-abcdefghij"), "task-1234567890 sketch-abcdefghij");
  EXPECT_EQ(redact(""), "");
  EXPECT_EQ(redact("Bearer"), "Bearer");
}

}  // namespace
}  // namespace mooring::llm
