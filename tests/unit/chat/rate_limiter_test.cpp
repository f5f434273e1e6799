#include "chat/rate_limiter.hpp"

#include <gtest/gtest.h>

namespace mooring::chat {
namespace {

using namespace std::chrono_literals;
const auto t0 = Clock::time_point(1000h);

TEST(RateLimiter, ABurstOfTheRateThenOneEverySixtiethOfAMinute) {
  RateLimiter limiter(60);
  for (int i = 0; i < 60; ++i) EXPECT_TRUE(limiter.try_take("alice", t0)) << i;
  EXPECT_FALSE(limiter.try_take("alice", t0));
  EXPECT_FALSE(limiter.try_take("alice", t0 + 999ms));
  EXPECT_TRUE(limiter.try_take("alice", t0 + 1s));
  EXPECT_FALSE(limiter.try_take("alice", t0 + 1s));
  // Another user has a bucket of their own.
  EXPECT_TRUE(limiter.try_take("bob", t0 + 1s));
  // A minute later the bucket is full again, and no fuller.
  for (int i = 0; i < 60; ++i) EXPECT_TRUE(limiter.try_take("alice", t0 + 10min)) << i;
  EXPECT_FALSE(limiter.try_take("alice", t0 + 10min));
}

TEST(RateLimiter, RefusedAttemptsDoNotPostponeTheNextToken) {
  RateLimiter limiter(6);  // one every 10 s
  for (int i = 0; i < 6; ++i) ASSERT_TRUE(limiter.try_take("u", t0));
  for (auto t = t0; t < t0 + 10s; t += 100ms) ASSERT_FALSE(limiter.try_take("u", t));
  EXPECT_TRUE(limiter.try_take("u", t0 + 10s));
}

TEST(RateLimiter, ZeroMeansNoLimit) {
  RateLimiter limiter(0);
  for (int i = 0; i < 10000; ++i) ASSERT_TRUE(limiter.try_take("u", t0));
  EXPECT_EQ(limiter.tracked(), 0u);
}

TEST(RateLimiter, ANewRateAppliesToBucketsAlreadyFilled) {
  RateLimiter limiter(100);
  ASSERT_TRUE(limiter.try_take("u", t0));
  limiter.set_rate(2);
  EXPECT_TRUE(limiter.try_take("u", t0));
  EXPECT_TRUE(limiter.try_take("u", t0));
  EXPECT_FALSE(limiter.try_take("u", t0));
}

// 100,000 users each sending once: memory follows the users of the last minute.
TEST(RateLimiter, UsersWhoseBucketRefilledAreForgotten) {
  RateLimiter limiter(60);
  for (int i = 0; i < 100000; ++i)
    ASSERT_TRUE(
        limiter.try_take("user-" + std::to_string(i), t0 + std::chrono::milliseconds(i * 10)));
  // Each took one token, back within a second: only the last second's users are kept.
  EXPECT_LE(limiter.tracked(), 1024u);
  // A forgotten user still has the whole burst.
  for (int i = 0; i < 60; ++i) EXPECT_TRUE(limiter.try_take("user-0", t0 + 2000s));
  EXPECT_FALSE(limiter.try_take("user-0", t0 + 2000s));
}

}  // namespace
}  // namespace mooring::chat
