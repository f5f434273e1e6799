#!/usr/bin/env bash
# mooring beside a FastAPI + uvicorn + sqlite3 reference (bench/peers/fastapi_chat.py),
# in one invocation, on this machine:
#
# 1. Chat round trips. Each server under test runs alone, pinned to one core
#    (taskset -c $SERVER_CPU, default 0); the load generator (bench_chat) is
#    pinned to another (CLIENT_CPU, default 1). mooring runs with
#    data.synchronous = "normal" and "full", the reference with SQLite WAL +
#    synchronous=NORMAL and FULL; each is swept over the user counts (closed
#    loop: every user sends a 32-byte message and waits for the final `chat`
#    frame, then sends the next). Before its sweep each server gets 10 messages
#    from every user, so every measured message reads a full 20-message history.
#    Prints a table and the mooring/reference ratios at equal settings, and
#    writes OUT/chat-vs-peer.dat and OUT/chat-vs-peer.png (gnuplot).
#    The same sweep runs the transport floor (floor:none, bench_transport_floor,
#    bench/peers/transport_floor.cpp): the same frames for each message, nothing
#    stored, no history, no provider; what any server of this protocol could
#    reach on this machine's TCP, with mooring's rate as a share of it.
# 2. Idle memory per WebSocket connection: N idle connections held open to
#    mooring's /ws/<user>, Node's `ws` (bench/peers/ws_idle.js, Debian's
#    node-ws) and a raw Beast echo server (bench_beast_idle); RSS before and
#    after. Writes OUT/idle-memory.dat.
#
#   bench/chat_vs_peer.sh [--users "1 10 50 100 200 500"] [--seconds 5] [--warmup 1]
#                         [--servers "mooring:normal mooring:full peer:normal peer:full floor:none"]
#                         [--idle "1000 10000"] [--out docs] [--quick] [--profile USERS]
#
#   --users     user counts of the sweep
#   --seconds   measured seconds per point; --warmup: unmeasured seconds before
#   --servers   which servers and settings to run ("" skips the chat part)
#   --idle      idle connection counts ("" skips the memory part)
#   --out       where the data files and the plot go
#   --profile   after each mooring sweep, one more point with USERS users under
#               `perf record --call-graph dwarf` (not in the table); the top entries
#               by thread, library and symbol, and mooring's functions with their
#               callees, go to OUT/perf-mooring-<synchronous>.txt
#   --quick     a smoke run: --users "1 50" --seconds 1 --warmup 0.3 --idle 1000,
#               files into a temporary directory that is removed at exit
#
# Needs the release build with the benchmarks (cmake --preset release
# -DMOORING_BUILD_BENCH=ON; missing bench targets are built), /usr/bin/python3
# with Debian's python3-fastapi and python3-uvicorn, node with node-ws, and
# gnuplot (gnuplot-nox) for the plot (skipped with a note when missing).
set -euo pipefail
cd "$(dirname "$0")/.."

users="1 10 50 100 200 500"
seconds=5
warmup=1
servers="mooring:normal mooring:full peer:normal peer:full floor:none"
idle="1000 10000"
out=docs
quick=0
profile=
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 2; }
while [ $# -gt 0 ]; do
  case $1 in
    --users) users=$2; shift 2 ;;
    --seconds) seconds=$2; shift 2 ;;
    --warmup) warmup=$2; shift 2 ;;
    --servers) servers=$2; shift 2 ;;
    --idle) idle=$2; shift 2 ;;
    --out) out=$2; quick_out=0; shift 2 ;;
    --profile) profile=$2; shift 2 ;;
    --quick) quick=1; users="1 50"; seconds=1; warmup=0.3; idle=1000; shift ;;
    *) usage ;;
  esac
done

build=${BUILD:-build/release}
server_cpu=${SERVER_CPU:-0}
client_cpu=${CLIENT_CPU:-1}
python=/usr/bin/python3  # Debian's Python, where python3-fastapi lives
work=$(mktemp -d)
if [ "$quick" = 1 ] && [ "${quick_out:-1}" = 1 ]; then out=$work/out; fi
mkdir -p "$out"
server_pid=
stop_server() {
  if [ -n "$server_pid" ]; then
    kill -INT "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
    server_pid=
  fi
}
trap 'stop_server; rm -rf "$work"' EXIT

