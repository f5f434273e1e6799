#!/usr/bin/env python3
"""SIGINT to exit with N chat clients connected (each has had one reply and
sits idle, as users of a chat bot do), mooring beside the FastAPI + uvicorn
reference (bench/peers/fastapi_chat.py). A server still alive after 30 s is
killed and reported as such. Runs on Debian's own Python (/usr/bin/python3),
which has the websockets package uvicorn uses.

    /usr/bin/python3 bench/stop_with_clients.py path/to/mooring [clients=100] [trials=5]
"""
import asyncio, collections, json, os, signal, socket, statistics, subprocess, sys, tempfile, time

import websockets

binary = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "build/release/mooring")
clients = int(sys.argv[2]) if len(sys.argv) > 2 else 100
trials = int(sys.argv[3]) if len(sys.argv) > 3 else 5
peer_script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "peers", "fastapi_chat.py")
limit_s = 30.0


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port):
    for _ in range(400):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.025)
    raise RuntimeError(f"nothing listens on {port}")


async def connect_all(address):
    conns = []
    for i in range(clients):
        ws = await websockets.connect(f"ws://{address}/ws/idle-{i}", ping_interval=None)
        await ws.send(json.dumps({"text": "hello", "id": "m1"}))
        while json.loads(await ws.recv()).get("type") != "chat":
            pass
        conns.append(ws)
    return conns


async def close_codes(conns):
    codes = []
    for ws in conns:
        try:
            await asyncio.wait_for(ws.wait_closed(), timeout=limit_s + 5)
        except asyncio.TimeoutError:
            pass
        codes.append(ws.close_code)
    return codes


def trial(start):
    proc, address = start()
    loop = asyncio.new_event_loop()
    conns = loop.run_until_complete(connect_all(address))
    t0 = time.perf_counter()
    proc.send_signal(signal.SIGINT)
    # The clients keep reading (and answer a close handshake) while the server stops.
    waiter = loop.run_in_executor(None, lambda: proc.wait(timeout=limit_s))
    try:
        loop.run_until_complete(waiter)
        took = (time.perf_counter() - t0) * 1000
    except subprocess.TimeoutExpired:
        took = None
        proc.kill()
        proc.wait()
    codes = loop.run_until_complete(close_codes(conns))
    loop.close()
    return took, codes, proc.returncode


def start_mooring():
    d = tempfile.mkdtemp()
    with open(os.path.join(d, "mooring.toml"), "w") as f:
        f.write('[gateway]\nlisten = "127.0.0.1:0"\n[admin]\nlisten = "127.0.0.1:0"\n'
                '[log]\nlevel = "warn"\n')
    ready = os.path.join(d, "ready.json")
    proc = subprocess.Popen([binary, "serve", "--ready-file", ready], cwd=d,
                            stderr=subprocess.DEVNULL)
    for _ in range(400):
        try:
            return proc, json.load(open(ready))["gateway"]
        except (OSError, ValueError, KeyError):
            time.sleep(0.025)
    raise RuntimeError("mooring did not start")


def start_peer():
    port = free_port()
    proc = subprocess.Popen(["/usr/bin/python3", peer_script, str(port), tempfile.mkdtemp()],
                            stderr=subprocess.DEVNULL)
    wait_for_port(port)
    return proc, f"127.0.0.1:{port}"


for name, start in (("mooring", start_mooring), ("fastapi+uvicorn", start_peer)):
    results = [trial(start) for _ in range(trials)]
    done = [r[0] for r in results if r[0] is not None]
    hung = len(results) - len(done)
    codes = collections.Counter(c for r in results for c in r[1])
    line = f"{name:16} {clients} idle clients, SIGINT -> exit: "
    line += (f"median {statistics.median(done):.1f} ms, max {max(done):.1f} ms" if done else "never")
    line += f"; {hung}/{trials} still running after {limit_s:.0f} s (killed)" if hung else ""
    line += "; close codes seen: " + ", ".join(f"{c}: {n}" for c, n in sorted(codes.items(), key=str))
    line += f"; exit codes {sorted(set(r[2] for r in results))}"
    print(line, flush=True)
