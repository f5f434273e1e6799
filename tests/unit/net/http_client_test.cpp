#include "net/http_client.hpp"

#include "support/fake_upstream.hpp"
#include "support/raw_upstream.hpp"
#include "support/wait.hpp"

#include <gtest/gtest.h>

#include <algorithm>

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

// The largest lengths an upstream can announce: 2^63 and 2^64 - 1 are read
// until the sink stops, never allocated up front; 2^64 does not fit the
// parser's count and is an error. No request hangs, and each connection is closed.
TEST(HttpClient, TheLargestContentLengthsEndTheReadWithoutAllocatingThem) {
  for (const char* length : {"9223372036854775808", "18446744073709551615",
                             "18446744073709551616"}) {
    RawUpstream upstream([length](const RawRequest&) {
      RawReply reply;
      reply.writes = {std::string("HTTP/1.1 200 OK\r\nContent-Length: ") + length +
                      "\r\n\r\n"};
      reply.endless = "0123456789";
      return reply;
    });
    auto exchanges = get(upstream.base_url(), 1, {}, nullptr, 100 * 1000);
    ASSERT_EQ(exchanges.size(), 1u);
    const auto& e = exchanges[0];
    if (std::string_view(length) == "18446744073709551616") {
      ASSERT_FALSE(e.result.has_value()) << length;
      EXPECT_NE(e.result.error().message.find("bad Content-Length"), std::string::npos)
          << e.result.error().message;
      EXPECT_TRUE(e.body.empty());
    } else {
      ASSERT_TRUE(e.result.has_value()) << length << ": " << e.result.error().message;
      EXPECT_FALSE(e.result->complete) << length;
      EXPECT_LT(e.body.size(), 200u * 1000) << length;
    }
    EXPECT_TRUE(test::poll_until([&] { return upstream.closed_by_client() == 1; }, 10s)) << length;
  }
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
  // Seconds with a fraction, rounded up; not a number that only looks like one.
  EXPECT_EQ(parse_retry_after("3.5", now), runtime::Duration(4s));
  EXPECT_EQ(parse_retry_after("3.000", now), runtime::Duration(3s));
  EXPECT_EQ(parse_retry_after("0.001", now), runtime::Duration(1s));
  for (const char* not_seconds : {"3.", ".5", "3.5.1", "-1", "1e3", "3,5"})
    EXPECT_EQ(parse_retry_after(not_seconds, now), std::nullopt) << not_seconds;
  EXPECT_EQ(parse_retry_after("soon", now), std::nullopt);
  EXPECT_EQ(parse_retry_after("", now), std::nullopt);
}

// Defect: Host named the host without its port (RFC 9112 3.2: the port is
// part of it unless it is the scheme's), which an upstream behind a virtual
// host on another port may not recognise.
TEST(HttpClient, TheHostHeaderNamesThePortUnlessItIsTheSchemes) {
  RawUpstream upstream([](const RawRequest&) {
    RawReply reply;
    reply.writes = {test::raw_response(200, "ok")};
    return reply;
  });
  const auto url = upstream.base_url() + "/models";  // http://127.0.0.1:PORT/v1/models
  auto got = get(url, 1);
  ASSERT_TRUE(got.at(0).result.has_value()) << got.at(0).result.error().message;
  const auto authority = url.substr(7, url.find('/', 7) - 7);
  const auto head = upstream.requests().at(0).head;
  EXPECT_NE(head.find("\r\nHost: " + authority + "\r\n"), std::string::npos) << head;
}

