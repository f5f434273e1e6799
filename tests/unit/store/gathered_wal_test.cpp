#include "store/gathered_wal.hpp"

#include "faults.hpp"
#include "support/process.hpp"

#include <gtest/gtest.h>
#include <sqlite3.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <optional>
#include <string>

namespace mooring::store::sqlite {
namespace {

using test::TempDir;

// A raw connection; `vfs` null for the system's default one. `uri` may carry
// parameters (file:...?psow=0).
class Db {
 public:
  Db(const std::string& uri, const char* vfs) {
    const int rc = sqlite3_open_v2(
        uri.c_str(), &db_, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_URI, vfs);
    if (rc != SQLITE_OK) ADD_FAILURE() << "open " << uri << ": " << sqlite3_errstr(rc);
  }
  Db(const std::filesystem::path& path, const char* vfs) : Db("file:" + path.string(), vfs) {}
  ~Db() { sqlite3_close_v2(db_); }
  Db(const Db&) = delete;
  Db& operator=(const Db&) = delete;

  // The result code of running `sql` (statements returning no rows).
  int exec(const std::string& sql) { return sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, nullptr); }
  std::string error() const { return sqlite3_errmsg(db_); }

  // COMMIT as mooring's store runs it (sqlite::Connection::commit);
  // `after_sqlite` runs once SQLite's COMMIT has returned, before committed()
  // could hand over anything still held.
  int commit(const std::function<void()>& after_sqlite = {}) {
    GatheredCommit gathered(db_);
    const int rc = exec("COMMIT");
    if (rc != SQLITE_OK) return rc;
    if (after_sqlite) after_sqlite();
    return gathered.committed();
  }

