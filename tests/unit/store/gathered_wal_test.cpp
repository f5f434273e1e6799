#include "store/gathered_wal.hpp"

#include "faults.hpp"
#include "support/process.hpp"

#include <gtest/gtest.h>
#include <sqlite3.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>

namespace mooring::store::sqlite {
namespace {

using test::TempDir;

// A raw connection; `vfs` null for the system's default one.
class Db {
 public:
  Db(const std::filesystem::path& path, const char* vfs) {
    const int rc = sqlite3_open_v2(path.c_str(), &db_,
                                   SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, vfs);
    if (rc != SQLITE_OK) ADD_FAILURE() << "open " << path << ": " << sqlite3_errstr(rc);
  }
  ~Db() { sqlite3_close_v2(db_); }
  Db(const Db&) = delete;
  Db& operator=(const Db&) = delete;

  // The result code of running `sql` (statements returning no rows).
  int exec(const std::string& sql) { return sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, nullptr); }
  std::string error() const { return sqlite3_errmsg(db_); }

  // The first column of the first row of `sql`, as text.
  std::string text(const std::string& sql) {
    sqlite3_stmt* stmt = nullptr;
    std::string out = "<no row>";
    if (sqlite3_prepare_v2(db_, sql.c_str(), -1, &stmt, nullptr) != SQLITE_OK)
      return "<error: " + error() + ">";
    if (sqlite3_step(stmt) == SQLITE_ROW && sqlite3_column_text(stmt, 0) != nullptr)
      out = reinterpret_cast<const char*>(sqlite3_column_text(stmt, 0));
    sqlite3_finalize(stmt);
    return out;
  }

