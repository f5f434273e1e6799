#include "store/schema.hpp"

#include "store/failure.hpp"
#include "store/files.hpp"

#include "runtime/log.hpp"

#include <fmt/format.h>
#include <sqlite3.h>

#include <string_view>
#include <system_error>
#include <vector>

namespace mooring::store::schema {

namespace {

// Migration N (1-based) brings a file from user_version N-1 to N. Append new
// steps; never edit a released one, since files in the field already ran it.
const std::vector<std::string_view>& migrations() {
  static const std::vector<std::string_view> steps = {
      // 1: sessions with a delivery cursor, and every message in one global order.
      R"sql(
CREATE TABLE sessions (
  user_id       TEXT PRIMARY KEY NOT NULL,
  created_ms    INTEGER NOT NULL,
  last_seen_ms  INTEGER NOT NULL,
  delivered_seq INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE messages (
  seq        INTEGER PRIMARY KEY AUTOINCREMENT,
  user_id    TEXT NOT NULL REFERENCES sessions(user_id),
  role       TEXT NOT NULL CHECK (role IN ('user', 'assistant')),
  content    TEXT NOT NULL,
  images     TEXT NOT NULL DEFAULT '[]',
  client_id  TEXT,
  reply_to   INTEGER REFERENCES messages(seq),
  status     TEXT NOT NULL CHECK (status IN ('pending', 'answered', 'failed')),
  created_ms INTEGER NOT NULL,
  updated_ms INTEGER NOT NULL,
  UNIQUE (user_id, client_id)
);
CREATE INDEX messages_by_user ON messages(user_id, seq);
-- At most one reply per user message: a retried store_reply finds the first.
CREATE UNIQUE INDEX messages_reply_to ON messages(reply_to) WHERE reply_to IS NOT NULL;
-- What must be answered after a restart, without scanning the whole table.
CREATE INDEX messages_pending ON messages(seq) WHERE role = 'user' AND status = 'pending';
)sql",
      // 2: what a user was told when their message could not be answered, and
      // the row the store writes to find out whether it can write.
      R"sql(
ALTER TABLE messages ADD COLUMN failure TEXT;
CREATE TABLE store_probe (
  id         INTEGER PRIMARY KEY CHECK (id = 1),
  written_ms INTEGER NOT NULL
);
)sql",
      // 3: a client id is unique per user where there is one: replies, which
      // have none, no longer each add an entry to that index (a table
      // constraint, so the table is rebuilt; seqs, rows and the next seq as
      // they were). The check on status is the same, written with OR: with
      // IN and three values SQLite builds and drops a temporary table at
      // every insert and update to evaluate it.
      R"sql(
CREATE TABLE messages_v3 (
  seq        INTEGER PRIMARY KEY AUTOINCREMENT,
  user_id    TEXT NOT NULL REFERENCES sessions(user_id),
  role       TEXT NOT NULL CHECK (role IN ('user', 'assistant')),
  content    TEXT NOT NULL,
  images     TEXT NOT NULL DEFAULT '[]',
  client_id  TEXT,
  reply_to   INTEGER REFERENCES messages(seq),
  status     TEXT NOT NULL
             CHECK (status = 'pending' OR status = 'answered' OR status = 'failed'),
  created_ms INTEGER NOT NULL,
  updated_ms INTEGER NOT NULL,
  failure    TEXT
);
INSERT INTO messages_v3 (seq, user_id, role, content, images, client_id, reply_to, status,
                         created_ms, updated_ms, failure)
  SELECT seq, user_id, role, content, images, client_id, reply_to, status, created_ms,
         updated_ms, failure FROM messages ORDER BY seq;
-- The next seq continues after the highest ever given, even one since deleted.
DELETE FROM sqlite_sequence WHERE name = 'messages_v3';
INSERT INTO sqlite_sequence (name, seq) VALUES ('messages_v3', max(
  coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'messages'), 0),
  coalesce((SELECT max(seq) FROM messages), 0)));
DROP TABLE messages;
ALTER TABLE messages_v3 RENAME TO messages;
CREATE UNIQUE INDEX messages_client_id ON messages(user_id, client_id) WHERE client_id IS NOT NULL;
CREATE INDEX messages_by_user ON messages(user_id, seq);
CREATE UNIQUE INDEX messages_reply_to ON messages(reply_to) WHERE reply_to IS NOT NULL;
CREATE INDEX messages_pending ON messages(seq) WHERE role = 'user' AND status = 'pending';
)sql",
      // 4: seqs without AUTOINCREMENT, whose bookkeeping rewrote a row of
      // sqlite_sequence at every insert (a page of WAL at every commit). The
      // store gives seqs itself (queries::Remembered), after the highest in
      // the table and the highest ever deleted, which seq_floor keeps: what
      // sqlite_sequence held, then every deletion (the trigger). The table
      // is rebuilt; seqs and rows as they were.
      //
      // And no index of pending messages, which every message entered and
      // left (a page of WAL at every commit, twice per round trip): every
      // user message below pending_floor.seq is answered or failed, so a
      // start reads the pending ones from there (queries::pending_messages),
      // and the store moves the floor up behind them as they are settled
      // (queries::advance_pending_floor).
      R"sql(
