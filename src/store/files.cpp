#include "store/files.hpp"

#include "store/failure.hpp"
#include "store/sqlite.hpp"

#include <fmt/format.h>

#include <fcntl.h>
#include <linux/fs.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <optional>
#include <string>
#include <system_error>

namespace mooring::store::files {

namespace fs = std::filesystem;

namespace {

using Kind = StoreError::Kind;

// Closes a descriptor on scope exit.
struct Descriptor {
  int fd = -1;
  explicit Descriptor(int fd) : fd(fd) {}
  ~Descriptor() {
    if (fd >= 0) ::close(fd);
  }
  Descriptor(const Descriptor&) = delete;
  Descriptor& operator=(const Descriptor&) = delete;
};

std::string errno_text(int error) { return std::strerror(error); }

// The attribute that stops even root from writing, named so the operator can
// undo it; nullopt when there is none or the file system has no such flags.
std::optional<std::string> locking_attribute(const fs::path& path) {
  Descriptor file(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK));
  if (file.fd < 0) return std::nullopt;
  int flags = 0;
  if (::ioctl(file.fd, FS_IOC_GETFLAGS, &flags) != 0) return std::nullopt;
  if (flags & FS_IMMUTABLE_FL) return "immutable (chattr +i)";
  if (flags & FS_APPEND_FL) return "append-only (chattr +a)";
  return std::nullopt;
}

StoreError cannot_write(const fs::path& path, int error, std::string_view what) {
  if (auto attribute = locking_attribute(path))
    return {Kind::io, fmt::format("{} {} is {}, so mooring cannot write it; remove the flag with "
                                  "`chattr -i -a {}`",
                                  what, path.string(), *attribute, path.string())};
  if (error == EROFS)
    return {Kind::io, fmt::format("{} {} is on a read-only file system; mount it read-write or "
                                  "choose another data.dir",
                                  what, path.string())};
  if (error == ENOSPC || error == EDQUOT)
    return {Kind::io, fmt::format("cannot write {} {}: the disk is full; free space on its file "
                                  "system",
                                  what, path.string())};
  return {Kind::io, fmt::format("{} {} cannot be written by this user ({}); fix its owner or "
                                "mode",
                                what, path.string(), errno_text(error))};
}

// Narrows the permissions of `path` to `mode` when they are wider.
Result<void> restrict_mode(const fs::path& path, const struct stat& info, unsigned mode,
                           std::string_view what) {
  if ((info.st_mode & 0777 & ~mode) == 0) return {};
  if (::chmod(path.c_str(), mode) != 0)
    return StoreError{Kind::io, fmt::format("cannot restrict {} {} to mode {:o} (owner only): {}; "
                                            "fix its owner or mode",
                                            what, path.string(), mode, errno_text(errno))};
  return {};
}

Result<void> check_directory(const fs::path& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec)
    return StoreError{Kind::io, fmt::format("cannot create the data directory {}: {}",
                                            dir.string(), ec.message())};
  struct stat info {};
  if (::stat(dir.c_str(), &info) != 0)
    return StoreError{Kind::io, fmt::format("cannot read the data directory {}: {}", dir.string(),
                                            errno_text(errno))};
  if (!S_ISDIR(info.st_mode))
    return StoreError{Kind::io, fmt::format("the data directory {} is not a directory",
                                            dir.string())};
  if (auto restricted = restrict_mode(dir, info, directory_mode, "the data directory");
      !restricted)
    return restricted;

  // SQLite creates and removes its -wal and -shm files here: the directory
  // itself must take new files.
  const auto probe = dir / fmt::format(".mooring-write-probe-{}", ::getpid());
  Descriptor file(::open(probe.c_str(), O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC, file_mode));
  if (file.fd < 0) return cannot_write(dir, errno, "the data directory");
  ::unlink(probe.c_str());
  return {};
}

// A file of the database that exists: a regular file, 0600, writable.
Result<void> check_file(const fs::path& path, const struct stat& info) {
  if (!S_ISREG(info.st_mode))
    return StoreError{Kind::io, fmt::format("{} is not a regular file; move it away",
                                            path.string())};
  if (auto restricted = restrict_mode(path, info, file_mode, "the database file"); !restricted)
    return restricted;
  Descriptor file(::open(path.c_str(), O_RDWR | O_CLOEXEC | O_NONBLOCK));
  // Refused here rather than left to SQLite, which would open the file
  // read-only without a word (or map a read-only -shm it cannot extend).
  if (file.fd < 0) return cannot_write(path, errno, "the database file");
  return {};
}

std::optional<struct stat> stat_if_exists(const fs::path& path, int& error) {
  struct stat info {};
  if (::lstat(path.c_str(), &info) == 0) return info;
  error = errno == ENOENT ? 0 : errno;
  return std::nullopt;
}

Result<void> sync_directory(const fs::path& dir) {
  Descriptor handle(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (handle.fd < 0 || ::fsync(handle.fd) != 0)
    return StoreError{Kind::io, fmt::format("cannot sync the data directory {}: {}",
                                            dir.string(), errno_text(errno))};
  return {};
}

}  // namespace