targets="mooring bench_chat bench_idle bench_beast_idle bench_transport_floor"
missing=""
for t in $targets; do
  [ "$t" = mooring ] && f=$build/mooring || f=$build/bench/$t
  [ -x "$f" ] || missing="$missing $t"
done
if [ -n "$missing" ]; then
  echo "building:$missing"
  cmake --build "$build" -j "$(nproc)" --target $missing >/dev/null
fi
if [ "$(nproc)" -lt 2 ]; then
  echo "note: one core only; the server and the load generator share it"
  client_cpu=$server_cpu
fi
on_client_core() { taskset -c "$client_cpu" "$@"; }
# Idle connections need a descriptor each, in the server and in the client.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
fd_limit=$(ulimit -n)

commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
git diff --quiet HEAD -- src 2>/dev/null || commit="$commit+uncommitted src changes"
when=$(date -u '+%Y-%m-%d %H:%M UTC')
machine="$(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')), Linux $(uname -r)"
echo "== $when, mooring $commit, $machine, load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "== server on core $server_cpu, load generator on core $client_cpu"

free_port() { "$python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_for_port() {  # PORT PID
  for _ in $(seq 400); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    kill -0 "$2" 2>/dev/null || return 1
    sleep 0.025
  done
  return 1
}
wait_for_line() {  # FILE PID: the first line of FILE once it is written
  for _ in $(seq 400); do
    [ -s "$1" ] && head -n1 "$1" | grep -q . && { head -n1 "$1"; return 0; }
    kill -0 "$2" 2>/dev/null || return 1
    sleep 0.025
  done
  return 1
}

# start_mooring SYNCHRONOUS: sets server_pid and address.
start_mooring() {
  local dir=$work/mooring-$1-$RANDOM
  mkdir -p "$dir"
  cat > "$dir/mooring.toml" <<EOF
[data]
dir = "data"
synchronous = "$1"
[gateway]
listen = "127.0.0.1:0"
max_connections = 1000000
max_messages_per_minute = 1000000
[admin]
listen = "127.0.0.1:0"
[log]
level = "warn"
EOF
  (cd "$dir" && exec taskset -c "$server_cpu" "$OLDPWD/$build/mooring" serve -c mooring.toml \
     --ready-file ready.json >log 2>&1) &
  server_pid=$!
  for _ in $(seq 400); do
    [ -s "$dir/ready.json" ] && grep -q gateway "$dir/ready.json" && break
    kill -0 "$server_pid" 2>/dev/null || { cat "$dir/log"; return 1; }
    sleep 0.025
  done
  address=$("$python" -c 'import json,sys; print(json.load(open(sys.argv[1]))["gateway"])' "$dir/ready.json")
}

# start_peer SYNCHRONOUS: sets server_pid, address and peer_settings.
start_peer() {
  local dir=$work/peer-$1-$RANDOM port
  mkdir -p "$dir"
  port=$(free_port)
  taskset -c "$server_cpu" "$python" bench/peers/fastapi_chat.py "$port" "$dir/data" "$1" >"$dir/log" 2>&1 &
  server_pid=$!
  wait_for_port "$port" "$server_pid" || { cat "$dir/log"; return 1; }
  address=127.0.0.1:$port
  peer_settings=$(grep -m1 '^peer settings:' "$dir/log" | sed 's/^peer settings: //')
}

# start_floor: sets server_pid and address.
start_floor() {
  taskset -c "$server_cpu" "$build/bench/bench_transport_floor" 0 >"$work/floor.out" 2>&1 &
  server_pid=$!
  address=127.0.0.1:$(wait_for_line "$work/floor.out" "$server_pid")
}

top_entries() {  # SORT_KEYS: perf report's entries of at least 0.5 %, one a line
  perf report -i "$work/perf.data" --stdio --no-children -g none --sort "$1" --percent-limit 0.5 \
    2>/dev/null | grep '%' | sed 's/[ -]*$//'
}

