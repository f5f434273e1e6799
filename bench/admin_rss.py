#!/usr/bin/env python3
"""RSS of a running mooring host with N idle /api/events WebSocket connections.

    bench/admin_rss.py [path/to/mooring] [connections=1000]

Starts the binary on ephemeral ports in a temporary directory, opens N
WebSocket connections (handshake by hand: the standard library has no client),
and reads VmRSS from /proc before and after.
"""
import base64, json, os, signal, socket, subprocess, sys, tempfile, time

binary = sys.argv[1] if len(sys.argv) > 1 else "build/release/mooring"
count = int(sys.argv[2]) if len(sys.argv) > 2 else 1000


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


with tempfile.TemporaryDirectory() as d:
    with open(os.path.join(d, "mooring.toml"), "w") as f:
        f.write('[admin]\nlisten = "127.0.0.1:0"\n[log]\nlevel = "warn"\n')
    ready = os.path.join(d, "ready.json")
    proc = subprocess.Popen([os.path.abspath(binary), "serve", "--ready-file", ready], cwd=d,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 20
    admin = None
    while time.time() < deadline and admin is None:
        try:
            admin = json.load(open(ready)).get("admin")
        except (OSError, ValueError):
            time.sleep(0.01)
    token = open(os.path.join(d, "mooring-data", "admin.token")).read().strip()
    host, port = admin.rsplit(":", 1)
    before = rss_kib(proc.pid)
    sockets = []
    for i in range(count):
        s = socket.create_connection((host, int(port)))
        key = base64.b64encode(os.urandom(16)).decode()
        s.sendall((f"GET /api/events?token={token} HTTP/1.1\r\nHost: {admin}\r\n"
                   f"Upgrade: websocket\r\nConnection: Upgrade\r\n"
                   f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        reply = s.recv(4096)
        assert reply.startswith(b"HTTP/1.1 101"), reply[:80]
        sockets.append(s)
    time.sleep(0.5)  # let the host settle before reading its RSS
    after = rss_kib(proc.pid)
    print(f"mooring RSS: {before} KiB idle, {after} KiB with {count} idle /api/events "
          f"connections ({(after - before) * 1024 / count:.0f} bytes per connection)")
    t0 = time.time()
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=30)
    print(f"SIGINT to exit with {count} connections: {(time.time() - t0) * 1000:.0f} ms, "
          f"exit code {proc.returncode}")
    for s in sockets:
        s.close()
