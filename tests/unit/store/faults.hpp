// Real faults for the store's tests, each undone by its guard's destructor:
// a file made immutable (chattr +i, which stops root too), a small tmpfs that
// fills up, a read-only bind mount, and spdlog lines captured for counting.
// Each guard's ok() is false, with reason(), where the machine cannot do it.
#pragma once

#include "runtime/log.hpp"

#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <string>
#include <vector>

namespace mooring::store::test_faults {

// Sets or clears FS_IMMUTABLE_FL on `path`; errno text on failure.
inline std::string set_immutable(const std::filesystem::path& path, bool on) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) return std::strerror(errno);
  int flags = 0;
  std::string error;
  if (::ioctl(fd, FS_IOC_GETFLAGS, &flags) != 0) {
    error = std::strerror(errno);
  } else {
    flags = on ? (flags | FS_IMMUTABLE_FL) : (flags & ~FS_IMMUTABLE_FL);
    if (::ioctl(fd, FS_IOC_SETFLAGS, &flags) != 0) error = std::strerror(errno);
  }
  ::close(fd);
  return error;
}

class Immutable {
 public:
  explicit Immutable(std::filesystem::path path) : path_(std::move(path)) {
    error_ = set_immutable(path_, true);
  }
  ~Immutable() { release(); }
  Immutable(const Immutable&) = delete;
  Immutable& operator=(const Immutable&) = delete;
  bool ok() const { return error_.empty(); }
  std::string reason() const {
    return "chattr +i is not possible on " + path_.string() + ": " + error_;
  }
  void release() {
    if (ok() && !released_) set_immutable(path_, false);
    released_ = true;
  }

 private:
  std::filesystem::path path_;
  std::string error_;
  bool released_ = false;
};

// A mount at `target`, unmounted (lazily, in case something still holds it) on scope exit.
class Mount {
 public:
  static Mount tmpfs(const std::filesystem::path& target, std::size_t bytes) {
    Mount m(target);
    const std::string options = "size=" + std::to_string(bytes) + ",mode=0755";
    if (::mount("tmpfs", target.c_str(), "tmpfs", 0, options.c_str()) != 0)
      m.error_ = std::strerror(errno);
    return m;
  }
  // `source` seen read-only at `target`.
  static Mount read_only_bind(const std::filesystem::path& source,
                              const std::filesystem::path& target) {
    Mount m(target);
    if (::mount(source.c_str(), target.c_str(), nullptr, MS_BIND, nullptr) != 0) {
      m.error_ = std::strerror(errno);
    } else if (::mount(nullptr, target.c_str(), nullptr, MS_REMOUNT | MS_BIND | MS_RDONLY,
                       nullptr) != 0) {
      m.error_ = std::strerror(errno);
      ::umount2(target.c_str(), MNT_DETACH);
    }
    return m;
  }
  Mount(Mount&& other) noexcept
      : target_(std::move(other.target_)), error_(std::move(other.error_)) {
    other.moved_ = true;
  }
  ~Mount() {
    if (!moved_ && error_.empty()) ::umount2(target_.c_str(), MNT_DETACH);
  }
  bool ok() const { return error_.empty(); }
  std::string reason() const {
    return "mount at " + target_.string() + " is not permitted here: " + error_;
  }

 private:
  explicit Mount(std::filesystem::path target) : target_(std::move(target)) {}
  std::filesystem::path target_;
  std::string error_;
  bool moved_ = false;
};

// Every log line written while it lives.
class CapturedLog {
 public:
  CapturedLog() {
    runtime::init_logging();
    id_ = runtime::add_log_observer([this](spdlog::level::level_enum, std::string_view line) {
      std::lock_guard lock(mutex_);
      lines_.emplace_back(line);
    });
  }
  ~CapturedLog() { runtime::remove_log_observer(id_); }
  CapturedLog(const CapturedLog&) = delete;
  CapturedLog& operator=(const CapturedLog&) = delete;

  std::vector<std::string> lines_with(const std::string& text) const {
    std::lock_guard lock(mutex_);
    std::vector<std::string> out;
    for (const auto& line : lines_)
      if (line.find(text) != std::string::npos) out.push_back(line);
    return out;
  }
  std::vector<std::string> all() const {
    std::lock_guard lock(mutex_);
    return lines_;
  }

 private:
  mutable std::mutex mutex_;
  std::vector<std::string> lines_;
  int id_ = 0;
};

}  // namespace mooring::store::test_faults
