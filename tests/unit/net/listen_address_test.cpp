#include "net/listen_address.hpp"

#include <gtest/gtest.h>

namespace mooring::net {
namespace {

ListenAddress parse_ok(std::string_view text) {
  std::string error;
  auto address = parse_listen_address(text, error);
  EXPECT_TRUE(address.has_value()) << '"' << text << "\": " << error;
  return address.value_or(ListenAddress{});
}

// The error phrase for a rejected text; fails the test if the text is accepted.
std::string parse_error(std::string_view text) {
  std::string error;
  auto address = parse_listen_address(text, error);
  EXPECT_FALSE(address.has_value()) << '"' << text << "\" was accepted as " << address->to_string();
  EXPECT_FALSE(error.empty()) << '"' << text << '"';
  return error;
}

TEST(ParseListenAddress, AcceptsIpv4Literals) {
  EXPECT_EQ(parse_ok("127.0.0.1:8080"), (ListenAddress{"127.0.0.1", 8080}));
  EXPECT_EQ(parse_ok("0.0.0.0:65535"), (ListenAddress{"0.0.0.0", 65535}));
}

TEST(ParseListenAddress, AcceptsBracketedIpv6WithoutKeepingTheBrackets) {
  EXPECT_EQ(parse_ok("[::1]:8080"), (ListenAddress{"::1", 8080}));
  EXPECT_EQ(parse_ok("[::]:0"), (ListenAddress{"::", 0}));
  EXPECT_EQ(parse_ok("[2001:db8::5]:443"), (ListenAddress{"2001:db8::5", 443}));
}

TEST(ParseListenAddress, AcceptsLocalhost) {
  EXPECT_EQ(parse_ok("localhost:9000"), (ListenAddress{"localhost", 9000}));
}

TEST(ParseListenAddress, PortZeroAsksForAnEphemeralPort) {
  EXPECT_EQ(parse_ok("127.0.0.1:0").port, 0);
  EXPECT_EQ(parse_ok("localhost:0").port, 0);
}

TEST(ParseListenAddress, RejectsAMissingPort) {
  EXPECT_NE(parse_error("127.0.0.1").find("missing \":port\""), std::string::npos);
  EXPECT_NE(parse_error("localhost").find("missing \":port\""), std::string::npos);
  EXPECT_NE(parse_error("[::1]").find("missing \":port\""), std::string::npos);
  EXPECT_NE(parse_error("127.0.0.1:").find("not a number from 0 to 65535"), std::string::npos);
  EXPECT_NE(parse_error("[::1]8080").find("missing \":port\""), std::string::npos);
}

TEST(ParseListenAddress, RejectsPortsOutOfRangeOrNotNumeric) {
  for (const char* text : {"127.0.0.1:65536", "127.0.0.1:99999", "127.0.0.1:123456", "127.0.0.1:-1",
                           "127.0.0.1:+80", "127.0.0.1:http", "127.0.0.1:80 ", "127.0.0.1:8o"}) {
    EXPECT_NE(parse_error(text).find("not a number from 0 to 65535"), std::string::npos) << text;
  }
}

TEST(ParseListenAddress, RejectsAnEmptyHost) {
  EXPECT_NE(parse_error(":8080").find("missing host"), std::string::npos);
  EXPECT_NE(parse_error("[]:8080").find("missing host"), std::string::npos);
}

TEST(ParseListenAddress, RejectsUnbracketedIpv6) {
  EXPECT_NE(parse_error("::1:8080").find("needs brackets"), std::string::npos);
  EXPECT_NE(parse_error("2001:db8::5:443").find("needs brackets"), std::string::npos);
}

TEST(ParseListenAddress, RejectsIpv4InBracketsAndBrokenBrackets) {
  EXPECT_NE(parse_error("[127.0.0.1]:80").find("not an IPv6 address"), std::string::npos);
  EXPECT_NE(parse_error("[::1:80").find("missing \"]\""), std::string::npos);
  EXPECT_NE(parse_error("[nonsense]:80").find("not an IPv6 address"), std::string::npos);
}

TEST(ParseListenAddress, RejectsHostNamesOtherThanLocalhost) {
  for (const char* text :
       {"example.com:80", "nowhere:80", "LOCALHOST:80", "localhost.:80", " 127.0.0.1:80",
        "127.0.0.1 :80", "1.2.3:80", "256.1.1.1:80", "127.0.0.01:80", "garbage", ""}) {
    parse_error(text);
  }
  EXPECT_NE(parse_error("example.com:80").find("not resolved"), std::string::npos);
}

TEST(ParseListenAddress, RejectsAHostWithANulOrAControlCharacterInside) {
  // The address check reads a C string: without a check of its own, the text
  // after a NUL would be accepted as part of the host.
  using namespace std::string_view_literals;
  for (std::string_view text :
       {"127.0.0.1\0junk:80"sv, "\0:80"sv, "localhost\0:80"sv, "[::1\0junk]:80"sv,
        "[fe80::1%eth0\x01]:80"sv, "[fe80::1%eth 0]:80"sv, "127.0.0.1\x7f:80"sv}) {
    const auto error = parse_error(text);
    EXPECT_EQ(error.find('\0'), std::string::npos);
  }
  EXPECT_NE(parse_error("127.0.0.1\0junk:80"sv).find("control character"), std::string::npos);
}

TEST(ParseListenAddress, ErrorsAreShortAndPrintableWhateverTheText) {
  const std::string long_host(1 << 20, 'x');
  const std::string long_port(1 << 20, '9');
  const std::string control_host = "\x1b[31mred\x1b[0m\r\n";
  for (const std::string& text :
       {long_host + ":80", "127.0.0.1:" + long_port, "[" + long_host + "]:80",
        long_host + ":" + long_host + ":80", control_host + ":80", "[" + control_host + "]:80",
        "127.0.0.1:" + control_host}) {
    const auto error = parse_error(text);
    EXPECT_LE(error.size(), 512u);
    for (char c : error) {
      const auto byte = static_cast<unsigned char>(c);
      EXPECT_TRUE(byte >= 0x20 && byte != 0x7f) << "control byte " << int{byte} << " in " << error;
    }
  }
}

TEST(ListenAddress, ToStringBracketsIpv6AndParsesBack) {
  for (const ListenAddress& address :
       {ListenAddress{"127.0.0.1", 8080}, ListenAddress{"::1", 8080}, ListenAddress{"localhost", 0},
        ListenAddress{"2001:db8::5", 65535}}) {
    const auto text = address.to_string();
    EXPECT_EQ(parse_ok(text), address) << text;
  }
  EXPECT_EQ((ListenAddress{"::1", 8080}).to_string(), "[::1]:8080");
  EXPECT_EQ((ListenAddress{"127.0.0.1", 80}).to_string(), "127.0.0.1:80");
}

}  // namespace
}  // namespace mooring::net
