#include "store/store.hpp"

#include "store/schema.hpp"
#include "sqlite_file.hpp"
#include "workers.hpp"
#include "support/metrics.hpp"
#include "support/process.hpp"
#include "support/wait.hpp"

#include <gtest/gtest.h>
#include <sqlite3.h>

#include <unistd.h>

#include <cerrno>
#include <condition_variable>
#include <cstdio>
#include <mutex>
#include <filesystem>
#include <fstream>
#include <set>

namespace mooring::store {
namespace {

using namespace std::chrono_literals;
using test::run_on;
using test::TempDir;

using test_sqlite::exec_file;
using test_sqlite::query_file;
using test_sqlite::version_2_tables;

// Every test runs with the work on the store's thread and on the callers'.
class StoreTest : public ::testing::TestWithParam<StoreOptions::Worker> {
 protected:
  void SetUp() override { store = open(); }

  void TearDown() override {
    if (store) {
      await(store->close());
      store.reset();
    }
  }

  std::string data_dir() const { return (dir / "data").string(); }
  std::filesystem::path db_path() const { return dir / "data" / "mooring.db"; }

  Result<std::unique_ptr<Store>> try_open(const std::string& where, StoreOptions options = {}) {
    options.worker = GetParam();
    return await(Store::open(io.get_executor(), where, options));
  }
  std::unique_ptr<Store> open() { return try_open(data_dir()).value(); }

  // A restart: close the store and open the same data dir again.
  void reopen() {
    ASSERT_TRUE(await(store->close()));
    store = open();
  }

  template <typename T>
  T await(awaitable<T> op) {
    return run_on(io, std::move(op));
  }

  Seq append(const std::string& user, const std::string& text,
             std::optional<std::string> client_id = std::nullopt) {
    return await(store->append_user_message(user, text, {}, std::move(client_id))).value().seq;
  }

  // 3,000 writes from 20 users at once, checkpointed every 100 pages.
  void writes_that_never_pause(bool synchronous_full);

