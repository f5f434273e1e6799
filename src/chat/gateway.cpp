#include "chat/gateway.hpp"

#include "chat/context.hpp"
#include "chat/user_token.hpp"
#include "runtime/cancellation.hpp"
#include "runtime/log.hpp"
#include "runtime/metrics.hpp"
#include "runtime/time.hpp"

#include <algorithm>
#include <deque>
#include <set>

#include <fmt/format.h>

namespace mooring::chat {

namespace {
// For /metrics: what users sent and what they got.
runtime::Counter& messages_received() {
  static auto& counter = runtime::metrics().counter(
      "mooring_messages_received_total", "User messages stored (a resent duplicate is not counted).");
  return counter;
}
runtime::Counter& replies(std::string_view outcome) {
  return runtime::metrics().counter("mooring_replies_total", "Replies finished, by outcome.",
                                    {{"outcome", std::string(outcome)}});
}
}  // namespace

namespace http = net::http;
using store::Seq;

namespace {
constexpr std::string_view replies_group = "chat.replies";
constexpr std::string_view nothing_to_cancel = "there is no reply in progress to cancel";
}  // namespace

// One user's conversation: the current connection (if any), the frames waiting
// to be handled, and the messages waiting for a reply. Touched only on the
// network thread; its tasks hold a shared_ptr to it.
class Gateway::Session : public std::enable_shared_from_this<Session> {
 public:
  Session(Gateway& gateway, std::string user_id)
      : gateway_(gateway), user_id_(std::move(user_id)), written_(gateway.supervisor_.executor()) {}

  const std::string& user_id() const { return user_id_; }
  bool connected() const { return connection_ != nullptr; }
  bool idle() const { return !connection_ && pending() == 0 && !inbox_running_; }

  void attach(const std::shared_ptr<net::WsConnection>& connection) {
    if (connection_) {
      log::info("gateway: {} connected again; replacing the previous connection", user_id_);
      connection_->close(static_cast<net::websocket::close_code>(4000),
                         "replaced by a newer connection");
    }
    connection_ = connection;
    const auto generation = ++generation_;
    sent_.clear();
    replies_queued_ = replies_written_ = 0;
    drop_held_pieces();  // the new connection streams from the next piece on
    written_.notify_all();  // a backlog being paged out for the old connection stops
    std::weak_ptr<Session> weak = weak_from_this();
    connection->on_text = [weak, generation](std::string text) {
      if (auto self = weak.lock()) self->on_text(generation, std::move(text));
    };
    connection->on_closed = [weak, generation](const net::WsClosed&) {
      if (auto self = weak.lock()) self->on_closed(generation);
    };
    // Whatever was stored while the user was away goes out first.
    push(generation, Backlog{});
  }

  // A message stored earlier (by a previous run) to be answered.
  void enqueue_reply(store::Message message) {
    queue_reply(std::move(message));
    pending_changed();
  }

 private:
  struct Backlog {};
  using Item = std::variant<UserMessage, Resume, Backlog>;
  struct Queued {
    std::uint64_t generation;
    Item item;
  };
  enum class ReplyOutcome { stored, cancelled, host_stopping, broke };

  void on_text(std::uint64_t generation, std::string text) {
    if (generation != generation_) return;
    auto frame = parse_client_frame(text);
    if (auto* error = std::get_if<ProtocolError>(&frame)) {
      send(error_frame(error->name, error->description));
    } else if (std::holds_alternative<Cancel>(frame)) {
      cancel_reply();
    } else if (auto* message = std::get_if<UserMessage>(&frame)) {
      if (!gateway_.admit_message(user_id_)) {
        send(error_frame("rate_limited",
                         fmt::format("at most {} messages a minute; this one was not stored, send "
                                     "it again later",
                                     gateway_.options_.max_messages_per_minute)));
        return;
      }
      push(generation, std::move(*message));
    } else {
      push(generation, std::get<Resume>(frame));
    }
  }

