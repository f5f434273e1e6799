// Work put off to the end of the network thread's turn: once the handlers
// that are ready have run, before the thread waits for more. run_main drives
// the turns; a WebSocket's frames written during one turn leave in one write
// at its end (net::CorkedSocket), so a reply's frames made together reach
// the peer together.
//
// Under a load that never lets the ready handlers run out, a turn ends after
// max_handlers_per_turn of them or once max_turn_time has passed (checked
// before each handler), whichever comes first: put-off work waits for the
// rest of the handler that put it off, then no longer than that and one
// handler. The longer a saturated turn, the more of a chat
// round trip's frames leave in one send (at 100 users, 1.1 sends per round
// trip instead of 2.1: less of the core spent in the kernel, fewer wake-ups
// of the peer); the time bounds what a frame waits when handlers are slow.
//
// A thread no run_main drives has no turns: turns_here() is false there, and
// work that would be put off is done at once.
#pragma once

#include "runtime/asio.hpp"

#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>

namespace mooring::runtime {

class TurnEnd {
 public:
  virtual ~TurnEnd() = default;
  // Runs on the thread that put it off, at the end of the turn.
  virtual void end_of_turn() = 0;
};

inline constexpr std::size_t max_handlers_per_turn = 4096;
inline constexpr std::chrono::microseconds max_turn_time{5'000};

// Whether this thread is driven in turns.
bool turns_here();

// Puts `work` off to the end of this thread's turn (held until then).
// Requires turns_here().
void at_end_of_turn(std::shared_ptr<TurnEnd> work);

// Runs `io` on this thread in turns until `done()` or until it has no work
// left; what is put off during a turn runs at its end.
void run_in_turns(asio::io_context& io, const std::function<bool()>& done);

}  // namespace mooring::runtime
