// Replies through the OneBot adapter: one scripted implementation (a
// Universal reverse WebSocket, as NapCat opens) carries CHATS private chats;
// each chat sends a message, waits for mooring's send_private_msg for that
// chat, answers it with retcode 0 and sends the next, MESSAGES times. Reports
// replies per second and p50/p99 from the message event to the send call; with
// a server pid, also the server's CPU seconds. Run mooring with
// [onebot] send_interval = "0s" to measure the adapter, not the pacing, and
// [gateway] max_messages_per_minute above MESSAGES (each chat is one QQ user).
//
//   bench_onebot HOST:PORT TOKEN CHATS MESSAGES [SERVER_PID]
#include "runtime/asio.hpp"

#include <boost/beast/core.hpp>
#include <boost/beast/websocket.hpp>
#include <boost/json.hpp>

#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <iostream>
#include <map>
#include <sstream>

using namespace mooring;
namespace beast = boost::beast;
namespace websocket = beast::websocket;
namespace json = boost::json;
using tcp = asio::ip::tcp;

namespace {

constexpr std::int64_t self_id = 20001;

double cpu_seconds(int pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  std::getline(in, line);
  std::istringstream fields(line.substr(line.rfind(')') + 2));
  std::string skip;
  for (int i = 0; i < 11; ++i) fields >> skip;  // fields 3..13
  long utime = 0, stime = 0;
  fields >> utime >> stime;
  return static_cast<double>(utime + stime) / static_cast<double>(sysconf(_SC_CLK_TCK));
}

struct Run {
  int chats = 0;
  int messages = 0;
  std::int64_t next_message_id = 1;
  std::map<std::int64_t, int> sent;  // per chat (user id): messages sent
  std::map<std::int64_t, Clock::time_point> since;
  std::vector<double> latencies_ms;
  int done = 0;
};

std::string message_event(Run& run, std::int64_t user) {
  const auto id = run.next_message_id++;
  ++run.sent[user];
  run.since[user] = Clock::now();
  return json::serialize(json::object{
      {"time", std::time(nullptr)},
      {"self_id", self_id},
      {"post_type", "message"},
      {"message_type", "private"},
      {"sub_type", "friend"},
      {"message_id", id},
      {"user_id", user},
      {"message", json::array{json::object{
                      {"type", "text"},
                      {"data", json::object{{"text", "round trip number " + std::to_string(id)}}}}}},
      {"raw_message", "round trip number " + std::to_string(id)},
      {"font", 0},
      {"sender", json::object{{"user_id", user}, {"nickname", "bench"}}}});
}

awaitable<void> implementation(std::string host, std::string port, std::string token, Run* run) {
  tcp::resolver resolver(co_await asio::this_coro::executor);
  auto endpoints = co_await resolver.async_resolve(host, port, asio::use_awaitable);
  websocket::stream<beast::tcp_stream> ws(co_await asio::this_coro::executor);
  co_await beast::get_lowest_layer(ws).async_connect(endpoints, asio::use_awaitable);
  // As Node's ws (NapCat, LLOneBot) does: no Nagle delay on small frames.
  beast::get_lowest_layer(ws).socket().set_option(tcp::no_delay(true));
  ws.set_option(websocket::stream_base::decorator([token](websocket::request_type& req) {
    req.set("X-Self-ID", std::to_string(self_id));
    req.set("X-Client-Role", "Universal");
    req.set("Authorization", "Bearer " + token);
  }));
  co_await ws.async_handshake(host, "/onebot/v11/ws", asio::use_awaitable);
  for (int c = 0; c < run->chats; ++c) {
    const auto frame = message_event(*run, 1000 + c);
    co_await ws.async_write(asio::buffer(frame), asio::use_awaitable);
  }
  beast::flat_buffer buffer;
  std::int64_t answered = 0;
  while (run->done < run->chats) {
    co_await ws.async_read(buffer, asio::use_awaitable);
    auto value = json::parse(beast::buffers_to_string(buffer.data()));
    buffer.consume(buffer.size());
    const auto& call = value.as_object();
    const auto action = std::string(call.at("action").as_string());
    json::value data = nullptr;
    if (action == "get_version_info") data = json::object{{"app_name", "bench"}, {"app_version", "1"}};
    if (action == "get_login_info") data = json::object{{"user_id", self_id}, {"nickname", "bench"}};
    if (action == "send_private_msg") data = json::object{{"message_id", ++answered}};
    const auto answer = json::serialize(json::object{
        {"status", "ok"}, {"retcode", 0}, {"data", data}, {"echo", call.at("echo")}});
    co_await ws.async_write(asio::buffer(answer), asio::use_awaitable);
    if (action != "send_private_msg") continue;
    const auto user = call.at("params").at("user_id").to_number<std::int64_t>();
    run->latencies_ms.push_back(
        std::chrono::duration<double, std::milli>(Clock::now() - run->since[user]).count());
    if (run->sent[user] >= run->messages) {
      ++run->done;
      continue;
    }
    const auto next = message_event(*run, user);
    co_await ws.async_write(asio::buffer(next), asio::use_awaitable);
  }
  co_await ws.async_close(websocket::close_code::normal, asio::use_awaitable);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 5) {
    std::cerr << "usage: bench_onebot HOST:PORT TOKEN CHATS MESSAGES [SERVER_PID]\n";
    return 2;
  }
  const std::string address = argv[1];
  const auto colon = address.rfind(':');
  Run run;
  run.chats = std::stoi(argv[3]);
  run.messages = std::stoi(argv[4]);
  const int pid = argc > 5 ? std::stoi(argv[5]) : 0;
  const double cpu0 = pid ? cpu_seconds(pid) : 0;
  asio::io_context io;
  const auto t0 = Clock::now();
  std::exception_ptr failure;
  asio::co_spawn(io, implementation(address.substr(0, colon), address.substr(colon + 1), argv[2], &run),
                 [&](std::exception_ptr e) { failure = e; });
  io.run();
  if (failure) {
    try {
      std::rethrow_exception(failure);
    } catch (const std::exception& e) {
      std::cerr << "bench_onebot: " << e.what() << "\n";
      return 1;
    }
  }
  const double seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  auto& l = run.latencies_ms;
  std::sort(l.begin(), l.end());
  const auto at = [&](double q) { return l.empty() ? 0.0 : l[std::min(l.size() - 1, static_cast<std::size_t>(q * l.size()))]; };
  std::printf("chats %d, replies %zu in %.2f s: %.0f replies/s, p50 %.2f ms, p99 %.2f ms",
              run.chats, l.size(), seconds, static_cast<double>(l.size()) / seconds, at(0.5), at(0.99));
  if (pid) std::printf(", server CPU %.2f s", cpu_seconds(pid) - cpu0);
  std::printf("\n");
  return 0;
}
