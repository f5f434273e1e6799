// The store under real faults: an emptied, damaged, immutable or read-only
// database, a full disk, a checkpoint that cannot write. Each test checks the
// outcome value, the health, the log, and that nothing acknowledged is lost.
#include "store/store.hpp"

#include "faults.hpp"
#include "sqlite_file.hpp"
#include "workers.hpp"
#include "support/metrics.hpp"
#include "support/process.hpp"
#include "support/wait.hpp"

#include <gtest/gtest.h>

#include <sys/stat.h>

#include <cstdio>
#include <fstream>
#include <random>
#include <set>
#include <thread>

namespace mooring::store {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using test::run_on;
using test::TempDir;
using test_faults::CapturedLog;
using test_faults::Immutable;
using test_faults::Mount;
using test_sqlite::exec_file;
using test_sqlite::query_file;
using test_sqlite::version_2_tables;

bool said_once(const std::string& message) {
  return message.rfind("store:", 0) != 0 && message.find("store: store:") == std::string::npos;
}

unsigned mode_of(const fs::path& path) {
  struct stat info {};
  if (::stat(path.c_str(), &info) != 0) return 0;
  return info.st_mode & 0777;
}

// Restores the process umask on scope exit.
struct UmaskGuard {
  explicit UmaskGuard(mode_t mask) : previous(::umask(mask)) {}
  ~UmaskGuard() { ::umask(previous); }
  mode_t previous;
};

// Every test runs with the work on the store's thread and on the callers'.
class StoreFaultsTest : public ::testing::TestWithParam<StoreOptions::Worker> {
 protected:
  template <typename T>
  T await(awaitable<T> op) {
    return run_on(io, std::move(op));
  }

  Result<std::unique_ptr<Store>> try_open(const fs::path& where, StoreOptions options = {}) {
    options.worker = GetParam();
    return await(Store::open(io.get_executor(), where.string(), options));
  }

  // Whether `store` turns failed within 10 s (its health is told on io).
  bool becomes_failed(Store& store) {
    return test::poll_until(
        [&] {
          io.restart();
          io.poll();
          return store.health().state == Health::State::failed;
        },
        10s);
  }

  // Checkpoints fail while the database file cannot be written, and succeed
  // again once it can; nothing acknowledged meanwhile is lost.
  void a_failed_checkpoint(bool synchronous_full);

  // Opens a store in `where`, stores `count` user messages for 50 users and
  // closes it; returns what was acknowledged, by seq.
  std::map<Seq, std::string> fill(const fs::path& where, int count) {
    auto store = try_open(where).value();
    std::map<Seq, std::string> acknowledged;
    for (int i = 0; i < count; ++i) {
      const std::string text = "message " + std::to_string(i) + " " + std::string(200, 'x');
      auto appended =
          await(store->append_user_message("user" + std::to_string(i % 50), text)).value();
      acknowledged.emplace(appended.seq, text);
    }
    await(store->close()).value();
    return acknowledged;
  }

  // Every acknowledged message is in the store at `where`, as it was sent.
  void expect_all_there(const fs::path& where, const std::map<Seq, std::string>& acknowledged) {
    auto store = try_open(where);
    ASSERT_TRUE(store) << store.error().message;
    std::size_t found = 0;
    for (int user = 0; user < 50; ++user) {
      auto history = await((*store)->messages("user" + std::to_string(user), 100000)).value();
      for (const auto& m : history) {
        auto it = acknowledged.find(m.seq);
        if (it == acknowledged.end()) continue;
        EXPECT_EQ(m.content, it->second) << "message " << m.seq;
        ++found;
      }
    }
    EXPECT_EQ(found, acknowledged.size());
    await((*store)->close()).value();
  }

