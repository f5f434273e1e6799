#include "support/onebot_peer.hpp"

#include "support/server_thread.hpp"

#include <gtest/gtest.h>

#include <future>

namespace mooring::test {
namespace {

namespace json = boost::json;
using tcp = asio::ip::tcp;
using Ws = websocket::stream<beast::tcp_stream>;
using Action = OneBotPeer::Action;

// A host as small as it gets: it accepts one connection on 127.0.0.1:0,
// answers the upgrade (or refuses it with `refuse`), and runs `script` on the
// WebSocket on its own thread while the peer runs on the test thread.
class TinyHost {
 public:
  using Script = std::function<awaitable<void>(Ws&)>;

  explicit TinyHost(Script script, http::status refuse = http::status::unknown)
      : script_(std::move(script)), refuse_(refuse), thread_(std::make_unique<ServerThread>()) {
    acceptor_.emplace(thread_->io(), tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
    done_ = asio::co_spawn(thread_->io(), serve(), asio::use_future);
  }
  ~TinyHost() {
    // The acceptor belongs to the server thread's io_context: it goes first.
    thread_->run([this] { acceptor_.reset(); });
    thread_.reset();
  }

  std::string address() const {
    return "127.0.0.1:" + std::to_string(acceptor_->local_endpoint().port());
  }

  // Waits for the script to end and rethrows what it threw.
  void finish(std::chrono::milliseconds timeout = 10s) {
    if (done_.wait_for(timeout) != std::future_status::ready)
      throw std::runtime_error("the host's script did not end in time");
    done_.get();
  }

  // The upgrade request; read it after finish().
  const http::request<http::string_body>& request() const { return request_; }

 private:
  awaitable<void> serve() {
    auto socket = co_await acceptor_->async_accept(asio::use_awaitable);
    Ws ws(std::move(socket));
    beast::flat_buffer buffer;
    co_await http::async_read(ws.next_layer(), buffer, request_, asio::use_awaitable);
    if (refuse_ != http::status::unknown) {
      http::response<http::string_body> refusal(refuse_, 11);
      refusal.body() = "refused";
      refusal.prepare_payload();
      co_await http::async_write(ws.next_layer(), refusal, asio::use_awaitable);
      co_return;
    }
    co_await ws.async_accept(request_, asio::use_awaitable);
    co_await script_(ws);
  }

  Script script_;
  http::status refuse_;
  http::request<http::string_body> request_;
  std::optional<tcp::acceptor> acceptor_;
  std::unique_ptr<ServerThread> thread_;
  std::future<void> done_;
};

// The next text frame as a JSON object, or nullopt when the connection ended
// (`ending` then says how).
awaitable<std::optional<json::object>> read_object(Ws& ws, error_code* ending = nullptr) {
  beast::flat_buffer buffer;
  auto [ec, n] = co_await ws.async_read(buffer, use_tuple);
  if (ec) {
    if (ending) *ending = ec;
    co_return std::nullopt;
  }
  co_return json::parse(beast::buffers_to_string(buffer.data())).as_object();
}

awaitable<void> write_object(Ws& ws, const json::object& frame) {
  ws.text(true);
  co_await ws.async_write(asio::buffer(json::serialize(frame)), asio::use_awaitable);
}

// Reads every frame until the peer ends the connection.
awaitable<void> read_all(Ws& ws, std::vector<json::object>& frames, error_code& ending) {
  while (auto frame = co_await read_object(ws, &ending)) frames.push_back(std::move(*frame));
}

std::string header(const http::request<http::string_body>& request, std::string_view name) {
  auto it = request.find(name);
  return it == request.end() ? "<absent>" : std::string(it->value());
}

TEST(OneBotPeer, UpgradesWithTheHeadersAnImplementationSends) {
  std::vector<json::object> frames;
  error_code ending;
  TinyHost host([&](Ws& ws) { return read_all(ws, frames, ending); });
  OneBotPeer peer;
  ASSERT_EQ(peer.connect(host.address(), 10001000, "Universal", "s3cret"), 101);
  peer.close();
  host.finish();

  const auto& request = host.request();
  EXPECT_EQ(request.target(), "/onebot/v11/ws");
  EXPECT_EQ(header(request, "X-Self-ID"), "10001000");
  EXPECT_EQ(header(request, "X-Client-Role"), "Universal");
  EXPECT_EQ(header(request, "Authorization"), "Bearer s3cret");
  EXPECT_EQ(header(request, "User-Agent"), "OneBot/11");
  EXPECT_TRUE(frames.empty());
  EXPECT_EQ(ending, websocket::error::closed);
}

TEST(OneBotPeer, CanPutTheTokenInTheQueryAndLeaveHeadersOut) {
  std::vector<json::object> frames;
  error_code ending;
  TinyHost host([&](Ws& ws) { return read_all(ws, frames, ending); });
  OneBotPeer peer;
  ASSERT_EQ(peer.connect(host.address(), 0, "", "a b&c", true, "/ws", {{"X-Extra", "1"}}), 101);
  peer.close();
  host.finish();

  const auto& request = host.request();
  EXPECT_EQ(request.target(), "/ws?access_token=a%20b%26c");
  EXPECT_EQ(header(request, "X-Self-ID"), "<absent>");
  EXPECT_EQ(header(request, "X-Client-Role"), "<absent>");
  EXPECT_EQ(header(request, "Authorization"), "<absent>");
  EXPECT_EQ(header(request, "X-Extra"), "1");
}

TEST(OneBotPeer, ARefusedUpgradeReturnsItsStatus) {
  TinyHost host([](Ws&) -> awaitable<void> { co_return; }, http::status::unauthorized);
  OneBotPeer peer;
  EXPECT_EQ(peer.connect(host.address(), 10001), 401);
  host.finish();
}

TEST(OneBotPeer, AnUpgradeLeftUnansweredThrowsInsteadOfPassingForAStatus) {
  ServerThread thread;
  tcp::acceptor acceptor(thread.io(), tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
  const auto address = "127.0.0.1:" + std::to_string(acceptor.local_endpoint().port());
  auto hung_up = asio::co_spawn(
      thread.io(),
      [](tcp::acceptor& acceptor) -> awaitable<void> {
        auto socket = co_await acceptor.async_accept(asio::use_awaitable);
        beast::flat_buffer buffer;
        http::request<http::string_body> request;
        co_await http::async_read(socket, buffer, request, asio::use_awaitable);
      }(acceptor),
      asio::use_future);
  OneBotPeer peer;
  EXPECT_THROW(peer.connect(address, 10001), boost::system::system_error);
  ASSERT_EQ(hung_up.wait_for(10s), std::future_status::ready);
  hung_up.get();
  EXPECT_THROW(peer.lifecycle_connect(), std::logic_error);
  thread.run([&] { acceptor.close(); });
}

TEST(OneBotPeer, EventsCarryTheFieldsOfTheSpec) {
  std::vector<json::object> frames;
  error_code ending;
  TinyHost host([&](Ws& ws) { return read_all(ws, frames, ending); });
  OneBotPeer peer;
  ASSERT_EQ(peer.connect(host.address(), 10001), 101);
  peer.lifecycle_connect();
  peer.heartbeat(15000);
  const auto first = peer.private_message(42, "hi [CQ:face,id=178]");
  const json::array segments{json::object{{"type", "text"}, {"data", {{"text", "a&[b],c"}}}},
                             json::object{{"type", "at"}, {"data", {{"qq", "10001"}}}}};
  const auto second = peer.group_message(7, 43, segments, "Card", "Bob");
  peer.private_message(42, "again", "alice", 5);
  peer.message_sent("group", 7, "mine");
  peer.friend_request(44, "let me in", "f-1");
  peer.group_request(7, 45, "add", "me too", "g-1");
  peer.notice("notify", {{"sub_type", "poke"}, {"target_id", 10001}});
  peer.send_raw(R"({"post_type":"vendor_thing"})");
  peer.close();
  host.finish();

  ASSERT_EQ(frames.size(), 10u);
  EXPECT_EQ(frames[9], (json::object{{"post_type", "vendor_thing"}}));
  frames.pop_back();
  for (const auto& frame : frames) {
    EXPECT_EQ(frame.at("self_id"), 10001);
    EXPECT_GT(frame.at("time").as_int64(), 1'600'000'000);
  }
  EXPECT_EQ(frames[0].at("post_type"), "meta_event");
  EXPECT_EQ(frames[0].at("meta_event_type"), "lifecycle");
  EXPECT_EQ(frames[0].at("sub_type"), "connect");
  EXPECT_EQ(frames[1].at("meta_event_type"), "heartbeat");
  EXPECT_EQ(frames[1].at("interval"), 15000);
  EXPECT_EQ(frames[1].at("status"), (json::object{{"online", true}, {"good", true}}));

  const auto& in_private = frames[2];
  EXPECT_EQ(in_private.at("post_type"), "message");
  EXPECT_EQ(in_private.at("message_type"), "private");
  EXPECT_EQ(in_private.at("sub_type"), "friend");
  EXPECT_EQ(in_private.at("message_id"), first);
  EXPECT_EQ(in_private.at("user_id"), 42);
  EXPECT_EQ(in_private.at("message"), "hi [CQ:face,id=178]");
  EXPECT_EQ(in_private.at("raw_message"), "hi [CQ:face,id=178]");
  EXPECT_EQ(in_private.at("font"), 0);
  EXPECT_EQ(in_private.at("sender").at("nickname"), "alice");
  EXPECT_EQ(in_private.at("sender").at("user_id"), 42);

  const auto& in_group = frames[3];
  EXPECT_EQ(in_group.at("message_type"), "group");
  EXPECT_EQ(in_group.at("sub_type"), "normal");
  EXPECT_EQ(in_group.at("group_id"), 7);
  EXPECT_EQ(in_group.at("user_id"), 43);
  EXPECT_EQ(in_group.at("message_id"), second);
  EXPECT_NE(first, second);
  EXPECT_EQ(in_group.at("message"), segments);
  EXPECT_EQ(in_group.at("raw_message"), "a&amp;&#91;b&#93;,c[CQ:at,qq=10001]");
  EXPECT_EQ(in_group.at("sender").at("card"), "Card");
  EXPECT_EQ(in_group.at("sender").at("nickname"), "Bob");

  EXPECT_EQ(frames[4].at("message_id"), 5);
  EXPECT_EQ(frames[5].at("post_type"), "message_sent");
  EXPECT_EQ(frames[5].at("group_id"), 7);
  EXPECT_EQ(frames[5].at("user_id"), 10001);
  EXPECT_EQ(frames[6].at("request_type"), "friend");
  EXPECT_EQ(frames[6].at("flag"), "f-1");
  EXPECT_EQ(frames[6].at("comment"), "let me in");
  EXPECT_EQ(frames[7].at("request_type"), "group");
  EXPECT_EQ(frames[7].at("sub_type"), "add");
  EXPECT_EQ(frames[7].at("group_id"), 7);
  EXPECT_EQ(frames[8].at("post_type"), "notice");
  EXPECT_EQ(frames[8].at("notice_type"), "notify");
  EXPECT_EQ(frames[8].at("sub_type"), "poke");
}

awaitable<void> call_and_collect(Ws& ws, std::vector<json::object> calls,
                                 std::vector<json::object>& answers) {
  for (const auto& call : calls) co_await write_object(ws, call);
  for (std::size_t i = 0; i < calls.size(); ++i) {
    auto answer = co_await read_object(ws);
    if (!answer) co_return;
    answers.push_back(std::move(*answer));
  }
  co_await ws.async_close(websocket::close_code::going_away, asio::use_awaitable);
}

TEST(OneBotPeer, AnswersCarryTheEchoAsReceived) {
  const json::array message{json::object{{"type", "text"}, {"data", {{"text", "a,b & [c]"}}}},
                            json::object{{"type", "image"}, {"data", {{"file", "x,y.png"}}}}};
  std::vector<json::object> answers;
  TinyHost host([&](Ws& ws) {
    return call_and_collect(ws,
                            {{{"action", "get_login_info"}, {"echo", "7"}},
                             {{"action", "send_private_msg"},
                              {"params", {{"user_id", "42"}, {"message", message}}},
                              {"echo", 8}},
                             {{"action", "set_friend_add_request"},
                              {"params", {{"flag", "f-1"}, {"approve", true}}},
                              {"echo", json::object{{"k", 1}}}}},
                            answers);
  });
  OneBotPeer peer;
  ASSERT_EQ(peer.connect(host.address(), 10001), 101);

  const auto send = peer.wait_action("send_private_msg");
  ASSERT_EQ(peer.skipped().size(), 1u);
  EXPECT_EQ(peer.skipped()[0].action, "get_login_info");
  EXPECT_EQ(message_text(send), "a,b &amp; &#91;c&#93;[CQ:image,file=x&#44;y.png]");
  EXPECT_EQ(plain_text(send), "a,b & [c]");
  EXPECT_EQ(int_param(send, "user_id"), 42);
  EXPECT_TRUE(peer.answer_standard(peer.skipped()[0]));
  EXPECT_TRUE(peer.answer_standard(send));
  const auto request = peer.wait_action("set_friend_add_request");
  EXPECT_FALSE(peer.answer_standard(request));
  peer.answer(request, 1404);
  EXPECT_EQ(peer.read_until_closed(), 1001);
  EXPECT_EQ(peer.received().size(), 3u);
  host.finish();

  ASSERT_EQ(answers.size(), 3u);
  EXPECT_EQ(answers[0].at("echo"), "7");
  EXPECT_EQ(answers[0].at("status"), "ok");
  EXPECT_EQ(answers[0].at("retcode"), 0);
  EXPECT_EQ(answers[0].at("data"), (json::object{{"user_id", 10001}, {"nickname", "mooring-bot"}}));
  EXPECT_EQ(answers[1].at("echo"), 8);
  EXPECT_EQ(answers[1].at("data").at("message_id"), peer.last_message_id());
  EXPECT_EQ(answers[2].at("echo"), (json::object{{"k", 1}}));
  EXPECT_EQ(answers[2].at("status"), "failed");
  EXPECT_EQ(answers[2].at("retcode"), 1404);
  EXPECT_TRUE(answers[2].at("data").is_null());
  EXPECT_FALSE(answers[2].at("message").as_string().empty());
}

TEST(OneBotPeer, CanWriteTheEchoBackInAnotherForm) {
  std::vector<json::object> answers;
  TinyHost host([&](Ws& ws) {
    return call_and_collect(ws,
                            {{{"action", "get_status"}, {"echo", "17"}},
                             {{"action", "get_status"}, {"echo", 18}},
                             {{"action", "get_status"}, {"echo", "19"}},
                             {{"action", "get_status"}, {"echo", "c-20"}}},
                            answers);
  });
  OneBotPeer peer;
  ASSERT_EQ(peer.connect(host.address(), 10001), 101);
  peer.answer_standard(*peer.next_action(), OneBotPeer::EchoForm::as_number);
  peer.answer_standard(*peer.next_action(), OneBotPeer::EchoForm::as_string);
  peer.answer(*peer.next_action(), 0, nullptr, OneBotPeer::EchoForm::omit);
  const auto last = *peer.next_action();
  EXPECT_THROW(peer.answer(last, 0, nullptr, OneBotPeer::EchoForm::as_number),
               std::invalid_argument);
  peer.answer(last, 0, nullptr, OneBotPeer::EchoForm::as_string);
  EXPECT_EQ(peer.read_until_closed(), 1001);
  host.finish();

  ASSERT_EQ(answers.size(), 4u);
  EXPECT_EQ(answers[0].at("echo"), 17);
  EXPECT_EQ(answers[1].at("echo"), "18");
  EXPECT_FALSE(answers[2].contains("echo"));
  EXPECT_EQ(answers[3].at("echo"), "c-20");
}

TEST(OneBotPeer, ServesTheStandardActionsUntilTheAwaitedOne) {
  std::vector<json::object> answers;
  TinyHost host([&](Ws& ws) {
    return call_and_collect(ws,
                            {{{"action", "get_version_info"}, {"echo", "1"}},
                             {{"action", "get_login_info"}, {"echo", "2"}},
                             {{"action", "send_group_msg"},
                              {"params", {{"group_id", 7}, {"message", "hello &amp; bye"}}},
                              {"echo", "3"}}},
                            answers);
  });
  OneBotPeer peer;
  ASSERT_EQ(peer.connect(host.address(), 10001), 101);
  const auto seen = peer.serve_until([](const Action& a) { return a.action == "send_group_msg"; });
  ASSERT_EQ(seen.size(), 3u);
  EXPECT_EQ(seen[0].action, "get_version_info");
  EXPECT_EQ(seen[1].action, "get_login_info");
  EXPECT_EQ(message_text(seen[2]), "hello &amp; bye");
  EXPECT_EQ(plain_text(seen[2]), "hello & bye");
  peer.answer(seen[2], 100);
  EXPECT_EQ(peer.read_until_closed(), 1001);
  host.finish();

  ASSERT_EQ(answers.size(), 3u);
  EXPECT_EQ(answers[0].at("data").at("protocol_version"), "v11");
  EXPECT_EQ(answers[1].at("data").at("user_id"), 10001);
  EXPECT_EQ(answers[2].at("retcode"), 100);
  EXPECT_EQ(answers[2].at("echo"), "3");
}

TEST(OneBotPeer, AnAutoEscapedStringIsPlainText) {
  std::vector<json::object> answers;
  TinyHost host([&](Ws& ws) {
    return call_and_collect(
        ws,
        {{{"action", "send_msg"},
          {"params", {{"user_id", 1}, {"message", "[CQ:face,id=1]"}, {"auto_escape", true}}}}},
        answers);
  });
  OneBotPeer peer;
  ASSERT_EQ(peer.connect(host.address(), 10001), 101);
  const auto send = peer.wait_action("send_msg");
  EXPECT_EQ(message_text(send), "&#91;CQ:face,id=1&#93;");
  EXPECT_EQ(plain_text(send), "[CQ:face,id=1]");
  peer.answer_standard(send);
  EXPECT_EQ(peer.read_until_closed(), 1001);
  host.finish();
  ASSERT_EQ(answers.size(), 1u);
  EXPECT_FALSE(answers[0].contains("echo")) << "no echo was sent, none comes back";
}

TEST(OneBotPeer, AFrameThatIsNoObjectAndAMissingActionFailReadably) {
  TinyHost host([](Ws& ws) -> awaitable<void> {
    ws.text(true);
    co_await ws.async_write(asio::buffer(std::string("[1,2]")), asio::use_awaitable);
    co_await ws.async_close(websocket::close_code::normal, use_tuple);
  });
  OneBotPeer peer;
  ASSERT_EQ(peer.connect(host.address(), 10001), 101);
  try {
    peer.next_action();
    FAIL() << "a non-object frame was accepted";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("[1,2]"), std::string::npos) << e.what();
  }
  try {
    peer.wait_action("send_msg");
    FAIL() << "the close went unnoticed";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("closed with 1000"), std::string::npos) << e.what();
  }
  host.finish();
}

TEST(OneBotPeer, AWaitThatRunsOutOfTimeThrowsAndNamesWhatItRead) {
  std::promise<void> written;
  TinyHost host([&](Ws& ws) -> awaitable<void> {
    const json::object call{{"action", "get_status"}, {"echo", "1"}};
    co_await write_object(ws, call);
    written.set_value();
    // Held open until the test has seen the timeout.
    std::vector<json::object> frames;
    error_code ending;
    co_await read_all(ws, frames, ending);
  });
  OneBotPeer peer;
  ASSERT_EQ(peer.connect(host.address(), 10001), 101);
  // The wait starts once get_status is on its way, not whenever the host's
  // thread gets to write it; its time is still ample for reading it.
  ASSERT_EQ(written.get_future().wait_for(10s), std::future_status::ready);
  try {
    peer.wait_action("send_msg", 1s);
    FAIL() << "the wait did not time out";
  } catch (const std::runtime_error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("send_msg"), std::string::npos) << what;
    EXPECT_NE(what.find("get_status"), std::string::npos) << what;
  }
  // The stream is in an unknown state after a timeout: further use is refused.
  EXPECT_THROW(peer.next_action(), std::logic_error);
  peer.drop();
  host.finish();
}

TEST(OneBotPeer, ACleanCloseSendsNormalClosure) {
  error_code ending;
  std::uint16_t code = 0;
  TinyHost host([&](Ws& ws) -> awaitable<void> {
    std::vector<json::object> frames;
    co_await read_all(ws, frames, ending);
    code = ws.reason().code;
  });
  OneBotPeer peer;
  ASSERT_EQ(peer.connect(host.address(), 10001), 101);
  peer.close();
  host.finish();
  EXPECT_EQ(ending, websocket::error::closed);
  EXPECT_EQ(code, 1000);
}

TEST(OneBotPeer, ADropResetsTheConnectionWithoutACloseFrame) {
  error_code ending;
  TinyHost host([&](Ws& ws) -> awaitable<void> {
    std::vector<json::object> frames;
    co_await read_all(ws, frames, ending);
  });
  OneBotPeer peer;
  ASSERT_EQ(peer.connect(host.address(), 10001), 101);
  peer.drop();
  host.finish();
  EXPECT_EQ(ending, asio::error::connection_reset) << ending.message();
}

TEST(OneBotPeer, ASilentPeerAnswersNoPingSoTheHostTimesItOut) {
  error_code ending;
  TinyHost host([&](Ws& ws) -> awaitable<void> {
    // Beast pings after half the idle time and gives up when nothing at all
    // (not even a pong) came back by the end of it.
    ws.set_option(websocket::stream_base::timeout{5s, 400ms, true});
    std::vector<json::object> frames;
    co_await read_all(ws, frames, ending);
  });
  OneBotPeer peer;
  ASSERT_EQ(peer.connect(host.address(), 10001), 101);
  peer.go_silent();
  EXPECT_THROW(peer.heartbeat(1000), std::logic_error);
  EXPECT_THROW(peer.next_action(), std::logic_error);
  EXPECT_EQ(peer.silent_until_closed(5s), 0) << "the host gave up without a close frame";
  host.finish();
  EXPECT_EQ(ending, beast::error::timeout) << ending.message();
}

TEST(OneBotPeer, ASilentPeerSeesTheCloseCodeOfTheCloseItNeverAnswers) {
  error_code ending;
  TinyHost host([&](Ws& ws) -> awaitable<void> {
    ws.set_option(websocket::stream_base::timeout{300ms, websocket::stream_base::none(), false});
    const json::object call{{"action", "get_status"}, {"echo", "1"}};
    co_await write_object(ws, call);
    auto [ec] = co_await ws.async_close(websocket::close_code{4000}, use_tuple);
    ending = ec;
  });
  OneBotPeer peer;
  ASSERT_EQ(peer.connect(host.address(), 10001), 101);
  peer.go_silent();
  EXPECT_EQ(peer.silent_until_closed(5s), 4000);
  EXPECT_EQ(peer.close_code(), 4000);
  ASSERT_EQ(peer.skipped().size(), 1u) << "what came before the close is kept";
  EXPECT_EQ(peer.skipped()[0].action, "get_status");
  host.finish();
  EXPECT_EQ(ending, beast::error::timeout)
      << "the silent peer answered the close: " << ending.message();
}

TEST(OneBotPeer, ConnectsAgainAfterAnEnding) {
  std::vector<json::object> frames;
  error_code ending;
  TinyHost first([&](Ws& ws) { return read_all(ws, frames, ending); });
  std::vector<json::object> later;
  error_code later_ending;
  TinyHost second([&](Ws& ws) { return read_all(ws, later, later_ending); });
  OneBotPeer peer;
  ASSERT_EQ(peer.connect(first.address(), 10001), 101);
  peer.drop();
  first.finish();
  ASSERT_EQ(peer.connect(second.address(), 10002), 101);
  peer.lifecycle_connect();
  peer.close();
  second.finish();
  ASSERT_EQ(later.size(), 1u);
  EXPECT_EQ(later[0].at("self_id"), 10002);
  EXPECT_EQ(second.request().at("X-Self-ID"), "10002");
}

}  // namespace
}  // namespace mooring::test
