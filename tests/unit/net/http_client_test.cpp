#include "net/http_client.hpp"

#include "support/fake_upstream.hpp"
#include "support/raw_upstream.hpp"
#include "support/wait.hpp"

#include <gtest/gtest.h>

namespace mooring::net {
namespace {

using namespace std::chrono_literals;
using test::RawReply;
using test::RawRequest;
using test::RawUpstream;

struct Exchange {
  boost::system::result<ClientResponse, ClientError> result{boost::system::in_place_error,
                                                            ClientError{}};
  std::string body;
  std::chrono::milliseconds took{};
};

// Sends `count` GETs one after another through one client.
std::vector<Exchange> get(const std::string& url, int count, ClientOptions options = {},
                          std::uint64_t* opened = nullptr, std::size_t stop_after = 0) {
  return test::run_coroutine(
      [](std::string u, int n, ClientOptions o, std::uint64_t* opened,
         std::size_t stop) -> awaitable<std::vector<Exchange>> {
        HttpClient client(co_await asio::this_coro::executor, o);
        std::vector<Exchange> out;
        for (int i = 0; i < n; ++i) {
          Exchange e;
          const auto started = Clock::now();
          // Named, not a temporary among co_await's arguments (GCC 12
          // destroys such a temporary twice).
          ClientRequest request;
          request.url = u;
          e.result = co_await client.send(std::move(request), nullptr, [&](std::string_view piece) {
            e.body += piece;
            return stop == 0 || e.body.size() < stop;
          });
          e.took = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - started);
          out.push_back(std::move(e));
        }
        if (opened) *opened = client.connections_opened();
        co_return out;
      }(url, count, options, opened, stop_after),
      60s);
}

TEST(HttpClient, InterimResponsesAreSkippedAndTheConnectionKept) {
  RawUpstream upstream([](const RawRequest& r) {
    RawReply reply;
    const auto body = "reply " + std::to_string(r.index);
    if (r.index == 0)
      reply.writes = {test::raw_head(103, {{"Link", "</a>"}}), test::raw_response(200, body)};
    if (r.index == 1)
      reply.writes = {test::raw_head(100, {}) + test::raw_head(102, {}) +
                      test::raw_response(200, body)};
    if (r.index >= 2) reply.writes = {test::raw_response(200, body)};
    return reply;
  });
  std::uint64_t opened = 0;
  auto exchanges = get(upstream.base_url(), 3, {}, &opened);
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(exchanges[i].result.has_value()) << exchanges[i].result.error().message;
    EXPECT_EQ(exchanges[i].result->status, 200);
    EXPECT_EQ(exchanges[i].body, "reply " + std::to_string(i));
  }
  EXPECT_EQ(opened, 1u);  // an interim response is no surprise
}

TEST(HttpClient, BytesLeftAfterAResponseDropTheConnection) {
  RawUpstream upstream([](const RawRequest& r) {
    RawReply reply;
    reply.writes = {test::raw_response(200, "reply " + std::to_string(r.connection)) +
                    test::raw_response(200, "nobody asked for this")};
    return reply;
  });
  std::uint64_t opened = 0;
  auto exchanges = get(upstream.base_url(), 3, {}, &opened);
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(exchanges[i].result.has_value()) << exchanges[i].result.error().message;
    EXPECT_EQ(exchanges[i].body, "reply " + std::to_string(i + 1));
  }
  EXPECT_EQ(opened, 3u);
}

TEST(HttpClient, RedirectsAreNotFollowedAndNoCompressionIsAskedFor) {
  RawUpstream upstream([](const RawRequest&) {
    RawReply reply;
    reply.writes = {
        test::raw_head(302, {{"Location", "http://127.0.0.1:1/steal"}, {"Content-Length", "0"}})};
    return reply;
  });
  auto exchanges = get(upstream.base_url(), 1);
  ASSERT_TRUE(exchanges[0].result.has_value());
  EXPECT_EQ(exchanges[0].result->status, 302);
  ASSERT_EQ(upstream.request_count(), 1u);
  EXPECT_EQ(upstream.requests()[0].head.find("Accept-Encoding"), std::string::npos)
      << upstream.requests()[0].head;
}

// A 50 MB header, an endless chunk extension, an endless trailer: refused as
// soon as they pass the bound of the read buffer, not after a download.
TEST(HttpClient, EndlessHeadsChunkLinesAndTrailersAreRefusedAtTheBound) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"HTTP/1.1 200 OK\r\nX-Big: ", "a"},
      {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4;name=", "v"},
      {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nbody\r\n0\r\n", "X-T: t\r\n"},
  };
  for (const auto& [head, unit] : cases) {
    SCOPED_TRACE(head);
    RawUpstream upstream([&](const RawRequest&) {
      RawReply reply;
      reply.writes = {head};
      reply.endless = unit;
      reply.endless_limit = 50ull * 1000 * 1000;
      return reply;
    });
    auto exchanges = get(upstream.base_url(), 1);
    ASSERT_FALSE(exchanges[0].result.has_value());
    EXPECT_NE(exchanges[0].result.error().message.find("over 16384 bytes"), std::string::npos)
        << exchanges[0].result.error().message;
    EXPECT_LT(exchanges[0].took, 5s);
    EXPECT_TRUE(test::poll_until([&] { return upstream.closed_by_client() == 1; }, 10s));
  }
}