  asio::io_context io;
  TempDir dir;
};

// Defect: a zero-byte mooring.db (500 acknowledged messages before) silently
// became a new, empty store.
TEST_P(StoreFaultsTest, AnEmptyDatabaseFileIsDamageNeverAFirstStart) {
  const auto data = dir / "data";
  const auto acknowledged = fill(data, 500);
  fs::copy_file(data / "mooring.db", dir / "backup.db");
  fs::resize_file(data / "mooring.db", 0);

  auto opened = try_open(data);
  ASSERT_FALSE(opened);
  const auto& error = opened.error();
  EXPECT_EQ(error.kind, StoreError::Kind::corrupt);
  EXPECT_NE(error.message.find("is empty (0 bytes)"), std::string::npos) << error.message;
  EXPECT_NE(error.message.find("restore mooring.db from a backup"), std::string::npos);
  EXPECT_NE(error.message.find("move the empty file away"), std::string::npos);
  EXPECT_TRUE(said_once(error.message)) << error.message;
  std::printf("[ operator sees ] %s\n", error.message.c_str());
  // Left as it was found, for the operator to look at.
  EXPECT_EQ(fs::file_size(data / "mooring.db"), 0u);
  EXPECT_FALSE(fs::exists(data / "mooring.db-wal"));

  // Restored from the backup, every acknowledged message is back.
  fs::copy_file(dir / "backup.db", data / "mooring.db", fs::copy_options::overwrite_existing);
  expect_all_there(data, acknowledged);
}

// Defect: with five random 4 KiB blocks damaged the store started, 42 of 50
// users' history reads failed, and new messages went into the broken file.
TEST_P(StoreFaultsTest, DamagedPagesAreRefusedBeforeAnythingIsWritten) {
  const auto data = dir / "data";
  const auto acknowledged = fill(data, 2000);
  const auto damaged_dir = dir / "damaged";
  fs::create_directories(damaged_dir);
  fs::copy_file(data / "mooring.db", damaged_dir / "mooring.db");

  const auto size = fs::file_size(damaged_dir / "mooring.db");
  const auto blocks = size / 4096;
  ASSERT_GT(blocks, 20u);
  std::mt19937 random(20261126);
  std::set<std::uint64_t> chosen;
  while (chosen.size() < 5) chosen.insert(std::uniform_int_distribution<std::uint64_t>(0, blocks - 1)(random));
  {
    std::fstream file(damaged_dir / "mooring.db", std::ios::in | std::ios::out | std::ios::binary);
    for (auto block : chosen) {
      std::string noise(4096, '\0');
      for (auto& c : noise) c = static_cast<char>(random());
      file.seekp(static_cast<std::streamoff>(block * 4096));
      file.write(noise.data(), static_cast<std::streamsize>(noise.size()));
    }
  }
  const auto before = test::read_file(damaged_dir / "mooring.db");

  auto opened = try_open(damaged_dir);
  ASSERT_FALSE(opened) << "blocks " << ::testing::PrintToString(chosen);
  const auto& error = opened.error();
  EXPECT_EQ(error.kind, StoreError::Kind::corrupt) << error.message;
  EXPECT_NE(error.message.find("is damaged"), std::string::npos) << error.message;
  EXPECT_NE(error.message.find("restore"), std::string::npos) << error.message;
  EXPECT_TRUE(said_once(error.message)) << error.message;
  std::printf("[ operator sees ] %s\n", error.message.c_str());
  // Nothing was written into the damaged file.
  EXPECT_EQ(test::read_file(damaged_dir / "mooring.db"), before);

  expect_all_there(data, acknowledged);
}

// Defect: a database SQLite could only open read-only started ready, then
// every message got store_error.
TEST_P(StoreFaultsTest, AnImmutableDatabaseFileIsRefused) {
  const auto data = dir / "data";
  const auto acknowledged = fill(data, 100);
  Immutable immutable(data / "mooring.db");
  if (!immutable.ok()) GTEST_SKIP() << immutable.reason();

  auto opened = try_open(data);
  ASSERT_FALSE(opened);
  const auto& error = opened.error();
  EXPECT_EQ(error.kind, StoreError::Kind::io);
  EXPECT_NE(error.message.find("immutable (chattr +i)"), std::string::npos) << error.message;
  EXPECT_NE(error.message.find("chattr -i"), std::string::npos) << error.message;
  EXPECT_TRUE(said_once(error.message)) << error.message;
  std::printf("[ operator sees ] %s\n", error.message.c_str());

  immutable.release();
  expect_all_there(data, acknowledged);
}

TEST_P(StoreFaultsTest, AnImmutableDataDirectoryIsRefused) {
  const auto data = dir / "data";
  const auto acknowledged = fill(data, 10);
  Immutable immutable(data);
  if (!immutable.ok()) GTEST_SKIP() << immutable.reason();

  auto opened = try_open(data);
  ASSERT_FALSE(opened);
  EXPECT_EQ(opened.error().kind, StoreError::Kind::io);
  EXPECT_NE(opened.error().message.find("the data directory " + data.string() + " is immutable"),
            std::string::npos)
      << opened.error().message;
  std::printf("[ operator sees ] %s\n", opened.error().message.c_str());

  immutable.release();
  expect_all_there(data, acknowledged);
}

TEST_P(StoreFaultsTest, AReadOnlyMountIsRefused) {
  const auto data = dir / "data";
  const auto acknowledged = fill(data, 10);
  const auto read_only = dir / "read-only";
  fs::create_directories(read_only);
  auto mount = Mount::read_only_bind(data, read_only);
  if (!mount.ok()) GTEST_SKIP() << mount.reason();

  auto opened = try_open(read_only);
  ASSERT_FALSE(opened);
  EXPECT_EQ(opened.error().kind, StoreError::Kind::io);
  EXPECT_NE(opened.error().message.find("read-only file system"), std::string::npos)
      << opened.error().message;
  std::printf("[ operator sees ] %s\n", opened.error().message.c_str());
  expect_all_there(data, acknowledged);
}

// Minor defect: an immutable -shm file ended the process with SIGBUS and no
// log line. A -shm left by a killed process is checked at open.
TEST_P(StoreFaultsTest, AnImmutableShmFileIsRefusedAtOpen) {
  const auto data = dir / "data";
  const auto crashed = dir / "crashed";
  fs::create_directories(crashed);
  std::map<Seq, std::string> acknowledged;
  {
    auto store = try_open(data).value();
    for (int i = 0; i < 20; ++i) {
      const std::string text = "before the crash " + std::to_string(i);
      acknowledged.emplace(
          await(store->append_user_message("user" + std::to_string(i), text)).value().seq, text);
    }
    // The files as a kill -9 leaves them: database, WAL and shared memory.
    for (const char* name : {"mooring.db", "mooring.db-wal", "mooring.db-shm"}) {
      ASSERT_TRUE(fs::exists(data / name)) << name;
      fs::copy_file(data / name, crashed / name);
    }
    await(store->close()).value();
  }
  Immutable immutable(crashed / "mooring.db-shm");
  if (!immutable.ok()) GTEST_SKIP() << immutable.reason();

  auto opened = try_open(crashed);
  ASSERT_FALSE(opened);
  EXPECT_NE(opened.error().message.find("mooring.db-shm is immutable"), std::string::npos)
      << opened.error().message;
  std::printf("[ operator sees ] %s\n", opened.error().message.c_str());

  immutable.release();
  expect_all_there(crashed, acknowledged);
}

// Issue 11: the conversations were world-readable (0644 files in a 0755 directory).
TEST_P(StoreFaultsTest, TheFilesAreOwnerOnlyWhateverTheUmask) {
  const auto data = dir / "data";
  {
    UmaskGuard open_umask(0);
    auto store = try_open(data).value();
    await(store->append_user_message("ann", "private")).value();
    EXPECT_EQ(mode_of(data), 0700u);
    EXPECT_EQ(mode_of(data / "mooring.db"), 0600u);
    EXPECT_EQ(mode_of(data / "mooring.db-wal"), 0600u);
    EXPECT_EQ(mode_of(data / "mooring.db-shm"), 0600u);
    await(store->close()).value();
  }
  // Files from an older mooring are narrowed at open.
  ASSERT_EQ(::chmod(data.c_str(), 0755), 0);
  ASSERT_EQ(::chmod((data / "mooring.db").c_str(), 0644), 0);
  UmaskGuard open_umask(0);
  auto store = try_open(data).value();
  await(store->append_user_message("ann", "still private")).value();
  EXPECT_EQ(mode_of(data), 0700u);
  EXPECT_EQ(mode_of(data / "mooring.db"), 0600u);
  EXPECT_EQ(mode_of(data / "mooring.db-wal"), 0600u);
  EXPECT_EQ(mode_of(data / "mooring.db-shm"), 0600u);
  await(store->close()).value();
}

awaitable<void> append_into(Store& store, std::string user, std::string text,
                            std::optional<Result<Appended>>* out) {
  out->emplace(co_await store.append_user_message(std::move(user), std::move(text)));
}

// Fills the file system of `path`'s directory with `path` until it refuses.
std::uintmax_t fill_disk(const fs::path& path) {
  std::FILE* file = std::fopen(path.c_str(), "wb");
  if (file == nullptr) return 0;
  std::setvbuf(file, nullptr, _IONBF, 0);
  const std::string chunk(4096, 'f');
  std::uintmax_t written = 0;
  while (std::fwrite(chunk.data(), 1, chunk.size(), file) == chunk.size()) written += chunk.size();
  std::fclose(file);
  return written;
}

// A batch larger than SQLite's page cache spills pages to the WAL before its
// COMMIT; on a full disk that spill fails and SQLite undoes the whole
// transaction by itself. Defects: the operations after it in the batch then
// ran outside any transaction, and the errors said "cannot rollback - no
// transaction is active" instead of what happened.
TEST_P(StoreFaultsTest, ATransactionSQLiteUndoesByItselfFailsTheWholeBatchWithItsCause) {
  const auto disk = dir / "disk";
  fs::create_directories(disk);
  auto mount = Mount::tmpfs(disk, 16 * 1024 * 1024);
  if (!mount.ok()) GTEST_SKIP() << mount.reason();
  const auto data = disk / "data";
  CapturedLog log;
  auto store = try_open(data).value();
  await(store->append_user_message("early", "before")).value();
  // About 3 MiB left: less than one batch of the appends below (6 MiB).
  {
    const auto filler = disk / "filler";
    ASSERT_GT(fill_disk(filler), 0u);
    fs::resize_file(filler, fs::file_size(filler) - 3 * 1024 * 1024);
  }
  constexpr int kAppends = 24;
  const auto text = [](int i) { return std::to_string(i) + " " + std::string(256 * 1024, 'z'); };
  std::vector<std::optional<Result<Appended>>> results(kAppends);
  for (int i = 0; i < kAppends; ++i)
    asio::co_spawn(io, append_into(*store, "user" + std::to_string(i), text(i), &results[i]),
                   asio::detached);
  io.restart();
  io.run_for(20s);  // returns when every append has completed

  std::set<std::string> acknowledged;
  int refused = 0;
  for (int i = 0; i < kAppends; ++i) {
    ASSERT_TRUE(results[i].has_value());
    if (*results[i]) {
      acknowledged.insert("user" + std::to_string(i));
      continue;
    }
    ++refused;
    const auto& message = results[i]->error().message;
    EXPECT_EQ(message.find("no transaction is active"), std::string::npos) << message;
    EXPECT_NE(message.find("the disk is full"), std::string::npos) << message;
  }
  ASSERT_GT(refused, 0) << "the disk never filled";
  fs::remove(disk / "filler");
  await(store->close()).value();

  // What was refused is not stored; what was acknowledged is.
  store = try_open(data).value();
  for (int i = 0; i < kAppends; ++i) {
    const auto user = "user" + std::to_string(i);
    const auto history = await(store->messages(user, 10)).value();
    EXPECT_EQ(history.size(), acknowledged.contains(user) ? 1u : 0u) << user;
  }
  await(store->close()).value();
}

// The upgrade from an older schema copies the messages table once. On a disk
// without room for that copy the operator is told so, and the file is left
// at its old version; with room again it upgrades.
TEST_P(StoreFaultsTest, AnUpgradeOnAFullDiskSaysItNeedsRoomForACopyAndLeavesTheFile) {
  const auto disk = dir / "disk";
  fs::create_directories(disk);
  auto mount = Mount::tmpfs(disk, 8 * 1024 * 1024);
  if (!mount.ok()) GTEST_SKIP() << mount.reason();
  const auto data = disk / "data";
  fs::create_directories(data);
  // About 1.2 MB of messages at schema version 2.
  exec_file(data / "mooring.db",
            version_2_tables +
                "INSERT INTO sessions VALUES ('ann', 1, 1, 0);"
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 300) "
                "INSERT INTO messages (user_id, role, content, status, created_ms, updated_ms) "
                "SELECT 'ann', 'user', hex(randomblob(2000)), 'answered', i, i FROM n;"
                "PRAGMA wal_checkpoint(TRUNCATE);"
                "PRAGMA user_version = 2;");
  {
    const auto filler = disk / "filler";
    ASSERT_GT(fill_disk(filler), 0u);
    fs::resize_file(filler, fs::file_size(filler) - 256 * 1024);
  }
  auto opened = try_open(data);
  ASSERT_FALSE(opened);
  const auto& message = opened.error().message;
  EXPECT_NE(message.find("cannot upgrade"), std::string::npos) << message;
  EXPECT_NE(message.find("the disk is full"), std::string::npos) << message;
  EXPECT_NE(message.find("second copy"), std::string::npos) << message;
  std::printf("[ operator sees ] %s\n", message.c_str());
  EXPECT_EQ(query_file(data / "mooring.db", "PRAGMA user_version"), "2");

