// A SQLite VFS that gathers a transaction's WAL frames into one write.
//
// SQLite writes each WAL frame as two writes, its 24-byte header and its page,
// so a commit of F pages costs 2F write(2)s, each touching one or two page
// cache folios (a frame is 24 bytes longer than a page, so most straddle two).
// This VFS, the system's default one otherwise, keeps contiguous writes to a
// WAL in memory and hands them to the kernel as one write:
//  - with the page of a commit frame, before SQLite publishes the commit in
//    the wal-index, so a commit is in the kernel (and seen by every other
//    connection and process) when COMMIT returns, as without it;
//  - before anything else is done to that WAL: a read, a sync, a truncate, a
//    size, a lock, a file control, a write elsewhere in it, its close;
//  - once 1 MiB is held (a transaction spilling pages before its commit).
// A commit header written into an empty buffer goes to the kernel at once,
// and so does the page that follows it: SQLite rewrites frame headers in place
// after reading each frame back (when a transaction rewrote a page it had
// spilled), and nothing follows the last of those rewrites.
// A write that fails reports SQLite's own result (SQLITE_FULL when the disk
// is full) to the call that made it.
#pragma once

namespace mooring::store::sqlite {

// The VFS's registered name; registers it on first use (not as the default).
const char* gathered_wal_vfs();

}  // namespace mooring::store::sqlite
