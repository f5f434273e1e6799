#include "net/http_client.hpp"

#include "net/listener.hpp"
#include "runtime/time.hpp"

#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <boost/url/parse.hpp>

#include <fmt/format.h>

#include <netdb.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <deque>
#include <mutex>
#include <system_error>
#include <thread>
#include <utility>
#include <variant>

namespace mooring::net {

namespace beast = boost::beast;
namespace http = beast::http;
namespace ssl = asio::ssl;
using tcp = asio::ip::tcp;

struct ParsedUrl {
  bool tls = false;
  std::string host;
  std::string port;
  std::string target;  // path and query

  // host:port as a request names it (RFC 9112 3.2, 3.2.3): an IPv6 address
  // in brackets; the port left out where it is the scheme's, unless asked.
  std::string authority(bool with_port) const {
    std::string out = host.find(':') != std::string::npos ? "[" + host + "]" : host;
    if (with_port || port != (tls ? "443" : "80")) out += ":" + port;
    return out;
  }
};

namespace {

using Result = boost::system::result<ClientResponse, ClientError>;

ClientError make_error(error_code ec, std::string message) { return ClientError{ec, std::move(message)}; }

std::optional<ParsedUrl> parse_url(std::string_view text) {
  auto url = boost::urls::parse_absolute_uri(text);
  if (!url) return std::nullopt;
  ParsedUrl out;
  const auto scheme = url->scheme();
  if (scheme == "https") {
    out.tls = true;
  } else if (scheme != "http") {
    return std::nullopt;
  }
  out.host = std::string(url->host_address());
  if (out.host.empty()) return std::nullopt;
  out.port = url->has_port() ? std::string(url->port()) : (out.tls ? "443" : "80");
  out.target = std::string(url->encoded_path());
  if (out.target.empty()) out.target = "/";
  if (url->has_query()) out.target += "?" + std::string(url->encoded_query());
  return out;
}

// A proxy setting as curl reads it: "host:port" alone is an http:// proxy.
std::optional<ParsedUrl> parse_proxy(std::string_view setting) {
  if (setting.find("://") == std::string_view::npos)
    return parse_url("http://" + std::string(setting));
  return parse_url(setting);
}

// A proxy setting fit for a log line: its user and password, if any, left out.
std::string shown_proxy(std::string_view setting) {
  const auto scheme_end = setting.find("://");
  const auto from = scheme_end == std::string_view::npos ? 0 : scheme_end + 3;
  const auto authority_end = setting.find_first_of("/?#", from);
  const auto at = setting.substr(0, authority_end).rfind('@');
  if (at == std::string_view::npos || at < from) return std::string(setting);
  return std::string(setting.substr(0, from)) + "[credentials]" + std::string(setting.substr(at));
}

std::optional<std::string> env(const char* upper, const char* lower) {
  if (const char* v = std::getenv(upper); v && *v) return std::string(v);
  if (const char* v = std::getenv(lower); v && *v) return std::string(v);
  return std::nullopt;
}

// NO_PROXY: comma-separated host names or suffixes (".example.com"); "*" for all.
bool bypasses_proxy(const std::string& host, const std::optional<std::string>& no_proxy) {
  if (!no_proxy) return false;
  std::string_view list = *no_proxy;
  while (!list.empty()) {
    auto comma = list.find(',');
    auto entry = list.substr(0, comma);
    while (!entry.empty() && entry.front() == ' ') entry.remove_prefix(1);
    while (!entry.empty() && entry.back() == ' ') entry.remove_suffix(1);
    if (entry == "*") return true;
    if (!entry.empty()) {
      if (entry.front() == '.') entry.remove_prefix(1);
      if (host == entry ||
          (host.size() > entry.size() && host.ends_with(entry) &&
           host[host.size() - entry.size() - 1] == '.'))
        return true;
    }
    if (comma == std::string_view::npos) break;
    list.remove_prefix(comma + 1);
  }
  return false;
}

// getaddrinfo's error as Asio reports it for its own resolver.
error_code lookup_error(int code, int saved_errno) {
  switch (code) {
    case EAI_AGAIN:
      return asio::error::host_not_found_try_again;
    case EAI_BADFLAGS:
      return asio::error::invalid_argument;
    case EAI_FAIL:
      return asio::error::no_recovery;
    case EAI_FAMILY:
      return asio::error::address_family_not_supported;
    case EAI_MEMORY:
      return asio::error::no_memory;
    case EAI_NONAME:
#if defined(EAI_ADDRFAMILY)
    case EAI_ADDRFAMILY:
#endif
#if defined(EAI_NODATA) && (EAI_NODATA != EAI_NONAME)
    case EAI_NODATA:
#endif
      return asio::error::host_not_found;
    case EAI_SERVICE:
      return asio::error::service_not_found;
    case EAI_SOCKTYPE:
      return asio::error::socket_type_not_supported;
    default:
      return error_code(saved_errno, asio::error::get_system_category());
  }
}

// The codings a response head names in `field` (Content-Encoding, or
// Transfer-Encoding where "chunked" is read) other than identity ("gzip",
// "br, gzip"), as written; empty when its body is as sent.
std::string content_coding(const http::fields& headers,
                           http::field which = http::field::content_encoding) {
  std::string codings;
  const auto [first, last] = headers.equal_range(which);
  for (auto field = first; field != last; ++field) {
    std::string_view list = field->value();
    while (!list.empty()) {
      const auto comma = std::min(list.find(','), list.size());
      auto coding = list.substr(0, comma);
      list.remove_prefix(std::min(comma + 1, list.size()));
      while (!coding.empty() && (coding.front() == ' ' || coding.front() == '\t'))
        coding.remove_prefix(1);
      while (!coding.empty() && (coding.back() == ' ' || coding.back() == '\t'))
        coding.remove_suffix(1);
      if (coding.empty() || beast::iequals(coding, "identity") ||
          (which == http::field::transfer_encoding && beast::iequals(coding, "chunked")))
        continue;
      if (!codings.empty()) codings += ", ";
      codings += coding;
    }
  }
  return codings;
}

using LookupResult = boost::system::result<std::vector<tcp::endpoint>>;

const std::string lookup_advice =
    "check the DNS servers (/etc/resolv.conf) or put an IP address in the URL";

}  // namespace

boost::system::result<std::vector<tcp::endpoint>> system_lookup(const std::string& host,
                                                                const std::string& port) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_protocol = IPPROTO_TCP;
  addrinfo* found = nullptr;
  const int code = ::getaddrinfo(host.c_str(), port.c_str(), &hints, &found);
  if (code != 0) return lookup_error(code, errno);
  std::vector<tcp::endpoint> endpoints;
  for (auto* entry = found; entry; entry = entry->ai_next) {
    if (entry->ai_family != AF_INET && entry->ai_family != AF_INET6) continue;
    tcp::endpoint endpoint;
    if (entry->ai_addrlen > endpoint.capacity()) continue;
    std::memcpy(endpoint.data(), entry->ai_addr, entry->ai_addrlen);
    endpoint.resize(entry->ai_addrlen);
    endpoints.push_back(endpoint);
  }
  ::freeaddrinfo(found);
  if (endpoints.empty()) return error_code(asio::error::host_not_found);
  return endpoints;
}

