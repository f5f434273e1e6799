#include "chat/onebot_adapter.hpp"

#include "chat/onebot_event.hpp"
#include "chat/onebot_message.hpp"
#include "chat/send_pacer.hpp"
#include "runtime/cancellation.hpp"
#include "runtime/log.hpp"
#include "runtime/metrics.hpp"

#include <boost/json.hpp>

#include <algorithm>
#include <charconv>
#include <deque>
#include <map>
#include <set>

#include <fmt/format.h>

namespace mooring::chat {

namespace json = boost::json;
using SystemClock = std::chrono::system_clock;
using onebot::Role;
using store::Seq;

namespace {

constexpr std::size_t max_requests_kept = 100;
constexpr std::size_t max_sent_ids_kept = 512;
constexpr std::size_t max_message_id_bytes = 64;
constexpr std::size_t max_origins_kept = 256;
constexpr std::size_t backlog_page = 16;
constexpr auto keep_idle_chat = std::chrono::minutes(5);
// A call the implementation refused (a retcode: too long, not a friend, risk
// control) is tried this many times in all, a pause or a reconnect apart;
// then its message is given up, so one message QQ never takes cannot hold
// back every later reply to the chat.
constexpr int max_refusals = 3;
constexpr auto retry_refused_after = std::chrono::seconds(2);
// A send whose answer goes missing while the implementation answers other
// calls is sent again this many times in all, then given up.
constexpr int max_unanswered = 3;
// Longer heartbeat intervals are counted as this: a silence of 3 × it still
// ends a half-open connection, and 3 × it cannot overflow a time point.
constexpr runtime::Duration max_heartbeat_interval = std::chrono::hours(1);
// Messages read while a chat of the account is full wait in memory, so the
// connection goes on carrying the answers to mooring's own calls; past these
// bounds its reading stops (TCP pushes back) until they are taken.
constexpr std::size_t max_held_messages = 1000;
constexpr std::size_t max_held_bytes = 4 * 1024 * 1024;
// The work an account's chats may have at once: messages handed to them and
// not answered yet, and replies waiting to be sent. Its next messages are
// held meanwhile (above), so an implementation that takes no send, or a
// flood from thousands of users, cannot make mooring keep a chat and its
// replies in memory for every one of them.
constexpr std::size_t max_account_work = 1000;
// Accounts known at once (each keeps its state, connected or not, for the
// panel and for its chats): with self_ids empty, a client with the token
// could otherwise make one for every X-Self-ID it sends.
constexpr std::size_t max_accounts = 100;
// Sends under way at once on an account's connection. Each chat sends its
// replies one at a time, but hundreds of chats with replies waiting (after a
// reconnect, or a restart) would otherwise queue a call each at once, past
// what the connection queues for a peer (WsOptions::send_queue_limit), and
// be closed as a slow consumer on every connection, for good.
constexpr std::size_t max_sends_per_account = 32;
// How long a replaced connection is still read before it is closed.
constexpr runtime::Duration replaced_grace = std::chrono::seconds(1);
// How long replies wait with only an Event connection before the log says so.
constexpr runtime::Duration events_only_grace = std::chrono::seconds(5);
// A frame over gateway.max_message_bytes, up to this, is read and dropped
// with the connection kept: the connection carries every chat of its
// account, and closing it for one frame would cut them all off (and the
// implementation would send the same frame again after reconnecting).
constexpr std::size_t dropped_frame_max = 64 * 1024 * 1024;

std::int64_t unix_ms(SystemClock::time_point at) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(at.time_since_epoch()).count();
}

runtime::Counter& onebot_messages_dropped() {
  static runtime::Counter& counter = runtime::metrics().counter(
      "mooring_onebot_messages_dropped_total",
      "QQ messages dropped, neither stored nor answered: their account had as many replies "
      "waiting to be sent, and messages held, as mooring keeps.");
  return counter;
}

runtime::Counter& onebot_frames_too_big() {
  static runtime::Counter& counter = runtime::metrics().counter(
      "mooring_onebot_frames_too_big_total",
      "Frames from OneBot implementations over gateway.max_message_bytes (or with no room "
      "left in gateway.max_buffered_bytes), read and dropped unread with their connection "
      "kept.");
  return counter;
}

runtime::Counter& onebot_messages(std::string_view direction) {
  return runtime::metrics().counter("mooring_onebot_messages_total",
                                    "QQ messages received from and sent to OneBot implementations.",
                                    {{"direction", std::string(direction)}});
}

// Whether a connection in `role` takes the place of one in `old`.
bool overlaps(Role role, Role old) {
  return role == Role::universal || old == Role::universal || role == old;
}

bool carries_api(Role role) { return role != Role::event; }
bool carries_events(Role role) { return role != Role::api; }

std::optional<std::int64_t> number(std::string_view text) {
  std::int64_t value = 0;
  const auto* end = text.data() + text.size();
  auto [ptr, ec] = std::from_chars(text.data(), end, value);
  if (ec != std::errc() || ptr != end) return std::nullopt;
  return value;
}

// "qq:<self>:private:<user>" / "qq:<self>:group:<group>".
struct Target {
  std::int64_t self_id = 0;
  bool group = false;
  std::int64_t id = 0;
};
std::optional<Target> parse_session_id(std::string_view id) {
  if (!id.starts_with("qq:")) return std::nullopt;
  id.remove_prefix(3);
  const auto colon = id.find(':');
  if (colon == std::string_view::npos) return std::nullopt;
  auto self = number(id.substr(0, colon));
  id.remove_prefix(colon + 1);
  Target target;
  if (id.starts_with("private:")) {
    id.remove_prefix(8);
  } else if (id.starts_with("group:")) {
    id.remove_prefix(6);
    target.group = true;
  } else {
    return std::nullopt;
  }
  auto other = number(id);
  if (!self || !other) return std::nullopt;
  target.self_id = *self;
  target.id = *other;
  return target;
}

}  // namespace

// One WebSocket from an implementation.
struct OneBotAdapter::Link {
  std::uint64_t id = 0;
  std::int64_t self_id = 0;
  Role role = Role::universal;
  std::shared_ptr<net::WsConnection> connection;
  std::unique_ptr<onebot::ApiCalls> calls;  // for a connection that carries API calls
  bool closed = false;
  bool replaced = false;
  bool stuck = false;  // being closed: it answered no send for 2 × api_timeout
  std::optional<runtime::Duration> heartbeat_interval;
  Clock::time_point last_heartbeat = Clock::now();
  runtime::Notifier changed;  // a heartbeat came, reading resumed, or the link closed

  explicit Link(asio::any_io_executor executor) : changed(std::move(executor)) {}
};

