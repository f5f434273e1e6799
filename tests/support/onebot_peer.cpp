#include "support/onebot_peer.hpp"

#include "chat/onebot_message.hpp"
#include "runtime/log.hpp"

#include <cctype>
#include <charconv>
#include <limits>
#include <stdexcept>

namespace mooring::test {

namespace json = boost::json;
namespace onebot = chat::onebot;
using tcp = asio::ip::tcp;

namespace {

constexpr std::size_t kShownFrameBytes = 600;

std::int64_t unix_now() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::chrono::milliseconds left_until(std::chrono::steady_clock::time_point deadline) {
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
      deadline - std::chrono::steady_clock::now());
  return std::max(left, std::chrono::milliseconds(1));
}

std::string percent_encode(std::string_view text) {
  static constexpr char hex[] = "0123456789ABCDEF";
  std::string out;
  for (const char c : text) {
    const auto byte = static_cast<unsigned char>(c);
    if (std::isalnum(byte) || c == '-' || c == '.' || c == '_' || c == '~') {
      out += c;
    } else {
      out += '%';
      out += hex[byte >> 4];
      out += hex[byte & 0x0f];
    }
  }
  return out;
}

std::optional<std::int64_t> parse_decimal(std::string_view text) {
  std::int64_t value = 0;
  const auto* end = text.data() + text.size();
  auto [ptr, ec] = std::from_chars(text.data(), end, value);
  if (ec != std::errc() || ptr != end || text.empty()) return std::nullopt;
  return value;
}

bool is_true(const json::value& value) {
  if (value.is_bool()) return value.as_bool();
  if (value.is_int64()) return value.as_int64() != 0;
  if (value.is_uint64()) return value.as_uint64() != 0;
  if (const auto* text = value.if_string())
    return *text == "true" || *text == "yes" || *text == "1";
  return false;
}

// What raw_message says of a message: the message itself when it is a CQ
// string, else its CQ-string form; empty for what is no message at all (a test
// writing a broken one on purpose).
std::string raw_message_of(const json::value& message) {
  if (const auto* text = message.if_string()) return std::string(*text);
  auto segments = onebot::parse_message(message);
  return segments ? onebot::to_cq_string(*segments) : std::string();
}

std::string describe_action(const OneBotPeer::Action& action) {
  return runtime::shorten(json::serialize(action.frame), kShownFrameBytes);
}

// A TCP stream whose writes can be turned off: once muted, a write reports
// success and sends nothing. The WebSocket above it still reads and parses
// pings and closes (and believes it answers them) while the server hears
// nothing: a half-open peer.
class MutableStream {
 public:
  using executor_type = beast::tcp_stream::executor_type;

  explicit MutableStream(asio::io_context& io) : stream_(io) {}

  executor_type get_executor() { return stream_.get_executor(); }
  beast::tcp_stream& next_layer() { return stream_; }
  const beast::tcp_stream& next_layer() const { return stream_; }
  void mute() { muted_ = true; }

  template <typename Buffers, typename Token>
  auto async_read_some(const Buffers& buffers, Token&& token) {
    return stream_.async_read_some(buffers, std::forward<Token>(token));
  }

  template <typename Buffers, typename Token>
  auto async_write_some(const Buffers& buffers, Token&& token) {
    return asio::async_initiate<Token, void(error_code, std::size_t)>(
        [this](auto handler, const Buffers& buffers) {
          if (!muted_) {
            stream_.async_write_some(buffers, std::move(handler));
            return;
          }
          const auto size = asio::buffer_size(buffers);
          auto executor = asio::get_associated_executor(handler, stream_.get_executor());
          asio::post(executor, [handler = std::move(handler), size]() mutable {
            std::move(handler)(error_code{}, size);
          });
        },
        token, buffers);
  }

 private:
  beast::tcp_stream stream_;
  bool muted_ = false;
};

// The WebSocket closing handshake ends on the TCP stream below (Beast finds
// this by argument-dependent lookup).
template <typename Handler>
void async_teardown(beast::role_type role, MutableStream& stream, Handler&& handler) {
  using beast::async_teardown;
  async_teardown(role, stream.next_layer(), std::forward<Handler>(handler));
}

}  // namespace

// One connection, driven synchronously from the test thread: each operation
// runs on a private io_context until it completes or its time runs out.
struct OneBotPeer::Link {
  asio::io_context io;
  websocket::stream<MutableStream> ws{io};
  beast::flat_buffer buffer;
  std::uint16_t close_code = 0;