  fs::remove(disk / "filler");
  auto upgraded = try_open(data);
  ASSERT_TRUE(upgraded) << upgraded.error().message;
  EXPECT_EQ(await((*upgraded)->messages("ann", 1000)).value().size(), 300u);
  await((*upgraded)->close()).value();
}

// Defect: a first start on a full disk left an empty mooring.db (its schema
// failed after the file had taken its name), said it could not "upgrade"
// it, and every later start, space freed or not, refused the empty file as
// damage and asked for a backup that never existed. Now the file takes its
// name once its schema is written; with room again the next start creates it.
TEST_P(StoreFaultsTest, AFirstStartOnAFullDiskLeavesNothingAndTheNextOneCreatesTheStore) {
  const auto disk = dir / "disk";
  fs::create_directories(disk);
  auto mount = Mount::tmpfs(disk, 1024 * 1024);
  if (!mount.ok()) GTEST_SKIP() << mount.reason();
  const auto data = disk / "data";
  fs::create_directories(data);
  {
    const auto filler = disk / "filler";
    ASSERT_GT(fill_disk(filler), 0u);
    fs::resize_file(filler, fs::file_size(filler) - 12 * 1024);
  }
  auto opened = try_open(data);
  ASSERT_FALSE(opened);
  const auto& message = opened.error().message;
  std::printf("[ operator sees ] %s\n", message.c_str());
  EXPECT_NE(message.find("the disk is full"), std::string::npos) << message;
  EXPECT_EQ(message.find("upgrade"), std::string::npos) << message;
  EXPECT_FALSE(fs::exists(data / "mooring.db"));

  fs::remove(disk / "filler");
  auto created = try_open(data);
  ASSERT_TRUE(created) << created.error().message;
  await((*created)->append_user_message("ann", "stored")).value();
  await((*created)->close()).value();
}

