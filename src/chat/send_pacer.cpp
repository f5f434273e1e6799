#include "chat/send_pacer.hpp"

#include <algorithm>

namespace mooring::chat {

// The bucket is kept as one time: when it will be full again. Each send moves
// it one interval later (from now at the earliest); a send may go while that
// time is less than `burst` intervals ahead.
SendPacer::SendPacer(Clock::duration interval, std::size_t burst)
    : interval_(interval), burst_(std::max<std::size_t>(1, burst)) {}

Clock::duration SendPacer::wait(Clock::time_point now) const {
  if (interval_ <= Clock::duration::zero()) return Clock::duration::zero();
  const auto limit = now + interval_ * static_cast<Clock::rep>(burst_);
  // After this send the bucket would be full at full_at_ + interval: it must
  // not be more than `burst` intervals ahead.
  const auto after = std::max(full_at_, now) + interval_;
  return after <= limit ? Clock::duration::zero() : after - limit;
}

void SendPacer::sent(Clock::time_point now) {
  if (interval_ <= Clock::duration::zero()) return;
  full_at_ = std::max(full_at_, now) + interval_;
}

}  // namespace mooring::chat
