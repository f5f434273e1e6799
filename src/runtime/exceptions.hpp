// Describing an exception for a log line, whatever was thrown (a std::exception
// or anything else), with its text elided like every value a client controls.
#pragma once

#include <exception>
#include <string>

namespace mooring::runtime {

// "what()" of the exception, or "an exception of unknown type"; at most
// max_field_bytes long.
std::string describe_exception(const std::exception_ptr& e);

// describe_exception(std::current_exception()); call from inside a catch block.
std::string describe_current_exception();

}  // namespace mooring::runtime
