#include "chat/onebot_message.hpp"

#include <boost/json.hpp>
#include <gtest/gtest.h>

namespace mooring::chat::onebot {
namespace {

namespace json = boost::json;

Segment seg(std::string type, std::vector<std::pair<std::string, std::string>> data = {}) {
  return Segment{std::move(type), std::move(data)};
}

TEST(CqCode, EscapingOrderMattersAndRoundTrips) {
  // The spec's round trip, and the order trap: &amp;#91; is "&#91;" as text.
  EXPECT_EQ(escape_text("- [x] use &data"), "- &#91;x&#93; use &amp;data");
  EXPECT_EQ(unescape("- &#91;x&#93; use &amp;data"), "- [x] use &data");
  EXPECT_EQ(unescape("&amp;#91;"), "&#91;");
  EXPECT_EQ(escape_text("&#91;"), "&amp;#91;");
  EXPECT_EQ(escape_text("a,b"), "a,b");
  EXPECT_EQ(escape_value("a,b"), "a&#44;b");
}

TEST(CqCode, ParsesTextAndCodesInOrder) {
  const auto segments = parse_cq_string("[CQ:reply,id=42][CQ:at,qq=10001]hi &#91;there&#93;[CQ:face,id=178]");
  ASSERT_EQ(segments.size(), 4u);
  EXPECT_EQ(segments[0], seg("reply", {{"id", "42"}}));
  EXPECT_EQ(segments[1], seg("at", {{"qq", "10001"}}));
  EXPECT_EQ(segments[2], text_segment("hi [there]"));
  EXPECT_EQ(segments[3], seg("face", {{"id", "178"}}));
}

// Found by the fuzzer: "[CQ:text]" with no data followed by text appended to
// the data of a segment that had none (undefined behaviour, a crash).
TEST(CqCode, ATextCodeIsPlainTextWithOrWithoutItsValue) {
  EXPECT_EQ(parse_cq_string(std::string("\0[CQ:text]x", 11)),
            (Segments{text_segment(std::string("\0x", 2))}));
  EXPECT_EQ(parse_cq_string("a[CQ:text,text=b&#44;c]d"), (Segments{text_segment("ab,cd")}));
  EXPECT_EQ(parse_cq_string("[CQ:text][CQ:face,id=1]"), (Segments{seg("face", {{"id", "1"}})}));
  const auto segments = parse_cq_string("[CQ:text]x");
  EXPECT_EQ(parse_cq_string(to_cq_string(segments)), segments);
}

TEST(CqCode, ValuesKeepTheirEqualsSignsAndEscapedCommas) {
  // The spec's share example: a comma inside a value is &#44;.
  const std::string text =
      "[CQ:share,url=http://baidu.com?a=1&amp;b=2,title=Hello&#44; world]";
  const auto segments = parse_cq_string(text);
  ASSERT_EQ(segments.size(), 1u);
  EXPECT_EQ(segments[0].get("url"), "http://baidu.com?a=1&b=2");
  EXPECT_EQ(segments[0].get("title"), "Hello, world");
  EXPECT_EQ(to_cq_string(segments), text);
}

TEST(CqCode, WhatIsNotACodeStaysText) {
  for (const char* text : {"[CQ:", "[CQ:]", "[CQ:face,id]", "[CQ:face,=1]", "[CQ:a=b]",
                           "[CQ:face,id=1", "plain ] text [", ""}) {
    const auto segments = parse_cq_string(text);
    std::string joined;
    for (const auto& segment : segments) {
      EXPECT_EQ(segment.type, "text") << text;
      joined += segment.get("text").value_or("");
    }
    EXPECT_EQ(joined, unescape(text)) << text;
  }
  // A malformed code before a good one: both read, in order.
  const auto mixed = parse_cq_string("[CQ:x,y][CQ:face,id=1]");
  ASSERT_EQ(mixed.size(), 2u);
  EXPECT_EQ(mixed[0], text_segment("[CQ:x,y]"));
  EXPECT_EQ(mixed[1], seg("face", {{"id", "1"}}));
}

// Found by the fuzzer: a key given twice kept both, and the array form (an
// object) kept one; now the last value wins in both forms.
TEST(CqCode, AKeyGivenTwiceKeepsItsLastValue) {
  const auto segments = parse_cq_string("[CQ:share,url=a,url=b,title=t]");
  ASSERT_EQ(segments.size(), 1u);
  EXPECT_EQ(segments[0].data.size(), 2u);
  EXPECT_EQ(segments[0].get("url"), "b");
  auto back = parse_message(boost::json::value(to_json(segments)));
  ASSERT_TRUE(back);
  EXPECT_EQ(*back, segments);
}

// Every "[CQ:" used to be read up to the next "]" afresh, and a key
// compared with every key before it, so a message at the 1 MiB frame limit
// made of "[CQ:=" took minutes to read. At the limit, the worst strings read
// as short ones do.
TEST(CqCode, TheWorstStringsAtTheSizeLimitReadAsShortOnesDo) {
  constexpr std::size_t limit = 1 << 20;
  const auto repeated = [](std::string_view unit, std::string_view end) {
    std::string text;
    while (text.size() + unit.size() + end.size() <= limit) text += unit;
    return text;
  };
  // Openers that all end at the one "]" and are all malformed: an empty type,
  // a type holding '=', a field without '=' (the last one, or every one).
  for (const auto& [unit, end] :
       {std::pair{"[CQ:=", "]"}, {"[CQ:x", "=]"}, {"[CQ:a,b=", ",]"}, {"[CQ:a,", "]"}}) {
    const auto text = repeated(unit, end) + end;
    const auto segments = parse_cq_string(text);
    EXPECT_TRUE(segments == Segments{text_segment(text)}) << unit;
  }
  // A good code after such a run is still a code.
  const auto run = repeated("[CQ:=", "[CQ:face,id=1]");
  EXPECT_TRUE(parse_cq_string(run + "[CQ:face,id=1]") ==
              (Segments{text_segment(run), seg("face", {{"id", "1"}})}));

  // One code with as many keys as fit, the first given again at the end: it
  // keeps its place and takes the last value.
  std::string code = "[CQ:mystery";
  std::size_t keys = 0;
  while (code.size() + 32 < limit) code += ",k" + std::to_string(keys++) + "=v";
  code += ",k0=last]";
  const auto segments = parse_cq_string(code);
  ASSERT_EQ(segments.size(), 1u);
  ASSERT_EQ(segments[0].data.size(), keys);
  EXPECT_EQ(segments[0].data.front(), (std::pair<std::string, std::string>{"k0", "last"}));
  EXPECT_EQ(segments[0].data.back(),
            (std::pair<std::string, std::string>{"k" + std::to_string(keys - 1), "v"}));
}

TEST(CqCode, WellFormedStringsRoundTrip) {
  for (const char* text : {"hello", "&amp;&#91;&#93;", "[CQ:shake]", "a[CQ:image,file=x.jpg,type=flash]b",
                           "[CQ:at,qq=all] 大家好"})
    EXPECT_EQ(to_cq_string(parse_cq_string(text)), text);
}

TEST(Message, AcceptsTheStringTheArrayAndOneSegment) {
  auto from_string = parse_message(json::value("[CQ:at,qq=1]hi"));
  ASSERT_TRUE(from_string);
  EXPECT_EQ(from_string->size(), 2u);
  auto from_array = parse_message(json::parse(
      R"([{"type":"at","data":{"qq":1}},{"type":"text","data":{"text":"hi"}},{"type":"face","data":null}])"));
  ASSERT_TRUE(from_array);
  ASSERT_EQ(from_array->size(), 3u);
  EXPECT_EQ((*from_array)[0].get("qq"), "1");  // a number, written out
  auto one = parse_message(json::parse(R"({"type":"text","data":{"text":"x"}})"));
  ASSERT_TRUE(one);
  EXPECT_EQ(*one, Segments{text_segment("x")});
  for (const char* bad : {"42", "null", R"([1])", R"([{"data":{}}])", R"([{"type":"t","data":[]}])"})
    EXPECT_FALSE(parse_message(json::parse(bad))) << bad;
  // Sent as an array, values literal.
  EXPECT_EQ(json::serialize(to_json({text_segment("[a]"), seg("reply", {{"id", "7"}})})),
            R"([{"type":"text","data":{"text":"[a]"}},{"type":"reply","data":{"id":"7"}}])");
}

TEST(Message, ReadsWhatAConversationKeeps) {
  const auto in = read_incoming(
      {seg("reply", {{"id", "99"}}), seg("at", {{"qq", "10001"}}), text_segment(" hello "),
       seg("at", {{"qq", "555"}}), seg("face", {{"id", "1"}}), seg("image", {{"file", "a.jpg"}, {"url", "https://x/a.jpg"}}),
       seg("image", {{"file", "base64://AAAA"}}), seg("record", {{"file", "v.amr"}}), seg("mystery")},
      10001);
  EXPECT_TRUE(in.mentions_self);
  EXPECT_EQ(in.replying_to, "99");
  EXPECT_EQ(in.text, " hello @555[face][voice message][mystery]");
  EXPECT_EQ(in.images, (std::vector<std::string>{"https://x/a.jpg", "data:image/png;base64,AAAA"}));
  EXPECT_FALSE(read_incoming({seg("at", {{"qq", "2"}})}, 10001).mentions_self);
  // Defect: @all (a group announcement) was answered as a question to the bot.
  const auto everyone = read_incoming({seg("at", {{"qq", "all"}}), text_segment(" meeting moved")},
                                      10001);
  EXPECT_FALSE(everyone.mentions_self);
  EXPECT_EQ(everyone.text, "@all meeting moved");
}

TEST(Message, AGroupMessageIsForTheBotWhenAddressedToIt) {
  const std::vector<std::string> prefixes{"/ai", "!bot"};
  const auto incoming = [](std::string text, bool mentions = false) {
    Incoming in;
    in.text = std::move(text);
    in.mentions_self = mentions;
    return in;
  };
  EXPECT_EQ(group_request(incoming("/ai  what time is it"), false, prefixes), "what time is it");
  EXPECT_EQ(group_request(incoming("  !bot hi"), false, prefixes), "hi");
  EXPECT_EQ(group_request(incoming(" hello", true), false, prefixes), "hello");
  EXPECT_EQ(group_request(incoming("thanks"), true, prefixes), "thanks");
  EXPECT_EQ(group_request(incoming("just chatting about /ai"), false, prefixes), std::nullopt);
  EXPECT_EQ(group_request(incoming("/ai"), false, {}), std::nullopt);
  // Defect: a word that merely starts with the prefix ("/aim") was answered,
  // the prefix cut out of it. A prefix in another script may run on.
  EXPECT_EQ(group_request(incoming("/aim for 9am"), false, prefixes), std::nullopt);
  EXPECT_EQ(group_request(incoming("!bots are fun"), false, prefixes), std::nullopt);
  EXPECT_EQ(group_request(incoming("/ai"), false, prefixes), "");
  EXPECT_EQ(group_request(incoming("/ai,hi"), false, prefixes), ",hi");
  EXPECT_EQ(group_request(incoming("/ai你好"), false, prefixes), "你好");
  EXPECT_EQ(group_request(incoming("小助手你好"), false, {"小助手"}), "你好");
}

std::size_t chars(const std::string& s) {
  std::size_t n = 0;
  for (unsigned char c : s) n += (c & 0xC0) != 0x80;
  return n;
}

TEST(SplitReply, CutsAtTheBestBoundaryAndKeepsEveryCharacter) {
  EXPECT_EQ(split_reply("short", 100), std::vector<std::string>{"short"});
  EXPECT_EQ(split_reply("one.\n\ntwo two two.", 12), (std::vector<std::string>{"one.", "two two two."}));
  EXPECT_EQ(split_reply("First sentence. Second one here", 20),
            (std::vector<std::string>{"First sentence.", "Second one here"}));
  // No boundary at all: a hard cut between code points, never inside one.
  const std::string han = "汉字汉字汉字汉字汉字";  // 10 code points, 30 bytes
  const auto pieces = split_reply(han, 4);
  ASSERT_EQ(pieces.size(), 3u);
  EXPECT_EQ(pieces[0], "汉字汉字");
  EXPECT_EQ(chars(pieces[2]), 2u);
  std::string long_text;
  for (int i = 0; i < 500; ++i) long_text += "word" + std::to_string(i) + (i % 7 == 6 ? ". " : " ");
  std::string rejoined;
  for (const auto& piece : split_reply(long_text, 97)) {
    EXPECT_LE(chars(piece), 97u);
    rejoined += piece;
  }
  std::string expected;
  for (char c : long_text)
    if (c != ' ') expected += c;
  std::string got;
  for (char c : rejoined)
    if (c != ' ') got += c;
  EXPECT_EQ(got, expected);
  EXPECT_TRUE(split_reply("", 10).empty());
  // Found by the fuzzer: invalid bytes count one character each, so a piece
  // never holds more than asked.
  const std::string invalid(40, '\xff');
  for (const auto& piece : split_reply(invalid, 7)) EXPECT_LE(piece.size(), 7u);
}

}  // namespace
}  // namespace mooring::chat::onebot