  void on_closed(std::uint64_t generation) {
    if (generation != generation_) return;
    connection_.reset();
    sent_.clear();
    written_.notify_all();
    gateway_.forget_if_idle(user_id_);
  }

  // --- flow control ---------------------------------------------------------

  // Frames not yet handled and messages not yet answered: what a client can
  // make this session hold. Reading stops while it is at the limit.
  std::size_t pending() const {
    return inbox_.size() + (handling_ ? 1 : 0) + to_answer_.size() + (reply_task_ ? 1 : 0);
  }

  // Called after every change of pending().
  void pending_changed() {
    const auto n = pending();
    gateway_.peak_pending_ = std::max(gateway_.peak_pending_, n);
    if (!connection_) return;
    if (n >= std::max<std::size_t>(1, gateway_.options_.max_pending_messages)) {
      connection_->pause_reading();
    } else if (connection_->reading_paused()) {
      connection_->resume_reading();
    }
  }

  // --- the inbox: frames handled one at a time, in the order they arrived ---

  void push(std::uint64_t generation, Item item) {
    inbox_.push_back(Queued{generation, std::move(item)});
    pending_changed();
    if (inbox_running_) return;
    inbox_running_ = true;
    gateway_.supervisor_.spawn("chat inbox " + user_id_, "chat.inbox", run_inbox(shared_from_this()));
  }

  // A frame is handled whole: the store runs each operation to its commit, and
  // a cancellation is looked at between frames. Cancelled (by an operator),
  // the inbox drops the frames still waiting and tells the client; the next
  // frame starts it again.
  static awaitable<void> run_inbox(std::shared_ptr<Session> self) {
    co_await asio::this_coro::throw_if_cancelled(false);
    while (!self->inbox_.empty() && !co_await runtime::cancelled()) {
      auto queued = std::move(self->inbox_.front());
      self->inbox_.pop_front();
      self->handling_ = true;
      try {
        co_await self->handle(std::move(queued));
      } catch (const std::exception& e) {
        if (!runtime::is_cancellation(e))
          log::error("gateway: a frame from {} could not be handled: {}", self->user_id_,
                     log::elide(e.what()));
      }
      self->handling_ = false;
      self->pending_changed();
    }
    if (const auto dropped = self->inbox_.size(); dropped > 0) {
      self->inbox_.clear();
      log::info("gateway: the inbox of {} was cancelled; {} frame(s) dropped", self->user_id_, dropped);
      self->send(error_frame("cancelled", fmt::format("{} frame(s) were dropped unhandled; send "
                                                      "any message again",
                                                      dropped)));
    }
    self->inbox_running_ = false;
    self->pending_changed();
    self->gateway_.forget_if_idle(self->user_id_);
  }

  awaitable<void> handle(Queued queued) {
    if (queued.generation != generation_) co_return;  // from a replaced connection
    if (auto* message = std::get_if<UserMessage>(&queued.item)) {
      co_await accept_message(std::move(*message));
    } else if (auto* resume = std::get_if<Resume>(&queued.item)) {
      co_await deliver_after(resume->after, queued.generation);
    } else {
      auto session = co_await store().session(user_id_);
      const Seq after = session && *session ? (*session)->delivered_seq : 0;
      co_await deliver_after(after, queued.generation);
    }
  }

  awaitable<void> accept_message(UserMessage message) {
    auto appended = co_await store().append_user_message(user_id_, message.text, message.images,
                                                         message.id);
    if (!appended) {
      // The store logs its faults once and summarises repeats; a line per
      // refused message would be a storm.
      log::debug("gateway: cannot store a message from {}: {}", user_id_, appended.error().message);
      send(error_frame("store_error",
                       "the message could not be stored; it was not received, send it again"));
      co_return;
    }
    if (message.id) send(ack_frame(*message.id, appended->seq));
    if (appended->duplicate) co_return;  // stored and answered (or being answered) once
    messages_received().inc();
    // Counted as the frame being handled until run_inbox lets go of it.
    queue_reply(store::Message{.seq = appended->seq,
                                 .user_id = user_id_,
                                 .role = store::Role::user,
                                 .content = std::move(message.text),
                                 .images = std::move(message.images),
                                 .client_id = message.id});
  }