// One QQ account, connected or not.
struct OneBotAdapter::Bot {
  std::int64_t self_id = 0;
  std::shared_ptr<Link> api;     // the connection calls go on (universal or API)
  std::shared_ptr<Link> events;  // the connection events come on (universal or Event)
  std::string app_name, app_version, nickname;
  SystemClock::time_point connected_since{};
  SystemClock::time_point last_event{};
  std::uint64_t messages_in = 0;
  std::uint64_t messages_out = 0;
  runtime::Notifier api_changed;    // a new API connection, or it went
  // Since when only an Event connection is there (none carries calls), and
  // whether replies waiting for one were said in the log (once until an API
  // connection comes, past events_only_grace: an API connection reconnecting
  // is not worth a line).
  std::optional<Clock::time_point> events_only_since;
  bool told_events_only = false;
  std::size_t sends = 0;            // under way (at most max_sends_per_account)
  runtime::Notifier send_ended;     // one of them ended: a chat waiting may send
  std::deque<std::string> sent_ids;  // message ids of the bot's own recent sends
  std::set<std::string, std::less<>> sent_id_set;
  // Messages read for chats that were full, in order, with the size of the
  // frames they came in, and how many of them each chat has. They outlive a
  // connection: a message read is not lost when the connection it came on
  // closes.
  std::deque<std::pair<onebot::MessageEvent, std::size_t>> held;
  std::size_t held_bytes = 0;
  std::map<std::string, std::size_t, std::less<>> held_chats;
  // While the host stops, messages read go to their chats at once: these
  // count against the same bounds (the held ones handed over at the stop do
  // not), so a flood during the drain stops the reading as it would have
  // been held, and the chats hold at most twice the bounds.
  std::size_t stop_messages = 0;
  std::size_t stop_bytes = 0;
  // The chats' work: unanswered messages and replies waiting to be sent, as
  // each chat's outlet counts them.
  std::size_t work = 0;
  std::uint64_t dropped = 0;  // messages dropped while it was at max_account_work
  std::uint64_t rate_limited = 0;  // messages beyond a sender's max_messages_per_minute
  std::uint64_t too_big = 0;  // frames over gateway.max_message_bytes, dropped unread

  bool holding_full() const {
    return held.size() + stop_messages >= max_held_messages ||
           held_bytes + stop_bytes >= max_held_bytes;
  }
  bool work_full() const { return work >= max_account_work; }
  // Past the holding bounds the Event connection is not read, unless what
  // holds the messages back may be replies waiting to be sent on that very
  // connection: the answers to the sends come on it behind the messages, so
  // it is read on, and messages beyond the bounds are dropped.
  bool dropping() const { return holding_full() && work_full() && events && events->calls; }
  bool pause_wanted() const { return holding_full() && !dropping(); }

  explicit Bot(const asio::any_io_executor& executor)
      : api_changed(executor), send_ended(executor) {}

  bool connected() const { return api || events; }

  void roles_changed() {
    if (api) told_events_only = false;  // said again only after an API connection came
    if (events && !api) {
      if (events_only_since) return;
      events_only_since = Clock::now();
      api_changed.notify_all();  // replies waiting already count their grace from now
    } else {
      events_only_since.reset();
    }
  }

  void remember_sent(std::string id) {
    // A message id is a number or a short string: a longer one (the peer's,
    // held 512 times) is not kept.
    if (id.empty() || id.size() > max_message_id_bytes || !sent_id_set.insert(id).second) return;
    sent_ids.push_back(std::move(id));
    if (sent_ids.size() > max_sent_ids_kept) {
      sent_id_set.erase(sent_ids.front());
      sent_ids.pop_front();
    }
  }

  // Reading stops while the messages held for full chats reach their bounds.
  // Meanwhile neither the calls on that connection nor its heartbeat count
  // the time: their answers and heartbeats wait unread in its socket.
  void update_reading() {
    if (!events || events->closed) return;
    auto& connection = *events->connection;
    if (pause_wanted() == connection.reading_paused()) return;
    if (pause_wanted()) {
      connection.pause_reading();
    } else {
      connection.resume_reading();
      events->last_heartbeat = std::max(events->last_heartbeat, Clock::now());
      events->changed.notify_all();
    }
    if (events->calls) events->calls->reading_paused(connection.reading_paused());
  }
};

