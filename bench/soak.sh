#!/usr/bin/env bash
# The long soak: the integration suite's Soak tests with many more cycles.
#   bench/soak.sh [CYCLES] [MOVES]      (defaults: 200000 visits, 5000 admin moves)
# Prints descriptors and RSS before and after each; fails if either leaks.
set -euo pipefail
cd "$(dirname "$0")/.."
cycles=${1:-200000}
moves=${2:-5000}
binary=build/release-tests/tests/integration_tests
if [ ! -x "$binary" ]; then
  cmake -S . -B build/release-tests -DCMAKE_BUILD_TYPE=Release -DMOORING_BUILD_TESTS=ON >/dev/null
  cmake --build build/release-tests -j "$(nproc)" --target integration_tests mooring
fi
MOORING_SOAK_CYCLES=$cycles MOORING_SOAK_MOVES=$moves "$binary" --gtest_filter='Soak.*'
