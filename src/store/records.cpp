#include "store/records.hpp"

#include <stdexcept>

namespace mooring::store {

std::string_view to_string(Role role) {
  switch (role) {
    case Role::user:
      return "user";
    case Role::assistant:
      return "assistant";
  }
  return "user";
}

std::string_view to_string(MessageStatus status) {
  switch (status) {
    case MessageStatus::pending:
      return "pending";
    case MessageStatus::answered:
      return "answered";
    case MessageStatus::failed:
      return "failed";
  }
  return "pending";
}

std::optional<Role> parse_role(std::string_view text) {
  if (text == "user") return Role::user;
  if (text == "assistant") return Role::assistant;
  return std::nullopt;
}

std::optional<MessageStatus> parse_status(std::string_view text) {
  if (text == "pending") return MessageStatus::pending;
  if (text == "answered") return MessageStatus::answered;
  if (text == "failed") return MessageStatus::failed;
  return std::nullopt;
}

std::string_view to_string(StoreError::Kind kind) {
  using Kind = StoreError::Kind;
  switch (kind) {
    case Kind::closed:
      return "closed";
    case Kind::overloaded:
      return "overloaded";
    case Kind::io:
      return "io";
    case Kind::corrupt:
      return "corrupt";
    case Kind::schema_too_new:
      return "schema_too_new";
    case Kind::not_found:
      return "not_found";
    case Kind::invalid_argument:
      return "invalid_argument";
    case Kind::internal:
      return "internal";
  }
  return "internal";
}

std::string_view to_string(Health::State state) {
  switch (state) {
    case Health::State::ok:
      return "ok";
    case Health::State::degraded:
      return "degraded";
    case Health::State::failed:
      return "failed";
  }
  return "failed";
}

void throw_exception_from_error(const StoreError& error, const boost::source_location&) {
  throw std::runtime_error(error.message);
}

}  // namespace mooring::store
