// A conversation: one session id's messages and replies, whatever carries
// them (a web connection, a QQ account through OneBot). It knows nothing of
// frames; a transport hands it messages and takes what it gives back through
// an Outlet.
//
// Promises:
// - a message is stored before the outlet hears it was (stored()); the same
//   client id twice is stored and answered once;
// - messages are answered in order, one reply at a time, each with the last
//   `history_messages` stored messages before it as context;
// - a reply is stored before it is handed to the outlet; the delivered cursor
//   moves only when the outlet says the reply reached the user (delivered());
// - work is handled one item at a time in the order it was queued (messages,
//   requests for stored replies); work queued for an outlet that has since
//   been replaced is dropped;
// - whatever ends a reply (the user's cancel, an operator's cancel, a
//   failure) leaves the conversation able to answer the next message; one
//   cancelled by the host's shutdown stays pending, to be answered after the
//   restart;
// - flow control is the outlet's: it hears pending_changed() after every
//   change of the work held and decides whether to read more; the messages
//   waiting for their reply are counted in the process's buffer budget
//   (net::buffer_budget), which bounds what clients can make it hold.
#pragma once

#include "llm/provider.hpp"
#include "net/buffer_budget.hpp"
#include "runtime/shutdown.hpp"
#include "runtime/supervisor.hpp"
#include "runtime/time.hpp"
#include "runtime/work_gate.hpp"
#include "store/store.hpp"

#include <boost/container/devector.hpp>

#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace mooring::chat {

// What a reply is made with ([chat] and provider.system_prompt).
struct ConversationOptions {
  std::size_t history_messages = 20;
  std::string system_prompt;
  std::size_t max_context_bytes = 256 * 1024;
  friend bool operator==(const ConversationOptions&, const ConversationOptions&) = default;
};

// A message as a transport hands it over.
struct Submission {
  std::string text;
  std::vector<std::string> images;
  std::optional<std::string> client_id;
  // False: kept as context only, never answered.
  bool answer = true;
  // The transport's pass of the work gate (Conversations::gate()), if it took
  // one: held while the host works on the message, given back once the work
  // waits for something outside the host (below) or is done.
  runtime::WorkGate::Pass pass;
};

// What a message's text and images take in memory, for the buffer budgets
// of a message waiting to be taken in or answered.
std::size_t message_bytes(std::string_view text, const std::vector<std::string>& images);

// The side of a conversation that reaches its user. Called on the network
// thread, only while attached.
class Outlet {
 public:
  virtual ~Outlet() = default;

  // `message` was stored as `appended` (or had been: appended.duplicate).
  virtual void stored(const Submission& message, const store::Appended& appended) = 0;
  // Something the user should hear that is not stored: `name` is one of
  // store_error, cancelled, reply_failed; reply_to 0 when about no message.
  // `client_id`: the client id of the message it is about, not stored.
  virtual void error(std::string_view name, std::string_view description, store::Seq reply_to,
                     std::optional<std::string_view> client_id = std::nullopt) = 0;
  // A notice that is not a reply ("there is no reply in progress to cancel").
  virtual void notice(std::string_view text) = 0;

  // A piece of the reply being made to `reply_to`, streamed before it is stored.
  virtual void piece(std::string_view text, store::Seq reply_to) = 0;
  // The reply to `reply_to` has ended: pieces held back go out (`flush`) or
  // are dropped (the reply was cancelled or left for after a restart).
  virtual void pieces_done(store::Seq reply_to, bool flush) = 0;

