#include "store/store.hpp"

#include "runtime/log.hpp"
#include "runtime/metrics.hpp"
#include "store/failure.hpp"
#include "store/files.hpp"
#include "store/queries.hpp"
#include "store/schema.hpp"
#include "store/sqlite.hpp"

#include <fmt/format.h>
#include <sqlite3.h>

#include <fcntl.h>
#include <pthread.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <utility>

namespace mooring::store {

namespace detail {

// One queued operation. The store thread runs it, then completes it (hands the
// outcome to the caller's executor). Type-erased so the queue can hold any
// operation; move-only because a completion handler is.
class Job {
 public:
  explicit Job(JobKind kind) : kind_(kind) {}
  virtual ~Job() = default;
  Job(const Job&) = delete;
  Job& operator=(const Job&) = delete;

  JobKind kind() const { return kind_; }
  // Store thread. False when the operation failed, so its savepoint is undone.
  virtual bool run() = 0;
  // Replaces the outcome: the transaction the operation ran in did not commit,
  // or the operation was never run.
  virtual void fail(StoreError error) = 0;
  // Posts the outcome to the caller. Called once, after run() or fail().
  virtual void complete() = 0;
  // Where the outcome goes, for handing a batch's outcomes over in one post;
  // null for a job nobody waits for. deliver() hands it over on that
  // executor (instead of complete()).
  virtual const asio::any_io_executor* executor() const { return nullptr; }
  virtual void deliver() {}
  // The failure run() or fail() left, if any.
  virtual std::optional<StoreError> error() const = 0;

 private:
  JobKind kind_;
};

template <typename T, typename Work, typename Handler>
class Operation final : public Job {
 public:
  Operation(JobKind kind, Work work, Handler handler, const asio::any_io_executor& fallback,
            const std::filesystem::path& path)
      : Job(kind),
        path_(path),
        work_(std::move(work)),
        handler_(std::move(handler)),
        // Tracked: the caller's io_context must not run out of work (and return
        // from run()) while its coroutine waits on another thread.
        executor_(asio::prefer(asio::get_associated_executor(handler_, fallback),
                               asio::execution::outstanding_work.tracked)) {}

  bool run() override {
    try {
      outcome_.emplace(work_());
    } catch (const sqlite::Error& e) {
      fail(failure::describe(e, path_));
    } catch (const std::exception& e) {
      fail(StoreError{StoreError::Kind::internal, e.what()});
    }
    return outcome_->has_value();
  }

  std::optional<StoreError> error() const override {
    if (!outcome_ || !outcome_->has_error()) return std::nullopt;
    return outcome_->error();
  }

  void fail(StoreError error) override {
    outcome_.emplace(boost::system::in_place_error, std::move(error));
  }

  void complete() override {
    asio::post(executor_,
               [handler = std::move(handler_), outcome = std::move(*outcome_)]() mutable {
                 std::move(handler)(std::move(outcome));
               });
  }

  const asio::any_io_executor* executor() const override { return &executor_; }
  void deliver() override { std::move(handler_)(std::move(*outcome_)); }

 private:
 private:
  const std::filesystem::path& path_;
  Work work_;
  Handler handler_;
  asio::any_io_executor executor_;
  std::optional<Result<T>> outcome_;
};

// Closes the database when the store is destroyed without close(): nobody
// waits for the outcome.
template <typename Work>
class DetachedClose final : public Job {
 public:
  explicit DetachedClose(Work work) : Job(JobKind::close), work_(std::move(work)) {}
  bool run() override { return work_().has_value(); }
  void fail(StoreError) override {}
  void complete() override {}
  std::optional<StoreError> error() const override { return std::nullopt; }

 private:
  Work work_;
};

}  // namespace detail

using detail::Job;
using detail::JobKind;

namespace {

using Clock = std::chrono::steady_clock;

// Open and close run on the store thread, alone, never inside a batch.
bool runs_alone(JobKind kind) {
  return kind == JobKind::open || kind == JobKind::close;
}

// Runs `f` when the scope ends, however it ends.
template <typename F>
class OnExit {
 public:
  explicit OnExit(F f) : f_(std::move(f)) {}
  ~OnExit() { f_(); }
  OnExit(const OnExit&) = delete;
  OnExit& operator=(const OnExit&) = delete;