// The outlet of one QQ chat: its stored replies go out through the account's
// API connection, one call at a time, in order, paced.
class OneBotAdapter::Outlet : public chat::Outlet,
                              public std::enable_shared_from_this<OneBotAdapter::Outlet> {
 public:
  Outlet(OneBotAdapter& adapter, std::weak_ptr<Conversation> conversation, Target target)
      : adapter_(adapter),
        alive_(adapter.alive_),
        conversation_(std::move(conversation)),
        conversation_id_(conversation_.lock() ? conversation_.lock()->id() : std::string()),
        target_(target),
        pacer_(adapter.options_.send_interval),
        drained_(adapter.conversations_.supervisor().executor()) {}

  ~Outlet() override {
    if (*alive_ && counted_ > 0) adapter_.bot(target_.self_id).work -= counted_;
  }

  // The QQ message the stored message with `client_id` will be, for quoting.
  // Several may wait to be stored at once (questions sent together).
  void expect(std::string client_id, std::string message_id, std::int64_t sender) {
    last_active_ = Clock::now();
    expected_.emplace_back(std::move(client_id), Origin{std::move(message_id), sender});
    // Bounded: one whose message is never stored (its work was dropped)
    // cannot pile up.
    while (expected_.size() > max_origins_kept) expected_.pop_front();
  }

  void stored(const Submission& message, const store::Appended& appended) override {
    if (!message.client_id) return;
    // A chat holds a few messages waiting to be stored: a short search.
    auto it = std::find_if(expected_.begin(), expected_.end(),
                           [&](const auto& e) { return e.first == *message.client_id; });
    if (it == expected_.end()) return;
    // Kept until its reply is handed over; a message kept as context only
    // gets no reply to quote it.
    if (message.answer) origins_[appended.seq] = std::move(it->second);
    expected_.erase(it);
    while (origins_.size() > max_origins_kept) origins_.erase(origins_.begin());
  }

  // Not stored (the store refused the message, work was dropped): said once,
  // best effort, in order with the replies.
  void error(std::string_view, std::string_view description, Seq,
             std::optional<std::string_view> = std::nullopt) override {
    queue(Outgoing{.seq = 0, .parts = {std::string(description)}});
  }
  void notice(std::string_view) override {}  // QQ has no cancel to answer

  void piece(std::string_view, Seq) override {}  // QQ gets whole messages
  void pieces_done(Seq, bool) override {}

  // Replies go out in the order they were stored, and the delivered cursor
  // follows them. Until a read of the stored replies has reached the newest
  // one (the first thing a chat made in memory does), a reply made now is
  // left to that read: sent first, it would move the cursor past older ones
  // a previous run did not deliver.
  void reply(const store::Message& reply, bool) override {
    if (!caught_up_) {
      missed_ = std::max(missed_, reply.seq);
      return;
    }
    hand(reply);
  }
  void backlog_reply(const store::Message& reply) override { hand(reply); }
  void backlog_done(bool reached_newest) override {
    if (!reached_newest) {
      // Its pages could not go out in time (the account offline, a slow
      // implementation): the read goes on once these sends are out.
      backlog_unfinished_ = true;
      return;
    }
    if (missed_ > handed_up_to_) {
      read_on();  // stored after the read began
      return;
    }
    caught_up_ = true;
  }

  std::size_t page_size() const override { return backlog_page; }

  awaitable<bool> drained() override {
    auto self = shared_from_this();
    const auto deadline = runtime::Deadline::after(2 * adapter_.options_.api_timeout);
    while (!outgoing_.empty() && !host_stopping_) {
      const bool woken = co_await drained_.wait_until(deadline);
      if (!woken || !*alive_) break;
    }
    co_return outgoing_.empty();
  }

  void pending_changed(std::size_t pending) override {
    pending_ = pending;
    count_work();
    const bool full = pending >= std::max<std::size_t>(1, adapter_.options_.max_pending_messages);
    if (full == full_) return;
    full_ = full;
    if (!full) adapter_.release_held(adapter_.bot(target_.self_id));
  }

  bool full() const { return full_; }

  // A chat active in the last few minutes stays in memory with its recent
  // messages (the next reply reads no history); an idle one is forgotten.
  bool holds_work() const override {
    return !outgoing_.empty() || sending_ || Clock::now() - last_active_ < keep_idle_chat;
  }

  void host_stopping() override {
    host_stopping_ = true;
    drained_.notify_all();
  }

  void set_interval(runtime::Duration interval) { pacer_.set_interval(interval); }

 private:
  struct Origin {
    std::string message_id;
    std::int64_t sender = 0;
  };
  struct Outgoing {
    Seq seq = 0;  // 0: not stored, nothing to record
    std::optional<Origin> origin;  // the QQ message it answers, to quote
    std::vector<std::string> parts;
    std::size_t next = 0;  // parts before it were sent
    int refusals = 0;      // of part `next`, by the implementation
    int unanswered = 0;    // sends of part `next` never answered while others were
  };

  // The stored replies are read again from the last one handed.
  void read_on() {
    backlog_unfinished_ = false;
    if (auto conversation = conversation_.lock()) conversation->deliver_after(handed_up_to_);
  }

  void hand(const store::Message& reply) {
    if (reply.seq <= handed_up_to_) return;
    handed_up_to_ = reply.seq;
    const auto max_chars = std::max<std::size_t>(1, adapter_.options_.max_message_chars);
    Outgoing outgoing{.seq = reply.seq, .parts = onebot::split_reply(reply.content, max_chars)};
    // The quote goes with the reply: however long it waits to be sent, later
    // messages cannot push it out.
    if (auto it = origins_.find(reply.reply_to.value_or(0)); it != origins_.end()) {
      outgoing.origin = std::move(it->second);
      origins_.erase(it);
    }
    queue(std::move(outgoing));
  }

  // This chat's share of the account's work; the messages held for the
  // account go on once it is below max_account_work again.
  void count_work() {
    if (!*alive_) return;
    auto& bot = adapter_.bot(target_.self_id);
    const bool was_full = bot.work_full();
    const auto now = pending_ + outgoing_.size();
    bot.work = bot.work - counted_ + now;
    counted_ = now;
    if (!was_full || bot.work_full()) return;
    // Looked at again once this turn is over: a reply being handed over
    // leaves its question's count before it joins outgoing_.
    asio::post(adapter_.conversations_.supervisor().executor(),
               [&adapter = adapter_, alive = alive_, self_id = target_.self_id] {
                 if (!*alive) return;
                 auto& bot = adapter.bot(self_id);
                 if (!bot.work_full()) adapter.release_held(bot);
               });
  }

  void queue(Outgoing outgoing) {
    if (outgoing.parts.empty()) outgoing.parts.emplace_back();
    outgoing_.push_back(std::move(outgoing));
    count_work();
    if (sending_) return;
    sending_ = true;
    auto name = fmt::format("onebot send qq:{}:{}:{}", target_.self_id,
                            target_.group ? "group" : "private", target_.id);
    adapter_.conversations_.supervisor().spawn(std::move(name), "onebot.send",
                                               send_all(shared_from_this()));
  }

  // The message of one call: the first part quotes the message it answers
  // (and, in a group, mentions its sender).
  json::object params(const Outgoing& outgoing) const {
    onebot::Segments segments;
    if (outgoing.next == 0) {
      if (const auto& origin = outgoing.origin) {
        segments.push_back({"reply", {{"id", origin->message_id}}});
        if (target_.group && origin->sender != 0) {
          segments.push_back({"at", {{"qq", std::to_string(origin->sender)}}});
          segments.push_back(onebot::text_segment(" "));
        }
      }
    }
    segments.push_back(onebot::text_segment(outgoing.parts[outgoing.next]));
    json::object params;
    if (target_.group) {
      params["group_id"] = target_.id;
    } else {
      params["user_id"] = target_.id;
    }
    params["message"] = onebot::to_json(segments);
    return params;
  }

  // Runs while there is something to send. A call that fails waits for the
  // account's next API connection (a refused one also retry_refused_after at
  // most, and its message is given up after max_refusals); every wait is
  // bounded and looks at the cancellation (the host stopping) before going on.
  static awaitable<void> send_all(std::shared_ptr<Outlet> self) {
    struct Done {
      Outlet* outlet;
      ~Done() { outlet->sending_ = false; }
    } done{self.get()};
    while (!self->outgoing_.empty() && *self->alive_) {
      auto& adapter = self->adapter_;
      auto& bot = adapter.bot(self->target_.self_id);
      auto& outgoing = self->outgoing_.front();
      if (outgoing.next >= outgoing.parts.size()) {
        const auto seq = outgoing.seq;
        self->outgoing_.pop_front();
        self->count_work();
        self->drained_.notify_all();
        // Sent, or given up: after a restart QQ would show it twice, or refuse it again.
        if (auto conversation = self->conversation_.lock(); conversation && seq != 0)
          conversation->delivered(seq, true);
        if (self->outgoing_.empty()) {
          self->sending_ = false;
          // A read of the stored replies stopped waiting for these sends,
          // or replies were made meanwhile: the read goes on from here.
          if (!self->caught_up_ &&
              (self->backlog_unfinished_ || self->missed_ > self->handed_up_to_))
            self->read_on();
          adapter.conversations_.forget_if_idle(self->conversation_id_);
        }
        continue;
      }
      const auto wait = self->pacer_.wait(Clock::now());
      if (wait > Clock::duration::zero()) {
        const auto pause = std::chrono::ceil<runtime::Duration>(wait);
        const bool slept = co_await runtime::sleep_for(pause);
        if (!slept) co_return;
        continue;
      }
      auto link = bot.api;
      if (!link || link->closed || link->stuck) {  // a stuck one is closing
        auto deadline = runtime::Deadline::after(adapter.options_.api_timeout);
        if (!link && bot.events_only_since && !bot.told_events_only) {
          const auto told_at = *bot.events_only_since + events_only_grace;
          if (Clock::now() >= told_at) {
            bot.told_events_only = true;
            log::warn(
                "onebot: bot {} is connected by an Event connection only: its replies wait "
                "for a connection that carries API calls; give the OneBot implementation a "
                "reverse WebSocket API URL as well, or use one Universal URL",
                bot.self_id);
          } else {
            deadline = deadline.min(runtime::Deadline(told_at));
          }
        }
        co_await bot.api_changed.wait_until(deadline);
        const bool cancelled = co_await runtime::cancelled();
        if (cancelled) co_return;
        continue;
      }
      if (adapter.settling_) co_return;  // the rest stays stored for the next run
      if (bot.sends >= max_sends_per_account) {
        const auto deadline = runtime::Deadline::after(adapter.options_.api_timeout);
        const bool woken = co_await bot.send_ended.wait_until(deadline);
        const bool cancelled = co_await runtime::cancelled();
        if (cancelled) {
          if (woken && *self->alive_) bot.send_ended.notify_one();  // the turn goes on
          co_return;
        }
        continue;
      }
      std::string action = self->target_.group ? "send_group_msg" : "send_private_msg";
      auto call_params = self->params(outgoing);
      const auto timeout = adapter.options_.api_timeout;
      // Counted while under way, however the call ends (settle_sends waits for it).
      struct InFlight {
        OneBotAdapter& adapter;
        Bot& bot;
        std::shared_ptr<bool> alive;
        InFlight(OneBotAdapter& a, Bot& b) : adapter(a), bot(b), alive(a.alive_) {
          ++adapter.sends_in_flight_;
          ++bot.sends;
        }
        ~InFlight() {
          if (!*alive) return;
          --adapter.sends_in_flight_;
          adapter.send_ended_.notify_all();
          --bot.sends;
          bot.send_ended.notify_one();
        }
      };
      const auto chat_id = [&self] {
        return fmt::format("qq:{}:{}:{}", self->target_.self_id,
                           self->target_.group ? "group" : "private", self->target_.id);
      };
      const auto sent_at = Clock::now();
      // Sends answered on the connection until this one, then until the
      // start of the last wait for its answer.
      auto answered_at_wait = link->calls->sends_answered();
      auto quiet_since = sent_at;
      onebot::CallResult result;
      // Why a send whose answer never came is not waited for any more.
      enum class Unanswered { no, lost, stuck } unanswered = Unanswered::no;
      {
        const InFlight in_flight(adapter, bot);
        result = co_await link->calls->call_keeping_late(std::move(action),
                                                         std::move(call_params), timeout);
        // In doubt: QQ may have taken it, and an answer that comes late still
        // tells a send that went out from one that was lost. The call is
        // kept for it until this wait ends, however it ends.
        struct Forget {
          onebot::ApiCalls& calls;
          std::string echo;
          ~Forget() {
            if (!echo.empty()) calls.forget(echo);
          }
        } forget{*link->calls, result ? std::string() : result.error().echo};
        bool waited_again = false;
        while (!result && *self->alive_ && !link->closed) {
          auto error = result.error();
          if (error.kind != onebot::CallError::Kind::timeout || error.echo.empty()) break;
          if (!waited_again) {
            adapter.log_limited(
                spdlog::level::warn, "no answer yet",
                fmt::format("onebot: bot {} has not answered the send of a reply to {} within "
                            "{}; waiting as long again for its answer",
                            self->target_.self_id, chat_id(), runtime::format_duration(timeout)));
            waited_again = true;
          } else if (link->calls->send_answered_after(error.echo)) {
            unanswered = Unanswered::lost;  // a later send was answered, not this one
            break;
          } else if (link->calls->sends_answered() == answered_at_wait) {
            unanswered = Unanswered::stuck;  // no send at all was answered meanwhile
            break;
          } else {
            // Only earlier sends were answered: the implementation works
            // through a backlog of them, and this one's turn is still to
            // come. Each round needs the answer to one of them: bounded.
            adapter.log_limited(
                spdlog::level::info, "behind earlier sends",
                fmt::format("onebot: bot {} is still answering earlier sends; the send of a "
                            "reply to {} is waited for further",
                            self->target_.self_id, chat_id()));
            answered_at_wait = link->calls->sends_answered();
            quiet_since = Clock::now();
          }
          result = co_await link->calls->late_answer(std::move(error.echo), timeout);
        }
      }
      if (!*self->alive_) co_return;
      auto& current = self->outgoing_.front();
      if (result) {
        self->pacer_.sent(Clock::now());
        ++current.next;
        current.refusals = 0;
        current.unanswered = 0;
        ++adapter.bot(self->target_.self_id).messages_out;
        onebot_messages("out").inc();
        if (const auto* data = result->if_object()) {
          if (const auto* id = data->if_contains("message_id"))
            adapter.bot(self->target_.self_id).remember_sent(onebot::echo_key(*id));
        }
        continue;
      }
      const auto error = result.error();
      const bool cancelled = co_await runtime::cancelled();
      if (cancelled) co_return;
      const bool refused = error.kind == onebot::CallError::Kind::failed;
      if (unanswered != Unanswered::no) {
        self->pacer_.sent(sent_at);  // it may well have gone out
        const auto waited =
            runtime::format_duration(std::chrono::ceil<runtime::Duration>(Clock::now() - sent_at));
        // Stuck: a new connection is what brings the implementation's calls
        // back. The reply (or, given up below, the next one) goes out on it.
        if (unanswered == Unanswered::stuck && !link->stuck) {
          link->stuck = true;
          log::warn("onebot: bot {} answered no send for {}; its connection is closed so that "
                    "it connects again, and the replies waiting for it go out then",
                    self->target_.self_id,
                    runtime::format_duration(
                        std::chrono::ceil<runtime::Duration>(Clock::now() - quiet_since)));
          link->connection->close(static_cast<net::websocket::close_code>(4001),
                                  "calls went unanswered");
        }
        if (++current.unanswered >= max_unanswered) {
          // Never answered, it may well have gone out: its later parts go on.
          adapter.log_given_up(
              "sent again: unanswered", "gave up: unanswered",
              fmt::format("onebot: gave up a reply to {} after {} sends that bot {} never "
                          "answered (the last waited {}); QQ may or may not show it, and the "
                          "chat's later replies go on",
                          chat_id(), current.unanswered, self->target_.self_id, waited));
          ++current.next;
          current.refusals = 0;
          current.unanswered = 0;
          continue;
        }
        if (unanswered == Unanswered::lost) {
          adapter.log_limited(
              spdlog::level::warn, "sent again: unanswered",
              fmt::format("onebot: bot {} answered later sends but not the send of a reply to "
                          "{} (waited {}); it is sent again ({} of {} tries)",
                          self->target_.self_id, chat_id(), waited, current.unanswered + 1,
                          max_unanswered));
          continue;
        }
      }
      // Lines through the adapter's limiter: a connection lost under 500
      // chats is one line and a count, not 500.
      if (refused && ++current.refusals >= max_refusals) {
        adapter.log_given_up(
            fmt::format("refused: retcode {}", error.retcode),
            fmt::format("gave up: retcode {}", error.retcode),
            fmt::format("onebot: gave up a reply to {} (retcode {}: {}) after {} refusals; it "
                        "stays stored in the conversation and is not sent to QQ",
                        chat_id(), error.retcode, log::elide(error.message), current.refusals));
        current.next = current.parts.size();  // the loop's top moves the cursor past it
        continue;
      }
      if (refused) {
        adapter.log_limited(
            spdlog::level::warn, fmt::format("refused: retcode {}", error.retcode),
            fmt::format("onebot: a reply to {} was refused (retcode {}: {}); it is sent again in "
                        "{} or when bot {} connects again ({} of {} tries)",
                        chat_id(), error.retcode, log::elide(error.message),
                        runtime::format_duration(retry_refused_after), self->target_.self_id,
                        current.refusals, max_refusals));
      } else if (!link->stuck) {
        // A connection that went away is an expected event (the
        // implementation reconnects); an unanswered call is worth a warning.
        // Cut off with its connection, the send may have gone out before:
        // it is sent again all the same (a reply lost is worse than one twice).
        if (error.kind == onebot::CallError::Kind::disconnected) {
          adapter.log_limited(
              spdlog::level::info, fmt::format("not answered: {}", log::elide(error.message)),
              fmt::format("onebot: the send of a reply to {} was not answered before bot {}'s "
                          "connection closed ({}); it is sent again when the bot connects "
                          "again (QQ shows it twice if it had taken it)",
                          chat_id(), self->target_.self_id, log::elide(error.message)));
        } else {
          adapter.log_limited(
              spdlog::level::warn, fmt::format("not sent: {}", log::elide(error.message)),
              fmt::format("onebot: a reply to {} was not sent ({}); it is sent again when bot {} "
                          "connects again",
                          chat_id(), log::elide(error.message), self->target_.self_id));
        }
      }
      // Cut off with its connection, or on one closed for stuck calls: sent
      // again on the account's next API connection. A refused one is also
      // retried on this one once retry_refused_after has passed.
      const auto retry_refused = runtime::Deadline::after(retry_refused_after);
      while (*self->alive_) {
        auto& now_bot = adapter.bot(self->target_.self_id);
        if (now_bot.api && now_bot.api != link && !now_bot.api->closed) break;
        if (refused && retry_refused.passed()) break;
        auto deadline = runtime::Deadline::after(adapter.options_.api_timeout);
        if (refused) deadline = deadline.min(retry_refused);
        co_await now_bot.api_changed.wait_until(deadline);
        const bool stop = co_await runtime::cancelled();
        if (stop) co_return;
      }
    }
  }

  OneBotAdapter& adapter_;
  std::shared_ptr<bool> alive_;
  std::weak_ptr<Conversation> conversation_;
  std::string conversation_id_;
  Target target_;
  SendPacer pacer_;
  std::deque<Outgoing> outgoing_;
  bool sending_ = false;
  runtime::Notifier drained_;
  bool host_stopping_ = false;  // a backlog waits for no send any more
  Seq handed_up_to_ = 0;  // replies up to here were handed to this outlet
  bool caught_up_ = false;  // a read of the stored replies reached the newest
  bool backlog_unfinished_ = false;  // one stopped before; it goes on when sends are out
  Seq missed_ = 0;          // the newest reply made before that, left to the read
  std::map<Seq, Origin> origins_;  // of stored questions until their reply is handed over
  // By client id until stored, the oldest first.
  std::deque<std::pair<std::string, Origin>> expected_;
  bool full_ = false;
  std::size_t pending_ = 0;  // the conversation's unanswered messages
  std::size_t counted_ = 0;  // pending_ + outgoing_.size() as last counted in the account's work
  Clock::time_point last_active_ = Clock::now();
};

