#include "net/http.hpp"

#include "runtime/log_limiter.hpp"
#include "runtime/metrics.hpp"

#include <boost/url/parse.hpp>
#include <fmt/format.h>

#include <algorithm>
#include <cctype>

namespace mooring::net {

std::string_view Request::path() const {
  std::string_view target = message.target();
  return target.substr(0, target.find('?'));
}

std::optional<std::string> Request::query_param(std::string_view name) const {
  auto parsed = boost::urls::parse_origin_form(message.target());
  if (!parsed) return std::nullopt;
  for (auto param : parsed->params())
    if (param.key == name) return std::string(param.value);
  return std::nullopt;
}

std::string_view Request::authorization(std::string_view scheme) const {
  auto it = message.find(http::field::authorization);
  if (it == message.end()) return {};
  std::string_view value = it->value();
  if (value.size() <= scheme.size() + 1 || value[scheme.size()] != ' ') return {};
  for (std::size_t i = 0; i < scheme.size(); ++i)
    if (std::tolower(static_cast<unsigned char>(value[i])) !=
        std::tolower(static_cast<unsigned char>(scheme[i])))
      return {};
  return value.substr(scheme.size() + 1);
}

std::string Request::presented_token() const {
  if (auto bearer = bearer_token(); !bearer.empty()) return std::string(bearer);
  return query_param("token").value_or("");
}

HttpResponse text_response(http::status status, std::string body, std::string_view content_type,
                           const Request& request) {
  HttpResponse res{status, request.message.version()};
  res.set(http::field::server, "mooring");
  res.set(http::field::content_type, content_type);
  res.set(http::field::cache_control, "no-store");
  res.keep_alive(request.message.keep_alive());
  res.body() = std::move(body);
  res.prepare_payload();
  return res;
}

HttpResponse json_response(http::status status, const json::value& body, const Request& request) {
  return text_response(status, json::serialize(body), "application/json", request);
}

HttpResponse error_response(http::status status, std::string_view code, std::string_view message,
                            unsigned version, bool keep_alive) {
  HttpResponse res{status, version};
  res.set(http::field::server, "mooring");
  res.set(http::field::content_type, "application/json");
  res.set(http::field::cache_control, "no-store");
  res.keep_alive(keep_alive);
  res.body() = json::serialize(json::object{{"error", {{"code", code}, {"message", message}}}});
  res.prepare_payload();
  return res;
}

HttpResponse error_response(http::status status, std::string_view code, std::string_view message,
                            const Request& request) {
  return error_response(status, code, message, request.message.version(),
                        request.message.keep_alive());
}

bool constant_time_equal(std::string_view a, std::string_view b) {
  // The length is not secret (tokens have a fixed format); the content is.
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  const std::size_t n = std::min(a.size(), b.size());
  for (std::size_t i = 0; i < n; ++i)
    diff |= static_cast<unsigned char>(a[i]) ^ static_cast<unsigned char>(b[i]);
  return diff == 0;
}

void note_wrong_token(std::string_view listener, const Request& request) {
  runtime::metrics()
      .counter("mooring_wrong_tokens_total", "Requests refused for a wrong token, by listener.",
               {{"listener", std::string(listener)}})
      .inc();
  thread_local runtime::LogLimiter limiter(runtime::LogLimiter::Options{.max_kinds = 4});
  limiter.log(spdlog::level::warn, listener,
              fmt::format("{}: refused a wrong token from {}; if that is not one of yours, "
                          "someone is guessing (mooring_wrong_tokens_total counts them)",
                          listener, request.remote));
}

namespace {
bool equal_ignoring_case(std::string_view a, std::string_view b) {
  return a.size() == b.size() &&
         std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) ==
                  std::tolower(static_cast<unsigned char>(y));
         });
}

bool web_scheme(std::string_view origin) {
  const auto end = origin.find("://");
  return end != std::string_view::npos &&
         (equal_ignoring_case(origin.substr(0, end), "http") ||
          equal_ignoring_case(origin.substr(0, end), "https"));
}
}  // namespace

