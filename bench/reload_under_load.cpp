// Reloads under a steady chat load: CLIENTS users chat without pause while the
// server's configuration is changed RELOADS times, one change every 300 ms
// after the previous one is live. Reports how long each change took to be live
// and how many messages went unanswered on the connection they were sent on.
//
//   bench_reload put GATEWAY ADMIN TOKEN FILE_A FILE_B CLIENTS RELOADS
//       mooring: PUT /api/config with FILE_A / FILE_B in turn; the change is
//       live when the 200 arrives.
//   bench_reload touch GATEWAY WATCHED_FILE SUPERVISOR_PID CLIENTS RELOADS
//       a server that reloads when a file changes (uvicorn --reload): the file
//       is rewritten; the change is live when the worker process was replaced
//       and a new connection gets a reply.
#include "runtime/asio.hpp"

#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket.hpp>
#include <boost/json.hpp>

#include <csignal>

#include <algorithm>
#include <atomic>
#include <fstream>
#include <iostream>
#include <set>
#include <sstream>
#include <thread>

using namespace mooring;
using namespace std::chrono_literals;
namespace beast = boost::beast;
namespace http = beast::http;
namespace websocket = beast::websocket;
using tcp = asio::ip::tcp;

namespace {

struct Tally {
  std::atomic<long> answered{0};
  std::atomic<long> failed{0};   // sent, never answered on its connection
  std::atomic<long> dropped{0};  // connections that ended under a client
};

std::pair<std::string, std::string> split(const std::string& address) {
  const auto colon = address.rfind(':');
  return {address.substr(0, colon), address.substr(colon + 1)};
}

// One round trip on an open connection: the message, then frames up to its `chat`.
awaitable<void> round_trip(websocket::stream<beast::tcp_stream>& ws, const std::string& text,
                           const std::string& id) {
  const std::string frame = boost::json::serialize(boost::json::object{{"text", text}, {"id", id}});
  beast::get_lowest_layer(ws).expires_after(20s);
  co_await ws.async_write(asio::buffer(frame), asio::use_awaitable);
  beast::flat_buffer buffer;
  for (;;) {
    beast::get_lowest_layer(ws).expires_after(20s);
    co_await ws.async_read(buffer, asio::use_awaitable);
    auto value = boost::json::parse(beast::buffers_to_string(buffer.data()));
    buffer.consume(buffer.size());
    if (value.at("type") == "chat") co_return;
    if (value.at("type") == "error") throw std::runtime_error(boost::json::serialize(value));
  }
}

awaitable<void> connect(websocket::stream<beast::tcp_stream>& ws, const std::string& address,
                        const std::string& user) {
  const auto [host, port] = split(address);
  tcp::resolver resolver(co_await asio::this_coro::executor);
  auto endpoints = co_await resolver.async_resolve(host, port, asio::use_awaitable);
  beast::get_lowest_layer(ws).expires_after(5s);
  co_await beast::get_lowest_layer(ws).async_connect(endpoints, asio::use_awaitable);
  co_await ws.async_handshake(host, "/ws/" + user, asio::use_awaitable);
  ws.text(true);
}

// A user who chats until `stop`, reconnecting whenever the connection ends.
awaitable<void> chatter(std::string address, int index, const std::atomic<bool>& stop,
                        Tally& tally) {
  const auto executor = co_await asio::this_coro::executor;
  long n = 0;
  while (!stop) {
    bool in_flight = false;
    bool connected = false;
    try {
      websocket::stream<beast::tcp_stream> ws(executor);
      co_await connect(ws, address, "reload-" + std::to_string(index));
      connected = true;
      while (!stop) {
        in_flight = true;
        // A new id each time, also after a failure: the reference refuses a
        // repeated id where mooring would answer it once.
        ++n;
        co_await round_trip(ws, "message number " + std::to_string(n),
                            "r" + std::to_string(index) + "-" + std::to_string(n));
        in_flight = false;
        ++tally.answered;
      }
      beast::get_lowest_layer(ws).expires_after(5s);
      co_await ws.async_close(websocket::close_code::normal, asio::use_awaitable);
    } catch (const std::exception&) {
      if (in_flight) ++tally.failed;
      if (connected) ++tally.dropped;
    }
    if (!connected && !stop) {
      asio::steady_timer pause(executor, 10ms);  // the server is restarting: try again shortly
      co_await pause.async_wait(asio::use_awaitable);
    }
  }
}

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  std::stringstream content;
  content << in.rdbuf();
  return content.str();
}

