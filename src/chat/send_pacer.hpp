// Pacing of sends to one QQ group or user ([onebot] send_interval): a token
// bucket that holds `burst` sends and gains one every `interval`, so a quick
// exchange is not slowed but a busy group cannot send fast enough to get the
// account flagged or take every send from the other chats.
#pragma once

#include "runtime/time.hpp"

#include <cstddef>

namespace mooring::chat {

class SendPacer {
 public:
  explicit SendPacer(Clock::duration interval, std::size_t burst = 3);

  // How long to wait from `now` before the next send may go (zero: now).
  Clock::duration wait(Clock::time_point now) const;
  // A send went at `now`.
  void sent(Clock::time_point now);

  void set_interval(Clock::duration interval) { interval_ = interval; }

 private:
  // The time at which the bucket was (or will be) full again: `burst` sends
  // behind it at most.
  Clock::duration interval_;
  std::size_t burst_;
  Clock::time_point full_at_{};
};

}  // namespace mooring::chat
