#include "runtime/turn.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <optional>
#include <vector>

namespace mooring::runtime {
namespace {

using namespace std::chrono_literals;

// Put-off work that notes how many handlers had run when its turn ended.
struct Noted : TurnEnd {
  explicit Noted(const std::size_t& handlers) : handlers(handlers) {}
  void end_of_turn() override { ended_after = handlers; }
  const std::size_t& handlers;
  std::optional<std::size_t> ended_after;
};

// Handlers that post themselves again until put-off work has run: a load
// under which the ready handlers never run out. Each spins for `work`. After
// `give_up_after` of them it stops, so a turn that never ends fails the test
// instead of hanging it.
struct EndlessLoad {
  asio::io_context& io;
  std::chrono::steady_clock::duration work;
  std::size_t handlers = 0;
  std::size_t give_up_after = 100'000;
  std::shared_ptr<Noted> noted = std::make_shared<Noted>(handlers);

  void start() {
    asio::post(io, [this] {
      at_end_of_turn(noted);
      step();
    });
  }
  void step() {
    ++handlers;
    const auto until = std::chrono::steady_clock::now() + work;
    while (std::chrono::steady_clock::now() < until) {
    }
    if (!noted->ended_after && handlers < give_up_after) asio::post(io, [this] { step(); });
  }
};

TEST(Turns, PutOffWorkRunsOnceTheReadyHandlersHaveRun) {
  asio::io_context io;
  std::vector<int> order;
  struct Recorded : TurnEnd {
    std::vector<int>& order;
    explicit Recorded(std::vector<int>& o) : order(o) {}
    void end_of_turn() override { order.push_back(0); }
  };
  asio::post(io, [&] {
    at_end_of_turn(std::make_shared<Recorded>(order));
    order.push_back(1);
  });
  asio::post(io, [&] { order.push_back(2); });
  asio::post(io, [&] { order.push_back(3); });
  run_in_turns(io, [] { return false; });
  EXPECT_EQ(order, (std::vector<int>{1, 2, 3, 0}));
}

TEST(Turns, AThreadHasTurnsOnlyInsideTheLoopThatRunsThem) {
  EXPECT_FALSE(turns_here());
  asio::io_context io;
  bool inside = false;
  asio::post(io, [&] { inside = turns_here(); });
  run_in_turns(io, [] { return false; });
  EXPECT_TRUE(inside);
  EXPECT_FALSE(turns_here());
}

// Handlers that never run out: the turn still ends, after at most
// max_handlers_per_turn of them (fewer when they took max_turn_time first).
TEST(Turns, ALoadThatNeverLetsUpStillEndsTheTurn) {
  asio::io_context io;
  EndlessLoad load{io, std::chrono::steady_clock::duration::zero()};
  load.start();
  run_in_turns(io, [&] { return load.noted->ended_after.has_value(); });
  ASSERT_TRUE(load.noted->ended_after.has_value());
  EXPECT_LE(*load.noted->ended_after, max_handlers_per_turn + 1);
}

// Slow handlers end a turn by its time: each takes at least 1 ms, so after
// max_turn_time / 1 ms of them the time is up, whatever their count.
static_assert(max_turn_time / std::chrono::milliseconds(1) + 2 < max_handlers_per_turn,
              "the time must end the turn before the count does");
TEST(Turns, SlowHandlersEndTheTurnByItsTime) {
  asio::io_context io;
  EndlessLoad load{io, 1ms};
  load.give_up_after = 1'000;
  load.start();
  run_in_turns(io, [&] { return load.noted->ended_after.has_value(); });
  ASSERT_TRUE(load.noted->ended_after.has_value());
  const auto by_time =
      static_cast<std::size_t>(std::chrono::duration_cast<std::chrono::milliseconds>(max_turn_time)
                                   .count());
  EXPECT_LE(*load.noted->ended_after, by_time + 2);
}

}  // namespace
}  // namespace mooring::runtime
