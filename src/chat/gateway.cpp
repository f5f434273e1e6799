#include "chat/gateway.hpp"

#include "chat/user_token.hpp"
#include "runtime/cancellation.hpp"
#include "runtime/log.hpp"
#include "runtime/time.hpp"

#include <algorithm>

#include <boost/container/flat_set.hpp>

#include <fmt/format.h>

namespace mooring::chat {

namespace http = net::http;
using store::Seq;

namespace {
ConversationOptions conversation_options(const GatewayOptions& options) {
  return ConversationOptions{.history_messages = options.history_messages,
                             .system_prompt = options.system_prompt,
                             .max_context_bytes = options.max_context_bytes};
}
}  // namespace

// One web connection: the outlet of its user's conversation while it is the
// newest. Touched only on the network thread; the connection's callbacks hold
// it weakly, its conversation strongly (until it closes or is replaced).
class Gateway::Connection : public Outlet, public std::enable_shared_from_this<Connection> {
 public:
  Connection(Gateway& gateway, std::shared_ptr<Conversation> conversation,
             std::shared_ptr<net::WsConnection> connection)
      : gateway_(gateway),
        conversation_(conversation),
        user_id_(conversation->id()),
        connection_(std::move(connection)) {}

  void start() {
    std::weak_ptr<Connection> weak = weak_from_this();
    connection_->on_text = [weak](std::string text) {
      if (auto self = weak.lock()) self->on_text(std::move(text));
    };
    connection_->on_closed = [weak](const net::WsClosed&) {
      if (auto self = weak.lock()) self->on_closed();
    };
  }

  // --- from the client -------------------------------------------------------

  void on_text(std::string text) {
    auto conversation = conversation_.lock();
    if (!conversation || replaced_ || closed_) return;
    auto frame = parse_client_frame(text);
    if (auto* error = std::get_if<ProtocolError>(&frame)) {
      send(error_frame(error->name, error->description));
    } else if (std::holds_alternative<Cancel>(frame)) {
      conversation->cancel();
    } else if (auto* message = std::get_if<UserMessage>(&frame)) {
      if (!gateway_.admit_message(user_id_)) {
        send(error_frame("rate_limited",
                         fmt::format("at most {} messages a minute; this one was not stored, send "
                                     "it again later",
                                     gateway_.options_.max_messages_per_minute)));
        return;
      }
      conversation->submit(Submission{.text = std::move(message->text),
                                      .images = std::move(message->images),
                                      .client_id = std::move(message->id)});
    } else {
      conversation->deliver_after(std::get<Resume>(frame).after);
    }
  }

  void on_closed() {
    closed_ = true;
    if (written_) written_->notify_all();
    if (auto conversation = conversation_.lock()) conversation->detach(this);
  }

  // --- from the conversation -------------------------------------------------

  void stored(const Submission& message, const store::Appended& appended) override {
    if (message.client_id) send(ack_frame(*message.client_id, appended.seq));
  }

  void error(std::string_view name, std::string_view description, Seq reply_to) override {
    // An error about no message in particular carries no reply_to.
    send(reply_to == 0 ? error_frame(name, description) : error_frame(name, description, reply_to));
  }

  void notice(std::string_view text) override { send(notification_frame(text)); }

  // Pieces wait in held_pieces_ while the send queue is half full and go out
  // together with the next one: a provider that streams faster than the
  // socket drains never gets a healthy client closed as a slow consumer, and
  // the pieces sent still join into the whole reply.
  //
  // Pieces that come in one turn of the event loop go out as one frame: a
  // flush is posted, not sent per piece.
  void piece(std::string_view text, Seq reply_to) override {
    if (closed_ || replaced_) return;
    held_pieces_ += text;
    if (flush_posted_) return;
    flush_posted_ = true;
    asio::post(gateway_.conversations_.supervisor().executor(),
               [weak = weak_from_this(), reply_to, ticket = ++flush_ticket_] {
                 auto self = weak.lock();
                 if (!self || !self->flush_posted_ || self->flush_ticket_ != ticket) return;
                 self->flush_posted_ = false;
                 if (self->closed_ || self->replaced_ || self->held_pieces_.empty()) return;
                 const auto& connection = *self->connection_;
                 if (connection.queued() >= connection.options().send_queue_limit / 2) return;
                 self->send(token_frame(self->held_pieces_, reply_to));
                 self->drop_held_pieces();
               });
  }

