#include "llm/provider.hpp"

namespace mooring::llm {

const char* to_string(ProviderError::Kind kind) {
  switch (kind) {
    case ProviderError::Kind::network: return "network";
    case ProviderError::Kind::timeout: return "timeout";
    case ProviderError::Kind::status: return "status";
    case ProviderError::Kind::stream: return "stream";
    case ProviderError::Kind::rejected: return "rejected";
    case ProviderError::Kind::overloaded: return "overloaded";
    case ProviderError::Kind::circuit_open: return "circuit_open";
    case ProviderError::Kind::shutting_down: return "shutting_down";
    case ProviderError::Kind::cancelled: return "cancelled";
  }
  return "unknown";
}

}  // namespace mooring::llm