  // --- delivery of stored replies -------------------------------------------

  // Stored replies go out a page at a time, each page once the previous one has
  // been written: a long history asked for again neither overruns the
  // connection's send queue (which would close it as a slow consumer) nor stops
  // at the store's page size.
  awaitable<void> deliver_after(Seq after, std::uint64_t generation) {
    const net::WsOptions ws = connection_ ? connection_->options() : gateway_.options_.ws;
    const std::size_t page = std::max<std::size_t>(1, ws.send_queue_limit / 4);
    const auto heartbeat = ws.heartbeat_interval + ws.heartbeat_timeout;
    for (;;) {
      auto replies = co_await store().replies_after(user_id_, after, page);
      if (!replies) {
        log::error("gateway: cannot read stored replies for {}: {}", user_id_,
                   replies.error().message);
        co_return;
      }
      if (generation != generation_ || !connection_) co_return;
      for (const auto& reply : *replies) deliver(reply);
      if (replies->size() < page) co_return;
      after = replies->back().seq;
      // A peer that reads nothing is cut off by the heartbeat; this bound is
      // for one that still answers pings.
      const auto deadline = runtime::Deadline::after(heartbeat);
      const auto page_end = replies_queued_;
      // A cancellation that came between two waits is seen here, not lost.
      while (generation == generation_ && connection_ && replies_written_ < page_end) {
        if (co_await runtime::cancelled() || !co_await written_.wait_until(deadline)) break;
      }
      if (generation != generation_ || !connection_ || replies_written_ < page_end) co_return;
    }
  }

  // Sends a stored reply once per connection; the delivered cursor moves when
  // the frame has been written to the socket.
  void deliver(const store::Message& reply) {
    if (!connection_ || !sent_.insert(reply.seq).second) return;
    const auto reply_to = reply.reply_to.value_or(0);
    std::string frame = reply.status == store::MessageStatus::answered
                            ? chat_frame(reply.content, user_id_, reply.seq, reply_to)
                            : error_frame("reply_failed", reply.content, reply_to);
    send_then_advance_cursor(std::move(frame), reply.seq);
  }

  // Sends a frame that stands for stored reply `seq`; once it is written, the
  // delivered cursor moves past that reply.
  void send_then_advance_cursor(std::string frame, Seq seq) {
    if (!connection_) return;
    std::weak_ptr<Session> weak = weak_from_this();
    const auto refused = connection_->send(std::move(frame), [weak, seq, generation = generation_] {
      auto self = weak.lock();
      if (!self) return;
      if (generation == self->generation_) {
        ++self->replies_written_;
        self->written_.notify_all();
      }
      self->advance_cursor(seq);
    });
    if (!refused) ++replies_queued_;
  }

  void advance_cursor(Seq seq) {
    if (seq <= cursor_written_) return;
    cursor_written_ = seq;
    gateway_.supervisor_.spawn("chat cursor " + user_id_, "chat.cursor",
                               write_cursor(shared_from_this(), seq));
  }

  // Runs to its end even when cancelled: one store write, bounded by the disk.
  static awaitable<void> write_cursor(std::shared_ptr<Session> self, Seq seq) {
    co_await asio::this_coro::throw_if_cancelled(false);
    auto done = co_await self->store().advance_delivered(self->user_id_, seq);
    if (!done) log::warn("gateway: cannot record delivery to {}: {}", self->user_id_, done.error().message);
  }

  // --- replies: one at a time, in order -------------------------------------

  void queue_reply(store::Message message) {
    to_answer_.push_back(std::move(message));
    start_next_reply();
  }

