#include "net/listener.hpp"

#include <fmt/format.h>

#include <fcntl.h>

namespace mooring::net {

std::string endpoint_string(const tcp::endpoint& endpoint) {
  const auto address = endpoint.address();
  if (address.is_v6()) return fmt::format("[{}]:{}", address.to_string(), endpoint.port());
  return fmt::format("{}:{}", address.to_string(), endpoint.port());
}

std::optional<tcp::endpoint> listen_endpoint(const ListenAddress& address, error_code* error) {
  error_code ec;
  // "localhost" means the IPv4 loopback: resolving it could pick ::1 on one
  // machine and 127.0.0.1 on another, and clients mostly try IPv4 first.
  const auto ip = asio::ip::make_address(address.host == "localhost" ? "127.0.0.1" : address.host, ec);
  if (error) *error = ec;
  if (ec) return std::nullopt;
  return tcp::endpoint(ip, address.port);
}

boost::system::result<tcp::acceptor, ListenError> open_listener(
    const asio::any_io_executor& executor, const ListenAddress& address, std::string_view owner) {
  auto fail = [&](error_code ec) {
    return ListenError{ec, fmt::format("{}: cannot listen on {}: {}", owner, address.to_string(),
                                       ec.message())};
  };
  error_code ec;
  const auto wanted = listen_endpoint(address, &ec);
  if (!wanted) return fail(ec);
  const tcp::endpoint endpoint = *wanted;
  const auto ip = endpoint.address();

  tcp::acceptor acceptor(executor);
  acceptor.open(endpoint.protocol(), ec);
  // A child process (a hook, a plugin runner) must never inherit the port.
  if (!ec && ::fcntl(acceptor.native_handle(), F_SETFD, FD_CLOEXEC) != 0)
    ec = error_code(errno, boost::system::system_category());
  if (!ec) acceptor.set_option(tcp::acceptor::reuse_address(true), ec);
  if (!ec && ip.is_v6()) acceptor.set_option(asio::ip::v6_only(true), ec);
  if (!ec) acceptor.bind(endpoint, ec);
  if (!ec) acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) return fail(ec);
  return acceptor;
}

}  // namespace mooring::net