 private:
  F f_;
};

StoreError closed_error() {
  return {StoreError::Kind::closed, "the store is closed"};
}

StoreError sync_failed(const std::filesystem::path& path, int error) {
  return {StoreError::Kind::io,
          fmt::format("the disk did not confirm a write to {}-wal (fdatasync: {}), so nothing "
                      "more is confirmed; check the disk and the kernel log (dmesg), then restart "
                      "mooring",
                      path.string(), std::strerror(error))};
}

// Nothing was synced, and nothing lost: a later sync covers the same commits.
StoreError wal_not_opened(const std::filesystem::path& path, int error) {
  return {StoreError::Kind::io,
          fmt::format("could not open {}-wal to sync it ({}); the operation was not confirmed, "
                      "try again",
                      path.string(), std::strerror(error))};
}

std::string describe_size(std::uintmax_t bytes) {
  if (bytes >= (1u << 30)) return fmt::format("{:.1f} GB", static_cast<double>(bytes) / (1u << 30));
  if (bytes >= (1u << 20)) return fmt::format("{:.1f} MB", static_cast<double>(bytes) / (1u << 20));
  return fmt::format("{} KB", (bytes + 1023) / 1024);
}

std::string describe_seconds(Clock::duration d) {
  return fmt::format("{:.1f} s", std::chrono::duration<double>(d).count());
}

// Registered once for the process; observing is a few atomic additions.
struct CommitMetrics {
  runtime::Histogram& seconds;
  runtime::Histogram& operations;
  runtime::Counter& failed;
};

const CommitMetrics& commit_metrics() {
  static const CommitMetrics metrics{
      runtime::metrics().histogram(
          "mooring_store_commit_seconds",
          "Write transactions of the store, from BEGIN to the end of COMMIT (the fsync included).",
          runtime::latency_buckets()),
      runtime::metrics().histogram(
          "mooring_store_batch_operations",
          "Operations per committed write transaction (group commit; reads queued with the "
          "writes included).",
          {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024}),
      runtime::metrics().counter(
          "mooring_store_failed_transactions_total",
          "Write transactions that could not commit (a full disk, an I/O error): alert on any.")};
  return metrics;
}

}  // namespace

Store::Store(Private, asio::any_io_executor executor, std::filesystem::path path,
             StoreOptions options)
    : executor_(std::move(executor)),
      path_(std::move(path)),
      options_(options),
      alive_(std::make_shared<Store*>(this)),
      limiter_(runtime::LogLimiter::Options{.window = options.log_window}),
      thread_([this] { run(); }) {
  health_.since = std::chrono::system_clock::now();
}

Store::~Store() {
  if (!thread_.joinable()) return;
  {
    std::lock_guard lock(mutex_);
    // No drain will run (one posted from now on finds the store gone): the
    // store thread runs what is still queued.
    alive_.reset();
    orphaned_ = true;
    if (!closing_) {
      closing_ = true;
      auto work = [this] { return close_database(); };
      queue_.push_back(std::make_unique<detail::DetachedClose<decltype(work)>>(std::move(work)));
    }
  }
  queued_.notify_one();
  thread_.join();
}

template <typename T, typename Work>
awaitable<Result<T>> Store::submit(JobKind kind, Work work) {
  auto initiate = [this](auto handler, JobKind kind, Work work) {
    using Handler = decltype(handler);
    enqueue(std::make_unique<detail::Operation<T, Work, Handler>>(
        kind, std::move(work), std::move(handler), executor_, path_));
  };
  return asio::async_initiate<const asio::use_awaitable_t<>&, void(Result<T>)>(
      std::move(initiate), asio::use_awaitable, kind, std::move(work));
}

awaitable<Result<std::unique_ptr<Store>>> Store::open(asio::any_io_executor executor,
                                                      std::string data_dir, StoreOptions options) {
  auto path = std::filesystem::path(std::move(data_dir)) / "mooring.db";
  auto store = std::make_unique<Store>(Private{}, executor, std::move(path), options);
  auto opened =
      co_await store->submit<void>(JobKind::open, [s = store.get()] { return s->open_database(); });
  if (!opened) {
    co_await store->close();
    co_return opened.error();
  }
  co_return std::move(store);
}

void Store::enqueue(std::unique_ptr<Job> job) {
  std::optional<StoreError> refused;
  {
    std::lock_guard lock(mutex_);
    if (closing_) {
      refused = closed_error();
    } else if (job->kind() != JobKind::close &&
               queue_.size() + unsynced_.size() + syncing_jobs_ >= options_.max_queued) {
      // Outcomes waiting for a sync count: a disk slower than the traffic is
      // reported there too.
      refused = StoreError{StoreError::Kind::overloaded,
                           fmt::format("{} operations are waiting for the disk; try again later",
                                       queue_.size() + unsynced_.size() + syncing_jobs_)};
    } else {
      // Nothing may join the queue behind a close: close() promises that
      // everything before it runs, and everything after it fails.
      const auto kind = job->kind();
      if (kind == JobKind::close) closing_ = true;
      queue_.push_back(std::move(job));
      if (options_.worker == StoreOptions::Worker::caller && kind != JobKind::open &&
          kind != JobKind::close) {
        // One drain for whatever is queued until it runs: a batch per turn
        // of the callers' event loop.
        if (!drain_posted_) post_drain();
        return;
      }
    }
  }
  if (refused) {
    job->fail(std::move(*refused));
    job->complete();
    return;
  }
  queued_.notify_one();
}

awaitable<Result<void>> Store::close() {
  auto closed = co_await submit<void>(JobKind::close, [this] { return close_database(); });
  // Only the close that ran may join: the store thread has posted its outcome
  // as its last act and is returning, so the join is brief.
  const bool refused = !closed && closed.error().kind == StoreError::Kind::closed;
  if (!refused && thread_.joinable()) thread_.join();
  co_return closed;
}

StoreStats Store::stats() const {
  return StoreStats{commits_.load(),     writes_.load(),
                    reads_.load(),       failed_batches_.load(),
                    checkpoints_.load(), failed_checkpoints_.load(),
                    checkpoints_alongside_.load(), probes_.load(),
                    checkpoints_alongside_busy_.load()};
}

Health Store::health() const {
  std::lock_guard lock(health_mutex_);
  return health_;
}

void Store::watch_health(asio::any_io_executor executor, HealthObserver observer) {
  std::lock_guard lock(health_mutex_);
  health_watch_ = std::make_shared<HealthWatch>(HealthWatch{std::move(executor), std::move(observer)});
}

void Store::set_health(Health next) {
  std::lock_guard lock(health_mutex_);
  const bool changed = next.state != health_.state || next.last_error != health_.last_error;
  health_ = std::move(next);
  if (!changed || !health_watch_) return;
  // Untracked: a watch must not keep the owner's io_context running. The weak
  // reference ends the calls once the store (and its watch) is gone.
  asio::post(health_watch_->executor,
             [watch = std::weak_ptr<HealthWatch>(health_watch_), health = health_] {
               if (auto alive = watch.lock()) alive->observer(health);
             });
}

void Store::note_fault(const StoreError& error, bool operation, bool lasting) {
  const auto now = Clock::now();
  limiter_.log(spdlog::level::err, error.message, fmt::format("store: {}", error.message), now);
  next_log_flush_ = limiter_.flush(now);

  Health next = health();
  if (operation) ++next.failures;
  const auto state = error.kind == StoreError::Kind::corrupt || lasting ? Health::State::failed
                                                                       : Health::State::degraded;
  if (next.state == Health::State::failed) {
    // Damage stays until a restart on a sound file; later errors only update the text.
  } else if (next.state != state) {
    next.state = state;
    next.since = std::chrono::system_clock::now();
    // Probes can end a degraded state, never a failed one.
    if (state == Health::State::degraded) {
      next_probe_ = now + options_.probe_interval;
    } else {
      next_probe_.reset();
    }
  }
  next.last_error = error.message;
  set_health(std::move(next));
}

void Store::note_write_succeeded() {
  Health next = health();
  if (next.state != Health::State::degraded) return;
  const auto now = Clock::now();
  limiter_.settle_all(now);
  next_log_flush_.reset();
  const auto lasted = std::chrono::system_clock::now() - next.since;
  log::info("store: writes succeed again after {} failed operation(s) over {}; the store is ok",
            next.failures, describe_seconds(lasted));
  next.state = Health::State::ok;
  next.since = std::chrono::system_clock::now();
  next.failures = 0;
  next_probe_.reset();
  set_health(std::move(next));
}

sqlite::Connection& Store::db() {
  // Only operations submitted after a successful open reach here; a broken
  // invariant, turned into an error value by the job that ran it.
  if (!db_) throw std::logic_error("the database is not open");
  return *db_;
}

queries::Remembered& Store::remembered() {
  if (!remembered_) throw std::logic_error("the database is not open");
  return *remembered_;
}

namespace {

// The device and inode of the file at `path` (none, errno set, when it cannot
// be looked at).
std::optional<std::pair<std::uint64_t, std::uint64_t>> file_identity(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return std::nullopt;
  return std::pair{static_cast<std::uint64_t>(st.st_dev), static_cast<std::uint64_t>(st.st_ino)};
}

// `text` as one word of a POSIX shell.
std::string shell_quoted(const std::string& text) {
  std::string quoted = "'";
  for (const char c : text) quoted += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return quoted + "'";
}

// The commands that put back at `path` (and its -wal) copies of the files
// this process holds open as `db` and `wal`, or nothing when `db` is not
// open. Each copy is moved into place: the file at the path may be the very
// one held open (a WAL left where it was), which cp cannot copy onto itself.
std::string copy_back_commands(const std::string& relative_path,
                               const std::pair<std::uint64_t, std::uint64_t>& db,
                               const std::optional<std::pair<std::uint64_t, std::uint64_t>>& wal) {
  std::error_code failed;
  const auto absolute = std::filesystem::absolute(relative_path, failed);
  const std::string path = failed ? relative_path : absolute.string();
  std::string db_fd;
  std::string wal_fd;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator("/proc/self/fd", ec)) {
    const auto id = file_identity(entry.path().string());
    if (!id) continue;
    const auto name = entry.path().filename().string();
    if (*id == db && db_fd.empty()) db_fd = name;
    if (id == wal && wal_fd.empty()) wal_fd = name;
  }
  if (db_fd.empty()) return {};
  const auto pid = ::getpid();
  const auto put_back = [pid](const std::string& fd, const std::string& to) {
    return fmt::format("cp /proc/{}/fd/{} {} && mv {} {}", pid, fd, shell_quoted(to + ".saved"),
                       shell_quoted(to + ".saved"), shell_quoted(to));
  };
  std::string commands =
      fmt::format("mkdir -p -m 700 {} && {}",
                  shell_quoted(std::filesystem::path(path).parent_path().string()),
                  put_back(db_fd, path));
  if (!wal_fd.empty()) commands += " && " + put_back(wal_fd, path + "-wal");
  return commands;
}

}  // namespace