// --- the adapter ---------------------------------------------------------------

OneBotAdapter::OneBotAdapter(Conversations& conversations, OneBotOptions options)
    : conversations_(conversations),
      options_(std::move(options)),
      rate_limiter_(options_.max_messages_per_minute),
      send_ended_(conversations.supervisor().executor()) {
  conversations_.set_outlet_factory("qq:", [this](Conversation& c) { attach_outlet(c); });
}

OneBotAdapter::~OneBotAdapter() {
  *alive_ = false;
  conversations_.set_outlet_factory("qq:", {});
  // No conversation speaks to an outlet of this adapter any more.
  std::vector<std::pair<std::shared_ptr<Conversation>, const chat::Outlet*>> attached;
  conversations_.for_each([&attached](Conversation& conversation) {
    if (const auto* outlet = dynamic_cast<const Outlet*>(conversation.outlet()))
      attached.emplace_back(conversation.shared_from_this(), outlet);
  });
  for (const auto& [conversation, outlet] : attached) conversation->detach(outlet);
  for (auto& [id, bot] : bots_) {
    for (auto* link : {bot->api.get(), bot->events.get()}) {
      if (link && link->calls) link->calls->fail_all("the host is stopping");
    }
  }
}

void OneBotAdapter::attach_outlet(Conversation& conversation) {
  auto target = parse_session_id(conversation.id());
  if (!target) return;
  conversation.attach(
      std::make_shared<Outlet>(*this, conversation.weak_from_this(), *target));
  // Replies a previous run stored and did not deliver go first.
  conversation.deliver_undelivered();
}

