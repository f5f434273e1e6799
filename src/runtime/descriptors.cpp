#include "runtime/descriptors.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <filesystem>
#include <fstream>

#include <sys/resource.h>

namespace mooring::runtime {
namespace {

std::uint64_t system_descriptor_ceiling() {
  std::ifstream in("/proc/sys/fs/nr_open");
  std::uint64_t value = 0;
  if (in >> value && value > 0) return value;
  return 1024 * 1024;
}

}  // namespace

std::string DescriptorLimit::describe() const {
  if (error)
    return fmt::format("descriptor limit left at {} (hard limit {}): {}", soft, hard,
                       error.message());
  if (soft == soft_before) return fmt::format("descriptor limit {} (the hard limit)", soft);
  return fmt::format("descriptor limit raised from {} to {}", soft_before, soft);
}

DescriptorLimit raise_descriptor_limit() {
  DescriptorLimit result;
  rlimit limit{};
  if (::getrlimit(RLIMIT_NOFILE, &limit) != 0) {
    result.error = error_code(errno, boost::system::system_category());
    return result;
  }
  result.soft_before = result.soft = limit.rlim_cur;
  const rlim_t target = limit.rlim_max == RLIM_INFINITY
                            ? static_cast<rlim_t>(system_descriptor_ceiling())
                            : limit.rlim_max;
  result.hard = target;
  if (limit.rlim_cur != RLIM_INFINITY && limit.rlim_cur >= target) return result;
  limit.rlim_cur = target;
  if (::setrlimit(RLIMIT_NOFILE, &limit) != 0) {
    result.error = error_code(errno, boost::system::system_category());
    return result;
  }
  result.soft = target;
  return result;
}

std::uint64_t descriptor_limit() {
  rlimit limit{};
  if (::getrlimit(RLIMIT_NOFILE, &limit) != 0) return 0;
  return limit.rlim_cur;
}

std::size_t open_descriptor_count() {
  std::error_code ec;
  std::size_t n = 0;
  for (auto it = std::filesystem::directory_iterator("/proc/self/fd", ec);
       !ec && it != std::filesystem::directory_iterator(); it.increment(ec))
    ++n;
  return n > 0 ? n - 1 : 0;  // the directory being listed
}

std::size_t connections_within_descriptor_limit(std::size_t wanted, std::size_t reserved) {
  const std::uint64_t limit = descriptor_limit();
  const std::uint64_t used = open_descriptor_count() + reserved;
  const std::uint64_t room = limit > used ? limit - used : 1;
  return static_cast<std::size_t>(std::min<std::uint64_t>(wanted, std::max<std::uint64_t>(room, 1)));
}

}  // namespace mooring::runtime