// Defects: on a full disk readiness stayed 200 (nothing said the store could
// not write), 62,144 error lines in 14 s, "disk I/O error" for a full disk, and
// a message whose reply could not be stored was answered after the restart.
TEST_P(StoreFaultsTest, AFullDiskDegradesTheStoreUntilWritesSucceedAgain) {
  const auto disk = dir / "disk";
  fs::create_directories(disk);
  auto mount = Mount::tmpfs(disk, 4 * 1024 * 1024);
  if (!mount.ok()) GTEST_SKIP() << mount.reason();
  const auto data = disk / "data";
  CapturedLog log;

  StoreOptions options;
  options.probe_interval = 50ms;
  auto store = try_open(data, options).value();
  std::vector<std::pair<Health, std::thread::id>> told;
  store->watch_health(io.get_executor(), [&told](const Health& health) {
    told.emplace_back(health, std::this_thread::get_id());
  });

  std::map<Seq, std::string> acknowledged;
  for (int i = 0; i < 20; ++i) {
    const std::string text = "before " + std::to_string(i);
    acknowledged.emplace(
        await(store->append_user_message("user" + std::to_string(i % 50), text)).value().seq,
        text);
  }
  // The user was told that its reply could not be stored.
  const Seq asked = await(store->append_user_message("user7", "will you answer?")).value().seq;
  acknowledged.emplace(asked, "will you answer?");

  ASSERT_GT(fill_disk(disk / "filler"), 0u);
  const auto stats_before = store->stats();
  const double commits_observed = test::metric_value("mooring_store_commit_seconds_count");
  const double operations_observed = test::metric_value("mooring_store_batch_operations_sum");
  const double failures_observed = test::metric_value("mooring_store_failed_transactions_total");
  constexpr int kRefused = 300;
  std::vector<std::optional<Result<Appended>>> results(kRefused);
  for (int i = 0; i < kRefused; ++i)
    asio::co_spawn(io,
                   append_into(*store, "user" + std::to_string(i % 50),
                               "on a full disk " + std::to_string(i) + std::string(2000, 'y'),
                               &results[i]),
                   asio::detached);
  io.restart();
  io.run_for(20s);  // returns when every append has completed

  int refused = 0;
  std::string first_error;
  for (int i = 0; i < kRefused; ++i) {
    ASSERT_TRUE(results[i].has_value());
    if (*results[i]) {
      acknowledged.emplace((*results[i])->seq, "on a full disk " + std::to_string(i) + std::string(2000, 'y'));
      continue;
    }
    ++refused;
    const auto& error = results[i]->error();
    EXPECT_EQ(error.kind, StoreError::Kind::io);
    EXPECT_NE(error.message.find("the disk is full"), std::string::npos) << error.message;
    EXPECT_EQ(error.message.find("disk I/O error"), std::string::npos) << error.message;
    EXPECT_TRUE(said_once(error.message)) << error.message;
    if (first_error.empty()) first_error = error.message;
  }
  ASSERT_GT(refused, kRefused / 2);
  // Only committed transactions are observed: each stored operation was in
  // one (an operation refused alone may share a transaction that committed).
  EXPECT_GT(store->stats().failed_batches, stats_before.failed_batches);
  EXPECT_EQ(test::metric_value("mooring_store_failed_transactions_total") - failures_observed,
            static_cast<double>(store->stats().failed_batches - stats_before.failed_batches));
  EXPECT_EQ(test::metric_value("mooring_store_commit_seconds_count") - commits_observed,
            static_cast<double>(store->stats().commits - stats_before.commits));
  const double stored_operations =
      test::metric_value("mooring_store_batch_operations_sum") - operations_observed;
  EXPECT_GE(stored_operations, kRefused - refused);
  EXPECT_LT(stored_operations, kRefused);
  std::printf("[ operator sees ] %d of %d refused: %s\n", refused, kRefused, first_error.c_str());

  auto health = store->health();
  EXPECT_EQ(health.state, Health::State::degraded);
  EXPECT_NE(health.last_error.find("the disk is full"), std::string::npos) << health.last_error;
  EXPECT_GE(health.failures, static_cast<std::uint64_t>(refused));
  ASSERT_FALSE(told.empty());
  EXPECT_EQ(told.front().first.state, Health::State::degraded);
  EXPECT_EQ(told.front().second, std::this_thread::get_id());  // on the watcher's executor
  // One line for the storm of refused operations, not one per refused
  // message (a slow machine may also have written the summary of the repeats,
  // and the probe's own failure, by now).
  std::size_t first_reports = 0;
  for (const auto& line : log.lines_with("nothing of the transaction was stored"))
    first_reports += line.find("more in the last") == std::string::npos ? 1 : 0;
  EXPECT_EQ(first_reports, 1u);

  // The reply cannot be stored; the outcome the user was told is kept.
  auto marked = await(store->mark_failed("user7", asked, "the reply could not be stored; ask again"));
  if (!marked) {
    EXPECT_NE(marked.error().message.find("the disk is full"), std::string::npos);
  }
  for (const auto& m : await(store->pending_messages()).value()) EXPECT_NE(m.seq, asked);

  // Space comes back; nobody writes: the store finds out by itself.
  fs::remove(disk / "filler");
  ASSERT_TRUE(test::poll_until(
      [&] {
        io.restart();
        io.poll();
        return store->health().state == Health::State::ok && !told.empty() &&
               told.back().first.state == Health::State::ok;
      },
      10s));
  EXPECT_GE(store->stats().probes, 1u);
  EXPECT_EQ(log.lines_with("writes succeed again").size(), 1u);
  // One summary of the storm; a slow machine may also summarise the probe's
  // own repeated failures, a line of their own.
  std::vector<std::string> summary;
  for (const auto& line : log.lines_with(" more in the last "))
    if (line.find("nothing of the transaction was stored") != std::string::npos) summary.push_back(line);
  ASSERT_EQ(summary.size(), 1u);
  std::printf("[ log ] %s\n", summary[0].c_str());
  for (const auto& line : log.all()) EXPECT_EQ(line.find("store: store:"), std::string::npos) << line;

  const std::string after = "after the disk was freed";
  acknowledged.emplace(await(store->append_user_message("user1", after)).value().seq, after);
  await(store->close()).value();
  store.reset();

  // Nothing acknowledged was lost; the message the user was told to ask again
  // is failed, with what they were told, and is not answered after the restart.
  expect_all_there(data, acknowledged);
  auto reopened = try_open(data).value();
  for (const auto& m : await(reopened->pending_messages()).value()) EXPECT_NE(m.seq, asked);
  auto history = await(reopened->messages("user7", 1000)).value();
  auto it = std::find_if(history.begin(), history.end(), [&](const Message& m) { return m.seq == asked; });
  ASSERT_NE(it, history.end());
  EXPECT_EQ(it->status, MessageStatus::failed);
  EXPECT_EQ(it->failure, std::optional<std::string>("the reply could not be stored; ask again"));
  await(reopened->close()).value();
}

