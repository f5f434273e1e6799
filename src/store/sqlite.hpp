// A thin RAII layer over the SQLite C API for the store thread: a connection
// with a cache of prepared statements, and one exception type for SQL failures.
// Used only on the store's own thread; never seen by callers of store::Store.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>

struct sqlite3;
struct sqlite3_stmt;

namespace mooring::store::sqlite {

// A failed SQLite call. The store runs each queued operation as one unit and
// converts this into a StoreError at that boundary, so the code in between can
// read as a straight sequence of statements. `code` is the extended result code;
// `system_errno` the errno of the failed system call behind it, 0 when none.
class Error : public std::runtime_error {
 public:
  Error(int code, const std::string& what, int system_errno = 0)
      : std::runtime_error(what), code_(code), system_errno_(system_errno) {}
  int code() const { return code_; }
  // The primary result code (SQLITE_BUSY, SQLITE_CORRUPT, ...).
  int primary() const { return code_ & 0xff; }
  int system_errno() const { return system_errno_; }

 private:
  int code_;
  int system_errno_;
};

class Connection;

// A prepared statement borrowed from the connection's cache. Parameters are
// bound by position (1-based, as in SQL); the statement is reset when the
// borrower goes out of scope, so the next user starts clean.
class Statement {
 public:
  Statement(Connection& connection, sqlite3_stmt* stmt) : connection_(&connection), stmt_(stmt) {}
  ~Statement();
  Statement(Statement&& other) noexcept
      : connection_(other.connection_), stmt_(std::exchange(other.stmt_, nullptr)) {}
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;
  Statement& operator=(Statement&&) = delete;

  Statement& bind(int index, std::int64_t value);
  // Text SQLite copies: its buffer may go away before the statement runs.
  Statement& bind(int index, std::string_view value);
  Statement& bind(int index, std::string&& value) { return bind(index, std::string_view(value)); }
  // Text SQLite reads where it is, not copied: a named string, which must
  // outlive this Statement (a parameter of the query's function, a local
  // declared before it). The Statement's end clears the bindings.
  Statement& bind(int index, const std::string& value);
  // Text that lives as long as the program (a literal, such as to_string(status)).
  Statement& bind_static(int index, std::string_view value);
  Statement& bind(int index, const std::optional<std::string>& value);
  Statement& bind(int index, const std::optional<std::int64_t>& value);
  Statement& bind_null(int index);

  // Advances to the next row: true when a row is available, false when done.
  bool step();
  // Runs a statement that returns no rows.
  void run();

  bool is_null(int column) const;
  std::int64_t int64(int column) const;
  std::string text(int column) const;
  std::optional<std::int64_t> optional_int64(int column) const;
  std::optional<std::string> optional_text(int column) const;

 private:
  Connection* connection_;
  sqlite3_stmt* stmt_;
};

class Connection {
 public:
  enum class Mode { open_existing, create };
  // Opens the database file (creating it only in Mode::create). Throws Error on failure.
  explicit Connection(const std::string& path, Mode mode = Mode::create);
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  // Runs one or more statements that return no rows.
  void exec(const std::string& sql);
  // Runs a statement returning one row with one integer or text column.
  std::int64_t query_int64(const std::string& sql);
  std::string query_text(const std::string& sql);

  // A cached prepared statement for `sql`; `sql` must outlive the connection
  // (a string literal), since the cache is keyed by it.
  Statement prepare(const char* sql);

  // COMMIT, its WAL frames handed to the kernel in one write (gathered_wal.hpp).
  // Throws Error; SQLite has then rolled the transaction back.
  void commit();

  std::int64_t last_insert_rowid() const;
  // Rows the last INSERT, UPDATE or DELETE changed (an upsert that did
  // nothing: 0).
  std::int64_t changes() const;
  bool in_transaction() const;
  // How many transactions were rolled back (ROLLBACK, or SQLite undoing one
  // after an error), for what must forget values read inside one. A rollback
  // to a savepoint is not counted.
  std::uint64_t rollbacks() const { return rollbacks_; }
  // True when SQLite opened the file read-only (it does so silently when the
  // file cannot be opened for writing).
  bool read_only() const;

  // Replaces SQLite's automatic checkpoints: the owner checkpoints, sees the
  // outcome, and retries. wal_frames() is the WAL's length after the last commit.
  void take_over_checkpoints();
  int wal_frames() const { return wal_frames_; }
  // A PASSIVE checkpoint (never waits for other connections): whether it
  // copied every frame of the WAL. Throws Error.
  bool checkpoint();
  // How long a statement waits for a lock held by another connection.
  void set_busy_timeout(std::chrono::milliseconds timeout);
  sqlite3* handle() const { return db_; }

  // Throws Error for `code` with the connection's current message and `context`.
  [[noreturn]] void fail(int code, std::string_view context) const;

 private:
  sqlite3* db_ = nullptr;
  std::map<const char*, sqlite3_stmt*> statements_;
  int wal_frames_ = 0;
  std::chrono::milliseconds busy_timeout_{-1};
  std::uint64_t rollbacks_ = 0;
};

}  // namespace mooring::store::sqlite
