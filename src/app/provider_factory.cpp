#include "app/provider_factory.hpp"

#include "llm/echo_provider.hpp"
#include "llm/openai_provider.hpp"
#include "llm/resilient_provider.hpp"
#include "runtime/log.hpp"

#include <cstdlib>
#include <limits>

namespace mooring::app {

std::shared_ptr<llm::Provider> make_provider(const ProviderConfig& config,
                                             const asio::any_io_executor& executor,
                                             const runtime::ShutdownState* shutdown) {
  std::shared_ptr<llm::Provider> inner;
  if (config.kind == "openai") {
    std::string key;
    if (const char* value = std::getenv(config.api_key_env.c_str()); value) key = value;
    if (key.empty())
      log::warn("provider: ${} is empty; requests to {} go without an API key", config.api_key_env,
                config.base_url);
    llm::OpenAiOptions options;
    options.base_url = config.base_url;
    options.model = config.model;
    options.api_key = std::move(key);
    options.max_reply_bytes = static_cast<std::size_t>(config.max_reply_bytes);
    inner = std::make_shared<llm::OpenAiProvider>(executor, std::move(options));
  } else {
    inner = std::make_shared<llm::EchoProvider>(config.echo.token_delay);
  }
  llm::ResilienceOptions options;
  if (config.kind == "echo") {
    // Local and free: caps meant for a paid upstream would only turn users away.
    options.max_concurrency = std::numeric_limits<std::size_t>::max();
    options.max_waiting = 0;
  } else {
    options.max_concurrency = config.max_concurrency;
    options.max_waiting = config.max_waiting;
  }
  options.attempt_timeout = config.attempt_timeout;
  options.total_timeout = config.total_timeout;
  options.max_attempts = static_cast<unsigned>(config.max_attempts);
  options.backoff_initial = config.backoff_initial;
  options.backoff_max = config.backoff_max;
  return std::make_shared<llm::ResilientProvider>(executor, std::move(inner), options, shutdown);
}

}  // namespace mooring::app