// One lookup of a host and port, shared by the thread that runs it (once
// started) and the requests that wait for it; whoever lets go last frees it.
// Every field is guarded by HostLookups::Shared::mutex.
struct HostLookups::Lookup {
  std::string host;
  std::string port;
  bool started = false;  // a thread runs it (or has)
  std::optional<LookupResult> result;
  // The requests waiting, by id: each one's `wake` posts to its executor. A
  // request removes its own when it stops waiting (its frame may also be
  // destroyed with its io_context), so a thread never reaches an executor
  // that is gone.
  std::map<std::uint64_t, std::function<void()>> waiters;
};

// What the lookup threads share with the requests; it outlives both.
struct HostLookups::Shared {
  HostLookup lookup;
  std::size_t max_threads;
  mutable std::mutex mutex;
  std::size_t threads = 0;  // running, waited for or not
  std::size_t waiting = 0;  // requests waiting for a lookup
  std::uint64_t next_waiter = 1;
  // Every lookup started or waiting for a thread, by host and port.
  std::map<std::pair<std::string, std::string>, std::shared_ptr<Lookup>> lookups;
  // Those waiting for a thread, oldest first; each has a waiter.
  std::deque<std::shared_ptr<Lookup>> queue;

  // Called with `mutex` held. A lookup without a thread that nobody waits for
  // any more is dropped; one with a thread stays listed until it ends, so
  // that a request for the same host waits for it rather than starting one.
  void stop_waiting(const std::shared_ptr<Lookup>& lookup, std::uint64_t waiter) {
    if (lookup->waiters.erase(waiter) == 0) return;
    --waiting;
    if (!lookup->waiters.empty() || lookup->started || lookup->result) return;
    std::erase(queue, lookup);
    unlist(lookup);
  }

