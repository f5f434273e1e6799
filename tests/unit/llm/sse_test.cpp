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
    std::vector<SseEvent> events;
    ASSERT_EQ(parser.feed(stream.substr(0, split), events), SseParser::Status::ok);
    ASSERT_EQ(parser.feed(stream.substr(split), events), SseParser::Status::ok);
    ASSERT_EQ(events.size(), 3u) << "split at " << split;
    EXPECT_EQ(events[0], (SseEvent{"", "{\"a\":1}"}));
    EXPECT_EQ(events[1], (SseEvent{"message", "line one\nline two"}));
    EXPECT_EQ(events[2], (SseEvent{"", "[DONE]"}));
    EXPECT_FALSE(parser.has_partial());
  }
}

// Defect: a byte order mark before the first line made it an unknown field,
// and the first event was lost. Only there is it dropped.
TEST(SseParser, AByteOrderMarkBeforeTheStreamIsNotPartOfItsFirstLine) {
  const std::string stream = "\xEF\xBB\xBF" "data: first\n\ndata: \xEF\xBB\xBF" "second\n\n";
  for (std::size_t split = 1; split < stream.size(); ++split) {
    SseParser parser;
    std::vector<SseEvent> events;
    ASSERT_EQ(parser.feed(stream.substr(0, split), events), SseParser::Status::ok);
    ASSERT_EQ(parser.feed(stream.substr(split), events), SseParser::Status::ok);
    EXPECT_EQ(events, (std::vector<SseEvent>{{"", "first"}, {"", "\xEF\xBB\xBF" "second"}}))
        << "split at " << split;
  }
}

TEST(SseParser, ByteByByte) {
  const std::string stream = "data: x\n\ndata:y\n\n";
  SseParser parser;
  std::vector<SseEvent> events;
  for (char c : stream) ASSERT_EQ(parser.feed(std::string_view(&c, 1), events), SseParser::Status::ok);
  EXPECT_EQ(events, (std::vector<SseEvent>{{"", "x"}, {"", "y"}}));
}

TEST(SseParser, AnOverlongLineIsAnError) {
  SseParser parser(16);
  std::vector<SseEvent> events;
  EXPECT_EQ(parser.feed("data: " + std::string(100, 'x'), events), SseParser::Status::line_too_long);
  // Once over, it stays over.
  EXPECT_EQ(parser.feed("\n\n", events), SseParser::Status::line_too_long);
  EXPECT_TRUE(events.empty());
}

// An endless line arriving in small reads is refused as soon as it passes the
// limit, not when it ends.
TEST(SseParser, AnEndlessLineIsRefusedAtTheLimit) {
  SseParser parser(1024);
  std::vector<SseEvent> events;
  std::size_t fed = 0;
  while (parser.feed(std::string(100, 'x'), events) == SseParser::Status::ok) fed += 100;
  EXPECT_LE(fed, 1024u);
}

// Many short data lines and never a blank line: one event that would grow
// without end.
TEST(SseParser, AnEventOfManyDataLinesIsBounded) {
  SseParser parser(1024, 4096);
  std::vector<SseEvent> events;
  std::size_t lines = 0;
  while (parser.feed("data: " + std::string(100, 'y') + "\n", events) == SseParser::Status::ok) {
    ++lines;
    ASSERT_LT(lines, 1000u);
  }
  EXPECT_EQ(parser.feed("", events), SseParser::Status::event_too_long);
  EXPECT_LE(lines * 101, 4096u);
  EXPECT_TRUE(events.empty());

  // Under the bound, the lines join into one event.
  SseParser fits(1024, 4096);
  ASSERT_EQ(fits.feed("data: a\ndata: b\n\n", events), SseParser::Status::ok);
  EXPECT_EQ(events, (std::vector<SseEvent>{{"", "a\nb"}}));
}

// An event's type is its last `event` field, and lasts for that event only;
// one without data is not passed on.
TEST(SseParser, AnEventCarriesItsTypeForItselfOnly) {
  SseParser parser;
  std::vector<SseEvent> events;
  ASSERT_EQ(parser.feed("event: ping\n\nevent: first\nevent: error\ndata: {\"message\":\"busy\"}\n\n"
                        "data: after\n\nevent\ndata: bare\n\n",
                        events),
            SseParser::Status::ok);
  EXPECT_EQ(events, (std::vector<SseEvent>{
                        {"error", "{\"message\":\"busy\"}"}, {"", "after"}, {"", "bare"}}));
}

}  // namespace
}  // namespace mooring::llm
