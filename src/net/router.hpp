// Maps a method and a path to a handler. Patterns are literal segments and
// `{name}` segments that capture one path segment ("/api/tasks/{id}/cancel").
// A path that no pattern matches is 404; a path that matches with another
// method is 405, with the methods it takes (for an Allow header). HEAD is
// taken wherever GET is (but for WebSocket routes): the server answers it
// as it would GET, without the body.
#pragma once

#include "net/http.hpp"
#include "net/ws_connection.hpp"

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace mooring::net {

using HttpHandler = std::function<awaitable<HttpResponse>(Request&)>;

// A WebSocket endpoint. `admit` sees the upgrade request first: nullopt admits
// it, a response refuses the upgrade with that response (401, 400...).
// `on_open` then receives the connection; it sets the connection's callbacks
// and may keep a pointer to it. Both run on the network thread.
struct WsRoute {
  std::function<std::optional<HttpResponse>(Request&)> admit;
  std::function<void(const std::shared_ptr<WsConnection>&, Request&)> on_open;
  WsOptions options;
};

class Router {
 public:
  static constexpr std::size_t default_body_limit = 64 * 1024;

  void add(http::verb method, std::string pattern, HttpHandler handler,
           std::size_t body_limit = default_body_limit);
  void add_websocket(std::string pattern, WsRoute route);

  struct Route {
    http::verb method;
    std::vector<std::string> segments;
    HttpHandler handler;            // set for HTTP routes
    std::shared_ptr<WsRoute> ws;    // set for WebSocket routes (method GET)
    std::size_t body_limit = default_body_limit;
  };

  struct Match {
    const Route* route = nullptr;  // null: see `status`
    http::status status = http::status::not_found;
    std::map<std::string, std::string, std::less<>> params;
    std::string allow;  // with a 405: the path's methods, "GET, HEAD, PUT"
  };

  Match match(http::verb method, std::string_view path) const;

  // Looked at with every request's header before any route (the upgrades
  // and the paths no route takes included): a response refuses the request
  // with it, and the connection is closed.
  using Screen = std::function<std::optional<HttpResponse>(const HttpRequest&)>;
  void set_screen(Screen screen) { screen_ = std::move(screen); }
  const Screen& screen() const { return screen_; }

 private:
  std::vector<Route> routes_;
  Screen screen_;
};

}  // namespace mooring::net
