#include "admin/admin_api.hpp"

namespace mooring::admin {

namespace http = net::http;
namespace json = boost::json;
using net::HttpResponse;
using net::Request;

namespace {

std::optional<HttpResponse> check_token(const std::string& token, const Request& request) {
  std::string_view presented = request.bearer_token();
  std::optional<std::string> from_query;
  if (presented.empty() && (from_query = request.query_param("token"))) presented = *from_query;
  if (!presented.empty() && net::constant_time_equal(presented, token)) return std::nullopt;
  auto res = net::error_response(
      http::status::unauthorized, "unauthorized",
      presented.empty() ? "this endpoint needs \"Authorization: Bearer <admin token>\""
                        : "the admin token is wrong",
      request);
  res.set(http::field::www_authenticate, "Bearer");
  return res;
}

using SyncHandler = std::function<HttpResponse(Request&)>;

// Coroutines take their state as parameters, never as lambda captures: a
// capture dies with the lambda object, a parameter lives in the frame.
awaitable<HttpResponse> respond(std::shared_ptr<const AdminContext> ctx, SyncHandler handler,
                                bool needs_token, Request& request) {
  if (needs_token) {
    if (auto refusal = check_token(ctx->token, request)) co_return std::move(*refusal);
  }
  co_return handler(request);
}

}  // namespace

std::shared_ptr<const net::Router> make_admin_router(AdminContext context) {
  auto ctx = std::make_shared<const AdminContext>(std::move(context));
  auto router = std::make_shared<net::Router>();

  auto open = [ctx](SyncHandler handler) {
    return [ctx, handler = std::move(handler)](Request& request) {
      return respond(ctx, handler, false, request);
    };
  };
  auto authed = [ctx](SyncHandler handler) {
    return [ctx, handler = std::move(handler)](Request& request) {
      return respond(ctx, handler, true, request);
    };
  };

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

  router->add_websocket(
      "/api/events",
      net::WsRoute{
          [ctx](Request& request) { return check_token(ctx->token, request); },
          [ctx](const std::shared_ptr<net::WsConnection>& connection, Request&) {
            ctx->events->subscribe(connection);
          },
          ctx->events_options});
  return router;
}

}  // namespace mooring::admin