  void start_next_reply() {
    if (reply_task_ || to_answer_.empty()) return;
    auto message = std::move(to_answer_.front());
    to_answer_.pop_front();
    user_cancelled_ = false;
    reply_task_ = gateway_.supervisor_.spawn(
        fmt::format("chat reply {} #{}", user_id_, message.seq), std::string(replies_group),
        run_reply(shared_from_this(), std::move(message)));
  }

  void cancel_reply() {
    if (!reply_task_) {
      send(notification_frame(nothing_to_cancel));
      return;
    }
    user_cancelled_ = true;
    gateway_.supervisor_.cancel(reply_task_);
  }

  // However the reply ends, reply_task_ is cleared and the next message is
  // answered, unless the host is stopping (then the message stays pending, to
  // be answered after the restart).
  static awaitable<void> run_reply(std::shared_ptr<Session> self, store::Message message) {
    ReplyOutcome outcome = ReplyOutcome::broke;
    std::string escaped;  // what was thrown out of the reply
    try {
      outcome = co_await self->reply(message);
    } catch (const std::exception& e) {
      if (runtime::is_cancellation(e)) {
        outcome = ReplyOutcome::cancelled;
      } else {
        escaped = e.what();
      }
    }
    const bool user_cancelled = std::exchange(self->user_cancelled_, false);
    if (outcome == ReplyOutcome::cancelled && !user_cancelled && self->gateway_.host_stopping())
      outcome = ReplyOutcome::host_stopping;
    co_await asio::this_coro::reset_cancellation_state();
    co_await asio::this_coro::throw_if_cancelled(false);
    try {
      switch (outcome) {
        case ReplyOutcome::broke:
          replies("failed").inc();
          // A failure below the chat layer: the user hears that it failed.
          log::error("gateway: the reply to {} #{} failed: {}", self->user_id_, message.seq,
                     log::elide(escaped));
          co_await self->store_and_deliver(message.seq, "the reply failed unexpectedly; ask again",
                                           store::MessageStatus::failed);
          break;
        case ReplyOutcome::cancelled:
          replies("cancelled").inc();
          // By the user or by an operator: stored as cancelled and said so.
          co_await self->finish_cancelled(message.seq);
          break;
        case ReplyOutcome::stored:
          if (user_cancelled) self->send(notification_frame(nothing_to_cancel));
          break;
        case ReplyOutcome::host_stopping:
          break;
      }
    } catch (const std::exception& e) {
      log::error("gateway: the end of the reply to {} #{} failed: {}", self->user_id_, message.seq,
                 log::elide(e.what()));
    }
    self->reply_task_ = 0;
    if (outcome != ReplyOutcome::host_stopping) self->start_next_reply();
    self->pending_changed();
    self->gateway_.forget_if_idle(self->user_id_);
  }

  awaitable<ReplyOutcome> reply(const store::Message& message) {
    llm::ChatRequest request;
    request.system_prompt = gateway_.options_.system_prompt;
    request.message = {"user", message.content, message.images};
    // What came before this message; messages sent after it, waiting their
    // turn, are not its context.
    request.history = co_await load_history(
        store(), user_id_, message.seq,
        HistoryBudget(gateway_.options_.history_messages, gateway_.options_.max_context_bytes,
                      request.system_prompt.size() + context_bytes(request.message)));
    // The provider in force when the reply starts serves all of it.
    auto provider = gateway_.provider_;
    const Seq reply_to = message.seq;
    drop_held_pieces();
    auto result = co_await provider->complete(
        request, [this, reply_to](std::string_view piece) { stream_piece(piece, reply_to); });
    if (!result && result.error().kind == llm::ProviderError::Kind::shutting_down) {
      drop_held_pieces();
      co_return ReplyOutcome::host_stopping;
    }
    if (!result && result.error().kind == llm::ProviderError::Kind::cancelled) {
      drop_held_pieces();
      co_return ReplyOutcome::cancelled;
    }
    flush_pieces(reply_to);
    // Named first: with GCC 12, a `?:` building a string temporary among a
    // co_await's arguments corrupted the heap.
    const bool ok = result.has_value();
    replies(ok ? "ok" : "failed").inc();
    std::string content = ok ? *result : result.error().message;
    const auto status = ok ? store::MessageStatus::answered : store::MessageStatus::failed;
    co_await store_and_deliver(reply_to, std::move(content), status);
    co_return ReplyOutcome::stored;
  }

