#include "chat/onebot_link.hpp"
#include "chat/onebot_event.hpp"

#include <gtest/gtest.h>

namespace mooring::chat::onebot {
namespace {

namespace json = boost::json;
namespace http = net::http;
using namespace std::chrono_literals;

net::Request upgrade(std::vector<std::pair<std::string, std::string>> headers,
                     std::string target = "/onebot/v11/ws") {
  net::Request request;
  request.message.method(http::verb::get);
  request.message.target(target);
  for (const auto& [name, value] : headers) request.message.set(name, value);
  return request;
}

http::status refusal(const std::variant<Admitted, net::HttpResponse>& verdict) {
  const auto* response = std::get_if<net::HttpResponse>(&verdict);
  return response ? response->result() : http::status::ok;
}

TEST(OneBotAdmit, TheHandshakeIsDecidedBeforeTheUpgrade) {
  const LinkOptions open{};
  const LinkOptions guarded{"s3cret", {}};
  auto ok = admit(upgrade({{"X-Self-ID", "10001"}, {"X-Client-Role", "Universal"}}), open);
  ASSERT_TRUE(std::holds_alternative<Admitted>(ok));
  EXPECT_EQ(std::get<Admitted>(ok).self_id, 10001);
  EXPECT_EQ(std::get<Admitted>(ok).role, Role::universal);
  EXPECT_EQ(std::get<Admitted>(admit(upgrade({{"X-Self-ID", "1"}, {"X-Client-Role", "event"}}), open)).role,
            Role::event);

  for (const char* self : {"", "abc", "-5", "0", "99999999999999999999", "1e5", "0x10"})
    EXPECT_EQ(refusal(admit(upgrade({{"X-Self-ID", self}}), open)), http::status::bad_request) << self;
  // A header that is there but not a QQ number is named as such, not as missing.
  const auto named = std::get<net::HttpResponse>(admit(upgrade({{"X-Self-ID", "abc"}}), open));
  EXPECT_NE(named.body().find("bad_self_id"), std::string::npos) << named.body();
  const auto missing = std::get<net::HttpResponse>(admit(upgrade({}), open));
  EXPECT_NE(missing.body().find("missing_self_id"), std::string::npos) << missing.body();
  EXPECT_EQ(refusal(admit(upgrade({}), open)), http::status::bad_request);
  EXPECT_EQ(refusal(admit(upgrade({{"X-Self-ID", "1"}, {"X-Client-Role", "Admin"}}), open)),
            http::status::bad_request);

  // 401 without the token, 403 with a wrong one; bearer or ?access_token=.
  EXPECT_EQ(refusal(admit(upgrade({{"X-Self-ID", "1"}}), guarded)), http::status::unauthorized);
  EXPECT_EQ(refusal(admit(upgrade({{"X-Self-ID", "1"}, {"Authorization", "Bearer nope"}}), guarded)),
            http::status::forbidden);
  EXPECT_EQ(refusal(admit(upgrade({{"X-Self-ID", "1"}}, "/onebot?access_token=nope"), guarded)),
            http::status::forbidden);
  EXPECT_EQ(refusal(admit(upgrade({{"X-Self-ID", "1"}, {"Authorization", "Bearer s3cret"}}), guarded)),
            http::status::ok);
  EXPECT_EQ(refusal(admit(upgrade({{"X-Self-ID", "1"}}, "/onebot?access_token=s3cret"), guarded)),
            http::status::ok);
  // go-cqhttp's scheme (and its forks'), in any case; not a scheme that only
  // begins like it, nor one without its credentials.
  EXPECT_EQ(refusal(admit(upgrade({{"X-Self-ID", "1"}, {"Authorization", "Token s3cret"}}), guarded)),
            http::status::ok);
  EXPECT_EQ(refusal(admit(upgrade({{"X-Self-ID", "1"}, {"Authorization", "token s3cret"}}), guarded)),
            http::status::ok);
  EXPECT_EQ(refusal(admit(upgrade({{"X-Self-ID", "1"}, {"Authorization", "Token nope"}}), guarded)),
            http::status::forbidden);
  for (const char* unreadable : {"Tokens3cret", "Token", "Token ", "Basic s3cret", "Bearers3cret"})
    EXPECT_EQ(refusal(admit(upgrade({{"X-Self-ID", "1"}, {"Authorization", unreadable}}), guarded)),
              http::status::unauthorized)
        << unreadable;
  // The wrong token is never echoed back.
  const auto wrong = admit(upgrade({{"X-Self-ID", "1"}, {"Authorization", "Bearer leaked-value"}}), guarded);
  EXPECT_EQ(std::get<net::HttpResponse>(wrong).body().find("leaked-value"), std::string::npos);

  const LinkOptions only{"", {10001}};
  EXPECT_EQ(refusal(admit(upgrade({{"X-Self-ID", "10002"}}), only)), http::status::forbidden);
  EXPECT_EQ(refusal(admit(upgrade({{"X-Self-ID", "10001"}}), only)), http::status::ok);
}

TEST(OneBotFrames, EventsAndAnswersAreToldApartAndNothingThrows) {
  EXPECT_TRUE(std::holds_alternative<Event>(sort_frame(R"({"post_type":"meta_event","time":1})")));
  auto answer = sort_frame(R"({"status":"ok","retcode":0,"data":null,"echo":17})");
  ASSERT_TRUE(std::holds_alternative<Answer>(answer));
  EXPECT_EQ(std::get<Answer>(answer).echo, "17");
  EXPECT_EQ(std::get<Answer>(sort_frame(R"({"retcode":0,"echo":"17"})")).echo, "17");
  for (const char* bad : {"", "[", "[]", "42", R"({"status":"ok"})", R"({"echo":null})",
                          R"({"retcode":99999999999999999999999,"echo":"x"})"})
    EXPECT_FALSE(std::holds_alternative<Event>(sort_frame(bad))) << bad;
}

// The worst a OneBot implementation could send: 10,000 levels of nesting,
// invalid UTF-8, ids of 2^63 and beyond, an echo 64 KiB long.
TEST(OneBotFrames, TheWorstFramesAreUnreadableOrReadNeverThrown) {
  const std::string deep = std::string(10000, '[') + std::string(10000, ']');
  EXPECT_TRUE(std::holds_alternative<Unreadable>(sort_frame(deep)));
  const std::string deep_event =
      R"({"post_type":"message","message":)" + deep + "}";
  EXPECT_TRUE(std::holds_alternative<Unreadable>(sort_frame(deep_event)));
  EXPECT_TRUE(std::holds_alternative<Unreadable>(
      sort_frame("{\"post_type\":\"message\",\"raw_message\":\"\xff\xfe\"}")));
  auto event = sort_frame(R"({"post_type":"message","message_type":"group","message_id":9223372036854775808,)"
                          R"("group_id":"9223372036854775808","user_id":-9223372036854775808,"message":"x"})");
  ASSERT_TRUE(std::holds_alternative<Event>(event));
  EXPECT_TRUE(std::holds_alternative<Ignored>(read_event(std::get<Event>(event).object)))
      << "a group id beyond int64 is no group id";
  const std::string long_echo(64 * 1024, 'e');
  auto answer = sort_frame(R"({"retcode":0,"echo":")" + long_echo + "\"}");
  ASSERT_TRUE(std::holds_alternative<Answer>(answer));
  EXPECT_EQ(std::get<Answer>(answer).echo.size(), long_echo.size());
}

// Node's JSON.stringify (NapCat, LLOneBot) writes a character cut in half as
// a lone surrogate escape. Defect: Boost.JSON refused the whole frame, and the
// message went unanswered without a word at the default log level.
TEST(OneBotFrames, ALoneSurrogateEscapeIsReadAsTheReplacementCharacter) {
  auto event = sort_frame(
      R"({"post_type":"message","message":"lone \ud83d here, a pair \ud83d\ude00",)"
      R"("sender":{"nickname":["Bob\ude00"]}})");
  ASSERT_TRUE(std::holds_alternative<Event>(event));
  const auto& object = std::get<Event>(event).object;
  EXPECT_EQ(object.at("message").as_string(), "lone \xEF\xBF\xBD here, a pair \xF0\x9F\x98\x80");
  EXPECT_EQ(object.at("sender").at("nickname").as_array().at(0).as_string(), "Bob\xEF\xBF\xBD");
  // The worst nesting with a lone surrogate in it is refused as before.
  const std::string deep = std::string(10000, '[') + "\"\\ud83d\"" + std::string(10000, ']');
  EXPECT_TRUE(std::holds_alternative<Unreadable>(
      sort_frame(R"({"post_type":"message","message":)" + deep + "}")));
  // Beside a raw byte that is not UTF-8 (a text frame never has one), nothing
  // invalid is let through either.
  auto mixed = sort_frame("{\"post_type\":\"message\",\"message\":\"\\ud83d\xff\"}");
  ASSERT_TRUE(std::holds_alternative<Event>(mixed));
  EXPECT_EQ(std::get<Event>(mixed).object.at("message").as_string(), "\xEF\xBF\xBD\xEF\xBF\xBD");
}

class ApiCallsTest : public testing::Test {
 protected:
  asio::io_context io;
  std::vector<json::object> sent;
  bool refuse = false;
  ApiCalls calls{io.get_executor(), [this](std::string frame) {
                   if (refuse) return false;
                   sent.push_back(json::parse(frame).as_object());
                   return true;
                 }};