// PUT /api/config; returns the status.
int put_config(const std::string& admin, const std::string& token, const std::string& body) {
  asio::io_context io;
  const auto [host, port] = split(admin);
  beast::tcp_stream stream(io);
  stream.expires_after(30s);
  stream.connect(tcp::resolver(io).resolve(host, port));
  http::request<http::string_body> req{http::verb::put, "/api/config", 11};
  req.set(http::field::host, host);
  req.set(http::field::authorization, "Bearer " + token);
  req.body() = body;
  req.prepare_payload();
  http::write(stream, req);
  beast::flat_buffer buffer;
  http::response<http::string_body> res;
  http::read(stream, buffer, res);
  return static_cast<int>(res.result_int());
}

std::set<std::string> children(const std::string& pid) {
  std::ifstream in("/proc/" + pid + "/task/" + pid + "/children");
  std::set<std::string> out;
  for (std::string child; in >> child;) out.insert(child);
  return out;
}

bool probe(const std::string& address, int k) {
  asio::io_context io;
  bool ok = false;
  asio::co_spawn(
      io,
      [](std::string address, int k, bool& ok) -> awaitable<void> {
        websocket::stream<beast::tcp_stream> ws(co_await asio::this_coro::executor);
        co_await connect(ws, address, "probe-" + std::to_string(k));
        co_await round_trip(ws, "are you there", "probe");
        ok = true;
      }(address, k, ok),
      [](std::exception_ptr) {});
  io.run_for(5s);
  return ok;
}

double percentile(std::vector<double> v, double p) {
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<std::size_t>(p * static_cast<double>(v.size())))];
}

}  // namespace

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "";
  if (!((mode == "put" && argc == 9) || (mode == "touch" && argc == 7))) {
    std::cerr << "usage: bench_reload put GATEWAY ADMIN TOKEN FILE_A FILE_B CLIENTS RELOADS\n"
                 "       bench_reload touch GATEWAY WATCHED_FILE SUPERVISOR_PID CLIENTS RELOADS\n";
    return 2;
  }
  const std::string gateway = argv[2];
  const int clients = std::stoi(argv[argc - 2]);
  const int reloads = std::stoi(argv[argc - 1]);

  Tally tally;
  std::atomic<bool> stop{false};
  asio::io_context io;
  for (int i = 0; i < clients; ++i) 
    asio::co_spawn(io, chatter(gateway, i, stop, tally), [](std::exception_ptr) {});
  std::thread load([&io] { io.run(); });
  std::this_thread::sleep_for(500ms);  // the load reaches its steady state

  const long answered_before = tally.answered;
  std::vector<double> latencies_ms;
  int refused = 0;
  for (int r = 0; r < reloads; ++r) {
    const auto t0 = Clock::now();
    if (mode == "put") {
      const auto body = read_text(argv[5 + r % 2]);
      if (put_config(argv[3], argv[4], body) != 200) ++refused;
    } else {
      const std::string pid = argv[4];
      const auto before = children(pid);
      std::ofstream(argv[3], std::ios::app) << "# change " << r << "\n";
      const auto deadline = Clock::now() + 60s;
      while (Clock::now() < deadline) {
        if (::kill(std::stoi(pid), 0) != 0) {
          std::cerr << "the server (pid " << pid << ") is gone\n";
          return 1;
        }
        const auto now = children(pid);
        if (!now.empty() && now != before && probe(gateway, r)) break;
        std::this_thread::sleep_for(10ms);
      }
    }
    latencies_ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
    std::this_thread::sleep_for(300ms);
  }
  const long answered_during = tally.answered - answered_before;
  stop = true;
  load.join();

  std::printf(
      "%d reloads under %d chatting clients: live after median %.1f ms, max %.1f ms; "
      "%ld messages answered meanwhile, %ld failed, %ld connections dropped%s\n",
      reloads, clients, percentile(latencies_ms, 0.5), percentile(latencies_ms, 1.0),
      answered_during, tally.failed.load(), tally.dropped.load(),
      refused ? (", " + std::to_string(refused) + " refused").c_str() : "");
  return 0;
}
