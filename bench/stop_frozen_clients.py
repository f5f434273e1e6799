#!/usr/bin/env python3
"""Ctrl+C with thousands of idle chat clients that never answer the close frame.

    bench/stop_frozen_clients.py [path/to/mooring] [clients=8000] [drain=1s] [trials=3]

Starts the binary on ephemeral ports in a temporary directory with
shutdown.drain_timeout = <drain>. A child process opens <clients> WebSockets
(/ws/<user>, a user each) and is then stopped with SIGSTOP: its kernel still
takes the server's bytes, but it answers nothing, as a frozen or vanished
client. SIGINT to the server; prints the time from the signal to the
process's exit and the duration in its summary line. The design's bound is
the drain plus about 100 ms.
"""
import os, re, resource, signal, subprocess, sys, tempfile, time

import mooring_process

binary = sys.argv[1] if len(sys.argv) > 1 else "build/release/mooring"
clients = int(sys.argv[2]) if len(sys.argv) > 2 else 8000
drain = sys.argv[3] if len(sys.argv) > 3 else "1s"
trials = int(sys.argv[4]) if len(sys.argv) > 4 else 3

soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
if hard < clients + 100:
    sys.exit(f"{clients} connections need more descriptors than `ulimit -Hn` ({hard}) allows")

HOLDER = r"""
import socket, sys, time
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
held = []
for i in range(n):
    s = socket.create_connection((host, port))
    s.sendall((f"GET /ws/frozen{i} HTTP/1.1\r\nHost: bench\r\nUpgrade: websocket\r\n"
               "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
               "Sec-WebSocket-Version: 13\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += s.recv(4096)
    if b" 101 " not in head.split(b"\r\n", 1)[0]:
        sys.exit("refused: " + head.split(b"\r\n", 1)[0].decode())
    held.append(s)
print("ready", flush=True)
time.sleep(3600)
"""


def trial():
    with tempfile.TemporaryDirectory() as d:
        log = open(os.path.join(d, "log.txt"), "w+")
        server, (host, port) = mooring_process.start(
            binary, d, f'[gateway]\nlisten = "127.0.0.1:0"\n[admin]\nlisten = "127.0.0.1:0"\n'
            f'[shutdown]\ndrain_timeout = "{drain}"\n', stderr=log)
        holder = None
        try:
            holder = subprocess.Popen([sys.executable, "-c", HOLDER, host, str(port), str(clients)],
                                      stdout=subprocess.PIPE, text=True)
            if holder.stdout.readline().strip() != "ready":
                sys.exit("the clients could not connect")
            holder.send_signal(signal.SIGSTOP)
            started = time.time()
            server.send_signal(signal.SIGINT)
            code = server.wait(60)
            took = (time.time() - started) * 1000
            log.seek(0)
            summary = re.search(r"mooring stopped in (\d+)ms", log.read())
            return took, int(summary.group(1)) if summary else None, code
        finally:
            if server.poll() is None:
                server.kill()
            if holder is not None:
                holder.kill()
                holder.wait()


print(f"mooring {binary}: {clients} idle clients frozen (SIGSTOP), drain_timeout = {drain}")
for _ in range(trials):
    took, host, code = trial()
    print(f"  SIGINT to exit {took:.0f} ms (summary line: {host} ms), exit code {code}")
