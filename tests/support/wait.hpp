// Waiting in tests: on an event where one exists (a process exit through its
// pidfd, a coroutine's completion), else by polling a condition with a deadline.
// A hang fails by the deadline instead of stalling the run.
#pragma once

#include "runtime/asio.hpp"

#include <chrono>
#include <functional>
#include <optional>
#include <stdexcept>
#include <thread>

namespace mooring::test {

using namespace std::chrono_literals;

// How many times slower than a plain build this one runs code it instruments:
// bounds that keep a hang from passing for an answer (not speed goals) are
// multiplied by it. ThreadSanitizer runs the host about four times slower.
#if defined(__SANITIZE_THREAD__)
inline constexpr int build_slowdown = 4;
#else
inline constexpr int build_slowdown = 1;
#endif

// Checks `condition` every `interval` until it holds (true) or `timeout`
// passes (false).
inline bool poll_until(const std::function<bool()>& condition, std::chrono::milliseconds timeout,
                       std::chrono::milliseconds interval = 5ms) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    if (condition()) return true;
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_until(std::min(deadline, std::chrono::steady_clock::now() + interval));
  }
}

// poll_until for a coroutine on the io_context that must keep running meanwhile
// (the condition depends on another thread, such as a fake upstream's).
inline awaitable<bool> poll_until_async(std::function<bool()> condition,
                                        std::chrono::milliseconds timeout,
                                        std::chrono::milliseconds interval = 5ms) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  asio::steady_timer timer(co_await asio::this_coro::executor);
  for (;;) {
    if (condition()) co_return true;
    if (std::chrono::steady_clock::now() >= deadline) co_return false;
    timer.expires_at(std::min(deadline, std::chrono::steady_clock::now() + interval));
    co_await timer.async_wait(asio::use_awaitable);
  }
}

// Runs `op` on `io`, which may carry other work (a supervisor's tasks), until
// `op` completes; throws if that takes longer than `timeout` or if `op` threw.
template <typename T>
T run_on(asio::io_context& io, awaitable<T> op, std::chrono::milliseconds timeout = 20s) {
  std::optional<T> result;
  std::exception_ptr failure;
  bool done = false;
  asio::co_spawn(io, std::move(op), [&](std::exception_ptr e, T value) {
    failure = e;
    if (!e) result.emplace(std::move(value));
    done = true;
  });
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  io.restart();
  while (!done && std::chrono::steady_clock::now() < deadline)
    if (io.run_one_until(deadline) == 0) break;
  if (!done) throw std::runtime_error("the operation did not complete before the test's deadline");
  if (failure) std::rethrow_exception(failure);
  return std::move(*result);
}

// Runs `op` on a fresh io_context until it completes; throws if it has not
// completed within `timeout` (so a hang fails the test) or if it threw.
template <typename T>
T run_coroutine(awaitable<T> op, std::chrono::milliseconds timeout = 20s) {
  asio::io_context io;
  std::optional<T> result;
  std::exception_ptr failure;
  bool done = false;
  asio::co_spawn(io, std::move(op), [&](std::exception_ptr e, T value) {
    failure = e;
    if (!e) result.emplace(std::move(value));
    done = true;
  });
  io.run_for(timeout);
  if (!done) throw std::runtime_error("the operation did not complete before the test's deadline");
  if (failure) std::rethrow_exception(failure);
  return std::move(*result);
}

inline void run_coroutine(awaitable<void> op, std::chrono::milliseconds timeout = 20s) {
  auto wrapped = [](awaitable<void> inner) -> awaitable<bool> {
    co_await std::move(inner);
    co_return true;
  };
  run_coroutine(wrapped(std::move(op)), timeout);
}

}  // namespace mooring::test
