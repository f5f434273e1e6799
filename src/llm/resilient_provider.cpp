#include "llm/resilient_provider.hpp"

#include "runtime/cancellation.hpp"
#include "runtime/log.hpp"
#include "runtime/metrics.hpp"
#include "runtime/retry.hpp"

#include <fmt/format.h>

namespace mooring::llm {

using Kind = ProviderError::Kind;
using namespace std::chrono_literals;

namespace {

// Releases a concurrency slot however the request ends.
class SlotGuard {
 public:
  SlotGuard(std::size_t& active, runtime::Notifier& freed) : active_(active), freed_(freed) {
    ++active_;
  }
  ~SlotGuard() {
    --active_;
    freed_.notify_all();
  }
  SlotGuard(const SlotGuard&) = delete;
  SlotGuard& operator=(const SlotGuard&) = delete;

 private:
  std::size_t& active_;
  runtime::Notifier& freed_;
};

}  // namespace

// What the provider's requests did, for /metrics.
struct ProviderMetrics {
  std::string provider;
  runtime::Counter& attempts;
  runtime::Counter& retries;
  runtime::Histogram& duration;
  runtime::Histogram& first_piece;
  runtime::Gauge& breaker_open;

  explicit ProviderMetrics(std::string name)
      : provider(std::move(name)),
        attempts(runtime::metrics().counter("mooring_llm_attempts_total",
                                            "Requests sent to the provider, retries included.",
                                            {{"provider", provider}})),
        retries(runtime::metrics().counter("mooring_llm_retries_total",
                                           "Attempts that were retries of a failed one.",
                                           {{"provider", provider}})),
        duration(runtime::metrics().histogram(
            "mooring_llm_request_duration_seconds",
            "From asking for a reply to its end (waiting for a slot and retries included).",
            runtime::latency_buckets(), {{"provider", provider}})),
        first_piece(runtime::metrics().histogram(
            "mooring_llm_time_to_first_token_seconds",
            "From asking for a reply to its first streamed piece.", runtime::latency_buckets(),
            {{"provider", provider}})),
        breaker_open(runtime::metrics().gauge(
            "mooring_llm_circuit_open", "1 while the circuit breaker fails requests fast.",
            {{"provider", provider}})) {}

  // Looked up once per outcome (a registry lookup locks and allocates).
  void outcome(std::string_view what) {
    if (what == "ok") {
      if (!ok_) ok_ = &counter(what);
      ok_->inc();
      return;
    }
    counter(what).inc();
  }

