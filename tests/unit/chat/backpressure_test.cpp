// Defect 3 of issue 11: a client that sends faster than its messages are
// answered makes the gateway stop reading its socket (TCP pushes back) instead
// of buffering without bound.
#include "chat/gateway.hpp"
#include "support/clients.hpp"
#include "support/wait.hpp"
#include "unit/chat/gateway_fixture.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <fstream>
#include <thread>

namespace mooring::chat::test {
namespace {

namespace beast = boost::beast;
namespace websocket = beast::websocket;
using mooring::test::poll_until;

// Resident memory of this process (client and server both), in MiB.
std::size_t rss_mib() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line))
    if (line.starts_with("VmRSS:")) return std::stoul(line.substr(6)) / 1024;
  return 0;
}

// Writes `count` messages of `bytes` each as fast as the server takes them,
// while reading and counting the replies, on a thread of its own.
class FloodClient {
 public:
  FloodClient(const std::string& address, const std::string& user, int count, std::size_t bytes)
      : ws_(io_) {
    const std::string prefix = R"({"text":")";
    frame_ = prefix + std::string(bytes - prefix.size() - 2, 'x') + R"("})";
    asio::co_spawn(io_, run(address, user, count), [](std::exception_ptr) {});
    thread_ = std::thread([this] { io_.run(); });
  }
  ~FloodClient() {
    asio::post(io_, [this] {
      error_code ignored;
      beast::get_lowest_layer(ws_).socket().close(ignored);
    });
    thread_.join();
  }

  std::atomic<int> written{0};
  std::atomic<int> replies{0};

 private:
  awaitable<void> run(std::string address, std::string user, int count) {
    auto [host, port] = mooring::test::split_address(address);
    asio::ip::tcp::resolver resolver(io_);
    auto& stream = beast::get_lowest_layer(ws_);
    stream.expires_after(10s);
    co_await stream.async_connect(co_await resolver.async_resolve(host, port, asio::use_awaitable),
                                  asio::use_awaitable);
    co_await ws_.async_handshake(host, "/ws/" + user, asio::use_awaitable);
    stream.expires_never();
    ws_.read_message_max(64 * 1024 * 1024);
    asio::co_spawn(io_, read(), [](std::exception_ptr) {});
    co_await write(count);
  }

  awaitable<void> write(int count) {
    ws_.text(true);
    for (int i = 0; i < count; ++i) {
      auto [ec, n] = co_await ws_.async_write(asio::buffer(frame_), use_tuple);
      if (ec) co_return;
      ++written;
    }
  }
  awaitable<void> read() {
    beast::flat_buffer buffer;
    for (;;) {
      auto [ec, n] = co_await ws_.async_read(buffer, use_tuple);
      if (ec) co_return;
      if (beast::buffers_to_string(buffer.data()).find(R"("type":"chat")") != std::string::npos)
        ++replies;
      buffer.consume(buffer.size());
    }
  }

  asio::io_context io_;
  websocket::stream<beast::tcp_stream> ws_;
  std::string frame_;
  std::thread thread_;
};

TEST(Backpressure, AFloodOfLargeMessagesWaitsInTheSocketNotInMemory) {
  constexpr int messages = 300;
  constexpr std::size_t message_bytes = 1024 * 1024;
  GatewayOptions options;
  options.max_pending_messages = 16;
  options.max_messages_per_minute = 0;
  options.ws.max_message_bytes = message_bytes;
  GatewayFixture fixture(options);
  fixture.run([&] {
    fixture.gate->set_open(false);
    return true;
  });
  const auto rss_before = rss_mib();

  FloodClient flood(fixture.address, "flood", messages, message_bytes);
  const auto peak = [&] { return fixture.run([&] { return fixture.gateway->peak_pending(); }); };
  ASSERT_TRUE(poll_until([&] { return peak() >= options.max_pending_messages; }, 60s))
      << "peak " << peak() << ", written " << flood.written;
  // The client is held back: what it wrote stops growing, long before all of it.
  int last = -1;
  ASSERT_TRUE(poll_until(
      [&] {
        const int now = flood.written;
        return std::exchange(last, now) == now;
      },
      20s, 200ms));
  const int written_while_full = flood.written;
  const auto rss_while_full = rss_mib();
  EXPECT_LT(written_while_full, messages);
  EXPECT_EQ(peak(), options.max_pending_messages);

  // The provider answers again: the rest is read, stored and answered in turn.
  fixture.run([&] {
    fixture.gate->set_open(true);
    return true;
  });
  ASSERT_TRUE(poll_until([&] { return flood.replies == messages; }, 240s))
      << flood.replies << " replies, " << flood.written << " written";
  EXPECT_EQ(flood.written, messages);
  EXPECT_LE(peak(), options.max_pending_messages);

  RecordProperty("written_while_full", written_while_full);
  RecordProperty("rss_mib_before", static_cast<int>(rss_before));
  RecordProperty("rss_mib_while_full", static_cast<int>(rss_while_full));
  RecordProperty("rss_mib_after", static_cast<int>(rss_mib()));
  std::printf(
      "flood: %d of %d MiB written while full; RSS %zu MiB before, %zu while full, %zu after\n",
      written_while_full, messages, rss_before, rss_while_full, rss_mib());
  // What the server holds is bounded by max_pending_messages x max_message_bytes
  // (16 MiB here), plus the client's frame and what sits in the socket buffers.
#if !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
  // AddressSanitizer holds freed memory in quarantine, ThreadSanitizer maps
  // shadow memory: resident memory says nothing under them. The bound on
  // pending messages above holds everywhere.
  EXPECT_LT(rss_while_full, rss_before + 64);
#endif
}

}  // namespace
}  // namespace mooring::chat::test
