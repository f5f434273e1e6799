// Opens listening TCP sockets. A bind failure is a value with a message an
// operator can act on ("admin: cannot listen on 127.0.0.1:8081: address already
// in use"), never an exception or an exit. SO_REUSEADDR is set so a port in
// TIME_WAIT can be bound again at once; SO_REUSEPORT never is, so a second
// process can never share the port silently.
#pragma once

#include "net/listen_address.hpp"
#include "runtime/asio.hpp"

#include <boost/system/result.hpp>

#include <optional>
#include <string>
#include <string_view>

namespace mooring::net {

using tcp = asio::ip::tcp;

struct ListenError {
  error_code code;
  std::string message;
};

// The endpoint `address` binds ("localhost": 127.0.0.1), or nullopt when its
// host is not an address (then `error` says why).
std::optional<tcp::endpoint> listen_endpoint(const ListenAddress& address,
                                             error_code* error = nullptr);

boost::system::result<tcp::acceptor, ListenError> open_listener(
    const asio::any_io_executor& executor, const ListenAddress& address, std::string_view owner);

// "127.0.0.1:8080" / "[::1]:8080".
std::string endpoint_string(const tcp::endpoint& endpoint);

}  // namespace mooring::net
