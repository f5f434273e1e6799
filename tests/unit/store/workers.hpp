// The store suites run every test with the work on the store's thread and
// on the callers' (StoreOptions::worker).
#pragma once

#include "store/store.hpp"

#include <gtest/gtest.h>

#include <string>

namespace mooring::store::test_workers {

inline std::string name(const ::testing::TestParamInfo<StoreOptions::Worker>& info) {
  return info.param == StoreOptions::Worker::caller ? "OnTheCallersThread" : "OnTheStoreThread";
}

inline auto all() {
  return ::testing::Values(StoreOptions::Worker::store_thread, StoreOptions::Worker::caller);
}

}  // namespace mooring::store::test_workers
