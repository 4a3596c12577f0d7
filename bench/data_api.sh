#!/usr/bin/env bash
# Data API throughput and latency on the embedded default (SQLite database-per-tenant):
# the full tenancy stack (API-key authentication and resolution, role check, introspected
# schema, handle cache) against a bare axum + rusqlite server on the same tenant files,
# in one process, on 127.0.0.1 only.
#
#   bash bench/data_api.sh [--seconds 5] [--warmup 1] [--concurrency 32] [--tenants 1000]
#
# (or BENCH_SECONDS, BENCH_WARMUP, BENCH_CONCURRENCY, BENCH_TENANTS). The last line is
# one JSON object.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p tenancy-bench
exec ./target/release/data_api "$@"
