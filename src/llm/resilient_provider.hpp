// Wraps any provider with what a host needs in front of a remote API:
// - at most `max_concurrency` requests at once, a bounded wait queue behind
//   them, and an immediate "busy" error when that queue is full;
// - a deadline per attempt and one for the whole request; an attempt that
//   runs out of time is a `timeout`, whose detail adds what the provider says
//   it was still waiting for (a host name being looked up: a slow DNS);
// - retries with backoff and full jitter on network errors, 408, 409, 429 and
//   5xx (honouring Retry-After), never on 400/401/403/404/422, and never once a
//   piece of the reply has reached the user (that would duplicate the answer);
// - no attempt starts with less than `min_attempt_budget` left of the whole
//   request's time (it could not be answered; the last failure stands);
// - a circuit breaker: after `breaker_threshold` upstream faults in a row
//   (is_upstream_fault: 5xx, 429, timeouts, resets, broken streams; never a
//   request the provider rejected) it fails fast for `breaker_cooldown`, then
//   lets one request probe;
// - an exception escaping an attempt ends it at once as a `protocol` failure;
// - no new request or attempt once shutdown has begun; cancellation of the
//   caller ends the request, its socket and any backoff sleep at once.
// One log line per request outcome, with the failure's redacted detail.
#pragma once

#include "llm/provider.hpp"
#include "runtime/shutdown.hpp"
#include "runtime/time.hpp"

#include <memory>

namespace mooring::llm {

struct ResilienceOptions {
  std::size_t max_concurrency = 8;
  std::size_t max_waiting = 64;
  runtime::Duration attempt_timeout = std::chrono::seconds(60);
  runtime::Duration total_timeout = std::chrono::seconds(180);
  unsigned max_attempts = 4;
  runtime::Duration backoff_initial = std::chrono::milliseconds(500);
  runtime::Duration backoff_max = std::chrono::seconds(20);
  unsigned breaker_threshold = 5;
  runtime::Duration breaker_cooldown = std::chrono::seconds(30);
  runtime::Duration min_attempt_budget = std::chrono::milliseconds(50);
};

struct ProviderMetrics;  // resilient_provider.cpp

class ResilientProvider : public Provider {
 public:
  ResilientProvider(asio::any_io_executor executor, std::shared_ptr<Provider> inner,
                    ResilienceOptions options, const runtime::ShutdownState* shutdown);
  ~ResilientProvider() override;

  awaitable<CompletionResult> complete(const ChatRequest& request, PieceSink on_piece) override;
  std::string_view kind() const override { return inner_->kind(); }
  std::string_view model() const override { return inner_->model(); }
  // Its own waits (for a slot, a backoff) come only after an attempt that
  // waited, or failed as an upstream does: a provider that never waits
  // neither overlaps its attempts nor fails that way.
  bool may_wait() const override { return inner_->may_wait(); }

  bool breaker_open() const;

 private:
  awaitable<CompletionResult> attempt_once(const ChatRequest& request, const PieceSink& on_piece,
                                           bool& started, runtime::Deadline deadline);
  void record_success();
  void record_failure(const ProviderError& error);

  std::shared_ptr<Provider> inner_;
  ResilienceOptions options_;
  const runtime::ShutdownState* shutdown_;
  runtime::Notifier slot_freed_;
  std::unique_ptr<ProviderMetrics> metrics_;
  std::size_t active_ = 0;
  std::size_t waiting_ = 0;
  unsigned consecutive_failures_ = 0;
  Clock::time_point breaker_open_until_{};
  bool probe_in_flight_ = false;
};

}  // namespace mooring::llm
