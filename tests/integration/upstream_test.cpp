// The real binary against an upstream it cannot trust (a raw-socket script):
// interim and unsolicited responses never give a user another user's answer;
// huge replies and endless framing stay within a bounded memory and end fast;
// the API key never reaches a user, the database or the log; broken UTF-8 and
// JSON of the wrong shape come out as readable text and a prompt error.
#include "support/chat_client.hpp"
#include "support/clients.hpp"
#include "support/host_process.hpp"
#include "support/process.hpp"
#include "support/raw_upstream.hpp"
#include "support/wait.hpp"

#include <boost/json.hpp>
#include <gtest/gtest.h>

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <csignal>
#include <cstdlib>
#include <fstream>
#include <thread>

namespace mooring::test {
namespace {

using Frame = ChatClient::Frame;

const std::string secret_key = "sk-live-5f4dcc3b5aa765d61d8327deb882cf99";

std::string openai_config(const RawUpstream& upstream, const std::string& extra = "") {
  return "[provider]\nkind = \"openai\"\nbase_url = \"" + upstream.base_url() +
         "\"\nmodel = \"m\"\nmax_attempts = 1\nattempt_timeout = \"30s\"\n" + extra;
}

std::string user_text(const RawRequest& request) {
  const auto body = boost::json::parse(request.body).as_object();
  return std::string(body.at("messages").as_array().back().at("content").as_string());
}

// The process's peak resident set (VmHWM), in MB.
double peak_rss_mb(pid_t pid) {
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(status, line))
    if (line.starts_with("VmHWM:")) return std::stod(line.substr(6)) / 1024.0;
  return -1;
}

// Asks /healthz again and again until stopped; counts the requests that failed
// or got no answer within 10 s, and keeps the slowest answer (a figure).
class HealthProbe {
 public:
  explicit HealthProbe(std::string admin)
      : thread_([this, admin] {
          std::unique_lock lock(mutex_);
          while (!stop_) {
            lock.unlock();
            const auto started = std::chrono::steady_clock::now();
            // A request that gets no answer within http_get's 10 s throws: on
            // this thread that would end the whole run, so it counts as a failure.
            try {
              if (http_get(admin, "/healthz").status != 200) ++failures_;
            } catch (const std::exception&) {
              ++failures_;
            }
            const auto took = std::chrono::duration_cast<std::chrono::milliseconds>(
                std::chrono::steady_clock::now() - started);
            worst_ = std::max<long>(worst_, took.count());
            lock.lock();
            // The next probe in 10 ms, or at once to stop: stop() wakes it.
            stopped_.wait_for(lock, 10ms, [this] { return stop_; });
          }
        }) {}
  ~HealthProbe() { stop(); }
  void stop() {
    {
      std::lock_guard lock(mutex_);
      stop_ = true;
    }
    stopped_.notify_all();
    if (thread_.joinable()) thread_.join();
  }
  long worst_ms() const { return worst_; }
  int failures() const { return failures_; }

