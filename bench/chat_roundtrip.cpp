// Chat round trips against a running gateway (mooring or the reference peer),
// closed loop: N WebSocket clients (users bench-0 .. bench-N-1) each send a
// message of --bytes bytes and wait for its final `chat` frame, then send the
// next. Every client connects first; the clock starts when all are connected.
//
//   bench_chat HOST:PORT CLIENTS MESSAGES_PER_CLIENT [SERVER_PID]
//              [--seconds S] [--warmup S] [--bytes N] [--csv]
//
// Without --seconds each client sends MESSAGES_PER_CLIENT messages and the
// rate is round trips / elapsed time. With --seconds the clients loop for
// --warmup seconds unmeasured, then for S seconds measured (MESSAGES_PER_CLIENT,
// if not 0, still caps each client); the rate counts the round trips that
// started and ended inside the measured window. Each reply is checked: the ack
// carries the message's id, the `chat` frame answers the acked seq and its
// text is "echo: " + the message; anything else fails the client.
//
// Output: one line for a reader, or with --csv one machine-readable line:
//   csv,CLIENTS,ROUND_TRIPS,SECONDS,PER_SECOND,P50_MS,P99_MS,SERVER_CORES,FAILED_CLIENTS,SERVER_RUNQUEUE
// SERVER_CORES is the server's CPU time (from /proc/<pid>/stat, user + system,
// every thread) over the wall time since every client connected: 1.0 is one
// core busy all the time. SERVER_RUNQUEUE is the time its threads were
// runnable but waiting for a CPU (/proc/<pid>/task/*/schedstat) over the same
// wall time: on a machine shared with other work, the share of the run the
// server was kept off its core. Both are 0 without a server pid.
#include "runtime/asio.hpp"

#include <boost/beast/core.hpp>
#include <boost/beast/websocket.hpp>
#include <boost/json.hpp>

#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <optional>
#include <sstream>
#include <stdexcept>

using namespace mooring;
namespace beast = boost::beast;
namespace websocket = beast::websocket;
using tcp = asio::ip::tcp;

namespace {

double cpu_seconds(int pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  std::getline(in, line);
  if (line.empty()) return 0;
  std::istringstream fields(line.substr(line.rfind(')') + 2));
  std::string skip;
  for (int i = 0; i < 11; ++i) fields >> skip;  // fields 3..13
  long utime = 0, stime = 0;
  fields >> utime >> stime;
  return static_cast<double>(utime + stime) / static_cast<double>(sysconf(_SC_CLK_TCK));
}

// Nanoseconds the process's threads spent runnable but not running.
double runqueue_seconds(int pid) {
  double total = 0;
  std::error_code ec;
  for (const auto& task : std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/task", ec)) {
    std::ifstream in(task.path() / "schedstat");
    unsigned long long running = 0, waiting = 0;
    if (in >> running >> waiting) total += static_cast<double>(waiting) / 1e9;
  }
  return total;
}

struct Options {
  std::string host;
  std::string port;
  int clients = 0;
  int messages = 0;  // per client; 0 with --seconds: no cap
  int pid = 0;
  double seconds = 0;  // 0: count mode
  double warmup = 0;
  std::size_t bytes = 32;
  bool csv = false;
};

// The shared state of one run: the start gate, the measured window and the
// figures the clients add to.
struct Run {
  Run(asio::io_context& io, const Options& o)
      : gate(io, Clock::time_point::max()), options(o), waiting(o.clients), pid(o.pid) {}
  asio::steady_timer gate;  // cancelled when every client is connected
  const Options& options;
  int waiting = 0;          // clients not yet connected (or failed)
  Clock::time_point started{};
  Clock::time_point measure_from{};
  Clock::time_point measure_until = Clock::time_point::max();
  std::vector<double> latencies_ms;
  int failures = 0;
  std::string first_error;
  double cpu_at_start = 0;
  double runqueue_at_start = 0;
  int pid = 0;

  void connected_or_failed() {
    if (--waiting > 0) return;
    started = Clock::now();
    cpu_at_start = pid ? cpu_seconds(pid) : 0.0;
    runqueue_at_start = pid ? runqueue_seconds(pid) : 0.0;
    measure_from = started;
    if (options.seconds > 0) {
      auto span = [](double s) {
        return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(s));
      };
      measure_from = started + span(options.warmup);
      measure_until = measure_from + span(options.seconds);
    }
    gate.cancel();
  }
};

// A message of exactly `bytes` bytes (at least its numbering), in words, so
// the echo reply streams as several pieces.
std::string message_text(int client, int m, std::size_t bytes) {
  std::string text = "u" + std::to_string(client) + " m" + std::to_string(m);
  const std::size_t numbering = text.size();
  static constexpr std::string_view filler = " the quick brown fox jumps over the lazy dog";
  while (text.size() < bytes) text += filler;
  text.resize(std::max(bytes, numbering));
  if (text.back() == ' ') text.back() = '.';
  return text;
}

