// Recognising a cancellation, in one place. A coroutine learns that it was
// cancelled in three ways: an operation completes with operation_aborted, an
// exception carries it (a system_error, or asio::multiple_exceptions when both
// sides of an `||` ended with one), or its cancellation state says so. Every
// layer asks here instead of repeating the checks.
#pragma once

#include "runtime/asio.hpp"

#include <exception>

namespace mooring::runtime {

// True for the error code of an operation that was cancelled.
bool is_cancellation(const error_code& ec);

// True when `e` is (or, for multiple_exceptions, begins with) a cancellation.
bool is_cancellation(const std::exception_ptr& e);
bool is_cancellation(const std::exception& e);

// Whether the calling coroutine has been asked to stop (any cancellation type).
awaitable<bool> cancelled();

}  // namespace mooring::runtime
