#include "net/http_server.hpp"

#include "runtime/cancellation.hpp"
#include "runtime/exceptions.hpp"
#include "runtime/log.hpp"
#include "runtime/log_limiter.hpp"
#include "runtime/metrics.hpp"

#include <boost/beast/http.hpp>

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <list>
#include <optional>
#include <string_view>
#include <vector>

#include <fcntl.h>
#include <unistd.h>

namespace mooring::net {

namespace beast = boost::beast;

class HttpSession;

namespace {

bool make_room(HttpServer::State& state);

// Connections beyond max_connections at once, waiting for their request
// header to claim a place (or being answered 503); beyond, the one waiting
// longest is closed to admit the new one.
constexpr std::size_t max_beyond_limit = 64;
// What a refused or failed request's unread input may cost us before its
// socket is closed: reading it lets the client see our answer instead of a reset.
constexpr std::size_t linger_bytes = 256 * 1024;
constexpr runtime::Duration linger_time = std::chrono::milliseconds(500);

// How often the closing of connections to admit new ones is logged.
constexpr runtime::Duration room_log_window = std::chrono::seconds(10);

constexpr runtime::Duration first_accept_backoff = std::chrono::milliseconds(100);
constexpr runtime::Duration last_accept_backoff = std::chrono::seconds(1);

bool is_descriptor_shortage(const error_code& ec) {
  return ec == asio::error::no_descriptors ||
         ec == boost::system::errc::too_many_files_open_in_system ||
         ec == asio::error::no_buffer_space || ec == asio::error::no_memory;
}

// An HTTP/1.1 client that sent Expect: 100-continue waits for "100 Continue"
// before it sends the body (an HTTP/1.0 client's expectation is ignored).
bool expects_continue(const HttpRequest& header) {
  return header.version() >= 11 && beast::iequals(header[http::field::expect], "100-continue");
}

// The answer to a HEAD: the header a GET would get, its Content-Length
// included, and no body (RFC 9110 9.3.2), whatever answers it (a route, a
// 404, a refusal). One a handler made for HEAD keeps its own; a 1xx, 204 or
// 304 gets none.
void without_body(HttpResponse& response) {
  const auto status = response.result_int();
  const bool bodiless = status < 200 || status == 204 || status == 304;
  if (!bodiless && response.find(http::field::content_length) == response.end() &&
      !response.chunked())
    response.content_length(response.body().size());
  response.body().clear();
}

// The answer to a request no route takes: 404 for its path, or 405 for its
// method, with the methods the path takes (Allow).
HttpResponse no_route(const Router::Match& match, const HttpRequest& header) {
  const auto target = std::string_view(header.target());
  const auto path = elide(target.substr(0, target.find('?')));
  if (match.status == http::status::not_found)
    return error_response(match.status, "not_found", fmt::format("no such path: {}", path),
                          header.version(), header.keep_alive());
  auto response = error_response(
      match.status, "method_not_allowed",
      fmt::format("{} is not allowed on {} (it takes {})", std::string_view(header.method_string()),
                  path, match.allow),
      header.version(), header.keep_alive());
  response.set(http::field::allow, match.allow);
  return response;
}

// The answer to a connection beyond max_connections that cannot take a place.
HttpResponse too_many_connections(std::size_t open) {
  auto response = error_response(
      http::status::service_unavailable, "too_many_connections",
      fmt::format("the server has {} connections open, its limit, and none is idle or slow to "
                  "send its request; try again shortly",
                  open),
      11, false);
  response.set(http::field::retry_after, "1");
  return response;
}

// Bytes of a message's header fields as they came on the wire.
std::size_t field_bytes(const HttpRequest& message) {
  std::size_t n = 0;
  for (const auto& field : message) n += field.name_string().size() + field.value().size() + 4;
  return n;
}

std::string_view trim_whitespace(std::string_view text) {
  const auto first = text.find_first_not_of(" \t");
  if (first == std::string_view::npos) return {};
  return text.substr(first, text.find_last_not_of(" \t") - first + 1);
}

// RFC 9112 §3.2: an HTTP/1.1 request names its host, and no request names two
// (which one would the request be for?). An HTTP/1.0 request may name none.
std::optional<HttpResponse> host_refusal(const HttpRequest& header) {
  const auto hosts = header.count(http::field::host);
  if (hosts > 1)
    return error_response(http::status::bad_request, "duplicate_host",
                          fmt::format("the request has {} Host headers; send exactly one", hosts),
                          11, false);
  if (hosts == 0 && header.version() >= 11)
    return error_response(http::status::bad_request, "missing_host",
                          "an HTTP/1.1 request must have a Host header; send one naming the "
                          "server (Host: name:port)",
                          11, false);
  return std::nullopt;
}

// RFC 9112 §6.1 and §6.3: the server decodes no transfer coding but chunked,
// alone. With chunked not last where the body ends cannot be known (400);
// with another coding before it the body cannot be decoded (501). Either way
// the bytes after the header cannot be trusted to begin the next request, so
// the refusal closes the connection. Beast would take a request whose last
// coding is not chunked for one without a body, and read the body as the next
// request. An HTTP/1.0 request with Transfer-Encoding is faulty framing (§6.1).
std::optional<HttpResponse> transfer_coding_refusal(const HttpRequest& header) {
  if (header.count(http::field::transfer_encoding) == 0) return std::nullopt;
  std::string listed;  // every Transfer-Encoding field, as one list
  std::vector<std::string_view> codings;
  for (auto [field, end] = header.equal_range(http::field::transfer_encoding); field != end;
       ++field) {
    const std::string_view value = field->value();
    if (!listed.empty()) listed += ", ";
    listed += value;
    for (std::size_t begin = 0; begin <= value.size();) {
      const auto comma = std::min(value.find(',', begin), value.size());
      const auto coding = trim_whitespace(value.substr(begin, comma - begin));
      if (!coding.empty()) codings.push_back(coding);
      begin = comma + 1;
    }
  }
  const auto is_chunked = [](std::string_view coding) { return beast::iequals(coding, "chunked"); };
  const auto bad_request = [](std::string message) {
    return error_response(http::status::bad_request, "bad_transfer_encoding", message, 11, false);
  };
  if (header.version() < 11)
    return bad_request(
        fmt::format("an HTTP/1.0 request cannot use Transfer-Encoding (got \"{}\"); "
                    "send the body with Content-Length",
                    elide(listed)));
  if (codings.empty() || !is_chunked(codings.back()))
    return bad_request(fmt::format(
        "Transfer-Encoding \"{}\" does not end with chunked, so where the body ends cannot be "
        "known; send the body with Transfer-Encoding: chunked or with Content-Length",
        elide(listed)));
  if (std::any_of(codings.begin(), codings.end() - 1, is_chunked))
    return bad_request(
        fmt::format("Transfer-Encoding \"{}\" applies chunked more than once; "
                    "send the body with Transfer-Encoding: chunked",
                    elide(listed)));
  if (codings.size() > 1)
    return error_response(
        http::status::not_implemented, "unsupported_transfer_encoding",
        fmt::format("the server decodes no transfer coding but chunked (got \"{}\"); send the "
                    "body with Transfer-Encoding: chunked alone, or with Content-Length",
                    elide(listed)),
        11, false);
  return std::nullopt;
}

// RFC 6455 §4.2.1: what Beast's accept would refuse with a plain-text body,
// refused first with the JSON every other refusal has (426 names the version
// spoken, as §4.4 asks).
std::optional<HttpResponse> handshake_refusal(const Request& request) {
  const auto& header = request.message;
  const auto version = header[http::field::sec_websocket_version];
  if (version.empty())
    return error_response(http::status::bad_request, "bad_handshake",
                          "a WebSocket upgrade needs Sec-WebSocket-Version: 13", request);
  if (version != "13") {
    auto refusal = error_response(
        http::status::upgrade_required, "unsupported_websocket_version",
        fmt::format("WebSocket version \"{}\" is not spoken here; use 13", elide(version)),
        request);
    refusal.set(http::field::sec_websocket_version, "13");
    return refusal;
  }
  // The key is 16 random bytes in base64: 24 characters ending in "==".
  const auto key = header[http::field::sec_websocket_key];
  const bool key_ok = header.count(http::field::sec_websocket_key) == 1 && key.size() == 24 &&
                      key.ends_with("==") &&
                      std::all_of(key.begin(), key.end() - 2, [](char c) {
                        return std::isalnum(static_cast<unsigned char>(c)) || c == '+' ||
                               c == '/';
                      });
  if (!key_ok)
    return error_response(http::status::bad_request, "bad_handshake",
                          "a WebSocket upgrade needs one Sec-WebSocket-Key: 16 bytes in base64",
                          request);
  return std::nullopt;
}

// What a client must change, for the header errors Beast names in a few words.
std::string header_error(const error_code& ec) {
  if (ec == http::error::bad_content_length)
    return "Content-Length must be a whole number, and a request sent with Transfer-Encoding "
           "carries none (RFC 9112 6.1): send the body with one of them";
  if (ec == http::error::multiple_content_length)
    return "a request carries one Content-Length (RFC 9112 6.3)";
  return ec.message();
}

// The refusal of a request whose header says nothing sure about which host it
// is for, or about where its body ends; nullopt when the header is sound.
std::optional<HttpResponse> framing_refusal(const HttpRequest& header) {
  if (auto refusal = host_refusal(header)) return refusal;
  return transfer_coding_refusal(header);
}

}  // namespace

struct HttpServer::State {
  runtime::Supervisor* supervisor;
  std::string name;
  std::shared_ptr<const Router> router;
  HttpLimits limits;
  std::optional<tcp::acceptor> acceptor;
  // Every live session, registered by its constructor and removed by its
  // destructor (and earlier, when its task ends or when it is closed to make
  // room for a new one): never a freed one. Ids grow with time.
  std::map<std::uint64_t, HttpSession*> sessions;
  std::uint64_t next_session = 1;
  // Sessions admitted beyond max_connections, waiting for their request
  // header before they may take a place (or being refused), oldest first.
  std::map<std::uint64_t, HttpSession*> beyond_limit;
  // Placed sessions that may be closed to make room (HttpSession::waiting()),
  // idle ones and ones whose header is arriving, each list in the order they
  // began to wait: at the limit, a new connection costs no walk through
  // every connection open.
  std::list<HttpSession*> idle_waiting;
  std::list<HttpSession*> header_waiting;
  runtime::Notifier changed;
  std::uint64_t refused = 0;
  // Connections closed to admit a new one: idle, or with a header stalled.
  std::uint64_t idle_closed = 0;
  std::uint64_t slow_headers_closed = 0;
  runtime::LogLimiter room_log{
      runtime::LogLimiter::Options{.window = room_log_window, .max_kinds = 2}};
  // A descriptor held in reserve (/dev/null), given up to accept a connection
  // when the process has no other; taken again when a connection closes.
  int spare = -1;
  // Accept failures not logged yet, and when the last line was written.
  std::uint64_t accept_failures = 0;
  std::uint64_t unlogged_failures = 0;
  std::optional<Clock::time_point> last_failure_line;
  runtime::Counter& refused_total;
  runtime::Counter& idle_closed_total;
  runtime::Counter& slow_headers_closed_total;
  runtime::Counter& accept_failures_total;

