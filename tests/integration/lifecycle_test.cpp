// The host's lifecycle at its edges, with the real binary (seeds 001 and 003):
// Ctrl+C while hundreds of replies hang on an upstream that never answers,
// Ctrl+C twice while replies sit in a long retry backoff, and a config file
// with a typo at start. The process always ends on time, with exit code 0 and
// one summary line instead of tracebacks, or refuses to start with a message
// that names the key and line.
#include "support/chat_client.hpp"
#include "support/fake_upstream.hpp"
#include "support/host_process.hpp"
#include "support/process.hpp"
#include "support/wait.hpp"

#include <boost/json.hpp>
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <csignal>
#include <map>
#include <memory>
#include <optional>
#include <regex>
#include <sstream>

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

extern char** environ;

namespace mooring::test {
namespace {

namespace json = boost::json;
using Frame = ChatClient::Frame;
using Clock = std::chrono::steady_clock;

// The [provider] table for an OpenAI-compatible upstream: the fake one.
std::string openai_provider(const FakeUpstream& upstream, const std::string& extra) {
  return "[provider]\nkind = \"openai\"\nbase_url = \"" + upstream.base_url() +
         "\"\nmodel = \"test-model\"\n" + extra;
}

// Log lines look like "2024-05-01 12:00:00.123 info  text" (runtime/log.cpp):
// the level is the third field. Returns the lines logged at `level`.
std::vector<std::string> lines_at_level(const std::string& log, const std::string& level) {
  std::vector<std::string> found;
  std::istringstream lines(log);
  for (std::string line; std::getline(lines, line);) {
    std::istringstream fields(line);
    std::string date, time, line_level;
    fields >> date >> time >> line_level;
    if (line_level == level) found.push_back(line);
  }
  return found;
}

// The lines of `log` that contain `text`.
std::vector<std::string> lines_with(const std::string& log, const std::string& text) {
  std::vector<std::string> found;
  std::istringstream lines(log);
  for (std::string line; std::getline(lines, line);)
    if (line.find(text) != std::string::npos) found.push_back(line);
  return found;
}

std::string joined(const std::vector<std::string>& lines) {
  std::string out;
  for (const auto& line : lines) out += "\n  " + line;
  return out;
}

// The figures of "mooring stopped in <ms>ms: <n> task(s) cancelled, <n> connection(s) closed".
struct StopSummary {
  long long took_ms = -1;
  long long tasks_cancelled = -1;
  long long connections_closed = -1;
};

std::optional<StopSummary> stop_summary(const std::string& log) {
  static const std::regex pattern(
      R"(mooring stopped in (\d+)ms: (\d+) task\(s\) cancelled, (\d+) connection\(s\) closed)");
  std::smatch match;
  if (!std::regex_search(log, match, pattern)) return std::nullopt;
  return StopSummary{std::stoll(match[1]), std::stoll(match[2]), std::stoll(match[3])};
}

long long ms_since(Clock::time_point start) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start).count();
}

