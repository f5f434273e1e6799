// An io_context running on its own thread, for tests whose client side runs
// blocking on the test thread. Everything that touches the server's objects is
// handed to that thread with call(), which waits for the result with a deadline.
#pragma once

#include "runtime/asio.hpp"
#include "runtime/supervisor.hpp"
#include "runtime/turn.hpp"

#include <chrono>
#include <future>
#include <stdexcept>
#include <thread>

namespace mooring::test {

class ServerThread {
 public:
  ServerThread() : work_(asio::make_work_guard(io_)), supervisor_(io_.get_executor()) {
    // Driven in turns like mooring's network thread (runtime::run_main).
    thread_ = std::thread([this] { runtime::run_in_turns(io_, [this] { return io_.stopped(); }); });
  }
  ~ServerThread() {
    // Cancel what is left, let it unwind, then stop the thread.
    call([](runtime::Supervisor& s) -> awaitable<bool> {
      s.cancel_all();
      co_await s.join(runtime::Deadline::after(std::chrono::seconds(5)));
      co_return true;
    }(supervisor_));
    work_.reset();
    io_.stop();
    thread_.join();
  }
  ServerThread(const ServerThread&) = delete;
  ServerThread& operator=(const ServerThread&) = delete;

  asio::io_context& io() { return io_; }
  runtime::Supervisor& supervisor() { return supervisor_; }

  // Runs `op` on the server thread and returns its result.
  template <typename T>
  T call(awaitable<T> op, std::chrono::milliseconds timeout = std::chrono::seconds(30)) {
    auto future = asio::co_spawn(io_, std::move(op), asio::use_future);
    if (future.wait_for(timeout) != std::future_status::ready)
      throw std::runtime_error("the server thread did not finish the call in time");
    return future.get();
  }

  // Runs a plain function on the server thread.
  template <typename F>
  auto run(F f, std::chrono::milliseconds timeout = std::chrono::seconds(30)) {
    using R = decltype(f());
    auto task = std::make_shared<std::packaged_task<R()>>(std::move(f));
    auto future = task->get_future();
    asio::post(io_, [task] { (*task)(); });
    if (future.wait_for(timeout) != std::future_status::ready)
      throw std::runtime_error("the server thread did not finish the call in time");
    return future.get();
  }

 private:
  asio::io_context io_;
  asio::executor_work_guard<asio::io_context::executor_type> work_;
  runtime::Supervisor supervisor_;
  std::thread thread_;
};

// Open descriptors of this process (/proc/self/fd).
std::size_t open_descriptors();

}  // namespace mooring::test
