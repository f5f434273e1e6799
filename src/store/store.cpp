#include "store/store.hpp"

#include "store/queries.hpp"
#include "store/schema.hpp"
#include "store/sqlite.hpp"

#include <fmt/format.h>
#include <sqlite3.h>

#include <pthread.h>

#include <algorithm>

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

 private:
  JobKind kind_;
};

template <typename T, typename Work, typename Handler>
class Operation final : public Job {
 public:
  Operation(JobKind kind, Work work, Handler handler, const asio::any_io_executor& fallback)
      : Job(kind),
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
      fail(from_sqlite(e));
    } catch (const std::exception& e) {
      fail(StoreError{StoreError::Kind::internal, fmt::format("store: {}", e.what())});
    }
    return outcome_->has_value();
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

 private:
  static StoreError from_sqlite(const sqlite::Error& e) {
    using Kind = StoreError::Kind;
    switch (e.primary()) {
      case SQLITE_CORRUPT:
      case SQLITE_NOTADB:
        return {Kind::corrupt, fmt::format("store: the database is damaged: {}", e.what())};
      case SQLITE_FULL:
        return {Kind::io, fmt::format("store: the disk is full: {}", e.what())};
      case SQLITE_IOERR:
      case SQLITE_READONLY:
      case SQLITE_CANTOPEN:
      case SQLITE_PERM:
      case SQLITE_BUSY:
      case SQLITE_LOCKED:
        return {Kind::io, fmt::format("store: {}", e.what())};
      default:
        return {Kind::internal, fmt::format("store: {}", e.what())};
    }
  }

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

 private:
  Work work_;
};

}  // namespace detail

using detail::Job;
using detail::JobKind;

namespace {

StoreError closed_error() {
  return {StoreError::Kind::closed, "store: the store is closed"};
}

}  // namespace

Store::Store(Private, asio::any_io_executor executor, std::filesystem::path path,
             StoreOptions options)
    : executor_(std::move(executor)),
      path_(std::move(path)),
      options_(options),
      thread_([this] { run(); }) {}

