// Opening the database file the way the store promises: WAL journal,
// synchronous=FULL (a stored message survives a power cut), foreign keys on, and
// the schema brought forward by numbered migrations (`PRAGMA user_version`), each
// in its own transaction. A file from a newer mooring is refused, never touched;
// so is a damaged one, a read-only one and an empty one.
#pragma once

#include "store/files.hpp"
#include "store/records.hpp"
#include "store/sqlite.hpp"

#include <chrono>
#include <filesystem>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace mooring::store::schema {

// The schema version this build writes; migrations bring older files up to it.
int latest_version();

struct OpenOptions {
  // How long a statement waits for a lock held by another process.
  std::chrono::milliseconds busy_timeout{5000};
  // PRAGMA quick_check stops here; a check cut short is reported, not failed.
  std::chrono::milliseconds integrity_check_timeout{30000};
  // Written into the probe row.
  std::int64_t now_ms = 0;
  // FULL: each commit fsyncs the WAL (an acknowledged message survives a power
  // cut). NORMAL: the WAL is fsynced at checkpoints (it survives a crash or
  // kill -9 of mooring, not a power cut).
  bool synchronous_full = true;
};

// What PRAGMA quick_check found at open.
struct IntegrityCheck {
  bool completed = false;            // false: stopped at integrity_check_timeout
  std::vector<std::string> problems;  // empty when the database is sound
  std::chrono::milliseconds took{0};
  std::uintmax_t bytes = 0;  // the size of the main file checked
};

struct Opened {
  files::DirectoryLock lock;  // taken before the files are looked at
  std::unique_ptr<sqlite::Connection> db;
  IntegrityCheck check;
  bool created = false;  // the database did not exist: a first start
};

// Checks the files (store/files.hpp) and creates the database on a first
// start; opens it, refuses it read-only, runs a bounded quick_check before
// anything is written, applies the connection settings and migrations, and
// writes one probe row so a store that cannot write never opens. Store thread
// only (it touches the disk).
Result<Opened> open_database(const std::filesystem::path& path, const OpenOptions& options);

// Writes the probe row: the cheapest write that proves the disk takes writes.
// Inside a transaction of the caller's; throws sqlite::Error.
void write_probe(sqlite::Connection& db, std::int64_t now_ms);

}  // namespace mooring::store::schema
