#!/usr/bin/env bash
# Soak of the release `tenancy serve` binary: 1,000 SQLite tenants each with its own key,
# 32 clients sending 80 % point reads / 15 % inserts / 5 % filtered lists, the server's
# RSS sampled every 10 s and printed against its memory budget.
#
#   bash bench/soak.sh [--minutes 10] [--tenants 1000] [--concurrency 32] [--budget-mib 512]
#                      [--sample-secs 10] [--seed-rows 50] [--durability full]
#
# (or SOAK_MINUTES, SOAK_TENANTS, SOAK_CONCURRENCY, SOAK_BUDGET_MIB, …). The last line is
# one JSON object.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p tenancy-cli -p tenancy-bench
exec ./target/release/soak --tenancy ./target/release/tenancy "$@"
