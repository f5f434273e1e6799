// A per-user rate limit (gateway.max_messages_per_minute): a token bucket of
// `per_minute` tokens per user, refilled evenly over a minute. A user may send
// that many at once, then one every 60 s / per_minute.
//
// Promises: try_take never blocks; memory follows the users active within the
// last minute (a bucket that has filled up again is forgotten, which changes
// nothing for its user); the time is passed in, so tests need no clock.
#pragma once

#include "runtime/asio.hpp"

#include <map>
#include <string>
#include <string_view>

namespace mooring::chat {

class RateLimiter {
 public:
  // 0: no limit.
  explicit RateLimiter(std::size_t per_minute) : per_minute_(per_minute) {}

  // Takes one token of `user`'s bucket: false when it is empty (the message is refused).
  bool try_take(std::string_view user, Clock::time_point now);

  // A new rate applies to every bucket from now on.
  void set_rate(std::size_t per_minute);

  // Users with a bucket that is not full.
  std::size_t tracked() const { return buckets_.size(); }

 private:
  struct Bucket {
    double tokens = 0;
    Clock::time_point updated;
  };

  double refilled(const Bucket& bucket, Clock::time_point now) const;
  void forget_full_buckets(Clock::time_point now);

  std::size_t per_minute_;
  std::map<std::string, Bucket, std::less<>> buckets_;
  std::size_t sweep_at_ = min_sweep;
  static constexpr std::size_t min_sweep = 1024;
};

}  // namespace mooring::chat
