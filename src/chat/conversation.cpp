#include "chat/conversation.hpp"

#include "chat/context.hpp"
#include "runtime/cancellation.hpp"
#include "runtime/exceptions.hpp"
#include "runtime/log.hpp"
#include "runtime/metrics.hpp"

#include <algorithm>
#include <limits>

#include <boost/asio/experimental/parallel_group.hpp>
#include <fmt/format.h>

namespace mooring::chat {

using store::Seq;

namespace {
constexpr std::string_view replies_group = "chat.replies";
constexpr std::string_view nothing_to_cancel = "there is no reply in progress to cancel";
constexpr std::string_view reply_cancelled = "the reply was cancelled";

// For /metrics: what users sent, what they got, and how long they waited.
runtime::Counter& messages_received() {
  static auto& counter = runtime::metrics().counter(
      "mooring_messages_received_total", "User messages stored (a resent duplicate is not counted).");
  return counter;
}
runtime::Counter& replies(std::string_view outcome) {
  const auto find = [](std::string_view name) -> runtime::Counter& {
    return runtime::metrics().counter("mooring_replies_total", "Replies finished, by outcome.",
                                      {{"outcome", std::string(name)}});
  };
  // Looked up once each (a registry lookup locks and allocates).
  static auto& ok = find("ok");
  static auto& failed = find("failed");
  static auto& cancelled = find("cancelled");
  return outcome == "ok" ? ok : outcome == "failed" ? failed : cancelled;
}
runtime::Histogram& round_trip() {
  static auto& histogram = runtime::metrics().histogram(
      "mooring_chat_round_trip_seconds",
      "From a user message's arrival to its reply stored and handed to the user's connection.",
      runtime::latency_buckets());
  return histogram;
}
}  // namespace

// --- Conversation ------------------------------------------------------------

Conversation::Conversation(Conversations& owner, std::string id)
    : owner_(owner), id_(std::move(id)) {}

store::Store& Conversation::store() { return owner_.store_; }

void Conversation::attach(std::shared_ptr<Outlet> outlet) {
  if (outlet_ == outlet) return;
  auto previous = std::exchange(outlet_, std::move(outlet));
  ++generation_;
  if (previous) previous->detached();
  pending_changed();
}

void Conversation::detach(const Outlet* outlet) {
  if (!outlet_ || outlet_.get() != outlet) return;
  auto previous = std::exchange(outlet_, nullptr);
  ++generation_;
  previous->detached();
  owner_.forget_if_idle(id_);
}

std::size_t Conversation::pending() const {
  return inbox_.size() + (handling_ ? 1 : 0) + burst_ + to_answer_.size() +
         (reply_task_ ? 1 : 0);
}

void Conversation::pending_changed() {
  const auto n = pending();
  owner_.peak_pending_ = std::max(owner_.peak_pending_, n);
  if (outlet_) outlet_->pending_changed(n);
}

void Conversation::tell_error(std::string_view name, std::string_view description, Seq reply_to,
                              std::optional<std::string_view> client_id) {
  if (outlet_) outlet_->error(name, description, reply_to, client_id);
}

// --- the inbox: items handled one at a time, in the order they came ---------

void Conversation::submit(Submission message) { push(std::move(message)); }
void Conversation::deliver_after(Seq after) { push(After{after}); }
void Conversation::deliver_undelivered() { push(Undelivered{}); }

void Conversation::push(Item item) {
  // Behind other work of this conversation a message waits: its pass goes back.
  if (inbox_running_)
    if (auto* message = std::get_if<Submission>(&item)) message->pass.release();
  inbox_.push_back(Queued{generation_, std::move(item)});
  pending_changed();
  if (inbox_running_) return;
  inbox_running_ = true;
  owner_.supervisor_.spawn("chat inbox " + id_, "chat.inbox", run_inbox(shared_from_this()));
}

// An item is handled whole: the store runs each operation to its commit, and
// a cancellation is looked at between items. Cancelled (by an operator), the
// inbox drops the items still waiting and says so; the next item starts it again.
awaitable<void> Conversation::run_inbox(std::shared_ptr<Conversation> self) {
  co_await asio::this_coro::throw_if_cancelled(false);
  for (;;) {
    if (self->inbox_.empty()) break;
    const bool cancelled = co_await runtime::cancelled();
    if (cancelled) break;
    auto queued = std::move(self->inbox_.front());
    self->inbox_.pop_front();
    self->handling_ = true;
    try {
      auto burst = self->take_burst(queued);
      if (burst.size() > 1) {
        self->burst_ = burst.size() - 1;
        co_await self->accept_burst(std::move(burst));
      } else {
        co_await self->handle(std::move(queued));
      }
    } catch (const std::exception& e) {
      if (!runtime::is_cancellation(e))
        log::error("chat: work for {} could not be done: {}", self->id_, log::elide(e.what()));
    }
    self->handling_ = false;
    self->burst_ = 0;
    self->pending_changed();
  }
  if (const auto dropped = self->inbox_.size(); dropped > 0) {
    self->inbox_.clear();
    log::info("chat: the inbox of {} was cancelled; {} item(s) dropped", self->id_, dropped);
    const auto told =
        fmt::format("{} frame(s) were dropped unhandled; send any message again", dropped);
    self->tell_error("cancelled", told, 0);
  }
  self->inbox_ = decltype(inbox_)();  // its buffer goes back: an idle conversation holds none
  self->inbox_running_ = false;
  self->pending_changed();
  if (self->idle()) self->owner_.forget_if_idle(self->id_);
}

// The messages at the inbox's front, `first` and those queued right behind
// it for the same outlet, up to max_burst; empty when `first` is no message.
std::vector<Submission> Conversation::take_burst(Queued& first) {
  std::vector<Submission> burst;
  auto* message = std::get_if<Submission>(&first.item);
  if (!message || first.generation != generation_ || inbox_.empty() ||
      !std::holds_alternative<Submission>(inbox_.front().item) ||
      inbox_.front().generation != generation_)
    return burst;
  burst.push_back(std::move(*message));
  while (burst.size() < max_burst && !inbox_.empty() &&
         std::holds_alternative<Submission>(inbox_.front().item) &&
         inbox_.front().generation == generation_) {
    burst.push_back(std::get<Submission>(std::move(inbox_.front().item)));
    inbox_.pop_front();
  }
  return burst;
}

awaitable<void> Conversation::handle(Queued queued) {
  if (queued.generation != generation_) co_return;  // for an outlet since replaced
  if (auto* message = std::get_if<Submission>(&queued.item)) {
    co_await accept(std::move(*message));
  } else if (owner_.host_stopping()) {
    co_return;  // the replies stay stored for the next connection
  } else if (auto* after = std::get_if<After>(&queued.item)) {
    co_await deliver_from(after->seq, queued.generation);
  } else {
    auto session = co_await store().session(id_);
    const Seq stored_cursor = session && *session ? (*session)->delivered_seq : 0;
    // A cursor moved in memory and not written yet counts too.
    const Seq after_seq = std::max({stored_cursor, cursor_written_, owner_.known_cursor(id_)});
    co_await deliver_from(after_seq, queued.generation);
  }
}

// The store takes copies: the message is acknowledged and answered after.
awaitable<store::Result<store::Appended>> Conversation::append(const Submission& message) {
  // No co_await inside ?: (GCC 12 freed its operands twice).
  if (message.answer)
    co_return co_await store().append_user_message(id_, message.text, message.images,
                                                   message.client_id);
  co_return co_await store().append_context_message(id_, message.text, message.images,
                                                    message.client_id);
}

awaitable<void> Conversation::accept(Submission message) {
  auto appended = co_await append(message);
  accepted(message, appended);
}

// Messages queued one behind another (a busy group, a burst from one client,
// the messages held for a full chat handed over at a stop) are stored
// together, in one commit, and then acknowledged and answered in order.
awaitable<void> Conversation::accept_burst(std::vector<Submission> messages) {
  const auto executor = co_await asio::this_coro::executor;
  using Append = decltype(asio::co_spawn(executor, append(messages.front()), asio::deferred));
  std::vector<Append> appends;
  appends.reserve(messages.size());
  for (const auto& message : messages)
    appends.push_back(asio::co_spawn(executor, append(message), asio::deferred));
  auto [order, failures, outcomes] =
      co_await asio::experimental::make_parallel_group(std::move(appends))
          .async_wait(asio::experimental::wait_for_all(), asio::use_awaitable);
  for (std::size_t i = 0; i < messages.size(); ++i) {
    if (failures[i]) {
      log::error("chat: storing a message from {} failed: {}", id_,
                 runtime::describe_exception(failures[i]));
      outcomes[i] = store::StoreError{store::StoreError::Kind::internal, "not stored"};
    }
    accepted(messages[i], outcomes[i]);
  }
}

void Conversation::accepted(Submission& message,
                            const store::Result<store::Appended>& appended) {
  if (!appended) {
    // The store logs its faults once and summarises repeats; a line per
    // refused message would be a storm.
    log::debug("chat: cannot store a message from {}: {}", id_, appended.error().message);
    tell_error("store_error", "the message could not be stored; it was not received, send it again",
               0, message.client_id);
    return;
  }
  if (outlet_) outlet_->stored(message, *appended);
  if (appended->duplicate) return;  // stored and answered (or being answered) once
  messages_received().inc();
  remember(appended->seq, store::Role::user, message.text);
  if (!message.answer) return;
  // Counted as the item being handled until run_inbox lets go of it.
  queue_reply(store::Message{.seq = appended->seq,
                             .user_id = id_,
                             .role = store::Role::user,
                             .content = std::move(message.text),
                             .images = std::move(message.images),
                             .client_id = std::move(message.client_id)},
              std::move(message.pass));
}

// Stored replies go out a page at a time, each page once the outlet has sent
// the previous one: a long history asked for again neither overruns the
// connection nor stops at the store's page size.
awaitable<void> Conversation::deliver_from(Seq after, std::uint64_t generation) {
  auto outlet = outlet_;
  if (!outlet) co_return;
  // However this ends, the outlet hears whether it reached the newest reply.
  bool reached_newest = false;
  struct Done {
    Outlet& outlet;
    const bool& reached_newest;
    ~Done() { outlet.backlog_done(reached_newest); }
  } done{*outlet, reached_newest};
  // What came after `until` went to this outlet already (a resume asking
  // again): the read stops there, and from then on covers `after` too.
  const Seq from = after;
  const Seq until = outlet->carried_after();
  const auto reached = [&] {
    reached_newest = true;
    outlet->carried_from(from);
  };
  if (from >= until) {
    reached();
    co_return;
  }
  const std::size_t page = std::max<std::size_t>(1, outlet->page_size());
  std::size_t page_bytes = first_page_bytes;
  for (;;) {
    auto replies = co_await store().replies_after(id_, after, page, page_bytes);
    if (!replies) {
      log::error("chat: cannot read stored replies for {}: {}", id_, replies.error().message);
      co_return;
    }
    if (generation != generation_) co_return;
    // A page with nothing in it needs no room: a user with nothing to catch
    // up on (a new one) is not held up while others hold the budget. One
    // that must wait for room is let go meanwhile, and read again.
    if (!replies->empty() && !outlet->room_for_page_now(page_bytes)) {
      replies->clear();
      replies->shrink_to_fit();
      const bool room = co_await outlet->room_for_page(page_bytes);
      if (!room || generation != generation_) co_return;
      continue;
    }
    std::size_t bytes = 0;
    for (const auto& reply : *replies) {
      if (reply.seq > until) {
        reached();
        co_return;
      }
      bytes += reply.content.size();
      outlet->backlog_reply(reply);
    }
    if (replies->size() < page && bytes < page_bytes) {
      reached();
      co_return;
    }
    after = replies->back().seq;
    page_bytes = backlog_page_bytes;
    if (owner_.host_stopping()) co_return;
    const bool out = co_await outlet->drained();
    if (!out || generation != generation_) co_return;
  }
}

void Conversation::delivered(Seq seq, bool at_once) {
  if (seq <= cursor_written_) return;
  cursor_written_ = seq;
  if (at_once) {
    owner_.supervisor_.spawn("chat cursor " + id_, "chat.cursor",
                             write_cursor(shared_from_this(), seq));
  } else {
    owner_.cursor_moved(id_, seq);
  }
}

// Runs to its end even when cancelled: one store write, bounded by the disk.
awaitable<void> Conversation::write_cursor(std::shared_ptr<Conversation> self, Seq seq) {
  co_await asio::this_coro::throw_if_cancelled(false);
  auto done = co_await self->store().advance_delivered(self->id_, seq);
  if (!done) log::warn("chat: cannot record delivery to {}: {}", self->id_, done.error().message);
}

// --- replies: one at a time, in order ---------------------------------------

void Conversation::enqueue_reply(store::Message message) {
  queue_reply(std::move(message));
  pending_changed();
}

std::size_t message_bytes(std::string_view text, const std::vector<std::string>& images) {
  std::size_t bytes = text.size();
  for (const auto& image : images) bytes += image.size();
  return bytes;
}

void Conversation::queue_reply(store::Message message, runtime::WorkGate::Pass pass) {
  to_answer_share_.set(to_answer_share_.bytes() + message_bytes(message.content, message.images));
  // Behind another reply the message waits: its pass goes back.
  if (reply_task_ || !to_answer_.empty()) pass.release();
  to_answer_.push_back(ToAnswer{std::move(message), Clock::now(), std::move(pass)});
  start_next_reply();
}

void Conversation::start_next_reply() {
  if (reply_task_ || to_answer_.empty()) return;
  auto work = std::move(to_answer_.front());
  to_answer_.pop_front();
  to_answer_share_.set(to_answer_share_.bytes() -
                       message_bytes(work.message.content, work.message.images));
  if (to_answer_.empty() && to_answer_.capacity() > 16) to_answer_ = decltype(to_answer_)();
  user_cancelled_ = false;
  auto name = fmt::format("chat reply {} #{}", id_, work.message.seq);
  reply_task_ = owner_.supervisor_.spawn(std::move(name), std::string(replies_group),
                                         run_reply(shared_from_this(), std::move(work)));
}

bool Conversation::cancel() {
  if (!reply_task_) {
    if (outlet_) outlet_->notice(nothing_to_cancel);
    return false;
  }
  user_cancelled_ = true;
  owner_.supervisor_.cancel(reply_task_);
  return true;
}

// However the reply ends, reply_task_ is cleared and the next message is
// answered, unless the host is stopping (then the message stays pending, to
// be answered after the restart).
awaitable<void> Conversation::run_reply(std::shared_ptr<Conversation> self, ToAnswer work) {
  const auto& message = work.message;
  ReplyOutcome outcome = ReplyOutcome::broke;
  std::string escaped;  // what was thrown out of the reply
  try {
    outcome = co_await self->make_reply(message, work.pass);
  } catch (const std::exception& e) {
    if (runtime::is_cancellation(e)) {
      outcome = ReplyOutcome::cancelled;
    } else {
      escaped = e.what();
    }
  }
  const bool user_cancelled = std::exchange(self->user_cancelled_, false);
  if (outcome == ReplyOutcome::cancelled && !user_cancelled && self->owner_.host_stopping())
    outcome = ReplyOutcome::host_stopping;
  co_await asio::this_coro::reset_cancellation_state();
  co_await asio::this_coro::throw_if_cancelled(false);
  try {
    switch (outcome) {
      case ReplyOutcome::broke: {
        replies("failed").inc();
        // A failure below the chat layer: the user hears that it failed.
        log::error("chat: the reply to {} #{} failed: {}", self->id_, message.seq,
                   log::elide(escaped));
        std::string told = "the reply failed unexpectedly; ask again";
        co_await self->store_and_hand_over(message.seq, std::move(told),
                                           store::MessageStatus::failed, false);
        break;
      }
      case ReplyOutcome::cancelled: {
        replies("cancelled").inc();
        // By the user or by an operator: stored as cancelled and said so.
        std::string told(reply_cancelled);
        co_await self->store_and_hand_over(message.seq, std::move(told),
                                           store::MessageStatus::failed, true);
        break;
      }
      case ReplyOutcome::stored:
        round_trip().observe(std::chrono::duration<double>(Clock::now() - work.since).count());
        if (user_cancelled && self->outlet_) self->outlet_->notice(nothing_to_cancel);
        break;
      case ReplyOutcome::host_stopping:
        break;
    }
  } catch (const std::exception& e) {
    log::error("chat: the end of the reply to {} #{} failed: {}", self->id_, message.seq,
               log::elide(e.what()));
  }
  self->reply_task_ = 0;
  if (outcome != ReplyOutcome::host_stopping) self->start_next_reply();
  self->pending_changed();
  if (self->idle()) self->owner_.forget_if_idle(self->id_);
}

awaitable<Conversation::ReplyOutcome> Conversation::make_reply(const store::Message& message,
                                                               runtime::WorkGate::Pass& pass) {
  if (outlet_ && outlet_->reply_held()) {
    pass.release();  // the wait is the user's
    auto outlet = outlet_;
    co_await outlet->room_for_reply();
  }
  const auto& options = owner_.options_;
  llm::ChatRequest request;
  request.system_prompt = options.system_prompt;
  request.message = {llm::Role::user, message.content, message.images};
  // What came before this message; messages sent after it, waiting their
  // turn, are not its context.
  const auto used = request.system_prompt.size() + context_bytes(request.message);
  request.history = co_await history_before(message, used);
  // The provider in force when the reply starts serves all of it.
  auto provider = owner_.provider_;
  if (provider->may_wait()) pass.release();  // the wait is the upstream's
  const Seq reply_to = message.seq;
  if (outlet_) outlet_->pieces_done(reply_to, false);
  // What the user saw of a reply an upstream cuts short is kept with its
  // failure, not replaced by it (bounded as the reply is, by the provider).
  const bool keep_pieces = provider->may_wait();
  std::string streamed;
  auto result = co_await provider->complete(
      request, [this, reply_to, keep_pieces, &streamed](std::string_view piece) {
        if (piece.empty()) return;  // the provider at work, nothing to show
        if (keep_pieces) streamed += piece;
        if (outlet_) outlet_->piece(piece, reply_to);
      });
  if (!result && (result.error().kind == llm::ProviderError::Kind::shutting_down ||
                  result.error().kind == llm::ProviderError::Kind::cancelled)) {
    if (outlet_) outlet_->pieces_done(reply_to, false);
    co_return result.error().kind == llm::ProviderError::Kind::shutting_down
        ? ReplyOutcome::host_stopping
        : ReplyOutcome::cancelled;
  }
  if (outlet_) outlet_->pieces_done(reply_to, true);
  // Named first: with GCC 12, a `?:` building a string temporary among a
  // co_await's arguments corrupted the heap.
  const bool ok = result.has_value();
  replies(ok ? "ok" : "failed").inc();
  std::string content;
  if (ok) {
    content = std::move(*result);
  } else if (streamed.empty()) {
    content = result.error().message;
  } else {
    content = std::move(streamed);
    content += "\n\n(" + result.error().message + ")";
  }
  const auto status = ok ? store::MessageStatus::answered : store::MessageStatus::failed;
  co_await store_and_hand_over(reply_to, std::move(content), status, false);
  pass.release();
  co_return ReplyOutcome::stored;
}

// The final reply (or failure) is stored before it is handed over.
awaitable<void> Conversation::store_and_hand_over(Seq reply_to, std::string content,
                                                  store::MessageStatus status, bool cancelled) {
  auto stored = co_await store().store_reply(id_, reply_to, content, status);
  if (!stored) {
    log::debug("chat: cannot store the reply to {} #{}: {}", id_, reply_to, stored.error().message);
    std::string told(cancelled ? reply_cancelled : "the reply could not be stored; ask again");
    if (cancelled) {
      if (outlet_) outlet_->notice(told);
    } else {
      tell_error("store_error", told, reply_to);
    }
    // What the user was told is the message's outcome: it is not answered
    // again after a restart (the store keeps it in memory while its disk
    // refuses writes).
    co_await store().mark_failed(id_, reply_to, std::move(told));
    co_return;
  }
  remember(*stored, store::Role::assistant, content, reply_to,
           status == store::MessageStatus::failed);
  if (outlet_)
    outlet_->reply(store::Message{.seq = *stored,
                                  .user_id = id_,
                                  .role = store::Role::assistant,
                                  .content = std::move(content),
                                  .reply_to = reply_to,
                                  .status = status},
                   cancelled);
}

// --- the recent messages: context without reading the store -----------------

namespace {
// What the recent messages keep: enough for the history of the oldest message
// still waiting (the newer ones sit after it), within a byte budget.
std::size_t recent_count(const ConversationOptions& options) { return options.history_messages + 64; }
std::size_t recent_bytes(const ConversationOptions& options) {
  return 2 * options.max_context_bytes + 256 * 1024;
}
}  // namespace

void Conversation::remember(Seq seq, store::Role role, const std::string& content, Seq reply_to,
                            bool failed) {
  if (!recent_loaded_ && !recent_loading_) return;  // the first read brings it
  auto at = recent_.end();
  while (at != recent_.begin() && std::prev(at)->seq >= seq) --at;
  if (at != recent_.end() && at->seq == seq) return;  // known already
  recent_.insert(at, Recent{seq, role, failed, reply_to, llm::Text(content)});
  if (failed) ++recent_failed_;
  recent_bytes_ += content.size();
  trim_recent();
}

void Conversation::trim_recent() {
  const auto& options = owner_.options_;
  while (recent_.size() > 1 &&
         (recent_.size() > recent_count(options) || recent_bytes_ > recent_bytes(options))) {
    recent_bytes_ -= recent_.front().content.size();
    if (recent_.front().failed) --recent_failed_;
    recent_.pop_front();
    recent_complete_ = false;
  }
}

// The history of `message` from the recent messages; the store is read once
// to fill them, and again only when they do not reach back far enough.
awaitable<std::vector<llm::ChatMessage>> Conversation::history_before(const store::Message& message,
                                                                      std::size_t bytes_used) {
  const auto& options = owner_.options_;
  if (!recent_loaded_ && !recent_loading_) {
    recent_loading_ = true;
    const auto wanted = recent_count(options);
    auto page = co_await store().messages(id_, wanted);
    recent_loading_ = false;
    if (page) {
      // Fewer than asked for: the page is the whole conversation so far.
      const bool everything = page->size() < wanted;
      const Seq first = page->empty() ? std::numeric_limits<Seq>::max() : page->front().seq;
      recent_loaded_ = true;
      for (auto& stored : *page)
        remember(stored.seq, stored.role, stored.content, stored.reply_to.value_or(0),
                 stored.status == store::MessageStatus::failed);
      recent_complete_ = everything && (recent_.empty() || recent_.front().seq <= first);
    }
  }
  if (recent_loaded_) {
    HistoryBudget budget(options.history_messages, options.max_context_bytes, bytes_used);
    FailedTurns failed;
    bool reached_back = false;
    for (auto it = recent_.rbegin(); it != recent_.rend(); ++it) {
      if (it->seq >= message.seq) continue;
      if (recent_failed_ > 0 && failed.leaves_out(it->seq, it->role, it->failed, it->reply_to))
        continue;
      if (!budget.wants_more() ||
          !budget.add_older(it->role, it->content)) {
        reached_back = true;
        break;
      }
    }
    if (reached_back || !budget.wants_more() || recent_complete_) co_return budget.take();
  }
  // Named first: no temporaries among a co_await's operands (GCC 12).
  std::string id = id_;
  HistoryBudget budget(options.history_messages, options.max_context_bytes, bytes_used);
  auto history = co_await load_history(store(), std::move(id), message.seq, std::move(budget));
  co_return history;
}

// --- Conversations ------------------------------------------------------------

Conversations::Conversations(runtime::Supervisor& supervisor, store::Store& store,
                             std::shared_ptr<llm::Provider> provider, ConversationOptions options,
                             const runtime::ShutdownState* shutdown)
    : supervisor_(supervisor),
      store_(store),
      provider_(std::move(provider)),
      options_(std::move(options)),
      shutdown_(shutdown) {
  limit_work(work_at_once, work_hold);
}

void Conversations::limit_work(std::size_t at_once, runtime::Duration hold) {
  gate_.emplace(supervisor_.io_executor(), at_once, hold);
}

std::shared_ptr<Conversation> Conversations::get(const std::string& id) {
  if (auto it = conversations_.find(id); it != conversations_.end()) return it->second;
  // Now and then the conversations whose outlets let them go (a QQ chat
  // idle for a while) are forgotten, so their number stays bounded.
  if (++made_ % 256 == 0) {
    for (auto it = conversations_.begin(); it != conversations_.end();)
      it = it->second->idle() ? conversations_.erase(it) : std::next(it);
  }
  auto created = std::make_shared<Conversation>(*this, id);
  conversations_.emplace(id, created);
  for (const auto& [prefix, factory] : factories_) {
    if (id.starts_with(prefix)) {
      if (factory) factory(*created);
      break;
    }
  }
  return created;
}

std::shared_ptr<Conversation> Conversations::find(std::string_view id) const {
  auto it = conversations_.find(id);
  return it == conversations_.end() ? nullptr : it->second;
}

void Conversations::forget_if_idle(const std::string& id) {
  auto it = conversations_.find(id);
  if (it != conversations_.end() && it->second->idle()) conversations_.erase(it);
}

void Conversations::set_outlet_factory(std::string prefix, OutletFactory factory) {
  for (auto& [known, f] : factories_) {
    if (known == prefix) {
      f = std::move(factory);
      return;
    }
  }
  factories_.emplace_back(std::move(prefix), std::move(factory));
}

void Conversations::for_each(const std::function<void(Conversation&)>& f) const {
  for (const auto& [id, conversation] : conversations_) f(*conversation);
}

void Conversations::stop_deliveries() {
  for (const auto& [id, conversation] : conversations_) {
    if (auto* outlet = conversation->outlet()) outlet->host_stopping();
  }
}

Seq Conversations::known_cursor(std::string_view id) const {
  auto it = cursors_.find(id);
  return it == cursors_.end() ? 0 : it->second;
}

void Conversations::cursor_moved(const std::string& id, Seq seq) {
  auto& known = cursors_[id];
  known = std::max(known, seq);
  if (writing_cursors_) return;
  writing_cursors_ = true;
  supervisor_.spawn("chat cursors", "chat.cursor", write_cursors(this, alive_));
}

// One store write for every cursor moved in the last cursor_interval. Runs
// to its end when cancelled (the host stopping): the cursors are written then.
awaitable<void> Conversations::write_cursors(Conversations* self, std::shared_ptr<bool> alive) {
  co_await asio::this_coro::throw_if_cancelled(false);
  co_await runtime::sleep_for(cursor_interval);
  while (*alive && !self->cursors_.empty()) {
    std::vector<std::pair<std::string, Seq>> batch(self->cursors_.begin(), self->cursors_.end());
    auto written = co_await self->store_.advance_delivered(batch);
    if (!*alive) co_return;
    if (!written)
      log::warn("chat: cannot record delivery to {} session(s): {}", batch.size(),
                written.error().message);
    // Forget what was written, unless it moved again meanwhile.
    for (const auto& [id, seq] : batch) {
      auto it = self->cursors_.find(id);
      if (it != self->cursors_.end() && it->second == seq) self->cursors_.erase(it);
    }
    if (!written) break;  // the store logs its faults; the next delivery tries again
  }
  if (*alive) self->writing_cursors_ = false;
}

std::size_t Conversations::replies_in_flight() const { return supervisor_.group_size(replies_group); }

awaitable<std::size_t> Conversations::recover() {
  // All of them in one read: a message stored after it (a client quick to
  // reconnect) is answered as it arrives, so a second page could see it twice.
  auto pending = co_await store_.pending_messages(std::numeric_limits<std::size_t>::max());
  if (!pending) {
    log::error(
        "chat: cannot read the messages the previous run left unanswered: {}; they stay "
        "stored and are answered after a restart that can read them",
        pending.error().message);
    co_return 0;
  }
  for (auto& message : *pending) {
    auto id = message.user_id;
    get(id)->enqueue_reply(std::move(message));
  }
  if (!pending->empty())
    log::info("chat: answering {} message(s) left unanswered by the previous run", pending->size());
  co_return pending->size();
}

}  // namespace mooring::chat