// A store that cannot write does not open: the probe write at open meets the full disk.
TEST_P(StoreFaultsTest, AFullDiskAtOpenIsRefusedWithWhatToDo) {
  const auto disk = dir / "disk";
  fs::create_directories(disk);
  auto mount = Mount::tmpfs(disk, 2 * 1024 * 1024);
  if (!mount.ok()) GTEST_SKIP() << mount.reason();
  const auto data = disk / "data";
  const auto acknowledged = [&] {
    auto store = try_open(data).value();
    std::map<Seq, std::string> out;
    for (int i = 0; i < 50; ++i) {
      const std::string text = "kept " + std::to_string(i);
      out.emplace(await(store->append_user_message("user" + std::to_string(i), text)).value().seq,
                  text);
    }
    await(store->close()).value();
    return out;
  }();
  ASSERT_GT(fill_disk(disk / "filler"), 0u);

  auto opened = try_open(data);
  ASSERT_FALSE(opened);
  EXPECT_EQ(opened.error().kind, StoreError::Kind::io);
  EXPECT_NE(opened.error().message.find("the disk is full"), std::string::npos)
      << opened.error().message;
  EXPECT_TRUE(said_once(opened.error().message)) << opened.error().message;
  std::printf("[ operator sees ] %s\n", opened.error().message.c_str());

  fs::remove(disk / "filler");
  expect_all_there(data, acknowledged);
}

