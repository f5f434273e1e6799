#include "runtime/descriptors.hpp"

#include "net/http_server.hpp"
#include "runtime/log.hpp"
#include "support/metrics.hpp"
#include "support/server_thread.hpp"
#include "support/wait.hpp"

#include <gtest/gtest.h>

#include <atomic>

#include <sys/resource.h>

namespace mooring::net {
namespace {

using namespace std::chrono_literals;

// Sets the soft descriptor limit for the scope of a test, then restores it.
class SoftDescriptorLimit {
 public:
  explicit SoftDescriptorLimit(rlim_t soft) {
    ::getrlimit(RLIMIT_NOFILE, &saved_);
    rlimit lowered = saved_;
    lowered.rlim_cur = soft;
    ::setrlimit(RLIMIT_NOFILE, &lowered);
  }
  ~SoftDescriptorLimit() { ::setrlimit(RLIMIT_NOFILE, &saved_); }
  SoftDescriptorLimit(const SoftDescriptorLimit&) = delete;
  SoftDescriptorLimit& operator=(const SoftDescriptorLimit&) = delete;

 private:
  rlimit saved_{};
};

TEST(DescriptorLimitTest, TheSoftLimitIsRaisedToTheHardOne) {
  rlimit before{};
  ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &before), 0);
  if (before.rlim_max != RLIM_INFINITY && before.rlim_max <= 256) GTEST_SKIP() << "hard limit too low";
  SoftDescriptorLimit low(256);
  auto result = runtime::raise_descriptor_limit();
  EXPECT_FALSE(result.error) << result.error.message();
  EXPECT_EQ(result.soft_before, 256u);
  EXPECT_EQ(result.soft, result.hard);
  EXPECT_GT(result.soft, 256u);
  EXPECT_EQ(runtime::descriptor_limit(), result.soft);
  EXPECT_EQ(result.describe(), fmt::format("descriptor limit raised from 256 to {}", result.soft));
  // At the hard limit already: nothing to do, said so.
  auto again = runtime::raise_descriptor_limit();
  EXPECT_EQ(again.soft_before, again.soft);
}

TEST(DescriptorLimitTest, AConnectionBudgetKeepsDescriptorsInReserve) {
  SoftDescriptorLimit low(runtime::open_descriptor_count() + 100);
  EXPECT_EQ(runtime::connections_within_descriptor_limit(10000, 20), 80u);
  EXPECT_EQ(runtime::connections_within_descriptor_limit(50, 20), 50u);
  EXPECT_EQ(runtime::connections_within_descriptor_limit(10000, 1000), 1u);
}

