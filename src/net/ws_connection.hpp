// A WebSocket connection after the upgrade: one reader and one writer
// coroutine, a bounded send queue, a ping/pong heartbeat and a size limit.
//
// Promises:
// - send() never blocks, throws or asserts: on a closed connection it returns
//   an error; when the queue is full (send_queue_limit frames, or
//   send_queue_bytes bytes — a frame alone may exceed that) the connection is
//   closed with 1008 "slow consumer" (the queued frames are dropped) and send()
//   returns an error.
// - While the connections together hold more than the buffer budget, one
//   whose peer has read less than write_piece_bytes of what waits for it in
//   shed_after is cut off (reported as 1008 "slow consumer") and gives back
//   what it held, at its next frame or when its timer next looks (every
//   shed_after while frames wait behind a write, whoever took the budget
//   over), unless its options say otherwise (WsOptions::shed_when_over_budget).
// - close(code, reason) sends the close frame after the frames already queued,
//   and force-closes the socket and ends the connection (on_closed) if that has
//   not finished within close_timeout.
// - A peer that stays silent for heartbeat_timeout after a ping is cut off.
//   While bytes written to it wait unread in its socket, a ping would wait
//   behind them: the peer taking some of them within heartbeat_timeout
//   counts as its answer, and only if it takes none is the ping sent.
// - A peer that takes no bytes of what is written to it for
//   heartbeat_interval + heartbeat_timeout is cut off (the write watchdog); one
//   that takes them slowly is not, however long a write lasts.
// - A message over max_message_bytes closes the connection with 1009, or,
//   where dropped_message_max allows it (up to that size), is read to its
//   end and dropped: on_dropped is told its size and the connection goes on.
// - A peer that sends no byte of a message it has begun for
//   heartbeat_interval + heartbeat_timeout (answering pings meanwhile or
//   not) is closed with 1008: what it holds of the buffer budget is given
//   back. One that sends it slowly is not.
// - on_closed runs exactly once, when the connection has ended, whatever ended
//   it: an exception from on_text is logged once with the peer and closes the
//   connection with 1011 "internal error". Nothing is delivered, and no
//   on_written runs, after it.
// - Memory does not depend on the largest message a connection ever carried:
//   a message is read into the string on_text receives, and no read buffer
//   is kept between messages.
// - pause_reading() stops taking frames off the socket until resume_reading()
//   (TCP then pushes back on the peer); the heartbeat does not count the
//   pause against the peer.
// - Metrics, labelled by the server's name (`listener`): data messages read
//   and written (mooring_websocket_frames_total{direction}), and connections
//   ended by close code (mooring_websocket_closes_total{code}; see
//   close_code_label).
//
// Reads and writes are chains of completion handlers, not coroutines: an idle
// connection holds one pending read (whose handler keeps the connection
// alive), one timer wait and no coroutine frame. Its owner lists it with the
// supervisor as an adopted task (runtime::Supervisor::adopt) and passes
// cancellations to cancel(). One timer serves the heartbeat, the write
// watchdog and the close handshake's deadline: it is set for the earliest of
// them and re-armed when it fires, and a frame costs no timer operation of
// its own. A message is written in pieces of write_piece_bytes, so that the
// watchdog sees a slow peer's progress. While reading is paused, a wait on a
// second timer (made by the first pause) holds the connection instead of the
// read.
//
// Frames go through a net::CorkedSocket: those written during one turn of
// the network thread leave in one send at its end (a chat round trip's ack,
// chat_token and chat wake the client once). A frame's on_written still
// waits until the socket has taken its bytes.
#pragma once

#include "net/buffer_budget.hpp"
#include "net/corked_socket.hpp"
#include "runtime/asio.hpp"
#include "runtime/duration.hpp"
#include "runtime/metrics.hpp"
#include "runtime/time.hpp"

#include <boost/container/devector.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/websocket.hpp>

#include <array>
#include <functional>
#include <memory>
#include <string>

