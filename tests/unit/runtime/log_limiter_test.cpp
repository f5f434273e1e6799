#include "runtime/log_limiter.hpp"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace mooring::runtime {
namespace {

using namespace std::chrono_literals;
using Clock = LogLimiter::Clock;

class LogLimiterTest : public ::testing::Test {
 protected:
  LogLimiter limiter{LogLimiter::Options{.window = 10s, .max_kinds = 4},
                     [this](spdlog::level::level_enum, std::string_view line) {
                       lines.emplace_back(line);
                     }};
  std::vector<std::string> lines;
  const Clock::time_point t0 = Clock::time_point{} + 1h;
};

TEST_F(LogLimiterTest, AStormOfOneKindIsOneLineThenOneSummaryPerWindow) {
  // 62,144 refusals in 14 s: the worst case of the fault report.
  for (int i = 0; i < 62144; ++i) {
    const auto now = t0 + std::chrono::microseconds(i * 225);  // 62,144 over ~14 s
    limiter.log(spdlog::level::err, "disk full", "store: the disk is full", now);
    limiter.flush(now);
  }
  limiter.flush(t0 + 30s);
  ASSERT_EQ(lines.size(), 3u);
  EXPECT_EQ(lines[0], "store: the disk is full");
  // The first window: everything after the first line within 10 s.
  EXPECT_EQ(lines[1].rfind("store: the disk is full … ", 0), 0u) << lines[1];
  EXPECT_NE(lines[1].find(" more in the last 10 s"), std::string::npos) << lines[1];
  // Every occurrence is accounted for: logged once or counted in a summary.
  auto count_in = [](const std::string& line) {
    const auto from = line.find("… ") + std::string("… ").size();
    std::string digits;
    for (auto c : line.substr(from, line.find(' ', from) - from))
      if (c != ',') digits += c;
    return std::stoull(digits);
  };
  EXPECT_EQ(1 + count_in(lines[1]) + count_in(lines[2]), 62144u);
}

TEST_F(LogLimiterTest, TheSummaryHasTheAskedShape) {
  limiter.log(spdlog::level::err, "k", "write failed", t0);
  for (int i = 0; i < 4211; ++i) limiter.log(spdlog::level::err, "k", "write failed", t0 + 1s);
  EXPECT_EQ(limiter.pending("k"), 4211u);
  limiter.flush(t0 + 10s);
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(lines[1], "write failed … 4,211 more in the last 10 s");
  EXPECT_EQ(limiter.pending("k"), 0u);
}

TEST_F(LogLimiterTest, AQuietKindIsLoggedInFullAgain) {
  limiter.log(spdlog::level::err, "k", "first", t0);
  // No repeats in the window: no summary, and the kind is forgotten.
  EXPECT_FALSE(limiter.flush(t0 + 10s).has_value());
  limiter.log(spdlog::level::err, "k", "second", t0 + 11s);
  EXPECT_EQ(lines, (std::vector<std::string>{"first", "second"}));
}

TEST_F(LogLimiterTest, AWindowEndedWithoutFlushIsSummarisedByTheNextOccurrence) {
  limiter.log(spdlog::level::err, "k", "a", t0);
  limiter.log(spdlog::level::err, "k", "a", t0 + 1s);
  limiter.log(spdlog::level::err, "k", "a", t0 + 2s);
  limiter.log(spdlog::level::err, "k", "a", t0 + 12s);  // ends the first window
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(lines[1], "a … 2 more in the last 12 s");
  // The storm goes on: the occurrence that closed the window is counted in the next.
  EXPECT_EQ(limiter.pending("k"), 1u);
}

TEST_F(LogLimiterTest, KindsAreCountedApartAndFlushSaysWhenToComeBack) {
  limiter.log(spdlog::level::err, "full", "disk full", t0);
  limiter.log(spdlog::level::warn, "checkpoint", "checkpoint failed", t0 + 3s);
  limiter.log(spdlog::level::err, "full", "disk full", t0 + 4s);
  EXPECT_EQ(lines.size(), 2u);
  EXPECT_EQ(limiter.flush(t0 + 5s), std::optional<Clock::time_point>(t0 + 10s));
  EXPECT_EQ(limiter.pending("full"), 1u);
  EXPECT_EQ(limiter.pending("checkpoint"), 0u);
}

TEST_F(LogLimiterTest, SettleWritesThePendingSummaryAtOnce) {
  limiter.log(spdlog::level::err, "k", "refused", t0);
  limiter.log(spdlog::level::err, "k", "refused", t0 + 500ms);
  limiter.settle("k", t0 + 1500ms);
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(lines[1], "refused … 1 more in the last 1.5 s");
  limiter.log(spdlog::level::err, "k", "refused again", t0 + 2s);
  EXPECT_EQ(lines.back(), "refused again");
}

// writes_next says whether log() would write the next occurrence in full.
TEST_F(LogLimiterTest, WritesNextSaysWhetherTheNextOccurrenceIsWrittenInFull) {
  EXPECT_TRUE(limiter.writes_next("k", t0));
  limiter.log(spdlog::level::err, "k", "k failed", t0);
  EXPECT_FALSE(limiter.writes_next("k", t0 + 1s));  // in its window: counted
  limiter.log(spdlog::level::err, "k", "k failed", t0 + 1s);
  // The window ended with a repeat: summarised, and the next one counted.
  EXPECT_FALSE(limiter.writes_next("k", t0 + 11s));
  limiter.log(spdlog::level::err, "k", "k failed", t0 + 11s);
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(lines[1], "k failed … 1 more in the last 11 s");

  limiter.log(spdlog::level::err, "q", "q failed", t0);
  EXPECT_TRUE(limiter.writes_next("q", t0 + 10s));  // a window that ended with none
  limiter.log(spdlog::level::err, "q", "q failed", t0 + 10s);
  EXPECT_EQ(lines.back(), "q failed");

  // Kinds beyond the cap (4: k, q, a, and the shared bucket).
  limiter.log(spdlog::level::err, "a", "a failed", t0 + 10s);
  EXPECT_TRUE(limiter.writes_next("b", t0 + 10s));
  limiter.log(spdlog::level::err, "b", "b failed", t0 + 10s);
  EXPECT_EQ(lines.back(), "b failed");
  EXPECT_FALSE(limiter.writes_next("c", t0 + 10s));  // the shared bucket's window runs
  const auto before = lines.size();
  limiter.log(spdlog::level::err, "c", "c failed", t0 + 10s);
  EXPECT_EQ(lines.size(), before);
}

TEST_F(LogLimiterTest, KindsBeyondTheCapShareOneBucket) {
  for (int i = 0; i < 10000; ++i)
    limiter.log(spdlog::level::err, "user " + std::to_string(i), "failed", t0);
  // Four kinds, the fourth being the shared bucket: four lines, not 10,000.
  EXPECT_EQ(lines.size(), 4u);
}

TEST(GroupThousands, PutsACommaEveryThreeDigits) {
  EXPECT_EQ(group_thousands(0), "0");
  EXPECT_EQ(group_thousands(999), "999");
  EXPECT_EQ(group_thousands(4211), "4,211");
  EXPECT_EQ(group_thousands(1000000), "1,000,000");
  EXPECT_EQ(group_thousands(18446744073709551615ull), "18,446,744,073,709,551,615");
}

}  // namespace
}  // namespace mooring::runtime
