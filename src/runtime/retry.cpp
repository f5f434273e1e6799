#include "runtime/retry.hpp"

#include <algorithm>
#include <cmath>

namespace mooring::runtime {

Duration backoff_delay(const RetryPolicy& policy, unsigned retry_number, double unit) {
  const double initial = static_cast<double>(policy.initial_delay.count());
  const double cap = static_cast<double>(policy.max_delay.count());
  // 2^(n-1) overflows double only far past any cap; clamp the exponent anyway.
  const double exponent = std::min<double>(retry_number == 0 ? 0 : retry_number - 1, 60.0);
  const double ceiling = std::min(cap, initial * std::pow(2.0, exponent));
  const double sample = std::clamp(unit, 0.0, 1.0);
  return Duration(static_cast<Duration::rep>(std::floor(ceiling * sample)));
}

const char* to_string(RetryStop stop) {
  switch (stop) {
    case RetryStop::succeeded: return "succeeded";
    case RetryStop::not_retryable: return "not retryable";
    case RetryStop::attempts_exhausted: return "attempts exhausted";
    case RetryStop::deadline: return "deadline reached";
    case RetryStop::shutdown: return "shutting down";
    case RetryStop::cancelled: return "cancelled";
  }
  return "unknown";
}

}  // namespace mooring::runtime
