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
awaitable<std::exception_ptr> capture_exception(awaitable<void> op, bool& done) {
  std::exception_ptr failure;
  try {
    co_await std::move(op);
  } catch (...) {
    failure = std::current_exception();
  }
  done = true;
  co_return failure;
}

awaitable<void> expire(asio::steady_timer& timer, const bool& done) {
  auto [ec] = co_await timer.async_wait(use_tuple);
  if (ec && !done) throw boost::system::system_error(ec);
}
}  // namespace detail

awaitable<bool> with_timeout(awaitable<void> op, Duration d) {
  using namespace asio::experimental::awaitable_operators;
  asio::steady_timer timer(co_await asio::this_coro::executor, d);
  bool done = false;
  auto outcome =
      co_await (detail::capture_exception(std::move(op), done) || detail::expire(timer, done));
  if (outcome.index() == 1) co_return false;
  if (auto failure = std::get<0>(outcome)) std::rethrow_exception(failure);
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
