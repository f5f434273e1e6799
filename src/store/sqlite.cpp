#include "store/sqlite.hpp"

#include "store/gathered_wal.hpp"

#include <fmt/format.h>
#include <sqlite3.h>

#include <cerrno>

namespace mooring::store::sqlite {

Statement::~Statement() {
  if (stmt_ == nullptr) return;
  sqlite3_reset(stmt_);
  sqlite3_clear_bindings(stmt_);
}

Statement& Statement::bind(int index, std::int64_t value) {
  if (const int rc = sqlite3_bind_int64(stmt_, index, value); rc != SQLITE_OK)
    connection_->fail(rc, "bind");
  return *this;
}

Statement& Statement::bind(int index, std::string_view value) {
  // SQLITE_TRANSIENT: SQLite copies the text, so the caller's buffer may go away.
  if (const int rc = sqlite3_bind_text64(stmt_, index, value.data(), value.size(), SQLITE_TRANSIENT,
                                         SQLITE_UTF8);
      rc != SQLITE_OK)
    connection_->fail(rc, "bind");
  return *this;
}

Statement& Statement::bind(int index, const std::string& value) {
  return bind_static(index, value);
}

Statement& Statement::bind_static(int index, std::string_view value) {
  // SQLITE_STATIC: SQLite reads the caller's buffer until the bindings are
  // cleared (the Statement's end), without a copy of its own.
  if (const int rc = sqlite3_bind_text64(stmt_, index, value.data(), value.size(), SQLITE_STATIC,
                                         SQLITE_UTF8);
      rc != SQLITE_OK)
    connection_->fail(rc, "bind");
  return *this;
}

Statement& Statement::bind(int index, const std::optional<std::string>& value) {
  return value ? bind(index, *value) : bind_null(index);
}

Statement& Statement::bind(int index, const std::optional<std::int64_t>& value) {
  return value ? bind(index, *value) : bind_null(index);
}

Statement& Statement::bind_null(int index) {
  if (const int rc = sqlite3_bind_null(stmt_, index); rc != SQLITE_OK)
    connection_->fail(rc, "bind");
  return *this;
}

bool Statement::step() {
  const int rc = sqlite3_step(stmt_);
  if (rc == SQLITE_ROW) return true;
  if (rc == SQLITE_DONE) return false;
  connection_->fail(rc, sqlite3_sql(stmt_));
}

void Statement::run() {
  while (step()) {
  }
}

bool Statement::is_null(int column) const {
  return sqlite3_column_type(stmt_, column) == SQLITE_NULL;
}

std::int64_t Statement::int64(int column) const {
  return sqlite3_column_int64(stmt_, column);
}

std::string Statement::text(int column) const {
  const auto* data = reinterpret_cast<const char*>(sqlite3_column_text(stmt_, column));
  if (data == nullptr) return {};
  return std::string(data, static_cast<std::size_t>(sqlite3_column_bytes(stmt_, column)));
}

std::optional<std::int64_t> Statement::optional_int64(int column) const {
  if (is_null(column)) return std::nullopt;
  return int64(column);
}

std::optional<std::string> Statement::optional_text(int column) const {
  if (is_null(column)) return std::nullopt;
  return text(column);
}

namespace {
// SQLite counts the memory it allocates under a global mutex unless told not
// to; mooring never reads those counts. Only possible before SQLite starts, so
// once, before the first connection.
void configure_once() {
  static const int configured = sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
  (void)configured;  // SQLITE_MISUSE when something started SQLite first: harmless
}
}  // namespace

Connection::Connection(const std::string& path, Mode mode) {
  configure_once();
  // NOMUTEX: the connection lives on one thread, so SQLite's own locking is waste.
  int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX;
  if (mode == Mode::create) flags |= SQLITE_OPEN_CREATE;
  // A transaction's WAL frames reach the kernel in one write (gathered_wal.hpp).
  const int rc = sqlite3_open_v2(path.c_str(), &db_, flags, gathered_wal_vfs());
  if (rc != SQLITE_OK) {
    const std::string message = db_ != nullptr ? sqlite3_errmsg(db_) : sqlite3_errstr(rc);
    const int system_errno = db_ != nullptr ? sqlite3_system_errno(db_) : 0;
    sqlite3_close_v2(db_);
    db_ = nullptr;
    throw Error(rc, message, system_errno);
  }
  sqlite3_extended_result_codes(db_, 1);
  sqlite3_rollback_hook(
      db_, [](void* counter) { ++*static_cast<std::uint64_t*>(counter); }, &rollbacks_);
}

Connection::~Connection() {
  for (auto& [sql, stmt] : statements_) sqlite3_finalize(stmt);
  // close_v2 never fails for a busy handle: it defers the close until the last
  // statement is finalized, and every statement was finalized above.
  sqlite3_close_v2(db_);
}

void Connection::fail(int code, std::string_view context) const {
  const char* message = db_ != nullptr ? sqlite3_errmsg(db_) : sqlite3_errstr(code);
  const int system_errno = db_ != nullptr ? sqlite3_system_errno(db_) : 0;
  // A bad statement is a programming error; its text helps whoever reads the log.
  if (context.empty()) throw Error(code, message, system_errno);
  throw Error(code, fmt::format("{} (in: {})", message, context), system_errno);
}

void Connection::commit() {
  GatheredCommit gathered(db_);
  prepare("COMMIT").run();
  // Only when SQLite wrote a commit in a way gathered_wal.hpp does not expect.
  if (const int rc = gathered.committed(); rc != SQLITE_OK)
    throw Error(rc, fmt::format("{} (writing the WAL after COMMIT)", sqlite3_errstr(rc)), errno);
}

void Connection::exec(const std::string& sql) {
  char* message = nullptr;
  const int rc = sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, &message);
  if (rc == SQLITE_OK) return;
  std::string text = message != nullptr ? message : sqlite3_errstr(rc);
  sqlite3_free(message);
  throw Error(rc, text, sqlite3_system_errno(db_));
}

