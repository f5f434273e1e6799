#include "runtime/cancellation.hpp"

namespace mooring::runtime {

bool is_cancellation(const error_code& ec) { return ec == asio::error::operation_aborted; }

bool is_cancellation(const std::exception& e) {
  if (const auto* system = dynamic_cast<const boost::system::system_error*>(&e))
    return is_cancellation(system->code());
  if (const auto* multiple = dynamic_cast<const asio::multiple_exceptions*>(&e))
    return is_cancellation(multiple->first_exception());
  return false;
}

bool is_cancellation(const std::exception_ptr& e) {
  if (!e) return false;
  try {
    std::rethrow_exception(e);
  } catch (const std::exception& caught) {
    return is_cancellation(caught);
  } catch (...) {
    return false;
  }
}

awaitable<bool> cancelled() {
  const auto state = co_await asio::this_coro::cancellation_state;
  co_return state.cancelled() != asio::cancellation_type::none;
}

}  // namespace mooring::runtime