OneBotAdapter::Bot& OneBotAdapter::bot(std::int64_t self_id) {
  auto& slot = bots_[self_id];
  if (!slot) {
    slot = std::make_unique<Bot>(conversations_.supervisor().executor());
    slot->self_id = self_id;
  }
  return *slot;
}

void OneBotAdapter::add_routes(net::Router& router, const net::Router& taken) {
  if (!options_.enabled) return;
  auto ws = options_.ws;
  ws.dropped_message_max = std::max(ws.max_message_bytes, dropped_frame_max);
  // Its work is bounded by the account (max_account_work); closing it would
  // cut off every chat of the account.
  ws.shed_when_over_budget = false;
  std::vector<std::string> paths{options_.path, options_.path + "/", "/onebot/v11/ws",
                                 "/onebot/v11/ws/", "/onebot/v11/", "/onebot", "/ws"};
  std::set<std::string> added;
  for (const auto& path : paths) {
    if (path.empty() || path.front() != '/' || !added.insert(path).second) continue;
    if (taken.match(net::http::verb::get, path).status != net::http::status::not_found) continue;
    router.add_websocket(
        path, net::WsRoute{[this](net::Request& request) -> std::optional<net::HttpResponse> {
                             auto verdict = onebot::admit(request, options_.link);
                             if (auto* refused = std::get_if<net::HttpResponse>(&verdict)) {
                               log_refusal(request.remote, refused->body());
                               return std::move(*refused);
                             }
                             if (auto refused = refuse_account(
                                     std::get<onebot::Admitted>(verdict).self_id, request)) {
                               log_refusal(request.remote, refused->body());
                               return refused;
                             }
                             return std::nullopt;
                           },
                           [this](const std::shared_ptr<net::WsConnection>& connection,
                                  net::Request& request) {
                             auto verdict = onebot::admit(request, options_.link);
                             auto* admitted = std::get_if<onebot::Admitted>(&verdict);
                             // Checked again: another account may have come in between.
                             if (admitted && !refuse_account(admitted->self_id, request))
                               open(connection, *admitted, request.remote);
                             else
                               connection->close(net::websocket::close_code::policy_error,
                                                 "refused");
                           },
                           ws});
  }
}

std::optional<net::HttpResponse> OneBotAdapter::refuse_account(std::int64_t self_id,
                                                               const net::Request& request) const {
  if (bots_.size() < max_accounts || bots_.contains(self_id)) return std::nullopt;
  return net::error_response(
      net::http::status::service_unavailable, "too_many_accounts",
      fmt::format("mooring knows {} bot accounts already, the most it keeps; list the accounts "
                  "allowed in onebot.self_ids, or restart mooring to forget the others",
                  max_accounts),
      request);
}

// A client retrying without the token, or many of them, is refused thousands
// of times: the first refusal of a kind is logged, the next ones counted.
void OneBotAdapter::log_refusal(const std::string& remote, std::string_view body) {
  log_limited(spdlog::level::info, body,
              fmt::format("onebot: refused a connection from {}: {}", remote, body));
}

void OneBotAdapter::log_limited(spdlog::level::level_enum level, std::string_view kind,
                                const std::string& line) {
  limited_log_.log(level, kind, line);
  if (limited_log_flushing_) return;
  limited_log_flushing_ = true;
  conversations_.supervisor().spawn("onebot log", "onebot.log", flush_limited_log(this));
}

void OneBotAdapter::log_given_up(std::string_view tries_kind, std::string_view kind,
                                 const std::string& line) {
  // Only when the give-up is written: in a storm of give-ups (500 chats
  // refused alike), the tries of every chat go on being counted together.
  if (limited_log_.writes_next(kind)) limited_log_.settle(tries_kind);
  log_limited(spdlog::level::warn, kind, line);
}

// Writes the counts once each window ends, until the refusals stop; at
// shutdown, at once.
awaitable<void> OneBotAdapter::flush_limited_log(OneBotAdapter* adapter) {
  auto alive = adapter->alive_;
  // However this ends, the next refusal may start another.
  struct Done {
    OneBotAdapter* adapter;
    std::shared_ptr<bool> alive;
    ~Done() {
      if (*alive) adapter->limited_log_flushing_ = false;
    }
  } done{adapter, alive};
  co_await asio::this_coro::throw_if_cancelled(false);
  while (const auto due = adapter->limited_log_.flush()) {
    co_await runtime::sleep_for(std::chrono::ceil<runtime::Duration>(*due - Clock::now()));
    const bool stopping = co_await runtime::cancelled();
    if (!*alive) co_return;
    if (stopping) {
      adapter->limited_log_.settle_all();
      break;
    }
  }
}

