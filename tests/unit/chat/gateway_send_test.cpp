// What a web connection sends and when it gives up on a client: replies of
// any size reach a client that reads, however many the server has for it at
// once; a client that reads slowly but steadily is not taken for one that has
// stopped; a client that reads nothing is cut off and what waited for it is
// let go.
#include <gtest/gtest.h>

#include <algorithm>
#include <boost/json.hpp>
#include <set>

#include "chat/gateway.hpp"
#include "support/chat_client.hpp"
#include "support/wait.hpp"
#include "unit/chat/gateway_fixture.hpp"

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

std::size_t count_type(const std::vector<Frame>& frames, std::string_view type) {
  return std::count_if(frames.begin(), frames.end(),
                       [&](const Frame& f) { return is_type(f, type); });
}

void set_gate(GatewayFixture& fixture, bool open) {
  fixture.run([&] {
    fixture.gate->set_open(open);
    return true;
  });
}

void set_reply_bytes(GatewayFixture& fixture, std::size_t bytes) {
  fixture.run([&] {
    fixture.gate->reply_bytes = bytes;
    return true;
  });
}

// Every message of `user` answered and stored, nothing being made.
bool all_answered(GatewayFixture& fixture, const std::string& user, std::size_t messages) {
  if (fixture.run([&] { return fixture.gateway->replies_in_flight(); }) != 0) return false;
  std::size_t replies = 0;
  for (const auto& message : fixture.messages(user))
    replies += message.role == store::Role::assistant ? 1 : 0;
  return replies == messages;
}

// A user leaves while ten replies of 500 KB are made (a chat frame carries a
// reply twice: 10 MB of frames, more than the 4 MiB a connection queues).
// Coming back, the user gets all ten in order on the first try.
TEST(GatewaySend, AReturningUserGetsEveryLargeStoredReplyAtOnce) {
  GatewayFixture fixture;
  set_reply_bytes(fixture, 500 * 1000);
  set_gate(fixture, false);
  constexpr int messages = 10;
  {
    ChatClient away;
    ASSERT_EQ(away.connect(fixture.address, "returning"), 101);
    for (int i = 0; i < messages; ++i)
      say_and_get_seq(away, "q" + std::to_string(i), "q" + std::to_string(i));
    away.close();
  }
  ASSERT_TRUE(poll_until(
      [&] { return fixture.run([&] { return fixture.gateway->connections(); }) == 0; }, 10s));
  set_gate(fixture, true);
  ASSERT_TRUE(poll_until([&] { return all_answered(fixture, "returning", messages); }, 30s));

  ChatClient back;
  ASSERT_EQ(back.connect(fixture.address, "returning"), 101);
  std::vector<std::int64_t> seqs;
  while (seqs.size() < messages) {
    const auto chat = back.read_until([](const Frame& f) { return is_type(f, "chat"); }, 30s);
    EXPECT_EQ(string_field(chat, "text").size(), 500u * 1000);
    seqs.push_back(int_field(chat, "seq"));
  }
  EXPECT_TRUE(std::is_sorted(seqs.begin(), seqs.end()));
  EXPECT_EQ(count_type(back.received(), "error"), 0u);
  // Still open and usable after the backlog.
  set_reply_bytes(fixture, 0);
  const auto seq = say_and_get_seq(back, "and now", "now");
  back.read_until([&](const Frame& f) { return is_chat_for(f, seq); });
}

// Each reply alone is larger than the connection's byte bound (1.4 MB frames,
// 1 MiB), and four of them are made while the client has not read yet. The
// client then reads, and sends another message meanwhile: it gets every
// reply and every ack, in order, and is never taken for a slow consumer.
TEST(GatewaySend, RepliesLargerThanTheSendQueueReachAClientThatReadsAMomentLater) {
  GatewayOptions options;
  options.ws.send_queue_bytes = 1024 * 1024;
  GatewayFixture fixture(options);
  set_reply_bytes(fixture, 700 * 1000);
  set_gate(fixture, false);
  ChatClient client;
  client.set_receive_buffer(64 * 1024);
  ASSERT_EQ(client.connect(fixture.address, "bursty"), 101);
  std::vector<std::int64_t> asked;
  for (int i = 0; i < 4; ++i)
    asked.push_back(say_and_get_seq(client, "big " + std::to_string(i), "b" + std::to_string(i)));
  set_gate(fixture, true);
  ASSERT_TRUE(poll_until([&] { return all_answered(fixture, "bursty", 4); }, 30s));

  client.say("one more", "more");
  for (const auto seq : asked) {
    const auto chat = client.read_until([&](const Frame& f) { return is_chat_for(f, seq); }, 30s);
    EXPECT_EQ(string_field(chat, "text").size(), 700u * 1000);
  }
  const auto more = client.read_until([](const Frame& f) { return is_ack(f, "more"); }, 30s);
  client.read_until([&](const Frame& f) { return is_chat_for(f, int_field(more, "seq")); }, 30s);
  EXPECT_EQ(count_type(client.received(), "error"), 0u);
  EXPECT_EQ(count_type(client.received(), "chat"), 5u);
  // Each reply's one piece ("rrrr", streamed before it was stored) came once.
  for (const auto seq : asked) {
    std::string streamed;
    for (const auto& frame : client.received())
      if (mooring::test::is_token_for(frame, seq)) streamed += string_field(frame, "content");
    EXPECT_EQ(streamed, "rrrr") << "reply to #" << seq;
  }
}

