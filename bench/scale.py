"""Idle tenants cost nothing: server RSS and request latency with many registered tenants.

For each fleet size (default 1,000, 10,000 and 100,000 registered SQLite tenants, grown by
`tenancy tenant create --bulk` on one data folder), starts the release `tenancy serve`,
gives OPEN tenants a member API key, then measures over HTTP on 127.0.0.1:

- cold: the first `GET /v1/data/members` of each of the OPEN tenants (its database is not
  open in the server yet), one after another;
- warm: the same requests again (every one of those databases now open);
- hot: one tenant, requests one after another;
- RSS of the server process after all of that (VmRSS and VmHWM from /proc).

The baseline is the smallest fleet, measured in the same run: ratios of the larger fleets'
RSS and latencies against it say whether the cost depends on how many tenants are
registered. The last line printed is one JSON object. Usage:

    python3 bench/scale.py BIN [--sizes 1000,10000,100000] [--open 1000] [--hot 2000]
"""

import argparse
import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

ADMIN = "bench-admin-token-0123456789"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(values, p):
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(round(p / 100.0 * len(ordered) + 0.5))))
    return ordered[rank - 1]


def rss_kib(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0])
    return out


class Api:
    def __init__(self, port):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def call(self, method, path, token, body=None):
        headers = {"Authorization": f"Bearer {token}"}
        data = None
        if body is not None:
            data = json.dumps(body)
            headers["Content-Type"] = "application/json"
        self.conn.request(method, path, body=data, headers=headers)
        resp = self.conn.getresponse()
        payload = resp.read()
        return resp.status, payload

    def timed_get(self, path, token):
        start = time.perf_counter()
        status, payload = self.call("GET", path, token)
        elapsed = (time.perf_counter() - start) * 1000.0
        if status != 200:
            raise SystemExit(f"GET {path}: {status} {payload[:200]!r}")
        return elapsed


def grow(binary, env, have, want, work):
    if want <= have:
        return
    slugs = os.path.join(work, "slugs.txt")
    with open(slugs, "w") as f:
        for i in range(have, want):
            f.write(f"s{i:07d}\n")
    start = time.perf_counter()
    subprocess.run(
        [binary, "tenant", "create", "--bulk", slugs, "--concurrency", "4"],
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    print(
        f"  registered {want - have} more tenants in {time.perf_counter() - start:.1f} s",
        file=sys.stderr,
    )


def measure(binary, env, size, open_count, hot_count):
    port = free_port()
    server = subprocess.Popen(
        [binary, "serve", "--listen", f"127.0.0.1:{port}"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + 120
        while True:
            try:
                api = Api(port)
                status, _ = api.call("GET", "/readyz", ADMIN)
                if status == 200:
                    break
            except OSError:
                pass
            if time.time() > deadline:
                raise SystemExit("tenancy serve did not get ready")
            time.sleep(0.05)
        started_rss = rss_kib(server.pid)
        # Spread the open tenants over the whole fleet.
        step = max(1, size // open_count)
        slugs = [f"s{i:07d}" for i in range(0, size, step)][:open_count]
        keys = []
        for slug in slugs:
            status, payload = api.call(
                "POST", f"/v1/tenants/{slug}/api-keys", ADMIN, {"role": "member"}
            )
            if status != 201:
                raise SystemExit(f"api key for {slug}: {status} {payload[:200]!r}")
            keys.append(json.loads(payload)["key"])
        cold = [api.timed_get("/v1/data/members", k) for k in keys]
        warm = [api.timed_get("/v1/data/members", k) for k in keys]
        hot = [api.timed_get("/v1/data/members", keys[0]) for _ in range(hot_count)]
        rss = rss_kib(server.pid)
        return {
            "registered": size,
            "open": len(keys),
            "rss_start_mib": round(started_rss["VmRSS"] / 1024.0, 1),
            "rss_mib": round(rss["VmRSS"] / 1024.0, 1),
            "rss_peak_mib": round(rss["VmHWM"] / 1024.0, 1),
            "cold_p50_ms": round(percentile(cold, 50), 3),
            "cold_p99_ms": round(percentile(cold, 99), 3),
            "warm_p50_ms": round(percentile(warm, 50), 3),
            "warm_p99_ms": round(percentile(warm, 99), 3),
            "hot_p50_ms": round(percentile(hot, 50), 3),
            "hot_p99_ms": round(percentile(hot, 99), 3),
            "hot_rps_sequential": round(len(hot) / (sum(hot) / 1000.0), 1),
        }
    finally:
        server.terminate()
        server.wait(timeout=30)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("binary")
    parser.add_argument("--sizes", default=os.environ.get("BENCH_SIZES", "1000,10000,100000"))
    parser.add_argument("--open", type=int, default=int(os.environ.get("BENCH_OPEN", "1000")))
    parser.add_argument("--hot", type=int, default=int(os.environ.get("BENCH_HOT", "2000")))
    args = parser.parse_args()
    sizes = sorted(int(s) for s in args.sizes.split(","))
    if not sizes or sizes[0] < 1 or args.open < 1 or args.hot < 1:
        raise SystemExit("sizes, --open and --hot must be positive")

    work = tempfile.mkdtemp(prefix="tenancy-scale-")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TENANCY_")}
    env.update(
        TENANCY_DATA_DIR=os.path.join(work, "data"),
        TENANCY_ADMIN_TOKEN=ADMIN,
        TENANCY_LOG="error",
    )
    results = []
    try:
        have = 0
        for size in sizes:
            print(f"{size} registered tenants …", file=sys.stderr)
            grow(args.binary, env, have, size, work)
            have = size
            results.append(measure(args.binary, env, size, min(args.open, size), args.hot))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    base = results[0]
    print(
        f"idle tenants: {args.open} opened per fleet (cold = first request), "
        f"default handle cache; baseline = {base['registered']} registered\n"
    )
    header = (
        f"{'registered':>10} {'RSS MiB':>8} {'peak':>7} {'x base':>7} | "
        f"{'cold p50':>8} {'cold p99':>8} | {'warm p50':>8} {'warm p99':>8} | "
        f"{'hot p50':>7} {'hot p99':>7} {'x base':>7}"
    )
    print(header)
    for r in results:
        r["ratios"] = {
            "rss": round(r["rss_mib"] / base["rss_mib"], 3),
            "cold_p99": round(r["cold_p99_ms"] / base["cold_p99_ms"], 3),
            "hot_p50": round(r["hot_p50_ms"] / base["hot_p50_ms"], 3),
        }
        print(
            f"{r['registered']:>10} {r['rss_mib']:>8} {r['rss_peak_mib']:>7} "
            f"{r['ratios']['rss']:>7} | {r['cold_p50_ms']:>8} {r['cold_p99_ms']:>8} | "
            f"{r['warm_p50_ms']:>8} {r['warm_p99_ms']:>8} | {r['hot_p50_ms']:>7} "
            f"{r['hot_p99_ms']:>7} {r['ratios']['hot_p50']:>7}"
        )
    print("latencies in ms, one request at a time over one keep-alive connection")
    print(json.dumps({"bench": "scale", "open": args.open, "results": results}))


if __name__ == "__main__":
    main()