// A proxy given as curl takes it, "host:port" alone, is an http:// proxy;
// one that is not an http:// URL is refused in words that leave out its
// password. Defect: "host:port" was refused, and the refusal logged
// "socks5h://alice:<password>@..." whole, at every request.
TEST(HttpClient, AProxyWithoutSchemeIsHttpAndARefusedOneKeepsItsPasswordOutOfTheMessage) {
  RawUpstream proxy([](const RawRequest& r) {
    RawReply reply;
    reply.writes = {test::raw_response(200, "via proxy for " + r.target)};
    return reply;
  });
  const auto port = proxy.base_url().substr(std::string("http://127.0.0.1:").size());
  ClientOptions options;
  options.http_proxy = "127.0.0.1:" + port.substr(0, port.find('/'));
  options.no_proxy = "";
  auto via = get("http://upstream.invalid/v1/models", 1, options);
  ASSERT_TRUE(via.at(0).result.has_value()) << via.at(0).result.error().message;
  EXPECT_EQ(via.at(0).body, "via proxy for http://upstream.invalid/v1/models");

  options.http_proxy = "socks5h://alice:Passw0rd-Corp2024@10.0.0.1:1080";
  auto refused = get("http://upstream.invalid/v1/models", 1, options);
  ASSERT_FALSE(refused.at(0).result.has_value());
  const auto& message = refused.at(0).result.error().message;
  EXPECT_EQ(message, "the proxy setting \"socks5h://[credentials]@10.0.0.1:1080\" is not an http:// URL");
  EXPECT_EQ(message.find("Passw0rd"), std::string::npos);
}

// getaddrinfo cannot be interrupted: a lookup the DNS never answers must
// still end the request at the lookup timeout, with a message that names the
// host and says where to look.
TEST(HttpClient, ALookupTheDnsNeverAnswersEndsTheRequestAtTheLookupTimeout) {
  test::SlowDns dns;
  ClientOptions options;
  options.lookups = std::make_shared<HostLookups>(dns.lookup());
  options.lookup_timeout = 200ms;
  auto exchanges = get("http://slow.test:9/v1", 1, options);
  ASSERT_FALSE(exchanges[0].result.has_value());
  const auto& error = exchanges[0].result.error();
  EXPECT_EQ(error.code, asio::error::timed_out);
  EXPECT_EQ(error.message,
            "the lookup of slow.test did not finish within 200ms; check the DNS servers "
            "(/etc/resolv.conf) or put an IP address in the URL");
  EXPECT_TRUE(error.lookup_unfinished);
  EXPECT_GE(exchanges[0].took, 200ms);
  EXPECT_LT(exchanges[0].took, 5s);  // a generous bound: only a wait for the DNS fails it
  // The io_context of the request is gone; the lookup is still blocked.
  EXPECT_EQ(dns.begun(), 1);
  EXPECT_EQ(dns.ended(), 0);
}

// What a lookup can give back besides addresses: an error, nothing, an
// exception. Each ends the request with an error naming the host; an address
// in the URL never reaches the lookup at all.
TEST(HttpClient, ALookupThatFailsThrowsOrFindsNothingEndsTheRequestNamingTheHost) {
  using Found = boost::system::result<std::vector<asio::ip::tcp::endpoint>>;
  const std::vector<std::pair<std::string, HostLookup>> lookups = {
      {"an error", [](const std::string&, const std::string&) -> Found {
         return error_code(asio::error::host_not_found);
       }},
      {"nothing", [](const std::string&, const std::string&) -> Found {
         return std::vector<asio::ip::tcp::endpoint>{};
       }},
      {"an exception", [](const std::string&, const std::string&) -> Found {
         throw std::runtime_error("the resolver broke");
       }},
  };
  for (const auto& [what, lookup] : lookups) {
    SCOPED_TRACE(what);
    ClientOptions options;
    options.lookups = std::make_shared<HostLookups>(lookup);
    auto exchanges = get("http://nowhere.test:9/v1", 1, options);
    ASSERT_FALSE(exchanges[0].result.has_value());
    EXPECT_NE(exchanges[0].result.error().message.find("nowhere.test"), std::string::npos)
        << exchanges[0].result.error().message;
    EXPECT_FALSE(exchanges[0].result.error().lookup_unfinished);  // it ended, with no address
    EXPECT_EQ(options.lookups->threads_running(), 0u);
  }
  int asked = 0;
  ClientOptions options;
  options.lookups = std::make_shared<HostLookups>(
      [&asked](const std::string&, const std::string&) -> Found {
        ++asked;
        return error_code(asio::error::host_not_found);
      });
  // Nothing listens on port 9: the connection is refused, without a lookup.
  for (const char* url : {"http://127.0.0.1:9/v1", "http://[::1]:9/v1"}) {
    auto exchanges = get(url, 1, options);
    ASSERT_FALSE(exchanges[0].result.has_value()) << url;
    EXPECT_EQ(exchanges[0].result.error().message.find("resolve"), std::string::npos)
        << exchanges[0].result.error().message;
  }
  EXPECT_EQ(asked, 0);
}

