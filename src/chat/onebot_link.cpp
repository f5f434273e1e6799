#include "chat/onebot_link.hpp"

#include "llm/utf8.hpp"
#include "runtime/cancellation.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>

namespace mooring::chat::onebot {

namespace json = boost::json;
namespace http = net::http;

std::string_view to_string(Role role) {
  switch (role) {
    case Role::universal: return "Universal";
    case Role::api: return "API";
    case Role::event: return "Event";
  }
  return "?";
}

namespace {

std::optional<std::int64_t> decimal(std::string_view text) {
  std::int64_t value = 0;
  if (text.empty() || text.size() > 19) return std::nullopt;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size() || value <= 0) return std::nullopt;
  return value;
}

std::string_view header(const net::Request& request, std::string_view name) {
  auto it = request.message.find(name);
  return it == request.message.end() ? std::string_view{} : std::string_view(it->value());
}

bool equals_ignoring_case(std::string_view a, std::string_view b) {
  return a.size() == b.size() &&
         std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) ==
                  std::tolower(static_cast<unsigned char>(y));
         });
}

}  // namespace

std::variant<Admitted, net::HttpResponse> admit(const net::Request& request,
                                                const LinkOptions& options) {
  const auto refuse = [&request](http::status status, std::string_view code, std::string message) {
    auto response = net::error_response(status, code, message, request);
    response.keep_alive(false);
    return response;
  };
  Admitted admitted;
  const auto given = header(request, "X-Self-ID");
  const auto self = decimal(given);
  if (given.empty())
    return refuse(http::status::bad_request, "missing_self_id",
                  "a OneBot connection needs the header X-Self-ID: <the bot's QQ number>");
  if (!self)
    return refuse(http::status::bad_request, "bad_self_id",
                  "X-Self-ID must be the bot's QQ number (a whole number from 1 up)");
  admitted.self_id = *self;
  const auto role = header(request, "X-Client-Role");
  if (role.empty() || equals_ignoring_case(role, "Universal")) {
    admitted.role = Role::universal;
  } else if (equals_ignoring_case(role, "API")) {
    admitted.role = Role::api;
  } else if (equals_ignoring_case(role, "Event")) {
    admitted.role = Role::event;
  } else {
    return refuse(http::status::bad_request, "bad_role",
                  "X-Client-Role must be Universal, API or Event");
  }
  if (!options.access_token.empty()) {
    // go-cqhttp and its forks send "Authorization: Token <token>".
    std::string presented(request.bearer_token());
    if (presented.empty()) presented = request.authorization("Token");
    if (presented.empty()) presented = request.query_param("access_token").value_or("");
    if (presented.empty())
      return refuse(http::status::unauthorized, "unauthorized",
                    "this OneBot endpoint needs the access token (Authorization: Bearer or "
                    "Token, or ?access_token=)");
    if (!net::constant_time_equal(presented, options.access_token))
      return refuse(http::status::forbidden, "forbidden", "the access token is wrong");
  }
  if (!options.self_ids.empty() &&
      std::find(options.self_ids.begin(), options.self_ids.end(), *self) == options.self_ids.end())
    return refuse(http::status::forbidden, "unknown_self_id",
                  fmt::format("bot account {} is not in onebot.self_ids", *self));
  return admitted;
}

std::string echo_key(const json::value& echo) {
  if (echo.is_string()) return std::string(echo.as_string());
  if (echo.is_int64()) return std::to_string(echo.as_int64());
  if (echo.is_uint64()) return std::to_string(echo.as_uint64());
  return json::serialize(echo);
}