CREATE TABLE seq_floor (
  id  INTEGER PRIMARY KEY CHECK (id = 1),
  seq INTEGER NOT NULL
);
INSERT INTO seq_floor (id, seq) VALUES (1, max(
  coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'messages'), 0),
  coalesce((SELECT max(seq) FROM messages), 0)));
CREATE TABLE messages_v4 (
  seq        INTEGER PRIMARY KEY,
  user_id    TEXT NOT NULL REFERENCES sessions(user_id),
  role       TEXT NOT NULL CHECK (role IN ('user', 'assistant')),
  content    TEXT NOT NULL,
  images     TEXT NOT NULL DEFAULT '[]',
  client_id  TEXT,
  reply_to   INTEGER REFERENCES messages(seq),
  status     TEXT NOT NULL
             CHECK (status = 'pending' OR status = 'answered' OR status = 'failed'),
  created_ms INTEGER NOT NULL,
  updated_ms INTEGER NOT NULL,
  failure    TEXT
);
INSERT INTO messages_v4 (seq, user_id, role, content, images, client_id, reply_to, status,
                         created_ms, updated_ms, failure)
  SELECT seq, user_id, role, content, images, client_id, reply_to, status, created_ms,
         updated_ms, failure FROM messages ORDER BY seq;
DROP TABLE messages;
ALTER TABLE messages_v4 RENAME TO messages;
CREATE UNIQUE INDEX messages_client_id ON messages(user_id, client_id) WHERE client_id IS NOT NULL;
CREATE INDEX messages_by_user ON messages(user_id, seq);
CREATE UNIQUE INDEX messages_reply_to ON messages(reply_to) WHERE reply_to IS NOT NULL;
CREATE TABLE pending_floor (
  id  INTEGER PRIMARY KEY CHECK (id = 1),
  seq INTEGER NOT NULL
);
INSERT INTO pending_floor (id, seq) VALUES (1, coalesce(
  (SELECT min(seq) FROM messages WHERE role = 'user' AND status = 'pending'),
  (SELECT coalesce(max(seq), 0) + 1 FROM messages)));
CREATE TRIGGER messages_deleted AFTER DELETE ON messages BEGIN
  UPDATE seq_floor SET seq = max(seq, old.seq) WHERE id = 1;
END;
)sql",
      // 5: a reply no longer rewrites its question's status: a user message's
      // outcome is the status of its reply when it has one, else its own
      // (queries.cpp, OUTCOME). Nothing is rewritten; the version tells an
      // older mooring, which would read the column alone and answer again
      // what is answered, that this file is not its to open.
      R"sql(
