// systemd's side of the lifecycle, without libsystemd: the notification
// protocol (one datagram per state change on $NOTIFY_SOCKET) and the sockets
// a service manager passes (LISTEN_FDS / LISTEN_PID / LISTEN_FDNAMES).
//
// Promises:
// - Without $NOTIFY_SOCKET every notification is a no-op; a notification
//   that cannot be sent is logged once and never stops the host.
// - take_passed_sockets() accepts only what it was told to expect: sockets
//   for another process, unnamed or unknown names, duplicates, and anything
//   that is not a listening stream socket are errors that say what to fix.
//   The variables are removed from the environment, so a child never
//   mistakes them for its own.
#pragma once

#include "runtime/duration.hpp"

#include <boost/system/result.hpp>

#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>

namespace mooring::runtime {

class SystemdNotifier {
 public:
  // From $NOTIFY_SOCKET (a path, or "@name" in the abstract namespace) and
  // $WATCHDOG_USEC / $WATCHDOG_PID.
  static SystemdNotifier from_environment();
  SystemdNotifier() = default;

  bool enabled() const { return !socket_path_.empty(); }

  // Sends one state ("READY=1\nSTATUS=serving"); false when it could not.
  bool notify(std::string_view state);

  void ready(std::string_view status);
  // "RELOADING=1" with the MONOTONIC_USEC that Type=notify-reload needs.
  void reloading();
  void stopping(std::string_view status);
  void status(std::string_view status);
  void watchdog() { notify("WATCHDOG=1"); }

  // Half of $WATCHDOG_USEC when the watchdog is asked of this process.
  std::optional<Duration> watchdog_interval() const { return watchdog_interval_; }

 private:
  std::string socket_path_;
  std::optional<Duration> watchdog_interval_;
  bool warned_ = false;
};

// The listening sockets passed to this process, by name. Empty when none
// were passed (LISTEN_PID unset or naming another process).
using PassedSockets = std::map<std::string, int, std::less<>>;
boost::system::result<PassedSockets, std::string> take_passed_sockets(
    std::span<const std::string_view> expected_names);

}  // namespace mooring::runtime
