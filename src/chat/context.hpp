// The context a reply is made with (DESIGN.md, [chat]): the stored messages
// just before the user's message, newest first, whole, until
// `history_messages` of them or `max_context_bytes` (the system prompt and the
// new message count first) would be exceeded. The first message that does not
// fit ends the history, so the context never has holes; a new message that
// alone exceeds the budget is still sent, with no history.
#pragma once

#include <algorithm>

#include "llm/provider.hpp"
#include "store/store.hpp"

#include <cstddef>
#include <vector>

namespace mooring::chat {

class HistoryBudget {
 public:
  HistoryBudget(std::size_t max_messages, std::size_t max_bytes, std::size_t bytes_used);

  // Whether older messages may still be taken, and how many to load next:
  // a few at a time, so a history of large messages is never all in memory at once.
  bool wants_more() const { return !full_ && history_.size() < max_messages_; }
  std::size_t next_page() const;

  // Offers the next older message. False when it does not fit; nothing more
  // is taken after that.
  bool add_older(store::Role role, llm::Text content);

  std::size_t bytes() const { return used_; }
  // Oldest first, as a ChatRequest's history.
  std::vector<llm::ChatMessage> take();

  static constexpr std::size_t page_size = 4;

 private:
  std::size_t max_messages_;
  std::size_t max_bytes_;
  std::size_t used_;
  bool full_ = false;
  std::vector<llm::ChatMessage> history_;  // newest first
};

// The turns a history leaves out, seen newest first: a reply that failed (the
// words the user was told, "the provider did not answer in time", are not the
// assistant's) and the question it answered, and a question marked failed
// without a reply. A model given them would repeat them, or see two
// questions in a row.
class FailedTurns {
 public:
  // Whether the message, seen next (older than those before), is left out.
  bool leaves_out(store::Seq seq, store::Role role, bool failed, store::Seq reply_to) {
    if (!failed && questions_.empty()) return false;  // the common case, first
    if (role == store::Role::assistant) {
      if (failed && reply_to != 0) questions_.push_back(reply_to);
      return failed;
    }
    if (failed) return true;
    const auto it = std::find(questions_.begin(), questions_.end(), seq);
    if (it == questions_.end()) return false;
    questions_.erase(it);
    return true;
  }

 private:
  std::vector<store::Seq> questions_;  // of failed replies, not seen yet
};

// The stored messages of `user_id` before message `before`, as many as
// `budget` takes, read from `store` a page at a time, failed turns left out
// (FailedTurns). A store failure is logged and ends the history there.
awaitable<std::vector<llm::ChatMessage>> load_history(store::Store& store, std::string user_id,
                                                      store::Seq before, HistoryBudget budget);

// What a message costs against the budget: its text and its image references.
std::size_t context_bytes(const llm::ChatMessage& message);

}  // namespace mooring::chat
