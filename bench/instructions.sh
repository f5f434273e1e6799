#!/usr/bin/env bash
# Instructions per chat round trip: mooring under Valgrind's callgrind, a
# fixed number of round trips from bench_chat, the count taken between a
# reset just before them and a dump just after (start-up, warm-up and
# shutdown excluded). Unlike a rate on this shared machine, which moves by
# ±25 % from one run to the next, the count moves by under 1 % between runs:
# it shows what a change to the user-space path buys. It counts no time spent
# in the kernel (system calls, page faults) or waiting for memory, so a rate
# from chat_vs_peer.sh is still the result; this says where it comes from.
#
#   bench/instructions.sh [--binary PATH] [--synchronous normal|full]
#                         [--users N] [--messages M] [--keep FILE] [--cache]
#
#   --users, --messages  N users each send M messages (closed loop, as in
#                        chat_vs_peer.sh); default 50 users, 40 messages
#   --keep FILE          keep callgrind's output (callgrind_annotate FILE)
#   --cache              also simulate the caches (a 32 KiB first level and a
#                        1 MiB last one, a core's L2 on the 2-core machines of
#                        docs/benchmarks.md) and print the last-level misses
#                        per round trip: what grows with the users when the
#                        instructions do not (docs/benchmarks.md, "Why the
#                        rate falls past 100 users"); about twice as slow
#   PRELOAD=lib.so       run mooring with that library preloaded (an allocator)
#
# Needs valgrind (Debian's valgrind) and the release build with the
# benchmarks (cmake --preset release -DMOORING_BUILD_BENCH=ON).
set -euo pipefail
cd "$(dirname "$0")/.."

binary=$PWD/build/release/mooring
synchronous=normal
users=50
messages=40
keep=""
cache_sim=()
while [ $# -gt 0 ]; do
  case $1 in
    --binary) binary=$(realpath "$2"); shift 2 ;;
    --synchronous) synchronous=$2; shift 2 ;;
    --users) users=$2; shift 2 ;;
    --messages) messages=$2; shift 2 ;;
    --keep) keep=$2; shift 2 ;;
    --cache) cache_sim=(--cache-sim=yes --I1=32768,8,64 --D1=32768,8,64 --LL=1048576,16,64)
             shift ;;
    *) echo "unknown option $1 (see the head of $0)" >&2; exit 2 ;;
  esac
done
command -v valgrind >/dev/null || { echo "valgrind is not installed (apt-get install valgrind)" >&2; exit 1; }
bench_chat=$PWD/build/release/bench/bench_chat
[ -x "$bench_chat" ] || cmake --build build/release --target bench_chat >/dev/null

work=$(mktemp -d)
server_pid=""
cleanup() {
  [ -n "$server_pid" ] && kill -INT "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

cat > "$work/mooring.toml" <<EOF
[data]
dir = "data"
synchronous = "$synchronous"
[gateway]
listen = "127.0.0.1:0"
max_connections = 100000
max_messages_per_minute = 1000000
[admin]
listen = "127.0.0.1:0"
[log]
level = "warn"
EOF
(cd "$work" && exec env ${PRELOAD:+LD_PRELOAD=$PRELOAD} valgrind --tool=callgrind "${cache_sim[@]}" \
   --callgrind-out-file="$work/callgrind.out" "$binary" serve -c mooring.toml \
   --ready-file ready.json >log 2>&1) &
server_pid=$!
for _ in $(seq 1200); do
  grep -qs gateway "$work/ready.json" && break
  kill -0 "$server_pid" 2>/dev/null || { cat "$work/log" >&2; exit 1; }
  sleep 0.05
done
address=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["gateway"])' "$work/ready.json")

# Every user's session exists and has a history before the counted messages.
"$bench_chat" "$address" "$users" 2 >/dev/null
callgrind_control --zero "$server_pid" >/dev/null 2>&1
line=$("$bench_chat" "$address" "$users" "$messages" | tail -1)
callgrind_control --dump "$server_pid" >/dev/null 2>&1
dump=""
for _ in $(seq 200); do
  dump=$(ls "$work"/callgrind.out.* 2>/dev/null | head -1)
  [ -n "$dump" ] && grep -q '^totals:\|^summary:' "$dump" && break
  sleep 0.05
done
[ -n "$dump" ] || { echo "callgrind wrote no dump" >&2; exit 1; }
total=$(grep -m1 '^totals:\|^summary:' "$dump" | awk '{print $2}')
[ -n "$keep" ] && cp "$dump" "$keep"
round_trips=$((users * messages))
echo "mooring $(basename "$binary") data.synchronous=$synchronous, $users users x $messages messages${PRELOAD:+, LD_PRELOAD=$PRELOAD}"
echo "  under callgrind: $line"
awk -v t="$total" -v n="$round_trips" \
  'BEGIN { printf "  %d instructions per round trip (%d round trips, %d instructions)\n", t / n, n, t }'
if [ ${#cache_sim[@]} -gt 0 ]; then
  # The totals line lists the events in the order of the events: line.
  grep -m1 '^events:' "$dump" | cut -d' ' -f2- > "$work/events"
  grep -m1 '^totals:\|^summary:' "$dump" | cut -d' ' -f2- > "$work/totals"
  awk -v n="$round_trips" 'NR == FNR { for (i = 1; i <= NF; i++) name[i] = $i; next }
    { for (i = 1; i <= NF; i++) v[name[i]] = $i }
    END { printf "  per round trip: %d first-level data misses, %d last-level (%d reads, %d writes), %d first-level instruction misses\n",
            (v["D1mr"] + v["D1mw"]) / n, (v["DLmr"] + v["DLmw"]) / n, v["DLmr"] / n, v["DLmw"] / n, v["I1mr"] / n }' \
    "$work/events" "$work/totals"
fi