namespace {

// A one-off statement, finalized on scope exit (migrations and pragmas).
struct OneOff {
  sqlite3_stmt* stmt = nullptr;
  ~OneOff() { sqlite3_finalize(stmt); }
};

}  // namespace

std::int64_t Connection::query_int64(const std::string& sql) {
  OneOff q;
  if (const int rc = sqlite3_prepare_v2(db_, sql.c_str(), -1, &q.stmt, nullptr); rc != SQLITE_OK)
    fail(rc, "");
  const int rc = sqlite3_step(q.stmt);
  if (rc != SQLITE_ROW) fail(rc == SQLITE_DONE ? SQLITE_ERROR : rc, sql);
  return sqlite3_column_int64(q.stmt, 0);
}

std::string Connection::query_text(const std::string& sql) {
  OneOff q;
  if (const int rc = sqlite3_prepare_v2(db_, sql.c_str(), -1, &q.stmt, nullptr); rc != SQLITE_OK)
    fail(rc, "");
  const int rc = sqlite3_step(q.stmt);
  if (rc != SQLITE_ROW) fail(rc == SQLITE_DONE ? SQLITE_ERROR : rc, sql);
  const auto* data = reinterpret_cast<const char*>(sqlite3_column_text(q.stmt, 0));
  return data != nullptr ? std::string(data) : std::string();
}

Statement Connection::prepare(const char* sql) {
  auto found = statements_.find(sql);
  if (found == statements_.end()) {
    sqlite3_stmt* stmt = nullptr;
    const int rc = sqlite3_prepare_v3(db_, sql, -1, SQLITE_PREPARE_PERSISTENT, &stmt, nullptr);
    if (rc != SQLITE_OK) fail(rc, sql);
    found = statements_.emplace(sql, stmt).first;
  }
  return Statement(*this, found->second);
}

std::int64_t Connection::changes() const {
  return sqlite3_changes64(db_);
}

std::int64_t Connection::last_insert_rowid() const {
  return sqlite3_last_insert_rowid(db_);
}

bool Connection::in_transaction() const {
  return sqlite3_get_autocommit(db_) == 0;
}

bool Connection::read_only() const {
  return sqlite3_db_readonly(db_, "main") == 1;
}

void Connection::set_busy_timeout(std::chrono::milliseconds timeout) {
  if (timeout == busy_timeout_) return;
  sqlite3_busy_timeout(db_, static_cast<int>(timeout.count()));
  busy_timeout_ = timeout;
}

void Connection::take_over_checkpoints() {
  sqlite3_wal_hook(
      db_,
      [](void* self, sqlite3*, const char*, int frames) {
        static_cast<Connection*>(self)->wal_frames_ = frames;
        return SQLITE_OK;
      },
      this);
}

bool Connection::checkpoint() {
  int frames = 0;
  int copied = 0;
  const int rc =
      sqlite3_wal_checkpoint_v2(db_, nullptr, SQLITE_CHECKPOINT_PASSIVE, &frames, &copied);
  if (rc != SQLITE_OK) fail(rc, "checkpoint");
  // -1: this connection has not seen the file in WAL mode, so nothing was copied.
  if (frames < 0) throw Error(SQLITE_ERROR, "checkpoint: the connection does not see the WAL");
  // Everything copied: the next commit starts the WAL over from its beginning.
  if (copied != frames) return false;
  wal_frames_ = 0;
  return true;
}

}  // namespace mooring::store::sqlite