  // io is declared first so it outlives the store, whose last completions run on it.
  asio::io_context io;
  TempDir dir;
  std::unique_ptr<Store> store;
};

awaitable<void> append_into(Store& store, std::string user, std::string text,
                            std::optional<Result<Appended>>* out) {
  out->emplace(co_await store.append_user_message(std::move(user), std::move(text)));
}

awaitable<void> history_into(Store& store, std::string user,
                             std::optional<Result<std::vector<Message>>>* out) {
  out->emplace(co_await store.messages(std::move(user), 1000));
}

TEST_P(StoreTest, MigratesANewDirectoryToTheLatestSchemaInWalMode) {
  EXPECT_EQ(store->path(), db_path());
  await(store->close()).value();
  store.reset();
  EXPECT_EQ(query_file(db_path(), "PRAGMA user_version"), std::to_string(schema::latest_version()));
  EXPECT_EQ(query_file(db_path(), "PRAGMA journal_mode"), "wal");
  EXPECT_EQ(query_file(db_path(), "SELECT count(*) FROM sqlite_schema WHERE name = 'messages'"),
            "1");
}

TEST_P(StoreTest, CreatesMissingDirectories) {
  const auto nested = dir / "a" / "b";
  auto opened = try_open(nested.string());
  ASSERT_TRUE(opened) << opened.error().message;
  await((*opened)->close()).value();
  EXPECT_EQ(query_file(nested / "mooring.db", "PRAGMA user_version"),
            std::to_string(schema::latest_version()));
  // Built under another name and renamed into place: nothing of that is left.
  EXPECT_FALSE(std::filesystem::exists(nested / "mooring.db.creating"));
}

TEST_P(StoreTest, MigratesAVersion1Database) {
  TempDir old;
  exec_file(old / "mooring.db",
            "PRAGMA journal_mode = WAL;"
            "CREATE TABLE sessions (user_id TEXT PRIMARY KEY NOT NULL, created_ms INTEGER NOT "
            "NULL, last_seen_ms INTEGER NOT NULL, delivered_seq INTEGER NOT NULL DEFAULT 0);"
            "CREATE TABLE messages (seq INTEGER PRIMARY KEY AUTOINCREMENT, user_id TEXT NOT NULL "
            "REFERENCES sessions(user_id), role TEXT NOT NULL, content TEXT NOT NULL, images TEXT "
            "NOT NULL DEFAULT '[]', client_id TEXT, reply_to INTEGER, status TEXT NOT NULL, "
            "created_ms INTEGER NOT NULL, updated_ms INTEGER NOT NULL, UNIQUE (user_id, "
            "client_id));"
            "INSERT INTO sessions VALUES ('ann', 1, 1, 0);"
            "INSERT INTO messages (user_id, role, content, status, created_ms, updated_ms) "
            "VALUES ('ann', 'user', 'from version 1', 'pending', 1, 1);"
            "PRAGMA user_version = 1;");
  auto opened = try_open(old.path().string());
  ASSERT_TRUE(opened) << opened.error().message;
  auto pending = await((*opened)->pending_messages()).value();
  ASSERT_EQ(pending.size(), 1u);
  EXPECT_EQ(pending[0].content, "from version 1");
  EXPECT_FALSE(pending[0].failure.has_value());
  await((*opened)->close()).value();
  EXPECT_EQ(query_file(old / "mooring.db", "PRAGMA user_version"),
            std::to_string(schema::latest_version()));
}


// Version 3 rebuilds the messages table: every row, every seq and the next
// seq (above one given and since deleted) are kept, and what the old
// constraints enforced still holds.
TEST_P(StoreTest, MigratesAVersion2DatabaseKeepingEveryRowAndTheNextSeq) {
  TempDir old;
  exec_file(old / "mooring.db",
            version_2_tables +
            "INSERT INTO sessions VALUES ('ann', 1, 1, 2), ('bob', 1, 1, 0);"
            "INSERT INTO messages (seq, user_id, role, content, images, client_id, reply_to, "
            "status, created_ms, updated_ms, failure) VALUES "
            "(1, 'ann', 'user', 'question', '[\"https://example.com/a.png\"]', 'c1', NULL, "
            "'answered', 1, 2, NULL),"
            "(2, 'ann', 'assistant', 'answer', '[]', NULL, 1, 'answered', 2, 2, NULL),"
            "(3, 'bob', 'user', 'unanswered', '[]', 'c2', NULL, 'pending', 3, 3, NULL),"
            "(4, 'bob', 'user', 'refused', '[]', NULL, NULL, 'failed', 4, 4, 'upstream down'),"
            "(9, 'bob', 'user', 'deleted later', '[]', NULL, NULL, 'pending', 5, 5, NULL);"
            "DELETE FROM messages WHERE seq = 9;"
            "PRAGMA user_version = 2;");
  auto opened = try_open(old.path().string());
  ASSERT_TRUE(opened) << opened.error().message;
  auto& migrated = **opened;

  auto ann = await(migrated.messages("ann", 10)).value();
  ASSERT_EQ(ann.size(), 2u);
  EXPECT_EQ(ann[0].content, "question");
  EXPECT_EQ(ann[0].images, std::vector<std::string>{"https://example.com/a.png"});
  EXPECT_EQ(ann[0].client_id, "c1");
  EXPECT_EQ(ann[1].seq, 2);
  EXPECT_EQ(ann[1].reply_to, 1);
  auto bob = await(migrated.messages("bob", 10)).value();
  ASSERT_EQ(bob.size(), 2u);
  EXPECT_EQ(bob[1].failure, "upstream down");
  auto pending = await(migrated.pending_messages()).value();
  ASSERT_EQ(pending.size(), 1u);
  EXPECT_EQ(pending[0].seq, 3);

  // A client id seen before is still a duplicate; a reply is still stored once.
  auto again = await(migrated.append_user_message("ann", "question", {}, "c1")).value();
  EXPECT_TRUE(again.duplicate);
  EXPECT_EQ(again.seq, 1);
  EXPECT_EQ(await(migrated.store_reply("ann", 1, "answer again", MessageStatus::answered)).value(),
            2);
  // Seq 9 was given once: the next message comes after it.
  auto next = await(migrated.append_user_message("bob", "after the upgrade", {}, "c3")).value();
  EXPECT_EQ(next.seq, 10);
  EXPECT_FALSE(next.duplicate);
  await(migrated.close()).value();

  EXPECT_EQ(query_file(old / "mooring.db", "PRAGMA user_version"),
            std::to_string(schema::latest_version()));
  EXPECT_EQ(query_file(old / "mooring.db", "PRAGMA quick_check"), "ok");
  EXPECT_EQ(query_file(old / "mooring.db", "SELECT count(*) FROM pragma_foreign_key_check"), "0");
  // Replies (no client id) are in no client-id index any more.
  EXPECT_EQ(query_file(old / "mooring.db",
                       "SELECT group_concat(name) FROM pragma_index_list('messages') WHERE "
                       "origin = 'u'"),
            "");
  EXPECT_EQ(query_file(old / "mooring.db",
                       "SELECT partial FROM pragma_index_list('messages') WHERE name = "
                       "'messages_client_id'"),
            "1");
}

// A row that breaks a foreign key (written by hand with the keys off) stops
// the upgrade before its commit: the file stays as it was, and says why.
TEST_P(StoreTest, AnUpgradeThatWouldBreakAForeignKeyLeavesTheFileAsItWas) {
  TempDir old;
  exec_file(old / "mooring.db",
            version_2_tables +
            "INSERT INTO messages (user_id, role, content, status, created_ms, updated_ms) "
            "VALUES ('nobody', 'user', 'no session', 'pending', 1, 1);"
            "PRAGMA user_version = 2;");
  auto opened = try_open(old.path().string());
  ASSERT_FALSE(opened);
  EXPECT_NE(opened.error().message.find("schema version 3"), std::string::npos)
      << opened.error().message;
  EXPECT_NE(opened.error().message.find("finds 1 row(s) whose foreign key points nowhere"),
            std::string::npos)
      << opened.error().message;
  EXPECT_EQ(query_file(old / "mooring.db", "PRAGMA user_version"), "2");
  EXPECT_EQ(query_file(old / "mooring.db", "SELECT content FROM messages"), "no session");
}

// Seqs are given by the store, not by AUTOINCREMENT (whose bookkeeping
// wrote a page at every commit), and still never twice: the newest messages
// deleted by hand, with the store closed or open, leave their seqs used.
TEST_P(StoreTest, ASeqIsNeverGivenTwiceAfterTheNewestMessagesAreDeleted) {
  append("ann", "one");
  const Seq second = append("ann", "two");
  const Seq third = append("ann", "three");
  reopen();
  exec_file(db_path(), fmt::format("DELETE FROM messages WHERE seq >= {}", second));
  EXPECT_EQ(append("ann", "after a deletion while open"), third + 1);
  reopen();
  EXPECT_EQ(append("ann", "after a reopen"), third + 2);
  await(store->close()).value();
  store.reset();
  exec_file(db_path(), fmt::format("DELETE FROM messages WHERE seq >= {}", third + 1));
  store = open();
  EXPECT_EQ(append("ann", "after a deletion while closed"), third + 3);
  EXPECT_EQ(query_file(db_path(), "SELECT count(*) FROM sqlite_sequence WHERE name = 'messages'"),
            "0");
}

// Another writer that takes the seq the store would give next costs nobody a
// message: the store reads the next seq again and the append succeeds.
TEST_P(StoreTest, AnotherWriterTakingTheNextSeqDoesNotFailAnAppend) {
  const Seq first = append("ann", "one");
  exec_file(db_path(),
            fmt::format("INSERT INTO messages (seq, user_id, role, content, status, created_ms, "
                        "updated_ms) VALUES ({}, 'ann', 'user', 'from elsewhere', 'answered', 1, "
                        "1)",
                        first + 1));
  auto appended = await(store->append_user_message("ann", "two", {}, "c2"));
  ASSERT_TRUE(appended) << appended.error().message;
  EXPECT_EQ(appended->seq, first + 2);
  auto reply = await(store->store_reply("ann", appended->seq, "answer", MessageStatus::answered));
  ASSERT_TRUE(reply) << reply.error().message;
  EXPECT_EQ(*reply, first + 3);
}

TEST_P(StoreTest, ReopeningKeepsTheData) {
  const Seq seq = append("alice", "hello");
  reopen();
  auto history = await(store->messages("alice", 10)).value();
  ASSERT_EQ(history.size(), 1u);
  EXPECT_EQ(history[0].seq, seq);
  EXPECT_EQ(history[0].content, "hello");
}

TEST_P(StoreTest, RefusesADatabaseFromANewerMooringAndLeavesItUntouched) {
  TempDir newer;
  exec_file(newer / "mooring.db", "PRAGMA user_version = 99");
  auto opened = try_open(newer.path().string());
  ASSERT_FALSE(opened);
  EXPECT_EQ(opened.error().kind, StoreError::Kind::schema_too_new);
  EXPECT_NE(opened.error().message.find("schema version 99"), std::string::npos)
      << opened.error().message;
  EXPECT_NE(opened.error().message.find((newer / "mooring.db").string()), std::string::npos);
  EXPECT_EQ(query_file(newer / "mooring.db", "PRAGMA user_version"), "99");
  EXPECT_EQ(query_file(newer / "mooring.db", "PRAGMA journal_mode"), "delete");
}

TEST_P(StoreTest, RefusesAFileThatIsNotADatabase) {
  TempDir corrupt;
  test::write_file(corrupt / "mooring.db", std::string(8192, 'x'));
  auto opened = try_open(corrupt.path().string());
  ASSERT_FALSE(opened);
  EXPECT_EQ(opened.error().kind, StoreError::Kind::corrupt);
  EXPECT_NE(opened.error().message.find("move it aside"), std::string::npos)
      << opened.error().message;
}

TEST_P(StoreTest, ReportsADataDirectoryThatCannotBeCreated) {
  // A regular file in the way fails for every user, root included (tests may run as root,
  // which ignores permission bits).
  test::write_file(dir / "plain-file", "");
  auto opened = try_open((dir / "plain-file" / "data").string());
  ASSERT_FALSE(opened);
  EXPECT_EQ(opened.error().kind, StoreError::Kind::io);
  EXPECT_NE(opened.error().message.find("cannot create the data directory"), std::string::npos)
      << opened.error().message;
}

TEST_P(StoreTest, ConcurrentWritesShareCommits) {
  constexpr int kWrites = 200;
  std::vector<std::optional<Result<Appended>>> results(kWrites);
  const auto before = store->stats();
  const double observed_before = test::metric_value("mooring_store_commit_seconds_count");
  const double batches_before = test::metric_value("mooring_store_batch_operations_count");
  const double operations_before = test::metric_value("mooring_store_batch_operations_sum");
  const auto started = Clock::now();
  for (int i = 0; i < kWrites; ++i)
    asio::co_spawn(
        io,
        append_into(*store, "user" + std::to_string(i % 7), "m" + std::to_string(i), &results[i]),
        asio::detached);
  io.restart();
  io.run_for(20s);  // returns when every append has completed
  const auto elapsed = std::chrono::duration<double, std::milli>(Clock::now() - started).count();

  Seq previous = 0;
  for (int i = 0; i < kWrites; ++i) {
    ASSERT_TRUE(results[i].has_value()) << "append " << i << " did not complete";
    ASSERT_TRUE(*results[i]) << results[i]->error().message;
    // Enqueued in spawn order, run in queue order: seqs increase with i.
    EXPECT_GT((*results[i])->seq, previous);
    previous = (*results[i])->seq;
  }
  const auto after = store->stats();
  const auto commits = after.commits - before.commits;
  EXPECT_EQ(after.writes - before.writes, static_cast<std::uint64_t>(kWrites));
  EXPECT_GE(commits, 1u);
  EXPECT_LT(commits, static_cast<std::uint64_t>(kWrites));
  // Each commit is observed once, with the operations it carried.
  EXPECT_EQ(test::metric_value("mooring_store_commit_seconds_count") - observed_before,
            static_cast<double>(commits));
  EXPECT_EQ(test::metric_value("mooring_store_batch_operations_count") - batches_before,
            static_cast<double>(commits));
  EXPECT_EQ(test::metric_value("mooring_store_batch_operations_sum") - operations_before, kWrites);
  std::printf("[ group commit ] %d appends in %.1f ms with %llu commits\n", kWrites, elapsed,
              static_cast<unsigned long long>(commits));
  RecordProperty("commits", static_cast<int>(commits));
  RecordProperty("elapsed_ms", static_cast<int>(elapsed));
}

// How many times the WAL at `path` started over from its beginning: the
// checkpoint sequence number of its header (bytes 12-15, big-endian; see
// https://www.sqlite.org/fileformat2.html#walformat), 0 for an empty file.
std::uint32_t wal_restarts(const std::filesystem::path& path) {
  std::ifstream wal(path, std::ios::binary);
  unsigned char header[16] = {};
  if (!wal.read(reinterpret_cast<char*>(header), sizeof header)) return 0;
  return std::uint32_t{header[12]} << 24 | std::uint32_t{header[13]} << 16 |
         std::uint32_t{header[14]} << 8 | std::uint32_t{header[15]};
}

// Defect (found while moving batches to the callers' thread): checkpoints
// made by another connection while batches kept committing never caught up,
// so the WAL never started over and grew by every write (880 MB in 5 s of
// chat). Writes that never pause must still leave the WAL short.
void StoreTest::writes_that_never_pause(bool synchronous_full) {
  ASSERT_TRUE(await(store->close()));
  StoreOptions options;
  options.checkpoint_pages = 100;
  options.synchronous_full = synchronous_full;
  store = try_open(data_dir(), options).value();
  const auto wal_path = db_path().string() + "-wal";
  const auto restarts_before = wal_restarts(wal_path);
  constexpr int kUsers = 20;
  constexpr int kEach = 150;
  const std::string filler(3000, 'w');  // 9 MB in all: far more than a short WAL holds
  int stored = 0;
  auto writer = [&](int user) -> awaitable<void> {
    for (int i = 0; i < kEach; ++i) {
      auto appended = co_await store->append_user_message("user" + std::to_string(user),
                                                          std::to_string(i) + filler);
      if (appended) ++stored;
    }
  };
  for (int user = 0; user < kUsers; ++user) asio::co_spawn(io, writer(user), asio::detached);
  io.restart();
  io.run_for(60s);  // returns when every writer is done
  ASSERT_EQ(stored, kUsers * kEach);
  // At least three, so that the bound on restarts below asks for one. How
  // many more is the scheduler's doing: 5 to 22 on the callers' thread with
  // both cores busy elsewhere.
  ASSERT_TRUE(test::poll_until([&] { return store->stats().checkpoints >= 3; }, 10s))
      << store->stats().checkpoints << " checkpoints";
  const auto checkpoints = store->stats().checkpoints;
  const auto wal = std::filesystem::file_size(wal_path);
  const auto restarts = wal_restarts(wal_path) - restarts_before;
  // Each checkpoint copies the whole WAL (nothing else uses the database
  // meanwhile), so the next commit starts the WAL over. A checkpoint wanted
  // while the one before it waited for the database may find nothing new to
  // copy, but the commit that wanted it came after the checkpoint before
  // that: the WAL starts over at least once for every two checkpoints. The
  // defect's WAL never started over.
  EXPECT_GE(2 * restarts + 2, checkpoints) << restarts << " restarts of the WAL";
  if (GetParam() == StoreOptions::Worker::store_thread) {
    // Checkpointed right after the commit that passed checkpoint_pages: about
    // that many frames and one batch's, not the 9 MB written.
    EXPECT_LT(wal, 4u << 20) << wal << " bytes of WAL after " << checkpoints << " checkpoints";
  }
  // On the callers' thread, batches go on committing until the store thread
  // has the database for a checkpoint (after an fsync of the WAL): how far
  // the WAL grows meanwhile is the scheduler's and the disk's doing (from
  // about 600 KB to 7 MB on a loaded machine), so its length is a figure
  // here, and the restarts above are what tells it from the defect's (20 MB
  // of frames, every write).
  std::printf("[ wal ] %zu KiB after %d writes, %llu checkpoints and %u restarts\n",
              static_cast<std::size_t>(wal >> 10), kUsers * kEach,
              static_cast<unsigned long long>(checkpoints), restarts);
  // On the callers' thread at NORMAL, most of each checkpoint's copy is made
  // alongside the batches, the rest with the database held. A copy that
  // meets a commit starting the WAL over is busy and leaves it all to the
  // checkpoint (1 of 18 in one run), without a warning.
  const bool alongside = GetParam() == StoreOptions::Worker::caller && !synchronous_full;
  if (alongside) {
    const auto stats = store->stats();
    EXPECT_GE(stats.checkpoints_alongside + stats.checkpoints_alongside_busy, checkpoints);
    EXPECT_GT(stats.checkpoints_alongside, 0u);
  } else {
    EXPECT_EQ(store->stats().checkpoints_alongside, 0u);
  }
}

TEST_P(StoreTest, WritesThatNeverPauseLeaveTheWalShort) { writes_that_never_pause(true); }

TEST_P(StoreTest, WritesThatNeverPauseLeaveTheWalShortAtNormal) { writes_that_never_pause(false); }

// On the callers' thread a batch may not wait long for another process's
// lock (an sqlite3 shell in a write transaction): it fails, says why, and the
// next write after the lock is gone succeeds.
TEST_P(StoreTest, ALockHeldByAnotherProcessFailsABatchOnTheCallersThreadSoon) {
  if (GetParam() != StoreOptions::Worker::caller)
    GTEST_SKIP() << "the store thread waits up to busy_timeout, as it should";
  ASSERT_TRUE(await(store->close()));
  StoreOptions options;
  options.busy_timeout = 120s;  // what the batch must not wait for
  options.caller_busy_timeout = 50ms;
  store = try_open(data_dir(), options).value();
  sqlite3* other = nullptr;
  ASSERT_EQ(sqlite3_open(db_path().c_str(), &other), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(other, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr), SQLITE_OK);

  const auto started = Clock::now();
  auto refused = await(store->append_user_message("pat", "while locked"));
  const auto waited = Clock::now() - started;
  ASSERT_FALSE(refused);
  EXPECT_NE(refused.error().message.find("locked by another process"), std::string::npos)
      << refused.error().message;
  EXPECT_LT(waited, 20s);  // not busy_timeout's 120 s

  ASSERT_EQ(sqlite3_exec(other, "ROLLBACK", nullptr, nullptr, nullptr), SQLITE_OK);
  sqlite3_close(other);
  EXPECT_TRUE(await(store->append_user_message("pat", "after the lock")));
}

// One write alone: one commit observed, of one operation, and its time is
// in the histogram's sum; a read alone commits nothing and is not observed.
TEST_P(StoreTest, ACommitIsObservedWithItsTimeAndItsOperations) {
  const double count = test::metric_value("mooring_store_commit_seconds_count");
  const double seconds = test::metric_value("mooring_store_commit_seconds_sum");
  const double operations = test::metric_value("mooring_store_batch_operations_sum");
  const double single = test::metric_value("mooring_store_batch_operations_bucket{le=\"1\"}");
  append("dave", "hello");
  EXPECT_EQ(test::metric_value("mooring_store_commit_seconds_count") - count, 1);
  EXPECT_GT(test::metric_value("mooring_store_commit_seconds_sum") - seconds, 0);
  EXPECT_EQ(test::metric_value("mooring_store_batch_operations_sum") - operations, 1);
  EXPECT_EQ(test::metric_value("mooring_store_batch_operations_bucket{le=\"1\"}") - single, 1);
  ASSERT_TRUE(await(store->messages("dave", 10)));
  EXPECT_EQ(test::metric_value("mooring_store_commit_seconds_count") - count, 1);
  EXPECT_EQ(test::metric_value("mooring_store_batch_operations_sum") - operations, 1);
}

TEST_P(StoreTest, AReadQueuedBetweenWritesSeesExactlyTheWritesBeforeIt) {
  std::vector<std::optional<Result<Appended>>> appended(100);
  std::optional<Result<std::vector<Message>>> middle;
  for (int i = 0; i < 50; ++i)
    asio::co_spawn(io, append_into(*store, "bob", "m" + std::to_string(i), &appended[i]),
                   asio::detached);
  asio::co_spawn(io, history_into(*store, "bob", &middle), asio::detached);
  for (int i = 50; i < 100; ++i)
    asio::co_spawn(io, append_into(*store, "bob", "m" + std::to_string(i), &appended[i]),
                   asio::detached);
  io.restart();
  io.run_for(20s);

  ASSERT_TRUE(middle.has_value());
  ASSERT_TRUE(*middle) << middle->error().message;
  const auto& seen = **middle;
  ASSERT_EQ(seen.size(), 50u);
  for (int i = 0; i < 50; ++i) {
    EXPECT_EQ(seen[i].content, "m" + std::to_string(i));
    EXPECT_EQ(seen[i].seq, (*appended[i])->seq);
  }
  EXPECT_EQ(await(store->messages("bob", 1000)).value().size(), 100u);
}

// A batch runs without a savepoint per write until one fails; then it runs
// again, each write in its own. An operation that fails after writing part of
// its work (here: a new user's session row written, then their message
// refused by a trigger) leaves none of it, and its neighbours are stored.
TEST_P(StoreTest, AnOperationThatFailsHalfwayLeavesNothingAndItsNeighboursAreStored) {
  append("amy", "first");
  ASSERT_TRUE(await(store->close()));
  store.reset();
  exec_file(db_path(),
            "CREATE TRIGGER refuse_zoe BEFORE INSERT ON messages "
            "WHEN NEW.user_id = 'zoe' BEGIN SELECT RAISE(ABORT, 'refused by the test'); END;");
  store = open();
  std::optional<Result<Appended>> before;
  std::optional<Result<Appended>> failing;
  std::optional<Result<Appended>> after;
  asio::co_spawn(io, append_into(*store, "amy", "before", &before), asio::detached);
  asio::co_spawn(io, append_into(*store, "zoe", "refused", &failing), asio::detached);
  asio::co_spawn(io, append_into(*store, "amy", "after", &after), asio::detached);
  const auto commits = store->stats().commits;
  io.restart();
  io.run_for(20s);

  ASSERT_TRUE(failing.has_value());
  ASSERT_FALSE(*failing);
  EXPECT_NE(failing->error().message.find("refused by the test"), std::string::npos)
      << failing->error().message;
  ASSERT_TRUE(before.has_value() && *before) << (before ? before->error().message : "");
  ASSERT_TRUE(after.has_value() && *after) << (after ? after->error().message : "");
  // On the callers' thread the three share one batch for sure (one drain);
  // the store thread may start on the first before the others are queued.
  if (GetParam() == StoreOptions::Worker::caller) {
    EXPECT_EQ(store->stats().commits - commits, 1u);
  }
  ASSERT_TRUE(await(store->close()));
  store.reset();
  // The session row written before the refused insert: undone.
  EXPECT_EQ(query_file(db_path(), "SELECT count(*) FROM sessions WHERE user_id = 'zoe'"), "0");
  EXPECT_EQ(query_file(db_path(), "SELECT count(*) FROM messages WHERE user_id = 'zoe'"), "0");
  EXPECT_EQ(query_file(db_path(), "SELECT count(*) FROM messages WHERE user_id = 'amy'"), "3");
  store = open();
}

TEST_P(StoreTest, AFailingOperationDoesNotUndoItsNeighbours) {
  const Seq first = append("carol", "first");
  std::optional<Result<Appended>> before;
  std::optional<Result<Appended>> after;
  std::optional<Result<Seq>> bad_reply;
  asio::co_spawn(io, append_into(*store, "carol", "before", &before), asio::detached);
  asio::co_spawn(
      io,
      [](Store& s, Seq to, std::optional<Result<Seq>>* out) -> awaitable<void> {
        out->emplace(co_await s.store_reply("carol", to, "reply to a reply"));
      }(*store, first + 1000, &bad_reply),
      asio::detached);
  asio::co_spawn(io, append_into(*store, "carol", "after", &after), asio::detached);
  io.restart();
  io.run_for(20s);

  ASSERT_TRUE(bad_reply.has_value());
  ASSERT_FALSE(*bad_reply);
  EXPECT_EQ(bad_reply->error().kind, StoreError::Kind::not_found);
  ASSERT_TRUE(before && *before);
  ASSERT_TRUE(after && *after);
  auto history = await(store->messages("carol", 10)).value();
  ASSERT_EQ(history.size(), 3u);
  EXPECT_EQ(history[1].content, "before");
  EXPECT_EQ(history[2].content, "after");
}

TEST_P(StoreTest, AClientIdIsStoredOncePerUser) {
  auto first = await(store->append_user_message("dave", "hi", {"https://x/1.png"}, "c1")).value();
  EXPECT_FALSE(first.duplicate);
  EXPECT_EQ(first.status, MessageStatus::pending);

  auto again = await(store->append_user_message("dave", "hi (resent)", {}, "c1")).value();
  EXPECT_TRUE(again.duplicate);
  EXPECT_EQ(again.seq, first.seq);

  // The same client id from another user is another message.
  auto other = await(store->append_user_message("erin", "hi", {}, "c1")).value();
  EXPECT_FALSE(other.duplicate);
  EXPECT_NE(other.seq, first.seq);

  // Without a client id nothing is deduplicated.
  const Seq a = append("dave", "same");
  const Seq b = append("dave", "same");
  EXPECT_NE(a, b);

  auto history = await(store->messages("dave", 10)).value();
  ASSERT_EQ(history.size(), 3u);
  EXPECT_EQ(history[0].content, "hi");
  EXPECT_EQ(history[0].client_id, std::optional<std::string>("c1"));
  EXPECT_EQ(history[0].images, std::vector<std::string>{"https://x/1.png"});

  // A resend after the reply reports the message as answered.
  await(store->store_reply("dave", first.seq, "hello")).value();
  again = await(store->append_user_message("dave", "hi", {}, "c1")).value();
  EXPECT_TRUE(again.duplicate);
  EXPECT_EQ(again.status, MessageStatus::answered);
}

TEST_P(StoreTest, StoreReplyMarksTheMessageAnsweredOnce) {
  const Seq question = append("frank", "what time is it?");
  const Seq reply = await(store->store_reply("frank", question, "noon")).value();
  EXPECT_GT(reply, question);

  auto history = await(store->messages("frank", 10)).value();
  ASSERT_EQ(history.size(), 2u);
  EXPECT_EQ(history[0].role, Role::user);
  EXPECT_EQ(history[0].status, MessageStatus::answered);
  EXPECT_EQ(history[1].role, Role::assistant);
  EXPECT_EQ(history[1].content, "noon");
  EXPECT_EQ(history[1].reply_to, std::optional<Seq>(question));
  EXPECT_FALSE(history[1].client_id.has_value());
  // The reply alone was written (schema version 5): the question's own row
  // is as it was stored, and its status is its reply's.
  EXPECT_EQ(query_file(db_path(), fmt::format("SELECT status || ' ' || updated_ms FROM messages "
                                              "WHERE seq = {}",
                                              question)),
            fmt::format("pending {}", history[0].created_ms));

  // Retried after a crash: the first reply stands.
  EXPECT_EQ(await(store->store_reply("frank", question, "twelve o'clock")).value(), reply);
  history = await(store->messages("frank", 10)).value();
  ASSERT_EQ(history.size(), 2u);
  EXPECT_EQ(history[1].content, "noon");

  auto not_found = await(store->store_reply("frank", reply + 100, "?"));
  ASSERT_FALSE(not_found);
  EXPECT_EQ(not_found.error().kind, StoreError::Kind::not_found);
  auto to_a_reply = await(store->store_reply("frank", reply, "?"));
  ASSERT_FALSE(to_a_reply);
  EXPECT_EQ(to_a_reply.error().kind, StoreError::Kind::invalid_argument);
  auto other_user = await(store->store_reply("grace", question, "?"));
  ASSERT_FALSE(other_user);
  EXPECT_EQ(other_user.error().kind, StoreError::Kind::invalid_argument);

  const Seq doomed = append("frank", "draw me a horse");
  // Another user's reply to a pending message changes nothing.
  auto not_theirs = await(store->store_reply("grace", doomed, "?"));
  ASSERT_FALSE(not_theirs);
  EXPECT_EQ(not_theirs.error().kind, StoreError::Kind::invalid_argument);
  EXPECT_EQ(await(store->messages("frank", 1)).value().at(0).status, MessageStatus::pending);
  await(store->store_reply("frank", doomed, "the provider failed", MessageStatus::failed)).value();
  history = await(store->messages("frank", 2)).value();
  ASSERT_EQ(history.size(), 2u);
  EXPECT_EQ(history[0].seq, doomed);
  EXPECT_EQ(history[0].status, MessageStatus::failed);
}

// Issue 17 defect 6: a user told "the reply could not be stored; ask again" had
// the message answered after the next restart all the same.
TEST_P(StoreTest, MarkFailedRecordsWhatTheUserWasToldAndSurvivesARestart) {
  const Seq told = append("pat", "a question whose reply was lost");
  const Seq answered = append("pat", "a question answered");
  await(store->store_reply("pat", answered, "an answer")).value();

  EXPECT_EQ(await(store->mark_failed("pat", told, "the reply could not be stored; ask again"))
                .value(),
            MessageStatus::failed);
  // An answered message keeps its answer: its user saw it.
  EXPECT_EQ(await(store->mark_failed("pat", answered, "?")).value(), MessageStatus::answered);
  auto unknown = await(store->mark_failed("pat", answered + 1000, "?"));
  ASSERT_FALSE(unknown);
  EXPECT_EQ(unknown.error().kind, StoreError::Kind::not_found);
  auto other_user = await(store->mark_failed("quinn", told, "?"));
  ASSERT_FALSE(other_user);
  EXPECT_EQ(other_user.error().kind, StoreError::Kind::invalid_argument);
  EXPECT_TRUE(await(store->pending_messages()).value().empty());

  reopen();
  EXPECT_TRUE(await(store->pending_messages()).value().empty());
  auto history = await(store->messages("pat", 10)).value();
  ASSERT_EQ(history.size(), 3u);
  EXPECT_EQ(history[0].status, MessageStatus::failed);
  EXPECT_EQ(history[0].failure,
            std::optional<std::string>("the reply could not be stored; ask again"));
  EXPECT_EQ(history[1].status, MessageStatus::answered);
  EXPECT_FALSE(history[1].failure.has_value());
  EXPECT_EQ(store->health().state, Health::State::ok);
}

// A reply stored after its message was marked failed (the user was told to
// ask again, then the reply came all the same) is stored once and answers it.
TEST_P(StoreTest, AReplyToAMessageMarkedFailedIsStoredOnceAndAnswersIt) {
  const Seq told = append("pat", "a question whose reply was late");
  await(store->mark_failed("pat", told, "no reply in time")).value();
  const Seq late = await(store->store_reply("pat", told, "late after all")).value();
  EXPECT_GT(late, told);
  EXPECT_EQ(await(store->store_reply("pat", told, "again")).value(), late);
  auto history = await(store->messages("pat", 10)).value();
  ASSERT_EQ(history.size(), 2u);
  EXPECT_EQ(history[0].status, MessageStatus::answered);
  EXPECT_EQ(history[1].content, "late after all");
  EXPECT_EQ(history[1].reply_to, std::optional<Seq>(told));
}

TEST_P(StoreTest, AWriteAheadLogWithoutItsDatabaseIsRefused) {
  TempDir orphan;
  test::write_file(orphan / "mooring.db-wal", std::string(4096, 'w'));
  auto opened = try_open(orphan.path().string());
  ASSERT_FALSE(opened);
  EXPECT_EQ(opened.error().kind, StoreError::Kind::corrupt);
  EXPECT_NE(opened.error().message.find("mooring.db is missing but its write-ahead log"),
            std::string::npos)
      << opened.error().message;
  EXPECT_FALSE(std::filesystem::exists(orphan / "mooring.db"));
}

TEST_P(StoreTest, ACreationCutShortByACrashIsStartedOver) {
  TempDir fresh;
  // What a crash in the middle of a first start leaves: never mooring.db itself.
  test::write_file(fresh / "mooring.db.creating", "");
  auto opened = try_open(fresh.path().string());
  ASSERT_TRUE(opened) << opened.error().message;
  await((*opened)->close()).value();
  EXPECT_FALSE(std::filesystem::exists(fresh / "mooring.db.creating"));
  EXPECT_EQ(query_file(fresh / "mooring.db", "PRAGMA user_version"),
            std::to_string(schema::latest_version()));
}

TEST_P(StoreTest, RepliesAfterAndTheDeliveredCursor) {
  std::vector<Seq> replies;
  for (int i = 0; i < 3; ++i) {
    const Seq q = append("heidi", "q" + std::to_string(i));
    replies.push_back(await(store->store_reply("heidi", q, "a" + std::to_string(i))).value());
  }
  append("ivan", "unrelated");

  auto all = await(store->replies_after("heidi", 0)).value();
  ASSERT_EQ(all.size(), 3u);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(all[i].seq, replies[i]);
    EXPECT_EQ(all[i].content, "a" + std::to_string(i));
  }
  auto later = await(store->replies_after("heidi", replies[0])).value();
  ASSERT_EQ(later.size(), 2u);
  EXPECT_EQ(later[0].seq, replies[1]);
  EXPECT_EQ(await(store->replies_after("heidi", replies[0], 1)).value().size(), 1u);
  // A byte budget stops the read once the text read reaches it; the first
  // reply is read whatever its size.
  EXPECT_EQ(await(store->replies_after("heidi", 0, 10, 1)).value().size(), 1u);
  EXPECT_EQ(await(store->replies_after("heidi", 0, 10, 2)).value().size(), 1u);
  EXPECT_EQ(await(store->replies_after("heidi", 0, 10, 3)).value().size(), 2u);
  EXPECT_EQ(await(store->replies_after("heidi", 0, 10, 6)).value().size(), 3u);

