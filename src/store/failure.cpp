#include "store/failure.hpp"

#include <fmt/format.h>
#include <sqlite3.h>

#include <sys/resource.h>

#include <cerrno>
#include <cstring>

namespace mooring::store::failure {

namespace {

using Kind = StoreError::Kind;

bool disk_full(const sqlite::Error& e) {
  return e.primary() == SQLITE_FULL || e.system_errno() == ENOSPC || e.system_errno() == EDQUOT;
}

// A file-size limit (ulimit -f, systemd's LimitFSIZE=): with SIGXFSZ ignored
// (app::run_cli), a write that would cross it is cut short (SQLite says the
// disk is full) and one that starts at it fails with EFBIG, an errno SQLite
// may have lost by the time it reports. So: EFBIG, or a failed write while the
// database or its WAL is within a page or two of the limit.
bool over_file_size_limit(const sqlite::Error& e, const std::filesystem::path& path) {
  if (e.system_errno() == EFBIG) return true;
  if (e.primary() != SQLITE_FULL && e.primary() != SQLITE_IOERR) return false;
  rlimit limit{};
  if (::getrlimit(RLIMIT_FSIZE, &limit) != 0 || limit.rlim_cur == RLIM_INFINITY) return false;
  constexpr std::uintmax_t margin = 128 * 1024;
  for (const auto& file : {path, std::filesystem::path(path.string() + "-wal")}) {
    std::error_code ec;
    const auto size = std::filesystem::file_size(file, ec);
    if (!ec && size + margin >= limit.rlim_cur) return true;
  }
  return false;
}

constexpr std::string_view file_size_advice =
    "raise the file size limit of mooring's process (ulimit -f, systemd's LimitFSIZE=; "
    "`prlimit --fsize=unlimited --pid <pid>` raises it for a running mooring)";

bool not_writable(const sqlite::Error& e) {
  const int errno_value = e.system_errno();
  return e.primary() == SQLITE_READONLY || e.primary() == SQLITE_PERM || errno_value == EROFS ||
         errno_value == EPERM || errno_value == EACCES;
}

// "disk I/O error (errno 5: Input/output error)": the errno says more than SQLite's text.
std::string detail(const sqlite::Error& e) {
  if (e.system_errno() == 0) return e.what();
  return fmt::format("{} (errno {}: {})", e.what(), e.system_errno(),
                     std::strerror(e.system_errno()));
}

}  // namespace

StoreError describe(const sqlite::Error& e, const std::filesystem::path& path) {
  const auto file = path.string();
  if (e.primary() == SQLITE_CORRUPT || e.primary() == SQLITE_NOTADB)
    return {Kind::corrupt,
            fmt::format("the database {} is damaged ({}); stop mooring and restore it from a "
                        "backup",
                        file, detail(e))};
  if (over_file_size_limit(e, path))
    return {Kind::io, fmt::format("cannot write {}: it would grow past the file size limit of "
                                  "this process; {}, and writes resume by themselves",
                                  file, file_size_advice)};
  if (disk_full(e))
    return {Kind::io, fmt::format("the disk is full: cannot write {} (free space on its file "
                                  "system; writes resume by themselves)",
                                  file)};
  if (not_writable(e))
    return {Kind::io, fmt::format("{} cannot be written ({}); check the permissions and "
                                  "attributes (lsattr) of it, its -wal and -shm files and its "
                                  "directory, and that the file system is mounted read-write",
                                  file, detail(e))};
  switch (e.primary()) {
    case SQLITE_IOERR:
    case SQLITE_CANTOPEN:
      return {Kind::io, fmt::format("disk I/O error on {}: {}", file, detail(e))};
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
      return {Kind::io, fmt::format("{} is locked by another process ({}); is a second mooring "
                                    "or a backup tool using the same data dir?",
                                    file, detail(e))};
    default:
      return {Kind::internal, fmt::format("{} (on {})", detail(e), file)};
  }
}

StoreError describe_open(const sqlite::Error& e, const std::filesystem::path& path,
                         std::string_view doing) {
  const auto file = path.string();
  if (e.primary() == SQLITE_NOTADB || e.primary() == SQLITE_CORRUPT)
    return {Kind::corrupt,
            fmt::format("{} is damaged or not a SQLite database ({}); mooring will not write "
                        "into it: restore it from a backup, or move it aside (with its -wal and "
                        "-shm files) to start with an empty store",
                        file, detail(e))};
  if (over_file_size_limit(e, path))
    return {Kind::io, fmt::format("cannot {} {}: it would grow past the file size limit of this "
                                  "process; {}",
                                  doing, file, file_size_advice)};
  if (disk_full(e) && doing == "migrate")
    return {Kind::io, fmt::format("cannot upgrade {}: the disk is full. The upgrade copies the "
                                  "messages table once: free room for a second copy of the "
                                  "file and its WAL; the file is left as it was ({})",
                                  file, detail(e))};
  if (disk_full(e))
    return {Kind::io, fmt::format("cannot open {}: the disk is full (mooring needs room for a "
                                  "write and for the -wal and -shm files); free space on its "
                                  "file system",
                                  file)};
  if (not_writable(e) || e.primary() == SQLITE_CANTOPEN)
    return {Kind::io,
            fmt::format("cannot {} {}: {}; check that the file and its directory exist and "
                        "can be written by this user (permissions, lsattr, a read-only mount)",
                        doing, file, detail(e))};
  if (e.primary() == SQLITE_BUSY || e.primary() == SQLITE_LOCKED)
    return {Kind::io, fmt::format("cannot {} {}: {}; another process holds the database (is a "
                                  "second mooring using the same data dir?)",
                                  doing, file, detail(e))};
  return {Kind::io, fmt::format("cannot {} {}: {}", doing, file, detail(e))};
}

bool is_fault(const StoreError& error) {
  return error.kind == Kind::io || error.kind == Kind::corrupt;
}

}  // namespace mooring::store::failure