  // Called with `mutex` held.
  void unlist(const std::shared_ptr<Lookup>& lookup) {
    const auto listed = lookups.find({lookup->host, lookup->port});
    if (listed != lookups.end() && listed->second == lookup) lookups.erase(listed);
  }

  // The body of a lookup thread: the lookup it was started for, then each
  // one waiting for a thread, until none is left. Touches only `shared`.
  static void run(const std::shared_ptr<Shared>& shared, std::shared_ptr<Lookup> lookup) {
    while (lookup) {
      LookupResult result(boost::system::in_place_error, asio::error::no_memory);
      try {
        result = shared->lookup(lookup->host, lookup->port);
      } catch (...) {
        // Out of memory, or a lookup function that throws: the requests say it failed.
      }
      std::lock_guard lock(shared->mutex);
      lookup->result = std::move(result);
      // A wake posts to the waiter's executor, which may throw (out of
      // memory): nothing may leave this thread, and a waiter not woken still
      // ends at its own timeout.
      for (auto& [id, wake] : lookup->waiters) {
        try {
          wake();
        } catch (...) {
        }
      }
      shared->unlist(lookup);
      lookup = nullptr;
      if (shared->queue.empty()) {
        --shared->threads;
      } else {
        lookup = std::move(shared->queue.front());
        shared->queue.pop_front();
        lookup->started = true;
      }
    }
  }
};

HostLookups::HostLookups(HostLookup lookup, std::size_t max_threads)
    : shared_(std::make_shared<Shared>()) {
  shared_->lookup = lookup ? std::move(lookup) : HostLookup(system_lookup);
  shared_->max_threads = std::max<std::size_t>(max_threads, 1);
}

const std::shared_ptr<HostLookups>& HostLookups::process() {
  static const auto lookups = std::make_shared<HostLookups>();
  return lookups;
}

std::size_t HostLookups::threads_running() const {
  std::lock_guard lock(shared_->mutex);
  return shared_->threads;
}

std::size_t HostLookups::waiting() const {
  std::lock_guard lock(shared_->mutex);
  return shared_->waiting;
}

