// The store's files on disk, checked before SQLite touches them. The data
// directory is 0700 and mooring.db, -wal and -shm are 0600 whatever the umask
// (new files are created so, existing ones are fixed). An existing empty
// mooring.db is damage, never a first start. A file or directory mooring cannot
// write (immutable, read-only mount, foreign owner) is refused with what to do,
// instead of being opened read-only or mapped into memory it cannot extend.
// Store thread only: everything here touches the disk.
#pragma once

#include "store/records.hpp"
#include "store/sqlite.hpp"

#include <filesystem>
#include <functional>
#include <utility>

namespace mooring::store::files {

// Owner only: conversations are nobody else's business.
inline constexpr unsigned directory_mode = 0700;
inline constexpr unsigned file_mode = 0600;

// Creates `database`'s directory if missing and checks the directory and the
// database's files. True when the database does not exist yet (a first start).
Result<bool> prepare(const std::filesystem::path& database);

// Creates a WAL-mode database at `database`, mode 0600, holding what `fill`
// writes into it (the schema). It is built under a temporary name and renamed
// into place once written and synced, so a creation cut short (a crash, a
// full disk) never leaves an empty mooring.db behind to be taken for damage.
Result<void> create_database(const std::filesystem::path& database,
                             const std::function<void(sqlite::Connection&)>& fill);

// One mooring per data directory: every promise of the store (a reply stored
// once, pending messages answered once after a start) assumes a single
// writer. Held from the open to the close of the store (an exclusive flock on
// <dir>/mooring.lock, which names the holder's pid); the kernel lets go of it
// when the process ends, however it ends.
class DirectoryLock {
 public:
  // Refused (Kind::io) when another process, or another store of this one,
  // holds the directory.
  static Result<DirectoryLock> take(const std::filesystem::path& directory);

  DirectoryLock() = default;
  DirectoryLock(DirectoryLock&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  DirectoryLock& operator=(DirectoryLock&& other) noexcept;
  DirectoryLock(const DirectoryLock&) = delete;
  DirectoryLock& operator=(const DirectoryLock&) = delete;
  ~DirectoryLock();

 private:
  explicit DirectoryLock(int fd) : fd_(fd) {}
  int fd_ = -1;
};

// The database's companion files.
std::filesystem::path wal_path(const std::filesystem::path& database);
std::filesystem::path shm_path(const std::filesystem::path& database);

}  // namespace mooring::store::files