 private:
  runtime::Counter& counter(std::string_view what) {
    return runtime::metrics().counter("mooring_llm_requests_total",
                                      "Replies asked of the provider, by outcome.",
                                      {{"provider", provider}, {"outcome", std::string(what)}});
  }
  runtime::Counter* ok_ = nullptr;
};

ResilientProvider::ResilientProvider(asio::any_io_executor executor,
                                     std::shared_ptr<Provider> inner, ResilienceOptions options,
                                     const runtime::ShutdownState* shutdown)
    : inner_(std::move(inner)),
      options_(options),
      shutdown_(shutdown),
      slot_freed_(std::move(executor)),
      metrics_(std::make_unique<ProviderMetrics>(std::string(inner_->kind()))) {}

ResilientProvider::~ResilientProvider() = default;

bool ResilientProvider::breaker_open() const { return Clock::now() < breaker_open_until_; }

void ResilientProvider::record_success() {
  consecutive_failures_ = 0;
  breaker_open_until_ = {};
  metrics_->breaker_open.set(0);
}

void ResilientProvider::record_failure(const ProviderError& failed) {
  if (!is_upstream_fault(failed)) return;  // a rejected request is its own failure only
  if (++consecutive_failures_ >= options_.breaker_threshold) {
    if (!breaker_open())
      log::warn("provider {}: {} failures in a row; failing fast for {}", inner_->kind(),
                consecutive_failures_, runtime::format_duration(options_.breaker_cooldown));
    breaker_open_until_ = Clock::now() + options_.breaker_cooldown;
    metrics_->breaker_open.set(1);
  }
}

awaitable<CompletionResult> ResilientProvider::attempt_once(const ChatRequest& request,
                                                            const PieceSink& on_piece,
                                                            bool& started,
                                                            runtime::Deadline deadline) {
  // Any piece is progress; an empty one (a reasoning step, a tool call's
  // delta) has nothing for the user. Either way the provider has begun its
  // answer, which is not asked for again (it is paid for).
  // Timed only for a provider that may wait (no clock read per piece else).
  // One reference beside on_piece: the sink fits std::function's own room,
  // and costs no allocation per attempt.
  struct Progress {
    bool& started;
    bool timed;
    Clock::time_point at;
  } progress{started, inner_->may_wait(), {}};
  if (progress.timed) progress.at = Clock::now();
  PieceSink marking_sink = [&progress, &on_piece](std::string_view piece) {
    progress.started = true;
    if (progress.timed) progress.at = Clock::now();
    if (on_piece && !piece.empty()) on_piece(piece);
  };
  const auto budget = std::min(options_.attempt_timeout, deadline.remaining());
  if (budget < options_.min_attempt_budget)
    co_return failure(provider_error(Kind::timeout,
                            "the provider is answering too slowly to take this message now; send "
                            "it again later",
                            fmt::format("no attempt started: {} left of the request's {}",
                                        runtime::format_duration(budget),
                                        runtime::format_duration(options_.total_timeout))));
  std::optional<CompletionResult> outcome;
  // What an attempt the deadline stopped returned: it may say where it stood.
  std::optional<CompletionResult> stopped;
  try {
    if (progress.timed) {
      // attempt_timeout is how long the provider may send nothing: before
      // its first piece, and between two.
      auto timed = runtime::with_idle_timeout(inner_->complete(request, marking_sink), progress.at,
                                              options_.attempt_timeout, deadline.at(), &stopped);
      outcome = co_await std::move(timed);
    } else {
      // Nothing to time: no timer, and no coroutine of its own to race one
      // against (about 8,500 instructions of a chat round trip).
      outcome = co_await inner_->complete(request, marking_sink);
    }
  } catch (const boost::system::system_error& e) {
    if (e.code() == asio::error::operation_aborted) throw;
    co_return failure(provider_error(Kind::protocol, unreadable_answer,
                            std::string("the attempt failed: ") + e.what()));
  } catch (const std::exception& e) {
    co_return failure(provider_error(Kind::protocol, unreadable_answer,
                            std::string("the attempt failed: ") + e.what()));
  }
  if (outcome) co_return std::move(*outcome);
  // Whole as time ran out (it was waiting for the end of the body after the
  // reply's last event): the reply stands.
  if (stopped && *stopped) co_return std::move(*stopped);
  const bool idle_ran_out = progress.at + options_.attempt_timeout <= deadline.at();
  auto detail =
      !idle_ran_out ? fmt::format("provider.total_timeout ({}) ran out during the attempt",
                                  runtime::format_duration(options_.total_timeout))
      : started     ? fmt::format("the provider sent nothing more for {}",
                                  runtime::format_duration(options_.attempt_timeout))
                    : fmt::format("the provider did not answer within {}",
                                  runtime::format_duration(options_.attempt_timeout));
  // What the stopped attempt was still waiting for, when it says (a slow DNS).
  if (stopped && !*stopped && stopped->error().kind == Kind::cancelled &&
      !stopped->error().detail.empty())
    detail += ": " + stopped->error().detail;
  co_return failure(provider_error(Kind::timeout,
                                   "the provider did not answer in time; send your message "
                                   "again later",
                                   std::move(detail), true));
}

awaitable<CompletionResult> ResilientProvider::complete(const ChatRequest& request,
                                                        PieceSink on_piece) {
  const auto begun = Clock::now();
  const auto deadline = runtime::Deadline::after(options_.total_timeout);
  if (shutdown_ && shutdown_->begun())
    co_return failure(provider_error(Kind::shutting_down, "mooring is shutting down; try again shortly"));
  struct Measured {
    ProviderMetrics& metrics;
    Clock::time_point begun;
    ~Measured() {
      metrics.duration.observe(std::chrono::duration<double>(Clock::now() - begun).count());
    }
  } measured{*metrics_, begun};
  PieceSink timed_sink = [this, begun, first = true, &on_piece](std::string_view piece) mutable {
    if (first) {
      first = false;
      metrics_->first_piece.observe(std::chrono::duration<double>(Clock::now() - begun).count());
    }
    if (on_piece) on_piece(piece);
  };

  // The breaker: fail fast while open; once the cool-down is over, one request probes.
  bool probing = false;
  if (consecutive_failures_ >= options_.breaker_threshold) {
    if (breaker_open() || probe_in_flight_) {
      metrics_->outcome(to_string(Kind::circuit_open));
      const auto left = std::chrono::ceil<std::chrono::seconds>(
          std::max(breaker_open_until_ - Clock::now(), Clock::duration::zero()));
      co_return failure(provider_error(Kind::circuit_open,
                              fmt::format("the provider is failing; mooring is not asking it "
                                          "again for {} s; send your message again after that",
                                          std::max<long long>(1, left.count())),
                              fmt::format("the provider failed {} times in a row",
                                          consecutive_failures_)));
    }
    probing = probe_in_flight_ = true;
  }
  struct ProbeReset {
    bool active;
    bool& flag;
    ~ProbeReset() {
      if (active) flag = false;
    }
  } probe_reset{probing, probe_in_flight_};

  // A slot, or a bounded wait for one.
  if (active_ >= options_.max_concurrency) {
    if (waiting_ >= options_.max_waiting) {
      metrics_->outcome(to_string(Kind::overloaded));
      co_return failure(provider_error(Kind::overloaded, "mooring is busy; try again shortly",
                              fmt::format("{} requests are running and {} waiting", active_,
                                          waiting_)));
    }
    ++waiting_;
    while (active_ >= options_.max_concurrency && !deadline.passed()) {
      try {
        co_await slot_freed_.wait_until(deadline);
      } catch (...) {
        --waiting_;
        throw;
      }
      const bool cancelled = co_await runtime::cancelled();
      if (cancelled) break;
    }
    --waiting_;
    const bool cancelled = co_await runtime::cancelled();
    if (cancelled) co_return failure(provider_error(Kind::cancelled, "the request was cancelled"));
    if (active_ >= options_.max_concurrency)
      co_return failure(provider_error(Kind::timeout, "mooring is busy; try again shortly",
                              fmt::format("no provider slot freed within {}",
                                          runtime::format_duration(options_.total_timeout))));
  }
  SlotGuard slot(active_, slot_freed_);

  bool started = false;
  // No backoff sleep may end closer to the deadline than an attempt's minimum.
  const runtime::Deadline last_start(deadline.at() - std::min<runtime::Duration>(
                                                         options_.min_attempt_budget,
                                                         options_.total_timeout));
  runtime::RetryPolicy policy{options_.max_attempts, options_.backoff_initial, options_.backoff_max,
                              last_start};
  auto outcome = co_await runtime::retry<std::string, ProviderError>(
      policy, shutdown_,
      [&](unsigned) -> awaitable<CompletionResult> {
        return attempt_once(request, timed_sink, started, deadline);
      },
      [&](const ProviderError& e) {
        return runtime::RetryAdvice{e.retryable && !started, e.retry_after};
      });

  const auto took = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - begun);
  metrics_->attempts.inc(outcome.attempts);
  if (outcome.attempts > 1) metrics_->retries.inc(outcome.attempts - 1);
  if (outcome.last) {
    record_success();
    metrics_->outcome("ok");
    // Counted in /metrics; a line per reply would drown the log at any load.
    log::debug("provider {} {}: ok after {} attempt(s) in {} ms ({} bytes)", inner_->kind(),
              inner_->model(), outcome.attempts, took.count(), outcome.last->size());
    co_return std::move(outcome.last);
  }