awaitable<boost::system::result<std::vector<tcp::endpoint>, ClientError>> HostLookups::resolve(
    const std::string& host, const std::string& port, runtime::Duration timeout) {
  using Resolved = boost::system::result<std::vector<tcp::endpoint>, ClientError>;
  auto fail = [](ClientError e) { return Resolved(boost::system::in_place_error, std::move(e)); };
  const auto executor = co_await asio::this_coro::executor;
  // The wait ends when the timer expires (too slow), when the lookup's thread
  // cancels it through the waiter's `wake` (done), or when the request is
  // cancelled. `wake` holds the timer weakly: a lookup thread never destroys it.
  auto timer = std::make_shared<asio::steady_timer>(executor, timeout);
  auto wake = [weak = std::weak_ptr<asio::steady_timer>(timer), executor] {
    asio::post(executor, [weak] {
      if (auto waiting_timer = weak.lock()) waiting_timer->cancel();
    });
  };
  std::shared_ptr<Lookup> lookup;
  std::uint64_t waiter = 0;
  std::optional<std::string> no_thread;
  {
    std::lock_guard lock(shared_->mutex);
    auto& listed = shared_->lookups[{host, port}];
    if (!listed) {
      listed = std::make_shared<Lookup>();
      listed->host = host;
      listed->port = port;
      if (shared_->threads < shared_->max_threads) {
        try {
          std::thread(Shared::run, shared_, listed).detach();
          listed->started = true;
          ++shared_->threads;
        } catch (const std::system_error& e) {
          no_thread = e.what();
          shared_->lookups.erase({host, port});
        }
      } else {
        shared_->queue.push_back(listed);
      }
    }
    if (!no_thread) {
      lookup = listed;
      waiter = shared_->next_waiter++;
      lookup->waiters.emplace(waiter, wake);
      ++shared_->waiting;
    }
  }
  if (no_thread)
    co_return fail(ClientError{
        asio::error::no_memory,
        fmt::format("cannot look up {}: no thread for the lookup: {}", host, *no_thread)});
  // The wait ends below, under the lock that reads the lookup's result;
  // whatever else ends this frame (the io_context going away included) ends
  // it here.
  struct StopWaiting {
    Shared& shared;
    const std::shared_ptr<Lookup>& lookup;
    std::uint64_t waiter;
    bool stopped = false;
    // Called with shared.mutex held.
    void now() {
      shared.stop_waiting(lookup, waiter);
      stopped = true;
    }
    ~StopWaiting() {
      if (stopped) return;
      std::lock_guard lock(shared.mutex);
      shared.stop_waiting(lookup, waiter);
    }
  } stop_waiting{*shared_, lookup, waiter};
  auto [wait_ec] = co_await timer->async_wait(use_tuple);
  std::optional<LookupResult> result;
  bool started = false;
  std::size_t threads = 0;
  {
    std::lock_guard lock(shared_->mutex);
    stop_waiting.now();
    result = lookup->result;  // a copy: other requests may read it too
    started = lookup->started;
    threads = shared_->threads;
  }
  if (result && *result) co_return Resolved(std::move(**result));
  if (result)
    co_return fail(ClientError{
        result->error(), fmt::format("cannot resolve {}: {}", host, result->error().message())});
  // Not over yet. A cancellation may be the caller's deadline (an attempt's
  // time), which only the lookup can say was spent waiting for DNS.
  auto unfinished = [](error_code code, std::string message) {
    return Resolved(boost::system::in_place_error,
                    ClientError{.code = code, .message = std::move(message),
                                .lookup_unfinished = true});
  };
  if (wait_ec && started)
    co_return unfinished(asio::error::operation_aborted,
                         fmt::format("the lookup of {} had not finished; {}", host, lookup_advice));
  if (wait_ec)
    co_return unfinished(
        asio::error::operation_aborted,
        fmt::format("the lookup of {} had not started: all {} lookups of host names allowed at "
                    "once were waiting for DNS; {}",
                    host, threads, lookup_advice));
  if (started)
    co_return unfinished(asio::error::timed_out,
                         fmt::format("the lookup of {} did not finish within {}; {}", host,
                                     runtime::format_duration(timeout), lookup_advice));
  co_return unfinished(
      asio::error::timed_out,
      fmt::format("cannot look up {}: for {} all {} lookups of host names allowed at once were "
                  "waiting for DNS; {}",
                  host, runtime::format_duration(timeout), threads, lookup_advice));
}

// One connection to an origin, plain or TLS.
struct HttpClient::Connection {
  std::variant<beast::tcp_stream, beast::ssl_stream<beast::tcp_stream>> stream;
  beast::flat_buffer buffer;

  Connection(beast::tcp_stream s, std::size_t max_buffer)
      : stream(std::move(s)), buffer(max_buffer) {}
  Connection(beast::tcp_stream s, ssl::context& tls, std::size_t max_buffer)
      : stream(std::in_place_index<1>, std::move(s), tls), buffer(max_buffer) {}

  beast::tcp_stream& tcp() {
    return std::visit(
        [](auto& s) -> beast::tcp_stream& { return beast::get_lowest_layer(s); }, stream);
  }
  bool is_open() { return tcp().socket().is_open(); }

