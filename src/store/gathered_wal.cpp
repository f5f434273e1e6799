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

int wal_close(sqlite3_file* file) {
  auto& f = wal(file);
  const int written = flush(f);
  const int closed = real_methods(f).xClose(f.real);
  f.~WalFile();
  return written != SQLITE_OK ? written : closed;
}

// The other methods: what is held goes to the kernel first, where the method
// could see or depend on it; then the system file's own method. A WAL has no
// shared memory of its own (the database file does) and is never mapped; the
// shared-memory methods only forward, for a system VFS that would differ.
template <auto method, bool flush_first>
struct Forward;

template <typename R, typename... Args, R (*sqlite3_io_methods::*method)(sqlite3_file*, Args...),
          bool flush_first>
struct Forward<method, flush_first> {
  static R call(sqlite3_file* file, Args... args) {
    auto& f = wal(file);
    if constexpr (flush_first)
      if (const int rc = flush(f); rc != SQLITE_OK) return rc;
    return (real_methods(f).*method)(f.real, args...);
  }
};

template <auto method>
constexpr auto flushed = &Forward<method, true>::call;
template <auto method>
constexpr auto forwarded = &Forward<method, false>::call;

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
  using M = sqlite3_io_methods;
  methods = M{3,
              wal_close,
              flushed<&M::xRead>,
              wal_write,
              flushed<&M::xTruncate>,
              flushed<&M::xSync>,
              flushed<&M::xFileSize>,
              flushed<&M::xLock>,
              flushed<&M::xUnlock>,
              forwarded<&M::xCheckReservedLock>,
              flushed<&M::xFileControl>,
              forwarded<&M::xSectorSize>,
              forwarded<&M::xDeviceCharacteristics>,
              forwarded<&M::xShmMap>,
              forwarded<&M::xShmLock>,
              forwarded<&M::xShmBarrier>,
              forwarded<&M::xShmUnmap>,
              flushed<&M::xFetch>,
              forwarded<&M::xUnfetch>};
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