describe() {  # SERVER SYNCHRONOUS: the settings column
  case $1 in
    mooring) echo "data.synchronous=$2" ;;
    peer) echo "WAL synchronous=${2^^}, 20-row history" ;;
    floor) echo "transport only: nothing stored" ;;
  esac
}

# ---------------------------------------------------------------- chat sweep
chat_dat=$out/chat-vs-peer.dat
if [ -n "$servers" ]; then
  max_users=$(printf '%s\n' $users | sort -n | tail -n1)
  {
    echo "# Chat round trips, closed loop, 32-byte messages, echo provider (bench/chat_vs_peer.sh)"
    echo "# $when, mooring $commit, $machine"
    echo "# server on core $server_cpu, load generator on core $client_cpu; ${warmup} s warm-up + ${seconds} s measured per point"
    echo "# server  synchronous  users  round_trips_per_s  p50_ms  p99_ms  server_cores  failed_clients  server_runqueue"
    echo "# server_cores: the server's CPU time over the wall time; server_runqueue: the time its threads waited for a CPU, over the wall time"
  } > "$chat_dat"
  echo
  printf '%-8s %-36s %6s %15s %9s %9s %10s %10s\n' server settings users "round trips/s" "p50 ms" "p99 ms" "server CPU" "CPU wait"
  for entry in $servers; do
    server=${entry%%:*}
    sync=${entry#*:}
    case $server in
      mooring) start_mooring "$sync"
               full_settings="mooring $commit: data.synchronous=$sync, chat.history_messages=20, echo provider" ;;
      peer) start_peer "$sync"
            full_settings="FastAPI + uvicorn + sqlite3: $peer_settings" ;;
      floor) start_floor
             full_settings="the transport floor: Beast WebSocket on one thread, each message's JSON parsed and ack + chat_token + chat written; nothing stored, no history, no provider" ;;
      *) echo "unknown server $server (mooring, peer or floor)"; exit 2 ;;
    esac
    settings=$(describe "$server" "$sync")
    echo "-- $full_settings"
    echo "# $server at $sync: $full_settings" >> "$chat_dat"
    # Every user's history filled (10 messages = 20 rows) before anything is measured.
    on_client_core "$build/bench/bench_chat" "$address" "$max_users" 10 --csv >/dev/null ||
      echo "warning: the history prefill of $server at $sync had failures"
    for u in $users; do
      line=$(on_client_core "$build/bench/bench_chat" "$address" "$u" 0 "$server_pid" \
               --seconds "$seconds" --warmup "$warmup" --csv 2>"$work/bench_chat.err") || true
      if [ -z "$line" ] || ! grep -q '^csv,' <<<"$line"; then
        echo "bench_chat failed for $server at $sync with $u users: $(cat "$work/bench_chat.err")"
        continue
      fi
      IFS=, read -r _ clients trips secs rate p50 p99 cores failed runqueue <<<"$line"
      printf '%-8s %-36s %6d %15.0f %9.2f %9.2f %9.0f%% %9.0f%%%s\n' "$server" "$settings" "$u" "$rate" \
        "$p50" "$p99" "$(awk -v c="$cores" 'BEGIN{print c*100}')" "$(awk -v c="$runqueue" 'BEGIN{print c*100}')" \
        "$([ "$failed" = 0 ] || echo "  ($failed clients failed: $(head -c 200 "$work/bench_chat.err"))")"
      echo "$server $sync $u $rate $p50 $p99 $cores $failed $runqueue" >> "$chat_dat"
    done
    if [ -n "$profile" ] && [ "$server" = mooring ]; then
      taskset -c "$client_cpu" perf record -q --call-graph dwarf,16384 -F 499 -p "$server_pid" -o "$work/perf.data" \
        -- sleep "$(awk -v w="$warmup" -v s="$seconds" 'BEGIN{print w + s}')" >/dev/null 2>&1 &
      perf_pid=$!
      on_client_core "$build/bench/bench_chat" "$address" "$profile" 0 "$server_pid" \
        --seconds "$seconds" --warmup "$warmup" >"$work/profiled.txt" 2>&1 || true
      wait "$perf_pid" || true
      {
        echo "# mooring $commit, data.synchronous=$sync, $profile users: $(cat "$work/profiled.txt")"
        echo "# share of samples by thread"
        top_entries comm
        echo "# by thread and library"
        top_entries comm,dso
        echo "# by symbol (self time)"
        top_entries comm,dso,symbol
        echo "# mooring's functions, callees included (template arguments elided)"
        perf report -i "$work/perf.data" --stdio --children -g none --sort symbol --percent-limit 2 \
          2>/dev/null | grep '%' | grep 'mooring::\|sqlite3_step\|sqlite3_prepare\|fdatasync' |
          sed 's/[ -]*$//; s/<[^<>]*>//g; s/<[^<>]*>//g; s/<[^<>]*>//g' | cut -c1-160
      } > "$out/perf-mooring-$sync.txt"
      echo "         profile with $profile users: $out/perf-mooring-$sync.txt"
    fi
    if [ "$server" = mooring ]; then
      echo "         mooring RSS after its sweep: $(awk '/VmRSS/{print $2}' /proc/$server_pid/status) KiB"
    elif [ "$server" = peer ]; then
      echo "         reference RSS after its sweep: $(awk '/VmRSS/{print $2}' /proc/$server_pid/status) KiB"
    fi
    stop_server
  done

  echo
  echo "mooring / reference at equal settings (round trips/s ratio; p99 ratio reference/mooring):"
  printf '%6s %22s %22s\n' users "synchronous=normal" "synchronous=full"
  for u in $users; do
    row=$(awk -v u="$u" '
      !/^#/ && $3 == u { rate[$1 "," $2] = $4; p99[$1 "," $2] = $6 }
      function ratio(s,   r) {
        if (!(("mooring," s) in rate) || !(("peer," s) in rate) || rate["peer," s] == 0 || p99["mooring," s] == 0) return "-"
        return sprintf("%.2fx / p99 %.2fx", rate["mooring," s] / rate["peer," s], p99["peer," s] / p99["mooring," s])
      }
      END { printf "%22s %22s", ratio("normal"), ratio("full") }' "$chat_dat")
    printf '%6d %s\n' "$u" "$row"
  done
  if grep -q '^floor ' "$chat_dat"; then
    echo
    echo "mooring as a share of the transport floor's rate (the same frames, nothing stored):"
    printf '%6s %22s %22s\n' users "synchronous=normal" "synchronous=full"
    for u in $users; do
      awk -v u="$u" '
        !/^#/ && $3 == u { rate[$1 "," $2] = $4 }
        function share(s) {
          if (!(("mooring," s) in rate) || !("floor,none" in rate) || rate["floor,none"] == 0) return "-"
          return sprintf("%.0f %% of %.0f/s", 100 * rate["mooring," s] / rate["floor,none"], rate["floor,none"])
        }
        END { printf "%6d %22s %22s\n", u, share("normal"), share("full") }' "$chat_dat"
    done
  fi

  if command -v gnuplot >/dev/null; then
    rate_plot="" p99_plot=""
    for entry in $servers; do
      s=${entry%%:*}; y=${entry#*:}
      case $s in
        mooring) label="mooring, data.synchronous=$y" ;;
        floor) label="transport floor (nothing stored)" ;;
        *) label="FastAPI+uvicorn+sqlite3, WAL synchronous=${y^^}" ;;
      esac
      awk -v s="$s" -v y="$y" '!/^#/ && $1 == s && $2 == y { print $3, $4, $6 }' "$chat_dat" > "$work/$s-$y.series"
      rate_plot+="${rate_plot:+, }\"$work/$s-$y.series\" using 1:2 with linespoints title \"$label\""
      p99_plot+="${p99_plot:+, }\"$work/$s-$y.series\" using 1:3 with linespoints title \"$label\""
    done
    gnuplot <<EOF
