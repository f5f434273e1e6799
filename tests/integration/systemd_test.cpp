// mooring under a service manager, without systemd as PID 1: a datagram
// socket stands in for $NOTIFY_SOCKET and hears every state change, and
// systemd-socket-activate passes listening sockets the way a .socket unit does.
#include "support/chat_client.hpp"
#include "support/clients.hpp"
#include "support/process.hpp"
#include "support/wait.hpp"

#include <boost/json.hpp>
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <cstring>
#include <memory>
#include <utility>
#include <vector>

namespace mooring::test {
namespace {

const std::string ephemeral =
    "[gateway]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"admin-t\"\n";

// The service manager's end of $NOTIFY_SOCKET.
class NotifySocket {
 public:
  explicit NotifySocket(const std::filesystem::path& path) : path_(path.string()) {
    fd_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    std::strncpy(address.sun_path, path_.c_str(), sizeof(address.sun_path) - 1);
    if (::bind(fd_, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0)
      ADD_FAILURE() << "cannot bind " << path_ << ": " << std::strerror(errno);
  }
  ~NotifySocket() { ::close(fd_); }
  const std::string& path() const { return path_; }

  // The next datagram, or nullopt after `timeout`.
  std::optional<std::string> next(std::chrono::milliseconds timeout = std::chrono::seconds(20)) {
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(timeout.count())) != 1) return std::nullopt;
    char buffer[4096];
    const auto n = ::recv(fd_, buffer, sizeof buffer, 0);
    if (n < 0) return std::nullopt;
    return std::string(buffer, static_cast<std::size_t>(n));
  }

  // Skips WATCHDOG=1 pings until a datagram that is something else.
  std::optional<std::string> next_state() {
    for (;;) {
      auto message = next();
      if (!message || *message != "WATCHDOG=1") return message;
      ++watchdogs;
    }
  }

  int watchdogs = 0;