awaitable<void> client(const Options& o, Run& run, std::string nonce, int index) {
  bool counted = false;
  try {
    tcp::resolver resolver(co_await asio::this_coro::executor);
    auto endpoints = co_await resolver.async_resolve(o.host, o.port, asio::use_awaitable);
    websocket::stream<beast::tcp_stream> ws(co_await asio::this_coro::executor);
    co_await beast::get_lowest_layer(ws).async_connect(endpoints, asio::use_awaitable);
    beast::get_lowest_layer(ws).socket().set_option(tcp::no_delay(true));
    co_await ws.async_handshake(o.host, "/ws/bench-" + std::to_string(index), asio::use_awaitable);
    counted = true;
    run.connected_or_failed();
    if (run.waiting > 0) co_await run.gate.async_wait(use_tuple);

    beast::flat_buffer buffer;
    for (int m = 0; o.messages == 0 || m < o.messages; ++m) {
      const auto t0 = Clock::now();
      if (t0 >= run.measure_until) break;
      const std::string text = message_text(index, m, o.bytes);
      const std::string id = nonce + "-" + std::to_string(index) + "-" + std::to_string(m);
      const std::string frame = boost::json::serialize(boost::json::object{{"text", text}, {"id", id}});
      co_await ws.async_write(asio::buffer(frame), asio::use_awaitable);
      std::optional<std::int64_t> seq;
      for (;;) {
        co_await ws.async_read(buffer, asio::use_awaitable);
        auto value = boost::json::parse(beast::buffers_to_string(buffer.data()));
        buffer.consume(buffer.size());
        const auto& object = value.as_object();
        const auto type = object.at("type").as_string();
        if (type == "ack") {
          if (object.at("id").as_string() != id) throw std::runtime_error("ack for another id");
          seq = object.at("seq").to_number<std::int64_t>();
        } else if (type == "chat") {
          if (!seq || object.at("reply_to").to_number<std::int64_t>() != *seq)
            throw std::runtime_error("a reply before the ack, or to another message");
          if (object.at("text").as_string() != "echo: " + text)
            throw std::runtime_error("a reply that is not the echo of the message");
          break;
        } else if (type != "chat_token") {
          throw std::runtime_error("unexpected frame " + boost::json::serialize(value));
        }
      }
      const auto t1 = Clock::now();
      if (t0 >= run.measure_from && t1 <= run.measure_until)
        run.latencies_ms.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
    }
    co_await ws.async_close(websocket::close_code::normal, asio::use_awaitable);
  } catch (const std::exception& e) {
    if (run.first_error.empty()) run.first_error = e.what();
    ++run.failures;
    if (!counted) run.connected_or_failed();
  }
}

int usage() {
  std::cerr << "usage: bench_chat HOST:PORT CLIENTS MESSAGES_PER_CLIENT [SERVER_PID]\n"
               "                  [--seconds S] [--warmup S] [--bytes N] [--csv]\n";
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  std::vector<std::string> positional;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    const bool has_value = i + 1 < argc;
    if (arg == "--csv") o.csv = true;
    else if (arg == "--seconds" && has_value) o.seconds = std::stod(argv[++i]);
    else if (arg == "--warmup" && has_value) o.warmup = std::stod(argv[++i]);
    else if (arg == "--bytes" && has_value) o.bytes = std::stoul(argv[++i]);
    else if (arg.starts_with("--")) return usage();
    else positional.push_back(arg);
  }
  if (positional.size() < 3 || positional.size() > 4) return usage();
  const auto colon = positional[0].rfind(':');
  if (colon == std::string::npos) return usage();
  o.host = positional[0].substr(0, colon);
  o.port = positional[0].substr(colon + 1);
  o.clients = std::stoi(positional[1]);
  o.messages = std::stoi(positional[2]);
  o.pid = positional.size() > 3 ? std::stoi(positional[3]) : 0;
  if (o.clients < 1 || o.messages < 0 || (o.messages == 0 && o.seconds <= 0)) return usage();

  asio::io_context io(1);
  Run run(io, o);
  // Message ids are unique per process: a server that drops a repeated id
  // (mooring stores the same id once) sees every message as new.
  const std::string nonce = std::to_string(getpid()) + "." +
      std::to_string(Clock::now().time_since_epoch().count() % 1000000007);
  for (int i = 0; i < o.clients; ++i) asio::co_spawn(io, client(o, run, nonce, i), asio::detached);

  io.run();

  const auto ended = Clock::now();
  const double seconds = o.seconds > 0 ? o.seconds
                                       : std::chrono::duration<double>(ended - run.started).count();
  // CPU over the whole run after connecting (warm-up and the last round trips
  // included), so it is compared with the wall time of the same span.
  const double wall = std::chrono::duration<double>(ended - run.started).count();
  const double cpu = o.pid ? cpu_seconds(o.pid) - run.cpu_at_start : 0;
  const double runqueue = o.pid ? runqueue_seconds(o.pid) - run.runqueue_at_start : 0;
  auto& latencies = run.latencies_ms;
  std::sort(latencies.begin(), latencies.end());
  auto percentile = [&](double p) {
    return latencies.empty() ? 0.0 : latencies[static_cast<std::size_t>(p * (latencies.size() - 1))];
  };
  const double rate = static_cast<double>(latencies.size()) / seconds;
  if (o.csv) {
    std::printf("csv,%d,%zu,%.3f,%.1f,%.3f,%.3f,%.3f,%d,%.3f\n", o.clients, latencies.size(),
                seconds, rate, percentile(0.5), percentile(0.99), wall > 0 ? cpu / wall : 0.0,
                run.failures, wall > 0 ? runqueue / wall : 0.0);
  } else {
    std::printf("%d clients: %zu round trips in %.2f s = %.1f/s, p50 %.3f ms, p99 %.3f ms, "
                "p99.9 %.3f ms, max %.3f ms, "
                "server CPU %.2f s (%.0f %% of one core, %.0f %% waiting for a CPU), failed clients %d\n",
                o.clients, latencies.size(), seconds, rate, percentile(0.5), percentile(0.99),
                percentile(0.999), percentile(1.0), cpu,
                wall > 0 ? 100 * cpu / wall : 0.0, wall > 0 ? 100 * runqueue / wall : 0.0, run.failures);
  }
  if (!run.first_error.empty()) std::fprintf(stderr, "bench_chat: first failure: %s\n", run.first_error.c_str());
  return run.failures == 0 ? 0 : 1;
}
