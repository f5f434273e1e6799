// Signed per-user tokens for the gateway (gateway.auth = "signed"): HS256 JSON
// Web Tokens whose `sub` is the user id and whose `exp` says until when, so any
// web backend can mint one with a standard JWT library and the shared key.
//
// Promises:
// - verify_user_token accepts only alg "HS256" (never "none", never another
//   algorithm chosen by the token), a signature made with `key` (compared in
//   constant time), a string `sub`, a numeric `exp` still in the future and,
//   when present, an `nbf` already past. Anything else is a TokenProblem; it
//   never throws, whatever the bytes.
// - mint_user_token makes a token that verify_user_token accepts until `expires`.
#pragma once

#include <boost/system/result.hpp>

#include <chrono>
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

namespace mooring::chat {

using SystemClock = std::chrono::system_clock;

// A shorter key makes HS256 guessable; the configuration refuses one.
inline constexpr std::size_t min_signing_key_bytes = 32;
// Longer tokens are refused unread.
inline constexpr std::size_t max_user_token_bytes = 4096;

struct UserClaims {
  std::string user_id;  // `sub`
  SystemClock::time_point expires;
};

enum class TokenProblem {
  malformed,              // not three base64url parts of JSON objects, or a claim of the wrong type
  unsupported_algorithm,  // alg is not HS256 ("none" included), or crit names an extension
  bad_signature,
  no_key,  // the gateway has no key to check with
  missing_subject,
  missing_expiry,
  expired,
  not_yet_valid,
};

// For logs and error responses; never contains the token.
std::string_view describe(TokenProblem problem);

using TokenCheck = boost::system::result<UserClaims, TokenProblem>;

TokenCheck verify_user_token(std::string_view token, std::string_view key,
                             SystemClock::time_point now);

// A token for `user_id` valid until `expires`. `key` must not be empty
// (std::invalid_argument otherwise: a caller's bug, not traffic).
std::string mint_user_token(std::string_view user_id, std::string_view key,
                            SystemClock::time_point expires,
                            SystemClock::time_point issued = SystemClock::now());

// The base64url alphabet without padding (RFC 7515), as JWTs use it.
std::string base64url_encode(std::string_view bytes);
// nullopt when `text` is not canonical unpadded base64url.
std::optional<std::string> base64url_decode(std::string_view text);

}  // namespace mooring::chat
