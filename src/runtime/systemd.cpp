#include "runtime/systemd.hpp"

#include "runtime/log.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <vector>

namespace mooring::runtime {
namespace {

std::optional<std::uint64_t> number(const char* text) {
  if (text == nullptr || *text == '\0') return std::nullopt;
  std::uint64_t value = 0;
  const auto end = text + std::strlen(text);
  auto [ptr, ec] = std::from_chars(text, end, value);
  if (ec != std::errc() || ptr != end) return std::nullopt;
  return value;
}

std::vector<std::string> split(std::string_view text, char separator) {
  std::vector<std::string> out;
  while (true) {
    const auto at = text.find(separator);
    out.emplace_back(text.substr(0, at));
    if (at == std::string_view::npos) break;
    text.remove_prefix(at + 1);
  }
  return out;
}

// A status for the service manager: one line of at most 1 KiB. Texts that
// quote the configuration (a refused reload) may hold a newline, which would
// start an assignment of its own ("WATCHDOG_USEC=1", "MAINPID=1").
std::string one_line(std::string_view text) {
  std::string out;
  if (text.size() > 1024) {
    std::size_t cut = 1024;
    while (cut > 0 && (static_cast<unsigned char>(text[cut]) & 0xC0) == 0x80) --cut;  // whole characters
    text = text.substr(0, cut);
  }
  for (const char c : text) {
    if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
      out += ' ';
    } else {
      out += c;
    }
  }
  return out;
}

}  // namespace

SystemdNotifier SystemdNotifier::from_environment() {
  SystemdNotifier notifier;
  if (const char* path = std::getenv("NOTIFY_SOCKET"); path && *path) notifier.socket_path_ = path;
  const auto usec = number(std::getenv("WATCHDOG_USEC"));
  const auto pid = number(std::getenv("WATCHDOG_PID"));
  if (usec && *usec > 0 && (!pid || *pid == static_cast<std::uint64_t>(::getpid())))
    notifier.watchdog_interval_ = std::chrono::duration_cast<Duration>(
        std::chrono::microseconds(std::max<std::uint64_t>(*usec / 2, 1000)));
  return notifier;
}

bool SystemdNotifier::notify(std::string_view state) {
  if (!enabled()) return false;
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  if (socket_path_.size() >= sizeof(address.sun_path)) return false;
  std::memcpy(address.sun_path, socket_path_.data(), socket_path_.size());
  socklen_t length = offsetof(sockaddr_un, sun_path) + socket_path_.size();
  if (address.sun_path[0] == '@') address.sun_path[0] = '\0';  // the abstract namespace
  const int fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  bool sent = false;
  if (fd >= 0) {
    sent = ::sendto(fd, state.data(), state.size(), MSG_NOSIGNAL,
                    reinterpret_cast<const sockaddr*>(&address), length) ==
           static_cast<ssize_t>(state.size());
    const int error = errno;
    ::close(fd);
    errno = error;
  }
  if (!sent && !warned_) {
    warned_ = true;
    log::warn("systemd: cannot notify {}: {}; the service manager will not hear of state changes",
              socket_path_, std::strerror(errno));
  }
  return sent;
}

void SystemdNotifier::ready(std::string_view status) {
  notify(fmt::format("READY=1\nSTATUS={}", one_line(status)));
}

void SystemdNotifier::reloading() {
  timespec now{};
  ::clock_gettime(CLOCK_MONOTONIC, &now);
  const auto usec = static_cast<std::uint64_t>(now.tv_sec) * 1000000u +
                    static_cast<std::uint64_t>(now.tv_nsec) / 1000u;
  notify(fmt::format("RELOADING=1\nMONOTONIC_USEC={}", usec));
}

void SystemdNotifier::stopping(std::string_view status) {
  notify(fmt::format("STOPPING=1\nSTATUS={}", one_line(status)));
}

void SystemdNotifier::status(std::string_view status) {
  notify(fmt::format("STATUS={}", one_line(status)));
}

boost::system::result<PassedSockets, std::string> take_passed_sockets(
    std::span<const std::string_view> expected_names) {
  using Result = boost::system::result<PassedSockets, std::string>;
  const auto fail = [](std::string message) {
    return Result(boost::system::in_place_error, std::move(message));
  };
  const auto pid = number(std::getenv("LISTEN_PID"));
  const auto count = number(std::getenv("LISTEN_FDS"));
  const std::string names_text = std::getenv("LISTEN_FDNAMES") ? std::getenv("LISTEN_FDNAMES") : "";
  ::unsetenv("LISTEN_PID");
  ::unsetenv("LISTEN_FDS");
  ::unsetenv("LISTEN_FDNAMES");
  PassedSockets sockets;
  if (!pid || *pid != static_cast<std::uint64_t>(::getpid()) || !count || *count == 0)
    return sockets;  // nothing passed to this process

  constexpr int first_fd = 3;  // SD_LISTEN_FDS_START
  if (*count > 16) return fail(fmt::format("LISTEN_FDS={} is more sockets than mooring uses", *count));
  const auto names = split(names_text, ':');
  if (names_text.empty() || names.size() != *count)
    return fail(fmt::format(
        "{} socket(s) were passed without a name for each (LISTEN_FDNAMES=\"{}\"); name them "
        "with FileDescriptorName= (or --fdname=): one of {}",
        *count, names_text, fmt::join(expected_names, ", ")));
  for (std::size_t i = 0; i < names.size(); ++i) {
    const int fd = first_fd + static_cast<int>(i);
    const auto& name = names[i];
    if (std::find(expected_names.begin(), expected_names.end(), name) == expected_names.end())
      return fail(fmt::format("a socket named \"{}\" was passed (fd {}); mooring takes only {}",
                              name, fd, fmt::join(expected_names, ", ")));
    if (sockets.contains(name))
      return fail(fmt::format("two sockets named \"{}\" were passed; pass one each", name));
    int type = 0;
    int domain = 0;
    int listening = 0;
    socklen_t length = sizeof type;
    const bool stream = ::getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &length) == 0 &&
                        type == SOCK_STREAM;
    length = sizeof domain;
    const bool ip = ::getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &length) == 0 &&
                    (domain == AF_INET || domain == AF_INET6);
    length = sizeof listening;
    const bool accepts = ::getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &length) == 0 &&
                         listening != 0;
    if (!stream || !ip || !accepts)
      return fail(fmt::format("the socket named \"{}\" (fd {}) is not a listening TCP socket; use "
                              "ListenStream= with Accept=no",
                              name, fd));
    ::fcntl(fd, F_SETFD, FD_CLOEXEC);
    sockets.emplace(name, fd);
  }
  return sockets;
}

}  // namespace mooring::runtime