  ProviderError failed = outcome.last.error();
  if (failed.detail.empty()) failed.detail = failed.message;
  const bool cancelled = co_await runtime::cancelled();
  if (outcome.stop == runtime::RetryStop::cancelled || cancelled) {
    failed = provider_error(Kind::cancelled, "the request was cancelled");
  } else if (outcome.stop == runtime::RetryStop::shutdown) {
    // It would have been tried again: the message waits for the restart
    // rather than being answered with a failure the restart could mend.
    failed = provider_error(Kind::shutting_down, "mooring is shutting down; try again shortly",
                            fmt::format("{}; not tried again because mooring is shutting down",
                                        failed.detail));
  } else if (outcome.stop == runtime::RetryStop::deadline) {
    failed.detail += fmt::format("; no time left for attempt {}", outcome.attempts + 1);
    // Said, so that an operator sees why no attempt came (a rate limit that
    // lasts a day).
    if (failed.retry_after)
      failed.detail += fmt::format(
          " (the provider asked to wait {}, past provider.total_timeout)",
          runtime::format_duration(*failed.retry_after));
  } else if (outcome.attempts > 1 || outcome.stop == runtime::RetryStop::attempts_exhausted) {
    failed.detail += fmt::format(", gave up after {} attempt{}", outcome.attempts,
                                 outcome.attempts == 1 ? "" : "s");
  } else if (started && failed.retryable) {
    failed.detail += "; not retried because the provider had begun its answer";
  }
  if (failed.kind != Kind::cancelled && failed.kind != Kind::shutting_down) record_failure(failed);
  metrics_->outcome(to_string(failed.kind));
  if (failed.kind == Kind::cancelled) {
    // A user's cancel is worth a line; a thousand requests ended by a shutdown
    // are counted in its summary line instead.
    const auto level = shutdown_ && shutdown_->begun() ? spdlog::level::debug : spdlog::level::info;
    spdlog::log(level, "provider {} {}: cancelled after {} attempt(s) in {} ms", inner_->kind(),
                inner_->model(), outcome.attempts, took.count());
  } else if (failed.kind == Kind::shutting_down) {
    log::debug("provider {} {}: left for after the restart after {} attempt(s) in {} ms: {}",
               inner_->kind(), inner_->model(), outcome.attempts, took.count(), failed.detail);
  } else {
    log::warn("provider {} {}: {} after {} attempt(s) in {} ms: {}", inner_->kind(),
              inner_->model(), to_string(failed.kind), outcome.attempts, took.count(),
              failed.detail);
  }
  co_return failure(std::move(failed));
}

}  // namespace mooring::llm