namespace {

// Every string of `value` (not its keys) made valid UTF-8: the marks
// mark_lone_surrogates left become U+FFFD.
void repair_strings(json::value& value) {
  if (auto* string = value.if_string()) {
    llm::SurrogateJoiner marks;  // a mark becomes one U+FFFD
    auto text = marks.feed(*string);
    text += marks.finish();
    *string = llm::repair_utf8(text);
  } else if (auto* array = value.if_array()) {
    for (auto& item : *array) repair_strings(item);
  } else if (auto* object = value.if_object()) {
    for (auto& item : *object) repair_strings(item.value());
  }
}

// A frame's JSON. A lone UTF-16 surrogate escape ("\ud83d" alone, which
// Node's JSON.stringify writes for a character cut in half, in a message or
// a nickname) is read as U+FFFD rather than failing the whole frame.
json::value parse_frame(std::string_view text, error_code& ec) {
  const auto marked = llm::mark_lone_surrogates(text);
  if (!marked) return json::parse(text, ec);
  json::parse_options lenient;
  lenient.allow_invalid_utf8 = true;  // only the marks can be: a text frame is UTF-8
  auto value = json::parse(*marked, ec, json::storage_ptr(), lenient);
  if (!ec) repair_strings(value);
  return value;
}

}  // namespace

std::variant<Event, Answer, Unreadable> sort_frame(std::string_view text) {
  error_code ec;
  auto value = parse_frame(text, ec);
  if (ec) return Unreadable{fmt::format("not JSON: {}", ec.message())};
  auto* object = value.if_object();
  if (!object) return Unreadable{"not a JSON object"};
  if (object->contains("post_type")) return Event{std::move(*object)};
  const auto* echo = object->if_contains("echo");
  if (!echo || echo->is_null()) return Unreadable{"neither an event nor the answer to a call"};
  auto key = echo_key(*echo);
  return Answer{std::move(key), std::move(*object)};
}

ApiCalls::ApiCalls(asio::any_io_executor executor, Send send)
    : executor_(std::move(executor)), send_(std::move(send)) {}

ApiCalls::~ApiCalls() { fail_all("the connection is gone"); }

void ApiCalls::reading_paused(bool paused) {
  if (paused && !paused_since_) {
    paused_since_ = Clock::now();
  } else if (!paused && paused_since_) {
    paused_before_ += Clock::now() - *paused_since_;
    paused_since_.reset();
  }
}

Clock::duration ApiCalls::time_paused() const {
  if (!paused_since_) return paused_before_;
  return paused_before_ + (Clock::now() - *paused_since_);
}

namespace {

CallResult call_failed(CallError::Kind kind, std::string message, std::string echo = {}) {
  return CallResult(boost::system::in_place_error,
                    CallError{kind, 0, std::move(message), std::move(echo)});
}

// A call's number is its echo (mooring's own calls are numbered in order).
std::uint64_t call_number(std::string_view echo) {
  std::uint64_t number = 0;
  std::from_chars(echo.data(), echo.data() + echo.size(), number);
  return number;
}

}  // namespace

awaitable<CallResult> ApiCalls::call(std::string action, json::object params,
                                     runtime::Duration timeout) {
  return send_and_wait(std::move(action), std::move(params), timeout, false);
}

awaitable<CallResult> ApiCalls::call_keeping_late(std::string action, json::object params,
                                                  runtime::Duration timeout) {
  return send_and_wait(std::move(action), std::move(params), timeout, true);
}

awaitable<CallResult> ApiCalls::late_answer(std::string echo, runtime::Duration timeout) {
  auto it = pending_.find(echo);
  if (it == pending_.end())
    co_return call_failed(CallError::Kind::disconnected, "the call is no longer known");
  auto pending = it->second;
  co_return co_await wait(std::move(echo), std::move(pending), "the call", timeout, true);
}

void ApiCalls::forget(std::string_view echo) {
  if (auto it = pending_.find(echo); it != pending_.end()) pending_.erase(it);
}

bool ApiCalls::send_answered_after(std::string_view echo) const {
  return newest_send_answered_ > call_number(echo);
}

awaitable<CallResult> ApiCalls::send_and_wait(std::string action, json::object params,
                                              runtime::Duration timeout, bool keep_late) {
  std::string echo = std::to_string(next_echo_++);
  auto pending = std::make_shared<Pending>(executor_);
  pending->send = keep_late;
  pending_.emplace(echo, pending);
  std::string frame = json::serialize(
      json::object{{"action", action}, {"params", std::move(params)}, {"echo", echo}});
  if (!send_(std::move(frame))) {
    pending_.erase(echo);
    co_return call_failed(CallError::Kind::not_sent, "the connection did not take the call");
  }
  co_return co_await wait(std::move(echo), std::move(pending), action, timeout, keep_late);
}

