#!/usr/bin/env bash
# Provisioning and data-API point reads in the backends: database mode on the embedded
# SQLite store (the baseline) and the database, schema and shared modes on PostgreSQL
# (plus database mode over a wider fleet and budget), each through the engine and the full
# HTTP stack and through a bare handler reading the same rows, in one process, on
# 127.0.0.1 only. Creates its own databases and roles on PostgreSQL (prefix bench_<hex>)
# and drops them at the end.
#
#   bash bench/modes.sh [--tenants 20] [--budget 20] [--wide-tenants 50] [--wide-budget 64]
#                       [--seconds 5] [--warmup 1] [--concurrency 32] [--pg-catalog]
#
# (or BENCH_TENANTS, BENCH_BUDGET, BENCH_WIDE_TENANTS (0: skip), BENCH_WIDE_BUDGET,
# BENCH_SECONDS, BENCH_WARMUP, BENCH_CONCURRENCY, BENCH_PG_CATALOG=true; the server:
# TENANCY_BENCH_POSTGRES_URL, default
# postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable). The last line is one JSON
# object.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p tenancy-bench
exec ./target/release/modes "$@"