 private:
  std::string path_;
  int fd_ = -1;
};

bool starts_with(const std::optional<std::string>& text, std::string_view prefix) {
  return text && text->starts_with(prefix);
}

TEST(Systemd, TheServiceManagerHearsReadyReloadingReadyStoppingAndTheWatchdog) {
  TempDir dir;
  write_file(dir / "mooring.toml", ephemeral);
  NotifySocket notify(dir / "notify.sock");
  ChildProcess host(MOORING_BINARY, {"serve", "--ready-file", (dir / "ready.json").string()},
                    dir.path(), {"NOTIFY_SOCKET=" + notify.path(), "WATCHDOG_USEC=200000"});

  auto ready = notify.next_state();
  ASSERT_TRUE(starts_with(ready, "READY=1\nSTATUS=serving generation 1: gateway 127.0.0.1:"))
      << ready.value_or("(nothing)") << "\n" << host.stderr_text();

  host.signal(SIGHUP);
  auto reloading = notify.next_state();
  ASSERT_TRUE(starts_with(reloading, "RELOADING=1\nMONOTONIC_USEC=")) << reloading.value_or("");
  EXPECT_GT(std::stoull(reloading->substr(reloading->find('=', 12) + 1)), 0u);
  EXPECT_TRUE(starts_with(notify.next_state(), "READY=1\nSTATUS=serving generation 2"));

  // A refused reload still ends with READY=1; the status says why.
  write_file(dir / "mooring.toml", ephemeral + "[log]\nlevel = \"loud\"\n");
  host.signal(SIGHUP);
  EXPECT_TRUE(starts_with(notify.next_state(), "RELOADING=1"));
  auto refused = notify.next_state();
  EXPECT_TRUE(starts_with(refused, "READY=1\nSTATUS=reload refused: 1 problem(s)")) << refused.value_or("");

  // The watchdog is fed at half of WATCHDOG_USEC (100 ms) from the event loop.
  ASSERT_TRUE(poll_until([&] {
    if (auto message = notify.next(std::chrono::milliseconds(50)); message == "WATCHDOG=1") ++notify.watchdogs;
    return notify.watchdogs >= 3;
  }, std::chrono::seconds(10)));

  host.signal(SIGTERM);
  auto stopping = notify.next_state();
  EXPECT_TRUE(starts_with(stopping, "STOPPING=1\nSTATUS=SIGTERM: draining")) << stopping.value_or("");
  const auto code = host.wait_exit(std::chrono::seconds(20));
  ASSERT_TRUE(code.has_value());
  EXPECT_EQ(*code, 0) << host.stderr_text();
}

// Defects: a refused reload's status quoted the configuration as it was, so
// a value holding a newline ("data\nSTOPPING=1") sent assignments of its own
// to the service manager; and a SIGHUP while draining sent RELOADING=1 and
// READY=1 after STOPPING=1.
TEST(Systemd, AStatusIsOneLineAndNoReloadIsAnnouncedOnceStopping) {
  TempDir dir;
  write_file(dir / "mooring.toml", ephemeral + "[shutdown]\ndrain_timeout = \"10m\"\n");
  NotifySocket notify(dir / "notify.sock");
  ChildProcess host(MOORING_BINARY, {"serve", "--ready-file", (dir / "ready.json").string()},
                    dir.path(), {"NOTIFY_SOCKET=" + notify.path()});
  auto ready = notify.next_state();
  ASSERT_TRUE(starts_with(ready, "READY=1\n")) << ready.value_or("(nothing)") << host.stderr_text();

  // A value with a newline is refused (SystemdNotifier.AStatusIsSentAsOneLine
  // shows that a status quoting one would still be one line).
  write_file(dir / "mooring.toml", ephemeral + "[shutdown]\ndrain_timeout = \"10m\"\n" +
                                       "[data]\ndir = \"data\\nSTOPPING=1\\nMAINPID=1\"\n");
  host.signal(SIGHUP);
  EXPECT_TRUE(starts_with(notify.next_state(), "RELOADING=1"));
  auto refused = notify.next_state();
  ASSERT_TRUE(starts_with(refused, "READY=1\nSTATUS=reload refused: ")) << refused.value_or("");
  EXPECT_EQ(std::count(refused->begin(), refused->end(), '\n'), 1) << *refused;

  // An event stream keeps the drain busy; a SIGHUP during it changes nothing.
  const auto addresses = boost::json::parse(read_file(dir / "ready.json")).as_object();
  WsClient lingering;
  ASSERT_EQ(lingering.connect(std::string(addresses.at("admin").as_string()), "/api/events",
                              {{"Authorization", "Bearer admin-t"}}),
            101);
  host.signal(SIGTERM);
  EXPECT_TRUE(starts_with(notify.next_state(), "STOPPING=1\n"));
  host.signal(SIGHUP);
  ASSERT_TRUE(poll_until(
      [&] { return host.stderr_text().find("mooring is shutting down; the configuration was not "
                                           "changed") != std::string::npos; },
      std::chrono::seconds(20)))
      << host.stderr_text();
  host.signal(SIGTERM);
  const auto code = host.wait_exit(std::chrono::seconds(20));
  ASSERT_TRUE(code.has_value());
  EXPECT_EQ(*code, 0) << host.stderr_text();
  // Every datagram it sent is queued by now.
  while (auto message = notify.next(std::chrono::milliseconds(50))) {
    EXPECT_FALSE(message->starts_with("RELOADING=1")) << *message;
    EXPECT_FALSE(message->starts_with("READY=1")) << *message;
  }
}

// Defect: with the admin's port taken, READY=1 said "admin " and nothing
// more, and nothing was said when it bound later.
TEST(Systemd, AListenerThatCannotBindIsNamedInTheStatusUntilItDoes) {
  TempDir dir;
  asio::io_context io;
  std::optional<asio::ip::tcp::acceptor> blocker(
      std::in_place, io, asio::ip::tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
  const auto port = blocker->local_endpoint().port();
  write_file(dir / "mooring.toml",
             fmt::format("[gateway]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:{}\"\n"
                         "token = \"admin-t\"\n",
                         port));
  NotifySocket notify(dir / "notify.sock");
  ChildProcess host(MOORING_BINARY, {"serve"}, dir.path(), {"NOTIFY_SOCKET=" + notify.path()});
  auto ready = notify.next_state();
  ASSERT_TRUE(starts_with(ready, "READY=1\nSTATUS=serving generation 1: gateway 127.0.0.1:"))
      << ready.value_or("(nothing)") << host.stderr_text();
  EXPECT_NE(ready->find(", admin not listening ("), std::string::npos) << *ready;
  blocker.reset();
  const auto bound = fmt::format(", admin 127.0.0.1:{}", port);
  std::optional<std::string> status;
  ASSERT_TRUE(poll_until(
      [&] {
        status = notify.next(std::chrono::milliseconds(100));
        return status && status->starts_with("STATUS=serving generation 1") &&
               status->ends_with(bound);
      },
      std::chrono::seconds(20)))
      << status.value_or("(nothing)") << host.stderr_text();
  host.signal(SIGTERM);
  const auto code = host.wait_exit(std::chrono::seconds(20));
  ASSERT_TRUE(code.has_value());
  EXPECT_EQ(*code, 0) << host.stderr_text();
}

// Two ports nothing listens on at the moment of the call, and not the same one.
std::pair<std::uint16_t, std::uint16_t> free_ports() {
  asio::io_context io;
  const asio::ip::tcp::endpoint any_port(asio::ip::make_address("127.0.0.1"), 0);
  asio::ip::tcp::acceptor first(io, any_port);
  asio::ip::tcp::acceptor second(io, any_port);
  return {first.local_endpoint().port(), second.local_endpoint().port()};
}

// systemd-socket-activate says so for each socket it listens on.
bool listens_on_both(const ChildProcess& manager) {
  const auto log = manager.stderr_text();
  const auto first = log.find("Listening on");
  return first != std::string::npos && log.find("Listening on", first + 1) != std::string::npos;
}

// systemd-socket-activate on two ports that were free a moment before, then
// `args`, once it listens on both or has given up. A test running beside this
// one (ctest -j) may take such a port meanwhile as the local end of a
// connection it opens: the manager then exits with "Address already in use"
// and is started again on two other ports.
struct Activation {
  std::unique_ptr<ChildProcess> manager;
  std::uint16_t first_port = 0;
  std::uint16_t second_port = 0;
};
Activation activate(const std::vector<std::string>& args, const std::filesystem::path& cwd,
                    const std::string& first_host = "127.0.0.1") {
  Activation activation;
  for (int attempt = 1; attempt <= 5; ++attempt) {
    const auto [first, second] = free_ports();
    std::vector<std::string> all{"-l", fmt::format("{}:{}", first_host, first), "-l",
                                 fmt::format("127.0.0.1:{}", second)};
    all.insert(all.end(), args.begin(), args.end());
    activation.manager =
        std::make_unique<ChildProcess>("/usr/bin/systemd-socket-activate", all, cwd);
    activation.first_port = first;
    activation.second_port = second;
    auto& manager = *activation.manager;
    poll_until([&] { return listens_on_both(manager) || !manager.running(); },
               std::chrono::seconds(10));
    if (listens_on_both(manager) ||
        manager.stderr_text().find("Address already in use") == std::string::npos)
      break;
  }
  return activation;
}

// Socket activation: the connection that woke the service is the first one
// answered, on the passed socket, not on the configured port.
TEST(Systemd, PassedSocketsServeAndTheConnectionThatActivatedIsAnswered) {
  TempDir dir;
  write_file(dir / "mooring.toml", ephemeral);
  const auto activation = activate({"--fdname=gateway:admin", MOORING_BINARY, "serve"}, dir.path());
  auto& manager = *activation.manager;
  const auto gateway_port = activation.first_port;
  const auto admin = fmt::format("127.0.0.1:{}", activation.second_port);
  // Nothing runs mooring until this first request arrives on the passed socket.
  ASSERT_TRUE(listens_on_both(manager)) << manager.stderr_text();
  const auto health = http_get(admin, "/healthz");
  EXPECT_EQ(health.status, 200) << manager.stderr_text();
  EXPECT_EQ(http_get(admin, "/api/status", "admin-t").status, 200);
  ChatClient user;
  EXPECT_EQ(user.connect(fmt::format("127.0.0.1:{}", gateway_port), "alice"), 101);
  const auto log = manager.stderr_text();
  EXPECT_NE(log.find("socket passed by the service manager"), std::string::npos) << log;
  manager.signal(SIGTERM);
  const auto code = manager.wait_exit(std::chrono::seconds(20));
  ASSERT_TRUE(code.has_value());
  EXPECT_EQ(*code, 0) << manager.stderr_text();
}

// Defect: gateway.listen's rules (auth = "none", OneBot without a token: not
// where others can reach) were checked against the file's address only, and
// a socket passed on 0.0.0.0 served anyone without a token.
TEST(Systemd, APassedGatewaySocketOthersCanReachIsHeldToTheListenRules) {
  TempDir dir;
  write_file(dir / "mooring.toml", ephemeral);  // auth "none", listen 127.0.0.1
  {
    const auto activation =
        activate({"--fdname=gateway:admin", MOORING_BINARY, "serve"}, dir.path(), "0.0.0.0");
    auto& manager = *activation.manager;
    ASSERT_TRUE(listens_on_both(manager)) << manager.stderr_text();
    asio::io_context io;
    asio::ip::tcp::socket poke(io);
    boost::system::error_code ec;
    poke.connect({asio::ip::make_address("127.0.0.1"), activation.first_port}, ec);
    const auto code = manager.wait_exit(std::chrono::seconds(20));
    ASSERT_TRUE(code.has_value());
    EXPECT_EQ(*code, 1) << manager.stderr_text();
    EXPECT_NE(manager.stderr_text().find(fmt::format(
                  "listens on 0.0.0.0:{}, which other machines can reach, and gateway.auth is "
                  "\"none\"",
                  activation.first_port)),
              std::string::npos)
        << manager.stderr_text();
  }
  // With a token it serves; a reload that enables OneBot without a token
  // (which the file's loopback address alone would allow) is refused.
  const std::string guarded =
      "[gateway]\nlisten = \"127.0.0.1:0\"\nauth = \"token\"\ntoken = \"gateway-token-1\"\n"
      "[admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"admin-t\"\n";
  write_file(dir / "mooring.toml", guarded);
  const auto activation =
      activate({"--fdname=gateway:admin", MOORING_BINARY, "serve"}, dir.path(), "0.0.0.0");
  auto& manager = *activation.manager;
  ASSERT_TRUE(listens_on_both(manager)) << manager.stderr_text();
  const auto admin = fmt::format("127.0.0.1:{}", activation.second_port);
  EXPECT_EQ(http_get(admin, "/healthz").status, 200) << manager.stderr_text();
  write_file(dir / "mooring.toml", guarded + "[onebot]\nenabled = true\n");
  manager.signal(SIGHUP);
  ASSERT_TRUE(poll_until(
      [&] {
        return manager.stderr_text().find("configuration not applied: the gateway's socket") !=
                   std::string::npos &&
               manager.stderr_text().find("and onebot has no access_token") != std::string::npos;
      },
      std::chrono::seconds(20)))
      << manager.stderr_text();
  manager.signal(SIGTERM);
  const auto code = manager.wait_exit(std::chrono::seconds(20));
  ASSERT_TRUE(code.has_value());
  EXPECT_EQ(*code, 0) << manager.stderr_text();
}

TEST(Systemd, UnknownOrUnnamedPassedSocketsAreAClearError) {
  TempDir dir;
  write_file(dir / "mooring.toml", ephemeral);
  for (const std::string names : {"--fdname=gateway:bogus", "--fdname=gateway:gateway"}) {
    const auto activation = activate({names, MOORING_BINARY, "serve"}, dir.path());
    auto& manager = *activation.manager;
    const auto port_a = activation.first_port;
    ASSERT_TRUE(listens_on_both(manager)) << manager.stderr_text();
    // A connection wakes it; mooring refuses the sockets and exits 1.
    asio::io_context io;
    asio::ip::tcp::socket poke(io);
    boost::system::error_code ec;
    poke.connect({asio::ip::make_address("127.0.0.1"), port_a}, ec);
    const auto code = manager.wait_exit(std::chrono::seconds(20));
    ASSERT_TRUE(code.has_value()) << names;
    EXPECT_EQ(*code, 1) << names << "\n" << manager.stderr_text();
    const auto log = manager.stderr_text();
    EXPECT_TRUE(log.find("mooring takes only gateway, admin") != std::string::npos ||
                log.find("two sockets named \"gateway\"") != std::string::npos)
        << log;
  }
}

}  // namespace
}  // namespace mooring::test
