#include "admin/admin_api.hpp"

#include "admin/web_ui.hpp"
#include "net/http_server.hpp"
#include "runtime/log.hpp"
#include "runtime/metrics.hpp"

#include <boost/url/pct_string_view.hpp>
#include <fmt/format.h>

#include <algorithm>

namespace mooring::admin {

namespace http = net::http;
namespace json = boost::json;
using net::HttpResponse;
using net::Request;

namespace {

// What an operator may cut off from the task list: a connection, a reply, a
// OneBot send. The rest (accept loops, the cursor writer, a conversation's
// inbox, the watchdog, heartbeat watches) is the host's own plumbing, which
// nothing would restart.
bool cancellable(std::string_view group) {
  return group.ends_with(".connections") || group.ends_with(".refusals") ||
         group == "chat.replies" || group == "onebot.send";
}

// Where a request may carry the admin token. A token in a URL ends up in
// browser history, proxy logs and Referer headers, and a link can make a
// browser send it: the query string is accepted only where a browser cannot
// send a header (the events WebSocket), which changes nothing.
enum class TokenFrom { header, header_or_query };

// Of the admin server's 256 connections at once (app/components.cpp).
constexpr std::size_t max_event_streams = 64;

std::optional<HttpResponse> check_token(const std::string& token, const Request& request,
                                        TokenFrom from = TokenFrom::header) {
  const std::string presented = from == TokenFrom::header ? std::string(request.bearer_token())
                                                          : request.presented_token();
  // Refused with a right header too: the URL that carries it is logged and
  // kept wherever it went, and the client is told before it learns to rely on it.
  const bool in_query = from == TokenFrom::header && request.query_param("token").has_value();
  const bool right = !presented.empty() && net::constant_time_equal(presented, token);
  if (right && !in_query) return std::nullopt;
  if (!presented.empty() && !right) net::note_wrong_token("admin", request);
  auto res = net::error_response(
      http::status::unauthorized, "unauthorized",
      in_query        ? "send the admin token as \"Authorization: Bearer <admin token>\"; "
                        "?token= is accepted only by /api/events"
      : presented.empty() ? "this endpoint needs \"Authorization: Bearer <admin token>\""
                          : "the admin token is wrong",
      request);
  res.set(http::field::www_authenticate, "Bearer");
  return res;
}

using SyncHandler = std::function<HttpResponse(Request&)>;

// Coroutines take their state as parameters, never as lambda captures: a
// capture dies with the lambda object, a parameter lives in the frame.
awaitable<HttpResponse> respond(SyncHandler handler, Request& request) {
  co_return handler(request);
}

using Context = std::shared_ptr<const AdminContext>;
using AsyncHandler = std::function<awaitable<HttpResponse>(Context, Request&)>;

awaitable<HttpResponse> respond_async(Context ctx, AsyncHandler handler, Request& request) {
  co_return co_await handler(ctx, request);
}

// A handler behind the admin token. The server checks the token on the
// header, before it reads a body (up to 1 MiB for PUT /api/config): a client
// without it gets its 401 without making the server hold its body.
net::CheckedHandler behind_token(const Context& ctx, net::HttpHandler handler) {
  return net::CheckedHandler{
      [ctx](const Request& request) { return check_token(ctx->token, request); },
      std::move(handler)};
}

// A bounded integer query parameter; `fallback` when absent or unreadable.
// `name` from the query string: `fallback` when it is absent, `max` at most;
// nullopt when it is not a whole number of at least `min` (bad_query says so).
std::optional<std::size_t> query_number(const Request& request, std::string_view name,
                                        std::size_t fallback, std::size_t min, std::size_t max) {
  auto text = request.query_param(name);
  if (!text) return fallback;
  if (text->empty() || !std::all_of(text->begin(), text->end(),
                                    [](char c) { return c >= '0' && c <= '9'; }))
    return std::nullopt;
  const auto digits = text->find_first_not_of('0');
  std::size_t value = 0;
  if (digits != std::string::npos)
    value = text->size() - digits > 18 ? max : std::min<std::size_t>(std::stoull(*text), max);
  if (value < min) return std::nullopt;
  return value;
}

HttpResponse bad_query(const Request& request, std::string_view name, std::size_t min,
                       std::size_t max) {
  return net::error_response(
      http::status::bad_request, "bad_query",
      fmt::format("?{}= must be a whole number from {} to {}", name, min, max), request);
}

HttpResponse unavailable(const Request& request,
                         std::string_view why = "the store is not open yet; try again shortly") {
  return net::error_response(http::status::service_unavailable, "unavailable", why, request);
}

HttpResponse store_failure(const store::StoreError& error, const Request& request) {
  return net::error_response(http::status::internal_server_error, "store_error", error.message,
                             request);
}

json::object session_json(const store::Session& s) {
  return {{"user_id", s.user_id},
          {"created_ms", s.created_ms},
          {"last_seen_ms", s.last_seen_ms},
          {"delivered_seq", s.delivered_seq}};
}

json::object message_json(const store::Message& m) {
  json::array images;
  // Images can be megabytes of base64: the API shows what they are, not their bytes.
  for (const auto& image : m.images) images.emplace_back(runtime::shorten(image, 96));
  json::object out{{"seq", m.seq},
                   {"role", store::to_string(m.role)},
                   {"content", m.content},
                   {"images", std::move(images)},
                   {"status", store::to_string(m.status)},
                   {"created_ms", m.created_ms}};
  out["client_id"] = m.client_id ? json::value(*m.client_id) : json::value(nullptr);
  out["reply_to"] = m.reply_to ? json::value(*m.reply_to) : json::value(nullptr);
  return out;
}

// PUT /api/config and POST /api/config/validate: the whole text, with the
// generation it was edited from (If-Match), if any.
awaitable<HttpResponse> take_config(Context ctx, Request& request, bool commit) {
  if (!ctx->apply_config)
    co_return unavailable(request, "this server does not apply configurations");
  const auto& body = request.message.body();
  if (body.find_first_not_of(" \t\r\n") == std::string::npos)
    co_return net::error_response(
        http::status::bad_request, "empty_config",
        "the body is empty; send the whole configuration (an empty one would set every key "
        "back to its default, tokens included)",
        request);
  std::optional<std::uint64_t> expected;
  // "*" matches whatever configuration is served (RFC 9110 13.1.1): no check.
  if (auto it = request.message.find(http::field::if_match);
      it != request.message.end() && it->value() != "*") {
    std::string_view tag = it->value();
    if (tag.size() >= 2 && tag.front() == '"' && tag.back() == '"')
      tag = tag.substr(1, tag.size() - 2);
    const bool numeric = !tag.empty() && tag.size() < 20 &&
                         std::all_of(tag.begin(), tag.end(), [](char c) { return c >= '0' && c <= '9'; });
    if (!numeric)
      co_return net::error_response(http::status::bad_request, "bad_if_match",
                                    "If-Match must be the generation from GET /api/config's ETag, "
                                    "for example \"7\" (or *, for whatever is served)",
                                    request);
    expected = std::stoull(std::string(tag));
  }
  auto outcome = co_await ctx->apply_config(body, expected, commit);
  co_return net::json_response(outcome.status, outcome.body, request);
}

awaitable<HttpResponse> put_config(Context ctx, Request& request) {
  co_return co_await take_config(std::move(ctx), request, true);
}

awaitable<HttpResponse> validate_config(Context ctx, Request& request) {
  co_return co_await take_config(std::move(ctx), request, false);
}

awaitable<HttpResponse> reload_config(Context ctx, Request& request) {
  if (!ctx->reload_config)
    co_return unavailable(request, "this server does not apply configurations");
  auto outcome = co_await ctx->reload_config();
  co_return net::json_response(outcome.status, outcome.body, request);
}

awaitable<HttpResponse> list_sessions(Context ctx, Request& request) {
  if (!ctx->store) co_return unavailable(request);
  constexpr std::size_t most_offset = std::size_t{1} << 40;
  const auto limit = query_number(request, "limit", 100, 1, 1000);
  if (!limit) co_return bad_query(request, "limit", 1, 1000);
  const auto offset = query_number(request, "offset", 0, 0, most_offset);
  if (!offset) co_return bad_query(request, "offset", 0, most_offset);
  auto sessions = co_await ctx->store->list_sessions(*limit, *offset);
  if (!sessions) co_return store_failure(sessions.error(), request);
  json::array out;
  for (const auto& s : *sessions) out.push_back(session_json(s));
  co_return net::json_response(http::status::ok, json::object{{"sessions", std::move(out)}},
                               request);
}

// The text and images one page of GET /api/sessions/<user>/messages carries
// at most (its newest message whatever its size).
constexpr std::size_t page_bytes = 4 * 1024 * 1024;

awaitable<HttpResponse> list_messages(Context ctx, Request& request) {
  if (!ctx->store) co_return unavailable(request);
  // The path segment as sent: clients (the web panel among them) percent-encode
  // a session id ("qq:1:private:42" becomes "qq%3A1%3Aprivate%3A42").
  const auto encoded = boost::urls::make_pct_string_view(request.params.at("user"));
  if (!encoded)
    co_return net::error_response(http::status::bad_request, "bad_user",
                                  fmt::format("\"{}\" is not a valid percent-encoded session id",
                                              runtime::shorten(request.params.at("user"), 64)),
                                  request);
  const std::string user = encoded->decode();
  // Echoed in the answer, which is JSON: no session has an id that is not UTF-8.
  if (!runtime::is_utf8(user))
    co_return net::error_response(http::status::bad_request, "bad_user",
                                  fmt::format("\"{}\" is not a session id (not UTF-8)",
                                              runtime::shorten(user, 64)),
                                  request);
  constexpr std::size_t most_seq = std::size_t{1} << 62;
  const auto limit = query_number(request, "limit", 100, 1, 1000);
  if (!limit) co_return bad_query(request, "limit", 1, 1000);
  const auto before_seq = query_number(request, "before", 0, 0, most_seq);
  if (!before_seq) co_return bad_query(request, "before", 0, most_seq);
  std::optional<store::Seq> before;
  if (*before_seq > 0) before = static_cast<store::Seq>(*before_seq);
  // A page is bounded in bytes too: a chat user decides how large messages
  // are, and 1,000 of 1 MiB each would be 1 GB read, copied and sent at once.
  auto messages = co_await ctx->store->messages(user, *limit, before, page_bytes);
  if (!messages) co_return store_failure(messages.error(), request);
  bool more = messages->size() == *limit;
  if (!more && !messages->empty()) {
    auto older = co_await ctx->store->messages(user, 1, messages->front().seq, 0);
    more = older && !older->empty();
  }
  json::array out;
  for (const auto& m : *messages) out.push_back(message_json(m));
  co_return net::json_response(
      http::status::ok,
      json::object{{"user_id", user}, {"messages", std::move(out)}, {"more", more}}, request);
}

json::array tasks_json(const runtime::Supervisor& supervisor) {
  json::array out;
  const auto now = Clock::now();
  for (const auto& task : supervisor.tasks())
    out.push_back({{"id", task.id},
                   {"name", task.name},
                   {"group", task.group},
                   {"age_ms", std::chrono::duration_cast<std::chrono::milliseconds>(now - task.started).count()},
                   {"cancel_requested", task.cancel_requested}});
  return out;
}

// Prometheus text format from the status document's numbers.
// The host's state as gauges (read from the status document when asked),
// then every counter and histogram the layers keep.
std::string metrics_text(const json::object& status) {
  std::string out;
  const auto gauge = [&out](std::string_view name, std::string_view help, double value) {
    out += fmt::format("# HELP {0} {1}\n# TYPE {0} gauge\n{0} {2}\n", name, help, value);
  };
  const auto number = [&status](std::string_view key) {
    const auto* value = status.if_contains(key);
    if (!value) return 0.0;
    if (value->is_bool()) return value->as_bool() ? 1.0 : 0.0;
    return value->is_number() ? value->to_number<double>() : 0.0;
  };
  gauge("mooring_up", "1 while the process serves.", 1);
  gauge("mooring_ready", "1 when every component is running (as /readyz).", number("ready"));
  gauge("mooring_shutting_down", "1 once the shutdown plan has begun.", number("shutting_down"));
  gauge("mooring_uptime_seconds", "Time since the process started.", number("uptime_ms") / 1000);
  gauge("mooring_config_generation", "The generation of the configuration being served.",
        number("generation"));
  gauge("mooring_tasks", "Background tasks owned by the supervisor.", number("tasks"));
  gauge("mooring_sessions", "Chat sessions in memory.", number("sessions"));
  gauge("mooring_connections", "Open chat connections.", number("connections"));
  gauge("mooring_replies_in_flight", "Replies being generated now.", number("replies_in_flight"));
  gauge("mooring_buffered_bytes",
        "Bytes WebSocket connections hold in messages being received and frames waiting to be "
        "sent (bounded by gateway.max_buffered_bytes).",
        number("buffered_bytes"));
  if (auto* components = status.if_contains("components"); components && components->is_array()) {
    out += "# HELP mooring_component_up 1 when the component is running.\n"
           "# TYPE mooring_component_up gauge\n";
    for (const auto& c : components->as_array()) {
      const auto* object = c.if_object();
      if (!object || !object->contains("name") || !object->at("name").is_string()) continue;
      out += fmt::format("mooring_component_up{{component=\"{}\"}} {}\n",
                         std::string_view(object->at("name").as_string()),
                         object->contains("state") && object->at("state") == "running" ? 1 : 0);
    }
  }
  return out + runtime::metrics().text();
}

}  // namespace

std::shared_ptr<const net::Router> make_admin_router(AdminContext context) {
  auto ctx = std::make_shared<const AdminContext>(std::move(context));
  auto router = std::make_shared<net::Router>();

  auto open = [](SyncHandler handler) {
    return [handler = std::move(handler)](Request& request) { return respond(handler, request); };
  };
  auto authed = [ctx, open](SyncHandler handler) {
    return behind_token(ctx, open(std::move(handler)));
  };

  // Every request, the panel's files and the probes included: a page of
  // another site reaching the API under a name of its own (DNS rebinding)
  // would read what needs no token (/readyz's status document, /metrics) and
  // could guess tokens.
  router->set_screen([ctx](const net::HttpRequest& header) -> std::optional<HttpResponse> {
    if (net::host_admitted(header, ctx->allowed_hosts)) return std::nullopt;
    return net::error_response(
        http::status::misdirected_request, "host_not_allowed",
        fmt::format("the admin API answers requests addressed to an IP address, localhost or a "
                    "name in admin.allowed_hosts, and this one was addressed to \"{}\"; a page "
                    "of another site can point a name at this machine (DNS rebinding): add the "
                    "name to admin.allowed_hosts if it is yours",
                    runtime::shorten(std::string_view(header[http::field::host]), 128)),
        header.version(), false);
  });

  router->add(http::verb::get, "/healthz", open([](Request& request) {
    return net::text_response(http::status::ok, "ok\n", "text/plain", request);
  }));

  router->add(http::verb::get, "/readyz", open([ctx](Request& request) {
    if (ctx->ready()) return net::text_response(http::status::ok, "ready\n", "text/plain", request);
    return net::json_response(http::status::service_unavailable, ctx->status(), request);
  }));

  router->add(http::verb::get, "/api/status", authed([ctx](Request& request) {
    return net::json_response(http::status::ok, ctx->status(), request);
  }));

  router->add(http::verb::get, "/metrics", open([ctx](Request& request) {
    return net::text_response(http::status::ok, metrics_text(ctx->status()),
                              "text/plain; version=0.0.4", request);
  }));

  router->add(http::verb::get, "/api/config", authed([ctx](Request& request) {
    if (!ctx->config_text) return unavailable(request);
    auto res = net::text_response(http::status::ok, ctx->config_text(), "application/toml", request);
    if (ctx->generation) res.set(http::field::etag, fmt::format("\"{}\"", ctx->generation()));
    return res;
  }));

  auto authed_async = [ctx](AsyncHandler handler) {
    return behind_token(ctx, [ctx, handler = std::move(handler)](Request& request) {
      return respond_async(ctx, handler, request);
    });
  };

  router->add(http::verb::put, "/api/config", authed_async(put_config), max_config_bytes);
  router->add(http::verb::post, "/api/reload", authed_async(reload_config));

  router->add(
      http::verb::post, "/api/config/validate", authed_async(validate_config), max_config_bytes);

  router->add(http::verb::get, "/api/tasks", authed([ctx](Request& request) {
    if (!ctx->supervisor) return unavailable(request);
    return net::json_response(http::status::ok, json::object{{"tasks", tasks_json(*ctx->supervisor)}},
                              request);
  }));

  router->add(http::verb::post, "/api/tasks/{id}/cancel", authed([ctx](Request& request) {
    if (!ctx->supervisor) return unavailable(request);
    const auto& text = request.params.at("id");
    runtime::TaskId id = 0;
    const bool numeric = !text.empty() && text.size() < 20 &&
                         std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '9'; });
    if (numeric) id = std::stoull(text);
    const auto* task = numeric ? ctx->supervisor->task(id) : nullptr;
    if (!task)
      return net::error_response(http::status::not_found, "no_such_task",
                                 fmt::format("no running task has id {}", runtime::shorten(text, 40)),
                                 request);
    if (!cancellable(task->group))
      return net::error_response(
          http::status::conflict, "not_cancellable",
          fmt::format("task {} ({}) is part of mooring itself: cancelled alone it would stop "
                      "silently while the status says running. Connections, replies and OneBot "
                      "sends can be cancelled; for the rest change the configuration or restart",
                      id, task->name),
          request);
    ctx->supervisor->cancel(id);  // may end the task, and `task` with it
    return net::json_response(http::status::ok, json::object{{"cancelled", id}}, request);
  }));

  router->add(http::verb::get, "/api/sessions", authed_async(list_sessions));
  router->add(http::verb::get, "/api/sessions/{user}/messages", authed_async(list_messages));

  router->add_websocket(
      "/api/events",
      net::WsRoute{
          [ctx](Request& request) -> std::optional<HttpResponse> {
            if (auto refused = check_token(ctx->token, request, TokenFrom::header_or_query))
              return refused;
            // Each holds one of the admin server's connections: the rest stay
            // for requests, /healthz and /readyz among them.
            if (ctx->events->subscribers() >= max_event_streams)
              return net::error_response(
                  http::status::service_unavailable, "too_many_event_streams",
                  fmt::format("{} event streams are open, as many as the admin server keeps "
                              "(a panel tab holds one); close some and open this one again",
                              max_event_streams),
                  request);
            return std::nullopt;
          },
          [ctx](const std::shared_ptr<net::WsConnection>& connection, Request&) {
            ctx->events->subscribe(connection);
          },
          ctx->events_options});
  add_web_routes(*router);
  return router;
}

}  // namespace mooring::admin
