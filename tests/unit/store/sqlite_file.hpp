// A plain SQLite connection of the test's own, to read or prepare what the store
// finds in its file (use only while no store has the file open).
#pragma once

#include <gtest/gtest.h>
#include <sqlite3.h>

#include <filesystem>
#include <string>

namespace mooring::store::test_sqlite {

// The first column of the first row of `sql`, as text; empty when there is none.
inline std::string query_file(const std::filesystem::path& db_path, const std::string& sql) {
  sqlite3* db = nullptr;
  std::string out;
  if (sqlite3_open_v2(db_path.c_str(), &db, SQLITE_OPEN_READWRITE, nullptr) == SQLITE_OK) {
    sqlite3_stmt* stmt = nullptr;
    if (sqlite3_prepare_v2(db, sql.c_str(), -1, &stmt, nullptr) == SQLITE_OK &&
        sqlite3_step(stmt) == SQLITE_ROW && sqlite3_column_text(stmt, 0) != nullptr)
      out = reinterpret_cast<const char*>(sqlite3_column_text(stmt, 0));
    sqlite3_finalize(stmt);
  }
  sqlite3_close(db);
  return out;
}

inline void exec_file(const std::filesystem::path& db_path, const std::string& sql) {
  sqlite3* db = nullptr;
  ASSERT_EQ(
      sqlite3_open_v2(db_path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, nullptr),
      SQLITE_OK);
  EXPECT_EQ(sqlite3_exec(db, sql.c_str(), nullptr, nullptr, nullptr), SQLITE_OK);
  sqlite3_close(db);
}

// The tables of schema version 2, as a mooring of that version left them.
inline const std::string version_2_tables =
    "PRAGMA journal_mode = WAL;"
    "CREATE TABLE sessions (user_id TEXT PRIMARY KEY NOT NULL, created_ms INTEGER NOT "
    "NULL, last_seen_ms INTEGER NOT NULL, delivered_seq INTEGER NOT NULL DEFAULT 0);"
    "CREATE TABLE messages (seq INTEGER PRIMARY KEY AUTOINCREMENT, user_id TEXT NOT NULL "
    "REFERENCES sessions(user_id), role TEXT NOT NULL CHECK (role IN ('user', "
    "'assistant')), content TEXT NOT NULL, images TEXT NOT NULL DEFAULT '[]', client_id "
    "TEXT, reply_to INTEGER REFERENCES messages(seq), status TEXT NOT NULL CHECK (status "
    "IN ('pending', 'answered', 'failed')), created_ms INTEGER NOT NULL, updated_ms "
    "INTEGER NOT NULL, UNIQUE (user_id, client_id));"
    "CREATE INDEX messages_by_user ON messages(user_id, seq);"
    "CREATE UNIQUE INDEX messages_reply_to ON messages(reply_to) WHERE reply_to IS NOT "
    "NULL;"
    "CREATE INDEX messages_pending ON messages(seq) WHERE role = 'user' AND status = "
    "'pending';"
    "ALTER TABLE messages ADD COLUMN failure TEXT;"
    "CREATE TABLE store_probe (id INTEGER PRIMARY KEY CHECK (id = 1), written_ms INTEGER "
    "NOT NULL);";

}  // namespace mooring::store::test_sqlite