  State(runtime::Supervisor& s, std::string n, std::shared_ptr<const Router> r, HttpLimits l)
      : supervisor(&s), name(std::move(n)), router(std::move(r)), limits(l),
        changed(s.executor()),
        refused_total(runtime::metrics().counter(
            "mooring_http_connections_refused_total",
            "Connections refused (answered 503, or closed: no request header within the grace, "
            "or too many waiting for one) "
            "because max_connections were open.",
            {{"listener", name}})),
        idle_closed_total(runtime::metrics().counter(
            "mooring_http_idle_connections_closed_total",
            "Idle connections (waiting for a request, none of it received) closed to admit a "
            "new one because max_connections were open.",
            {{"listener", name}})),
        slow_headers_closed_total(runtime::metrics().counter(
            "mooring_http_slow_header_connections_closed_total",
            "Connections whose request header was still incomplete after the grace closed to "
            "admit a new one because max_connections were open.",
            {{"listener", name}})),
        accept_failures_total(runtime::metrics().counter(
            "mooring_accept_failures_total",
            "Accepts that failed (out of descriptors or memory, mostly); each is retried.",
            {{"listener", name}})) {}
  ~State() { release_spare(); }

  // Sessions that hold one of the max_connections places.
  std::size_t placed() const { return sessions.size() - beyond_limit.size(); }

