#include "net/router.hpp"

#include <gtest/gtest.h>

namespace mooring::net {
namespace {

awaitable<HttpResponse> ok(Request& request) {
  co_return text_response(http::status::ok, "ok", "text/plain", request);
}

TEST(Router, MatchesLiteralAndParameterSegments) {
  Router router;
  router.add(http::verb::get, "/api/sessions/{user}/messages", ok);
  router.add(http::verb::post, "/api/tasks/{id}/cancel", ok);
  auto m = router.match(http::verb::get, "/api/sessions/alice.1/messages");
  ASSERT_NE(m.route, nullptr);
  EXPECT_EQ(m.params.at("user"), "alice.1");
  EXPECT_EQ(router.match(http::verb::post, "/api/tasks/7/cancel").params.at("id"), "7");
}

TEST(Router, UnknownPathIs404AndWrongMethodIs405) {
  Router router;
  router.add(http::verb::get, "/healthz", ok);
  auto missing = router.match(http::verb::get, "/nope");
  EXPECT_EQ(missing.route, nullptr);
  EXPECT_EQ(missing.status, http::status::not_found);
  auto wrong = router.match(http::verb::delete_, "/healthz");
  EXPECT_EQ(wrong.route, nullptr);
  EXPECT_EQ(wrong.status, http::status::method_not_allowed);
  EXPECT_EQ(wrong.allow, "GET, HEAD");
}

TEST(Router, HeadTakesAGetRouteButNotAWebSocketOne) {
  Router router;
  router.add(http::verb::get, "/healthz", ok);
  router.add(http::verb::put, "/healthz", ok);
  router.add_websocket("/ws", WsRoute{});
  EXPECT_NE(router.match(http::verb::head, "/healthz").route, nullptr);
  const auto ws = router.match(http::verb::head, "/ws");
  EXPECT_EQ(ws.route, nullptr);
  EXPECT_EQ(ws.status, http::status::method_not_allowed);
  EXPECT_EQ(ws.allow, "GET");
  EXPECT_EQ(router.match(http::verb::post, "/healthz").allow, "GET, HEAD, PUT");
}

TEST(Http, OriginHostIsTheLowerCaseHostWithoutPortOrScheme) {
  EXPECT_EQ(origin_host("https://Chat.Example:8443"), "chat.example");
  EXPECT_EQ(origin_host("http://127.0.0.1"), "127.0.0.1");
  EXPECT_EQ(origin_host("127.0.0.1:8080"), "127.0.0.1");
  EXPECT_EQ(origin_host("[::1]:8080"), "[::1]");
  EXPECT_EQ(origin_host("http://[::1]"), "[::1]");
  EXPECT_EQ(origin_host("[::1"), "");
  EXPECT_EQ(origin_host("[::1]x"), "");
  EXPECT_EQ(origin_host("https://a.example/path"), "");
  EXPECT_EQ(origin_host("https://user@a.example"), "");
  EXPECT_EQ(origin_host(""), "");
}

TEST(Http, AnOriginIsAdmittedFromTheRequestsHostOrTheList) {
  const auto request = [](std::vector<std::pair<http::field, std::string>> headers) {
    Request r;
    for (auto& [field, value] : headers) r.message.insert(field, value);
    return r;
  };
  using F = http::field;
  const std::vector<std::string> none;
  EXPECT_TRUE(origin_admitted(request({{F::host, "127.0.0.1:8080"}}), none)) << "no origin";
  EXPECT_TRUE(origin_admitted(
      request({{F::host, "127.0.0.1:8080"}, {F::origin, "http://127.0.0.1:8081"}}), none));
  EXPECT_TRUE(origin_admitted(
      request({{F::host, "LOCALHOST:8080"}, {F::origin, "http://localhost:5173"}}), none));
  EXPECT_FALSE(origin_admitted(
      request({{F::host, "127.0.0.1:8080"}, {F::origin, "https://evil.example"}}), none));
  EXPECT_FALSE(origin_admitted(request({{F::host, "null"}, {F::origin, "null"}}), none));
  // A site pointing its own name at 127.0.0.1 sends that name as both.
  EXPECT_FALSE(origin_admitted(
      request({{F::host, "attacker.example:8080"}, {F::origin, "http://attacker.example"}}),
      none))
      << "DNS rebinding";
  EXPECT_TRUE(origin_admitted(
      request({{F::host, "[::1]:8080"}, {F::origin, "http://[::1]:8081"}}), none));
  EXPECT_TRUE(origin_admitted(
      request({{F::host, "chat.example"}, {F::origin, "https://chat.example"}}),
      {"https://chat.example"}))
      << "a name, listed";
  EXPECT_FALSE(origin_admitted(request({{F::origin, "http://127.0.0.1"}}), none)) << "no host";
  EXPECT_FALSE(origin_admitted(request({{F::host, "127.0.0.1:8080"},
                                        {F::host, "evil.example"},
                                        {F::origin, "http://evil.example"}}),
                               none))
      << "two hosts";
  EXPECT_FALSE(origin_admitted(request({{F::host, "127.0.0.1:8080"},
                                        {F::origin, "http://127.0.0.1"},
                                        {F::origin, "https://evil.example"}}),
                               none))
      << "two origins";
  const std::vector<std::string> listed{"https://chat.example"};
  EXPECT_TRUE(origin_admitted(
      request({{F::host, "127.0.0.1:8080"}, {F::origin, "https://chat.example"}}), listed));
  EXPECT_FALSE(origin_admitted(
      request({{F::host, "127.0.0.1:8080"}, {F::origin, "https://chat.example.evil"}}), listed));
  EXPECT_TRUE(origin_admitted(request({{F::host, "h"}, {F::origin, "null"}}), {"*"}));
}

TEST(Http, ValidOriginsAreASchemeAndAHostOrAStar) {
  for (const char* good : {"*", "https://chat.example", "http://127.0.0.1:8080", "http://[::1]:80"})
    EXPECT_TRUE(valid_origin(good)) << good;
  for (const char* bad : {"", "chat.example", "https://chat.example/", "https://", "ftp://a",
                          "https://a.example/chat", "https://a.example:", "null", "**",
                          "https://a:abc", "https://a:123456", "http://[::1]x"})
    EXPECT_FALSE(valid_origin(bad)) << bad;
}

TEST(Http, ConstantTimeEqualComparesWholeSecrets) {
  EXPECT_TRUE(constant_time_equal("secret-token", "secret-token"));
  EXPECT_FALSE(constant_time_equal("secret-token", "secret-tokeN"));
  EXPECT_FALSE(constant_time_equal("secret-token", "secret"));
  EXPECT_FALSE(constant_time_equal("", "x"));
}

}  // namespace
}  // namespace mooring::net