  // True when no byte of a later response is buffered (by us or by TLS) or
  // waiting in the socket, and the peer has not closed: the connection can
  // carry a new exchange without mistaking stray bytes for its answer.
  bool nothing_pending() {
    if (buffer.size() != 0) return false;
    if (stream.index() == 1 && SSL_pending(std::get<1>(stream).native_handle()) > 0) return false;
    char byte;
    const auto n = ::recv(tcp().socket().native_handle(), &byte, 1, MSG_PEEK | MSG_DONTWAIT);
    return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
  }
};

HttpClient::HttpClient(asio::any_io_executor executor, ClientOptions options)
    : executor_(std::move(executor)), options_(std::move(options)) {
  if (!options_.lookups) options_.lookups = HostLookups::process();
  if (!options_.https_proxy) options_.https_proxy = env("HTTPS_PROXY", "https_proxy");
  if (!options_.http_proxy) options_.http_proxy = env("HTTP_PROXY", "http_proxy");
  if (!options_.no_proxy) options_.no_proxy = env("NO_PROXY", "no_proxy");
  tls_ = std::make_unique<ssl::context>(ssl::context::tls_client);
  tls_->set_default_verify_paths();  // honours SSL_CERT_FILE / SSL_CERT_DIR
  tls_->set_verify_mode(ssl::verify_peer);
  tls_->set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 |
                    ssl::context::no_sslv3 | ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1);
}

HttpClient::~HttpClient() = default;

awaitable<boost::system::result<std::vector<tcp::endpoint>, ClientError>> HttpClient::resolve(
    const std::string& host, const std::string& port) {
  using Resolved = boost::system::result<std::vector<tcp::endpoint>, ClientError>;
  // An address needs no lookup (nor a thread).
  error_code not_an_address;
  const auto address = asio::ip::make_address(host, not_an_address);
  std::uint16_t port_number = 0;
  const auto [port_end, port_ec] =
      std::from_chars(port.data(), port.data() + port.size(), port_number);
  if (!not_an_address && port_ec == std::errc() && port_end == port.data() + port.size())
    co_return Resolved(std::vector<tcp::endpoint>{tcp::endpoint(address, port_number)});

  auto resolved = co_await options_.lookups->resolve(host, port, options_.lookup_timeout);
  co_return resolved;
}