Result<void> Store::open_database() {
  auto opened = schema::open_database(
      path_, schema::OpenOptions{.busy_timeout = options_.busy_timeout,
                                 .integrity_check_timeout = options_.integrity_check_timeout,
                                 .now_ms = queries::now_ms(),
                                 // Synced by the store itself, after the commit (see
                                 // StoreOptions::worker).
                                 .synchronous_full = options_.synchronous_full && !syncs_itself()});
  if (!opened) return opened.error();
  lock_ = std::move(opened->lock);
  db_ = std::move(opened->db);
  remembered_ = std::make_unique<queries::Remembered>();
  db_->take_over_checkpoints();
  db_file_ = file_identity(path_.string());
  wal_file_ = file_identity(path_.string() + "-wal");
  if (db_file_) next_file_check_ = Clock::now() + options_.file_check_interval;
  // Not when the store syncs its commits itself: their outcomes wait for the
  // store thread's next sync, so a checkpoint there holds them back wherever
  // it copies.
  if (options_.worker == StoreOptions::Worker::caller && !syncs_itself()) {
    try {
      checkpointer_ = std::make_unique<sqlite::Connection>(
          path_.string(), sqlite::Connection::Mode::open_existing);
      // As db_: the checkpoint syncs the WAL before it copies and the
      // database after.
      checkpointer_->exec("PRAGMA synchronous = NORMAL");
    } catch (const sqlite::Error& e) {
      checkpointer_.reset();
      log::warn("store: a second connection to {} could not be opened ({}), so each checkpoint "
                "holds back the writes while it runs",
                path_.string(), failure::describe(e, path_).message);
    }
  }
  const auto& check = opened->check;
  if (opened->created) {
    log::info("store: created {}", path_.string());
  } else if (check.completed) {
    log::info("store: opened {} ({}; quick_check passed in {} ms)", path_.string(),
              describe_size(check.bytes), check.took.count());
  } else {
    log::warn("store: opened {} ({}); quick_check was stopped after {} ms before it finished, so "
              "damage in the rest of the file would show only when it is read",
              path_.string(), describe_size(check.bytes), check.took.count());
  }
  return {};
}

Result<void> Store::close_database() {
  // Closed first: SQLite checkpoints at the close of the last connection only.
  checkpointer_.reset();
  if (!db_) return {};
  if (wal_failed_) {
    if (file_moved_) {
      // The disk is sound, and the WAL at the path may still be this file's:
      // emptied into the file held open, so that the next start does not lay
      // its pages over whatever is at the path now.
      try {
        db_->exec("PRAGMA wal_checkpoint(TRUNCATE)");
      } catch (const sqlite::Error&) {
        // What is at the path is the operator's; nothing more to do here.
      }
    } else {
      // Left as it is: the next start recovers from the WAL what did reach
      // the disk. SQLite's own checkpoint at close would copy what may not have.
      sqlite3_db_config(db_->handle(), SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1, nullptr);
    }
    if (!held_outcomes_.empty())
      log::error("store: {} message(s) marked failed could not be written; they will be "
                 "answered again after the next start",
                 held_outcomes_.size());
    limiter_.settle_all();
    db_.reset();
    close_wal_fd();
    lock_ = {};
    if (file_moved_)
      return StoreError{StoreError::Kind::io,
                        fmt::format("the file mooring held open as {} (deleted, moved or replaced "
                                    "while it ran) is closed: what it held is gone but for the "
                                    "copies put in place before",
                                    path_.string())};
    std::lock_guard lock(mutex_);
    return *wal_unsafe_;
  }
  if (!held_outcomes_.empty()) {
    try {
      db_->prepare("BEGIN IMMEDIATE").run();
      const bool held_written = write_held_outcomes();
      db_->commit();
      // The checkpoint below syncs it.
      if (held_written) held_outcomes_.clear();
    } catch (const sqlite::Error&) {
      try {
        if (db_->in_transaction()) db_->exec("ROLLBACK");
      } catch (const sqlite::Error&) {
        // SQLite has rolled back by itself.
      }
    }
    if (!held_outcomes_.empty())
      log::error("store: {} message(s) marked failed could not be written ({}); they will be "
                 "answered again after the next start",
                 held_outcomes_.size(), health().last_error);
  }
  limiter_.settle_all();
  Result<void> outcome;
  try {
    // TRUNCATE leaves the main file complete and the WAL empty, so a copy of
    // mooring.db alone is a full backup once the store has closed.
    db_->exec("PRAGMA wal_checkpoint(TRUNCATE)");
  } catch (const sqlite::Error& e) {
    outcome = StoreError{StoreError::Kind::io,
                         fmt::format("the checkpoint at close failed (the data is safe in the "
                                     "WAL and is recovered on the next open): {}",
                                     failure::describe(e, path_).message)};
  }
  db_.reset();
  close_wal_fd();
  lock_ = {};
  return outcome;
}

