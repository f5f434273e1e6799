// Time and cancellation: deadlines as values, a sleep that any cancellation
// interrupts at once, and a timeout wrapper for operations that honour cancellation.
#pragma once

#include "runtime/asio.hpp"
#include "runtime/duration.hpp"

#include <exception>
#include <memory>
#include <optional>
#include <type_traits>

namespace mooring::runtime {

// A point in steady time by which something must be done.
class Deadline {
 public:
  static Deadline after(Duration d) { return Deadline(Clock::now() + d); }
  static Deadline never() { return Deadline(Clock::time_point::max()); }
  explicit Deadline(Clock::time_point at) : at_(at) {}

  Clock::time_point at() const { return at_; }
  bool passed() const { return Clock::now() >= at_; }
  Duration remaining() const;
  // The earlier of two deadlines.
  Deadline min(Deadline other) const { return at_ <= other.at_ ? *this : other; }

 private:
  Clock::time_point at_;
};

// Sleeps for `d`. Returns true when the time elapsed, false when the sleep was
// cancelled (the caller's cancellation slot fired); never throws for that.
awaitable<bool> sleep_for(Duration d);

namespace detail {

// What a timer and the operation it bounds share: the timer's handler may run
// after the coroutine that awaited the operation has ended.
struct TimeoutState {
  asio::cancellation_signal signal;
  bool expired = false;
  // The race is over (the operation ended): a handler of a timer that had
  // already fired touches nothing.
  bool over = false;
  // An idle window (with_idle_timeout): the operation's last sign of
  // progress, and the most it may take in all.
  const Clock::time_point* progress = nullptr;
  Duration idle{};
  Clock::time_point last{};
};

// The race of an operation bound to slot() against `timer`: the timer's
// expiry and a cancellation of the awaiting coroutine (`outer`) both reach
// the operation through one signal. Its end stops the timer and takes the
// forwarding off `outer`. (An Asio parallel group does the same with a
// shared state, a signal per operation and a completion of each operation,
// the timer's included: about 13,000 instructions more per chat reply.)
class TimeoutRace {
 public:
  TimeoutRace(asio::steady_timer& timer, asio::cancellation_slot outer);
  // The idle form: the timer, due at min(progress + idle, last), is set
  // again when it finds that progress moved since.
  TimeoutRace(asio::steady_timer& timer, asio::cancellation_slot outer,
              const Clock::time_point& progress, Duration idle, Clock::time_point last);
  ~TimeoutRace();
  TimeoutRace(const TimeoutRace&) = delete;
  TimeoutRace& operator=(const TimeoutRace&) = delete;

  asio::cancellation_slot slot() { return state_->signal.slot(); }
  bool expired() const { return state_->expired; }

 private:
  void forward_outer();
  void wait();

  asio::steady_timer& timer_;
  asio::cancellation_slot outer_;
  std::shared_ptr<TimeoutState> state_;
};

// `op` run bound to `race`: nullopt when the race's timer ended it (what `op`
// returned then goes to `stopped`), else what it returned or threw.
template <typename T>
awaitable<std::optional<T>> run_race(awaitable<T> op, TimeoutRace& race, std::optional<T>* stopped) {
  const auto executor = co_await asio::this_coro::executor;
  auto [failure, value] = co_await asio::co_spawn(
      executor, std::move(op),
      asio::bind_cancellation_slot(race.slot(), asio::as_tuple(asio::use_awaitable)));
  // Expired: time is up, and `op` was cancelled (or ended as it was).
  if (race.expired()) {
    if (stopped && !failure) *stopped = std::move(value);
    co_return std::nullopt;
  }
  if (failure) std::rethrow_exception(failure);
  co_return std::move(value);
}

}  // namespace detail

// Runs `op` and cancels it when `d` elapses first. `op` must honour
// cancellation (every Asio/Beast operation does). nullopt means it timed out.
// An exception from `op` propagates at once (the timer is cancelled rather
// than waited for). Cancelled from outside, it ends as `op` ends then (its
// value, or its exception). One spawn per call, for `op`; the timer's wait is
// a plain handler. Timed out, `stopped` (when given) receives what `op`
// returned once cancelled, which may say where it stood.
template <typename T>
awaitable<std::optional<T>> with_timeout(awaitable<T> op, Duration d,
                                         std::optional<T>* stopped = nullptr) {
  static_assert(std::is_default_constructible_v<T>, "co_spawn hands back a T even on failure");
  const auto executor = co_await asio::this_coro::executor;
  const auto outer = co_await asio::this_coro::cancellation_state;
  asio::steady_timer timer(executor, d);
  detail::TimeoutRace race(timer, outer.slot());
  co_return co_await detail::run_race(std::move(op), race, stopped);
}

// The void form: true when `op` finished in time.
awaitable<bool> with_timeout(awaitable<void> op, Duration d);

// As with_timeout, but `op` is cancelled once `progress` (which `op` moves
// forward as it goes, e.g. at each piece of a stream) is `idle` old, or at
// `last` whatever it does. Nothing is done per move: the timer looks at
// `progress` when it fires.
template <typename T>
awaitable<std::optional<T>> with_idle_timeout(awaitable<T> op, const Clock::time_point& progress,
                                              Duration idle, Clock::time_point last,
                                              std::optional<T>* stopped = nullptr) {
  static_assert(std::is_default_constructible_v<T>, "co_spawn hands back a T even on failure");
  const auto executor = co_await asio::this_coro::executor;
  const auto outer = co_await asio::this_coro::cancellation_state;
  asio::steady_timer timer(executor);
  detail::TimeoutRace race(timer, outer.slot(), progress, idle, last);
  co_return co_await detail::run_race(std::move(op), race, stopped);
}

// Wakes coroutines waiting for "something changed" (a task ended, a connection
// closed). Waiters re-check their condition after each wake-up, so a notify
// that nobody waits for is harmless. One thread only.
class Notifier {
 public:
  explicit Notifier(asio::any_io_executor executor) : executor_(std::move(executor)) {}
  Notifier(const Notifier&) = delete;
  Notifier& operator=(const Notifier&) = delete;

  void notify_all();
  // Wakes the coroutine that has waited longest and is not woken yet, if
  // any: a turn handed to one of many waiters, without waking them all.
  void notify_one();

  // True when woken by notify_all or notify_one; false at the deadline or
  // when the waiting coroutine is cancelled.
  awaitable<bool> wait_until(Deadline deadline);

 private:
  struct Waiter {
    asio::steady_timer timer;
    bool woken = false;
  };
  asio::any_io_executor executor_;
  std::vector<Waiter*> waiters_;  // in the order they began to wait
  std::uint64_t generation_ = 0;
};

}  // namespace mooring::runtime