  // The final reply (or failure) is stored before it is sent.
  awaitable<void> store_and_deliver(Seq reply_to, std::string content,
                                    store::MessageStatus status) {
    auto stored = co_await store().store_reply(user_id_, reply_to, content, status);
    if (!stored) {
      log::debug("gateway: cannot store the reply to {} #{}: {}", user_id_, reply_to,
                 stored.error().message);
      std::string told = "the reply could not be stored; ask again";
      send(error_frame("store_error", told, reply_to));
      // What the user was told is the message's outcome: it is not answered
      // again after a restart (the store keeps it in memory while its disk
      // refuses writes).
      co_await store().mark_failed(user_id_, reply_to, std::move(told));
      co_return;
    }
    deliver(store::Message{.seq = *stored,
                           .user_id = user_id_,
                           .role = store::Role::assistant,
                           .content = std::move(content),
                           .reply_to = reply_to,
                           .status = status});
  }

  awaitable<void> finish_cancelled(Seq reply_to) {
    auto stored = co_await store().store_reply(user_id_, reply_to, "the reply was cancelled",
                                               store::MessageStatus::failed);
    if (!stored) {
      send(notification_frame("the reply was cancelled"));
      std::string told = "the reply was cancelled";
      co_await store().mark_failed(user_id_, reply_to, std::move(told));
      co_return;
    }
    // The notification stands for the stored reply: not replayed on this
    // connection, nor on the next one once it has been written.
    sent_.insert(*stored);
    send_then_advance_cursor(notification_frame("the reply was cancelled"), *stored);
  }

  // Pieces wait in held_pieces_ while the connection's send queue is half
  // full and go out together with the next one: a provider that streams
  // faster than the socket drains never gets a healthy client closed as a
  // slow consumer, and the pieces sent still join into the whole reply.
  void stream_piece(std::string_view piece, Seq reply_to) {
    if (!connection_) return;
    held_pieces_ += piece;
    if (connection_->queued() >= connection_->options().send_queue_limit / 2) return;
    flush_pieces(reply_to);
  }

  void flush_pieces(Seq reply_to) {
    if (!held_pieces_.empty()) send(token_frame(held_pieces_, reply_to));
    drop_held_pieces();
  }

  // A reply held back by a slow socket does not keep its buffer for the
  // session's life.
  void drop_held_pieces() {
    if (held_pieces_.capacity() > 16 * 1024) {
      held_pieces_ = std::string();
    } else {
      held_pieces_.clear();
    }
  }

  void send(std::string frame) {
    if (connection_) connection_->send(std::move(frame));
  }

  store::Store& store() { return gateway_.store_; }