std::optional<Clock::time_point> Store::next_maintenance() const {
  std::optional<Clock::time_point> due;
  for (const auto& when : {next_probe_, checkpoint_retry_, next_log_flush_, next_file_check_})
    if (when && (!due || *when < *due)) due = when;
  return due;
}

void Store::maintain() {
  if (!db_) return;
  note_sync_outcome();
  const auto now = Clock::now();
  if (next_probe_ && now >= *next_probe_) probe();
  if (checkpoint_retry_ && now >= *checkpoint_retry_) checkpoint();
  if (next_log_flush_ && now >= *next_log_flush_) next_log_flush_ = limiter_.flush(now);
  if (next_file_check_ && now >= *next_file_check_) check_database_file();
}

void Store::check_database_file() {
  next_file_check_ = Clock::now() + options_.file_check_interval;
  if (wal_failed_) {
    next_file_check_.reset();  // nothing is stored any more
    return;
  }
  errno = 0;
  const auto now_there = file_identity(path_.string());
  if (!now_there && errno != ENOENT) return;  // not known: looked at again later
  if (now_there == db_file_) {
    check_wal_file();
    return;
  }
  next_file_check_.reset();
  file_moved_ = true;
  const auto commands = copy_back_commands(path_.string(), *db_file_, wal_file_);
  const bool replaced = now_there.has_value();
  lose_trust_in_wal(StoreError{
      StoreError::Kind::io,
      fmt::format(
          "{} was {} while mooring ran, and what mooring stored in it now would be lost at the "
          "next start: nothing more is stored. {}",
          path_.string(), replaced ? "replaced by another file" : "deleted or moved",
          commands.empty()
              ? "Put the file back where it was, then restart mooring"
              : fmt::format("What is stored is still in the files mooring holds open: to keep "
                            "it{}, put copies of them in place before mooring stops (as its user, "
                            "on its host: {}), then restart it",
                            replaced ? " instead of the file there now" : "", commands))});
}

// The WAL alone deleted (taken for a temporary file) or replaced: SQLite
// goes on writing to the file it holds open, which the next start would not
// see. What it holds is copied into mooring.db at once (still the store's),
// so that nothing stored is lost whatever happens to the process after; then
// nothing more is stored until a restart starts a new WAL.
void Store::check_wal_file() {
  const auto wal_path = path_.string() + "-wal";
  errno = 0;
  const auto now_there = file_identity(wal_path);
  if (!now_there && errno != ENOENT) return;
  if (!wal_file_) {
    wal_file_ = now_there;  // made after the open
    return;
  }
  if (now_there == wal_file_) return;
  next_file_check_.reset();
  const auto gone = now_there ? "replaced by another file" : "deleted or moved";
  std::string copy_failure;
  try {
    if (db().checkpoint()) {
      lose_trust_in_wal(StoreError{
          StoreError::Kind::io,
          fmt::format("{} was {} while mooring ran. Everything stored up to then was copied "
                      "into {}, so nothing is lost, but SQLite writes only to the WAL it "
                      "opened, so nothing more is stored: restart mooring",
                      wal_path, gone, path_.string())});
      return;
    }
    copy_failure = "a reader kept part of it";
  } catch (const sqlite::Error& e) {
    copy_failure = failure::describe(e, path_).message;
  }
  const auto commands = copy_back_commands(path_.string(), *db_file_, wal_file_);
  lose_trust_in_wal(StoreError{
      StoreError::Kind::io,
      fmt::format("{} was {} while mooring ran, and copying what it holds into {} failed ({}): "
                  "nothing more is stored. {}",
                  wal_path, gone, path_.string(), copy_failure,
                  commands.empty()
                      ? "Restart mooring"
                      : fmt::format("To keep what is stored, put copies of the files mooring "
                                    "holds open in place before it stops (as its user, on its "
                                    "host: {}), then restart it",
                                    commands))});
}

bool Store::thread_takes_front() const {
  if (queue_.empty()) return false;
  if (options_.worker == StoreOptions::Worker::store_thread || orphaned_) return true;
  // Worker::caller: reads and writes are the drains'.
  const auto kind = queue_.front()->kind();
  return runs_alone(kind);
}

void Store::run() {
  // Named so `top -H` and a debugger show which thread waits on the disk.
  pthread_setname_np(pthread_self(), "mooring-store");
  const bool on_caller = options_.worker == StoreOptions::Worker::caller;
  for (;;) {
    std::vector<std::unique_ptr<Job>> batch;
    bool checkpoint_now = false;
    bool maintain_now = false;
    {
      std::unique_lock lock(mutex_);
      // Outcomes waiting for a sync come first (the sync needs no database,
      // and the batches go on meanwhile), but not twice in a row while
      // something else is due: commits that never pause would otherwise
      // keep checkpoints and upkeep waiting for ever.
      bool just_synced = false;
      for (;;) {
        if (sync_wanted_ && !just_synced) {
          sync_wanted_ = false;
          auto jobs = std::move(unsynced_);
          unsynced_.clear();
          syncing_jobs_ = jobs.size();
          const auto covers = unsynced_commit_;
          lock.unlock();
          sync_and_complete(std::move(jobs), covers);
          lock.lock();
          syncing_jobs_ = 0;
          just_synced = true;
          continue;
        }
        just_synced = false;
        if (thread_takes_front()) break;
        if (checkpoint_wanted_) {
          checkpoint_wanted_ = false;
          checkpoint_now = true;
          break;
        }
        if (maintenance_due_ && Clock::now() >= *maintenance_due_) {
          maintenance_due_.reset();
          maintain_now = true;
          break;
        }
        if (sync_wanted_) continue;
        // Upkeep (probes, checkpoint retries, log summaries) runs when nothing waits.
        if (!maintenance_due_) {
          queued_.wait(lock);
        } else if (queued_.wait_until(lock, *maintenance_due_) == std::cv_status::timeout) {
          maintenance_due_.reset();
          maintain_now = true;
          break;
        }
      }
      if (checkpoint_now && on_caller) {
        // Most of a checkpoint's time at synchronous = NORMAL is the fsync of
        // the WAL, which no commit has synced. Done first, while batches go
        // on, it leaves the checkpoint itself little to sync.
        lock.unlock();
        sync_wal();
        checkpoint_alongside();
        lock.lock();
      }
      if (on_caller) {
        // The database is the drains' or this thread's in turn: wait for the
        // drain running now, if any; later drains wait for this thread.
        thread_waits_ = true;
        queued_.wait(lock, [this] { return db_user_ != DbUser::drain; });
        thread_waits_ = false;
        db_user_ = DbUser::thread;
      }
      // The store thread may wait for another process's lock; a drain may not.
      if (db_ && on_caller) db_->set_busy_timeout(options_.busy_timeout);
      // Everything queued so far joins one transaction, up to max_batch. Open
      // and close run alone, never inside a batch's transaction.
      while (!checkpoint_now && !maintain_now && thread_takes_front() &&
             batch.size() < options_.max_batch) {
        const auto kind = queue_.front()->kind();
        const bool alone = runs_alone(kind);
        if (alone && !batch.empty()) break;
        batch.push_back(std::move(queue_.front()));
        queue_.pop_front();
        if (alone) break;
      }
    }
    // Gives the database back to the drains (Worker::caller), running one
    // if it waited.
    const auto release = [this, on_caller] {
      if (!on_caller) return;
      std::lock_guard lock(mutex_);
      db_user_ = DbUser::none;
      if (drain_deferred_) {
        drain_deferred_ = false;
        post_drain();
      }
    };
    if (checkpoint_now) {
      checkpoint();
      publish_maintenance();
      release();
      continue;
    }
    if (maintain_now) {
      maintain();
      publish_maintenance();
      release();
      continue;
    }
    const auto kind = batch.front()->kind();
    // A busy store gathers a little more before it commits: when the batch
    // is small and more work came within the previous batch, the thread
    // yields once so that the callers (often on the same core) queue what
    // they have ready. One commit then serves more operations.
    if (kind == JobKind::write && batch.size() < options_.max_batch / 8 && busy_) {
      std::this_thread::yield();
      std::lock_guard lock(mutex_);
      while (thread_takes_front() && batch.size() < options_.max_batch) {
        const auto next = queue_.front()->kind();
        if (runs_alone(next)) break;
        batch.push_back(std::move(queue_.front()));
        queue_.pop_front();
      }
    }
    if (runs_alone(kind)) {
      // What a close must not leave behind: outcomes waiting for a sync
      // (queued by the last drain while this thread waited for it).
      std::vector<std::unique_ptr<Job>> unsynced;
      {
        std::lock_guard lock(mutex_);
        unsynced = std::move(unsynced_);
        unsynced_.clear();
        sync_wanted_ = false;
      }
      if (!unsynced.empty()) sync_and_complete(std::move(unsynced), commit_no_);
      batch.front()->run();
      // An opened store's upkeep (its file's check) begins now, not at its
      // first batch.
      if (kind == JobKind::open) publish_maintenance();
      release();
      batch.front()->complete();
      // The queue is empty behind a close (enqueue refuses newcomers).
      if (kind == JobKind::close) return;
      continue;
    }
    run_batch(batch);
    {
      std::lock_guard lock(mutex_);
      busy_ = !queue_.empty();
    }
    maintain();
    publish_maintenance();
    release();
  }
}