awaitable<boost::system::result<std::unique_ptr<HttpClient::Connection>, ClientError>>
HttpClient::connect(const ParsedUrl& url) {
  using ConnectResult = boost::system::result<std::unique_ptr<Connection>, ClientError>;
  auto fail = [](ClientError e) { return ConnectResult(boost::system::in_place_error, std::move(e)); };

  // Which host the TCP connection goes to: the origin, or a proxy.
  std::optional<ParsedUrl> proxy;
  const auto& proxy_setting = url.tls ? options_.https_proxy : options_.http_proxy;
  if (proxy_setting && !bypasses_proxy(url.host, options_.no_proxy)) {
    proxy = parse_proxy(*proxy_setting);
    if (!proxy)
      co_return fail(make_error(asio::error::invalid_argument,
                                fmt::format("the proxy setting \"{}\" is not an http:// URL",
                                            shown_proxy(*proxy_setting))));
  }
  const auto& peer = proxy ? *proxy : url;

  auto endpoints = co_await resolve(peer.host, peer.port);
  if (!endpoints) co_return fail(std::move(endpoints.error()));
  beast::tcp_stream stream(executor_);
  stream.expires_after(options_.connect_timeout);
  auto [connect_ec, endpoint] = co_await stream.async_connect(*endpoints, use_tuple);
  if (connect_ec)
    co_return fail(make_error(connect_ec, fmt::format("cannot connect to {}:{}: {}", peer.host,
                                                      peer.port, connect_ec.message())));
  ++opened_;

  if (proxy && url.tls) {
    // Ask the proxy for a tunnel, then speak TLS through it.
    http::request<http::empty_body> connect_req{http::verb::connect, url.authority(true), 11};
    connect_req.set(http::field::host, url.authority(true));
    auto [write_ec, w] = co_await http::async_write(stream, connect_req, use_tuple);
    beast::flat_buffer buffer;
    http::response_parser<http::empty_body> parser;
    parser.skip(true);  // a CONNECT response has no body
    error_code read_ec = write_ec;
    if (!write_ec) std::tie(read_ec, w) = co_await http::async_read_header(stream, buffer, parser, use_tuple);
    if (read_ec)
      co_return fail(make_error(read_ec, fmt::format("proxy {}:{} failed: {}", proxy->host,
                                                     proxy->port, read_ec.message())));
    if (parser.get().result() != http::status::ok)
      co_return fail(make_error(asio::error::connection_refused,
                                fmt::format("proxy {}:{} refused the tunnel to {}:{} ({})",
                                            proxy->host, proxy->port, url.host, url.port,
                                            parser.get().result_int())));
  }

  std::unique_ptr<Connection> connection;
  if (url.tls) {
    connection = std::make_unique<Connection>(std::move(stream), *tls_, options_.max_head_bytes);
    auto& tls_stream = std::get<1>(connection->stream);
    if (!SSL_set_tlsext_host_name(tls_stream.native_handle(), url.host.c_str()))
      co_return fail(make_error(asio::error::invalid_argument, "cannot set TLS server name"));
    tls_stream.set_verify_callback(ssl::host_name_verification(url.host));
    auto [handshake_ec] = co_await tls_stream.async_handshake(ssl::stream_base::client, use_tuple);
    if (handshake_ec)
      co_return fail(make_error(handshake_ec, fmt::format("TLS with {}:{} failed: {}", url.host,
                                                          url.port, handshake_ec.message())));
  } else {
    connection = std::make_unique<Connection>(std::move(stream), options_.max_head_bytes);
  }
  co_return ConnectResult(std::move(connection));
}

