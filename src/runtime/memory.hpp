// How freed memory goes back to the system. glibc serves a block from its
// heap once a block of that size has been freed (its mmap threshold grows up
// to 32 MiB), and a heap cannot shrink below a live block: after a burst of
// large messages the process keeps their peak size. With the threshold fixed,
// every large block is its own mapping and is returned when freed, so memory
// follows what is live, not the largest burst ever seen.
#pragma once

#include <cstddef>

namespace mooring::runtime {

inline constexpr std::size_t large_block_bytes = 128 * 1024;

// Call once at start, before the network thread runs. False if the allocator
// refused (not glibc).
bool return_large_blocks_when_freed(std::size_t threshold = large_block_bytes);

}  // namespace mooring::runtime
