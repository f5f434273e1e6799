#include "store/schema.hpp"

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
  };
  return steps;
}

StoreError io_error(const std::filesystem::path& path, std::string_view doing,
                    const sqlite::Error& e) {
  const int primary = e.primary();
  if (primary == SQLITE_NOTADB || primary == SQLITE_CORRUPT)
    return {StoreError::Kind::corrupt,
            fmt::format("store: {} is not a usable SQLite database ({}); move it aside to start "
                        "with an empty store, or restore a backup",
                        path.string(), e.what())};
  std::string_view hint;
  if (primary == SQLITE_CANTOPEN || primary == SQLITE_READONLY || primary == SQLITE_PERM)
    hint = "; check that the file and its directory exist and are writable by this user";
  else if (primary == SQLITE_BUSY || primary == SQLITE_LOCKED)
    hint = "; another process holds the database (is a second mooring using the same data dir?)";
  else if (primary == SQLITE_FULL)
    hint = "; the disk is full";
  return {StoreError::Kind::io,
          fmt::format("store: cannot {} {}: {}{}", doing, path.string(), e.what(), hint)};
}

void migrate(sqlite::Connection& db, const std::filesystem::path& path, int from) {
  const auto& steps = migrations();
  for (int version = from + 1; version <= static_cast<int>(steps.size()); ++version) {
    db.exec("BEGIN IMMEDIATE");
    try {
      db.exec(std::string(steps[version - 1]));
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

Result<std::unique_ptr<sqlite::Connection>> open_database(const std::filesystem::path& path,
                                                          std::chrono::milliseconds busy_timeout) {
  std::error_code ec;
  std::filesystem::create_directories(path.parent_path(), ec);
  if (ec)
    return StoreError{StoreError::Kind::io,
                      fmt::format("store: cannot create the data directory {}: {}",
                                  path.parent_path().string(), ec.message())};

  std::unique_ptr<sqlite::Connection> db;
  std::string_view doing = "open";
  try {
    db = std::make_unique<sqlite::Connection>(path.string());
    sqlite3_busy_timeout(db->handle(), static_cast<int>(busy_timeout.count()));

    // Reading the header first tells a foreign or damaged file apart before
    // anything is written to it.
    doing = "read";
    const auto version = db->query_int64("PRAGMA user_version");
    if (version > latest_version())
      return StoreError{
          StoreError::Kind::schema_too_new,
          fmt::format("store: {} has schema version {}, and this mooring understands versions up "
                      "to {}: it was written by a newer mooring; run that version, or restore a "
                      "backup",
                      path.string(), version, latest_version())};
    if (version < 0)
      return StoreError{
          StoreError::Kind::corrupt,
          fmt::format("store: {} has an invalid schema version {}", path.string(), version)};

    doing = "configure";
    const auto mode = db->query_text("PRAGMA journal_mode = WAL");
    if (mode != "wal")
      return StoreError{StoreError::Kind::io,
                        fmt::format("store: cannot switch {} to WAL mode (it stays in '{}' mode); "
                                    "the file system may not support shared memory (NFS?)",
                                    path.string(), mode)};
    // FULL: an `ack` tells the user the message is stored, so each commit is
    // fsynced; group commit keeps that affordable.
    db->exec("PRAGMA synchronous = FULL");
    db->exec("PRAGMA foreign_keys = ON");

    doing = "migrate";
    migrate(*db, path, static_cast<int>(version));
  } catch (const sqlite::Error& e) {
    return io_error(path, doing, e);
  }
  return db;
}

}  // namespace mooring::store::schema
