#!/usr/bin/env python3
"""Time from `mooring serve` to the first 200 on /healthz, and from SIGINT to
exit, on an idle host. Median and max over N runs.

    bench/lifecycle.py [path/to/mooring] [runs=20]
"""
import json, os, signal, statistics, subprocess, sys, tempfile, time, urllib.request

binary = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "build/release/mooring")
runs = int(sys.argv[2]) if len(sys.argv) > 2 else 20
ready_ms, stop_ms = [], []
for _ in range(runs):
    with tempfile.TemporaryDirectory() as d:
        with open(os.path.join(d, "mooring.toml"), "w") as f:
            f.write('[gateway]\nlisten = "127.0.0.1:0"\n[admin]\nlisten = "127.0.0.1:0"\n')
        ready = os.path.join(d, "ready.json")
        t0 = time.perf_counter()
        proc = subprocess.Popen([binary, "serve", "--ready-file", ready], cwd=d,
                                stderr=subprocess.DEVNULL)
        admin = None
        while True:  # poll the ready file, then /healthz, as a supervisor would
            try:
                admin = admin or json.load(open(ready)).get("admin")
                if admin and urllib.request.urlopen(f"http://{admin}/healthz").status == 200:
                    break
            except (OSError, ValueError):
                pass
            time.sleep(0.0005)
        ready_ms.append((time.perf_counter() - t0) * 1000)
        t1 = time.perf_counter()
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
        stop_ms.append((time.perf_counter() - t1) * 1000)
        assert proc.returncode == 0, proc.returncode
print(f"serve -> /healthz 200: median {statistics.median(ready_ms):.1f} ms, max {max(ready_ms):.1f} ms ({runs} runs)")
print(f"SIGINT -> exit (idle): median {statistics.median(stop_ms):.1f} ms, max {max(stop_ms):.1f} ms")
