#!/usr/bin/env python3
"""What a connection refused at gateway.max_connections costs the server.

    bench/connection_limit.py [path/to/mooring] [open=10000] [attempts=2000]

Starts the binary on ephemeral ports in a temporary directory with
gateway.max_connections = <open>, fills every place with an open WebSocket
(/ws/<user>, a user each, handshake by hand: the standard library has no client), then makes
<attempts> connections one after the other, each sending a whole request and
reading its 503. Prints the server's CPU time per refused connection (from
/proc/<pid>/stat), the number of refusals, and the rate they were answered at.
A flood of such connections is what a client without a place can do: the
figure says how many per second one core answers.
"""
import os, resource, socket, sys, tempfile, time

import mooring_process

binary = sys.argv[1] if len(sys.argv) > 1 else "build/release/mooring"
places = int(sys.argv[2]) if len(sys.argv) > 2 else 10000
attempts = int(sys.argv[3]) if len(sys.argv) > 3 else 2000

soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
if hard < places + 100:
    sys.exit(f"{places} connections need more descriptors than `ulimit -Hn` ({hard}) allows")



def upgrade(user):
    return (f"GET /ws/{user} HTTP/1.1\r\nHost: bench\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n").encode()


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def read_head(sock):
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data.split(b"\r\n", 1)[0].decode(errors="replace")


with tempfile.TemporaryDirectory() as d:
    proc, address = mooring_process.start(
        binary, d, f'[gateway]\nlisten = "127.0.0.1:0"\nmax_connections = {places}\n'
        '[admin]\nlisten = "127.0.0.1:0"\n[log]\nlevel = "warn"\n')
    try:
        held = []
        for i in range(places):
            s = socket.create_connection(address)
            s.sendall(upgrade(f"held{i}"))
            status = read_head(s)
            if " 101 " not in status + " ":
                sys.exit(f"connection {i}: {status}")
            held.append(s)
        before = cpu_seconds(proc.pid)
        started = time.time()
        refused = 0
        for i in range(attempts):
            s = socket.create_connection(address)
            s.sendall(upgrade(f"late{i}"))
            if " 503 " in read_head(s):
                refused += 1
            s.close()
        took = time.time() - started
        cpu = cpu_seconds(proc.pid) - before
        print(f"mooring {binary}: {places} WebSockets open (max_connections {places}); "
              f"{attempts} more connections, {refused} refused with 503, in {took:.2f} s "
              f"({attempts / took:.0f}/s); server CPU {cpu * 1e6 / attempts:.0f} us per connection")
        for s in held:
            s.close()
    finally:
        proc.terminate()
        proc.wait()