fs::path wal_path(const fs::path& database) { return fs::path(database.string() + "-wal"); }
fs::path shm_path(const fs::path& database) { return fs::path(database.string() + "-shm"); }

Result<DirectoryLock> DirectoryLock::take(const fs::path& directory) {
  const auto path = directory / "mooring.lock";
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, file_mode);
  if (fd < 0)
    return StoreError{Kind::io, fmt::format("cannot open {}: {}", path.string(),
                                            errno_text(errno))};
  DirectoryLock lock(fd);
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    const int error = errno;
    if (error != EWOULDBLOCK)
      return StoreError{Kind::io, fmt::format("cannot lock {}: {}", path.string(),
                                              errno_text(error))};
    char holder[32] = {};
    const auto n = ::pread(fd, holder, sizeof holder - 1, 0);
    std::string pid(holder, n > 0 ? static_cast<std::size_t>(n) : 0);
    while (!pid.empty() && (pid.back() == '\n' || pid.back() == ' ')) pid.pop_back();
    return StoreError{
        Kind::io,
        fmt::format("the data directory {} is in use by another mooring{}: two would answer "
                    "each other's messages. Stop that one, or give this one another data.dir",
                    directory.string(), pid.empty() ? "" : fmt::format(" (pid {})", pid))};
  }
  const auto text = std::to_string(::getpid()) + "\n";
  // The pid is a courtesy for the message above; the lock is what counts.
  if (::ftruncate(fd, 0) == 0) (void)!::pwrite(fd, text.data(), text.size(), 0);
  return lock;
}

DirectoryLock& DirectoryLock::operator=(DirectoryLock&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = std::exchange(other.fd_, -1);
  }
  return *this;
}

DirectoryLock::~DirectoryLock() {
  if (fd_ >= 0) ::close(fd_);
}

Result<bool> prepare(const fs::path& database) {
  if (auto dir = check_directory(database.parent_path()); !dir) return dir.error();

  int error = 0;
  const auto main = stat_if_exists(database, error);
  if (error != 0)
    return StoreError{Kind::io, fmt::format("cannot read {}: {}", database.string(),
                                            errno_text(error))};
  if (main && S_ISREG(main->st_mode) && main->st_size == 0)
    return StoreError{
        Kind::corrupt,
        fmt::format("{} is empty (0 bytes): a database mooring has used is never empty, so the "
                    "file was truncated or replaced. mooring will not start over on it and lose "
                    "the conversations: restore mooring.db from a backup, or move the empty file "
                    "away to start with an empty store",
                    database.string())};
  if (main)
    if (auto checked = check_file(database, *main); !checked) return checked.error();

  for (const auto& companion : {wal_path(database), shm_path(database)}) {
    const auto info = stat_if_exists(companion, error);
    if (error != 0)
      return StoreError{Kind::io, fmt::format("cannot read {}: {}", companion.string(),
                                              errno_text(error))};
    if (!info) continue;
    if (!main && companion == wal_path(database) && info->st_size > 0)
      return StoreError{
          Kind::corrupt,
          fmt::format("{} is missing but its write-ahead log {} holds data: the database was "
                      "moved or deleted without it. Restore mooring.db from a backup, or move "
                      "the -wal and -shm files away to start with an empty store",
                      database.string(), companion.string())};
    if (auto checked = check_file(companion, *info); !checked) return checked.error();
  }
  return !main.has_value();
}

Result<void> create_database(const fs::path& database,
                             const std::function<void(sqlite::Connection&)>& fill) {
  const fs::path building(database.string() + ".creating");
  // Left by a crash during an earlier creation: nothing in them was ever used.
  for (const auto& leftover : {building, wal_path(building), shm_path(building),
                               fs::path(building.string() + "-journal")}) {
    std::error_code ignored;
    fs::remove(leftover, ignored);
  }
  {
    Descriptor file(::open(building.c_str(), O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, file_mode));
    // fchmod: the umask may have taken bits from file_mode.
    if (file.fd < 0 || ::fchmod(file.fd, file_mode) != 0)
      return cannot_write(building, errno, "the new database file");
  }
  try {
    // WAL mode is kept in the header, so this writes the first page; SQLite
    // gives the -wal and -shm files it creates the mode of the database file.
    sqlite::Connection db(building.string(), sqlite::Connection::Mode::open_existing);
    if (db.query_text("PRAGMA journal_mode = WAL") != "wal")
      return StoreError{Kind::io,
                        fmt::format("cannot switch {} to WAL mode; the file system may not support "
                                    "shared memory (NFS?)",
                                    database.string())};
    fill(db);
    // Everything into the file itself: the WAL is not renamed with it.
    db.exec("PRAGMA wal_checkpoint(TRUNCATE)");
  } catch (const sqlite::Error& e) {
    return failure::describe_open(e, database, "create");
  }
  {
    Descriptor file(::open(building.c_str(), O_RDWR | O_CLOEXEC));
    if (file.fd < 0 || ::fsync(file.fd) != 0) return cannot_write(building, errno, "the new database file");
  }
  if (::rename(building.c_str(), database.c_str()) != 0)
    return cannot_write(database.parent_path(), errno, "the data directory");
  return sync_directory(database.parent_path());
}

}  // namespace mooring::store::files
