#include "runtime/signals.hpp"

#include <csignal>

#include <pthread.h>

namespace mooring::runtime {

SignalWatcher::SignalWatcher(asio::any_io_executor executor, Handlers handlers)
    : signals_(executor, SIGINT, SIGTERM, SIGHUP), handlers_(std::move(handlers)) {
  arm();
  // The handlers are installed: signals held since the start arrive now.
  release_stop_signals();
}

void SignalWatcher::close() {
  closed_ = true;
  error_code ignored;
  signals_.cancel(ignored);
}

void SignalWatcher::arm() {
  signals_.async_wait([this](error_code ec, int signal) {
    if (ec || closed_) return;
    if (signal == SIGHUP) {
      if (handlers_.reload) handlers_.reload();
    } else if (++stop_requests_ == 1) {
      if (handlers_.graceful_stop) handlers_.graceful_stop(signal);
    } else {
      if (handlers_.forced_stop) handlers_.forced_stop(signal);
    }
    arm();
  });
}

namespace {
sigset_t stop_signals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGHUP);
  return set;
}
}  // namespace

void hold_stop_signals() {
  const sigset_t set = stop_signals();
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
}

void release_stop_signals() {
  const sigset_t set = stop_signals();
  pthread_sigmask(SIG_UNBLOCK, &set, nullptr);
}

const char* signal_name(int signal) {
  switch (signal) {
    case SIGINT: return "SIGINT";
    case SIGTERM: return "SIGTERM";
    case SIGHUP: return "SIGHUP";
    default: return "signal";
  }
}

}  // namespace mooring::runtime
