#!/usr/bin/env bash
# The peer runs on Debian's own Python (/usr/bin/python3), where python3-fastapi lives.
# The chat round-trip benchmark, mooring and the FastAPI + uvicorn reference
# side by side on this machine: same protocol, same clients, same SQLite durability.
#   bench/chat_vs_peer.sh [clients=50] [messages=40]
set -euo pipefail
cd "$(dirname "$0")/.."
clients=${1:-50}
messages=${2:-40}
build=build/release
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

printf '[gateway]\nlisten = "127.0.0.1:0"\n[admin]\nlisten = "127.0.0.1:0"\n[log]\nlevel = "warn"\n' > "$work/mooring.toml"
(cd "$work" && exec "$OLDPWD/$build/mooring" serve --ready-file ready.json) &
pid=$!
for _ in $(seq 200); do [ -s "$work/ready.json" ] && grep -q gateway "$work/ready.json" && break; sleep 0.05; done
gateway=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["gateway"])' "$work/ready.json")
echo -n "mooring:          "; "$build/bench/bench_chat" "$gateway" "$clients" "$messages" "$pid"
echo "mooring RSS: $(grep VmRSS /proc/$pid/status | awk '{print $2}') KiB"
kill -INT $pid; wait $pid

port=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
/usr/bin/python3 bench/peers/fastapi_chat.py "$port" "$work/peer" &
peer=$!
for _ in $(seq 200); do python3 -c "import socket; socket.create_connection(('127.0.0.1',$port))" 2>/dev/null && break; sleep 0.05; done
echo -n "fastapi+uvicorn:  "; "$build/bench/bench_chat" "127.0.0.1:$port" "$clients" "$messages" "$peer"
echo "fastapi RSS: $(grep VmRSS /proc/$peer/status | awk '{print $2}') KiB"
kill -INT $peer; wait $peer || true