// Defect 6 of issue 11: with the soft limit at systemd's 1024, 1,009 idle
// upgrades on the gateway left the admin port unanswered for 8.7 s and logged
// 383 "accept failed" lines in 10 s. Here both servers share one supervisor
// and one process; the process has room for about 1,009 gateway connections
// beyond what it holds, and 1,009 clients upgrade (some wait in the backlog).
TEST(DescriptorLimitTest, TheAdminAnswersWhileTheGatewayHasExhaustedTheDescriptors) {
#if defined(__SANITIZE_ADDRESS__)
  // UBSan's vptr check opens a pipe to probe memory; with no descriptor left
  // it reports a valid object as invalid.
  GTEST_SKIP() << "the sanitizers need descriptors of their own";
#endif
  runtime::init_logging();
  std::atomic<int> accept_lines{0};
  const int observer = runtime::add_log_observer([&](spdlog::level::level_enum, std::string_view line) {
    if (line.find("gateway: accept failed") != std::string_view::npos) ++accept_lines;
  });

  test::ServerThread thread;
  auto gateway_router = std::make_shared<Router>();
  gateway_router->add_websocket("/ws", WsRoute{});
  auto admin_router = std::make_shared<Router>();
  admin_router->add(http::verb::get, "/healthz", [](Request& r) -> awaitable<HttpResponse> {
    co_return text_response(http::status::ok, "ok", "text/plain", r);
  });
  std::unique_ptr<HttpServer> gateway, admin;
  auto [gateway_endpoint, admin_endpoint] = thread.run([&] {
    gateway = std::make_unique<HttpServer>(thread.supervisor(), "gateway", gateway_router,
                                           HttpLimits{.header_timeout = 60s});
    admin = std::make_unique<HttpServer>(thread.supervisor(), "admin", admin_router);
    gateway->start(std::move(*open_listener(thread.io().get_executor(), {"127.0.0.1", 0}, "gateway")));
    admin->start(std::move(*open_listener(thread.io().get_executor(), {"127.0.0.1", 0}, "admin")));
    return std::pair(*gateway->local_endpoint(), *admin->local_endpoint());
  });

  const double accept_failures_before =
      test::metric_value("mooring_accept_failures_total{listener=\"gateway\"}");

  // The clients' sockets exist before the limit is lowered: they live in this
  // process too, and must not take the server's room.
  constexpr int upgrades = 1009;
  asio::io_context io;
  std::vector<tcp::socket> clients;
  clients.reserve(upgrades);
  for (int i = 0; i < upgrades; ++i) clients.emplace_back(io).open(tcp::v4());
  // Three requests one after the other: the first finds the admin waiting
  // in accept, the later ones find it after it has met the shortage itself.
  std::vector<tcp::socket> admin_clients;
  for (int i = 0; i < 3; ++i) admin_clients.emplace_back(io).open(tcp::v4());

  std::chrono::microseconds latency{};
  {
    SoftDescriptorLimit low(test::open_descriptors() + upgrades - 10);
    const std::string upgrade =
        "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    for (auto& client : clients) {
      client.connect(gateway_endpoint);
      asio::write(client, asio::buffer(upgrade));
    }
    // The gateway runs out of descriptors and keeps failing to accept the rest.
    ASSERT_TRUE(test::poll_until([&] { return thread.run([&] { return gateway->accept_failures(); }) >= 5; }, 20s))
        << thread.run([&] { return gateway->connections(); }) << " gateway connections";
    // Each failure is counted for /metrics too (a success in between may have
    // reset accept_failures(), never the total).
    const auto [failures, counted] = thread.run([&] {
      return std::pair(gateway->accept_failures(),
                       test::metric_value("mooring_accept_failures_total{listener=\"gateway\"}"));
    });
    EXPECT_GE(counted - accept_failures_before, static_cast<double>(failures));
    const auto gateway_connections = thread.run([&] { return gateway->connections(); });
    EXPECT_GT(gateway_connections, 900u);

    for (auto& admin_client : admin_clients) {
      const auto started = Clock::now();
      admin_client.connect(admin_endpoint);
      asio::write(admin_client,
                  asio::buffer(std::string("GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")));
      beast::flat_buffer buffer;
      http::response<http::string_body> response;
      error_code ec;
      http::read(admin_client, buffer, response, ec);
      latency = std::max(latency, std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - started));
      EXPECT_FALSE(ec) << ec.message();
      EXPECT_EQ(response.result_int(), 200u);
      }
    EXPECT_LT(latency, 1s);
    // Five failures over more than a second of backoff: at most two lines.
    EXPECT_LE(accept_lines.load(), 2);
    std::printf("healthz with %zu gateway connections and the descriptors exhausted: at most %.3f ms; "
                "%d accept-failure line(s) for %llu failures\n",
                gateway_connections, latency.count() / 1000.0, accept_lines.load(),
                static_cast<unsigned long long>(thread.run([&] { return gateway->accept_failures(); })));
    for (auto& client : clients) {
      error_code ignored;
      client.close(ignored);
    }
  }
  thread.call([](HttpServer& g, HttpServer& a) -> awaitable<bool> {
    co_await g.stop(runtime::Deadline::after(2s));
    co_await a.stop(runtime::Deadline::after(2s));
    co_return true;
  }(*gateway, *admin));
  EXPECT_EQ(thread.run([&] { return gateway->connections(); }), 0u);
  thread.run([&] {
    gateway.reset();
    admin.reset();
    return true;
  });
  runtime::remove_log_observer(observer);
}

}  // namespace
}  // namespace mooring::net