  // A stored reply for the user. Once it has reached them, the outlet calls
  // Conversation::delivered(reply.seq). `just_cancelled`: the reply stored
  // for a reply cancelled a moment ago (the web says so with a notice).
  virtual void reply(const store::Message& reply, bool just_cancelled) = 0;
  // A stored reply read for a backlog (deliver_after, deliver_undelivered),
  // in seq order; reply() unless the outlet tells the two apart.
  virtual void backlog_reply(const store::Message& reply) { this->reply(reply, false); }
  // A backlog read ended: it reached the newest stored reply, or it stopped
  // before (the outlet could not send its pages in time, the store failed,
  // the host is stopping).
  virtual void backlog_done(bool /*reached_newest*/) {}
  // Every stored reply after this seq has gone to this outlet already: a
  // backlog read stops there. It is told `carried_from(after)` when a read
  // from `after` reached the newest reply; the replies stored since went to
  // it as they were made. The largest seq: nothing is known, read to the end.
  virtual store::Seq carried_after() const { return std::numeric_limits<store::Seq>::max(); }
  virtual void carried_from(store::Seq /*after*/) {}
  // How many stored replies to read at a time for a backlog (and no more than
  // Conversation::backlog_page_bytes of their text), and a wait until the
  // replies handed so far are out (false: they cannot be now, stop).
  virtual std::size_t page_size() const = 0;
  virtual awaitable<bool> drained() = 0;
  // For a page read and not empty: whether `bytes` of memory may be taken
  // for it now, and a wait until they may (false: stop). The page is read
  // again after a wait, not held meanwhile.
  virtual bool room_for_page_now(std::size_t /*bytes*/) { return true; }
  virtual awaitable<bool> room_for_page(std::size_t /*bytes*/) { co_return true; }
  // Before a reply is made: whether a reply made before it has not left yet,
  // and a wait until it has (a user who reads slowly gets one reply made at a
  // time, not one for each message waiting; those wait stored, unanswered).
  virtual bool reply_held() const { return false; }
  virtual awaitable<void> room_for_reply() { co_return; }

  // The work held (messages waiting or being answered, frames being handled) changed.
  virtual void pending_changed(std::size_t pending) = 0;
  // Another outlet took this one's place, or it was detached.
  virtual void detached() {}
  // The host is stopping: a wait in drained() ends now, with false, and
  // later ones at once (the replies not sent yet stay stored, for the next
  // connection after the restart).
  virtual void host_stopping() {}
  // Whether the conversation must stay in memory for this outlet (a web
  // connection is open; a QQ chat has replies to send). When not, a
  // conversation with no work is forgotten and made again when needed.
  virtual bool holds_work() const { return true; }
};

class Conversations;

class Conversation : public std::enable_shared_from_this<Conversation> {
 public:
  // A page of a backlog holds replies up to this much text (a page holds one
  // reply whatever its size): a resume of large replies is read a few at a time.
  static constexpr std::size_t backlog_page_bytes = 1024 * 1024;
  // The first page holds less: most reconnects have little or nothing to
  // catch up on, and room for a whole page, taken by a thousand reconnecting
  // at once, would leave none for anything else a while.
  static constexpr std::size_t first_page_bytes = 64 * 1024;

  Conversation(Conversations& owner, std::string id);
  Conversation(const Conversation&) = delete;
  Conversation& operator=(const Conversation&) = delete;

  const std::string& id() const { return id_; }

  // Replies and notices go to `outlet` from now on; the previous one hears
  // detached() and work queued for it is dropped.
  void attach(std::shared_ptr<Outlet> outlet);
  // Detaches `outlet` if it is the one attached.
  void detach(const Outlet* outlet);
  bool attached() const { return outlet_ != nullptr; }
  Outlet* outlet() const { return outlet_.get(); }

  // Work, handled one item at a time in this order.
  void submit(Submission message);
  // Every stored reply after `after`, or after the delivered cursor.
  void deliver_after(store::Seq after);
  void deliver_undelivered();

  // Cancels the reply being made; false (and the outlet told) when none is.
  bool cancel();

  // The outlet delivered stored reply `seq`: the cursor moves past it. The
  // cursor is written with others every cursor_interval, or `at_once` (for a
  // transport whose user would see a reply sent again after a crash).
  void delivered(store::Seq seq, bool at_once = false);

  // A message stored by a previous run, to be answered.
  void enqueue_reply(store::Message message);

  // Items queued or being handled plus messages waiting for or getting a reply.
  std::size_t pending() const;
  bool idle() const {
    return (!outlet_ || !outlet_->holds_work()) && pending() == 0 && !inbox_running_;
  }