  void note_refused() {
    ++refused;
    refused_total.inc();
    if (refused == 1 || refused % 1000 == 0)
      log::warn("{}: at its limit of {} connections and none may give way: refusing new ones "
                "(503, or closed without a whole request header within {}) ({} so far)",
                name, limits.max_connections, runtime::format_duration(limits.header_grace),
                refused);
  }

  // Only while accepting: a stopped server holds no descriptor it does not need.
  void take_spare() {
    if (spare < 0 && acceptor && acceptor->is_open())
      spare = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  }
  void release_spare() {
    if (spare >= 0) ::close(spare);
    spare = -1;
  }
};

// One accepted connection: HTTP requests in a loop, or one WebSocket after an
// upgrade. Lives as long as its task (the coroutine holds the shared_ptr).
class HttpSession : public std::enable_shared_from_this<HttpSession> {
 public:
  // `placed`: holds one of the max_connections places; else admitted beyond
  // the limit, to take one once its request header is whole.
  HttpSession(std::shared_ptr<HttpServer::State> server, TcpSocket socket, bool placed)
      : server_(std::move(server)), stream_(std::in_place, std::move(socket)),
        id_(server_->next_session++), placed_(placed) {
    error_code ec;
    auto peer = stream_->socket().remote_endpoint(ec);
    remote_ = ec ? std::string("unknown peer") : endpoint_string(peer);
    server_->sessions.emplace(id_, this);
    if (!placed_) server_->beyond_limit.emplace(id_, this);
  }
  ~HttpSession() { unlist(); }
  HttpSession(const HttpSession&) = delete;
  HttpSession& operator=(const HttpSession&) = delete;

  // Never throws: whatever ends serve(), finish() runs.
  static awaitable<void> run(std::shared_ptr<HttpSession> self) {
    try {
      co_await self->serve();
    } catch (...) {
      if (!runtime::is_cancellation(std::current_exception()))
        log::error("{}: connection from {} failed: {}", self->server_->name, self->remote_,
                   runtime::describe_current_exception());
    }
    // A WebSocket runs after serve() has returned, and after this task: the
    // request, its parser and every coroutine frame of the session are gone
    // while the connection lives. It starts even if the task was cancelled
    // meanwhile (it then ends at once), so that on_closed reaches its owner:
    // co_await must not throw before it starts.
    if (auto ws = std::exchange(self->ws_, nullptr)) {
      co_await asio::this_coro::throw_if_cancelled(false);
      // A cancellation that reached the session meanwhile reaches the
      // connection as one that reached its task would.
      const auto state = co_await asio::this_coro::cancellation_state;
      if (const auto type = state.cancelled(); type != asio::cancellation_type::none)
        ws->cancel(type);
      start_websocket(self, std::move(ws));
      co_return;
    }
    self->finish();
  }

  const std::string& remote() const { return remote_; }
  bool placed() const { return placed_; }

  // What the connection waits for while closing it would cut short nothing
  // the server has begun: a request of which no byte has arrived (`idle`), or
  // the rest of a request header that began to arrive at `since`. nullopt
  // once the header is whole (a body being read, a request being handled),
  // after an upgrade and once closing. Such a connection may be closed to
  // make room for a new one.
  struct Waiting {
    bool idle = false;
    Clock::time_point since;
  };
  std::optional<Waiting> waiting() const {
    if (closing_ || !stream_ || !placed_) return std::nullopt;
    if (idle_since_) return Waiting{.idle = true, .since = *idle_since_};
    if (header_since_) return Waiting{.idle = false, .since = *header_since_};
    return std::nullopt;
  }

  // Closes a waiting connection to admit a new one: its socket is closed and
  // it leaves the connection table now; its task ends by itself.
  void close_to_make_room() {
    closing_ = true;
    stop_waiting();
    force_close();
    unlist();
  }

  // Waiting for a request: closed now. Busy: closed after the response in
  // progress. WebSocket: close 1001 after the frames already queued.
  void close_gracefully() {
    closing_ = true;
    stop_waiting();
    if (auto ws = upgraded()) {
      ws->close(websocket::close_code::going_away, "server shutting down");
    } else if (awaiting_request_) {
      force_close();
    }
  }

