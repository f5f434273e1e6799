// What the store keeps and hands out: sessions, messages, and StoreError, the
// one failure type of every store operation, with a message an operator can act on.
#pragma once

#include <boost/system/result.hpp>

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace mooring::store {

// A message's place in the global order of all messages (SQLite rowid, never reused).
using Seq = std::int64_t;

enum class Role { user, assistant };

// A user message is `pending` until a reply is stored for it, then `answered`
// (or `failed` when the reply reports a failure, or when the user was told it
// could not be answered: Store::mark_failed). A reply carries the status it gave
// its user message. A message kept as context only (Store::append_context_message)
// is `answered` with no reply.
enum class MessageStatus { pending, answered, failed };

std::string_view to_string(Role role);
std::string_view to_string(MessageStatus status);
std::optional<Role> parse_role(std::string_view text);
std::optional<MessageStatus> parse_status(std::string_view text);

struct Message {
  Seq seq = 0;
  std::string user_id;
  Role role = Role::user;
  std::string content;
  // Image references as the client sent them (data: URLs or https:// URLs).
  std::vector<std::string> images;
  // The client's own id for a user message, unique per user; none for replies.
  std::optional<std::string> client_id;
  // For a reply: the seq of the user message it answers.
  std::optional<Seq> reply_to;
  MessageStatus status = MessageStatus::pending;
  // Unix time in milliseconds.
  std::int64_t created_ms = 0;
  std::int64_t updated_ms = 0;
  // For a user message marked failed without a reply: what its user was told.
  std::optional<std::string> failure;
};

struct Session {
  std::string user_id;
  std::int64_t created_ms = 0;
  std::int64_t last_seen_ms = 0;
  // The last reply seq known to have been written to the user's socket.
  Seq delivered_seq = 0;
};

// The outcome of storing a user message.
struct Appended {
  Seq seq = 0;
  // True when a message with the same client id was stored before: `seq` and
  // `status` are that first message's.
  bool duplicate = false;
  MessageStatus status = MessageStatus::pending;
};

struct StoreError {
  enum class Kind {
    closed,            // the store was closed (or is closing): nothing was done
    overloaded,        // the queue was full: nothing was done, try later
    io,                // the disk or the file system refused (full, read-only, locked)
    corrupt,           // the file is not a SQLite database or is damaged
    schema_too_new,    // written by a newer mooring
    not_found,         // the message or session named does not exist
    invalid_argument,  // the request cannot be right (a reply to a reply)
    internal,          // a bug: a statement that should not fail did
  };
  Kind kind = Kind::internal;
  std::string message;
};

std::string_view to_string(StoreError::Kind kind);

// Whether the store can do its work, for readiness and the admin status.
struct Health {
  enum class State {
    ok,        // writes succeed
    degraded,  // writes fail (disk full, unwritable file); back to ok by itself once one succeeds
    failed,    // the database is damaged; stays so until mooring is restarted on a sound file
  };
  State state = State::ok;
  // What went wrong last, as an operator reads it; empty while ok since open.
  std::string last_error;
  // When the store entered `state`.
  std::chrono::system_clock::time_point since;
  // Operations that failed since the store left ok.
  std::uint64_t failures = 0;
};

std::string_view to_string(Health::State state);

template <typename T = void>
using Result = boost::system::result<T, StoreError>;

// Lets Result<T>::value() throw (std::runtime_error with the message) for code
// that treats a store failure as fatal; boost::system::result finds it by ADL.
[[noreturn]] void throw_exception_from_error(const StoreError& error,
                                             const boost::source_location& location);

}  // namespace mooring::store
