// Time and cancellation: deadlines as values, a sleep that any cancellation
// interrupts at once, and a timeout wrapper for operations that honour cancellation.
#pragma once

#include "runtime/asio.hpp"
#include "runtime/duration.hpp"

#include <exception>
#include <optional>

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

// Runs `op` and cancels it when `d` elapses first. `op` must honour
// cancellation (every Asio/Beast operation does). nullopt means it timed out.
// An exception from `op` propagates at once: the timer is cancelled rather
// than waited for (Asio's `||` alone waits for the first *success*, which
// would turn any exception into a full timeout). Cancelled from outside, it
// ends as `op` ends then (its value, or its exception).
namespace detail {
// A struct, not a variant: Asio's `||` would flatten a variant into its own.
template <typename T>
struct Captured {
  std::optional<T> value;
  std::exception_ptr failure;
};
// `done` is set when `op` has ended, however it ended.
template <typename T>
awaitable<Captured<T>> capture_exception(awaitable<T> op, bool& done) {
  Captured<T> out;
  try {
    out.value.emplace(co_await std::move(op));
  } catch (...) {
    out.failure = std::current_exception();
  }
  done = true;
  co_return out;
}
awaitable<std::exception_ptr> capture_exception(awaitable<void> op, bool& done);
// The timer's side: ends when the time is up, and quietly once `op` has
// ended and `||` cancels it (an exception per call would cost more than the
// rest of the call). Cancelled from outside while `op` still runs, it throws,
// so that `||` waits for `op`'s own ending.
awaitable<void> expire(asio::steady_timer& timer, const bool& done);
}  // namespace detail

template <typename T>
awaitable<std::optional<T>> with_timeout(awaitable<T> op, Duration d) {
  using namespace asio::experimental::awaitable_operators;
  asio::steady_timer timer(co_await asio::this_coro::executor, d);
  bool done = false;
  auto outcome =
      co_await (detail::capture_exception(std::move(op), done) || detail::expire(timer, done));
  if (outcome.index() == 0) {
    auto finished = std::get<0>(std::move(outcome));
    if (finished.failure) std::rethrow_exception(finished.failure);
    co_return std::move(finished.value);
  }
  co_return std::nullopt;
}

// The void form: true when `op` finished in time.
awaitable<bool> with_timeout(awaitable<void> op, Duration d);

// Wakes coroutines waiting for "something changed" (a task ended, a connection
// closed). Waiters re-check their condition after each wake-up, so a notify
// that nobody waits for is harmless. One thread only.
class Notifier {
 public:
  explicit Notifier(asio::any_io_executor executor) : executor_(std::move(executor)) {}
  Notifier(const Notifier&) = delete;
  Notifier& operator=(const Notifier&) = delete;

  void notify_all();

  // True when woken by notify_all; false at the deadline or when the waiting
  // coroutine is cancelled.
  awaitable<bool> wait_until(Deadline deadline);

 private:
  asio::any_io_executor executor_;
  std::vector<asio::steady_timer*> waiters_;
  std::uint64_t generation_ = 0;
};

}  // namespace mooring::runtime
