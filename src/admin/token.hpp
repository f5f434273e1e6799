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
  // find_admin_token only: `path` does not exist, and `token` is a new one
  // to be written there (as token_file_text(token)).
  bool to_write = false;
};

// Returns the configured token, or the one stored under `data_dir`, creating
// it if needed. A stored one is read only from a regular file of at most
// 4 KiB, without blocking (a FIFO put there is refused, not waited on), and
// must be a token a client can present (net::unpresentable_token). The error is a sentence for the
// operator.
boost::system::result<TokenSource, std::string> resolve_admin_token(const std::string& configured,
                                                                     const std::string& data_dir);

// The same, creating nothing: when no token file exists, a new token is
// generated and `to_write` set; the caller writes it (a reload, once it is
// committed; a dry run never).
boost::system::result<TokenSource, std::string> find_admin_token(const std::string& configured,
                                                                  const std::string& data_dir);

// What a token file holds for `token`.
std::string token_file_text(const std::string& token);

}  // namespace mooring::admin
