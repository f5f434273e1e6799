// Builds the configured LLM provider: `echo` or `openai`, wrapped in
// ResilientProvider (limits, retries, breaker, deadlines, shutdown gate).
#pragma once

#include "app/config.hpp"
#include "llm/provider.hpp"
#include "runtime/shutdown.hpp"

#include <memory>

namespace mooring::app {

std::shared_ptr<llm::Provider> make_provider(const ProviderConfig& config,
                                             const asio::any_io_executor& executor,
                                             const runtime::ShutdownState* shutdown);

}  // namespace mooring::app