// Seed 001: Ctrl+C with requests stuck on an upstream that never answers. The
// drain waits its 1 s for them, then they are cancelled; every user is told the
// server is going away (1001), the process exits 0, and the log has the
// summary line but no error for any of the 200 cancellations.
TEST(Shutdown, TwoHundredRepliesHungUpstreamEndWithinTheDrainAndEveryUserHearsGoingAway) {
  FakeUpstream upstream;
  upstream.set_fallback(hang());
  TempDir dir;
  HostProcess host(MOORING_BINARY, dir.path(),
                   openai_provider(upstream,
                                   "max_concurrency = 256\nattempt_timeout = \"10m\"\n"
                                   "total_timeout = \"10m\"\n") +
                       "[shutdown]\ndrain_timeout = \"1s\"\n");
  ASSERT_TRUE(host.started()) << host.log();

  constexpr int users = 200;
  std::vector<std::unique_ptr<ChatClient>> clients;
  for (int u = 0; u < users; ++u) {
    auto& client = *clients.emplace_back(std::make_unique<ChatClient>());
    const auto user = "u" + std::to_string(u);
    ASSERT_EQ(client.connect(host.gateway(), user), 101) << user;
    say_and_get_seq(client, "what is the weather like, " + user + "?", "q");
  }
  // Every reply is now a request the upstream holds and never answers. The
  // fake counts a request in flight a moment before it records it: both are
  // awaited.
  ASSERT_TRUE(poll_until(
      [&] {
        return upstream.in_flight() == users &&
               upstream.request_count() >= static_cast<std::size_t>(users);
      },
      20s))
      << upstream.in_flight() << " of " << users << " requests reached the upstream, "
      << upstream.request_count() << " recorded";
  EXPECT_EQ(upstream.request_count(), static_cast<std::size_t>(users));
  EXPECT_EQ(host.status().at("replies_in_flight").as_int64(), users);

  const auto interrupted = Clock::now();
  host.process().signal(SIGINT);
  // Each client reads until the server closes it; a close frame it has not read
  // yet waits in its socket, and reading it answers the close handshake.
  std::map<int, int> close_codes;  // close code -> clients that saw it (0: no close frame)
  std::vector<std::string> problems;
  for (int u = 0; u < users; ++u) {
    auto& client = *clients[u];
    try {
      const auto left = std::max<long long>(10'000 - ms_since(interrupted), 1);
      ++close_codes[client.read_until_closed(std::chrono::milliseconds(left))];
    } catch (const std::exception& e) {
      problems.push_back("u" + std::to_string(u) + ": " + e.what());
    }
    for (const auto& frame : client.received())
      if (!is_ack(frame, "q"))
        problems.push_back("u" + std::to_string(u) + " got " + json::serialize(frame));
  }
  const auto left = std::max<long long>(10'000 - ms_since(interrupted), 1);
  const auto code = host.process().wait_exit(std::chrono::milliseconds(left));
  const auto stopped_after = ms_since(interrupted);
  ASSERT_TRUE(code.has_value()) << "mooring still runs " << stopped_after
                                << " ms after SIGINT with a 1s drain";
  EXPECT_EQ(*code, 0);
  RecordProperty("sigint_to_exit_ms", static_cast<int>(stopped_after));

  EXPECT_EQ(close_codes, (std::map<int, int>{{1001, users}}))
      << "every user should be told 1001 going away (0: the connection ended without a close "
         "frame); the host said:"
      << joined(lines_with(host.log(), "gateway"));
  EXPECT_TRUE(problems.empty()) << problems.size() << " problem(s):" << joined(problems);

  const auto log = host.log();
  EXPECT_EQ(find_crash_marker(log), "") << log;
  EXPECT_TRUE(lines_at_level(log, "error").empty()) << joined(lines_at_level(log, "error"));
  EXPECT_TRUE(lines_at_level(log, "critical").empty()) << joined(lines_at_level(log, "critical"));
  EXPECT_EQ(log.find("abandoned"), std::string::npos) << "a task outlived the forced stage";
  // Requests ended by the shutdown are counted in its summary, not logged one by one.
  EXPECT_TRUE(lines_with(log, "cancelled after").empty()) << joined(lines_with(log, "cancelled after"));
  const auto summary = stop_summary(log);
  ASSERT_TRUE(summary.has_value()) << "no \"mooring stopped in\" summary line:\n" << log;
  EXPECT_GE(summary->took_ms, 900)
      << "the hung replies hold the drain for its whole 1s but the 100 ms kept for the close frames";
  EXPECT_GE(summary->tasks_cancelled, users) << "each hung reply is cancelled";
  EXPECT_GE(summary->connections_closed, users);
  // The upstream saw every request given up, not left open.
  EXPECT_TRUE(poll_until([&] { return upstream.in_flight() == 0; }, 5s)) << upstream.in_flight();
}

// The drain deadline bounds the whole drain, close frames included: replies
// may finish until close_flush_time (100 ms) before it, then every client is
// sent 1001, and one that never answers its close is cut at the deadline,
// not 100 ms after it.
TEST(Shutdown, ClientsThatNeverAnswerTheCloseAreCutAtTheDrainDeadline) {
  FakeUpstream upstream;
  upstream.set_fallback(hang());
  TempDir dir;
  HostProcess host(MOORING_BINARY, dir.path(),
                   openai_provider(upstream, "attempt_timeout = \"10m\"\ntotal_timeout = \"10m\"\n") +
                       "[shutdown]\ndrain_timeout = \"1s\"\n");
  ASSERT_TRUE(host.started()) << host.log();
  constexpr int users = 3;
  std::vector<std::unique_ptr<ChatClient>> clients;
  for (int u = 0; u < users; ++u) {
    auto& client = *clients.emplace_back(std::make_unique<ChatClient>());
    ASSERT_EQ(client.connect(host.gateway(), "silent" + std::to_string(u)), 101);
    say_and_get_seq(client, "hello", "q");
  }
  ASSERT_TRUE(poll_until([&] { return upstream.in_flight() == users; }, 20s));
  // From here the clients read nothing until the host has exited.
  host.process().signal(SIGINT);
  const auto code = host.process().wait_exit(10s);
  ASSERT_TRUE(code.has_value());
  EXPECT_EQ(*code, 0);
  const auto summary = stop_summary(host.log());
  ASSERT_TRUE(summary.has_value()) << host.log();
  EXPECT_GE(summary->took_ms, 900) << "the replies may finish until 100 ms before the deadline";
  EXPECT_LT(summary->took_ms, 1100) << "cut at the deadline, not after a close flush past it";
  std::printf("drain 1s, clients silent: stopped in %d ms\n", static_cast<int>(summary->took_ms));
  // The close was sent before the cut.
  for (auto& client : clients) EXPECT_EQ(client->read_until_closed(5s), 1001);
}

// Seed 001 again: the upstream answers 504, and each reply waits in a retry
// backoff of up to 10 minutes. The first Ctrl+C starts a 30 s drain; the
// second one cuts it short, and the process exits 0 at once.
TEST(Shutdown, ASecondSigintSkipsTheDrainWhileRepliesWaitInRetryBackoff) {
  FakeUpstream upstream;
  upstream.set_fallback(status_reply(504, "{\"error\":{\"message\":\"gateway timeout\"}}"));
  TempDir dir;
  HostProcess host(MOORING_BINARY, dir.path(),
                   openai_provider(upstream,
                                   "max_attempts = 5\nbackoff_initial = \"10m\"\n"
                                   "backoff_max = \"10m\"\nattempt_timeout = \"1m\"\n"
                                   "total_timeout = \"1h\"\n") +
                       "[shutdown]\ndrain_timeout = \"30s\"\n");
  ASSERT_TRUE(host.started()) << host.log();

  constexpr int users = 3;
  std::vector<std::unique_ptr<ChatClient>> clients;
  for (int u = 0; u < users; ++u) {
    auto& client = *clients.emplace_back(std::make_unique<ChatClient>());
    ASSERT_EQ(client.connect(host.gateway(), "patient" + std::to_string(u)), 101);
    say_and_get_seq(client, "draw me a cat", "q");
  }
  // Each first attempt has been answered 504 and the replies still run: they
  // are in their backoff sleep. The 504s were written before the admin
  // requests below were sent, and the host reads both on its one network
  // thread, so by the time it answers them it has taken the 504s in.
  ASSERT_TRUE(poll_until(
      [&] { return upstream.request_count() >= users && upstream.in_flight() == 0; }, 20s))
      << upstream.request_count() << " requests, " << upstream.in_flight() << " in flight";
  ASSERT_TRUE(
      poll_until([&] { return host.status().at("replies_in_flight").as_int64() == users; }, 5s))
      << json::serialize(host.status());
  EXPECT_EQ(host.status().at("replies_in_flight").as_int64(), users);

  const auto interrupted = Clock::now();
  host.process().signal(SIGINT);
  // Two signals sent back to back may reach the process as one; send the
  // second once the first has started the drain.
  ASSERT_TRUE(
      poll_until([&] { return host.log().find("shutting down") != std::string::npos; }, 10s))
      << host.log();
  ASSERT_TRUE(host.process().running()) << "the drain should wait for the replies in backoff";
  host.process().signal(SIGINT);
  const auto code = host.process().wait_exit(10s);
  const auto stopped_after = ms_since(interrupted);
  ASSERT_TRUE(code.has_value()) << "a second SIGINT did not end the process";
  EXPECT_EQ(*code, 0);
  EXPECT_LT(stopped_after, 10'000) << "far less than the 30s drain";
  RecordProperty("sigint_to_exit_ms", static_cast<int>(stopped_after));

  // No retry starts once shutdown has begun. (With full jitter a backoff can
  // be short, so a retry before the signal is allowed.)
  for (const auto& request : upstream.requests())
    EXPECT_LT(request.arrived, interrupted)
        << "a request reached the upstream "
        << std::chrono::duration_cast<std::chrono::milliseconds>(request.arrived - interrupted)
               .count()
        << " ms after SIGINT";
  const auto log = host.log();
  EXPECT_NE(log.find("SIGINT again: skipping the drain"), std::string::npos) << log;
  EXPECT_EQ(find_crash_marker(log), "") << log;
  EXPECT_TRUE(lines_at_level(log, "error").empty()) << joined(lines_at_level(log, "error"));
  const auto summary = stop_summary(log);
  ASSERT_TRUE(summary.has_value()) << "no \"mooring stopped in\" summary line:\n" << log;
  EXPECT_LT(summary->took_ms, 10'000);
  EXPECT_GE(summary->tasks_cancelled, users) << "each reply in backoff is cancelled";
}

// Seed 001 once more: a stop while the upstream answers 504 and the reply would
// be tried again. The message is neither answered with the 504 nor lost: the
// stop leaves it pending, and the restart answers it once the upstream is back.
TEST(Shutdown, AReplyStoppedBetweenRetriesIsAnsweredAfterTheRestart) {
  FakeUpstream upstream;
  // Each 504's body comes 300 ms after its head, so a stop lands in an attempt
  // or in the short backoff after it; attempts enough to outlast any stop.
  auto slow_504 = status_reply(504);
  slow_504.chunks = {"{\"error\":", "{\"message\":\"gateway timeout\"}}"};
  slow_504.chunk_delay = 300ms;
  upstream.set_fallback(slow_504);
  const std::string provider =
      openai_provider(upstream,
                      "max_attempts = 100\nbackoff_initial = \"50ms\"\n"
                      "backoff_max = \"50ms\"\ntotal_timeout = \"1h\"\n") +
      "[shutdown]\ndrain_timeout = \"20s\"\n";
  TempDir dir;
  std::int64_t asked = 0;
  {
    HostProcess host(MOORING_BINARY, dir.path(), provider);
    ASSERT_TRUE(host.started()) << host.log();
    ChatClient client;
    ASSERT_EQ(client.connect(host.gateway(), "patient"), 101);
    asked = say_and_get_seq(client, "draw me a cat", "q");
    ASSERT_TRUE(poll_until([&] { return upstream.request_count() >= 2; }, 20s))
        << "the reply is not being retried";
    host.process().signal(SIGINT);
    EXPECT_EQ(client.read_until_closed(20s), 1001);
    const auto code = host.process().wait_exit(20s);
    ASSERT_TRUE(code.has_value()) << "the stop did not end the process";
    EXPECT_EQ(*code, 0);
    for (const auto& frame : client.received()) {
      EXPECT_FALSE(is_chat_for(frame, asked)) << "answered at the stop: " << json::serialize(frame);
      EXPECT_FALSE(is_type(frame, "error")) << json::serialize(frame);
    }
    const auto log = host.log();
    EXPECT_TRUE(lines_at_level(log, "error").empty()) << joined(lines_at_level(log, "error"));
    // "(504)": the provider's failure as logged; a bare 504 may be a timestamp's milliseconds.
    EXPECT_TRUE(lines_with(log, "(504)").empty()) << "a 504 met at the stop is not a warning:"
                                                  << joined(lines_with(log, "(504)"));
  }

  upstream.set_fallback(sse_reply({"a cat, ", "at last"}));
  HostProcess host(MOORING_BINARY, dir.path(), provider);
  ASSERT_TRUE(host.started()) << host.log();
  ChatClient client;
  ASSERT_EQ(client.connect(host.gateway(), "patient"), 101);
  client.send(Frame{{"type", "resume"}, {"after", 0}});
  const auto reply = client.read_until([&](const Frame& f) { return is_chat_for(f, asked); }, 20s);
  EXPECT_EQ(string_field(reply, "text"), "a cat, at last") << json::serialize(reply);
  host.process().signal(SIGINT);
  EXPECT_EQ(client.read_until_closed(20s), 1001);
  EXPECT_EQ(host.process().wait_exit(20s), std::optional<int>(0));
}

// A typo in the file is caught before anything starts: `serve` and
// `check-config` both exit 2 with the same message, naming the key, its line
// and the key that was meant.
TEST(StartUp, AMisspeltKeyStopsServeAndCheckConfigWithItsNameAndLine) {
  TempDir dir;
  write_file(dir / "typo.toml", "[gateway]\nlisen = \"127.0.0.1:0\"\n");
  const std::string expected = "typo.toml:2: gateway.lisen: unknown key (did you mean \"listen\"?)";

  const auto serve = run_command(MOORING_BINARY, {"serve", "-c", "typo.toml"}, dir.path(), 20s);
  EXPECT_EQ(serve.exit_code, 2) << serve.err;
  EXPECT_NE(serve.err.find(expected), std::string::npos) << serve.err;
  EXPECT_NE(serve.err.find("nothing was started"), std::string::npos) << serve.err;
  EXPECT_EQ(find_crash_marker(serve.err), "") << serve.err;
  EXPECT_FALSE(std::filesystem::exists(dir / "mooring-data")) << "serve started before refusing";

  const auto check =
      run_command(MOORING_BINARY, {"check-config", "-c", "typo.toml"}, dir.path(), 20s);
  EXPECT_EQ(check.exit_code, 2) << check.err;
  EXPECT_NE(check.err.find(expected), std::string::npos) << check.err;
  EXPECT_EQ(check.out, "") << "an invalid file is not reported valid";
}

// Two hosts on one data directory would answer each other's messages (one
// stored its reply over the other's): the second is refused, saying which
// process holds the directory, and starts once that one has stopped.
TEST(StartUp, ASecondHostOnTheSameDataDirectoryIsRefusedNamingTheFirst) {
  TempDir dir;
  std::optional<HostProcess> first(std::in_place, MOORING_BINARY, dir.path());
  ASSERT_TRUE(first->started()) << first->log();
  // The same --ready-file too. Defect: the refused second run removed the
  // running one's ready file, and a supervisor waiting for it waited for ever.
  const auto first_ready = read_file(dir / "ready.json");
  const auto second = run_command(
      MOORING_BINARY, {"serve", "-c", "mooring.toml", "--ready-file", "ready.json"}, dir.path(),
      20s);
  EXPECT_EQ(second.exit_code, 1) << second.err;
  const auto holder = fmt::format("is in use by another mooring (pid {})", first->process().pid());
  EXPECT_NE(second.err.find(holder), std::string::npos) << second.err;
  EXPECT_EQ(read_file(dir / "ready.json"), first_ready) << "the running host's ready file stays";
  EXPECT_EQ(first->interrupt(), 0);
  EXPECT_FALSE(std::filesystem::exists(dir / "ready.json")) << "a stopped host is not ready";
  first.reset();
  HostProcess after(MOORING_BINARY, dir.path());
  EXPECT_TRUE(after.started()) << after.log();
  EXPECT_EQ(after.interrupt(), 0);
}

// A log read through a pipe whose reader has gone (`mooring serve | head`, a
// logger that restarted): the first line written after it left ended the
// process with SIGPIPE (exit 141).
TEST(StartUp, ALogPipeWhoseReaderLeftDoesNotEndTheHost) {
  TempDir dir;
  write_file(dir / "m.toml", fmt::format("[data]\ndir = \"{}\"\n[gateway]\nlisten = "
                                         "\"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n",
                                         (dir / "data").string()));
  int fds[2];
  ASSERT_EQ(::pipe2(fds, O_CLOEXEC), 0);
  ::close(fds[0]);  // the reader is gone before the first line
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, fds[1], 1);
  posix_spawn_file_actions_adddup2(&actions, fds[1], 2);
  const std::string config = (dir / "m.toml").string();
  const std::string ready = (dir / "ready.json").string();
  std::vector<std::string> args{MOORING_BINARY, "serve", "-c", config, "--ready-file", ready};
  std::vector<char*> argv;
  for (auto& arg : args) argv.push_back(arg.data());
  argv.push_back(nullptr);
  pid_t pid = 0;
  ASSERT_EQ(posix_spawn(&pid, MOORING_BINARY, &actions, nullptr, argv.data(), environ), 0);
  posix_spawn_file_actions_destroy(&actions);
  ::close(fds[1]);
  int status = 0;
  const auto exited = [&] { return ::waitpid(pid, &status, WNOHANG) == pid; };
  const bool ready_or_gone = poll_until(
      [&] { return std::filesystem::exists(ready) || exited(); }, 20s);
  ASSERT_TRUE(ready_or_gone) << "neither ready nor ended in 20 s";
  ASSERT_TRUE(std::filesystem::exists(ready))
      << "ended before it was ready: " << (WIFSIGNALED(status) ? "signal " : "exit ")
      << (WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status));
  ::kill(pid, SIGHUP);  // a reload, which logs
  ::kill(pid, SIGINT);  // and a stop, which logs more
  ASSERT_TRUE(poll_until(exited, 20s)) << "did not stop";
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
      << (WIFSIGNALED(status) ? "signal " : "exit ")
      << (WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status));
}

}  // namespace
}  // namespace mooring::test