std::string origin_host(std::string_view text) {
  if (const auto scheme = text.find("://"); scheme != std::string_view::npos)
    text.remove_prefix(scheme + 3);
  if (text.find_first_of("/?#@ \t") != std::string_view::npos) return {};
  std::string_view host;
  if (text.starts_with('[')) {
    const auto close = text.find(']');
    if (close == std::string_view::npos) return {};
    host = text.substr(0, close + 1);
    text.remove_prefix(close + 1);
    if (!text.empty() && !text.starts_with(':')) return {};
  } else {
    host = text.substr(0, text.find(':'));
  }
  std::string lower(host);
  for (auto& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return lower;
}

// A host no DNS answer can move: an IP address or localhost. A page of a name
// its owner can point at 127.0.0.1 (DNS rebinding) shares that name with the
// Host it sends, so the name alone proves nothing.
bool fixed_host(std::string_view host) {
  if (host == "localhost" || host.starts_with('[')) return true;
  return !host.empty() && std::all_of(host.begin(), host.end(), [](char c) {
    return (c >= '0' && c <= '9') || c == '.';
  });
}

bool valid_origin(std::string_view origin) {
  if (origin == "*") return true;
  if (!web_scheme(origin) || origin_host(origin).empty()) return false;
  // After the host, nothing or a port of digits.
  const auto rest = origin.substr(origin.find("://") + 3);
  const auto host_end = rest.starts_with('[') ? rest.find(']') + 1 : rest.find(':');
  if (host_end == std::string_view::npos || host_end == rest.size()) return true;
  const auto port = rest.substr(host_end + 1);
  return rest[host_end] == ':' && !port.empty() && port.size() <= 5 &&
         std::all_of(port.begin(), port.end(), [](char c) { return c >= '0' && c <= '9'; });
}

bool origin_admitted(const Request& request, const std::vector<std::string>& allowed) {
  const auto& headers = request.message;
  const auto named = headers.count(http::field::origin);
  if (named == 0) return true;
  if (named > 1) return false;
  const std::string_view origin = headers[http::field::origin];
  for (const auto& entry : allowed)
    if (entry == "*" || equal_ignoring_case(entry, origin)) return true;
  if (headers.count(http::field::host) != 1 || !web_scheme(origin)) return false;
  const auto host = origin_host(origin);
  return fixed_host(host) && host == origin_host(headers[http::field::host]);
}

bool host_admitted(const HttpRequest& header, const std::vector<std::string>& names) {
  const auto count = header.count(http::field::host);
  if (count == 0) return true;
  if (count > 1) return false;
  const auto host = origin_host(header[http::field::host]);
  if (host.empty()) return false;
  if (fixed_host(host)) return true;
  return std::any_of(names.begin(), names.end(),
                     [&host](const std::string& name) { return equal_ignoring_case(name, host); });
}

// Why no client could ever present `token`, or nothing when one can. HTTP
// strips spaces and tabs at both ends of a header value, a control character
// cannot be sent in a header at all, and a non-ASCII character reaches mooring
// as whatever bytes the client's encoding makes of it (a browser sends "é" as
// one Latin-1 byte, not the file's two UTF-8 bytes): such a token would lock
// every client out, across restarts too, since the file keeps it. The message
// says where the character is, never the token: it is a secret.
std::optional<std::string> unpresentable_token(std::string_view token) {
  for (std::size_t i = 0; i < token.size(); ++i) {
    const auto c = static_cast<unsigned char>(token[i]);
    if (c < 0x20 || c == 0x7f) {
      const std::string name = c == '\t'                ? "a tab"
                               : c == '\n' || c == '\r' ? "a line break"
                                                        : fmt::format("U+{:04X}", c);
      return fmt::format(
          "holds a control character ({}) at character {} of {}, which no HTTP "
          "header can carry; use printable ASCII characters only",
          name, i + 1, token.size());
    }
    // Every character before this one is ASCII, so i + 1 counts characters.
    if (c >= 0x80)
      return fmt::format(
          "holds a non-ASCII character at character {}, which clients send in "
          "encodings of their own, so it would not match; use printable ASCII "
          "characters only",
          i + 1);
  }
  if (token.starts_with(' ') || token.ends_with(' '))
    return "starts or ends with a space, which HTTP strips from a header, so no client could "
           "present this token; remove the space";
  return std::nullopt;
}

}  // namespace mooring::net
