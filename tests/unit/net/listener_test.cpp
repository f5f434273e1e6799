#include "net/listener.hpp"

#include <gtest/gtest.h>

namespace mooring::net {
namespace {

TEST(Listener, PortZeroGetsAnEphemeralPort) {
  asio::io_context io;
  auto acceptor = open_listener(io.get_executor(), ListenAddress{"127.0.0.1", 0}, "test");
  ASSERT_TRUE(acceptor.has_value()) << acceptor.error().message;
  EXPECT_NE(acceptor->local_endpoint().port(), 0);
}

TEST(Listener, ATakenPortIsAValueWithAClearMessage) {
  asio::io_context io;
  auto first = open_listener(io.get_executor(), ListenAddress{"127.0.0.1", 0}, "test");
  ASSERT_TRUE(first.has_value());
  const auto port = first->local_endpoint().port();
  auto second = open_listener(io.get_executor(), ListenAddress{"127.0.0.1", port}, "admin");
  ASSERT_FALSE(second.has_value());
  EXPECT_EQ(second.error().code, asio::error::address_in_use);
  EXPECT_EQ(second.error().message,
            "admin: cannot listen on 127.0.0.1:" + std::to_string(port) +
                ": Address already in use");
}

TEST(Listener, ClosingReleasesThePortAtOnce) {
  asio::io_context io;
  auto first = open_listener(io.get_executor(), ListenAddress{"127.0.0.1", 0}, "test");
  ASSERT_TRUE(first.has_value());
  const auto port = first->local_endpoint().port();
  first->close();
  auto again = open_listener(io.get_executor(), ListenAddress{"127.0.0.1", port}, "test");
  EXPECT_TRUE(again.has_value());
}

TEST(Listener, Ipv6LoopbackAndLocalhost) {
  asio::io_context io;
  auto local = open_listener(io.get_executor(), ListenAddress{"localhost", 0}, "test");
  ASSERT_TRUE(local.has_value()) << local.error().message;
  EXPECT_EQ(local->local_endpoint().address().to_string(), "127.0.0.1");
  auto v6 = open_listener(io.get_executor(), ListenAddress{"::1", 0}, "test");
  if (v6) {
    EXPECT_EQ(endpoint_string(v6->local_endpoint()).substr(0, 5), "[::1]");
  }
}

}  // namespace
}  // namespace mooring::net
