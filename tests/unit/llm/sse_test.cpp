#include "llm/sse.hpp"

#include <gtest/gtest.h>

namespace mooring::llm {
namespace {

TEST(SseParser, EventsSplitAtAnyByteComeOutWhole) {
  const std::string stream =
      ": keep-alive comment\n\ndata: {\"a\":1}\n\nevent: message\r\ndata: line one\r\ndata: line two\r\n\r\n"
      "data: [DONE]\n\n";
  for (std::size_t split = 1; split < stream.size(); ++split) {
    SseParser parser;
    std::vector<std::string> events;
    ASSERT_TRUE(parser.feed(stream.substr(0, split), events));
    ASSERT_TRUE(parser.feed(stream.substr(split), events));
    ASSERT_EQ(events.size(), 3u) << "split at " << split;
    EXPECT_EQ(events[0], "{\"a\":1}");
    EXPECT_EQ(events[1], "line one\nline two");
    EXPECT_EQ(events[2], "[DONE]");
    EXPECT_FALSE(parser.has_partial());
  }
}

TEST(SseParser, ByteByByte) {
  const std::string stream = "data: x\n\ndata:y\n\n";
  SseParser parser;
  std::vector<std::string> events;
  for (char c : stream) ASSERT_TRUE(parser.feed(std::string_view(&c, 1), events));
  EXPECT_EQ(events, (std::vector<std::string>{"x", "y"}));
}

TEST(SseParser, AnOverlongLineIsAnError) {
  SseParser parser(16);
  std::vector<std::string> events;
  EXPECT_FALSE(parser.feed("data: " + std::string(100, 'x'), events));
}

}  // namespace
}  // namespace mooring::llm