 private:
  struct Undelivered {};
  struct After {
    store::Seq seq;
  };
  using Item = std::variant<Submission, After, Undelivered>;
  struct Queued {
    std::uint64_t generation;
    Item item;
  };
  struct ToAnswer {
    store::Message message;
    Clock::time_point since;  // when the message arrived (or was recovered)
    runtime::WorkGate::Pass pass;  // the message's, while its reply is the next work
  };
  enum class ReplyOutcome { stored, cancelled, host_stopping, broke };

  void push(Item item);
  void pending_changed();
  static awaitable<void> run_inbox(std::shared_ptr<Conversation> self);
  awaitable<void> handle(Queued queued);
  static constexpr std::size_t max_burst = 64;
  std::vector<Submission> take_burst(Queued& first);
  awaitable<void> accept(Submission message);
  awaitable<void> accept_burst(std::vector<Submission> messages);
  awaitable<store::Result<store::Appended>> append(const Submission& message);
  void accepted(Submission& message, const store::Result<store::Appended>& appended);
  awaitable<void> deliver_from(store::Seq after, std::uint64_t generation);

  void queue_reply(store::Message message, runtime::WorkGate::Pass pass = {});
  void start_next_reply();
  static awaitable<void> run_reply(std::shared_ptr<Conversation> self, ToAnswer work);
  awaitable<ReplyOutcome> make_reply(const store::Message& message,
                                     runtime::WorkGate::Pass& pass);
  awaitable<std::vector<llm::ChatMessage>> history_before(const store::Message& message,
                                                          std::size_t bytes_used);
  // `failed`: a reply that failed, or a question marked failed without one
  // (left out of histories with its question: FailedTurns).
  void remember(store::Seq seq, store::Role role, const std::string& content,
                store::Seq reply_to = 0, bool failed = false);
  void trim_recent();
  awaitable<void> store_and_hand_over(store::Seq reply_to, std::string content,
                                      store::MessageStatus status, bool cancelled);
  static awaitable<void> write_cursor(std::shared_ptr<Conversation> self, store::Seq seq);

  void tell_error(std::string_view name, std::string_view description, store::Seq reply_to,
                  std::optional<std::string_view> client_id = std::nullopt);

  store::Store& store();

  Conversations& owner_;
  std::string id_;
  std::shared_ptr<Outlet> outlet_;
  std::uint64_t generation_ = 0;
  // devectors: an idle conversation holds no buffer (a std::deque allocates
  // its first block when it is made).
  boost::container::devector<Queued> inbox_;
  bool inbox_running_ = false;
  bool handling_ = false;  // an item taken from the inbox is being handled
  std::size_t burst_ = 0;  // messages of a burst being stored beside the one handled
  boost::container::devector<ToAnswer> to_answer_;
  // The text of the messages in to_answer_, held against the buffer budget:
  // what users have sent and wait to have answered is memory they chose.
  net::BufferBudget::Share to_answer_share_{net::buffer_budget()};
  runtime::TaskId reply_task_ = 0;
  bool user_cancelled_ = false;
  store::Seq cursor_written_ = 0;

  // The newest stored messages, oldest first: the context of the next
  // replies, without reading the store. Bounded in count and bytes; the
  // store is read when it does not reach back far enough.
  struct Recent {
    store::Seq seq;
    store::Role role;
    bool failed = false;
    store::Seq reply_to = 0;  // a reply's question
    llm::Text content;  // shared with the requests whose history it is
  };
  boost::container::devector<Recent> recent_;
  std::size_t recent_bytes_ = 0;
  std::size_t recent_failed_ = 0;  // of recent_, failed: none, and nothing is left out
  bool recent_loaded_ = false;    // recent_ holds every stored message from its first on
  bool recent_loading_ = false;   // the first read is in flight: stored messages are kept
  bool recent_complete_ = false;  // ... and that first is the conversation's first
};

// Every conversation in memory, and what they share: the supervisor that owns
// their tasks, the store, the provider, the options. A conversation with no
// outlet and no work is forgotten. One thread (the network thread).
class Conversations {
 public:
  // `shutdown` tells a reply cancelled by the host's shutdown (left pending,
  // answered after the restart) from one cancelled by an operator (stored as
  // cancelled). Without it every cancellation is an operator's.
  Conversations(runtime::Supervisor& supervisor, store::Store& store,
                std::shared_ptr<llm::Provider> provider, ConversationOptions options,
                const runtime::ShutdownState* shutdown = nullptr);
  Conversations(const Conversations&) = delete;
  Conversations& operator=(const Conversations&) = delete;