  void pieces_done(Seq reply_to, bool flush) override {
    flush_posted_ = false;
    if (flush && !held_pieces_.empty()) send(token_frame(held_pieces_, reply_to));
    drop_held_pieces();
  }

  // Each stored reply once per connection; the cursor moves past it once its
  // frame is written. A reply cancelled a moment ago is told as a notice.
  void reply(const store::Message& reply, bool just_cancelled) override {
    if (!remember_sent(reply.seq) && !just_cancelled) return;
    const auto reply_to = reply.reply_to.value_or(0);
    std::string frame = just_cancelled ? notification_frame(reply.content)
                        : reply.status == store::MessageStatus::answered
                            ? chat_frame(reply.content, user_id_, reply.seq, reply_to)
                            : error_frame("reply_failed", reply.content, reply_to);
    send_then_advance_cursor(std::move(frame), reply.seq);
  }

  std::size_t page_size() const override {
    return std::max<std::size_t>(1, connection_->options().send_queue_limit / 4);
  }

  // Until every reply queued so far has been written. A peer that reads
  // nothing is cut off by the heartbeat; this bound is for one that still
  // answers pings.
  awaitable<bool> drained() override {
    const auto& ws = connection_->options();
    const auto deadline = runtime::Deadline::after(ws.heartbeat_interval + ws.heartbeat_timeout);
    const auto page_end = replies_queued_;
    auto self = shared_from_this();
    while (!closed_ && !replaced_ && replies_written_ < page_end) {
      // A cancellation that came between two waits is seen here, not lost.
      const bool cancelled = co_await runtime::cancelled();
      if (cancelled) break;
      if (!written_)
        written_ = std::make_unique<runtime::Notifier>(gateway_.conversations_.supervisor().executor());
      const bool woken = co_await written_->wait_until(deadline);
      if (!woken) break;
    }
    co_return !closed_ && !replaced_ && replies_written_ >= page_end;
  }

  void pending_changed(std::size_t pending) override {
    if (closed_ || replaced_) return;
    if (pending >= std::max<std::size_t>(1, gateway_.options_.max_pending_messages)) {
      connection_->pause_reading();
    } else if (connection_->reading_paused()) {
      connection_->resume_reading();
    }
  }

  // Replaced by a newer connection (or closed): a replaced one is closed
  // after the frames already queued.
  void detached() override {
    if (written_) written_->notify_all();
    if (closed_ || replaced_) return;
    replaced_ = true;
    log::info("gateway: {} connected again; replacing the previous connection", user_id_);
    connection_->close(static_cast<net::websocket::close_code>(4000),
                       "replaced by a newer connection");
  }

  bool open() const { return !closed_ && !replaced_; }

 private:
  // False when `seq` went out on this connection lately. While stored
  // replies go out a page at a time (the backlog of a reconnect, a resume),
  // live replies go on, and a later page may offer one of them again; this
  // keeps it from being sent twice. The window is bounded, not every reply of
  // the connection's life: it holds the largest seqs sent, and drops the
  // smallest. A live reply's seq is larger than every page's, and at most
  // max_pending_messages are answered while pages go out; a paged reply
  // dropped from the window was written long ago (more replies than the send
  // queue holds were queued after it), so the cursor is past it and only a
  // client's own resume asks for it again, which the client then gets once
  // more, with its seq, as after a kill -9.
  bool remember_sent(Seq seq) {
    const auto window = 2 * connection_->options().send_queue_limit +
                        gateway_.options_.max_pending_messages + 1;
    // Older than all the window holds: sent without being remembered, so a
    // resume through old replies costs no shifting of the window.
    if (sent_.size() >= window && seq < *sent_.begin()) return true;
    if (!sent_.insert(seq).second) return false;
    if (sent_.size() > window) sent_.erase(sent_.begin());
    return true;
  }