namespace mooring::net {

namespace websocket = boost::beast::websocket;
using namespace std::chrono_literals;

struct WsOptions {
  std::size_t max_message_bytes = 1024 * 1024;
  std::size_t send_queue_limit = 256;  // frames
  runtime::Duration heartbeat_interval = 20s;
  runtime::Duration heartbeat_timeout = 10s;
  runtime::Duration close_timeout = 5s;
  // Bytes of queued frames the socket has not taken yet: four replies of the
  // largest size a reply may have (provider.max_reply_bytes, 1 MiB) fit. An
  // owner with more to send waits for room (queued(), queued_bytes()) rather
  // than go beyond it; a peer further behind is slow.
  std::size_t send_queue_bytes = 4 * 1024 * 1024;
  // A message over max_message_bytes but not over this is read (a piece at a
  // time, nothing kept) and dropped, its connection kept: for a peer that
  // must not be cut off for one frame (a OneBot bridge, whose connection
  // carries every chat of its account). So is one the buffer budget has no
  // room for (instead of closing with 1013). Not above max_message_bytes:
  // closed with 1009 at once.
  std::size_t dropped_message_max = 0;
  // While the connections together hold more than the buffer budget, one
  // whose peer reads less than a piece of what waits for it in shed_after is
  // cut off as a slow consumer (shed_if_over_budget()), so that slow readers
  // cannot take the process past its budget. Off for a peer whose
  // connection must last (a OneBot bridge, bounded by its account's work).
  bool shed_when_over_budget = true;
  friend bool operator==(const WsOptions&, const WsOptions&) = default;
};

// How a connection ended, for logs and for the owner's bookkeeping.
struct WsClosed {
  std::uint16_t code = 0;  // the close code sent or received; 0 if none (socket dropped)
  std::string reason;
  bool by_peer = false;
};

// The `code` label of a connection's end, from a bounded set: a registered
// close code (1000-1014) or a code this server sent as itself, "1005" for a
// close frame without a code, "1006" for an end without a close frame
// (dropped, timed out), "other" for any other code a peer sent.
std::string close_code_label(const WsClosed& closed);

class WsConnection : public std::enable_shared_from_this<WsConnection> {
 public:
  // On the bare socket: the WebSocket's own timer bounds the handshakes and
  // the heartbeat bounds silence, so a tcp_stream's two timers and its
  // wrapper around every pending read would only cost memory. Without
  // per-message deflate, which mooring never offers: its state is not kept.
  using Stream = websocket::stream<CorkedSocket, false>;

  WsConnection(Stream stream, WsOptions options, std::string remote, std::string log_name);
  WsConnection(const WsConnection&) = delete;
  WsConnection& operator=(const WsConnection&) = delete;

  // Set by the owner before run(); called on the network thread.
  std::function<void(std::string text)> on_text;
  std::function<void(const WsClosed&)> on_closed;
  // A message over max_message_bytes, or one the buffer budget had no room
  // for, was read and dropped (see WsOptions::dropped_message_max): its size
  // in bytes.
  std::function<void(std::size_t bytes)> on_dropped;

  // Starts reading and writing. From here the connection keeps itself alive
  // by its pending operations until it ends; then on_closed runs, and then
  // `on_ended` (its owner's bookkeeping). Neither runs if the io_context is
  // destroyed first: the pending operations are destroyed, and the
  // connection with them.
  void start(std::function<void()> on_ended = {});

  // A cancellation from the supervisor: `terminal` cuts the connection off
  // now; a graceful one (total, partial) closes it with 1001 after the frames
  // already queued, like close().
  void cancel(asio::cancellation_type type);

  // `on_written` runs once the frame has been written to the socket (not when
  // the peer has read it); it never runs for a frame that was dropped.
  error_code send(std::string text, std::function<void()> on_written = {});
  void close(websocket::close_code code, std::string reason);
  void force_close();

