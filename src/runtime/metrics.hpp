// Counters, gauges and histograms in the Prometheus text format (0.0.4), for
// the admin API's /metrics. One registry for the process; each layer declares
// the series it updates, by name and labels, once.
//
// Promises:
// - Updating a series is a few relaxed atomic operations: safe from the
//   network thread and the store thread alike, never a lock on a hot path.
// - A series is registered once; asking again for the same name and labels
//   returns the same object (references stay valid for the process's life).
// - The text is what a strict parser accepts: HELP and TYPE once per family,
//   before its samples; histogram buckets cumulative, ending in +Inf equal to
//   _count; label values escaped.
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace mooring::runtime {

using Labels = std::vector<std::pair<std::string, std::string>>;

class Counter {
 public:
  void inc(double n = 1) { value_.fetch_add(n, std::memory_order_relaxed); }
  double value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0};
};

class Gauge {
 public:
  void set(double v) { value_.store(v, std::memory_order_relaxed); }
  void add(double n) { value_.fetch_add(n, std::memory_order_relaxed); }
  double value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0};
};

class Histogram {
 public:
  // Upper bounds, ascending; +Inf is implied.
  explicit Histogram(std::vector<double> bounds);
  void observe(double value);

  struct Snapshot {
    std::vector<std::uint64_t> cumulative;  // one per bound, then +Inf
    double sum = 0;
    std::uint64_t count = 0;
  };
  Snapshot snapshot() const;
  const std::vector<double>& bounds() const { return bounds_; }

 private:
  std::vector<double> bounds_;
  std::unique_ptr<std::atomic<std::uint64_t>[]> buckets_;  // per bound, then +Inf
  std::atomic<double> sum_{0};
  std::atomic<std::uint64_t> count_{0};
};

// Latency buckets in seconds, from 0.5 ms to 2 min.
std::vector<double> latency_buckets();

// The q-quantile (0..1) of the observations counted in `cumulative` (one
// count per bound, then +Inf), interpolated within its bucket; nullopt
// without observations. Beyond the last bound, the last bound.
std::optional<double> quantile(const std::vector<double>& bounds,
                               const std::vector<std::uint64_t>& cumulative, double q);

class MetricsRegistry {
 public:
  Counter& counter(std::string_view name, std::string_view help, Labels labels = {});
  Gauge& gauge(std::string_view name, std::string_view help, Labels labels = {});
  Histogram& histogram(std::string_view name, std::string_view help, std::vector<double> bounds,
                       Labels labels = {});

  // The exposition text.
  std::string text() const;

 private:
  enum class Type { counter, gauge, histogram };
  struct Series {
    Labels labels;
    Counter* counter = nullptr;
    Gauge* gauge = nullptr;
    Histogram* histogram = nullptr;
  };
  struct Family {
    std::string help;
    Type type;
    std::vector<Series> series;
  };
  Family& family(std::string_view name, std::string_view help, Type type);
  Series* find(Family& family, const Labels& labels);

  mutable std::mutex mutex_;  // registration and text(), never updates
  std::map<std::string, Family, std::less<>> families_;
  std::deque<Counter> counters_;
  std::deque<Gauge> gauges_;
  std::deque<Histogram> histograms_;
};

// The process's registry.
MetricsRegistry& metrics();

}  // namespace mooring::runtime
