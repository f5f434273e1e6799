// A configuration change is a transaction (seed 000: a config save that
// crashed the host). The real binary is reloaded through PUT /api/config,
// POST /api/reload and SIGHUP while people chat with it: nothing is dropped, a
// change that cannot be prepared changes nothing, and an invalid file is
// refused with every problem named.
#include "support/chat_client.hpp"
#include "support/fake_upstream.hpp"
#include "support/host_process.hpp"
#include "support/process.hpp"
#include "support/wait.hpp"

#include <boost/json.hpp>
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <csignal>
#include <functional>
#include <future>
#include <thread>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

namespace mooring::test {
namespace {

namespace json = boost::json;
using Frame = ChatClient::Frame;
using tcp = asio::ip::tcp;

const std::string listeners = "[gateway]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n";

HttpReply put_config(const HostProcess& host, const std::string& admin, const std::string& text) {
  return http_request(admin, http::verb::put, "/api/config", text,
                      {{"Authorization", "Bearer " + host.admin_token()}});
}

// POST /api/reload with the host's admin token: the file is read again.
HttpReply reload_file(const HostProcess& host, const std::string& token) {
  return http_request(host.admin(), http::verb::post, "/api/reload", "",
                      {{"Authorization", "Bearer " + token}});
}

std::int64_t generation(const HostProcess& host) {
  return host.status().at("generation").as_int64();
}

json::array changed_in(const HttpReply& reply) {
  return json::parse(reply.body).as_object().at("changed").as_array();
}

bool contains(const json::array& keys, std::string_view key) {
  return std::find(keys.begin(), keys.end(), json::value(key)) != keys.end();
}

// The addresses in the ready file now.
json::object ready_file(const std::filesystem::path& dir) {
  const auto text = read_file(dir / "ready.json");
  return text.empty() ? json::object{} : json::parse(text).as_object();
}

// A port nothing listens on at the moment of the call.
std::uint16_t free_port() {
  asio::io_context io;
  tcp::acceptor probe(io, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
  return probe.local_endpoint().port();
}

// A configuration that listens on a port free a moment ago, PUT: the port,
// the text sent and the answer. A test running beside this one (ctest -j) may
// take that port meanwhile as the local end of a connection it opens; the
// move is then refused with 409 and changes nothing, and is tried again on
// another port.
struct Move {
  std::uint16_t port = 0;
  std::string text;
  HttpReply reply;
};
Move move_to_a_free_port(const HostProcess& host, const std::string& admin,
                         const std::function<std::string(std::uint16_t)>& config_for) {
  for (int attempt = 1;; ++attempt) {
    Move move;
    move.port = free_port();
    move.text = config_for(move.port);
    move.reply = put_config(host, admin, move.text);
    const bool taken = move.reply.status == 409 &&
                       move.reply.body.find("Address already in use") != std::string::npos;
    if (!taken || attempt == 5) return move;
  }
}

// Binding `port` as a server would (SO_REUSEADDR, as mooring does): true when
// it is free.
bool can_bind(std::uint16_t port) {
  asio::io_context io;
  tcp::acceptor acceptor(io);
  boost::system::error_code ec;
  acceptor.open(tcp::v4(), ec);
  acceptor.set_option(tcp::acceptor::reuse_address(true), ec);
  acceptor.bind(tcp::endpoint(asio::ip::make_address("127.0.0.1"), port), ec);
  if (!ec) acceptor.listen(asio::socket_base::max_listen_connections, ec);
  return !ec;
}

std::uint16_t port_of(const std::string& address) {
  return static_cast<std::uint16_t>(std::stoi(split_address(address).second));
}

// --- people chatting without pause ------------------------------------------

struct LoadTally {
  std::size_t sent = 0;
  std::size_t acked = 0;
  std::size_t answered = 0;
  std::size_t users_done = 0;
  std::vector<std::string> problems;  // anything but ack, chat_token and the right chat
};

// One user on one connection: a message, its whole reply, the next message,
// until `stop`; then a normal close. Any frame but an ack, a piece or the
// right reply is a problem, and so is a connection that ends on its own.
awaitable<void> chatter(tcp::endpoint gateway, std::string user, const std::atomic<bool>& stop,
                        LoadTally& tally) {
  const auto executor = co_await asio::this_coro::executor;
  websocket::stream<beast::tcp_stream> ws(executor);
  auto& socket = beast::get_lowest_layer(ws);
  socket.expires_after(20s);
  co_await socket.async_connect(gateway, asio::use_awaitable);
  co_await ws.async_handshake(gateway.address().to_string(), "/ws/" + user, asio::use_awaitable);
  ws.text(true);
  beast::flat_buffer buffer;
  for (int n = 0; !stop; ++n) {
    const std::string id = "m" + std::to_string(n);
    const std::string text = user + " says " + std::to_string(n);
    const std::string message = message_frame(text, id);
    socket.expires_after(20s);
    co_await ws.async_write(asio::buffer(message), asio::use_awaitable);
    ++tally.sent;
    std::int64_t seq = -1;
    for (;;) {
      socket.expires_after(20s);
      co_await ws.async_read(buffer, asio::use_awaitable);
      const auto frame = json::parse(beast::buffers_to_string(buffer.data())).as_object();
      buffer.consume(buffer.size());
      if (is_ack(frame, id)) {
        seq = int_field(frame, "seq");
        ++tally.acked;
      } else if (is_chat_for(frame, seq)) {
        if (string_field(frame, "text") != "echo: " + text)
          tally.problems.push_back(user + " got the wrong reply " + json::serialize(frame));
        ++tally.answered;
        break;
      } else if (!is_type(frame, "chat_token")) {
        tally.problems.push_back(user + " got " + json::serialize(frame));
      }
    }
  }
  socket.expires_after(20s);
  co_await ws.async_close(websocket::close_code::normal, asio::use_awaitable);
  ++tally.users_done;
}

// `users` chatters on their own thread until stop() is called.
class ChatLoad {
 public:
  ChatLoad(const std::string& gateway_address, int users) : users_(users) {
    const auto [address, port] = split_address(gateway_address);
    const tcp::endpoint gateway(asio::ip::make_address(address),
                                static_cast<unsigned short>(std::stoi(port)));
    for (int u = 0; u < users; ++u) {
      const auto user = "load-" + std::to_string(u);
      asio::co_spawn(io_, chatter(gateway, user, stop_, tally_),
                     [this, user](std::exception_ptr failure) {
                       if (!failure) return;
                       try {
                         std::rethrow_exception(failure);
                       } catch (const std::exception& e) {
                         tally_.problems.push_back(user + "'s connection ended: " + e.what());
                       }
                     });
    }
    thread_ = std::thread([this] { io_.run_for(5min); });
  }
  ~ChatLoad() { stop(); }

  // Replies received so far, read on the load's own thread (0 if it does not answer in 5 s).
  std::size_t answered() {
    std::promise<std::size_t> answered;
    asio::post(io_, [&] { answered.set_value(tally_.answered); });
    auto future = answered.get_future();
    return future.wait_for(5s) == std::future_status::ready ? future.get() : 0;
  }

  // Lets every user finish the message in progress and close; returns the tally.
  const LoadTally& stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
    return tally_;
  }

  // Polls (on the load's own thread) until every user has had `replies` replies.
  bool wait_for_answers(std::size_t replies, std::chrono::milliseconds timeout) {
    return poll_until([&] { return answered() >= replies * static_cast<std::size_t>(users_); },
                      timeout, 20ms);
  }

 private:
  int users_;
  asio::io_context io_;
  std::atomic<bool> stop_{false};
  LoadTally tally_;
  std::thread thread_;
};

TEST(Reload, FiftyAppliesUnderLoadDropNothing) {
  TempDir dir;
  // Two configurations that differ in something of every kind a reload can
  // touch without moving a port: the provider (rebuilt on each change), the
  // gateway's options (a new router), chat settings and the log. The users
  // chat as fast as they are answered, more than the default 60 messages a
  // minute: the rate limit is not what this tests.
  const auto text = [](int variant) {
    return fmt::format(
        "[gateway]\nlisten = \"127.0.0.1:0\"\nheartbeat_interval = \"{}\"\n"
        "max_messages_per_minute = 1000000\n"
        "[admin]\nlisten = \"127.0.0.1:0\"\n"
        "[provider]\nmax_concurrency = 64\nsystem_prompt = \"variant {}\"\n"
        "[provider.echo]\ntoken_delay = \"{}\"\n"
        "[chat]\nhistory_messages = {}\n"
        "[log]\nmax_field_bytes = {}\n",
        variant ? "21s" : "20s", variant, variant ? "2ms" : "1ms", variant ? 5 : 20,
        variant ? 256 : 512);
  };
  HostProcess host(MOORING_BINARY, dir.path(), "");
  ASSERT_TRUE(host.started()) << host.log();
  write_file(dir / "mooring.toml", text(0));
  ASSERT_EQ(http_request(host.admin(), http::verb::post, "/api/reload", "",
                         {{"Authorization", "Bearer " + host.admin_token()}})
                .status,
            200);

  constexpr int users = 20;
  ChatLoad load(host.gateway(), users);
  ASSERT_TRUE(load.wait_for_answers(1, 30s)) << "the chat load did not get going";

  const auto answered_before_reloads = load.answered();
  std::int64_t expected_generation = generation(host);
  for (int i = 1; i <= 50; ++i) {
    const auto next = text(i % 2);
    ++expected_generation;
    if (i % 2 == 1) {
      const auto reply = put_config(host, host.admin(), next);
      ASSERT_EQ(reply.status, 200) << reply.body;
      EXPECT_EQ(json::parse(reply.body).at("generation").as_int64(), expected_generation);
      const auto changed = changed_in(reply);
      EXPECT_TRUE(contains(changed, "provider.echo.token_delay")) << reply.body;
      EXPECT_TRUE(contains(changed, "gateway.heartbeat_interval")) << reply.body;
    } else {
      write_file(dir / "mooring.toml", next);
      host.process().signal(SIGHUP);
      ASSERT_TRUE(poll_until([&] { return generation(host) == expected_generation; }, 10s))
          << "SIGHUP " << i << " was not applied";
    }
  }
  const auto answered_after_reloads = load.answered();
  const auto& tally = load.stop();

  RecordProperty("messages_answered", static_cast<int>(tally.answered));
  EXPECT_EQ(tally.users_done, static_cast<std::size_t>(users));
  EXPECT_EQ(tally.acked, tally.sent);
  EXPECT_EQ(tally.answered, tally.sent);
  // People were chatting all along.
  EXPECT_GT(answered_after_reloads, answered_before_reloads + users);
  RecordProperty("answered_during_reloads",
                 static_cast<int>(answered_after_reloads - answered_before_reloads));
  std::string problems;
  for (std::size_t i = 0; i < std::min<std::size_t>(tally.problems.size(), 20); ++i)
    problems += "\n  " + tally.problems[i];
  EXPECT_TRUE(tally.problems.empty()) << tally.problems.size() << " problem(s):" << problems;

  const auto status = host.status();
  EXPECT_EQ(status.at("generation").as_int64(), expected_generation);
  EXPECT_EQ(status.at("task_failures").as_int64(), 0);
  for (const auto& component : status.at("components").as_array())
    EXPECT_EQ(component.at("state"), "running") << json::serialize(component);
  EXPECT_EQ(host.log().find(" error "), std::string::npos) << host.log();
  expect_clean_stop(host);
}

TEST(Reload, ASwitchOfProviderLetsRepliesInFlightFinishAndSendsNewOnesToTheNewOne) {
  TempDir dir;
  FakeUpstream upstream;
  upstream.set_fallback(sse_reply({"from ", "the ", "upstream"}));
  // Echo replies a word every 100 ms: the switch lands in the middle of them.
  HostProcess host(MOORING_BINARY, dir.path(), "[provider.echo]\ntoken_delay = \"100ms\"\n");
  ASSERT_TRUE(host.started()) << host.log();

  constexpr int users = 5;
  std::vector<ChatClient> clients(users);
  std::vector<std::int64_t> first(users);
  for (int u = 0; u < users; ++u) {
    ASSERT_EQ(clients[u].connect(host.gateway(), "switch-" + std::to_string(u)), 101);
    first[u] = say_and_get_seq(clients[u], "one two three four five six seven eight", "first");
  }
  // Every first reply has begun on the echo provider.
  for (int u = 0; u < users; ++u)
    clients[u].read_until([&](const Frame& f) { return is_token_for(f, first[u]); });

  const auto reply = put_config(
      host, host.admin(),
      listeners + "[provider]\nkind = \"openai\"\nbase_url = \"" + upstream.base_url() +
          "\"\nmodel = \"test-model\"\napi_key_env = \"MOORING_TEST_NO_SUCH_KEY\"\n");
  ASSERT_EQ(reply.status, 200) << reply.body;
  EXPECT_TRUE(contains(changed_in(reply), "provider.kind")) << reply.body;

  for (int u = 0; u < users; ++u) {
    const auto done = clients[u].read_until([&](const Frame& f) { return is_chat_for(f, first[u]); });
    EXPECT_EQ(string_field(done, "text"), "echo: one two three four five six seven eight");
  }
  EXPECT_EQ(upstream.request_count(), 0u) << "a reply in flight moved to the new provider";

  for (int u = 0; u < users; ++u) {
    const auto seq = say_and_get_seq(clients[u], "and now?", "second");
    const auto done = clients[u].read_until([&](const Frame& f) { return is_chat_for(f, seq); });
    EXPECT_EQ(string_field(done, "text"), "from the upstream");
  }
  EXPECT_EQ(upstream.request_count(), static_cast<std::size_t>(users));
  for (auto& client : clients) {
    EXPECT_EQ(std::count_if(client.received().begin(), client.received().end(),
                       [](const Frame& f) { return is_type(f, "error"); }),
              0);
    client.close();
  }
  expect_clean_stop(host);
}

TEST(Reload, TheAdminPortMovesWhileAnEventsClientLingersAndATakenPortChangesNothing) {
  TempDir dir;
  HostProcess host(MOORING_BINARY, dir.path(), "");
  ASSERT_TRUE(host.started()) << host.log();
  const std::string old_admin = host.admin();
  const auto token = host.admin_token();

  WsClient lingering;
  ASSERT_EQ(lingering.connect(old_admin, "/api/events", {{"Authorization", "Bearer " + token}}),
            101);

  // A move to a port that is taken: 409, and the old port still serves.
  asio::io_context io;
  tcp::acceptor squatter(io, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
  const auto taken = squatter.local_endpoint().port();
  const auto before = generation(host);
  auto refused = put_config(host, old_admin,
                            fmt::format("[gateway]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = "
                                        "\"127.0.0.1:{}\"\n",
                                        taken));
  EXPECT_EQ(refused.status, 409) << refused.body;
  EXPECT_NE(refused.body.find("Address already in use"), std::string::npos) << refused.body;
  EXPECT_NE(refused.body.find("nothing was changed"), std::string::npos) << refused.body;
  EXPECT_EQ(generation(host), before);
  EXPECT_EQ(http_get(old_admin, "/healthz").status, 200);
  EXPECT_EQ(read_file(dir / "mooring.toml").find(std::to_string(taken)), std::string::npos)
      << "a refused configuration was written to the file";

  // A move to a free port: 200 on the old connection, then the new port
  // serves, the lingering client is told 1001 and the old port is free.
  const auto original_text = read_file(dir / "mooring.toml");
  const auto move = move_to_a_free_port(host, old_admin, [](std::uint16_t free) {
    return fmt::format("[gateway]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:{}\"\n",
                       free);
  });
  const auto port = move.port;
  const auto& moved_text = move.text;
  const auto& moved = move.reply;
  ASSERT_EQ(moved.status, 200) << moved.body;
  EXPECT_TRUE(contains(changed_in(moved), "admin.listen")) << moved.body;
  const std::string new_admin = "127.0.0.1:" + std::to_string(port);
  EXPECT_EQ(http_get(new_admin, "/healthz").status, 200);
  EXPECT_TRUE(can_bind(port_of(old_admin))) << "the old admin port is still held";
  EXPECT_TRUE(poll_until(
      [&] {
        const auto ready = ready_file(dir.path());
        const auto* admin = ready.if_contains("admin");
        return admin && *admin == json::value(new_admin);
      },
      10s))
      << read_file(dir / "ready.json");
  while (lingering.read(10s)) {
  }
  EXPECT_EQ(lingering.close_code(), 1001);
  // The file was replaced, and the one before it kept.
  EXPECT_EQ(read_file(dir / "mooring.toml"), moved_text);
  EXPECT_EQ(read_file(dir / "mooring.toml.previous"), original_text);

  // An invalid file on SIGHUP: every problem logged, nothing changes.
  const auto serving = http_get(new_admin, "/api/status", token);
  ASSERT_EQ(serving.status, 200);
  const auto generation_before = json::parse(serving.body).at("generation").as_int64();
  write_file(dir / "mooring.toml",
             "[gateway]\nlisen = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:1\"\n"
             "[log]\nlevel = \"loud\"\n");
  host.process().signal(SIGHUP);
  ASSERT_TRUE(poll_until(
      [&] { return host.log().find("SIGHUP: 2 problem(s)") != std::string::npos; }, 10s))
      << host.log();
  const auto log = host.log();
  EXPECT_NE(log.find("mooring.toml:2: gateway.lisen: unknown key"), std::string::npos) << log;
  EXPECT_NE(log.find("mooring.toml:6: log.level"), std::string::npos) << log;
  const auto after = http_get(new_admin, "/api/status", token);
  ASSERT_EQ(after.status, 200);
  EXPECT_EQ(json::parse(after.body).at("generation").as_int64(), generation_before);
  EXPECT_EQ(http_get(new_admin, "/api/config", token).body, moved_text)
      << "/api/config shows the configuration being served";

  // POST /api/reload of a fixed file applies it.
  write_file(dir / "mooring.toml", moved_text + "[log]\nlevel = \"warn\"\n");
  auto reloaded = http_request(new_admin, http::verb::post, "/api/reload", "",
                               {{"Authorization", "Bearer " + token}});
  ASSERT_EQ(reloaded.status, 200) << reloaded.body;
  EXPECT_EQ(changed_in(reloaded), json::array{"log.level"});
  expect_clean_stop(host);
}

TEST(Reload, AMovedGatewayClosesOldConnectionsWith1001AndTheirRepliesWaitForThem) {
  TempDir dir;
  // 400 ms a word: the reply is under way for seconds after its first piece,
  // longer than any move takes (with the file written and synced), so it is
  // surely not whole before the old connection is closed. A reply written to
  // that connection would count as delivered.
  const std::string slow = "[provider.echo]\ntoken_delay = \"400ms\"\n";
  HostProcess host(MOORING_BINARY, dir.path(), slow);
  ASSERT_TRUE(host.started()) << host.log();
  const std::string old_gateway = host.gateway();

  ChatClient before;
  ASSERT_EQ(before.connect(old_gateway, "mover"), 101);
  const auto seq = say_and_get_seq(before, "a reply long enough to be cut in the middle", "long");
  before.read_until([&](const Frame& f) { return is_token_for(f, seq); });

  const auto move = move_to_a_free_port(host, host.admin(), [&](std::uint16_t free) {
    return fmt::format(
        "[gateway]\nlisten = \"127.0.0.1:{}\"\n[admin]\nlisten = \"127.0.0.1:0\"\n{}", free, slow);
  });
  const auto port = move.port;
  const auto& moved = move.reply;
  ASSERT_EQ(moved.status, 200) << moved.body;
  EXPECT_EQ(changed_in(moved), json::array{"gateway.listen"});
  EXPECT_EQ(before.read_until_closed(), 1001);
  EXPECT_TRUE(can_bind(port_of(old_gateway))) << "the old gateway port is still held";

  // On the new address the same user gets the reply that was cut, once.
  ChatClient after;
  ASSERT_EQ(after.connect("127.0.0.1:" + std::to_string(port), "mover"), 101);
  const auto reply = after.read_until([&](const Frame& f) { return is_chat_for(f, seq); });
  EXPECT_EQ(string_field(reply, "text"), "echo: a reply long enough to be cut in the middle");
  const auto next = say_and_get_seq(after, "still here?", "next");
  after.read_until([&](const Frame& f) { return is_chat_for(f, next); });
  EXPECT_EQ(std::count_if(after.received().begin(), after.received().end(),
                          [&](const Frame& f) { return is_chat_for(f, seq); }),
            1);
  after.close();
  expect_clean_stop(host);
}

// Two reloads of the file, the file rewritten after the first was sent: the
// reads run off the network thread and may end in either order, and the
// second request was sent after the rewrite, so the rewritten file is what
// is served once both have answered (an older read that ends last is
// dropped, its request told it was superseded).
TEST(Reload, OverlappingReloadsOfTheFileLeaveItsNewestVersionServed) {
  TempDir dir;
  HostProcess host(MOORING_BINARY, dir.path(), "");
  ASSERT_TRUE(host.started()) << host.log();
  const auto token = host.admin_token();
  auto text = [](int n) { return listeners + fmt::format("[chat]\nhistory_messages = {}\n", n); };
  auto reload = [&] { return reload_file(host, token); };
  // Replaced whole (renamed over), so no read sees a half-written file.
  auto replace = [&](const std::string& content) {
    write_file(dir / "mooring.toml.next", content);
    std::filesystem::rename(dir / "mooring.toml.next", dir / "mooring.toml");
  };
  // The first version is long, so its read tends to end after the second's.
  const std::string padding = "# " + std::string(900 * 1000, 'x') + "\n";
  for (int round = 0; round < 50; ++round) {
    replace(padding + text(2 * round + 1));
    auto first = std::async(std::launch::async, reload);
    replace(text(2 * round + 2));
    const auto second = reload();
    const auto earlier = first.get();
    // Either may reach the host first; the one that began later stands.
    for (const auto* reply : {&earlier, &second})
      ASSERT_TRUE(reply->status == 200 ||
                  (reply->status == 409 && reply->body.find("superseded") != std::string::npos))
          << reply->body;
    ASSERT_TRUE(earlier.status == 200 || second.status == 200);
    ASSERT_EQ(http_get(host.admin(), "/api/config", token).body, text(2 * round + 2))
        << "round " << round << ": the older version is served";
  }
  expect_clean_stop(host);
}

// The same, made certain: the first reload's read is held open (the file is
// a FIFO nobody writes yet) while the file is replaced and a second reload
// applies it; when the first read then ends, it is dropped, not applied.
TEST(Reload, AReadThatEndsAfterANewerReloadIsDroppedAsSuperseded) {
  TempDir dir;
  HostProcess host(MOORING_BINARY, dir.path(), "");
  ASSERT_TRUE(host.started()) << host.log();
  const auto token = host.admin_token();
  auto reload = [&] { return reload_file(host, token); };
  const auto older = listeners + "[chat]\nhistory_messages = 3\n";
  const auto newer = listeners + "[chat]\nhistory_messages = 4\n";
  const auto fifo = dir / "held.fifo";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  std::filesystem::remove(dir / "mooring.toml");
  std::filesystem::create_hard_link(fifo, dir / "mooring.toml");

  auto first = std::async(std::launch::async, reload);
  // Opening the FIFO for writing returns once the first reload has opened it.
  const int writer = ::open(fifo.c_str(), O_WRONLY);
  ASSERT_GE(writer, 0);
  write_file(dir / "mooring.toml.next", newer);
  std::filesystem::rename(dir / "mooring.toml.next", dir / "mooring.toml");
  const auto second = reload();
  EXPECT_EQ(second.status, 200) << second.body;
  ASSERT_EQ(::write(writer, older.data(), older.size()), static_cast<ssize_t>(older.size()));
  ::close(writer);
  const auto earlier = first.get();
  EXPECT_EQ(earlier.status, 409) << earlier.body;
  EXPECT_EQ(json::parse(earlier.body).at("error").at("code"), "superseded");
  EXPECT_EQ(http_get(host.admin(), "/api/config", token).body, newer);
  expect_clean_stop(host);
}

// Defect: the file replaced by a FIFO nobody writes held its reload's
// reading thread, and the reload, until the host stopped.
TEST(Reload, AFifoPutInTheFilesPlaceIsWaitedForSecondsNotForEver) {
  TempDir dir;
  HostProcess host(MOORING_BINARY, dir.path(), "");
  ASSERT_TRUE(host.started()) << host.log();
  const auto token = host.admin_token();
  auto reload = [&] { return reload_file(host, token); };
  const auto on_disk = read_file(dir / "mooring.toml");
  std::filesystem::remove(dir / "mooring.toml");
  ASSERT_EQ(::mkfifo((dir / "mooring.toml").c_str(), 0600), 0);

  const auto refused = reload();
  EXPECT_EQ(refused.status, 400) << refused.body;
  EXPECT_NE(refused.body.find("not a regular file"), std::string::npos) << refused.body;
  EXPECT_EQ(generation(host), 1);

  std::filesystem::remove(dir / "mooring.toml");
  write_file(dir / "mooring.toml", on_disk + "[chat]\nhistory_messages = 7\n");
  const auto applied = reload();
  EXPECT_EQ(applied.status, 200) << applied.body;
  EXPECT_EQ(generation(host), 2);
  expect_clean_stop(host);
}

// PUT /api/config keeps the file's previous version beside it, read as a
// reload reads the file. Defect: it was read without bounds: a FIFO in the
// file's place held the change, and every later one answered 409 "busy" until
// a restart; a file of 800 MiB was copied whole.
TEST(Reload, APutOverAFifoOrAHugeFileIsRefusedAtOnceAndTheNextOneApplies) {
  TempDir dir;
  HostProcess host(MOORING_BINARY, dir.path(), "");
  ASSERT_TRUE(host.started()) << host.log();
  const auto on_disk = read_file(dir / "mooring.toml");
  std::filesystem::remove(dir / "mooring.toml");
  ASSERT_EQ(::mkfifo((dir / "mooring.toml").c_str(), 0600), 0);
  const auto over_fifo = put_config(host, host.admin(), on_disk + "[chat]\nhistory_messages = 5\n");
  EXPECT_EQ(over_fifo.status, 409) << over_fifo.body;
  EXPECT_NE(over_fifo.body.find("is not a regular file"), std::string::npos) << over_fifo.body;

  std::filesystem::remove(dir / "mooring.toml");
  write_file(dir / "mooring.toml", on_disk + "# " + std::string(2 * 1024 * 1024, 'x') + "\n");
  const auto over_huge = put_config(host, host.admin(), on_disk + "[chat]\nhistory_messages = 6\n");
  EXPECT_EQ(over_huge.status, 409) << over_huge.body;
  EXPECT_NE(over_huge.body.find("is larger than 1048576 bytes, so its previous version cannot be "
                                "kept; nothing was written"),
            std::string::npos)
      << over_huge.body;
  EXPECT_FALSE(std::filesystem::exists(dir / "mooring.toml.previous"));
  EXPECT_EQ(generation(host), 1);

  write_file(dir / "mooring.toml", on_disk);
  const auto applied = put_config(host, host.admin(), on_disk + "[chat]\nhistory_messages = 7\n");
  EXPECT_EQ(applied.status, 200) << applied.body;
  EXPECT_EQ(generation(host), 2);
  EXPECT_EQ(read_file(dir / "mooring.toml.previous"), on_disk);
  expect_clean_stop(host);
}

TEST(Reload, AnInvalidConfigurationIsRefusedWithEveryProblemAndTheFileIsKept) {
  TempDir dir;
  HostProcess host(MOORING_BINARY, dir.path(), "");
  ASSERT_TRUE(host.started()) << host.log();
  const auto on_disk = read_file(dir / "mooring.toml");

  auto refused = put_config(host, host.admin(),
                            listeners + "[provider]\nmax_attempts = 0\nbackof_max = \"1s\"\n");
  ASSERT_EQ(refused.status, 400) << refused.body;
  const auto body = json::parse(refused.body).as_object();
  const auto& problems = body.at("error").at("problems").as_array();
  ASSERT_EQ(problems.size(), 2u) << refused.body;
  EXPECT_EQ(problems[0].at("key"), "provider.max_attempts");
  EXPECT_EQ(problems[0].at("line").as_int64(), 6);
  EXPECT_EQ(problems[1].at("key"), "provider.backof_max");
  EXPECT_EQ(read_file(dir / "mooring.toml"), on_disk);
  EXPECT_FALSE(std::filesystem::exists(dir / "mooring.toml.previous"));
  EXPECT_EQ(generation(host), 1);

  // data.dir cannot move under an open database: 409, with the way out.
  auto conflict = put_config(host, host.admin(), listeners + "[data]\ndir = \"elsewhere\"\n");
  EXPECT_EQ(conflict.status, 409) << conflict.body;
  EXPECT_NE(conflict.body.find("restart mooring"), std::string::npos) << conflict.body;

  // Without a token, nothing is applied at all.
  auto anonymous = http_request(host.admin(), http::verb::put, "/api/config", listeners);
  EXPECT_EQ(anonymous.status, 401);
  EXPECT_EQ(generation(host), 1);
  expect_clean_stop(host);
}

TEST(Reload, TheGenerationGuardsAgainstLostUpdatesAndANewAdminTokenEndsOldSubscriptions) {
  TempDir dir;
  HostProcess host(MOORING_BINARY, dir.path(), "");
  ASSERT_TRUE(host.started()) << host.log();
  const auto token = host.admin_token();
  const auto bearer = std::vector<std::pair<std::string, std::string>>{{"Authorization", "Bearer " + token}};

  // GET /api/config names the generation it shows; a PUT based on an older one is refused.
  const auto shown = http_get(host.admin(), "/api/config", token);
  ASSERT_EQ(shown.status, 200);
  ASSERT_EQ(shown.headers.at("etag"), "\"1\"");
  auto first = http_request(host.admin(), http::verb::put, "/api/config",
                            shown.body + "[log]\nlevel = \"warn\"\n",
                            {bearer[0], {"If-Match", "\"1\""}});
  ASSERT_EQ(first.status, 200) << first.body;
  const auto body = json::parse(first.body).as_object();
  EXPECT_EQ(body.at("listen").at("admin"), json::value(host.admin())) << first.body;
  EXPECT_EQ(body.at("listen").at("gateway"), json::value(host.gateway())) << first.body;
  auto stale = http_request(host.admin(), http::verb::put, "/api/config",
                            shown.body + "[log]\nlevel = \"debug\"\n",
                            {bearer[0], {"If-Match", "\"1\""}});
  EXPECT_EQ(stale.status, 412) << stale.body;
  EXPECT_NE(stale.body.find("generation 2 now, not 1"), std::string::npos) << stale.body;
  EXPECT_EQ(generation(host), 2);
  // "*" matches whatever is served (RFC 9110); a tag that is not a generation is refused.
  auto any = http_request(host.admin(), http::verb::put, "/api/config",
                          shown.body + "[log]\nlevel = \"warn\"\n", {bearer[0], {"If-Match", "*"}});
  EXPECT_EQ(any.status, 200) << any.body;
  EXPECT_EQ(generation(host), 3);
  auto odd = http_request(host.admin(), http::verb::put, "/api/config",
                          shown.body + "[log]\nlevel = \"warn\"\n", {bearer[0], {"If-Match", "W/\"3\""}});
  EXPECT_EQ(odd.status, 400) << odd.body;
  EXPECT_NE(odd.body.find("bad_if_match"), std::string::npos) << odd.body;

  // An empty body would reset every key, tokens included: refused.
  auto empty = http_request(host.admin(), http::verb::put, "/api/config", "\n", bearer);
  EXPECT_EQ(empty.status, 400) << empty.body;
  EXPECT_NE(empty.body.find("empty_config"), std::string::npos) << empty.body;

  // A new admin token: subscribers admitted with the old one are closed (1008),
  // and only the new one opens the API.
  WsClient subscriber;
  ASSERT_EQ(subscriber.connect(host.admin(), "/api/events", bearer), 101);
  auto changed = put_config(host, host.admin(), listeners + "token = \"the-new-admin-token\"\n");
  ASSERT_EQ(changed.status, 200) << changed.body;
  EXPECT_TRUE(contains(changed_in(changed), "admin.token")) << changed.body;
  while (subscriber.read(10s)) {
  }
  EXPECT_EQ(subscriber.close_code(), 1008);
  EXPECT_EQ(http_get(host.admin(), "/api/status", token).status, 401);
  EXPECT_EQ(http_get(host.admin(), "/api/status", "the-new-admin-token").status, 200);
  expect_clean_stop(host);
}

// The addresses a host listens on and its data directory, written another way
// ("localhost" for 127.0.0.1, the port it got for port 0, "./mooring-data"),
// are no change: the reload applies, no socket is bound twice, and a chat
// connection stays open. A real change is still refused or made as before.
TEST(Reload, TheSameAddressOrDirectoryWrittenAnotherWayIsNoMove) {
  TempDir dir;
  HostProcess host(MOORING_BINARY, dir.path(), "");
  ASSERT_TRUE(host.started()) << host.log();
  ChatClient client;
  ASSERT_EQ(client.connect(host.gateway(), "steady"), 101);
  const auto gateway_port = port_of(host.gateway());
  const auto admin_port = port_of(host.admin());
  auto same = put_config(host, host.admin(),
                         fmt::format("[data]\ndir = \"./mooring-data/\"\n[gateway]\nlisten = "
                                     "\"localhost:{}\"\n[admin]\nlisten = \"127.0.0.1:{}\"\n",
                                     gateway_port, admin_port));
  ASSERT_EQ(same.status, 200) << same.body;
  const auto body = json::parse(same.body).as_object();
  EXPECT_EQ(body.at("listen").at("gateway"), json::value(host.gateway())) << same.body;
  EXPECT_EQ(body.at("listen").at("admin"), json::value(host.admin())) << same.body;
  // The connection was not moved: it still answers.
  const auto seq = say_and_get_seq(client, "still here?", "q");
  client.read_until([&](const Frame& f) { return is_chat_for(f, seq); });
  // Port 0 again: the port it has is kept.
  auto any = put_config(host, host.admin(), listeners);
  ASSERT_EQ(any.status, 200) << any.body;
  EXPECT_EQ(json::parse(any.body).at("listen").at("gateway"), json::value(host.gateway()));
  const auto again = say_and_get_seq(client, "and now?", "r");
  client.read_until([&](const Frame& f) { return is_chat_for(f, again); });
  // Another directory is still refused.
  auto other = put_config(host, host.admin(), "[data]\ndir = \"elsewhere\"\n" + listeners);
  EXPECT_EQ(other.status, 409) << other.body;
  EXPECT_NE(other.body.find("data.dir cannot change"), std::string::npos) << other.body;
  expect_clean_stop(host, {&client});
}

// With admin.token left empty the token lives in <data.dir>/admin.token: an
// operator who rewrites that file (or deletes it, for a new one) and sends
// SIGHUP rotates the token, as a new admin.token in the file would.
TEST(Reload, ARewrittenOrDeletedTokenFileRotatesTheAdminTokenOnSighup) {
  TempDir dir;
  HostProcess host(MOORING_BINARY, dir.path(), "");
  ASSERT_TRUE(host.started()) << host.log();
  const auto old_token = host.admin_token();
  const auto token_file = dir.path() / "mooring-data" / "admin.token";
  const std::string rotated = "a-rotated-admin-token-of-some-length";
  write_file(token_file, rotated + "\n");
  host.process().signal(SIGHUP);
  ASSERT_TRUE(poll_until([&] { return host.log().find("admin.token changed") != std::string::npos; },
                         10s))
      << host.log();
  EXPECT_EQ(http_get(host.admin(), "/api/status", old_token).status, 401);
  EXPECT_EQ(http_get(host.admin(), "/api/status", rotated).status, 200);

  // The same file again: nothing changes.
  host.process().signal(SIGHUP);
  ASSERT_TRUE(poll_until([&] { return generation(host) == 3; }, 10s)) << host.log();
  EXPECT_NE(host.log().find("generation 3 applied: no changes"), std::string::npos) << host.log();

  // Deleted, then a dry run: it writes no file (its token would not be the
  // one in use) and changes nothing.
  std::filesystem::remove(token_file);
  const auto text = http_get(host.admin(), "/api/config", rotated);
  ASSERT_EQ(text.status, 200) << text.body;
  const auto dry = http_request(host.admin(), http::verb::post, "/api/config/validate", text.body,
                                {{"Authorization", "Bearer " + rotated}});
  EXPECT_EQ(dry.status, 200) << dry.body;
  EXPECT_FALSE(std::filesystem::exists(std::filesystem::symlink_status(token_file)));
  EXPECT_FALSE(std::filesystem::exists(token_file.string() + ".tmp"));
  EXPECT_EQ(http_get(host.admin(), "/api/status", rotated).status, 200);

  // A new file that cannot be written (its staging place is taken by a
  // directory): the reload is refused and the token in use stays.
  const auto staging = token_file.string() + ".tmp";
  std::filesystem::create_directory(staging);
  host.process().signal(SIGHUP);
  ASSERT_TRUE(poll_until(
      [&] {
        return host.log().find("configuration not applied: admin: cannot write "
                               "mooring-data/admin.token.tmp") != std::string::npos;
      },
      10s))
      << host.log();
  EXPECT_EQ(http_get(host.admin(), "/api/status", rotated).status, 200);
  EXPECT_FALSE(std::filesystem::exists(std::filesystem::symlink_status(token_file)));
  std::filesystem::remove(staging);

  // Deleted, then a reload: a new token is made, with the file's mode, and applies.
  host.process().signal(SIGHUP);
  std::string made;
  ASSERT_TRUE(poll_until(
      [&] {
        made = host.admin_token();
        return made.size() >= 16 && http_get(host.admin(), "/api/status", made).status == 200;
      },
      10s))
      << host.log();
  EXPECT_NE(made, rotated);
  EXPECT_EQ(http_get(host.admin(), "/api/status", rotated).status, 401);
  EXPECT_EQ(std::filesystem::status(token_file).permissions() & std::filesystem::perms::all,
            std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);

  // One too short to be a token: the reload is refused and the token stays.
  write_file(token_file, "short\n");
  host.process().signal(SIGHUP);
  ASSERT_TRUE(poll_until([&] { return host.log().find("holds no usable token") != std::string::npos; },
                         10s))
      << host.log();
  EXPECT_EQ(http_get(host.admin(), "/api/status", made).status, 200);
  write_file(token_file, made + "\n");
  expect_clean_stop(host);
}

}  // namespace
}  // namespace mooring::test
