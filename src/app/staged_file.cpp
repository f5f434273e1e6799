#include "app/staged_file.hpp"

#include "app/config.hpp"

#include "runtime/log.hpp"

#include <fmt/format.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <optional>

namespace mooring::app {
namespace {

std::string failure(std::string_view what, const std::string& path) {
  return fmt::format("cannot {} {}: {}", what, path, std::strerror(errno));
}

// A rename is durable once the directory that holds the name is synced.
void sync_directory_of(const std::string& path) {
  auto dir = std::filesystem::path(path).parent_path();
  if (dir.empty()) dir = ".";
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return;
  ::fsync(fd);
  ::close(fd);
}

mode_t mode_of(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 ? (st.st_mode & 07777) : 0600;
}


}  // namespace

boost::system::result<StagedFile, std::string> StagedFile::stage(std::string path,
                                                                   std::string_view content,
                                                                   mode_t mode) {
  using Result = boost::system::result<StagedFile, std::string>;
  struct stat existing {};
  if (::stat(path.c_str(), &existing) == 0) mode = existing.st_mode & 07777;
  std::string temp = path + ".tmp";
  ::unlink(temp.c_str());  // left by a crash mid-write, or planted: either way not ours to follow
  const int fd = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
  if (fd < 0) return Result(boost::system::in_place_error, failure("write", temp));
  ::fchmod(fd, mode);  // O_CREAT's mode is masked by the umask and ignored for a leftover file
  const char* data = content.data();
  std::size_t left = content.size();
  bool ok = true;
  while (ok && left > 0) {
    const ssize_t n = ::write(fd, data, left);
    if (n < 0 && errno == EINTR) continue;
    ok = n > 0;
    if (ok) {
      data += n;
      left -= static_cast<std::size_t>(n);
    }
  }
  ok = ok && ::fsync(fd) == 0;
  std::string error = ok ? std::string() : failure("write", temp);
  ::close(fd);
  if (!ok) {
    ::unlink(temp.c_str());
    return Result(boost::system::in_place_error, std::move(error));
  }
  return StagedFile(std::move(path), std::move(temp));
}

StagedFile::StagedFile(StagedFile&& other) noexcept
    : path_(std::move(other.path_)), temp_(std::exchange(other.temp_, {})) {}

StagedFile::~StagedFile() {
  if (!temp_.empty()) ::unlink(temp_.c_str());
}

std::string StagedFile::commit() {
  if (temp_.empty()) return "nothing staged";
  if (::rename(temp_.c_str(), path_.c_str()) != 0) return failure("replace", path_);
  temp_.clear();
  sync_directory_of(path_);
  return {};
}

std::string replace_keeping_previous(const std::string& path, std::string_view content) {
  std::string target = path;
  std::error_code ec;
  if (std::filesystem::is_symlink(path, ec)) {
    auto resolved = std::filesystem::canonical(path, ec);
    if (ec) return fmt::format("cannot follow the link {}: {}", path, ec.message());
    target = resolved.string();
  }
  std::optional<StagedFile> previous;
  if (::access(target.c_str(), F_OK) == 0) {
    // Read as a reload reads it: at most 1 MiB, and not waited for when it
    // is not a regular file (a FIFO put in its place would hold this change,
    // and every later one, for ever).
    struct stat info {};
    if (::stat(target.c_str(), &info) == 0 && !S_ISREG(info.st_mode))
      return fmt::format("{} is not a regular file; mooring replaces only a regular file (its "
                         "previous version is kept beside it), and wrote nothing",
                         target);
    auto current = read_config_text(target, std::chrono::milliseconds(0));
    if (auto* error = std::get_if<ConfigError>(&current))
      return fmt::format("{}, so its previous version cannot be kept; nothing was written",
                         error->message);
    auto kept = StagedFile::stage(target + ".previous", std::get<std::string>(current),
                                  mode_of(target));
    if (!kept) return kept.error();
    previous.emplace(std::move(*kept));
  }
  auto staged = StagedFile::stage(target, content);
  if (!staged) return staged.error();
  // The new file first: if it cannot be put in place, the previous version
  // on disk is still the one before, and the dropped copy is removed.
  if (auto error = staged->commit(); !error.empty()) return error;
  if (previous) {
    if (auto error = previous->commit(); !error.empty())
      log::warn("{} was replaced, but its previous version could not be kept: {}", target, error);
  }
  return {};
}

std::string write_file_atomically(const std::string& path, std::string_view content, mode_t mode) {
  auto staged = StagedFile::stage(path, content, mode);
  if (!staged) return staged.error();
  return staged->commit();
}

}  // namespace mooring::app
