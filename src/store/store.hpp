// The conversation store: sessions and messages in SQLite (WAL) at
// <data_dir>/mooring.db. Callers co_await each operation. A result is handed
// back only after the transaction it was computed in has committed, so an
// appended message is on disk (in the WAL, fsynced at synchronous = FULL) when
// its caller resumes. Operations queued together share one transaction and
// one commit (group commit); one failing operation does not undo the others
// (the batch then runs again, each write in its own savepoint). Every failure
// is a StoreError value.
//
// Where the work runs (StoreOptions::worker): on the store's own thread, so a
// commit's fsync never holds up the callers' thread; or on the callers'
// executor, a batch at a time between its other work, with no handoff
// between threads (at synchronous = FULL the store thread then fsyncs the
// WAL behind the batches, and their outcomes wait for it). Opening (with its
// integrity check), closing, WAL checkpoints (which fsync) and upkeep run on
// the store thread either way. In the second case the database is the
// batches' or the store thread's in turn, and a batch never waits for the
// store thread: its operations stay queued, the callers' thread goes on with
// its other work, and they run as one batch once the store thread is done.
//
// Promises about faults: open() refuses a database it cannot use (read-only,
// damaged, an empty file where one existed, files it cannot write) with a
// message that says what to do, and never creates over them. While running,
// health() is `degraded` from the first write the disk refuses until one
// succeeds again: the store tries a small write every probe_interval by itself,
// so it recovers without traffic. Failures are logged once per kind, then
// summarised once per log_window. Failed WAL checkpoints are logged and retried.
//
// Metrics, observed on the store thread for each committed write transaction:
// its time from BEGIN to the end of COMMIT, the fsync included
// (mooring_store_commit_seconds), and the operations it carried, reads queued
// with the writes included (mooring_store_batch_operations).
#pragma once

#include "runtime/asio.hpp"
#include "runtime/log_limiter.hpp"
#include "store/files.hpp"
#include "store/records.hpp"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <filesystem>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace mooring::store {

namespace queries {
class Remembered;
}
namespace sqlite {
class Connection;
class Error;
}

namespace detail {
class Job;
enum class JobKind { open, read, write, close };
}  // namespace detail

struct StoreOptions {
  // How long a statement waits for a lock held by another process.
  std::chrono::milliseconds busy_timeout{5000};
  // Operations waiting for the store thread. When full, new operations fail at
  // once with Kind::overloaded: a disk slower than the traffic is reported, not
  // hidden behind a growing queue.
  std::size_t max_queued = 10000;
  // Operations run in one transaction at most, bounding the wait of the first.
  std::size_t max_batch = 256;
  // PRAGMA quick_check at open stops after this long; a check cut short is
  // logged as such and the store opens (a sound large file must still start).
  std::chrono::milliseconds integrity_check_timeout{30000};
  // While degraded, the store writes its probe row this often to learn that the
  // disk takes writes again; a failed WAL checkpoint is retried as often.
  std::chrono::milliseconds probe_interval{2000};
  // How often the store looks whether mooring.db and its WAL are still the
  // files it writes: one deleted, moved or replaced while it runs would lose
  // at the next start everything stored after; from then on nothing is
  // stored (a lone WAL's content is first copied into mooring.db).
  std::chrono::milliseconds file_check_interval{2000};
  // A checkpoint runs after a commit that leaves at least this many pages in the WAL.
  int checkpoint_pages = 1000;
  // At most this often, a write batch also moves the floor below which no
  // message is pending (where a start looks for them) past the messages
  // settled since, looking at pending_floor_rows of them at most; one that
  // looked at that many does it again at the next write batch. The batches
  // run on the network thread, 0.45 us per row: 16,384 rows held it 6.6 -
  // 7.7 ms once a second at 12,000 round trips/s; 1,024 at most 0.6 ms.
  std::chrono::milliseconds pending_floor_interval{1000};
  std::size_t pending_floor_rows = 1024;
  // Repeats of one failure within this window are summarised in one log line.
  std::chrono::milliseconds log_window{10000};
  // mark_failed() outcomes kept in memory while the disk refuses them.
  std::size_t max_held_outcomes = 10000;
  // data.synchronous: "full" (true) or "normal" (see schema::OpenOptions).
  bool synchronous_full = true;
  // Where operations run (above). `caller`: batches run on the executor given
  // to open(), which must run on one thread and keep running until close()
  // has completed (the operations queued before the close run there); destroy
  // the store on that thread, or while it does not run. A statement of a
  // batch waits at most caller_busy_timeout for a lock held by another process
  // (an sqlite3 shell writing the file), so the callers' thread never stalls
  // for long: the batch fails and says so (the store thread's own work waits
  // up to busy_timeout). Checkpoints follow a commit instead of preceding its
  // outcome, so stats().checkpoints may move a moment after a caller resumes.
  //
  // With `caller` and synchronous_full, a commit is not synced by SQLite
  // inside the batch: the store thread fdatasyncs the WAL after it, while the
  // next batches run, and the batch's outcomes are handed back only once
  // that sync has returned (one sync serves every batch committed before it
  // began). A read batch behind a commit not synced yet waits for the same
  // sync, so nothing not yet on disk is handed to anyone.
  //
  // A failed fdatasync of the WAL (with `caller`, at either setting), or a
  // checkpoint's failed fsync, fails the store until a restart: after it the
  // kernel may hold pages it never wrote as written, so no later sync can
  // vouch for them. The operations
  // waiting for it and every later one fail (Kind::io), no checkpoint copies
  // the WAL into the database, and the close leaves the WAL for the next
  // start to recover what did reach the disk (a message told as not stored
  // may then be found: sent again with its id, it is a duplicate).
  enum class Worker { store_thread, caller };
  Worker worker = Worker::store_thread;
  std::chrono::milliseconds caller_busy_timeout{100};
  // How the WAL is synced (above): 0 or an errno value. Tests replace it to
  // stall or fail a sync; the default is fdatasync(2).
  std::function<int(int fd)> sync_file;
};

