// Many short lives in a row, as a busy host sees them over days: users who
// connect, chat and drop; an admin listener moved again and again while a
// client lingers on the old address. Whatever each cycle opens is closed:
// descriptors come back to exactly their baseline and memory to near it.
// The cycle counts are bounded for CI; bench/soak.sh runs the long version
// (MOORING_SOAK_CYCLES, MOORING_SOAK_MOVES).
#include "support/chat_client.hpp"
#include "support/clients.hpp"
#include "support/host_process.hpp"
#include "support/process.hpp"
#include "support/wait.hpp"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <thread>

namespace mooring::test {
namespace {

namespace json = boost::json;

std::size_t cycles_from_env(const char* name, std::size_t fallback) {
  const char* value = std::getenv(name);
  return value && *value ? std::stoul(value) : fallback;
}

std::size_t open_descriptors(pid_t pid) {
  std::size_t n = 0;
  for ([[maybe_unused]] const auto& entry :
       std::filesystem::directory_iterator(fmt::format("/proc/{}/fd", pid)))
    ++n;
  return n;
}

// Resident memory in KiB.
std::size_t rss_kib(pid_t pid) {
  std::ifstream status(fmt::format("/proc/{}/status", pid));
  for (std::string line; std::getline(status, line);)
    if (line.starts_with("VmRSS:")) return std::stoul(line.substr(6));
  return 0;
}

std::int64_t status_number(const HostProcess& host, std::string_view key) {
  return host.status().at(key).as_int64();
}

// One user's visit: connect, one message answered, then leave (half of them
// without a close frame). False, with a test failure, when anything is off.
bool chat_and_drop(const std::string& gateway, std::size_t i) {
  try {
    ChatClient user;
    // i % 96: a user is always visited by the same worker (96 is a multiple of 8).
    if (user.connect(gateway, fmt::format("soak-{}", i % 96)) != 101) {
      ADD_FAILURE() << "cycle " << i << ": no upgrade";
      return false;
    }
    const auto id = fmt::format("m{}", i);
    const auto seq = say_and_get_seq(user, "ping " + id, id);
    user.read_until([&](const ChatClient::Frame& f) { return is_chat_for(f, seq); });
    if (i % 2 == 0) user.drop(); else user.close();
    return true;
  } catch (const std::exception& e) {
    ADD_FAILURE() << "cycle " << i << ": " << e.what();
    return false;
  }
}

// `cycles` visits, from `threads` users' devices at once.
void visit(const std::string& gateway, std::size_t first, std::size_t cycles, unsigned threads) {
  std::vector<std::thread> workers;
  for (unsigned t = 0; t < threads; ++t)
    workers.emplace_back([&, t] {
      for (std::size_t i = first + t; i < first + cycles; i += threads)
        if (!chat_and_drop(gateway, i)) return;
    });
  for (auto& worker : workers) worker.join();
}

TEST(Soak, ConnectChatDropCyclesLeaveNothingBehind) {
  TempDir dir;
  // 96 users, each visiting about once every 10 ms: far beyond the default rate.
  HostProcess host(MOORING_BINARY, dir.path(), "", "max_messages_per_minute = 1000000\n");
  ASSERT_TRUE(host.started()) << host.log();
  const auto pid = host.process().pid();
  const std::size_t cycles = cycles_from_env("MOORING_SOAK_CYCLES", 10000);

  const auto quiet = [&] {
    return poll_until([&] { return status_number(host, "connections") == 0; }, std::chrono::seconds(20));
  };
  visit(host.gateway(), 0, 200, 8);  // warm-up: pools, caches
  ASSERT_TRUE(quiet());
  const auto fds_before = open_descriptors(pid);
  const auto rss_before = rss_kib(pid);

  visit(host.gateway(), 200, cycles, 8);
  ASSERT_FALSE(HasFailure());
  ASSERT_TRUE(quiet());
  ASSERT_TRUE(poll_until([&] { return open_descriptors(pid) <= fds_before; }, std::chrono::seconds(10)))
      << open_descriptors(pid) << " descriptors open, " << fds_before << " before";
  const auto rss_after = rss_kib(pid);
  std::cout << fmt::format("soak: {} cycles; descriptors {} -> {}; RSS {} KiB -> {} KiB\n", cycles,
                           fds_before, open_descriptors(pid), rss_before, rss_after);
#if !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
  // Under AddressSanitizer (the binary is built like the test) freed memory
  // waits in quarantine, and ThreadSanitizer maps shadow memory: descriptors
  // are the measure there.
  EXPECT_LT(rss_after, rss_before + 16 * 1024) << "memory grew by more than 16 MiB";
#endif
  EXPECT_EQ(status_number(host, "task_failures"), 0);
  expect_clean_stop(host);
}

TEST(Soak, AdminMovesWithLingeringClientsLeaveNothingBehind) {
  TempDir dir;
  HostProcess host(MOORING_BINARY, dir.path(), "token = \"soak-admin\"\n");
  ASSERT_TRUE(host.started()) << host.log();
  const auto pid = host.process().pid();
  const std::size_t moves = cycles_from_env("MOORING_SOAK_MOVES", 200);
  const auto bearer = std::vector<std::pair<std::string, std::string>>{
      {"Authorization", "Bearer soak-admin"}};
  std::string admin = host.admin();
  const auto fds_before = open_descriptors(pid);
  const auto rss_before = rss_kib(pid);

  for (std::size_t i = 0; i < moves; ++i) {
    // A client that lingers on the old address: its events stream stays
    // open until the move closes it (1001).
    WsClient lingering;
    ASSERT_EQ(lingering.connect(admin, "/api/events", bearer), 101);
    // A port free now; the move binds it before the old one closes. A test
    // running beside this one (ctest -j) may take that port meanwhile as the
    // local end of a connection it opens: the move is then refused with 409
    // and changes nothing, and is tried again on another port.
    std::uint16_t port = 0;
    HttpReply moved;
    for (int attempt = 1; attempt <= 5; ++attempt) {
      asio::io_context io;
      asio::ip::tcp::acceptor probe(io, {asio::ip::make_address("127.0.0.1"), 0});
      port = probe.local_endpoint().port();
      probe.close();
      moved = http_request(
          admin, http::verb::put, "/api/config",
          fmt::format("[gateway]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:{}\"\n"
                      "token = \"soak-admin\"\n",
                      port),
          bearer);
      if (moved.status != 409 || moved.body.find("Address already in use") == std::string::npos)
        break;
    }
    ASSERT_EQ(moved.status, 200) << moved.body;
    admin = fmt::format("127.0.0.1:{}", port);
    while (lingering.read(std::chrono::seconds(10))) {
    }
    EXPECT_EQ(lingering.close_code(), 1001);
  }
  ASSERT_TRUE(poll_until([&] { return open_descriptors(pid) <= fds_before; }, std::chrono::seconds(10)))
      << open_descriptors(pid) << " descriptors open, " << fds_before << " before";
  const auto rss_after = rss_kib(pid);
  std::cout << fmt::format("soak: {} admin moves; descriptors {} -> {}; RSS {} KiB -> {} KiB\n",
                           moves, fds_before, open_descriptors(pid), rss_before, rss_after);
#if !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
  EXPECT_LT(rss_after, rss_before + 16 * 1024);
#endif
  expect_clean_stop(host);
}

}  // namespace
}  // namespace mooring::test