  // The conversation of `id`, made (and given the outlet its transport
  // provides, if any) when not in memory.
  std::shared_ptr<Conversation> get(const std::string& id);
  // The conversation of `id` if it is in memory.
  std::shared_ptr<Conversation> find(std::string_view id) const;
  // (Its conversation being idle, as the ones ending their work check
  // before they ask: a lookup among thousands of ids is a few cache misses.)
  void forget_if_idle(const std::string& id);

  // A transport that owns the ids starting with `prefix` gives each
  // conversation made for such an id its outlet (recovered conversations too).
  using OutletFactory = std::function<void(Conversation&)>;
  void set_outlet_factory(std::string prefix, OutletFactory factory);

  // Answers the messages acknowledged but never answered (the host was killed).
  awaitable<std::size_t> recover();

  void set_provider(std::shared_ptr<llm::Provider> provider) { provider_ = std::move(provider); }
  const std::shared_ptr<llm::Provider>& provider() const { return provider_; }
  void set_options(ConversationOptions options) { options_ = std::move(options); }
  const ConversationOptions& options() const { return options_; }

  std::size_t size() const { return conversations_.size(); }
  // Calls `f` with each conversation in memory.
  void for_each(const std::function<void(Conversation&)>& f) const;
  // The host is stopping: stored replies are no longer read for outlets
  // (a backlog being sent ends after its page), so the drain waits only for
  // the messages read to be stored.
  void stop_deliveries();
  std::size_t replies_in_flight() const;
  std::size_t peak_pending() const { return peak_pending_; }

  // Delivered cursors wait this long to be written together (a crash forgets
  // at most that much; those replies are sent again and clients drop what
  // they have).
  static constexpr runtime::Duration cursor_interval = std::chrono::milliseconds(100);
  // The delivered cursor of `id` as known in memory (written or not), or 0.
  store::Seq known_cursor(std::string_view id) const;

  runtime::Supervisor& supervisor() { return supervisor_; }
  store::Store& store() { return store_; }

  // How many messages the host takes in at once, across conversations: a
  // transport takes a pass for a message before it hands it over, and while
  // none is free it leaves the next ones unread (runtime/work_gate.hpp). The
  // pass is given back when the work waits for something outside the host:
  // the message waits behind other work of its conversation, its reply waits
  // for the user to read the one before, or the provider starts (when it may
  // wait: an upstream); otherwise once the reply is handed over. The work
  // that goes on after such a wait is not counted again, and a pass held
  // longer than work_hold stops counting: the gate bounds what is taken in,
  // not every step of what was.
  static constexpr std::size_t work_at_once = 32;
  static constexpr runtime::Duration work_hold = std::chrono::milliseconds(100);
  runtime::WorkGate& gate() { return *gate_; }
  // Another bound (tests): only before the first message, since the waits
  // on the gate it replaces are never answered.
  void limit_work(std::size_t at_once, runtime::Duration hold);
  bool host_stopping() const { return shutdown_ && shutdown_->begun(); }

 private:
  friend class Conversation;
  void cursor_moved(const std::string& id, store::Seq seq);
  static awaitable<void> write_cursors(Conversations* self, std::shared_ptr<bool> alive);

  runtime::Supervisor& supervisor_;
  store::Store& store_;
  std::shared_ptr<llm::Provider> provider_;
  ConversationOptions options_;
  const runtime::ShutdownState* shutdown_;
  std::map<std::string, std::shared_ptr<Conversation>, std::less<>> conversations_;
  std::vector<std::pair<std::string, OutletFactory>> factories_;
  std::size_t peak_pending_ = 0;
  std::map<std::string, store::Seq, std::less<>> cursors_;  // not written yet
  bool writing_cursors_ = false;
  std::uint64_t made_ = 0;  // conversations made, for the occasional sweep
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
  std::optional<runtime::WorkGate> gate_;

 public:
  ~Conversations() { *alive_ = false; }
};

}  // namespace mooring::chat
