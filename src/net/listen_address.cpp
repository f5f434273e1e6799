#include "net/listen_address.hpp"

#include "runtime/log.hpp"

#include <fmt/format.h>

#include <boost/asio/ip/address.hpp>

namespace mooring::net {
namespace {

constexpr std::string_view example = "(e.g. \"127.0.0.1:8080\", \"[::1]:8080\", \"localhost:0\")";

// A piece of the text as an error quotes it: shortened, control characters
// escaped, so that any input gives a short, printable error.
std::string quoted(std::string_view text) { return runtime::shorten(text, 64); }

// Spaces and control characters are never part of an address. NUL in
// particular must be refused here: the address functions below take C
// strings and would stop reading at it, accepting "127.0.0.1\0junk".
bool has_space_or_control(std::string_view host) {
  for (char c : host) {
    const auto byte = static_cast<unsigned char>(c);
    if (byte <= 0x20 || byte == 0x7f) return true;
  }
  return false;
}

std::optional<std::uint16_t> parse_port(std::string_view text) {
  if (text.empty() || text.size() > 5) return std::nullopt;
  unsigned value = 0;
  for (char c : text) {
    if (c < '0' || c > '9') return std::nullopt;
    value = value * 10 + static_cast<unsigned>(c - '0');
  }
  if (value > 65535) return std::nullopt;
  return static_cast<std::uint16_t>(value);
}

bool is_ip_literal(std::string_view host, bool want_v6) {
  boost::system::error_code ec;
  const auto address = boost::asio::ip::make_address(std::string(host), ec);
  return !ec && address.is_v6() == want_v6;
}

}  // namespace

std::string ListenAddress::to_string() const {
  if (host.find(':') != std::string::npos) return fmt::format("[{}]:{}", host, port);
  return fmt::format("{}:{}", host, port);
}

std::optional<ListenAddress> parse_listen_address(std::string_view text, std::string& error) {
  std::string_view host;
  std::string_view port_text;
  bool bracketed = false;

  if (text.starts_with('[')) {
    const auto close = text.find(']');
    if (close == std::string_view::npos) {
      error = "missing \"]\" after the IPv6 address";
      return std::nullopt;
    }
    host = text.substr(1, close - 1);
    const auto rest = text.substr(close + 1);
    if (!rest.starts_with(':')) {
      error = fmt::format("missing \":port\" after \"]\" {}", example);
      return std::nullopt;
    }
    port_text = rest.substr(1);
    bracketed = true;
  } else {
    const auto colon = text.rfind(':');
    if (colon == std::string_view::npos) {
      error = fmt::format("missing \":port\" {}", example);
      return std::nullopt;
    }
    host = text.substr(0, colon);
    port_text = text.substr(colon + 1);
  }

  if (host.empty()) {
    error = fmt::format("missing host before the port {}", example);
    return std::nullopt;
  }
  const auto port = parse_port(port_text);
  if (!port) {
    error = fmt::format("port \"{}\" is not a number from 0 to 65535", quoted(port_text));
    return std::nullopt;
  }

  if (has_space_or_control(host)) {
    error = fmt::format("host \"{}\" contains a space or a control character", quoted(host));
    return std::nullopt;
  }

  if (bracketed) {
    if (!is_ip_literal(host, true)) {
      error = fmt::format("\"{}\" is not an IPv6 address", quoted(host));
      return std::nullopt;
    }
  } else if (host.find(':') != std::string_view::npos) {
    // "::1:8080" is ambiguous (is 8080 the port or part of the address?), so
    // IPv6 is only accepted in brackets, as in URLs.
    error = fmt::format("an IPv6 address needs brackets, as in \"[{}]:{}\"", quoted(host),
                        quoted(port_text));
    return std::nullopt;
  } else if (host != "localhost" && !is_ip_literal(host, false)) {
    // Listening on a name would bind whatever DNS answers today; only the one
    // name every system defines is accepted.
    error = fmt::format(
        "\"{}\" is not an IPv4 address, a bracketed IPv6 address or \"localhost\" "
        "(other host names are not resolved for listening)",
        quoted(host));
    return std::nullopt;
  }

  return ListenAddress{std::string(host), *port};
}

}  // namespace mooring::net
