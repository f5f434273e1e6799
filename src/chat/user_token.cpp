#include "chat/user_token.hpp"

#include <boost/json.hpp>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <array>
#include <cmath>
#include <stdexcept>

namespace mooring::chat {

namespace json = boost::json;

namespace {

constexpr std::string_view alphabet =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

int sextet(char c) {
  const auto at = alphabet.find(c);
  return at == std::string_view::npos ? -1 : static_cast<int>(at);
}

using Digest = std::array<unsigned char, 32>;

Digest hmac_sha256(std::string_view key, std::string_view data) {
  Digest digest{};
  unsigned int length = 0;
  HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
       reinterpret_cast<const unsigned char*>(data.data()), data.size(), digest.data(), &length);
  return digest;
}

// The JSON object in one base64url part of a token, or nullopt.
std::optional<json::object> decode_object(std::string_view part) {
  auto bytes = base64url_decode(part);
  if (!bytes) return std::nullopt;
  boost::system::error_code ec;
  json::parse_options options;
  options.max_depth = 16;
  auto value = json::parse(*bytes, ec, {}, options);
  if (ec || !value.is_object()) return std::nullopt;
  return std::move(value.get_object());
}

// A NumericDate (seconds since the epoch, possibly with a fraction).
std::optional<double> numeric_date(const json::value& value) {
  if (value.is_int64()) return static_cast<double>(value.get_int64());
  if (value.is_uint64()) return static_cast<double>(value.get_uint64());
  if (value.is_double() && std::isfinite(value.get_double())) return value.get_double();
  return std::nullopt;
}

double seconds_since_epoch(SystemClock::time_point t) {
  return std::chrono::duration<double>(t.time_since_epoch()).count();
}

}  // namespace

std::string_view describe(TokenProblem problem) {
  switch (problem) {
    case TokenProblem::malformed:
      return "the token is not a well-formed JWT";
    case TokenProblem::unsupported_algorithm:
      return "the token is not signed with HS256";
    case TokenProblem::bad_signature:
      return "the token's signature does not match";
    case TokenProblem::no_key:
      return "no signing key is configured";
    case TokenProblem::missing_subject:
      return "the token names no user (sub)";
    case TokenProblem::missing_expiry:
      return "the token has no expiry (exp)";
    case TokenProblem::expired:
      return "the token has expired";
    case TokenProblem::not_yet_valid:
      return "the token is not valid yet (nbf)";
  }
  return "the token was refused";
}

std::string base64url_encode(std::string_view bytes) {
  std::string out;
  out.reserve((bytes.size() * 4 + 2) / 3);
  std::size_t i = 0;
  for (; i + 3 <= bytes.size(); i += 3) {
    const auto n = (static_cast<unsigned char>(bytes[i]) << 16) |
                   (static_cast<unsigned char>(bytes[i + 1]) << 8) |
                   static_cast<unsigned char>(bytes[i + 2]);
    out += alphabet[(n >> 18) & 63];
    out += alphabet[(n >> 12) & 63];
    out += alphabet[(n >> 6) & 63];
    out += alphabet[n & 63];
  }
  if (const auto left = bytes.size() - i; left > 0) {
    unsigned n = static_cast<unsigned char>(bytes[i]) << 16;
    if (left == 2) n |= static_cast<unsigned char>(bytes[i + 1]) << 8;
    out += alphabet[(n >> 18) & 63];
    out += alphabet[(n >> 12) & 63];
    if (left == 2) out += alphabet[(n >> 6) & 63];
  }
  return out;
}

std::optional<std::string> base64url_decode(std::string_view text) {
  if (text.size() % 4 == 1) return std::nullopt;
  std::string out;
  out.reserve(text.size() * 3 / 4);
  unsigned buffer = 0;
  int bits = 0;
  for (char c : text) {
    const int value = sextet(c);
    if (value < 0) return std::nullopt;
    buffer = (buffer << 6) | static_cast<unsigned>(value);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += static_cast<char>((buffer >> bits) & 0xFF);
    }
  }
  // Canonical only: the bits left over must be zero, so one token has one spelling.
  if ((buffer & ((1u << bits) - 1)) != 0) return std::nullopt;
  return out;
}