// Counters for tests and metrics; read from any thread.
struct StoreStats {
  std::uint64_t commits = 0;         // write transactions committed (one fsync each)
  std::uint64_t writes = 0;          // write operations run
  std::uint64_t reads = 0;           // read operations run
  std::uint64_t failed_batches = 0;  // transactions that could not commit
  std::uint64_t checkpoints = 0;     // WAL checkpoints that succeeded
  std::uint64_t failed_checkpoints = 0;
  // Copies of the WAL made while writes went on, each before a checkpoint
  // (Worker::caller at synchronous = NORMAL).
  std::uint64_t checkpoints_alongside = 0;
  std::uint64_t probes = 0;  // probe writes tried while degraded
  // Of those copies, the ones that found the WAL busy (a commit restarting
  // it) and left the copy to the checkpoint.
  std::uint64_t checkpoints_alongside_busy = 0;
};

// Told about every change of the store's health (state or last error).
using HealthObserver = std::function<void(const Health&)>;

class Store {
  struct Private {};

 public:
  // Creates `data_dir` (0700) if missing, opens or creates mooring.db there
  // (0600, as its -wal and -shm), checks it (store/schema.hpp: refused when
  // read-only, damaged or empty) and brings its schema up to date. Results of
  // later operations are handed to each caller's own executor; `executor` serves
  // handlers without one.
  static awaitable<Result<std::unique_ptr<Store>>> open(asio::any_io_executor executor,
                                                        std::string data_dir,
                                                        StoreOptions options = {});

  Store(Private, asio::any_io_executor executor, std::filesystem::path path, StoreOptions options);
  // Finishes the queued operations, closes the database and joins the thread,
  // as close() does but blocking. Destroy the store before the io_context its
  // callers run on, since the queued operations complete there.
  ~Store();
  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;

  // Stores a user message once per (user_id, client_id) and creates or touches
  // the user's session. Sent again with the same client id, it stores nothing
  // and returns the first message's seq and status with duplicate = true.
  awaitable<Result<Appended>> append_user_message(
      std::string user_id, std::string content, std::vector<std::string> images = {},
      std::optional<std::string> client_id = std::nullopt);

