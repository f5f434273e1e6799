// Retry with exponential backoff and full jitter. The caller's attempt function
// returns a result; a classifier says whether a failure is worth another try and
// whether the server named a delay (Retry-After), which then replaces the computed
// one. The backoff sleep ends at once on cancellation and when shutdown begins,
// and no attempt starts once shutdown has begun or when the next one could not
// start before the deadline.
#pragma once

#include "runtime/asio.hpp"
#include "runtime/shutdown.hpp"
#include "runtime/time.hpp"

#include <boost/system/result.hpp>

#include <functional>
#include <optional>
#include <random>
#include <vector>

namespace mooring::runtime {

struct RetryPolicy {
  unsigned max_attempts = 4;
  Duration initial_delay = Duration(500);
  Duration max_delay = Duration(20000);
  Deadline deadline = Deadline::never();  // no attempt starts after it
};

// Full jitter: the delay before retry n (n = 1 after the first failure) is
// uniform in [0, min(max_delay, initial_delay * 2^(n-1))]. `unit` is a sample
// in [0, 1).
Duration backoff_delay(const RetryPolicy& policy, unsigned retry_number, double unit);

// What a failed attempt tells the retry loop.
struct RetryAdvice {
  bool retry = false;
  std::optional<Duration> server_delay;  // Retry-After, when the server sent one
};

enum class RetryStop {
  succeeded,
  not_retryable,       // the classifier said no
  attempts_exhausted,  // max_attempts reached
  deadline,            // the next attempt could not start before the deadline
  shutdown,            // shutdown began
  cancelled,           // the caller was cancelled during a backoff sleep
};

const char* to_string(RetryStop stop);

template <typename T, typename E>
struct RetryOutcome {
  boost::system::result<T, E> last;  // the last attempt's result
  unsigned attempts = 0;
  RetryStop stop = RetryStop::succeeded;
  std::vector<Duration> delays;  // the backoff sleeps taken, in order
};

inline double jitter_sample() {
  thread_local std::mt19937_64 engine{std::random_device{}()};
  return std::uniform_real_distribution<double>(0.0, 1.0)(engine);
}

// `attempt(n)` runs attempt n (1-based). `classify(error)` returns RetryAdvice.
template <typename T, typename E, typename Attempt, typename Classify>
awaitable<RetryOutcome<T, E>> retry(RetryPolicy policy, const ShutdownState* shutdown,
                                    Attempt attempt, Classify classify) {
  RetryOutcome<T, E> outcome{boost::system::result<T, E>(boost::system::in_place_error, E{})};
  for (unsigned n = 1;; ++n) {
    outcome.attempts = n;
    outcome.last = co_await attempt(n);
    if (outcome.last.has_value()) {
      outcome.stop = RetryStop::succeeded;
      co_return outcome;
    }
    const RetryAdvice advice = classify(outcome.last.error());
    if (!advice.retry) {
      outcome.stop = RetryStop::not_retryable;
      co_return outcome;
    }
    if (n >= policy.max_attempts) {
      outcome.stop = RetryStop::attempts_exhausted;
      co_return outcome;
    }
    // The server's delay stands in for the backoff, but not below its first
    // step: a server that says "now" (Retry-After: 0) every time would
    // otherwise spend every attempt at once.
    const Duration delay = advice.server_delay
                               ? std::max(*advice.server_delay, policy.initial_delay)
                               : backoff_delay(policy, n, jitter_sample());
    if (Clock::now() + delay >= policy.deadline.at()) {
      outcome.stop = RetryStop::deadline;
      co_return outcome;
    }
    if (shutdown && shutdown->begun()) {
      outcome.stop = RetryStop::shutdown;
      co_return outcome;
    }
    outcome.delays.push_back(delay);
    // Statements, not a `?:`: GCC 12 mishandles co_await inside one.
    bool slept = false;
    if (shutdown) {
      slept = co_await shutdown->sleep_for(delay);
    } else {
      slept = co_await sleep_for(delay);
    }
    if (shutdown && shutdown->begun()) {
      outcome.stop = RetryStop::shutdown;
      co_return outcome;
    }
    if (!slept) {
      outcome.stop = RetryStop::cancelled;
      co_return outcome;
    }
  }
}

}  // namespace mooring::runtime