TEST(HttpClient, ASinkThatStopsEndsTheReadAndTheConnection) {
  RawUpstream upstream([](const RawRequest&) {
    RawReply reply;
    reply.writes = {"HTTP/1.1 200 OK\r\nContent-Length: 999999999999\r\n\r\n"};
    reply.endless = "0123456789";
    return reply;
  });
  std::uint64_t opened = 0;
  auto exchanges = get(upstream.base_url(), 2, {}, &opened, 100 * 1000);
  for (const auto& e : exchanges) {
    ASSERT_TRUE(e.result.has_value()) << e.result.error().message;
    EXPECT_FALSE(e.result->complete);
    EXPECT_LT(e.body.size(), 200u * 1000);
  }
  EXPECT_EQ(opened, 2u);
  EXPECT_TRUE(test::poll_until([&] { return upstream.closed_by_client() == 2; }, 10s));
}

TEST(HttpClient, TooManyInterimResponsesOrAnUnaskedSwitchAreErrors) {
  RawUpstream switching([](const RawRequest&) {
    RawReply reply;
    reply.writes = {test::raw_head(101, {{"Upgrade", "h2c"}})};
    return reply;
  });
  auto switched = get(switching.base_url(), 1);
  ASSERT_FALSE(switched[0].result.has_value());
  EXPECT_NE(switched[0].result.error().message.find("101"), std::string::npos);

  RawUpstream hinting([](const RawRequest&) {
    RawReply reply;
    reply.endless = test::raw_head(103, {});
    reply.endless_limit = 100ull * 1000 * 1000;
    return reply;
  });
  auto hinted = get(hinting.base_url(), 1);
  ASSERT_FALSE(hinted[0].result.has_value());
  EXPECT_NE(hinted[0].result.error().message.find("interim"), std::string::npos);
  EXPECT_LT(hinted[0].took, 5s);
}