  // Stores a message kept as context only (a group message not addressed to
  // the bot): like append_user_message, but `answered` from the start, so it
  // is never answered, not even after a restart.
  awaitable<Result<Appended>> append_context_message(std::string user_id, std::string content,
                                                     std::vector<std::string> images,
                                                     std::optional<std::string> client_id);

  // Stores the assistant's reply to user message `reply_to`, which settles
  // that message as `status` (answered or failed): a user message's status is
  // its reply's once it has one. A message that already has a reply keeps it:
  // its seq is returned and nothing changes.
  awaitable<Result<Seq>> store_reply(std::string user_id, Seq reply_to, std::string content,
                                     MessageStatus status = MessageStatus::answered);

  // Records what user message `seq` ended as when no reply could be stored for
  // it: the message becomes `failed` with `reason` (what its user was told, e.g.
  // "the reply could not be stored; ask again") and is never answered after a
  // restart. A message already answered or failed keeps its outcome; its status
  // is returned. When the disk refuses this write too, the error is returned
  // and the store keeps the outcome in memory (up to max_held_outcomes): it is
  // written with the next write that succeeds or at close(), and
  // pending_messages() leaves the message out meanwhile.
  awaitable<Result<MessageStatus>> mark_failed(std::string user_id, Seq seq, std::string reason);

  // The user's replies with seq > after_seq, oldest first, at most `limit`,
  // and no more once their text has reached `max_bytes` (the first always):
  // call again from the last seq returned to continue.
  awaitable<Result<std::vector<Message>>> replies_after(
      std::string user_id, Seq after_seq, std::size_t limit = 1000,
      std::size_t max_bytes = std::numeric_limits<std::size_t>::max());

  // Moves the session's delivered cursor forward to `seq` (never back);
  // returns the cursor after the update. Kind::not_found without a session.
  awaitable<Result<Seq>> advance_delivered(std::string user_id, Seq seq);
  // The same for several sessions in one operation; sessions that do not
  // exist are left out.
  awaitable<Result<void>> advance_delivered(std::vector<std::pair<std::string, Seq>> cursors);

  awaitable<Result<std::optional<Session>>> session(std::string user_id);

  // User messages still waiting for a reply, oldest first (to be answered
  // again after a restart), at most `limit`.
  awaitable<Result<std::vector<Message>>> pending_messages(std::size_t limit = 10000);

  // Sessions whose id starts with `prefix` that have replies after their
  // delivered cursor (a transport that reconnects sends those), by id.
  awaitable<Result<std::vector<Session>>> undelivered_sessions(std::string prefix,
                                                               std::size_t limit = 10000);

  // Sessions by most recently seen (for the admin API); one user's messages
  // (both roles) with seq < before_seq (all when nullopt), the newest `limit`
  // that fit in `max_bytes` of text and images (the newest always does),
  // oldest first: a reply's context, a page of the admin API.
  awaitable<Result<std::vector<Session>>> list_sessions(std::size_t limit, std::size_t offset = 0);
  awaitable<Result<std::vector<Message>>> messages(std::string user_id, std::size_t limit,
                                                   std::optional<Seq> before_seq = std::nullopt,
                                                   std::size_t max_bytes = SIZE_MAX);

  // Runs the operations already queued, checkpoints the WAL into the main
  // file, closes the database and joins the store thread. Operations requested
  // after close() fail with Kind::closed; so does a second close().
  awaitable<Result<void>> close();

  StoreStats stats() const;

  // The store's health now; any thread.
  Health health() const;
  // Calls `observer` on `executor` with the new health each time its state or
  // last error changes (never for the repeats of one failure). One observer; a
  // later call replaces it. Nothing is called once the store is destroyed, so
  // the observer may capture its owner.
  void watch_health(asio::any_io_executor executor, HealthObserver observer);
  const std::filesystem::path& path() const { return path_; }

  // Store operations are not cancellable: once queued, an operation runs to its
  // commit, so a message is never half stored; the wait is bounded by the disk.

 private:
  template <typename T, typename Work>
  awaitable<Result<T>> submit(detail::JobKind kind, Work work);
  awaitable<Result<Appended>> append(std::string user_id, std::string content,
                                     std::vector<std::string> images,
                                     std::optional<std::string> client_id, MessageStatus status);
  void enqueue(std::unique_ptr<detail::Job> job);

