// The SQL behind each Store operation, run synchronously on the store thread
// inside the transaction (and, for writes, the savepoint) the store opened for
// it. Logical failures (a reply to an unknown message) are returned as values;
// SQLite failures throw sqlite::Error, which the store turns into a StoreError.
#pragma once

#include "store/records.hpp"
#include "store/sqlite.hpp"

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

namespace mooring::store::queries {

// Unix time in milliseconds: what the *_ms columns hold.
std::int64_t now_ms();

// What the store's own writes left in the database, kept in memory so that
// they need not be read, or written again, at every message. All of it is
// read again from the database after a rollback (Connection::rollbacks).
//
// - The next message's seq. A seq is never given twice, even after the
//   newest messages were deleted: it continues after the highest of the
//   highest seq in the table and the highest ever deleted (the table
//   seq_floor, which a trigger keeps). The table has no AUTOINCREMENT, whose
//   bookkeeping wrote a row of sqlite_sequence (a page of WAL) at every
//   insert. Also read again after an insert failed (another writer may have
//   taken the seq).
// - The users whose session row this connection wrote in the last second:
//   their next messages within that second leave the row alone without
//   asking SQLite (last_seen_ms is kept to the second).
// - The user messages this connection stored that have no reply yet, with
//   their users: a reply to one of them is stored without looking its
//   question up.
class Remembered {
 public:
  // The seq for the next insert into messages; then seq_taken() once it is
  // in, or seq_unused() when the insert inserted nothing (and did not fail).
  Seq next_seq(sqlite::Connection& db);
  void seq_taken() { ++next_seq_; seq_known_ = true; }
  void seq_unused() { seq_known_ = true; }

  // Everything, as after a rollback (for a rollback to a savepoint).
  void forget() {
    seq_known_ = false;
    sessions_written_.clear();
    questions_.clear();
  }

  // Whether `user_id`'s session row was written by this connection less
  // than a second before `now`; session_written() says it was, at `now`.
  bool session_fresh(const sqlite::Connection& db, const std::string& user_id, std::int64_t now);
  void session_written(const std::string& user_id, std::int64_t now);

  // User message `seq` of `user_id` was stored by this connection, unanswered.
  void question_stored(Seq seq, const std::string& user_id);
  // Whether `seq` is such a message of `user_id`; forgotten once asked: a
  // message has one reply.
  bool take_question(const sqlite::Connection& db, Seq seq, const std::string& user_id);
  // Settled without a reply (marked failed): no longer waited for.
  void forget_question(Seq seq) { questions_.erase(seq); }

 private:
  void forget_after_rollback(const sqlite::Connection& db);

  Seq next_seq_ = 0;
  bool seq_known_ = false;
  std::uint64_t rollbacks_ = 0;
  std::unordered_map<std::string, std::int64_t> sessions_written_;
  std::unordered_map<Seq, std::string> questions_;
};

Result<Appended> append_user_message(sqlite::Connection& db, Remembered& remembered,
                                     std::int64_t now, const std::string& user_id,
                                     const std::string& content,
                                     const std::vector<std::string>& images,
                                     const std::optional<std::string>& client_id,
                                     MessageStatus status = MessageStatus::pending);

Result<Seq> store_reply(sqlite::Connection& db, Remembered& remembered, std::int64_t now,
                        const std::string& user_id, Seq reply_to, const std::string& content,
                        MessageStatus status);

// Marks pending user message `seq` failed with `reason`; a message already
// answered or failed is left as it is. Returns the message's status after.
Result<MessageStatus> mark_failed(sqlite::Connection& db, Remembered& remembered,
                                  std::int64_t now, const std::string& user_id, Seq seq,
                                  const std::string& reason);

Result<std::vector<Message>> replies_after(sqlite::Connection& db, const std::string& user_id,
                                           Seq after_seq, std::size_t limit,
                                           std::size_t max_bytes);

Result<Seq> advance_delivered(sqlite::Connection& db, const std::string& user_id, Seq seq);
// The same without reading the cursor back; a user without a session is skipped.
void raise_delivered(sqlite::Connection& db, const std::string& user_id, Seq seq);

Result<std::optional<Session>> session(sqlite::Connection& db, const std::string& user_id);

Result<std::vector<Message>> pending_messages(sqlite::Connection& db, std::size_t limit);

// Moves pending_floor up past the settled messages above it, looking at
// max_rows messages at most, and stops at the oldest pending one. Returns
// the messages looked at.
std::size_t advance_pending_floor(sqlite::Connection& db, std::size_t max_rows);

// Sessions whose id starts with `prefix` and that have a reply after their
// delivered cursor, by id.
Result<std::vector<Session>> undelivered_sessions(sqlite::Connection& db, const std::string& prefix,
                                                  std::size_t limit);

Result<std::vector<Session>> list_sessions(sqlite::Connection& db, std::size_t limit,
                                           std::size_t offset);

// The newest `limit` with seq < before_seq, oldest first, and no more of them
// than fit in `max_bytes` of text and images (the newest always does).
Result<std::vector<Message>> messages(sqlite::Connection& db, const std::string& user_id,
                                      std::size_t limit, std::optional<Seq> before_seq,
                                      std::size_t max_bytes = SIZE_MAX);

}  // namespace mooring::store::queries
