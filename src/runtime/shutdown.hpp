// Whether the host has begun to shut down. Retry loops and the LLM layer read it
// so that once shutdown has begun no new attempt or request starts, and a
// backoff sleep before an attempt that will not start ends when it begins.
// One thread (the network thread).
#pragma once

#include "runtime/asio.hpp"
#include "runtime/duration.hpp"

#include <vector>

namespace mooring::runtime {

class ShutdownState {
 public:
  bool begun() const { return begun_; }
  void begin();

  // Sleeps for `d`: true when it passed, false when the caller was
  // cancelled, or shutdown began before or during the sleep.
  awaitable<bool> sleep_for(Duration d) const;

 private:
  bool begun_ = false;
  mutable std::vector<asio::steady_timer*> sleepers_;  // the sleeps under way
};

}  // namespace mooring::runtime