void Store::post_drain() {
  drain_posted_ = true;
  asio::post(executor_, [alive = std::weak_ptr<Store*>(alive_)] {
    if (auto store = alive.lock()) (*store)->drain();
  });
}

void Store::drain() {
  std::vector<std::unique_ptr<Job>> batch;
  {
    std::lock_guard lock(mutex_);
    drain_posted_ = false;
    // A drain running already (the executor must run on one thread; see
    // StoreOptions::worker) posts the next one itself.
    if (db_user_ == DbUser::drain) return;
    if (db_user_ == DbUser::thread || thread_waits_) {
      // A checkpoint (or upkeep) has the database or waits for it: the jobs
      // wait in the queue, the callers' thread does not, and the store
      // thread posts a drain when it is done (none is posted meanwhile).
      drain_deferred_ = true;
      drain_posted_ = true;
      return;
    }
    // A small batch waits one more turn of the event loop, so that the
    // callers ready meanwhile (the next socket reads, the coroutines the last
    // batch resumed) join it: one commit then serves more operations. When
    // work comes one operation at a time (the last batch was one operation),
    // the next drain does not wait: a lone user's every operation would wait
    // for nothing. Every 16th drain waits anyway, to learn whether waiting
    // pays again.
    if (!drain_waited_ && queue_.size() < options_.max_batch / 8 &&
        (more_than_one_ || ++drains_unwaited_ >= 16)) {
      drains_unwaited_ = 0;
      drain_waited_ = true;
      post_drain();
      return;
    }
    drain_waited_ = false;
    more_than_one_ = queue_.size() >= 2;
    while (!queue_.empty() && batch.size() < options_.max_batch) {
      const auto kind = queue_.front()->kind();
      if (runs_alone(kind)) break;
      batch.push_back(std::move(queue_.front()));
      queue_.pop_front();
    }
    if (batch.empty()) return;
    db_user_ = DbUser::drain;
  }
  // Whatever happens to the batch, the database is given back and what is
  // queued behind it goes on.
  const OnExit give_back([this] {
    std::lock_guard lock(mutex_);
    db_user_ = DbUser::none;
    if (thread_waits_) queued_.notify_one();  // a checkpoint or upkeep, before the next drain
    if (queue_.empty()) return;
    const auto kind = queue_.front()->kind();
    if (runs_alone(kind)) {
      queued_.notify_one();  // the store thread's turn
    } else if (!drain_posted_) {
      post_drain();  // more than one batch waited: the next one after what else is ready
    }
  });
  if (db_) db_->set_busy_timeout(std::min(options_.busy_timeout, options_.caller_busy_timeout));
  run_batch(batch);
  publish_maintenance();
}

// After some failures (an I/O error, a full disk while it spills pages)
// SQLite undoes the whole transaction by itself: what ran before is gone, and
// what runs after would commit on its own. The batch then fails as a whole,
// with the error that cost the transaction.
void Store::check_transaction(bool writes, const Job& failed) {
  if (!writes || db_->in_transaction()) return;
  auto error = failed.error().value_or(
      StoreError{StoreError::Kind::io, "the transaction was undone by SQLite"});
  throw TransactionLost{std::move(error)};
}

// The transaction as a whole failed (disk full, I/O error): nothing of it is
// stored, and reads inside it may have seen what was not, so every operation
// of the batch fails.
void Store::fail_batch(std::vector<std::unique_ptr<Job>>& batch, StoreError error) {
  ++failed_batches_;
  commit_metrics().failed.inc();
  if (db_->in_transaction()) {
    try {
      db_->exec("ROLLBACK");
    } catch (const sqlite::Error&) {
      // Nothing more to undo: SQLite has rolled back by itself.
    }
  }
  if (error.kind == StoreError::Kind::internal) error.kind = StoreError::Kind::io;
  error.message += "; nothing of the transaction was stored";
  for (auto& job : batch) job->fail(error);
}

