// OpenAiProvider (and ResilientProvider over it) against an upstream that
// writes whatever it likes: interim and unsolicited responses, endless
// framing, huge replies, broken UTF-8, secrets, JSON of the wrong shape.
#include "llm/openai_provider.hpp"

#include "llm/resilient_provider.hpp"
#include "llm/utf8.hpp"
#include "runtime/log.hpp"
#include "support/raw_upstream.hpp"
#include "support/wait.hpp"

#include <boost/json.hpp>
#include <gtest/gtest.h>

#include <tuple>

#include <atomic>
#include <random>

namespace mooring::llm {
namespace {

using namespace std::chrono_literals;
using test::RawReply;
using test::RawRequest;
using test::RawUpstream;
using Kind = ProviderError::Kind;

const std::string secret_key = "sk-test-d41d8cd98f00b204e9800998ecf8427e";

ChatRequest said(std::string text) {
  ChatRequest request;
  request.message = {llm::Role::user, std::move(text), {}};
  return request;
}

// What the user said in a recorded request.
std::string user_text(const RawRequest& request) {
  const auto body = boost::json::parse(request.body).as_object();
  return std::string(body.at("messages").as_array().back().at("content").as_string());
}

ResilienceOptions patient() {
  ResilienceOptions o;
  o.attempt_timeout = 30s;  // any hang shows as a failed time bound
  o.total_timeout = 60s;
  o.max_attempts = 1;
  o.backoff_initial = o.backoff_max = 1ms;
  o.breaker_threshold = 1000;
  return o;
}

OpenAiOptions openai(const std::string& url) {
  return OpenAiOptions{url, "m", secret_key};
}

struct Reply {
  CompletionResult result = failure({});
  std::vector<std::string> pieces;
  std::chrono::milliseconds took{};
  std::string joined() const {
    std::string out;
    for (const auto& p : pieces) out += p;
    return out;
  }
};

Reply ask(OpenAiOptions options, ResilienceOptions resilience = patient(),
          ChatRequest request = said("hello")) {
  return test::run_coroutine(
      [](OpenAiOptions o, ResilienceOptions r, ChatRequest q) -> awaitable<Reply> {
        auto ex = co_await asio::this_coro::executor;
        ResilientProvider provider(ex, std::make_shared<OpenAiProvider>(ex, o), r, nullptr);
        Reply reply;
        const auto started = Clock::now();
        reply.result = co_await provider.complete(
            q, [&](std::string_view p) { reply.pieces.emplace_back(p); });
        reply.took = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - started);
        co_return reply;
      }(std::move(options), resilience, std::move(request)),
      90s);
}

std::string answer_for(const std::string& text) {
  return "answer to " + text;
}

// --- Whose answer is it --------------------------------------------------

// Interim responses (103 Early Hints, 100 Continue) come before the real one;
// an unsolicited extra response after a normal one. Users asking one after
// another on the same kept-alive connection each get their own answer.
TEST(UntrustedUpstream, InterimAndExtraResponsesNeverGiveAUserAnotherUsersAnswer) {
  RawUpstream upstream([](const RawRequest& r) {
    RawReply reply;
    const auto mine = test::raw_sse_response({answer_for(user_text(r))});
    switch (r.index % 4) {
      case 0:
        reply.writes = {test::raw_head(103, {{"Link", "</style.css>; rel=preload"}}), mine};
        break;
      case 1:
        reply.writes = {test::raw_head(100, {}) + mine};
        break;
      case 2:
        reply.writes = {mine + test::raw_sse_response({"answer to nobody"})};
        break;
      default:
        reply.writes = {mine};
    }
    return reply;
  });
  auto outcome = test::run_coroutine(
      [](std::string url) -> awaitable<std::pair<std::vector<std::string>, std::uint64_t>> {
        auto ex = co_await asio::this_coro::executor;
        auto options = openai(url);
        options.reuse_connections = true;  // what is under test: the pool's checks
        OpenAiProvider provider(ex, options);
        std::vector<std::string> answers;
        for (int user = 0; user < 12; ++user) {
          auto r = co_await provider.complete(said("user " + std::to_string(user)), nullptr);
          answers.push_back(r ? *r : "failed: " + r.error().detail);
        }
        co_return std::make_pair(answers, provider.client().connections_dropped());
      }(upstream.base_url()),
      60s);
  for (int user = 0; user < 12; ++user)
    EXPECT_EQ(outcome.first[user], answer_for("user " + std::to_string(user)));
  // Every connection that carried an extra response was dropped, not reused.
  EXPECT_GE(outcome.second, 1u);
}

// An unsolicited response that arrives while the connection sits idle in the
// pool: the connection is dropped when taken, and the next user asks on a new one.
TEST(UntrustedUpstream, AResponseArrivingOnAnIdleConnectionIsNeverTakenAsTheNextAnswer) {
  RawUpstream upstream([](const RawRequest& r) {
    RawReply reply;
    reply.writes = {test::raw_sse_response({answer_for(user_text(r))})};
    if (r.connection == 1) {
      reply.late = test::raw_sse_response({"stray answer"});
      reply.late_delay = 10ms;
    }
    return reply;
  });
  auto answers = test::run_coroutine(
      [](RawUpstream* up) -> awaitable<std::vector<std::string>> {
        auto ex = co_await asio::this_coro::executor;
        auto options = openai(up->base_url());
        options.reuse_connections = true;  // what is under test: the pool's checks
        OpenAiProvider provider(ex, options);
        std::vector<std::string> out;
        auto first = co_await provider.complete(said("alice"), nullptr);
        out.push_back(first ? *first : first.error().detail);
        if (!co_await test::poll_until_async([&] { return up->late_writes() == 1; }, 10s))
          throw std::runtime_error("the stray response was never written");
        auto second = co_await provider.complete(said("bob"), nullptr);
        out.push_back(second ? *second : second.error().detail);
        out.push_back(std::to_string(provider.client().connections_opened()));
        co_return out;
      }(&upstream),
      30s);
  EXPECT_EQ(answers[0], answer_for("alice"));
  EXPECT_EQ(answers[1], answer_for("bob"));
  EXPECT_EQ(answers[2], "2");
}

// 10,000 requests from 16 users at once against an upstream that, at random,
// sends interim responses first (in their own write or with the answer) and
// unsolicited extra responses after the answer: in the answer's write, or in
// a write of their own just after it.
struct ManyRequests {
  int right = 0, wrong = 0, failed = 0;
  std::uint64_t opened = 0, dropped = 0;
  std::string first_wrong;
  int interim_sent = 0, extra_sent = 0;
};

constexpr int users = 16;
constexpr int per_user = 625;

ManyRequests ten_thousand_requests(bool extra_in_its_own_write, net::ClientOptions client,
                                   bool reuse_connections) {
  std::mt19937 random(20261126);
  std::atomic<int> interim_sent{0}, extra_sent{0};
  RawUpstream upstream([&](const RawRequest& r) {
    RawReply reply;
    const auto mine = test::raw_sse_response({answer_for(user_text(r))});
    const int dice = static_cast<int>(random() % 100);
    std::string before;
    if (dice < 20)
      before = test::raw_head(103, {{"Link", "</a.js>; rel=preload"}});
    else if (dice < 30)
      before = test::raw_head(100, {});
    else if (dice < 35)
      before = test::raw_head(103, {}) + test::raw_head(100, {});
    if (!before.empty()) ++interim_sent;
    const bool extra = random() % 100 < 15;
    std::string after;
    if (extra) {
      ++extra_sent;
      after = test::raw_sse_response({"answer to somebody else " + std::to_string(random())});
    }
    if (!before.empty() && random() % 2 == 0) {
      reply.writes = {before, mine};
    } else {
      reply.writes = {before + mine};
    }
    if (!after.empty() && extra_in_its_own_write) reply.writes.push_back(after);
    if (!after.empty() && !extra_in_its_own_write) reply.writes.back() += after;
    return reply;
  });
  using Tally = ManyRequests;
  auto tally = test::run_coroutine(
      [](std::string url, net::ClientOptions c, bool reuse) -> awaitable<Tally> {
        auto ex = co_await asio::this_coro::executor;
        auto options = openai(url);
        options.reuse_connections = reuse;
        auto provider = std::make_shared<OpenAiProvider>(ex, options, c);
        auto tally = std::make_shared<Tally>();
        auto finished = std::make_shared<int>(0);
        runtime::Notifier done(ex);
        for (int user = 0; user < users; ++user) {
          asio::co_spawn(
              ex,
              [](std::shared_ptr<OpenAiProvider> p, std::shared_ptr<Tally> t, int u,
                 std::shared_ptr<int> count, runtime::Notifier* n) -> awaitable<void> {
                for (int i = 0; i < per_user; ++i) {
                  const auto text = "user " + std::to_string(u) + " message " + std::to_string(i);
                  auto r = co_await p->complete(said(text), nullptr);
                  if (!r) {
                    ++t->failed;
                  } else if (*r == answer_for(text)) {
                    ++t->right;
                  } else {
                    if (t->wrong++ == 0) t->first_wrong = text + " got " + *r;
                  }
                }
                ++*count;
                n->notify_all();
              }(provider, tally, user, finished, &done),
              asio::detached);
        }
        while (*finished < users) co_await done.wait_until(runtime::Deadline::after(60s));
        tally->opened = provider->client().connections_opened();
        tally->dropped = provider->client().connections_dropped();
        co_return *tally;
      }(upstream.base_url(), client, reuse_connections),
      300s);
  tally.interim_sent = interim_sent;
  tally.extra_sent = extra_sent;
  return tally;
}

void expect_everyone_got_their_own(const ManyRequests& tally, const char* setting) {
  EXPECT_EQ(tally.wrong, 0) << tally.first_wrong;
  EXPECT_EQ(tally.failed, 0);
  EXPECT_EQ(tally.right, users * per_user);
  EXPECT_GT(tally.interim_sent, 1000);
  EXPECT_GT(tally.extra_sent, 1000);
  std::printf(
      "[ figures  ] %s: %d requests, %d interim-led, %d followed by an extra response: %d right, "
      "%d wrong, %d failed; %llu connections opened, %llu dropped\n",
      setting, users * per_user, tally.interim_sent, tally.extra_sent, tally.right, tally.wrong,
      tally.failed, static_cast<unsigned long long>(tally.opened),
      static_cast<unsigned long long>(tally.dropped));
}

// With connections reused: extra responses that come with the answer are
// caught (bytes left over), and so is anything that arrived while idle.
TEST(UntrustedUpstream, TenThousandRequestsWithRandomInterimAndExtraResponses) {
  expect_everyone_got_their_own(ten_thousand_requests(false, {}, true),
                                "reused connections, extra response in the answer's write");
}

// An extra response written on its own just after the answer can arrive
// after a pooled connection was checked and handed to the next request:
// HTTP/1.1 cannot tell it from that request's answer. The provider's default,
// a connection per request, rules that out whatever the upstream does.
TEST(UntrustedUpstream, TenThousandRequestsWithExtraResponsesInTheirOwnWrite) {
  expect_everyone_got_their_own(ten_thousand_requests(true, {}, false),
                                "a connection per request, extra response in its own write");
}

TEST(UntrustedUpstream, A101NobodyAskedForAndEndlessInterimResponsesAreRefused) {
  RawUpstream switching([](const RawRequest&) {
    RawReply reply;
    reply.writes = {test::raw_head(101, {{"Upgrade", "websocket"}, {"Connection", "Upgrade"}})};
    reply.hang = false;
    return reply;
  });
  auto refused = ask(openai(switching.base_url()));
  ASSERT_FALSE(refused.result.has_value());
  EXPECT_EQ(refused.result.error().kind, Kind::protocol) << refused.result.error().detail;

  RawUpstream hinting([](const RawRequest&) {
    RawReply reply;
    reply.endless = test::raw_head(103, {{"Link", "</x>; rel=preload"}});
    return reply;
  });
  auto endless = ask(openai(hinting.base_url()));
  ASSERT_FALSE(endless.result.has_value());
  EXPECT_EQ(endless.result.error().kind, Kind::protocol) << endless.result.error().detail;
  EXPECT_LT(endless.took, 5s);
}

// --- Memory -------------------------------------------------------------

// A 200 MB reply in 1 MB deltas: the reply ends at max_reply_bytes with a
// stated truncation, and the read stops there, long before the upstream is done.
TEST(UntrustedUpstream, AHugeReplyIsCutAtItsBoundAndNotReadFurther) {
  const std::string delta(1000 * 1000, 'x');
  RawUpstream upstream([&](const RawRequest&) {
    RawReply reply;
    reply.writes = {test::raw_stream_head()};
    reply.endless = test::raw_chunk(test::raw_sse_piece(delta));
    reply.endless_limit = 200ull * 1000 * 1000;
    return reply;
  });
  auto options = openai(upstream.base_url());
  auto reply = ask(options);
  ASSERT_TRUE(reply.result.has_value()) << reply.result.error().detail;
  const auto notice = truncation_notice(options.max_reply_bytes);
  EXPECT_EQ(reply.result->size(), options.max_reply_bytes + notice.size());
  EXPECT_TRUE(reply.result->ends_with(notice));
  EXPECT_EQ(reply.joined(), *reply.result);
  EXPECT_LT(reply.took, 10s);
  EXPECT_TRUE(test::poll_until([&] { return upstream.closed_by_client() == 1; }, 10s));
  EXPECT_LT(upstream.bytes_sent(), 64ull * 1000 * 1000);  // what socket buffers hold, not 200 MB
}

// Each endless thing the upstream may send ends the attempt at once with a
// protocol error, the connection closed: no download until the timeout.
struct Endless {
  std::string name;
  std::string head;
  std::string unit;
};

TEST(UntrustedUpstream, EndlessFramingEndsTheAttemptAtOnce) {
  const std::vector<Endless> cases = {
      {"chunk extension", test::raw_stream_head() + "5;ext=", "b"},
      {"chunk size", test::raw_stream_head(), "0"},
      {"header", "HTTP/1.1 200 OK\r\nX-Endless: ", "a"},
      {"SSE line", test::raw_stream_head() + test::raw_chunk(test::raw_sse_piece("hi")),
       test::raw_chunk(std::string(4096, 'z'))},
      {"SSE event of many data lines", test::raw_stream_head(), test::raw_chunk("data: y\n")},
      {"non-streamed body",
       "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 999999999999\r\n\r\n",
       "{\"a\":1,"},
      {"error body", "HTTP/1.1 500 Oops\r\nContent-Length: 999999999999\r\n\r\n", "e"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    RawUpstream upstream([&](const RawRequest&) {
      RawReply reply;
      reply.writes = {c.head};
      reply.endless = c.unit;
      reply.endless_limit = 2ull << 30;
      return reply;
    });
    auto reply = ask(openai(upstream.base_url()));
    ASSERT_FALSE(reply.result.has_value());
    // Ended by a size limit, not by the attempt timeout, and long before the
    // upstream's 2 GiB: how long that took depends on the build (ThreadSanitizer
    // reads the tens of megabytes ten times slower), not on mooring.
    EXPECT_NE(reply.result.error().kind, Kind::timeout) << reply.result.error().detail;
    EXPECT_TRUE(test::poll_until([&] { return upstream.closed_by_client() == 1; }, 10s));
    EXPECT_LT(upstream.bytes_sent(), 64ull * 1000 * 1000);
  }
}

// An endless trailer after a whole reply: the reply stands, the read stops.
TEST(UntrustedUpstream, AnEndlessTrailerAfterAWholeReplyCostsOnlyTheConnection) {
  RawUpstream upstream([](const RawRequest&) {
    RawReply reply;
    reply.writes = {test::raw_stream_head() + test::raw_chunk(test::raw_sse_piece("complete")) +
                    test::raw_chunk(test::raw_sse_done) + "0\r\n"};
    reply.endless = "X-Trailer: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n";
    return reply;
  });
  auto reply = ask(openai(upstream.base_url()));
  ASSERT_TRUE(reply.result.has_value()) << reply.result.error().detail;
  EXPECT_EQ(*reply.result, "complete");
  EXPECT_LT(reply.took, 10s);
  EXPECT_TRUE(test::poll_until([&] { return upstream.closed_by_client() == 1; }, 10s));
}

// [DONE], then nothing: the body never ends and the connection stays open.
// The reply is whole at [DONE]; waiting for the rest would spend the attempt
// and fail a reply the user already read.
// A reasoning model thinks (reasoning_content, no text for the user) for
// longer than attempt_timeout, then answers. Defect: the attempt was cut at
// attempt_timeout and asked again, each time paid for, and the reply failed.
// attempt_timeout is how long the provider may send nothing.
TEST(UntrustedUpstream, AReasoningModelThinkingPastTheAttemptTimeoutIsNeitherCutNorAskedAgain) {
  const std::string thinking =
      test::raw_chunk("data: {\"choices\":[{\"delta\":{\"reasoning_content\":\"hmm\"}}]}\n\n");
  RawUpstream upstream([&](const RawRequest&) {
    RawReply reply;
    reply.writes = {test::raw_stream_head()};
    reply.endless = thinking;  // 8 steps, 100 ms apart
    reply.endless_pause = 100ms;
    reply.endless_limit = 8 * thinking.size();
    reply.late = test::raw_chunk(test::raw_sse_piece("The answer.")) +
                 test::raw_chunk("data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n") +
                 test::raw_chunk(test::raw_sse_done) + test::raw_last_chunk();
    return reply;
  });
  auto resilience = patient();
  resilience.attempt_timeout = 300ms;
  resilience.max_attempts = 3;
  auto reply = ask(openai(upstream.base_url()), resilience);
  ASSERT_TRUE(reply.result.has_value()) << reply.result.error().detail;
  EXPECT_EQ(*reply.result, "The answer.");
  EXPECT_EQ(reply.pieces, std::vector<std::string>{"The answer."});  // the thinking is not shown
  EXPECT_GE(reply.took, 700ms);
  EXPECT_EQ(upstream.request_count(), 1u);
}

// It thinks, then stops sending: the attempt fails attempt_timeout after the
// last step, and is not asked again (the answer had begun, and is paid for).
TEST(UntrustedUpstream, AStreamThatStallsFailsAtTheAttemptTimeoutAfterItsLastStepAndIsNotAskedAgain) {
  RawUpstream upstream([&](const RawRequest&) {
    RawReply reply;
    reply.writes = {test::raw_stream_head() +
                    test::raw_chunk("data: {\"choices\":[{\"delta\":{\"reasoning_content\":\"hmm\"}}]}\n\n")};
    return reply;  // then nothing, the connection held open
  });
  auto resilience = patient();
  resilience.attempt_timeout = 300ms;
  resilience.max_attempts = 3;
  auto reply = ask(openai(upstream.base_url()), resilience);
  ASSERT_FALSE(reply.result.has_value());
  EXPECT_EQ(reply.result.error().kind, Kind::timeout);
  EXPECT_EQ(reply.result.error().detail,
            "the provider sent nothing more for 300ms; not retried because the provider had begun "
            "its answer");
  EXPECT_TRUE(reply.pieces.empty());
  EXPECT_EQ(upstream.request_count(), 1u);
}

// The whole reply and [DONE] came, and the wait for the end of the body ran
// into the attempt's time. Defect: the reply, whole, was stored as failed
// ("did not answer in time") and counted against the provider.
TEST(UntrustedUpstream, AReplyWholeWhenTheAttemptsTimeRunsOutStands) {
  RawUpstream upstream([](const RawRequest&) {
    RawReply reply;
    reply.writes = {test::raw_stream_head() + test::raw_chunk(test::raw_sse_piece("complete")) +
                    test::raw_chunk(test::raw_sse_done)};
    return reply;  // then the end of the body never comes
  });
  auto resilience = patient();
  resilience.attempt_timeout = 300ms;  // within the second the end is awaited
  auto reply = ask(openai(upstream.base_url()), resilience);
  ASSERT_TRUE(reply.result.has_value()) << reply.result.error().detail;
  EXPECT_EQ(*reply.result, "complete");
}

// After the finish_reason, an event that is not JSON (a proxy's trailer).
// Defect: the whole reply failed as unreadable.
TEST(UntrustedUpstream, AnUnreadableEventAfterTheFinishReasonSpoilsNothing) {
  RawUpstream upstream([](const RawRequest&) {
    RawReply reply;
    reply.writes = {test::raw_stream_head() + test::raw_chunk(test::raw_sse_piece("complete answer")) +
                    test::raw_chunk("data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n") +
                    test::raw_chunk("data: {not json\n\n") + test::raw_chunk(test::raw_sse_done) +
                    test::raw_last_chunk()};
    return reply;
  });
  auto reply = ask(openai(upstream.base_url()));
  ASSERT_TRUE(reply.result.has_value()) << reply.result.error().detail;
  EXPECT_EQ(*reply.result, "complete answer");
}

TEST(UntrustedUpstream, AStreamHeldOpenAfterDoneEndsAtDone) {
  RawUpstream upstream([](const RawRequest&) {
    RawReply reply;
    reply.writes = {test::raw_stream_head() + test::raw_chunk(test::raw_sse_piece("complete")) +
                    test::raw_chunk(test::raw_sse_done)};
    return reply;  // then the next request is awaited on the open connection
  });
  auto resilience = patient();
  resilience.attempt_timeout = 5s;  // the rest of the body is awaited 1 s
  resilience.total_timeout = 10s;
  auto reply = ask(openai(upstream.base_url()), resilience);
  ASSERT_TRUE(reply.result.has_value()) << reply.result.error().detail;
  EXPECT_EQ(*reply.result, "complete");
  EXPECT_TRUE(test::poll_until([&] { return upstream.closed_by_client() == 1; }, 10s));
}

// The last event carries a finish_reason, and then nothing: no [DONE], no end
// of the body, the connection held open (with or without a usage event after
// the finish_reason). The reply is whole at its finish_reason; waiting for
// the rest would spend the attempt and fail a reply the user already read.
TEST(UntrustedUpstream, AStreamHeldOpenAfterAFinishReasonEndsThere) {
  const std::string finish =
      test::raw_chunk("data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n");
  const std::string usage = test::raw_chunk(
      "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":3}}\n\n");
  for (const bool with_usage : {false, true}) {
    SCOPED_TRACE(with_usage ? "a usage event after the finish_reason" : "nothing after it");
    RawUpstream upstream([&](const RawRequest&) {
      RawReply reply;
      reply.writes = {test::raw_stream_head() + test::raw_chunk(test::raw_sse_piece("all of it")) +
                      finish + (with_usage ? usage : "")};
      return reply;  // then the next request is awaited on the open connection
    });
    auto resilience = patient();
    resilience.attempt_timeout = 5s;  // the rest of the body is awaited 1 s
    resilience.total_timeout = 10s;
    auto reply = ask(openai(upstream.base_url()), resilience);
    ASSERT_TRUE(reply.result.has_value()) << reply.result.error().detail;
    EXPECT_EQ(*reply.result, "all of it");
    EXPECT_TRUE(test::poll_until([&] { return upstream.closed_by_client() == 1; }, 10s));
  }

  // A usage event a moment after the finish_reason, then [DONE]: read as before.
  RawUpstream usage_later([&](const RawRequest&) {
    RawReply reply;
    reply.writes = {test::raw_stream_head() + test::raw_chunk(test::raw_sse_piece("all of it")) +
                    finish};
    reply.late = usage + test::raw_chunk(test::raw_sse_done) + test::raw_last_chunk();
    reply.late_delay = 100ms;
    return reply;
  });
  auto reply = ask(openai(usage_later.base_url()));
  ASSERT_TRUE(reply.result.has_value()) << reply.result.error().detail;
  EXPECT_EQ(*reply.result, "all of it");
}

// [DONE], then keep-alive comments trickling in, each well inside the wait
// for the rest of the body: the wait is one budget for all of it, not one per
// read, so the trickle cannot stretch it to the attempt's deadline.
TEST(UntrustedUpstream, ATrickleAfterDoneDoesNotStretchTheWaitForTheEnd) {
  RawUpstream upstream([](const RawRequest&) {
    RawReply reply;
    reply.writes = {test::raw_stream_head() + test::raw_chunk(test::raw_sse_piece("complete")) +
                    test::raw_chunk(test::raw_sse_done)};
    reply.endless = test::raw_chunk(": still here\n\n");
    reply.endless_pause = 300ms;
    return reply;
  });
  auto resilience = patient();
  resilience.attempt_timeout = 5s;
  resilience.total_timeout = 10s;
  auto reply = ask(openai(upstream.base_url()), resilience);
  ASSERT_TRUE(reply.result.has_value()) << reply.result.error().detail;
  EXPECT_EQ(*reply.result, "complete");
  EXPECT_TRUE(test::poll_until([&] { return upstream.closed_by_client() == 1; }, 10s));
}

// The end of the body a moment after [DONE]: it is awaited, and the
// connection serves the next request (with reuse_connections on).
TEST(UntrustedUpstream, TheEndOfTheBodyAfterDoneKeepsTheConnection) {
  std::atomic<int> asked{0};
  RawUpstream upstream([&](const RawRequest&) {
    RawReply reply;
    const bool first = asked++ == 0;
    reply.writes = {test::raw_stream_head() +
                    test::raw_chunk(test::raw_sse_piece(first ? "one" : "two")) +
                    test::raw_chunk(test::raw_sse_done)};
    reply.late = test::raw_last_chunk();
    reply.late_delay = first ? 200ms : 0ms;
    return reply;
  });
  auto replies = test::run_coroutine(
      [](std::string url) -> awaitable<std::vector<std::string>> {
        auto ex = co_await asio::this_coro::executor;
        auto options = openai(url);
        options.reuse_connections = true;
        OpenAiProvider provider(ex, options);
        std::vector<std::string> out;
        for (int i = 0; i < 2; ++i) {
          auto result = co_await provider.complete(said("x"), nullptr);
          out.push_back(result ? *result : "failed: " + result.error().detail);
        }
        co_return out;
      }(upstream.base_url()),
      30s);
  EXPECT_EQ(replies, (std::vector<std::string>{"one", "two"}));
  EXPECT_EQ(upstream.connections(), 1);
}

// A piece reaches the user as soon as it arrives, not when the read buffer
// fills or the stream ends: the upstream holds the rest back (for 3 s, far
// longer than a request takes) and the first piece must be out before any of
// the rest was written.
TEST(UntrustedUpstream, APieceReachesTheUserBeforeTheStreamGoesOn) {
  RawUpstream upstream([](const RawRequest&) {
    RawReply reply;
    reply.writes = {test::raw_stream_head() + test::raw_chunk(test::raw_sse_piece("first "))};
    reply.late = test::raw_chunk(test::raw_sse_piece("second")) +
                 test::raw_chunk(test::raw_sse_done) + test::raw_last_chunk();
    reply.late_delay = 3s;
    return reply;
  });
  int late_writes_at_first = -1;  // the upstream's late writes when the first piece came
  auto reply = test::run_coroutine(
      [](std::string url, const RawUpstream* up, int* late_at_first) -> awaitable<Reply> {
        auto ex = co_await asio::this_coro::executor;
        OpenAiProvider provider(ex, openai(url));
        Reply r;
        r.result = co_await provider.complete(said("x"), [&](std::string_view p) {
          if (r.pieces.empty()) *late_at_first = up->late_writes();
          r.pieces.emplace_back(p);
        });
        co_return r;
      }(upstream.base_url(), &upstream, &late_writes_at_first),
      30s);
  ASSERT_TRUE(reply.result.has_value()) << reply.result.error().detail;
  EXPECT_EQ(*reply.result, "first second");
  EXPECT_EQ(reply.pieces, (std::vector<std::string>{"first ", "second"}));
  EXPECT_EQ(late_writes_at_first, 0) << "the first piece waited for the rest of the stream";
}

// --- Text ---------------------------------------------------------------

TEST(UntrustedUpstream, InvalidUtf8IsRepairedAndASplitCharacterIsJoined) {
  RawUpstream upstream([](const RawRequest&) {
    RawReply reply;
    reply.writes = {test::raw_stream_head() +
                    test::raw_chunk(test::raw_sse_piece_unescaped("bad \xFF\xFE byte, ")) +
                    test::raw_chunk(test::raw_sse_piece_unescaped("split \xE4\xB8")) +
                    test::raw_chunk(test::raw_sse_piece_unescaped("\xAD character, cut \xF0\x9F")) +
                    test::raw_chunk(test::raw_sse_done) + test::raw_last_chunk()};
    return reply;
  });
  auto reply = ask(openai(upstream.base_url()));
  ASSERT_TRUE(reply.result.has_value()) << reply.result.error().detail;
  const std::string fffd(replacement_character);
  EXPECT_EQ(*reply.result, "bad " + fffd + fffd + " byte, split 中 character, cut " + fffd);
  EXPECT_EQ(reply.joined(), *reply.result);
  for (const auto& piece : reply.pieces) EXPECT_EQ(repair_utf8(piece), piece);
}

// A server that streams per UTF-16 code unit (JavaScript's strings) may cut a
// character beyond U+FFFF between its two surrogate escapes, one in each
// event: the two are joined. A surrogate without its other half becomes U+FFFD.
TEST(UntrustedUpstream, ACharacterSplitBetweenItsSurrogateEscapesIsJoined) {
  RawUpstream streamed([](const RawRequest&) {
    RawReply reply;
    reply.writes = {test::raw_stream_head()};
    for (const char* escaped : {"smile \\ud83d", "\\ude00, whole \\ud83d\\ude00",
                                ", lone \\ude00 and \\ud83d", "!, last \\uD83D"})
      reply.writes[0] += test::raw_chunk(test::raw_sse_piece_unescaped(escaped));
    reply.writes[0] += test::raw_chunk(test::raw_sse_done) + test::raw_last_chunk();
    return reply;
  });
  auto reply = ask(openai(streamed.base_url()));
  ASSERT_TRUE(reply.result.has_value()) << reply.result.error().detail;
  const std::string fffd(replacement_character);
  EXPECT_EQ(*reply.result,
            "smile 😀, whole 😀, lone " + fffd + " and " + fffd + "!, last " + fffd);
  EXPECT_EQ(reply.joined(), *reply.result);
  for (const auto& piece : reply.pieces) EXPECT_EQ(repair_utf8(piece), piece);

  RawUpstream whole([](const RawRequest&) {
    RawReply reply;
    reply.writes = {test::raw_response(
        200, "{\"choices\":[{\"message\":{\"content\":\"a \\udbff b \\udc00\"}}]}")};
    return reply;
  });
  auto document = ask(openai(whole.base_url()));
  ASSERT_TRUE(document.result.has_value()) << document.result.error().detail;
  EXPECT_EQ(*document.result, "a " + fffd + " b " + fffd);
}

// --- Secrets --------------------------------------------------------------

TEST(UntrustedUpstream, TheKeyNeverReachesTheUserOrTheLog) {
  const std::vector<std::string> answers = {
      test::raw_response(401,
                         "{\"error\":{\"message\":\"Incorrect API key provided: " + secret_key +
                             ". You can find your API key at https://platform.openai.com.\"}}"),
      test::raw_response(500, "upstream proxy: forwarded Authorization: Bearer " + secret_key,
                         "text/plain"),
      test::raw_response(502, "{\"error\":\"bad gateway for key " + secret_key.substr(3) + "\"}"),
      test::raw_stream_head() +
          test::raw_chunk("data: {\"error\":{\"message\":\"quota exceeded for " + secret_key +
                          "\",\"type\":\"server_error\"}}\n\n") +
          test::raw_last_chunk(),
      test::raw_stream_head() +
          test::raw_chunk("data: not json, your key is " + secret_key + "\n\n") +
          test::raw_last_chunk(),
  };
  runtime::init_logging();
  runtime::set_log_level("debug");
  std::vector<std::string> lines;
  const int id = runtime::add_log_observer(
      [&](spdlog::level::level_enum, std::string_view line) { lines.emplace_back(line); });
  for (const auto& answer : answers) {
    RawUpstream upstream([&](const RawRequest&) {
      RawReply reply;
      reply.writes = {answer};
      reply.close = true;
      return reply;
    });
    auto reply = ask(openai(upstream.base_url()));
    ASSERT_FALSE(reply.result.has_value());
    const auto& error = reply.result.error();
    for (const auto* text : {&error.message, &error.detail}) {
      EXPECT_EQ(text->find(secret_key), std::string::npos) << *text;
      EXPECT_EQ(text->find(secret_key.substr(3)), std::string::npos) << *text;
    }
    EXPECT_NE(error.detail.find("[redacted]"), std::string::npos) << error.detail;
    // The user's description is fixed: nothing the upstream wrote.
    EXPECT_EQ(error.message.find("Incorrect"), std::string::npos) << error.message;
    EXPECT_EQ(error.message.find("quota"), std::string::npos) << error.message;
  }
  runtime::remove_log_observer(id);
  runtime::set_log_level("info");
  ASSERT_FALSE(lines.empty());
  for (const auto& line : lines)
    EXPECT_EQ(line.find(secret_key.substr(3)), std::string::npos) << line;
}

// --- Shapes -------------------------------------------------------------

// A body of the wrong shape is a protocol error at once, never an exception
// that leaves the user waiting for the attempt timeout.
TEST(UntrustedUpstream, MalformedShapesAreProtocolErrorsAtOnce) {
  const std::vector<std::string> documents = {"{\"choices\":[1]}",
                                              "{\"choices\":{}}",
                                              "{\"choices\":[]}",
                                              "[1,2,3]",
                                              "\"text\"",
                                              "null",
                                              "{\"choices\":[{\"message\":\"hi\"}]}",
                                              "{\"choices\":[{\"message\":{\"content\":42}}]}",
                                              "{\"choices\":[{}]}",
                                              "not json at all",
                                              "{\"choices\":[{\"message\":{\"content\":\"x\"}}]",
                                              std::string(40, '[') + std::string(40, ']')};
  const std::vector<std::string> events = {"{\"choices\":[1]}",
                                           "{\"choices\":{}}",
                                           "{\"choices\":[{\"delta\":7}]}",
                                           "{\"choices\":[{\"delta\":{\"content\":[\"x\"]}}]}",
                                           "[\"a\"]",
                                           "42",
                                           "{\"choices\":\"x\"}",
                                           "{broken"};
  std::vector<std::string> answers;
  for (const auto& d : documents) answers.push_back(test::raw_response(200, d));
  for (const auto& e : events)
    answers.push_back(test::raw_stream_head() + test::raw_chunk("data: " + e + "\n\n") +
                      test::raw_chunk(test::raw_sse_done) + test::raw_last_chunk());
  for (const auto& answer : answers) {
    SCOPED_TRACE(answer);
    RawUpstream upstream([&](const RawRequest&) {
      RawReply reply;
      reply.writes = {answer};
      return reply;
    });
    auto options = patient();
    options.max_attempts = 3;
    auto reply = ask(openai(upstream.base_url()), options);
    ASSERT_FALSE(reply.result.has_value());
    EXPECT_EQ(reply.result.error().kind, Kind::protocol) << reply.result.error().detail;
    EXPECT_EQ(reply.result.error().message, std::string(llm::unreadable_answer));
    EXPECT_LT(reply.took, 5s);
    EXPECT_EQ(upstream.request_count(), 1u);  // not retried: it would answer the same
  }
}

// A proxy in front of the provider that compresses what it forwards, though
// nobody asked: the answer is refused at once, saying what to do, and not
// asked for again (each attempt is a completion the provider bills).
// As a content coding, or as a transfer coding before chunked. Defect:
// "Transfer-Encoding: gzip, chunked" was read as plain text, and every
// attempt ended "without a reply", saying nothing of why.
TEST(UntrustedUpstream, ACompressedAnswerIsRefusedAtOnceAndNotAskedAgain) {
  using Headers = std::vector<std::pair<std::string, std::string>>;
  for (const auto& [headers, said] : std::vector<std::pair<Headers, std::string>>{
           {{{"Content-Encoding", "gzip"}, {"Transfer-Encoding", "chunked"}}, "Content-Encoding: gzip"},
           {{{"Transfer-Encoding", "gzip, chunked"}}, "Transfer-Encoding: gzip"}}) {
    SCOPED_TRACE(said);
    RawUpstream upstream([&headers](const RawRequest&) {
      Headers all{{"Content-Type", "text/event-stream"}};
      all.insert(all.end(), headers.begin(), headers.end());
      RawReply reply;
      reply.writes = {test::raw_head(200, all) +
                      test::raw_chunk(std::string("\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03", 10)) +
                      test::raw_last_chunk()};
      return reply;
    });
    auto options = patient();
    options.max_attempts = 4;
    auto reply = ask(openai(upstream.base_url()), options);
    ASSERT_FALSE(reply.result.has_value());
    const auto& error = reply.result.error();
    EXPECT_EQ(error.kind, Kind::protocol) << error.detail;
    EXPECT_FALSE(error.retryable);
    EXPECT_NE(error.detail.find("compressed (" + said + ")"), std::string::npos) << error.detail;
    EXPECT_NE(error.detail.find("turn that off"), std::string::npos) << error.detail;
    EXPECT_EQ(upstream.request_count(), 1u) << error.detail;
    // And mooring had asked for no compression.
    ASSERT_EQ(upstream.requests().size(), 1u);
    EXPECT_EQ(upstream.requests()[0].head.find("Accept-Encoding"), std::string::npos)
        << upstream.requests()[0].head;
  }
}

// A redirect is not followed; where it points is said.
TEST(UntrustedUpstream, ARedirectSaysWhereItPoints) {
  RawUpstream upstream([](const RawRequest&) {
    RawReply reply;
    reply.writes = {test::raw_head(301, {{"Location", "https://api.example.com/v1/chat/completions"},
                                         {"Content-Type", "text/html"},
                                         {"Content-Length", "18"}}) +
                    "<html>moved</html>"};
    return reply;
  });
  auto reply = ask(openai(upstream.base_url()));
  ASSERT_FALSE(reply.result.has_value());
  EXPECT_NE(reply.result.error().detail.find(
                "(it points to https://api.example.com/v1/chat/completions: if that is the API's "
                "address, set provider.base_url to it)"),
            std::string::npos)
      << reply.result.error().detail;
}

TEST(UntrustedUpstream, ANonStreamedAnswerOfTheRightShapeIsAccepted) {
  RawUpstream upstream([](const RawRequest&) {
    RawReply reply;
    reply.writes = {test::raw_response(
        200,
        "{\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":\"whole\"},"
        "\"finish_reason\":\"stop\"}]}")};
    return reply;
  });
  auto reply = ask(openai(upstream.base_url()));
  ASSERT_TRUE(reply.result.has_value()) << reply.result.error().detail;
  EXPECT_EQ(*reply.result, "whole");
}

// --- Endings ------------------------------------------------------------

TEST(UntrustedUpstream, AStreamEndingWithoutDoneOrFinishReasonIsCutOff) {
  RawUpstream cut([](const RawRequest&) {
    RawReply reply;
    reply.writes = {test::raw_stream_head() + test::raw_chunk(test::raw_sse_piece("half an ")) +
                    test::raw_chunk(test::raw_sse_piece("answ")) + test::raw_last_chunk()};
    return reply;
  });
  auto reply = ask(openai(cut.base_url()));
  ASSERT_FALSE(reply.result.has_value());
  EXPECT_EQ(reply.result.error().kind, Kind::cut_off) << reply.result.error().detail;
  EXPECT_EQ(reply.joined(), "half an answ");  // what the user saw, as it came

  // A finish_reason ends a stream as well as [DONE] does.
  RawUpstream finished([](const RawRequest&) {
    RawReply reply;
    reply.writes = {
        test::raw_stream_head() + test::raw_chunk(test::raw_sse_piece("all of it")) +
        test::raw_chunk("data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n") +
        test::raw_last_chunk()};
    return reply;
  });
  auto whole = ask(openai(finished.base_url()));
  ASSERT_TRUE(whole.result.has_value()) << whole.result.error().detail;
  EXPECT_EQ(*whole.result, "all of it");
}

// Defect: a reply its content filter took away, and an empty one, were told
// to the user as "an answer mooring cannot read". The filter is the provider
// declining this message (not a fault of the provider's: no retry, no
// breaker); an empty reply says so, and to send the message again.
TEST(UntrustedUpstream, AnEmptyReplySaysWhyAndAFilteredOneIsTheProviderDeclining) {
  const auto answer_with = [](std::string reason) {
    return test::raw_stream_head() +
           test::raw_chunk("data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"" + reason +
                           "\"}]}\n\n") +
           test::raw_chunk(test::raw_sse_done) + test::raw_last_chunk();
  };
  for (const auto& [reason, kind, message] :
       std::vector<std::tuple<std::string, Kind, std::string>>{
           {"content_filter", Kind::rejected,
            "the provider declined to answer this message (its content filter); put it another "
            "way"},
           {"stop", Kind::protocol, "the provider sent an empty reply; send your message again"}}) {
    SCOPED_TRACE(reason);
    RawUpstream upstream([&](const RawRequest&) {
      RawReply reply;
      reply.writes = {answer_with(reason)};
      return reply;
    });
    auto options = patient();
    options.max_attempts = 3;
    auto reply = ask(openai(upstream.base_url()), options);
    ASSERT_FALSE(reply.result.has_value());
    EXPECT_EQ(reply.result.error().kind, kind) << reply.result.error().detail;
    EXPECT_EQ(reply.result.error().message, message);
    EXPECT_NE(reply.result.error().detail.find(reason), std::string::npos)
        << reply.result.error().detail;
    EXPECT_EQ(upstream.request_count(), 1u);
  }
}

// --- ResilientProvider --------------------------------------------------

// Requests the provider rejected (an image it cannot fetch, a context too
// long) are those requests' failures: they never switch the bot off for
// everyone. Upstream faults do.
TEST(UntrustedUpstream, OnlyUpstreamFaultsOpenTheBreaker) {
  std::atomic<int> status{400};
  RawUpstream upstream([&](const RawRequest&) {
    RawReply reply;
    reply.writes = {test::raw_response(status, "{\"error\":{\"message\":\"no\"}}")};
    return reply;
  });
  auto kinds = test::run_coroutine(
      [](std::string url, std::atomic<int>* s) -> awaitable<std::vector<Kind>> {
        auto ex = co_await asio::this_coro::executor;
        ResilienceOptions o = patient();
        o.breaker_threshold = 2;
        o.breaker_cooldown = 1h;
        ResilientProvider provider(ex, std::make_shared<OpenAiProvider>(ex, openai(url)), o,
                                   nullptr);
        std::vector<Kind> out;
        for (int status : {400, 404, 413, 422, 401, 403}) {
          *s = status;
          for (int i = 0; i < 3; ++i)
            out.push_back((co_await provider.complete(said("x"), nullptr)).error().kind);
        }
        *s = 503;
        for (int i = 0; i < 3; ++i)
          out.push_back((co_await provider.complete(said("x"), nullptr)).error().kind);
        co_return out;
      }(upstream.base_url(), &status),
      60s);
  ASSERT_EQ(kinds.size(), 21u);
  for (std::size_t i = 0; i < 18; ++i) EXPECT_EQ(kinds[i], Kind::rejected) << i;
  EXPECT_EQ(kinds[18], Kind::status);
  EXPECT_EQ(kinds[19], Kind::status);
  EXPECT_EQ(kinds[20], Kind::circuit_open);
}

TEST(UntrustedUpstream, IsUpstreamFaultNamesWhatCountsTowardTheBreaker) {
  auto status = [](int s) {
    ProviderError e;
    e.kind = Kind::status;
    e.status = s;
    return e;
  };
  EXPECT_TRUE(is_upstream_fault(status(500)));
  EXPECT_TRUE(is_upstream_fault(status(429)));
  EXPECT_TRUE(is_upstream_fault(ProviderError{.kind = Kind::timeout}));
  EXPECT_TRUE(is_upstream_fault(ProviderError{.kind = Kind::network}));
  EXPECT_TRUE(is_upstream_fault(ProviderError{.kind = Kind::cut_off}));
  EXPECT_FALSE(is_upstream_fault(ProviderError{.kind = Kind::rejected}));
  EXPECT_FALSE(is_upstream_fault(ProviderError{.kind = Kind::overloaded}));
  EXPECT_FALSE(is_upstream_fault(ProviderError{.kind = Kind::cancelled}));
}

// No attempt starts with too little time left: the 260 ms attempt leaves
// 40 ms of the 300 ms request, under the 50 ms minimum.
TEST(UntrustedUpstream, NoAttemptStartsWithTooLittleTimeLeft) {
  RawUpstream upstream([](const RawRequest&) {
    RawReply reply;
    reply.hang = true;
    return reply;
  });
  auto options = patient();
  options.attempt_timeout = 260ms;
  options.total_timeout = 300ms;
  options.max_attempts = 4;
  auto reply = ask(openai(upstream.base_url()), options);
  ASSERT_FALSE(reply.result.has_value());
  EXPECT_EQ(reply.result.error().kind, Kind::timeout);
  // The upstream counts a request when its thread has read it, which may be
  // after the client gave up on it. ask() has returned: no other can come.
  ASSERT_TRUE(test::poll_until([&] { return upstream.request_count() >= 1; }, 10s));
  EXPECT_EQ(upstream.request_count(), 1u) << reply.result.error().detail;
}

// A provider that throws inside an attempt: the failure comes back at once
// as a value, not after the attempt timeout.
class ThrowingProvider : public Provider {
 public:
  awaitable<CompletionResult> complete(const ChatRequest&, PieceSink) override {
    throw std::invalid_argument("not an object");
    co_return failure({});
  }
  std::string_view kind() const override { return "throwing"; }
};

TEST(UntrustedUpstream, AnExceptionInsideAnAttemptEndsItAtOnce) {
  auto reply = test::run_coroutine(
      []() -> awaitable<Reply> {
        auto ex = co_await asio::this_coro::executor;
        ResilientProvider provider(ex, std::make_shared<ThrowingProvider>(), patient(), nullptr);
        Reply r;
        const auto started = Clock::now();
        r.result = co_await provider.complete(said("x"), nullptr);
        r.took = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - started);
        co_return r;
      }(),
      60s);
  ASSERT_FALSE(reply.result.has_value());
  EXPECT_EQ(reply.result.error().kind, Kind::protocol);
  EXPECT_LT(reply.took, 5s);
}

}  // namespace
}  // namespace mooring::llm
