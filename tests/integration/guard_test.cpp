// What an operator (or an editor, or a script) can do to a running host must
// never open its doors or kill it: an empty or cut-off file on SIGHUP, a
// change that drops a token, a configuration nested deep enough to overflow a
// recursive parser, a token in a URL, a stop signal sent the instant it starts.
#include "support/chat_client.hpp"
#include "support/clients.hpp"
#include "support/host_process.hpp"
#include "support/process.hpp"
#include "support/wait.hpp"

#include <boost/json.hpp>
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <csignal>
#include <fstream>

namespace mooring::test {
namespace {

namespace json = boost::json;

const std::string gateway_token = "gw-token-that-stays";
const std::string admin_token = "admin-token-that-stays";
// HostProcess writes [gateway] and [admin] on port 0 with these keys in them.
const std::string gateway_keys = fmt::format("token = \"{}\"\n", gateway_token);
const std::string admin_keys = fmt::format("token = \"{}\"\n", admin_token);

std::string repeated(std::string_view unit, std::size_t n) {
  std::string out;
  out.reserve(unit.size() * n);
  for (std::size_t i = 0; i < n; ++i) out += unit;
  return out;
}

std::int64_t generation(const std::string& admin) {
  const auto reply = http_get(admin, "/api/status", admin_token);
  return reply.status == 200 ? json::parse(reply.body).at("generation").as_int64() : -1;
}

// The log has gained `text` since `before` bytes.
bool logged_since(HostProcess& host, std::size_t before, std::string_view text) {
  const auto log = host.log();
  return log.size() > before && log.find(text, before) != std::string::npos;
}

// The host still serves its first configuration: same admin port and token,
// and a gateway that still wants its token.
void expect_still_guarded(const HostProcess& host) {
  EXPECT_EQ(http_get(host.admin(), "/api/status", admin_token).status, 200);
  ChatClient anonymous;
  EXPECT_EQ(anonymous.connect(host.gateway(), "mallory"), 401);
  ChatClient with_token;
  EXPECT_EQ(with_token.connect(host.gateway(), "alice", "?token=" + gateway_token), 101);
}

TEST(Guard, AnEmptyOrCutOffFileOnReloadChangesNothing) {
  TempDir dir;
  HostProcess host(MOORING_BINARY, dir.path(), admin_keys, gateway_keys);
  ASSERT_TRUE(host.started()) << host.log();
  const auto original = read_file(dir / "mooring.toml");

  // `: > mooring.toml; kill -HUP`: an editor truncating in place.
  write_file(dir / "mooring.toml", "");
  auto before = host.log().size();
  host.process().signal(SIGHUP);
  ASSERT_TRUE(poll_until([&] { return logged_since(host, before, "still serving generation 1"); }, 10s))
      << host.log();
  EXPECT_TRUE(logged_since(host, before, "the configuration is empty")) << host.log();
  auto reload = http_request(host.admin(), http::verb::post, "/api/reload", "",
                             {{"Authorization", "Bearer " + admin_token}});
  EXPECT_EQ(reload.status, 400) << reload.body;
  EXPECT_NE(reload.body.find("empty"), std::string::npos) << reload.body;
  EXPECT_EQ(generation(host.admin()), 1);
  expect_still_guarded(host);

  // A file cut before [admin]: the admin token would fall back to the
  // generated one and the API would move to the default port.
  write_file(dir / "mooring.toml", original.substr(0, original.find("[admin]")));
  before = host.log().size();
  host.process().signal(SIGHUP);
  ASSERT_TRUE(poll_until([&] { return logged_since(host, before, "still serving generation 1"); }, 10s))
      << host.log();
  EXPECT_TRUE(logged_since(host, before, "a reload never weakens access")) << host.log();
  EXPECT_EQ(generation(host.admin()), 1);
  expect_still_guarded(host);
  expect_clean_stop(host);
}

TEST(Guard, AReloadThatWouldDropAGuardIsRefusedWithTheWayOut) {
  TempDir dir;
  HostProcess host(MOORING_BINARY, dir.path(), admin_keys, gateway_keys);
  ASSERT_TRUE(host.started()) << host.log();
  const auto bearer = std::vector<std::pair<std::string, std::string>>{
      {"Authorization", "Bearer " + admin_token}};
  const std::string listeners = "[gateway]\nlisten = \"127.0.0.1:0\"\n";

  const auto no_gateway_token =
      listeners + fmt::format("[admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"{}\"\n", admin_token);
  auto refused = http_request(host.admin(), http::verb::put, "/api/config", no_gateway_token, bearer);
  EXPECT_EQ(refused.status, 409) << refused.body;
  EXPECT_NE(refused.body.find("weakens_access"), std::string::npos) << refused.body;
  EXPECT_NE(refused.body.find("restart mooring"), std::string::npos) << refused.body;

  const auto no_admin_token =
      listeners + fmt::format("token = \"{}\"\n[admin]\nlisten = \"127.0.0.1:0\"\n", gateway_token);
  refused = http_request(host.admin(), http::verb::put, "/api/config", no_admin_token, bearer);
  EXPECT_EQ(refused.status, 409) << refused.body;
  EXPECT_NE(refused.body.find("admin.token"), std::string::npos) << refused.body;

  // The dry run says the same, and a change that keeps every guard passes it
  // without being applied.
  auto dry = http_request(host.admin(), http::verb::post, "/api/config/validate", no_gateway_token,
                          bearer);
  EXPECT_EQ(dry.status, 409) << dry.body;
  const auto fine = listeners + fmt::format("token = \"{}\"\n[admin]\nlisten = \"127.0.0.1:0\"\n"
                                            "token = \"{}\"\n[log]\nlevel = \"debug\"\n",
                                            gateway_token, admin_token);
  dry = http_request(host.admin(), http::verb::post, "/api/config/validate", fine, bearer);
  EXPECT_EQ(dry.status, 200) << dry.body;
  EXPECT_NE(dry.body.find("log.level"), std::string::npos) << dry.body;
  EXPECT_EQ(generation(host.admin()), 1);
  EXPECT_EQ(read_file(dir / "mooring.toml").find("debug"), std::string::npos);

  auto applied = http_request(host.admin(), http::verb::put, "/api/config", fine, bearer);
  EXPECT_EQ(applied.status, 200) << applied.body;
  EXPECT_EQ(generation(host.admin()), 2);
  expect_still_guarded(host);
  expect_clean_stop(host);
}

// 40,000 levels of `a.` overflowed toml++'s stack: check-config died with
// SIGSEGV and PUT /api/config took the server down.
TEST(Guard, ADeeplyNestedConfigurationIsRefusedEverywhereAndNothingCrashes) {
  TempDir dir;
  const auto deep_key = repeated("a.", 40000) + "a = 1\n";
  const auto deep_header = "[" + repeated("a.", 40000) + "a]\n";
  write_file(dir / "deep.toml", deep_key);
  auto check = run_command(MOORING_BINARY, {"check-config", "-c", "deep.toml"}, dir.path());
  EXPECT_EQ(check.exit_code, 2) << check.err;
  EXPECT_NE(check.err.find("deep.toml:1: nested more than 32 levels"), std::string::npos) << check.err;
  write_file(dir / "deep.toml", deep_header);
  check = run_command(MOORING_BINARY, {"check-config", "-c", "deep.toml"}, dir.path());
  EXPECT_EQ(check.exit_code, 2) << check.err;

  HostProcess host(MOORING_BINARY, dir.path(), admin_keys, gateway_keys);
  ASSERT_TRUE(host.started()) << host.log();
  const auto bearer = std::vector<std::pair<std::string, std::string>>{
      {"Authorization", "Bearer " + admin_token}};
  for (const auto* text : {&deep_key, &deep_header}) {
    auto put = http_request(host.admin(), http::verb::put, "/api/config", *text, bearer);
    EXPECT_EQ(put.status, 400) << put.body;
    EXPECT_NE(put.body.find("nested more than 32 levels"), std::string::npos) << put.body;
  }
  write_file(dir / "mooring.toml", deep_key);
  const auto before = host.log().size();
  host.process().signal(SIGHUP);
  ASSERT_TRUE(poll_until([&] { return logged_since(host, before, "still serving generation 1"); }, 10s))
      << host.log();
  EXPECT_EQ(http_get(host.admin(), "/healthz").status, 200);
  expect_still_guarded(host);
  expect_clean_stop(host);
}

// A token in a URL lands in logs and browser history, and a link can make a
// browser send it: only the events stream (which browsers open without
// headers) takes ?token=.
TEST(Guard, TheAdminTokenIsTakenFromTheQueryStringOnlyByTheEventsStream) {
  TempDir dir;
  HostProcess host(MOORING_BINARY, dir.path(), admin_keys, gateway_keys);
  ASSERT_TRUE(host.started()) << host.log();
  const auto query = "?token=" + admin_token;
  auto status = http_get(host.admin(), "/api/status" + query);
  EXPECT_EQ(status.status, 401);
  EXPECT_NE(status.body.find("Authorization: Bearer"), std::string::npos) << status.body;
  auto reload = http_request(host.admin(), http::verb::post, "/api/reload" + query);
  EXPECT_EQ(reload.status, 401);
  auto put = http_request(host.admin(), http::verb::put, "/api/config" + query, read_file(dir / "mooring.toml"));
  EXPECT_EQ(put.status, 401);
  WsClient events;
  EXPECT_EQ(events.connect(host.admin(), "/api/events" + query), 101);
  EXPECT_EQ(generation(host.admin()), 1);
  expect_clean_stop(host);
}

// The signal mask of a running process, from /proc (SigBlk, hexadecimal).
std::optional<unsigned long long> blocked_signals(pid_t pid) {
  std::ifstream status(fmt::format("/proc/{}/status", pid));
  for (std::string line; std::getline(status, line);)
    if (line.starts_with("SigBlk:")) return std::stoull(line.substr(7), nullptr, 16);
  return std::nullopt;
}

// Half of 30 SIGTERMs sent in the first milliseconds killed the process by
// the default action. From the first line of main() the stop signals are held
// for the host; whenever one lands after that, the exit is the clean one.
TEST(Guard, AStopSignalSentWhileStartingEndsTheHostCleanly) {
#if defined(__SANITIZE_THREAD__)
  // ThreadSanitizer's runtime intercepts signal masks and handlers: there, a
  // SIGTERM in the first milliseconds took its default action (exit 143) in
  // 13 of 30 rounds. The property is the plain binary's; the other builds test it.
  GTEST_SKIP() << "ThreadSanitizer intercepts signal masks; tested in the other builds";
#endif
  TempDir dir;
  write_file(dir / "mooring.toml",
             "[gateway]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n");
  const unsigned long long sigterm_bit = 1ull << (SIGTERM - 1);
  for (int round = 0; round < 30; ++round) {
    ChildProcess host(MOORING_BINARY, {"serve"}, dir.path());
    // Wait for the earliest moment mooring can act: its mask holds SIGTERM,
    // or its handler is already installed (it then logs that it started).
    ASSERT_TRUE(poll_until(
        [&] {
          const auto mask = blocked_signals(host.pid());
          return !host.running() || (mask && (*mask & sigterm_bit)) ||
                 host.stderr_text().find("starting") != std::string::npos;
        },
        10s, std::chrono::milliseconds(0)));
    host.signal(SIGTERM);
    const auto code = host.wait_exit(20s);
    ASSERT_TRUE(code.has_value()) << "round " << round << ": no exit\n" << host.stderr_text();
    EXPECT_EQ(*code, 0) << "round " << round << "\n" << host.stderr_text();
    EXPECT_EQ(find_crash_marker(host.stderr_text()), "") << host.stderr_text();
  }
}

}  // namespace
}  // namespace mooring::test
