// Turns process signals into requests: the first SIGINT/SIGTERM asks for a
// graceful shutdown, any later one for the forced stage, SIGHUP for a
// configuration reload. Handlers run on the executor as ordinary callbacks;
// nothing here exits the process or stops the io_context.
#pragma once

#include "runtime/asio.hpp"

#include <functional>

namespace mooring::runtime {

class SignalWatcher {
 public:
  struct Handlers {
    std::function<void(int signal)> graceful_stop;
    std::function<void(int signal)> forced_stop;
    std::function<void()> reload;
  };

  SignalWatcher(asio::any_io_executor executor, Handlers handlers);
  SignalWatcher(const SignalWatcher&) = delete;
  SignalWatcher& operator=(const SignalWatcher&) = delete;

  // Stops listening; signals after this get their default disposition back
  // only when the watcher is destroyed.
  void close();

 private:
  void arm();

  asio::signal_set signals_;
  Handlers handlers_;
  int stop_requests_ = 0;
  bool closed_ = false;
};

const char* signal_name(int signal);

// Holds SIGINT, SIGTERM and SIGHUP pending (blocked) from the first line of
// the program until a SignalWatcher exists to take them, so a signal sent
// while mooring starts is a request like any other, not a death by the
// default action. The SignalWatcher's constructor lets them through;
// release_stop_signals() does it for commands that never make one.
void hold_stop_signals();
void release_stop_signals();

}  // namespace mooring::runtime
