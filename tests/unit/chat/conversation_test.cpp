// The conversation core against a fake transport: what it stores, in what
// order it answers, what it hands the outlet, and when the cursor moves.
#include "chat/conversation.hpp"

#include "gateway_fixture.hpp"
#include "support/metrics.hpp"
#include "support/wait.hpp"

#include <gtest/gtest.h>

#include <algorithm>

namespace mooring::chat::test {
namespace {

using mooring::test::poll_until;

// Records everything a conversation hands it; delivers a reply at once (or
// when told to, with `hold`).
class FakeOutlet : public Outlet {
 public:
  explicit FakeOutlet(asio::any_io_executor executor) : drained_(executor), room_(executor) {}

  void stored(const Submission& message, const store::Appended& appended) override {
    events.push_back(fmt::format("stored {} #{}{}", message.text, appended.seq,
                                 appended.duplicate ? " again" : ""));
  }
  void error(std::string_view name, std::string_view description, store::Seq,
             std::optional<std::string_view>) override {
    events.push_back(fmt::format("error {}: {}", name, description));
  }
  void notice(std::string_view text) override { events.push_back(fmt::format("notice {}", text)); }
  void piece(std::string_view text, store::Seq) override { pieces += text; }
  void pieces_done(store::Seq, bool flush) override {
    if (flush && !pieces.empty()) events.push_back("pieces " + pieces);
    pieces.clear();
  }
  void reply(const store::Message& reply, bool just_cancelled) override {
    events.push_back(fmt::format("reply to #{}: {}{}", reply.reply_to.value_or(0), reply.content,
                                 just_cancelled ? " (just cancelled)" : ""));
    replies.push_back(reply.seq);
    if (auto alive = conversation.lock(); !hold && alive) alive->delivered(reply.seq);
  }
  std::size_t page_size() const override { return page; }
  awaitable<bool> drained() override {
    ++drains;
    co_return true;
  }
  void pending_changed(std::size_t pending) override {
    peak_pending = std::max(peak_pending, pending);
    last_pending = pending;
  }
  void detached() override { events.push_back("detached"); }
  // With room_closed, a reply waits until open_room(), as for a user who
  // has not read the one before.
  bool reply_held() const override { return room_closed; }
  awaitable<void> room_for_reply() override {
    while (room_closed) co_await room_.wait_until(runtime::Deadline::never());
  }
  void open_room() {
    room_closed = false;
    room_.notify_all();
  }

  // Weak, as a transport's outlet holds it: the conversation holds the outlet.
  std::weak_ptr<Conversation> conversation;
  std::vector<std::string> events;
  std::vector<store::Seq> replies;
  std::string pieces;
  bool hold = false;
  bool room_closed = false;
  std::size_t page = 1000;
  std::size_t drains = 0;
  std::size_t peak_pending = 0;
  std::size_t last_pending = 0;

 private:
  runtime::Notifier drained_;
  runtime::Notifier room_;
};

struct ConversationTest : ::testing::Test {
  GatewayFixture f;  // the store, the gate provider and the thread (its web routes go unused)

  Conversations& conversations() { return f.gateway->conversations(); }

  std::shared_ptr<FakeOutlet> attach(const std::string& id) {
    return f.run([&] {
      auto conversation = conversations().get(id);
      auto outlet = std::make_shared<FakeOutlet>(f.thread.io().get_executor());
      outlet->conversation = conversation;
      conversation->attach(outlet);
      return outlet;
    });
  }

  void submit(const std::string& id, std::string text, bool answer = true,
              std::optional<std::string> client_id = std::nullopt) {
    f.run([&] {
      conversations().get(id)->submit(
          Submission{.text = std::move(text), .client_id = std::move(client_id), .answer = answer});
      return true;
    });
  }

  std::vector<std::string> events(const std::shared_ptr<FakeOutlet>& outlet) {
    return f.run([&] { return outlet->events; });
  }

  bool wait_for_events(const std::shared_ptr<FakeOutlet>& outlet, std::size_t n) {
    return poll_until([&] { return events(outlet).size() >= n; }, 10s);
  }

  // The work gate's passes counting now.
  std::size_t passes_held() { return f.run([&] { return conversations().gate().held(); }); }
  // A message with a pass of the work gate, as the web transport hands one over.
  void submit_with_pass(const std::string& id, std::string text) {
    f.run([&] {
      auto pass = conversations().gate().try_enter();
      EXPECT_TRUE(pass) << "no pass free";
      conversations().get(id)->submit(Submission{.text = std::move(text), .pass = std::move(pass)});
      return true;
    });
  }
  // The provider: whether it may wait (else its replies count as the host's
  // work) and whether it answers now.
  void set_provider(bool waits, bool open) {
    f.run([&] {
      f.gate->waits = waits;
      f.gate->set_open(open);
      return true;
    });
  }
  std::size_t requests() { return f.run([&] { return f.gate->requests.size(); }); }

