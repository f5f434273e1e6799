#include "chat/gateway.hpp"

#include "runtime/log.hpp"

#include <deque>
#include <set>

#include <fmt/format.h>

namespace mooring::chat {

namespace http = net::http;
using store::Seq;

namespace {
constexpr std::string_view replies_group = "chat.replies";
}  // namespace

// One user's conversation: the current connection (if any), the frames waiting
// to be handled, and the messages waiting for a reply. Touched only on the
// network thread; its tasks hold a shared_ptr to it.
class Gateway::Session : public std::enable_shared_from_this<Session> {
 public:
  Session(Gateway& gateway, std::string user_id) : gateway_(gateway), user_id_(std::move(user_id)) {}

  const std::string& user_id() const { return user_id_; }
  bool connected() const { return connection_ != nullptr; }
  bool replying() const { return reply_task_ != 0; }
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

  awaitable<void> deliver_after(Seq after, std::uint64_t generation) {
    auto replies = co_await store().replies_after(user_id_, after);
    if (!replies) {
      log::error("gateway: cannot read stored replies for {}: {}", user_id_, replies.error().message);
      co_return;
    }
    if (generation != generation_) co_return;
    for (const auto& reply : *replies) deliver(reply);
  }

  // Sends a stored reply once per connection; the delivered cursor moves when
  // the frame has been written to the socket.
  void deliver(const store::Message& reply) {
    if (!connection_ || !sent_.insert(reply.seq).second) return;
    const auto reply_to = reply.reply_to.value_or(0);
    std::string frame = reply.status == store::MessageStatus::answered
                            ? chat_frame(reply.content, user_id_, reply.seq, reply_to)
                            : error_frame("reply_failed", reply.content, reply_to);
    std::weak_ptr<Session> weak = weak_from_this();
    connection_->send(std::move(frame), [weak, seq = reply.seq] {
      if (auto self = weak.lock()) self->advance_cursor(seq);
    });
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
      send(notification_frame("there is no reply in progress to cancel"));
      return;
    }
    user_cancelled_ = true;
    gateway_.supervisor_.cancel(reply_task_);
  }

  static awaitable<void> run_reply(std::shared_ptr<Session> self, store::Message message) {
    bool aborted = false;
    try {
      aborted = !co_await self->reply(message);
    } catch (const boost::system::system_error& e) {
      if (e.code() != asio::error::operation_aborted) throw;
      aborted = true;
    }
    self->reply_task_ = 0;
    // Cancelled by the user: stored as cancelled and said so. Cancelled by the
    // shutdown: left pending, to be answered again after the restart.
    if (aborted && self->user_cancelled_) {
      co_await asio::this_coro::reset_cancellation_state();
      co_await self->finish_cancelled(message.seq);
    }
    if (!aborted || self->user_cancelled_) self->start_next_reply();
    self->gateway_.forget_if_idle(self->user_id_);
  }

  // False when the reply was cancelled before it was stored.
  awaitable<bool> reply(const store::Message& message) {
    llm::ChatRequest request;
    request.system_prompt = gateway_.options_.system_prompt;
    request.message = {"user", message.content, message.images};
    if (gateway_.options_.history_messages > 0) {
      auto history = co_await store().history(user_id_, gateway_.options_.history_messages + 1);
      if (history) {
        for (auto& past : *history) {
          if (past.seq >= message.seq) continue;
          request.history.push_back(
              {past.role == store::Role::user ? "user" : "assistant", std::move(past.content), {}});
        }
        while (request.history.size() > gateway_.options_.history_messages)
          request.history.erase(request.history.begin());
      }
    }
    // The provider in force when the reply starts serves all of it.
    auto provider = gateway_.provider_;
    const Seq reply_to = message.seq;
    auto result = co_await provider->complete(request, [this, reply_to](std::string_view piece) {
      send(token_frame(piece, reply_to));
    });
    if (!result && (result.error().kind == llm::ProviderError::Kind::cancelled ||
                    result.error().kind == llm::ProviderError::Kind::shutting_down)) {
      co_return false;
    }
    const bool ok = result.has_value();
    const std::string content = ok ? *result : result.error().message;
    auto stored = co_await store().store_reply(user_id_, reply_to, content,
                                               ok ? store::MessageStatus::answered
                                                  : store::MessageStatus::failed);
    if (!stored) {
      log::error("gateway: cannot store the reply to {} #{}: {}", user_id_, reply_to,
                 stored.error().message);
      send(error_frame("store_error", "the reply could not be stored; ask again", reply_to));
      co_return true;
    }
    deliver(store::Message{*stored, user_id_, store::Role::assistant, content, {}, std::nullopt,
                           reply_to, ok ? store::MessageStatus::answered : store::MessageStatus::failed,
                           0, 0});
    co_return true;
  }

  awaitable<void> finish_cancelled(Seq reply_to) {
    auto stored = co_await store().store_reply(user_id_, reply_to, "the reply was cancelled",
                                               store::MessageStatus::failed);
    if (stored) sent_.insert(*stored);  // said below; not replayed on this connection
    send(notification_frame("the reply was cancelled"));
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
              std::string_view presented = request.bearer_token();
              std::optional<std::string> from_query;
              if (presented.empty() && (from_query = request.query_param("token")))
                presented = *from_query;
              if (!net::constant_time_equal(presented, options_.token))
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
