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

// `co_await op(..., use_tuple)` yields std::tuple<error_code, ...> instead of throwing.
inline constexpr auto use_tuple = asio::as_tuple(asio::use_awaitable);

}  // namespace mooring