Store::~Store() {
  if (!thread_.joinable()) return;
  {
    std::lock_guard lock(mutex_);
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
    enqueue(std::make_unique<detail::Operation<T, Work, Handler>>(kind, std::move(work),
                                                                  std::move(handler), executor_));
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
    } else if (job->kind() != JobKind::close && queue_.size() >= options_.max_queued) {
      refused = StoreError{StoreError::Kind::overloaded,
                           fmt::format("store: {} operations are waiting for the disk; try again "
                                       "later",
                                       queue_.size())};
    } else {
      // Nothing may join the queue behind a close: close() promises that
      // everything before it runs, and everything after it fails.
      if (job->kind() == JobKind::close) closing_ = true;
      queue_.push_back(std::move(job));
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
  return StoreStats{commits_.load(), writes_.load(), reads_.load(), failed_batches_.load()};
}

sqlite::Connection& Store::db() {
  // Only operations submitted after a successful open reach here; a broken
  // invariant, turned into an error value by the job that ran it.
  if (!db_) throw std::logic_error("the database is not open");
  return *db_;
}

Result<void> Store::open_database() {
  auto db = schema::open_database(path_, options_.busy_timeout);
  if (!db) return db.error();
  db_ = std::move(*db);
  return {};
}

Result<void> Store::close_database() {
  if (!db_) return {};
  Result<void> outcome;
  try {
    // TRUNCATE leaves the main file complete and the WAL empty, so a copy of
    // mooring.db alone is a full backup once the store has closed.
    db_->exec("PRAGMA wal_checkpoint(TRUNCATE)");
  } catch (const sqlite::Error& e) {
    outcome = StoreError{StoreError::Kind::io,
                         fmt::format("store: checkpoint of {} failed (the data is safe in the "
                                     "WAL and is recovered on the next open): {}",
                                     path_.string(), e.what())};
  }
  db_.reset();
  return outcome;
}

void Store::run() {
  // Named so `top -H` and a debugger show which thread waits on the disk.
  pthread_setname_np(pthread_self(), "mooring-store");
  for (;;) {
    std::vector<std::unique_ptr<Job>> batch;
    {
      std::unique_lock lock(mutex_);
      queued_.wait(lock, [this] { return !queue_.empty(); });
      // Everything queued so far joins one transaction, up to max_batch. Open
      // and close run alone, never inside a batch's transaction.
      while (!queue_.empty() && batch.size() < options_.max_batch) {
        const auto kind = queue_.front()->kind();
        const bool alone = kind == JobKind::open || kind == JobKind::close;
        if (alone && !batch.empty()) break;
        batch.push_back(std::move(queue_.front()));
        queue_.pop_front();
        if (alone) break;
      }
    }
    const auto kind = batch.front()->kind();
    if (kind == JobKind::open || kind == JobKind::close) {
      batch.front()->run();
      batch.front()->complete();
      // The queue is empty behind a close (enqueue refuses newcomers).
      if (kind == JobKind::close) return;
      continue;
    }
    run_batch(batch);
  }
}

void Store::run_batch(std::vector<std::unique_ptr<Job>>& batch) {
  const bool writes = std::any_of(batch.begin(), batch.end(),
                                  [](const auto& job) { return job->kind() == JobKind::write; });
  if (!db_) {
    for (auto& job : batch) job->fail(closed_error());
  } else {
    try {
      if (writes) db_->exec("BEGIN IMMEDIATE");
      for (auto& job : batch) {
        if (job->kind() == JobKind::write) {
          ++writes_;
          db_->exec("SAVEPOINT operation");
          if (!job->run()) db_->exec("ROLLBACK TO operation");
          db_->exec("RELEASE operation");
        } else {
          ++reads_;
          job->run();
        }
      }
      if (writes) {
        db_->exec("COMMIT");
        ++commits_;
      }
    } catch (const sqlite::Error& e) {
      // The transaction as a whole failed (disk full, I/O error): nothing of
      // it is stored, and reads inside it may have seen what was not, so every
      // operation of the batch fails.
      ++failed_batches_;
      if (db_->in_transaction()) {
        try {
          db_->exec("ROLLBACK");
        } catch (const sqlite::Error&) {
          // Nothing more to undo: SQLite has rolled back by itself.
        }
      }
      const StoreError error{StoreError::Kind::io,
                             fmt::format("store: a transaction on {} failed, nothing of it was "
                                         "stored: {}",
                                         path_.string(), e.what())};
      for (auto& job : batch) job->fail(error);
    }
  }
  for (auto& job : batch) job->complete();
}

// Operations. Each captures its arguments by value: they run later, on the
// store thread, after the caller's frame may have moved on.

awaitable<Result<Appended>> Store::append_user_message(std::string user_id, std::string content,
                                                       std::vector<std::string> images,
                                                       std::optional<std::string> client_id) {
  return submit<Appended>(JobKind::write,
                          [this, user_id = std::move(user_id), content = std::move(content),
                           images = std::move(images), client_id = std::move(client_id)] {
                            return queries::append_user_message(db(), queries::now_ms(), user_id,
                                                                content, images, client_id);
                          });
}

awaitable<Result<Seq>> Store::store_reply(std::string user_id, Seq reply_to, std::string content,
                                          MessageStatus status) {
  return submit<Seq>(JobKind::write, [this, user_id = std::move(user_id), reply_to,
                                      content = std::move(content), status] {
    return queries::store_reply(db(), queries::now_ms(), user_id, reply_to, content, status);
  });
}

awaitable<Result<std::vector<Message>>> Store::replies_after(std::string user_id, Seq after_seq,
                                                             std::size_t limit) {
  return submit<std::vector<Message>>(
      JobKind::read, [this, user_id = std::move(user_id), after_seq, limit] {
        return queries::replies_after(db(), user_id, after_seq, limit);
      });
}

awaitable<Result<Seq>> Store::advance_delivered(std::string user_id, Seq seq) {
  return submit<Seq>(JobKind::write, [this, user_id = std::move(user_id), seq] {
    return queries::advance_delivered(db(), user_id, seq);
  });
}

awaitable<Result<std::optional<Session>>> Store::session(std::string user_id) {
  return submit<std::optional<Session>>(JobKind::read, [this, user_id = std::move(user_id)] {
    return queries::session(db(), user_id);
  });
}

awaitable<Result<std::vector<Message>>> Store::pending_messages(std::size_t limit) {
  return submit<std::vector<Message>>(
      JobKind::read, [this, limit] { return queries::pending_messages(db(), limit); });
}

awaitable<Result<std::vector<Session>>> Store::list_sessions(std::size_t limit,
                                                             std::size_t offset) {
  return submit<std::vector<Session>>(
      JobKind::read, [this, limit, offset] { return queries::list_sessions(db(), limit, offset); });
}

awaitable<Result<std::vector<Message>>> Store::messages(std::string user_id, std::size_t limit,
                                                        std::optional<Seq> before_seq) {
  return submit<std::vector<Message>>(JobKind::read,
                                      [this, user_id = std::move(user_id), limit, before_seq] {
                                        return queries::messages(db(), user_id, limit, before_seq);
                                      });
}

}  // namespace mooring::store
