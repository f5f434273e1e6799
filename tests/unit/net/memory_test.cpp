#include "runtime/memory.hpp"

#include <gtest/gtest.h>

#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include <unistd.h>

namespace mooring::runtime {
namespace {

std::size_t resident_bytes() {
  std::ifstream statm("/proc/self/statm");
  std::size_t pages = 0, resident = 0;
  statm >> pages >> resident;
  return resident * static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
}

// 64 messages of 1 MiB, each followed by a small block that stays (a
// connection's bookkeeping), then the messages are freed: what the process
// holds afterwards must not be their size. Without a fixed threshold glibc
// serves them from its heap, and the small blocks pin it.
TEST(MemoryTest, LargeBlocksGoBackToTheSystemWhenFreed) {
#if defined(__SANITIZE_ADDRESS__)
  GTEST_SKIP() << "AddressSanitizer has its own allocator";
#endif
  ASSERT_TRUE(return_large_blocks_when_freed());
  {
    // A larger block freed once: this is what raises glibc's dynamic threshold.
    std::vector<char> warm(4 << 20, 'w');
  }
  const std::size_t before = resident_bytes();
  std::vector<std::vector<char>> large;
  std::vector<std::vector<char>> small;
  for (int i = 0; i < 64; ++i) {
    large.emplace_back(1 << 20, 'l');
    small.emplace_back(256, 's');
  }
  EXPECT_GT(resident_bytes(), before + 48 * (1 << 20));
  large.clear();
  large.shrink_to_fit();
  EXPECT_LT(resident_bytes(), before + 8 * (1 << 20));
}

}  // namespace
}  // namespace mooring::runtime