  bool close_unanswered_since(Clock::time_point since) const {
    const auto ws = upgraded();
    return ws && ws->close_unanswered_since(since);
  }

  void force_close() {
    if (auto ws = upgraded()) {
      ws->force_close();
      return;
    }
    if (!stream_) return;  // upgraded: the socket went with the WebSocket
    error_code ignored;
    stream_->socket().shutdown(asio::socket_base::shutdown_both, ignored);
    stream_->socket().close(ignored);
  }

 private:
  // Leaves the connection table (once; later calls do nothing).
  void unlist() {
    stop_waiting();
    if (server_->sessions.erase(id_) > 0 && !placed_) server_->beyond_limit.erase(id_);
  }

  // Waits idle (no byte of a request yet) or for the rest of a header since
  // now: listed as such while waiting() says so.
  void start_waiting(bool idle) {
    stop_waiting();
    if (closing_ || !stream_ || !placed_) return;
    auto& list = idle ? server_->idle_waiting : server_->header_waiting;
    waiting_at_ = list.insert(list.end(), this);
    waiting_idle_ = idle;
  }
  void stop_waiting() {
    if (!waiting_at_) return;
    (waiting_idle_ ? server_->idle_waiting : server_->header_waiting).erase(*waiting_at_);
    waiting_at_.reset();
  }

  // A session admitted beyond the limit whose request header is whole takes
  // a place: a free one, or that of a connection closed to make room for it.
  // False when none may go.
  bool take_place() {
    while (server_->placed() >= server_->limits.max_connections)
      if (!make_room(*server_)) return false;
    placed_ = true;
    server_->beyond_limit.erase(id_);
    return true;
  }

  // The upgraded connection, before it starts and while it runs.
  std::shared_ptr<WsConnection> upgraded() const { return ws_ ? ws_ : running_ws_.lock(); }

  // The connection is listed with the supervisor as a task of its own, under
  // the session's name, and holds the session until it ends: nothing holds
  // the connection but its pending operations (running_ws_ is weak).
  static void start_websocket(const std::shared_ptr<HttpSession>& self,
                              std::shared_ptr<WsConnection> ws) {
    auto& server = *self->server_;
    self->running_ws_ = ws;
    self->ws_task_ = server.supervisor->adopt(
        fmt::format("{} connection {}", server.name, self->remote_), server.name + ".connections",
        [weak = std::weak_ptr<WsConnection>(ws)](asio::cancellation_type type) {
          if (auto connection = weak.lock()) connection->cancel(type);
        });
    try {
      ws->start([self] { self->finish(); });
    } catch (...) {
      // Only memory can run out here: the connection ends, and so does its task.
      log::error("{}: starting the connection from {} failed: {}", server.name, self->remote_,
                 runtime::describe_current_exception());
      ws->force_close();
      self->finish();
    }
  }

  void finish() {
    ws_task_.end();
    force_close();
    unlist();
    // The descriptor just freed becomes the spare again if the spare was used.
    server_->take_spare();
    server_->changed.notify_all();
  }

