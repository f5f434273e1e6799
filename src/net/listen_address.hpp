// A listening address as written in the configuration: "host:port", where host
// is an IPv4 literal, a bracketed IPv6 literal ("[::1]:8080") or "localhost",
// and port 0 asks the kernel for an ephemeral port.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace mooring::net {

struct ListenAddress {
  std::string host;  // as written, without brackets: "127.0.0.1", "::1", "localhost"
  std::uint16_t port = 0;

  // "127.0.0.1:8080", "[::1]:8080", "localhost:0".
  std::string to_string() const;
  friend bool operator==(const ListenAddress&, const ListenAddress&) = default;
};

// Parses "host:port". On failure returns nullopt and sets `error` to a phrase
// that completes "... is not a valid address: <error>".
std::optional<ListenAddress> parse_listen_address(std::string_view text, std::string& error);

}  // namespace mooring::net
