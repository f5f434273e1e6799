// What a SQLite failure means to an operator: one place turns an error code (and
// the errno behind it) into a StoreError whose message says what happened to
// which file and what to do. "The disk is full" is said when it is (SQLITE_FULL,
// ENOSPC, EDQUOT), never "disk I/O error".
#pragma once

#include "store/records.hpp"
#include "store/sqlite.hpp"

#include <filesystem>
#include <string_view>

namespace mooring::store::failure {

// A failure while working on the open database at `path`.
StoreError describe(const sqlite::Error& e, const std::filesystem::path& path);

// A failure while opening `path`; `doing` is what was being done ("read", "migrate").
StoreError describe_open(const sqlite::Error& e, const std::filesystem::path& path,
                         std::string_view doing);

// True for failures of the disk or the file rather than of one request: they
// make the store degraded (or failed, for damage).
bool is_fault(const StoreError& error);

}  // namespace mooring::store::failure