void OneBotAdapter::set_options(OneBotOptions options) {
  const bool disabled = options_.enabled && !options.enabled;
  options_ = std::move(options);
  rate_limiter_.set_rate(options_.max_messages_per_minute);
  conversations_.for_each([this](Conversation& conversation) {
    if (auto* outlet = dynamic_cast<Outlet*>(conversation.outlet()))
      outlet->set_interval(options_.send_interval);
  });
  if (!disabled) return;
  for (auto& [id, bot] : bots_) {
    for (const auto& link : {bot->api, bot->events}) {
      if (link && !link->closed)
        link->connection->close(net::websocket::close_code::going_away, "OneBot was disabled");
    }
  }
}

void OneBotAdapter::open(const std::shared_ptr<net::WsConnection>& connection,
                         onebot::Admitted admitted, const std::string& remote) {
  auto& bot = this->bot(admitted.self_id);
  auto link = std::make_shared<Link>(conversations_.supervisor().executor());
  link->id = next_link_++;
  link->self_id = admitted.self_id;
  link->role = admitted.role;
  link->connection = connection;
  if (carries_api(admitted.role)) {
    std::weak_ptr<net::WsConnection> weak = connection;
    link->calls = std::make_unique<onebot::ApiCalls>(
        conversations_.supervisor().executor(), [weak](std::string frame) {
          auto alive = weak.lock();
          return alive && !alive->send(std::move(frame));
        });
  }
  // A newer connection for the same account and role replaces the old one,
  // which is still read for replaced_grace (retire()): what the
  // implementation sent on it before it moved (a message, the answer to a
  // send, which then is not sent again) counts. Then its unanswered calls
  // fail, to be redone on this one, and it is closed.
  const bool was_connected = bot.connected();
  for (auto* slot : {&bot.api, &bot.events}) {
    auto old = *slot;
    if (!old || !overlaps(admitted.role, old->role)) continue;
    if (!old->replaced && !old->closed) {
      old->replaced = true;
      log_limited(spdlog::level::info, fmt::format("replaced {}", admitted.self_id),
                  fmt::format("onebot: bot {} connected again ({}); replacing the previous "
                              "connection",
                              admitted.self_id, onebot::to_string(admitted.role)));
      conversations_.supervisor().spawn(
          fmt::format("onebot retire {} #{}", admitted.self_id, old->id), "onebot.watch",
          retire(this, old));
    }
    if (bot.api == old) bot.api = nullptr;
    if (bot.events == old) bot.events = nullptr;
  }
  if (carries_api(admitted.role)) bot.api = link;
  if (carries_events(admitted.role)) bot.events = link;
  bot.roles_changed();
  if (!was_connected) bot.connected_since = SystemClock::now();
  // A bridge reconnecting in a loop is a line and a count every 10 s.
  log_limited(spdlog::level::info, fmt::format("connected {}", admitted.self_id),
              fmt::format("onebot: bot {} connected ({}, from {})", admitted.self_id,
                          onebot::to_string(admitted.role), remote));
  std::weak_ptr<Link> weak = link;
  connection->on_text = [this, alive = alive_, weak](std::string text) {
    if (!*alive) return;
    if (auto link = weak.lock()) on_text(link, text);
  };
  connection->on_closed = [this, alive = alive_, weak](const net::WsClosed&) {
    if (!*alive) return;
    if (auto link = weak.lock()) on_closed(link);
  };
  connection->on_dropped = [this, alive = alive_, weak](std::size_t bytes) {
    if (!*alive) return;
    if (auto link = weak.lock()) on_too_big(link, bytes);
  };
  bot.update_reading();
  auto& supervisor = conversations_.supervisor();
  supervisor.spawn(fmt::format("onebot watch {} #{}", admitted.self_id, link->id), "onebot.watch",
                   watch(this, link));
  if (link->calls) {
    bot.api_changed.notify_all();
    supervisor.spawn(fmt::format("onebot greet {} #{}", admitted.self_id, link->id),
                     "onebot.greet", greet(this, link));
  }
}

// Closing it at once would drop what is under way on it: Beast discards the
// frames that come after its close frame is sent.
awaitable<void> OneBotAdapter::retire(OneBotAdapter* adapter, std::shared_ptr<Link> link) {
  auto alive = adapter->alive_;
  co_await runtime::sleep_for(replaced_grace);  // or less, when the host stops
  if (!*alive || link->closed) co_return;
  if (link->calls) link->calls->fail_all("replaced by a newer connection");
  link->connection->close(static_cast<net::websocket::close_code>(4000),
                          "replaced by a newer connection");
}

void OneBotAdapter::on_closed(const std::shared_ptr<Link>& link) {
  link->closed = true;
  if (link->calls) link->calls->fail_all("the connection closed");
  link->changed.notify_all();
  auto& bot = this->bot(link->self_id);
  const bool current = bot.api == link || bot.events == link;
  if (bot.api == link) {
    bot.api = nullptr;
    bot.api_changed.notify_all();
  }
  if (bot.events == link) bot.events = nullptr;
  bot.roles_changed();
  if (current)
    log_limited(spdlog::level::info, fmt::format("disconnected {}", link->self_id),
                fmt::format("onebot: bot {} disconnected ({})", link->self_id,
                            onebot::to_string(link->role)));
}

// A frame too big to read, or to hold while the connections hold all the
// buffer budget: whatever it was (a message, an answer to a send, which then
// times out and is sent again), the connection and its account's other chats
// go on.
void OneBotAdapter::on_too_big(const std::shared_ptr<Link>& link, std::size_t bytes) {
  if (link->closed) return;
  ++bot(link->self_id).too_big;
  onebot_frames_too_big().inc();
  const auto limit = options_.ws.max_message_bytes;
  log_limited(spdlog::level::warn, fmt::format("too big {}", link->self_id),
              bytes > limit
                  ? fmt::format("onebot: bot {} sent a frame of {} bytes, over "
                                "gateway.max_message_bytes ({}): dropped unread, the connection "
                                "kept. A message in it is not answered; if QQ users send "
                                "messages that large, raise gateway.max_message_bytes",
                                link->self_id, bytes, limit)
                  : fmt::format("onebot: bot {} sent a frame of {} bytes while the connections "
                                "held all of gateway.max_buffered_bytes: dropped unread, the "
                                "connection kept. A message in it is not answered",
                                link->self_id, bytes));
}

void OneBotAdapter::on_text(const std::shared_ptr<Link>& link, std::string_view text) {
  // A replaced connection is still read until it closes (retire()): what the
  // implementation sent on it before it moved, it sends on no other.
  if (link->closed) return;
  auto frame = onebot::sort_frame(text);
  if (auto* answer = std::get_if<onebot::Answer>(&frame)) {
    if (!link->calls || !link->calls->answer(*answer))
      log::debug("onebot: bot {} answered a call nobody waits for (echo {})", link->self_id,
                 log::elide(answer->echo));
  } else if (auto* event = std::get_if<onebot::Event>(&frame)) {
    auto& bot = this->bot(link->self_id);
    bot.last_event = SystemClock::now();
    on_event(bot, link, event->object, text.size());
  } else {
    log::debug("onebot: bot {} sent a frame mooring cannot read: {}", link->self_id,
               std::get<onebot::Unreadable>(frame).why);
  }
}

