// A bound on how much of the host's own work runs at once. At most `limit`
// passes are out; whoever asks beyond that waits, in the order of asking,
// and gets a pass as one comes back. A pass is meant to be held while its
// holder keeps the host busy (storing a message, making a reply that waits
// for nothing) and given back as soon as the work waits for something
// outside the host: an upstream, a client that does not read.
//
// Why: a host that takes in every message at once interleaves the steps of
// hundreds of round trips, and each step finds its round trip's state gone
// from the caches; a few at a time, each round trip runs while its state is
// warm, and the rest wait unread (TCP holds them).
//
// Promises:
// - Passes go in the order they were asked for: one asked for while others
//   wait waits behind them, even when a pass is free.
// - A pass held longer than max_hold stops counting: work that waits longer
//   than foreseen (a stalled disk) holds the others up at most that long.
// - A pass counts once: its release() or its end gives it back, and later
//   ones do nothing. A wait ends with its Wait handle: nothing runs for it
//   after that.
// - A pass is handed to a waiter from a handler of its own (posted), never
//   inside the release() that freed it.
// - Passes and waits may outlive the gate: they then do nothing, and a
//   waiter is never called.
// Touched only on the thread that runs the gate's executor.
#pragma once

#include "runtime/asio.hpp"
#include "runtime/duration.hpp"

#include <boost/container/devector.hpp>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>

namespace mooring::runtime {

class WorkGate {
  struct State;

 public:
  class Pass {
   public:
    Pass() = default;
    Pass(Pass&& other) noexcept;
    Pass& operator=(Pass&& other) noexcept;
    ~Pass() { release(); }
    Pass(const Pass&) = delete;
    Pass& operator=(const Pass&) = delete;

    // Gives the pass back (once; an empty pass does nothing).
    void release();
    explicit operator bool() const { return state_ != nullptr; }

   private:
    friend class WorkGate;
    Pass(std::shared_ptr<State> state, std::uint64_t id) : state_(std::move(state)), id_(id) {}
    std::shared_ptr<State> state_;
    std::uint64_t id_ = 0;
  };

  // A place in the line of waiters; leaving it (its end) ends the wait.
  class Wait {
   public:
    Wait() = default;
    Wait(Wait&& other) noexcept;
    Wait& operator=(Wait&& other) noexcept;
    ~Wait() { leave(); }
    Wait(const Wait&) = delete;
    Wait& operator=(const Wait&) = delete;

   private:
    friend class WorkGate;
    Wait(std::weak_ptr<State> state, std::uint64_t id) : state_(std::move(state)), id_(id) {}
    void leave();
    std::weak_ptr<State> state_;
    std::uint64_t id_ = 0;
  };

  WorkGate(IoExecutor executor, std::size_t limit, Duration max_hold);
  ~WorkGate();
  WorkGate(const WorkGate&) = delete;
  WorkGate& operator=(const WorkGate&) = delete;

  // A pass now if one is free and nobody waits; an empty pass otherwise.
  Pass try_enter();
  // `granted` runs with a pass once one is free and the waits asked for
  // before this one have theirs. It runs from a posted handler, and never
  // after the Wait's end.
  [[nodiscard]] Wait wait(std::function<void(Pass)> granted);

  // Passes counting now (held, not past max_hold), and waits in line.
  std::size_t held() const;
  std::size_t waiting() const;
  std::size_t limit() const;

 private:
  void arm_timer();

  std::shared_ptr<State> state_;
  // Armed while some wait and every pass counts: for when the oldest stops.
  Timer timer_;
  bool timer_armed_ = false;
  Clock::time_point timer_due_;
};

}  // namespace mooring::runtime
