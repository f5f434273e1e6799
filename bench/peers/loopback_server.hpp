// The scaffold of the bench's one-thread peers: listen on 127.0.0.1:PORT (0 or
// none: any free port, printed on the first line of stdout), run `converse`
// as a coroutine for each accepted connection, stop on SIGINT or SIGTERM.
#pragma once

#include "runtime/asio.hpp"

#include <csignal>
#include <cstdint>
#include <cstdio>
#include <string>

namespace mooring::bench {

// `converse(socket, n)`: the n-th accepted connection (1, 2, ...).
template <typename Converse>
int serve_loopback(int argc, char** argv, Converse converse) {
  using tcp = asio::ip::tcp;
  const auto port = static_cast<unsigned short>(argc > 1 ? std::stoi(argv[1]) : 0);
  asio::io_context io(1);
  tcp::acceptor acceptor(io, {asio::ip::make_address("127.0.0.1"), port});
  acceptor.listen(asio::socket_base::max_listen_connections);
  std::printf("%u\n", acceptor.local_endpoint().port());
  std::fflush(stdout);
  asio::co_spawn(
      io,
      [&acceptor, converse]() -> awaitable<void> {
        for (std::uint64_t accepted = 0;;) {
          auto [ec, socket] = co_await acceptor.async_accept(use_tuple);
          if (ec) continue;
          asio::co_spawn(acceptor.get_executor(), converse(std::move(socket), ++accepted),
                         asio::detached);
        }
      },
      asio::detached);
  asio::signal_set signals(io, SIGINT, SIGTERM);
  signals.async_wait([&](const error_code&, int) { io.stop(); });
  io.run();
  return 0;
}

}  // namespace mooring::bench
