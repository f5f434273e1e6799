#include "chat/gateway.hpp"

#include "chat/user_token.hpp"
#include "runtime/cancellation.hpp"
#include "runtime/exceptions.hpp"
#include "runtime/log.hpp"
#include "runtime/log_limiter.hpp"
#include "runtime/time.hpp"

#include <algorithm>

#include <boost/container/devector.hpp>
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

// Refusals and replacements, a few lines at a time: a page that retries, or a
// client that reconnects in a loop, would otherwise write a line per try.
// Touched only on the network thread.
runtime::LogLimiter& gateway_log() {
  thread_local runtime::LogLimiter limiter(runtime::LogLimiter::Options{.max_kinds = 8});
  return limiter;
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
      send(error_frame(error->name, error->description, std::nullopt, error->id));
    } else if (std::holds_alternative<Cancel>(frame)) {
      conversation->cancel();
    } else if (auto* message = std::get_if<UserMessage>(&frame)) {
      if (!gateway_.admit_message(user_id_)) {
        send(error_frame("rate_limited",
                         fmt::format("at most {} messages a minute; this one was not stored, send "
                                     "it again later",
                                     gateway_.options_.max_messages_per_minute),
                         std::nullopt, message->id));
        return;
      }
      Submission submission{.text = std::move(message->text),
                            .images = std::move(message->images),
                            .client_id = std::move(message->id)};
      submission.pass = gateway_.conversations_.gate().try_enter();
      if (!submission.pass) {
        wait_for_pass(std::move(submission));
        return;
      }
      conversation->submit(std::move(submission));
    } else {
      conversation->deliver_after(std::get<Resume>(frame).after);
    }
  }

  // The host takes in as many messages at once as the gate lets: this one
  // waits for a pass, and the connection is not read meanwhile (TCP holds
  // what the client sends next). Not acknowledged yet: if the connection
  // ends first, the client knows to send it again.
  void wait_for_pass(Submission message) {
    held_share_.set(message_bytes(message.text, message.images));
    held_message_ = std::move(message);
    gate_wait_ = gateway_.conversations_.gate().wait([weak = weak_from_this()](auto pass) {
      if (auto self = weak.lock()) self->granted(std::move(pass));
    });
    update_reading();
  }

  void granted(runtime::WorkGate::Pass pass) {
    gate_wait_ = {};
    if (!held_message_) return;
    auto message = std::move(*held_message_);
    held_message_.reset();
    held_share_.set(0);
    if (auto conversation = conversation_.lock(); conversation && open()) {
      message.pass = std::move(pass);
      try {
        conversation->submit(std::move(message));
      } catch (...) {
        // As for a message taken in at once (WsConnection::deliver): not
        // acknowledged, so the client sends it again on its next connection.
        log::error("chat: taking in a message from {} failed: {}; closing with 1011", user_id_,
                   runtime::describe_current_exception());
        connection_->close(boost::beast::websocket::close_code::internal_error, "internal error");
        return;
      }
    }
    update_reading();
  }

  void on_closed() {
    closed_ = true;
    let_go();
    if (written_) written_->notify_all();
    if (auto conversation = conversation_.lock()) conversation->detach(this);
  }

  // --- from the conversation -------------------------------------------------

  void stored(const Submission& message, const store::Appended& appended) override {
    if (message.client_id)
      send(ack_frame(*message.client_id, appended.seq, appended.duplicate));
  }

  void error(std::string_view name, std::string_view description, Seq reply_to,
             std::optional<std::string_view> client_id) override {
    // An error about no reply in particular carries no reply_to.
    send(error_frame(name, description,
                     reply_to == 0 ? std::nullopt : std::optional<std::int64_t>(reply_to),
                     client_id));
  }

  void notice(std::string_view text) override { send(notification_frame(text)); }

  // Pieces that come in one turn of the event loop go out as one frame: a
  // flush is posted, not sent per piece. While frames wait for room in the
  // socket's queue, pieces gather in held_pieces_ and go out together once
  // the frames before them are gone (pump): a provider that streams faster
  // than the socket drains costs one growing string, not a frame per piece,
  // and the pieces sent still join into the whole reply.
  void piece(std::string_view text, Seq reply_to) override {
    if (!open()) return;
    held_pieces_ += text;
    pieces_reply_to_ = reply_to;
    if (!waiting_.empty()) count_waiting();
    if (flush_posted_) return;
    flush_posted_ = true;
    asio::post(gateway_.conversations_.supervisor().executor(),
               [weak = weak_from_this(), ticket = ++flush_ticket_] {
                 auto self = weak.lock();
                 if (!self || !self->flush_posted_ || self->flush_ticket_ != ticket) return;
                 self->flush_posted_ = false;
                 self->send_held_pieces();
               });
  }

  void pieces_done(Seq reply_to, bool flush) override {
    flush_posted_ = false;
    std::string frame = flush && !held_pieces_.empty() ? token_frame(held_pieces_, reply_to) : "";
    // Dropped before the frame is sent: sending may flush what is held.
    drop_held_pieces();
    if (!frame.empty()) send(std::move(frame));
  }

  // Each stored reply once per connection, in the order of their seqs; the
  // cursor moves past one once its frame is written. While the replies not
  // delivered before go out a page at a time (the backlog every connection
  // begins with), one made meanwhile waits in the store for the backlog to
  // reach it: sent at once, it would go before older ones still to be read,
  // and the cursor would move past them (a client gone then would never get
  // them, nor one that resumes after the newest seq it saw). A resume asks
  // again for replies delivered before: those may follow newer ones. A reply
  // cancelled a moment ago is told as a notice.
  void reply(const store::Message& reply, bool just_cancelled) override {
    if (backlog_running_) {
      held_live_ = std::max(held_live_, reply.seq);
      return;
    }
    send_reply(reply, just_cancelled);
  }

  void backlog_reply(const store::Message& reply) override {
    backlog_last_ = std::max(backlog_last_, reply.seq);
    send_reply(reply, false);
  }

  Seq carried_after() const override { return carried_after_; }
  void carried_from(Seq after) override {
    backlog_from_ = after;
    // Replies made while the last page was read are not carried yet.
    if (held_live_ > std::max(backlog_last_, after)) return;
    carried_after_ = std::min(carried_after_, after);
  }

  // A backlog that reached the newest reply ends the wait of the replies
  // made meanwhile; those its last read did not see are read next, after the
  // last one it sent. One that stopped (the connection going, the host
  // stopping, the store failing) leaves them stored for the next connection.
  void backlog_done(bool reached_newest) override {
    page_share_.set(0);
    if (!reached_newest) return;
    const auto seen = std::max(backlog_last_, backlog_from_);
    if (held_live_ > seen) {
      held_live_ = 0;
      if (auto conversation = conversation_.lock()) conversation->deliver_after(seen);
      return;
    }
    backlog_running_ = false;
    held_live_ = 0;
  }

  std::size_t page_size() const override {
    return std::max<std::size_t>(1, connection_->options().send_queue_limit / 4);
  }

  // Until the replies handed so far have gone to the socket's queue and the
  // queue is down to a quarter of its bounds (the low-water mark): the next
  // page is read while the end of this one is still being written, and never
  // piles up on it.
  awaitable<bool> drained() override {
    const auto page_end = replies_taken_;
    co_await wait_for_writes([this, page_end] { return !page_out(page_end); });
    // Its frames are in the socket's queue, and held against the budget there.
    page_share_.set(0);
    co_return open() && page_out(page_end);
  }

  // While a reply waits here for room in the socket's queue, the next is not
  // made: what waits for a slow reader is one reply, not one per message it
  // sent. Ends with the connection, its replacement or the host's stop.
  bool reply_held() const override { return replies_released_ < replies_taken_; }
  awaitable<void> room_for_reply() override {
    co_await wait_for_writes([this] { return reply_held(); });
  }

  // A page's worth of the buffer budget is taken before the page is read,
  // and given back once its frames are in the socket's queue (drained()): a
  // thousand resumes at once read pages only as far as the budget allows.
  // Nothing says when other connections give room back; it is looked at again
  // every 100 ms while this connection lasts.
  bool room_for_page_now(std::size_t bytes) override {
    return open() && !host_stopping_ && page_share_.grow_to(bytes);
  }

  awaitable<bool> room_for_page(std::size_t bytes) override {
    auto self = shared_from_this();
    while (open() && !host_stopping_ && !page_share_.grow_to(bytes)) {
      const bool slept = co_await runtime::sleep_for(std::chrono::milliseconds(100));
      if (!slept) co_return false;
    }
    co_return open() && !host_stopping_;
  }

  void pending_changed(std::size_t pending) override {
    pending_ = pending;
    update_reading();
  }

  // Replaced by a newer connection (or closed): a replaced one is closed
  // after the frames already in the socket's queue; the frames waiting for
  // room are let go (the replies among them go to the newer connection).
  void detached() override {
    if (written_) written_->notify_all();
    if (closed_ || replaced_) return;
    replaced_ = true;
    let_go();
    gateway_log().log(spdlog::level::info, "replaced",
                      fmt::format("gateway: {} connected again; replacing the previous connection",
                                  user_id_));
    connection_->close(static_cast<net::websocket::close_code>(4000),
                       "replaced by a newer connection");
  }

  void host_stopping() override {
    host_stopping_ = true;
    if (written_) written_->notify_all();
  }

  bool open() const { return !closed_ && !replaced_; }

 private:
  // A frame waiting for room in the socket's queue. A reply waits as its
  // text, once, and is made into its chat frame (which carries it twice)
  // when it comes to the front.
  struct Waiting {
    std::string text;
    bool chat = false;  // `text` is a reply's content, not a frame yet
    Seq reply_seq = 0;  // a stored reply: the cursor moves past it once written
    Seq reply_to = 0;
  };

  // False when `seq` went out on this connection lately. While a resume's
  // pages go out, live replies go on, and a later page may offer one of them
  // again; this keeps it from being sent twice. The window is bounded, not every reply of
  // the connection's life: it holds the largest seqs sent, and drops the
  // smallest. A live reply's seq is larger than every page's, and at most
  // max_pending_messages are answered while pages go out. What a resume asks
  // for again beyond the window is told by carried_after_: a backlog read
  // stops where the replies this connection already carried begin.
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

  void send_reply(const store::Message& reply, bool just_cancelled) {
    if (!remember_sent(reply.seq) && !just_cancelled) return;
    if (!open()) return;
    Waiting frame{.reply_seq = reply.seq, .reply_to = reply.reply_to.value_or(0)};
    // A reply that failed or was cancelled carries its seq too: a client
    // resumes past it.
    if (just_cancelled) {
      frame.text = notification_frame(reply.content, reply.seq, frame.reply_to);
    } else if (reply.status == store::MessageStatus::answered) {
      frame.text = reply.content;
      frame.chat = true;
    } else {
      frame.text = error_frame("reply_failed", reply.content, frame.reply_to, std::nullopt, reply.seq);
    }
    ++replies_taken_;
    enqueue(std::move(frame));
  }

  void send(std::string frame) { enqueue(Waiting{.text = std::move(frame)}); }

  // Every frame goes through waiting_, in order: to the socket's queue at
  // once when nothing waits before it and the queue has room.
  void enqueue(Waiting frame) {
    if (!open()) return;
    waiting_.push_back(std::move(frame));
    pump();
  }

  // Whether the socket's queue takes `bytes` more now: the bounds it closes a
  // slow consumer at (send_queue_limit frames, send_queue_bytes bytes), which
  // a frame alone may exceed. Kept within them, the queue never closes a
  // client for what this connection chose to send; a client that falls
  // behind leaves frames here instead, and is not read meanwhile.
  bool has_room(std::size_t bytes) const {
    const auto& ws = connection_->options();
    const auto queued = connection_->queued();
    if (queued == 0) return true;
    return queued < ws.send_queue_limit &&
           connection_->queued_bytes() + bytes <= ws.send_queue_bytes;
  }

  // Moves frames from waiting_ to the socket's queue while it has room. Runs
  // whenever a frame is added and whenever one is written.
  void pump() {
    while (open() && !waiting_.empty()) {
      auto& front = waiting_.front();
      if (front.chat) {
        front.text = chat_frame(front.text, user_id_, front.reply_seq, front.reply_to);
        front.chat = false;
      }
      if (!has_room(front.text.size())) {
        // Behind while the connections hold more than the budget: closed
        // rather than hold more (its replies stay stored for its next
        // connection).
        if (connection_->shed_if_over_budget()) let_go();
        break;
      }
      auto frame = std::move(front);
      waiting_.pop_front();
      hand_to_socket(std::move(frame));
    }
    // A queue a burst grew gives its buffer back once drained.
    if (waiting_.empty() && waiting_.capacity() > 16) waiting_ = {};
    if (waiting_.empty()) send_held_pieces();
    count_waiting();
    update_reading();
    if (written_) written_->notify_all();
  }

  void hand_to_socket(Waiting frame) {
    const auto seq = frame.reply_seq;
    const auto refused = connection_->send(
        std::move(frame.text), [weak = weak_from_this(), conversation = conversation_, seq] {
          if (seq != 0) {
            if (auto alive = conversation.lock()) alive->delivered(seq);
          }
          if (auto self = weak.lock()) self->pump();
        });
    if (refused) {
      // The connection is closing (a shutdown, an error): nothing more goes out.
      let_go();
      return;
    }
    if (seq != 0) ++replies_released_;
  }

  // Waits while `waiting()` holds, the connection is open and the host is
  // not stopping: woken whenever a frame is written. A peer that takes
  // nothing is cut off by the socket's write watchdog, which ends the wait
  // with the connection; one that reads slowly is waited for, the wait
  // re-armed every heartbeat_interval + heartbeat_timeout while frames are
  // still being written.
  template <typename Waiting>
  awaitable<void> wait_for_writes(Waiting waiting) {
    const auto& ws = connection_->options();
    const auto slice = ws.heartbeat_interval + ws.heartbeat_timeout;
    auto self = shared_from_this();
    while (open() && !host_stopping_ && waiting()) {
      // A cancellation that came between two waits is seen here, not lost.
      const bool cancelled = co_await runtime::cancelled();
      if (cancelled) break;
      if (!written_)
        written_ = std::make_unique<runtime::Notifier>(gateway_.conversations_.supervisor().executor());
      const bool woken = co_await written_->wait_until(runtime::Deadline::after(slice));
      // Nothing being written and still waiting: nothing will move it.
      if (!woken && connection_->queued() == 0) break;
    }
  }

  // Whether the replies taken up to `page_end` are in the socket's queue and
  // the queue is at its low-water mark.
  bool page_out(std::uint64_t page_end) const {
    const auto& ws = connection_->options();
    return replies_released_ >= page_end && connection_->queued() <= ws.send_queue_limit / 4 &&
           connection_->queued_bytes() <= ws.send_queue_bytes / 4;
  }

  // Pieces held back go out once no frame waits before them.
  void send_held_pieces() {
    if (!open() || held_pieces_.empty() || !waiting_.empty()) return;
    auto frame = token_frame(held_pieces_, pieces_reply_to_);
    drop_held_pieces();
    send(std::move(frame));
  }

  // The socket is not read while the conversation holds as much as it takes
  // (max_pending_messages) or while frames wait for room (the client is
  // behind on what it was sent): TCP pushes back on the client, and nothing
  // it sends can grow what waits for it.
  void update_reading() {
    if (!open()) return;
    const bool full = pending_ >= std::max<std::size_t>(1, gateway_.options_.max_pending_messages);
    if (full || !waiting_.empty() || held_message_) {
      connection_->pause_reading();
    } else if (connection_->reading_paused()) {
      connection_->resume_reading();
    }
  }

  // What waits here for room in the socket's queue (frames, and pieces held
  // behind them) is held against the buffer budget, as the queue's frames
  // are. Frames pass through without a look at the budget when nothing waits.
  void count_waiting() {
    if (waiting_.empty()) {
      waiting_share_.set(0);
      return;
    }
    std::size_t bytes = held_pieces_.capacity();
    for (const auto& frame : waiting_) bytes += frame.text.capacity();
    waiting_share_.set(bytes);
  }

  // What waits for a connection that has ended or been replaced is let go;
  // the replies among it stay stored, the cursor short of them.
  void let_go() {
    gate_wait_ = {};
    held_message_.reset();
    held_share_.set(0);
    page_share_.set(0);
    waiting_share_.set(0);
    waiting_ = {};
    flush_posted_ = false;
    held_pieces_ = std::string();
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
  bool host_stopping_ = false;  // a backlog waits for no page to go out
  net::BufferBudget::Share page_share_{net::buffer_budget()};  // for a page being read or sent
  net::BufferBudget::Share waiting_share_{net::buffer_budget()};  // waiting_ (count_waiting)
  // A message read while the work gate had no pass free, and its place in line.
  std::optional<Submission> held_message_;
  runtime::WorkGate::Wait gate_wait_;
  net::BufferBudget::Share held_share_{net::buffer_budget()};
  boost::container::flat_set<Seq> sent_;  // replies sent on this connection lately
  // Every stored reply after it went out here: read from it by a backlog that
  // reached the newest, or live since (Outlet::carried_after).
  Seq carried_after_ = std::numeric_limits<Seq>::max();
  // The connection's first backlog is being read (or read on): replies made
  // meanwhile wait in the store, the largest held_live_, until it reaches
  // them. backlog_from_ / backlog_last_: where the last backlog began, and
  // the newest reply it sent.
  bool backlog_running_ = true;
  Seq held_live_ = 0;
  Seq backlog_from_ = 0;
  Seq backlog_last_ = 0;
  // Frames not in the socket's queue yet, oldest first; a devector holds no
  // buffer while empty.
  boost::container::devector<Waiting> waiting_;
  // Replies taken from the conversation / handed to the socket's queue; they
  // go in order, so handed == taken means none waits here.
  std::uint64_t replies_taken_ = 0;
  std::uint64_t replies_released_ = 0;
  std::size_t pending_ = 0;  // the conversation's work held, as last told
  // A frame was written, or the connection ended; made by the first wait.
  std::unique_ptr<runtime::Notifier> written_;
  std::string held_pieces_;         // of the reply being made, not yet sent
  Seq pieces_reply_to_ = 0;         // ... the reply they belong to
  bool flush_posted_ = false;       // a flush of held_pieces_ is posted
  std::uint64_t flush_ticket_ = 0;  // which posted flush may run
};

