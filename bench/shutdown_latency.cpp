// Shutdown latency of the real binary with replies stuck upstream: N chat
// sessions each wait for a reply from a fake OpenAI upstream that never
// answers, then the host gets SIGINT.
//
//   bench_shutdown path/to/mooring [trials=20] [sessions...=0 100 1000]
//
// 1. One SIGINT, drain_timeout 1s: the hung replies hold the drain to its
//    deadline, so the figure is 1s plus what cancelling and closing cost.
// 2. A second SIGINT as soon as "shutting down" is in the log, drain_timeout
//    30s: the time from the second signal to exit (the drain is skipped).
// Both report median and max from signal to exit (seen through a pidfd), the
// host's own "mooring stopped in" figure, how many trials exited with code 0,
// how many clients were told 1001, and the host's warn/error lines.
// MOORING_BENCH_LOG=path keeps the last trial's host log there.
#include "support/clients.hpp"
#include "support/fake_upstream.hpp"
#include "support/host_process.hpp"
#include "support/process.hpp"
#include "support/wait.hpp"

#include <boost/beast/core.hpp>
#include <boost/beast/websocket.hpp>
#include <boost/json.hpp>

#include <sys/resource.h>

#include <algorithm>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <map>
#include <sstream>
#include <thread>

using namespace mooring;
using namespace std::chrono_literals;
namespace beast = boost::beast;
namespace websocket = beast::websocket;
using tcp = asio::ip::tcp;

