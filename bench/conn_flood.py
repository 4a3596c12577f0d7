"""Connection flood: `/healthz` and a tenant's point read with and without 1,100 idle sockets.

Starts `tenancy serve` (the binary given) under `prlimit --nofile=NOFILE:NOFILE` on a
fresh data folder with one SQLite tenant holding one row, then on 127.0.0.1:

- baseline: REQUESTS `GET /healthz` and REQUESTS `GET /t/acme/v1/data/members/m1`, one
  after another, each on a new connection (as a new client would come);
- flood, opened once: SOCKETS sockets opened to the server, every other one sending half
  a request head, left open; the same requests are timed;
- flood, reopened: the same, with a background thread reopening each socket the server
  closes (a client that keeps SOCKETS connections open whatever the server does).

Prints p50/p99 of each and the flood/baseline ratios, the requests that failed (no answer
within 10 s, or not 200), and how many flood sockets the server closed. The last line is
one JSON object. Usage:

    python3 bench/conn_flood.py BIN [--sockets 1100] [--requests 500] [--nofile 1024]
"""

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

ADMIN = "bench-admin-token-0123456789"
HALF_HEAD = b"GET /healthz HTTP/1.1\r\nHost: loc"


def percentile(values, p):
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(round(p / 100.0 * len(ordered) + 0.5))))
    return ordered[rank - 1]


def request(port, path):
    """One GET on a new connection: (seconds, status) or (None, None) on failure."""
    head = (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {ADMIN}\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    start = time.perf_counter()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(head)
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
    except OSError:
        return None, None
    elapsed = time.perf_counter() - start
    try:
        status = int(data[9:12])
    except ValueError:
        return None, None
    return elapsed, status


def measure(port, requests):
    out = {}
    for name, path in (("healthz", "/healthz"), ("read", "/t/acme/v1/data/members/m1")):
        times, failed = [], 0
        for _ in range(requests):
            elapsed, status = request(port, path)
            if status == 200:
                times.append(elapsed * 1000)
            else:
                failed += 1
        out[name] = {
            "p50_ms": round(percentile(times, 50), 3) if times else None,
            "p99_ms": round(percentile(times, 99), 3) if times else None,
            "failed": failed,
        }
    return out


class Flood:
    """SOCKETS sockets held open against the server, each reopened when it is closed."""

    def __init__(self, port, sockets, reopen):
        self.port, self.sockets, self.reopen = port, sockets, reopen
        self.stop = threading.Event()
        self.closed_by_server = 0
        self.open = []
        for i in range(sockets):
            self.open.append(self.connect(i))
        self.thread = threading.Thread(target=self.keep, daemon=True)
        self.thread.start()

    def connect(self, i):
        try:
            s = socket.create_connection(("127.0.0.1", self.port), timeout=10)
            s.setblocking(False)
            if i % 2 == 0:
                s.send(HALF_HEAD)
            return s
        except OSError:
            return None

    def keep(self):
        while not self.stop.is_set():
            for i, s in enumerate(self.open):
                if self.stop.is_set():
                    break
                alive = s is not None
                if alive:
                    try:
                        alive = s.recv(4096) != b""
                    except BlockingIOError:
                        alive = True
                    except OSError:
                        alive = False
                if not alive:
                    if s is not None:
                        self.closed_by_server += 1
                        s.close()
                    self.open[i] = self.connect(i) if self.reopen else None
            time.sleep(0.05)

    def close(self):
        self.stop.set()
        self.thread.join()
        for s in self.open:
            if s is not None:
                s.close()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("bin")
    parser.add_argument("--sockets", type=int, default=int(os.environ.get("BENCH_SOCKETS", 1100)))
    parser.add_argument("--requests", type=int, default=int(os.environ.get("BENCH_REQUESTS", 500)))
    parser.add_argument("--nofile", type=int, default=int(os.environ.get("BENCH_NOFILE", 1024)))
    args = parser.parse_args()

    work = tempfile.mkdtemp(prefix="conn-flood-")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TENANCY_")}
    env["TENANCY_ADMIN_TOKEN"] = ADMIN
    # Few open tenants, so that `serve` fits its open-files budget at the low limit.
    env["TENANCY_CACHE_MAX_OPEN"] = "64"
    data = os.path.join(work, "data")
    limit = ["prlimit", f"--nofile={args.nofile}:{args.nofile}", "--"]
    server = None
    try:
        subprocess.run(
            [args.bin, "--data-dir", data, "tenant", "create", "acme"],
            env=env, check=True, stdout=subprocess.DEVNULL,
        )
        server = subprocess.Popen(
            limit + [args.bin, "--data-dir", data, "serve", "--listen", "127.0.0.1:0"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )
        port = None
        for line in server.stdout:
            if line.startswith("tenancy serving on http://"):
                port = int(line.split()[3].rsplit(":", 1)[1])
                break
        if port is None:
            sys.exit("tenancy serve ended before it listened")
        threading.Thread(target=lambda: [None for _ in server.stdout], daemon=True).start()
        with socket.create_connection(("127.0.0.1", port)) as s:
            body = b'{"id":"m1","name":"Aria"}'
            s.sendall(
                b"POST /t/acme/v1/data/members HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                + ADMIN.encode()
                + b"\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: "
                + str(len(body)).encode() + b"\r\n\r\n" + body
            )
            assert s.recv(100)[9:12] == b"201", "seeding the tenant failed"

        baseline = measure(port, args.requests)
        flood = Flood(port, args.sockets, reopen=False)
        time.sleep(1)
        once = measure(port, args.requests)
        flood.close()
        flood = Flood(port, args.sockets, reopen=True)
        time.sleep(1)
        flooded = measure(port, args.requests)
        flood.close()

        print(f"tenancy serve at a {args.nofile} open-files limit; {args.requests} requests each, a new connection each")
        print(f"{'':32} {'p50 ms':>9} {'p99 ms':>9} {'failed':>7}")
        ratios = {}
        phases = (
            ("baseline", baseline),
            (f"{args.sockets} opened once", once),
            (f"{args.sockets} reopened", flooded),
        )
        for name in ("healthz", "read"):
            for label, figures in phases:
                f = figures[name]
                print(f"{name + ', ' + label:32} {f['p50_ms'] or '-':>9} {f['p99_ms'] or '-':>9} {f['failed']:>7}")
            ratios[name] = {}
            for key, figures in (("once", once), ("reopened", flooded)):
                b, f = baseline[name], figures[name]
                if b["p99_ms"] and f["p99_ms"]:
                    ratios[name][key] = {
                        "p50": round(f["p50_ms"] / b["p50_ms"], 2),
                        "p99": round(f["p99_ms"] / b["p99_ms"], 2),
                    }
                    print(f"{name}: {key}/baseline p50 {ratios[name][key]['p50']}, p99 {ratios[name][key]['p99']}")
        print(f"flood sockets closed by the server while reopened: {flood.closed_by_server}")
        print(json.dumps({
            "bench": "conn_flood",
            "nofile": args.nofile,
            "sockets": args.sockets,
            "requests": args.requests,
            "baseline": baseline,
            "flood_once": once,
            "flood_reopened": flooded,
            "ratios": ratios,
            "closed_by_server": flood.closed_by_server,
        }))
    finally:
        if server is not None:
            server.kill()
            server.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
