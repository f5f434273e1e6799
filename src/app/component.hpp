// A component of the host: a thin adapter around a plain class (the store, the
// provider, a listener) with the lifecycle of DESIGN.md. The host builds its
// components in dependency order, starts them in that order, and stops them in
// reverse.
//
// A reload is a transaction over every component: prepare(current, next) does
// everything that can fail (bind a new port, build a new provider, check that a
// key may change while running) without changing anything anyone can see, and
// returns a Commit. Only when every component prepared does the host run the
// commits, which cannot fail. A Commit dropped without being run is the
// rollback: whatever it holds (a bound socket, a built provider) is released.
#pragma once

#include "app/config.hpp"
#include "runtime/asio.hpp"
#include "runtime/time.hpp"

#include <boost/system/result.hpp>

#include <boost/json.hpp>

#include <chrono>
#include <deque>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

namespace mooring::app {

// `degraded`: up, but its work fails (a store whose disk refuses writes); it
// goes back to `running` by itself. Readiness needs `running`.
enum class ComponentState { stopped, starting, running, degraded, stopping, failed };

const char* to_string(ComponentState state);

struct ComponentStatus {
  std::string name;
  ComponentState state = ComponentState::stopped;
  std::string last_error;
  std::optional<std::chrono::system_clock::time_point> next_retry;
  std::string listen;           // the bound address, for listeners
  std::uint64_t start_attempts = 0;
  // The latest events of this component, oldest first ("... bind failed: ...",
  // "... listening on ..."), at most max_history of them.
  std::deque<std::string> history;
  static constexpr std::size_t max_history = 16;

  void remember(std::string_view event);
  boost::json::object to_json() const;
};

std::string format_time(std::chrono::system_clock::time_point t);  // RFC 3339, UTC

// The second phase of a reload for one component; empty: nothing to change.
using Commit = std::function<void()>;
// A prepared change, or why it could not be prepared ("admin: cannot listen on
// 127.0.0.1:9000: Address already in use").
using Prepared = boost::system::result<Commit, std::string>;

class Component {
 public:
  virtual ~Component() = default;

  virtual const ComponentStatus& status() const = 0;

  // Never throws into the host: a failure leaves the component `failed` with
  // the reason (and, for a listener, retrying).
  virtual awaitable<void> start() = 0;

  // The first phase of a reload from `current` to `next` (see above).
  virtual Prepared prepare(const Config& current, const Config& next) = 0;

  // The first step of a shutdown: stop taking new work at once (a listener
  // closes its listening socket: the port is free when this returns).
  virtual void stop_accepting() {}

  // Finishes or ends the component's work by `deadline` and releases what it
  // holds; returns only when every socket of the component is closed.
  virtual awaitable<void> stop(runtime::Deadline deadline) = 0;
};

}  // namespace mooring::app