  // Flow control for the owner: while paused, no frame is delivered (a
  // message already being read is held until resume) and no further frame
  // is read.
  void pause_reading();
  void resume_reading();
  bool reading_paused() const { return paused_; }

  // How long a connection's peer may read less than write_piece_bytes of
  // what waits for it before it counts as behind (see
  // WsOptions::shed_when_over_budget).
  static constexpr std::chrono::seconds shed_after{1};
  // Cuts the connection off (true; reported as 1008 "slow consumer") when
  // the budget is over its limit and this connection is behind (above);
  // send() does so itself, and an owner holding frames back for room in the
  // queue asks before it waits. Its end (on_closed) comes from a handler of
  // its own, never inside this call.
  bool shed_if_over_budget();

  // Frames not written yet, the one being written included, and their bytes
  // the socket has not taken yet.
  std::size_t queued() const { return queue_.size() + (writing_frame_ ? 1 : 0); }
  std::size_t queued_bytes() const { return queued_bytes_; }

  // How much of a message one write hands to the socket: the write watchdog
  // sees a peer's progress at this grain. (Beast frames what it writes in
  // fragments of its own, 4 KiB by default, whatever the pieces.)
  static constexpr std::size_t write_piece_bytes = 16 * 1024;
  // How often a stream of writes looks at what the peer has taken.
  static constexpr std::chrono::milliseconds taken_look_interval{100};
  // The limits this connection was opened with (a reload changes later ones).
  const WsOptions& options() const { return options_; }
  // Whether this side's close frame was handed to the socket at or before
  // `since` and the peer has not answered it (the connection is still open).
  bool close_unanswered_since(Clock::time_point since) const;

 private:
  enum class State { open, closing, closed };

  void read_next();
  void read_rest();
  void read_done(const error_code& ec, std::size_t bytes);
  void message_read();
  void message_dropped(std::size_t bytes);
  void hand_over();
  void wait_for_resume();
  template <typename Step>
  void guarded(Step step);
  void read_ended(const error_code& ec);
  void drop_incoming();
  void refuse_for_budget();
  void drop_for_budget();
  void abandon_unfinished();
  void write_next();
  void write_piece();
  void piece_written(error_code ec, std::size_t bytes);
  void written(error_code ec);
  std::size_t unsent_in_socket();
  std::int64_t taken_by_peer();
  void write_progressed();
  Clock::time_point write_deadline() const;
  Clock::time_point next_due() const;
  void arm_timer();
  void timer_fired();
  void watch_write();
  void deliver(std::string text);
  void drop_queue();
  bool over_budget() const;  // and this connection is one to shed
  bool peer_took(std::int64_t bytes, Clock::time_point now);
  void run_on_written(std::function<void()>& on_written);
  void taken_by_socket();
  void finish();

