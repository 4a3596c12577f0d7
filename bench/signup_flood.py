#!/usr/bin/env python3
"""A signup flood beside a reader of one tenant's data, against the real `tenancy serve`.

    bash bench/signup_flood.sh [CLIENTS] [SIGNUPS_PER_CLIENT]     (default 32 x 200)

Phases, in one run: the reader alone (baseline), the reader during the flood, the reader
alone again after it. Printed: the reader's p50/p99 in each phase and their ratios to the
baseline, the flood's answers by status, and the server's RSS (VmRSS of the `tenancy serve`
process) before, at its peak during the flood, and 5 s after it. The per-address signup
limit is lifted for the flood (as if it came from many addresses), so every signup reaches
the password-hashing pool: the worst case for memory. The last line is one JSON object.
"""
import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time

BIN = sys.argv[1]
CLIENTS = int(sys.argv[2]) if len(sys.argv) > 2 else 32
PER_CLIENT = int(sys.argv[3]) if len(sys.argv) > 3 else 200
ADMIN = "bench-admin-token-0123456789"
PASSWORD = "correct horse battery"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


PORT = free_port()


def request(conn, method, path, body=None, token=None):
    headers = {"content-type": "application/json"}
    if token:
        headers["authorization"] = f"Bearer {token}"
    conn.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
    resp = conn.getresponse()
    data = resp.read()
    return resp.status, data


def connect():
    return http.client.HTTPConnection("127.0.0.1", PORT, timeout=60)


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def percentile(values, p):
    values = sorted(values)
    if not values:
        return float("nan")
    return values[min(len(values) - 1, int(len(values) * p))]


def read_for(seconds, key, stop=None):
    """Reads the tenant's members in a loop; returns the latencies in ms."""
    conn = connect()
    latencies = []
    end = time.monotonic() + seconds
    while (stop is None and time.monotonic() < end) or (stop is not None and not stop.is_set()):
        t0 = time.perf_counter()
        status, _ = request(conn, "GET", "/t/g/v1/data/members?limit=10", token=key)
        latencies.append((time.perf_counter() - t0) * 1000)
        assert status == 200, status
        time.sleep(0.005)
    return latencies


def main():
    work = tempfile.mkdtemp()
    env = dict(os.environ)
    for k in list(env):
        if k.startswith("TENANCY_"):
            del env[k]
    env.update(
        TENANCY_DATA_DIR=f"{work}/data",
        TENANCY_ADMIN_TOKEN=ADMIN,
        TENANCY_LISTEN=f"127.0.0.1:{PORT}",
        TENANCY_SIGNUPS_PER_ADDRESS="1000000",
        TENANCY_LOG="error",
    )
    server = subprocess.Popen([BIN, "serve"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(200):
            try:
                status, _ = request(connect(), "GET", "/healthz")
                if status == 200:
                    break
            except OSError:
                time.sleep(0.05)
        conn = connect()
        status, body = request(conn, "POST", "/v1/tenants", {"slug": "g"}, ADMIN)
        assert status == 201, body
        status, body = request(conn, "POST", "/v1/tenants/g/api-keys", {"role": "member"}, ADMIN)
        assert status == 201, body
        key = json.loads(body)["key"]
        rows = [{"name": f"m{i}", "class": "mage"} for i in range(50)]
        status, body = request(conn, "POST", "/t/g/v1/data/members", rows, key)
        assert status == 201, body

        read_for(2, key)  # warm-up
        baseline = read_for(10, key)
        rss_before = rss_kib(server.pid)

        statuses = {}
        lock = threading.Lock()
        peak = [rss_before]
        done = threading.Event()

        def sample():
            while not done.is_set():
                peak[0] = max(peak[0], rss_kib(server.pid))
                time.sleep(0.05)

        def flood(c):
            conn = connect()
            for i in range(PER_CLIENT):
                try:
                    status, _ = request(conn, "POST", "/v1/auth/signup",
                                        {"email": f"u{c}-{i}@flood.gg", "password": PASSWORD})
                except OSError:
                    conn = connect()
                    status = "error"
                with lock:
                    statuses[status] = statuses.get(status, 0) + 1

        sampler = threading.Thread(target=sample)
        sampler.start()
        during = []
        reader = threading.Thread(target=lambda: during.extend(read_for(0, key, done)))
        reader.start()
        t0 = time.monotonic()
        threads = [threading.Thread(target=flood, args=(c,)) for c in range(CLIENTS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        flood_s = time.monotonic() - t0
        done.set()
        reader.join()
        sampler.join()
        time.sleep(5)
        rss_after = rss_kib(server.pid)
        after = read_for(10, key)

        p = lambda xs: (percentile(xs, 0.5), percentile(xs, 0.99))
        (b50, b99), (d50, d99), (a50, a99) = p(baseline), p(during), p(after)
        mib = lambda k: k / 1024
        print(f"flood: {CLIENTS} clients x {PER_CLIENT} signups in {flood_s:.1f} s; answers {dict(sorted((str(k), v) for k, v in statuses.items()))}")
        print(f"reader p50/p99 ms: before {b50:.2f}/{b99:.2f}  during {d50:.2f}/{d99:.2f}  after {a50:.2f}/{a99:.2f}")
        print(f"reader p99 during/before: {d99 / b99:.1f}x   after/before: {a99 / b99:.1f}x")
        print(f"server RSS MiB: before {mib(rss_before):.1f}  peak {mib(peak[0]):.1f}  5 s after {mib(rss_after):.1f}")
        print(json.dumps({
            "clients": CLIENTS, "signups_per_client": PER_CLIENT, "flood_s": round(flood_s, 1),
            "answers": {str(k): v for k, v in statuses.items()},
            "reader_ms": {"before": [b50, b99], "during": [d50, d99], "after": [a50, a99]},
            "rss_mib": {"before": mib(rss_before), "peak": mib(peak[0]), "after": mib(rss_after)},
        }))
    finally:
        server.terminate()
        server.wait()
        subprocess.run(["rm", "-rf", work])


main()