void Store::run_batch(std::vector<std::unique_ptr<Job>>& batch) {
  if (syncs_itself()) note_sync_outcome();
  const bool writes = std::any_of(batch.begin(), batch.end(),
                                  [](const auto& job) { return job->kind() == JobKind::write; });
  bool committed_a_write = false;
  if (!db_) {
    for (auto& job : batch) job->fail(closed_error());
  } else if (wal_failed_) {
    // Nothing more is written, nor read from a database whose WAL the disk
    // may not hold (see StoreOptions::worker).
    std::lock_guard lock(mutex_);
    for (auto& job : batch) job->fail(*wal_unsafe_);
  } else {
    try {
      bool wrote = false;
      const auto began = Clock::now();
      if (writes) db_->prepare("BEGIN IMMEDIATE").run();
      // First without a savepoint per write, the common case: every operation
      // succeeds. A write that fails may have done half of its work, so then
      // the transaction is undone and the batch runs again, each write in a
      // savepoint of its own that its failure alone rolls back.
      for (const auto& job : batch) ++(job->kind() == JobKind::write ? writes_ : reads_);
      bool failed_write = false;
      for (auto& job : batch) {
        const bool write = job->kind() == JobKind::write;
        const bool ran = job->run();
        if (!ran) check_transaction(writes, *job);
        if (!ran && write) {
          failed_write = true;
          break;
        }
        wrote = wrote || write;
      }
      if (failed_write) {
        wrote = false;
        db_->prepare("ROLLBACK").run();
        db_->prepare("BEGIN IMMEDIATE").run();
        for (auto& job : batch) {
          if (job->kind() != JobKind::write) {
            if (!job->run()) check_transaction(writes, *job);
            continue;
          }
          db_->prepare("SAVEPOINT operation").run();
          if (job->run()) {
            wrote = true;
          } else {
            check_transaction(writes, *job);
            db_->prepare("ROLLBACK TO operation").run();
            remembered().forget();  // what it wrote is undone (no rollback hook for this)
          }
          db_->prepare("RELEASE operation").run();
        }
      }
      if (writes) {
        if (wrote) advance_pending_floor();
        const bool held_written = write_held_outcomes();
        db_->commit();
        ++commits_;
        ++commit_no_;
        const auto& metrics = commit_metrics();
        metrics.seconds.observe(std::chrono::duration<double>(Clock::now() - began).count());
        metrics.operations.observe(static_cast<double>(batch.size()));
        // Held until they are on disk: where the store syncs its own commits,
        // that is once a sync has covered this one (note_sync_outcome).
        if (held_written && !held_outcomes_.empty()) {
          if (syncs_itself()) {
            for (auto& [seq, held] : held_outcomes_)
              if (held.written_in == 0) held.written_in = commit_no_;
          } else {
            held_outcomes_.clear();
          }
        }
        committed_a_write = wrote;
      }
    } catch (const sqlite::Error& e) {
      fail_batch(batch, failure::describe(e, path_));
    } catch (const TransactionLost& lost) {
      fail_batch(batch, lost.error);
    }
  }
  // Each operation's final outcome counts once; then a committed write (which
  // proves the disk takes writes) may end a degraded state; when the store
  // syncs commits itself, the sync that follows does.
  for (auto& job : batch)
    if (const auto error = job->error(); error && failure::is_fault(*error))
      note_fault(*error, true);
  if (committed_a_write && !syncs_itself()) note_write_succeeded();
  const bool checkpoint_due =
      committed_a_write && db_ && db_->wal_frames() >= options_.checkpoint_pages;
  if (syncs_itself()) {
    std::lock_guard lock(mutex_);
    // Behind a commit not synced yet, reads wait too: they may have seen it.
    // Queued before a checkpoint is wanted, so that the sync which precedes
    // a checkpoint never covers a commit whose outcomes are not waiting.
    if (writes || commit_no_ > synced_commit_ || wal_failed_) {
      for (auto& job : batch) unsynced_.push_back(std::move(job));
      batch.clear();
      unsynced_commit_ = commit_no_;
      sync_wanted_ = true;
      queued_.notify_one();
    }
  }
  if (checkpoint_due) want_checkpoint();
  complete_together(batch);
}

bool Store::syncs_itself() const {
  return options_.worker == StoreOptions::Worker::caller && options_.synchronous_full;
}

void Store::sync_and_complete(std::vector<std::unique_ptr<Job>> jobs, std::uint64_t covers) {
  // Once a sync has failed, no later one can vouch for anything: none is tried.
  const int error = wal_failed_ ? 0 : sync_wal();
  bool wrote = false;
  if (error != 0 || wal_failed_) {
    // This sync, or one before it: nothing it was for can be vouched for.
    // An operation that had failed already keeps its own error.
    std::lock_guard lock(mutex_);
    const auto failed = wal_unsafe_ ? *wal_unsafe_ : wal_not_opened(path_, error);
    for (auto& job : jobs)
      if (!job->error()) job->fail(failed);
    if (!wal_unsafe_) {
      // The WAL could not even be opened: nothing was lost, and a later sync
      // covers these commits too. Degraded, not failed.
      sync_fault_ = failed;
      maintenance_due_ = Clock::now();
    }
  } else {
    for (const auto& job : jobs) wrote = wrote || (job->kind() == JobKind::write && !job->error());
    std::lock_guard lock(mutex_);
    synced_commit_ = std::max(synced_commit_, covers);
    // Noted by the next batch or upkeep: a degraded store recovers.
    if (wrote) sync_succeeded_ = true;
  }
  complete_together(jobs);
}

void Store::note_sync_outcome() {
  std::optional<StoreError> fault;
  bool succeeded = false;
  std::uint64_t synced = 0;
  {
    std::lock_guard lock(mutex_);
    fault = std::exchange(sync_fault_, std::nullopt);
    succeeded = std::exchange(sync_succeeded_, false);
    synced = synced_commit_;
  }
  std::erase_if(held_outcomes_, [synced](const auto& entry) {
    return entry.second.written_in != 0 && entry.second.written_in <= synced;
  });
  if (succeeded) note_write_succeeded();
  if (fault) note_fault(*fault, true, wal_failed_);
}

// The outcomes go back with one post per caller's executor (not one per
// operation), in the batch's order.
void Store::complete_together(std::vector<std::unique_ptr<Job>>& batch) {
  using Jobs = std::vector<std::unique_ptr<Job>>;
  auto group = std::make_shared<Jobs>();
  const auto post_group = [&group] {
    if (group->empty()) return;
    const auto executor = *group->front()->executor();
    asio::post(executor, [jobs = std::move(group)] {
      for (auto& job : *jobs) job->deliver();
    });
    group = std::make_shared<Jobs>();
  };
  for (auto& job : batch) {
    const auto* executor = job->executor();
    if (executor == nullptr) {
      job->complete();
      continue;
    }
    if (!group->empty() && *group->front()->executor() != *executor) post_group();
    group->push_back(std::move(job));
  }
  post_group();
}

