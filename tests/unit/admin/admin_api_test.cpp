#include "admin/admin_api.hpp"

#include "admin/token.hpp"
#include "net/http_server.hpp"
#include "support/clients.hpp"
#include "support/metrics.hpp"
#include "support/process.hpp"
#include "support/server_thread.hpp"
#include "support/wait.hpp"

#include <gtest/gtest.h>

#include <sys/stat.h>

namespace mooring::admin {
namespace {

using namespace std::chrono_literals;
namespace json = boost::json;

const std::string token = "0123456789abcdef0123456789abcdef";

struct AdminFixture {
  test::ServerThread thread;
  std::shared_ptr<EventHub> events;
  std::shared_ptr<const net::Router> router;
  bool is_ready = true;

  AdminFixture() {
    events = thread.run([&] { return std::make_shared<EventHub>(thread.io().get_executor()); });
    router = make_admin_router(AdminContext{
        token, [] { return json::object{{"components", json::array{}}}; },
        [this] { return is_ready; }, events, net::WsOptions{}});
  }
  ~AdminFixture() {
    thread.run([&] {
      events.reset();
      return true;
    });
  }

  std::unique_ptr<net::HttpServer> start(std::uint16_t port, std::string* address) {
    return thread.run([&] {
      auto server = std::make_unique<net::HttpServer>(thread.supervisor(), "admin", router);
      auto acceptor = net::open_listener(thread.io().get_executor(), {"127.0.0.1", port}, "admin");
      if (!acceptor) return std::unique_ptr<net::HttpServer>();
      server->start(std::move(*acceptor));
      *address = net::endpoint_string(*server->local_endpoint());
      return server;
    });
  }

