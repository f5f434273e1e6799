#include "runtime/work_gate.hpp"

#include "runtime/exceptions.hpp"
#include "runtime/log.hpp"

#include <algorithm>
#include <utility>

namespace mooring::runtime {

struct WorkGate::State : std::enable_shared_from_this<State> {
  State(IoExecutor executor, std::size_t limit, Duration max_hold)
      : executor(executor), limit(std::max<std::size_t>(1, limit)), max_hold(max_hold) {}

  IoExecutor executor;
  const std::size_t limit;
  const Duration max_hold;
  WorkGate* gate = nullptr;  // null once the gate is gone
  struct Held {
    std::uint64_t id;
    Clock::time_point since;
  };
  boost::container::devector<Held> held;  // in the order granted: the oldest first
  std::map<std::uint64_t, std::function<void(Pass)>> waiters;  // in the order asked
  std::uint64_t next_id = 1;
  bool grant_posted = false;

  // Passes held past max_hold stop counting.
  void expire(Clock::time_point now) {
    while (!held.empty() && now - held.front().since >= max_hold) held.pop_front();
  }
  bool free_now() {
    expire(Clock::now());
    return held.size() < limit;
  }
  Pass grant() {
    const auto id = next_id++;
    held.push_back(Held{id, Clock::now()});
    return Pass(shared_from_this(), id);
  }
  void release(std::uint64_t id) {
    const auto it =
        std::find_if(held.begin(), held.end(), [id](const Held& h) { return h.id == id; });
    if (it == held.end()) return;  // stopped counting already
    held.erase(it);
    schedule();
  }
  // The first waiters get the passes free, from a handler of their own.
  void schedule() {
    if (!gate || waiters.empty() || grant_posted) return;
    grant_posted = true;
    asio::post(executor, [weak = weak_from_this()] {
      if (auto self = weak.lock()) self->grant_waiting();
    });
  }
  void grant_waiting() {
    grant_posted = false;
    while (gate && !waiters.empty() && free_now()) {
      auto waiter = waiters.extract(waiters.begin());
      try {
        waiter.mapped()(grant());
      } catch (...) {
        // Its pass went back as the exception left it.
        log::error("a message waiting for a work pass could not be taken in ({}); the pass goes "
                   "to the next one. This is a bug in mooring unless memory ran out: please "
                   "report it with this line",
                   describe_current_exception());
      }
    }
    if (gate && !waiters.empty()) gate->arm_timer();
  }
};

WorkGate::Pass::Pass(Pass&& other) noexcept
    : state_(std::move(other.state_)), id_(std::exchange(other.id_, 0)) {}

WorkGate::Pass& WorkGate::Pass::operator=(Pass&& other) noexcept {
  if (this != &other) {
    release();
    state_ = std::move(other.state_);
    id_ = std::exchange(other.id_, 0);
  }
  return *this;
}

void WorkGate::Pass::release() {
  if (auto state = std::move(state_)) state->release(id_);
}

WorkGate::Wait::Wait(Wait&& other) noexcept
    : state_(std::move(other.state_)), id_(std::exchange(other.id_, 0)) {}

WorkGate::Wait& WorkGate::Wait::operator=(Wait&& other) noexcept {
  if (this != &other) {
    leave();
    state_ = std::move(other.state_);
    id_ = std::exchange(other.id_, 0);
  }
  return *this;
}

void WorkGate::Wait::leave() {
  if (auto state = state_.lock()) state->waiters.erase(id_);
  state_.reset();
}

WorkGate::WorkGate(IoExecutor executor, std::size_t limit, Duration max_hold)
    : state_(std::make_shared<State>(executor, limit, max_hold)), timer_(executor) {
  state_->gate = this;
}

WorkGate::~WorkGate() {
  state_->gate = nullptr;
  state_->waiters.clear();
}

WorkGate::Pass WorkGate::try_enter() {
  if (!state_->waiters.empty() || !state_->free_now()) return {};
  return state_->grant();
}

WorkGate::Wait WorkGate::wait(std::function<void(Pass)> granted) {
  const auto id = state_->next_id++;
  state_->waiters.emplace(id, std::move(granted));
  if (state_->free_now()) {
    state_->schedule();
  } else {
    arm_timer();
  }
  return Wait(state_, id);
}

std::size_t WorkGate::held() const {
  const auto now = Clock::now();
  return static_cast<std::size_t>(std::count_if(
      state_->held.begin(), state_->held.end(),
      [&](const State::Held& h) { return now - h.since < state_->max_hold; }));
}

std::size_t WorkGate::waiting() const { return state_->waiters.size(); }
std::size_t WorkGate::limit() const { return state_->limit; }

// For when the oldest pass stops counting (the passes given back before
// then wake the waiters themselves).
void WorkGate::arm_timer() {
  if (state_->held.empty()) return;
  const auto due = state_->held.front().since + state_->max_hold;
  if (timer_armed_ && timer_due_ <= due) return;
  timer_armed_ = true;
  timer_due_ = due;
  timer_.expires_at(due);
  timer_.async_wait([this, weak = std::weak_ptr<State>(state_)](error_code ec) {
    auto state = weak.lock();
    if (!state || !state->gate) return;  // the gate is gone
    if (ec) return;  // re-armed for an earlier time
    timer_armed_ = false;
    state->grant_waiting();
  });
}

}  // namespace mooring::runtime
