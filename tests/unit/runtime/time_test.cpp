#include "runtime/time.hpp"

#include "support/wait.hpp"

#include <gtest/gtest.h>

namespace mooring::runtime {
namespace {

using namespace std::chrono_literals;

TEST(Time, WithTimeoutCancelsAnOperationThatDoesNotFinish) {
  auto finished = test::run_coroutine([]() -> awaitable<bool> {
    co_return co_await with_timeout(
        []() -> awaitable<void> {
          Notifier never(co_await asio::this_coro::executor);
          co_await never.wait_until(Deadline::never());
        }(),
        20ms);
  }(), 10s);
  EXPECT_FALSE(finished);
}

TEST(Time, WithTimeoutPassesTheResultThrough) {
  auto value = test::run_coroutine([]() -> awaitable<std::optional<int>> {
    co_return co_await with_timeout([]() -> awaitable<int> { co_return 42; }(), 1h);
  }(), 10s);
  ASSERT_TRUE(value.has_value());
  EXPECT_EQ(*value, 42);
}

// An operation that throws ends the wait at once with its exception, instead
// of leaving the caller to wait for the whole timeout.
TEST(Time, WithTimeoutPropagatesAnExceptionAtOnce) {
  const auto started = Clock::now();
  EXPECT_THROW(test::run_coroutine([]() -> awaitable<std::optional<int>> {
                 co_return co_await with_timeout(
                     []() -> awaitable<int> {
                       throw std::invalid_argument("malformed");
                       co_return 1;
                     }(),
                     1h);
               }(), 10s),
               std::invalid_argument);
  EXPECT_THROW(test::run_coroutine([]() -> awaitable<bool> {
                 co_return co_await with_timeout(
                     []() -> awaitable<void> {
                       throw std::invalid_argument("malformed");
                       co_return;
                     }(),
                     1h);
               }(), 10s),
               std::invalid_argument);
  EXPECT_LT(Clock::now() - started, 5s);  // the bound of a hang is 2h here
}

// An exception thrown after a wait (not at the first resumption) too.
TEST(Time, WithTimeoutPropagatesALateException) {
  const auto started = Clock::now();
  EXPECT_THROW(test::run_coroutine([]() -> awaitable<std::optional<int>> {
                 co_return co_await with_timeout(
                     []() -> awaitable<int> {
                       // Suspended and resumed once (a post, not a timed wait).
                       co_await asio::post(co_await asio::this_coro::executor, asio::use_awaitable);
                       throw std::out_of_range("late");
                       co_return 1;
                     }(),
                     1h);
               }(), 10s),
               std::out_of_range);
  EXPECT_LT(Clock::now() - started, 5s);
}

// Cancelled from outside, it ends as the operation ends: here the operation
// answers a cancellation with a value, one asynchronous step later. Neither a
// timeout nor an exception of the timer's.
TEST(Time, WithTimeoutCancelledFromOutsideEndsAsTheOperationEnds) {
  asio::io_context io;
  asio::cancellation_signal cancel;
  std::optional<std::optional<int>> result;
  std::exception_ptr failure;
  bool ended = false;
  // The result goes through a parameter, kept in the coroutine's frame: a
  // capture would live in the lambda, which is gone before the coroutine
  // resumes.
  asio::co_spawn(
      io,
      [](std::optional<std::optional<int>>* out) -> awaitable<void> {
        *out = co_await with_timeout(
            []() -> awaitable<int> {
              co_await asio::this_coro::throw_if_cancelled(false);
              asio::steady_timer never(co_await asio::this_coro::executor, 1h);
              auto [ec] = co_await never.async_wait(use_tuple);
              co_await asio::post(co_await asio::this_coro::executor, asio::use_awaitable);
              co_return ec ? -1 : 1;
            }(),
            1h);
      }(&result),
      asio::bind_cancellation_slot(cancel.slot(), [&](std::exception_ptr e) {
        failure = e;
        ended = true;
      }));
  io.poll();
  ASSERT_FALSE(ended);
  cancel.emit(asio::cancellation_type::terminal);
  io.run_for(10s);
  ASSERT_TRUE(ended);
  EXPECT_FALSE(failure) << "with_timeout threw";
  ASSERT_TRUE(result.has_value());
  ASSERT_TRUE(result->has_value()) << "reported as a timeout";
  EXPECT_EQ(**result, -1);
}

TEST(Time, DeadlineArithmetic) {
  EXPECT_TRUE(Deadline::after(0ms).passed());
  EXPECT_FALSE(Deadline::never().passed());
  EXPECT_EQ(Deadline::never().remaining(), Duration::max());
  EXPECT_EQ(Deadline::after(0ms).remaining(), Duration::zero());
  auto soon = Deadline::after(1s);
  EXPECT_EQ(soon.min(Deadline::never()).at(), soon.at());
  EXPECT_LE(soon.remaining(), Duration(1000));
}

TEST(Notifier, WakesEveryWaiterAndTimesOutOtherwise) {
  asio::io_context io;
  Notifier notifier(io.get_executor());
  int woken = 0;
  auto waiter = [](Notifier& n, int& count) -> awaitable<bool> {
    const bool woke = co_await n.wait_until(Deadline::after(1h));
    if (woke) ++count;
    co_return woke;
  };
  asio::co_spawn(io, waiter(notifier, woken), asio::detached);
  asio::co_spawn(io, waiter(notifier, woken), asio::detached);
  io.poll();
  notifier.notify_all();
  io.run_for(10s);
  EXPECT_EQ(woken, 2);

  auto timed_out = test::run_on(io, [](Notifier& n) -> awaitable<bool> {
    co_return co_await n.wait_until(Deadline::after(10ms));
  }(notifier));
  EXPECT_FALSE(timed_out);
}

// A turn handed on: notify_one wakes the waiter that began first, once, and
// the next call the next one; the others go on waiting.
TEST(Notifier, NotifyOneWakesTheLongestWaitingOnly) {
  asio::io_context io;
  Notifier notifier(io.get_executor());
  std::vector<int> woken;
  auto waiter = [](Notifier& n, std::vector<int>& order, int name) -> awaitable<void> {
    if (co_await n.wait_until(Deadline::after(1h))) order.push_back(name);
  };
  for (int name = 1; name <= 3; ++name)
    asio::co_spawn(io, waiter(notifier, woken, name), asio::detached);
  io.poll();
  notifier.notify_one();
  notifier.notify_one();
  io.poll();
  EXPECT_EQ(woken, (std::vector<int>{1, 2}));
  notifier.notify_all();
  io.run_for(10s);
  EXPECT_EQ(woken, (std::vector<int>{1, 2, 3}));
}

}  // namespace
}  // namespace mooring::runtime