  auto session = await(store->session("heidi")).value();
  ASSERT_TRUE(session.has_value());
  EXPECT_EQ(session->delivered_seq, 0);
  EXPECT_GT(session->created_ms, 0);
  EXPECT_GE(session->last_seen_ms, session->created_ms);

  EXPECT_EQ(await(store->advance_delivered("heidi", replies[1])).value(), replies[1]);
  // Never backwards: a late acknowledgement of an older reply changes nothing.
  EXPECT_EQ(await(store->advance_delivered("heidi", replies[0])).value(), replies[1]);
  EXPECT_EQ(await(store->session("heidi")).value()->delivered_seq, replies[1]);

  auto unknown = await(store->advance_delivered("nobody", 5));
  ASSERT_FALSE(unknown);
  EXPECT_EQ(unknown.error().kind, StoreError::Kind::not_found);
  EXPECT_FALSE(await(store->session("nobody")).value().has_value());

  // Many at once (the chat layer's timed write): each moves forward only, and
  // a user without a session is skipped without failing the others.
  std::vector<std::pair<std::string, Seq>> cursors{
      {"heidi", replies[2]}, {"nobody", 5}, {"ivan", 7}, {"heidi", replies[0]}};
  ASSERT_TRUE(await(store->advance_delivered(cursors)));
  EXPECT_EQ(await(store->session("heidi")).value()->delivered_seq, replies[2]);
  EXPECT_EQ(await(store->session("ivan")).value()->delivered_seq, 7);
  EXPECT_FALSE(await(store->session("nobody")).value().has_value());
}

// A session's last_seen_ms follows its messages to the second: a message a
// second or more after it moves it forward; one within a second of it, or
// before it, leaves the row as it is (not a page in the WAL per message).
TEST_P(StoreTest, LastSeenFollowsMessagesToTheSecondAndNeverGoesBack) {
  append("lena", "first");
  const auto first = await(store->session("lena")).value()->last_seen_ms;
  // Written by hand, then a restart: the store remembers the session rows it
  // wrote in the last second and leaves them alone meanwhile.
  const auto set_last_seen = [&](std::int64_t ms) {
    exec_file(db_path(), "UPDATE sessions SET last_seen_ms = " + std::to_string(ms) +
                             " WHERE user_id = 'lena'");
    reopen();
  };
  set_last_seen(first - 5000);
  append("lena", "five seconds later");
  const auto moved = await(store->session("lena")).value()->last_seen_ms;
  EXPECT_GE(moved, first);

  using namespace std::chrono;
  const auto now = duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
  // A millisecond ago: the next message is within a second of it (unless
  // this thread stalls for 999 ms), and the row stays as it is; it would
  // move to the message's time if every message rewrote it.
  set_last_seen(now - 1);
  append("lena", "within a second");
  EXPECT_EQ(await(store->session("lena")).value()->last_seen_ms, now - 1);

  set_last_seen(now + 3'600'000);
  append("lena", "an hour before the last one");
  EXPECT_EQ(await(store->session("lena")).value()->last_seen_ms, now + 3'600'000);
}

// A session row written less than a second ago is not asked about again;
// one the store did not write (a restart since) is.
TEST_P(StoreTest, ASessionWrittenWithinTheSecondIsLeftAloneAndARollbackForgetsIt) {
  append("mia", "first");
  const auto first = await(store->session("mia")).value()->last_seen_ms;
  // Deleted by hand with its messages (the shell does not enforce foreign
  // keys): the store's memory of the row is wrong; the insert that finds the
  // session missing rolls back, and the retry writes the row again.
  exec_file(db_path(), "DELETE FROM messages WHERE user_id = 'mia'; "
                       "DELETE FROM sessions WHERE user_id = 'mia'");
  auto appended = await(store->append_user_message("mia", "second", {}, std::nullopt));
  ASSERT_TRUE(appended) << appended.error().message;
  auto session = await(store->session("mia")).value();
  ASSERT_TRUE(session);
  EXPECT_GE(session->last_seen_ms, first);
  EXPECT_EQ(await(store->messages("mia", 10)).value().size(), 1u);
}

// No index of pending messages is kept (every message entered and left it):
// a floor below which none is pending moves up behind them as they are
// settled, never past one that is not, and a start reads from it.
TEST_P(StoreTest, TheFloorOfPendingMessagesStopsAtTheOldestOneNotSettled) {
  await(store->close()).value();
  store.reset();
  StoreOptions options;
  options.pending_floor_interval = std::chrono::milliseconds(0);  // at every write batch
  options.pending_floor_rows = 2;
  store = std::move(try_open(data_dir(), options).value());
  const auto floor = [&] {
    return std::stoll(query_file(db_path(), "SELECT seq FROM pending_floor"));
  };
  const Seq a = append("nia", "a");
  const Seq b = append("nia", "b");
  const Seq c = append("nia", "c");
  EXPECT_EQ(floor(), a);
  const Seq a_reply = await(store->store_reply("nia", a, "for a")).value();
  EXPECT_EQ(floor(), b);  // a and its reply looked at: b is pending
  await(store->store_reply("nia", c, "for c")).value();
  EXPECT_EQ(floor(), b);
  // Two messages looked at per batch: b and c, then the two replies.
  await(store->mark_failed("nia", b, "gave up")).value();
  EXPECT_EQ(floor(), c + 1);
  EXPECT_EQ(a_reply, c + 1);
  const Seq d = append("nia", "d");
  EXPECT_EQ(floor(), d);
  append("nia", "e");
  EXPECT_EQ(floor(), d);

  reopen();
  auto pending = await(store->pending_messages()).value();
  ASSERT_EQ(pending.size(), 2u);
  EXPECT_EQ(pending[0].seq, d);
  EXPECT_EQ(query_file(db_path(),
                       "SELECT count(*) FROM pragma_index_list('messages') WHERE name = "
                       "'messages_pending'"),
            "0");
}

// Under a load that settles more messages each second than the floor looks
// at, it moves at every batch until it has caught up (it used to fall further
// behind every second, and a start to read ever more).
TEST_P(StoreTest, AFloorOfPendingMessagesThatFallsBehindCatchesUp) {
  for (int i = 0; i < 6; ++i)
    await(store->append_context_message("ola", "said", {}, std::nullopt)).value();
  await(store->close()).value();
  store.reset();
  // Six settled messages above the floor: it is behind.
  exec_file(db_path(), "UPDATE pending_floor SET seq = 1");
  StoreOptions options;
  options.pending_floor_interval = std::chrono::hours(1);
  options.pending_floor_rows = 2;
  store = std::move(try_open(data_dir(), options).value());
  const auto floor = [&] {
    return std::stoll(query_file(db_path(), "SELECT seq FROM pending_floor"));
  };
  // Each batch adds one row and looks at two: the floor catches up with them,
  // not an hour later (the batch that catches up looks at fewer than two,
  // and the floor waits for its interval again).
  Seq last = 0;
  for (int i = 0; i < 6; ++i)
    last = await(store->append_context_message("ola", "more", {}, std::nullopt)).value().seq;
  EXPECT_EQ(last, 12);
  EXPECT_GE(floor(), last);
}

TEST_P(StoreTest, PendingMessagesSurviveARestart) {
  const Seq a =
      await(store->append_user_message("judy", "draw", {"data:image/png;base64,AAAA"})).value().seq;
  const Seq b = append("kim", "hello");
  const Seq c = append("judy", "and then?");
  await(store->store_reply("kim", b, "hi")).value();
  reopen();

  auto pending = await(store->pending_messages()).value();
  ASSERT_EQ(pending.size(), 2u);
  EXPECT_EQ(pending[0].seq, a);
  EXPECT_EQ(pending[0].user_id, "judy");
  EXPECT_EQ(pending[0].images, std::vector<std::string>{"data:image/png;base64,AAAA"});
  EXPECT_EQ(pending[1].seq, c);
  EXPECT_EQ(pending[1].content, "and then?");
}

TEST_P(StoreTest, DestroyingWithoutCloseKeepsWhatWasCommitted) {
  const Seq seq = append("liam", "remember me");
  store.reset();  // the destructor closes and joins
  store = open();
  auto pending = await(store->pending_messages()).value();
  ASSERT_EQ(pending.size(), 1u);
  EXPECT_EQ(pending[0].seq, seq);
}

TEST_P(StoreTest, AdminListingsPageThroughSessionsAndMessages) {
  for (int i = 0; i < 5; ++i) append("mia", "m" + std::to_string(i));
  append("noah", "x");
  auto sessions = await(store->list_sessions(10)).value();
  ASSERT_EQ(sessions.size(), 2u);
  std::set<std::string> users{sessions[0].user_id, sessions[1].user_id};
  EXPECT_EQ(users, (std::set<std::string>{"mia", "noah"}));
  EXPECT_EQ(await(store->list_sessions(1, 1)).value().size(), 1u);
  EXPECT_TRUE(await(store->list_sessions(10, 2)).value().empty());

  auto newest = await(store->messages("mia", 2)).value();
  ASSERT_EQ(newest.size(), 2u);
  EXPECT_EQ(newest[0].content, "m3");
  EXPECT_EQ(newest[1].content, "m4");
  auto older = await(store->messages("mia", 2, newest[0].seq)).value();
  ASSERT_EQ(older.size(), 2u);
  EXPECT_EQ(older[0].content, "m1");
  EXPECT_EQ(older[1].content, "m2");
}

TEST_P(StoreTest, CloseFinishesQueuedWorkThenRefusesOperations) {
  std::vector<std::optional<Result<Appended>>> appended(10);
  std::optional<Result<void>> closed;
  for (int i = 0; i < 10; ++i)
    asio::co_spawn(io, append_into(*store, "olivia", "m" + std::to_string(i), &appended[i]),
                   asio::detached);
  asio::co_spawn(
      io,
      [](Store& s, std::optional<Result<void>>* out) -> awaitable<void> {
        out->emplace(co_await s.close());
      }(*store, &closed),
      asio::detached);
  io.restart();
  io.run_for(20s);

  for (auto& result : appended) {
    ASSERT_TRUE(result.has_value());
    EXPECT_TRUE(*result) << result->error().message;
  }
  ASSERT_TRUE(closed.has_value());
  EXPECT_TRUE(*closed) << closed->error().message;

  auto late = await(store->append_user_message("olivia", "too late"));
  ASSERT_FALSE(late);
  EXPECT_EQ(late.error().kind, StoreError::Kind::closed);
  auto read = await(store->messages("olivia", 10));
  ASSERT_FALSE(read);
  EXPECT_EQ(read.error().kind, StoreError::Kind::closed);
  auto again = await(store->close());
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().kind, StoreError::Kind::closed);
  store.reset();

