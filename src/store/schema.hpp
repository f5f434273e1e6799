// Opening the database file the way the store promises: WAL journal,
// synchronous=FULL (a stored message survives a power cut), foreign keys on, and
// the schema brought forward by numbered migrations (`PRAGMA user_version`), each
// in its own transaction. A file from a newer mooring is refused, never touched.
#pragma once

#include "store/records.hpp"
#include "store/sqlite.hpp"

#include <chrono>
#include <filesystem>
#include <memory>

namespace mooring::store::schema {

// The schema version this build writes; migrations bring older files up to it.
int latest_version();

// Creates the directory of `path` if missing, opens `path`, applies the
// connection settings and migrations. Store thread only (it touches the disk).
Result<std::unique_ptr<sqlite::Connection>> open_database(const std::filesystem::path& path,
                                                          std::chrono::milliseconds busy_timeout);

}  // namespace mooring::store::schema