  Gateway& gateway_;
  std::string user_id_;
  std::shared_ptr<net::WsConnection> connection_;
  std::uint64_t generation_ = 0;
  std::set<Seq> sent_;  // replies sent on the current connection
  // Replies queued on / written to the current connection; a connection
  // writes in order, so written == queued means all of them are out.
  std::uint64_t replies_queued_ = 0;
  std::uint64_t replies_written_ = 0;
  runtime::Notifier written_;  // a reply was written, or the connection changed
  std::string held_pieces_;  // of the reply being made, not yet sent
  std::deque<Queued> inbox_;
  bool inbox_running_ = false;
  bool handling_ = false;  // a frame taken from the inbox is being handled
  std::deque<store::Message> to_answer_;
  runtime::TaskId reply_task_ = 0;
  bool user_cancelled_ = false;
  Seq cursor_written_ = 0;
};

Gateway::Gateway(runtime::Supervisor& supervisor, store::Store& store,
                 std::shared_ptr<llm::Provider> provider, GatewayOptions options,
                 const runtime::ShutdownState* shutdown)
    : supervisor_(supervisor),
      store_(store),
      provider_(std::move(provider)),
      options_(std::move(options)),
      shutdown_(shutdown),
      rate_limiter_(options_.max_messages_per_minute) {}

Gateway::~Gateway() = default;

std::shared_ptr<Gateway::Session> Gateway::session(const std::string& user_id) {
  auto it = sessions_.find(user_id);
  if (it != sessions_.end()) return it->second;
  auto created = std::make_shared<Session>(*this, user_id);
  sessions_.emplace(user_id, created);
  return created;
}

void Gateway::forget_if_idle(const std::string& user_id) {
  auto it = sessions_.find(user_id);
  if (it != sessions_.end() && it->second->idle()) sessions_.erase(it);
}

std::size_t Gateway::connections() const {
  std::size_t n = 0;
  for (const auto& [id, session] : sessions_) n += session->connected() ? 1 : 0;
  return n;
}

void Gateway::set_options(GatewayOptions options) {
  options_ = std::move(options);
  rate_limiter_.set_rate(options_.max_messages_per_minute);
}

bool Gateway::admit_message(std::string_view user_id) {
  if (rate_limiter_.try_take(user_id, Clock::now())) return true;
  ++rate_limited_;
  return false;
}

bool Gateway::host_stopping() const { return shutdown_ && shutdown_->begun(); }

std::size_t Gateway::replies_in_flight() const { return supervisor_.group_size(replies_group); }

awaitable<std::size_t> Gateway::recover() {
  auto pending = co_await store_.pending_messages();
  if (!pending) {
    log::error("gateway: cannot read unanswered messages: {}", pending.error().message);
    co_return 0;
  }
  for (auto& message : *pending) {
    auto user = message.user_id;
    session(user)->enqueue_reply(std::move(message));
  }
  if (!pending->empty())
    log::info("gateway: answering {} message(s) left unanswered by the previous run",
              pending->size());
  co_return pending->size();
}

std::optional<net::HttpResponse> Gateway::admit(net::Request& request) const {
  const auto& user_id = request.params.at("user_id");
  if (!valid_user_id(user_id))
    return net::error_response(http::status::bad_request, "invalid_user_id",
                               "the user id must match [A-Za-z0-9_.:-]{1,128}", request);
  const auto refuse = [&](std::string_view why) {
    return net::error_response(http::status::unauthorized, "unauthorized", why, request);
  };
  if (options_.auth == GatewayAuth::signed_token) {
    auto claims = verify_user_token(request.presented_token(), options_.signing_key,
                                    SystemClock::now());
    if (!claims) return refuse(describe(claims.error()));
    if (claims->user_id != user_id) return refuse("the token is for another user");
    return std::nullopt;
  }
  // A token that is set is required whatever the mode: a credential is never ignored.
  if (options_.auth == GatewayAuth::token || !options_.token.empty()) {
    if (options_.token.empty() ||
        !net::constant_time_equal(request.presented_token(), options_.token))
      return refuse("a valid gateway token is needed");
  }
  return std::nullopt;
}

std::shared_ptr<const net::Router> Gateway::router() {
  auto router = std::make_shared<net::Router>();
  router->add_websocket(
      "/ws/{user_id}",
      net::WsRoute{[this](net::Request& request) { return admit(request); },
                   [this](const std::shared_ptr<net::WsConnection>& connection, net::Request& request) {
                     session(request.params.at("user_id"))->attach(connection);
                   },
                   options_.ws});
  return router;
}

}  // namespace mooring::chat
