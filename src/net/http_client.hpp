// An HTTP/1.1 client for upstream APIs: http:// and https:// (OpenSSL,
// certificate and host-name verification against the system store, SNI),
// keep-alive connections reused per origin, HTTPS_PROXY / HTTP_PROXY (CONNECT
// for https) with NO_PROXY, and a response body delivered piece by piece as
// it arrives (for server-sent events).
//
// Every operation honours cancellation of the calling coroutine: the socket of
// a cancelled request is closed at once and never reused.
#pragma once

#include "runtime/asio.hpp"
#include "runtime/duration.hpp"

#include <boost/asio/ssl/context.hpp>
#include <boost/beast/http/fields.hpp>
#include <boost/beast/http/verb.hpp>
#include <boost/system/result.hpp>

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace mooring::net {

struct ClientRequest {
  boost::beast::http::verb method = boost::beast::http::verb::get;
  std::string url;  // absolute: "https://api.example.com/v1/chat/completions"
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
};

struct ClientResponse {
  int status = 0;
  boost::beast::http::fields headers;
};

struct ClientError {
  error_code code;
  std::string message;  // "cannot connect to api.example.com:443: Connection refused"
};

struct ClientOptions {
  runtime::Duration connect_timeout = std::chrono::seconds(10);
  std::size_t max_idle_per_origin = 8;
  // Taken from HTTPS_PROXY/https_proxy, HTTP_PROXY/http_proxy, NO_PROXY/no_proxy
  // when not set here.
  std::optional<std::string> https_proxy;
  std::optional<std::string> http_proxy;
  std::optional<std::string> no_proxy;
};

class HttpClient {
 public:
  HttpClient(asio::any_io_executor executor, ClientOptions options = {});
  ~HttpClient();
  HttpClient(const HttpClient&) = delete;
  HttpClient& operator=(const HttpClient&) = delete;

  // Sends `request`; `on_head` runs once the status and headers are in,
  // `on_body` for each piece of the body as it arrives. Returns the response
  // head once the body is complete, or an error.
  using HeadSink = std::function<void(const ClientResponse&)>;
  using BodySink = std::function<void(std::string_view piece)>;
  awaitable<boost::system::result<ClientResponse, ClientError>> send(ClientRequest request,
                                                                      HeadSink on_head,
                                                                      BodySink on_body);

  // Idle connections kept for reuse, over all origins.
  // Connections opened since construction (reuse shows as fewer opens than requests).
  std::uint64_t connections_opened() const { return opened_; }

  struct Connection;

 private:
  awaitable<boost::system::result<std::unique_ptr<Connection>, ClientError>> connect(
      const struct ParsedUrl& url);

  asio::any_io_executor executor_;
  ClientOptions options_;
  std::unique_ptr<asio::ssl::context> tls_;
  std::map<std::string, std::vector<std::unique_ptr<Connection>>> idle_;
  std::uint64_t opened_ = 0;
};

// Parses a Retry-After value: delay-seconds or an HTTP date. nullopt when
// absent or unreadable.
std::optional<runtime::Duration> parse_retry_after(std::string_view value,
                                                   std::chrono::system_clock::time_point now =
                                                       std::chrono::system_clock::now());

}  // namespace mooring::net
