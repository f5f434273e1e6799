// Reading this process's metrics registry in a test, as /metrics shows it.
#pragma once

#include "runtime/metrics.hpp"

#include <cstdlib>
#include <string>
#include <string_view>

namespace mooring::test {

// The value of one sample, named as in the exposition text
// (`name{label="value",...}`, labels in their registration order); 0 when the
// series has not been registered yet.
inline double metric_value(std::string_view sample) {
  const std::string text = runtime::metrics().text();
  std::string_view rest = text;
  while (!rest.empty()) {
    const auto end = rest.find('\n');
    const auto line = rest.substr(0, end);
    rest = end == std::string_view::npos ? std::string_view() : rest.substr(end + 1);
    if (line.size() > sample.size() && line.substr(0, sample.size()) == sample &&
        line[sample.size()] == ' ')
      return std::strtod(std::string(line.substr(sample.size() + 1)).c_str(), nullptr);
  }
  return 0;
}

}  // namespace mooring::test