  // The checkpoint left everything in the main file.
  EXPECT_EQ(query_file(db_path(), "SELECT count(*) FROM messages"), "10");
}

INSTANTIATE_TEST_SUITE_P(Workers, StoreTest, test_workers::all(), test_workers::name);

// --- data.synchronous = "full" on the callers' thread: the store syncs its commits

// Stands in for fdatasync(2): holds each sync until opened, and fails the
// first `failures` of them, and the calls given to fail_call(), with EIO.
class SyncGate {
 public:
  explicit SyncGate(bool open, int failures = 0) : open_(open), failures_(failures) {}

  // Called at each sync; what it returns is kept, in order, in seen().
  std::function<std::uint64_t()> observe;

  int sync(int fd) {
    std::unique_lock lock(mutex_);
    ++waiting_;
    opened_.wait(lock, [this] { return open_; });
    --waiting_;
    ++calls_;
    if (observe) seen_.push_back(observe());
    if (failures_ > 0 || fail_calls_.contains(calls_)) {
      if (failures_ > 0) --failures_;
      return EIO;
    }
    lock.unlock();
    return ::fdatasync(fd) == 0 ? 0 : errno;
  }
  void fail_call(int n) {
    std::lock_guard lock(mutex_);
    fail_calls_.insert(n);
  }
  std::vector<std::uint64_t> seen() {
    std::lock_guard lock(mutex_);
    return seen_;
  }
  void open() {
    {
      std::lock_guard lock(mutex_);
      open_ = true;
    }
    opened_.notify_all();
  }
  int waiting() {
    std::lock_guard lock(mutex_);
    return waiting_;
  }
  int calls() {
    std::lock_guard lock(mutex_);
    return calls_;
  }