awaitable<boost::system::result<ClientResponse, ClientError>> HttpClient::send(
    ClientRequest request, HeadSink on_head, BodySink on_body) {
  auto fail = [](ClientError e) { return Result(boost::system::in_place_error, std::move(e)); };
  const auto sink_has_all = std::move(request.sink_has_all);
  const auto url = parse_url(request.url);
  if (!url)
    co_return fail(make_error(asio::error::invalid_argument,
                              fmt::format("\"{}\" is not an http:// or https:// URL", request.url)));
  const std::string origin = (url->tls ? "https://" : "http://") + url->host + ":" + url->port;
  const bool via_plain_proxy =
      !url->tls && options_.http_proxy && !bypasses_proxy(url->host, options_.no_proxy);

  http::request<http::string_body> req{request.method, via_plain_proxy ? request.url : url->target,
                                       11};
  req.set(http::field::host, url->authority(false));
  req.set(http::field::user_agent, "mooring");
  for (const auto& [name, value] : request.headers) req.set(name, value);
  req.body() = std::move(request.body);
  req.prepare_payload();
  req.keep_alive(true);

  // A pooled connection may have been closed by the server while idle; such a
  // failure before any byte of the response is retried once on a new
  // connection (never another pooled one: it has been idle as long).
  for (int round = 0; round < 2; ++round) {
    std::unique_ptr<Connection> connection;
    bool reused = false;
    auto& idle = idle_[origin];
    while (round == 0 && !idle.empty() && !connection) {
      auto candidate = std::move(idle.back());
      idle.pop_back();
      if (candidate->is_open() && candidate->nothing_pending()) {
        connection = std::move(candidate);
      } else {
        ++dropped_;
      }
    }
    if (connection) {
      reused = true;
    } else {
      auto connected = co_await connect(*url);
      if (!connected) co_return fail(connected.error());
      connection = std::move(*connected);
    }
    connection->tcp().expires_never();
    auto describe = [&](error_code ec) {
      if (ec == http::error::header_limit)
        return fmt::format("{} sent a response head over {} bytes", origin, options_.max_head_bytes);
      if (ec == http::error::buffer_overflow)
        return fmt::format("{} sent a chunk line or trailers over {} bytes", origin,
                           options_.max_head_bytes);
      return fmt::format("{} {}: {}", std::string_view(req.method_string()), origin, ec.message());
    };

    auto [write_ec, written] = co_await std::visit(
        [&](auto& s) { return http::async_write(s, req, use_tuple); }, connection->stream);

    // The final response head, after any interim (1xx) ones.
    std::optional<http::response_parser<http::buffer_body>> parser;
    error_code ec = write_ec;
    unsigned interim = 0;
    bool got_bytes = false;
    while (!ec) {
      parser.emplace();
      parser->header_limit(static_cast<std::uint32_t>(options_.max_head_bytes));
      parser->body_limit(boost::none);
      std::size_t n = 0;
      std::tie(ec, n) = co_await std::visit(
          [&](auto& s) { return http::async_read_header(s, connection->buffer, *parser, use_tuple); },
          connection->stream);
      got_bytes = got_bytes || parser->got_some();
      if (ec) break;
      const auto status = parser->get().result_int();
      if (status / 100 != 1) break;
      if (status == 101)
        co_return fail(make_error(http::error::bad_status,
                                  fmt::format("{} switched protocols (101) unasked", origin)));
      if (++interim > options_.max_interim_responses)
        co_return fail(make_error(http::error::bad_status,
                                  fmt::format("{} sent over {} interim (1xx) responses", origin,
                                              options_.max_interim_responses)));
    }
    if (ec) {
      const bool idle_close = ec == http::error::end_of_stream || ec == asio::error::eof ||
                              ec == asio::error::connection_reset ||
                              ec == asio::error::broken_pipe;
      if (reused && idle_close && interim == 0 && !got_bytes) {
        idle_[origin].clear();
        continue;
      }
      co_return fail(make_error(ec, describe(ec)));
    }

    // No compression was asked for (no Accept-Encoding), and a body
    // compressed all the same (a proxy that compresses whatever it forwards)
    // is not decoded: read as it is, it would pass for a broken or cut-off
    // answer, asked for again and again.
    for (const auto field : {http::field::content_encoding, http::field::transfer_encoding})
      if (const auto coding = content_coding(parser->get().base(), field); !coding.empty())
        co_return fail(make_error(
            http::error::bad_value,
            fmt::format("{} answered {} compressed ({}: {}), which mooring did not ask for and "
                        "does not read; if a proxy in front of it compresses responses, turn "
                        "that off for this client",
                        origin, parser->get().result_int(),
                        field == http::field::content_encoding ? "Content-Encoding"
                                                               : "Transfer-Encoding",
                        coding)));

    ClientResponse response;
    response.status = static_cast<int>(parser->get().result_int());
    response.headers = parser->get().base();
    if (on_head) on_head(response);

    // Pieces go to the sink as they arrive. Whatever is buffered is parsed at
    // once, element by element (a body of many tiny chunks costs no round
    // trip per chunk), and what it held goes to the sink before any wait for
    // the socket: a slow stream is never held back to fill a buffer.
    char chunk[16 * 1024];
    std::size_t filled = 0;
    // Set once the sink has all it needs: the rest of the body must come by
    // then, however slowly it trickles.
    std::optional<runtime::Deadline> rest_by;
    auto deliver = [&] {
      const std::size_t n = std::exchange(filled, 0);
      return n == 0 || !on_body || on_body(std::string_view(chunk, n));
    };
    while (!parser->is_done()) {
      while (connection->buffer.size() > 0 && !parser->is_done()) {
        parser->get().body().data = chunk + filled;
        parser->get().body().size = sizeof chunk - filled;
        error_code parse_ec;
        const auto used = parser->put(connection->buffer.data(), parse_ec);
        connection->buffer.consume(used);
        filled = sizeof chunk - parser->get().body().size;
        if (parse_ec == http::error::need_buffer) {
          if (!deliver()) co_return Result(std::move(response));  // closes `connection`
          continue;
        }
        if (parse_ec == http::error::need_more || (!parse_ec && used == 0)) break;
        if (parse_ec) co_return fail(make_error(parse_ec, describe(parse_ec)));
      }
      if (!deliver()) co_return Result(std::move(response));
      if (parser->is_done()) break;

      const auto room = beast::read_size(connection->buffer, 64 * 1024);
      if (room == 0)
        co_return fail(make_error(http::error::buffer_overflow,
                                  describe(http::error::buffer_overflow)));
      auto read = std::visit(
          [&](auto& s) { return s.async_read_some(connection->buffer.prepare(room), use_tuple); },
          connection->stream);
      error_code read_ec;
      std::size_t n = 0;
      if (!rest_by && sink_has_all && sink_has_all())
        rest_by = runtime::Deadline::after(options_.rest_of_body);
      if (rest_by) {
        // Only the end of the body is missing: worth a short wait to keep the
        // connection, never the caller's whole deadline.
        auto timed = runtime::with_timeout(std::move(read), rest_by->remaining());
        const auto got = co_await std::move(timed);
        if (!got) co_return Result(std::move(response));  // closes `connection`
        std::tie(read_ec, n) = *got;
      } else {
        std::tie(read_ec, n) = co_await std::move(read);
      }
      connection->buffer.commit(n);
      // Over TLS, a server that closes without a close_notify (many do) is
      // reported as a truncated stream: for a body read to the connection's
      // close, the same end as eof. The parser still fails a body cut short
      // of its length.
      if (read_ec == asio::error::eof || read_ec == asio::ssl::error::stream_truncated) {
        // The end of a body read to the connection's close, or a cut one.
        parser->put_eof(read_ec);
        if (read_ec) co_return fail(make_error(read_ec, describe(read_ec)));
        continue;
      }
      if (read_ec) co_return fail(make_error(read_ec, describe(read_ec)));
    }
    response.complete = true;
    if (parser->keep_alive() && connection->nothing_pending()) {
      if (idle_[origin].size() < options_.max_idle_per_origin)
        idle_[origin].push_back(std::move(connection));
    } else if (parser->keep_alive()) {
      ++dropped_;
    }
    co_return Result(std::move(response));
  }
  co_return fail(make_error(asio::error::connection_reset,
                            fmt::format("{} closed the connection twice", origin)));
}