// In the batch's transaction, at most every pending_floor_interval, or at
// every batch while it is behind (it looked at all its rows without reaching
// a pending message: more settle each second than it looks at, under a load
// of some 8,000 round trips a second). Its own failure (in its savepoint)
// costs the batch nothing: the floor stays lower, and a start reads a little
// more.
void Store::advance_pending_floor() {
  const auto now = Clock::now();
  if (now < pending_floor_due_) return;
  pending_floor_due_ = now + options_.pending_floor_interval;
  db_->prepare("SAVEPOINT pending_floor").run();
  try {
    const auto rows = queries::advance_pending_floor(*db_, options_.pending_floor_rows);
    if (rows >= options_.pending_floor_rows) pending_floor_due_ = now;
  } catch (const sqlite::Error& e) {
    db_->prepare("ROLLBACK TO pending_floor").run();
    log::debug("store: the floor of pending messages was not moved: {}", e.what());
  }
  db_->prepare("RELEASE pending_floor").run();
}

bool Store::write_held_outcomes() {
  if (held_outcomes_.empty()) return true;
  // In a savepoint of its own: a refusal keeps the outcomes held and leaves
  // the other operations of the transaction to commit without them.
  try {
    db_->exec("SAVEPOINT held_outcomes");
    const auto now = queries::now_ms();
    for (auto it = held_outcomes_.begin(); it != held_outcomes_.end();) {
      if (it->second.written_in != 0) {  // written; waits for its sync
        ++it;
        continue;
      }
      auto marked =
          queries::mark_failed(*db_, remembered(), now, it->second.user_id, it->first,
                              it->second.reason);
      // A message that is gone or not the user's is nothing to hold on to.
      if (!marked && !failure::is_fault(marked.error())) {
        it = held_outcomes_.erase(it);
      } else {
        ++it;
      }
    }
    db_->exec("RELEASE held_outcomes");
    return true;
  } catch (const sqlite::Error&) {
    // SQLite undid the whole transaction by itself: the caller's fails with this.
    if (!db_->in_transaction()) throw;
    try {
      db_->exec("ROLLBACK TO held_outcomes");
      db_->exec("RELEASE held_outcomes");
    } catch (const sqlite::Error&) {
      // The whole transaction is gone; the caller's COMMIT says so.
    }
    return false;
  }
}

void Store::probe() {
  if (wal_failed_) {
    next_probe_.reset();  // failed until a restart: nothing to find out
    return;
  }
  ++probes_;
  next_probe_ = Clock::now() + options_.probe_interval;
  try {
    db_->prepare("BEGIN IMMEDIATE").run();
    schema::write_probe(*db_, queries::now_ms());
    const bool held_written = write_held_outcomes();
    db_->commit();
    // Where the store syncs its commits, a probe that was not synced proves nothing.
    if (syncs_itself()) {
      if (const int error = sync_wal(); error != 0) {
        // A failed sync is noted by upkeep (sync_fault_); a WAL that could
        // not be opened, here.
        if (!wal_failed_) note_fault(wal_not_opened(path_, error), false);
        return;
      }
    }
    if (held_written) held_outcomes_.clear();
    note_write_succeeded();
  } catch (const sqlite::Error& e) {
    if (db_->in_transaction()) {
      try {
        db_->exec("ROLLBACK");
      } catch (const sqlite::Error&) {
        // SQLite has rolled back by itself.
      }
    }
    note_fault(failure::describe(e, path_), false);
  }
}

int Store::sync_wal() {
  if (wal_fd_ < 0) {
    // Opened once: SQLite keeps the WAL (it truncates it, never removes it)
    // while mooring holds the database open.
    const auto wal = path_.string() + "-wal";
    wal_fd_ = ::open(wal.c_str(), O_RDONLY | O_CLOEXEC);
    // Nothing was synced, and nothing lost: not a failure that lasts.
    if (wal_fd_ < 0) return errno;
  }
  const int error = options_.sync_file ? options_.sync_file(wal_fd_)
                                      : (::fdatasync(wal_fd_) == 0 ? 0 : errno);
  if (error != 0) lose_trust_in_wal(sync_failed(path_, error));
  return error;
}

void Store::close_wal_fd() {
  if (wal_fd_ >= 0) ::close(wal_fd_);
  wal_fd_ = -1;
}

void Store::lose_trust_in_wal(StoreError error) {
  std::lock_guard lock(mutex_);
  if (wal_unsafe_) return;
  wal_unsafe_ = std::move(error);
  wal_failed_ = true;
  sync_fault_ = wal_unsafe_;
  // Noted by upkeep now, not at the next batch, which may never come.
  maintenance_due_ = Clock::now();
}

void Store::want_checkpoint() {
  if (options_.worker == StoreOptions::Worker::store_thread) {
    checkpoint();
    return;
  }
  std::lock_guard lock(mutex_);
  if (checkpoint_wanted_) return;
  checkpoint_wanted_ = true;
  queued_.notify_one();
}

void Store::checkpoint() {
  // Pages the disk may not hold are never copied into the database.
  if (wal_failed_) {
    checkpoint_retry_.reset();
    return;
  }
  try {
    db().checkpoint();
    checkpoint_retry_.reset();
    if (checkpoint_failures_ > 0) {
      limiter_.settle("checkpoint");
      log::info("store: the WAL checkpoint of {} succeeds again after {} failed attempt(s)",
                path_.string(), checkpoint_failures_);
      checkpoint_failures_ = 0;
    }
    ++checkpoints_;
    if (alongside_failure_ && !std::exchange(alongside_failure_told_, true))
      log::warn("store: the copy of the WAL beside the writes failed ({}) where the checkpoint "
                "after it succeeded, so checkpoints hold the writes back while they copy until "
                "it succeeds again",
                *alongside_failure_);
  } catch (const sqlite::Error& e) {
    ++failed_checkpoints_;
    ++checkpoint_failures_;
    alongside_failure_.reset();  // failed here too: this failure is the one told
    if (checkpoint_unconfirmed(e)) {
      checkpoint_retry_.reset();
      return;
    }
    const auto now = Clock::now();
    checkpoint_retry_ = now + options_.probe_interval;
    limiter_.log(spdlog::level::warn, "checkpoint",
                 fmt::format("store: the WAL checkpoint failed: {}; the data is safe in the WAL, "
                             "which grows until a checkpoint succeeds (retried every {} ms)",
                             failure::describe(e, path_).message, options_.probe_interval.count()),
                 now);
    next_log_flush_ = limiter_.flush(now);
  }
}

