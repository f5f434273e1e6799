// The OneBot v11 reverse WebSocket below the conversation: who may connect
// (the handshake, decided before the upgrade), how a frame is sorted (an
// event or the answer to a call), and the calls in flight on one connection.
//
// Promises:
// - admit() answers before the upgrade: 400 without a decimal X-Self-ID or
//   with an unknown X-Client-Role, 401 without a token when one is set, 403
//   with a wrong one (compared in constant time, never logged) or a self id
//   not in the allowed list.
// - ApiCalls matches answers by `echo` value (a string or a number, as
//   implementations send it back), never by order; every call ends by its
//   deadline at the latest, and fail_all() ends every pending call at once
//   (the connection was replaced or closed), so a caller never waits on a
//   dead socket. The time the connection is not read (reading_paused) does
//   not count against a call's timeout: its answer could not arrive then
//   (a call waits the pause out, and ends at most a timeout after it).
#pragma once

#include "net/http.hpp"
#include "runtime/asio.hpp"
#include "runtime/duration.hpp"
#include "runtime/time.hpp"

#include <boost/json.hpp>
#include <boost/system/result.hpp>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <variant>
#include <vector>

namespace mooring::chat::onebot {

enum class Role { universal, api, event };
std::string_view to_string(Role role);

struct LinkOptions {
  std::string access_token;             // empty: no token needed
  std::vector<std::int64_t> self_ids;   // empty: any bot account
};

struct Admitted {
  std::int64_t self_id = 0;
  Role role = Role::universal;
};

// The upgrade request's verdict: who connects, or the refusal to send.
std::variant<Admitted, net::HttpResponse> admit(const net::Request& request,
                                                const LinkOptions& options);

// A frame from the implementation, sorted: an event (it has post_type), the
// answer to a call (it has no post_type), or something unreadable.
struct Event {
  boost::json::object object;
};
struct Answer {
  std::string echo;  // the echo value, as a key (see ApiCalls)
  boost::json::object object;
};
struct Unreadable {
  std::string why;
};
std::variant<Event, Answer, Unreadable> sort_frame(std::string_view text);

// How a call ended, when not with retcode 0.
struct CallError {
  enum class Kind { failed, timeout, disconnected, not_sent };
  Kind kind = Kind::failed;
  std::int64_t retcode = 0;  // for `failed`
  std::string message;       // the implementation's msg/wording, or what happened
  std::string echo;          // for `timeout` of a call kept for its late answer
};
using CallResult = boost::system::result<boost::json::value, CallError>;  // `data` on success

// The calls in flight on one connection. One thread (the network thread).
class ApiCalls {
 public:
  // Sends one text frame; false when the connection refused it.
  using Send = std::function<bool(std::string frame)>;
  ApiCalls(asio::any_io_executor executor, Send send);
  ~ApiCalls();
  ApiCalls(const ApiCalls&) = delete;
  ApiCalls& operator=(const ApiCalls&) = delete;

  // Sends {"action", "params", "echo"} and waits for its answer until
  // `timeout` has passed with the connection read. retcode 0 (status ok or
  // async) is success.
  awaitable<CallResult> call(std::string action, boost::json::object params,
                             runtime::Duration timeout);

  // As call(), but a call that times out stays registered and its error
  // carries the echo: late_answer() then waits for what the implementation
  // says of it, which tells a send that went out late from one that was lost.
  awaitable<CallResult> call_keeping_late(std::string action, boost::json::object params,
                                          runtime::Duration timeout);

  // Waits up to `timeout` more (counted as call() counts it) for the answer
  // to a call that timed out in call_keeping_late(); timed out again, the
  // call is still kept. forget() ends the wait for it.
  awaitable<CallResult> late_answer(std::string echo, runtime::Duration timeout);
  void forget(std::string_view echo);

  // Whether a call made with call_keeping_late() after the one with `echo`
  // has been answered.
  bool send_answered_after(std::string_view echo) const;

  // An answer arrived; false when no call waits for that echo (late or unknown).
  bool answer(const Answer& answer);

  // Ends every pending call with `disconnected` (the connection is gone).
  void fail_all(std::string_view why);

  std::size_t pending() const { return pending_.size(); }

  // How many calls made with call_keeping_late() (mooring's sends) have been
  // answered on this connection, in all.
  std::uint64_t sends_answered() const { return sends_answered_; }

  // The connection stopped (true) or went back to (false) reading.
  void reading_paused(bool paused);

 private:
  // How long the connection has not been read, in all.
  Clock::duration time_paused() const;

  struct Pending {
    std::optional<CallResult> result;
    runtime::Notifier done;
    bool send = false;  // made with call_keeping_late()
    explicit Pending(const asio::any_io_executor& executor) : done(executor) {}
  };

  awaitable<CallResult> send_and_wait(std::string action, boost::json::object params,
                                      runtime::Duration timeout, bool keep_late);
  // Waits for `pending`'s answer until `timeout` has passed with the
  // connection read; the entry goes unless the call timed out and `keep_late`.
  awaitable<CallResult> wait(std::string echo, std::shared_ptr<Pending> pending,
                             std::string_view action, runtime::Duration timeout,
                             bool keep_late);

  asio::any_io_executor executor_;
  Send send_;
  std::uint64_t next_echo_ = 1;
  std::uint64_t sends_answered_ = 0;
  std::uint64_t newest_send_answered_ = 0;  // the number of the newest one
  std::optional<Clock::time_point> paused_since_;
  Clock::duration paused_before_{};  // the pauses that ended
  std::map<std::string, std::shared_ptr<Pending>, std::less<>> pending_;
};

// The key an echo value is matched by: a string as is, a number as its
// decimal text (implementations that turn "17" into 17 still match).
std::string echo_key(const boost::json::value& echo);

}  // namespace mooring::chat::onebot
