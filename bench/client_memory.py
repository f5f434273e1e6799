#!/usr/bin/env python3
"""What clients can make the server hold, all connections together.

    bench/client_memory.py [path/to/mooring] [budget_bytes|default] [attack...]

Starts the binary on ephemeral ports in a temporary directory (echo provider;
gateway.max_buffered_bytes = <budget> unless "default", and the rate limit
lifted for the second part), then measures the server's RSS (/proc/<pid>/status)
in two attacks, each from a fresh server:

1. unfinished: 400 and then 1,000 connections each send 990,000 bytes of a
   1,000,000-byte message and never finish it. Prints the RSS while they are
   held, and how many the server closed (a close frame, 1013).
2. backlogs: 40 users each send 12 messages of 500,000 bytes (the echo
   provider answers each with as much); then 40 connections, one per user,
   ask for every reply again ({"type":"resume","after":0}) with a 4 KiB
   receive buffer and never read. Prints the RSS 3 s later.
3. live: 10 users with a 4 KiB receive buffer each send 16 messages of
   900,000 bytes (as many as the server takes within 3 s of no progress) and
   never read the replies, which take the echo provider 100 ms each
   (provider.echo.token_delay). Prints the RSS 3 s later.
4. trickle: 60 users with an 8 KiB receive buffer each send 2 messages of
   1,000,000 bytes and read 32 KiB every 10 s (enough not to be cut off as
   a reader that takes nothing); after 12 s they leave, their replies
   undelivered, come back, send 2 more and read as slowly. Prints the RSS
   and the connections still open after 12 s, and 5 and 20 s after they
   came back.

The attacks to run may be named (unfinished, backlogs, live, trickle); all
by default.

Handshakes and frames by hand: the standard library has no WebSocket client.
"""
import base64, json, os, resource, socket, struct, sys, tempfile, time

import mooring_process

binary = sys.argv[1] if len(sys.argv) > 1 else "build/release/mooring"
budget = sys.argv[2] if len(sys.argv) > 2 else "default"

soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def upgrade(sock, address, user):
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall((f"GET /ws/{user} HTTP/1.1\r\nHost: {address[0]}:{address[1]}\r\n"
                  "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                  f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        if not chunk:
            sys.exit(f"{user}: the connection closed during the handshake")
        head += chunk
    status = head.split(b"\r\n", 1)[0]
    if b" 101 " not in status:
        sys.exit(f"{user}: {status.decode(errors='replace')}")
    return head.split(b"\r\n\r\n", 1)[1]


def connect(address, user, receive_buffer=0):
    sock = socket.socket()
    if receive_buffer:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.connect(address)
    return sock, upgrade(sock, address, user)


def header(length):
    """A masked text frame's header (zero mask key: the payload goes as it is)."""
    if length < 126:
        head = bytes([0x81, 0x80 | length])
    elif length < 65536:
        head = bytes([0x81, 0x80 | 126]) + struct.pack(">H", length)
    else:
        head = bytes([0x81, 0x80 | 127]) + struct.pack(">Q", length)
    return head + b"\0\0\0\0"


def frame(text):
    payload = text.encode()
    return header(len(payload)) + payload


def read_frame(sock, buffer):
    """The next frame's payload and what is left of the buffer."""
    while True:
        if len(buffer) >= 2:
            length, start = buffer[1] & 0x7F, 2
            if length == 126 and len(buffer) >= 4:
                length, start = struct.unpack(">H", buffer[2:4])[0], 4
            elif length == 127 and len(buffer) >= 10:
                length, start = struct.unpack(">Q", buffer[2:10])[0], 10
            if length < 126 or start > 2:
                if len(buffer) >= start + length:
                    return buffer[start:start + length], buffer[start + length:]
        chunk = sock.recv(1 << 20)
        if not chunk:
            raise EOFError("closed")
        buffer += chunk


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024


def buffered_mb(directory):
    """mooring_buffered_bytes from the admin API of the server run in `directory`."""
    import urllib.request
    admin = json.load(open(os.path.join(directory, "ready.json")))["admin"]
    token = open(os.path.join(directory, "mooring-data", "admin.token")).read().strip()
    request = urllib.request.Request(f"http://{admin}/metrics",
                                     headers={"Authorization": f"Bearer {token}"})
    for line in urllib.request.urlopen(request, timeout=10).read().decode().splitlines():
        if line.startswith("mooring_buffered_bytes "):
            return float(line.split()[1]) / (1 << 20)
    return float("nan")


class Server:
    def __init__(self, directory, extra=""):
        keys = "max_messages_per_minute = 1000000\n"
        if budget != "default":
            keys += f"max_buffered_bytes = {budget}\n"
        self.proc, self.address = mooring_process.start(
            binary, directory, f'[gateway]\nlisten = "127.0.0.1:0"\n{keys}'
            '[admin]\nlisten = "127.0.0.1:0"\n[log]\nlevel = "error"\n' + extra)

    def stop(self):
        self.proc.terminate()
        self.proc.wait(30)


def unfinished(count):
    with tempfile.TemporaryDirectory() as d:
        server = Server(d)
        try:
            before = rss_mb(server.proc.pid)
            held = [connect(server.address, f"holder{i}")[0] for i in range(count)]
            body = b"a" * 990000
            for sock in held:
                sock.sendall(header(1000000) + body)
            time.sleep(2)
            after = rss_mb(server.proc.pid)
            closed = 0
            for sock in held:
                sock.setblocking(False)
                try:
                    data = sock.recv(4096)
                    closed += 1 if data[:1] == b"\x88" else 0
                except BlockingIOError:
                    pass
            print(f"  {count} unfinished messages of 1,000,000 bytes: RSS {before:.0f} -> "
                  f"{after:.0f} MB; {closed} connections closed by the server")
        finally:
            server.stop()


def backlogs(users=40, messages=12, size=500000):
    with tempfile.TemporaryDirectory() as d:
        server = Server(d)
        try:
            for u in range(users):
                sock, buffer = connect(server.address, f"saver{u}")
                for m in range(messages):
                    sock.sendall(frame(json.dumps({"text": "x" * size, "id": f"m{m}"})))
                answered = 0
                while answered < messages:
                    payload, buffer = read_frame(sock, buffer)
                    answered += b'"type":"chat"' in payload[:100]
                sock.close()
            before = rss_mb(server.proc.pid)
            held = []
            for u in range(users):
                sock, _ = connect(server.address, f"saver{u}", receive_buffer=4096)
                sock.sendall(frame('{"type":"resume","after":0}'))
                held.append(sock)
            time.sleep(3)
            print(f"  {users} users with {messages} replies of {size:,} bytes each resume and "
                  f"never read: RSS {before:.0f} -> {rss_mb(server.proc.pid):.0f} MB")
        finally:
            server.stop()


def live(users=10, messages=16, size=900000):
    with tempfile.TemporaryDirectory() as d:
        # Each reply takes 100 ms: the messages are read before their replies are made.
        server = Server(d, '[provider.echo]\ntoken_delay = "100ms"\n')
        try:
            before = rss_mb(server.proc.pid)
            left = {}
            for u in range(users):
                sock, _ = connect(server.address, f"reader{u}", receive_buffer=4096)
                sock.setblocking(False)
                left[sock] = b"".join(
                    frame(json.dumps({"text": "x" * size, "id": f"m{m}"})) for m in range(messages))
            # Round robin until everything is sent or nothing moved for 3 s:
            # the server stops reading a user it holds enough for.
            moved = time.monotonic()
            while any(left.values()) and time.monotonic() - moved < 3:
                for sock, rest in left.items():
                    if not rest:
                        continue
                    try:
                        n = sock.send(rest[:1 << 20])
                        left[sock] = rest[n:]
                        moved = time.monotonic()
                    except BlockingIOError:
                        pass
                time.sleep(0.01)
            unsent = sum(len(rest) for rest in left.values())
            time.sleep(3)
            print(f"  {users} users send {messages} messages of {size:,} bytes each and never "
                  f"read the replies ({unsent:,} bytes not taken): RSS {before:.0f} -> "
                  f"{rss_mb(server.proc.pid):.0f} MB")
        finally:
            server.stop()


def trickle(users=60, messages=2, size=1000000, first=12, seconds=20):
    def slow_readers(server, receive_buffer=8192):
        held = []
        for u in range(users):
            sock, _ = connect(server.address, f"trickler{u}", receive_buffer=receive_buffer)
            for m in range(messages):
                sock.sendall(frame(json.dumps({"text": "x" * size, "id": f"{time.time()}-{m}"})))
            sock.setblocking(False)
            held.append(sock)
        return held

    def read_a_little(held):
        for sock in held:
            try:
                sock.recv(32768)
            except (BlockingIOError, ConnectionError):
                pass

    def trickle_until(held, started, until):
        """Reads a little from each every 10 s, until `until` s after `started`."""
        next_read = started + 10
        while time.monotonic() - started < until:
            time.sleep(0.1)
            if time.monotonic() >= next_read:
                next_read += 10
                read_a_little(held)

    def established(held):  # not closed by the server (CLOSE_WAIT), from TCP_INFO
        return sum(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0] == 1
                   for sock in held)

    with tempfile.TemporaryDirectory() as d:
        server = Server(d)
        try:
            before = rss_mb(server.proc.pid)
            held = slow_readers(server)
            trickle_until(held, time.monotonic(), first)
            print(f"  {users} users send {messages} messages of {size:,} bytes and read 32 KiB "
                  f"every 10 s: after {first} s RSS {before:.0f} -> {rss_mb(server.proc.pid):.0f} "
                  f"MB, {buffered_mb(d):.0f} MiB buffered, {established(held)} connections open")
            for sock in held:
                sock.close()
            # Back, with their replies undelivered, and as many messages again.
            held = slow_readers(server)
            started = time.monotonic()
            for at in (5, seconds):
                trickle_until(held, started, at)
                print(f"  ... they come back, send as many again and read as slowly: after {at} s "
                      f"RSS {rss_mb(server.proc.pid):.0f} MB, {buffered_mb(d):.0f} MiB buffered, "
                      f"{established(held)} connections open")
        finally:
            server.stop()


attacks = {"unfinished": lambda: (unfinished(400), unfinished(1000)), "backlogs": backlogs,
           "live": live, "trickle": trickle}
print(f"mooring {binary}, gateway.max_buffered_bytes = {budget}")
for name in sys.argv[3:] or attacks:
    attacks[name]()