  void send_then_advance_cursor(std::string frame, Seq seq) {
    if (closed_ || replaced_) return;
    const auto refused = connection_->send(
        std::move(frame), [weak = weak_from_this(), conversation = conversation_, seq] {
          if (auto self = weak.lock()) {
            ++self->replies_written_;
            if (self->written_) self->written_->notify_all();
          }
          if (auto alive = conversation.lock()) alive->delivered(seq);
        });
    if (!refused) ++replies_queued_;
  }

  void send(std::string frame) {
    if (!closed_ && !replaced_) connection_->send(std::move(frame));
  }

  // A reply held back by a slow socket does not keep its buffer.
  void drop_held_pieces() {
    if (held_pieces_.capacity() > 16 * 1024) {
      held_pieces_ = std::string();
    } else {
      held_pieces_.clear();
    }
  }

  Gateway& gateway_;
  std::weak_ptr<Conversation> conversation_;
  std::string user_id_;
  std::shared_ptr<net::WsConnection> connection_;
  bool closed_ = false;
  bool replaced_ = false;
  boost::container::flat_set<Seq> sent_;  // replies sent on this connection lately
  // Replies queued on / written to this connection; a connection writes in
  // order, so written == queued means all of them are out.
  std::uint64_t replies_queued_ = 0;
  std::uint64_t replies_written_ = 0;
  // A reply was written, or the connection ended; made by the first wait.
  std::unique_ptr<runtime::Notifier> written_;
  std::string held_pieces_;    // of the reply being made, not yet sent
  bool flush_posted_ = false;  // a flush of held_pieces_ is posted
  std::uint64_t flush_ticket_ = 0;  // which posted flush may run
};

Gateway::Gateway(runtime::Supervisor& supervisor, store::Store& store,
                 std::shared_ptr<llm::Provider> provider, GatewayOptions options,
                 const runtime::ShutdownState* shutdown)
    : options_(std::move(options)),
      conversations_(supervisor, store, std::move(provider), conversation_options(options_),
                     shutdown),
      rate_limiter_(options_.max_messages_per_minute) {}

Gateway::~Gateway() = default;

std::size_t Gateway::connections() const {
  std::size_t n = 0;
  conversations_.for_each([&n](Conversation& conversation) {
    const auto* connection = dynamic_cast<const Connection*>(conversation.outlet());
    n += connection && connection->open() ? 1 : 0;
  });
  return n;
}

void Gateway::set_options(GatewayOptions options) {
  options_ = std::move(options);
  conversations_.set_options(conversation_options(options_));
  rate_limiter_.set_rate(options_.max_messages_per_minute);
}

bool Gateway::admit_message(std::string_view user_id) {
  if (rate_limiter_.try_take(user_id, Clock::now())) return true;
  ++rate_limited_;
  return false;
}

std::optional<net::HttpResponse> Gateway::admit(net::Request& request) const {
  const auto& user_id = request.params.at("user_id");
  if (!valid_user_id(user_id))
    return net::error_response(http::status::bad_request, "invalid_user_id",
                               "the user id must match [A-Za-z0-9_.:-]{1,128}", request);
  if (user_id.starts_with("qq:"))
    return net::error_response(http::status::bad_request, "invalid_user_id",
                               "user ids starting with \"qq:\" are QQ conversations (OneBot); "
                               "choose another id",
                               request);
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
  add_routes(*router);
  return router;
}

void Gateway::add_routes(net::Router& router) {
  router.add_websocket(
      "/ws/{user_id}",
      net::WsRoute{[this](net::Request& request) { return admit(request); },
                   [this](const std::shared_ptr<net::WsConnection>& connection, net::Request& request) {
                     open(connection, request.params.at("user_id"));
                   },
                   options_.ws});
}

void Gateway::open(const std::shared_ptr<net::WsConnection>& connection, const std::string& user_id) {
  auto conversation = conversations_.get(user_id);
  auto outlet = std::make_shared<Connection>(*this, conversation, connection);
  outlet->start();
  conversation->attach(outlet);
  // Whatever was stored while the user was away goes out first.
  conversation->deliver_undelivered();
}

}  // namespace mooring::chat