  tcp::socket& socket() { return beast::get_lowest_layer(ws).socket(); }

  // Runs `op` (which must outlive the call) until it completes; on timeout
  // cancels what is pending, lets it unwind, and throws.
  void run(awaitable<void> op, std::chrono::milliseconds timeout, const std::string& what) {
    bool done = false;
    std::exception_ptr failure;
    asio::co_spawn(io, std::move(op), [&](std::exception_ptr e) {
      failure = e;
      done = true;
    });
    io.restart();
    io.run_for(timeout);
    if (!done) {
      error_code ignored;
      socket().cancel(ignored);
      io.restart();
      io.run_for(std::chrono::seconds(1));
      if (!done) {
        socket().close(ignored);
        io.restart();
        io.run_for(std::chrono::seconds(1));
      }
      throw std::runtime_error(what + " timed out after " + std::to_string(timeout.count()) +
                               " ms");
    }
    if (failure) std::rethrow_exception(failure);
  }

  int connect(const std::string& address, const std::string& target, const Headers& headers) {
    int status = 0;
    auto op = [&]() -> awaitable<void> {
      auto [host, port] = split_address(address);
      tcp::resolver resolver(io);
      auto endpoints = co_await resolver.async_resolve(host, port, asio::use_awaitable);
      co_await beast::get_lowest_layer(ws).async_connect(endpoints, asio::use_awaitable);
      ws.set_option(websocket::stream_base::decorator([headers](websocket::request_type& req) {
        for (const auto& [name, value] : headers) req.set(name, value);
      }));
      websocket::response_type response;
      auto [ec] = co_await ws.async_handshake(response, address, target, use_tuple);
      // Beast writes 500 into `response` before it reads; only a refusal the
      // server did send carries a status worth returning.
      if (ec && ec != websocket::error::upgrade_declined)
        throw boost::system::system_error(ec, "the WebSocket upgrade got no valid answer");
      status = static_cast<int>(response.result_int());
    };
    run(op(), std::chrono::seconds(10), "the WebSocket upgrade");
    return status;
  }

  void send(const std::string& text) {
    auto op = [&]() -> awaitable<void> {
      ws.text(true);
      co_await ws.async_write(asio::buffer(text), asio::use_awaitable);
    };
    run(op(), std::chrono::seconds(10), "a WebSocket send");
  }

  // The next message, or nullopt when the connection ended.
  std::optional<std::string> read(std::chrono::milliseconds timeout) {
    std::optional<std::string> message;
    auto op = [&]() -> awaitable<void> {
      auto [ec, n] = co_await ws.async_read(buffer, use_tuple);
      if (ec) {
        close_code = ws.reason().code;
        co_return;
      }
      message = beast::buffers_to_string(buffer.data());
      buffer.consume(buffer.size());
    };
    run(op(), timeout, "a WebSocket read");
    return message;
  }

  void close() {
    auto op = [&]() -> awaitable<void> {
      co_await ws.async_close(websocket::close_code::normal, use_tuple);
    };
    run(op(), std::chrono::seconds(10), "a WebSocket close");
  }

  void reset() {
    error_code ignored;
    // A zero linger turns the close into a reset, as a killed process's socket ends.
    socket().set_option(asio::socket_base::linger(true, 0), ignored);
    socket().close(ignored);
  }

  void mute() { ws.next_layer().mute(); }
};

OneBotPeer::OneBotPeer() = default;
OneBotPeer::~OneBotPeer() = default;

int OneBotPeer::connect(const std::string& gateway, std::int64_t self_id, std::string_view role,
                        const std::string& token, bool token_in_query, const std::string& path,
                        Headers extra) {
  link_.reset();
  link_ = std::make_unique<Link>();
  self_id_ = self_id;
  silent_ = false;
  broken_ = false;
  received_.clear();
  skipped_.clear();

  Headers headers;
  if (self_id != 0) headers.emplace_back("X-Self-ID", std::to_string(self_id));
  if (!role.empty()) headers.emplace_back("X-Client-Role", std::string(role));
  std::string target = path;
  if (!token.empty()) {
    if (token_in_query) {
      target += target.find('?') == std::string::npos ? '?' : '&';
      target += "access_token=" + percent_encode(token);
    } else {
      headers.emplace_back("Authorization", "Bearer " + token);
    }
  }
  headers.emplace_back("User-Agent", "OneBot/11");
  for (auto& header : extra) headers.push_back(std::move(header));

  int status = 0;
  try {
    status = link_->connect(gateway, target, headers);
  } catch (...) {
    broken_ = true;
    throw;
  }
  // Events are small frames that must go out at once, as an implementation's are.
  if (status == 101) link_->socket().set_option(tcp::no_delay(true));
  return status;
}