// Requests sent at once through clients on one io_context, driven from the
// test thread, each one cancellable on its own.
class Requests {
 public:
  using Outcome = boost::system::result<ClientResponse, ClientError>;

  asio::io_context io;

  // Starts a GET of `url` through `client`; returns its index.
  std::size_t start(HttpClient& client, std::string url) {
    const std::size_t index = outcomes_.size();
    outcomes_.emplace_back();
    cancels_.push_back(std::make_unique<asio::cancellation_signal>());
    asio::co_spawn(
        io,
        [](HttpClient& c, std::string u) -> awaitable<Outcome> {
          ClientRequest request;
          request.url = std::move(u);
          auto outcome = co_await c.send(std::move(request), nullptr, nullptr);
          co_return outcome;
        }(client, std::move(url)),
        asio::bind_cancellation_slot(cancels_.back()->slot(),
                                     [this, index](std::exception_ptr e, Outcome outcome) {
                                       if (e) std::rethrow_exception(e);
                                       outcomes_[index].emplace(std::move(outcome));
                                     }));
    return index;
  }

  void cancel(std::size_t index) { cancels_[index]->emit(asio::cancellation_type::terminal); }

  // Runs the io_context until `done` holds or `limit` passes; returns `done()`.
  bool run_until(const std::function<bool()>& done, std::chrono::milliseconds limit = 10s) {
    const auto deadline = Clock::now() + limit;
    while (!done() && Clock::now() < deadline) {
      if (io.stopped()) io.restart();  // out of work after earlier requests
      io.run_one_for(10ms);
    }
    return done();
  }

  bool finished(std::size_t index) const { return outcomes_[index].has_value(); }
  const Outcome& outcome(std::size_t index) const { return *outcomes_[index]; }

 private:
  std::vector<std::optional<Outcome>> outcomes_;
  std::vector<std::unique_ptr<asio::cancellation_signal>> cancels_;
};

// "http://HOST:PORT/v1" for the port of `upstream`.
std::string url_of(const RawUpstream& upstream, const std::string& host) {
  auto port = upstream.base_url().substr(upstream.base_url().rfind(':') + 1);
  return "http://" + host + ":" + port.substr(0, port.find('/')) + "/v1";
}

std::vector<std::string> sorted(std::vector<std::string> hosts) {
  std::sort(hosts.begin(), hosts.end());
  return hosts;
}

RawUpstream through_upstream() {
  return RawUpstream([](const RawRequest&) {
    RawReply reply;
    reply.writes = {test::raw_response(200, "through")};
    return reply;
  });
}

// The cancellation may be the caller's deadline: the error says the lookup
// was not over, which host it was for and where to look.
TEST(HttpClient, CancellingARequestEndsItsLookupAtOnce) {
  test::SlowDns dns;
  auto lookups = std::make_shared<HostLookups>(dns.lookup());
  Requests requests;
  ClientOptions options;
  options.lookups = lookups;
  options.lookup_timeout = std::chrono::hours(1);
  HttpClient client(requests.io.get_executor(), options);
  const auto request = requests.start(client, "http://slow.test:9/v1");
  ASSERT_TRUE(requests.run_until([&] { return dns.begun() == 1; }));
  EXPECT_EQ(lookups->threads_running(), 1u);
  EXPECT_EQ(lookups->waiting(), 1u);
  const auto cancelled_at = Clock::now();
  requests.cancel(request);
  ASSERT_TRUE(requests.run_until([&] { return requests.finished(request); }));
  EXPECT_LT(Clock::now() - cancelled_at, 1s);
  ASSERT_FALSE(requests.outcome(request).has_value());
  const auto& error = requests.outcome(request).error();
  EXPECT_EQ(error.code, asio::error::operation_aborted);
  EXPECT_TRUE(error.lookup_unfinished);
  EXPECT_EQ(error.message,
            "the lookup of slow.test had not finished; check the DNS servers "
            "(/etc/resolv.conf) or put an IP address in the URL");
  EXPECT_EQ(lookups->waiting(), 0u);
  // The lookup goes on without anyone waiting; once the DNS answers, its
  // thread ends and frees its place.
  EXPECT_EQ(lookups->threads_running(), 1u);
  dns.open();
  EXPECT_TRUE(test::poll_until([&] { return lookups->threads_running() == 0; }, 10s));
}

