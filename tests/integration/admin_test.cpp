// The admin listener of the real binary: it survives a taken port and comes up
// by itself when the port frees (seed 000), guards /api with the token (before
// reading a body, and before asking for one with 100 Continue), stays
// reachable for the operator however many connections others park or stall
// on it, and streams live events.
#include "net/listener.hpp"
#include "support/clients.hpp"
#include "support/process.hpp"
#include "support/wait.hpp"

#include <boost/json.hpp>
#include <gtest/gtest.h>

#include <fmt/format.h>

#include <array>
#include <csignal>

namespace mooring::test {
namespace {

namespace json = boost::json;

std::optional<json::object> read_ready(const std::filesystem::path& path) {
  auto text = read_file(path);
  if (text.empty()) return std::nullopt;
  return json::parse(text).as_object();
}

std::string read_token(const TempDir& dir) {
  auto token = read_file(dir / "mooring-data" / "admin.token");
  token.erase(token.find_last_not_of('\n') + 1);
  return token;
}

// The value of one sample in a Prometheus text ("name{labels}"); -1 if absent.
double sample_value(const std::string& text, const std::string& sample) {
  const auto at = text.find("\n" + sample + " ");
  if (at == std::string::npos) return -1;
  return std::stod(text.substr(at + sample.size() + 2));
}


// Starts the host with both listeners on port 0 and waits for the admin's address.
std::string start_admin(ChildProcess& host, const TempDir& dir) {
  if (!poll_until([&] {
        auto ready = read_ready(dir / "ready.json");
        return (ready && ready->contains("admin")) || !host.running();
      }, 20s) || !host.running())
    throw std::runtime_error("the host did not come up: " + host.stderr_text());
  return std::string(read_ready(dir / "ready.json")->at("admin").as_string());
}

TEST(Admin, ATakenPortDoesNotKillTheHostAndTheAdminComesUpWhenItFrees) {
  asio::io_context io;
  auto squatter = net::open_listener(io.get_executor(), {"127.0.0.1", 0}, "squatter");
  ASSERT_TRUE(squatter.has_value());
  const auto port = squatter->local_endpoint().port();
  const std::string address = "127.0.0.1:" + std::to_string(port);

  TempDir dir;
  write_file(dir / "mooring.toml", "[gateway]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"" +
                                       address + "\"\n");
  ChildProcess host(MOORING_BINARY, {"serve", "--ready-file", (dir / "ready.json").string()},
                    dir.path());
  ASSERT_TRUE(poll_until(
      [&] { return host.stderr_text().find("cannot listen on") != std::string::npos; }, 20s))
      << host.stderr_text();
  EXPECT_NE(host.stderr_text().find("admin: cannot listen on " + address +
                                    ": Address already in use; retrying in 1s"),
            std::string::npos)
      << host.stderr_text();
  EXPECT_TRUE(host.running());

  squatter->close();
  ASSERT_TRUE(poll_until(
      [&] {
        auto ready = read_ready(dir / "ready.json");
        return ready && ready->contains("admin");
      },
      20s))
      << host.stderr_text();
  EXPECT_EQ(read_ready(dir / "ready.json")->at("admin").as_string(), address);

  auto status = http_get(address, "/api/status", read_token(dir));
  ASSERT_EQ(status.status, 200);
  json::object admin;
  const auto document = json::parse(status.body);
  for (const auto& component : document.at("components").as_array())
    if (component.at("name") == "admin") admin = component.as_object();
  ASSERT_FALSE(admin.empty()) << status.body;
  EXPECT_EQ(admin.at("state"), "running");
  EXPECT_GE(admin.at("start_attempts").to_number<std::uint64_t>(), 2u);
  EXPECT_NE(std::string(admin.at("last_error").as_string()).find("Address already in use"),
            std::string::npos);
  auto history = admin.at("history").as_array();
  ASSERT_GE(history.size(), 2u);
  EXPECT_NE(std::string(history.front().as_string()).find("bind failed"), std::string::npos);
  EXPECT_NE(std::string(history.back().as_string()).find("listening on " + address),
            std::string::npos);

  // The recovery is logged once.
  const auto log = host.stderr_text();
  const auto first = log.find("(bound after");
  ASSERT_NE(first, std::string::npos) << log;
  EXPECT_EQ(log.find("(bound after", first + 1), std::string::npos);

  host.signal(SIGTERM);
  EXPECT_EQ(host.wait_exit(20s), 0);
}

TEST(Admin, TheTokenGuardsTheApiAndEventsStreamLive) {
  TempDir dir;
  write_file(dir / "mooring.toml",
             "[gateway]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n");
  ChildProcess host(MOORING_BINARY, {"serve", "--ready-file", (dir / "ready.json").string()},
                    dir.path());
  ASSERT_TRUE(poll_until([&] {
    auto ready = read_ready(dir / "ready.json");
    return (ready && ready->contains("admin")) || !host.running();
  }, 20s));
  const std::string address(read_ready(dir / "ready.json")->at("admin").as_string());
  const auto token = read_token(dir);

  auto anonymous = http_get(address, "/api/status");
  EXPECT_EQ(anonymous.status, 401);
  EXPECT_EQ(json::parse(anonymous.body).at("error").at("code"), "unauthorized");
  EXPECT_EQ(http_get(address, "/api/status", "wrong").status, 401);
  EXPECT_EQ(http_get(address, "/api/status", token).status, 200);
  auto missing = http_get(address, "/no/such/page");
  EXPECT_EQ(missing.status, 404);
  EXPECT_EQ(json::parse(missing.body).at("error").at("code"), "not_found");
  EXPECT_EQ(http_get(address, "/readyz").status, 200);

  // The rest of the admin API answers with the token.
  auto metrics = http_get(address, "/metrics");
  EXPECT_EQ(metrics.status, 200);
  EXPECT_NE(metrics.body.find("mooring_up 1"), std::string::npos) << metrics.body;
  EXPECT_NE(metrics.body.find("mooring_component_up{component=\"admin\"} 1"), std::string::npos);
  auto config = http_get(address, "/api/config", token);
  EXPECT_EQ(config.status, 200);
  EXPECT_NE(config.body.find("[admin]"), std::string::npos);
  EXPECT_EQ(http_get(address, "/api/config").status, 401);
  auto sessions = http_get(address, "/api/sessions", token);
  EXPECT_EQ(sessions.status, 200);
  EXPECT_TRUE(json::parse(sessions.body).at("sessions").as_array().empty());
  EXPECT_EQ(http_get(address, "/api/sessions/nobody/messages", token).status, 200);
  auto tasks = http_get(address, "/api/tasks", token);
  ASSERT_EQ(tasks.status, 200);
  const auto task_list = json::parse(tasks.body);
  bool has_accept_loop = false;
  for (const auto& task : task_list.at("tasks").as_array())
    has_accept_loop = has_accept_loop || task.at("name") == "admin accept loop";
  EXPECT_TRUE(has_accept_loop) << tasks.body;
  auto no_task = http_request(address, http::verb::post, "/api/tasks/999999/cancel", "",
                              {{"Authorization", "Bearer " + token}});
  EXPECT_EQ(no_task.status, 404);
  EXPECT_EQ(json::parse(no_task.body).at("error").at("code"), "no_such_task");
  // An accept loop is the host's own: cancelled alone, its listener would
  // stop accepting while the status said running. Refused, and it goes on.
  std::int64_t accept_loop = 0;
  for (const auto& task : task_list.at("tasks").as_array())
    if (task.at("name") == "admin accept loop") accept_loop = task.at("id").to_number<std::int64_t>();
  auto refused = http_request(address, http::verb::post,
                              "/api/tasks/" + std::to_string(accept_loop) + "/cancel", "",
                              {{"Authorization", "Bearer " + token}});
  EXPECT_EQ(refused.status, 409) << refused.body;
  EXPECT_EQ(json::parse(refused.body).at("error").at("code"), "not_cancellable");
  EXPECT_EQ(http_get(address, "/api/status", token).status, 200) << "the admin port stopped accepting";

  WsClient events;
  ASSERT_EQ(events.connect(address, "/api/events", {{"Authorization", "Bearer " + token}}), 101);
  // Give the stream something to say: a SIGHUP is logged.
  host.signal(SIGHUP);
  bool saw_log = false;
  for (int i = 0; i < 20 && !saw_log; ++i) {
    auto message = events.read(10s);
    ASSERT_TRUE(message.has_value());
    auto event = json::parse(*message).as_object();
    saw_log = event.at("type") == "log" &&
              std::string(event.at("line").as_string()).find("SIGHUP") != std::string::npos;
  }
  EXPECT_TRUE(saw_log);

  host.signal(SIGINT);
  EXPECT_EQ(host.wait_exit(20s), 0);
  // The events client gets what was queued, then is told the server is going away.
  std::optional<std::string> message;
  for (int i = 0; i < 100 && (message = events.read(10s)); ++i) {
  }
  EXPECT_FALSE(message.has_value());
  EXPECT_EQ(events.close_code(), 1001);
}

// A client without the token cannot make the admin plane hold a body: a
// configuration upload announcing 1 MiB is refused with 401 as soon as its
// header is in — the client sends no byte of the body — and the connection is
// closed. With the token the same request is read and served.
TEST(Admin, AnUploadWithoutTheTokenIsRefusedBeforeItsBodyIsSent) {
  TempDir dir;
  write_file(dir / "mooring.toml",
             "[gateway]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n");
  ChildProcess host(MOORING_BINARY, {"serve", "--ready-file", (dir / "ready.json").string()},
                    dir.path());
  const auto address = start_admin(host, dir);
  const auto token = read_token(dir);

  for (const std::string target : {"PUT /api/config", "POST /api/config/validate"}) {
    for (const std::string authorization : {"", "Authorization: Bearer wrong\r\n"}) {
      RawConnection client(address);
      client.send(fmt::format("{} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1048576\r\n{}\r\n",
                              target, authorization));
      auto response = client.read(5s);
      ASSERT_TRUE(response) << target << ": no answer until the body is sent";
      EXPECT_EQ(response->result_int(), 401u);
      EXPECT_EQ(json::parse(response->body()).at("error").at("code"), "unauthorized");
      EXPECT_EQ(response->at(http::field::www_authenticate), "Bearer");
      EXPECT_TRUE(client.closed_within(5s));
    }
  }

  auto config = http_get(address, "/api/config", token);
  ASSERT_EQ(config.status, 200);
  auto validated = http_request(address, http::verb::post, "/api/config/validate", config.body,
                                {{"Authorization", "Bearer " + token}});
  EXPECT_EQ(validated.status, 200) << validated.body;
  EXPECT_EQ(http_get(address, "/healthz").status, 200);

  host.signal(SIGTERM);
  EXPECT_EQ(host.wait_exit(20s), 0);
}

// Connections parked between requests cannot lock the operator out: with
// every one of the admin listener's 256 connections idle after a /healthz, an
// authorized request is answered at once, and the idle connection closed to
// admit it (the one idle longest) is counted and logged.
TEST(Admin, IdleConnectionsAtTheLimitDoNotLockTheOperatorOut) {
  TempDir dir;
  write_file(dir / "mooring.toml",
             "[gateway]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n");
  ChildProcess host(MOORING_BINARY, {"serve", "--ready-file", (dir / "ready.json").string()},
                    dir.path());
  const auto address = start_admin(host, dir);
  const auto token = read_token(dir);

  constexpr int admin_connection_limit = 256;
  std::vector<std::unique_ptr<RawConnection>> parked;
  for (int i = 0; i < admin_connection_limit; ++i) {
    parked.push_back(std::make_unique<RawConnection>(address));
    parked.back()->send("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    auto response = parked.back()->read(10s);
    ASSERT_TRUE(response && response->result_int() == 200) << "connection " << i;
  }

  const auto started = Clock::now();
  auto status = http_get(address, "/api/status", token);
  EXPECT_EQ(status.status, 200) << status.body;
  EXPECT_LT(Clock::now() - started, 5s);
  EXPECT_TRUE(parked.front()->closed_within(5s));

  auto metrics = http_get(address, "/metrics");
  ASSERT_EQ(metrics.status, 200);
  EXPECT_GE(sample_value(metrics.body,
                         "mooring_http_idle_connections_closed_total{listener=\"admin\"}"),
            1)
      << metrics.body;
  EXPECT_TRUE(poll_until(
      [&] { return host.stderr_text().find("to admit a new one") != std::string::npos; }, 10s))
      << host.stderr_text();

  host.signal(SIGTERM);
  EXPECT_EQ(host.wait_exit(20s), 0);
}

// Connections that each send a byte of a request and no more (slowloris)
// cannot lock the operator out either: with all of the admin listener's 256
// connections so, an authorized request is answered once their headers have
// been arriving for longer than the grace (a second), and the connection
// closed to admit it is counted and logged.
TEST(Admin, ConnectionsStallingTheirRequestHeaderDoNotLockTheOperatorOut) {
  TempDir dir;
  write_file(dir / "mooring.toml",
             "[gateway]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n");
  ChildProcess host(MOORING_BINARY, {"serve", "--ready-file", (dir / "ready.json").string()},
                    dir.path());
  const auto address = start_admin(host, dir);
  const auto token = read_token(dir);

  constexpr int admin_connection_limit = 256;
  std::vector<std::unique_ptr<RawConnection>> stalled;
  for (int i = 0; i < admin_connection_limit; ++i) {
    stalled.push_back(std::make_unique<RawConnection>(address));
    stalled.back()->send("G");
  }

  // 503 ("try again shortly") while the headers are within their grace; an
  // answer only once the header timeout (10 s) had closed them would be late.
  int status = 0;
  const auto answered = [&] {
    status = http_get(address, "/api/status", token).status;
    return status == 200;
  };
  EXPECT_TRUE(poll_until(answered, 8s, 100ms)) << status;
  EXPECT_TRUE(stalled.front()->closed_within(5s));

  auto metrics = http_get(address, "/metrics");
  ASSERT_EQ(metrics.status, 200);
  EXPECT_GE(sample_value(metrics.body,
                         "mooring_http_slow_header_connections_closed_total{listener=\"admin\"}"),
            1)
      << metrics.body;
  EXPECT_TRUE(poll_until(
      [&] {
        return host.stderr_text().find("request header still incomplete after") !=
               std::string::npos;
      },
      10s))
      << host.stderr_text();

  host.signal(SIGTERM);
  EXPECT_EQ(host.wait_exit(20s), 0);
}

// A client that sends Expect: 100-continue (curl does for a large upload)
// gets "100 Continue" once its token is checked, and sends its body then; a
// client without the token gets its 401 at once instead.
TEST(Admin, AnUploadThatWaitsFor100ContinueIsToldToSendItsBody) {
  TempDir dir;
  write_file(dir / "mooring.toml",
             "[gateway]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n");
  ChildProcess host(MOORING_BINARY, {"serve", "--ready-file", (dir / "ready.json").string()},
                    dir.path());
  const auto address = start_admin(host, dir);
  const auto token = read_token(dir);
  auto config = http_get(address, "/api/config", token);
  ASSERT_EQ(config.status, 200);

  RawConnection client(address);
  client.send(fmt::format(
      "POST /api/config/validate HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {}\r\n"
      "Expect: 100-continue\r\nContent-Length: {}\r\n\r\n",
      token, config.body.size()));
  auto interim = client.read(5s);
  ASSERT_TRUE(interim) << "no 100 Continue: the client would wait before sending its body";
  EXPECT_EQ(interim->result_int(), 100u);
  client.send(config.body);
  auto validated = client.read(5s);
  ASSERT_TRUE(validated);
  EXPECT_EQ(validated->result_int(), 200u) << validated->body();

  RawConnection stranger(address);
  stranger.send(
      "POST /api/config/validate HTTP/1.1\r\nHost: 127.0.0.1\r\nExpect: 100-continue\r\n"
      "Content-Length: 100\r\n\r\n");
  auto refused = stranger.read(5s);
  ASSERT_TRUE(refused);
  EXPECT_EQ(refused->result_int(), 401u);
  EXPECT_TRUE(stranger.closed_within(5s));

  host.signal(SIGTERM);
  EXPECT_EQ(host.wait_exit(20s), 0);
}

}  // namespace
}  // namespace mooring::test
