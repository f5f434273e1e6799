#include "chat/send_pacer.hpp"

#include <gtest/gtest.h>

namespace mooring::chat {
namespace {

using namespace std::chrono_literals;

TEST(SendPacer, ABurstOfThreeGoesAtOnceThenOneAnInterval) {
  SendPacer pacer(1s, 3);
  const auto t0 = Clock::time_point{} + 1000s;
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(pacer.wait(t0), Clock::duration::zero()) << "send " << i;
    pacer.sent(t0);
  }
  EXPECT_EQ(pacer.wait(t0), Clock::duration(1s));
  EXPECT_EQ(pacer.wait(t0 + 400ms), Clock::duration(600ms));
  pacer.sent(t0 + 1s);
  EXPECT_EQ(pacer.wait(t0 + 1s), Clock::duration(1s));
}

TEST(SendPacer, AQuietSpellRefillsTheBurstButNoMore) {
  SendPacer pacer(1s, 3);
  const auto t0 = Clock::time_point{} + 1000s;
  for (int i = 0; i < 3; ++i) pacer.sent(t0);
  const auto later = t0 + 1h;
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(pacer.wait(later), Clock::duration::zero()) << "send " << i;
    pacer.sent(later);
  }
  EXPECT_GT(pacer.wait(later), Clock::duration::zero());
}

TEST(SendPacer, ZeroIntervalNeverWaits) {
  SendPacer pacer(0s, 3);
  const auto t0 = Clock::time_point{} + 1000s;
  for (int i = 0; i < 100; ++i) {
    EXPECT_EQ(pacer.wait(t0), Clock::duration::zero());
    pacer.sent(t0);
  }
}

}  // namespace
}  // namespace mooring::chat
