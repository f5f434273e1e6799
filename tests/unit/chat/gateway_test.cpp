#include "chat/gateway.hpp"

#include "chat/user_token.hpp"
#include "runtime/log.hpp"
#include "support/chat_client.hpp"
#include "support/clients.hpp"
#include "support/metrics.hpp"
#include "support/wait.hpp"
#include "unit/chat/gateway_fixture.hpp"

#include <boost/json.hpp>
#include <fmt/ranges.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <mutex>
#include <set>

#include <sys/ioctl.h>

namespace mooring::chat::test {
namespace {

namespace json = boost::json;
using mooring::test::ChatClient;
using mooring::test::int_field;
using mooring::test::is_ack;
using mooring::test::is_chat_for;
using mooring::test::is_type;
using mooring::test::poll_until;
using mooring::test::say_and_get_seq;
using mooring::test::string_field;
using Frame = ChatClient::Frame;

bool is_error(const Frame& frame, std::string_view name) {
  return is_type(frame, "error") && string_field(frame, "name") == name;
}

// The connection still works: a message is acknowledged and answered.
void expect_usable(ChatClient& client, const std::string& id) {
  const auto seq = say_and_get_seq(client, "still here " + id, id);
  const auto chat = client.read_until([&](const Frame& f) { return is_chat_for(f, seq); });
  EXPECT_EQ(string_field(chat, "text"), "ok: still here " + id.substr(0, 5));
}

// --- defect 1: no frame can break a session --------------------------------

TEST(Gateway, ResumeAfter2To63IsAnErrorFrameAndTheConnectionStaysUsable) {
  GatewayFixture fixture;
  ChatClient client;
  ASSERT_EQ(client.connect(fixture.address, "resumer"), 101);
  for (const char* frame : {R"({"type":"resume","after":9223372036854775808})",
                            R"({"type":"resume","after":18446744073709551615})"}) {
    client.send_raw(frame);
    const auto error = client.next();
    ASSERT_TRUE(error.has_value()) << "closed with " << client.close_code();
    EXPECT_TRUE(is_error(*error, "out_of_range")) << json::serialize(*error);
  }
  expect_usable(client, "after-resume");
  EXPECT_EQ(fixture.run([&] { return fixture.gateway->connections(); }), 1u);
  EXPECT_EQ(fixture.run([&] { return fixture.thread.supervisor().failures(); }), 0u);
}

TEST(Gateway, DeepNestingAndJunkGetErrorFrames) {
  GatewayFixture fixture;
  ChatClient client;
  ASSERT_EQ(client.connect(fixture.address, "nester"), 101);
  const std::vector<std::pair<std::string, std::string>> cases{
      {std::string(100000, '[') + std::string(100000, ']'), "invalid_json"},
      {R"({"text":"x","y":)" + std::string(5000, '{'), "invalid_json"},
      {"{\"type\":\"" + std::string(51, 'x') +
           "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\"}",
       "unknown_type"},
  };
  for (const auto& [frame, name] : cases) {
    SCOPED_TRACE(frame.substr(0, 40));
    client.send_raw(frame);
    const auto reply = client.next();
    ASSERT_TRUE(reply.has_value()) << "closed with " << client.close_code();
    EXPECT_TRUE(is_error(*reply, name)) << json::serialize(*reply);
  }
  // An escaped lone surrogate is refused, or answered in valid UTF-8: either
  // way the client (which checks UTF-8) can read what comes back.
  client.send_raw(R"({"text":"\ud800","id":"surrogate"})");
  client.read_until([](const Frame& f) { return is_type(f, "error") || is_type(f, "chat"); });
  expect_usable(client, "after-junk");
}

// Beast checks the UTF-8 of text frames itself: invalid UTF-8 ends the
// connection with 1007, and the user can come back at once.
TEST(Gateway, InvalidUtf8InATextFrameClosesWith1007AndTheUserComesBack) {
  GatewayFixture fixture;
  ChatClient client;
  ASSERT_EQ(client.connect(fixture.address, "bytes"), 101);
  client.send_raw("{\"text\":\"\xff\xfe\xfd\"}");
  EXPECT_EQ(client.read_until_closed(), 1007);
  ASSERT_TRUE(poll_until(
      [&] { return fixture.run([&] { return fixture.gateway->connections(); }) == 0; }, 10s));
  ChatClient again;
  ASSERT_EQ(again.connect(fixture.address, "bytes"), 101);
  expect_usable(again, "back-again");
  EXPECT_EQ(fixture.run([&] { return fixture.thread.supervisor().failures(); }), 0u);
}

// --- Cheshire Cat's clients ---------------------------------------------------

TEST(Gateway, OnlyAMessageWithAnIdIsAcknowledged) {
  GatewayFixture fixture;
  ChatClient cat;
  ASSERT_EQ(cat.connect(fixture.address, "cat"), 101);
  // As ccat-api sends it: no id, its own keys, one image.
  cat.send(Frame{{"text", "look"},
                 {"user_id", "cat"},
                 {"prompt_settings", json::object{}},
                 {"image", "https://example.com/cat.png"}});
  const auto chat = cat.read_until([](const Frame& f) { return is_type(f, "chat"); });
  EXPECT_EQ(string_field(chat, "text"), "ok: look");
  cat.send(Frame{{"image", "data:image/png;base64,AAAA"}, {"user_id", "cat"}});
  cat.read_until([&](const Frame& f) {
    return is_type(f, "chat") && int_field(f, "seq") > int_field(chat, "seq");
  });
  for (const auto& frame : cat.received()) {
    EXPECT_TRUE(is_type(frame, "chat") || is_type(frame, "chat_token")) << json::serialize(frame);
  }
  // A client that wants acks sends ids.
  cat.say("with id", "m1");
  EXPECT_TRUE(is_ack(*cat.next(), "m1"));
}

// A client id is a string; a number in its place is refused with an error
// frame and not stored, so {"id": 1} can never stand in for {"id": "1"}.
TEST(Gateway, AClientIdIsAStringAndANumberInItsPlaceIsRefused) {
  GatewayFixture fixture;
  ChatClient client;
  ASSERT_EQ(client.connect(fixture.address, "ids"), 101);
  client.send_raw(R"({"text":"first message","id":1})");
  const auto refused = client.next();
  ASSERT_TRUE(refused.has_value()) << "closed with " << client.close_code();
  EXPECT_TRUE(is_error(*refused, "wrong_type")) << json::serialize(*refused);
  EXPECT_NE(string_field(*refused, "description").find("string"), std::string::npos)
      << json::serialize(*refused);

  const auto seq = say_and_get_seq(client, "a different second message", "1");
  const auto chat = client.read_until([&](const Frame& f) { return is_chat_for(f, seq); });
  EXPECT_EQ(string_field(chat, "text"), "ok: a different seco");
  std::vector<std::string> stored;
  for (const auto& message : fixture.messages("ids"))
    if (message.role == store::Role::user) stored.push_back(message.content);
  EXPECT_EQ(stored, std::vector<std::string>{"a different second message"});
}

// --- defect 9: who the user is -----------------------------------------------

const std::string signing_key = "a-key-of-at-least-32-bytes-for-hs256!";

TEST(Gateway, SignedTokensAdmitTheirUserOnly) {
  GatewayOptions options;
  options.auth = GatewayAuth::signed_token;
  options.signing_key = signing_key;
  GatewayFixture fixture(options);
  const auto now = SystemClock::now();
  const auto bearer = [](const std::string& token) {
    return ChatClient::Headers{{"Authorization", "Bearer " + token}};
  };
  const auto connect = [&](const std::string& user, const std::string& token) {
    ChatClient client;
    return client.connect(fixture.address, user, "", bearer(token));
  };
  const auto valid = mint_user_token("alice", signing_key, now + 1h);
  EXPECT_EQ(connect("alice", valid), 101);
  EXPECT_EQ(connect("mallory", valid), 401) << "another user's token";
  EXPECT_EQ(connect("alice", mint_user_token("alice", signing_key, now - 1s, now - 1h)), 401)
      << "expired";
  EXPECT_EQ(
      connect("alice", mint_user_token("alice", "another-key-of-at-least-32-bytes!!", now + 1h)),
      401)
      << "another key";
  const auto dot = valid.find('.');
  const auto none = base64url_encode(R"({"alg":"none","typ":"JWT"})") +
                    valid.substr(dot, valid.rfind('.') - dot) + ".";
  EXPECT_EQ(connect("alice", none), 401) << "alg none";
  const auto hs512 = base64url_encode(R"({"alg":"HS512","typ":"JWT"})") + valid.substr(dot);
  EXPECT_EQ(connect("alice", hs512), 401) << "another alg";
  EXPECT_EQ(connect("alice", valid.substr(0, valid.size() - 2) + "AA"), 401) << "bad signature";
  EXPECT_EQ(connect("alice", "garbage"), 401);
  EXPECT_EQ(connect("alice", ""), 401);
  {
    ChatClient anonymous;
    EXPECT_EQ(anonymous.connect(fixture.address, "alice"), 401);
  }
  // In the query string, as browsers and Cheshire Cat clients send it; and the
  // shared token of another mode means nothing here.
  ChatClient browser;
  ASSERT_EQ(browser.connect(fixture.address, "alice", "?token=" + valid), 101);
  expect_usable(browser, "signed-in");
}

TEST(Gateway, TheSharedTokenModeNeedsTheToken) {
  GatewayOptions options;
  options.auth = GatewayAuth::token;
  options.token = "shared-gateway-token";
  GatewayFixture fixture(options);
  const char* const wrong_tokens = R"(mooring_wrong_tokens_total{listener="gateway"})";
  const auto wrong_before = mooring::test::metric_value(wrong_tokens);
  ChatClient none;
  EXPECT_EQ(none.connect(fixture.address, "u"), 401);
  EXPECT_EQ(mooring::test::metric_value(wrong_tokens), wrong_before) << "no token is no guess";
  for (int i = 0; i < 3; ++i) {
    ChatClient guess;
    EXPECT_EQ(guess.connect(fixture.address, "u", "?token=guess" + std::to_string(i)), 401);
  }
  EXPECT_EQ(mooring::test::metric_value(wrong_tokens), wrong_before + 3) << "each guess counted";
  ChatClient signed_instead;
  EXPECT_EQ(signed_instead.connect(
                fixture.address, "u",
                "?token=" + mint_user_token("u", "shared-gateway-token", SystemClock::now() + 1h)),
            401);
  ChatClient good;
  EXPECT_EQ(good.connect(fixture.address, "u", "?token=shared-gateway-token"), 101);
  // Token mode with no token configured admits nobody.
  options.token.clear();
  fixture.reconfigure(options);
  ChatClient nobody;
  EXPECT_EQ(nobody.connect(fixture.address, "u", "?token="), 401);
}

// A page of another site, opened in the browser of someone who runs mooring
// on loopback, could otherwise be any user and read every user's replies.
TEST(Gateway, APageOfAnotherSiteIsRefusedAndPagesOfTheGatewaysHostAreNot) {
  GatewayFixture fixture;
  const auto host = fixture.address.substr(0, fixture.address.rfind(':'));
  const auto from = [&](const std::string& origin) {
    ChatClient client;
    return client.connect(fixture.address, "u", "", {{"Origin", origin}});
  };
  EXPECT_EQ(from("https://evil.example"), 403);
  EXPECT_EQ(from("http://evil.example:" + fixture.address.substr(host.size() + 1)), 403)
      << "the gateway's port on another host";
  EXPECT_EQ(from("null"), 403) << "a sandboxed page or a file";
  EXPECT_EQ(from("chrome-extension://" + host), 403);
  EXPECT_EQ(from(""), 403);
  // The gateway's own pages, and the admin panel's chat on another port of the host.
  EXPECT_EQ(from("http://" + fixture.address), 101);
  EXPECT_EQ(from("http://" + host + ":8081"), 101);
  EXPECT_EQ(from("HTTPS://" + host), 101);
  {
    ChatClient no_origin;  // not a browser
    ASSERT_EQ(no_origin.connect(fixture.address, "u"), 101);
    expect_usable(no_origin, "no origin");
  }
  // Listed by the operator, the site is admitted; the others still are not.
  GatewayOptions options;
  options.allowed_origins = {"https://chat.example"};
  fixture.reconfigure(options);
  EXPECT_EQ(from("https://chat.example"), 101);
  EXPECT_EQ(from("https://CHAT.example"), 101);
  EXPECT_EQ(from("https://chat.example:8443"), 403);
  EXPECT_EQ(from("https://evil.example"), 403);
  options.allowed_origins = {"*"};
  fixture.reconfigure(options);
  EXPECT_EQ(from("https://evil.example"), 101);
}

// A client reconnecting in a loop, or a page retrying, writes a line, not a
// line per try (34,652 lines in 5 s before).
TEST(Gateway, ReplacementsAndRefusedPagesInALoopWriteOneLineEach) {
  runtime::init_logging();
  std::mutex mutex;
  std::vector<std::string> lines;
  const int observer =
      runtime::add_log_observer([&](spdlog::level::level_enum, std::string_view line) {
        std::lock_guard lock(mutex);
        lines.emplace_back(line);
      });
  struct Remove {
    int id;
    ~Remove() { runtime::remove_log_observer(id); }
  } remove{observer};
  GatewayFixture fixture;  // its network thread logs through a limiter of its own
  std::vector<std::unique_ptr<ChatClient>> clients;
  for (int i = 0; i < 20; ++i) {
    clients.push_back(std::make_unique<ChatClient>());
    ASSERT_EQ(clients.back()->connect(fixture.address, "looping"), 101);
    ChatClient page;
    EXPECT_EQ(page.connect(fixture.address, "looping", "", {{"Origin", "https://evil.example"}}),
              403);
  }
  for (std::size_t i = 0; i + 1 < clients.size(); ++i)
    EXPECT_EQ(clients[i]->read_until_closed(), 4000);
  const auto count = [&](std::string_view text) {
    std::lock_guard lock(mutex);
    return std::count_if(lines.begin(), lines.end(), [&](const std::string& line) {
      return line.find(text) != std::string::npos;
    });
  };
  EXPECT_EQ(count("looping connected again; replacing the previous connection"), 1);
  EXPECT_EQ(count("refused a WebSocket opened by a page of https://evil.example"), 1);
}

TEST(Gateway, BeyondTheRateAMessageIsRefusedAndNotStored) {
  GatewayOptions options;
  options.max_messages_per_minute = 5;
  GatewayFixture fixture(options);
  ChatClient client;
  ASSERT_EQ(client.connect(fixture.address, "chatty"), 101);
  for (int i = 0; i < 5; ++i)
    say_and_get_seq(client, "m" + std::to_string(i), "m" + std::to_string(i));
  client.say("one too many", "m5");
  const auto refused = client.read_until([](const Frame& f) { return is_type(f, "error"); });
  EXPECT_TRUE(is_error(refused, "rate_limited")) << json::serialize(refused);
  // A new connection does not refill the bucket.
  client.close();
  ChatClient again;
  ASSERT_EQ(again.connect(fixture.address, "chatty"), 101);
  again.say("still too many", "m6");
  EXPECT_TRUE(is_error(again.read_until([](const Frame& f) { return is_type(f, "error"); }),
                       "rate_limited"));
  // Another user is not limited by this one.
  ChatClient other;
  ASSERT_EQ(other.connect(fixture.address, "quiet"), 101);
  say_and_get_seq(other, "hello", "q1");

  std::size_t user_messages = 0;
  for (const auto& message : fixture.messages("chatty")) {
    EXPECT_NE(message.content, "one too many");
    EXPECT_NE(message.content, "still too many");
    user_messages += message.role == store::Role::user ? 1 : 0;
  }
  EXPECT_EQ(user_messages, 5u);
  for (const auto& frame : client.received()) EXPECT_FALSE(is_ack(frame, "m5"));
  EXPECT_EQ(fixture.run([&] { return fixture.gateway->rate_limited(); }), 2u);
}

// --- defect 10: a cancelled task leaves its session consistent ----------------

// An operator cancels the reply in progress (POST /api/tasks/<id>/cancel): the
// user hears it was cancelled, and the next message is answered.
TEST(Gateway, AnOperatorCancellingAReplyDoesNotStallTheQueue) {
  GatewayFixture fixture;
  fixture.run([&] {
    fixture.gate->set_open(false);
    return true;
  });
  ChatClient client;
  ASSERT_EQ(client.connect(fixture.address, "queued"), 101);
  const auto first = say_and_get_seq(client, "first", "1");
  const auto second = say_and_get_seq(client, "second", "2");
  runtime::TaskId reply = 0;
  ASSERT_TRUE(poll_until(
      [&] { return (reply = fixture.task("chat reply queued #" + std::to_string(first))) != 0; },
      10s));
  EXPECT_TRUE(fixture.run([&] { return fixture.thread.supervisor().cancel(reply); }));
  const auto notice = client.read_until([](const Frame& f) { return is_type(f, "notification"); });
  EXPECT_NE(string_field(notice, "content").find("cancelled"), std::string::npos);
  // The stored cancellation's seq and the message it answers, as a failed
  // reply's error frame carries them.
  ASSERT_TRUE(notice.contains("seq") && notice.contains("reply_to")) << boost::json::serialize(notice);
  EXPECT_EQ(notice.at("reply_to").to_number<std::int64_t>(), first);
  EXPECT_GT(notice.at("seq").to_number<std::int64_t>(), second);
  fixture.run([&] {
    fixture.gate->set_open(true);
    return true;
  });
  client.read_until([&](const Frame& f) { return is_chat_for(f, second); });
  expect_usable(client, "after-cancel");
}

// The same cancellation during a shutdown leaves the message pending, to be
// answered after the restart, and starts no other reply.
TEST(Gateway, AReplyCancelledByTheShutdownStaysPending) {
  GatewayFixture fixture;
  fixture.run([&] {
    fixture.gate->set_open(false);
    return true;
  });
  ChatClient client;
  ASSERT_EQ(client.connect(fixture.address, "stopping"), 101);
  const auto first = say_and_get_seq(client, "first", "1");
  say_and_get_seq(client, "second", "2");
  runtime::TaskId reply = 0;
  ASSERT_TRUE(
      poll_until([&] { return (reply = fixture.task("chat reply stopping #")) != 0; }, 10s));
  fixture.run([&] {
    fixture.shutdown.begin();
    return fixture.thread.supervisor().cancel(reply);
  });
  ASSERT_TRUE(poll_until(
      [&] { return fixture.run([&] { return fixture.gateway->replies_in_flight(); }) == 0; }, 10s));
  EXPECT_EQ(fixture.task("chat reply"), 0u) << "no reply starts once the host is stopping";
  for (const auto& message : fixture.messages("stopping")) {
    EXPECT_EQ(message.role, store::Role::user);
    EXPECT_EQ(message.status, store::MessageStatus::pending)
        << message.seq << " (first: " << first << ")";
  }
}

// Defect: while a reconnect's backlog went out a page at a time to a client
// reading slowly, a reply made meanwhile went out before the older replies
// still to be read, and the cursor moved past them: a client gone then never
// got those (nor one resuming after the newest seq it saw). The replies now
// reach the connection in the order of their seqs.
TEST(Gateway, RepliesMadeWhileABacklogGoesOutFollowIt) {
  GatewayOptions options;
  options.ws.send_queue_limit = 4;  // one stored reply per page
  options.ws.send_queue_bytes = 64 * 1024 * 1024;
  options.max_messages_per_minute = 0;
  GatewayFixture fixture(options);
  const auto replies_stored = [&] {
    std::size_t n = 0;
    for (const auto& message : fixture.messages("away"))
      if (message.role == store::Role::assistant) ++n;
    return n;
  };
  // Six questions; four answered while the user is away (8 MiB, the
  // backlog), two still being answered when they come back.
  fixture.run([&] {
    fixture.gate->reply_bytes = 2 * 1024 * 1024;
    fixture.gate->set_open(false);
    return true;
  });
  {
    ChatClient before;
    ASSERT_EQ(before.connect(fixture.address, "away"), 101);
    for (int i = 0; i < 6; ++i)
      say_and_get_seq(before, "question " + std::to_string(i), "q" + std::to_string(i));
    before.close();
  }
  ASSERT_TRUE(poll_until(
      [&] { return fixture.run([&] { return fixture.gateway->connections(); }) == 0; }, 10s));
  fixture.run([&] {
    fixture.gate->open_for = 4;
    fixture.gate->set_open(true);
    return true;
  });
  ASSERT_TRUE(poll_until([&] { return replies_stored() == 4; }, 30s));

  // Back, reading nothing yet while the last two replies are made.
  ChatClient back;
  back.set_receive_buffer(4096);
  ASSERT_EQ(back.connect(fixture.address, "away"), 101);
  fixture.run([&] {
    fixture.gate->open_for = GateProvider::unlimited;
    fixture.gate->set_open(true);
    return true;
  });
  ASSERT_TRUE(poll_until([&] { return replies_stored() == 6; }, 30s));

  std::vector<std::int64_t> seqs;
  back.read_until(
      [&](const Frame& f) {
        if (is_type(f, "chat")) seqs.push_back(int_field(f, "seq"));
        return seqs.size() == 6;
      },
      60s);
  EXPECT_TRUE(std::is_sorted(seqs.begin(), seqs.end())) << fmt::format("{}", fmt::join(seqs, ", "));
  EXPECT_EQ(std::set<std::int64_t>(seqs.begin(), seqs.end()).size(), 6u);
}

// An operator cancels a user's inbox task while it pages a long backlog out to
// a client that does not read: the frames behind it are dropped with an error
// frame, and the session takes and answers the next message.
TEST(Gateway, AnOperatorCancellingTheInboxLeavesTheSessionWorking) {
  GatewayOptions options;
  options.ws.send_queue_limit = 4;  // one stored reply per page
  // Replies of 2 MiB, a few of them queued: the byte bound is not what this tests.
  options.ws.send_queue_bytes = 64 * 1024 * 1024;
  options.max_messages_per_minute = 0;
  GatewayFixture fixture(options);
  fixture.run([&] {
    fixture.gate->reply_bytes = 2 * 1024 * 1024;
    return true;
  });
  {
    ChatClient writer;
    ASSERT_EQ(writer.connect(fixture.address, "reader"), 101);
    for (int i = 0; i < 14; ++i) {
      const auto seq = say_and_get_seq(writer, "q" + std::to_string(i), "q" + std::to_string(i));
      writer.read_until([&](const Frame& f) { return is_chat_for(f, seq); });
    }
    writer.close();
  }
  fixture.run([&] {
    fixture.gate->reply_bytes = 0;
    return true;
  });

  ChatClient client;
  ASSERT_EQ(client.connect(fixture.address, "reader"), 101);
  // 24 MB of replies asked for again, not read: the inbox waits for the socket.
  client.send(Frame{{"type", "resume"}, {"after", 0}});
  client.say("behind the resume", "late");
  runtime::TaskId inbox = 0;
  ASSERT_TRUE(poll_until([&] { return (inbox = fixture.task("chat inbox reader")) != 0; }, 10s));
  ASSERT_TRUE(fixture.run([&] { return fixture.thread.supervisor().cancel(inbox); }));
  ASSERT_TRUE(poll_until([&] { return fixture.task("chat inbox reader") == 0; }, 10s))
      << "the cancelled inbox task ended";

  // The late message is never lost silently: it was handled (before the
  // cancel, or after it: read while the conversation had as much pending as
  // it takes, it waited for reading to resume), or dropped with a reason. A
  // drop notice may be about other items (the resume), so it does not say
  // the late message was dropped; only that nothing dropped went untold.
  client.say("next", "next");
  const auto ack = client.read_until([](const Frame& f) { return is_ack(f, "next"); }, 30s);
  client.read_until([&](const Frame& f) { return is_chat_for(f, int_field(ack, "seq")); });
  bool late_acked = false;
  bool late_dropped = false;
  for (const auto& frame : client.received()) {
    late_acked = late_acked || is_ack(frame, "late");
    late_dropped = late_dropped || is_error(frame, "cancelled");
  }
  EXPECT_TRUE(late_acked || late_dropped) << "the late message was neither handled nor dropped";
  EXPECT_EQ(fixture.run([&] { return fixture.thread.supervisor().failures(); }), 0u);
}

// A connection remembers the replies it sent lately, not every reply of its
// life: its memory stays bounded however long it lives. Yet a resume asking
// for everything again sends no reply twice: it sends the replies stored
// before the connection, once, and nothing the connection carried.
TEST(Gateway, AResumeSendsEachReplyOnceOnAConnectionThatOutlivesWhatItRemembers) {
  GatewayOptions options;
  options.ws.send_queue_limit = 4;
  options.max_pending_messages = 1;  // the last 2 x 4 + 1 + 1 = 10 replies are remembered
  options.max_messages_per_minute = 0;
  GatewayFixture fixture(options);
  std::vector<std::int64_t> before;  // replies carried by an earlier connection
  {
    ChatClient first;
    ASSERT_EQ(first.connect(fixture.address, "lasting"), 101);
    for (int i = 0; i < 3; ++i) {
      const auto seq = say_and_get_seq(first, "p" + std::to_string(i), "p" + std::to_string(i));
      const auto chat = first.read_until([&](const Frame& f) { return is_chat_for(f, seq); });
      before.push_back(int_field(chat, "seq"));
    }
  }
  ChatClient client;
  ASSERT_EQ(client.connect(fixture.address, "lasting"), 101);
  for (int i = 0; i < 14; ++i) {
    const auto seq = say_and_get_seq(client, "q" + std::to_string(i), "q" + std::to_string(i));
    client.read_until([&](const Frame& f) { return is_chat_for(f, seq); });
  }
  // Resumes queued one behind another, and a message after them: all they
  // send is queued before its reply.
  const auto resend = [&](int resumes, const std::string& id) {
    client.clear_received();
    for (int i = 0; i < resumes; ++i) client.send(Frame{{"type", "resume"}, {"after", 0}});
    const auto last = say_and_get_seq(client, "after " + id, id);
    client.read_until([&](const Frame& f) { return is_chat_for(f, last); });
    std::map<std::int64_t, int> again;
    for (const auto& frame : client.received())
      if (is_type(frame, "chat") && int_field(frame, "reply_to") != last)
        ++again[int_field(frame, "seq")];
    return again;
  };
  // A reply the earlier connection wrote before its cursor was stored comes
  // to this one as its backlog when it connects: carried, so not sent again.
  std::map<std::int64_t, int> earlier;
  for (const auto seq : before) earlier[seq] = 1;
  for (const auto& frame : client.received())
    if (is_type(frame, "chat")) earlier.erase(int_field(frame, "seq"));
  EXPECT_EQ(resend(3, "r1"), earlier) << "the earlier connection's replies once, no other";
  EXPECT_EQ(resend(1, "r2"), (std::map<std::int64_t, int>{})) << "all carried already";
}

// A backlog reads a page only once the buffer budget has room for it: while
// other connections hold it all, the replies stay in the store; once they
// give room back, every reply goes out, once.
// `count` questions of `user`, each answered with a reply of about `bytes`
// bytes: the replies' seqs.
std::vector<std::int64_t> store_replies(GatewayFixture& fixture, const std::string& user,
                                        int count, std::size_t bytes) {
  std::vector<std::int64_t> replies;
  for (int i = 0; i < count; ++i) {
    auto asked = fixture.thread.call(
        fixture.store->append_user_message(user, "q" + std::to_string(i)));
    EXPECT_TRUE(asked.has_value());
    if (!asked) break;
    auto reply = fixture.thread.call(fixture.store->store_reply(
        user, asked->seq, std::to_string(i) + std::string(bytes, 'r')));
    EXPECT_TRUE(reply.has_value());
    if (reply) replies.push_back(*reply);
  }
  return replies;
}

// A gateway with a buffer budget of 4 MiB, and `count` stored replies of
// `user` of about `bytes` each, to be asked for again.
struct BudgetBacklog {
  BudgetBacklog(const std::string& user, int count, std::size_t bytes)
      : fixture(budget_of_4_mib()), replies(store_replies(fixture, user, count, bytes)) {}
  static GatewayOptions budget_of_4_mib() {
    GatewayOptions options;
    options.max_buffered_bytes = 4 * 1024 * 1024;
    return options;
  }
  GatewayFixture fixture;
  std::vector<std::int64_t> replies;
  net::BufferBudget& budget = net::buffer_budget();
};

// Reads `client` until every one of `replies` came in a chat frame: each once.
void expect_each_reply_once(mooring::test::WsClient& client,
                            const std::vector<std::int64_t>& replies) {
  std::map<std::int64_t, int> sent;
  while (sent.size() < replies.size()) {
    const auto text = client.read();
    ASSERT_TRUE(text.has_value()) << "closed with " << client.close_code();
    const auto frame = boost::json::parse(*text).as_object();
    if (is_type(frame, "chat")) ++sent[int_field(frame, "seq")];
  }
  for (const auto seq : replies) EXPECT_EQ(sent[seq], 1) << seq;
}

// That nothing comes to `client` within `time` (while the budget is full).
void expect_nothing_within(mooring::test::WsClient& client, std::chrono::milliseconds time) {
  const auto unread = [&] {
    int bytes = 0;
    ::ioctl(client.lowest_layer().socket().native_handle(), FIONREAD, &bytes);
    return bytes;
  };
  EXPECT_FALSE(poll_until([&] { return unread() > 0; }, time))
      << unread() << " bytes came while the budget was full";
}

TEST(Gateway, ABacklogWaitsForRoomInTheBufferBudgetAndThenSendsEveryReply) {
  BudgetBacklog backlog("saver", 5, 300000);
  ASSERT_EQ(backlog.replies.size(), 5u);
  auto& [fixture, replies, budget] = backlog;
  net::BufferBudget::Share others(budget);  // what other connections hold
  others.set(budget.limit());

  mooring::test::WsClient client;
  ASSERT_EQ(client.connect(fixture.address, "/ws/saver"), 101);
  client.send(R"({"type":"resume","after":0})");
  // A page read would be in the client's socket within milliseconds.
  expect_nothing_within(client, std::chrono::milliseconds(500));

  others.set(0);
  expect_each_reply_once(client, replies);
  client.close();
  EXPECT_TRUE(poll_until([&] { return budget.used() == 0; }, std::chrono::seconds(10)))
      << budget.used() << " bytes still held";
}

// Defect: every connection began by waiting for room in the budget for the
// first page of its backlog, before reading it. While slow readers held the
// budget (their live replies are counted, never refused, and can take it
// past its limit), a new user's message waited behind that wait: no ack, no
// error, nothing stored. A page with nothing in it needs no room.
TEST(Gateway, ANewUserIsAnsweredWhileOthersHoldMoreThanTheWholeBudget) {
  BudgetBacklog backlog("someone", 1, 20);
  auto& [fixture, replies, budget] = backlog;
  net::BufferBudget::Share others(budget);
  others.set(budget.limit() + budget.limit() / 2);
  mooring::test::WsClient client;
  ASSERT_EQ(client.connect(fixture.address, "/ws/newcomer"), 101);
  client.send(R"({"text":"hello","id":"n1"})");
  bool acked = false;
  for (;;) {
    const auto text = client.read();
    ASSERT_TRUE(text.has_value()) << "closed with " << client.close_code();
    const auto frame = boost::json::parse(*text).as_object();
    if (is_type(frame, "ack")) acked = true;
    if (is_type(frame, "chat")) break;
  }
  EXPECT_TRUE(acked);
  // A returning user with replies to catch up on still waits for room.
  mooring::test::WsClient returning;
  ASSERT_EQ(returning.connect(fixture.address, "/ws/someone"), 101);
  expect_nothing_within(returning, std::chrono::milliseconds(300));
  others.set(0);
  expect_each_reply_once(returning, replies);
  client.close();
  returning.close();
  EXPECT_TRUE(poll_until([&] { return budget.used() == 0; }, std::chrono::seconds(10)))
      << budget.used() << " bytes still held";
}

// Slow readers, each within its connection's bounds, took the connections
// past the buffer budget (381 MiB of 256 in one attack) and held them there.
// While the budget is over, a connection whose frames have waited unsent for
// a second is closed as a slow consumer, and gives back what it held; other
// users are answered meanwhile, and its replies stay stored for its next
// connection.
TEST(Gateway, AReaderBehindWhileTheBudgetIsOverIsShedAndGetsItsRepliesWhenItComesBack) {
  GatewayOptions options;
  options.max_buffered_bytes = 2 * 1024 * 1024;
  options.ws.close_timeout = std::chrono::milliseconds(200);  // the shed one reads no close frame
  GatewayFixture fixture(options);
  auto& budget = net::buffer_budget();
  fixture.thread.run([&] { return fixture.gate->reply_bytes = 600 * 1024; });
  const char* const slow_consumers = R"(mooring_websocket_closes_total{listener="gateway",code="1008"})";
  const auto shed_before = mooring::test::metric_value(slow_consumers);
  mooring::test::WsClient slow;  // never reads
  slow.set_receive_buffer(4096);
  ASSERT_EQ(slow.connect(fixture.address, "/ws/slow"), 101);
  constexpr int asked = 8;
  for (int i = 0; i < asked; ++i)
    slow.send(fmt::format(R"({{"text":"question {}","id":"s{}"}})", i, i));
  ASSERT_TRUE(poll_until([&] { return budget.used() > budget.limit(); }, std::chrono::seconds(10)))
      << budget.used();

  // Another user is answered while the budget is over.
  mooring::test::WsClient other;
  ASSERT_EQ(other.connect(fixture.address, "/ws/other"), 101);
  other.send(R"({"text":"hello","id":"o1"})");
  for (;;) {
    const auto text = other.read();
    ASSERT_TRUE(text.has_value()) << "closed with " << other.close_code();
    if (is_type(boost::json::parse(*text).as_object(), "chat")) break;
  }

  ASSERT_TRUE(poll_until(
      [&] { return mooring::test::metric_value(slow_consumers) == shed_before + 1; },
      std::chrono::seconds(10)));
  slow.drop();
  EXPECT_TRUE(poll_until([&] { return budget.used() < budget.limit() / 4; },
                         std::chrono::seconds(10)))
      << budget.used() << " bytes still held";

  // Back, it asks for every reply since the start: each comes once.
  std::vector<std::int64_t> replies;
  ASSERT_TRUE(poll_until(
      [&] {
        replies.clear();
        for (const auto& m : fixture.messages("slow"))
          if (m.role == store::Role::assistant) replies.push_back(m.seq);
        return replies.size() == asked;
      },
      std::chrono::seconds(10)))
      << replies.size();
  mooring::test::WsClient back;
  ASSERT_EQ(back.connect(fixture.address, "/ws/slow"), 101);
  back.send(R"({"type":"resume","after":0})");
  expect_each_reply_once(back, replies);
  back.close();
  other.close();
}

// Defect: a reply the upstream cut short after streaming part of it was
// stored as the failure's text alone: what the user had read was gone once
// they reconnected. It is kept, with the failure after it.
TEST(Gateway, AReplyCutShortKeepsWhatWasStreamedWithItsFailure) {
  GatewayFixture fixture;
  fixture.thread.run([&] { return fixture.gate->fail_after_piece = true; });
  mooring::test::WsClient client;
  ASSERT_EQ(client.connect(fixture.address, "/ws/cut"), 101);
  client.send(R"({"text":"hello","id":"c1"})");
  std::string streamed, final_text;
  std::int64_t failed_seq = 0;
  for (;;) {
    const auto text = client.read();
    ASSERT_TRUE(text.has_value()) << "closed with " << client.close_code();
    const auto frame = boost::json::parse(*text).as_object();
    if (is_type(frame, "chat_token")) streamed += frame.at("content").as_string().c_str();
    if (is_type(frame, "error")) {
      EXPECT_EQ(frame.at("name").as_string(), "reply_failed");
      final_text = frame.at("description").as_string().c_str();
      failed_seq = frame.contains("seq") ? frame.at("seq").to_number<std::int64_t>() : 0;
      break;
    }
  }
  EXPECT_EQ(streamed, "ok: ");
  EXPECT_EQ(final_text, "ok: \n\n(the provider did not answer in time)");
  client.close();
  const auto stored = fixture.messages("cut");
  ASSERT_EQ(stored.size(), 2u);
  EXPECT_EQ(stored.back().content, final_text);
  // Its seq, past which a client resumes. Defect: it had none, and a resume
  // after the last seq the client had seen sent the failure again.
  EXPECT_EQ(failed_seq, stored.back().seq);
  fixture.thread.run([&] { return fixture.gate->fail_after_piece = false; });
  mooring::test::WsClient back;
  ASSERT_EQ(back.connect(fixture.address, "/ws/cut"), 101);
  back.send(fmt::format(R"({{"type":"resume","after":{}}})", failed_seq));
  back.send(R"({"text":"again","id":"c2"})");
  for (;;) {
    const auto text = back.read();
    ASSERT_TRUE(text.has_value()) << "closed with " << back.close_code();
    const auto frame = boost::json::parse(*text).as_object();
    EXPECT_FALSE(is_type(frame, "error")) << *text;
    if (is_type(frame, "chat")) break;
  }
  back.close();
}

// A reconnect with little to catch up on takes room for a small first page,
// not a whole one: with other connections holding all but 100 KiB of the
// budget, its three short replies still come at once.
TEST(Gateway, ASmallBacklogNeedsOnlyASmallPartOfTheBudget) {
  BudgetBacklog backlog("light", 3, 20);
  ASSERT_EQ(backlog.replies.size(), 3u);
  auto& [fixture, replies, budget] = backlog;
  net::BufferBudget::Share others(budget);
  others.set(budget.limit() - 100 * 1024);
  mooring::test::WsClient client;
  ASSERT_EQ(client.connect(fixture.address, "/ws/light"), 101);
  expect_each_reply_once(client, replies);
  client.close();
  others.set(0);
  EXPECT_TRUE(poll_until([&] { return budget.used() == 0; }, std::chrono::seconds(10)))
      << budget.used() << " bytes still held";
}

// Clients holding unfinished messages take at most seven eighths of the
// budget: the rest is kept for what is sent, and a reconnect's backlog goes
// out while they hold all they may.
TEST(Gateway, ClientsHoldingUnfinishedMessagesDoNotStopABacklog) {
  BudgetBacklog backlog("returner", 5, 300000);
  ASSERT_EQ(backlog.replies.size(), 5u);
  auto& [fixture, replies, budget] = backlog;
  ASSERT_EQ(budget.used(), 0u);
  // A masked frame (zero key) of a fragmented text message, never finished.
  const auto fragment = [](bool first, std::size_t length) {
    std::string out{static_cast<char>(first ? 0x01 : 0x00), static_cast<char>(0x80 | 127)};
    for (int shift = 56; shift >= 0; shift -= 8) out += static_cast<char>((length >> shift) & 0xFF);
    out.append(4, '\0');
    return out + std::string(length, 'h');
  };
  // Each holder sends 655,360 bytes of a message: it holds room for the
  // largest (1 MiB). Three fit; the fourth would leave less than an eighth
  // free, and is closed with 1013. A holder first has a message acked: its
  // connection's backlog (which takes room for a page while it reads) is
  // over by then. Their replies are held back (the gate is closed).
  fixture.run([&] {
    fixture.gate->set_open(false);
    return true;
  });
  constexpr std::size_t mib = 1024 * 1024;
  std::vector<std::unique_ptr<mooring::test::WsClient>> holders;
  for (int i = 0; i < 4; ++i) {
    holders.push_back(std::make_unique<mooring::test::WsClient>());
    auto& holder = *holders.back();
    ASSERT_EQ(holder.connect(fixture.address, "/ws/holder" + std::to_string(i)), 101);
    holder.send(R"({"text":"hello","id":"first"})");
    for (;;) {
      const auto text = holder.read();
      ASSERT_TRUE(text.has_value());
      if (is_type(boost::json::parse(*text).as_object(), "ack")) break;
    }
    for (int f = 0; f < 10; ++f)
      asio::write(holder.lowest_layer().socket(), asio::buffer(fragment(f == 0, 65536)));
    if (i < 3) {
      ASSERT_TRUE(poll_until([&] { return budget.used() >= (i + 1) * mib; }, 10s))
          << budget.used();
    }
  }
  EXPECT_EQ(holders.back()->read(), std::nullopt);
  EXPECT_EQ(holders.back()->close_code(), 1013);
  EXPECT_TRUE(poll_until([&] { return budget.used() == 3 * mib; }, 10s)) << budget.used();

  mooring::test::WsClient client;
  ASSERT_EQ(client.connect(fixture.address, "/ws/returner"), 101);
  client.send(R"({"type":"resume","after":0})");
  expect_each_reply_once(client, replies);
  client.close();
  for (auto& holder : holders) holder->drop();
  EXPECT_TRUE(poll_until([&] { return budget.used() == 0; }, std::chrono::seconds(10)))
      << budget.used() << " bytes still held";
}

// --- chat.max_context_bytes ---------------------------------------------------

TEST(Gateway, TheContextSentUpstreamStaysWithinItsBytes) {
  GatewayOptions options;
  options.max_context_bytes = 1000;
  options.history_messages = 20;
  options.max_messages_per_minute = 0;
  GatewayFixture fixture(options);
  ChatClient client;
  ASSERT_EQ(client.connect(fixture.address, "talker"), 101);
  for (int i = 0; i < 8; ++i) {
    const auto text = std::to_string(i) + std::string(199, 'a' + i);  // 200 bytes
    const auto seq = say_and_get_seq(client, text, "h" + std::to_string(i));
    client.read_until([&](const Frame& f) { return is_chat_for(f, seq); });
  }
  const auto last = say_and_get_seq(client, std::string(100, 'q'), "last");
  client.read_until([&](const Frame& f) { return is_chat_for(f, last); });

  const auto seen = fixture.run([&] { return fixture.gate->requests.back(); });
  // 900 bytes for the history: the newest messages that fit, whole. Replies
  // ("ok: " + 16 bytes) are 20 bytes, messages 200: four of each and one more
  // reply make 900; the message before that would pass it.
  EXPECT_EQ(seen.history_bytes, 900u);
  EXPECT_EQ(seen.history_messages, 9u);
  EXPECT_EQ(seen.newest_history, "ok: 7hhhhhhhhhhhhhhh") << "the newest first";
  // Without a budget the whole history (20 messages) goes.
  options.max_context_bytes = 1 << 20;
  fixture.run([&] {
    fixture.gateway->set_options(options);
    return true;
  });
  const auto more = say_and_get_seq(client, "more", "more");
  client.read_until([&](const Frame& f) { return is_chat_for(f, more); });
  EXPECT_EQ(fixture.run([&] { return fixture.gate->requests.back().history_messages; }), 18u);
}

// --- the work gate: how many messages the host works on at once ------------

// One pass (held for `hold`), and a provider whose replies count as the
// host's work and wait until opened.
void gate_work(GatewayFixture& fixture, runtime::Duration hold) {
  fixture.run([&] {
    fixture.gateway->conversations().limit_work(1, hold);
    fixture.gate->waits = false;
    fixture.gate->set_open(false);
    return true;
  });
}
std::size_t waiting_for_passes(GatewayFixture& fixture) {
  return fixture.run([&] { return fixture.gateway->conversations().gate().waiting(); });
}
void open_provider(GatewayFixture& fixture) {
  fixture.run([&] {
    fixture.gate->set_open(true);
    return true;
  });
}
// Connects `client` as `user`, and waits until the connection's first backlog
// read has ended (GatewayFixture::settled).
bool connect_settled(GatewayFixture& fixture, ChatClient& client, const std::string& user) {
  return client.connect(fixture.address, user) == 101 &&
         poll_until([&] { return fixture.settled(user); }, 10s);
}
// Reads the acknowledgement of `id`, then the reply to it; returns its text.
std::string ack_and_reply(ChatClient& client, const std::string& id) {
  const auto ack = client.read_until([&](const Frame& f) { return is_ack(f, id); });
  const auto seq = int_field(ack, "seq");
  return string_field(client.read_until([&](const Frame& f) { return is_chat_for(f, seq); }),
                      "text");
}

TEST(Gateway, MessagesBeyondTheWorkGateWaitUnacknowledgedAndGoInTheOrderTheyCame) {
  GatewayFixture fixture;
  gate_work(fixture, 1h);
  ChatClient a, b, c;
  ASSERT_TRUE(connect_settled(fixture, a, "gate-a"));
  ASSERT_TRUE(connect_settled(fixture, b, "gate-b"));
  ASSERT_TRUE(connect_settled(fixture, c, "gate-c"));
  const auto first = say_and_get_seq(a, "from a", "a1");  // its reply holds the pass
  b.say("from b", "b1");
  ASSERT_TRUE(poll_until([&] { return waiting_for_passes(fixture) == 1; }, 10s));
  c.say("from c", "c1");
  ASSERT_TRUE(poll_until([&] { return waiting_for_passes(fixture) == 2; }, 10s));
  EXPECT_TRUE(fixture.messages("gate-b").empty()) << "stored before its pass";
  EXPECT_TRUE(fixture.messages("gate-c").empty()) << "stored before its pass";

  open_provider(fixture);
  a.read_until([&](const Frame& f) { return is_chat_for(f, first); });
  EXPECT_EQ(ack_and_reply(b, "b1"), "ok: from b");
  EXPECT_EQ(ack_and_reply(c, "c1"), "ok: from c");
  const auto requests = fixture.run([&] { return fixture.gate->requests; });
  ASSERT_EQ(requests.size(), 3u);
  EXPECT_EQ(requests[0].message, "from a");
  EXPECT_EQ(requests[1].message, "from b");
  EXPECT_EQ(requests[2].message, "from c");
  expect_usable(b, "after-gate");
}

// Work that never ends (a provider that says it never waits, and does)
// holds the others up only for the pass's hold time.
TEST(Gateway, AReplyThatNeverEndsHoldsTheWorkGateOnlyForItsHoldTime) {
  GatewayFixture fixture;
  gate_work(fixture, 50ms);
  ChatClient a, b;
  ASSERT_TRUE(connect_settled(fixture, a, "stuck-a"));
  ASSERT_TRUE(connect_settled(fixture, b, "stuck-b"));
  // The pass of "a1" is taken after this moment, and counts for 50 ms.
  const auto before_first = Clock::now();
  const auto first = say_and_get_seq(a, "from a", "a1");
  const auto second = say_and_get_seq(b, "from b", "b1");  // acknowledged all the same
  EXPECT_GE(Clock::now() - before_first, 50ms)
      << "acknowledged before the first pass stopped counting";
  ASSERT_TRUE(poll_until([&] { return fixture.run([&] { return fixture.gate->requests.size(); }) == 2; },
                         10s));
  open_provider(fixture);
  a.read_until([&](const Frame& f) { return is_chat_for(f, first); });
  b.read_until([&](const Frame& f) { return is_chat_for(f, second); });
}

// A connection waiting for a pass is not read, so it sees its client leave
// only when its turn comes or when it ends otherwise: replaced (here) or
// closed by a stop. It then leaves the line, and the message it held, never
// acknowledged, is not stored.
TEST(Gateway, AConnectionReplacedWhileWaitingForAPassLeavesTheLineAndItsMessageUnstored) {
  GatewayFixture fixture;
  gate_work(fixture, 1h);
  ChatClient a, b, c;
  ASSERT_TRUE(connect_settled(fixture, a, "line-a"));
  ASSERT_TRUE(connect_settled(fixture, b, "line-b"));
  ASSERT_TRUE(connect_settled(fixture, c, "line-c"));
  const auto first = say_and_get_seq(a, "from a", "a1");
  b.say("from b", "b1");
  ASSERT_TRUE(poll_until([&] { return waiting_for_passes(fixture) == 1; }, 10s));
  ChatClient b_again;
  ASSERT_EQ(b_again.connect(fixture.address, "line-b"), 101);
  ASSERT_TRUE(poll_until([&] { return waiting_for_passes(fixture) == 0; }, 10s));
  c.say("from c", "c1");
  ASSERT_TRUE(poll_until([&] { return waiting_for_passes(fixture) == 1; }, 10s));
  open_provider(fixture);
  a.read_until([&](const Frame& f) { return is_chat_for(f, first); });
  EXPECT_EQ(ack_and_reply(c, "c1"), "ok: from c");
  EXPECT_TRUE(fixture.messages("line-b").empty());
  EXPECT_EQ(fixture.run([&] { return fixture.gate->requests.size(); }), 2u);
  expect_usable(b_again, "again");
}

}  // namespace
}  // namespace mooring::chat::test