 private:
  std::mutex mutex_;
  std::condition_variable opened_;
  bool open_;
  int failures_;
  std::set<int> fail_calls_;
  std::vector<std::uint64_t> seen_;
  int waiting_ = 0;
  int calls_ = 0;
};

class StoreSyncTest : public ::testing::Test {
 protected:
  std::unique_ptr<Store> open(SyncGate& gate, StoreOptions options = {}) {
    options.worker = StoreOptions::Worker::caller;
    options.synchronous_full = true;
    options.sync_file = [&gate](int fd) { return gate.sync(fd); };
    return run_on(io, Store::open(io.get_executor(), (dir / "data").string(), options)).value();
  }

  asio::io_context io;
  TempDir dir;
};

// Runs the handlers queued on this thread before it: a completion posted
// there already has run when this returns.
awaitable<void> after_queued() {
  const auto executor = co_await asio::this_coro::executor;
  co_await asio::post(executor, asio::use_awaitable);
  co_await asio::post(executor, asio::use_awaitable);
}

TEST_F(StoreSyncTest, NothingIsHandedBackBeforeASyncAfterItsCommitHasReturned) {
  SyncGate gate(false);
  auto store = open(gate);
  // Whatever fails below, the store thread is let go before the store is destroyed.
  const std::shared_ptr<void> let_go(nullptr, [&gate](void*) { gate.open(); });

  std::optional<Result<Appended>> appended;
  std::optional<Result<std::vector<Message>>> history;
  test::run_on(io, [&]() -> awaitable<bool> {
    const auto executor = co_await asio::this_coro::executor;
    asio::co_spawn(executor, append_into(*store, "ann", "hello", &appended), asio::detached);
    // The append commits on this thread; the store thread's sync of it is held.
    const bool syncing = co_await test::poll_until_async([&] { return gate.waiting() == 1; }, 10s);
    EXPECT_TRUE(syncing);
    EXPECT_EQ(store->stats().commits, 1u);
    co_await after_queued();
    EXPECT_FALSE(appended.has_value()) << "handed back before its commit was synced";

    // A read behind that commit may have seen it: it waits for a sync too.
    asio::co_spawn(executor, history_into(*store, "ann", &history), asio::detached);
    const bool read = co_await test::poll_until_async([&] { return store->stats().reads == 1; }, 10s);
    EXPECT_TRUE(read);
    co_await after_queued();
    EXPECT_FALSE(history.has_value()) << "a read handed back before the commit it saw was synced";

    gate.open();
    const bool both = co_await test::poll_until_async(
        [&] { return appended.has_value() && history.has_value(); }, 10s);
    EXPECT_TRUE(both);
    co_return both;
  }());
  ASSERT_TRUE(appended.has_value() && history.has_value());
  ASSERT_TRUE(*appended) << appended->error().message;
  ASSERT_TRUE(*history) << history->error().message;
  ASSERT_EQ((*history)->size(), 1u);
  EXPECT_EQ((*history)->front().content, "hello");
  EXPECT_GE(gate.calls(), 1);
  EXPECT_TRUE(run_on(io, store->close()));
}

