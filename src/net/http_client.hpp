// An HTTP/1.1 client for upstream APIs: http:// and https:// (OpenSSL,
// certificate and host-name verification against the system store, SNI),
// keep-alive connections reused per origin, HTTPS_PROXY / HTTP_PROXY (CONNECT
// for https) with NO_PROXY, and a response body delivered piece by piece as
// it arrives (for server-sent events).
//
// Every operation honours cancellation of the calling coroutine: the socket of
// a cancelled request is closed at once and never reused.
//
// Host-name lookups go through a HostLookups, by default the one every client
// of the process shares (see below): a request waits at most
// `lookup_timeout`, and a cancellation ends the wait at once, whatever
// getaddrinfo does.
//
// Promises about what an upstream sends back:
// - interim responses (1xx other than 101) are skipped, up to
//   `max_interim_responses`; a 101 (never asked for) is an error;
// - a connection goes back to the pool only when its exchange was read to the
//   end, the response allowed keep-alive and not one byte more is pending;
//   when taken from the pool it is checked again (anything that arrived while
//   it sat idle, or the peer's close, drops it). HTTP/1.1 cannot tell an
//   unsolicited response from the answer to the next request, so a connection
//   that ever carries a surprise is never used again;
// - the read buffer never grows beyond `max_head_bytes`: a response head, a
//   chunk-size line with its extensions, or the trailers longer than that end
//   the request at once with an error;
// - the body sink may stop the read at any piece (a limit of the receiver):
//   the connection is closed then, never pooled;
// - redirects are not followed and no Accept-Encoding is sent; a response in
//   a content coding all the same (Content-Encoding: gzip...) ends the
//   request with an error that names the coding: its body is never read as
//   if it were plain.
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
  // True once the body sink has all it needs (an event stream's end seen).
  // The rest of the body is then awaited at most ClientOptions::rest_of_body
  // (read to its end, the connection can be kept); a body still not over
  // ends the read there and closes the connection, as a sink that stops does.
  std::function<bool()> sink_has_all;
};

struct ClientResponse {
  int status = 0;
  boost::beast::http::fields headers;
  // False when the body sink stopped the read before the body's end.
  bool complete = false;
};

struct ClientError {
  error_code code;
  std::string message;  // "cannot connect to api.example.com:443: Connection refused"
  // The request ended (timed out, or cancelled: by its caller's deadline too)
  // before the lookup of its host name was over; `message` names the host and
  // what to check. A caller whose own deadline ended the request can tell
  // that a slow DNS, not the upstream, took its time.
  bool lookup_unfinished = false;
};

// Looks up a host name, blocking (getaddrinfo): the endpoints to try in order,
// or why there are none. Runs on a lookup thread; must not touch the caller's
// objects unless they outlive the lookup. Not called for an IP address.
using HostLookup = std::function<boost::system::result<std::vector<asio::ip::tcp::endpoint>>(
    const std::string& host, const std::string& port)>;

// getaddrinfo for TCP, any address family.
boost::system::result<std::vector<asio::ip::tcp::endpoint>> system_lookup(const std::string& host,
                                                                          const std::string& port);

// Host-name lookups, shared by the clients that use the same HostLookups: by
// default (HostLookups::process()) every client of the process, so a client
// made anew at each reload adds no thread. getaddrinfo cannot be
// interrupted, so each lookup runs on a thread that shares only the lookup's
// state with the requests waiting for it.
// - Requests for the same host and port at the same time share one lookup
//   (one thread); each gets its result.
// - At most `max_threads` lookups run at once, waited for or abandoned; a
//   lookup beyond waits, in order, for a thread to finish.
// - A request waits at most its own timeout (for a thread, then for the
//   lookup), and its cancellation ends its wait at once; a lookup that no
//   request waits for any more runs on by itself (its thread is never
//   joined, so it holds neither a request nor the process's exit), or is
//   dropped if it has no thread yet.
class HostLookups {
 public:
  explicit HostLookups(HostLookup lookup = system_lookup, std::size_t max_threads = 8);

  // The process's: system_lookup, 8 threads at most.
  static const std::shared_ptr<HostLookups>& process();

  // The endpoints of `host`:`port` (which must outlive the call), or why
  // there are none: the lookup failed, `timeout` passed, or the calling
  // coroutine was cancelled (operation_aborted). The last two are
  // `lookup_unfinished` errors whose message says where to look.
  awaitable<boost::system::result<std::vector<asio::ip::tcp::endpoint>, ClientError>> resolve(
      const std::string& host, const std::string& port, runtime::Duration timeout);

  // Lookup threads running now (waited for or abandoned).
  std::size_t threads_running() const;
  // Requests waiting for a lookup now (or for a thread to run it).
  std::size_t waiting() const;

  struct Lookup;
  struct Shared;

 private:
  std::shared_ptr<Shared> shared_;  // shared with the lookup threads, which may outlive this
};

struct ClientOptions {
  runtime::Duration connect_timeout = std::chrono::seconds(10);
  // Looking up the upstream's (or the proxy's) host name: at most this long,
  // waiting for a thread included.
  runtime::Duration lookup_timeout = std::chrono::seconds(10);
  // Where lookups run; empty: HostLookups::process(). Tests put one with a
  // slow lookup here.
  std::shared_ptr<HostLookups> lookups;
  std::size_t max_idle_per_origin = 8;
  // The largest response head, chunk-size line (with its extensions) or
  // trailer section accepted; the per-connection read buffer is capped there.
  std::size_t max_head_bytes = 16 * 1024;
  // Interim (1xx) responses skipped before the final one; more is an error.
  unsigned max_interim_responses = 8;
  // How long the end of a body is awaited once the sink has all it needs.
  runtime::Duration rest_of_body = std::chrono::seconds(1);
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

  // Sends `request`; `on_head` runs once the final status and headers are in,
  // `on_body` for each piece of the body as it arrives, and returns false to
  // stop reading (the connection is then closed). Returns the response head
  // once the body is complete or the sink stopped it (`complete` tells which),
  // or an error.
  using HeadSink = std::function<void(const ClientResponse&)>;
  using BodySink = std::function<bool(std::string_view piece)>;
  awaitable<boost::system::result<ClientResponse, ClientError>> send(ClientRequest request,
                                                                      HeadSink on_head,
                                                                      BodySink on_body);

  // Connections opened since construction (reuse shows as fewer opens than requests).
  std::uint64_t connections_opened() const { return opened_; }
  // Connections not reused because of a surprise: bytes left over after a
  // response, or data (or a close) that arrived while the connection was idle.
  std::uint64_t connections_dropped() const { return dropped_; }
  const HostLookups& lookups() const { return *options_.lookups; }

  struct Connection;

 private:
  awaitable<boost::system::result<std::unique_ptr<Connection>, ClientError>> connect(
      const struct ParsedUrl& url);
  awaitable<boost::system::result<std::vector<asio::ip::tcp::endpoint>, ClientError>> resolve(
      const std::string& host, const std::string& port);

  asio::any_io_executor executor_;
  ClientOptions options_;
  std::unique_ptr<asio::ssl::context> tls_;
  std::map<std::string, std::vector<std::unique_ptr<Connection>>> idle_;
  std::uint64_t opened_ = 0;
  std::uint64_t dropped_ = 0;
};

// Parses a Retry-After value: delay-seconds or an HTTP date. nullopt when
// absent or unreadable.
std::optional<runtime::Duration> parse_retry_after(std::string_view value,
                                                   std::chrono::system_clock::time_point now =
                                                       std::chrono::system_clock::now());

}  // namespace mooring::net
