#include "runtime/memory.hpp"

#include <malloc.h>

namespace mooring::runtime {

bool return_large_blocks_when_freed(std::size_t threshold) {
#ifdef M_MMAP_THRESHOLD
  return ::mallopt(M_MMAP_THRESHOLD, static_cast<int>(threshold)) == 1;
#else
  (void)threshold;
  return false;
#endif
}

}  // namespace mooring::runtime
