#include "net/ws_connection.hpp"

#include "runtime/cancellation.hpp"
#include "runtime/exceptions.hpp"
#include "runtime/log.hpp"
#include "runtime/log_limiter.hpp"

#include <algorithm>
#include <array>
#include <utility>

#include <boost/asio/ssl/error.hpp>
#include <boost/beast/core/error.hpp>

#include <linux/sockios.h>
#include <sys/ioctl.h>

namespace mooring::net {

namespace beast = boost::beast;

bool is_expected_ending(const error_code& ec) {
  return runtime::is_cancellation(ec) || ec == asio::error::eof ||
         ec == asio::error::connection_reset || ec == asio::error::broken_pipe ||
         ec == asio::error::bad_descriptor || ec == asio::error::not_connected ||
         ec == websocket::error::closed || ec == beast::error::timeout ||
         ec == asio::ssl::error::stream_truncated || ec == beast::http::error::end_of_stream;
}

std::string close_code_label(const WsClosed& closed) {
  const auto code = closed.code;
  if (code == 0) return closed.by_peer ? "1005" : "1006";
  // A code this server sent comes from its own source: a bounded set.
  const bool registered = (code >= 1000 && code <= 1003) || (code >= 1005 && code <= 1014);
  return registered || !closed.by_peer ? std::to_string(code) : "other";
}

namespace {

runtime::Counter& frames(const std::string& listener, std::string_view direction) {
  return runtime::metrics().counter(
      "mooring_websocket_frames_total",
      "WebSocket data messages read (in) and written (out); a message the peer sent in "
      "fragments counts once, control frames (ping, pong, close) not at all.",
      {{"listener", listener}, {"direction", std::string(direction)}});
}

runtime::Counter& closes(const std::string& listener, std::string_view code) {
  return runtime::metrics().counter(
      "mooring_websocket_closes_total",
      "WebSocket connections ended, by the close code sent or received (1005: a close frame "
      "without a code; 1006: no close frame, the connection dropped or timed out; other: a "
      "peer's code outside the registered ones).",
      {{"listener", listener}, {"code", std::string(code)}});
}

}  // namespace

WsConnection::WsConnection(Stream stream, WsOptions options, std::string remote,
                           std::string log_name)
    : stream_(std::move(stream)),
      options_(options),
      remote_(std::move(remote)),
      log_name_(std::move(log_name)),
      timer_(stream_.get_executor()),
      last_heard_(Clock::now()),
      frames_in_(frames(log_name_, "in")),
      frames_out_(frames(log_name_, "out")) {
  // Beast fails a message past this as it reads the frame header that
  // announces it; up to it, read_done() drops what is over max_message_bytes.
  stream_.read_message_max(std::max(options_.max_message_bytes, options_.dropped_message_max));
  websocket::stream_base::timeout timeouts{};
  timeouts.handshake_timeout = options_.close_timeout;  // also bounds the close handshake
  timeouts.idle_timeout = websocket::stream_base::none();  // the heartbeat below replaces it
  timeouts.keep_alive_pings = false;
  stream_.set_option(timeouts);
  stream_.text(true);
  stream_.control_callback([this](websocket::frame_type, std::string_view) {
    last_heard_ = Clock::now();
    awaiting_pong_ = ping_regardless_ = false;
  });
}

void WsConnection::start(std::function<void()> on_ended) {
  on_ended_ = std::move(on_ended);
  stream_.next_layer().start_corking();
  stream_.next_layer().on_taken([weak = weak_from_this()] {
    if (auto self = weak.lock()) self->taken_by_socket();
  });
  arm_timer();
  write_next();  // frames the owner sent before start()
  read_next();
}

void WsConnection::cancel(asio::cancellation_type type) {
  if ((type & asio::cancellation_type::terminal) != asio::cancellation_type::none) {
    force_close();
  } else {
    close(websocket::close_code::going_away, "server shutting down");
  }
}

// A step of the reader, in a completion handler: nothing escapes to the event
// loop. A failure of the reader itself (memory) ends the connection, logged once.
template <typename Step>
void WsConnection::guarded(Step step) {
  try {
    step();
  } catch (...) {
    log::error("{}: connection from {} failed: {}", log_name_, remote_,
               runtime::describe_current_exception());
    drop_incoming();
    held_ = false;
    finish();
  }
}

// The reader. Each step runs in a completion handler that holds the
// connection (its `self`); the step that ends it calls finish(), once, with
// nothing of the reader pending. Beast completes a read whose bytes are
// already buffered through the executor, never inline, so a burst of
// messages is a chain of handlers, not a recursion.
void WsConnection::read_next() {
  if (finished_) return;
  if (state_ == State::closed) {
    finish();
    return;
  }
  if (paused_) {
    wait_for_resume();
    return;
  }
  stream_.async_read_some(
      asio::buffer(first_),
      asio::bind_cancellation_slot(read_cancel_.slot(), [self = shared_from_this()](
                                                            error_code ec, std::size_t n) {
        self->guarded([&] {
          if (!ec) self->incoming_.assign(self->first_.data(), n);
          self->read_done(ec, n);
        });
      }));
}

// The rest of a message longer than first_, into the string on_text gets,
// held against the buffer budget. The rest of a message the budget refused is
// read over the same bytes and dropped.
void WsConnection::read_rest() {
  std::size_t old_size = discarding_ ? 0 : incoming_.size();
  std::size_t chunk = discarding_ ? discard_piece_bytes
                                  : std::clamp<std::size_t>(old_size, 4096, 64 * 1024);
  if (!discarding_ && old_size + chunk > incoming_.capacity()) {
    // Room as the string would make it (doubling) but within the message's
    // limit, taken from the budget before it is allocated: what is held is
    // the capacity, not the bytes read so far.
    const std::size_t room =
        std::max(old_size + chunk, std::min(2 * incoming_.capacity(), options_.max_message_bytes));
    if (incoming_share_.grow_to(room, buffer_budget().kept_for_sending())) {
      // Into a new string: reserve() on this one may double its capacity
      // past `room`, and the budget would not see the difference.
      std::string bigger;
      bigger.reserve(room);
      bigger.assign(incoming_);
      incoming_.swap(bigger);
      incoming_share_.set(incoming_.capacity());
    } else {
      if (options_.dropped_message_max > options_.max_message_bytes) {
        // An owner that keeps its connection through a message it cannot
        // take: dropped like one too big (on_dropped).
        drop_for_budget();
      } else {
        refuse_for_budget();
      }
      old_size = 0;
      chunk = discard_piece_bytes;
    }
  }
  incoming_.resize(old_size + chunk);
  if (discarding_) incoming_share_.set(incoming_.capacity());
  stream_.async_read_some(
      asio::buffer(incoming_.data() + old_size, chunk),
      asio::bind_cancellation_slot(
          read_cancel_.slot(), [self = shared_from_this(), old_size](error_code ec, std::size_t n) {
            self->guarded([&] {
              self->incoming_.resize(old_size + (ec ? 0 : n));
              self->read_done(ec, n);
            });
          }));
}

// A read of a message's bytes has ended: the message goes on, or is whole,
// or reading has ended (and with it the connection).
void WsConnection::read_done(const error_code& ec, std::size_t bytes) {
  if (ec) {
    message_open_ = false;
    drop_incoming();
    read_ended(ec);
    finish();
  } else if (stream_.is_message_done()) {
    const std::size_t size = oversized_ ? message_bytes_ + bytes : incoming_.size();
    message_open_ = false;
    if (std::exchange(oversized_, false) ||
        (!discarding_ && size > options_.max_message_bytes)) {
      discarding_ = false;
      drop_incoming();
      message_dropped(size);
      return;
    }
    if (std::exchange(discarding_, false)) drop_incoming();
    message_read();
  } else {
    // A message begun, or going on: the timer watches that it keeps coming.
    // Its bytes are as good as a pong: a peer busy sending one is alive.
    const auto now = Clock::now();
    if (!message_open_ || bytes > 0) {
      last_heard_ = now;
      awaiting_pong_ = ping_regardless_ = false;
    }
    // Its time starts again with each step of it: any bytes while it holds
    // little, a sixteenth of what it holds (16 KiB at most) once it holds
    // more. However slowly a message comes, then, it cannot keep a megabyte
    // of the budget with a byte now and then.
    if (!message_open_) message_bytes_ = message_mark_ = 0;
    message_bytes_ += bytes;
    const auto step = std::clamp<std::size_t>(message_mark_ / 16, 1, message_step_bytes);
    if (!message_open_ || message_bytes_ - message_mark_ >= step) {
      message_heard_ = now;
      message_mark_ = message_bytes_;
    }
    if (!std::exchange(message_open_, true)) arm_timer();
    // Past max_message_bytes (only where dropped_message_max lets Beast read
    // on): what it holds is given back, and the rest is read and dropped.
    if (!discarding_ && message_bytes_ > options_.max_message_bytes) {
      discarding_ = oversized_ = true;
      drop_incoming();
    }
    read_rest();
  }
}

// A whole message is in incoming_.
void WsConnection::message_read() {
  frames_in_.inc();
  last_heard_ = Clock::now();
  awaiting_pong_ = ping_regardless_ = false;
  hand_over();
}

// A message over max_message_bytes has been read to its end and dropped: its
// owner is told, and reading goes on.
void WsConnection::message_dropped(std::size_t bytes) {
  last_heard_ = Clock::now();
  awaiting_pong_ = ping_regardless_ = false;
  if (state_ == State::open && on_dropped) {
    try {
      on_dropped(bytes);
    } catch (...) {
      log::error("{}: handling a message from {} too big to read failed: {}; closing with 1011",
                 log_name_, remote_, runtime::describe_current_exception());
      close(websocket::close_code::internal_error, "internal error");
    }
  }
  read_next();
}

// The message in incoming_ goes to on_text now, or is held while paused (a
// read already under way when the owner paused is held back too).
void WsConnection::hand_over() {
  if (state_ == State::closed) {
    held_ = false;
    drop_incoming();
    finish();
    return;
  }
  if (paused_) {
    held_ = true;
    wait_for_resume();
    return;
  }
  held_ = false;
  auto text = std::exchange(incoming_, std::string());
  incoming_share_.set(0);
  deliver(std::move(text));
  read_next();
}

// Paused: nothing is read until resume_reading() or force_close() ends this
// wait, whose handler holds the connection meanwhile. Paused again before
// the handler ran, it waits again.
void WsConnection::wait_for_resume() {
  if (!pause_wait_) pause_wait_ = std::make_unique<Timer>(stream_.get_executor());
  pause_wait_->expires_at(Clock::time_point::max());
  pause_wait_->async_wait([self = shared_from_this()](error_code) {
    self->guarded([&] {
      if (self->held_) {
        self->hand_over();
      } else {
        self->read_next();
      }
    });
  });
}

// Runs once, when the reader has ended, on every path out of it. A write
// still in flight completes later with an error (the socket is closed) and
// reports nothing.
void WsConnection::finish() {
  if (finished_) return;
  finished_ = true;
  force_close();
  timer_.cancel();
  on_text = nullptr;
  on_dropped = nullptr;
  queue_.clear();
  untaken_ = {};  // their bytes may never leave: their on_written never runs
  queued_bytes_ = 0;
  frames_share_.set(0);
  incoming_share_.set(0);
  closes(log_name_, close_code_label(closed_)).inc();
  if (auto callback = std::exchange(on_closed, nullptr)) {
    try {
      callback(closed_);
    } catch (...) {
      log::error("{}: reporting the end of the connection from {} failed: {}", log_name_,
                 remote_, runtime::describe_current_exception());
    }
  }
  if (auto ended = std::exchange(on_ended_, nullptr)) {
    try {
      ended();
    } catch (...) {
      log::error("{}: ending the connection from {} failed: {}", log_name_, remote_,
                 runtime::describe_current_exception());
    }
  }
  // A read or a close Beast still holds suspended ends now, its handler run
  // inline (and with it the last hold on this connection but `keep`).
  const auto keep = shared_from_this();
  read_cancel_.emit(asio::cancellation_type::terminal);
  close_cancel_.emit(asio::cancellation_type::terminal);
}

namespace {
// What peers do wrong, a few lines at a time: a client that reconnects to
// break the protocol again would otherwise write a line per try. One limiter
// per thread (it is not thread-safe); its kinds are the listener and the few
// errors Beast reports. Nothing wakes it: the count of a storm is written
// with the next fault after its window, and every close is counted at once in
// mooring_websocket_closes_total{code}.
runtime::LogLimiter& peer_faults() {
  thread_local runtime::LogLimiter limiter(runtime::LogLimiter::Options{.max_kinds = 32});
  return limiter;
}
}  // namespace

// Why reading ended, for on_closed and the log.
void WsConnection::read_ended(const error_code& ec) {
  if (ec == websocket::error::closed && closed_.code == 0) {
    closed_.code = stream_.reason().code;
    closed_.reason = std::string(stream_.reason().reason.c_str());
    closed_.by_peer = true;
  } else if (ec == websocket::error::message_too_big) {
    closed_.code = websocket::close_code::too_big;
    closed_.reason = "message too big";
    peer_faults().log(spdlog::level::info, log_name_ + ": too big",
                      fmt::format("{}: {} sent a message over {} bytes; closed with 1009",
                                  log_name_, remote_,
                                  std::max(options_.max_message_bytes,
                                           options_.dropped_message_max)));
  } else if (!is_expected_ending(ec)) {
    peer_faults().log(spdlog::level::info, log_name_ + ": " + ec.message(),
                      fmt::format("{}: connection from {} ended: {}", log_name_, remote_,
                                  ec.message()));
  }
}

void WsConnection::drop_incoming() {
  incoming_ = std::string();
  incoming_share_.set(0);
}

// The connections hold all the budget allows: a message that needs more is
// refused, and its connection closed with 1013 (try again later). What it
// held is given back at once; what is left of it is read and dropped.
void WsConnection::refuse_for_budget() {
  const auto& budget = buffer_budget();
  peer_faults().log(spdlog::level::warn, log_name_ + ": budget",
                    fmt::format("{}: a message from {} was refused: the connections hold {} "
                                "of the {} bytes they may (gateway.max_buffered_bytes); closed "
                                "with 1013",
                                log_name_, remote_, budget.used(), budget.limit()));
  discarding_ = true;
  drop_incoming();
  close(websocket::close_code::try_again_later, "the server is busy; send it again later");
}

// The same, for a connection kept through a message it cannot take (see
// WsOptions::dropped_message_max): the message is read and dropped.
void WsConnection::drop_for_budget() {
  const auto& budget = buffer_budget();
  peer_faults().log(spdlog::level::warn, log_name_ + ": budget",
                    fmt::format("{}: a message from {} was dropped: the connections hold {} "
                                "of the {} bytes they may (gateway.max_buffered_bytes)",
                                log_name_, remote_, budget.used(), budget.limit()));
  discarding_ = oversized_ = true;
  drop_incoming();
}

// A message begun and then left (pings answered, too little of it for
// heartbeat_interval + heartbeat_timeout) would hold its part of the budget
// for as long as its peer liked: refused like one the budget cannot hold,
// with 1008. What is left of it is read and dropped.
void WsConnection::abandon_unfinished() {
  peer_faults().log(spdlog::level::info, log_name_ + ": unfinished",
                    fmt::format("{}: {} sent too little of a message it began (less than a "
                                "sixteenth of what it holds, at most 16 KiB) for {}; closed with "
                                "1008",
                                log_name_, remote_,
                                runtime::format_duration(options_.heartbeat_interval +
                                                         options_.heartbeat_timeout)));
  discarding_ = true;
  drop_incoming();
  close(websocket::close_code::policy_error,
        "a message was left unfinished; send each message whole");
}

// A handler that throws is a bug on our side, not the peer's: the peer is told
// so (1011) and the connection ends; the session's other connections and the
// process go on.
void WsConnection::deliver(std::string text) {
  if (state_ != State::open || !on_text) return;
  try {
    on_text(std::move(text));
  } catch (...) {
    log::error("{}: handling a message from {} failed: {}; closing with 1011", log_name_, remote_,
               runtime::describe_current_exception());
    close(websocket::close_code::internal_error, "internal error");
  }
}

// Starts the next write when none is in flight: the queued frames in order,
// then the close frame (closing) or a ping (heartbeat). Each completion
// starts the next, so a burst of frames is a chain of writes with no timer
// or coroutine wake-up between them.
void WsConnection::write_next() {
  if (write_busy_ || state_ == State::closed || finished_) return;
  if (!queue_.empty()) {
    writing_ = std::move(queue_.front());
    queue_.pop_front();
    writing_offset_ = 0;
    write_busy_ = writing_frame_ = true;
    watch_write();
    write_piece();
    return;
  }
  if (state_ == State::closing) {
    if (close_sent_) return;
    close_sent_ = write_busy_ = true;
    close_started_ = Clock::now();
    const websocket::close_reason reason(static_cast<websocket::close_code>(closed_.code), closed_.reason);
    stream_.async_close(reason, asio::bind_cancellation_slot(
                                    close_cancel_.slot(), [self = shared_from_this()](error_code) {
                                      self->write_busy_ = false;
                                      self->force_close();
                                    }));
    return;
  }
  if (ping_wanted_ && !paused_) {
    ping_wanted_ = false;
    ping_sent_ = Clock::now();
    awaiting_pong_ = true;
    answer_by_taking_ = false;
    if (!ping_regardless_ && unsent_in_socket() > 0) {
      // A ping would wait behind bytes the peer has not taken yet, and its
      // answer would only say how long they take to read. Taking some of
      // them answers as well as a pong.
      answer_by_taking_ = true;
      taken_at_ping_ = taken_by_peer();
      arm_timer();
      return;
    }
    write_busy_ = true;
    watch_write();
    stream_.async_ping({}, [self = shared_from_this()](error_code ec) {
      self->write_busy_ = false;
      if (ec) {
        self->force_close();
        return;
      }
      self->write_next();
    });
  }
}

// The next piece of the message being written; the last piece ends it.
void WsConnection::write_piece() {
  const std::size_t left = writing_.text.size() - writing_offset_;
  const std::size_t piece = std::min(left, write_piece_bytes);
  stream_.async_write_some(piece == left,
                           asio::buffer(writing_.text.data() + writing_offset_, piece),
                           [self = shared_from_this(), piece](error_code ec, std::size_t) {
                             self->piece_written(ec, piece);
                           });
}

void WsConnection::piece_written(error_code ec, std::size_t bytes) {
  if (!ec) {
    bytes_to_socket_ += bytes;
    writing_offset_ += bytes;
    queued_bytes_ -= std::min(queued_bytes_, bytes);
    if (writing_offset_ < writing_.text.size()) {
      if (state_ == State::closed || finished_) {
        written(asio::error::operation_aborted);
        return;
      }
      write_progressed();
      write_piece();
      return;
    }
  }
  written(ec);
}

void WsConnection::written(error_code ec) {
  write_busy_ = writing_frame_ = false;
  auto frame = std::move(writing_);
  writing_ = Outgoing{};
  // What the socket did not take of a write that failed.
  queued_bytes_ -=
      std::min(queued_bytes_, frame.text.size() - std::min(writing_offset_, frame.text.size()));
  frames_share_.set(frames_share_.bytes() - std::min(frames_share_.bytes(), frame.text.size()));
  writing_offset_ = 0;
  if (finished_) return;
  if (ec) {
    force_close();
    return;
  }
  frames_out_.inc();
  // A queue a burst grew gives its buffer back once drained: an idle
  // connection holds none.
  if (queue_.empty() && queue_.capacity() > 16) queue_ = {};
  if (frame.on_written) {
    auto& socket = stream_.next_layer();
    if (untaken_.empty() && socket.taken() >= socket.written()) {
      run_on_written(frame.on_written);
    } else {
      untaken_.push_back(Untaken{socket.written(), std::move(frame.on_written)});
    }
  }
  write_next();
}

// Called from a completion handler: nothing may escape to the event loop.
void WsConnection::run_on_written(std::function<void()>& on_written) {
  try {
    on_written();
  } catch (...) {
    log::error("{}: handling a written frame to {} failed: {}; closing with 1011", log_name_,
               remote_, runtime::describe_current_exception());
    close(websocket::close_code::internal_error, "internal error");
  }
}

void WsConnection::taken_by_socket() {
  const auto taken = stream_.next_layer().taken();
  while (!finished_ && !untaken_.empty() && untaken_.front().end <= taken) {
    auto on_written = std::move(untaken_.front().on_written);
    untaken_.pop_front();
    run_on_written(on_written);
  }
  if (untaken_.empty() && untaken_.capacity() > 16) untaken_ = {};
}

// The one timer: armed for the earliest thing due, re-armed when it fires
// (a frame heard meanwhile moves the heartbeat's moment later; the timer
// then finds nothing due yet and waits again).
//
// - The heartbeat, while reading (not paused): a ping after
//   heartbeat_interval of silence, then the peer has heartbeat_timeout to
//   answer it. A ping waiting behind queued frames is the write watchdog's;
//   one that would wait behind bytes unread in the socket waits for the
//   peer to take some of them instead, and is sent only if it takes none.
// - The write watchdog: a peer that stopped reading fills the socket buffers
//   and a write stops moving. While a write (a frame or a ping; the close
//   handshake has its own deadline) is under way, the peer has as long as a
//   ping would have to be answered to take some of it: a piece of the
//   message taken by the socket (write_piece_bytes), or fewer bytes waiting
//   unread in the socket than at the last look. A slow reader moves the
//   deadline on; only one that takes less than a piece in that time is cut
//   off. A stream of
//   small writes (a reply token by token) costs a clock read and a look at
//   the socket each, not a timer operation each.
// - The close handshake: the socket is closed close_timeout after close().
Clock::time_point WsConnection::write_deadline() const {
  return write_progress_ + options_.heartbeat_interval + options_.heartbeat_timeout;
}

// Bytes written to the socket that the peer has not acknowledged yet (what
// Linux reports as SIOCOUTQ); 0 when the socket cannot say.
std::size_t WsConnection::unsent_in_socket() {
  // With what this process still holds for the socket (net::CorkedSocket).
  const std::size_t held = stream_.next_layer().held_bytes();
  int n = 0;
  if (::ioctl(beast::get_lowest_layer(stream_).native_handle(), SIOCOUTQ, &n) != 0 || n < 0)
    return held;
  return static_cast<std::size_t>(n) + held;
}

std::int64_t WsConnection::taken_by_peer() {
  return static_cast<std::int64_t>(bytes_to_socket_) -
         static_cast<std::int64_t>(unsent_in_socket());
}

// Looking at the socket is a system call: a stream of frames looks once per
// taken_look_interval, not once per frame. The peer's count only grows, so
// a mark looked at earlier is at most lower than the true one: a peer that
// read in that moment before a write stalled may get one more deadline, and
// one that reads is never cut off for it.
void WsConnection::write_progressed() {
  const auto now = Clock::now();
  write_progress_ = now;
  if (now - taken_looked_at_ >= taken_look_interval) {
    taken_looked_at_ = now;
    taken_mark_ = taken_by_peer();
  }
}

Clock::time_point WsConnection::next_due() const {
  auto due = Clock::time_point::max();
  if (state_ == State::closed || finished_) return due;
  if (!paused_) {
    if (awaiting_pong_) {
      due = ping_sent_ + options_.heartbeat_timeout;
    } else if (!ping_wanted_) {
      due = last_heard_ + options_.heartbeat_interval;
    }
  }
  if (write_busy_ && !close_sent_) due = std::min(due, write_deadline());
  if (state_ == State::closing) due = std::min(due, close_deadline_);
  if (state_ == State::open && message_open_ && (!discarding_ || oversized_))
    due = std::min(due, message_heard_ + options_.heartbeat_interval + options_.heartbeat_timeout);
  // Frames waiting while the budget is over: whether they have waited too
  // long. Waiting behind a write while it is not: whether it has gone over,
  // looked at every shed_after (other connections may take it over while no
  // frame comes for this one).
  if (state_ == State::open && options_.shed_when_over_budget && queued() > 0) {
    if (over_budget())
      due = std::min(due, write_progress_ + shed_after);
    else if (write_busy_)
      due = std::min(due, std::max(write_progress_, budget_looked_at_) + shed_after);
  }
  return due;
}

void WsConnection::arm_timer() {
  const auto due = next_due();
  // An armed wait that ends sooner re-arms the timer then.
  if (due == Clock::time_point::max() || (timer_armed_ && timer_due_ <= due)) return;
  timer_armed_ = true;
  timer_due_ = due;
  const auto generation = ++timer_generation_;
  timer_.expires_at(due);  // a wait already pending ends, and counts for nothing
  timer_.async_wait([weak = weak_from_this(), generation](error_code ec) {
    auto self = weak.lock();
    if (!self || generation != self->timer_generation_) return;
    self->timer_armed_ = false;
    if (!ec) self->timer_fired();
  });
}

void WsConnection::timer_fired() {
  if (state_ == State::closed || finished_) return;
  const auto now = Clock::now();
  if (state_ == State::closing && now >= close_deadline_) {
    // Ended here, not when the reader's read completes: a read Beast holds
    // suspended behind its own close (a frame it fails while our close frame
    // is being written) never completes, closed socket or not.
    force_close();
    finish();
    return;
  }
  if (write_busy_ && !close_sent_ && now >= write_deadline()) {
    // No piece was taken whole, but the peer may have read some of what waited.
    if (!peer_took(1, now)) {
      peer_faults().log(
          spdlog::level::info, log_name_ + ": slow reader",
          fmt::format(
              "{}: {} read less than {} KiB in {} (no piece of a write was taken, and the {} "
              "bytes waiting unread in its socket did not go down); closing",
              log_name_, remote_, write_piece_bytes / 1024,
              runtime::format_duration(options_.heartbeat_interval + options_.heartbeat_timeout),
              unsent_in_socket()));
      force_close();
      return;
    }
  }
  // A message being dropped for its size too: its peer may stall it as well.
  if (state_ == State::open && message_open_ && (!discarding_ || oversized_) &&
      now >= message_heard_ + options_.heartbeat_interval + options_.heartbeat_timeout) {
    abandon_unfinished();
    return;
  }
  // A reader behind while the budget is over, with no frame coming to shed it.
  // Ended here, at once: what its owner holds for it is given back before
  // other connections' timers look at the budget (the handler posted for it
  // then does nothing).
  budget_looked_at_ = now;
  if (shed_if_over_budget()) {
    finish();
    return;
  }
  // Not reading means a pong would not be seen either: the heartbeat waits
  // until the owner resumes reading.
  if (!paused_) {
    if (awaiting_pong_ && now >= ping_sent_ + options_.heartbeat_timeout) {
      if (answer_by_taking_) {
        awaiting_pong_ = answer_by_taking_ = false;
        if (taken_by_peer() > taken_at_ping_) {
          // It took some of what waited for it: as good as a pong.
          last_heard_ = now;
        } else {
          // Nothing taken (or not acknowledged yet: an acknowledgement may
          // be held back a moment): the ping goes out after all.
          ping_regardless_ = ping_wanted_ = true;
          write_next();
        }
      } else {
        peer_faults().log(spdlog::level::info, log_name_ + ": no pong",
                          fmt::format("{}: {} did not answer a ping within {}; closing",
                                      log_name_, remote_,
                                      runtime::format_duration(options_.heartbeat_timeout)));
        force_close();
        return;
      }
    }
    if (!awaiting_pong_ && !ping_wanted_ && now >= last_heard_ + options_.heartbeat_interval) {
      ping_wanted_ = true;
      write_next();
    }
  }
  arm_timer();
}

// Also when the write is a ping: its pong may be due before anything the
// timer is armed for. arm_timer() touches the timer only when something is
// due sooner than the armed wait ends.
void WsConnection::watch_write() {
  write_progressed();
  arm_timer();
}

error_code WsConnection::send(std::string text, std::function<void()> on_written) {
  if (state_ != State::open) return asio::error::not_connected;
  if (shed_if_over_budget()) return asio::error::no_buffer_space;
  // The frame being written counts as queued until its write ends.
  const bool too_many = queued() >= options_.send_queue_limit;
  const bool too_big = queued() > 0 && queued_bytes_ + text.size() > options_.send_queue_bytes;
  if (too_many || too_big) {
    log::warn("{}: {} is not reading ({} frames, {} bytes queued); closing with 1008 slow consumer",
              log_name_, remote_, queued(), queued_bytes_);
    drop_queue();
    close(websocket::close_code::policy_error, "slow consumer");
    return asio::error::no_buffer_space;
  }
  queued_bytes_ += text.size();
  frames_share_.set(frames_share_.bytes() + text.size());
  queue_.push_back(Outgoing{std::move(text), std::move(on_written)});
  write_next();
  // Over the budget, the timer looks again once writing has made no progress
  // for shed_after (next_due()).
  if (over_budget()) arm_timer();
  return {};
}

bool WsConnection::over_budget() const {
  const auto& budget = buffer_budget();
  return state_ == State::open && options_.shed_when_over_budget && budget.used() > budget.limit();
}

// Whether the peer has taken at least `bytes` of what waits in its socket
// since the last look; if so, that counts as the write's progress.
bool WsConnection::peer_took(std::int64_t bytes, Clock::time_point now) {
  const auto taken = taken_by_peer();
  if (taken < taken_mark_ + bytes) return false;
  write_progress_ = taken_looked_at_ = now;
  taken_mark_ = taken;
  return true;
}

bool WsConnection::shed_if_over_budget() {
  if (queued() == 0 || !over_budget()) return false;
  // Behind: no piece of a write taken for shed_after, and less than a piece
  // of what waits in the peer's socket read meanwhile. A reader that keeps
  // taking bytes, however slowly its frames go, is not.
  const auto now = Clock::now();
  if (now - write_progress_ < shed_after ||
      peer_took(static_cast<std::int64_t>(write_piece_bytes), now)) {
    arm_timer();  // to look again then
    return false;
  }
  const auto& budget = buffer_budget();
  const auto used = budget.used();
  peer_faults().log(
      spdlog::level::warn, log_name_ + ": shed",
      fmt::format("{}: {} read less than {} KiB in {} with frames waiting for it ({} frames, {} "
                  "bytes) while the connections hold {} of the {} bytes they may "
                  "(gateway.max_buffered_bytes); cut off as a slow consumer",
                  log_name_, remote_, write_piece_bytes / 1024,
                  runtime::format_duration(
                      std::chrono::duration_cast<runtime::Duration>(now - write_progress_)),
                  queued(), queued_bytes_, used, budget.limit()));
  // Cut off, not closed: a close frame would wait behind what the peer has
  // not read, and what it holds would be held meanwhile. Reported (on_closed,
  // the close metrics) as the 1008 a slow consumer is closed with.
  closed_.code = static_cast<std::uint16_t>(websocket::close_code::policy_error);
  closed_.reason = "slow consumer";
  drop_queue();
  // Given back now, so that a connection looked at next sees it: the frame
  // being written goes with the socket, its write ending at once.
  frames_share_.set(0);
  // Reset, not closed: what waits unread in the socket is dropped with it
  // (closed, the kernel would hold it, and the FIN behind it, for a peer
  // that does not read).
  error_code ignored;
  beast::get_lowest_layer(stream_).set_option(asio::socket_base::linger(true, 0), ignored);
  force_close();
  // Ended in a handler of its own (the owner may be inside send()), before
  // the read the closed socket fails comes back.
  asio::post(stream_.get_executor(), [self = shared_from_this()] { self->finish(); });
  return true;
}

// A slow consumer's frames are let go, but for the one being written, whose
// buffer is in use until its write ends.
void WsConnection::drop_queue() {
  queue_.clear();
  queued_bytes_ = writing_frame_ ? writing_.text.size() - writing_offset_ : 0;
  frames_share_.set(writing_frame_ ? writing_.text.size() : 0);
}

void WsConnection::close(websocket::close_code code, std::string reason) {
  if (state_ != State::open) return;
  state_ = State::closing;
  closed_.code = static_cast<std::uint16_t>(code);
  closed_.reason = std::move(reason);
  close_deadline_ = Clock::now() + options_.close_timeout;
  write_next();
  arm_timer();
}

bool WsConnection::close_unanswered_since(Clock::time_point since) const {
  const auto& socket = stream_.next_layer();
  return close_sent_ && !finished_ && state_ != State::closed && close_started_ <= since &&
         socket.taken() >= socket.written();
}

void WsConnection::pause_reading() { paused_ = true; }

void WsConnection::resume_reading() {
  if (!paused_) return;
  paused_ = false;
  // The peer was not silent while we did not read: its clock starts again.
  last_heard_ = Clock::now();
  awaiting_pong_ = ping_regardless_ = false;
  if (pause_wait_) pause_wait_->cancel();
  write_next();  // a ping that waited for the pause to end
  arm_timer();
}

void WsConnection::force_close() {
  state_ = State::closed;
  error_code ignored;
  beast::get_lowest_layer(stream_).shutdown(asio::socket_base::shutdown_both, ignored);
  beast::get_lowest_layer(stream_).close(ignored);
  timer_.cancel();
  timer_armed_ = false;
  if (pause_wait_) pause_wait_->cancel();
}

}  // namespace mooring::net
