// The SQL behind each Store operation, run synchronously on the store thread
// inside the transaction (and, for writes, the savepoint) the store opened for
// it. Logical failures (a reply to an unknown message) are returned as values;
// SQLite failures throw sqlite::Error, which the store turns into a StoreError.
#pragma once

#include "store/records.hpp"
#include "store/sqlite.hpp"

#include <cstddef>
#include <optional>
#include <string>
#include <vector>

namespace mooring::store::queries {

// Unix time in milliseconds: what the *_ms columns hold.
std::int64_t now_ms();

// The next message's seq, kept in memory between inserts. A seq is never
// given twice, even after the newest messages were deleted: it continues
// after the highest of the highest seq in the table and the highest ever
// deleted (the table seq_floor, which a trigger keeps). The table has no
// AUTOINCREMENT, whose bookkeeping wrote a row of sqlite_sequence (a page
// of WAL) at every insert. Read again from the database after a rollback
// or a failed insert (another writer may have taken the seq).
class SeqCounter {
 public:
  // The seq for the next insert into messages; call taken() once it is in.
  Seq next(sqlite::Connection& db);
  void taken() { ++next_; known_ = true; }
  // ... or unused() when the insert inserted nothing (and did not fail).
  void unused() { known_ = true; }

 private:
  Seq next_ = 0;
  bool known_ = false;
  std::uint64_t rollbacks_ = 0;
};

Result<Appended> append_user_message(sqlite::Connection& db, SeqCounter& seqs, std::int64_t now,
                                     const std::string& user_id, const std::string& content,
                                     const std::vector<std::string>& images,
                                     const std::optional<std::string>& client_id,
                                     MessageStatus status = MessageStatus::pending);

Result<Seq> store_reply(sqlite::Connection& db, SeqCounter& seqs, std::int64_t now,
                        const std::string& user_id, Seq reply_to, const std::string& content,
                        MessageStatus status);

// Marks pending user message `seq` failed with `reason`; a message already
// answered or failed is left as it is. Returns the message's status after.
Result<MessageStatus> mark_failed(sqlite::Connection& db, std::int64_t now,
                                  const std::string& user_id, Seq seq, const std::string& reason);

Result<std::vector<Message>> replies_after(sqlite::Connection& db, const std::string& user_id,
                                           Seq after_seq, std::size_t limit);

Result<Seq> advance_delivered(sqlite::Connection& db, const std::string& user_id, Seq seq);

Result<std::optional<Session>> session(sqlite::Connection& db, const std::string& user_id);

Result<std::vector<Message>> pending_messages(sqlite::Connection& db, std::size_t limit);

// Sessions whose id starts with `prefix` and that have a reply after their
// delivered cursor, by id.
Result<std::vector<Session>> undelivered_sessions(sqlite::Connection& db, const std::string& prefix,
                                                  std::size_t limit);

Result<std::vector<Session>> list_sessions(sqlite::Connection& db, std::size_t limit,
                                           std::size_t offset);

Result<std::vector<Message>> messages(sqlite::Connection& db, const std::string& user_id,
                                      std::size_t limit, std::optional<Seq> before_seq);

}  // namespace mooring::store::queries
