// Runs the program's main coroutine on an io_context driven by the calling
// thread, and returns its result once it completes.
#pragma once

#include "runtime/asio.hpp"

namespace mooring::runtime {

// Runs `main` to completion. Handlers still queued when it returns are run
// while they are ready (io_context::poll); anything still waiting on I/O then
// is abandoned with the io_context, so a stray socket can never keep the
// process alive. An exception escaping `main` is rethrown here.
int run_main(asio::io_context& io, awaitable<int> main);

}  // namespace mooring::runtime