  // The store thread.
  void run();
  bool thread_takes_front() const;  // mutex_ held
  // A batch of reads and writes on the callers' executor (Worker::caller).
  void drain();
  void post_drain();  // mutex_ held
  // By the database's user (the store thread, or a drain).
  void run_batch(std::vector<std::unique_ptr<detail::Job>>& batch);
  struct TransactionLost {
    StoreError error;
  };
  void check_transaction(bool writes, const detail::Job& failed);
  void fail_batch(std::vector<std::unique_ptr<detail::Job>>& batch, StoreError error);
  void complete_together(std::vector<std::unique_ptr<detail::Job>>& batch);
  Result<void> open_database();
  Result<void> close_database();
  sqlite::Connection& db();
  queries::Remembered& remembered();

  // Health and upkeep, on the store thread.
  // `lasting`: the store stays failed until a restart.
  void note_fault(const StoreError& error, bool operation, bool lasting = false);
  void note_write_succeeded();
  void set_health(Health next);
  void advance_pending_floor();
  bool write_held_outcomes();
  void probe();
  void checkpoint();
  void check_database_file();
  void check_wal_file();
  // Worker::caller, on the store thread before checkpoint(): copies the WAL
  // into the database through checkpointer_ while the drains go on.
  void checkpoint_alongside();
  // A checkpoint failed to sync: the store fails until a restart (true).
  bool checkpoint_unconfirmed(const sqlite::Error& e);
  void want_checkpoint();
  // Worker::caller: fdatasync of the WAL (before a checkpoint; after commits
  // when the store syncs them itself); 0 or an errno value.
  int sync_wal();
  void close_wal_fd();
  // A sync (or a checkpoint's fsync) failed, or a file the store holds open
  // is no longer at its path: the store fails until a restart.
  void lose_trust_in_wal(StoreError error);  // mutex_ not held
  bool syncs_itself() const;
  // The store thread: syncs the WAL, then hands back the outcomes that waited for it.
  // `covers`: the last commit whose outcomes are among `jobs`.
  void sync_and_complete(std::vector<std::unique_ptr<detail::Job>> jobs, std::uint64_t covers);
  // By the database's user: what the store thread learnt from its syncs.
  void note_sync_outcome();
  void maintain();
  std::optional<std::chrono::steady_clock::time_point> next_maintenance() const;
  // Tells the store thread when upkeep is next due (by the database's user).
  void publish_maintenance();

  asio::any_io_executor executor_;
  const std::filesystem::path path_;
  const StoreOptions options_;

  // Shared between callers and the store thread, under mutex_.
  std::mutex mutex_;
  std::condition_variable queued_;
  std::deque<std::unique_ptr<detail::Job>> queue_;
  bool closing_ = false;
  bool drain_posted_ = false;     // Worker::caller: a drain() is on its way
  bool drain_deferred_ = false;   // a drain found the database the store thread's
  bool drain_waited_ = false;     // the posted drain waited a turn for more work
  // Whether the last batch found more than one operation queued, and how
  // many drains ran without waiting since (see drain()).
  bool more_than_one_ = true;
  unsigned drains_unwaited_ = 0;
  bool checkpoint_wanted_ = false;  // Worker::caller: for the store thread
  bool thread_waits_ = false;       // the store thread waits for the database
  bool orphaned_ = false;           // destroyed: the store thread runs what is left
  // syncs_itself(): operations waiting for a sync, in order, and whether
  // one is wanted.
  std::vector<std::unique_ptr<detail::Job>> unsynced_;
  bool sync_wanted_ = false;
  std::size_t syncing_jobs_ = 0;  // outcomes in the sync running now
  std::optional<StoreError> sync_fault_;  // a failed sync, to be noted
  bool sync_succeeded_ = false;          // a sync after committed writes, to be noted
  std::uint64_t unsynced_commit_ = 0;    // the last commit whose outcomes are in unsynced_
  std::uint64_t synced_commit_ = 0;      // the last commit a sync has covered
  // A sync of the WAL failed: the store fails until a restart (above).
  std::optional<StoreError> wal_unsafe_;
  std::atomic<bool> wal_failed_{false};  // wal_unsafe_ is set
  std::optional<std::chrono::steady_clock::time_point> maintenance_due_;
  // Worker::caller: who uses the database and the upkeep state below; a drain
  // never waits for the store thread (it leaves the jobs queued), the store
  // thread waits for the running drain. Worker::store_thread: the store thread.
  enum class DbUser { none, drain, thread };
  DbUser db_user_ = DbUser::none;
  // Worker::caller: posted drains do nothing once the store is gone.
  std::shared_ptr<Store*> alive_;