-- A user message's status column: 'pending' until marked 'failed' without a
-- reply (or 'answered' when kept as context); its reply's status decides.
)sql",
  };
  return steps;
}

// Foreign keys are off while migrations run (a table rebuilt and renamed
// would break them halfway); each step is checked before its commit.
void migrate(sqlite::Connection& db, const std::filesystem::path& path, int from) {
  const auto& steps = migrations();
  for (int version = from + 1; version <= static_cast<int>(steps.size()); ++version) {
    if (from > 0 && (version == 3 || version == 4))
      log::info("store: upgrading {} to schema version {}: its messages table is copied once "
                "({} messages; the file and its WAL need room for a second copy meanwhile)",
                path.string(), version, db.query_int64("SELECT count(*) FROM messages"));
    db.exec("BEGIN IMMEDIATE");
    try {
      db.exec(std::string(steps[version - 1]));
      if (const auto broken = db.query_int64("SELECT count(*) FROM pragma_foreign_key_check");
          broken != 0)
        throw sqlite::Error(
            SQLITE_CONSTRAINT_FOREIGNKEY,
            fmt::format("foreign_key_check finds {} row(s) whose foreign key points nowhere; the "
                        "file is left at version {}: `PRAGMA foreign_key_check` in the sqlite3 "
                        "shell lists them, repair or delete them, or restore a backup",
                        broken, version - 1));
      db.exec(fmt::format("PRAGMA user_version = {}", version));
      db.exec("COMMIT");
    } catch (const sqlite::Error& e) {
      if (db.in_transaction()) db.exec("ROLLBACK");
      throw sqlite::Error(e.code(), fmt::format("migration to schema version {} of {} failed: {}",
                                                version, path.string(), e.what()));
    }
  }
}

}  // namespace

int latest_version() {
  return static_cast<int>(migrations().size());
}

void write_probe(sqlite::Connection& db, std::int64_t now_ms) {
  db.prepare("INSERT OR REPLACE INTO store_probe (id, written_ms) VALUES (1, ?1)")
      .bind(1, now_ms)
      .run();
}

namespace {

// PRAGMA quick_check, stopped at `deadline` by SQLite's progress handler.
IntegrityCheck quick_check(sqlite::Connection& db, const std::filesystem::path& path,
                           std::chrono::milliseconds timeout) {
  using Clock = std::chrono::steady_clock;
  IntegrityCheck check;
  std::error_code ec;
  const auto size = std::filesystem::file_size(path, ec);
  check.bytes = ec ? 0 : size;
  const auto started = Clock::now();
  struct Bound {
    Clock::time_point deadline;
  } bound{started + timeout};
  sqlite3_progress_handler(
      db.handle(), 10000,
      [](void* bound) { return Clock::now() >= static_cast<Bound*>(bound)->deadline ? 1 : 0; },
      &bound);
  try {
    // Ten problems are enough to say what is wrong; the first says it is.
    auto statement = db.prepare("PRAGMA quick_check(10)");
    while (statement.step()) {
      auto line = statement.text(0);
      if (line != "ok") check.problems.push_back(std::move(line));
    }
    check.completed = true;
  } catch (const sqlite::Error& e) {
    sqlite3_progress_handler(db.handle(), 0, nullptr, nullptr);
    if (e.primary() != SQLITE_INTERRUPT) throw;
  }
  sqlite3_progress_handler(db.handle(), 0, nullptr, nullptr);
  check.took = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - started);
  return check;
}

std::string describe_problems(const std::vector<std::string>& problems) {
  std::string out;
  for (std::size_t i = 0; i < problems.size() && i < 3; ++i) {
    if (i > 0) out += "; ";
    out += problems[i];
  }
  if (problems.size() > 3) out += fmt::format("; and {} more", problems.size() - 3);
  return out;
}

}  // namespace

