#include "net/corked_socket.hpp"

#include "runtime/turn.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <functional>
#include <string>

namespace mooring::net {
namespace {

using namespace std::chrono_literals;
using tcp = asio::ip::tcp;

// A connected pair on loopback: the corked server side and a plain peer,
// driven on the test thread.
struct Pair {
  asio::io_context io;
  tcp::socket peer{io};
  std::optional<CorkedSocket> corked;

  Pair() {
    tcp::acceptor acceptor(io, {asio::ip::make_address("127.0.0.1"), 0});
    peer.connect(acceptor.local_endpoint());
    corked.emplace(acceptor.accept(io.get_executor()));
    corked->start_corking();
  }

  // Runs in turns until `done`, or fails after `limit`.
  void run_until(const std::function<bool()>& done, std::chrono::seconds limit = 10s) {
    bool out_of_time = false;
    asio::steady_timer timer(io, limit);
    timer.async_wait([&](error_code ec) { out_of_time = !ec; });
    runtime::run_in_turns(io, [&] { return done() || out_of_time; });
    ASSERT_FALSE(out_of_time) << "not done within " << limit.count() << " s";
    timer.cancel();
    io.poll();
  }

  std::string read_available() {
    std::string bytes(peer.available(), '\0');
    if (!bytes.empty()) asio::read(peer, asio::buffer(bytes));
    return bytes;
  }
};

TEST(CorkedSocketTest, WritesOfOneTurnLeaveTogetherAtItsEnd) {
  Pair pair;
  auto& corked = *pair.corked;
  const std::vector<std::string> writes{"ack", "chat_token", "chat"};
  std::size_t completed = 0;
  std::size_t sent_before_last_completion = 99;
  std::function<void()> write_next = [&] {
    asio::async_write(corked, asio::buffer(writes[completed]), [&](error_code ec, std::size_t) {
      ASSERT_FALSE(ec);
      if (++completed < writes.size()) {
        write_next();
      } else {
        sent_before_last_completion = corked.taken();
      }
    });
  };
  asio::post(pair.io, write_next);
  pair.run_until([&] { return corked.taken() == corked.written() && completed == 3; });

  // Each write completed while its bytes were held; they left at the turn's end.
  EXPECT_EQ(sent_before_last_completion, 0u);
  EXPECT_EQ(corked.written(), 17u);
  EXPECT_EQ(corked.held_bytes(), 0u);
  std::string got(17, '\0');
  asio::read(pair.peer, asio::buffer(got));
  EXPECT_EQ(got, "ackchat_tokenchat");
}

TEST(CorkedSocketTest, WithoutTurnsAWriteCompletesOnceTheSocketHasItsBytes) {
  Pair pair;
  auto& corked = *pair.corked;
  std::uint64_t taken_at_completion = 0;
  asio::async_write(corked, asio::buffer(std::string_view("hello")),
                    [&](error_code ec, std::size_t n) {
                      EXPECT_FALSE(ec);
                      EXPECT_EQ(n, 5u);
                      taken_at_completion = corked.taken();
                    });
  pair.io.run_for(10s);
  EXPECT_EQ(taken_at_completion, 5u);
  EXPECT_EQ(pair.read_available(), "hello");
}

TEST(CorkedSocketTest, APeerThatDoesNotReadPushesBack) {
  Pair pair;
  auto& corked = *pair.corked;
  corked.next_layer().set_option(asio::socket_base::send_buffer_size(16 * 1024));
  pair.peer.set_option(asio::socket_base::receive_buffer_size(16 * 1024));
  const std::string chunk(4096, 'x');
  std::uint64_t completed_bytes = 0;
  std::size_t most_held = 0;
  // Writes until one has not completed for half a second (the peer reads
  // nothing), or until far more than any socket buffer holds has completed.
  constexpr std::uint64_t unbounded = 64 * 1024 * 1024;
  asio::steady_timer quiet(pair.io);
  bool stalled = false;
  std::function<void()> write_next = [&] {
    quiet.expires_after(500ms);
    quiet.async_wait([&](error_code ec) { stalled = !ec; });
    asio::async_write(corked, asio::buffer(chunk), [&](error_code ec, std::size_t n) {
      ASSERT_FALSE(ec);
      completed_bytes += n;
      most_held = std::max(most_held, corked.held_bytes());
      if (!stalled && completed_bytes < unbounded) write_next();
    });
  };
  asio::post(pair.io, write_next);
  pair.run_until([&] { return stalled || completed_bytes >= unbounded; }, 30s);
  ASSERT_TRUE(stalled) << completed_bytes << " bytes written to a peer that reads nothing";
  EXPECT_LE(most_held, CorkedSocket::cork_bytes + chunk.size());

  // Once the peer reads, everything written arrives, in order.
  std::uint64_t read_bytes = 0;
  std::string buffer(64 * 1024, '\0');
  std::function<void()> read_next = [&] {
    pair.peer.async_read_some(asio::buffer(buffer), [&](error_code ec, std::size_t n) {
      ASSERT_FALSE(ec);
      EXPECT_EQ(std::string_view(buffer.data(), n).find_first_not_of('x'), std::string_view::npos);
      read_bytes += n;
      read_next();
    });
  };
  read_next();
  pair.run_until(
      [&] { return corked.held_bytes() == 0 && read_bytes == corked.written(); }, 30s);
  EXPECT_GE(read_bytes, completed_bytes);
}

TEST(CorkedSocketTest, AFailedSendFailsEveryLaterWrite) {
  Pair pair;
  auto& corked = *pair.corked;
  // The peer resets the connection: a send fails.
  pair.peer.set_option(asio::socket_base::linger(true, 0));
  pair.peer.close();
  // Each write waits for the bytes before it to have been sent (or failed).
  std::vector<error_code> outcomes;
  std::function<void()> write_next = [&] {
    asio::async_write(corked, asio::buffer(std::string_view("frame")),
                      [&](error_code ec, std::size_t) {
                        outcomes.push_back(ec);
                        if (outcomes.size() < 20) corked.async_wait_sent(write_next);
                      });
  };
  asio::post(pair.io, write_next);
  pair.run_until([&] { return outcomes.size() == 20; });
  const auto first_failure =
      std::find_if(outcomes.begin(), outcomes.end(), [](error_code ec) { return bool(ec); });
  ASSERT_NE(first_failure, outcomes.end()) << "every write to a reset connection succeeded";
  EXPECT_LE(first_failure - outcomes.begin(), 2);
  for (auto it = first_failure; it != outcomes.end(); ++it) EXPECT_EQ(*it, *first_failure);
  EXPECT_EQ(corked.held_bytes(), 0u);
}

TEST(CorkedSocketTest, AWaitForTheSentEndsOnceHeldBytesLeft) {
  Pair pair;
  auto& corked = *pair.corked;
  bool waited = false;
  std::uint64_t taken_when_waited = 0;
  asio::post(pair.io, [&] {
    asio::async_write(corked, asio::buffer(std::string_view("close frame")),
                      [&](error_code ec, std::size_t) {
                        ASSERT_FALSE(ec);
                        EXPECT_EQ(corked.taken(), 0u);  // held for the turn's end
                        corked.async_wait_sent([&] {
                          waited = true;
                          taken_when_waited = corked.taken();
                        });
                      });
  });
  pair.run_until([&] { return waited; });
  EXPECT_EQ(taken_when_waited, 11u);
  EXPECT_EQ(pair.read_available(), "close frame");
}

}  // namespace
}  // namespace mooring::net