  // The database's user only (above).
  bool busy_ = false;  // work was queued while the last batch ran
  files::DirectoryLock lock_;  // held while db_ is open
  std::unique_ptr<sqlite::Connection> db_;
  // Worker::caller at synchronous = NORMAL: a second connection, the store
  // thread's alone, whose checkpoint copies the WAL while the drains write
  // on db_. A checkpoint on db_ holds the drains back for as long as it
  // runs; after this one it copies only what was committed meanwhile, and
  // lets the WAL start over. At 10 users, 20 checkpoints a second: the
  // drains held back 5.2 - 6.1 % of the time, 5.4 - 12 ms at most, before;
  // 2.9 - 3.0 %, 2.4 - 3.9 ms at most, with it. Null when it could not be
  // opened, or is not used: checkpoint() then copies it all.
  std::unique_ptr<sqlite::Connection> checkpointer_;
  // The store thread's: why the last copy through checkpointer_ failed, and
  // whether that was logged (once until a copy succeeds).
  std::optional<std::string> alongside_failure_;
  bool alongside_failure_told_ = false;
  std::unique_ptr<queries::Remembered> remembered_;  // with db_: see queries.hpp
  std::chrono::steady_clock::time_point pending_floor_due_{};
  runtime::LogLimiter limiter_;
  struct HeldOutcome {
    std::string user_id;
    std::string reason;
    // Where the store syncs its commits: the commit that wrote it (0: none
    // yet). It is let go once a sync has covered that commit.
    std::uint64_t written_in = 0;
  };
  // mark_failed() outcomes not known to be on disk yet, by message seq.
  std::map<Seq, HeldOutcome> held_outcomes_;
  std::optional<std::chrono::steady_clock::time_point> next_probe_;
  std::optional<std::chrono::steady_clock::time_point> checkpoint_retry_;
  std::optional<std::chrono::steady_clock::time_point> next_log_flush_;
  // The database file as opened (device and inode), looked at again at
  // next_file_check_ (StoreOptions::file_check_interval).
  using FileId = std::pair<std::uint64_t, std::uint64_t>;
  std::optional<FileId> db_file_;
  std::optional<FileId> wal_file_;
  std::optional<std::chrono::steady_clock::time_point> next_file_check_;
  bool file_moved_ = false;  // the file at the path is not db_'s: wal_failed_ for that
  std::uint64_t checkpoint_failures_ = 0;
  std::uint64_t commit_no_ = 0;         // write transactions committed
  int wal_fd_ = -1;  // the WAL, kept open for sync_wal() (the store thread's)

  // Written by the store thread, read by any, under health_mutex_.
  struct HealthWatch {
    asio::any_io_executor executor;
    HealthObserver observer;
  };
  mutable std::mutex health_mutex_;
  Health health_;
  std::shared_ptr<HealthWatch> health_watch_;

  std::atomic<std::uint64_t> commits_{0};
  std::atomic<std::uint64_t> writes_{0};
  std::atomic<std::uint64_t> reads_{0};
  std::atomic<std::uint64_t> failed_batches_{0};
  std::atomic<std::uint64_t> checkpoints_{0};
  std::atomic<std::uint64_t> failed_checkpoints_{0};
  std::atomic<std::uint64_t> checkpoints_alongside_{0};
  std::atomic<std::uint64_t> checkpoints_alongside_busy_{0};
  std::atomic<std::uint64_t> probes_{0};

  // Last member: started when everything above exists.
  std::thread thread_;
};

}  // namespace mooring::store
