#include "admin/token.hpp"

#include "net/http.hpp"

#include <fcntl.h>
#include <openssl/rand.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include <fmt/format.h>

namespace mooring::admin {
namespace {

std::string trim(std::string s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.pop_back();
  std::size_t start = 0;
  while (start < s.size() && std::isspace(static_cast<unsigned char>(s[start]))) ++start;
  return s.substr(start);
}

using TokenResult = boost::system::result<TokenSource, std::string>;

TokenResult fail(std::string message) { return TokenResult(boost::system::in_place_error, std::move(message)); }

constexpr std::size_t max_token_file_bytes = 4096;

// The token stored at `path`: opened without blocking and read only when it
// is a regular file of at most max_token_file_bytes.
TokenResult read_token_file(const std::string& path) {
  const auto remedy = "; delete it to have a new one generated";
  const int fd = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) {
    const int error = errno;
    struct stat link {};
    // The name was there (find_admin_token): a link to nothing, or a file
    // deleted since.
    if (error == ENOENT && ::lstat(path.c_str(), &link) == 0 && S_ISLNK(link.st_mode))
      return fail(fmt::format("{} is a symbolic link to a file that does not exist{}", path,
                              remedy));
    return fail(fmt::format("cannot read {}: {}", path, std::strerror(error)));
  }
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  struct stat st {};
  if (::fstat(fd, &st) != 0) return fail(fmt::format("cannot read {}: {}", path, std::strerror(errno)));
  if (!S_ISREG(st.st_mode))
    return fail(fmt::format("{} is not a regular file{}", path, remedy));
  if (static_cast<std::size_t>(st.st_size) > max_token_file_bytes)
    return fail(fmt::format("{} is {} bytes; a token file holds one line of at most {}{}", path,
                            st.st_size, max_token_file_bytes, remedy));
  std::string content(max_token_file_bytes + 1, '\0');
  const auto n = ::read(fd, content.data(), content.size());
  if (n < 0) return fail(fmt::format("cannot read {}: {}", path, std::strerror(errno)));
  // Grown past the bound since fstat: refused all the same.
  if (static_cast<std::size_t>(n) > max_token_file_bytes)
    return fail(fmt::format("{} is over {} bytes; a token file holds one line of at most {}{}",
                            path, max_token_file_bytes, max_token_file_bytes, remedy));
  content.resize(static_cast<std::size_t>(n));
  auto token = trim(std::move(content));
  if (token.size() < 16)
    return fail(fmt::format("{} holds no usable token (it is empty or shorter than 16 "
                            "characters){}",
                            path, remedy));
  if (auto problem = net::unpresentable_token(token))
    return fail(fmt::format("the token in {} {}{}", path, *problem, remedy));
  return TokenSource{std::move(token), path};
}

}  // namespace


std::string token_file_text(const std::string& token) { return token + "\n"; }

boost::system::result<TokenSource, std::string> find_admin_token(const std::string& configured,
                                                                  const std::string& data_dir) {
  if (!configured.empty()) return TokenSource{configured, ""};
  const std::string path = (std::filesystem::path(data_dir) / "admin.token").string();
  std::error_code exists_error;
  // A dangling symbolic link is there too: read_token_file says what it is.
  if (std::filesystem::exists(std::filesystem::symlink_status(path, exists_error)))
    return read_token_file(path);
  unsigned char bytes[32];
  if (RAND_bytes(bytes, sizeof bytes) != 1)
    return fail("cannot generate an admin token: the system random source failed");
  std::string token;
  for (unsigned char b : bytes) token += fmt::format("{:02x}", b);
  return TokenSource{std::move(token), path, true};
}

boost::system::result<TokenSource, std::string> resolve_admin_token(const std::string& configured,
                                                                     const std::string& data_dir) {
  auto found = find_admin_token(configured, data_dir);
  if (!found || !found->to_write) return found;
  const auto& path = found->path;
  // O_EXCL: if two hosts race on the same data dir, the loser reads the winner's.
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) {
    std::error_code exists_error;
    // Another host on the same data dir created it first: use theirs.
    if (errno == EEXIST && std::filesystem::exists(path, exists_error))
      return resolve_admin_token(configured, data_dir);
    return fail(fmt::format("cannot create {}: {}", path, std::strerror(errno)));
  }
  const std::string line = token_file_text(found->token);
  const bool ok = ::write(fd, line.data(), line.size()) == static_cast<ssize_t>(line.size()) &&
                  ::fsync(fd) == 0;
  const int saved = errno;
  ::close(fd);
  if (!ok) return fail(fmt::format("cannot write {}: {}", path, std::strerror(saved)));
  found->to_write = false;
  return found;
}

}  // namespace mooring::admin
