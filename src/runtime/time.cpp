#include "runtime/time.hpp"

#include <algorithm>

namespace mooring::runtime {

Duration Deadline::remaining() const {
  auto now = Clock::now();
  if (now >= at_) return Duration::zero();
  if (at_ == Clock::time_point::max()) return Duration::max();
  return std::chrono::duration_cast<Duration>(at_ - now);
}

awaitable<bool> sleep_for(Duration d) {
  asio::steady_timer timer(co_await asio::this_coro::executor, d);
  auto [ec] = co_await timer.async_wait(use_tuple);
  co_return !ec;
}

namespace detail {

TimeoutRace::TimeoutRace(asio::steady_timer& timer, asio::cancellation_slot outer)
    : timer_(timer), outer_(outer), state_(std::make_shared<TimeoutState>()) {
  forward_outer();
  wait();
}

TimeoutRace::TimeoutRace(asio::steady_timer& timer, asio::cancellation_slot outer,
                         const Clock::time_point& progress, Duration idle, Clock::time_point last)
    : timer_(timer), outer_(outer), state_(std::make_shared<TimeoutState>()) {
  state_->progress = &progress;
  state_->idle = idle;
  state_->last = last;
  timer_.expires_at(std::min(progress + idle, last));
  forward_outer();
  wait();
}

void TimeoutRace::forward_outer() {
  if (outer_.is_connected())
    outer_.assign([state = state_](asio::cancellation_type type) { state->signal.emit(type); });
}

void TimeoutRace::wait() {
  timer_.async_wait([this, state = state_](const boost::system::error_code& ec) {
    if (ec || state->over) return;
    if (state->progress) {
      // Not over, so `this`, the timer and `progress` are alive.
      const auto due = std::min(*state->progress + state->idle, state->last);
      if (due > Clock::now()) {
        timer_.expires_at(due);
        wait();
        return;
      }
    }
    state->expired = true;
    state->signal.emit(asio::cancellation_type::all);
  });
}

TimeoutRace::~TimeoutRace() {
  state_->over = true;
  if (outer_.is_connected()) outer_.clear();
  timer_.cancel();
}

}  // namespace detail

awaitable<bool> with_timeout(awaitable<void> op, Duration d) {
  const auto executor = co_await asio::this_coro::executor;
  const auto outer = co_await asio::this_coro::cancellation_state;
  asio::steady_timer timer(executor, d);
  detail::TimeoutRace race(timer, outer.slot());
  auto [failure] = co_await asio::co_spawn(
      executor, std::move(op),
      asio::bind_cancellation_slot(race.slot(), asio::as_tuple(asio::use_awaitable)));
  if (race.expired()) co_return false;
  if (failure) std::rethrow_exception(failure);
  co_return true;
}

void Notifier::notify_all() {
  ++generation_;
  for (auto* waiter : waiters_) waiter->timer.cancel();
}

void Notifier::notify_one() {
  for (auto* waiter : waiters_) {
    if (waiter->woken) continue;
    waiter->woken = true;
    waiter->timer.cancel();
    return;
  }
}

awaitable<bool> Notifier::wait_until(Deadline deadline) {
  Waiter waiter{asio::steady_timer(executor_, deadline.at())};
  const auto generation = generation_;
  waiters_.push_back(&waiter);
  co_await waiter.timer.async_wait(use_tuple);
  waiters_.erase(std::find(waiters_.begin(), waiters_.end(), &waiter));
  co_return waiter.woken || generation_ != generation;
}

}  // namespace mooring::runtime
