// A SQLite VFS that hands a commit's WAL frames to the kernel together.
//
// SQLite writes each WAL frame as two writes, its 24-byte header and its
// page, so a commit of F pages costs 2F write(2)s, each touching one or two
// page-cache folios (a frame is 24 bytes longer than a page, so most straddle
// two). This VFS is the system's default one for everything but that: while a
// GatheredCommit lives around a connection's COMMIT, the WAL frames that
// COMMIT writes in sequence are held in memory and handed to the kernel in as
// few writes as the system VFS takes (one for up to 124 KiB):
//  - with the page of the commit frame, before SQLite publishes the commit in
//    the wal-index: when COMMIT returns, the commit is in the kernel and seen
//    by every other connection and process, as without this VFS;
//  - before anything else is done to that WAL (a read, a sync, a truncate, a
//    size, a lock, a file control, a write elsewhere in it, its close);
//  - once 1 MiB is held.
// Only the WAL header, a frame header where a frame begins and the whole page
// after it are held. Any other write (a page rewritten in place, the parts of
// a page split around a sync point) goes to the kernel at once, after what is
// held; so does a commit header with nothing held before it (SQLite rewrites
// frame headers in place after reading each frame back, and nothing follows
// the last of them).
// Outside a GatheredCommit nothing is held: pages a transaction spills into
// the WAL before its commit are written as they come, so a transaction that
// rolls back (and releases the WAL to other writers) leaves nothing behind.
// A write that fails reports SQLite's own result (SQLITE_FULL when the disk is
// full) to the call that made it, and the COMMIT fails.
#pragma once

struct sqlite3;

namespace mooring::store::sqlite {

// The VFS's registered name; registers it on first use (not as the default).
// Null if SQLite has no default VFS to build it on.
const char* gathered_wal_vfs();

// While it lives, the writes of `db`'s COMMIT to its WAL are gathered (a
// connection not opened with this VFS, or not in WAL mode, is left alone).
// Destroyed after a COMMIT that failed, it drops what is still held: SQLite
// has rolled that transaction back.
class GatheredCommit {
 public:
  explicit GatheredCommit(sqlite3* db);
  ~GatheredCommit();
  GatheredCommit(const GatheredCommit&) = delete;
  GatheredCommit& operator=(const GatheredCommit&) = delete;

  // After a COMMIT that succeeded: hands over anything still held (nothing,
  // when SQLite wrote the commit as described above). A SQLite result code.
  int committed();

 private:
  sqlite3* db_;
  void* wal_ = nullptr;  // the WAL file whose writes are gathered, if any
};

}  // namespace mooring::store::sqlite
