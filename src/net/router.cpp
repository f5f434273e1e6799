#include "net/router.hpp"

#include <algorithm>
#include <vector>

namespace mooring::net {
namespace {

std::vector<std::string> split_path(std::string_view path) {
  std::vector<std::string> segments;
  std::size_t start = 0;
  while (start < path.size()) {
    if (path[start] == '/') {
      ++start;
      continue;
    }
    auto end = path.find('/', start);
    if (end == std::string_view::npos) end = path.size();
    segments.emplace_back(path.substr(start, end - start));
    start = end;
  }
  return segments;
}

bool is_param(const std::string& segment) {
  return segment.size() > 2 && segment.front() == '{' && segment.back() == '}';
}

}  // namespace

void Router::add(http::verb method, std::string pattern, HttpHandler handler,
                 std::size_t body_limit) {
  routes_.push_back(Route{method, split_path(pattern), std::move(handler), nullptr, body_limit});
}

void Router::add_websocket(std::string pattern, WsRoute route) {
  routes_.push_back(Route{http::verb::get, split_path(pattern), nullptr,
                          std::make_shared<WsRoute>(std::move(route)), 0});
}

Router::Match Router::match(http::verb method, std::string_view path) const {
  const auto segments = split_path(path);
  Match result;
  const Route* get_for_head = nullptr;
  std::map<std::string, std::string, std::less<>> get_params;
  std::vector<http::verb> allowed;
  for (const auto& route : routes_) {
    if (route.segments.size() != segments.size()) continue;
    std::map<std::string, std::string, std::less<>> params;
    bool matched = true;
    for (std::size_t i = 0; i < segments.size() && matched; ++i) {
      const auto& want = route.segments[i];
      if (is_param(want)) {
        params.emplace(want.substr(1, want.size() - 2), segments[i]);
      } else {
        matched = want == segments[i];
      }
    }
    if (!matched) continue;
    if (route.method == method) {
      result.route = &route;
      result.status = http::status::ok;
      result.params = std::move(params);
      return result;
    }
    const bool serves_head = route.method == http::verb::get && !route.ws;
    if (method == http::verb::head && serves_head && !get_for_head) {
      get_for_head = &route;
      get_params = std::move(params);
    }
    allowed.push_back(route.method);
    if (serves_head) allowed.push_back(http::verb::head);
  }
  if (get_for_head) {
    result.route = get_for_head;
    result.status = http::status::ok;
    result.params = std::move(get_params);
    return result;
  }
  if (allowed.empty()) return result;
  result.status = http::status::method_not_allowed;
  std::sort(allowed.begin(), allowed.end(), [](http::verb a, http::verb b) {
    return http::to_string(a) < http::to_string(b);
  });
  allowed.erase(std::unique(allowed.begin(), allowed.end()), allowed.end());
  for (const auto verb : allowed) {
    if (!result.allow.empty()) result.allow += ", ";
    result.allow += std::string_view(http::to_string(verb));
  }
  return result;
}

}  // namespace mooring::net