// A phone on a slow link reads an 8 MB reply at about 2.5 MB/s: the write
// takes seconds, several times heartbeat_interval + heartbeat_timeout (1 s
// here), and its end waits in the kernel's buffers long after the server has
// written it. The client takes bytes all along and is not cut off.
TEST(GatewaySend, AClientReadingSteadilyThroughALongWriteIsNotCutOff) {
  GatewayOptions options;
  options.ws.heartbeat_interval = 500ms;
  options.ws.heartbeat_timeout = 500ms;
  GatewayFixture fixture(options);
  set_reply_bytes(fixture, 4000 * 1000);
  ChatClient phone;
  phone.set_receive_buffer(16 * 1024);
  ASSERT_EQ(phone.connect(fixture.address, "slowlink"), 101);
  const auto seq = say_and_get_seq(phone, "tell me everything", "all");
  for (;;) {
    const auto frame = phone.next_slowly(256 * 1024, 100ms);
    ASSERT_TRUE(frame.has_value()) << "cut off while reading, close code " << phone.close_code();
    if (is_chat_for(*frame, seq)) {
      EXPECT_EQ(string_field(*frame, "text").size(), 4000u * 1000);
      break;
    }
  }
  set_reply_bytes(fixture, 0);
  const auto next = say_and_get_seq(phone, "thanks", "thanks");
  phone.read_until([&](const Frame& f) { return is_chat_for(f, next); });
}

// A client that does not read while sixteen replies of 1 MB are made (2 MB
// frames): once its socket and the connection's queue are full, one reply
// waits for room and no further one is made; the rest of its messages wait
// stored. It then reads, and gets every reply once, in order.
TEST(GatewaySend, AClientThatDoesNotReadGetsOneReplyMadeAtATimeOnceItsQueueIsFull) {
  GatewayFixture fixture;
  set_reply_bytes(fixture, 1000 * 1000);
  set_gate(fixture, false);
  constexpr std::size_t messages = 16;
  ChatClient client;
  client.set_receive_buffer(64 * 1024);
  ASSERT_EQ(client.connect(fixture.address, "unread"), 101);
  std::vector<std::int64_t> asked;
  for (std::size_t i = 0; i < messages; ++i)
    asked.push_back(say_and_get_seq(client, "q" + std::to_string(i), "q" + std::to_string(i)));
  const auto answered = [&] {
    std::size_t replies = 0;
    for (const auto& message : fixture.messages("unread"))
      replies += message.role == store::Role::assistant ? 1 : 0;
    return replies;
  };
  set_gate(fixture, true);
  ASSERT_TRUE(poll_until([&] { return answered() >= 2; }, 30s));
  // All sixteen are made within milliseconds when nothing holds them back
  // (32 MB of frames: more than the socket, its 4 MiB queue and one
  // reply waiting for room can hold).
  EXPECT_FALSE(poll_until([&] { return answered() == messages; }, 1s))
      << "every reply was made for a client that read none";
  EXPECT_GE(net::buffer_budget().used(), 2u * 1000 * 1000)
      << "the frames waiting for the client are not counted";

  for (const auto seq : asked) {
    const auto chat = client.read_until([&](const Frame& f) { return is_chat_for(f, seq); }, 30s);
    EXPECT_EQ(string_field(chat, "text").size(), 1000u * 1000);
  }
  EXPECT_EQ(count_type(client.received(), "chat"), messages);
  EXPECT_EQ(count_type(client.received(), "error"), 0u);
  client.close();
  EXPECT_TRUE(poll_until([&] { return net::buffer_budget().used() == 0; }, 10s))
      << net::buffer_budget().used() << " bytes still held";
}

