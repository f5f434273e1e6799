#include "app/listener_component.hpp"

#include "support/wait.hpp"

#include <gtest/gtest.h>

namespace mooring::app {
namespace {

using namespace std::chrono_literals;

std::shared_ptr<const net::Router> empty_router() { return std::make_shared<net::Router>(); }

TEST(ListenerComponent, ATakenPortMeansFailedThenRecoveryWhenItFrees) {
  asio::io_context io;
  runtime::Supervisor supervisor(io.get_executor());
  auto squatter = net::open_listener(io.get_executor(), {"127.0.0.1", 0}, "squatter");
  ASSERT_TRUE(squatter.has_value());
  const auto port = squatter->local_endpoint().port();

  std::vector<std::string> listen_seen;
  runtime::Notifier changed(io.get_executor());
  ListenerComponent admin(supervisor, "admin", {"127.0.0.1", port}, empty_router(), {},
                          [&](const ComponentStatus& s) {
                            if (listen_seen.empty() || listen_seen.back() != s.listen)
                              listen_seen.push_back(s.listen);
                            changed.notify_all();
                          });
  admin.open();  // never throws
  EXPECT_EQ(admin.status().state, ComponentState::failed);
  EXPECT_NE(admin.status().last_error.find("admin: cannot listen on 127.0.0.1:" +
                                           std::to_string(port)),
            std::string::npos);
  EXPECT_TRUE(admin.status().next_retry.has_value());
  EXPECT_EQ(listen_seen, std::vector<std::string>{""});

  squatter->close();  // the port frees; the component binds it by itself
  // Every change of the component is announced: wait for the one to running.
  auto recovered = test::run_on(io, [](ListenerComponent& c, runtime::Notifier& changed) -> awaitable<bool> {
    const auto deadline = runtime::Deadline::after(15s);
    while (c.status().state != ComponentState::running && !deadline.passed())
      co_await changed.wait_until(deadline);
    co_return c.status().state == ComponentState::running;
  }(admin, changed), 20s);
  EXPECT_TRUE(recovered);
  EXPECT_EQ(admin.status().listen, "127.0.0.1:" + std::to_string(port));
  EXPECT_GE(admin.status().start_attempts, 2u);
  EXPECT_EQ(listen_seen, (std::vector<std::string>{"", "127.0.0.1:" + std::to_string(port)}));
  ASSERT_GE(admin.status().history.size(), 2u);
  EXPECT_NE(admin.status().history.front().find("bind failed: admin: cannot listen on"),
            std::string::npos);
  EXPECT_NE(admin.status().history.back().find("listening on 127.0.0.1:"), std::string::npos);

  test::run_on(io, [](ListenerComponent& c) -> awaitable<bool> {
    co_await c.stop(runtime::Deadline::after(5s));
    co_return true;
  }(admin));
  EXPECT_EQ(admin.status().state, ComponentState::stopped);
  // The port is free again the moment stop() returns.
  EXPECT_TRUE(net::open_listener(io.get_executor(), {"127.0.0.1", port}, "again").has_value());
}

TEST(ListenerComponent, APreparedMoveHoldsTheNewPortUntilCommittedOrDropped) {
  asio::io_context io;
  runtime::Supervisor supervisor(io.get_executor());
  ListenerComponent admin(supervisor, "admin", {"127.0.0.1", 0}, empty_router(), {}, {});
  admin.open();
  ASSERT_EQ(admin.status().state, ComponentState::running);
  const auto first = admin.status().listen;

  // The same address: nothing to do, and the socket is kept.
  auto same = admin.prepare_address(admin.address(), 1s);
  ASSERT_TRUE(same);
  EXPECT_FALSE(*same);

  // Prepared and dropped: the new port is bound meanwhile, free afterwards.
  auto probe = net::open_listener(io.get_executor(), {"127.0.0.1", 0}, "probe");
  ASSERT_TRUE(probe.has_value());
  const auto port = probe->local_endpoint().port();
  probe->close();
  {
    auto prepared = admin.prepare_address({"127.0.0.1", port}, 1s);
    ASSERT_TRUE(prepared) << prepared.error();
    EXPECT_FALSE(net::open_listener(io.get_executor(), {"127.0.0.1", port}, "x").has_value());
  }
  EXPECT_TRUE(net::open_listener(io.get_executor(), {"127.0.0.1", port}, "x").has_value());
  EXPECT_EQ(admin.status().listen, first);

  // Committed: served on the new port; the old one is free.
  auto prepared = admin.prepare_address({"127.0.0.1", port}, 1s);
  ASSERT_TRUE(prepared) << prepared.error();
  (*prepared)();
  EXPECT_EQ(admin.status().listen, "127.0.0.1:" + std::to_string(port));
  EXPECT_EQ(admin.status().state, ComponentState::running);
  EXPECT_NE(admin.status().history.back().find("moved from " + first), std::string::npos);
  const auto old_port = static_cast<std::uint16_t>(std::stoi(first.substr(first.rfind(':') + 1)));
  EXPECT_TRUE(net::open_listener(io.get_executor(), {"127.0.0.1", old_port}, "x").has_value());

  // A taken port cannot be prepared, and says why.
  auto squatter = net::open_listener(io.get_executor(), {"127.0.0.1", 0}, "squatter");
  ASSERT_TRUE(squatter.has_value());
  auto refused = admin.prepare_address({"127.0.0.1", squatter->local_endpoint().port()}, 1s);
  ASSERT_FALSE(refused);
  EXPECT_NE(refused.error().find("admin: cannot listen on 127.0.0.1:"), std::string::npos);

  test::run_on(io, [](ListenerComponent& c) -> awaitable<bool> {
    co_await c.stop(runtime::Deadline::after(5s));
    co_return true;
  }(admin));
  EXPECT_EQ(admin.status().state, ComponentState::stopped);
}

}  // namespace
}  // namespace mooring::app