awaitable<CallResult> ApiCalls::wait(std::string echo, std::shared_ptr<Pending> pending,
                                     std::string_view action, runtime::Duration timeout,
                                     bool keep_late) {
  // The entry goes however the wait ends (a cancellation throws), unless the
  // call timed out and is kept for its late answer. `this` may be gone once
  // a result came (fail_all() in the destructor): touched only while the
  // call still waits.
  struct Entry {
    ApiCalls& calls;
    const std::string& echo;
    const Pending& pending;
    bool keep = false;
    ~Entry() {
      if (!keep && !pending.result) calls.forget(echo);
    }
  } entry{*this, echo, *pending};
  // Waited for until `timeout` has passed, less the time the connection was
  // not read meanwhile: the answer may wait behind messages in its socket.
  const auto sent_at = Clock::now();
  const auto paused_at_send = time_paused();
  bool cancelled = false;
  for (;;) {
    if (pending->result || cancelled) break;
    const auto paused = time_paused() - paused_at_send;
    auto until = sent_at + timeout + paused;
    if (Clock::now() >= until) break;
    // While the connection is not read the time left stands still: the
    // answer wakes the call, else it looks again a whole timeout later.
    if (paused_since_) until = std::max(until, Clock::now() + timeout);
    co_await pending->done.wait_until(runtime::Deadline(until));
    cancelled = co_await runtime::cancelled();
  }
  if (pending->result) co_return std::move(*pending->result);
  if (cancelled) co_return call_failed(CallError::Kind::disconnected, "the call was cancelled");
  auto message = fmt::format("{} got no answer within {}", action,
                             runtime::format_duration(timeout));
  if (!keep_late) co_return call_failed(CallError::Kind::timeout, std::move(message));
  entry.keep = true;
  co_return call_failed(CallError::Kind::timeout, std::move(message), echo);
}

bool ApiCalls::answer(const Answer& answer) {
  auto it = pending_.find(answer.echo);
  if (it == pending_.end()) return false;
  auto pending = std::move(it->second);
  if (pending->send) {
    ++sends_answered_;
    newest_send_answered_ = std::max(newest_send_answered_, call_number(answer.echo));
  }
  pending_.erase(it);
  const auto& object = answer.object;
  std::int64_t retcode = -1;
  if (const auto* code = object.if_contains("retcode"); code && code->is_number()) {
    error_code ec;
    retcode = code->to_number<std::int64_t>(ec);
    if (ec) retcode = -1;
  }
  // OneBot 11 pairs retcode 0 with status "ok" and 1 with "async"; an
  // answer whose status says "failed" failed, whatever its retcode.
  const auto* status = object.if_contains("status");
  const auto* status_text = status ? status->if_string() : nullptr;
  const bool says_failed = status_text && *status_text == "failed";
  const bool ok = !says_failed &&
                  (retcode == 0 || retcode == 1 ||
                   (retcode == -1 && status_text && (*status_text == "ok" || *status_text == "async")));
  if (ok) {
    const auto* data = object.if_contains("data");
    pending->result.emplace(data ? *data : json::value(nullptr));
  } else {
    std::string message;
    for (const char* key : {"wording", "msg", "message"}) {
      if (const auto* text = object.if_contains(key); text && text->is_string() && !text->as_string().empty()) {
        message = std::string(text->as_string()).substr(0, 300);
        break;
      }
    }
    pending->result.emplace(boost::system::in_place_error,
                            CallError{CallError::Kind::failed, retcode, std::move(message)});
  }
  pending->done.notify_all();
  return true;
}

void ApiCalls::fail_all(std::string_view why) {
  auto pending = std::exchange(pending_, {});
  for (auto& [echo, call] : pending) {
    call->result.emplace(boost::system::in_place_error,
                         CallError{CallError::Kind::disconnected, 0, std::string(why)});
    call->done.notify_all();
  }
}

}  // namespace mooring::chat::onebot
