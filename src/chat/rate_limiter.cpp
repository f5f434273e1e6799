#include "chat/rate_limiter.hpp"

#include <algorithm>

namespace mooring::chat {

double RateLimiter::refilled(const Bucket& bucket, Clock::time_point now) const {
  const auto elapsed =
      std::chrono::duration<double>(std::max(now - bucket.updated, Clock::duration::zero()));
  const double capacity = static_cast<double>(per_minute_);
  return std::min(capacity, bucket.tokens + elapsed.count() * capacity / 60.0);
}

bool RateLimiter::try_take(std::string_view user, Clock::time_point now) {
  if (per_minute_ == 0) return true;
  auto it = buckets_.find(user);
  if (it == buckets_.end()) {
    if (buckets_.size() >= sweep_at_) forget_full_buckets(now);
    it = buckets_.emplace(std::string(user), Bucket{static_cast<double>(per_minute_), now}).first;
  }
  auto& bucket = it->second;
  bucket.tokens = refilled(bucket, now);
  bucket.updated = now;
  if (bucket.tokens < 1.0) return false;
  bucket.tokens -= 1.0;
  return true;
}

void RateLimiter::set_rate(std::size_t per_minute) {
  if (per_minute == per_minute_) return;
  per_minute_ = per_minute;
  // Nobody keeps more tokens than the new capacity allows.
  for (auto& [user, bucket] : buckets_)
    bucket.tokens = std::min(bucket.tokens, static_cast<double>(per_minute_));
}

// Amortised: runs when the map has doubled since the last sweep.
void RateLimiter::forget_full_buckets(Clock::time_point now) {
  std::erase_if(buckets_, [&](const auto& entry) {
    return refilled(entry.second, now) >= static_cast<double>(per_minute_);
  });
  sweep_at_ = std::max(min_sweep, 2 * buckets_.size());
}

}  // namespace mooring::chat
