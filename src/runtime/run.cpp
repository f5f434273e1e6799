#include "runtime/run.hpp"

#include "runtime/turn.hpp"

#include <optional>

namespace mooring::runtime {

int run_main(asio::io_context& io, awaitable<int> main) {
  std::optional<int> result;
  std::exception_ptr failure;
  asio::co_spawn(io, std::move(main), [&](std::exception_ptr e, int code) {
    failure = e;
    result = code;
  });
  run_in_turns(io, [&] { return result.has_value(); });
  io.poll();
  if (failure) std::rethrow_exception(failure);
  return result.value_or(1);
}

}  // namespace mooring::runtime
