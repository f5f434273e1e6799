// Boost.JSON and Boost.URL compiled into the fuzzers, so that their parsers
// are instrumented like the code that calls them.
#include <boost/json/src.hpp>
#include <boost/url/src.hpp>
