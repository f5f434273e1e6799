#include "runtime/supervisor.hpp"

#include "runtime/time.hpp"
#include "support/wait.hpp"

#include <gtest/gtest.h>

namespace mooring::runtime {
namespace {

using namespace std::chrono_literals;

// Waits for an event that never comes; only a cancellation ends it.
awaitable<void> wait_for_nothing(bool* woke_cancelled) {
  Notifier never(co_await asio::this_coro::executor);
  const bool notified = co_await never.wait_until(Deadline::never());
  *woke_cancelled = !notified;
}

// Throws once it has run asynchronously, as a task deep in its work would.
awaitable<void> throw_error() {
  co_await asio::post(co_await asio::this_coro::executor, asio::use_awaitable);
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

TEST(Supervisor, CancelReachesAWaitingTaskAtOnce) {
  asio::io_context io;
  Supervisor supervisor(io.get_executor());
  bool woke_cancelled = false;
  auto id = supervisor.spawn("waiter", "test", wait_for_nothing(&woke_cancelled));
  io.poll();
  ASSERT_EQ(supervisor.size(), 1u);
  EXPECT_EQ(supervisor.tasks().front().name, "waiter");
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
  auto waiter = supervisor.spawn("waiter", "test", wait_for_nothing(&woke));
  test::poll_until([&] { io.poll_one(); return supervisor.failures() == 1; }, 10s, 0ms);
  EXPECT_EQ(supervisor.failures(), 1u);
  ASSERT_EQ(supervisor.size(), 1u);  // the other task is untouched
  EXPECT_EQ(supervisor.tasks().front().id, waiter);
  supervisor.cancel_all();
  io.run_for(10s);
  EXPECT_EQ(supervisor.size(), 0u);
}

// A task a cancelled one starts as it ends (an error told to a chat whose
// inbox was cancelled at the stop) is cancelled as it starts, not left
// running until the stop abandons it.
TEST(Supervisor, ATaskSpawnedAfterCancelAllIsCancelledToo) {
  asio::io_context io;
  Supervisor supervisor(io.get_executor());
  bool before = false, after = false;
  supervisor.spawn("before", "test", wait_for_nothing(&before));
  io.poll();
  supervisor.cancel_all();
  supervisor.spawn("after", "test", wait_for_nothing(&after));
  io.run_for(10s);  // returns once both have ended
  EXPECT_TRUE(before);
  EXPECT_TRUE(after);
  EXPECT_EQ(supervisor.size(), 0u);
  EXPECT_EQ(supervisor.cancelled(), 2u);
}

TEST(Supervisor, CancelGroupLeavesOtherGroupsAlone) {
  asio::io_context io;
  Supervisor supervisor(io.get_executor());
  bool a = false, b = false, c = false;
  supervisor.spawn("a", "connections", wait_for_nothing(&a));
  supervisor.spawn("b", "connections", wait_for_nothing(&b));
  supervisor.spawn("c", "listeners", wait_for_nothing(&c));
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
  supervisor.spawn("quick", "test", wait_for_nothing(&quick));

  // Graceful stage: the quick task ends, the stubborn one goes back to sleep.
  // Each takes a few turns of the loop; the deadline is long enough that a
  // stalled loop does not reach it first (stubborn sleeps for an hour, so
  // the test waits exactly this long).
  auto left = test::run_on(io, [](Supervisor& s) -> awaitable<std::vector<TaskInfo>> {
    s.cancel_all(asio::cancellation_type::total);
    co_return co_await s.join(Deadline::after(1s));
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
  Notifier go(io.get_executor());
  supervisor.spawn("short", "test", [](Notifier& go) -> awaitable<void> {
    co_await go.wait_until(Deadline::never());
  }(go));
  auto left = test::run_on(io, [](Supervisor& s, Notifier& go) -> awaitable<std::vector<TaskInfo>> {
    go.notify_all();  // the task ends on its next turn; join waits for that, not for its deadline
    co_return co_await s.join(Deadline::after(1h));
  }(supervisor, go), 10s);
  EXPECT_TRUE(left.empty());
}

// An adopted task (work that runs by completion handlers) is listed, reached
// by cancellations and joined like a coroutine task.
TEST(Supervisor, AnAdoptedTaskIsListedCancelledAndJoined) {
  asio::io_context io;
  Supervisor supervisor(io.get_executor());
  std::vector<asio::cancellation_type> requests;
  AdoptedTask handle;
  handle = supervisor.adopt("gateway connection 127.0.0.1:1", "gateway.connections",
                            [&](asio::cancellation_type type) {
                              // The terminal request ends the task inside the
                              // call, as a connection cut off does; the call
                              // goes on after its entry is gone.
                              if (type == asio::cancellation_type::terminal) handle.end();
                              requests.push_back(type);
                            });
  ASSERT_TRUE(handle);
  ASSERT_EQ(supervisor.size(), 1u);
  EXPECT_EQ(supervisor.tasks().front().id, handle.id());
  EXPECT_EQ(supervisor.tasks().front().name, "gateway connection 127.0.0.1:1");
  EXPECT_EQ(supervisor.group_size("gateway.connections"), 1u);

  // Graceful: reached, not ended (it closes in its own time); join names it.
  auto left = test::run_on(io, [](Supervisor& s) -> awaitable<std::vector<TaskInfo>> {
    EXPECT_EQ(s.cancel_all(asio::cancellation_type::total), 1u);
    co_return co_await s.join(Deadline::after(200ms));
  }(supervisor));
  ASSERT_EQ(left.size(), 1u);
  EXPECT_TRUE(left[0].cancel_requested);
  ASSERT_EQ(requests.size(), 1u);
  EXPECT_EQ(requests[0], asio::cancellation_type::total);

  // Terminal: it ends inside the request; the join returns at once.
  left = test::run_on(io, [](Supervisor& s) -> awaitable<std::vector<TaskInfo>> {
    EXPECT_EQ(s.cancel_group("gateway.connections"), 1u);
    co_return co_await s.join(Deadline::after(1h));
  }(supervisor), 10s);
  EXPECT_TRUE(left.empty());
  EXPECT_EQ(requests.size(), 2u);
  EXPECT_FALSE(handle);
  EXPECT_EQ(supervisor.size(), 0u);
  EXPECT_EQ(supervisor.cancelled(), 1u);
  EXPECT_FALSE(supervisor.cancel(0));
}

TEST(Supervisor, AJoinWakesWhenAnAdoptedTaskEnds) {
  asio::io_context io;
  Supervisor supervisor(io.get_executor());
  auto handle = supervisor.adopt("work", "test", [](asio::cancellation_type) {});
  auto left = test::run_on(io, [](Supervisor& s, AdoptedTask& h) -> awaitable<std::vector<TaskInfo>> {
    // Runs once the join below waits: only end() waking it ends the wait.
    asio::post(co_await asio::this_coro::executor, [&h] { h.end(); });
    co_return co_await s.join(Deadline::after(1h));
  }(supervisor, handle), 10s);
  EXPECT_TRUE(left.empty());
  handle.end();  // a second end does nothing
  EXPECT_EQ(supervisor.size(), 0u);
}

TEST(Supervisor, AnAdoptedTaskEndsWithItsHandle) {
  asio::io_context io;
  Supervisor supervisor(io.get_executor());
  {
    auto first = supervisor.adopt("first", "test", [](asio::cancellation_type) {});
    auto second = supervisor.adopt("second", "test", [](asio::cancellation_type) {});
    ASSERT_EQ(supervisor.size(), 2u);
    const auto kept = second.id();
    first = std::move(second);  // the task `first` held ends; the other moves
    EXPECT_FALSE(second);
    ASSERT_EQ(supervisor.size(), 1u);
    EXPECT_EQ(supervisor.tasks().front().id, kept);
  }
  EXPECT_EQ(supervisor.size(), 0u);

  // A handle that outlives its supervisor (torn down with its io_context)
  // touches nothing when it ends.
  AdoptedTask orphan;
  {
    Supervisor gone(io.get_executor());
    orphan = gone.adopt("orphan", "test", [](asio::cancellation_type) {});
  }
  EXPECT_TRUE(orphan);
  orphan.end();
  EXPECT_FALSE(orphan);
}

}  // namespace
}  // namespace mooring::runtime