void OneBotPeer::require_open(const char* what) const {
  if (!link_) throw std::logic_error(std::string("OneBotPeer: ") + what + " before connect()");
  if (broken_)
    throw std::logic_error(std::string("OneBotPeer: ") + what +
                           " after an operation on this connection timed out");
  if (silent_) throw std::logic_error(std::string("OneBotPeer: ") + what + " after go_silent()");
}

// --- events -----------------------------------------------------------------

json::object OneBotPeer::event_base(std::string_view post_type) const {
  return json::object{{"time", unix_now()}, {"self_id", self_id_}, {"post_type", post_type}};
}

std::int64_t OneBotPeer::take_message_id(std::optional<std::int64_t> given) {
  if (given) return *given;
  return next_message_id_++;
}

json::object OneBotPeer::message_event(std::string_view post_type, std::string_view message_type,
                                       std::string_view sub_type, std::int64_t user_id,
                                       const json::value& message, std::int64_t message_id) const {
  auto event = event_base(post_type);
  event["message_type"] = message_type;
  event["sub_type"] = sub_type;
  event["message_id"] = message_id;
  event["user_id"] = user_id;
  event["message"] = message;
  event["raw_message"] = raw_message_of(message);
  event["font"] = 0;
  return event;
}

void OneBotPeer::lifecycle_connect() {
  auto event = event_base("meta_event");
  event["meta_event_type"] = "lifecycle";
  event["sub_type"] = "connect";
  send(event);
}

void OneBotPeer::heartbeat(std::int64_t interval_ms) {
  auto event = event_base("meta_event");
  event["meta_event_type"] = "heartbeat";
  event["status"] = json::object{{"online", true}, {"good", true}};
  event["interval"] = interval_ms;
  send(event);
}

std::int64_t OneBotPeer::private_message(std::int64_t user_id, const json::value& message,
                                         std::string nickname,
                                         std::optional<std::int64_t> message_id) {
  const auto id = take_message_id(message_id);
  auto event = message_event("message", "private", "friend", user_id, message, id);
  event["sender"] = json::object{
      {"user_id", user_id}, {"nickname", std::move(nickname)}, {"sex", "unknown"}, {"age", 0}};
  send(event);
  return id;
}

std::int64_t OneBotPeer::group_message(std::int64_t group_id, std::int64_t user_id,
                                       const json::value& message, std::string card,
                                       std::string nickname,
                                       std::optional<std::int64_t> message_id) {
  const auto id = take_message_id(message_id);
  auto event = message_event("message", "group", "normal", user_id, message, id);
  event["group_id"] = group_id;
  event["anonymous"] = nullptr;
  event["sender"] = json::object{{"user_id", user_id},
                                 {"nickname", std::move(nickname)},
                                 {"card", std::move(card)},
                                 {"sex", "unknown"},
                                 {"age", 0},
                                 {"role", "member"}};
  send(event);
  return id;
}

std::int64_t OneBotPeer::message_sent(std::string_view message_type, std::int64_t peer_id,
                                      const json::value& message,
                                      std::optional<std::int64_t> message_id) {
  const bool group = message_type == "group";
  const auto id = take_message_id(message_id);
  auto event = message_event("message_sent", message_type, group ? "normal" : "friend", self_id_,
                             message, id);
  event[group ? "group_id" : "target_id"] = peer_id;
  event["sender"] = json::object{{"user_id", self_id_}, {"nickname", "mooring-bot"}};
  send(event);
  return id;
}

void OneBotPeer::friend_request(std::int64_t user_id, const std::string& comment,
                                const std::string& flag) {
  auto event = event_base("request");
  event["request_type"] = "friend";
  event["user_id"] = user_id;
  event["comment"] = comment;
  event["flag"] = flag;
  send(event);
}

void OneBotPeer::group_request(std::int64_t group_id, std::int64_t user_id,
                               const std::string& sub_type, const std::string& comment,
                               const std::string& flag) {
  auto event = event_base("request");
  event["request_type"] = "group";
  event["sub_type"] = sub_type;
  event["group_id"] = group_id;
  event["user_id"] = user_id;
  event["comment"] = comment;
  event["flag"] = flag;
  send(event);
}

void OneBotPeer::notice(const std::string& notice_type, const json::object& fields) {
  auto event = event_base("notice");
  event["notice_type"] = notice_type;
  for (const auto& field : fields) event[field.key()] = field.value();
  send(event);
}

