// The host as a user runs it: `mooring serve` in an empty directory, probed
// over HTTP, stopped with a signal.
#include "support/clients.hpp"
#include "support/process.hpp"
#include "support/wait.hpp"

#include <boost/json.hpp>
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <csignal>
#include <cstdlib>

namespace mooring::test {
namespace {

namespace json = boost::json;

// Lines that only a crash, an uncaught exception or a traceback would print.
void expect_no_crash_output(const std::string& text) {
  for (const char* marker : {"terminate called", "Traceback", "Segmentation fault", "Aborted",
                             "AddressSanitizer", "runtime error:", " error ", " critical "})
    EXPECT_EQ(text.find(marker), std::string::npos) << "found \"" << marker << "\" in:\n" << text;
}

// A config on ephemeral ports, so tests never collide with each other or a
// host already running on the machine.
std::string ephemeral_config(const std::string& extra = "") {
  return "[gateway]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n" + extra;
}

json::object wait_for_ready_file(const std::filesystem::path& path, ChildProcess& child) {
  json::object ready;
  const bool ok = poll_until(
      [&] {
        if (!child.running()) return true;
        auto text = read_file(path);
        if (text.empty()) return false;
        auto parsed = json::parse(text);
        if (!parsed.as_object().contains("admin")) return false;
        ready = parsed.as_object();
        return true;
      },
      20s);
  EXPECT_TRUE(ok) << "no ready file; stderr:\n" << child.stderr_text();
  return ready;
}

TEST(Serve, OnDefaultsAnswersHealthzAndStopsCleanlyOnSigint) {
  TempDir dir;
  write_file(dir / "mooring.toml", ephemeral_config());
  ChildProcess host(MOORING_BINARY, {"serve", "--ready-file", (dir / "ready.json").string()},
                    dir.path());
  auto ready = wait_for_ready_file(dir / "ready.json", host);
  ASSERT_TRUE(ready.contains("admin")) << host.stderr_text();
  const std::string admin(ready.at("admin").as_string());

  auto health = http_get(admin, "/healthz");
  EXPECT_EQ(health.status, 200);
  EXPECT_EQ(health.body, "ok\n");

  // The data directory and a private admin token were created.
  EXPECT_TRUE(std::filesystem::is_directory(dir / "mooring-data"));
  const auto token_path = dir / "mooring-data" / "admin.token";
  ASSERT_TRUE(std::filesystem::exists(token_path));
  EXPECT_EQ(std::filesystem::status(token_path).permissions() & std::filesystem::perms::all,
            std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);

  host.signal(SIGINT);
  auto code = host.wait_exit(20s);
  ASSERT_TRUE(code.has_value()) << "mooring did not exit after SIGINT";
  EXPECT_EQ(*code, 0);
  const auto log = host.stderr_text();
  EXPECT_NE(log.find("mooring stopped in "), std::string::npos) << log;
  expect_no_crash_output(log);
  // The token is never logged, only its path.
  const auto token = read_file(token_path);
  EXPECT_EQ(log.find(token.substr(0, 64)), std::string::npos);
}

TEST(Serve, WithoutAConfigFileUsesTheBuiltInDefaults) {
  TempDir dir;
  ChildProcess host(MOORING_BINARY, {"serve"}, dir.path());
  // The defaults listen on 127.0.0.1:8081, which may be taken on a shared
  // machine; either way the host must come up and create its data directory.
  ASSERT_TRUE(poll_until(
      [&] { return host.stderr_text().find("started") != std::string::npos || !host.running(); },
      20s));
  EXPECT_TRUE(host.running()) << host.stderr_text();
  EXPECT_TRUE(std::filesystem::exists(dir / "mooring-data" / "admin.token"));
  host.signal(SIGTERM);
  auto code = host.wait_exit(20s);
  ASSERT_TRUE(code.has_value());
  EXPECT_EQ(*code, 0);
  expect_no_crash_output(host.stderr_text());
}

TEST(Serve, SecondSignalEndsTheProcessEvenWithALongDrain) {
  TempDir dir;
  write_file(dir / "mooring.toml", ephemeral_config("[shutdown]\ndrain_timeout = \"10m\"\n"));
  ChildProcess host(MOORING_BINARY, {"serve", "--ready-file", (dir / "ready.json").string()},
                    dir.path());
  auto ready = wait_for_ready_file(dir / "ready.json", host);
  ASSERT_TRUE(ready.contains("admin"));
  // A client that holds a keep-alive connection open mid-request keeps the drain busy.
  WsClient lingering;
  auto token = read_file(dir / "mooring-data" / "admin.token");
  token.erase(token.find_last_not_of("\n") + 1);
  ASSERT_EQ(lingering.connect(std::string(ready.at("admin").as_string()), "/api/events",
                              {{"Authorization", "Bearer " + token}}),
            101);
  host.signal(SIGINT);
  // Two signals sent back to back may reach the process as one; send the
  // second once the first has started the drain.
  ASSERT_TRUE(poll_until(
      [&] { return host.stderr_text().find("shutting down") != std::string::npos; }, 20s));
  host.signal(SIGINT);
  auto code = host.wait_exit(20s);
  ASSERT_TRUE(code.has_value()) << "a second SIGINT did not end the process";
  EXPECT_EQ(*code, 0);
  const auto log = host.stderr_text();
  EXPECT_NE(log.find("SIGINT again: skipping the drain"), std::string::npos) << log;
  EXPECT_NE(log.find("mooring stopped in "), std::string::npos) << log;
  expect_no_crash_output(log);
}

TEST(CheckConfig, ExitCodesAndMessagesNameTheKeyAndLine) {
  TempDir dir;
  write_file(dir / "good.toml", ephemeral_config());
  write_file(dir / "bad.toml", "[gateway]\nlisten = \"127.0.0.1:0\"\nheartbeat_interval = \"soon\"\n");
  auto good = run_command(MOORING_BINARY, {"check-config", "-c", "good.toml"}, dir.path());
  EXPECT_EQ(good.exit_code, 0) << good.err;
  auto bad = run_command(MOORING_BINARY, {"check-config", "-c", "bad.toml"}, dir.path());
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_NE(bad.err.find("gateway.heartbeat_interval"), std::string::npos) << bad.err;
  EXPECT_NE(bad.err.find(":3"), std::string::npos) << bad.err;
  // serve refuses the same file with the same exit code.
  auto serve = run_command(MOORING_BINARY, {"serve", "-c", "bad.toml"}, dir.path());
  EXPECT_EQ(serve.exit_code, 2);
  EXPECT_NE(serve.err.find("gateway.heartbeat_interval"), std::string::npos) << serve.err;
}

// Defect: `serve -c` on a FIFO nobody wrote (or a pipe left open) waited for
// it for ever, and Ctrl+C with it (the stop signals wait until the host
// watches them). A configuration that is not a regular file is refused.
TEST(CheckConfig, AConfigurationThatIsNotARegularFileIsRefusedAtOnce) {
  TempDir dir;
  ASSERT_EQ(::mkfifo((dir / "held.toml").c_str(), 0600), 0);
  for (const char* command : {"serve", "check-config"}) {
    auto refused = run_command(MOORING_BINARY, {command, "-c", "held.toml"}, dir.path(), 10s);
    EXPECT_EQ(refused.exit_code, 2) << command << ": " << refused.err;
    EXPECT_NE(refused.err.find("held.toml: not a regular file"), std::string::npos) << refused.err;
  }
}

// Defect: --ready-file removed whatever was at its path (a directory, the
// configuration file itself) at the start, and again at the stop. Anything
// but a ready file is left alone, and nothing starts.
TEST(Serve, AReadyFilePathHoldingSomethingElseIsLeftAloneAndNothingStarts) {
  TempDir dir;
  write_file(dir / "good.toml", ephemeral_config());
  write_file(dir / "notes.txt", "not mooring's\n");
  std::filesystem::create_directory(dir / "folder");
  for (const char* taken : {"notes.txt", "folder", "good.toml"}) {
    auto refused = run_command(MOORING_BINARY, {"serve", "-c", "good.toml", "--ready-file", taken},
                               dir.path(), 10s);
    EXPECT_EQ(refused.exit_code, 2) << taken << ": " << refused.err;
    EXPECT_NE(refused.err.find("something other than a ready file is there"), std::string::npos)
        << refused.err;
    EXPECT_TRUE(std::filesystem::exists(dir / taken)) << taken;
  }
  EXPECT_EQ(read_file(dir / "notes.txt"), "not mooring's\n");
}

// Defect: a mistyped command ("mooring serv", "mooring token revoke") was
// answered "A subcommand is required", which does not say what was wrong.
TEST(CheckConfig, AMistypedCommandIsNamedWithTheCommandsThereAre) {
  TempDir dir;
  auto top = run_command(MOORING_BINARY, {"serv"}, dir.path(), 10s);
  EXPECT_EQ(top.exit_code, 2);
  EXPECT_NE(top.err.find("\"serv\" is not a command of mooring; the commands are serve, "
                         "check-config, print-default-config, token"),
            std::string::npos)
      << top.err;
  auto nested = run_command(MOORING_BINARY, {"token", "revoke", "alice"}, dir.path(), 10s);
  EXPECT_EQ(nested.exit_code, 2);
  EXPECT_NE(nested.err.find("\"revoke\" is not a command of token; the commands are issue"),
            std::string::npos)
      << nested.err;
  auto good = run_command(MOORING_BINARY, {"print-default-config"}, dir.path(), 10s);
  EXPECT_EQ(good.exit_code, 0) << good.err;
}

// Defect: `-c ""` (an unset variable in `-c "$CONFIG"`) started serve on the
// built-in defaults, with a fresh database and admin token; and a
// ./mooring.toml that could not be looked at (a permission, a symlink loop)
// ended serve and token issue with an uncaught exception (abort, 134).
TEST(CheckConfig, AnEmptyConfigPathOrAnUnreadableImplicitOneIsRefused) {
  TempDir dir;
  for (const std::vector<std::string>& args :
       {std::vector<std::string>{"serve", "-c", ""}, {"check-config", "-c", ""},
        {"token", "issue", "alice", "-c", ""}}) {
    auto refused = run_command(MOORING_BINARY, args, dir.path(), 10s);
    EXPECT_EQ(refused.exit_code, 2) << args[0] << ": " << refused.err;
    EXPECT_NE(refused.err.find("-c names no file"), std::string::npos) << refused.err;
  }
  EXPECT_FALSE(std::filesystem::exists(dir / "mooring-data"));
  std::filesystem::create_symlink("mooring.toml", dir / "mooring.toml");  // a loop
  for (const std::vector<std::string>& args :
       {std::vector<std::string>{"serve"}, {"token", "issue", "alice"}}) {
    auto refused = run_command(MOORING_BINARY, args, dir.path(), 10s);
    EXPECT_EQ(refused.exit_code, 2) << args[0] << ": " << refused.err;
    EXPECT_NE(refused.err.find("cannot look for ./mooring.toml in the working directory"),
              std::string::npos)
        << refused.err;
  }
  EXPECT_FALSE(std::filesystem::exists(dir / "mooring-data"));
}

// auth = "signed" takes its key from the environment: check-config says when
// the file is valid but serve would refuse it there (exit 1, not 0), as serve
// does, and passes once the key is set.
TEST(CheckConfig, ASignedGatewayWithoutItsKeyInTheEnvironmentIsNotCalledReady) {
  TempDir dir;
  write_file(dir / "signed.toml",
             "[gateway]\nlisten = \"127.0.0.1:0\"\nauth = \"signed\"\n"
             "signing_key_env = \"MOORING_TEST_CHECK_KEY\"\n[admin]\nlisten = \"127.0.0.1:0\"\n");
  ::unsetenv("MOORING_TEST_CHECK_KEY");
  auto missing = run_command(MOORING_BINARY, {"check-config", "-c", "signed.toml"}, dir.path());
  EXPECT_EQ(missing.exit_code, 1) << missing.out << missing.err;
  EXPECT_NE(missing.err.find("valid, but serve would not start in this environment"),
            std::string::npos)
      << missing.err;
  EXPECT_NE(missing.err.find("$MOORING_TEST_CHECK_KEY"), std::string::npos) << missing.err;
  auto serve = run_command(MOORING_BINARY, {"serve", "-c", "signed.toml"}, dir.path());
  EXPECT_EQ(serve.exit_code, 1) << serve.err;
  ::setenv("MOORING_TEST_CHECK_KEY", std::string(48, 'k').c_str(), 1);
  auto present = run_command(MOORING_BINARY, {"check-config", "-c", "signed.toml"}, dir.path());
  ::unsetenv("MOORING_TEST_CHECK_KEY");
  EXPECT_EQ(present.exit_code, 0) << present.err;
}

TEST(CheckConfig, TheDefaultConfigIsValid) {
  TempDir dir;
  auto printed = run_command(MOORING_BINARY, {"print-default-config"}, dir.path());
  ASSERT_EQ(printed.exit_code, 0);
  write_file(dir / "default.toml", printed.out);
  auto check = run_command(MOORING_BINARY, {"check-config", "-c", "default.toml"}, dir.path());
  EXPECT_EQ(check.exit_code, 0) << check.err;
  auto version = run_command(MOORING_BINARY, {"--version"}, dir.path());
  EXPECT_EQ(version.exit_code, 0);
  EXPECT_EQ(version.out.rfind("mooring ", 0), 0u) << version.out;
}

}  // namespace
}  // namespace mooring::test
