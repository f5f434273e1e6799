// Blocking work (writing and fsyncing a file) kept off the network thread:
// run_blocking(work) runs `work` on a thread of its own and resumes the caller
// on its own executor with the result. The caller's io_context is kept busy
// until then, so the result is never dropped. `work` must not throw and must
// end by itself (it cannot be cancelled): file I/O bounded by the disk.
#pragma once

#include "runtime/asio.hpp"

#include <thread>
#include <type_traits>
#include <utility>

namespace mooring::runtime {

template <typename Work>
awaitable<std::invoke_result_t<Work&>> run_blocking(Work work) {
  using Result = std::invoke_result_t<Work&>;
  auto executor = co_await asio::this_coro::executor;
  co_return co_await asio::async_initiate<const asio::use_awaitable_t<>, void(Result)>(
      [](auto handler, asio::any_io_executor executor, Work work) {
        auto resume_on = asio::get_associated_executor(handler, executor);
        auto busy = asio::make_work_guard(resume_on);
        std::thread([handler = std::move(handler), work = std::move(work),
                     busy = std::move(busy)]() mutable {
          Result result = work();
          auto resume_on = busy.get_executor();
          asio::post(resume_on, [handler = std::move(handler), result = std::move(result),
                                 busy = std::move(busy)]() mutable {
            std::move(handler)(std::move(result));
          });
        }).detach();
      },
      asio::use_awaitable, executor, std::move(work));
}

}  // namespace mooring::runtime
