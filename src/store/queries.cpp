#include "store/queries.hpp"

#include <boost/json.hpp>
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <limits>

namespace mooring::store::queries {

namespace {

namespace json = boost::json;
using Kind = StoreError::Kind;

// A message's outcome, for a row of messages named `m`: the status of its
// reply when it has one (a reply's status is the one it gave its question),
// else its own column: `pending`, `failed` when it was marked failed without
// a reply, `answered` when kept as context only (or settled by a mooring
// before schema version 5, when storing a reply rewrote its question's
// status). A reply is one row and rewrites nothing. Macros so they can be
// pasted into string literals, which the statement cache is keyed by.
// (A reply has no reply: its own column is its outcome, without a search.)
#define OUTCOME \
  "CASE WHEN m.role = 'user' THEN coalesce((SELECT r.status FROM messages r " \
  "WHERE r.reply_to = m.seq), m.status) ELSE m.status END"
#define UNANSWERED \
  "(m.role = 'user' AND m.status = 'pending' AND " \
  "NOT EXISTS (SELECT 1 FROM messages r WHERE r.reply_to = m.seq))"

// The columns of a Message, in the order read_message() expects.
#define MESSAGE_COLUMNS \
  "m.seq, m.user_id, m.role, m.content, m.images, m.client_id, m.reply_to, " OUTCOME \
  ", m.created_ms, m.updated_ms, m.failure, m.status"

std::int64_t sql_limit(std::size_t n) {
  constexpr auto max = static_cast<std::size_t>(std::numeric_limits<std::int64_t>::max());
  return static_cast<std::int64_t>(std::min(n, max));
}

std::string images_to_json(const std::vector<std::string>& images) {
  if (images.empty()) return "[]";
  json::array array;
  array.reserve(images.size());
  for (const auto& image : images) array.emplace_back(image);
  return json::serialize(array);
}

// A row that does not decode is damage (or a bug), not something to paper
// over: the whole read fails and says which message.
Result<Message> read_message(const sqlite::Statement& row) {
  Message m;
  m.seq = row.int64(0);
  m.user_id = row.text(1);
  const auto role = parse_role(row.text(2));
  const auto status = parse_status(row.text(7));
  // Its own column too: an answered message's is not its outcome, but a
  // value outside the schema there is damage all the same.
  if (!role || !status || !parse_status(row.text(11)))
    return StoreError{Kind::corrupt,
                      fmt::format("message {} has an unknown role or status", m.seq)};
  m.role = *role;
  m.status = *status;
  m.content = row.text(3);

  boost::system::error_code ec;
  const auto images = json::parse(row.text(4), ec);
  if (ec || !images.is_array())
    return StoreError{Kind::corrupt,
                      fmt::format("message {} has an invalid images column", m.seq)};
  for (const auto& image : images.get_array()) {
    if (!image.is_string())
      return StoreError{Kind::corrupt,
                        fmt::format("message {} has a non-string image", m.seq)};
    m.images.emplace_back(image.get_string());
  }
  m.client_id = row.optional_text(5);
  m.reply_to = row.optional_int64(6);
  m.created_ms = row.int64(8);
  m.updated_ms = row.int64(9);
  m.failure = row.optional_text(10);
  return m;
}

Result<std::vector<Message>> read_messages(sqlite::Statement& statement) {
  std::vector<Message> out;
  while (statement.step()) {
    auto message = read_message(statement);
    if (!message) return message.error();
    out.push_back(std::move(*message));
  }
  return out;
}

Session read_session(const sqlite::Statement& row) {
  return Session{row.text(0), row.int64(1), row.int64(2), row.int64(3)};
}

}  // namespace

std::int64_t now_ms() {
  using namespace std::chrono;
  return duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
}

void Remembered::forget_after_rollback(const sqlite::Connection& db) {
  if (rollbacks_ == db.rollbacks()) return;
  rollbacks_ = db.rollbacks();
  forget();
}

Seq Remembered::next_seq(sqlite::Connection& db) {
  forget_after_rollback(db);
  if (!seq_known_) {
    auto highest = db.prepare(
        "SELECT max(coalesce((SELECT max(seq) FROM messages), 0), "
        "coalesce((SELECT seq FROM seq_floor WHERE id = 1), 0))");
    highest.step();
    next_seq_ = highest.int64(0) + 1;
  }
  // Until seq_taken(): an insert that fails reads it again.
  seq_known_ = false;
  return next_seq_;
}

bool Remembered::session_fresh(const sqlite::Connection& db, const std::string& user_id,
                               std::int64_t now) {
  forget_after_rollback(db);
  const auto it = sessions_written_.find(user_id);
  return it != sessions_written_.end() && now >= it->second && now < it->second + 1000;
}

void Remembered::session_written(const std::string& user_id, std::int64_t now) {
  // Bounded: users active within the last second are what it is for.
  if (sessions_written_.size() >= 4096) sessions_written_.clear();
  sessions_written_.insert_or_assign(user_id, now);
}

void Remembered::question_stored(Seq seq, const std::string& user_id) {
  // Bounded: replies come within seconds of their messages, and a message
  // settled otherwise is forgotten (forget_question); past the bound the
  // replies to those forgotten look their questions up, as after a restart.
  if (questions_.size() >= 65536) questions_.clear();
  questions_.emplace(seq, user_id);
}

bool Remembered::take_question(const sqlite::Connection& db, Seq seq,
                               const std::string& user_id) {
  forget_after_rollback(db);
  const auto it = questions_.find(seq);
  if (it == questions_.end()) return false;
  const bool theirs = it->second == user_id;
  questions_.erase(it);
  return theirs;
}

Result<Appended> append_user_message(sqlite::Connection& db, Remembered& remembered,
                                     std::int64_t now, const std::string& user_id,
                                     const std::string& content,
                                     const std::vector<std::string>& images,
                                     const std::optional<std::string>& client_id,
                                     MessageStatus status) {
  if (user_id.empty()) return StoreError{Kind::invalid_argument, "empty user id"};

  // Every message from a user counts as seeing them, a retried one too, to
  // the second: a session's row is rewritten at most once a second, not by
  // every message (each rewrite is a page in the WAL and the checkpoint).
  if (!remembered.session_fresh(db, user_id, now)) {
    db.prepare(
          "INSERT INTO sessions (user_id, created_ms, last_seen_ms) VALUES (?1, ?2, ?2) "
          "ON CONFLICT (user_id) DO UPDATE SET last_seen_ms = excluded.last_seen_ms "
          "WHERE excluded.last_seen_ms >= last_seen_ms + 1000")
        .bind(1, user_id)
        .bind(2, now)
        .run();
    // Written (made, or seen a second or more after the last time): fresh
    // for the next second. Left alone: the row was written within the last
    // second, at a moment not known here; the statement runs again.
    if (db.changes() == 1) remembered.session_written(user_id, now);
  }

  // One statement for a new message: the insert skips a client id the user
  // sent before (the seq it was offered is not used then, and is offered
  // again), and only then is the first one looked up.
  const Seq seq = remembered.next_seq(db);
  db.prepare(
        "INSERT INTO messages (seq, user_id, role, content, images, client_id, reply_to, status, "
        "created_ms, updated_ms) VALUES (?7, ?1, 'user', ?2, ?3, ?4, NULL, ?6, ?5, ?5) "
        "ON CONFLICT (user_id, client_id) WHERE client_id IS NOT NULL DO NOTHING")
      .bind(1, user_id)
      .bind(2, content)
      .bind(3, images_to_json(images))
      .bind(4, client_id)
      .bind(5, now)
      .bind_static(6, to_string(status))
      .bind(7, seq)
      .run();
  if (db.changes() == 1) {
    remembered.seq_taken();
    if (status == MessageStatus::pending) remembered.question_stored(seq, user_id);
    return Appended{seq, false, status};
  }
  remembered.seq_unused();
  auto existing = db.prepare("SELECT m.seq, " OUTCOME
                             " FROM messages m WHERE m.user_id = ?1 AND m.client_id = ?2");
  existing.bind(1, user_id).bind(2, client_id);
  if (!existing.step())
    return StoreError{Kind::internal,
                      fmt::format("message {} of {} was neither stored nor found stored before",
                                  seq, user_id)};
  const auto existing_status = parse_status(existing.text(1));
  if (!existing_status)
    return StoreError{Kind::corrupt,
                      fmt::format("message {} has an unknown status", existing.int64(0))};
  return Appended{existing.int64(0), true, *existing_status};
}

Result<Seq> store_reply(sqlite::Connection& db, Remembered& remembered, std::int64_t now,
                        const std::string& user_id, Seq reply_to, const std::string& content,
                        MessageStatus status) {
  if (status == MessageStatus::pending)
    return StoreError{Kind::invalid_argument,
                      "a reply must mark its message answered or failed, not pending"};
  // One row and nothing rewritten: the question's outcome is its reply's
  // status (OUTCOME), so storing the reply settles it. (Not an INSERT of a
  // SELECT from messages: SQLite copies such a SELECT into a temporary table
  // before inserting into the table it reads.) A message this connection
  // stored is known without looking.
  if (!remembered.take_question(db, reply_to, user_id)) {
    auto question =
        db.prepare("SELECT user_id = ?2 AND role = 'user' FROM messages WHERE seq = ?1");
    question.bind(1, reply_to).bind(2, user_id);
    if (!question.step())
      return StoreError{Kind::not_found, fmt::format("no message {} to reply to", reply_to)};
    if (question.int64(0) == 0)
      return StoreError{Kind::invalid_argument,
                        fmt::format("message {} is not a user message of {}", reply_to, user_id)};
  }
  const Seq seq = remembered.next_seq(db);
  db.prepare(
        "INSERT INTO messages (seq, user_id, role, content, images, client_id, reply_to, status, "
        "created_ms, updated_ms) VALUES (?6, ?1, 'assistant', ?2, '[]', NULL, ?3, ?4, ?5, ?5) "
        "ON CONFLICT (reply_to) WHERE reply_to IS NOT NULL DO NOTHING")
      .bind(1, user_id)
      .bind(2, content)
      .bind(3, reply_to)
      .bind_static(4, to_string(status))
      .bind(5, now)
      .bind(6, seq)
      .run();
  if (db.changes() == 1) {
    remembered.seq_taken();
    return seq;
  }
  remembered.seq_unused();
  // Idempotent: the chat layer may store a reply again after a crash or a retry.
  auto existing = db.prepare("SELECT seq FROM messages WHERE reply_to = ?1");
  existing.bind(1, reply_to);
  if (existing.step()) return existing.int64(0);
  return StoreError{Kind::internal,
                    fmt::format("the reply to message {} of {} was neither stored nor found "
                                "stored before",
                                reply_to, user_id)};
}

Result<MessageStatus> mark_failed(sqlite::Connection& db, Remembered& remembered,
                                  std::int64_t now, const std::string& user_id, Seq seq,
                                  const std::string& reason) {
  auto message =
      db.prepare("SELECT m.user_id, m.role, " OUTCOME " FROM messages m WHERE m.seq = ?1");
  message.bind(1, seq);
  if (!message.step())
    return StoreError{Kind::not_found, fmt::format("no message {} to mark failed", seq)};
  if (message.text(0) != user_id || message.text(1) != "user")
    return StoreError{Kind::invalid_argument,
                      fmt::format("message {} is not a user message of {}", seq, user_id)};
  const auto status = parse_status(message.text(2));
  if (!status)
    return StoreError{Kind::corrupt, fmt::format("message {} has an unknown status", seq)};
  // A message answered (or failed) already keeps its outcome: its user saw it.
  if (*status != MessageStatus::pending) return *status;
  remembered.forget_question(seq);
  db.prepare("UPDATE messages SET status = 'failed', failure = ?2, updated_ms = ?3 WHERE seq = ?1")
      .bind(1, seq)
      .bind(2, reason)
      .bind(3, now)
      .run();
  return MessageStatus::failed;
}

Result<std::vector<Message>> replies_after(sqlite::Connection& db, const std::string& user_id,
                                           Seq after_seq, std::size_t limit,
                                           std::size_t max_bytes) {
  auto statement = db.prepare("SELECT " MESSAGE_COLUMNS
                              " FROM messages m WHERE m.user_id = ?1 AND m.seq > ?2 AND m.role = "
                              "'assistant' ORDER BY m.seq LIMIT ?3");
  statement.bind(1, user_id).bind(2, after_seq).bind(3, sql_limit(limit));
  std::vector<Message> out;
  std::size_t bytes = 0;
  while (bytes < max_bytes && statement.step()) {
    auto message = read_message(statement);
    if (!message) return message.error();
    bytes += message->content.size();
    out.push_back(std::move(*message));
  }
  return out;
}

void raise_delivered(sqlite::Connection& db, const std::string& user_id, Seq seq) {
  // A cursor that would not move is not written again.
  db.prepare("UPDATE sessions SET delivered_seq = ?2 WHERE user_id = ?1 AND delivered_seq < ?2")
      .bind(1, user_id)
      .bind(2, seq)
      .run();
}

Result<Seq> advance_delivered(sqlite::Connection& db, const std::string& user_id, Seq seq) {
  // Not RETURNING: SQLite builds a temporary table for its rows at every run.
  raise_delivered(db, user_id, seq);
  auto cursor = db.prepare("SELECT delivered_seq FROM sessions WHERE user_id = ?1");
  cursor.bind(1, user_id);
  if (!cursor.step())
    return StoreError{Kind::not_found, fmt::format("no session for user {}", user_id)};
  return cursor.int64(0);
}

Result<std::optional<Session>> session(sqlite::Connection& db, const std::string& user_id) {
  auto statement = db.prepare(
      "SELECT user_id, created_ms, last_seen_ms, delivered_seq FROM sessions WHERE user_id = ?1");
  statement.bind(1, user_id);
  if (!statement.step()) return std::optional<Session>();
  return std::optional<Session>(read_session(statement));
}

Result<std::vector<Message>> pending_messages(sqlite::Connection& db, std::size_t limit) {
  // From the floor up, by seq: no index of pending messages is kept.
  auto statement = db.prepare(
      "SELECT " MESSAGE_COLUMNS
      " FROM messages m WHERE m.seq >= (SELECT seq FROM pending_floor WHERE id = 1) "
      "AND " UNANSWERED " ORDER BY m.seq LIMIT ?1");
  statement.bind(1, sql_limit(limit));
  return read_messages(statement);
}

std::size_t advance_pending_floor(sqlite::Connection& db, std::size_t max_rows) {
  auto floor = db.prepare("SELECT seq FROM pending_floor WHERE id = 1");
  if (!floor.step()) return 0;
  const Seq from = floor.int64(0);
  // One pass over the rows, in order: the user messages whose own column is
  // pending, each marked answered when its reply comes among the rows (after
  // it: seqs grow). A look at the reply of each would cost an index search.
  struct Unsettled {
    Seq seq;
    bool answered;
  };
  std::vector<Unsettled> unsettled;
  Seq to = from;
  std::size_t rows = 0;
  {
    auto settled = db.prepare(
        "SELECT seq, role = 'user' AND status = 'pending', reply_to FROM messages "
        "WHERE seq >= ?1 ORDER BY seq LIMIT ?2");
    settled.bind(1, from).bind(2, sql_limit(max_rows));
    while (settled.step()) {
      ++rows;
      to = settled.int64(0) + 1;
      if (settled.int64(1) != 0) {
        unsettled.push_back({settled.int64(0), false});
      } else if (const auto question = settled.optional_int64(2)) {
        const auto it = std::lower_bound(
            unsettled.begin(), unsettled.end(), *question,
            [](const Unsettled& u, Seq seq) { return u.seq < seq; });
        if (it != unsettled.end() && it->seq == *question) it->answered = true;
      }
    }
  }
  // The floor stops at the oldest one without a reply; replies past the rows
  // looked at are searched for.
  for (const auto& u : unsettled) {
    if (u.answered) continue;
    auto reply = db.prepare("SELECT 1 FROM messages WHERE reply_to = ?1");
    reply.bind(1, u.seq);
    if (reply.step()) continue;
    to = u.seq;
    break;
  }
  if (to != from) db.prepare("UPDATE pending_floor SET seq = ?1 WHERE id = 1").bind(1, to).run();
  return rows;
}

Result<std::vector<Session>> list_sessions(sqlite::Connection& db, std::size_t limit,
                                           std::size_t offset) {
  auto statement = db.prepare(
      "SELECT user_id, created_ms, last_seen_ms, delivered_seq FROM sessions "
      "ORDER BY last_seen_ms DESC, user_id LIMIT ?1 OFFSET ?2");
  statement.bind(1, sql_limit(limit)).bind(2, sql_limit(offset));
  std::vector<Session> out;
  while (statement.step()) out.push_back(read_session(statement));
  return out;
}

Result<std::vector<Session>> undelivered_sessions(sqlite::Connection& db, const std::string& prefix,
                                                  std::size_t limit) {
  // The prefix is matched as a range (prefix <= id < prefix + U+10FFFF), not
  // with LIKE, whose wildcards a session id may contain.
  auto statement = db.prepare(
      "SELECT user_id, created_ms, last_seen_ms, delivered_seq FROM sessions s "
      "WHERE user_id >= ?1 AND user_id < ?2 AND EXISTS (SELECT 1 FROM messages m "
      "WHERE m.user_id = s.user_id AND m.seq > s.delivered_seq AND m.role = 'assistant') "
      "ORDER BY user_id LIMIT ?3");
  statement.bind(1, prefix).bind(2, prefix + "\xF4\x8F\xBF\xBF").bind(3, sql_limit(limit));
  std::vector<Session> out;
  while (statement.step()) out.push_back(read_session(statement));
  return out;
}

Result<std::vector<Message>> messages(sqlite::Connection& db, const std::string& user_id,
                                      std::size_t limit, std::optional<Seq> before_seq,
                                      std::size_t max_bytes) {
  // Newest first, so that reading stops at the first row past the budget.
  auto statement = db.prepare("SELECT " MESSAGE_COLUMNS
                              " FROM messages m WHERE m.user_id = ?1 AND m.seq < ?2 "
                              "ORDER BY m.seq DESC LIMIT ?3");
  statement.bind(1, user_id)
      .bind(2, before_seq.value_or(std::numeric_limits<Seq>::max()))
      .bind(3, sql_limit(limit));
  std::vector<Message> out;
  std::size_t bytes = 0;
  while (statement.step()) {
    auto message = read_message(statement);
    if (!message) return message.error();
    std::size_t size = message->content.size();
    for (const auto& image : message->images) size += image.size();
    if (!out.empty() && size > max_bytes - std::min(bytes, max_bytes)) break;
    bytes += size;
    out.push_back(std::move(*message));
  }
  std::reverse(out.begin(), out.end());
  return out;
}

#undef MESSAGE_COLUMNS
#undef UNANSWERED
#undef OUTCOME

}  // namespace mooring::store::queries
