#include "chat/context.hpp"

#include <gtest/gtest.h>

namespace mooring::chat {
namespace {

TEST(HistoryBudget, NewestFirstUntilTheBytesAreSpentThenOldestFirst) {
  HistoryBudget history(20, 1000, 100);  // 900 bytes left for the history
  EXPECT_TRUE(history.add_older(store::Role::assistant, std::string(400, 'c')));
  EXPECT_TRUE(history.add_older(store::Role::user, std::string(400, 'b')));
  EXPECT_FALSE(history.add_older(store::Role::assistant, std::string(101, 'a')));
  // Once one did not fit, nothing older is taken, even a small one: no holes.
  EXPECT_FALSE(history.wants_more());
  EXPECT_FALSE(history.add_older(store::Role::user, "z"));
  EXPECT_EQ(history.bytes(), 900u);
  const auto messages = history.take();
  ASSERT_EQ(messages.size(), 2u);
  EXPECT_EQ(messages[0].role, llm::Role::user);
  EXPECT_EQ(messages[0].content, std::string(400, 'b'));
  EXPECT_EQ(messages[1].role, llm::Role::assistant);
}

TEST(HistoryBudget, AtMostTheMessageCountAndPagesOfAFew) {
  HistoryBudget history(6, 1 << 20, 0);
  EXPECT_EQ(history.next_page(), HistoryBudget::page_size);
  for (int i = 0; i < 4; ++i) EXPECT_TRUE(history.add_older(store::Role::user, "x"));
  EXPECT_EQ(history.next_page(), 2u);
  for (int i = 0; i < 2; ++i) EXPECT_TRUE(history.add_older(store::Role::user, "x"));
  EXPECT_EQ(history.next_page(), 0u);
  EXPECT_FALSE(history.add_older(store::Role::user, "x"));
  EXPECT_EQ(history.take().size(), 6u);
}

TEST(HistoryBudget, AMessageOverTheBudgetLeavesNoRoomForHistory) {
  HistoryBudget history(20, 1000, 5000);
  EXPECT_FALSE(history.wants_more());
  EXPECT_EQ(history.next_page(), 0u);
  EXPECT_FALSE(history.add_older(store::Role::user, "x"));
  EXPECT_TRUE(history.take().empty());
  EXPECT_EQ(context_bytes(llm::ChatMessage{llm::Role::user, "abc", {"data:x", "https://y"}}),
            3u + 6u + 9u);
}

TEST(HistoryBudget, TakesAMessagesTextWithoutCopyingIt) {
  // A conversation's recent messages are the history of every reply: each
  // request points at their text instead of holding a copy of it.
  const llm::Text recent(std::string(300, 'r'));
  HistoryBudget first(20, 1000, 0);
  HistoryBudget second(20, 1000, 0);
  EXPECT_TRUE(first.add_older(store::Role::user, recent));
  EXPECT_TRUE(second.add_older(store::Role::user, recent));
  const auto a = first.take();
  const auto b = second.take();
  EXPECT_EQ(&a[0].content.str(), &recent.str());
  EXPECT_EQ(&b[0].content.str(), &recent.str());
  EXPECT_EQ(a[0].content, std::string(300, 'r'));
  EXPECT_EQ(llm::Text().str(), "");
}

}  // namespace
}  // namespace mooring::chat
