#include "chat/context.hpp"

#include "runtime/log.hpp"

#include <algorithm>

namespace mooring::chat {

std::size_t context_bytes(const llm::ChatMessage& message) {
  std::size_t n = message.content.size();
  for (const auto& image : message.images) n += image.size();
  return n;
}

HistoryBudget::HistoryBudget(std::size_t max_messages, std::size_t max_bytes,
                             std::size_t bytes_used)
    : max_messages_(max_messages), max_bytes_(max_bytes), used_(bytes_used) {
  full_ = used_ >= max_bytes_;
  // The usual history in one allocation; a larger one grows as it is read.
  history_.reserve(std::min<std::size_t>(max_messages_, 32));
}

std::size_t HistoryBudget::next_page() const {
  return wants_more() ? std::min(page_size, max_messages_ - history_.size()) : 0;
}

bool HistoryBudget::add_older(store::Role role, llm::Text content) {
  if (!wants_more()) return false;
  // Images of earlier messages are not sent again: the text stands for them.
  llm::ChatMessage past{role == store::Role::user ? llm::Role::user : llm::Role::assistant,
                        std::move(content), {}};
  const auto cost = context_bytes(past);
  if (cost > max_bytes_ - used_) {
    full_ = true;
    return false;
  }
  used_ += cost;
  history_.push_back(std::move(past));
  return true;
}

std::vector<llm::ChatMessage> HistoryBudget::take() {
  std::reverse(history_.begin(), history_.end());
  return std::move(history_);
}

awaitable<std::vector<llm::ChatMessage>> load_history(store::Store& store, std::string user_id,
                                                      store::Seq before, HistoryBudget budget) {
  FailedTurns failed;
  while (budget.wants_more()) {
    const auto wanted = budget.next_page();
    auto page = co_await store.messages(user_id, wanted, before);
    if (!page) {
      log::warn("gateway: cannot read the history of {}: {}", user_id, page.error().message);
      break;
    }
    if (page->empty()) break;
    before = page->front().seq;
    const bool last_page = page->size() < wanted;
    for (auto it = page->rbegin(); it != page->rend(); ++it) {
      if (failed.leaves_out(it->seq, it->role, it->status == store::MessageStatus::failed,
                            it->reply_to.value_or(0)))
        continue;
      if (!budget.add_older(it->role, std::move(it->content))) break;
    }
    if (last_page) break;
  }
  co_return budget.take();
}

}  // namespace mooring::chat