  Stream stream_;
  WsOptions options_;
  std::string remote_;
  std::string log_name_;
  State state_ = State::open;
  struct Outgoing {
    std::string text;
    std::function<void()> on_written;
  };
  // A devector allocates nothing while the connection is idle; the frame
  // being written is moved out of it, so the queue may grow meanwhile.
  boost::container::devector<Outgoing> queue_;
  Outgoing writing_;
  // Frames written to the stream whose bytes the socket has not all taken
  // yet (held for the end of the turn, net::CorkedSocket): their on_written
  // runs once it has, in order.
  struct Untaken {
    std::uint64_t end;  // CorkedSocket::written() after the frame
    std::function<void()> on_written;
  };
  boost::container::devector<Untaken> untaken_;
  std::size_t writing_offset_ = 0;  // bytes of writing_ the socket has taken
  std::size_t queued_bytes_ = 0;
  // The queued frames' text, the one being written included, held against
  // the process's buffer budget (as is incoming_).
  BufferBudget::Share frames_share_{buffer_budget()};
  Timer timer_;
  Clock::time_point timer_due_;       // when the armed wait ends
  std::uint64_t timer_generation_ = 0;  // of the wait whose end counts
  Clock::time_point close_deadline_;  // of the close handshake, once closing
  WsClosed closed_;
  Clock::time_point last_heard_;
  Clock::time_point ping_sent_;
  bool awaiting_pong_ = false;
  bool ping_wanted_ = false;  // sent once the frames queued before it are
  bool timer_armed_ = false;
  bool write_busy_ = false;  // a frame, a ping or the close frame is being written
  bool writing_frame_ = false;  // ... and it is writing_
  bool close_sent_ = false;
  Clock::time_point close_started_;  // when close_sent_ became true
  bool finished_ = false;
  bool paused_ = false;
  bool held_ = false;     // a whole message waits in incoming_ for the pause to end
  // Where the first bytes of every message land: no read buffer is allocated
  // for an idle connection. The rest of a longer one is read straight into
  // incoming_, the string on_text receives; nothing is kept after.
  std::array<char, 128> first_;
  std::string incoming_;
  BufferBudget::Share incoming_share_{buffer_budget()};
  bool discarding_ = false;  // the rest of a message refused for the budget is read and dropped
  bool oversized_ = false;   // ... or of one over max_message_bytes, which is then let go
  // A message is being read (begun, not whole), and when its time last
  // started again (a step of it came: WsConnection::read_done).
  bool message_open_ = false;
  // Bytes of the message being received, and how many of them had come when
  // its time last started again (message_heard_).
  std::size_t message_bytes_ = 0;
  std::size_t message_mark_ = 0;
  static constexpr std::size_t message_step_bytes = 16 * 1024;
  // What one read of a message being dropped takes off the socket (and
  // holds of the budget meanwhile, which it takes without asking).
  static constexpr std::size_t discard_piece_bytes = 4 * 1024;
  Clock::time_point message_heard_;
  // Holds the connection while paused (no read is pending then); made by the
  // first pause: most connections are never paused.
  std::unique_ptr<Timer> pause_wait_;
  std::function<void()> on_ended_;
  // Bound to the reader's reads and to the close: finish() ends through them
  // a read and a close Beast holds suspended behind each other, which
  // neither a closed socket nor anything else completes (the read failed a
  // frame while our close frame was being written: it waits for the write
  // lock the close holds while the close waits for its read lock). Their
  // handlers hold the connection, which would otherwise never be freed.
  asio::cancellation_signal read_cancel_;
  asio::cancellation_signal close_cancel_;
  // Bytes of messages the socket has taken, in pieces. Less what it still
  // holds unsent, that is what the peer has taken (give or take the part of
  // a piece being written, and frame headers): taken_by_peer() grows only
  // when the peer takes bytes.
  std::uint64_t bytes_to_socket_ = 0;
  // The write watchdog: when a write last made progress (it started, a piece
  // was taken, or the peer took bytes), and taken_by_peer() as last looked
  // at (taken_looked_at_), at most taken_look_interval before that.
  Clock::time_point write_progress_;
  std::int64_t taken_mark_ = 0;
  Clock::time_point taken_looked_at_;
  // When the timer last looked whether a stalled write's connection is to be
  // shed (the budget may go over by other connections' doing): every
  // shed_after while a write waits, not only when a frame comes for it.
  Clock::time_point budget_looked_at_;
  // The heartbeat's answer awaited is bytes taken, not a pong (no ping was
  // sent: bytes were waiting unread), counted from taken_at_ping_. When none
  // are taken, the ping is sent after all (ping_regardless_) until the peer
  // is heard from.
  bool answer_by_taking_ = false;
  bool ping_regardless_ = false;
  std::int64_t taken_at_ping_ = 0;
  runtime::Counter& frames_in_;
  runtime::Counter& frames_out_;
};

// Endings of a connection that are part of normal life (the peer left, we
// closed it, a timeout we set fired): they are never logged as errors.
bool is_expected_ending(const error_code& ec);

}  // namespace mooring::net