void OneBotPeer::send(const json::object& frame) {
  send_raw(json::serialize(frame));
}

void OneBotPeer::send_raw(const std::string& text) {
  require_open("send");
  try {
    link_->send(text);
  } catch (...) {
    broken_ = true;
    throw;
  }
}

// --- actions ----------------------------------------------------------------

std::optional<OneBotPeer::Action> OneBotPeer::read_action(const std::string& text) {
  boost::system::error_code ec;
  auto value = json::parse(text, ec);
  if (ec || !value.is_object()) return std::nullopt;
  Action action;
  action.frame = std::move(value.as_object());
  if (const auto* name = action.frame.if_contains("action"); name && name->is_string())
    action.action = std::string(name->as_string());
  if (const auto* params = action.frame.if_contains("params"); params && params->is_object())
    action.params = params->as_object();
  if (const auto* echo = action.frame.if_contains("echo")) action.echo = *echo;
  return action;
}

std::optional<OneBotPeer::Action> OneBotPeer::next_action(std::chrono::milliseconds timeout) {
  require_open("next_action");
  std::optional<std::string> text;
  try {
    text = link_->read(timeout);
  } catch (const std::exception& e) {
    broken_ = true;
    throw std::runtime_error(std::string("no frame from the server: ") + e.what());
  }
  if (!text) return std::nullopt;
  auto action = read_action(*text);
  if (!action)
    throw std::runtime_error("the server sent a frame that is not a JSON object: " +
                             runtime::shorten(*text, kShownFrameBytes));
  received_.push_back(*action);
  return action;
}

std::string OneBotPeer::describe_since(std::size_t first) const {
  std::string out;
  for (std::size_t i = first; i < received_.size(); ++i)
    out += "\n  " + describe_action(received_[i]);
  return out.empty() ? " (nothing)" : out;
}

OneBotPeer::Action OneBotPeer::wait_action(std::string_view name,
                                           std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  const auto first = received_.size();
  for (;;) {
    std::optional<Action> action;
    try {
      action = next_action(left_until(deadline));
    } catch (const std::runtime_error& e) {
      throw std::runtime_error(std::string(e.what()) + " while waiting for action '" +
                               std::string(name) + "'; read so far:" + describe_since(first));
    }
    if (!action)
      throw std::runtime_error("the connection closed with " + std::to_string(close_code()) +
                               " before action '" + std::string(name) +
                               "'; read:" + describe_since(first));
    if (action->action == name) return std::move(*action);
    skipped_.push_back(std::move(*action));
  }
}

std::vector<OneBotPeer::Action> OneBotPeer::serve_until(
    const std::function<bool(const Action&)>& done, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  const auto first = received_.size();
  std::vector<Action> seen;
  for (;;) {
    std::optional<Action> action;
    try {
      action = next_action(left_until(deadline));
    } catch (const std::runtime_error& e) {
      throw std::runtime_error(std::string(e.what()) +
                               " while serving; read so far:" + describe_since(first));
    }
    if (!action)
      throw std::runtime_error("the connection closed with " + std::to_string(close_code()) +
                               " before the awaited action; read:" + describe_since(first));
    seen.push_back(*action);
    if (done(*action)) return seen;
    answer_standard(*action);
  }
}

void OneBotPeer::answer(const Action& action, int retcode, json::value data, EchoForm echo) {
  json::object reply;
  reply["status"] = retcode == 0 ? "ok" : retcode == 1 ? "async" : "failed";
  reply["retcode"] = retcode;
  reply["data"] = std::move(data);
  const char* text = retcode == 0 ? "" : retcode == 1 ? "queued" : "scripted failure";
  reply["message"] = text;
  reply["wording"] = text;

  const auto* given = action.frame.if_contains("echo");
  if (given && echo != EchoForm::omit) {
    json::value written = *given;
    if (echo == EchoForm::as_string && !given->is_string()) {
      written = json::serialize(*given);
    } else if (echo == EchoForm::as_number && given->is_string()) {
      auto number = parse_decimal(given->as_string());
      if (!number)
        throw std::invalid_argument("OneBotPeer: the echo " + json::serialize(*given) +
                                    " cannot be written back as a number");
      written = *number;
    }
    reply["echo"] = std::move(written);
  }
  send(reply);
}