TEST_F(StoreSyncTest, AFailedSyncFailsTheStoreUntilARestartWhichRecoversWhatReachedTheDisk) {
  SyncGate gate(true, 1);
  StoreOptions options;
  options.probe_interval = std::chrono::hours(1);  // nothing but a restart ends it
  auto store = open(gate, options);

  auto refused = run_on(io, store->append_user_message("bob", "first", {}, "id-1"));
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().kind, StoreError::Kind::io);
  EXPECT_NE(refused.error().message.find("fdatasync: Input/output error"), std::string::npos)
      << refused.error().message;
  ASSERT_TRUE(test::poll_until(
      [&] {
        io.restart();
        io.poll();
        return store->health().state == Health::State::failed;
      },
      10s))
      << store->health().last_error;

  // After it nothing is written or read, though the next sync would succeed.
  const auto commits = store->stats().commits;
  auto later = run_on(io, store->append_user_message("bob", "second", {}, "id-2"));
  ASSERT_FALSE(later);
  EXPECT_EQ(later.error().message, refused.error().message);
  EXPECT_FALSE(run_on(io, store->messages("bob", 10)));
  EXPECT_EQ(store->stats().commits, commits);
  EXPECT_EQ(gate.calls(), 1);
  // The close leaves the WAL to the next start, and says why.
  auto closed = run_on(io, store->close());
  ASSERT_FALSE(closed);
  EXPECT_EQ(closed.error().message, refused.error().message);
  store.reset();
  EXPECT_TRUE(std::filesystem::exists(dir / "data" / "mooring.db-wal"));

  // The restart recovers what reached the disk: here the first message did
  // (only the fake sync failed). Sent again with its id, it is a duplicate.
  SyncGate healthy(true);
  store = open(healthy);
  auto again = run_on(io, store->append_user_message("bob", "first", {}, "id-1"));
  ASSERT_TRUE(again) << again.error().message;
  EXPECT_TRUE(again->duplicate);
  auto bob = run_on(io, store->messages("bob", 10)).value();
  ASSERT_EQ(bob.size(), 1u);
  EXPECT_EQ(bob[0].content, "first");
  EXPECT_EQ(store->health().state, Health::State::ok);
  EXPECT_TRUE(run_on(io, store->close()));
}

