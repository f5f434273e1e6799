#!/usr/bin/env bash
# Runs every benchmark against the release build and prints the figures that
# docs/benchmarks.md records. Run from the repository root after
# `cmake --preset release -DMOORING_BUILD_BENCH=ON -DMOORING_BUILD_TESTS=ON && cmake --build --preset release`.
set -euo pipefail
cd "$(dirname "$0")/.."
build=build/release
echo "== machine: $(nproc) cores, $(uname -r)"
"$build/bench/bench_admin_stop" 20 100 200
python3 bench/lifecycle.py "$build/mooring" 20
python3 bench/admin_rss.py "$build/mooring" 1000
"$build/bench/bench_llm" 100 20000
"$build/bench/bench_shutdown" "$build/mooring" 20 0 100 1000
./bench/chat_vs_peer.sh
./bench/instructions.sh
./bench/instructions.sh --users 1 --messages 400
./bench/reload_vs_peer.sh 20 20
/usr/bin/python3 bench/stop_with_clients.py "$build/mooring" 100 5