 private:
  std::mutex mutex_;
  std::condition_variable stopped_;
  bool stop_ = false;  // under mutex_
  std::atomic<long> worst_{0};
  std::atomic<int> failures_{0};
  std::thread thread_;  // last: started once everything above exists
};

// The reply to a message: a chat frame, or the error frame of a failed reply.
Frame ask_and_wait(ChatClient& client, const std::string& text, const std::string& id,
                   std::chrono::milliseconds timeout = 20s) {
  const auto seq = say_and_get_seq(client, text, id);
  return client.read_until(
      [&](const Frame& f) {
        return is_chat_for(f, seq) || (is_type(f, "error") && int_field(f, "reply_to") == seq);
      },
      timeout);
}

// What the user reads: a reply's text or a failure's description.
std::string shown(const Frame& frame) {
  return string_field(frame, is_type(frame, "chat") ? "text" : "description");
}

// Two users take turns on an upstream that sends interim responses and
// unsolicited extra responses: each only ever gets their own answers.
TEST(Upstream, InterimAndExtraResponsesNeverReachTheWrongUser) {
  TempDir dir;
  RawUpstream upstream([](const RawRequest& r) {
    RawReply reply;
    const auto mine = raw_sse_response({"answer to " + user_text(r)});
    switch (r.index % 3) {
      case 0:
        reply.writes = {raw_head(103, {{"Link", "</x.css>; rel=preload"}}), mine};
        break;
      case 1:
        reply.writes = {raw_head(100, {}) + mine};
        break;
      default:
        reply.writes = {mine + raw_sse_response({"answer to somebody else"})};
    }
    return reply;
  });
  HostProcess host(MOORING_BINARY, dir.path(), openai_config(upstream));
  ASSERT_TRUE(host.started()) << host.log();
  ChatClient alice, bob;
  ASSERT_EQ(alice.connect(host.gateway(), "alice"), 101);
  ASSERT_EQ(bob.connect(host.gateway(), "bob"), 101);
  for (int round = 0; round < 10; ++round) {
    const auto a = "alice " + std::to_string(round);
    const auto b = "bob " + std::to_string(round);
    EXPECT_EQ(shown(ask_and_wait(alice, a, "a" + std::to_string(round))), "answer to " + a);
    EXPECT_EQ(shown(ask_and_wait(bob, b, "b" + std::to_string(round))), "answer to " + b);
  }
  expect_clean_stop(host, {&alice, &bob});
}

struct Attack {
  std::string name;
  std::string head;
  std::string unit;  // repeated without end
  std::string ends;  // how what the user reads ends: the check that stopped the attack
};

const std::string unreadable = "the provider sent an answer mooring cannot read; send your message again, and tell the operator if this goes on";
// What the 30 s attempt timeout would have told the user instead.
const std::string timed_out = "the provider did not answer in time; send your message again later";

// Each memory attack against a fresh host: the reply ends at a size or shape
// check (what the user reads says which), not at the attempt timeout; /healthz
// keeps answering, the peak RSS stays bounded, SIGINT is prompt. How fast the
// answers come is printed as figures: speed is the benchmarks' to measure.
TEST(Upstream, MemoryAttacksStayBounded) {
  const std::string delta(1000 * 1000, 'x');
  const std::vector<Attack> attacks = {
      {"200 MB reply in 1 MB deltas", raw_stream_head(), raw_chunk(raw_sse_piece(delta)),
       "[the reply was cut here: it is longer than 1048576 bytes]"},
      {"endless chunk extension", raw_stream_head() + "10;a=", "b", unreadable},
      // The reply was whole at [DONE]: the trailer costs only the connection.
      {"endless trailer",
       raw_stream_head() + raw_chunk(raw_sse_piece("whole")) + raw_chunk(raw_sse_done) + "0\r\n",
       "X-Trailer: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n", "whole"},
      {"many data: lines, no blank line", raw_stream_head(), raw_chunk("data: y\n"), unreadable},
      {"one endless data: line", raw_stream_head() + raw_chunk("data: "),
       raw_chunk(std::string(4096, 'z')), unreadable},
  };
  for (const auto& attack : attacks) {
    SCOPED_TRACE(attack.name);
    TempDir dir;
    RawUpstream upstream([&](const RawRequest&) {
      RawReply reply;
      reply.writes = {attack.head};
      reply.endless = attack.unit;
      reply.endless_limit = 200ull * 1000 * 1000;
      return reply;
    });
    HostProcess host(MOORING_BINARY, dir.path(), openai_config(upstream));
    ASSERT_TRUE(host.started()) << host.log();
    const double baseline = peak_rss_mb(host.process().pid());
    HealthProbe probe(host.admin());
    ChatClient user;
    ASSERT_EQ(user.connect(host.gateway(), "victim"), 101);
    const auto started = std::chrono::steady_clock::now();
    const auto chat = ask_and_wait(user, "tell me everything", "1", 25s);
    const auto answered = std::chrono::duration_cast<std::chrono::milliseconds>(
        std::chrono::steady_clock::now() - started);
    const auto text = shown(chat);
    // A size or shape check ended the reply; the timeout would say timed_out,
    // and only after 30 s (the wait above gives up after 25 s).
    EXPECT_TRUE(text.ends_with(attack.ends))
        << text.substr(text.size() - std::min<std::size_t>(text.size(), 200));
    EXPECT_NE(text, timed_out);
    EXPECT_LE(text.size(), 1024u * 1024 + 200);
    EXPECT_TRUE(poll_until([&] { return upstream.closed_by_client() == 1; }, 10s));
    probe.stop();
    const double peak = peak_rss_mb(host.process().pid());
    const auto stop_started = std::chrono::steady_clock::now();
    expect_clean_stop(host, {&user});
    const auto stop_took = std::chrono::duration_cast<std::chrono::milliseconds>(
        std::chrono::steady_clock::now() - stop_started);
    std::printf(
        "[ figures  ] %s: answered in %lld ms (%zu bytes), RSS peak %.1f MB (%.1f MB at "
        "start), upstream wrote %.1f MB, /healthz worst %ld ms, SIGINT to exit %lld ms\n",
        attack.name.c_str(), static_cast<long long>(answered.count()), text.size(), peak, baseline,
        upstream.bytes_sent() / 1e6, probe.worst_ms(), static_cast<long long>(stop_took.count()));
    EXPECT_LT(peak, baseline + 100);
    // Every /healthz was answered (within 10 s each): parsing the attack never
    // held up the network thread for the length of a hang.
    EXPECT_EQ(probe.failures(), 0);
    EXPECT_EQ(host.log().find("did not answer within"), std::string::npos) << host.log();
  }
}

TEST(Upstream, TheKeyReachesNeitherTheUserNorTheDatabaseNorTheLog) {
  ::setenv("OPENAI_API_KEY", secret_key.c_str(), 1);
  TempDir dir;
  int turn = 0;
  RawUpstream upstream([&](const RawRequest&) {
    RawReply reply;
    switch (turn++ % 3) {
      case 0:
        reply.writes = {raw_response(401, "{\"error\":{\"message\":\"Incorrect API key provided: " +
                                              secret_key + ".\",\"code\":\"invalid_api_key\"}}")};
        break;
      case 1:
        reply.writes = {
            raw_response(500, "proxy error, Authorization: Bearer " + secret_key, "text/plain")};
        break;
      default:
        reply.writes = {
            raw_stream_head() +
            raw_chunk("data: {\"error\":{\"message\":\"key " + secret_key + " over quota\"}}\n\n") +
            raw_last_chunk()};
    }
    return reply;
  });
  HostProcess host(MOORING_BINARY, dir.path(), openai_config(upstream));
  ::unsetenv("OPENAI_API_KEY");
  ASSERT_TRUE(host.started()) << host.log();
  ChatClient user;
  ASSERT_EQ(user.connect(host.gateway(), "careful"), 101);
  for (int i = 0; i < 3; ++i) {
    const auto chat = ask_and_wait(user, "question " + std::to_string(i), std::to_string(i));
    const auto text = shown(chat);
    EXPECT_EQ(text.find(secret_key.substr(3)), std::string::npos) << text;
    EXPECT_FALSE(text.empty());
  }
  ASSERT_EQ(upstream.requests().at(0).authorization, "Bearer " + secret_key);  // it was sent
  const auto stored = http_get(host.admin(), "/api/sessions/careful/messages", host.admin_token());
  ASSERT_EQ(stored.status, 200);
  EXPECT_EQ(stored.body.find(secret_key.substr(3)), std::string::npos) << stored.body;
  for (const auto& frame : user.received())
    EXPECT_EQ(boost::json::serialize(frame).find(secret_key.substr(3)), std::string::npos);
  expect_clean_stop(host, {&user});
  EXPECT_EQ(host.log().find(secret_key.substr(3)), std::string::npos);
  EXPECT_NE(host.log().find("[redacted]"), std::string::npos) << host.log();
}

TEST(Upstream, InvalidUtf8ReachesTheUserAsReadableText) {
  TempDir dir;
  RawUpstream upstream([](const RawRequest&) {
    RawReply reply;
    reply.writes = {raw_stream_head() + raw_chunk(raw_sse_piece_unescaped("caf\xC3")) +
                    raw_chunk(raw_sse_piece_unescaped("\xA9 \xFF\xFF ok")) +
                    raw_chunk(raw_sse_done) + raw_last_chunk()};
    return reply;
  });
  HostProcess host(MOORING_BINARY, dir.path(), openai_config(upstream));
  ASSERT_TRUE(host.started()) << host.log();
  ChatClient user;
  ASSERT_EQ(user.connect(host.gateway(), "reader"), 101);
  const auto chat = ask_and_wait(user, "hi", "1");
  EXPECT_EQ(shown(chat), "café \xEF\xBF\xBD\xEF\xBF\xBD ok");
  // The connection survived the reply: another message goes through.
  const auto again = ask_and_wait(user, "again", "2");
  EXPECT_FALSE(shown(again).empty());
  expect_clean_stop(host, {&user});
}

TEST(Upstream, AMalformedAnswerIsAPromptErrorNotATimeout) {
  TempDir dir;
  RawUpstream upstream([](const RawRequest&) {
    RawReply reply;
    reply.writes = {raw_response(200, "{\"choices\":[1]}")};
    return reply;
  });
  HostProcess host(MOORING_BINARY, dir.path(), openai_config(upstream));
  ASSERT_TRUE(host.started()) << host.log();
  ChatClient user;
  ASSERT_EQ(user.connect(host.gateway(), "shapes"), 101);
  // Waited for at most 20 s, less than the 30 s attempt timeout: only a check
  // of the answer's shape can end the reply in time.
  const auto chat = ask_and_wait(user, "hi", "1");
  EXPECT_EQ(shown(chat), unreadable);
  expect_clean_stop(host, {&user});
  // The log names the shape check that failed, not the timeout.
  EXPECT_NE(host.log().find("the provider's answer has a choice that is not an object"),
            std::string::npos)
      << host.log();
  EXPECT_EQ(host.log().find("did not answer within"), std::string::npos) << host.log();
}

}  // namespace
}  // namespace mooring::test