// Defect: failed WAL checkpoints were not logged nor retried (the WAL stayed
// at 213 MB after the fault was gone).
void StoreFaultsTest::a_failed_checkpoint(bool synchronous_full) {
  const auto data = dir / "data";
  CapturedLog log;
  StoreOptions options;
  options.probe_interval = 50ms;
  options.checkpoint_pages = 4;
  options.synchronous_full = synchronous_full;
  auto store = try_open(data, options).value();
  std::map<Seq, std::string> acknowledged;
  auto append = [&](int i) {
    const std::string text = "message " + std::to_string(i) + std::string(3000, 'z');
    acknowledged.emplace(await(store->append_user_message("user" + std::to_string(i % 50), text)).value().seq, text);
  };
  for (int i = 0; i < 10; ++i) append(i);
  // On the callers' thread, checkpoints run on the store thread after the commit.
  EXPECT_TRUE(test::poll_until([&] { return store->stats().checkpoints >= 1; }, 10s));

  Immutable immutable(data / "mooring.db");
  if (!immutable.ok()) GTEST_SKIP() << immutable.reason();
  for (int i = 10; i < 60; ++i) append(i);  // into the WAL: acknowledged all the same
  EXPECT_TRUE(test::poll_until([&] { return store->stats().failed_checkpoints >= 2; }, 10s));
  EXPECT_EQ(store->health().state, Health::State::ok);
  const auto failed_lines = log.lines_with("the WAL checkpoint failed");
  ASSERT_EQ(failed_lines.size(), 1u);
  std::printf("[ log ] %s\n", failed_lines[0].c_str());

  const auto checkpoints = store->stats().checkpoints;
  immutable.release();
  // No traffic: the retry alone brings the WAL back into the database.
  ASSERT_TRUE(test::poll_until([&] { return store->stats().checkpoints > checkpoints; }, 10s));
  EXPECT_EQ(log.lines_with("the WAL checkpoint of " + (data / "mooring.db").string() + " succeeds again").size(), 1u);
  await(store->close()).value();
  store.reset();
  expect_all_there(data, acknowledged);
}

