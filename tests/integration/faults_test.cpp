// Real faults under the real binary, and what an operator and a user see:
// a database that is not there any more (a zero-byte file), damaged pages, a
// full disk. mooring never starts on a store it cannot trust, never says it is
// ready while its writes fail, says "disk is full" once (not once per
// message), recovers by itself, and loses nothing it acknowledged.
#include "support/chat_client.hpp"
#include "support/clients.hpp"
#include "support/host_process.hpp"
#include "support/process.hpp"
#include "support/wait.hpp"
#include "unit/store/faults.hpp"

#include <boost/json.hpp>
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/statvfs.h>

#include <fstream>
#include <optional>
#include <random>

namespace mooring::test {
namespace {

namespace json = boost::json;
using store::test_faults::Mount;

std::string component_state(const HostProcess& host, std::string_view name) {
  const auto status = host.status();
  for (const auto& c : status.at("components").as_array())
    if (c.at("name").as_string() == name) return std::string(c.at("state").as_string());
  return "";
}

std::size_t count(std::string_view text, std::string_view needle) {
  std::size_t n = 0;
  for (auto at = text.find(needle); at != std::string_view::npos; at = text.find(needle, at + 1)) ++n;
  return n;
}

// `serve` on a directory whose database is `damage`d: exit 1 and what to do.
void expect_refused_at_start(const std::function<void(const std::filesystem::path&)>& damage,
                             std::string_view said) {
  TempDir dir;
  {
    HostProcess first(MOORING_BINARY, dir.path());
    ASSERT_TRUE(first.started()) << first.log();
    ChatClient user;
    ASSERT_EQ(user.connect(first.gateway(), "alice"), 101);
    for (int i = 0; i < 20; ++i) say_and_get_seq(user, fmt::format("message {}", i), fmt::format("m{}", i));
    user.close();
    expect_clean_stop(first);
  }
  const auto db = dir / "mooring-data" / "mooring.db";
  damage(db);
  const auto size_before = std::filesystem::file_size(db);
  ChildProcess again(MOORING_BINARY, {"serve"}, dir.path());
  const auto code = again.wait_exit(std::chrono::seconds(30));
  ASSERT_TRUE(code.has_value()) << "it started on a damaged store:\n" << again.stderr_text();
  EXPECT_EQ(*code, 1) << again.stderr_text();
  const auto log = again.stderr_text();
  EXPECT_NE(log.find(said), std::string::npos) << log;
  EXPECT_EQ(log.find("mooring started"), std::string::npos) << log;
  for (const char* crash : {"terminate called", "Segmentation fault", "AddressSanitizer"})
    EXPECT_EQ(log.find(crash), std::string::npos) << log;
  EXPECT_EQ(std::filesystem::file_size(db), size_before) << "the damaged file was written to";
}

// 500 acknowledged messages, then the file is emptied (a botched copy, a
// restore that failed): that is damage, never a first start.
TEST(Faults, AZeroByteDatabaseIsRefusedNotStartedAfresh) {
  expect_refused_at_start(
      [](const std::filesystem::path& db) {
        std::filesystem::remove(db.string() + "-wal");
        std::filesystem::remove(db.string() + "-shm");
        std::ofstream(db, std::ios::trunc).flush();
      },
      "empty");
}

TEST(Faults, DamagedPagesAreRefusedAtStart) {
  expect_refused_at_start(
      [](const std::filesystem::path& db) {
        const auto size = std::filesystem::file_size(db);
        std::fstream file(db, std::ios::in | std::ios::out | std::ios::binary);
        std::mt19937 random(7);
        // Every page but the header page, overwritten with noise.
        for (std::size_t page = 1; page * 4096 < size; ++page) {
          file.seekp(static_cast<std::streamoff>(page * 4096));
          for (int i = 0; i < 4096; ++i) file.put(static_cast<char>(random()));
        }
      },
      "damaged");
}

std::uint64_t free_bytes(const std::filesystem::path& path) {
  struct statvfs fs {};
  ::statvfs(path.c_str(), &fs);
  return static_cast<std::uint64_t>(fs.f_bavail) * fs.f_frsize;
}

// Sends `text` with client id `id`: true when it is acknowledged, false when
// the store refused it (an error frame for no reply).
bool said_and_stored(ChatClient& user, const std::string& text, const std::string& id) {
  user.say(text, id);
  const auto frame = user.read_until([&](const ChatClient::Frame& f) {
    return is_ack(f, id) || (is_type(f, "error") && string_field(f, "name") == "store_error" &&
                             !f.contains("reply_to"));
  }, std::chrono::seconds(20));
  return is_type(frame, "ack");
}

TEST(Faults, AFullDiskMakesTheStoreDegradedUntilSpaceReturnsAndNothingAcknowledgedIsLost) {
  TempDir dir;
  std::filesystem::create_directories(dir / "mooring-data");
  auto mount = Mount::tmpfs(dir / "mooring-data", 8 * 1024 * 1024);
  if (!mount.ok()) GTEST_SKIP() << mount.reason();
  // Up to 200 messages from one user, more than the default 60 a minute: the
  // rate limit is not what this tests.
  HostProcess host(MOORING_BINARY, dir.path(), "", "max_messages_per_minute = 1000000\n");
  ASSERT_TRUE(host.started()) << host.log();
  EXPECT_EQ(http_get(host.admin(), "/readyz").status, 200);

  // Leave about 256 KiB free.
  const auto filler = dir / "mooring-data" / "filler";
  {
    std::ofstream out(filler, std::ios::binary);
    const std::string block(64 * 1024, 'x');
    while (free_bytes(dir / "mooring-data") > 256 * 1024) out << block << std::flush;
  }

  ChatClient user;
  ASSERT_EQ(user.connect(host.gateway(), "alice"), 101);
  const std::string big(32 * 1024, 'm');
  std::vector<std::string> acknowledged;
  int refused = 0;
  for (int i = 0; i < 200 && refused < 50; ++i) {
    const auto id = fmt::format("m{}", i);
    if (said_and_stored(user, big + id, id)) acknowledged.push_back(id); else ++refused;
  }
  ASSERT_GT(refused, 0) << "the disk never filled";

  // Not ready, and the status says why, in words. Seen together: a small
  // write (a delivery cursor) may still fit in the WAL the disk already holds,
  // and then the store is right to say that writes succeed again.
  ASSERT_TRUE(poll_until(
      [&] {
        return http_get(host.admin(), "/readyz").status == 503 &&
               component_state(host, "store") == "degraded";
      },
      std::chrono::seconds(10)))
      << host.log();
  const auto status = host.status();
  std::string last_error;
  for (const auto& c : status.at("components").as_array())
    if (c.at("name") == "store") last_error = std::string(c.at("last_error").as_string());
  EXPECT_NE(last_error.find("full"), std::string::npos) << last_error;
  // One line for the fault, not one per refused message.
  const auto log = host.log();
  EXPECT_LT(count(log, "full"), static_cast<std::size_t>(refused)) << log;

  // Space again: back to running by itself, without a message to prompt it.
  std::filesystem::remove(filler);
  ASSERT_TRUE(poll_until([&] { return http_get(host.admin(), "/readyz").status == 200; },
                         std::chrono::seconds(20)))
      << host.log();
  EXPECT_EQ(component_state(host, "store"), "running");
  const auto after = say_and_get_seq(user, "after the fault", "after");
  EXPECT_GT(after, 0);
  user.close();
  // The full disk was an error worth its log line; the stop is still clean.
  EXPECT_EQ(host.interrupt(), 0);
  for (const char* crash : {"terminate called", "Segmentation fault", "AddressSanitizer", "runtime error:"})
    EXPECT_EQ(host.log().find(crash), std::string::npos) << host.log();

  // Every acknowledged message is there after a restart.
  HostProcess again(MOORING_BINARY, dir.path());
  ASSERT_TRUE(again.started()) << again.log();
  const auto messages = http_get(again.admin(), "/api/sessions/alice/messages?limit=1000", again.admin_token());
  ASSERT_EQ(messages.status, 200);
  for (const auto& id : acknowledged)
    EXPECT_NE(messages.body.find(big + id), std::string::npos) << id << " was acknowledged and lost";
  expect_clean_stop(again);
}

// A file-size limit (ulimit -f, systemd's LimitFSIZE=) used to end the process
// by SIGXFSZ at the first write past it, every client cut off. Now the write
// fails, the store says which limit to raise, and nothing else stops.
TEST(Faults, AFileSizeLimitFailsWritesAndNeverEndsTheProcess) {
  TempDir dir;
  std::optional<HostProcess> host;
  {
    // The host inherits the limit; this process keeps its own.
    rlimit before{};
    ASSERT_EQ(::getrlimit(RLIMIT_FSIZE, &before), 0);
    rlimit limited = before;
    limited.rlim_cur = 2 * 1024 * 1024;
    ASSERT_EQ(::setrlimit(RLIMIT_FSIZE, &limited), 0);
    host.emplace(MOORING_BINARY, dir.path(), "", "max_messages_per_minute = 1000000\n");
    ASSERT_EQ(::setrlimit(RLIMIT_FSIZE, &before), 0);
  }
  ASSERT_TRUE(host->started()) << host->log();
  ChatClient user;
  ASSERT_EQ(user.connect(host->gateway(), "alice"), 101);
  const std::string big(32 * 1024, 'm');
  int refused = 0;
  for (int i = 0; i < 200 && refused == 0; ++i) {
    const auto id = fmt::format("m{}", i);
    if (!said_and_stored(user, big + id, id)) ++refused;
  }
  ASSERT_GT(refused, 0) << "the limit was never reached";
  EXPECT_TRUE(host->process().running()) << host->log();
  const auto status = host->status();
  std::string last_error;
  for (const auto& c : status.at("components").as_array())
    if (c.at("name") == "store") last_error = std::string(c.at("last_error").as_string());
  EXPECT_NE(last_error.find("file size limit"), std::string::npos) << last_error;
  EXPECT_NE(last_error.find("LimitFSIZE"), std::string::npos) << last_error;
  user.close();
  // A stop, not a death by signal (128 + SIGXFSZ = 153); its checkpoint may
  // fail on the same limit.
  const auto code = host->interrupt();
  ASSERT_TRUE(code.has_value()) << host->log();
  EXPECT_TRUE(*code == 0 || *code == 1) << *code << "\n" << host->log();
  for (const char* crash : {"terminate called", "Segmentation fault", "AddressSanitizer", "runtime error:"})
    EXPECT_EQ(host->log().find(crash), std::string::npos) << host->log();
}

// Replies from the embedded echo provider are never refused as "busy": the
// caps are for paid upstreams.
TEST(Faults, TwoHundredUsersOfTheEchoProviderAreAllAnswered) {
  TempDir dir;
  HostProcess host(MOORING_BINARY, dir.path(), "[provider.echo]\ntoken_delay = \"20ms\"\n");
  ASSERT_TRUE(host.started()) << host.log();
  std::vector<std::unique_ptr<ChatClient>> users;
  std::vector<std::int64_t> seqs;
  for (int i = 0; i < 200; ++i) {
    users.push_back(std::make_unique<ChatClient>());
    ASSERT_EQ(users.back()->connect(host.gateway(), fmt::format("u{}", i)), 101);
    seqs.push_back(say_and_get_seq(*users.back(), "hello there", "m"));
  }
  for (int i = 0; i < 200; ++i) {
    const auto reply = users[i]->read_until(
        [&](const ChatClient::Frame& f) { return is_chat_for(f, seqs[i]) || is_type(f, "error"); },
        std::chrono::seconds(30));
    EXPECT_TRUE(is_type(reply, "chat")) << boost::json::serialize(reply);
  }
  for (auto& user : users) user->close();
  expect_clean_stop(host);
}

}  // namespace
}  // namespace mooring::test
