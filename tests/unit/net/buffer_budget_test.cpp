#include "net/buffer_budget.hpp"

#include <gtest/gtest.h>

#include <optional>

namespace mooring::net {
namespace {

TEST(BufferBudget, AShareGrowsOnlyWithinTheLimitAndGivesEverythingBackWhenDestroyed) {
  BufferBudget budget(100);
  {
    BufferBudget::Share a(budget);
    EXPECT_TRUE(a.grow_to(60));
    BufferBudget::Share b(budget);
    EXPECT_FALSE(b.grow_to(41)) << "60 + 41 is past 100";
    EXPECT_EQ(b.bytes(), 0u);
    EXPECT_TRUE(b.grow_to(40));
    EXPECT_EQ(budget.used(), 100u);
    EXPECT_FALSE(budget.has_room(1));
    EXPECT_TRUE(a.grow_to(10)) << "shrinking is never refused";
    EXPECT_EQ(budget.used(), 50u);
    // set() is never refused: frames already made go out.
    a.set(500);
    EXPECT_EQ(budget.used(), 540u);
    EXPECT_FALSE(budget.has_room(0)) << "over the limit, not even nothing fits";
    EXPECT_FALSE(b.grow_to(41));
    // A move carries the holding; the moved-from share holds nothing.
    BufferBudget::Share c(std::move(a));
    EXPECT_EQ(c.bytes(), 500u);
    EXPECT_EQ(a.bytes(), 0u);
    a.set(0);
    EXPECT_EQ(budget.used(), 540u);
    // Assigning over a share gives back what it held.
    b = std::move(c);
    EXPECT_EQ(budget.used(), 500u);
  }
  EXPECT_EQ(budget.used(), 0u);
}

TEST(BufferBudget, ALowerLimitRefusesGrowthButTakesNothingBack) {
  BufferBudget budget(1000);
  BufferBudget::Share share(budget);
  ASSERT_TRUE(share.grow_to(800));
  budget.set_limit(500);
  EXPECT_EQ(share.bytes(), 800u);
  EXPECT_FALSE(share.grow_to(801));
  EXPECT_TRUE(share.grow_to(400));
  EXPECT_TRUE(share.grow_to(500));
  EXPECT_FALSE(share.grow_to(501));
}

TEST(BufferBudget, AShareWithoutABudgetHoldsItsBytesAlone) {
  BufferBudget::Share share;
  EXPECT_TRUE(share.grow_to(std::size_t(1) << 40));
  EXPECT_EQ(share.bytes(), std::size_t(1) << 40);
}

}  // namespace
}  // namespace mooring::net