TEST_P(StoreFaultsTest, AFailedCheckpointIsLoggedOnceAndRetried) { a_failed_checkpoint(true); }

// The same where a checkpoint's copy is made alongside the writes first
// (its failure is the one of the checkpoint that follows it).
TEST_P(StoreFaultsTest, AFailedCheckpointIsLoggedOnceAndRetriedAtNormal) {
  a_failed_checkpoint(false);
}

// Defect: a data directory deleted while mooring ran went unnoticed; every
// message acknowledged after it was lost at the next start. Now nothing more
// is stored, the operator is told, and the commands the message gives bring
// back what was stored before.
TEST_P(StoreFaultsTest, ADeletedDataDirectoryStopsTheStoreAndSaysHowToKeepWhatItHeld) {
  const auto data = dir / "it's data";  // a name the commands must quote
  StoreOptions options;
  options.file_check_interval = 20ms;
  auto store = try_open(data, options).value();
  const auto before = await(store->append_user_message("ann", "stored before")).value();

  fs::remove_all(data);
  ASSERT_TRUE(becomes_failed(*store));
  const auto after = await(store->append_user_message("ann", "refused after"));
  ASSERT_FALSE(after);
  const auto& message = after.error().message;
  std::printf("[ operator sees ] %s\n", message.c_str());
  EXPECT_NE(message.find((data / "mooring.db").string() + " was deleted or moved"),
            std::string::npos);
  EXPECT_NE(message.find("nothing more is stored"), std::string::npos);
  EXPECT_EQ(store->health().last_error, message);

  // The commands it gives, run while the store still holds the files open.
  const std::string lead = "on its host: ";
  const auto open = message.find(lead + "mkdir -p ");
  ASSERT_NE(open, std::string::npos) << message;
  const auto close = message.find("), then restart it", open);
  ASSERT_NE(close, std::string::npos);
  const auto commands = message.substr(open + lead.size(), close - open - lead.size());
  ASSERT_EQ(std::system(commands.c_str()), 0) << commands;
  EXPECT_FALSE(await(store->close()));
  store.reset();

  auto reopened = try_open(data).value();
  const auto kept = await(reopened->messages("ann", 10)).value();
  ASSERT_EQ(kept.size(), 1u);
  EXPECT_EQ(kept[0].seq, before.seq);
  EXPECT_EQ(kept[0].content, "stored before");
  await(reopened->close()).value();
}

// Defect: the WAL deleted on its own (taken for a temporary file) went
// unnoticed; SQLite went on writing to the file it held open, and everything
// not yet copied into mooring.db was lost at the next start. Now what the WAL
// holds is copied into mooring.db at once (mooring.db alone, as a kill -9
// would leave it, holds the message), and nothing more is stored until a
// restart, which starts a new WAL.
TEST_P(StoreFaultsTest, ADeletedWalIsCopiedIntoTheDatabaseAndTheStoreStops) {
  const auto data = dir / "data";
  StoreOptions options;
  options.file_check_interval = 20ms;
  auto store = try_open(data, options).value();
  const auto before = await(store->append_user_message("ann", "stored before")).value();
  ASSERT_TRUE(fs::exists(data / "mooring.db-wal"));

  fs::remove(data / "mooring.db-wal");
  ASSERT_TRUE(becomes_failed(*store));
  const auto after = await(store->append_user_message("ann", "refused after"));
  ASSERT_FALSE(after);
  const auto& message = after.error().message;
  std::printf("[ operator sees ] %s\n", message.c_str());
  EXPECT_NE(message.find((data / "mooring.db-wal").string() + " was deleted or moved"),
            std::string::npos);
  EXPECT_NE(message.find("nothing is lost"), std::string::npos);
  EXPECT_NE(message.find("restart mooring"), std::string::npos);

  // What a kill -9 now would leave: mooring.db, and no WAL.
  fs::create_directories(dir / "killed");
  fs::copy_file(data / "mooring.db", dir / "killed" / "mooring.db");
  {
    auto killed = try_open(dir / "killed").value();
    const auto kept = await(killed->messages("ann", 10)).value();
    ASSERT_EQ(kept.size(), 1u);
    EXPECT_EQ(kept[0].seq, before.seq);
    await(killed->close()).value();
  }

  EXPECT_FALSE(await(store->close()));
  store.reset();
  auto reopened = try_open(data).value();
  EXPECT_EQ(await(reopened->messages("ann", 10)).value().size(), 1u);
  await(reopened->append_user_message("ann", "stored after the restart")).value();
  EXPECT_TRUE(fs::exists(data / "mooring.db-wal"));
  await(reopened->close()).value();
}