// Every client made with the default options looks up through the process's
// HostLookups: a client made anew (at each provider reload) adds no thread
// to those already waiting for a dead DNS.
TEST(HttpClient, ClientsShareTheProcesssLookups) {
  asio::io_context io;
  HttpClient first(io.get_executor());
  HttpClient second(io.get_executor());
  EXPECT_EQ(&first.lookups(), HostLookups::process().get());
  EXPECT_EQ(&second.lookups(), HostLookups::process().get());
}

// The bound on lookup threads holds across clients: with its threads all
// waiting for a dead DNS, a lookup for another client waits for one to
// finish, and fails at its own timeout saying why, without a thread of its
// own; when the DNS answers again the threads end and requests go through.
TEST(HttpClient, TheBoundOnLookupThreadsHoldsAcrossClients) {
  auto upstream = through_upstream();
  test::SlowDns dns;
  auto lookups = std::make_shared<HostLookups>(dns.lookup(), 2);
  Requests requests;
  ClientOptions options;
  options.lookups = lookups;
  options.lookup_timeout = 50ms;
  auto before_reload = std::make_unique<HttpClient>(requests.io.get_executor(), options);
  const auto a = requests.start(*before_reload, url_of(upstream, "a.test"));
  const auto b = requests.start(*before_reload, url_of(upstream, "b.test"));
  ASSERT_TRUE(requests.run_until([&] { return requests.finished(a) && requests.finished(b); }));
  for (const auto index : {a, b}) {
    ASSERT_FALSE(requests.outcome(index).has_value());
    EXPECT_EQ(requests.outcome(index).error().code, asio::error::timed_out);
  }
  before_reload.reset();
  EXPECT_EQ(lookups->threads_running(), 2u);  // both still waiting for the DNS

  HttpClient after_reload(requests.io.get_executor(), options);
  const auto started = Clock::now();
  const auto c = requests.start(after_reload, url_of(upstream, "c.test"));
  ASSERT_TRUE(requests.run_until([&] { return requests.finished(c); }));
  const auto took = Clock::now() - started;
  ASSERT_FALSE(requests.outcome(c).has_value());
  EXPECT_EQ(requests.outcome(c).error().code, asio::error::timed_out);
  EXPECT_EQ(requests.outcome(c).error().message,
            "cannot look up c.test: for 50ms all 2 lookups of host names allowed at once were "
            "waiting for DNS; check the DNS servers (/etc/resolv.conf) or put an IP address in "
            "the URL");
  EXPECT_GE(took, 50ms);
  EXPECT_LT(took, 5s);
  EXPECT_EQ(dns.begun(), 2);  // c.test was never looked up
  EXPECT_EQ(lookups->threads_running(), 2u);

  dns.open();
  ASSERT_TRUE(test::poll_until([&] { return lookups->threads_running() == 0; }, 10s));
  const auto again = requests.start(after_reload, url_of(upstream, "c.test"));
  ASSERT_TRUE(requests.run_until([&] { return requests.finished(again); }));
  ASSERT_TRUE(requests.outcome(again).has_value()) << requests.outcome(again).error().message;
  EXPECT_EQ(requests.outcome(again)->status, 200);
  EXPECT_EQ(sorted(dns.hosts()), (std::vector<std::string>{"a.test", "b.test", "c.test"}));
}