set terminal pngcairo size 1280,520 font ",10"
set output "$out/chat-vs-peer.png"
set multiplot layout 1,2 title "Chat round trips, one server core, closed loop, 32-byte messages, echo provider\\n$when, mooring $commit, $(nproc) cores"
set logscale x
set xtics ($(printf '%s\n' $users | sort -n | paste -sd, -))
set xlabel "users"
set grid
set key below
set ylabel "round trips/s"
set yrange [0:*]
plot $rate_plot
set ylabel "p99 latency (ms)"
set logscale y
set yrange [*:*]
plot $p99_plot
unset multiplot
EOF
    echo "wrote $chat_dat and $out/chat-vs-peer.png"
  else
    echo "wrote $chat_dat (no plot: gnuplot is missing; apt-get install gnuplot-nox)"
  fi
fi

# --------------------------------------------------------------- idle memory
idle_dat=$out/idle-memory.dat
if [ -n "$idle" ]; then
  {
    echo "# Idle WebSocket connections held open, server RSS before and after (bench/chat_vs_peer.sh)"
    echo "# $when, mooring $commit, $machine"
    echo "# server  connections  connections_open  rss_before_kib  rss_after_kib  kib_per_connection  connect_seconds  problems"
  } > "$idle_dat"
  node_ws=1
  command -v node >/dev/null && (node -e "try{require('ws')}catch(e){require('/usr/share/nodejs/ws')}" 2>/dev/null) ||
    { node_ws=0; echo "note: no node with the ws package (apt-get install node-ws): Node's ws is left out"; }
  echo
  printf '%-12s %11s %16s %15s %15s %9s\n' server connections "RSS before KiB" "RSS after KiB" "KiB/connection" "connect s"
  for n in $idle; do
    if [ $((n + 64)) -gt "$fd_limit" ]; then
      echo "skipping $n idle connections: the descriptor limit is $fd_limit"
      continue
    fi
    for server in mooring node-ws beast; do
      case $server in
        mooring)
          start_mooring normal
          prefix=/ws/idle- ;;
        node-ws)
          [ "$node_ws" = 1 ] || continue
          taskset -c "$server_cpu" node bench/peers/ws_idle.js 0 >"$work/ws_idle.out" 2>&1 &
          server_pid=$!
          address=127.0.0.1:$(wait_for_line "$work/ws_idle.out" "$server_pid")
          prefix=/idle- ;;
        beast)
          taskset -c "$server_cpu" "$build/bench/bench_beast_idle" 0 >"$work/beast_idle.out" 2>&1 &
          server_pid=$!
          address=127.0.0.1:$(wait_for_line "$work/beast_idle.out" "$server_pid")
          prefix=/idle- ;;
      esac
      line=$(on_client_core "$build/bench/bench_idle" "$address" "$prefix" "$n" "$server_pid" --csv \
               2>"$work/bench_idle.err") || true
      stop_server
      if [ -z "$line" ] || ! grep -q '^csv,' <<<"$line"; then
        echo "bench_idle failed for $server with $n connections: $(cat "$work/bench_idle.err")"
        continue
      fi
      IFS=, read -r _ open before after per secs problems <<<"$line"
      printf '%-12s %11d %16d %15d %15.2f %9.2f%s\n' "$server" "$open" "$before" "$after" "$per" "$secs" \
        "$([ "$problems" = 0 ] || echo "  ($problems failed or dropped: $(head -c 200 "$work/bench_idle.err"))")"
      echo "$server $n $open $before $after $per $secs $problems" >> "$idle_dat"
    done
  done
  echo
  echo "KiB per idle connection, side by side:"
  awk '!/^#/ { per[$2 "," $1] = $6; if (!($2 in seen)) { seen[$2] = 1; order[++n] = $2 } }
       END {
         printf "%12s %10s %10s %10s\n", "connections", "mooring", "node ws", "beast"
         for (i = 1; i <= n; i++) {
           c = order[i]
           printf "%12d %10s %10s %10s\n", c, (c ",mooring") in per ? per[c ",mooring"] : "-",
             (c ",node-ws") in per ? per[c ",node-ws"] : "-", (c ",beast") in per ? per[c ",beast"] : "-"
         }
       }' "$idle_dat"
  echo "wrote $idle_dat"
fi
