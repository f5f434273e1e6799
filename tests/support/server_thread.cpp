#include "support/server_thread.hpp"

#include <filesystem>

namespace mooring::test {

std::size_t open_descriptors() {
  std::size_t n = 0;
  for ([[maybe_unused]] const auto& entry : std::filesystem::directory_iterator("/proc/self/fd")) ++n;
  return n;
}

}  // namespace mooring::test