  store::Seq delivered_cursor(const std::string& id) {
    auto session = f.thread.call(f.store->session(id));
    if (!session || !*session) return -1;
    return (*session)->delivered_seq;
  }
};

TEST_F(ConversationTest, AMessageIsStoredThenAnsweredAndTheCursorMovesWhenTheOutletDelivers) {
  auto outlet = attach("ann");
  submit("ann", "hello", true, "c1");
  ASSERT_TRUE(wait_for_events(outlet, 3));
  EXPECT_EQ(events(outlet),
            (std::vector<std::string>{"stored hello #1", "pieces ok: ", "reply to #1: ok: hello"}));
  const auto stored = f.messages("ann");
  ASSERT_EQ(stored.size(), 2u);
  EXPECT_EQ(stored[1].role, store::Role::assistant);
  EXPECT_TRUE(poll_until([&] { return delivered_cursor("ann") == stored[1].seq; }, 10s));
}

// Messages queued behind one another are stored together (one commit, not
// one fsync each: a busy group, or the messages a full QQ chat held, handed
// over at a stop, where one at a time outlasted the drain), then
// acknowledged and answered in order.
TEST_F(ConversationTest, MessagesQueuedTogetherAreStoredInOneCommitAndKeepTheirOrder) {
  auto outlet = attach("burst");
  f.run([&] { return f.gate->set_open(false), true; });
  constexpr int messages = 40;
  const double commits = mooring::test::metric_value("mooring_store_commit_seconds_count");
  f.run([&] {
    auto conversation = conversations().get("burst");
    for (int i = 0; i < messages; ++i)
      conversation->submit(Submission{.text = fmt::format("m{}", i),
                                      .client_id = fmt::format("c{}", i),
                                      .answer = i % 2 == 0});
    return true;
  });
  ASSERT_TRUE(poll_until(
      [&] {
        return std::ranges::count_if(events(outlet),
                                     [](const auto& e) { return e.starts_with("stored"); }) ==
               messages;
      },
      10s));
  // The first is stored alone, the rest together (stored one at a time, they
  // took 40 commits). The store's thread, woken by the first, takes what is
  // queued whenever it looks, so a loaded machine splits the rest into a few
  // batches (4, then 6 under AddressSanitizer in a CI run): fewer than half
  // as many commits as messages, whatever the timing.
  EXPECT_LT(mooring::test::metric_value("mooring_store_commit_seconds_count") - commits,
            messages / 2);
  std::vector<std::string> stored;
  for (const auto& event : events(outlet))
    if (event.starts_with("stored")) stored.push_back(event);
  for (int i = 0; i < messages; ++i)
    EXPECT_EQ(stored[i], fmt::format("stored m{} #{}", i, i + 1));
  f.run([&] { return f.gate->set_open(true), true; });
  ASSERT_TRUE(poll_until(
      [&] {
        return std::ranges::count_if(events(outlet),
                                     [](const auto& e) { return e.starts_with("reply"); }) ==
               messages / 2;
      },
      10s));
  std::vector<std::string> replies;
  for (const auto& event : events(outlet))
    if (event.starts_with("reply")) replies.push_back(event);
  for (int i = 0; i < messages / 2; ++i)
    EXPECT_TRUE(replies[i].starts_with(fmt::format("reply to #{}: ok: m{}", 2 * i + 1, 2 * i)))
        << replies[i];
}

TEST_F(ConversationTest, MessagesAreAnsweredInOrderOneAtATime) {
  auto outlet = attach("bo");
  f.run([&] { return f.gate->set_open(false), true; });
  for (int i = 0; i < 3; ++i) submit("bo", fmt::format("m{}", i));
  ASSERT_TRUE(poll_until([&] { return f.run([&] { return f.gate->requests.size(); }) == 1u; }, 10s));
  EXPECT_TRUE(poll_until([&] { return f.run([&] { return outlet->last_pending; }) == 3u; }, 10s));
  // Pending counts what is queued, stored or not: the seqs asserted below are
  // the messages' only once all three are stored before the first reply is.
  ASSERT_TRUE(poll_until(
      [&] {
        return std::ranges::count_if(events(outlet),
                                     [](const auto& e) { return e.starts_with("stored"); }) == 3;
      },
      10s));
  f.run([&] { return f.gate->set_open(true), true; });
  ASSERT_TRUE(wait_for_events(outlet, 9));
  std::vector<std::string> replies;
  for (const auto& event : events(outlet))
    if (event.starts_with("reply")) replies.push_back(event);
  EXPECT_EQ(replies, (std::vector<std::string>{"reply to #1: ok: m0", "reply to #2: ok: m1",
                                               "reply to #3: ok: m2"}));
  EXPECT_TRUE(poll_until([&] { return f.run([&] { return outlet->last_pending; }) == 0u; }, 10s));
}

TEST_F(ConversationTest, AContextOnlyMessageIsStoredNeverAnsweredAndIsTheNextReplysHistory) {
  auto outlet = attach("grp");
  submit("grp", "alice: lunch at noon", false, "m1");
  submit("grp", "bob: where?", true, "m2");
  ASSERT_TRUE(wait_for_events(outlet, 4));
  const auto stored = f.messages("grp");
  ASSERT_EQ(stored.size(), 3u);
  EXPECT_EQ(stored[0].status, store::MessageStatus::answered);  // answered by nothing
  EXPECT_EQ(stored[2].reply_to, stored[1].seq);
  const auto requests = f.run([&] { return f.gate->requests; });
  ASSERT_EQ(requests.size(), 1u);
  EXPECT_EQ(requests[0].history_messages, 1u);
  EXPECT_EQ(requests[0].newest_history, "alice: lunch at noon");
  // Not pending after a restart either.
  auto pending = f.thread.call(f.store->pending_messages());
  ASSERT_TRUE(pending);
  EXPECT_TRUE(pending->empty());
}

TEST_F(ConversationTest, RequestsPointAtTheRecentMessagesInsteadOfCopyingThem) {
  auto outlet = attach("hal");
  for (int i = 0; i < 3; ++i) {
    submit("hal", fmt::format("m{}", i));
    ASSERT_TRUE(wait_for_events(outlet, 3 * (i + 1)));
  }
  const auto requests = f.run([&] { return f.gate->requests; });
  ASSERT_EQ(requests.size(), 3u);
  // The second and the third reply both have "m0" as their oldest history.
  ASSERT_NE(requests[1].oldest_history_text, nullptr);
  EXPECT_EQ(*requests[1].oldest_history_text, "m0");
  EXPECT_EQ(requests[1].oldest_history_text, requests[2].oldest_history_text);
}

TEST_F(ConversationTest, ACancelledReplyIsStoredAsSuchAndTheNextMessageIsAnswered) {
  auto outlet = attach("cy");
  f.run([&] { return f.gate->set_open(false), true; });
  submit("cy", "first");
  ASSERT_TRUE(poll_until([&] { return f.run([&] { return f.gate->requests.size(); }) == 1u; }, 10s));
  EXPECT_TRUE(f.run([&] { return conversations().get("cy")->cancel(); }));
  ASSERT_TRUE(poll_until(
      [&] {
        for (const auto& e : events(outlet))
          if (e == "reply to #1: the reply was cancelled (just cancelled)") return true;
        return false;
      },
      10s));
  f.run([&] { return f.gate->set_open(true), true; });
  submit("cy", "second");
  ASSERT_TRUE(poll_until(
      [&] { return !events(outlet).empty() && events(outlet).back() == "reply to #3: ok: second"; },
      10s));
  // Nothing to cancel now: the outlet hears it, and nothing is stored.
  EXPECT_FALSE(f.run([&] { return conversations().get("cy")->cancel(); }));
  EXPECT_EQ(events(outlet).back(), "notice there is no reply in progress to cancel");
  EXPECT_EQ(f.messages("cy").size(), 4u);
}

// Defect: a reply that failed or was cancelled went into the next requests'
// history as the assistant's words ("the reply was cancelled", "the provider
// did not answer in time"), after its question. A failed turn is left out,
// in memory and when the history is read back from the store.
TEST_F(ConversationTest, AFailedOrCancelledTurnIsLeftOutOfTheHistory) {
  auto outlet = attach("fy");
  f.run([&] { return f.gate->set_open(false), true; });
  submit("fy", "first");
  ASSERT_TRUE(poll_until([&] { return requests() == 1u; }, 10s));
  EXPECT_TRUE(f.run([&] { return conversations().get("fy")->cancel(); }));
  f.run([&] { return f.gate->set_open(true), true; });
  submit("fy", "second");
  ASSERT_TRUE(poll_until([&] { return requests() == 2u; }, 10s));
  submit("fy", "third");
  ASSERT_TRUE(poll_until(
      [&] { return !events(outlet).empty() && events(outlet).back() == "reply to #5: ok: third"; },
      10s));
  auto history = f.run([&] { return f.gate->requests; });
  ASSERT_EQ(history.size(), 3u);
  EXPECT_EQ(history[1].history_messages, 0u) << "neither \"first\" nor its cancellation";
  EXPECT_EQ(history[2].history_messages, 2u);
  EXPECT_EQ(history[2].newest_history, "ok: second");

  // Read back from the store, as after a restart.
  f.run([&] {
    conversations().get("fy")->detach(outlet.get());
    return true;
  });
  ASSERT_TRUE(poll_until([&] { return f.run([&] { return conversations().size(); }) == 0u; }, 10s));
  auto again = attach("fy");
  submit("fy", "fourth");
  ASSERT_TRUE(poll_until([&] { return requests() == 4u; }, 10s));
  history = f.run([&] { return f.gate->requests; });
  EXPECT_EQ(history[3].history_messages, 4u) << "second, third and their replies";
  EXPECT_EQ(history[3].newest_history, "ok: third");
}

TEST_F(ConversationTest, StoredRepliesAfterTheCursorGoOutAPageAtATimeOnlyToTheOutletTheyWereAskedFor) {
  auto first = attach("dee");
  f.run([&] { return first->hold = true; });  // nothing is delivered: the cursor stays at 0
  for (int i = 0; i < 5; ++i) submit("dee", fmt::format("q{}", i));
  ASSERT_TRUE(poll_until([&] { return f.run([&] { return first->replies.size(); }) == 5u; }, 10s));
  EXPECT_EQ(delivered_cursor("dee"), 0);

  auto second = attach("dee");
  f.run([&] { return second->page = 2; });
  EXPECT_EQ(events(first).back(), "detached");
  f.run([&] {
    conversations().get("dee")->deliver_undelivered();
    return true;
  });
  ASSERT_TRUE(poll_until([&] { return f.run([&] { return second->replies.size(); }) == 5u; }, 10s));
  EXPECT_EQ(f.run([&] { return second->drains; }), 2u);  // pages of 2, 2 and 1
  const auto replies = f.run([&] { return second->replies; });
  EXPECT_TRUE(std::is_sorted(replies.begin(), replies.end()));
  EXPECT_TRUE(poll_until([&] { return delivered_cursor("dee") == replies.back(); }, 10s));
  EXPECT_EQ(f.run([&] { return first->replies.size(); }), 5u);  // the old outlet got no more
}

TEST_F(ConversationTest, WorkQueuedForAReplacedOutletIsDropped) {
  auto first = attach("eve");
  submit("eve", "a");
  ASSERT_TRUE(wait_for_events(first, 3));
  // Queued for the first outlet, then replaced before it runs.
  auto second = f.run([&] {
    auto conversation = conversations().get("eve");
    conversation->deliver_after(0);
    auto outlet = std::make_shared<FakeOutlet>(f.thread.io().get_executor());
    outlet->conversation = conversation;
    conversation->attach(outlet);
    return outlet;
  });
  submit("eve", "b");
  ASSERT_TRUE(wait_for_events(second, 3));
  EXPECT_EQ(events(second), (std::vector<std::string>{"stored b #3", "pieces ok: ", "reply to #3: ok: b"}));
  EXPECT_EQ(events(first).size(), 4u);  // its three, then "detached"
}

TEST_F(ConversationTest, AConversationWithNoOutletAndNoWorkIsForgottenAndAFactoryGivesOutletsByPrefix) {
  std::vector<std::string> made;
  f.run([&] {
    conversations().set_outlet_factory("x:", [&](Conversation& c) { made.push_back(c.id()); });
    conversations().get("x:1");
    conversations().get("y:1");
    return true;
  });
  EXPECT_EQ(f.run([&] { return made; }), std::vector<std::string>{"x:1"});
  f.run([&] {
    conversations().forget_if_idle("x:1");
    conversations().forget_if_idle("y:1");
    return true;
  });
  EXPECT_EQ(f.run([&] { return conversations().size(); }), 0u);
}

TEST_F(ConversationTest, AStoreThatRefusesTheMessageIsToldToTheOutletAndNothingIsAnswered) {
  auto outlet = attach("fay");
  f.thread.call(f.store->close());  // every write from now on fails with `closed`
  submit("fay", "lost?");
  ASSERT_TRUE(wait_for_events(outlet, 1));
  EXPECT_EQ(events(outlet)[0],
            "error store_error: the message could not be stored; it was not received, send it again");
  EXPECT_TRUE(f.run([&] { return f.gate->requests.empty(); }));
}

// Every message the previous run left unanswered is taken up at the start,
// however many there are (a start used to take the first 10,000).
TEST_F(ConversationTest, AStartTakesUpEveryUnansweredMessage) {
  constexpr int users = 700;
  constexpr int each = 15;  // 10,500 in all
  int stored = 0;
  f.run([&] {
    for (int u = 0; u < users; ++u) {
      f.thread.supervisor().spawn(
          fmt::format("append u{}", u), "test",
          [](store::Store& store, int u, int& stored) -> awaitable<void> {
            for (int i = 0; i < each; ++i) {
              auto appended = co_await store.append_user_message(fmt::format("u{}", u), "hi");
              if (appended) ++stored;
            }
          }(*f.store, u, stored));
    }
    return true;
  });
  ASSERT_TRUE(poll_until([&] { return f.run([&] { return stored; }) == users * each; }, 60s));
  const auto taken_up = f.thread.call(conversations().recover());
  EXPECT_EQ(taken_up, std::size_t{users * each});
}

// --- the work gate (Conversations::gate()) ---------------------------------

// The passes here count until given back (no hold time runs out mid-test).
struct GatedConversationTest : ConversationTest {
  GatedConversationTest() {
    f.run([&] {
      conversations().limit_work(Conversations::work_at_once, 1h);
      return true;
    });
  }
};

TEST_F(GatedConversationTest, APassIsHeldUntilTheReplyIsHandedOverWhenTheProviderNeverWaits) {
  auto outlet = attach("worker");
  set_provider(false, false);
  submit_with_pass("worker", "hello");
  ASSERT_TRUE(poll_until([&] { return requests() == 1; }, 10s));
  EXPECT_EQ(passes_held(), 1u) << "the reply is being made";
  set_provider(false, true);
  ASSERT_TRUE(wait_for_events(outlet, 3));
  EXPECT_EQ(events(outlet).back(), "reply to #1: ok: hello");
  EXPECT_TRUE(poll_until([&] { return passes_held() == 0; }, 10s));
}

TEST_F(GatedConversationTest, APassGoesBackWhenTheReplyWaitsForAProviderThatMayWait) {
  auto outlet = attach("upstream");
  set_provider(true, false);
  submit_with_pass("upstream", "hello");
  ASSERT_TRUE(poll_until([&] { return requests() == 1; }, 10s));
  EXPECT_EQ(passes_held(), 0u) << "the wait is the upstream's";
  set_provider(true, true);
  ASSERT_TRUE(wait_for_events(outlet, 3));
}

TEST_F(GatedConversationTest, APassGoesBackWhileTheReplyWaitsForTheUserToRead) {
  auto outlet = attach("reader");
  f.run([&] { return outlet->room_closed = true; });
  set_provider(false, true);
  submit_with_pass("reader", "hello");
  ASSERT_TRUE(poll_until([&] { return passes_held() == 0; }, 10s))
      << "a user who does not read holds a pass";
  EXPECT_EQ(requests(), 0u);
  EXPECT_EQ(events(outlet), (std::vector<std::string>{"stored hello #1"}));
  f.run([&] { return outlet->open_room(), true; });
  ASSERT_TRUE(wait_for_events(outlet, 3));
  EXPECT_EQ(events(outlet).back(), "reply to #1: ok: hello");
}

TEST_F(GatedConversationTest, AMessageWaitingBehindOtherWorkOfItsConversationGivesItsPassBack) {
  auto outlet = attach("busy");
  set_provider(false, false);
  // Behind an item of the inbox.
  f.run([&] {
    auto& gate = conversations().gate();
    auto conversation = conversations().get("busy");
    conversation->submit(Submission{.text = "first", .pass = gate.try_enter()});
    conversation->submit(Submission{.text = "second", .pass = gate.try_enter()});
    EXPECT_EQ(gate.held(), 1u);
    return true;
  });
  // Behind a reply being made.
  ASSERT_TRUE(poll_until([&] { return requests() == 1; }, 10s));
  ASSERT_TRUE(wait_for_events(outlet, 2));
  submit_with_pass("busy", "third");
  ASSERT_TRUE(wait_for_events(outlet, 3));
  EXPECT_EQ(events(outlet)[2], "stored third #3");
  EXPECT_EQ(passes_held(), 1u) << "only the message whose reply is being made holds one";
  set_provider(false, true);
  ASSERT_TRUE(poll_until([&] { return f.run([&] { return outlet->replies.size(); }) == 3; }, 10s));
  EXPECT_TRUE(poll_until([&] { return passes_held() == 0; }, 10s));
}

}  // namespace
}  // namespace mooring::chat::test
