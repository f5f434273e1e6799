#include "runtime/signals.hpp"

#include <csignal>

namespace mooring::runtime {

SignalWatcher::SignalWatcher(asio::any_io_executor executor, Handlers handlers)
    : signals_(executor, SIGINT, SIGTERM, SIGHUP), handlers_(std::move(handlers)) {
  arm();
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

const char* signal_name(int signal) {
  switch (signal) {
    case SIGINT: return "SIGINT";
    case SIGTERM: return "SIGTERM";
    case SIGHUP: return "SIGHUP";
    default: return "signal";
  }
}

}  // namespace mooring::runtime
