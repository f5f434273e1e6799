// The live events stream behind WS /api/events: log lines and component state
// changes as JSON objects, fanned out to every subscriber. A subscriber that
// stops reading is cut off by its connection's send-queue limit; nothing here
// grows without bound.
#pragma once

#include "net/ws_connection.hpp"

#include <boost/json.hpp>

#include <map>
#include <memory>

namespace mooring::admin {

class EventHub : public std::enable_shared_from_this<EventHub> {
 public:
  explicit EventHub(asio::any_io_executor executor) : executor_(std::move(executor)) {}
  ~EventHub();

  // Forwards every log line from now on (from any thread) to the subscribers.
  void capture_logs();

  void subscribe(const std::shared_ptr<net::WsConnection>& connection);
  // {"type": "...", ...}; called on the network thread.
  void publish(const boost::json::object& event);
  std::size_t subscribers() const { return subscribers_.size(); }
  // Closes every subscriber with 1008 and `reason` (the admin token changed).
  void disconnect_all(const std::string& reason);

 private:
  asio::any_io_executor executor_;
  std::map<net::WsConnection*, std::weak_ptr<net::WsConnection>> subscribers_;
  int log_observer_ = 0;
};

}  // namespace mooring::admin