  // Runs `body` on the io_context to completion.
  template <typename F>
  void run(F body) {
    asio::co_spawn(io, body(), [](std::exception_ptr e) {
      if (e) std::rethrow_exception(e);
    });
    io.run();
    io.restart();
  }

  void answer_later(std::string json_text, runtime::Duration after) {
    auto timer = std::make_shared<asio::steady_timer>(io, after);
    timer->async_wait([this, timer, json_text](error_code) {
      auto frame = sort_frame(json_text);
      calls.answer(std::get<Answer>(frame));
    });
  }
};

TEST_F(ApiCallsTest, AnswersAreMatchedByEchoNotByOrder) {
  std::vector<CallResult> results(2);
  answer_later(R"({"status":"failed","retcode":1400,"wording":"bad group","echo":"1"})", 20ms);
  answer_later(R"({"status":"ok","retcode":0,"data":{"message_id":42},"echo":2})", 5ms);
  run([&]() -> awaitable<void> {
    using namespace asio::experimental::awaitable_operators;
    // Built before the co_await: GCC 12 cannot take string literals in its operand.
    auto first = calls.call(std::string("send_group_msg"), {{"group_id", 5}}, 5s);
    auto second = calls.call(std::string("send_private_msg"), {{"user_id", 6}}, 5s);
    auto [a, b] = co_await (std::move(first) && std::move(second));
    results[0] = std::move(a);
    results[1] = std::move(b);
  });
  ASSERT_EQ(sent.size(), 2u);
  EXPECT_EQ(sent[0].at("action"), "send_group_msg");
  EXPECT_EQ(sent[0].at("echo"), "1");
  ASSERT_FALSE(results[0]);
  EXPECT_EQ(results[0].error().kind, CallError::Kind::failed);
  EXPECT_EQ(results[0].error().retcode, 1400);
  EXPECT_EQ(results[0].error().message, "bad group");
  ASSERT_TRUE(results[1]);
  EXPECT_EQ(results[1]->at("message_id").as_int64(), 42);
  EXPECT_EQ(calls.pending(), 0u);
  // A late answer finds nobody waiting.
  EXPECT_FALSE(calls.answer(std::get<Answer>(sort_frame(R"({"retcode":0,"echo":"1"})"))));
}

// Defect: an answer with status "failed" and retcode 1 counted as sent, so
// the reply was marked delivered without a trace. The status decides; an
// "async" one (retcode 1) and an answer without a status still count as sent.
TEST_F(ApiCallsTest, AnAnswerWhoseStatusSaysFailedFailsWhateverItsRetcode) {
  std::vector<CallResult> results(4);
  answer_later(R"({"status":"failed","retcode":1,"msg":"risk control","echo":"1"})", 5ms);
  answer_later(R"({"status":"failed","retcode":0,"echo":"2"})", 5ms);
  answer_later(R"({"status":"async","retcode":1,"data":null,"echo":"3"})", 5ms);
  answer_later(R"({"retcode":0,"echo":"4"})", 5ms);
  run([&]() -> awaitable<void> {
    using namespace asio::experimental::awaitable_operators;
    const std::string send = "send_private_msg";
    auto a = calls.call(send, {{"user_id", 6}}, 5s);
    auto b = calls.call(send, {{"user_id", 6}}, 5s);
    auto c = calls.call(send, {{"user_id", 6}}, 5s);
    auto d = calls.call(send, {{"user_id", 6}}, 5s);
    auto [ra, rb, rc, rd] =
        co_await (std::move(a) && std::move(b) && std::move(c) && std::move(d));
    results = {std::move(ra), std::move(rb), std::move(rc), std::move(rd)};
  });
  ASSERT_FALSE(results[0]);
  EXPECT_EQ(results[0].error().kind, CallError::Kind::failed);
  EXPECT_EQ(results[0].error().retcode, 1);
  EXPECT_EQ(results[0].error().message, "risk control");
  ASSERT_FALSE(results[1]);
  EXPECT_EQ(results[1].error().kind, CallError::Kind::failed);
  EXPECT_TRUE(results[2]);
  EXPECT_TRUE(results[3]);
}

TEST_F(ApiCallsTest, ACallEndsByItsDeadlineOrWhenTheConnectionGoes) {
  CallResult timed_out, dropped, unsent;
  const std::string get_status = "get_status";
  const std::string send_msg = "send_msg";
  run([&]() -> awaitable<void> { timed_out = co_await calls.call(get_status, {}, 30ms); });
  ASSERT_FALSE(timed_out);
  EXPECT_EQ(timed_out.error().kind, CallError::Kind::timeout);
  EXPECT_EQ(calls.pending(), 0u);

  asio::steady_timer replaced(io, 5ms);
  replaced.async_wait([this](error_code) { calls.fail_all("replaced by a newer connection"); });
  run([&]() -> awaitable<void> { dropped = co_await calls.call(send_msg, {}, 10s); });
  ASSERT_FALSE(dropped);
  EXPECT_EQ(dropped.error().kind, CallError::Kind::disconnected);
  EXPECT_EQ(dropped.error().message, "replaced by a newer connection");

  refuse = true;
  run([&]() -> awaitable<void> { unsent = co_await calls.call(send_msg, {}, 10s); });
  ASSERT_FALSE(unsent);
  EXPECT_EQ(unsent.error().kind, CallError::Kind::not_sent);
  EXPECT_EQ(calls.pending(), 0u);
}

// A send that times out with call_keeping_late() stays registered: its late
// answer still counts, until forget(). Only sends count in sends_answered()
// and send_answered_after().
TEST_F(ApiCallsTest, ASendTimedOutIsKeptForItsLateAnswerUntilForgotten) {
  const std::string send_msg = "send_msg";
  const std::string get_status = "get_status";
  CallResult first, status, late, second;
  run([&]() -> awaitable<void> { first = co_await calls.call_keeping_late(send_msg, {}, 20ms); });
  ASSERT_FALSE(first);
  EXPECT_EQ(first.error().kind, CallError::Kind::timeout);
  EXPECT_EQ(first.error().echo, "1");
  EXPECT_EQ(calls.pending(), 1u);

  answer_later(R"({"status":"ok","retcode":0,"echo":"2"})", 5ms);
  run([&]() -> awaitable<void> { status = co_await calls.call(get_status, {}, 5s); });
  ASSERT_TRUE(status);
  EXPECT_EQ(calls.sends_answered(), 0u);  // not a send
  EXPECT_FALSE(calls.send_answered_after("1"));

  answer_later(R"({"status":"ok","retcode":0,"data":{"message_id":7},"echo":"1"})", 5ms);
  run([&]() -> awaitable<void> { late = co_await calls.late_answer("1", 5s); });
  ASSERT_TRUE(late);
  EXPECT_EQ(late->at("message_id").as_int64(), 7);
  EXPECT_EQ(calls.sends_answered(), 1u);
  EXPECT_EQ(calls.pending(), 0u);

  run([&]() -> awaitable<void> { second = co_await calls.call_keeping_late(send_msg, {}, 20ms); });
  ASSERT_FALSE(second);
  EXPECT_EQ(second.error().echo, "3");
  EXPECT_FALSE(calls.send_answered_after("3"));  // 1, answered, was made before it
  CallResult third;
  answer_later(R"({"status":"ok","retcode":0,"echo":"4"})", 5ms);
  run([&]() -> awaitable<void> { third = co_await calls.call_keeping_late(send_msg, {}, 5s); });
  ASSERT_TRUE(third);
  EXPECT_TRUE(calls.send_answered_after("3"));  // 4, made after it
  calls.forget("3");
  EXPECT_EQ(calls.pending(), 0u);
  EXPECT_FALSE(calls.answer(std::get<Answer>(sort_frame(R"({"retcode":0,"echo":"3"})"))));
}

// The worst retcode an implementation can send (2^63, past int64) is a
// refusal, and still an answer: the send counts as answered.
TEST_F(ApiCallsTest, ARetcodePastInt64IsARefusalThatCountsAsAnswered) {
  CallResult result;
  answer_later(R"({"retcode":9223372036854775808,"echo":"1"})", 5ms);
  run([&]() -> awaitable<void> {
    result = co_await calls.call_keeping_late(std::string("send_msg"), {}, 5s);
  });
  ASSERT_FALSE(result);
  EXPECT_EQ(result.error().kind, CallError::Kind::failed);
  EXPECT_EQ(calls.sends_answered(), 1u);
  EXPECT_EQ(calls.pending(), 0u);
}

// A wait cancelled from outside (its task cancelled: the next co_await
// throws) leaves no call behind.
TEST_F(ApiCallsTest, ACancelledWaitLeavesNoCallBehind) {
  asio::cancellation_signal signal;
  bool ended = false;
  asio::co_spawn(io, calls.call_keeping_late(std::string("send_msg"), {}, 10s),
                 asio::bind_cancellation_slot(signal.slot(),
                                              [&](std::exception_ptr, CallResult) {
                                                ended = true;
                                              }));
  asio::steady_timer cancel(io, 5ms);
  cancel.async_wait([&](error_code) { signal.emit(asio::cancellation_type::terminal); });
  io.run();
  io.restart();
  EXPECT_TRUE(ended);
  EXPECT_EQ(calls.pending(), 0u);
}

}  // namespace
}  // namespace mooring::chat::onebot