  awaitable<void> serve() {
    const HttpLimits limits = server_->limits;
    for (bool first = true; !closing_; first = false) {
      http::request_parser<http::string_body> parser;
      parser.header_limit(static_cast<std::uint32_t>(limits.header_bytes));
      // No body limit while the header is read: Beast would hold Content-Length
      // to it before the route, whose limit counts, is known (checked below).
      parser.body_limit(boost::none);
      // Beast bounds neither chunk extensions nor trailers: they count here
      // toward the route's limit, with the chunk sizes.
      std::size_t limit = Router::default_body_limit;
      std::uint64_t chunked_bytes = 0;
      bool chunk_line_too_long = false;
      auto on_chunk_header = [&](std::uint64_t size, std::string_view extensions, error_code& ec) {
        if (extensions.size() > limits.chunk_header_bytes) {
          chunk_line_too_long = true;
          ec = http::error::buffer_overflow;
          return;
        }
        chunked_bytes += extensions.size();
        chunked_bytes += std::min<std::uint64_t>(size, limit + 1);
        if (chunked_bytes > limit) ec = http::error::body_limit;
      };
      parser.on_chunk_header(on_chunk_header);
      // The buffer holds at most one thing the parser must see whole: a
      // header here, a chunk line or the trailers below.
      buffer_.max_size(std::max(buffer_.size(), limits.header_bytes));

      // Beyond the limit a connection has header_grace to show its request.
      runtime::Duration header_time = first ? limits.header_timeout : limits.keep_alive_timeout;
      if (!placed_) header_time = std::min(header_time, limits.header_grace);
      stream_->expires_after(header_time);
      awaiting_request_ = true;
      // Until the first byte of the request arrives the connection is idle.
      error_code ec;
      if (buffer_.size() == 0) {
        idle_since_ = Clock::now();
        start_waiting(true);
        auto [first_ec, first_n] = co_await stream_->async_read_some(
            buffer_.prepare(beast::read_size(buffer_, 4096)), use_tuple);
        idle_since_.reset();
        stop_waiting();
        buffer_.commit(first_n);
        ec = first_ec;
      }
      header_since_ = Clock::now();
      start_waiting(false);
      if (!ec)
        std::tie(ec, std::ignore) =
            co_await http::async_read_header(*stream_, buffer_, parser, use_tuple);
      header_since_.reset();
      stop_waiting();
      awaiting_request_ = false;
      answering_head_ = !ec && parser.get().method() == http::verb::head;
      if (ec == http::error::header_limit || ec == http::error::buffer_overflow) {
        co_await refuse(http::status::request_header_fields_too_large, "header_too_large",
                        fmt::format("request headers exceed {} bytes", limits.header_bytes));
        co_return;
      }
      if (ec) {
        if (!placed_ && ec == beast::error::timeout) server_->note_refused();
        if (ec == beast::error::timeout) {
          log::debug("{}: closed connection from {}: no complete request in time",
                     server_->name, remote_);
        } else if (!is_expected_ending(ec)) {
          log::debug("{}: bad request from {}: {}", server_->name, remote_, ec.message());
          co_await refuse(http::status::bad_request, "bad_request", header_error(ec));
        }
        co_return;
      }
      // Before anything of the body is read, routed or upgraded: what follows
      // a header whose framing is unsure is never read as a request.
      if (auto refusal = framing_refusal(parser.get())) {
        log::debug("{}: bad request from {}: {}", server_->name, remote_, elide(refusal->body()));
        co_await refuse(std::move(*refusal));
        co_return;
      }

      if (!placed_ && !take_place()) {
        server_->note_refused();
        auto refusal = too_many_connections(server_->placed());
        co_await refuse(std::move(refusal));
        co_return;
      }

      // Routing uses the header only, so the body limit can be the route's.
      const auto router = server_->router;
      if (const auto& screen = router->screen()) {
        if (auto refusal = screen(parser.get())) {
          co_await refuse(std::move(*refusal));
          co_return;
        }
      }
      Request request;
      request.remote = remote_;
      auto match = router->match(parser.get().method(), parser.get().target().substr(
                                     0, parser.get().target().find('?')));
      limit = match.route ? match.route->body_limit : Router::default_body_limit;
      // A body for a path no route matches (or a method it does not take) is
      // never read: the request is answered 404 (or 405) at once and the
      // connection closed. Read, it would let a client without a token hold
      // the connection for body_timeout, a byte a second, and enough of them
      // every place the server has.
      if (!match.route && !parser.is_done()) {
        // Named: GCC 12 destroys a temporary among co_await's operands twice.
        auto refusal = no_route(match, parser.get());
        co_await refuse(std::move(refusal));
        co_return;
      }
      // Nor is a body sent with a GET or a HEAD, which carry none: the public
      // routes (the panel's files, /healthz) take no body.
      if (!parser.is_done() &&
          (parser.get().method() == http::verb::get || parser.get().method() == http::verb::head)) {
        co_await refuse(http::status::bad_request, "body_not_allowed",
                        fmt::format("a {} request carries no body",
                                    std::string_view(parser.get().method_string())));
        co_return;
      }
      // A check on the header alone (a token) is made before a body is read:
      // a refused client cannot make the server hold its body.
      if (!parser.is_done() && match.route) {
        if (auto refusal = check_header(*match.route, parser.get(), match.params)) {
          co_await refuse(std::move(*refusal));
          co_return;
        }
      }
      parser.body_limit(limit);
      bool too_large = parser.content_length() && *parser.content_length() > limit;
      const std::size_t header_fields = field_bytes(parser.get());
      if (parser.chunked())
        buffer_.max_size(std::max(buffer_.size(), limits.chunk_header_bytes));
      // A client that waits for it (Expect: 100-continue) sends its body
      // only once told to; a refusal above went out instead.
      if (!too_large && !parser.is_done() && expects_continue(parser.get())) {
        const bool told = co_await write_continue();
        if (!told) co_return;
      }
      stream_->expires_after(limits.body_timeout);
      if (!too_large && !parser.is_done()) {
        auto [body_ec, body_n] = co_await http::async_read(*stream_, buffer_, parser, use_tuple);
        if (body_ec == http::error::buffer_overflow || chunk_line_too_long) {
          co_await refuse(http::status::bad_request, "chunk_header_too_large",
                          fmt::format("a chunk header or the trailers exceed {} bytes",
                                      limits.chunk_header_bytes));
          co_return;
        }
        too_large = body_ec == http::error::body_limit;
        if (body_ec && !too_large) {
          if (body_ec != beast::error::timeout && !is_expected_ending(body_ec))
            co_await refuse(http::status::bad_request, "bad_request", body_ec.message());
          co_return;
        }
      }
      if (!too_large && parser.chunked()) {
        const std::size_t trailers = field_bytes(parser.get()) - header_fields;
        if (trailers > limits.chunk_header_bytes) {
          co_await refuse(http::status::bad_request, "chunk_header_too_large",
                          fmt::format("a chunk header or the trailers exceed {} bytes",
                                      limits.chunk_header_bytes));
          co_return;
        }
        too_large = chunked_bytes + trailers > limit;
      }
      if (too_large) {
        co_await refuse(http::status::payload_too_large, "body_too_large",
                        fmt::format("request body exceeds {} bytes", limit));
        co_return;
      }
      request.message = parser.release();
      request.params = std::move(match.params);

      if (!match.route) {
        auto response = no_route(match, request.message);  // named, as above
        co_await write(std::move(response));
        if (!request.message.keep_alive()) co_return;
        continue;
      }

      if (match.route->ws) {
        co_await upgrade(*match.route->ws, request);  // run() runs the connection
        co_return;
      }

      HttpResponse response;
      std::exception_ptr failure;
      try {
        response = co_await match.route->handler(request);
      } catch (...) {
        failure = std::current_exception();
      }
      if (failure) {
        if (runtime::is_cancellation(failure)) std::rethrow_exception(failure);
        response = internal_error(request, failure);
      }
      if (closing_) response.keep_alive(false);
      if (!co_await write(std::move(response))) co_return;
      if (!request.message.keep_alive() || closing_) co_return;
    }
  }

