#include "runtime/metrics.hpp"

#include <gtest/gtest.h>

#include <regex>
#include <set>
#include <sstream>
#include <thread>

namespace mooring::runtime {
namespace {

// The exposition format's rules, checked line by line: every sample's family
// has HELP and TYPE before it, names and labels are well formed, no series
// appears twice, and histogram buckets are cumulative up to +Inf == _count.
void expect_valid_exposition(const std::string& text) {
  static const std::regex help(R"(^# HELP ([a-zA-Z_:][a-zA-Z0-9_:]*) .*$)");
  static const std::regex type(R"(^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (counter|gauge|histogram)$)");
  static const std::regex sample(
      R"(^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\\\n]|\\.)*",?)*\})? (-?[0-9.e+]+|\+Inf|NaN)$)");
  std::set<std::string> helped, typed, series;
  std::map<std::string, std::string> types;
  std::istringstream lines(text);
  std::string line;
  double previous_bucket = -1;
  while (std::getline(lines, line)) {
    std::smatch m;
    if (std::regex_match(line, m, help)) {
      EXPECT_TRUE(helped.insert(m[1]).second) << "HELP twice: " << line;
    } else if (std::regex_match(line, m, type)) {
      EXPECT_TRUE(typed.insert(m[1]).second) << "TYPE twice: " << line;
      types[m[1]] = m[2];
      previous_bucket = -1;
    } else if (std::regex_match(line, m, sample)) {
      std::string family = m[1];
      for (const char* suffix : {"_bucket", "_sum", "_count"})
        if (!types.count(family) && family.ends_with(suffix))
          family = family.substr(0, family.size() - std::string_view(suffix).size());
      EXPECT_TRUE(types.count(family)) << "no TYPE before: " << line;
      EXPECT_TRUE(helped.count(family)) << "no HELP before: " << line;
      EXPECT_TRUE(series.insert(line.substr(0, line.rfind(' '))).second) << "twice: " << line;
      if (types[family] == "counter") {
        EXPECT_TRUE(family.ends_with("_total")) << family;
      }
      if (m[1].str().ends_with("_bucket")) {
        const double value = std::stod(line.substr(line.rfind(' ') + 1));
        EXPECT_GE(value, previous_bucket) << "buckets must be cumulative: " << line;
        previous_bucket = value;
      } else {
        previous_bucket = -1;
      }
    } else {
      ADD_FAILURE() << "not exposition format: \"" << line << "\"";
    }
  }
}

TEST(Metrics, CountersGaugesAndHistogramsInTheExpositionFormat) {
  MetricsRegistry registry;
  registry.counter("test_requests_total", "Requests.", {{"outcome", "ok"}}).inc(3);
  registry.counter("test_requests_total", "Requests.", {{"outcome", "failed \"x\"\n"}}).inc();
  // Asked again: the same series.
  registry.counter("test_requests_total", "Requests.", {{"outcome", "ok"}}).inc();
  registry.gauge("test_open", "Open things.").set(7);
  auto& latency = registry.histogram("test_latency_seconds", "Latency.", {0.1, 1});
  latency.observe(0.05);
  latency.observe(0.5);
  latency.observe(5);
  const auto text = registry.text();
  expect_valid_exposition(text);
  EXPECT_NE(text.find("test_requests_total{outcome=\"ok\"} 4\n"), std::string::npos) << text;
  EXPECT_NE(text.find("test_requests_total{outcome=\"failed \\\"x\\\"\\n\"} 1\n"), std::string::npos)
      << text;
  EXPECT_NE(text.find("test_open 7\n"), std::string::npos) << text;
  EXPECT_NE(text.find("test_latency_seconds_bucket{le=\"0.1\"} 1\n"), std::string::npos) << text;
  EXPECT_NE(text.find("test_latency_seconds_bucket{le=\"1\"} 2\n"), std::string::npos) << text;
  EXPECT_NE(text.find("test_latency_seconds_bucket{le=\"+Inf\"} 3\n"), std::string::npos) << text;
  EXPECT_NE(text.find("test_latency_seconds_sum 5.55\n"), std::string::npos) << text;
  EXPECT_NE(text.find("test_latency_seconds_count 3\n"), std::string::npos) << text;
  EXPECT_THROW(registry.gauge("test_requests_total", "x"), std::invalid_argument);
  EXPECT_THROW(registry.counter("bad name", "x"), std::invalid_argument);
}

TEST(Metrics, QuantilesAreInterpolatedWithinTheirBucket) {
  const std::vector<double> bounds{0.01, 0.1, 1};
  EXPECT_EQ(quantile(bounds, {0, 0, 0, 0}, 0.5), std::nullopt);
  // 100 observations: 50 up to 10 ms, 40 more up to 100 ms, 10 more up to 1 s.
  const std::vector<std::uint64_t> cumulative{50, 90, 100, 100};
  EXPECT_DOUBLE_EQ(*quantile(bounds, cumulative, 0.5), 0.01);
  EXPECT_NEAR(*quantile(bounds, cumulative, 0.7), 0.055, 1e-9);
  EXPECT_NEAR(*quantile(bounds, cumulative, 0.99), 0.91, 1e-9);
  // Beyond the last bound: the last bound.
  EXPECT_DOUBLE_EQ(*quantile(bounds, {0, 0, 0, 5}, 0.5), 1);
}

TEST(Metrics, UpdatesFromTwoThreadsAreAllCounted) {
  MetricsRegistry registry;
  auto& counter = registry.counter("test_events_total", "Events.");
  auto& histogram = registry.histogram("test_size", "Sizes.", {10});
  auto work = [&] {
    for (int i = 0; i < 100000; ++i) {
      counter.inc();
      histogram.observe(i % 20);
    }
  };
  std::thread other(work);
  work();
  other.join();
  EXPECT_EQ(counter.value(), 200000);
  const auto snap = histogram.snapshot();
  EXPECT_EQ(snap.count, 200000u);
  EXPECT_EQ(snap.cumulative[0], 110000u);  // 0..10 of every 20
}

}  // namespace
}  // namespace mooring::runtime