Gateway::Gateway(runtime::Supervisor& supervisor, store::Store& store,
                 std::shared_ptr<llm::Provider> provider, GatewayOptions options,
                 const runtime::ShutdownState* shutdown)
    : options_(std::move(options)),
      conversations_(supervisor, store, std::move(provider), conversation_options(options_),
                     shutdown),
      rate_limiter_(options_.max_messages_per_minute) {
  net::buffer_budget().set_limit(options_.max_buffered_bytes);
}

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
  net::buffer_budget().set_limit(options_.max_buffered_bytes);
}

bool Gateway::admit_message(std::string_view user_id) {
  if (rate_limiter_.try_take(user_id, Clock::now())) return true;
  ++rate_limited_;
  return false;
}

std::optional<net::HttpResponse> Gateway::admit(net::Request& request) const {
  const auto& user_id = request.params.at("user_id");
  if (!net::origin_admitted(request, options_.allowed_origins)) {
    const auto origin = fmt::format("{}", log::elide(request.message[http::field::origin]));
    gateway_log().log(spdlog::level::warn, "origin",
                      fmt::format("gateway: refused a WebSocket opened by a page of {} (from {}): "
                                  "a page of another site could act as any user; add its origin "
                                  "to gateway.allowed_origins if the page is yours",
                                  origin, request.remote));
    return net::error_response(
        http::status::forbidden, "origin_not_allowed",
        fmt::format("pages of {} may not open this gateway's WebSocket; its operator can allow "
                    "them in gateway.allowed_origins",
                    origin),
        request);
  }
  if (!valid_user_id(user_id))
    return net::error_response(http::status::bad_request, "invalid_user_id",
                               "the user id must match [A-Za-z0-9_.:-]{1,128} and be neither . "
                               "nor .. (which no URL holds)",
                               request);
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
    if (!claims) {
      // A token of ours gone stale is no guess; a forged or garbled one may be.
      const auto problem = claims.error();
      if ((problem == TokenProblem::malformed || problem == TokenProblem::bad_signature ||
           problem == TokenProblem::unsupported_algorithm) &&
          !request.presented_token().empty())
        net::note_wrong_token("gateway", request);
      return refuse(describe(problem));
    }
    if (claims->user_id != user_id) return refuse("the token is for another user");
    return std::nullopt;
  }
  // A token that is set is required whatever the mode: a credential is never ignored.
  if (options_.auth == GatewayAuth::token || !options_.token.empty()) {
    const auto presented = request.presented_token();
    if (options_.token.empty() || !net::constant_time_equal(presented, options_.token)) {
      if (!presented.empty()) net::note_wrong_token("gateway", request);
      return refuse("a valid gateway token is needed");
    }
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
