#include "store/gathered_wal.hpp"

#include <sqlite3.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <new>
#include <vector>

namespace mooring::store::sqlite {

namespace {

constexpr const char* kName = "mooring-gathered-wal";
constexpr int kFrameHeader = 24;
constexpr int kWalHeader = 32;
constexpr std::size_t kMaxHeld = std::size_t{1} << 20;
// The unix VFS writes at most 0x1ffff bytes per call (it masks the length).
constexpr std::size_t kMaxWrite = 0x1f000;

// What SQLite sees for a WAL file; the system VFS's own file lives behind it.
struct WalFile {
  sqlite3_file base;
  sqlite3_file* real;
  bool gathering = false;  // a GatheredCommit of its connection lives
  std::vector<unsigned char> held;
  sqlite3_int64 held_at = 0;
  bool page_next = false;       // the last write held is a frame header
  bool commit_pending = false;  // ... and it is a commit frame's
  int page_size = 0;            // from the WAL header, once seen or read
};

constexpr std::size_t real_offset() {
  return (sizeof(WalFile) + alignof(std::max_align_t) - 1) / alignof(std::max_align_t) *
         alignof(std::max_align_t);
}

sqlite3_vfs* system_vfs = nullptr;
sqlite3_vfs gathered{};
sqlite3_io_methods methods{};

WalFile& wal(sqlite3_file* file) { return *reinterpret_cast<WalFile*>(file); }
const sqlite3_io_methods& real_methods(const WalFile& f) { return *f.real->pMethods; }

std::uint32_t big_endian(const unsigned char* p) {
  return (std::uint32_t{p[0]} << 24) | (std::uint32_t{p[1]} << 16) | (std::uint32_t{p[2]} << 8) |
         std::uint32_t{p[3]};
}

// The page size a WAL header announces, 0 when it is not a WAL header.
int page_size_of_header(const unsigned char* header) {
  const auto magic = big_endian(header);
  if (magic != 0x377f0682 && magic != 0x377f0683) return 0;
  const auto size = big_endian(header + 8);
  return size >= 512 && size <= 65536 && (size & (size - 1)) == 0 ? static_cast<int>(size) : 0;
}

// The WAL's page size: from a header written through this file, or read
// from the file once (0 while it has none).
int page_size(WalFile& f) {
  if (f.page_size != 0) return f.page_size;
  unsigned char header[kWalHeader];
  if (real_methods(f).xRead(f.real, header, kWalHeader, 0) == SQLITE_OK)
    f.page_size = page_size_of_header(header);
  return f.page_size;
}

void drop(WalFile& f) {
  f.held.clear();
  f.page_next = false;
  f.commit_pending = false;
}

int flush(WalFile& f) {
  int rc = SQLITE_OK;
  for (std::size_t done = 0; done < f.held.size() && rc == SQLITE_OK; done += kMaxWrite) {
    const auto amount = std::min(kMaxWrite, f.held.size() - done);
    rc = real_methods(f).xWrite(f.real, f.held.data() + done, static_cast<int>(amount),
                                f.held_at + static_cast<sqlite3_int64>(done));
  }
  drop(f);
  return rc;
}

int hold(WalFile& f, const void* data, int amount, sqlite3_int64 offset) {
  if (f.held.empty()) f.held_at = offset;
  const auto* bytes = static_cast<const unsigned char*>(data);
  try {
    f.held.insert(f.held.end(), bytes, bytes + amount);
  } catch (const std::bad_alloc&) {
    drop(f);  // the COMMIT fails: nothing of it stays held
    return SQLITE_IOERR_NOMEM;
  }
  return SQLITE_OK;
}

bool is_commit_header(const void* data) {
  const auto* bytes = static_cast<const unsigned char*>(data);
  // Bytes 4..7: the database's size in pages after a commit, 0 otherwise.
  return (bytes[4] | bytes[5] | bytes[6] | bytes[7]) != 0;
}

int write_through(WalFile& f, const void* data, int amount, sqlite3_int64 offset) {
  if (const int rc = flush(f); rc != SQLITE_OK) return rc;
  return real_methods(f).xWrite(f.real, data, amount, offset);
}

int wal_write(sqlite3_file* file, const void* data, int amount, sqlite3_int64 offset) {
  auto& f = wal(file);
  if (offset == 0 && amount >= kWalHeader)
    f.page_size = page_size_of_header(static_cast<const unsigned char*>(data));
  if (!f.gathering) return write_through(f, data, amount, offset);
  const int page = page_size(f);
  const bool follows =
      !f.held.empty() && offset == f.held_at + static_cast<sqlite3_int64>(f.held.size());
  if (follows && f.page_next && amount == page) {
    // The page of the frame whose header is held.
    const bool commit = f.commit_pending;
    f.page_next = false;
    f.commit_pending = false;
    if (const int rc = hold(f, data, amount, offset); rc != SQLITE_OK) return rc;
    return commit || f.held.size() >= kMaxHeld ? flush(f) : SQLITE_OK;
  }
  // A frame header: 24 bytes where a frame begins, after a whole frame held
  // or with nothing held (where SQLite rewrites headers in place, and where
  // nothing need follow a commit header, which then goes at once).
  const bool frame_start =
      page != 0 && offset >= kWalHeader && (offset - kWalHeader) % (page + kFrameHeader) == 0;
  if (amount == kFrameHeader && frame_start && !f.page_next && (follows || f.held.empty()) &&
      !(f.held.empty() && is_commit_header(data))) {
    if (const int rc = hold(f, data, amount, offset); rc != SQLITE_OK) return rc;
    f.page_next = true;
    f.commit_pending = is_commit_header(data);
    return SQLITE_OK;
  }
  if (f.held.empty() && offset == 0 && amount == kWalHeader && page != 0)
    return hold(f, data, amount, offset);
  // Anything else: after what is held, at once.
  return write_through(f, data, amount, offset);
}

// Every other method hands what is held to the kernel first, then forwards.
int wal_close(sqlite3_file* file) {
  auto& f = wal(file);
  const int flushed = flush(f);
  const int closed = real_methods(f).xClose(f.real);
  f.~WalFile();
  return flushed != SQLITE_OK ? flushed : closed;
}

int wal_read(sqlite3_file* file, void* data, int amount, sqlite3_int64 offset) {
  auto& f = wal(file);
  if (const int rc = flush(f); rc != SQLITE_OK) return rc;
  return real_methods(f).xRead(f.real, data, amount, offset);
}

int wal_truncate(sqlite3_file* file, sqlite3_int64 size) {
  auto& f = wal(file);
  if (const int rc = flush(f); rc != SQLITE_OK) return rc;
  return real_methods(f).xTruncate(f.real, size);
}

int wal_sync(sqlite3_file* file, int flags) {
  auto& f = wal(file);
  if (const int rc = flush(f); rc != SQLITE_OK) return rc;
  return real_methods(f).xSync(f.real, flags);
}

int wal_file_size(sqlite3_file* file, sqlite3_int64* size) {
  auto& f = wal(file);
  if (const int rc = flush(f); rc != SQLITE_OK) return rc;
  return real_methods(f).xFileSize(f.real, size);
}

int wal_lock(sqlite3_file* file, int level) {
  auto& f = wal(file);
  if (const int rc = flush(f); rc != SQLITE_OK) return rc;
  return real_methods(f).xLock(f.real, level);
}

int wal_unlock(sqlite3_file* file, int level) {
  auto& f = wal(file);
  if (const int rc = flush(f); rc != SQLITE_OK) return rc;
  return real_methods(f).xUnlock(f.real, level);
}

int wal_check_reserved_lock(sqlite3_file* file, int* out) {
  auto& f = wal(file);
  return real_methods(f).xCheckReservedLock(f.real, out);
}

int wal_file_control(sqlite3_file* file, int op, void* arg) {
  auto& f = wal(file);
  if (const int rc = flush(f); rc != SQLITE_OK) return rc;
  return real_methods(f).xFileControl(f.real, op, arg);
}

int wal_sector_size(sqlite3_file* file) {
  auto& f = wal(file);
  return real_methods(f).xSectorSize(f.real);
}

int wal_device_characteristics(sqlite3_file* file) {
  auto& f = wal(file);
  return real_methods(f).xDeviceCharacteristics(f.real);
}

// A WAL has no shared memory of its own (the database file does) and is never
// memory-mapped; these only forward, for a system VFS that would differ.
int wal_shm_map(sqlite3_file* file, int region, int size, int extend, void volatile** out) {
  auto& f = wal(file);
  return real_methods(f).xShmMap(f.real, region, size, extend, out);
}

int wal_shm_lock(sqlite3_file* file, int offset, int n, int flags) {
  auto& f = wal(file);
  return real_methods(f).xShmLock(f.real, offset, n, flags);
}

void wal_shm_barrier(sqlite3_file* file) {
  auto& f = wal(file);
  real_methods(f).xShmBarrier(f.real);
}

int wal_shm_unmap(sqlite3_file* file, int delete_flag) {
  auto& f = wal(file);
  return real_methods(f).xShmUnmap(f.real, delete_flag);
}

int wal_fetch(sqlite3_file* file, sqlite3_int64 offset, int amount, void** out) {
  auto& f = wal(file);
  if (const int rc = flush(f); rc != SQLITE_OK) return rc;
  return real_methods(f).xFetch(f.real, offset, amount, out);
}

int wal_unfetch(sqlite3_file* file, sqlite3_int64 offset, void* page) {
  auto& f = wal(file);
  return real_methods(f).xUnfetch(f.real, offset, page);
}

int wal_open(sqlite3_vfs*, const char* name, sqlite3_file* file, int flags, int* out_flags) {
  // Everything but a WAL is the system VFS's own file, in the same memory.
  if ((flags & SQLITE_OPEN_WAL) == 0)
    return system_vfs->xOpen(system_vfs, name, file, flags, out_flags);
  auto* f = new (file) WalFile;
  f->real = reinterpret_cast<sqlite3_file*>(reinterpret_cast<char*>(file) + real_offset());
  f->real->pMethods = nullptr;
  const int rc = system_vfs->xOpen(system_vfs, name, f->real, flags, out_flags);
  if (f->real->pMethods == nullptr) {
    // Nothing to close: SQLite will not call xClose on a null pMethods.
    f->~WalFile();
    file->pMethods = nullptr;
    return rc;
  }
  f->base.pMethods = &methods;
  return rc;
}

void register_vfs() {
  system_vfs = sqlite3_vfs_find(nullptr);
  if (system_vfs == nullptr) return;
  gathered = *system_vfs;
  gathered.zName = kName;
  gathered.pNext = nullptr;
  gathered.szOsFile = static_cast<int>(real_offset()) + system_vfs->szOsFile;
  gathered.xOpen = wal_open;
  methods = sqlite3_io_methods{3,
                               wal_close,
                               wal_read,
                               wal_write,
                               wal_truncate,
                               wal_sync,
                               wal_file_size,
                               wal_lock,
                               wal_unlock,
                               wal_check_reserved_lock,
                               wal_file_control,
                               wal_sector_size,
                               wal_device_characteristics,
                               wal_shm_map,
                               wal_shm_lock,
                               wal_shm_barrier,
                               wal_shm_unmap,
                               wal_fetch,
                               wal_unfetch};
  if (sqlite3_vfs_register(&gathered, 0) != SQLITE_OK) system_vfs = nullptr;
}

}  // namespace

namespace {

// The WAL file of `db`'s main database when this VFS opened it.
WalFile* wal_of(sqlite3* db) {
  sqlite3_file* file = nullptr;
  if (db == nullptr ||
      sqlite3_file_control(db, "main", SQLITE_FCNTL_JOURNAL_POINTER, &file) != SQLITE_OK ||
      file == nullptr || file->pMethods != &methods)
    return nullptr;
  return &wal(file);
}

}  // namespace

GatheredCommit::GatheredCommit(sqlite3* db) : db_(db) {
  if (auto* f = wal_of(db_); f != nullptr && !f->gathering) {
    f->gathering = true;
    wal_ = f;
  }
}

GatheredCommit::~GatheredCommit() {
  // Dropped, not written: SQLite has rolled this transaction back, and the
  // WAL may be another writer's by now.
  if (auto* f = static_cast<WalFile*>(wal_); f != nullptr && f == wal_of(db_)) {
    drop(*f);
    f->gathering = false;
  }
}

int GatheredCommit::committed() {
  int rc = SQLITE_OK;
  if (auto* f = static_cast<WalFile*>(wal_); f != nullptr && f == wal_of(db_)) {
    rc = flush(*f);
    f->gathering = false;
  }
  wal_ = nullptr;
  return rc;
}

const char* gathered_wal_vfs() {
  static std::once_flag once;
  std::call_once(once, register_vfs);
  // Without it (no system VFS: never on Linux), SQLite's default is used.
  return system_vfs != nullptr ? kName : nullptr;
}

}  // namespace mooring::store::sqlite