 private:
  sqlite3* db_ = nullptr;
};

// Write system calls made by this thread so far (Linux task I/O accounting).
std::optional<std::int64_t> write_calls() {
  std::ifstream io("/proc/thread-self/io");
  std::string key;
  std::int64_t value = 0;
  while (io >> key >> value)
    if (key == "syscw:") return value;
  return std::nullopt;
}

// WAL mode, no automatic checkpoint: every commit stays in the WAL, where
// another connection (or a copy of the files) must find it.
void set_up(Db& db) {
  ASSERT_EQ(db.text("PRAGMA journal_mode = WAL"), "wal");
  ASSERT_EQ(db.exec("PRAGMA synchronous = NORMAL; PRAGMA wal_autocheckpoint = 0; "
                    "CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, b BLOB NOT NULL)"),
            SQLITE_OK)
      << db.error();
}

// `rows` rows of `bytes` bytes each.
std::string insert_rows(int rows, int bytes) {
  return "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < " +
         std::to_string(rows) + ") INSERT INTO t (b) SELECT randomblob(" + std::to_string(bytes) +
         ") FROM n";
}

// The same in a transaction of their own.
std::string insert(int rows, int bytes) { return "BEGIN; " + insert_rows(rows, bytes) + "; COMMIT"; }

// The files as a crash at this moment would leave them, opened in another
// directory with the system VFS (which recovers the WAL).
void copy_as_after_a_crash(const std::filesystem::path& db, const std::filesystem::path& to) {
  std::filesystem::create_directories(to);
  for (const char* suffix : {"", "-wal"})
    std::filesystem::copy_file(db.string() + suffix, to / ("copy.db" + std::string(suffix)));
}

TEST(GatheredWalTest, EveryCommitIsInTheFileWhenCommitReturns) {
  TempDir dir;
  const auto path = dir / "g.db";
  Db gathered(path, gathered_wal_vfs());
  set_up(gathered);
  Db other(path, nullptr);

  // One small row (a commit of a few frames), some pages, and more than the
  // 1 MiB the VFS holds at most (and more than one write of 124 KiB takes).
  std::int64_t rows = 0;
  std::int64_t bytes = 0;
  for (int round = 0; round < 3; ++round) {
    for (const auto& [n, size] : {std::pair{1, 10}, std::pair{20, 3000}, std::pair{400, 3000}}) {
      ASSERT_EQ(gathered.exec(insert(n, size)), SQLITE_OK) << gathered.error();
      rows += n;
      bytes += static_cast<std::int64_t>(n) * size;
      EXPECT_EQ(other.text("SELECT count(*) || ' ' || sum(length(b)) FROM t"),
                std::to_string(rows) + " " + std::to_string(bytes))
          << "round " << round << ", " << n << " rows of " << size << " bytes";
    }
  }

  copy_as_after_a_crash(path, dir / "crash");
  Db recovered(dir / "crash" / "copy.db", nullptr);
  EXPECT_EQ(recovered.text("SELECT count(*) || ' ' || sum(length(b)) FROM t"),
            std::to_string(rows) + " " + std::to_string(bytes));
  EXPECT_EQ(recovered.text("PRAGMA integrity_check"), "ok");
}

// A transaction larger than the page cache writes pages into the WAL before
// its commit; rewriting them then overwrites those frames in place, and SQLite
// rewrites the frame headers after them (the last one the commit's, with
// nothing after it to carry it to the kernel).
TEST(GatheredWalTest, ATransactionThatRewritesPagesItSpilledIsCommittedWhole) {
  TempDir dir;
  const auto path = dir / "g.db";
  Db gathered(path, gathered_wal_vfs());
  set_up(gathered);
  ASSERT_EQ(gathered.exec("PRAGMA cache_size = 8"), SQLITE_OK);
  ASSERT_EQ(gathered.exec(insert(5, 100)), SQLITE_OK) << gathered.error();
  Db other(path, nullptr);

  for (int round = 0; round < 3; ++round) {
    const std::string mark = "round-" + std::to_string(round);
    ASSERT_EQ(gathered.exec("BEGIN; " + insert_rows(300, 2000) + "; UPDATE t SET b = '" + mark +
                            "' || b; COMMIT"),
              SQLITE_OK)
        << gathered.error();
    const int rows = 5 + 300 * (round + 1);
    EXPECT_EQ(other.text("SELECT count(*) FROM t WHERE b LIKE '" + mark + "%'"),
              std::to_string(rows));
  }

  copy_as_after_a_crash(path, dir / "crash");
  Db recovered(dir / "crash" / "copy.db", nullptr);
  EXPECT_EQ(recovered.text("SELECT count(*) FROM t WHERE b LIKE 'round-2%'"), "905");
  EXPECT_EQ(recovered.text("PRAGMA integrity_check"), "ok");
}

TEST(GatheredWalTest, ACommitOfManyPagesReachesTheKernelInOneOrTwoWrites) {
  if (!write_calls()) GTEST_SKIP() << "/proc/thread-self/io is not available (task I/O accounting)";
  TempDir dir;
  const auto commit_writes = [&](const char* vfs, const std::string& name) -> std::int64_t {
    Db db(dir / name, vfs);
    set_up(db);
    EXPECT_EQ(db.exec("BEGIN; " + insert_rows(20, 3000)), SQLITE_OK) << db.error();
    // Nothing is written before the commit: 20 rows fit in the page cache.
    const auto before = write_calls().value_or(0);
    EXPECT_EQ(db.exec("COMMIT"), SQLITE_OK) << db.error();
    return write_calls().value_or(0) - before;
  };
  // The premise: without it, a header and a page each take a write.
  const auto system = commit_writes(nullptr, "system.db");
  EXPECT_GE(system, 40) << "the system VFS no longer writes a frame as two writes";
  // Here, the WAL header (a first commit) and the frames go together.
  EXPECT_LE(commit_writes(gathered_wal_vfs(), "gathered.db"), 2);
}

TEST(GatheredWalTest, AFullDiskFailsTheCommitAndLeavesTheCommitsBeforeIt) {
  TempDir dir;
  const auto disk = dir / "disk";
  std::filesystem::create_directories(disk);
  auto mount = test_faults::Mount::tmpfs(disk, 1024 * 1024);
  if (!mount.ok()) GTEST_SKIP() << mount.reason();
  const auto path = disk / "g.db";
  Db gathered(path, gathered_wal_vfs());
  set_up(gathered);
  ASSERT_EQ(gathered.exec(insert(10, 1000)), SQLITE_OK) << gathered.error();

  // More than the disk holds, in one commit: SQLite's own code for it.
  const int rc = gathered.exec(insert(400, 3000));
  EXPECT_EQ(rc & 0xff, SQLITE_FULL) << sqlite3_errstr(rc) << ": " << gathered.error();
  gathered.exec("ROLLBACK");

  Db other(path, nullptr);
  EXPECT_EQ(other.text("SELECT count(*) FROM t"), "10");
  EXPECT_EQ(other.text("PRAGMA integrity_check"), "ok");
  // And once there is room, the next commit goes through.
  ASSERT_EQ(gathered.exec(insert(5, 100)), SQLITE_OK) << gathered.error();
  EXPECT_EQ(other.text("SELECT count(*) FROM t"), "15");
}

}  // namespace
}  // namespace mooring::store::sqlite
