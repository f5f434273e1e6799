#include "chat/protocol.hpp"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <limits>
#include <random>

namespace mooring::chat {
namespace {

namespace json = boost::json;

std::string error_name(const ClientFrame& frame) {
  const auto* error = std::get_if<ProtocolError>(&frame);
  return error ? error->name : "";
}

bool valid_utf8(std::string_view text) {
  std::size_t i = 0;
  while (i < text.size()) {
    const auto c = static_cast<unsigned char>(text[i]);
    std::size_t length = c < 0x80           ? 1
                         : (c >> 5) == 0x6  ? 2
                         : (c >> 4) == 0xE  ? 3
                         : (c >> 3) == 0x1E ? 4
                                            : 0;
    if (length == 0 || i + length > text.size()) return false;
    for (std::size_t k = 1; k < length; ++k)
      if ((static_cast<unsigned char>(text[i + k]) & 0xC0) != 0x80) return false;
    i += length;
  }
  return true;
}

TEST(Protocol, ResumeAfterBeyondInt64IsAnErrorNotAThrow) {
  EXPECT_EQ(error_name(parse_client_frame(R"({"type":"resume","after":9223372036854775808})")),
            "out_of_range");
  EXPECT_EQ(error_name(parse_client_frame(R"({"type":"resume","after":18446744073709551615})")),
            "out_of_range");
  // Past 2^64 JSON numbers become doubles; and the other wrong shapes.
  for (const char* frame :
       {R"({"type":"resume","after":18446744073709551616})", R"({"type":"resume","after":-1})",
        R"({"type":"resume","after":1.5})", R"({"type":"resume","after":1e400})",
        R"({"type":"resume","after":null})", R"({"type":"resume","after":"3"})",
        R"({"type":"resume","after":[3]})"}) {
    SCOPED_TRACE(frame);
    const auto parsed = parse_client_frame(frame);
    ASSERT_TRUE(std::holds_alternative<ProtocolError>(parsed));
  }
  // A whole number too large is out of range however JSON carries it.
  EXPECT_EQ(error_name(parse_client_frame(R"({"type":"resume","after":18446744073709551616})")),
            "out_of_range");
  EXPECT_EQ(error_name(parse_client_frame(R"({"type":"resume","after":1e308})")), "out_of_range");
  EXPECT_EQ(error_name(parse_client_frame(R"({"type":"resume","after":-1})")), "wrong_type");
  EXPECT_EQ(error_name(parse_client_frame(R"({"type":"resume","after":1.5})")), "wrong_type");
  const auto largest = parse_client_frame(R"({"type":"resume","after":9223372036854775807})");
  ASSERT_TRUE(std::holds_alternative<Resume>(largest));
  EXPECT_EQ(std::get<Resume>(largest).after, std::numeric_limits<std::int64_t>::max());
  EXPECT_EQ(std::get<Resume>(parse_client_frame(R"({"type":"resume","after":0})")).after, 0);
}

TEST(Protocol, DeepNestingIsInvalidJson) {
  const std::string deep_array = std::string(100000, '[') + std::string(100000, ']');
  EXPECT_EQ(error_name(parse_client_frame(deep_array)), "invalid_json");
  std::string deep_object = R"({"text":"hi","x":)";
  for (std::size_t i = 0; i < max_frame_depth; ++i) deep_object += R"({"a":)";
  deep_object += "1" + std::string(max_frame_depth, '}') + "}";
  EXPECT_EQ(error_name(parse_client_frame(deep_object)), "invalid_json");
}

TEST(Protocol, InvalidUtf8AndLoneSurrogatesNeverBecomeText) {
  for (const std::string& frame :
       {std::string("{\"text\":\"\xff\xfe\"}"), std::string("{\"text\":\"\xc3\"}"),
        std::string("{\"text\":\"\xed\xa0\x80\"}")}) {
    EXPECT_EQ(error_name(parse_client_frame(frame)), "invalid_json");
  }
  // An escaped lone surrogate: refused, or turned into valid UTF-8.
  for (const char* frame :
       {R"({"text":"\ud800"})", R"({"text":"\udc00x"})", R"({"text":"a\ud800\u0041"})"}) {
    SCOPED_TRACE(frame);
    const auto parsed = parse_client_frame(frame);
    if (const auto* message = std::get_if<UserMessage>(&parsed)) {
      EXPECT_TRUE(valid_utf8(message->text));
    }
  }
}

TEST(Protocol, AnErrorAboutAnUnknownTypeIsValidUtf8) {
  std::string kind = "x";  // then é (two bytes) 100 times: an even cut lands inside one
  for (int i = 0; i < 100; ++i) kind += "\xc3\xa9";
  const auto parsed = parse_client_frame(R"({"type":")" + kind + R"("})");
  ASSERT_EQ(error_name(parsed), "unknown_type");
  EXPECT_TRUE(valid_utf8(std::get<ProtocolError>(parsed).description));
  EXPECT_TRUE(valid_utf8(error_frame("unknown_type", std::get<ProtocolError>(parsed).description)));
}

// Cheshire Cat clients add keys of their own and send one image as "image",
// possibly without text.
// Defect: a data: URL of any type (text/html) or with data that is not
// base64 was taken, stored and handed to the provider as an image.
TEST(Protocol, ADataUrlImageIsAnImageTypeInBase64) {
  for (const char* frame : {
           R"({"text":"x","images":["data:text/html;base64,PGI+aGk8L2I+"]})",
           R"({"text":"x","images":["data:image/png,rawbytes"]})",
           R"({"text":"x","images":["data:image/png;base64,AA AA"]})",
           R"({"text":"x","images":["data:image/png;base64,<script>"]})",
           R"({"text":"x","images":["data:image/png;base64"]})",
           R"({"text":"x","image":"data:,AAAA"})"}) {
    SCOPED_TRACE(frame);
    EXPECT_EQ(error_name(parse_client_frame(frame)), "invalid_image");
  }
  for (const char* frame : {R"({"text":"x","images":["data:image/jpeg;base64,/9j/4AA="]})",
                            R"({"text":"x","image":"data:image/svg+xml;base64,PHN2Zy8+"})",
                            R"({"text":"x","images":["data:image/png;base64,"]})"}) {
    SCOPED_TRACE(frame);
    EXPECT_TRUE(std::holds_alternative<UserMessage>(parse_client_frame(frame)));
  }
}

TEST(Protocol, UnnamedKeysAreIgnoredAndNamedKeysMustHaveTheirType) {
  const auto cat = parse_client_frame(
      R"({"text":"look","user_id":"alice","prompt_settings":{"x":[1,2]},"image":"https://e.com/c.png","after":"x"})");
  ASSERT_TRUE(std::holds_alternative<UserMessage>(cat));
  EXPECT_EQ(std::get<UserMessage>(cat).text, "look");
  EXPECT_FALSE(std::get<UserMessage>(cat).id.has_value());
  EXPECT_EQ(std::get<UserMessage>(cat).images.size(), 1u);

  const auto image_only =
      parse_client_frame(R"({"image":"data:image/png;base64,AAAA","user_id":"a"})");
  ASSERT_TRUE(std::holds_alternative<UserMessage>(image_only));
  EXPECT_TRUE(std::get<UserMessage>(image_only).text.empty());

  for (const char* frame :
       {R"({"text":42})", R"({"text":"hi","id":{"a":1}})", R"({"text":"hi","id":1.5})",
        R"({"text":"hi","images":"x"})", R"({"text":"hi","images":[1]})",
        R"({"text":"hi","image":42})", R"({"type":7,"text":"hi"})",
        R"({"text":"hi","image":["https://e.com/x.png"]})"}) {
    SCOPED_TRACE(frame);
    EXPECT_EQ(error_name(parse_client_frame(frame)), "wrong_type");
  }
  EXPECT_EQ(error_name(parse_client_frame(R"({"user_id":"a"})")), "missing_text");
  EXPECT_EQ(error_name(parse_client_frame(R"({"text":"","images":[]})")), "empty_message");
}

TEST(Protocol, TooManyImagesAreRefusedWithoutCopyingThem) {
  json::array images;
  for (int i = 0; i < 100000; ++i) images.emplace_back("https://e.com/x.png");
  EXPECT_EQ(error_name(parse_client_frame(
                json::serialize(json::object{{"text", "x"}, {"images", images}}))),
            "too_many_images");
  json::array sixteen;
  for (std::size_t i = 0; i < max_images; ++i) sixteen.emplace_back("https://e.com/x.png");
  EXPECT_EQ(error_name(parse_client_frame(json::serialize(json::object{
                {"text", "x"}, {"images", sixteen}, {"image", "https://e.com/y.png"}}))),
            "too_many_images");
}

// A client id is a string (DESIGN.md: "id": "<client id>"), echoed in the
// ack as sent. A number in its place is refused, with the way to send it:
// taken as its digits, 1 and "1" would be one id, and the second message
// would be dropped as a repeat of the first.
TEST(Protocol, AnIdIsAStringOfBoundedLength) {
  EXPECT_EQ(*std::get<UserMessage>(parse_client_frame(R"({"text":"a","id":"1"})")).id, "1");
  for (const char* frame : {R"({"text":"a","id":1})", R"({"text":"a","id":-3})",
                            R"({"text":"a","id":9223372036854775808})",
                            R"({"text":"a","id":18446744073709551615})", R"({"text":"a","id":1.5})",
                            R"({"text":"a","id":true})"}) {
    SCOPED_TRACE(frame);
    EXPECT_EQ(error_name(parse_client_frame(frame)), "wrong_type");
  }
  const auto refused = parse_client_frame(R"({"text":"a","id":42})");
  ASSERT_TRUE(std::holds_alternative<ProtocolError>(refused));
  EXPECT_NE(std::get<ProtocolError>(refused).description.find(R"("id": "42")"), std::string::npos)
      << std::get<ProtocolError>(refused).description;
  EXPECT_EQ(error_name(parse_client_frame(R"({"text":"a","id":""})")), "wrong_type");
  EXPECT_EQ(error_name(parse_client_frame(json::serialize(
                json::object{{"text", "a"}, {"id", std::string(max_client_id_bytes + 1, 'x')}}))),
            "wrong_type");
  // Bytes, not characters, and said so: 100 CJK characters are 300 bytes.
  std::string wide;
  for (int i = 0; i < 100; ++i) wide += "\xe6\x97\xa5";
  const auto too_long = parse_client_frame(json::serialize(json::object{{"text", "a"}, {"id", wide}}));
  ASSERT_TRUE(std::holds_alternative<ProtocolError>(too_long));
  EXPECT_NE(std::get<ProtocolError>(too_long).description.find("\"id\" must be 1 to 256 bytes long in UTF-8 (this one is 300)"),
            std::string::npos)
      << std::get<ProtocolError>(too_long).description;
}

TEST(Protocol, AckCarriesTheClientId) {
  const auto ack = json::parse(ack_frame("m1", 7)).as_object();
  EXPECT_EQ(ack.at("type"), "ack");
  EXPECT_EQ(ack.at("id"), "m1");
  EXPECT_EQ(ack.at("seq"), 7);
}

// A frame far larger than the buffer frames are read in (1 KiB on the
// stack): 10,000 keys the protocol does not name and a 1 MiB text. It is read
// whole, the spill freed with the frame.
TEST(Protocol, AFrameThatOutgrowsTheStackBufferIsReadWhole) {
  std::string frame = "{";
  for (int i = 0; i < 10000; ++i) frame += fmt::format("\"k{}\":[{}],", i, i);
  frame += R"("text":")" + std::string(1 << 20, 'w') + R"(","id":"m1"})";
  const auto parsed = parse_client_frame(frame);
  ASSERT_TRUE(std::holds_alternative<UserMessage>(parsed));
  EXPECT_EQ(std::get<UserMessage>(parsed).text.size(), 1u << 20);
  EXPECT_EQ(std::get<UserMessage>(parsed).id, std::optional<std::string>("m1"));
}

// The server's frames, byte for byte: the keys in the order clients have
// seen them, escapes, and a text longer than the buffer frames are built in.
TEST(Protocol, TheServersFramesAreTheseBytes) {
  EXPECT_EQ(ack_frame("m1", 7), R"({"type":"ack","id":"m1","seq":7})");
  EXPECT_EQ(token_frame("a \"b\"", 3), R"({"type":"chat_token","content":"a \"b\"","reply_to":3})");
  EXPECT_EQ(chat_frame("hi\n", "u1", 9, 8),
            R"({"type":"chat","content":"hi\n","text":"hi\n","who":"AI","user_id":"u1","seq":9,)"
            R"("reply_to":8})");
  EXPECT_EQ(notification_frame("x"), R"({"type":"notification","content":"x"})");
  EXPECT_EQ(error_frame("n", "d", std::nullopt), R"({"type":"error","name":"n","description":"d"})");
  EXPECT_EQ(error_frame("n", "d", 5),
            R"({"type":"error","name":"n","description":"d","reply_to":5})");
  const std::string long_text(3000, 'w');
  EXPECT_EQ(chat_frame(long_text, "u1", 2, 1),
            R"({"type":"chat","content":")" + long_text + R"(","text":")" + long_text +
                R"(","who":"AI","user_id":"u1","seq":2,"reply_to":1})");
}

// Written key by key, the frames are what Boost.JSON writes for the same
// object, whatever the strings hold (every byte, invalid UTF-8) and at the
// ends of the numbers' range.
TEST(Protocol, FramesAreWhatBoostJsonWritesForTheSameObject) {
  std::mt19937 random(7);
  std::vector<std::string> texts{"", "\"\\/\b\f\n\r\t", std::string("\0\x01\x1f\x7f", 4),
                                 "\xff\xfe\xc3", "\xe4\xbd\xa0\xe5\xa5\xbd \xf0\x9f\x98\x80"};
  for (int i = 0; i < 200; ++i) {
    std::string text(random() % 1200, '\0');
    for (auto& c : text) c = static_cast<char>(random() % 256);
    texts.push_back(std::move(text));
  }
  const std::int64_t ends[] = {0, -1, std::numeric_limits<std::int64_t>::min(),
                               std::numeric_limits<std::int64_t>::max()};
  for (const auto& text : texts) {
    for (const auto n : ends) {
      EXPECT_EQ(ack_frame(text, n, true),
                json::serialize(json::object{
                    {"type", "ack"}, {"id", text}, {"seq", n}, {"duplicate", true}}));
      EXPECT_EQ(token_frame(text, n),
                json::serialize(json::object{
                    {"type", "chat_token"}, {"content", text}, {"reply_to", n}}));
      EXPECT_EQ(chat_frame(text, text, n, n),
                json::serialize(json::object{{"type", "chat"},
                                             {"content", text},
                                             {"text", text},
                                             {"who", "AI"},
                                             {"user_id", text},
                                             {"seq", n},
                                             {"reply_to", n}}));
      EXPECT_EQ(error_frame(text, text, n),
                json::serialize(json::object{
                    {"type", "error"}, {"name", text}, {"description", text}, {"reply_to", n}}));
    }
    EXPECT_EQ(notification_frame(text),
              json::serialize(json::object{{"type", "notification"}, {"content", text}}));
  }
}

// Seeded mutations of well-formed frames, and random bytes: the parser
// answers every one with a frame or an error, and never throws.
TEST(Protocol, NoInputMakesTheParserThrow) {
  const std::vector<std::string> seeds{
      R"({"text":"hello","id":"m1","images":["data:image/png;base64,AAAA"]})",
      R"({"type":"resume","after":12})",
      R"({"type":"cancel"})",
      R"({"text":"x","image":"https://example.com/a.png","user_id":"u","prompt_settings":{}})",
      R"({"type":"message","text":"\u00e9\ud83d\ude00","id":42})",
  };
  const std::string specials = "{}[]\":,\\-+.eE0123456789tfnul\xff\xc3\xa9 \t\n";
  std::mt19937 rng(20261126);
  std::size_t errors = 0;
  std::size_t frames = 0;
  for (int round = 0; round < 200000; ++round) {
    std::string text = seeds[rng() % seeds.size()];
    const int edits = 1 + static_cast<int>(rng() % 6);
    for (int e = 0; e < edits; ++e) {
      const auto at = text.empty() ? 0 : rng() % (text.size() + 1);
      switch (rng() % 5) {
        case 0:
          text.insert(at, 1, specials[rng() % specials.size()]);
          break;
        case 1:
          if (at < text.size()) text.erase(at, 1);
          break;
        case 2:
          if (at < text.size()) text[at] = static_cast<char>(rng() % 256);
          break;
        case 3:
          text.insert(at, std::to_string(static_cast<std::uint64_t>(rng()) << 32 | rng()));
          break;
        case 4:
          text.insert(at, text.substr(0, rng() % (text.size() + 1)));
          break;
      }
    }
    ClientFrame parsed;
    ASSERT_NO_THROW(parsed = parse_client_frame(text)) << text;
    if (std::holds_alternative<ProtocolError>(parsed)) {
      ++errors;
    } else {
      ++frames;
    }
    if (const auto* error = std::get_if<ProtocolError>(&parsed)) {
      ASSERT_TRUE(valid_utf8(error->description)) << text;
    }
  }
  RecordProperty("errors", static_cast<int>(errors));
  RecordProperty("frames", static_cast<int>(frames));
  EXPECT_GT(errors, 0u);
  EXPECT_GT(frames, 0u);
}

}  // namespace
}  // namespace mooring::chat