  // The refusal of a CheckedHandler's check on the header, or nullopt.
  std::optional<HttpResponse> check_header(
      const Router::Route& route, const HttpRequest& header,
      const std::map<std::string, std::string, std::less<>>& params) {
    const auto* checked = route.handler ? route.handler.target<CheckedHandler>() : nullptr;
    if (!checked || !checked->check) return std::nullopt;
    Request request;
    request.message.base() = header.base();
    request.params = params;
    request.remote = remote_;
    try {
      return checked->check(request);
    } catch (...) {
      return internal_error(request, std::current_exception());
    }
  }

  HttpResponse internal_error(const Request& request, const std::exception_ptr& failure) {
    log::error("{}: {} {} from {} failed: {}", server_->name,
               std::string_view(request.message.method_string()), elide(request.path()), remote_,
               runtime::describe_exception(failure));
    auto response = error_response(http::status::internal_server_error, "internal",
                                   "the server failed to handle this request; see its log",
                                   request);
    response.keep_alive(false);
    return response;
  }

  awaitable<void> upgrade(const WsRoute& route, Request& request) {
    if (!websocket::is_upgrade(request.message)) {
      auto response = error_response(http::status::upgrade_required, "upgrade_required",
                                      "this path speaks WebSocket only", request);
      co_await write(std::move(response));
      co_return;
    }
    if (auto refusal = handshake_refusal(request)) {
      refusal->keep_alive(false);
      co_await write(std::move(*refusal));
      co_return;
    }
    if (route.admit) {
      std::optional<HttpResponse> refusal;
      try {
        refusal = route.admit(request);
      } catch (...) {
        refusal = internal_error(request, std::current_exception());
      }
      if (refusal) {
        refusal->keep_alive(false);
        co_await write(std::move(*refusal));
        co_return;
      }
    }
    WsConnection::Stream ws(CorkedSocket(stream_->release_socket()));
    stream_.reset();  // its timers are not needed any more
    ws.set_option(websocket::stream_base::decorator(
        [](websocket::response_type& res) { res.set(http::field::server, "mooring"); }));
    websocket::stream_base::timeout timeouts{};
    timeouts.handshake_timeout = server_->limits.header_timeout;  // writing the 101
    timeouts.idle_timeout = websocket::stream_base::none();
    timeouts.keep_alive_pings = false;
    ws.set_option(timeouts);
    auto [ec] = co_await ws.async_accept(request.message, use_tuple);
    if (ec) co_return;
    ws_ = std::make_shared<WsConnection>(std::move(ws), route.options, remote_, server_->name);
    // Once the owner may know the connection, it is run, so on_closed reaches it.
    try {
      if (route.on_open) route.on_open(ws_, request);
    } catch (...) {
      log::error("{}: opening the connection from {} failed: {}; closing with 1011",
                 server_->name, remote_, runtime::describe_current_exception());
      ws_->close(websocket::close_code::internal_error, "internal error");
    }
    if (closing_) ws_->close(websocket::close_code::going_away, "server shutting down");
    // Bytes that came with the request, before the client could have read
    // the 101 (RFC 6455 4.1: it must wait for it), would be lost here: the
    // client is told instead of having a message vanish.
    if (buffer_.size() > 0) {
      log::debug("{}: {} sent {} bytes after its upgrade request, before the answer; closing "
                 "with 1002",
                 server_->name, remote_, buffer_.size());
      ws_->close(websocket::close_code::protocol_error,
                 "data sent before the handshake's answer; wait for the 101 (RFC 6455 4.1)");
    }
    buffer_ = beast::flat_buffer();
  }

  // The interim answer to Expect: 100-continue.
  awaitable<bool> write_continue() {
    static constexpr std::string_view interim = "HTTP/1.1 100 Continue\r\n\r\n";
    stream_->expires_after(server_->limits.write_timeout);
    auto [ec, n] = co_await asio::async_write(*stream_, asio::buffer(interim), use_tuple);
    co_return !ec;
  }

  awaitable<bool> write(HttpResponse response) {
    if (answering_head_) without_body(response);
    stream_->expires_after(server_->limits.write_timeout);
    auto [ec, n] = co_await http::async_write(*stream_, response, use_tuple);
    if (!ec && !response.keep_alive()) {
      error_code ignored;
      stream_->socket().shutdown(TcpSocket::shutdown_send, ignored);
    }
    co_return !ec;
  }

  // Answers a request the server will not serve, and closes the connection
  // once the client's unread input is drained (a bounded amount, for a bounded
  // time), so the client reads the answer instead of a reset.
  awaitable<void> refuse(http::status status, std::string_view code, std::string message) {
    auto response = error_response(status, code, message, 11, false);
    co_await refuse(std::move(response));
  }

  awaitable<void> refuse(HttpResponse response) {
    response.keep_alive(false);
    if (!co_await write(std::move(response))) co_return;
    buffer_.consume(buffer_.size());
    buffer_.shrink_to_fit();
    std::array<char, 4096> sink;
    std::size_t drained = 0;
    stream_->expires_after(linger_time);
    while (drained < linger_bytes) {
      auto [ec, n] = co_await stream_->async_read_some(asio::buffer(sink), use_tuple);
      if (ec) break;
      drained += n;
    }
  }

