#include "runtime/supervisor.hpp"

#include "runtime/time.hpp"
#include "support/wait.hpp"

#include <gtest/gtest.h>

namespace mooring::runtime {
namespace {

using namespace std::chrono_literals;

awaitable<void> sleep_long(bool* woke_cancelled) {
  const bool slept = co_await sleep_for(1h);
  *woke_cancelled = !slept;
}

awaitable<void> throw_error() {
  co_await sleep_for(1ms);
  throw std::runtime_error("broken invariant in a task");
}

// Ignores the graceful stage: keeps sleeping after its first sleep is aborted.
awaitable<void> stubborn(int* wake_ups) {
  for (;;) {
    co_await asio::this_coro::reset_cancellation_state(asio::enable_total_cancellation());
    ++*wake_ups;
    auto state = co_await asio::this_coro::cancellation_state;
    (void)state;
    asio::steady_timer timer(co_await asio::this_coro::executor, 1h);
    auto [ec] = co_await timer.async_wait(use_tuple);
    if (ec && (co_await asio::this_coro::cancellation_state).cancelled() ==
                  asio::cancellation_type::terminal)
      co_return;
  }
}

TEST(Supervisor, CancelReachesASleepingTaskAtOnce) {
  asio::io_context io;
  Supervisor supervisor(io.get_executor());
  bool woke_cancelled = false;
  auto id = supervisor.spawn("sleeper", "test", sleep_long(&woke_cancelled));
  io.poll();
  ASSERT_EQ(supervisor.size(), 1u);
  EXPECT_EQ(supervisor.tasks().front().name, "sleeper");
  EXPECT_EQ(supervisor.tasks().front().group, "test");

  EXPECT_TRUE(supervisor.cancel(id));
  io.run_for(10s);  // returns as soon as no work is left
  EXPECT_TRUE(woke_cancelled);
  EXPECT_EQ(supervisor.size(), 0u);
  EXPECT_EQ(supervisor.cancelled(), 1u);
  EXPECT_EQ(supervisor.failures(), 0u);
}

TEST(Supervisor, AThrowingTaskIsCountedAndTheLoopLives) {
  asio::io_context io;
  Supervisor supervisor(io.get_executor());
  bool woke = false;
  supervisor.spawn("thrower", "test", throw_error());
  auto sleeper = supervisor.spawn("sleeper", "test", sleep_long(&woke));
  test::poll_until([&] { io.poll_one(); return supervisor.failures() == 1; }, 10s, 0ms);
  EXPECT_EQ(supervisor.failures(), 1u);
  ASSERT_EQ(supervisor.size(), 1u);  // the other task is untouched
  EXPECT_EQ(supervisor.tasks().front().id, sleeper);
  supervisor.cancel_all();
  io.run_for(10s);
  EXPECT_EQ(supervisor.size(), 0u);
}

TEST(Supervisor, CancelGroupLeavesOtherGroupsAlone) {
  asio::io_context io;
  Supervisor supervisor(io.get_executor());
  bool a = false, b = false, c = false;
  supervisor.spawn("a", "connections", sleep_long(&a));
  supervisor.spawn("b", "connections", sleep_long(&b));
  supervisor.spawn("c", "listeners", sleep_long(&c));
  io.poll();
  EXPECT_EQ(supervisor.cancel_group("connections"), 2u);
  io.poll();
  EXPECT_TRUE(a);
  EXPECT_TRUE(b);
  EXPECT_FALSE(c);
  EXPECT_EQ(supervisor.group_size("listeners"), 1u);
  supervisor.cancel_all();
  io.run_for(10s);
}

TEST(Supervisor, JoinReportsStragglersAtTheDeadline) {
  asio::io_context io;
  Supervisor supervisor(io.get_executor());
  int wake_ups = 0;
  bool quick = false;
  supervisor.spawn("stubborn", "test", stubborn(&wake_ups));
  supervisor.spawn("quick", "test", sleep_long(&quick));

  // Graceful stage: the quick task ends, the stubborn one goes back to sleep.
  auto left = test::run_on(io, [](Supervisor& s) -> awaitable<std::vector<TaskInfo>> {
    s.cancel_all(asio::cancellation_type::total);
    co_return co_await s.join(Deadline::after(50ms));
  }(supervisor));
  ASSERT_EQ(left.size(), 1u);
  EXPECT_EQ(left[0].name, "stubborn");
  EXPECT_TRUE(left[0].cancel_requested);
  EXPECT_TRUE(quick);
  EXPECT_GE(wake_ups, 2);

  // Terminal stage: nothing is left.
  auto after = test::run_on(io, [](Supervisor& s) -> awaitable<std::vector<TaskInfo>> {
    s.cancel_all(asio::cancellation_type::terminal);
    co_return co_await s.join(Deadline::after(10s));
  }(supervisor));
  EXPECT_TRUE(after.empty());
  EXPECT_EQ(supervisor.size(), 0u);
  EXPECT_EQ(supervisor.cancelled(), 2u);
}

TEST(Supervisor, JoinReturnsAsSoonAsTheLastTaskEnds) {
  asio::io_context io;
  Supervisor supervisor(io.get_executor());
  supervisor.spawn("short", "test", []() -> awaitable<void> { co_await sleep_for(1ms); }());
  auto left = test::run_on(io, [](Supervisor& s) -> awaitable<std::vector<TaskInfo>> {
    co_return co_await s.join(Deadline::after(1h));
  }(supervisor), 10s);
  EXPECT_TRUE(left.empty());
}

}  // namespace
}  // namespace mooring::runtime
