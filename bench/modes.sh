#!/usr/bin/env bash
# Provisioning and data-API point reads in the four backends: database mode on the
# embedded SQLite store (the baseline) and the database, schema and shared modes on
# PostgreSQL, each through the engine and the full HTTP stack, in one process, on
# 127.0.0.1 only. Creates its own databases and roles on PostgreSQL (prefix bench_<hex>)
# and drops them at the end.
#
#   bash bench/modes.sh [--tenants 50] [--seconds 5] [--warmup 1] [--concurrency 32] [--pg-catalog]
#
# (or BENCH_TENANTS, BENCH_SECONDS, BENCH_WARMUP, BENCH_CONCURRENCY, BENCH_PG_CATALOG=true;
# the server: TENANCY_BENCH_POSTGRES_URL, default postgres://postgres@127.0.0.1:5432/postgres).
# The last line is one JSON object.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p tenancy-bench
exec ./target/release/modes "$@"