bool OneBotPeer::answer_standard(const Action& action, EchoForm echo) {
  const auto& name = action.action;
  if (name == "get_version_info") {
    answer(
        action, 0,
        json::object{{"app_name", "scripted"}, {"app_version", "1.0"}, {"protocol_version", "v11"}},
        echo);
  } else if (name == "get_login_info") {
    answer(action, 0, json::object{{"user_id", self_id_}, {"nickname", "mooring-bot"}}, echo);
  } else if (name == "get_status") {
    answer(action, 0, json::object{{"online", true}, {"good", true}}, echo);
  } else if (name == "send_private_msg" || name == "send_group_msg" || name == "send_msg") {
    answer(action, 0, json::object{{"message_id", take_message_id(std::nullopt)}}, echo);
  } else {
    return false;
  }
  return true;
}

// --- endings ----------------------------------------------------------------

void OneBotPeer::close() {
  require_open("close");
  try {
    link_->close();
  } catch (...) {
    broken_ = true;
    throw;
  }
}

void OneBotPeer::drop() {
  if (!link_) throw std::logic_error("OneBotPeer: drop before connect()");
  link_->reset();
}

void OneBotPeer::go_silent() {
  require_open("go_silent");
  silent_ = true;
  link_->mute();
}

std::uint16_t OneBotPeer::read_until_closed(std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  const auto first = received_.size();
  for (;;) {
    std::optional<Action> action;
    try {
      action = next_action(left_until(deadline));
    } catch (const std::runtime_error& e) {
      throw std::runtime_error(std::string(e.what()) +
                               " while waiting for the close; read:" + describe_since(first));
    }
    if (!action) return close_code();
    skipped_.push_back(std::move(*action));
  }
}

std::uint16_t OneBotPeer::silent_until_closed(std::chrono::milliseconds timeout) {
  if (!link_) throw std::logic_error("OneBotPeer: silent_until_closed before connect()");
  if (broken_)
    throw std::logic_error("OneBotPeer: silent_until_closed after an operation timed out");
  silent_ = true;
  link_->mute();
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  const auto first = received_.size();
  for (;;) {
    std::optional<std::string> text;
    try {
      text = link_->read(left_until(deadline));
    } catch (const std::exception& e) {
      broken_ = true;
      throw std::runtime_error(std::string("the server did not end the silent connection: ") +
                               e.what() + "; read:" + describe_since(first));
    }
    if (!text) return close_code();
    if (auto action = read_action(*text)) {
      received_.push_back(*action);
      skipped_.push_back(std::move(*action));
    }
  }
}

std::uint16_t OneBotPeer::close_code() const {
  return link_ ? link_->close_code : 0;
}

// --- reading actions ---------------------------------------------------------

namespace {

const json::value& message_param(const OneBotPeer::Action& action) {
  const auto* message = action.params.if_contains("message");
  if (!message)
    throw std::runtime_error("action '" + action.action +
                             "' has no params.message: " + describe_action(action));
  return *message;
}

bool auto_escaped(const OneBotPeer::Action& action) {
  const auto* flag = action.params.if_contains("auto_escape");
  return flag && is_true(*flag);
}

onebot::Segments segments_of(const OneBotPeer::Action& action) {
  auto segments = onebot::parse_message(message_param(action));
  if (!segments)
    throw std::runtime_error("action '" + action.action + "' carries an unreadable message (" +
                             segments.error() + "): " + describe_action(action));
  return std::move(*segments);
}

}  // namespace

std::string message_text(const OneBotPeer::Action& action) {
  const auto& message = message_param(action);
  if (message.is_string() && auto_escaped(action)) return onebot::escape_text(message.as_string());
  return onebot::to_cq_string(segments_of(action));
}

std::string plain_text(const OneBotPeer::Action& action) {
  const auto& message = message_param(action);
  if (message.is_string() && auto_escaped(action)) return std::string(message.as_string());
  std::string text;
  for (const auto& segment : segments_of(action))
    if (segment.type == "text") text += segment.get("text").value_or("");
  return text;
}

std::int64_t int_param(const OneBotPeer::Action& action, std::string_view key) {
  const auto* value = action.params.if_contains(key);
  std::optional<std::int64_t> number;
  if (value && value->is_int64()) number = value->as_int64();
  if (value && value->is_uint64() &&
      value->as_uint64() <= static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()))
    number = static_cast<std::int64_t>(value->as_uint64());
  if (value && value->is_string()) number = parse_decimal(value->as_string());
  if (!number)
    throw std::runtime_error("action '" + action.action + "' has no integer params." +
                             std::string(key) + ": " + describe_action(action));
  return *number;
}

}  // namespace mooring::test