// The work gate counts the host's own work: a client that reads nothing holds
// no pass (its reply that waits for room gives its pass back), so users who
// stop reading cannot keep the others' messages waiting (here the gate has
// one pass, and a pass counts until given back). Fails with the pass kept
// over the wait.
TEST(GatewaySend, AClientThatDoesNotReadHoldsNoPassOfTheWorkGate) {
  GatewayFixture fixture;
  fixture.run([&] {
    fixture.gateway->conversations().limit_work(1, std::chrono::hours(1));
    fixture.gate->waits = false;  // its replies are the host's work, held until handed over
    return true;
  });
  set_reply_bytes(fixture, 1000 * 1000);
  constexpr std::size_t messages = 8;
  ChatClient stalled;  // sends, and reads nothing at all
  stalled.set_receive_buffer(64 * 1024);
  ASSERT_EQ(stalled.connect(fixture.address, "stalled"), 101);
  ASSERT_TRUE(poll_until([&] { return fixture.settled("stalled"); }, 10s));
  const auto count = [&](store::Role role) {
    std::size_t n = 0;
    for (const auto& message : fixture.messages("stalled")) n += message.role == role ? 1 : 0;
    return n;
  };
  const auto passes_held = [&] {
    return fixture.run([&] { return fixture.gateway->conversations().gate().held(); });
  };
  for (std::size_t i = 0; i < messages; ++i)
    stalled.say("q" + std::to_string(i), "q" + std::to_string(i));
  // Replies are made until the connection's queue is full; then the next
  // waits for room (and the connection is not read).
  ASSERT_TRUE(poll_until([&] { return count(store::Role::assistant) >= 2; }, 30s));
  EXPECT_TRUE(poll_until([&] { return passes_held() == 0; }, 10s))
      << "a client that reads nothing holds a pass";

  ChatClient reader;
  ASSERT_EQ(reader.connect(fixture.address, "reader"), 101);
  ASSERT_TRUE(poll_until([&] { return fixture.settled("reader"); }, 10s));
  const auto seq = say_and_get_seq(reader, "hello", "r1");
  const auto chat = reader.read_until([&](const Frame& f) { return is_chat_for(f, seq); }, 30s);
  EXPECT_EQ(string_field(chat, "text").size(), 1000u * 1000);
  EXPECT_LT(count(store::Role::assistant), messages)
      << "every reply was made for a client that read none";
}

// Messages waiting for their reply are held against the buffer budget, and
// given back as their replies are made.
TEST(GatewaySend, MessagesWaitingForTheirReplyAreCountedInTheBufferBudget) {
  GatewayFixture fixture;
  set_gate(fixture, false);
  ChatClient client;
  ASSERT_EQ(client.connect(fixture.address, "waiter"), 101);
  // The connection's look for a backlog holds room for its first page a moment.
  ASSERT_TRUE(poll_until([&] { return net::buffer_budget().used() == 0; }, 10s))
      << net::buffer_budget().used();
  for (int i = 0; i < 5; ++i)
    say_and_get_seq(client, std::string(100000, 'a' + i), "w" + std::to_string(i));
  // The first is being answered; four wait.
  EXPECT_TRUE(poll_until([&] { return net::buffer_budget().used() >= 4u * 100000; }, 10s))
      << net::buffer_budget().used();
  set_gate(fixture, true);
  ASSERT_TRUE(poll_until([&] { return all_answered(fixture, "waiter", 5); }, 30s));
  client.close();
  EXPECT_TRUE(poll_until([&] { return net::buffer_budget().used() == 0; }, 10s))
      << net::buffer_budget().used() << " bytes still held";
}

// A client that reads nothing while a large backlog waits for it is cut off
// once its socket has taken nothing for heartbeat_interval +
// heartbeat_timeout; the replies stay stored, and a resume gets them all.
TEST(GatewaySend, AClientThatReadsNothingIsCutOffAndItsRepliesWaitForItsReturn) {
  GatewayOptions options;
  options.ws.heartbeat_interval = 100ms;
  options.ws.heartbeat_timeout = 100ms;
  GatewayFixture fixture(options);
  set_reply_bytes(fixture, 500 * 1000);
  set_gate(fixture, false);
  {
    ChatClient away;
    ASSERT_EQ(away.connect(fixture.address, "stalled"), 101);
    for (int i = 0; i < 10; ++i)
      say_and_get_seq(away, "q" + std::to_string(i), "q" + std::to_string(i));
    away.close();
  }
  ASSERT_TRUE(poll_until(
      [&] { return fixture.run([&] { return fixture.gateway->connections(); }) == 0; }, 10s));
  set_gate(fixture, true);
  ASSERT_TRUE(poll_until([&] { return all_answered(fixture, "stalled", 10); }, 30s));

  ChatClient stalled;  // never reads
  stalled.set_receive_buffer(16 * 1024);
  ASSERT_EQ(stalled.connect(fixture.address, "stalled"), 101);
  ASSERT_TRUE(poll_until(
      [&] { return fixture.run([&] { return fixture.gateway->connections(); }) == 1; }, 10s));
  ASSERT_TRUE(poll_until(
      [&] { return fixture.run([&] { return fixture.gateway->connections(); }) == 0; }, 10s))
      << "a client that read nothing is still connected";

  // What reached the stalled client's socket counts as delivered: the
  // returning one asks for everything.
  ChatClient back;
  ASSERT_EQ(back.connect(fixture.address, "stalled"), 101);
  back.send(Frame{{"type", "resume"}, {"after", 0}});
  std::set<std::int64_t> seqs;
  while (seqs.size() < 10)
    seqs.insert(
        int_field(back.read_until([](const Frame& f) { return is_type(f, "chat"); }, 30s), "seq"));
  EXPECT_EQ(count_type(back.received(), "error"), 0u);
}

}  // namespace
}  // namespace mooring::chat::test