Result<Opened> open_database(const std::filesystem::path& path, const OpenOptions& options) {
  auto prepared = files::prepare(path);
  if (!prepared) return prepared.error();
  auto lock = files::DirectoryLock::take(path.parent_path());
  if (!lock) return lock.error();
  Opened opened;
  opened.lock = std::move(*lock);
  opened.created = *prepared;
  if (opened.created) {
    // The schema is written before the file takes its name (a full disk at
    // the first start leaves nothing behind), as the migrations from version
    // 0 write it.
    const auto fill = [&path](sqlite::Connection& db) {
      db.exec("PRAGMA foreign_keys = OFF");
      migrate(db, path, 0);
    };
    if (auto created = files::create_database(path, fill); !created) return created.error();
  }

  std::string_view doing = "open";
  try {
    opened.db = std::make_unique<sqlite::Connection>(path.string(),
                                                     sqlite::Connection::Mode::open_existing);
    auto& db = *opened.db;
    db.set_busy_timeout(options.busy_timeout);
    if (db.read_only())
      return StoreError{StoreError::Kind::io,
                        fmt::format("{} could only be opened read-only; mooring must write it. "
                                    "Check the permissions and attributes (lsattr) of the file, "
                                    "its -wal and -shm files and its directory, and the mount",
                                    path.string())};

    // Reading the header first tells a foreign or damaged file apart before
    // anything is written to it.
    doing = "read";
    const auto version = db.query_int64("PRAGMA user_version");
    if (version > latest_version())
      return StoreError{
          StoreError::Kind::schema_too_new,
          fmt::format("{} has schema version {}, and this mooring understands versions up to {}: "
                      "it was written by a newer mooring; run that version, or restore a backup",
                      path.string(), version, latest_version())};
    if (version < 0)
      return StoreError{StoreError::Kind::corrupt,
                        fmt::format("{} has an invalid schema version {}; restore it from a backup",
                                    path.string(), version)};

    // Before anything is written: a damaged file is refused as it was found.
    doing = "check";
    opened.check = quick_check(db, path, options.integrity_check_timeout);
    if (!opened.check.problems.empty())
      return StoreError{
          StoreError::Kind::corrupt,
          fmt::format("{} is damaged (quick_check: {}); mooring will not write into it. Stop "
                      "here and restore mooring.db from a backup (or try `sqlite3 mooring.db "
                      ".recover`) and move the damaged files away",
                      path.string(), describe_problems(opened.check.problems))};

    doing = "configure";
    const auto mode = db.query_text("PRAGMA journal_mode = WAL");
    if (mode != "wal")
      return StoreError{StoreError::Kind::io,
                        fmt::format("cannot switch {} to WAL mode (it stays in '{}' mode); the "
                                    "file system may not support shared memory (NFS?)",
                                    path.string(), mode)};
    // FULL: an `ack` tells the user the message is stored, so each commit is
    // fsynced; group commit keeps that affordable. NORMAL when asked for
    // (data.synchronous): still durable across a crash of mooring.
    db.exec(options.synchronous_full ? "PRAGMA synchronous = FULL" : "PRAGMA synchronous = NORMAL");
    // A WAL grown by a burst (or by checkpoints that failed) is cut back to
    // this size once a checkpoint succeeds.
    db.exec("PRAGMA journal_size_limit = 67108864");

    doing = "migrate";
    db.exec("PRAGMA foreign_keys = OFF");  // whatever SQLite was built to default to
    migrate(db, path, static_cast<int>(version));
    db.exec("PRAGMA foreign_keys = ON");

    // SQLite may open a file read-only, or fail to extend the WAL, without a
    // word until the first write: one write now, so a store that cannot write
    // never starts.
    doing = "write";
    db.exec("BEGIN IMMEDIATE");
    write_probe(db, options.now_ms);
    db.exec("COMMIT");
  } catch (const sqlite::Error& e) {
    return failure::describe_open(e, path, doing);
  }
  return opened;
}

}  // namespace mooring::store::schema
