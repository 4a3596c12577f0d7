#!/usr/bin/env bash
# Idle tenants cost nothing: RSS of `tenancy serve` and cold/warm/hot request latency with
# 1,000, 10,000 and 100,000 registered SQLite tenants (1,000 of them opened). Baseline:
# the smallest fleet, in the same run. The last line is one JSON object.
#
#   bash bench/scale.sh [--sizes 1000,10000,100000] [--open 1000] [--hot 2000]
#
# (or BENCH_SIZES, BENCH_OPEN, BENCH_HOT). 100,000 tenants take about 8 GB of disk in a
# temporary folder, removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p tenancy-cli
exec python3 bench/scale.py "$PWD/target/release/tenancy" "$@"
