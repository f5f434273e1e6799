// HTTP vocabulary shared by the server and its handlers: requests with path
// parameters, responses, and the one JSON error shape every endpoint uses:
// {"error": {"code": "...", "message": "..."}}.
#pragma once

#include "runtime/asio.hpp"

#include <boost/beast/http.hpp>
#include <boost/json.hpp>

#include <map>
#include <string>
#include <string_view>

namespace mooring::net {

namespace beast = boost::beast;
namespace http = beast::http;
namespace json = boost::json;

using HttpRequest = http::request<http::string_body>;
using HttpResponse = http::response<http::string_body>;

struct Request {
  HttpRequest message;
  std::map<std::string, std::string, std::less<>> params;  // from the route pattern
  std::string remote;                                       // "127.0.0.1:54321"

  std::string_view path() const;   // the target without the query string
  // The value of `name` in the query string (percent-decoded), or nullopt.
  std::optional<std::string> query_param(std::string_view name) const;
  // The token of "Authorization: Bearer <token>", or empty.
  std::string_view bearer_token() const;
  // The bearer token, else the `token` query parameter (browsers cannot set
  // headers on a WebSocket), else empty.
  std::string presented_token() const;
};

HttpResponse json_response(http::status status, const json::value& body, const Request& request);
HttpResponse text_response(http::status status, std::string body, std::string_view content_type,
                           const Request& request);
HttpResponse error_response(http::status status, std::string_view code, std::string_view message,
                            unsigned version = 11, bool keep_alive = true);
HttpResponse error_response(http::status status, std::string_view code, std::string_view message,
                            const Request& request);

// Compares secrets in time that does not depend on where they differ.
bool constant_time_equal(std::string_view a, std::string_view b);

}  // namespace mooring::net