void OneBotAdapter::on_event(Bot& bot, const std::shared_ptr<Link>& link,
                             const json::object& object, std::size_t frame_bytes) {
  auto event = onebot::read_event(object);
  if (auto* message = std::get_if<onebot::MessageEvent>(&event)) {
    // The account is the one the handshake admitted, whatever the event says.
    message->self_id = link->self_id;
    // Some implementations report the bot's own sends as messages: answering
    // them could loop, and its replies are stored already. So could answering
    // another account this mooring serves (two bots in one group, each
    // addressed by the other's reply, would answer each other without end).
    if (message->user_id == link->self_id) {
      log::debug("onebot: bot {}: ignored a message it sent itself", link->self_id);
      return;
    }
    if (bots_.contains(message->user_id)) {
      log::debug("onebot: bot {}: ignored a message from bot {}, which mooring serves too",
                 link->self_id, message->user_id);
      return;
    }
    ++bot.messages_in;
    onebot_messages("in").inc();
    if (stopping_) {
      ++bot.stop_messages;
      bot.stop_bytes += frame_bytes;
      on_message(bot, *message);
      bot.update_reading();
      return;
    }
    const auto session = message->session_id();
    if (bot.held_chats.contains(session) || chat_full(session) || bot.work_full()) {
      if (bot.dropping()) {
        drop(bot, *message);
        return;
      }
      hold(bot, std::move(*message), frame_bytes);
      return;
    }
    on_message(bot, *message);
  } else if (auto* heartbeat = std::get_if<onebot::Heartbeat>(&event)) {
    on_heartbeat(link, *heartbeat);
  } else {
    on_other(link, event);
  }
}

void OneBotAdapter::drop(Bot& bot, const onebot::MessageEvent& message) {
  ++bot.dropped;
  onebot_messages_dropped().inc();
  log_limited(spdlog::level::warn, "dropped: work full",
              fmt::format("onebot: bot {} has {} replies to make or send and {} messages held, "
                          "as many as mooring keeps: a message from {} was dropped, neither "
                          "stored nor answered. The OneBot implementation takes mooring's sends "
                          "slower than messages come (or not at all): check it and its "
                          "connection",
                          bot.self_id, bot.work, bot.held.size(), message.session_id()));
}

void OneBotAdapter::hold(Bot& bot, onebot::MessageEvent message, std::size_t frame_bytes) {
  ++bot.held_chats[message.session_id()];
  bot.held.emplace_back(std::move(message), frame_bytes);
  bot.held_bytes += frame_bytes;
  bot.update_reading();
}

bool OneBotAdapter::chat_full(const std::string& session_id) const {
  const auto conversation = conversations_.find(session_id);
  if (!conversation) return false;
  const auto* outlet = dynamic_cast<const Outlet*>(conversation->outlet());
  return outlet && outlet->full();
}

// Held or not, a chat's messages are handed to it in the order they came;
// those of a chat that is full wait, and so do the ones behind them in it.
void OneBotAdapter::release_held(Bot& bot, bool all) {
  if (releasing_) return;  // handing one over can call back here
  releasing_ = true;
  std::set<std::string, std::less<>> waiting;  // chats whose earlier message stays held
  for (auto at = bot.held.begin(); at != bot.held.end();) {
    if (!all && bot.work_full()) break;  // all of them wait
    auto session = at->first.session_id();
    if (!all && (waiting.contains(session) || chat_full(session))) {
      waiting.insert(std::move(session));
      ++at;
      continue;
    }
    auto [message, bytes] = std::move(*at);
    at = bot.held.erase(at);
    bot.held_bytes -= bytes;
    if (auto count = bot.held_chats.find(session); count != bot.held_chats.end() &&
                                                   --count->second == 0)
      bot.held_chats.erase(count);
    // Not counted against the stop's bounds, which count what is read from
    // the stop on: reading resumes, and the answers to sends already made
    // (and the heartbeats) that wait behind the held messages are read.
    on_message(bot, message);
  }
  releasing_ = false;
  bot.update_reading();
}

awaitable<void> OneBotAdapter::settle_sends(runtime::Deadline deadline) {
  settling_ = true;
  while (sends_in_flight_ > 0 && !deadline.passed()) {
    const bool woken = co_await send_ended_.wait_until(deadline);
    if (!woken) break;
  }
}

void OneBotAdapter::hand_over_held() {
  // Messages read from now on go to their chats at once, within the bounds
  // of what is held: the drain is short.
  stopping_ = true;
  std::size_t handed = 0;
  for (auto& [id, bot] : bots_) {
    handed += bot->held.size();
    release_held(*bot, true);
  }
  if (handed > 0)
    log::info("onebot: {} message(s) waiting for full chats are stored at the stop, to be "
              "answered after the restart", handed);
}

void OneBotAdapter::on_message(Bot& bot, const onebot::MessageEvent& message) {
  const auto incoming = onebot::read_incoming(message.message, bot.self_id);
  // The message id with the event's time: an event delivered twice is
  // stored once, and an id an implementation hands out again after its
  // restart is still a new message.
  Submission submission{.images = incoming.images,
                        .client_id = fmt::format("{}@{}", message.message_id, message.time)};
  if (message.group) {
    const bool replies_to_bot =
        incoming.replying_to && bot.sent_id_set.contains(*incoming.replying_to);
    auto request = onebot::group_request(incoming, replies_to_bot, options_.group_prefixes);
    submission.answer = request.has_value();
    submission.text = message.sender_name + ": " + (request ? *request : incoming.text);
  } else {
    submission.text = incoming.text;
  }
  if (incoming.text.empty() && incoming.images.empty()) return;
  if (submission.answer && !admit(bot, message)) return;
  if (message.message_id == 0) submission.client_id.reset();
  auto conversation = conversations_.get(message.session_id());
  if (auto* outlet = dynamic_cast<Outlet*>(conversation->outlet()); outlet && submission.client_id)
    outlet->expect(*submission.client_id, std::to_string(message.message_id), message.user_id);
  conversation->submit(std::move(submission));
}

bool OneBotAdapter::admit(Bot& bot, const onebot::MessageEvent& message) {
  const auto sender = fmt::format("{}:{}", bot.self_id, message.user_id);
  const auto now = Clock::now();
  if (rate_limiter_.try_take(sender, now)) return true;
  ++bot.rate_limited;
  const auto limit = options_.max_messages_per_minute;
  log_limited(spdlog::level::info, "rate limited",
              fmt::format("onebot: QQ user {} sent bot {} more than {} messages to answer in a "
                          "minute (gateway.max_messages_per_minute): one was neither stored nor "
                          "answered",
                          message.user_id, bot.self_id, limit));
  if (told_limited_.try_take(sender, now)) {
    auto conversation = conversations_.get(message.session_id());
    if (auto* outlet = dynamic_cast<Outlet*>(conversation->outlet())) {
      const auto text = fmt::format(
          "at most {} messages a minute; this one was not answered, send it again in a minute",
          limit);
      outlet->error("rate_limited", message.group ? message.sender_name + ": " + text : text, 0);
    }
  }
  return false;
}