// Slow but working DNS: requests for the same host and port at the same time
// share one lookup (one thread), however many they are, and each gets its
// result; each still waits only as long as its own client allows.
TEST(HttpClient, RequestsForTheSameHostShareOneLookup) {
  auto upstream = through_upstream();
  test::SlowDns dns;
  auto lookups = std::make_shared<HostLookups>(dns.lookup(), 1);
  Requests requests;
  ClientOptions patient_options;
  patient_options.lookups = lookups;
  patient_options.lookup_timeout = std::chrono::hours(1);
  HttpClient patient(requests.io.get_executor(), patient_options);
  ClientOptions hasty_options = patient_options;
  hasty_options.lookup_timeout = 50ms;
  HttpClient hasty(requests.io.get_executor(), hasty_options);

  const auto url = url_of(upstream, "upstream.test");
  std::vector<std::size_t> waiting;
  for (int i = 0; i < 5; ++i) waiting.push_back(requests.start(patient, url));
  const auto cancelled = requests.start(patient, url);
  ASSERT_TRUE(requests.run_until([&] { return lookups->waiting() == 6; }));
  const auto given_up = requests.start(hasty, url);
  ASSERT_TRUE(requests.run_until([&] { return requests.finished(given_up); }));
  requests.cancel(cancelled);
  ASSERT_TRUE(requests.run_until([&] { return requests.finished(cancelled); }));
  ASSERT_FALSE(requests.outcome(given_up).has_value());
  EXPECT_EQ(requests.outcome(given_up).error().message,
            "the lookup of upstream.test did not finish within 50ms; check the DNS servers "
            "(/etc/resolv.conf) or put an IP address in the URL");
  ASSERT_FALSE(requests.outcome(cancelled).has_value());
  EXPECT_EQ(requests.outcome(cancelled).error().code, asio::error::operation_aborted);
  EXPECT_EQ(lookups->waiting(), 5u);
  EXPECT_EQ(dns.begun(), 1);

  dns.open();
  ASSERT_TRUE(requests.run_until([&] {
    return std::all_of(waiting.begin(), waiting.end(),
                       [&](auto i) { return requests.finished(i); });
  }));
  for (const auto index : waiting) {
    ASSERT_TRUE(requests.outcome(index).has_value()) << requests.outcome(index).error().message;
    EXPECT_EQ(requests.outcome(index)->status, 200);
  }
  EXPECT_EQ(dns.begun(), 1);
  EXPECT_TRUE(test::poll_until([&] { return lookups->threads_running() == 0; }, 10s));
}

// A burst of lookups of different hosts beyond the bound waits for threads
// rather than failing: each runs when a thread finishes one; a lookup that
// nobody waits for any more by then is never run.
TEST(HttpClient, LookupsBeyondTheBoundWaitForAThread) {
  auto upstream = through_upstream();
  test::SlowDns dns;
  auto lookups = std::make_shared<HostLookups>(dns.lookup(), 2);
  Requests requests;
  ClientOptions options;
  options.lookups = lookups;
  options.lookup_timeout = std::chrono::hours(1);
  HttpClient client(requests.io.get_executor(), options);

  std::vector<std::size_t> served;
  for (const std::string host : {"a.test", "b.test", "c.test"})
    served.push_back(requests.start(client, url_of(upstream, host)));
  const auto abandoned = requests.start(client, url_of(upstream, "gone.test"));
  served.push_back(requests.start(client, url_of(upstream, "d.test")));
  ASSERT_TRUE(requests.run_until([&] { return lookups->waiting() == 5 && dns.begun() == 2; }));
  EXPECT_EQ(lookups->threads_running(), 2u);
  requests.cancel(abandoned);
  ASSERT_TRUE(requests.run_until([&] { return requests.finished(abandoned); }));
  EXPECT_EQ(requests.outcome(abandoned).error().code, asio::error::operation_aborted);
  EXPECT_TRUE(requests.outcome(abandoned).error().lookup_unfinished);
  EXPECT_EQ(requests.outcome(abandoned).error().message,
            "the lookup of gone.test had not started: all 2 lookups of host names allowed at "
            "once were waiting for DNS; check the DNS servers (/etc/resolv.conf) or put an IP "
            "address in the URL");

  dns.open();
  ASSERT_TRUE(requests.run_until([&] {
    return std::all_of(served.begin(), served.end(), [&](auto i) { return requests.finished(i); });
  }));
  for (const auto index : served) {
    ASSERT_TRUE(requests.outcome(index).has_value()) << requests.outcome(index).error().message;
    EXPECT_EQ(requests.outcome(index)->status, 200);
  }
  EXPECT_EQ(dns.most_at_once(), 2);
  EXPECT_EQ(sorted(dns.hosts()),
            (std::vector<std::string>{"a.test", "b.test", "c.test", "d.test"}));
  EXPECT_TRUE(test::poll_until([&] { return lookups->threads_running() == 0; }, 10s));
}

}  // namespace
}  // namespace mooring::net
