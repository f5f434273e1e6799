#include "runtime/systemd.hpp"

#include "support/process.hpp"

#include <gtest/gtest.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <string>

namespace mooring::runtime {
namespace {

// A status is one line: a newline in it (a refused reload quoting a value)
// would begin an assignment of its own ("STOPPING=1", "MAINPID=1").
TEST(SystemdNotifier, AStatusIsSentAsOneLine) {
  test::TempDir dir;
  const auto path = (dir / "notify.sock").string();
  const int fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(fd, 0);
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  std::strncpy(address.sun_path, path.c_str(), sizeof(address.sun_path) - 1);
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address), 0);
  ::setenv("NOTIFY_SOCKET", path.c_str(), 1);
  auto notifier = SystemdNotifier::from_environment();
  ::unsetenv("NOTIFY_SOCKET");
  const auto next = [fd] {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 10000) != 1) return std::string("(nothing)");
    char buffer[4096];
    const auto n = ::recv(fd, buffer, sizeof buffer, 0);
    return n < 0 ? std::string("(error)") : std::string(buffer, static_cast<std::size_t>(n));
  };

  notifier.ready("reload refused: \"data\nSTOPPING=1\r\nMAINPID=1\"\t\x01");
  EXPECT_EQ(next(), "READY=1\nSTATUS=reload refused: \"data\\nSTOPPING=1\\r\\nMAINPID=1\"  ");
  notifier.status("a\nb");
  EXPECT_EQ(next(), "STATUS=a\\nb");
  notifier.stopping("SIGTERM\nWATCHDOG_USEC=1");
  EXPECT_EQ(next(), "STOPPING=1\nSTATUS=SIGTERM\\nWATCHDOG_USEC=1");
  // At most 1 KiB, cut between characters.
  notifier.status(std::string(1023, 'x') + "\xE6\x97\xA5" + "tail");
  EXPECT_EQ(next(), "STATUS=" + std::string(1023, 'x'));
  ::close(fd);
}

}  // namespace
}  // namespace mooring::runtime
