// Durations and listening addresses as written in the configuration. The whole
// input is tried as a duration and as an address; its first eight bytes are
// also taken as a count of milliseconds to format. Checked after each input:
// - a duration that parses formats to text that parses back to the same value,
//   and that text is what format_duration calls the shortest spelling (no
//   longer than the input's digits and unit); any count formats to non-empty
//   text, which parses back exactly when the count is not negative;
// - an address that parses has a host that is "localhost" or an IP literal
//   with no space or control character (no byte of the input is silently
//   dropped), and formats back to text that parses to the same address;
// - a refused address comes with an error that is non-empty and readable: no
//   control characters, a bounded length whatever the input's, and valid
//   UTF-8 when the input was;
// - nothing throws (an exception ends the run as a crash).
#include "net/listen_address.hpp"
#include "runtime/duration.hpp"

#include <arpa/inet.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>

namespace {

using mooring::net::ListenAddress;
using mooring::net::parse_listen_address;
using mooring::runtime::Duration;
using mooring::runtime::format_duration;
using mooring::runtime::parse_duration;

// Longer than any error needs to be once the text it quotes is shortened.
constexpr std::size_t max_error_bytes = 512;

[[noreturn]] void fail(const char* what, std::string_view input) {
  std::fprintf(stderr, "listen_duration: %s (input of %zu bytes)\n", what, input.size());
  std::abort();
}

void require(bool condition, const char* what, std::string_view input) {
  if (!condition) fail(what, input);
}

bool valid_utf8(std::string_view text) {
  std::size_t i = 0;
  while (i < text.size()) {
    const auto c = static_cast<unsigned char>(text[i]);
    std::size_t length = 0;
    std::uint32_t code = 0;
    if (c < 0x80) {
      ++i;
      continue;
    } else if ((c & 0xE0) == 0xC0) {
      length = 2;
      code = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
      length = 3;
      code = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
      length = 4;
      code = c & 0x07;
    } else {
      return false;
    }
    if (i + length > text.size()) return false;
    for (std::size_t k = 1; k < length; ++k) {
      const auto next = static_cast<unsigned char>(text[i + k]);
      if ((next & 0xC0) != 0x80) return false;
      code = code << 6 | (next & 0x3F);
    }
    static constexpr std::uint32_t smallest[] = {0, 0, 0x80, 0x800, 0x10000};
    if (code < smallest[length] || code > 0x10FFFF || (code >= 0xD800 && code <= 0xDFFF)) return false;
    i += length;
  }
  return true;
}

bool has_control(std::string_view text) {
  for (char c : text) {
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7F) return true;
  }
  return false;
}

// What the parser promises to accept as a host, checked independently of it.
bool acceptable_host(const std::string& host) {
  if (host == "localhost") return true;
  if (has_control(host) || host.find(' ') != std::string::npos) return false;
  unsigned char buffer[16];
  if (::inet_pton(AF_INET, host.c_str(), buffer) == 1) return true;
  // A scope ("fe80::1%eth0") is part of an IPv6 literal to the resolver.
  const std::string address = host.substr(0, host.find('%'));
  return ::inet_pton(AF_INET6, address.c_str(), buffer) == 1;
}

void check_duration(std::string_view text) {
  const auto parsed = parse_duration(text);
  if (!parsed) return;
  require(parsed->count() >= 0, "a duration parsed as negative", text);
  const std::string formatted = format_duration(*parsed);
  require(!formatted.empty(), "a parsed duration formats as nothing", text);
  require(formatted.size() <= text.size() || text.starts_with('0'),
          "the formatted duration is longer than the text it was parsed from", text);
  const auto again = parse_duration(formatted);
  require(again.has_value(), "a formatted duration does not parse", text);
  require(*again == *parsed, "a formatted duration parses to another value", text);
}

void check_count(std::string_view input) {
  if (input.size() < sizeof(std::int64_t)) return;
  std::int64_t count = 0;
  std::memcpy(&count, input.data(), sizeof count);
  const Duration d{count};
  const std::string formatted = format_duration(d);
  require(!formatted.empty(), "a count formats as nothing", input);
  const auto again = parse_duration(formatted);
  if (count >= 0) {
    require(again.has_value() && *again == d, "a formatted count does not parse back to itself", input);
  } else {
    require(!again.has_value(), "a negative count formats to a duration that parses", input);
    require(formatted.starts_with('-'), "a negative count formats without its sign", input);
  }
}

void check_address(std::string_view text) {
  std::string error;
  const auto parsed = parse_listen_address(text, error);
  if (!parsed) {
    require(!error.empty(), "an address is refused without a reason", text);
    require(error.size() <= max_error_bytes, "an address error grows with the input", text);
    require(!has_control(error), "an address error carries control characters", text);
    require(!valid_utf8(text) || valid_utf8(error), "an address error is not UTF-8 for UTF-8 input",
            text);
    return;
  }
  require(acceptable_host(parsed->host), "an accepted host is neither localhost nor an IP literal", text);
  const std::string formatted = parsed->to_string();
  std::string again_error;
  const auto again = parse_listen_address(formatted, again_error);
  require(again.has_value(), "a formatted address does not parse", text);
  require(*again == *parsed, "a formatted address parses to another address", text);
  require(again->to_string() == formatted, "formatting an address is not stable", text);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  check_duration(input);
  check_count(input);
  check_address(input);
  return 0;
}
