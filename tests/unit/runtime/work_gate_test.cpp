#include "runtime/work_gate.hpp"

#include <gtest/gtest.h>

#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace mooring::runtime {
namespace {

using namespace std::chrono_literals;

struct WorkGateTest : ::testing::Test {
  asio::io_context io;

  // Runs handlers until `done`, or fails after `limit`.
  void run_until(const std::function<bool()>& done, std::chrono::seconds limit = 10s) {
    const auto give_up = Clock::now() + limit;
    while (!done()) {
      ASSERT_LT(Clock::now(), give_up) << "not done within " << limit.count() << " s";
      io.run_one_for(10ms);
    }
  }

  // A wait whose pass, once granted, lands in `passes` under `name`.
  struct Waiter {
    std::vector<std::string>& granted;
    std::vector<WorkGate::Pass>& passes;
    void operator()(std::string name, WorkGate::Pass pass) const {
      granted.push_back(std::move(name));
      passes.push_back(std::move(pass));
    }
  };
  std::vector<std::string> granted;
  std::vector<WorkGate::Pass> passes;
  WorkGate::Wait wait(WorkGate& gate, std::string name) {
    return gate.wait([this, name](WorkGate::Pass pass) {
      Waiter{granted, passes}(name, std::move(pass));
    });
  }
};

TEST_F(WorkGateTest, PassesBeyondTheLimitWaitAndGoInTheOrderAsked) {
  WorkGate gate(io.get_executor(), 2, 1h);
  auto first = gate.try_enter();
  auto second = gate.try_enter();
  ASSERT_TRUE(first);
  ASSERT_TRUE(second);
  EXPECT_FALSE(gate.try_enter());
  EXPECT_EQ(gate.held(), 2u);
  auto a = wait(gate, "a");
  auto b = wait(gate, "b");
  auto c = wait(gate, "c");
  io.poll();
  EXPECT_TRUE(granted.empty());
  EXPECT_EQ(gate.waiting(), 3u);

  first.release();
  // Handed over from a handler of its own, not inside release().
  EXPECT_TRUE(granted.empty());
  io.poll();
  EXPECT_EQ(granted, (std::vector<std::string>{"a"}));
  second = WorkGate::Pass();  // a pass's end gives it back too
  io.poll();
  EXPECT_EQ(granted, (std::vector<std::string>{"a", "b"}));
  passes.front().release();
  io.poll();
  EXPECT_EQ(granted, (std::vector<std::string>{"a", "b", "c"}));
  EXPECT_EQ(gate.waiting(), 0u);
  EXPECT_EQ(gate.held(), 2u);
}

TEST_F(WorkGateTest, OneWhoAsksWhileOthersWaitWaitsBehindThemEvenWithAPassFree) {
  WorkGate gate(io.get_executor(), 1, 1h);
  auto held = gate.try_enter();
  auto a = wait(gate, "a");
  held.release();
  // The pass is free for a moment, but "a" asked first.
  EXPECT_FALSE(gate.try_enter());
  auto b = wait(gate, "b");
  io.poll();
  EXPECT_EQ(granted, (std::vector<std::string>{"a"}));
  passes.clear();
  io.poll();
  EXPECT_EQ(granted, (std::vector<std::string>{"a", "b"}));
}

TEST_F(WorkGateTest, APassCountsOnce) {
  WorkGate gate(io.get_executor(), 2, 1h);
  auto pass = gate.try_enter();
  auto moved = std::move(pass);
  EXPECT_FALSE(pass);
  pass.release();  // empty: nothing
  EXPECT_EQ(gate.held(), 1u);
  moved.release();
  moved.release();
  EXPECT_EQ(gate.held(), 0u);
  auto one = gate.try_enter();
  auto two = gate.try_enter();
  one = std::move(two);  // the pass assigned over is given back
  EXPECT_EQ(gate.held(), 1u);
}

TEST_F(WorkGateTest, AWaitThatEndsIsNeverAnsweredAndTheNextOneIs) {
  WorkGate gate(io.get_executor(), 1, 1h);
  auto held = gate.try_enter();
  auto a = wait(gate, "a");
  auto b = wait(gate, "b");
  a = WorkGate::Wait();
  EXPECT_EQ(gate.waiting(), 1u);
  held.release();
  io.poll();
  EXPECT_EQ(granted, (std::vector<std::string>{"b"}));
}

TEST_F(WorkGateTest, AWaiterThatDropsItsPassLetsTheNextOneIn) {
  WorkGate gate(io.get_executor(), 1, 1h);
  auto held = gate.try_enter();
  std::vector<std::string> order;
  auto dropping = gate.wait([&](WorkGate::Pass) { order.push_back("dropped"); });
  auto keeping = gate.wait([&](WorkGate::Pass pass) {
    order.push_back("kept");
    passes.push_back(std::move(pass));
  });
  held.release();
  io.poll();
  EXPECT_EQ(order, (std::vector<std::string>{"dropped", "kept"}));
  EXPECT_EQ(gate.held(), 1u);
}

// Work that waits longer than foreseen holds the others up at most max_hold;
// a pass that stopped counting frees nothing when given back late.
TEST_F(WorkGateTest, APassHeldPastMaxHoldStopsCountingAndTheNextWaiterGetsOne) {
  constexpr auto hold = 300ms;
  WorkGate gate(io.get_executor(), 1, hold);
  const auto before = Clock::now();  // the stuck pass counts from a moment after
  auto stuck = gate.try_enter();
  auto a = wait(gate, "a");
  run_until([&] { return !granted.empty(); });
  const auto granted_at = Clock::now();
  EXPECT_GE(granted_at - before, hold) << "granted before the stuck pass stopped counting";
  EXPECT_EQ(granted, (std::vector<std::string>{"a"}));
  stuck.release();
  const bool in_time = Clock::now() - granted_at < hold;  // the pass of "a" still counts
  if (in_time) {
    EXPECT_FALSE(gate.try_enter()) << "the late release freed a place";
  }
}

// Passes that never come back: each waiter in turn gets one as the one before
// stops counting (the timer is armed again for each), in the order asked; a
// waiter that asks again from its callback goes to the back of the line.
TEST_F(WorkGateTest, PassesThatNeverComeBackLetEachWaiterInInTurn) {
  WorkGate gate(io.get_executor(), 1, 20ms);
  auto stuck = gate.try_enter();
  std::vector<std::string> order;
  std::vector<WorkGate::Wait> waits;
  std::vector<WorkGate::Pass> kept;
  waits.push_back(gate.wait([&](WorkGate::Pass pass) {
    order.push_back("a");
    kept.push_back(std::move(pass));
    waits.push_back(gate.wait([&](WorkGate::Pass again) {
      order.push_back("a again");
      kept.push_back(std::move(again));
    }));
  }));
  waits.push_back(gate.wait([&](WorkGate::Pass pass) {
    order.push_back("b");
    kept.push_back(std::move(pass));
  }));
  waits.push_back(gate.wait([&](WorkGate::Pass pass) {
    order.push_back("c");
    kept.push_back(std::move(pass));
  }));
  run_until([&] { return order.size() == 4; });
  EXPECT_EQ(order, (std::vector<std::string>{"a", "b", "c", "a again"}));
  EXPECT_EQ(gate.waiting(), 0u);
}

TEST_F(WorkGateTest, PassesAndWaitsOutliveTheGate) {
  std::optional<WorkGate> gate(std::in_place, io.get_executor(), 1, 1h);
  auto pass = gate->try_enter();
  auto a = wait(*gate, "a");
  gate.reset();
  pass.release();
  io.poll();
  EXPECT_TRUE(granted.empty());
  a = WorkGate::Wait();
}

// A waiter whose callback throws (a bug, or memory running out) is logged;
// the pass it was handed goes back, and the waiters behind it are let in.
TEST_F(WorkGateTest, AWaiterThatThrowsGivesItsPassBackAndTheNextOneIsLetIn) {
  WorkGate gate(io.get_executor(), 1, 1h);
  auto pass = gate.try_enter();
  int thrown = 0;
  auto a = gate.wait([&](WorkGate::Pass) {
    ++thrown;
    throw std::runtime_error("the waiter failed");
  });
  auto b = wait(gate, "b");
  pass.release();
  run_until([&] { return !granted.empty(); });
  EXPECT_EQ(thrown, 1);
  EXPECT_EQ(granted, std::vector<std::string>{"b"});
  EXPECT_EQ(gate.held(), 1u);
  EXPECT_EQ(gate.waiting(), 0u);
  passes.clear();
  EXPECT_EQ(gate.held(), 0u);
}

TEST_F(WorkGateTest, ALimitOfZeroIsOne) {
  WorkGate gate(io.get_executor(), 0, 1h);
  EXPECT_EQ(gate.limit(), 1u);
  auto pass = gate.try_enter();
  EXPECT_TRUE(pass);
  EXPECT_FALSE(gate.try_enter());
}

}  // namespace
}  // namespace mooring::runtime
