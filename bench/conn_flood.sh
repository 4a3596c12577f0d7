#!/usr/bin/env bash
# A connection flood against `tenancy serve` at a 1,024 open-files limit: 1,100 sockets,
# half silent and half with a request head sent in part, held open (reopened when the
# server closes them) while `/healthz` and a tenant's point read are timed, each on a
# fresh connection. Baseline: the same requests with no flood, in the same run. The last
# line is one JSON object.
#
#   bash bench/conn_flood.sh [--sockets 1100] [--requests 500] [--nofile 1024]
#
# (or BENCH_SOCKETS, BENCH_REQUESTS, BENCH_NOFILE; TENANCY_BIN runs another binary
# instead of building the release one).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${TENANCY_BIN:-}" ]; then
    cargo build --release -q -p tenancy-cli
    TENANCY_BIN="$PWD/target/release/tenancy"
fi
exec python3 bench/conn_flood.py "$TENANCY_BIN" "$@"
