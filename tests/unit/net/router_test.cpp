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
}

TEST(Http, ConstantTimeEqualComparesWholeSecrets) {
  EXPECT_TRUE(constant_time_equal("secret-token", "secret-token"));
  EXPECT_FALSE(constant_time_equal("secret-token", "secret-tokeN"));
  EXPECT_FALSE(constant_time_equal("secret-token", "secret"));
  EXPECT_FALSE(constant_time_equal("", "x"));
}

}  // namespace
}  // namespace mooring::net
