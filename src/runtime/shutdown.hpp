// Whether the host has begun to shut down. Retry loops and the LLM layer read it
// so that once shutdown has begun no new attempt or request starts.
#pragma once

namespace mooring::runtime {

class ShutdownState {
 public:
  bool begun() const { return begun_; }
  void begin() { begun_ = true; }

 private:
  bool begun_ = false;
};

}  // namespace mooring::runtime
