#include "runtime/duration.hpp"

#include <gtest/gtest.h>

namespace mooring::runtime {
namespace {

using namespace std::chrono_literals;

TEST(ParseDuration, AcceptsEachUnit) {
  EXPECT_EQ(parse_duration("0ms"), Duration(0));
  EXPECT_EQ(parse_duration("250ms"), 250ms);
  EXPECT_EQ(parse_duration("5s"), 5s);
  EXPECT_EQ(parse_duration("10m"), 10min);
  EXPECT_EQ(parse_duration("1h"), 1h);
  EXPECT_EQ(parse_duration("0s"), Duration(0));
  EXPECT_EQ(parse_duration("1500ms"), 1500ms);
}

TEST(ParseDuration, RejectsAnythingElse) {
  for (const char* text : {"", "soon", "5", "-1s", "+1s", "1.5s", "5 s", " 5s", "5s ", "s", "ms",
                           "5S", "5sec", "5d", "5us", "5ms5", "5hm", "0x10s", "５s"}) {
    EXPECT_EQ(parse_duration(text), std::nullopt) << '"' << text << '"';
  }
}

TEST(ParseDuration, RefusesValuesThatDoNotFitInsteadOfWrapping) {
  EXPECT_EQ(parse_duration("9223372036854775807ms"), Duration(9223372036854775807));
  EXPECT_EQ(parse_duration("9223372036854775808ms"), std::nullopt);
  EXPECT_EQ(parse_duration("9223372036854775807s"), std::nullopt);
  EXPECT_EQ(parse_duration("99999999999999999999999h"), std::nullopt);
}

TEST(FormatDuration, UsesTheLargestExactUnit) {
  EXPECT_EQ(format_duration(0ms), "0ms");
  EXPECT_EQ(format_duration(250ms), "250ms");
  EXPECT_EQ(format_duration(1500ms), "1500ms");
  EXPECT_EQ(format_duration(5000ms), "5s");
  EXPECT_EQ(format_duration(90s), "90s");
  EXPECT_EQ(format_duration(600000ms), "10m");
  EXPECT_EQ(format_duration(90min), "90m");
  EXPECT_EQ(format_duration(2h), "2h");
}

TEST(FormatDuration, RoundTripsThroughParse) {
  for (Duration d : {Duration(0), Duration(1), Duration(999), Duration(1000), Duration(61000),
                     Duration(3600000), Duration(86400000), Duration(123456789)}) {
    const auto text = format_duration(d);
    EXPECT_EQ(parse_duration(text), d) << text;
  }
}

TEST(FormatDuration, ShowsNegativeDurationsWithASign) {
  EXPECT_EQ(format_duration(-1500ms), "-1500ms");
  EXPECT_EQ(format_duration(-2s), "-2s");
  EXPECT_EQ(format_duration(Duration::min()), "-9223372036854775808ms");
}

}  // namespace
}  // namespace mooring::runtime