// A read that ran after a commit whose sync then failed may have seen what
// the disk does not hold: it fails with the commit.
TEST_F(StoreSyncTest, AReadBehindACommitWhoseSyncFailsFailsToo) {
  SyncGate gate(false, 1);
  StoreOptions options;
  options.probe_interval = std::chrono::hours(1);
  auto store = open(gate, options);
  const std::shared_ptr<void> let_go(nullptr, [&gate](void*) { gate.open(); });

  std::optional<Result<Appended>> appended;
  std::optional<Result<std::vector<Message>>> history;
  test::run_on(io, [&]() -> awaitable<bool> {
    const auto executor = co_await asio::this_coro::executor;
    asio::co_spawn(executor, append_into(*store, "dee", "unconfirmed", &appended), asio::detached);
    const bool syncing = co_await test::poll_until_async([&] { return gate.waiting() == 1; }, 10s);
    EXPECT_TRUE(syncing);
    asio::co_spawn(executor, history_into(*store, "dee", &history), asio::detached);
    const bool read = co_await test::poll_until_async([&] { return store->stats().reads == 1; }, 10s);
    EXPECT_TRUE(read);
    gate.open();  // the sync fails
    const bool both = co_await test::poll_until_async(
        [&] { return appended.has_value() && history.has_value(); }, 10s);
    EXPECT_TRUE(both);
    co_return both;
  }());
  ASSERT_TRUE(appended.has_value() && history.has_value());
  ASSERT_FALSE(*appended);
  ASSERT_FALSE(*history) << "a read of an unconfirmed commit was handed back";
  EXPECT_EQ(history->error().message, appended->error().message);
  EXPECT_EQ(history->error().kind, StoreError::Kind::io);
  EXPECT_FALSE(run_on(io, store->close()));
}

