// The Asio vocabulary used across mooring, in one place: short names, and
// completion tokens that turn every error into a value ([ec, n] tuples).
#pragma once

#include <boost/asio.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>

#include <chrono>

namespace mooring {

namespace asio = boost::asio;
using boost::system::error_code;

template <typename T = void>
using awaitable = asio::awaitable<T>;

using Clock = std::chrono::steady_clock;

// The network thread's executor with its type known. A socket or a timer made
// on it holds 8 bytes for it instead of a type-erased executor's 56, and its
// pending operations track no type-erased executor either: every idle
// connection holds a socket, timers and a pending read.
using IoExecutor = asio::io_context::executor_type;
using Timer = asio::basic_waitable_timer<Clock, asio::wait_traits<Clock>, IoExecutor>;

// `co_await op(..., use_tuple)` yields std::tuple<error_code, ...> instead of throwing.
inline constexpr auto use_tuple = asio::as_tuple(asio::use_awaitable);

}  // namespace mooring
