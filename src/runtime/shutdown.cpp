#include "runtime/shutdown.hpp"

#include <algorithm>

namespace mooring::runtime {

void ShutdownState::begin() {
  begun_ = true;
  for (auto* sleeper : sleepers_) sleeper->cancel();
}

awaitable<bool> ShutdownState::sleep_for(Duration d) const {
  if (begun_) co_return false;
  asio::steady_timer timer(co_await asio::this_coro::executor, d);
  sleepers_.push_back(&timer);
  struct Forget {
    std::vector<asio::steady_timer*>& sleepers;
    asio::steady_timer* timer;
    ~Forget() { std::erase(sleepers, timer); }
  } forget{sleepers_, &timer};
  auto [ec] = co_await timer.async_wait(use_tuple);
  co_return !ec && !begun_;
}

}  // namespace mooring::runtime