// Two appends, the second committed while the first one's sync is held, and
// every commit wanting a checkpoint; the gate opens once both have committed.
awaitable<bool> two_appends_behind_a_held_sync(Store& store, SyncGate& gate,
                                               std::optional<Result<Appended>>& first,
                                               std::optional<Result<Appended>>& second) {
  const auto executor = co_await asio::this_coro::executor;
  asio::co_spawn(executor, append_into(store, "eve", "first", &first), asio::detached);
  const bool syncing = co_await test::poll_until_async([&] { return gate.waiting() == 1; }, 10s);
  EXPECT_TRUE(syncing);
  asio::co_spawn(executor, append_into(store, "eve", "second", &second), asio::detached);
  const bool committed =
      co_await test::poll_until_async([&] { return store.stats().commits == 2; }, 10s);
  EXPECT_TRUE(committed);
  gate.open();
  const bool both = co_await test::poll_until_async(
      [&] { return first.has_value() && second.has_value(); }, 10s);
  EXPECT_TRUE(both);
  co_return both;
}

// Syncs take turns with checkpoints: one wanted while a sync ran goes before
// the next sync, so commits that never pause cannot keep it waiting.
TEST_F(StoreSyncTest, ACheckpointWantedDuringASyncGoesBeforeTheNextSync) {
  SyncGate gate(false);
  StoreOptions options;
  options.checkpoint_pages = 1;  // every commit wants one
  auto store = open(gate, options);
  gate.observe = [&store] { return store->stats().checkpoints; };
  const std::shared_ptr<void> let_go(nullptr, [&gate](void*) { gate.open(); });

  std::optional<Result<Appended>> first;
  std::optional<Result<Appended>> second;
  ASSERT_TRUE(test::run_on(io, two_appends_behind_a_held_sync(*store, gate, first, second)));
  ASSERT_TRUE(*first) << first->error().message;
  ASSERT_TRUE(*second) << second->error().message;
  // The first commit's sync; the checkpoint's own sync of the WAL before it
  // runs; the second commit's sync, after the checkpoint.
  const auto seen = gate.seen();
  ASSERT_GE(seen.size(), 3u);
  EXPECT_EQ(seen[0], 0u);
  EXPECT_EQ(seen[1], 0u);
  EXPECT_EQ(seen[2], 1u) << "the second sync went before the checkpoint wanted meanwhile";
  EXPECT_TRUE(run_on(io, store->close()));
}

// The sync of the WAL before a checkpoint failing is a failed sync like any
// other: no checkpoint runs, and the outcomes not yet confirmed fail.
TEST_F(StoreSyncTest, AFailedSyncBeforeACheckpointFailsTheStoreAndNoCheckpointRuns) {
  SyncGate gate(false);
  gate.fail_call(2);  // the checkpoint's
  StoreOptions options;
  options.checkpoint_pages = 1;
  options.probe_interval = std::chrono::hours(1);
  auto store = open(gate, options);
  const std::shared_ptr<void> let_go(nullptr, [&gate](void*) { gate.open(); });

  std::optional<Result<Appended>> first;
  std::optional<Result<Appended>> second;
  ASSERT_TRUE(test::run_on(io, two_appends_behind_a_held_sync(*store, gate, first, second)));
  EXPECT_TRUE(*first) << first->error().message;
  ASSERT_FALSE(*second);
  EXPECT_NE(second->error().message.find("fdatasync: Input/output error"), std::string::npos)
      << second->error().message;
  EXPECT_EQ(store->stats().checkpoints, 0u);
  EXPECT_EQ(gate.calls(), 2);  // nothing is synced after a failed sync
  ASSERT_TRUE(test::poll_until(
      [&] {
        io.restart();
        io.poll();
        return store->health().state == Health::State::failed;
      },
      10s));
  EXPECT_FALSE(run_on(io, store->close()));
}

// Outcomes waiting for a sync count against max_queued: a disk slower than
// the traffic is reported (Kind::overloaded), not hidden in a growing list.
TEST_F(StoreSyncTest, OutcomesWaitingForASyncCountAgainstTheQueueLimit) {
  SyncGate gate(false);
  StoreOptions options;
  options.max_queued = 2;
  auto store = open(gate, options);
  const std::shared_ptr<void> let_go(nullptr, [&gate](void*) { gate.open(); });

  std::optional<Result<Appended>> first;
  std::optional<Result<Appended>> second;
  std::optional<Result<Appended>> third;
  test::run_on(io, [&]() -> awaitable<bool> {
    const auto executor = co_await asio::this_coro::executor;
    asio::co_spawn(executor, append_into(*store, "cy", "one", &first), asio::detached);
    const bool syncing = co_await test::poll_until_async([&] { return gate.waiting() == 1; }, 10s);
    EXPECT_TRUE(syncing);
    asio::co_spawn(executor, append_into(*store, "cy", "two", &second), asio::detached);
    const bool committed =
        co_await test::poll_until_async([&] { return store->stats().commits == 2; }, 10s);
    EXPECT_TRUE(committed);
    // One outcome in the sync the disk holds up, one waiting for the next.
    asio::co_spawn(executor, append_into(*store, "cy", "three", &third), asio::detached);
    const bool refused = co_await test::poll_until_async([&] { return third.has_value(); }, 10s);
    EXPECT_TRUE(refused);
    gate.open();
    const bool both =
        co_await test::poll_until_async([&] { return first && second; }, 10s);
    EXPECT_TRUE(both);
    co_return both;
  }());
  ASSERT_TRUE(third.has_value() && first.has_value() && second.has_value());
  ASSERT_FALSE(*third);
  EXPECT_EQ(third->error().kind, StoreError::Kind::overloaded);
  EXPECT_TRUE(*first) << first->error().message;
  EXPECT_TRUE(*second) << second->error().message;
  EXPECT_TRUE(run_on(io, store->close()));
}

}  // namespace
}  // namespace mooring::store
