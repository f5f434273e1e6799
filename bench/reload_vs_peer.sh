#!/usr/bin/env bash
# Reloads under a steady chat load, mooring and the FastAPI + uvicorn reference
# side by side: mooring applies a changed configuration through PUT
# /api/config; the reference reloads as `uvicorn --reload` does when a file is
# saved. The peer runs on Debian's own Python (/usr/bin/python3).
#   bench/reload_vs_peer.sh [clients=20] [reloads=20]
set -euo pipefail
cd "$(dirname "$0")/.."
clients=${1:-20}
reloads=${2:-20}
build=build/release
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

base='[gateway]\nlisten = "127.0.0.1:0"\n[admin]\nlisten = "127.0.0.1:0"\n[log]\nlevel = "warn"\n'
printf "$base" > "$work/mooring.toml"
printf "$base"'[provider.echo]\ntoken_delay = "0ms"\n[chat]\nhistory_messages = 20\n' > "$work/a.toml"
printf "$base"'[provider.echo]\ntoken_delay = "1ms"\n[chat]\nhistory_messages = 10\n' > "$work/b.toml"
(cd "$work" && exec "$OLDPWD/$build/mooring" serve --ready-file ready.json) &
pid=$!
for _ in $(seq 200); do [ -s "$work/ready.json" ] && grep -q admin "$work/ready.json" && break; sleep 0.05; done
read -r gateway admin < <(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d["gateway"], d["admin"])' "$work/ready.json")
token=$(cat "$work/mooring-data/admin.token")
echo -n "mooring (PUT /api/config):      "
"$build/bench/bench_reload" put "$gateway" "$admin" "$token" "$work/a.toml" "$work/b.toml" "$clients" "$reloads"
kill -INT $pid; wait $pid

port=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mkdir -p "$work/watched"
echo "token_delay = 0" > "$work/watched/settings.py"
/usr/bin/python3 bench/peers/fastapi_reload.py "$port" "$work/peer" "$work/watched" &
peer=$!
for _ in $(seq 200); do /usr/bin/python3 -c "import socket; socket.create_connection(('127.0.0.1',$port))" 2>/dev/null && break; sleep 0.05; done
echo -n "fastapi+uvicorn (--reload):     "
"$build/bench/bench_reload" touch "127.0.0.1:$port" "$work/watched/settings.py" "$peer" "$clients" "$reloads"
kill -INT $peer; wait $peer || true