std::optional<runtime::Duration> parse_retry_after(std::string_view value,
                                                   std::chrono::system_clock::time_point now) {
  while (!value.empty() && value.front() == ' ') value.remove_prefix(1);
  while (!value.empty() && value.back() == ' ') value.remove_suffix(1);
  if (value.empty()) return std::nullopt;
  const auto is_digit = [](char c) { return c >= '0' && c <= '9'; };
  // Seconds; with a fraction too ("3.5", which some servers send), rounded up.
  const auto point = value.find('.');
  const auto whole = value.substr(0, point);
  const auto fraction = point == std::string_view::npos ? std::string_view() : value.substr(point + 1);
  if (!whole.empty() && std::all_of(whole.begin(), whole.end(), is_digit) &&
      (point == std::string_view::npos ||
       (!fraction.empty() && std::all_of(fraction.begin(), fraction.end(), is_digit)))) {
    if (whole.size() > 6) return runtime::Duration(std::chrono::hours(24));
    const bool part = std::any_of(fraction.begin(), fraction.end(), [](char c) { return c != '0'; });
    return std::chrono::seconds(std::stoi(std::string(whole)) + (part ? 1 : 0));
  }
  // An HTTP date: "Wed, 21 Oct 2015 07:28:00 GMT".
  std::tm tm{};
  const std::string text(value);
  if (!strptime(text.c_str(), "%a, %d %b %Y %H:%M:%S GMT", &tm)) return std::nullopt;
  // In seconds: a date past 2262 does not fit the clock's nanoseconds, and
  // one that wrapped would read as the past (retry at once).
  const std::time_t when = timegm(&tm);
  const std::time_t today = std::chrono::system_clock::to_time_t(now);
  if (when <= today) return runtime::Duration::zero();
  if (when - today > 24 * 3600) return runtime::Duration(std::chrono::hours(24));
  return std::chrono::seconds(when - today);
}

}  // namespace mooring::net