  // The first column of the first row of `sql`, as text.
  std::string text(const std::string& sql) {
    sqlite3_stmt* stmt = nullptr;
    std::string out = "<no row>";
    if (sqlite3_prepare_v2(db_, sql.c_str(), -1, &stmt, nullptr) != SQLITE_OK)
      return "<error: " + error() + ">";
    const int rc = sqlite3_step(stmt);
    if (rc == SQLITE_ROW && sqlite3_column_text(stmt, 0) != nullptr)
      out = reinterpret_cast<const char*>(sqlite3_column_text(stmt, 0));
    else if (rc != SQLITE_ROW && rc != SQLITE_DONE)
      out = "<error: " + error() + ">";
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

// WAL mode at `synchronous`; `autocheckpoint` pages (0: none, so every commit
// stays in the WAL, where another connection or a copy of the files must find it).
void set_up(Db& db, const std::string& synchronous = "NORMAL", int autocheckpoint = 0,
            int page_size = 0) {
  if (page_size != 0)
    ASSERT_EQ(db.exec("PRAGMA page_size = " + std::to_string(page_size)), SQLITE_OK);
  ASSERT_EQ(db.text("PRAGMA journal_mode = WAL"), "wal");
  ASSERT_EQ(db.exec("PRAGMA synchronous = " + synchronous +
                    "; PRAGMA wal_autocheckpoint = " + std::to_string(autocheckpoint) +
                    "; CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, b BLOB NOT NULL)"),
            SQLITE_OK)
      << db.error();
}

// `rows` rows of `bytes` bytes each, random or zeros (pages with zeros
// where a frame header's commit field would be).
std::string insert_rows(int rows, int bytes, bool zeros = false) {
  return "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < " +
         std::to_string(rows) + ") INSERT INTO t (b) SELECT " +
         (zeros ? "zeroblob(" : "randomblob(") + std::to_string(bytes) + ") FROM n";
}

// The same in a transaction of their own, committed as the store commits.
int insert(Db& db, int rows, int bytes, const std::function<void()>& after_sqlite = {},
           bool zeros = false) {
  if (const int rc = db.exec("BEGIN; " + insert_rows(rows, bytes, zeros)); rc != SQLITE_OK) {
    db.exec("ROLLBACK");
    return rc;
  }
  return db.commit(after_sqlite);
}

const std::string kCountAndBytes = "SELECT count(*) || ' ' || sum(length(b)) FROM t";

// The files as a crash at this moment would leave them, in another directory,
// for the system VFS to open (which recovers the WAL).
std::filesystem::path copy_as_after_a_crash(const std::filesystem::path& db,
                                            const std::filesystem::path& to) {
  std::filesystem::create_directories(to);
  for (const char* suffix : {"", "-wal"})
    if (std::filesystem::exists(db.string() + suffix))
      std::filesystem::copy_file(db.string() + suffix, to / ("copy.db" + std::string(suffix)));
  return to / "copy.db";
}

struct Setting {
  const char* synchronous;
  bool powersafe_overwrite;  // SQLite's psow: off pads a commit to a sector and syncs mid-frame
  int autocheckpoint;        // pages; then the WAL restarts from its start
  int page_size = 0;         // below the sector size (4096), a split can leave 24 bytes
};

class GatheredWalCommitTest : public ::testing::TestWithParam<Setting> {};

TEST_P(GatheredWalCommitTest, EveryCommitIsInTheFileWhenCommitReturns) {
  const auto setting = GetParam();
  TempDir dir;
  const auto path = dir / "g.db";
  Db gathered("file:" + path.string() + (setting.powersafe_overwrite ? "" : "?psow=0"),
              gathered_wal_vfs());
  set_up(gathered, setting.synchronous, setting.autocheckpoint, setting.page_size);
  Db other(path, nullptr);

  // One small row (a commit of a few frames), some pages, and more than the
  // 1 MiB the VFS holds at most (and more than one write of 124 KiB takes).
  std::int64_t rows = 0;
  std::int64_t bytes = 0;
  for (int round = 0; round < 4; ++round) {
    for (const auto& [n, size] : {std::pair{1, 10}, std::pair{20, 3000}, std::pair{400, 3000}}) {
      rows += n;
      bytes += static_cast<std::int64_t>(n) * size;
      // Seen by the other connection as soon as SQLite has published it.
      const auto check = [&] {
        EXPECT_EQ(other.text(kCountAndBytes), std::to_string(rows) + " " + std::to_string(bytes))
            << "round " << round << ", " << n << " rows of " << size << " bytes";
      };
      ASSERT_EQ(insert(gathered, n, size, check, round % 2 == 1), SQLITE_OK) << gathered.error();
    }
  }

  Db recovered(copy_as_after_a_crash(path, dir / "crash"), nullptr);
  EXPECT_EQ(recovered.text(kCountAndBytes), std::to_string(rows) + " " + std::to_string(bytes));
  EXPECT_EQ(recovered.text("PRAGMA integrity_check"), "ok");
}

INSTANTIATE_TEST_SUITE_P(
    Settings, GatheredWalCommitTest,
    ::testing::Values(Setting{"NORMAL", true, 0}, Setting{"FULL", true, 0},
                      Setting{"OFF", true, 0}, Setting{"FULL", false, 0},
                      Setting{"NORMAL", false, 0}, Setting{"NORMAL", true, 50},
                      Setting{"FULL", false, 50}, Setting{"FULL", false, 0, 1024},
                      Setting{"FULL", false, 200, 1024}, Setting{"NORMAL", true, 0, 1024}),
    [](const auto& info) {
      return std::string(info.param.synchronous) +
             (info.param.powersafe_overwrite ? "" : "_psow0") +
             (info.param.autocheckpoint != 0 ? "_checkpoints" : "") +
             (info.param.page_size != 0 ? "_page" + std::to_string(info.param.page_size) : "");
    });

// Below the sector size, at FULL with psow=0, SQLite pads each commit to a
// sector with copies of its last frame and splits the page that crosses the
// sector around a sync; every 512th frame of 1,024-byte pages, what is left
// after the sync is 24 bytes, shaped like a frame header where none begins.
TEST(GatheredWalTest, SmallCommitsPaddedToASectorAreEachInTheFileWhenCommitReturns) {
  TempDir dir;
  const auto path = dir / "g.db";
  Db gathered("file:" + path.string() + "?psow=0", gathered_wal_vfs());
  set_up(gathered, "FULL", 0, 1024);
  Db other(path, nullptr);
  // Past frame 469 of the WAL and then 981: a few frames a commit, padded to four.
  for (int n = 1; n <= 300; ++n) {
    const auto check = [&] {
      ASSERT_EQ(other.text("SELECT count(*) FROM t WHERE b = zeroblob(100)"), std::to_string(n));
    };
    ASSERT_EQ(insert(gathered, 1, 100, check, true), SQLITE_OK) << gathered.error();
    if (HasFatalFailure()) return;
  }
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
  ASSERT_EQ(insert(gathered, 5, 100), SQLITE_OK) << gathered.error();
  Db other(path, nullptr);

  for (int round = 0; round < 3; ++round) {
    const std::string mark = "round-" + std::to_string(round);
    const std::string marked = "SELECT count(*) FROM t WHERE b LIKE '" + mark + "%'";
    const auto rows = std::to_string(5 + 300 * (round + 1));
    ASSERT_EQ(gathered.exec("BEGIN; " + insert_rows(300, 2000) + "; UPDATE t SET b = '" + mark +
                            "' || b"),
              SQLITE_OK)
        << gathered.error();
    // As soon as SQLite's COMMIT returns: seen, and in a WAL whose checksums
    // hold (recovery after a crash stops at the first that does not).
    const auto check = [&] {
      EXPECT_EQ(other.text(marked), rows);
      Db recovered(copy_as_after_a_crash(path, dir / ("crash-" + mark)), nullptr);
      EXPECT_EQ(recovered.text(marked), rows);
      EXPECT_EQ(recovered.text("PRAGMA integrity_check"), "ok");
    };
    ASSERT_EQ(gathered.commit(check), SQLITE_OK) << gathered.error();
  }
}

// Pages spilled by a transaction that then rolls back must not reach the WAL
// later, over the frames another writer has committed there meanwhile.
TEST(GatheredWalTest, ARolledBackTransactionLeavesNothingOverAnotherWritersCommit) {
  TempDir dir;
  const auto path = dir / "g.db";
  Db gathered(path, gathered_wal_vfs());
  set_up(gathered);
  ASSERT_EQ(gathered.exec("BEGIN; " + insert_rows(2000, 500)), SQLITE_OK) << gathered.error();
  ASSERT_EQ(gathered.commit(), SQLITE_OK) << gathered.error();
  // After a checkpoint, pages are read from the database file, not the WAL.
  ASSERT_EQ(gathered.text("PRAGMA wal_checkpoint(TRUNCATE)"), "0");
  ASSERT_EQ(gathered.exec("PRAGMA cache_size = 20"), SQLITE_OK);

  ASSERT_EQ(gathered.exec("BEGIN; UPDATE t SET b = randomblob(500) WHERE id <= 600; ROLLBACK"),
            SQLITE_OK)
      << gathered.error();
  {
    Db other(path, nullptr);
    ASSERT_EQ(other.exec("UPDATE t SET b = zeroblob(499) || x'42' WHERE id <= 600"), SQLITE_OK)
        << other.error();
  }
  const std::string marked = "SELECT count(*) FROM t WHERE b = zeroblob(499) || x'42'";
  EXPECT_EQ(gathered.text(marked), "600");
  ASSERT_EQ(insert(gathered, 1, 10), SQLITE_OK) << gathered.error();

  Db other(path, nullptr);
  EXPECT_EQ(other.text(marked), "600");
  EXPECT_EQ(other.text("PRAGMA integrity_check"), "ok");
  Db recovered(copy_as_after_a_crash(path, dir / "crash"), nullptr);
  EXPECT_EQ(recovered.text(marked), "600");
  EXPECT_EQ(recovered.text("SELECT count(*) FROM t"), "2001");
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
    EXPECT_EQ(db.commit(), SQLITE_OK) << db.error();
    return write_calls().value_or(0) - before;
  };
  // The premise: without it, a header and a page each take a write.
  const auto system = commit_writes(nullptr, "system.db");
  EXPECT_GE(system, 40) << "the system VFS no longer writes a frame as two writes";
  // Here, the WAL header (a first commit) and the frames go together.
  EXPECT_LE(commit_writes(gathered_wal_vfs(), "gathered.db"), 2);

  // A connection that opens a WAL with frames in it learns the page size
  // from the file, and its commits go in one write too.
  Db first(dir / "again.db", gathered_wal_vfs());
  set_up(first);
  ASSERT_EQ(insert(first, 20, 3000), SQLITE_OK) << first.error();
  Db second(dir / "again.db", gathered_wal_vfs());
  set_up(second);
  EXPECT_EQ(second.exec("BEGIN; " + insert_rows(20, 3000)), SQLITE_OK) << second.error();
  const auto before = write_calls().value_or(0);
  EXPECT_EQ(second.commit(), SQLITE_OK) << second.error();
  EXPECT_EQ(write_calls().value_or(0) - before, 1);
  EXPECT_EQ(first.text("SELECT count(*) FROM t"), "40");
}

// Needs root (mount); skipped, saying so, elsewhere.
TEST(GatheredWalTest, AFullDiskFailsTheCommitAndLeavesNothingBehindIt) {
  TempDir dir;
  const auto disk = dir / "disk";
  std::filesystem::create_directories(disk);
  auto mount = test_faults::Mount::tmpfs(disk, 1024 * 1024);
  if (!mount.ok()) GTEST_SKIP() << mount.reason();
  const auto path = disk / "g.db";
  Db gathered(path, gathered_wal_vfs());
  set_up(gathered);
  ASSERT_EQ(insert(gathered, 10, 1000), SQLITE_OK) << gathered.error();
  ASSERT_EQ(gathered.text("PRAGMA wal_checkpoint(TRUNCATE)"), "0");

  // More than the disk holds, in one commit (held, and written when 1 MiB is
  // held or at the commit frame): SQLite's own code for it, and a rollback.
  EXPECT_EQ(gathered.exec("BEGIN; " + insert_rows(400, 3000)), SQLITE_OK) << gathered.error();
  const int rc = gathered.commit();
  EXPECT_EQ(rc & 0xff, SQLITE_FULL) << sqlite3_errstr(rc) << ": " << gathered.error();
  EXPECT_EQ(gathered.text("SELECT count(*) FROM t"), "10");

  // Another writer commits where that transaction's frames would have gone;
  // nothing of the failed one is written over it later.
  {
    Db other(path, nullptr);
    ASSERT_EQ(other.exec("UPDATE t SET b = x'42'"), SQLITE_OK) << other.error();
  }
  EXPECT_EQ(gathered.text("SELECT count(*) FROM t WHERE b = x'42'"), "10");
  Db recovered(copy_as_after_a_crash(path, dir / "crash"), nullptr);
  EXPECT_EQ(recovered.text("SELECT count(*) FROM t WHERE b = x'42'"), "10");
  EXPECT_EQ(recovered.text("PRAGMA integrity_check"), "ok");

  // And once there is room, the next commit goes through.
  ASSERT_EQ(gathered.text("PRAGMA wal_checkpoint(TRUNCATE)"), "0");
  ASSERT_EQ(insert(gathered, 5, 100), SQLITE_OK) << gathered.error();
  Db other(path, nullptr);
  EXPECT_EQ(other.text("SELECT count(*) FROM t"), "15");
}

}  // namespace
}  // namespace mooring::store::sqlite
