#include "chat/onebot_event.hpp"

#include <boost/json.hpp>
#include <gtest/gtest.h>

namespace mooring::chat::onebot {
namespace {

namespace json = boost::json;

OneBotEvent read(std::string_view text) { return read_event(json::parse(text).as_object()); }

TEST(OneBotEvent, PrivateAndGroupMessagesInBothForms) {
  auto p = read(R"({"time":1700000000,"self_id":10001000,"post_type":"message","message_type":"private",
    "sub_type":"friend","message_id":42,"user_id":12345678,
    "message":[{"type":"text","data":{"text":"hi"}}],"raw_message":"hi","font":0,
    "sender":{"user_id":12345678,"nickname":"Alice","sex":"unknown","age":0}})");
  ASSERT_TRUE(std::holds_alternative<MessageEvent>(p));
  const auto& m = std::get<MessageEvent>(p);
  EXPECT_EQ(m.session_id(), "qq:10001000:private:12345678");
  EXPECT_EQ(m.sender_name, "Alice");
  EXPECT_EQ(m.message_id, 42);
  EXPECT_EQ(m.message, Segments{text_segment("hi")});

  auto g = read(R"({"self_id":1,"post_type":"message","message_type":"group","group_id":"777",
    "user_id":5,"message_id":9,"message":"[CQ:at,qq=1] hello","sender":{"card":"Bob","nickname":"bob"},
    "anonymous":null,"extra_vendor_field":{"x":[1,2]}})");
  ASSERT_TRUE(std::holds_alternative<MessageEvent>(g));
  EXPECT_EQ(std::get<MessageEvent>(g).session_id(), "qq:1:group:777");
  EXPECT_EQ(std::get<MessageEvent>(g).sender_name, "Bob");  // the group card first
  EXPECT_EQ(std::get<MessageEvent>(g).message.size(), 2u);
}

TEST(OneBotEvent, MetaEventsAndRequests) {
  auto h = read(R"({"self_id":1,"post_type":"meta_event","meta_event_type":"heartbeat","interval":30000,
    "status":{"online":true,"good":true}})");
  ASSERT_TRUE(std::holds_alternative<Heartbeat>(h));
  EXPECT_EQ(std::get<Heartbeat>(h).interval_ms, 30000);
  auto l = read(R"({"self_id":1,"post_type":"meta_event","meta_event_type":"lifecycle","sub_type":"connect"})");
  ASSERT_TRUE(std::holds_alternative<Lifecycle>(l));
  EXPECT_EQ(std::get<Lifecycle>(l).sub_type, "connect");
  auto r = read(R"({"self_id":1,"post_type":"request","request_type":"friend","user_id":8,"comment":"hi","flag":"f"})");
  ASSERT_TRUE(std::holds_alternative<RequestEvent>(r));
  EXPECT_EQ(std::get<RequestEvent>(r).kind, "friend");
}

TEST(OneBotEvent, WhatIsNotUnderstoodIsIgnoredWithAReason) {
  for (const char* text : {
           R"({"post_type":"message_sent","message_type":"private","user_id":1,"message":"x"})",
           R"({"post_type":"notice","notice_type":"group_recall"})",
           R"({"post_type":"something_new"})",
           R"({})",
           R"({"post_type":"message","message_type":"guild","user_id":1,"message":"x"})",
           R"({"post_type":"message","message_type":"private","message":"x"})",
           R"({"post_type":"message","message_type":"private","user_id":"abc","message":"x"})",
           R"({"post_type":"message","message_type":"group","user_id":1,"message":"x"})",
           R"({"post_type":"message","message_type":"private","user_id":1,"message":42})",
           R"({"post_type":"message","message_type":"private","user_id":18446744073709551615,"message":"x"})",
           R"({"post_type":"meta_event","meta_event_type":"heartbeat","interval":-5})"}) {
    const auto event = read(text);
    if (const auto* h = std::get_if<Heartbeat>(&event)) {
      EXPECT_FALSE(h->interval_ms.has_value()) << text;
      continue;
    }
    ASSERT_TRUE(std::holds_alternative<Ignored>(event)) << text;
    EXPECT_FALSE(std::get<Ignored>(event).why.empty()) << text;
  }
}

// Defect: a message from user_id 0 or a negative one was answered (a send to
// QQ user 0), and a message event that could not be read was said only at
// debug level. A QQ number is a whole number from 1 up; an event that names
// none, or has no message, is marked for the operator's log.
TEST(OneBotEvent, AMessageWithoutAQqNumberOrAMessageIsUnreadable) {
  for (const char* text : {
           R"({"post_type":"message","message_type":"private","user_id":0,"message":"x"})",
           R"({"post_type":"message","message_type":"private","user_id":-5,"message":"x"})",
           R"({"post_type":"message","message_type":"private","user_id":"abc","message":"x"})",
           R"({"post_type":"message","message_type":"private","user_id":1.5,"message":"x"})",
           R"({"post_type":"message","message_type":"private","message":"x"})",
           R"({"post_type":"message","message_type":"group","user_id":1,"group_id":0,"message":"x"})",
           R"({"post_type":"message","message_type":"group","user_id":1,"group_id":-7,"message":"x"})",
           R"({"post_type":"message","message_type":"private","user_id":1,"message":null})",
           R"({"post_type":"message","message_type":"private","user_id":1})"}) {
    const auto event = read(text);
    ASSERT_TRUE(std::holds_alternative<Ignored>(event)) << text;
    EXPECT_TRUE(std::get<Ignored>(event).unreadable_message) << text;
  }
  const auto huge = read(
      R"({"post_type":"message","message_type":"private","user_id":9223372036854775808,"message":"x"})");
  ASSERT_TRUE(std::holds_alternative<Ignored>(huge));
  EXPECT_EQ(std::get<Ignored>(huge).why,
            "a message whose user_id is 9223372036854775808, not a QQ number");
  // Other kinds of event nobody reads are not faults.
  const auto notice = read(R"({"post_type":"notice","notice_type":"group_recall"})");
  ASSERT_TRUE(std::holds_alternative<Ignored>(notice));
  EXPECT_FALSE(std::get<Ignored>(notice).unreadable_message);
  const auto one = read(R"({"post_type":"message","message_type":"private","user_id":1,"message":"x"})");
  ASSERT_TRUE(std::holds_alternative<MessageEvent>(one));
  EXPECT_EQ(std::get<MessageEvent>(one).user_id, 1);
}

}  // namespace
}  // namespace mooring::chat::onebot
