#include "chat/gateway.hpp"

#include "runtime/log.hpp"
#include "runtime/time.hpp"

#include <algorithm>
#include <deque>
#include <set>

#include <fmt/format.h>

namespace mooring::chat {

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
  bool idle() const {
    return !connection_ && inbox_.empty() && !inbox_running_ && to_answer_.empty() && !reply_task_;
  }

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
    held_pieces_.clear();  // the new connection streams from the next piece on
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

  void enqueue_reply(store::Message message) {
    to_answer_.push_back(std::move(message));
    start_next_reply();
  }

 private:
  struct Backlog {};
  using Item = std::variant<UserMessage, Resume, Backlog>;
  struct Queued {
    std::uint64_t generation;
    Item item;
  };

  void on_text(std::uint64_t generation, std::string text) {
    if (generation != generation_) return;
    auto frame = parse_client_frame(text);
    if (auto* error = std::get_if<ProtocolError>(&frame)) {
      send(error_frame(error->name, error->description));
      return;
    }
    if (std::holds_alternative<Cancel>(frame)) {
      cancel_reply();
      return;
    }
    if (auto* message = std::get_if<UserMessage>(&frame)) {
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

  void push(std::uint64_t generation, Item item) {
    inbox_.push_back(Queued{generation, std::move(item)});
    if (inbox_running_) return;
    inbox_running_ = true;
    gateway_.supervisor_.spawn("chat inbox " + user_id_, "chat.inbox", run_inbox(shared_from_this()));
  }

  // Frames are handled one at a time, in the order they arrived.
  static awaitable<void> run_inbox(std::shared_ptr<Session> self) {
    while (!self->inbox_.empty()) {
      auto queued = std::move(self->inbox_.front());
      self->inbox_.pop_front();
      if (queued.generation != self->generation_) continue;  // from a replaced connection
      if (auto* message = std::get_if<UserMessage>(&queued.item)) {
        co_await self->accept_message(std::move(*message));
      } else if (auto* resume = std::get_if<Resume>(&queued.item)) {
        co_await self->deliver_after(resume->after, queued.generation);
      } else {
        auto session = co_await self->store().session(self->user_id_);
        const Seq after = session && *session ? (*session)->delivered_seq : 0;
        co_await self->deliver_after(after, queued.generation);
      }
    }
    self->inbox_running_ = false;
    self->gateway_.forget_if_idle(self->user_id_);
  }

  awaitable<void> accept_message(UserMessage message) {
    auto appended = co_await store().append_user_message(user_id_, message.text, message.images,
                                                         message.id);
    if (!appended) {
      log::error("gateway: cannot store a message from {}: {}", user_id_, appended.error().message);
      send(error_frame("store_error",
                       "the message could not be stored; it was not received, send it again"));
      co_return;
    }
    send(ack_frame(message.id, appended->seq));
    if (appended->duplicate) co_return;  // stored and answered (or being answered) once
    enqueue_reply(store::Message{appended->seq, user_id_, store::Role::user, std::move(message.text),
                                 std::move(message.images), message.id, std::nullopt,
                                 store::MessageStatus::pending, 0, 0});
  }

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
      while (generation == generation_ && connection_ && replies_written_ < page_end) {
        if (!co_await written_.wait_until(deadline)) break;
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

  static awaitable<void> write_cursor(std::shared_ptr<Session> self, Seq seq) {
    auto done = co_await self->store().advance_delivered(self->user_id_, seq);
    if (!done) log::warn("gateway: cannot record delivery to {}: {}", self->user_id_, done.error().message);
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

  static awaitable<void> run_reply(std::shared_ptr<Session> self, store::Message message) {
    bool aborted = false;
    bool threw = false;
    std::string escaped;  // what was thrown out of the reply
    try {
      aborted = !co_await self->reply(message);
    } catch (const std::exception& e) {
      // A cancellation is usually operation_aborted, but asio::multiple_exceptions
      // when it ended both sides of an `||` (runtime::with_timeout). Whatever
      // it is, it is caught: a reply task that ends without clearing
      // reply_task_ would leave this session stuck for good (seed 002).
      aborted = threw = true;
      escaped = e.what();
    }
    const bool cancelled = (co_await asio::this_coro::cancellation_state).cancelled() !=
                           asio::cancellation_type::none;
    const bool broke = threw && !cancelled;
    self->reply_task_ = 0;
    co_await asio::this_coro::reset_cancellation_state();
    if (broke) {
      // Not a cancellation: a failure below the chat layer. The user hears
      // that it failed, and the next message is answered.
      log::error("gateway: the reply to {} #{} failed: {}", self->user_id_, message.seq, escaped);
      std::string apology = "the reply failed unexpectedly; ask again";
      co_await self->store_and_deliver(message.seq, std::move(apology),
                                       store::MessageStatus::failed);
    } else if (aborted && self->user_cancelled_) {
      // Cancelled by the user: stored as cancelled and said so. Cancelled by
      // the shutdown: left pending, to be answered again after the restart.
      co_await self->finish_cancelled(message.seq);
    } else if (!aborted && self->user_cancelled_) {
      // The cancel came while the finished reply was being stored.
      self->send(notification_frame(nothing_to_cancel));
    }
    if (!aborted || broke || self->user_cancelled_) self->start_next_reply();
    self->gateway_.forget_if_idle(self->user_id_);
  }

  // False when the reply was cancelled before it was stored.
  awaitable<bool> reply(const store::Message& message) {
    llm::ChatRequest request;
    request.system_prompt = gateway_.options_.system_prompt;
    request.message = {"user", message.content, message.images};
    if (gateway_.options_.history_messages > 0) {
      // What came before this message; messages sent after it, waiting their
      // turn, are not its context.
      auto history =
          co_await store().messages(user_id_, gateway_.options_.history_messages, message.seq);
      if (history) {
        for (auto& past : *history)
          request.history.push_back(
              {past.role == store::Role::user ? "user" : "assistant", std::move(past.content), {}});
      }
    }
    // The provider in force when the reply starts serves all of it.
    auto provider = gateway_.provider_;
    const Seq reply_to = message.seq;
    held_pieces_.clear();
    auto result = co_await provider->complete(
        request, [this, reply_to](std::string_view piece) { stream_piece(piece, reply_to); });
    if (!result && (result.error().kind == llm::ProviderError::Kind::cancelled ||
                    result.error().kind == llm::ProviderError::Kind::shutting_down)) {
      held_pieces_.clear();
      co_return false;
    }
    flush_pieces(reply_to);
    // Named first: with GCC 12, a `?:` building a string temporary among a
    // co_await's arguments corrupted the heap.
    const bool ok = result.has_value();
    std::string content = ok ? *result : result.error().message;
    const auto status = ok ? store::MessageStatus::answered : store::MessageStatus::failed;
    co_await store_and_deliver(reply_to, std::move(content), status);
    co_return true;
  }

  // The final reply (or failure) is stored before it is sent.
  awaitable<void> store_and_deliver(Seq reply_to, std::string content,
                                    store::MessageStatus status) {
    auto stored = co_await store().store_reply(user_id_, reply_to, content, status);
    if (!stored) {
      log::error("gateway: cannot store the reply to {} #{}: {}", user_id_, reply_to,
                 stored.error().message);
      send(error_frame("store_error", "the reply could not be stored; ask again", reply_to));
      co_return;
    }
    deliver(store::Message{*stored, user_id_, store::Role::assistant, std::move(content), {},
                           std::nullopt, reply_to, status, 0, 0});
  }

  awaitable<void> finish_cancelled(Seq reply_to) {
    auto stored = co_await store().store_reply(user_id_, reply_to, "the reply was cancelled",
                                               store::MessageStatus::failed);
    if (!stored) {
      send(notification_frame("the reply was cancelled"));
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
    held_pieces_.clear();
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
  std::deque<store::Message> to_answer_;
  runtime::TaskId reply_task_ = 0;
  bool user_cancelled_ = false;
  Seq cursor_written_ = 0;
};

Gateway::Gateway(runtime::Supervisor& supervisor, store::Store& store,
                 std::shared_ptr<llm::Provider> provider, GatewayOptions options)
    : supervisor_(supervisor), store_(store), provider_(std::move(provider)), options_(std::move(options)) {}

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

std::shared_ptr<const net::Router> Gateway::router() {
  auto router = std::make_shared<net::Router>();
  router->add_websocket(
      "/ws/{user_id}",
      net::WsRoute{
          [this](net::Request& request) -> std::optional<net::HttpResponse> {
            const auto& user_id = request.params.at("user_id");
            if (!valid_user_id(user_id))
              return net::error_response(http::status::bad_request, "invalid_user_id",
                                         "the user id must match [A-Za-z0-9_.:-]{1,128}", request);
            if (!options_.token.empty()) {
              if (!net::constant_time_equal(request.presented_token(), options_.token))
                return net::error_response(http::status::unauthorized, "unauthorized",
                                           "a valid gateway token is needed", request);
            }
            return std::nullopt;
          },
          [this](const std::shared_ptr<net::WsConnection>& connection, net::Request& request) {
            session(request.params.at("user_id"))->attach(connection);
          },
          options_.ws});
  return router;
}

}  // namespace mooring::chat