// Retry-After as seconds or as an HTTP date; a date too far ahead for the
// clock's nanoseconds (past 2262) is a long wait, not one that wrapped into
// the past and asks for a retry at once.
TEST(HttpClient, RetryAfterDatesAndSecondsAtTheirExtremes) {
  const auto now = std::chrono::system_clock::from_time_t(1'800'000'000);  // 2027-01-15 08:00:00
  EXPECT_EQ(parse_retry_after("Fri, 15 Jan 2027 08:00:10 GMT", now), runtime::Duration(10s));
  EXPECT_EQ(parse_retry_after("Fri, 15 Jan 2027 07:59:00 GMT", now), runtime::Duration::zero());
  EXPECT_EQ(parse_retry_after("Fri, 31 Dec 9999 23:59:59 GMT", now), runtime::Duration(24h));
  EXPECT_EQ(parse_retry_after("Sat, 12 Apr 2262 00:00:00 GMT", now), runtime::Duration(24h));
  EXPECT_EQ(parse_retry_after("Thu, 01 Jan 1970 00:00:00 GMT", now), runtime::Duration::zero());
  EXPECT_EQ(parse_retry_after("0", now), runtime::Duration::zero());
  EXPECT_EQ(parse_retry_after("99999999999999999999", now), runtime::Duration(24h));
  EXPECT_EQ(parse_retry_after("soon", now), std::nullopt);
  EXPECT_EQ(parse_retry_after("", now), std::nullopt);
}

// getaddrinfo cannot be interrupted: a lookup the DNS never answers must
// still end the request at the lookup timeout, with a message that names the
// host and says where to look.
TEST(HttpClient, ALookupTheDnsNeverAnswersEndsTheRequestAtTheLookupTimeout) {
  test::SlowDns dns;
  ClientOptions options;
  options.lookup = dns.lookup();
  options.lookup_timeout = 200ms;
  auto exchanges = get("http://slow.test:9/v1", 1, options);
  ASSERT_FALSE(exchanges[0].result.has_value());
  const auto& error = exchanges[0].result.error();
  EXPECT_EQ(error.code, asio::error::timed_out);
  EXPECT_EQ(error.message,
            "the lookup of slow.test did not finish within 200ms; check the DNS servers "
            "(/etc/resolv.conf) or put an IP address in the URL");
  EXPECT_GE(exchanges[0].took, 200ms);
  EXPECT_LT(exchanges[0].took, 5s);  // a generous bound: only a wait for the DNS fails it
  // The io_context of the request is gone; the lookup is still blocked.
  EXPECT_EQ(dns.begun(), 1);
  EXPECT_EQ(dns.ended(), 0);
}

TEST(HttpClient, CancellingARequestEndsItsLookupAtOnce) {
  test::SlowDns dns;
  asio::io_context io;
  ClientOptions options;
  options.lookup = dns.lookup();
  options.lookup_timeout = std::chrono::hours(1);
  HttpClient client(io.get_executor(), options);
  asio::cancellation_signal cancel;
  std::optional<boost::system::result<ClientResponse, ClientError>> outcome;
  std::exception_ptr failure;
  asio::co_spawn(
      io,
      [](HttpClient& c) -> awaitable<boost::system::result<ClientResponse, ClientError>> {
        ClientRequest request;
        request.url = "http://slow.test:9/v1";
        co_return co_await c.send(std::move(request), nullptr, nullptr);
      }(client),
      asio::bind_cancellation_slot(
          cancel.slot(), [&](std::exception_ptr e, boost::system::result<ClientResponse, ClientError> r) {
            failure = e;
            outcome.emplace(std::move(r));
          }));
  const auto run_until = [&io](const std::function<bool()>& done, std::chrono::milliseconds limit) {
    const auto deadline = Clock::now() + limit;
    while (!done() && Clock::now() < deadline) io.run_one_for(10ms);
    return done();
  };
  ASSERT_TRUE(run_until([&] { return dns.begun() == 1; }, 10s));
  EXPECT_EQ(client.lookups_running(), 1u);
  const auto cancelled_at = Clock::now();
  cancel.emit(asio::cancellation_type::terminal);
  ASSERT_TRUE(run_until([&] { return outcome.has_value(); }, 10s));
  EXPECT_LT(Clock::now() - cancelled_at, 1s);
  EXPECT_FALSE(failure);
  ASSERT_FALSE(outcome->has_value());
  EXPECT_EQ(outcome->error().code, asio::error::operation_aborted);
  // The lookup goes on without anyone waiting; once the DNS answers, its
  // thread ends and frees its place.
  EXPECT_EQ(client.lookups_running(), 1u);
  dns.open();
  EXPECT_TRUE(test::poll_until([&] { return client.lookups_running() == 0; }, 10s));
}

// A dead DNS cannot make the client start thread after thread: beyond
// max_lookups waiting at once a request fails at once, saying why; when the
// DNS answers again the places free and requests go through.
TEST(HttpClient, LookupsWaitingForTheDnsAreBoundedAndFreedWhenItAnswers) {
  RawUpstream upstream([](const RawRequest&) {
    RawReply reply;
    reply.writes = {test::raw_response(200, "through")};
    return reply;
  });
  const auto port = upstream.base_url().substr(upstream.base_url().rfind(':') + 1);
  const auto url = "http://upstream.test:" + port.substr(0, port.find('/')) + "/v1";
  test::SlowDns dns;
  ClientOptions options;
  options.lookup = dns.lookup();
  options.lookup_timeout = 50ms;
  options.max_lookups = 2;
  auto outcomes = test::run_coroutine(
      [](std::string u, ClientOptions o, test::SlowDns& d) -> awaitable<std::vector<Exchange>> {
        HttpClient client(co_await asio::this_coro::executor, o);
        std::vector<Exchange> out;
        for (int i = 0; i < 4; ++i) {
          if (i == 3) {
            d.open();
            std::function<bool()> all_ended = [&] { return client.lookups_running() == 0; };
            const bool freed = co_await test::poll_until_async(all_ended, 10s);
            if (!freed) throw std::runtime_error("the lookup threads did not end");
          }
          Exchange e;
          const auto started = Clock::now();
          ClientRequest request;
          request.url = u;
          e.result = co_await client.send(std::move(request), nullptr,
                                          [&](std::string_view piece) {
                                            e.body += piece;
                                            return true;
                                          });
          e.took = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - started);
          out.push_back(std::move(e));
        }
        co_return out;
      }(url, options, dns),
      60s);
  ASSERT_EQ(outcomes.size(), 4u);
  for (int i = 0; i < 2; ++i) {
    ASSERT_FALSE(outcomes[i].result.has_value());
    EXPECT_EQ(outcomes[i].result.error().code, asio::error::timed_out);
  }
  ASSERT_FALSE(outcomes[2].result.has_value());
  EXPECT_EQ(outcomes[2].result.error().message,
            "cannot look up upstream.test: 2 lookups of host names are still waiting for DNS, "
            "the limit; check the DNS servers (/etc/resolv.conf) or put an IP address in the URL");
  EXPECT_LT(outcomes[2].took, 50ms);
  EXPECT_EQ(dns.begun(), 3);  // the refused request started no lookup
  ASSERT_TRUE(outcomes[3].result.has_value()) << outcomes[3].result.error().message;
  EXPECT_EQ(outcomes[3].result->status, 200);
  EXPECT_EQ(outcomes[3].body, "through");
}

}  // namespace
}  // namespace mooring::net