// A store that has done nothing since it opened looks at its file too.
TEST_P(StoreFaultsTest, AnIdleStoreNoticesItsDeletedFile) {
  const auto data = dir / "data";
  StoreOptions options;
  options.file_check_interval = 20ms;
  auto store = try_open(data, options).value();
  fs::remove_all(data);
  EXPECT_TRUE(becomes_failed(*store));
  EXPECT_FALSE(await(store->close()));
}

// A database file replaced while mooring runs (a backup put back, say) is
// not the one it writes: the same, found without any write after it. The
// WAL at the path, still the store's, is emptied into the file it held at
// its close: the next start opens the replacement as it was put there.
TEST_P(StoreFaultsTest, AReplacedDatabaseFileStopsTheStoreAndIsOpenedAsItWasPutThere) {
  const auto data = dir / "data";
  fill(data, 1);  // the backup: user0's one message
  fs::copy_file(data / "mooring.db", dir / "backup.db");
  StoreOptions options;
  options.file_check_interval = 20ms;
  auto store = try_open(data, options).value();
  await(store->append_user_message("ann", "stored after the backup")).value();

  fs::copy_file(dir / "backup.db", data / "mooring.db.new");
  fs::rename(data / "mooring.db.new", data / "mooring.db");
  ASSERT_TRUE(becomes_failed(*store));
  const auto after = await(store->append_user_message("ann", "refused after"));
  ASSERT_FALSE(after);
  EXPECT_NE(after.error().message.find("mooring.db was replaced by another file"),
            std::string::npos)
      << after.error().message;
  EXPECT_NE(after.error().message.find("instead of the file there now"), std::string::npos);
  EXPECT_FALSE(await(store->close()));
  store.reset();

  auto reopened = try_open(data).value();
  EXPECT_EQ(await(reopened->messages("user0", 10)).value().size(), 1u);
  EXPECT_TRUE(await(reopened->messages("ann", 10)).value().empty())
      << "the old file's WAL was laid over the replacement";
  await(reopened->close()).value();
}

// Damage found while running (a row that does not decode) is `failed`, and a
// later successful write does not make it look ok.
TEST_P(StoreFaultsTest, DamageFoundWhileRunningFailsTheStoreUntilARestart) {
  const auto data = dir / "data";
  fill(data, 5);
  test_sqlite::exec_file(data / "mooring.db",
                         "UPDATE messages SET images = '[not json' WHERE seq = 1;");
  auto store = try_open(data).value();
  auto read = await(store->messages("user0", 10));
  ASSERT_FALSE(read);
  EXPECT_EQ(read.error().kind, StoreError::Kind::corrupt);
  EXPECT_EQ(store->health().state, Health::State::failed);
  await(store->append_user_message("user1", "written anyway")).value();
  EXPECT_EQ(store->health().state, Health::State::failed);
  EXPECT_NE(store->health().last_error.find("invalid images column"), std::string::npos)
      << store->health().last_error;
  await(store->close()).value();
}

// A role or status outside the schema, written by someone who bypassed its
// CHECKs, is found as damage when read while running and at the next open.
TEST_P(StoreFaultsTest, ARoleOrStatusOutsideTheSchemaIsDamage) {
  const auto data = dir / "data";
  fill(data, 2);
  auto store = try_open(data).value();
  test_sqlite::exec_file(data / "mooring.db",
                         "PRAGMA ignore_check_constraints = ON; "
                         "UPDATE messages SET status = 'lost' WHERE seq = 1;");
  auto read = await(store->messages("user0", 10));
  ASSERT_FALSE(read);
  EXPECT_EQ(read.error().kind, StoreError::Kind::corrupt);
  EXPECT_NE(read.error().message.find("unknown role or status"), std::string::npos)
      << read.error().message;
  await(store->close()).value();
  store.reset();

  auto reopened = try_open(data);
  ASSERT_FALSE(reopened);
  EXPECT_EQ(reopened.error().kind, StoreError::Kind::corrupt);
  EXPECT_NE(reopened.error().message.find("CHECK constraint failed"), std::string::npos)
      << reopened.error().message;
}

INSTANTIATE_TEST_SUITE_P(Workers, StoreFaultsTest, test_workers::all(), test_workers::name);

}  // namespace
}  // namespace mooring::store
