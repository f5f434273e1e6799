// HTTP vocabulary shared by the server and its handlers: requests with path
// parameters, responses, and the one JSON error shape every endpoint uses:
// {"error": {"code": "...", "message": "..."}}.
#pragma once

#include "runtime/asio.hpp"

#include <boost/beast/http.hpp>
#include <boost/json.hpp>

#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

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
  std::string_view bearer_token() const { return authorization("Bearer"); }
  // The credentials of "Authorization: <scheme> <credentials>" (the scheme
  // in any case), or empty.
  std::string_view authorization(std::string_view scheme) const;
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

// A request refused for a wrong token (not a missing one: a browser opening
// the panel asks without one first) on `listener` ("admin", "gateway"):
// counted in mooring_wrong_tokens_total{listener} and logged once; the next
// one more than 10 s later is logged with the count of those in between, so
// that guessing shows without flooding the log. Network thread only.
void note_wrong_token(std::string_view listener, const Request& request);

// The host of an origin ("https://chat.example:8443") or of a Host header
// ("127.0.0.1:8080", "[::1]:8080"), in lower case without its port; empty
// when `text` is neither.
std::string origin_host(std::string_view text);

// Whether `origin` is one `gateway.allowed_origins` may list: "*", or
// "http://" or "https://" and a host, with a port or not, and nothing after.
bool valid_origin(std::string_view origin);

// Why no client could ever present `token` in a header (a control or
// non-ASCII character, a space at either end), as a phrase that follows the
// token's name ("admin.token holds ..."); nothing when one can. The phrase
// never holds the token: it is a secret.
std::optional<std::string> unpresentable_token(std::string_view token);

// A browser names the page a WebSocket is opened from in the Origin header;
// other clients send none. A page of another site must not use a connection
// as the browser's user would (cross-site WebSocket hijacking), so a request
// with an Origin is admitted only when `allowed` lists the origin ("*": any),
// or when the origin's host is the host the request was sent to and is an IP
// address or localhost (the server's own pages, and a panel beside it on
// another port of that host). A name is not enough: a site can point its own
// name at 127.0.0.1 (DNS rebinding) and send it as Host and Origin both.
bool origin_admitted(const Request& request, const std::vector<std::string>& allowed);

// Whether a request is addressed (its Host) to an IP address, localhost or
// one of `names` (compared ignoring case): a site can point a name of its own
// at this machine (DNS rebinding), and its pages then reach it under that
// name. A request without a Host (HTTP/1.0: no browser) is admitted.
bool host_admitted(const HttpRequest& header, const std::vector<std::string>& names);

}  // namespace mooring::net