namespace {

// What the clients of one trial saw. Touched only on the clients' thread,
// except the counters the main thread polls.
struct ClientTally {
  std::atomic<int> acked{0};
  std::atomic<int> ended{0};
  int closed_1001 = 0;
  int failed = 0;
  std::string first_failure;
};

// One user: connects, sends one message, then reads (answering the server's
// close handshake, as a browser does) until the connection ends.
awaitable<void> user(tcp::endpoint gateway, int index, ClientTally& tally) {
  const auto executor = co_await asio::this_coro::executor;
  websocket::stream<beast::tcp_stream> ws(executor);
  auto& socket = beast::get_lowest_layer(ws);
  try {
    socket.expires_after(60s);
    co_await socket.async_connect(gateway, asio::use_awaitable);
    socket.socket().set_option(tcp::no_delay(true));
    co_await ws.async_handshake(gateway.address().to_string(), "/ws/u" + std::to_string(index),
                                asio::use_awaitable);
    ws.text(true);
    const std::string message = boost::json::serialize(
        boost::json::object{{"text", "question " + std::to_string(index)}, {"id", "q"}});
    co_await ws.async_write(asio::buffer(message), asio::use_awaitable);
  } catch (const std::exception& e) {
    if (tally.failed++ == 0) tally.first_failure = e.what();
    ++tally.ended;
    co_return;
  }
  beast::flat_buffer buffer;
  for (;;) {
    socket.expires_after(120s);
    auto [ec, n] = co_await ws.async_read(buffer, use_tuple);
    if (ec) {
      if (ws.reason().code == websocket::close_code::going_away) ++tally.closed_1001;
      break;
    }
    const auto frame = boost::json::parse(beast::buffers_to_string(buffer.data()));
    buffer.consume(buffer.size());
    if (frame.is_object() && frame.as_object().contains("type") &&
        frame.as_object().at("type") == "ack")
      ++tally.acked;
  }
  ++tally.ended;
}

struct Trial {
  bool ok = false;  // the setup worked and the host exited in time
  int exit_code = -1;
  double signal_to_exit_ms = 0;  // from the last signal sent
  double first_signal_to_exit_ms = 0;
  int closed_1001 = 0;
  double host_ms = -1;  // the host's own "mooring stopped in <ms>ms"
  std::vector<std::string> warnings;  // log lines at warn level or above
  std::string problem;
};

// The host's summary figure and its warn/error/critical lines ("<date> <time>
// <level> text", runtime/log.cpp).
void read_host_log(const std::string& log, Trial& trial) {
  std::istringstream lines(log);
  for (std::string line; std::getline(lines, line);) {
    std::istringstream fields(line);
    std::string date, time, level;
    fields >> date >> time >> level;
    if (level == "warn" || level == "warning" || level == "error" || level == "critical") trial.warnings.push_back(line);
    const auto at = line.find("mooring stopped in ");
    if (at != std::string::npos) trial.host_ms = std::stod(line.substr(at + 19));
  }
}

double ms_between(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

Trial run_trial(const std::string& binary, int sessions, bool second_signal) {
  Trial trial;
  test::FakeUpstream upstream;
  upstream.set_fallback(test::hang());
  test::TempDir dir;
  const std::string config =
      "[provider]\nkind = \"openai\"\nbase_url = \"" + upstream.base_url() +
      "\"\nmodel = \"bench\"\napi_key_env = \"MOORING_BENCH_API_KEY\"\nmax_concurrency = " + std::to_string(std::max(sessions, 8)) +
      "\nattempt_timeout = \"10m\"\ntotal_timeout = \"10m\"\n[shutdown]\ndrain_timeout = \"" +
      (second_signal ? "30s" : "1s") + "\"\n";
  test::HostProcess host(binary, dir.path(), config);
  if (!host.started()) {
    trial.problem = "the host did not start: " + host.log();
    return trial;
  }
  const auto [address, port] = test::split_address(host.gateway());
  const tcp::endpoint gateway(asio::ip::make_address(address),
                              static_cast<unsigned short>(std::stoi(port)));

  ClientTally tally;
  asio::io_context io;
  for (int i = 0; i < sessions; ++i) asio::co_spawn(io, user(gateway, i, tally), asio::detached);
  std::thread clients([&io] { io.run(); });
  struct Joiner {
    std::thread& thread;
    asio::io_context& io;
    ~Joiner() {
      if (!thread.joinable()) return;
      io.stop();
      thread.join();
    }
  } joiner{clients, io};

  if (!test::poll_until([&] { return tally.acked + tally.failed >= sessions; }, 120s) ||
      tally.failed > 0) {
    trial.problem = std::to_string(tally.acked) + " of " + std::to_string(sessions) +
                    " acknowledged; " + tally.first_failure;
    return trial;
  }
  if (!test::poll_until([&] { return upstream.in_flight() >= sessions; }, 60s)) {
    trial.problem = std::to_string(upstream.in_flight()) + " of " + std::to_string(sessions) +
                    " requests reached the upstream";
    return trial;
  }

  auto& process = host.process();
  const auto first_signal = Clock::now();
  process.signal(SIGINT);
  auto last_signal = first_signal;
  if (second_signal) {
    // Two signals back to back may reach the process as one.
    test::poll_until([&] { return host.log().find("shutting down") != std::string::npos; }, 30s,
                     1ms);
    last_signal = Clock::now();
    process.signal(SIGINT);
  }
  const auto code = process.wait_exit(60s);
  const auto exited = Clock::now();
  if (!code) {
    trial.problem = "no exit within 60s of the signal";
    return trial;
  }
  trial.ok = true;
  trial.exit_code = *code;
  trial.signal_to_exit_ms = ms_between(last_signal, exited);
  trial.first_signal_to_exit_ms = ms_between(first_signal, exited);
  // The host is gone, so every connection has ended or is about to.
  test::poll_until([&] { return tally.ended >= sessions; }, 10s);
  io.stop();
  clients.join();
  trial.closed_1001 = tally.closed_1001;
  read_host_log(host.log(), trial);
  // To look at a trial's log: MOORING_BENCH_LOG=path keeps the last one.
  if (const char* keep = std::getenv("MOORING_BENCH_LOG")) test::write_file(keep, host.log());
  return trial;
}

struct Figures {
  double median = 0;
  double max = 0;
};

Figures figures(std::vector<double> ms) {
  if (ms.empty()) return {};
  std::sort(ms.begin(), ms.end());
  return {ms[ms.size() / 2], ms.back()};
}

std::string loadavg() {
  std::ifstream in("/proc/loadavg");
  std::string one, five, fifteen;
  in >> one >> five >> fifteen;
  return one + " " + five + " " + fifteen;
}

// Each session costs the host two descriptors (client and upstream sockets)
// and this process two more (its client and the fake upstream's side); the
// host inherits this process's limit.
void raise_descriptor_limit(int sessions) {
  rlimit limit{};
  ::getrlimit(RLIMIT_NOFILE, &limit);
  const rlim_t needed = static_cast<rlim_t>(sessions) * 2 + 256;
  if (limit.rlim_cur < needed) {
    limit.rlim_cur = std::min(limit.rlim_max, std::max(needed, limit.rlim_cur));
    ::setrlimit(RLIMIT_NOFILE, &limit);
  }
  if (limit.rlim_cur < needed)
    std::cerr << "warning: descriptor limit " << limit.rlim_cur << " is below the " << needed
              << " that " << sessions << " sessions need; raise `ulimit -Hn`\n";
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::cerr << "usage: bench_shutdown path/to/mooring [trials=20] [sessions...=0 100 1000]\n";
    return 2;
  }
  std::signal(SIGPIPE, SIG_IGN);
  const std::string binary = std::filesystem::absolute(argv[1]).string();
  const int trials = argc > 2 ? std::stoi(argv[2]) : 20;
  std::vector<int> sizes;
  for (int i = 3; i < argc; ++i) sizes.push_back(std::stoi(argv[i]));
  if (sizes.empty()) sizes = {0, 100, 1000};
  raise_descriptor_limit(*std::max_element(sizes.begin(), sizes.end()));
  spdlog::set_level(spdlog::level::err);
  // The hosts inherit it: no warning about a missing API key in their logs.
  ::setenv("MOORING_BENCH_API_KEY", "bench", 1);

  std::printf(
      "shutdown latency, %d trials each; replies hung on an upstream that never answers; "
      "load average before: %s\n",
      trials, loadavg().c_str());
  std::printf("%-9s %-32s %10s %9s %12s %8s %13s %6s\n", "sessions", "stop", "median ms",
              "max ms", "host median", "exit 0", "told 1001", "warns");
  bool all_clean = true;
  for (const int sessions : sizes) {
    for (const bool second_signal : {false, true}) {
      std::vector<double> ms;
      std::vector<double> first_ms;
      std::vector<double> host_ms;
      std::vector<std::string> warnings;
      int exit_zero = 0;
      long long closed_1001 = 0;
      for (int t = 0; t < trials; ++t) {
        const auto trial = run_trial(binary, sessions, second_signal);
        if (!trial.ok) {
          std::fprintf(stderr, "N=%d trial %d: %s\n", sessions, t, trial.problem.c_str());
          all_clean = false;
          continue;
        }
        ms.push_back(trial.signal_to_exit_ms);
        first_ms.push_back(trial.first_signal_to_exit_ms);
        exit_zero += trial.exit_code == 0 ? 1 : 0;
        closed_1001 += trial.closed_1001;
        host_ms.push_back(trial.host_ms);
        warnings.insert(warnings.end(), trial.warnings.begin(), trial.warnings.end());
      }
      all_clean = all_clean && exit_zero == trials;
      const auto f = figures(ms);
      const std::string stop =
          second_signal ? "2nd SIGINT -> exit (drain 30s)" : "SIGINT -> exit (drain 1s)";
      const std::string told = std::to_string(closed_1001) + "/" +
                               std::to_string(static_cast<long long>(sessions) *
                                              static_cast<long long>(ms.size()));
      std::printf("%-9d %-32s %10.1f %9.1f %12.1f %5d/%-2d %13s %6zu\n", sessions, stop.c_str(),
                  f.median, f.max, figures(host_ms).median, exit_zero, trials, told.c_str(),
                  warnings.size());
      if (second_signal) {
        const auto g = figures(first_ms);
        std::printf("%-9d %-32s %10.1f %9.1f\n", sessions, "  (1st SIGINT -> exit)", g.median,
                    g.max);
      }
      // The distinct warnings, each once, with how often it came.
      std::map<std::string, int> distinct;
      for (const auto& line : warnings) ++distinct[line.size() > 24 ? line.substr(24) : line];
      for (const auto& [text, count] : distinct)
        std::printf("          %dx %s\n", count, text.c_str());
      std::fflush(stdout);
    }
  }
  std::printf(
      "told 1001: clients that got a close frame 1001 (going away). A second SIGINT skips to\n"
      "the forced close, so 0 is expected there. With 0 sessions the drain has nothing to wait\n"
      "for and the first SIGINT alone may already have ended the process.\n");
  std::printf("load average after: %s; every trial exited with code 0: %s\n", loadavg().c_str(),
              all_clean ? "yes" : "NO");
  return all_clean ? 0 : 1;
}
