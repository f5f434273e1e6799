#include "runtime/turn.hpp"

#include <vector>

namespace mooring::runtime {

namespace {

thread_local std::vector<std::shared_ptr<TurnEnd>>* put_off = nullptr;

// Runs what was put off; what that puts off in turn waits for the next turn.
bool end_turn(std::vector<std::shared_ptr<TurnEnd>>& list) {
  if (list.empty()) return false;
  auto due = std::move(list);
  list = {};
  for (auto& work : due) work->end_of_turn();
  return true;
}

}  // namespace

bool turns_here() { return put_off != nullptr; }

void at_end_of_turn(std::shared_ptr<TurnEnd> work) { put_off->push_back(std::move(work)); }

void run_in_turns(asio::io_context& io, const std::function<bool()>& done) {
  std::vector<std::shared_ptr<TurnEnd>> list;
  auto* outer = std::exchange(put_off, &list);
  struct Restore {
    std::vector<std::shared_ptr<TurnEnd>>*& slot;
    std::vector<std::shared_ptr<TurnEnd>>* previous;
    ~Restore() { slot = previous; }
  } restore{put_off, outer};
  // Counted from the end of the handler that first put something off.
  std::size_t handlers = 0;
  std::chrono::steady_clock::time_point began;
  const auto turn_goes_on = [&] {
    const auto now = std::chrono::steady_clock::now();
    if (handlers == 0) began = now;
    return handlers < max_handlers_per_turn && now - began < max_turn_time;
  };
  while (!done()) {
    if (list.empty()) {
      // Nothing put off: wait for the next handler.
      if (io.run_one() == 0) break;
      handlers = 0;
      continue;
    }
    if (turn_goes_on() && io.poll_one() > 0) {
      ++handlers;
      continue;
    }
    handlers = 0;
    end_turn(list);
  }
  end_turn(list);
}

}  // namespace mooring::runtime
