#include "runtime/exceptions.hpp"

#include "runtime/log.hpp"

namespace mooring::runtime {

std::string describe_exception(const std::exception_ptr& e) {
  if (!e) return "no exception";
  try {
    std::rethrow_exception(e);
  } catch (const std::exception& caught) {
    return shorten(caught.what(), max_field_bytes());
  } catch (...) {
    return "an exception of unknown type";
  }
}

std::string describe_current_exception() { return describe_exception(std::current_exception()); }

}  // namespace mooring::runtime
