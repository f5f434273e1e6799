#include "llm/provider.hpp"

namespace mooring::llm {

const char* to_string(Role role) { return role == Role::user ? "user" : "assistant"; }

const char* to_string(ProviderError::Kind kind) {
  switch (kind) {
    case ProviderError::Kind::network: return "network";
    case ProviderError::Kind::timeout: return "timeout";
    case ProviderError::Kind::status: return "status";
    case ProviderError::Kind::stream: return "stream";
    case ProviderError::Kind::protocol: return "protocol";
    case ProviderError::Kind::cut_off: return "cut_off";
    case ProviderError::Kind::rejected: return "rejected";
    case ProviderError::Kind::overloaded: return "overloaded";
    case ProviderError::Kind::circuit_open: return "circuit_open";
    case ProviderError::Kind::shutting_down: return "shutting_down";
    case ProviderError::Kind::cancelled: return "cancelled";
  }
  return "unknown";
}

bool is_upstream_fault(const ProviderError& error) {
  using Kind = ProviderError::Kind;
  switch (error.kind) {
    case Kind::network:
    case Kind::timeout:
    case Kind::stream:
    case Kind::protocol:
    case Kind::cut_off:
      return true;
    case Kind::status:
      return error.status >= 500 || error.status == 429 || error.status == 408;
    case Kind::rejected:
    case Kind::overloaded:
    case Kind::circuit_open:
    case Kind::shutting_down:
    case Kind::cancelled:
      return false;
  }
  return false;
}

}  // namespace mooring::llm
