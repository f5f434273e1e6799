#include "chat/user_token.hpp"

#include <boost/json.hpp>
#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

namespace mooring::chat {
namespace {

namespace json = boost::json;
using namespace std::chrono_literals;

const std::string key = "0123456789abcdef0123456789abcdef-signing";
const auto now = SystemClock::time_point(std::chrono::seconds(1'800'000'000));

// A token assembled by hand, as any JWT library would make it.
std::string make_token(const json::object& header, const json::object& claims,
                       std::string_view signing_key = key) {
  const auto signed_part =
      base64url_encode(json::serialize(header)) + "." + base64url_encode(json::serialize(claims));
  unsigned char digest[32];
  unsigned int length = 0;
  HMAC(EVP_sha256(), signing_key.data(), static_cast<int>(signing_key.size()),
       reinterpret_cast<const unsigned char*>(signed_part.data()), signed_part.size(), digest,
       &length);
  return signed_part + "." +
         base64url_encode(std::string_view(reinterpret_cast<char*>(digest), length));
}

json::object hs256() {
  return {{"alg", "HS256"}, {"typ", "JWT"}};
}
std::int64_t at(SystemClock::time_point t) {
  return std::chrono::duration_cast<std::chrono::seconds>(t.time_since_epoch()).count();
}

TokenProblem problem(const TokenCheck& check) {
  EXPECT_FALSE(check.has_value());
  return check.has_value() ? TokenProblem::malformed : check.error();
}

TEST(UserToken, AMintedTokenIsValidForItsUserUntilItExpires) {
  const auto token = mint_user_token("alice", key, now + 24h, now);
  const auto claims = verify_user_token(token, key, now);
  ASSERT_TRUE(claims.has_value()) << describe(claims.error());
  EXPECT_EQ(claims->user_id, "alice");
  EXPECT_EQ(claims->expires, now + 24h);
  EXPECT_TRUE(verify_user_token(token, key, now + 24h - 1s).has_value());
  EXPECT_EQ(problem(verify_user_token(token, key, now + 24h)), TokenProblem::expired);
  EXPECT_THROW(mint_user_token("alice", "", now + 1h, now), std::invalid_argument);
}

TEST(UserToken, ATokenFromAnotherLibraryIsAccepted) {
  // Header keys in another order, a fractional exp, extra claims.
  const auto token =
      make_token({{"typ", "JWT"}, {"alg", "HS256"}}, {{"exp", static_cast<double>(at(now)) + 0.5},
                                                      {"sub", "bob"},
                                                      {"iat", at(now)},
                                                      {"nbf", at(now) - 10},
                                                      {"aud", "anything"}});
  const auto claims = verify_user_token(token, key, now);
  ASSERT_TRUE(claims.has_value()) << describe(claims.error());
  EXPECT_EQ(claims->user_id, "bob");
}

TEST(UserToken, EveryKindOfBadTokenIsRefusedForItsReason) {
  const json::object claims{{"sub", "alice"}, {"exp", at(now + 1h)}};
  EXPECT_EQ(problem(verify_user_token(
                make_token(hs256(), claims, "another key of enough length!!!!"), key, now)),
            TokenProblem::bad_signature);
  EXPECT_EQ(problem(verify_user_token(make_token(hs256(), claims), "", now)), TokenProblem::no_key);
  EXPECT_EQ(problem(verify_user_token(make_token({{"alg", "none"}}, claims), key, now)),
            TokenProblem::unsupported_algorithm);
  EXPECT_EQ(problem(verify_user_token(make_token({{"alg", "HS512"}}, claims), key, now)),
            TokenProblem::unsupported_algorithm);
  EXPECT_EQ(problem(verify_user_token(make_token({{"alg", "hs256"}}, claims), key, now)),
            TokenProblem::unsupported_algorithm);
  EXPECT_EQ(problem(verify_user_token(make_token({{"typ", "JWT"}}, claims), key, now)),
            TokenProblem::unsupported_algorithm);
  EXPECT_EQ(problem(verify_user_token(
                make_token({{"alg", "HS256"}, {"crit", json::array{"b64"}}}, claims), key, now)),
            TokenProblem::unsupported_algorithm);
  // alg none with an empty signature, the classic forgery.
  const auto unsigned_token = base64url_encode(R"({"alg":"none","typ":"JWT"})") + "." +
                              base64url_encode(json::serialize(claims)) + ".";
  EXPECT_EQ(problem(verify_user_token(unsigned_token, key, now)),
            TokenProblem::unsupported_algorithm);
  EXPECT_EQ(problem(verify_user_token(make_token(hs256(), {{"sub", "alice"}, {"exp", at(now)}}),
                                      key, now)),
            TokenProblem::expired);
  EXPECT_EQ(problem(verify_user_token(make_token(hs256(), {{"sub", "alice"}}), key, now)),
            TokenProblem::missing_expiry);
  EXPECT_EQ(problem(verify_user_token(make_token(hs256(), {{"exp", at(now + 1h)}}), key, now)),
            TokenProblem::missing_subject);
  EXPECT_EQ(problem(verify_user_token(make_token(hs256(), {{"sub", 42}, {"exp", at(now + 1h)}}),
                                      key, now)),
            TokenProblem::malformed);
  EXPECT_EQ(problem(verify_user_token(make_token(hs256(), {{"sub", "a"}, {"exp", "tomorrow"}}), key,
                                      now)),
            TokenProblem::malformed);
  EXPECT_EQ(problem(verify_user_token(
                make_token(hs256(), {{"sub", "a"}, {"exp", at(now + 1h)}, {"nbf", at(now + 60s)}}),
                key, now)),
            TokenProblem::not_yet_valid);
}

TEST(UserToken, ATamperedTokenIsRefused) {
  const auto token = mint_user_token("alice", key, now + 1h, now);
  const auto first_dot = token.find('.');
  const auto second_dot = token.find('.', first_dot + 1);
  // The claims of another user under alice's signature.
  const auto mallory =
      base64url_encode(json::serialize(json::object{{"sub", "mallory"}, {"exp", at(now + 1h)}}));
  EXPECT_EQ(problem(verify_user_token(
                token.substr(0, first_dot + 1) + mallory + token.substr(second_dot), key, now)),
            TokenProblem::bad_signature);
  // Each character of the signature changed in turn.
  for (std::size_t i = second_dot + 1; i < token.size(); ++i) {
    auto changed = token;
    changed[i] = changed[i] == 'A' ? 'B' : 'A';
    const auto check = verify_user_token(changed, key, now);
    EXPECT_FALSE(check.has_value()) << "signature character " << i;
  }
  // A signature cut short or padded.
  EXPECT_FALSE(verify_user_token(token.substr(0, token.size() - 1), key, now).has_value());
  EXPECT_FALSE(verify_user_token(token + "=", key, now).has_value());
}

TEST(UserToken, GarbageIsMalformedAndNeverThrows) {
  for (const std::string& garbage :
       {std::string(), std::string("."), std::string(".."), std::string("..."),
        std::string("a.b.c"), std::string("a.b"), std::string("a.b.c.d"),
        std::string("!!!.???.***"), std::string(5000, 'a'), std::string("\xff\xfe.\x00\x01.zz", 9),
        base64url_encode("[1,2]") + ".e30.AAAA",
        base64url_encode("{\"alg\":\"HS256\"") + ".e30.AAAA"}) {
    SCOPED_TRACE(garbage);
    TokenCheck check = TokenCheck(boost::system::in_place_error, TokenProblem::no_key);
    ASSERT_NO_THROW(check = verify_user_token(garbage, key, now));
    EXPECT_FALSE(check.has_value());
    if (!check) {
      EXPECT_TRUE(check.error() == TokenProblem::malformed ||
                  check.error() == TokenProblem::unsupported_algorithm)
          << describe(check.error());
    }
  }
}

TEST(UserToken, Base64UrlRoundTripsAndRefusesNonCanonicalText) {
  for (const std::string& bytes : {std::string(), std::string("f"), std::string("fo"),
                                  std::string("foo"), std::string("\xff\xfe\x00\x01", 4)}) {
    const auto text = base64url_encode(bytes);
    EXPECT_EQ(text.find('='), std::string::npos);
    ASSERT_TRUE(base64url_decode(text).has_value());
    EXPECT_EQ(*base64url_decode(text), bytes);
  }
  EXPECT_EQ(base64url_encode("\xfb\xff"), "-_8");
  EXPECT_FALSE(base64url_decode("Zg==").has_value());
  EXPECT_FALSE(base64url_decode("Zh").has_value());  // leftover bits set
  EXPECT_FALSE(base64url_decode("Z").has_value());
  EXPECT_FALSE(base64url_decode("a+b/").has_value());
}

}  // namespace
}  // namespace mooring::chat
