// The harness of the targets that feed raw bytes to an HttpServer: the input
// is what one client writes on one connection (a socket pair handed to
// HttpServer::serve(), the server's own entry for an accepted connection);
// then the client stops writing and reads everything until the server closes.
// Afterwards the server is stopped, and nothing may be left behind.
#pragma once

#include "net/http_server.hpp"
#include "runtime/supervisor.hpp"

#include <array>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include <sys/socket.h>

namespace mooring::fuzz {

[[noreturn]] inline void fail(const char* target, const char* what) {
  std::fprintf(stderr, "%s: %s\n", target, what);
  std::abort();
}

// An input ends with EOF, which ends every wait; these only bound a hang.
inline net::HttpLimits short_limits() {
  using namespace std::chrono_literals;
  net::HttpLimits limits;
  limits.header_timeout = limits.keep_alive_timeout = limits.body_timeout = limits.write_timeout = 2s;
  return limits;
}

namespace detail {

using unix_socket = asio::local::stream_protocol::socket;

inline awaitable<void> write_then_read(unix_socket& client, std::string input, bool& done) {
  // Write errors are expected: the server may answer and close early.
  co_await asio::async_write(client, asio::buffer(input), use_tuple);
  error_code ignored;
  client.shutdown(asio::socket_base::shutdown_send, ignored);
  std::array<char, 4096> sink;
  for (;;) {
    auto [ec, n] = co_await client.async_read_some(asio::buffer(sink), use_tuple);
    if (ec) break;
  }
  done = true;
}

inline awaitable<void> stop(net::HttpServer& server, bool& stopped) {
  co_await server.stop(runtime::Deadline::after(std::chrono::seconds(1)));
  stopped = true;
}

inline void rethrow(std::exception_ptr e) {
  if (e) std::rethrow_exception(e);
}

}  // namespace detail

// Runs `input` through `server` on one connection, then stops the server.
// Aborts (naming `target`) when the server neither answers nor closes within
// 5 s of the input's end, keeps the connection in its session table, or
// leaves a task behind.
inline void serve_one_connection(const char* target, asio::io_context& io,
                                 runtime::Supervisor& supervisor, net::HttpServer& server,
                                 std::string input) {
  using namespace std::chrono_literals;
  int pair[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) != 0) fail(target, "socketpair failed");
  net::TcpSocket server_end(io.get_executor());
  server_end.assign(net::tcp::v4(), pair[0]);
  detail::unix_socket client(io);
  client.assign(asio::local::stream_protocol(), pair[1]);
  server.serve(std::move(server_end));

  bool done = false;
  asio::co_spawn(io, detail::write_then_read(client, std::move(input), done), detail::rethrow);
  io.run_for(5s);
  if (!done) fail(target, "the server neither answered nor closed within 5 s of the end of the input");
  if (server.connections() != 0)
    fail(target, "a connection is still in the session table after the server closed it");

  bool stopped = false;
  asio::co_spawn(io, detail::stop(server, stopped), detail::rethrow);
  io.restart();
  while (!stopped || supervisor.size() > 0)
    if (io.run_one_for(2s) == 0) break;
  if (!stopped || supervisor.size() != 0) fail(target, "a task outlived its connection");
}

}  // namespace mooring::fuzz