void Store::checkpoint_alongside() {
  if (!checkpointer_ || wal_failed_) return;
  try {
    checkpointer_->checkpoint();
    ++checkpoints_alongside_;
    alongside_failure_.reset();
    alongside_failure_told_ = false;
  } catch (const sqlite::Error& e) {
    // A commit of our own that starts the WAL over meanwhile makes the copy
    // busy: no fault, the checkpoint next copies it all (and reports a busy
    // database of its own, should another process hold it).
    if ((e.code() & 0xff) == SQLITE_BUSY) {
      ++checkpoints_alongside_busy_;
      return;
    }
    // checkpoint() on db_ comes next, tries again and reports what fails;
    // after a failed fsync it does not try (a second fsync may succeed
    // without the pages of the first having reached the disk).
    if (!checkpoint_unconfirmed(e)) alongside_failure_ = failure::describe(e, path_).message;
  }
}

bool Store::checkpoint_unconfirmed(const sqlite::Error& e) {
  if (e.code() != SQLITE_IOERR_FSYNC && e.code() != SQLITE_IOERR_DIR_FSYNC) return false;
  // The WAL or the database file was not synced: as with a failed sync of
  // the WAL, nothing after it can be vouched for.
  lose_trust_in_wal(StoreError{
      StoreError::Kind::io,
      fmt::format("the disk did not confirm a checkpoint of {} ({}), so nothing more is "
                  "confirmed; check the disk and the kernel log (dmesg), then restart mooring",
                  path_.string(), failure::describe(e, path_).message)});
  return true;
}

void Store::publish_maintenance() {
  auto due = next_maintenance();
  std::lock_guard lock(mutex_);
  // A failed sync is noted by upkeep at once.
  if (sync_fault_) due = Clock::now();
  const bool sooner = due && (!maintenance_due_ || *due < *maintenance_due_);
  maintenance_due_ = due;
  // The store thread waits for the old time, or for nothing.
  if (sooner && options_.worker == StoreOptions::Worker::caller) queued_.notify_one();
}

// Operations. Each captures its arguments by value: they run later, on the
// store thread, after the caller's frame may have moved on.

awaitable<Result<Appended>> Store::append_user_message(std::string user_id, std::string content,
                                                       std::vector<std::string> images,
                                                       std::optional<std::string> client_id) {
  return append(std::move(user_id), std::move(content), std::move(images), std::move(client_id),
                MessageStatus::pending);
}

awaitable<Result<Appended>> Store::append_context_message(std::string user_id,
                                                          std::string content,
                                                          std::vector<std::string> images,
                                                          std::optional<std::string> client_id) {
  return append(std::move(user_id), std::move(content), std::move(images), std::move(client_id),
                MessageStatus::answered);
}

awaitable<Result<Appended>> Store::append(std::string user_id, std::string content,
                                          std::vector<std::string> images,
                                          std::optional<std::string> client_id,
                                          MessageStatus status) {
  return submit<Appended>(JobKind::write,
                          [this, user_id = std::move(user_id), content = std::move(content),
                           images = std::move(images), client_id = std::move(client_id), status] {
                            return queries::append_user_message(
                                db(), remembered(), queries::now_ms(), user_id, content, images,
                                client_id, status);
                          });
}

awaitable<Result<std::vector<Session>>> Store::undelivered_sessions(std::string prefix,
                                                                    std::size_t limit) {
  return submit<std::vector<Session>>(JobKind::read, [this, prefix = std::move(prefix), limit] {
    return queries::undelivered_sessions(db(), prefix, limit);
  });
}

awaitable<Result<Seq>> Store::store_reply(std::string user_id, Seq reply_to, std::string content,
                                          MessageStatus status) {
  return submit<Seq>(JobKind::write, [this, user_id = std::move(user_id), reply_to,
                                      content = std::move(content), status] {
    return queries::store_reply(db(), remembered(), queries::now_ms(), user_id, reply_to, content,
                                status);
  });
}

awaitable<Result<MessageStatus>> Store::mark_failed(std::string user_id, Seq seq,
                                                   std::string reason) {
  return submit<MessageStatus>(
      JobKind::write,
      [this, user_id = std::move(user_id), seq, reason = std::move(reason)]() -> Result<MessageStatus> {
        // Held from now until a commit writes it: the transaction this runs in
        // may yet fail, and then the outcome is written by a later one.
        const bool room = held_outcomes_.size() < options_.max_held_outcomes;
        if (room) held_outcomes_.insert_or_assign(seq, HeldOutcome{user_id, reason});
        auto marked =
            queries::mark_failed(db(), remembered(), queries::now_ms(), user_id, seq, reason);
        if (!marked && !failure::is_fault(marked.error())) held_outcomes_.erase(seq);
        return marked;
      });
}

awaitable<Result<std::vector<Message>>> Store::replies_after(std::string user_id, Seq after_seq,
                                                             std::size_t limit,
                                                             std::size_t max_bytes) {
  return submit<std::vector<Message>>(
      JobKind::read, [this, user_id = std::move(user_id), after_seq, limit, max_bytes] {
        return queries::replies_after(db(), user_id, after_seq, limit, max_bytes);
      });
}

awaitable<Result<Seq>> Store::advance_delivered(std::string user_id, Seq seq) {
  return submit<Seq>(JobKind::write, [this, user_id = std::move(user_id), seq] {
    return queries::advance_delivered(db(), user_id, seq);
  });
}

awaitable<Result<void>> Store::advance_delivered(std::vector<std::pair<std::string, Seq>> cursors) {
  return submit<void>(JobKind::write, [this, cursors = std::move(cursors)]() -> Result<void> {
    for (const auto& [user_id, seq] : cursors) queries::raise_delivered(db(), user_id, seq);
    return {};
  });
}

awaitable<Result<std::optional<Session>>> Store::session(std::string user_id) {
  return submit<std::optional<Session>>(JobKind::read, [this, user_id = std::move(user_id)] {
    return queries::session(db(), user_id);
  });
}

awaitable<Result<std::vector<Message>>> Store::pending_messages(std::size_t limit) {
  return submit<std::vector<Message>>(JobKind::read, [this, limit] {
    auto pending = queries::pending_messages(db(), limit);
    // Marked failed in memory while the disk refused it: its user was told.
    if (pending && !held_outcomes_.empty())
      std::erase_if(*pending, [this](const Message& m) { return held_outcomes_.contains(m.seq); });
    return pending;
  });
}

awaitable<Result<std::vector<Session>>> Store::list_sessions(std::size_t limit,
                                                             std::size_t offset) {
  return submit<std::vector<Session>>(
      JobKind::read, [this, limit, offset] { return queries::list_sessions(db(), limit, offset); });
}

awaitable<Result<std::vector<Message>>> Store::messages(std::string user_id, std::size_t limit,
                                                        std::optional<Seq> before_seq,
                                                        std::size_t max_bytes) {
  return submit<std::vector<Message>>(
      JobKind::read, [this, user_id = std::move(user_id), limit, before_seq, max_bytes] {
        return queries::messages(db(), user_id, limit, before_seq, max_bytes);
      });
}

}  // namespace mooring::store
