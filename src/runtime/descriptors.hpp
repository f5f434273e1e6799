// The process's file-descriptor limit. Service managers start processes with
// a soft RLIMIT_NOFILE of 1024 while allowing far more (the hard limit); a
// server holding one descriptor per connection raises it at start.
#pragma once

#include "runtime/asio.hpp"

#include <cstdint>
#include <string>

namespace mooring::runtime {

struct DescriptorLimit {
  std::uint64_t soft_before = 0;
  std::uint64_t soft = 0;  // now
  std::uint64_t hard = 0;
  error_code error;        // set when the limit could not be read or raised

  // One line for the log: "descriptor limit raised from 1024 to 524288", or
  // why it stayed.
  std::string describe() const;
};

// Raises the soft RLIMIT_NOFILE to the hard limit (to /proc/sys/fs/nr_open
// when the hard limit is unlimited). Never throws.
DescriptorLimit raise_descriptor_limit();

// The current soft limit (0 if it cannot be read).
std::uint64_t descriptor_limit();

// How many connections a server may hold so that `reserved` descriptors stay
// free for everything else (the store, the admin listener, upstream requests):
// the smaller of `wanted` and the soft limit minus what is open now minus
// `reserved` (at least 1).
std::size_t connections_within_descriptor_limit(std::size_t wanted, std::size_t reserved);

// Descriptors this process has open now (/proc/self/fd).
std::size_t open_descriptor_count();

}  // namespace mooring::runtime
