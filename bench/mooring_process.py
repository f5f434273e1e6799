"""Starting mooring for a benchmark: a configuration in a temporary directory,
ephemeral ports, and the gateway's address read from the ready file."""
import json, os, subprocess, sys, time


def start(binary, directory, config, stderr=subprocess.DEVNULL, timeout=20):
    """Writes `config` to <directory>/mooring.toml, starts `binary serve` there
    and returns (process, (host, port) of the gateway) once it is listening."""
    with open(os.path.join(directory, "mooring.toml"), "w") as f:
        f.write(config)
    ready = os.path.join(directory, "ready.json")
    proc = subprocess.Popen([os.path.abspath(binary), "serve", "--ready-file", ready],
                            cwd=directory, stderr=stderr)
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            gateway = json.load(open(ready)).get("gateway")
        except (OSError, ValueError):
            gateway = None
        if gateway:
            host, port = gateway.rsplit(":", 1)
            return proc, (host, int(port))
        if proc.poll() is not None:
            break
        time.sleep(0.01)
    proc.kill()
    sys.exit("mooring did not start")
