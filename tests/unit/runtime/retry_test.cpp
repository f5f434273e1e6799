#include "runtime/retry.hpp"

#include "runtime/supervisor.hpp"
#include "support/wait.hpp"

#include <gtest/gtest.h>

namespace mooring::runtime {
namespace {

using namespace std::chrono_literals;

struct Failure {
  bool retryable = true;
  std::optional<Duration> retry_after;
};

RetryAdvice classify(const Failure& f) { return {f.retryable, f.retry_after}; }

using Outcome = RetryOutcome<int, Failure>;
using Result = boost::system::result<int, Failure>;

Result fail(Failure f = {}) { return Result(boost::system::in_place_error, f); }
Result ok(int v) { return Result(boost::system::in_place_value, v); }

TEST(Backoff, DelaysStayWithinTheFullJitterBounds) {
  RetryPolicy policy{.max_attempts = 10, .initial_delay = 100ms, .max_delay = 1000ms};
  for (int trial = 0; trial < 200; ++trial) {
    for (unsigned n = 1; n <= 8; ++n) {
      const auto ceiling = std::min<Duration>(1000ms, Duration(100 << (n - 1)));
      const auto d = backoff_delay(policy, n, jitter_sample());
      EXPECT_GE(d, 0ms);
      EXPECT_LE(d, ceiling) << "retry " << n;
    }
  }
  // The bounds themselves: sample 0 gives 0, a sample near 1 gives the ceiling.
  EXPECT_EQ(backoff_delay(policy, 1, 0.0), 0ms);
  EXPECT_EQ(backoff_delay(policy, 3, 0.99999), 399ms);
  EXPECT_EQ(backoff_delay(policy, 30, 0.99999), 999ms);  // capped by max_delay
}

TEST(Retry, RetriesUntilSuccessAndCountsAttempts) {
  int calls = 0;
  auto outcome = test::run_coroutine([](int& calls) -> awaitable<Outcome> {
    co_return co_await retry<int, Failure>(
        RetryPolicy{.max_attempts = 5, .initial_delay = 1ms, .max_delay = 2ms}, nullptr,
        [&calls](unsigned) -> awaitable<Result> {
          ++calls;
          co_return calls < 3 ? fail() : ok(7);
        },
        classify);
  }(calls), 10s);
  EXPECT_EQ(outcome.stop, RetryStop::succeeded);
  EXPECT_EQ(outcome.attempts, 3u);
  EXPECT_EQ(*outcome.last, 7);
  EXPECT_EQ(outcome.delays.size(), 2u);
}

TEST(Retry, StopsAtOnceOnAFailureThatIsNotRetryable) {
  auto outcome = test::run_coroutine([]() -> awaitable<Outcome> {
    co_return co_await retry<int, Failure>(
        RetryPolicy{.max_attempts = 5, .initial_delay = 1ms}, nullptr,
        [](unsigned) -> awaitable<Result> { co_return fail(Failure{false, {}}); }, classify);
  }(), 10s);
  EXPECT_EQ(outcome.stop, RetryStop::not_retryable);
  EXPECT_EQ(outcome.attempts, 1u);
}

TEST(Retry, GivesUpAfterMaxAttempts) {
  auto outcome = test::run_coroutine([]() -> awaitable<Outcome> {
    co_return co_await retry<int, Failure>(
        RetryPolicy{.max_attempts = 3, .initial_delay = 1ms, .max_delay = 1ms}, nullptr,
        [](unsigned) -> awaitable<Result> { co_return fail(); }, classify);
  }(), 10s);
  EXPECT_EQ(outcome.stop, RetryStop::attempts_exhausted);
  EXPECT_EQ(outcome.attempts, 3u);
}

TEST(Retry, HonoursTheServerGivenDelay) {
  auto outcome = test::run_coroutine([]() -> awaitable<Outcome> {
    co_return co_await retry<int, Failure>(
        RetryPolicy{.max_attempts = 2, .initial_delay = 1ms, .max_delay = 1h}, nullptr,
        [](unsigned n) -> awaitable<Result> {
          co_return n == 1 ? fail(Failure{true, Duration(30)}) : ok(1);
        },
        classify);
  }(), 10s);
  EXPECT_EQ(outcome.stop, RetryStop::succeeded);
  ASSERT_EQ(outcome.delays.size(), 1u);
  EXPECT_EQ(outcome.delays[0], 30ms);  // not the policy's own (at most 1 ms here)
}

// Retry-After: 0 on every answer: the attempts are still spread out, each
// at least the policy's first backoff step after the one before.
TEST(Retry, AServerDelayOfZeroWaitsTheFirstBackoffStep) {
  auto outcome = test::run_coroutine([]() -> awaitable<Outcome> {
    co_return co_await retry<int, Failure>(
        RetryPolicy{.max_attempts = 4, .initial_delay = 20ms, .max_delay = 1h}, nullptr,
        [](unsigned) -> awaitable<Result> { co_return fail(Failure{true, Duration::zero()}); },
        classify);
  }(), 10s);
  EXPECT_EQ(outcome.stop, RetryStop::attempts_exhausted);
  ASSERT_EQ(outcome.delays.size(), 3u);
  for (const auto delay : outcome.delays) EXPECT_EQ(delay, 20ms);
}

TEST(Retry, DoesNotSleepPastTheDeadline) {
  auto outcome = test::run_coroutine([]() -> awaitable<Outcome> {
    co_return co_await retry<int, Failure>(
        RetryPolicy{.max_attempts = 5, .initial_delay = 1h, .max_delay = 1h,
                    .deadline = Deadline::after(1s)},
        nullptr, [](unsigned) -> awaitable<Result> { co_return fail(Failure{true, 1h}); },
        classify);
  }(), 10s);
  EXPECT_EQ(outcome.stop, RetryStop::deadline);
  EXPECT_EQ(outcome.attempts, 1u);
}

TEST(Retry, NoAttemptStartsOnceShutdownHasBegun) {
  ShutdownState shutdown;
  int calls = 0;
  auto outcome = test::run_coroutine([](ShutdownState& shutdown, int& calls) -> awaitable<Outcome> {
    co_return co_await retry<int, Failure>(
        RetryPolicy{.max_attempts = 5, .initial_delay = 1ms, .max_delay = 1ms}, &shutdown,
        [&](unsigned) -> awaitable<Result> {
          ++calls;
          shutdown.begin();  // shutdown begins while the first attempt runs
          co_return fail();
        },
        classify);
  }(shutdown, calls), 10s);
  EXPECT_EQ(outcome.stop, RetryStop::shutdown);
  EXPECT_EQ(calls, 1);
}

awaitable<void> retry_forever(int* calls, RetryStop* stop, const ShutdownState* shutdown = nullptr) {
  auto outcome = co_await retry<int, Failure>(
      RetryPolicy{.max_attempts = 100, .initial_delay = 1h, .max_delay = 1h}, shutdown,
      [calls](unsigned) -> awaitable<Result> {
        ++*calls;
        co_return fail();
      },
      classify);
  *stop = outcome.stop;
}

// A retry loop whose backoff sleeps last up to an hour is interrupted during
// its first sleep by `interrupt` (given the task's id): how it stopped, once
// it has ended, and after how many attempts.
struct Interrupted {
  RetryStop stop = RetryStop::succeeded;
  int calls = 0;
};
template <typename Interrupt>
Interrupted interrupt_the_first_sleep(const ShutdownState* shutdown, Interrupt interrupt) {
  asio::io_context io;
  Supervisor supervisor(io.get_executor());
  Interrupted out;
  auto id = supervisor.spawn("retrier", "test", retry_forever(&out.calls, &out.stop, shutdown));
  io.poll();  // first attempt ran; now sleeping for up to an hour
  EXPECT_EQ(out.calls, 1);
  interrupt(supervisor, id);
  auto left = test::run_on(io, [](Supervisor& s) -> awaitable<std::vector<TaskInfo>> {
    co_return co_await s.join(Deadline::after(10s));
  }(supervisor));
  EXPECT_TRUE(left.empty());
  return out;
}

TEST(Retry, CancellationInterruptsTheBackoffSleepAndNoAttemptFollows) {
  const auto out = interrupt_the_first_sleep(
      nullptr, [](Supervisor& supervisor, TaskId id) { supervisor.cancel(id); });
  EXPECT_EQ(out.stop, RetryStop::cancelled);
  EXPECT_EQ(out.calls, 1);
}

// A backoff sleep before an attempt that shutdown will not let start ends
// when shutdown begins: a stop does not wait it out.
TEST(Retry, ShutdownEndsTheBackoffSleepAtOnce) {
  ShutdownState shutdown;
  const auto out =
      interrupt_the_first_sleep(&shutdown, [&](Supervisor&, TaskId) { shutdown.begin(); });
  EXPECT_EQ(out.stop, RetryStop::shutdown);
  EXPECT_EQ(out.calls, 1);
}

// With a shutdown state, a cancellation still ends the sleep as one.
TEST(Retry, CancellationEndsTheSleepWithAShutdownStateToo) {
  ShutdownState shutdown;
  const auto out = interrupt_the_first_sleep(
      &shutdown, [](Supervisor& supervisor, TaskId id) { supervisor.cancel(id); });
  EXPECT_EQ(out.stop, RetryStop::cancelled);
  EXPECT_EQ(out.calls, 1);
}

}  // namespace
}  // namespace mooring::runtime
