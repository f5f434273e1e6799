#include "admin/event_hub.hpp"

#include "runtime/log.hpp"

namespace mooring::admin {

namespace json = boost::json;

EventHub::~EventHub() {
  if (log_observer_) runtime::remove_log_observer(log_observer_);
}

void EventHub::capture_logs() {
  if (log_observer_) return;
  // Log lines may come from any thread (the store has its own); hand them to
  // the network thread, and drop them if the hub is gone by then.
  log_observer_ = runtime::add_log_observer(
      [executor = executor_, weak = weak_from_this()](spdlog::level::level_enum level,
                                                     std::string_view line) {
        asio::post(executor, [weak, level, text = std::string(line)] {
          if (auto hub = weak.lock()) {
            auto name = spdlog::level::to_string_view(level);
            hub->publish({{"type", "log"},
                          {"level", std::string_view(name.data(), name.size())},
                          {"line", text}});
          }
        });
      });
}

void EventHub::subscribe(const std::shared_ptr<net::WsConnection>& connection) {
  auto* key = connection.get();
  subscribers_.emplace(key, connection);
  connection->on_text = [](std::string) {};  // the stream is one-way; input is ignored
  connection->on_closed = [weak = weak_from_this(), key](const net::WsClosed&) {
    if (auto hub = weak.lock()) hub->subscribers_.erase(key);
  };
}

void EventHub::disconnect_all(const std::string& reason) {
  auto targets = subscribers_;
  for (auto& [key, weak] : targets)
    if (auto connection = weak.lock()) connection->close(boost::beast::websocket::close_code::policy_error, reason);
}

void EventHub::publish(const json::object& event) {
  if (subscribers_.empty()) return;
  const std::string text = json::serialize(event);
  // send() may close a slow subscriber, whose on_closed erases it: iterate a copy.
  auto targets = subscribers_;
  for (auto& [key, weak] : targets)
    if (auto connection = weak.lock()) connection->send(text);
}

}  // namespace mooring::admin
