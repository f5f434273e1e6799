// The admin API token. When the configuration leaves admin.token empty, a
// random 32-byte token is generated on first start into <data.dir>/admin.token
// (mode 0600) and reused afterwards.
#pragma once

#include <boost/system/result.hpp>

#include <string>

namespace mooring::admin {

struct TokenSource {
  std::string token;
  std::string path;  // the file it came from, or empty when it came from the configuration
};

// Returns the configured token, or the one stored under `data_dir`, creating
// it if needed. A stored one is read only from a regular file of at most
// 4 KiB, without blocking (a FIFO put there is refused, not waited on), and
// must be a token a client can present (net::unpresentable_token). The error is a sentence for the
// operator.
boost::system::result<TokenSource, std::string> resolve_admin_token(const std::string& configured,
                                                                     const std::string& data_dir);

}  // namespace mooring::admin