TokenCheck verify_user_token(std::string_view token, std::string_view key,
                             SystemClock::time_point now) {
  using boost::system::in_place_error;
  if (key.empty()) return TokenCheck(in_place_error, TokenProblem::no_key);
  if (token.empty() || token.size() > max_user_token_bytes)
    return TokenCheck(in_place_error, TokenProblem::malformed);
  const auto first_dot = token.find('.');
  const auto second_dot =
      first_dot == std::string_view::npos ? first_dot : token.find('.', first_dot + 1);
  if (second_dot == std::string_view::npos ||
      token.find('.', second_dot + 1) != std::string_view::npos)
    return TokenCheck(in_place_error, TokenProblem::malformed);
  const auto signed_part = token.substr(0, second_dot);

  // The algorithm is ours to choose, not the token's: anything but HS256 is refused
  // before the signature is looked at.
  const auto header = decode_object(token.substr(0, first_dot));
  if (!header) return TokenCheck(in_place_error, TokenProblem::malformed);
  const auto* alg = header->if_contains("alg");
  if (!alg || !alg->is_string() || alg->get_string() != "HS256" || header->contains("crit"))
    return TokenCheck(in_place_error, TokenProblem::unsupported_algorithm);

  const auto signature = base64url_decode(token.substr(second_dot + 1));
  if (!signature) return TokenCheck(in_place_error, TokenProblem::malformed);
  const auto expected = hmac_sha256(key, signed_part);
  if (signature->size() != expected.size() ||
      CRYPTO_memcmp(signature->data(), expected.data(), expected.size()) != 0)
    return TokenCheck(in_place_error, TokenProblem::bad_signature);

  const auto claims = decode_object(token.substr(first_dot + 1, second_dot - first_dot - 1));
  if (!claims) return TokenCheck(in_place_error, TokenProblem::malformed);
  const auto* sub = claims->if_contains("sub");
  if (!sub) return TokenCheck(in_place_error, TokenProblem::missing_subject);
  if (!sub->is_string()) return TokenCheck(in_place_error, TokenProblem::malformed);
  const auto* exp = claims->if_contains("exp");
  if (!exp) return TokenCheck(in_place_error, TokenProblem::missing_expiry);
  const auto expires = numeric_date(*exp);
  if (!expires) return TokenCheck(in_place_error, TokenProblem::malformed);
  const double now_seconds = seconds_since_epoch(now);
  if (now_seconds >= *expires) return TokenCheck(in_place_error, TokenProblem::expired);
  if (const auto* nbf = claims->if_contains("nbf")) {
    const auto not_before = numeric_date(*nbf);
    if (!not_before) return TokenCheck(in_place_error, TokenProblem::malformed);
    if (now_seconds < *not_before) return TokenCheck(in_place_error, TokenProblem::not_yet_valid);
  }
  // Far-future expiries saturate instead of overflowing the time_point.
  const double max_seconds = seconds_since_epoch(SystemClock::time_point::max()) / 2;
  const auto until = std::chrono::duration_cast<SystemClock::duration>(
      std::chrono::duration<double>(std::min(*expires, max_seconds)));
  return UserClaims{std::string(sub->get_string()), SystemClock::time_point(until)};
}

std::string mint_user_token(std::string_view user_id, std::string_view key,
                            SystemClock::time_point expires, SystemClock::time_point issued) {
  if (key.empty()) throw std::invalid_argument("a user token needs a signing key");
  const auto seconds = [](SystemClock::time_point t) {
    return std::chrono::duration_cast<std::chrono::seconds>(t.time_since_epoch()).count();
  };
  const std::string header = base64url_encode(R"({"alg":"HS256","typ":"JWT"})");
  const std::string claims = base64url_encode(json::serialize(
      json::object{{"sub", user_id}, {"iat", seconds(issued)}, {"exp", seconds(expires)}}));
  const std::string signed_part = header + "." + claims;
  const auto signature = hmac_sha256(key, signed_part);
  return signed_part + "." +
         base64url_encode(
             std::string_view(reinterpret_cast<const char*>(signature.data()), signature.size()));
}

}  // namespace mooring::chat