  void stop(net::HttpServer& server, runtime::Duration deadline) {
    thread.call([](net::HttpServer& s, runtime::Duration d) -> awaitable<bool> {
      co_await s.stop(runtime::Deadline::after(d));
      co_return true;
    }(server, deadline));
  }
};

TEST(AdminApi, ProbesAreOpenAndTheApiNeedsTheToken) {
  AdminFixture admin;
  std::string address;
  auto server = admin.start(0, &address);
  ASSERT_TRUE(server);

  EXPECT_EQ(test::http_get(address, "/healthz").status, 200);
  EXPECT_EQ(test::http_get(address, "/readyz").status, 200);
  // Monitors that check with HEAD get the same answers.
  EXPECT_EQ(test::http_request(address, net::http::verb::head, "/healthz").status, 200);
  EXPECT_EQ(test::http_request(address, net::http::verb::head, "/readyz").status, 200);
  admin.thread.run([&] { return admin.is_ready = false; });
  EXPECT_EQ(test::http_request(address, net::http::verb::head, "/readyz").status, 503);
  auto not_ready = test::http_get(address, "/readyz");
  EXPECT_EQ(not_ready.status, 503);
  EXPECT_TRUE(json::parse(not_ready.body).as_object().contains("components"));

  auto missing = test::http_get(address, "/api/status");
  EXPECT_EQ(missing.status, 401);
  EXPECT_EQ(json::parse(missing.body).at("error").at("code"), "unauthorized");
  const char* const wrong_tokens = R"(mooring_wrong_tokens_total{listener="admin"})";
  const auto wrong_before = test::metric_value(wrong_tokens);
  EXPECT_EQ(test::http_get(address, "/api/status", "not-the-token").status, 401);
  EXPECT_EQ(test::metric_value(wrong_tokens), wrong_before + 1) << "a guess is counted";
  EXPECT_EQ(test::http_get(address, "/api/status", token).status, 200);
  // A token in the query string is taken by the events stream only, and is
  // refused beside a right header too (it used to pass then).
  EXPECT_EQ(test::http_get(address, "/api/status?token=" + token).status, 401);
  const auto both = test::http_get(address, "/api/status?token=" + token, token);
  EXPECT_EQ(both.status, 401);
  EXPECT_NE(both.body.find("?token= is accepted only by /api/events"), std::string::npos)
      << both.body;
  EXPECT_EQ(test::metric_value(wrong_tokens), wrong_before + 1) << "not a guess";

  test::WsClient anonymous;
  EXPECT_EQ(anonymous.connect(address, "/api/events"), 401);
  admin.stop(*server, 1s);
}

// Defect: the admin listener answered a request addressed to any name, so a
// page of another site whose name it pointed at 127.0.0.1 (DNS rebinding)
// read /metrics, /readyz's status document and the panel, and could guess
// tokens. Only IP addresses, localhost and admin.allowed_hosts are answered.
TEST(AdminApi, OnlyRequestsAddressedToAnAddressLocalhostOrAnAllowedNameAreAnswered) {
  AdminFixture admin;
  AdminContext context{token, [] { return json::object{{"components", json::array{}}}; },
                       [] { return true; }, admin.events, net::WsOptions{}};
  context.allowed_hosts = {"panel.example"};
  admin.router = make_admin_router(std::move(context));
  std::string address;
  auto server = admin.start(0, &address);
  ASSERT_TRUE(server);
  const auto port = address.substr(address.rfind(':'));
  const auto get = [&](const std::string& target, const std::string& host) {
    return test::http_request(address, net::http::verb::get, target, "",
                              {{"Host", host}, {"Authorization", "Bearer " + token}});
  };
  for (const std::string target : {"/healthz", "/readyz", "/metrics", "/", "/api/status"}) {
    for (const std::string& host :
         std::vector<std::string>{"rebind.example" + port, "127.0.0.1.rebind.example",
                                  "evil.example", "localhost.evil.example" + port}) {
      const auto refused = get(target, host);
      EXPECT_EQ(refused.status, 421) << target << " for " << host;
      EXPECT_NE(refused.body.find("admin.allowed_hosts"), std::string::npos) << refused.body;
    }
    for (const std::string& host :
         std::vector<std::string>{address, "localhost" + port, "LOCALHOST", "[::1]" + port,
                                  "panel.example", "Panel.Example" + port})
      EXPECT_EQ(get(target, host).status, 200) << target << " for " << host;
  }
  test::WsClient events;
  EXPECT_EQ(events.connect(address, "/api/events?token=" + token, {{"Host", "evil.example"}}),
            421);
  admin.stop(*server, 1s);
}

TEST(AdminApi, EventsStreamPublishedObjects) {
  AdminFixture admin;
  std::string address;
  auto server = admin.start(0, &address);
  test::WsClient client;
  ASSERT_EQ(client.connect(address, "/api/events?token=" + token), 101);
  ASSERT_TRUE(test::poll_until([&] { return admin.thread.run([&] { return admin.events->subscribers(); }) == 1; }, 10s));
  admin.thread.run([&] {
    admin.events->publish({{"type", "component"}, {"name", "admin"}, {"state", "running"}});
    return true;
  });
  auto message = client.read();
  ASSERT_TRUE(message);
  EXPECT_EQ(json::parse(*message).at("state"), "running");
  admin.stop(*server, 1s);
}

// Defect: 256 event streams took every connection the admin server keeps,
// and /healthz answered 503 (a liveness probe would restart a sound host).
// At most 64 are open at once; the next is refused, and requests go on.
TEST(AdminApi, EventStreamsBeyondTheirBoundAreRefusedAndProbesStillAnswer) {
  AdminFixture admin;
  std::string address;
  auto server = admin.start(0, &address);
  ASSERT_TRUE(server);
  std::vector<std::unique_ptr<test::WsClient>> streams;
  for (int i = 0; i < 64; ++i) {
    streams.push_back(std::make_unique<test::WsClient>());
    ASSERT_EQ(streams.back()->connect(address, "/api/events?token=" + token), 101) << i;
  }
  ASSERT_TRUE(test::poll_until(
      [&] { return admin.thread.run([&] { return admin.events->subscribers(); }) == 64; }, 10s));
  test::WsClient one_more;
  EXPECT_EQ(one_more.connect(address, "/api/events?token=" + token), 503);
  EXPECT_EQ(test::http_get(address, "/healthz").status, 200);
  EXPECT_EQ(test::http_get(address, "/api/status", token).status, 200);
  streams.pop_back();
  ASSERT_TRUE(test::poll_until(
      [&] { return admin.thread.run([&] { return admin.events->subscribers(); }) == 63; }, 10s));
  test::WsClient again;
  EXPECT_EQ(again.connect(address, "/api/events?token=" + token), 101);
  streams.clear();
  again.close();
  admin.stop(*server, 1s);
}

// A store in `dir`, opened on the admin's thread; null (and a failure) when it cannot be.
std::unique_ptr<store::Store> open_store(AdminFixture& admin, const test::TempDir& dir) {
  auto opened = admin.thread.call(
      store::Store::open(admin.thread.io().get_executor(), (dir / "data").string()));
  if (!opened) {
    ADD_FAILURE() << opened.error().message;
    return nullptr;
  }
  return std::move(*opened);
}

// The admin's routes, reading sessions and messages from `store`.
void route_to(AdminFixture& admin, store::Store& store) {
  admin.router = make_admin_router(AdminContext{
      token, [] { return json::object{}; }, [] { return true; }, admin.events, net::WsOptions{},
      &store});
}

// The web panel asks for a session's messages with the id percent-encoded
// (encodeURIComponent): "qq:1:private:42" arrives as "qq%3A1%3Aprivate%3A42".
TEST(AdminApi, SessionMessagesTakeAPercentEncodedSessionId) {
  AdminFixture admin;
  test::TempDir dir;
  auto store = open_store(admin, dir);
  ASSERT_NE(store, nullptr);
  ASSERT_TRUE(admin.thread.call(store->append_user_message("qq:1:private:42", "hello 100%")));
  ASSERT_TRUE(admin.thread.call(store->append_user_message("a%b", "percent in the id")));
  route_to(admin, *store);
  std::string address;
  auto server = admin.start(0, &address);
  ASSERT_TRUE(server);

  for (const std::string path : {"qq%3A1%3Aprivate%3A42", "qq:1:private:42", "qq%3a1%3aprivate%3A42"}) {
    auto reply = test::http_get(address, "/api/sessions/" + path + "/messages", token);
    ASSERT_EQ(reply.status, 200) << path << ": " << reply.body;
    const auto body = json::parse(reply.body);
    EXPECT_EQ(body.at("user_id"), "qq:1:private:42") << path;
    ASSERT_EQ(body.at("messages").as_array().size(), 1u) << path;
    EXPECT_EQ(body.at("messages").at(0).at("content"), "hello 100%") << path;
  }
  auto percent = json::parse(test::http_get(address, "/api/sessions/a%25b/messages", token).body);
  EXPECT_EQ(percent.at("messages").as_array().size(), 1u);

  // A segment that is not valid percent-encoding is refused, not looked up;
  // so is one that decodes to bytes of no UTF-8 character, which the answer
  // used to echo as they were (JSON no strict parser reads).
  for (const std::string path : {"a%b", "%", "%zz", "%4", "%ff%fe", "a%ED%A0%80"}) {
    auto reply = test::http_get(address, "/api/sessions/" + path + "/messages", token);
    EXPECT_EQ(reply.status, 400) << path;
    EXPECT_EQ(json::parse(reply.body).at("error").at("code"), "bad_user") << path;
  }
  admin.stop(*server, 1s);
  admin.thread.run([&] {
    server.reset();
    return true;
  });
  store.reset();
}

// A chat user decides how large messages are: 1,000 of 1 MiB on one page
// would be 1 GB read, copied and sent for one click in the panel (a page
// peaked at 680 MiB of RSS). A page stops at 4 MiB, says there is more, and
// the next one goes on from its oldest message. Bad numbers are refused.
TEST(AdminApi, SessionMessagesComeInPagesOfBoundedBytes) {
  AdminFixture admin;
  test::TempDir dir;
  auto store = open_store(admin, dir);
  ASSERT_NE(store, nullptr);
  const std::string large(1024 * 1024, 'x');
  for (int i = 0; i < 10; ++i)
    ASSERT_TRUE(admin.thread.call(store->append_user_message("big", std::to_string(i) + large)));
  route_to(admin, *store);
  std::string address;
  auto server = admin.start(0, &address);
  ASSERT_TRUE(server);

  std::vector<char> firsts;  // each message's first character, newest page first
  std::string before;
  for (int page = 0; page < 10; ++page) {
    auto reply = test::http_get(address, "/api/sessions/big/messages?limit=1000" + before, token);
    ASSERT_EQ(reply.status, 200) << reply.body.substr(0, 200);
    EXPECT_LE(reply.body.size(), 5u * 1024 * 1024) << "page " << page;
    const auto body = json::parse(reply.body);
    const auto& messages = body.at("messages").as_array();
    ASSERT_FALSE(messages.empty());
    for (auto it = messages.rbegin(); it != messages.rend(); ++it)
      firsts.push_back(it->at("content").as_string()[0]);
    if (!body.at("more").as_bool()) break;
    before = "&before=" + std::to_string(messages.front().at("seq").as_int64());
  }
  EXPECT_EQ(std::string(firsts.begin(), firsts.end()), "9876543210") << "every message, once";

  for (const std::string query : {"limit=-1", "limit=0", "limit=abc", "limit=", "before=abc",
                                  "before=-5", "limit=1e3"}) {
    auto reply = test::http_get(address, "/api/sessions/big/messages?" + query, token);
    EXPECT_EQ(reply.status, 400) << query;
    EXPECT_EQ(json::parse(reply.body).at("error").at("code"), "bad_query") << query;
  }
  EXPECT_EQ(test::http_get(address, "/api/sessions?limit=x", token).status, 400);
  EXPECT_EQ(test::http_get(address, "/api/sessions?offset=-1", token).status, 400);
  // Beyond the most a page holds is the most, as before.
  EXPECT_EQ(test::http_get(address, "/api/sessions?limit=99999999999999999999", token).status, 200);
  admin.stop(*server, 1s);
  admin.thread.run([&] {
    server.reset();
    return true;
  });
  store.reset();
}

// Seed 000, two hundred times over: stop the admin server while an events
// client lingers (never reads, never closes); every stop returns, the same port
// binds again at once, and no descriptor is left behind.
TEST(AdminApi, TwoHundredStopStartCyclesWithALingeringEventsClient) {
  AdminFixture admin;
  std::string address;
  auto server = admin.start(0, &address);
  ASSERT_TRUE(server);
  const auto port = static_cast<std::uint16_t>(std::stoi(test::split_address(address).second));
  admin.stop(*server, 50ms);
  admin.thread.run([&] {
    server.reset();
    return true;
  });
  const auto baseline = test::open_descriptors();

  for (int cycle = 0; cycle < 200; ++cycle) {
    server = admin.start(port, &address);
    ASSERT_TRUE(server) << "cycle " << cycle << ": the port did not bind again at once";
    test::WsClient lingering;
    ASSERT_EQ(lingering.connect(address, "/api/events?token=" + token), 101);
    ASSERT_TRUE(test::poll_until(
        [&] { return admin.thread.run([&] { return server->connections(); }) == 1; }, 10s));
    admin.thread.run([&] {
      admin.events->publish({{"type", "log"}, {"line", std::string(1000, 'x')}});
      return true;
    });
    admin.stop(*server, 50ms);  // the call itself fails the test if stop() hangs
    EXPECT_EQ(admin.thread.run([&] { return server->connections(); }), 0u);
    admin.thread.run([&] {
      server.reset();
      return true;
    });
  }
  // No descriptor outlives its cycle (one the runtime opened lazily before the
  // baseline may have closed since: never more than before).
  std::size_t now = 0;
  EXPECT_TRUE(test::poll_until([&] { return (now = test::open_descriptors()) <= baseline; }, 5s))
      << now << " descriptors open, " << baseline << " before the cycles";
}

TEST(AdminToken, GeneratedOncePrivateAndReused) {
  test::TempDir dir;
  auto first = resolve_admin_token("", dir.path().string());
  ASSERT_TRUE(first.has_value()) << first.error();
  EXPECT_EQ(first->token.size(), 64u);
  EXPECT_EQ(first->path, (dir / "admin.token").string());
  struct stat st {};
  ASSERT_EQ(::stat(first->path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  auto second = resolve_admin_token("", dir.path().string());
  ASSERT_TRUE(second.has_value());
  EXPECT_EQ(second->token, first->token);

  auto configured = resolve_admin_token("from-config-token", dir.path().string());
  ASSERT_TRUE(configured.has_value());
  EXPECT_EQ(configured->token, "from-config-token");
  EXPECT_TRUE(configured->path.empty());

  test::write_file(dir / "admin.token", "short\n");
  auto broken = resolve_admin_token("", dir.path().string());
  ASSERT_FALSE(broken.has_value());
  EXPECT_NE(broken.error().find("delete it"), std::string::npos);
}

// The token file is read at start and at every reload: whatever an operator
// (or a mistake) put there is refused with the way out, never waited on and
// never taken as a token no client could present.
TEST(AdminToken, AFileThatCannotHoldAUsableTokenIsRefusedWithoutBlocking) {
  test::TempDir dir;
  const auto path = dir / "admin.token";
  const auto refused = [&](std::string_view expected) {
    auto result = resolve_admin_token("", dir.path().string());
    ASSERT_FALSE(result.has_value()) << "accepted: " << result->token.size() << " characters";
    EXPECT_NE(result.error().find(expected), std::string::npos) << result.error();
    EXPECT_NE(result.error().find("delete it"), std::string::npos) << result.error();
  };
  // A FIFO would block a plain open until a writer came.
  ASSERT_EQ(::mkfifo(path.c_str(), 0600), 0);
  refused("is not a regular file");
  std::filesystem::remove(path);
  std::filesystem::create_directory(path);
  refused("is not a regular file");
  std::filesystem::remove(path);
  test::write_file(path, std::string(13 * 1024 * 1024, 'k'));
  refused("is 13631488 bytes");
  test::write_file(path, std::string(4097, 'k'));
  refused("is 4097 bytes");
  test::write_file(path, "");
  refused("holds no usable token");
  test::write_file(path, "first-line-of-the-token\nsecond\n");
  refused("a line break");
  test::write_file(path, std::string("a-token-with-a-") + '\x01' + "-control-character\n");
  refused("U+0001");
  test::write_file(path, std::string("a-token-with-invalid-utf-8-") + "\xff\xfe" + "-in-it\n");
  refused("non-ASCII character at character 28");
  std::filesystem::remove(path);
  // A link to nothing is named as such; nothing is created where it points.
  std::filesystem::create_symlink(dir / "nowhere", path);
  refused("is a symbolic link to a file that does not exist");
  EXPECT_FALSE(std::filesystem::exists(dir / "nowhere"));
  std::filesystem::remove(path);
  // The largest file taken: one line of 4,095 characters and its line break.
  test::write_file(path, std::string(4095, 't') + "\n");
  auto longest = resolve_admin_token("", dir.path().string());
  ASSERT_TRUE(longest.has_value()) << longest.error();
  EXPECT_EQ(longest->token.size(), 4095u);
  test::write_file(path, "  a-good-token-between-spaces  \n");
  auto fine = resolve_admin_token("", dir.path().string());
  ASSERT_TRUE(fine.has_value()) << fine.error();
  EXPECT_EQ(fine->token, "a-good-token-between-spaces");
}

}  // namespace
}  // namespace mooring::admin
