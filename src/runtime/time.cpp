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

awaitable<bool> with_timeout(awaitable<void> op, Duration d) {
  const auto executor = co_await asio::this_coro::executor;
  asio::steady_timer timer(executor, d);
  auto [order, failure, expired] =
      co_await asio::experimental::make_parallel_group(
          asio::co_spawn(executor, std::move(op), asio::deferred),
          timer.async_wait(asio::deferred))
          .async_wait(asio::experimental::wait_for_one(), asio::use_awaitable);
  if (order[0] == 1 && !expired) co_return false;
  if (failure) std::rethrow_exception(failure);
  co_return true;
}

void Notifier::notify_all() {
  ++generation_;
  for (auto* waiter : waiters_) waiter->cancel();
}

awaitable<bool> Notifier::wait_until(Deadline deadline) {
  asio::steady_timer timer(executor_, deadline.at());
  const auto generation = generation_;
  waiters_.push_back(&timer);
  co_await timer.async_wait(use_tuple);
  waiters_.erase(std::find(waiters_.begin(), waiters_.end(), &timer));
  co_return generation_ != generation;
}

}  // namespace mooring::runtime
