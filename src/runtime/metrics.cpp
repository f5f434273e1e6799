#include "runtime/metrics.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <stdexcept>

namespace mooring::runtime {

Histogram::Histogram(std::vector<double> bounds)
    : bounds_(std::move(bounds)),
      buckets_(std::make_unique<std::atomic<std::uint64_t>[]>(bounds_.size() + 1)) {
  std::sort(bounds_.begin(), bounds_.end());
  for (std::size_t i = 0; i <= bounds_.size(); ++i) buckets_[i].store(0);
}

void Histogram::observe(double value) {
  const auto at = std::lower_bound(bounds_.begin(), bounds_.end(), value) - bounds_.begin();
  buckets_[static_cast<std::size_t>(at)].fetch_add(1, std::memory_order_relaxed);
  sum_.fetch_add(value, std::memory_order_relaxed);
  count_.fetch_add(1, std::memory_order_relaxed);
}

Histogram::Snapshot Histogram::snapshot() const {
  Snapshot out;
  std::uint64_t running = 0;
  for (std::size_t i = 0; i <= bounds_.size(); ++i) {
    running += buckets_[i].load(std::memory_order_relaxed);
    out.cumulative.push_back(running);
  }
  // Read after the buckets: a concurrent observe may be counted in a bucket
  // and not yet in count_; +Inf stands for the count, so the two agree.
  out.count = running;
  out.sum = sum_.load(std::memory_order_relaxed);
  return out;
}

std::vector<double> latency_buckets() {
  return {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
          0.5,    1,     2.5,    5,     10,   30,    60,   120};
}

std::optional<double> quantile(const std::vector<double>& bounds,
                               const std::vector<std::uint64_t>& cumulative, double q) {
  if (cumulative.empty() || cumulative.back() == 0) return std::nullopt;
  const double rank = q * static_cast<double>(cumulative.back());
  for (std::size_t i = 0; i < cumulative.size(); ++i) {
    if (static_cast<double>(cumulative[i]) < rank) continue;
    if (i >= bounds.size()) return bounds.empty() ? std::nullopt : std::optional(bounds.back());
    const double lower = i == 0 ? 0 : bounds[i - 1];
    const double below = i == 0 ? 0 : static_cast<double>(cumulative[i - 1]);
    const double in_bucket = static_cast<double>(cumulative[i]) - below;
    const double fraction = in_bucket > 0 ? (rank - below) / in_bucket : 1;
    return lower + (bounds[i] - lower) * fraction;
  }
  return bounds.empty() ? std::nullopt : std::optional(bounds.back());
}

namespace {

std::string escape_label(std::string_view value) {
  std::string out;
  for (char c : value) {
    if (c == '\\') out += "\\\\";
    else if (c == '"') out += "\\\"";
    else if (c == '\n') out += "\\n";
    else out += c;
  }
  return out;
}

std::string escape_help(std::string_view value) {
  std::string out;
  for (char c : value) {
    if (c == '\\') out += "\\\\";
    else if (c == '\n') out += "\\n";
    else out += c;
  }
  return out;
}

std::string label_text(const Labels& labels, std::string_view extra_name = {},
                       std::string_view extra_value = {}) {
  std::string out;
  for (const auto& [name, value] : labels)
    out += fmt::format("{}{}=\"{}\"", out.empty() ? "" : ",", name, escape_label(value));
  if (!extra_name.empty())
    out += fmt::format("{}{}=\"{}\"", out.empty() ? "" : ",", extra_name, extra_value);
  return out.empty() ? out : "{" + out + "}";
}

std::string number(double value) {
  if (std::isinf(value)) return value > 0 ? "+Inf" : "-Inf";
  if (std::isnan(value)) return "NaN";
  if (value == std::floor(value) && std::fabs(value) < 1e15) return fmt::format("{:.0f}", value);
  return fmt::format("{}", value);
}

bool valid_name(std::string_view name) {
  if (name.empty()) return false;
  for (std::size_t i = 0; i < name.size(); ++i) {
    const char c = name[i];
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':' ||
                    (i > 0 && c >= '0' && c <= '9');
    if (!ok) return false;
  }
  return true;
}

}  // namespace

MetricsRegistry::Family& MetricsRegistry::family(std::string_view name, std::string_view help,
                                                 Type type) {
  if (!valid_name(name)) throw std::invalid_argument(fmt::format("bad metric name {}", name));
  auto it = families_.find(name);
  if (it == families_.end())
    it = families_.emplace(std::string(name), Family{std::string(help), type, {}}).first;
  if (it->second.type != type)
    throw std::invalid_argument(fmt::format("metric {} registered with two types", name));
  return it->second;
}

MetricsRegistry::Series* MetricsRegistry::find(Family& family, const Labels& labels) {
  for (auto& series : family.series)
    if (series.labels == labels) return &series;
  return nullptr;
}

Counter& MetricsRegistry::counter(std::string_view name, std::string_view help, Labels labels) {
  std::lock_guard lock(mutex_);
  auto& f = family(name, help, Type::counter);
  if (auto* series = find(f, labels)) return *series->counter;
  auto& counter = counters_.emplace_back();
  f.series.push_back(Series{std::move(labels), &counter, nullptr, nullptr});
  return counter;
}

Gauge& MetricsRegistry::gauge(std::string_view name, std::string_view help, Labels labels) {
  std::lock_guard lock(mutex_);
  auto& f = family(name, help, Type::gauge);
  if (auto* series = find(f, labels)) return *series->gauge;
  auto& gauge = gauges_.emplace_back();
  f.series.push_back(Series{std::move(labels), nullptr, &gauge, nullptr});
  return gauge;
}

Histogram& MetricsRegistry::histogram(std::string_view name, std::string_view help,
                                      std::vector<double> bounds, Labels labels) {
  std::lock_guard lock(mutex_);
  auto& f = family(name, help, Type::histogram);
  if (auto* series = find(f, labels)) return *series->histogram;
  auto& histogram = histograms_.emplace_back(std::move(bounds));
  f.series.push_back(Series{std::move(labels), nullptr, nullptr, &histogram});
  return histogram;
}

std::string MetricsRegistry::text() const {
  std::lock_guard lock(mutex_);
  std::string out;
  for (const auto& [name, family] : families_) {
    if (family.series.empty()) continue;
    const char* type = family.type == Type::counter     ? "counter"
                       : family.type == Type::histogram ? "histogram"
                                                        : "gauge";
    out += fmt::format("# HELP {} {}\n# TYPE {} {}\n", name, escape_help(family.help), name, type);
    for (const auto& series : family.series) {
      if (series.histogram) {
        const auto snap = series.histogram->snapshot();
        const auto& bounds = series.histogram->bounds();
        for (std::size_t i = 0; i < bounds.size(); ++i)
          out += fmt::format("{}_bucket{} {}\n", name, label_text(series.labels, "le", number(bounds[i])),
                             snap.cumulative[i]);
        out += fmt::format("{}_bucket{} {}\n", name, label_text(series.labels, "le", "+Inf"),
                           snap.count);
        out += fmt::format("{}_sum{} {}\n", name, label_text(series.labels), number(snap.sum));
        out += fmt::format("{}_count{} {}\n", name, label_text(series.labels), snap.count);
        continue;
      }
      const double value = series.counter ? series.counter->value() : series.gauge->value();
      out += fmt::format("{}{} {}\n", name, label_text(series.labels), number(value));
    }
  }
  return out;
}

MetricsRegistry& metrics() {
  static MetricsRegistry registry;
  return registry;
}

}  // namespace mooring::runtime
