// Cancellation and streaming costs of the LLM layer, against the scripted fake
// upstream from tests/support.
//
//   bench_llm [hung=100] [tokens=20000]
//
// 1. `hung` requests wait on an upstream that never answers; all are cancelled
//    at once; reports the time from cancel to each request's completion.
// 2. One reply of `tokens` SSE pieces, read through OpenAiProvider and through
//    the bare HTTP client; the difference per token is the provider's overhead.
#include "llm/openai_provider.hpp"
#include "llm/resilient_provider.hpp"
#include "runtime/supervisor.hpp"
#include "support/fake_upstream.hpp"

#include <algorithm>
#include <iostream>

using namespace mooring;
using namespace std::chrono_literals;

namespace {

awaitable<void> hung_request(std::shared_ptr<llm::Provider> provider, Clock::time_point* ended) {
  llm::ChatRequest request;
  request.message = {llm::Role::user, "hello", {}};
  co_await provider->complete(request, nullptr);
  *ended = Clock::now();
}

void cancel_bench(int hung) {
  test::FakeUpstream upstream;
  upstream.set_fallback(test::hang());
  asio::io_context io;
  runtime::Supervisor supervisor(io.get_executor());
  llm::ResilienceOptions options;
  options.max_concurrency = static_cast<std::size_t>(hung);
  auto provider = std::make_shared<llm::ResilientProvider>(
      io.get_executor(),
      std::make_shared<llm::OpenAiProvider>(io.get_executor(),
                                            llm::OpenAiOptions{upstream.base_url(), "m", ""}),
      options, nullptr);
  std::vector<Clock::time_point> ended(static_cast<std::size_t>(hung));
  for (int i = 0; i < hung; ++i)
    supervisor.spawn("request", "bench", hung_request(provider, &ended[static_cast<std::size_t>(i)]));
  while (upstream.in_flight() < hung) io.run_for(1ms);
  const auto cancelled_at = Clock::now();
  supervisor.cancel_all();
  while (supervisor.size() > 0) io.run_one_for(1s);
  std::vector<double> ms;
  for (auto t : ended)
    ms.push_back(std::chrono::duration<double, std::milli>(
                     (t == Clock::time_point{} ? Clock::now() : t) - cancelled_at)
                     .count());
  std::sort(ms.begin(), ms.end());
  std::cout << "cancel " << hung << " requests hung upstream: median " << ms[ms.size() / 2]
            << " ms, max " << ms.back() << " ms (from cancel_all to each completion)\n";
}

void streaming_bench(int tokens) {
  test::FakeUpstream upstream;
  std::vector<std::string> pieces(static_cast<std::size_t>(tokens), "tok ");
  asio::io_context io;
  llm::OpenAiProvider provider(io.get_executor(), {upstream.base_url(), "m", ""});
  auto timed = [&](auto&& run) {
    upstream.script({test::sse_reply(pieces)});
    const auto t0 = Clock::now();
    asio::co_spawn(io, run(), asio::detached);
    io.restart();
    io.run();
    return std::chrono::duration<double, std::micro>(Clock::now() - t0).count();
  };
  std::size_t seen = 0;
  auto through_provider = [&]() -> awaitable<void> {
    llm::ChatRequest request;
    request.message = {llm::Role::user, "x", {}};
    co_await provider.complete(request, [&](std::string_view) { ++seen; });
  };
  std::size_t bytes = 0;
  auto through_client = [&]() -> awaitable<void> {
    net::ClientRequest request{boost::beast::http::verb::post, upstream.base_url() + "/chat/completions",
                               {}, "{}"};
    co_await provider.client().send(request, nullptr, [&](std::string_view b) {
      bytes += b.size();
      return true;
    });
  };
  timed(through_client);  // warm-up: connection and caches
  double provider_us = 0, client_us = 0;
  constexpr int rounds = 5;
  for (int i = 0; i < rounds; ++i) {
    client_us += timed(through_client);
    provider_us += timed(through_provider);
  }
  provider_us /= rounds;
  client_us /= rounds;
  std::cout << "stream of " << tokens << " tokens: bare HTTP client " << client_us / 1000
            << " ms, OpenAiProvider " << provider_us / 1000 << " ms; overhead "
            << (provider_us - client_us) * 1000 / tokens << " ns per token (pieces seen "
            << seen / rounds << ")\n";
}

}  // namespace

int main(int argc, char** argv) {
  spdlog::set_level(spdlog::level::err);
  cancel_bench(argc > 1 ? std::stoi(argv[1]) : 100);
  streaming_bench(argc > 2 ? std::stoi(argv[2]) : 20000);
}