void OneBotAdapter::on_heartbeat(const std::shared_ptr<Link>& link,
                                 const onebot::Heartbeat& heartbeat) {
  link->last_heartbeat = Clock::now();
  if (heartbeat.interval_ms && *heartbeat.interval_ms > 0) {
    const runtime::Duration announced(*heartbeat.interval_ms);
    const auto interval = std::min(announced, max_heartbeat_interval);
    if (interval < announced && link->heartbeat_interval != interval)
      log::warn(
          "onebot: bot {} announced a heartbeat interval of {}ms; mooring counts at most {} "
          "(the connection closes after {} without a heartbeat)",
          link->self_id, announced.count(), runtime::format_duration(interval),
          runtime::format_duration(3 * interval));
    link->heartbeat_interval = interval;
  }
  link->changed.notify_all();
}

void OneBotAdapter::on_other(const std::shared_ptr<Link>& link, const onebot::OneBotEvent& event) {
  if (auto* lifecycle = std::get_if<onebot::Lifecycle>(&event)) {
    log::info("onebot: bot {}: lifecycle {}", link->self_id, log::elide(lifecycle->sub_type));
  } else if (auto* request = std::get_if<onebot::RequestEvent>(&event)) {
    log::info("onebot: bot {}: {} request from {}{}: \"{}\" (left to you: accept or refuse it in QQ)",
              link->self_id, log::elide(request->kind), request->user_id,
              request->kind == "group" ? fmt::format(" for group {}", request->group_id) : "",
              log::elide(request->comment));
    requests_.push_back(json::object{{"self_id", link->self_id},
                                     {"kind", request->kind},
                                     {"user_id", request->user_id},
                                     {"group_id", request->group_id},
                                     {"comment", request->comment},
                                     {"received_ms", unix_ms(SystemClock::now())}});
    if (requests_.size() > max_requests_kept) requests_.erase(requests_.begin());
  } else if (const auto& ignored = std::get<onebot::Ignored>(event); ignored.unreadable_message) {
    log_limited(spdlog::level::info, "unreadable message",
                fmt::format("onebot: bot {} sent {}; it is neither stored nor answered (the "
                            "OneBot implementation may be misconfigured or too new)",
                            link->self_id, ignored.why));
  } else {
    log::debug("onebot: bot {}: ignored an event: {}", link->self_id, ignored.why);
  }
}

// After a connection that carries calls opens: who the implementation and the
// account are, then every reply stored but not delivered for this account.
awaitable<void> OneBotAdapter::greet(OneBotAdapter* adapter, std::shared_ptr<Link> link) {
  auto alive = adapter->alive_;
  bool stopping = false;
  const auto timeout = adapter->options_.api_timeout;
  std::string version_action = "get_version_info";
  auto version = co_await link->calls->call(std::move(version_action), {}, timeout);
  stopping = co_await runtime::cancelled();
  if (stopping || !*alive || link->closed) co_return;
  auto& bot = adapter->bot(link->self_id);
  if (version && version->is_object()) {
    const auto& data = version->as_object();
    if (const auto* name = data.if_contains("app_name"); name && name->is_string())
      bot.app_name = runtime::shorten(name->as_string(), 64);
    if (const auto* v = data.if_contains("app_version"); v && v->is_string())
      bot.app_version = runtime::shorten(v->as_string(), 64);
  }
  std::string login_action = "get_login_info";
  auto login = co_await link->calls->call(std::move(login_action), {}, timeout);
  stopping = co_await runtime::cancelled();
  if (stopping || !*alive || link->closed) co_return;
  if (login && login->is_object()) {
    if (const auto* nickname = login->as_object().if_contains("nickname");
        nickname && nickname->is_string())
      adapter->bot(link->self_id).nickname = runtime::shorten(nickname->as_string(), 64);
  }
  const auto& known = adapter->bot(link->self_id);
  log::info("onebot: bot {} is {} {} ({})", link->self_id,
            known.app_name.empty() ? "an unnamed implementation" : known.app_name,
            known.app_version, known.nickname.empty() ? "no nickname" : known.nickname);
  auto prefix = fmt::format("qq:{}:", link->self_id);
  auto sessions = co_await adapter->conversations_.store().undelivered_sessions(std::move(prefix));
  stopping = co_await runtime::cancelled();
  if (stopping || !*alive) co_return;
  if (!sessions) {
    log::error("onebot: cannot read the replies bot {} has not delivered: {}", link->self_id,
               sessions.error().message);
    co_return;
  }
  if (!sessions->empty())
    log::info("onebot: sending the replies of {} chat(s) bot {} has not delivered",
              sessions->size(), link->self_id);
  for (const auto& session : *sessions) {
    // A chat made in memory now reads its stored replies first by itself.
    if (auto known = adapter->conversations_.find(session.user_id))
      known->deliver_undelivered();
    else
      adapter->conversations_.get(session.user_id);
  }
}

// Closes a connection whose implementation stopped sending heartbeats (3 ×
// its interval); the WebSocket ping watches one that sends none. Not while
// its reading is paused: then the heartbeats wait unread in the socket.
awaitable<void> OneBotAdapter::watch(OneBotAdapter* adapter, std::shared_ptr<Link> link) {
  auto alive = adapter->alive_;
  co_await asio::this_coro::throw_if_cancelled(false);
  while (*alive && !link->closed) {
    auto deadline = runtime::Deadline::after(std::chrono::minutes(1));
    if (link->heartbeat_interval) {
      const auto due = link->last_heartbeat + 3 * *link->heartbeat_interval;
      // Not read, its heartbeats cannot be heard: the count starts again
      // when reading does.
      const bool paused = link->connection->reading_paused();
      if (Clock::now() >= due && !paused) {
        log::warn("onebot: bot {} sent no heartbeat for {}; closing its connection (a half-open "
                  "socket; the implementation reconnects)",
                  link->self_id, runtime::format_duration(3 * *link->heartbeat_interval));
        link->connection->force_close();
        co_return;
      }
      if (!paused)
        deadline = runtime::Deadline(std::max(due, Clock::now() + std::chrono::milliseconds(10)));
    }
    co_await link->changed.wait_until(deadline);
    const bool cancelled = co_await runtime::cancelled();
    if (cancelled) co_return;
  }
}

json::object OneBotAdapter::status() const {
  json::array bots;
  for (const auto& [id, bot] : bots_) {
    if (!bot->connected()) continue;
    json::array roles;
    std::set<std::string_view> seen;
    for (const auto* link : {bot->api.get(), bot->events.get()}) {
      if (link && seen.insert(onebot::to_string(link->role)).second)
        roles.emplace_back(onebot::to_string(link->role));
    }
    bots.push_back(json::object{
        {"self_id", id},
        {"roles", std::move(roles)},
        {"implementation", json::object{{"name", bot->app_name}, {"version", bot->app_version}}},
        {"nickname", bot->nickname},
        {"connected_since_ms", unix_ms(bot->connected_since)},
        {"last_event_ms", bot->last_event == SystemClock::time_point{} ? json::value(nullptr)
                                                                       : json::value(unix_ms(bot->last_event))},
        {"messages_in", bot->messages_in},
        {"messages_out", bot->messages_out},
        {"work", bot->work},
        {"held", bot->held.size()},
        {"dropped", bot->dropped},
        {"rate_limited", bot->rate_limited},
        {"too_big", bot->too_big},
    });
  }
  json::array requests;
  for (const auto& request : requests_) requests.push_back(request);
  return json::object{{"enabled", options_.enabled},
                      {"path", options_.path},
                      {"bots", std::move(bots)},
                      {"requests", std::move(requests)}};
}

std::size_t OneBotAdapter::connections() const {
  std::size_t n = 0;
  for (const auto& [id, bot] : bots_) {
    if (bot->api) ++n;
    if (bot->events && bot->events != bot->api) ++n;
  }
  return n;
}

}  // namespace mooring::chat