  std::shared_ptr<HttpServer::State> server_;
  std::optional<beast::basic_stream<tcp, IoExecutor>> stream_;  // until an upgrade
  beast::flat_buffer buffer_;
  std::uint64_t id_;
  bool placed_;  // holds one of the max_connections places
  std::string remote_;
  std::shared_ptr<WsConnection> ws_;          // upgraded, not started yet
  std::weak_ptr<WsConnection> running_ws_;    // started
  runtime::AdoptedTask ws_task_;              // ... and listed as a task
  bool awaiting_request_ = true;              // reading a request's header, or waiting for it
  bool answering_head_ = false;               // the request being answered is a HEAD
  std::optional<Clock::time_point> idle_since_;  // waiting, and no byte of it received
  std::optional<Clock::time_point> header_since_;  // its header arriving, not whole yet
  // Where it is listed among the waiting sessions (State), while it is.
  std::optional<std::list<HttpSession*>::iterator> waiting_at_;
  bool waiting_idle_ = false;
  bool closing_ = false;
};

namespace {

// At max_connections: closes a connection so that a new one can be served, as
// nginx and HAProxy do: the one idle longest (waiting for a request, none of
// it received), else the one whose request header has been arriving longest,
// once for more than header_grace (a real client's header comes in one
// packet). A client that holds connections open between requests, without
// sending one, or with a byte of one and no more, cannot keep others out.
// False when no connection may go.
bool make_room(HttpServer::State& state) {
  const auto now = Clock::now();
  // Each list is in the order its sessions began to wait: its front has
  // waited longest.
  HttpSession* chosen = nullptr;
  if (!state.idle_waiting.empty()) {
    chosen = state.idle_waiting.front();
  } else if (!state.header_waiting.empty()) {
    auto* oldest = state.header_waiting.front();
    const auto waiting = oldest->waiting();
    if (waiting && now - waiting->since > state.limits.header_grace) chosen = oldest;
  }
  const auto found = chosen ? chosen->waiting() : std::nullopt;
  if (!found) return false;
  const auto chosen_waiting = *found;
  const auto waited = runtime::format_duration(
      std::chrono::duration_cast<runtime::Duration>(now - chosen_waiting.since));
  if (chosen_waiting.idle) {
    ++state.idle_closed;
    state.idle_closed_total.inc();
    // What a server at its limit does (nginx silently): no warning.
    state.room_log.log(spdlog::level::info, "idle closed",
                       fmt::format("{}: {} connections open, the limit: closed the connection "
                                   "from {}, idle for {}, to admit a new one",
                                   state.name, state.placed(), chosen->remote(), waited));
  } else {
    ++state.slow_headers_closed;
    state.slow_headers_closed_total.inc();
    state.room_log.log(
        spdlog::level::warn, "slow header closed",
        fmt::format("{}: {} connections open, the limit: closed the connection from {}, its "
                    "request header still incomplete after {}, to admit a new one",
                    state.name, state.placed(), chosen->remote(), waited));
  }
  chosen->close_to_make_room();
  return true;
}

// Beyond max_connections a new connection is admitted to wait for its
// request header: only a client that has sent one may take the place of
// another connection. A client that opens connection after connection and
// sends nothing whole thus never closes anyone's.
void admit(const std::shared_ptr<HttpServer::State>& state, TcpSocket socket) {
  // Small frames (acks, streamed pieces) must not wait for Nagle's algorithm.
  error_code ignored;
  socket.set_option(tcp::no_delay(true), ignored);
  const bool placed = state->placed() < state->limits.max_connections;
  if (!placed && state->beyond_limit.size() >= max_beyond_limit) {
    // The one that has waited longest for its header gives way.
    state->note_refused();
    state->beyond_limit.begin()->second->close_to_make_room();
  }
  auto session = std::make_shared<HttpSession>(state, std::move(socket), placed);
  state->supervisor->spawn(fmt::format("{} connection {}", state->name, session->remote()),
                           state->name + ".connections", HttpSession::run(session));
}

// A CheckedHandler's call: its state as parameters, which live in the frame.
awaitable<HttpResponse> checked_call(
    std::function<std::optional<HttpResponse>(const Request&)> check, HttpHandler handler,
    Request& request) {
  if (check) {
    if (auto refusal = check(request)) co_return std::move(*refusal);
  }
  co_return co_await handler(request);
}

enum class SpareAccept { accepted, nothing_waiting, no_spare };

// Out of descriptors: the spare one is given up so that the connection
// waiting in the backlog is taken (and served, or refused) instead of waiting
// there. Asio tries an accept before waiting for one, so "out of
// descriptors" may also mean that nothing is waiting yet.
SpareAccept accept_with_spare(const std::shared_ptr<HttpServer::State>& state) {
  if (state->spare < 0) return SpareAccept::no_spare;
  state->release_spare();
  TcpSocket socket(state->supervisor->io_executor());
  error_code ec;
  state->acceptor->accept(socket, ec);  // non-blocking: would_block when nothing waits
  if (ec) {
    state->take_spare();
    return ec == asio::error::would_block || ec == asio::error::try_again
               ? SpareAccept::nothing_waiting
               : SpareAccept::no_spare;
  }
  admit(state, std::move(socket));
  return SpareAccept::accepted;
}

void note_accept_failure(HttpServer::State& state, const error_code& ec, runtime::Duration backoff) {
  ++state.accept_failures;
  state.accept_failures_total.inc();
  ++state.unlogged_failures;
  const auto now = Clock::now();
  if (state.last_failure_line && now - *state.last_failure_line < std::chrono::seconds(1)) return;
  log::warn("{}: accept failed {} time(s) since the last report: {}; {} connections open; "
            "retrying in {}",
            state.name, state.unlogged_failures, ec.message(), state.sessions.size(),
            runtime::format_duration(backoff));
  state.unlogged_failures = 0;
  state.last_failure_line = now;
}

awaitable<void> accept_loop(std::shared_ptr<HttpServer::State> state) {
  auto backoff = first_accept_backoff;
  for (;;) {
    if (!state->acceptor || !state->acceptor->is_open()) co_return;
    state->take_spare();
    auto [ec, socket] =
        co_await state->acceptor->async_accept(state->supervisor->io_executor(), use_tuple);
    if (ec) {
      if (runtime::is_cancellation(ec) || !state->acceptor->is_open()) co_return;
      if (is_descriptor_shortage(ec)) {
        const auto outcome = accept_with_spare(state);
        if (outcome == SpareAccept::accepted) continue;
        if (outcome == SpareAccept::nothing_waiting) {
          // Wait for a connection without trying to accept it meanwhile.
          auto [wait_ec] = co_await state->acceptor->async_wait(tcp::acceptor::wait_read, use_tuple);
          if (runtime::is_cancellation(wait_ec) || !state->acceptor->is_open()) co_return;
          continue;
        }
      }
      note_accept_failure(*state, ec, backoff);
      // One of this server's connections closing frees a descriptor: try again
      // then rather than at the end of the backoff.
      co_await state->changed.wait_until(runtime::Deadline::after(backoff));
      if (co_await runtime::cancelled()) co_return;
      backoff = std::min<runtime::Duration>(backoff * 2, last_accept_backoff);
      continue;
    }
    if (state->accept_failures > 0) {
      log::info("{}: accepting again after {} failed attempt(s)", state->name,
                state->accept_failures);
      state->accept_failures = 0;
      state->unlogged_failures = 0;
      state->last_failure_line.reset();
    }
    backoff = first_accept_backoff;
    admit(state, std::move(socket));
  }
}

}  // namespace

awaitable<HttpResponse> CheckedHandler::operator()(Request& request) const {
  return checked_call(check, handler, request);
}

HttpServer::HttpServer(runtime::Supervisor& supervisor, std::string name,
                       std::shared_ptr<const Router> router, HttpLimits limits)
    : supervisor_(supervisor),
      state_(std::make_shared<State>(supervisor, std::move(name), std::move(router), limits)) {}

HttpServer::~HttpServer() {
  stop_accepting();
  force_close_all();
}

void HttpServer::start(tcp::acceptor acceptor) {
  error_code ec;
  auto endpoint = acceptor.local_endpoint(ec);
  if (!ec) endpoint_ = endpoint;
  // The accept with the spare descriptor must not block when the waiting
  // connection has gone meanwhile.
  acceptor.non_blocking(true, ec);
  state_->acceptor.emplace(std::move(acceptor));
  state_->take_spare();
  accept_task_ = supervisor_.spawn(state_->name + " accept loop", state_->name + ".accept",
                                   accept_loop(state_));
}

void HttpServer::serve(TcpSocket socket) { admit(state_, std::move(socket)); }

void HttpServer::set_router(std::shared_ptr<const Router> router) {
  state_->router = std::move(router);
}

void HttpServer::set_limits(HttpLimits limits) { state_->limits = limits; }

bool HttpServer::accepting() const { return state_->acceptor && state_->acceptor->is_open(); }

std::size_t HttpServer::connections() const { return state_->sessions.size(); }

std::uint64_t HttpServer::refused_connections() const { return state_->refused; }

std::uint64_t HttpServer::idle_connections_closed() const {
  return state_->idle_closed;
}

std::uint64_t HttpServer::slow_headers_closed() const { return state_->slow_headers_closed; }

std::uint64_t HttpServer::accept_failures() const { return state_->accept_failures; }

void HttpServer::stop_accepting() {
  if (state_->acceptor && state_->acceptor->is_open()) {
    error_code ignored;
    state_->acceptor->close(ignored);
  }
  state_->release_spare();
}

void HttpServer::force_close_all() {
  // force_close may end a session before the loop moves on; iterate over a copy.
  auto sessions = state_->sessions;
  for (auto& [id, session] : sessions)
    if (state_->sessions.count(id)) session->force_close();
}

awaitable<void> HttpServer::stop(runtime::Deadline deadline) {
  stop_accepting();
  // close_gracefully may end a session synchronously; iterate over a copy.
  auto sessions = state_->sessions;
  for (auto& [id, session] : sessions)
    if (state_->sessions.count(id)) session->close_gracefully();
  // A deadline that had already passed (a shutdown whose drain used it up)
  // still lets the close frames just asked for be written: the clients are
  // told "going away" instead of being cut off.
  if (deadline.passed()) deadline = runtime::Deadline::after(close_flush_time);
  const auto finished = [this] { return state_->sessions.empty(); };
  // A peer that has not answered its close frame within close_answer_time
  // will not (a frozen client, a phone gone out of reach): its socket is
  // closed then rather than at the deadline with all the others, since closing
  // thousands of sockets at once takes the kernel a fifth of a second.
  auto next_look = Clock::now() + close_answer_time;
  while (!finished() && !deadline.passed()) {
    co_await state_->changed.wait_until(deadline.min(runtime::Deadline(next_look)));
    if (Clock::now() < next_look) continue;
    next_look = Clock::now() + close_answer_time / 2;
    const auto since = Clock::now() - close_answer_time;
    auto sessions = state_->sessions;
    for (auto& [id, session] : sessions)
      if (state_->sessions.count(id) && session->close_unanswered_since(since)) session->force_close();
  }
  if (!finished()) {
    log::info("{}: {} connection(s) did not finish in time; closing them", state_->name,
              state_->sessions.size());
    force_close_all();
  }
  // Every socket is closed now; give the connection tasks a moment to unwind so
  // their memory is released before stop() returns. A moment only: a session
  // whose handler waits on something that cannot be cancelled (a blocking
  // read of a hung file system) would otherwise hold the shutdown past its
  // bound; it is released when the process ends.
  const auto unwind = runtime::Deadline::after(std::chrono::milliseconds(20));
  while (!finished() && !unwind.passed()) co_await state_->changed.wait_until(unwind);
}

}  // namespace mooring::net
